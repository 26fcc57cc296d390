"""``python manage.py aiotaskq run|status|retry|delete``: the same options, help and one-line
errors as the ``aiotaskq`` command."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from django.core.management.base import (
    BaseCommand,
    CommandError,
    CommandParser,
    DjangoHelpFormatter,
)

from ... import cli


class _Parser(CommandParser):
    """Django's parser with the CLI's one-line usage errors on the command line; called from
    code (``call_command``) it raises ``CommandError`` as Django's does."""

    def error(self, message: str) -> NoReturn:
        if self.called_from_command_line:
            cli.usage_error(self, message)
        raise CommandError(f"Error: {message}")


class _HelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Django's order of options; the examples keep their lines."""


class Command(BaseCommand):
    help = "Run an aiotaskq worker, or look after its tasks (status, retry, delete)."
    requires_system_checks: list[str] = []

    def get_version(self) -> str:
        # --version names what this command is; "python -m django --version" names Django.
        return f"aiotaskq {cli.version()}"

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # Django builds a CommandParser itself; ours only changes how errors are reported
        # and adds no state, so the instance can take our class.
        parser.__class__ = _Parser
        parser.epilog = cli.EXAMPLES.format(prog=parser.prog)
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_commands(parser, settings_option=False, parser_class=_Parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if getattr(self, "_called_from_command_line", False):
            options.setdefault("respawn", cli.own_command_line())  # for run --processes
        cli.configure_logging(options["log_level"])
        try:
            status = cli.execute(argparse.Namespace(**options))
        except Exception as exc:
            message = cli.explain(exc)
            if message is None or options["traceback"]:
                raise
            if not getattr(self, "_called_from_command_line", False):
                raise CommandError(message, returncode=2) from exc
            print(cli.error_line(options["command"], message), file=sys.stderr)
            raise SystemExit(2) from None
        if status:
            raise SystemExit(status)
