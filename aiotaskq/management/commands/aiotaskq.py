"""``python manage.py aiotaskq run|status``: the same options as the ``aiotaskq`` command."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ... import cli


class Command(BaseCommand):
    help = "Run an aiotaskq worker, or show the queues."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_commands(parser, settings_option=False)

    def handle(self, *args: Any, **options: Any) -> None:
        cli.configure_logging(options["log_level"])
        status = cli.execute(argparse.Namespace(**options))
        if status:
            raise SystemExit(status)
