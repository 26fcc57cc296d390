"""Django settings of the peer, django-taskq, run from its own virtualenv."""

from benchmarks import dbenv

SECRET_KEY = "benchmarks-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DATABASES = {"default": dbenv.django_database(dbenv.peer_database_name())}
INSTALLED_APPS = ["django_taskq"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
