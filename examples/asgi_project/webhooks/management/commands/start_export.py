"""``manage.py start_export``: start a CSV export of every delivery and print, as JSON, the
export's id, its task's id and the file it writes (run ``aiotaskq run --queues exports`` to
have it written)."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from webhooks.exports import start_export


class Command(BaseCommand):
    help = "Start a CSV export of every delivery; print its id, task id and path as JSON."

    def handle(self, *args: Any, **options: Any) -> None:
        export = start_export(settings.EXPORT_DIR)
        self.stdout.write(
            json.dumps({"export": export.pk, "task": str(export.task_id), "path": export.path})
        )
