"""Django settings of the benchmark (``--settings benchmarks.settings``)."""

from benchmarks import dbenv

SECRET_KEY = "benchmarks-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DATABASES = {"default": dbenv.django_database(dbenv.database_name())}
INSTALLED_APPS = ["aiotaskq"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Everything else at aiotaskq's defaults: the figures are those of an untuned install.
AIOTASKQ = {"IMPORTS": ["benchmarks.bench_tasks"]}
LOGGING_CONFIG = None
