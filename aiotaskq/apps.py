from __future__ import annotations

from django.apps import AppConfig


class AiotaskqConfig(AppConfig):
    name = "aiotaskq"
    verbose_name = "Tasks (aiotaskq)"
    default_auto_field = "django.db.models.BigAutoField"
