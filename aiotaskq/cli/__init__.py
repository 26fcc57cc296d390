"""The ``aiotaskq`` command: ``run`` a worker; ``status``, ``workers``, ``health`` and
``schedules`` to look at the queues and the workers (in :mod:`.looks`); ``retry`` and
``delete`` to act on tasks by hand. ``python manage.py aiotaskq`` uses the same parser and
the same error boundary (:func:`explain`).

A mistake on the command line or in the configuration is one line on stderr and exit status 2;
``--traceback`` shows the full traceback instead. Anything else (a bug) keeps its traceback.
The CLI is the only part of aiotaskq that reads environment variables or configures logging.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import math
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any, NoReturn

import psycopg

from ..errors import DatabaseError, InvalidQueueName, InvalidWorkerOptions
from ..tasks.enqueue import validate_queue

__all__ = ["Mistake", "OneLineErrors", "add_commands", "error_line", "execute", "explain", "main"]

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

DESCRIPTION = """\
Run aiotaskq workers and look after their tasks.

Every command needs the Django settings: pass --settings or set DJANGO_SETTINGS_MODULE.
"python manage.py aiotaskq" takes the same commands and options."""

EXAMPLES = """\
examples:
  {prog} run --settings mysite.settings --concurrency 200 --queues default,webhooks
  {prog} status --json
  {prog} retry --failed --queue webhooks

"{prog} COMMAND --help" shows the options of a command."""

_COMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (the line in the list of commands, the description, the examples)
    "run": (
        "run a worker until SIGTERM or Ctrl-C",
        "Run a worker: it claims the due tasks of its queues and runs up to --concurrency of\n"
        "them at once, until SIGTERM or Ctrl-C. On a stop, tasks still running get --grace\n"
        "seconds to finish; the rest are put back in their queue.",
        "  {prog} run --settings mysite.settings --concurrency 200 --queues default,webhooks\n"
        "  {prog} run --burst    # run what is due now, then exit\n"
        "  {prog} run --processes 4 --max-tasks-per-process 1000",
    ),
    "status": (
        "count the tasks of each queue",
        "Count the tasks of each queue: pending (due now), future (due later), active,\n"
        "dirty (their worker's heartbeat stopped), failed and succeeded (kept results), with\n"
        "the age of the oldest pending task.",
        "  {prog} status --settings mysite.settings\n  {prog} status --json",
    ),
    "workers": (
        "list the live workers",
        "List the live workers: id, host, pid, queues (with their caps), concurrency, tasks\n"
        "in flight, when each started and when its heartbeat last wrote. A worker that stops\n"
        "cleanly leaves the list at once; a killed one after DIRTY_AFTER (--all shows it,\n"
        "lost, for a day).",
        "  {prog} workers --settings mysite.settings\n  {prog} workers --json",
    ),
    "health": (
        "exit 0 if a worker of this host is alive (for probes)",
        "Exit 0 when a worker on this host (its name, or --host) has written its heartbeat\n"
        "within DIRTY_AFTER; else print why and exit 1. With --queue, any worker that takes\n"
        "the queue counts, wherever it runs. For liveness probes: a worker whose event loop\n"
        "is blocked stops beating.",
        "  {prog} health --settings mysite.settings\n  {prog} health --queue webhooks",
    ),
    "schedules": (
        "list the periodic schedules",
        "List the periodic schedules (@periodic) of the tasks modules a worker imports: the\n"
        "task, the cron expression or interval, the time zone, the last tick run and the\n"
        "next one, and whether it is paused. Times are ISO 8601 with their offset.",
        "  {prog} schedules --settings mysite.settings\n  {prog} schedules --json",
    ),
    "retry": (
        "queue Failed or Dirty tasks again, due now",
        "Queue Failed or Dirty tasks again, due now. Name the tasks by id, or select them\n"
        "with --failed and/or --dirty (and --queue). Active and pending tasks are left alone.",
        "  {prog} retry --failed --queue webhooks\n"
        "  {prog} retry 0b6c3a52-8d8e-4d3f-9f55-2f4b1c7a9e10",
    ),
    "delete": (
        "delete Failed or Dirty tasks",
        "Delete Failed or Dirty tasks. Name the tasks by id, or select them with --failed\n"
        "and/or --dirty (and --queue). Active and pending tasks are left alone.",
        "  {prog} delete --dirty --queue webhooks\n"
        "  {prog} delete 0b6c3a52-8d8e-4d3f-9f55-2f4b1c7a9e10",
    ),
}


class Mistake(Exception):
    """A mistake of the user's that the CLI reports in one line (exit status 2)."""


class OneLineErrors(argparse.ArgumentParser):
    """An argument parser that reports a usage mistake in one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        usage_error(self, message)


def usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    """Print ``PROG: error: MESSAGE`` and a pointer to the help as one line; exit 2."""
    parser.exit(2, f"{parser.prog}: error: {_one_line(message)} (see {parser.prog} --help)\n")


def error_line(command: str | None, message: str) -> str:
    """The line a known mistake is reported with: ``aiotaskq COMMAND: error: MESSAGE``."""
    prog = f"aiotaskq {command}" if command else "aiotaskq"
    return f"{prog}: error: {_one_line(message)}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def version() -> str:
    """The installed version of the ``django-aiotaskq`` distribution."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as distribution_version

    try:
        return distribution_version("django-aiotaskq")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from .. import __version__

        return __version__


def add_commands(
    parser: argparse.ArgumentParser,
    *,
    settings_option: bool = True,
    parser_class: type[argparse.ArgumentParser] = OneLineErrors,
) -> None:
    """Add the sub-commands (``run``, ``status``, ``workers``, ``health``, ``schedules``,
    ``retry``, ``delete``) to ``parser``.
    ``manage.py`` has its own ``--settings``, so it passes ``settings_option=False``, and its
    own parser class (Django's, with one-line errors)."""
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="{run,status,workers,health,schedules,retry,delete}",
        title="commands",
        parser_class=parser_class,
    )

    def add(name: str) -> argparse.ArgumentParser:
        line, description, examples = _COMMANDS[name]
        return sub.add_parser(
            name,
            help=line,
            description=description,
            epilog="examples:\n" + examples.format(prog=parser.prog),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    run = add("run")
    run.add_argument(
        "--concurrency",
        type=_positive,
        metavar="N",
        default=100,
        help="tasks run at once (coroutines and threads together; default 100)",
    )
    run.add_argument(
        "--threads",
        type=_positive,
        default=8,
        metavar="N",
        help="threads for plain-function tasks (default 8)",
    )
    run.add_argument(
        "--queues",
        type=_queues,
        default=None,
        metavar="QUEUE,...",
        help="the queues to take tasks from, comma-separated (default "
        'AIOTASKQ["DEFAULT_QUEUE"]); QUEUE:N caps a queue at N tasks at once, reserved out '
        "of --concurrency; queues without a cap share the rest",
    )
    run.add_argument(
        "--grace",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long tasks still running get to finish on SIGTERM (default 30)",
    )
    run.add_argument(
        "--db-threads",
        type=_positive,
        metavar="N",
        default=4,
        help="threads (and Django connections) for the ORM calls of async tasks (default 4)",
    )
    run.add_argument("--burst", action="store_true", help="run what is due, then exit")
    _add_process_options(run)
    run.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="the event loop: uvloop when installed (auto), or the named one",
    )
    _add_common(run, settings_option)
    status = add("status")
    status.add_argument("--json", action="store_true", help="print JSON")
    _add_common(status, settings_option)
    listing = add("workers")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument(
        "--all", action="store_true", help="the lost workers too (killed, not yet pruned)"
    )
    _add_common(listing, settings_option)
    health = add("health")
    health.add_argument(
        "--queue",
        type=_queue,
        help="alive when any worker that takes this queue is (anywhere), not this host's",
    )
    health.add_argument(
        "--host",
        help="the host whose workers to look at (default: this one's name)",
    )
    _add_common(health, settings_option)
    listing = add("schedules")
    listing.add_argument("--json", action="store_true", help="print JSON")
    _add_common(listing, settings_option)
    for verb in ("retry", "delete"):
        cmd = add(verb)
        cmd.add_argument("ids", nargs="*", type=uuid.UUID, metavar="ID", help="task ids")
        cmd.add_argument("--failed", action="store_true", help="every Failed task")
        cmd.add_argument("--dirty", action="store_true", help="every Dirty task")
        cmd.add_argument("--queue", type=_queue, help="only tasks of this queue")
        _add_common(cmd, settings_option)


def _add_process_options(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--processes",
        type=_positive,
        metavar="N",
        default=None,
        help="run N worker processes under a supervisor that restarts them (each with the "
        "other options); plain functions past their time limit then replace their process",
    )
    run.add_argument(
        "--max-tasks-per-process",
        type=_positive,
        metavar="N",
        default=None,
        help="after N tasks a worker process finishes what it holds and exits, to be "
        "replaced (alone: exit 0)",
    )
    run.add_argument(
        "--max-memory-per-process",
        type=_positive,
        metavar="MB",
        default=None,
        help="the same once the process's resident memory reaches MB megabytes",
    )
    run.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        default=None,
        help='serve Prometheus metrics on PORT at /metrics (default AIOTASKQ["METRICS_PORT"]; '
        "needs prometheus_client); with --processes, the sum of the processes",
    )
    # A child of --processes: replaced, not restarted, when it recycles itself.
    run.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)


def _add_common(parser: argparse.ArgumentParser, settings_option: bool) -> None:
    if settings_option:
        parser.add_argument(
            "--settings",
            metavar="MODULE",
            help="the Django settings module, for example mysite.settings "
            "(default: $DJANGO_SETTINGS_MODULE)",
        )
        parser.add_argument(
            "--traceback",
            action="store_true",
            help="on a configuration or database error, show the full traceback, not one line",
        )
    else:
        # manage.py reads these itself before the command runs; accept them after the
        # sub-command too, without overriding what it parsed.
        for option in ("--settings", "--pythonpath"):
            parser.add_argument(option, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        parser.add_argument(
            "--traceback", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default INFO",
    )


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"expected a TCP port from 1 to 65535, got {value!r}")
    return int(value)


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value!r}")
    return number


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, got {value!r}")
    return seconds


def _queue(value: str) -> str:
    try:
        return validate_queue(value)
    except InvalidQueueName as exc:
        raise argparse.ArgumentTypeError(str(exc).rstrip(".")) from None


def _shown(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_CAP = re.compile(r"[0-9]{1,7}")


def _queue_entry(entry: str) -> tuple[str, int | None]:
    """One entry of ``--queues``: ``NAME`` or ``NAME:N`` (a cap of N tasks at once)."""
    name, colon, cap = entry.partition(":")
    queue = _queue(name.strip())
    if not colon:
        return queue, None
    if not _CAP.fullmatch(cap.strip()) or int(cap) < 1:
        raise argparse.ArgumentTypeError(
            f"the cap in {_shown(entry)} must be a positive integer (tasks of {queue} at "
            "once), for example critical:10"
        )
    return queue, int(cap)


def _queues(value: str) -> list[tuple[str, int | None]]:
    """``--queues a:10,b``: the queue names, in order, each with its cap or ``None``. Each
    entry is parsed on its own, so that an entry can grow options of its own."""
    entries = [entry.strip() for entry in value.split(",")]
    if "" in entries:
        raise argparse.ArgumentTypeError(
            f"{_shown(value)} has an empty entry; name the queues separated by single commas"
        )
    parsed = [_queue_entry(entry) for entry in entries]
    names = [name for name, _ in parsed]
    if twice := sorted({name for name in names if names.count(name) > 1}):
        raise argparse.ArgumentTypeError(f"names {', '.join(twice)} more than once")
    return parsed


def _asyncio_run(coro: Coroutine[Any, Any, Any], loop: str = "auto") -> Any:
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def _loop_name(loop: str) -> str:
    if loop == "auto":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "asyncio"
        return "uvloop"
    return loop


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format=_LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("aiotaskq").setLevel(level)


def execute(options: argparse.Namespace) -> int:
    """Run the parsed sub-command; Django must be set up. Returns the exit status.

    Raises:
        Mistake, ConfigurationError, DatabaseError: see :func:`explain`.
    """
    from ..conf import get_settings
    from . import looks

    get_settings()  # a bad AIOTASKQ key or value shows before the command does anything
    if options.command == "run":
        return _run(options)
    if options.command in ("retry", "delete"):
        return _by_hand(options)
    if options.command == "schedules":
        return looks.show_schedules(options)
    if options.command == "workers":
        return looks.show_workers(options)
    if options.command == "health":
        return looks.check_health(options)
    return looks.show_status(options)


def _by_hand(options: argparse.Namespace) -> int:
    from ..conf import get_settings
    from ..db import control

    if not options.ids and not (options.failed or options.dirty):
        raise Mistake("name task ids, or pass --failed and/or --dirty")
    either = not (options.failed or options.dirty)
    selection = control.Selection(
        ids=options.ids or None,
        queue=options.queue,
        failed=options.failed or either,
        dirty=options.dirty or either,
    )
    action = control.requeue if options.command == "retry" else control.delete
    count = len(_asyncio_run(action(selection, get_settings().DIRTY_AFTER)))
    done = "queued again" if options.command == "retry" else "deleted"
    print(f"{count} task{'s' if count != 1 else ''} {done}")
    return 0


def _run(options: argparse.Namespace) -> int:
    from ..worker import Worker, WorkerConfig
    from ..worker.recycle import REPLACE_ME, Recycling
    from ..worker.shutdown import ignore_stop_signals, install_signal_handlers

    if options.processes is not None and not options.supervised:
        return _supervise(options)
    port = _metrics_port(options)
    # A child of --processes with metrics writes them for its supervisor to serve.
    metrics_dir = os.environ.get(METRICS_DIR_ENV) if options.supervised else None
    if port is not None and metrics_dir is None:
        _serve_metrics(port)
    worker = Worker(
        WorkerConfig(
            queues=tuple(name for name, _ in options.queues or ()),
            caps={name: cap for name, cap in options.queues or () if cap is not None},
            concurrency=options.concurrency,
            threads=options.threads,
            db_threads=options.db_threads,
            grace=options.grace,
            burst=options.burst,
            recycling=Recycling(
                max_tasks=options.max_tasks_per_process,
                max_memory_mb=options.max_memory_per_process,
                hard_time_limits=options.supervised,
                supervisor_pid=os.getppid() if options.supervised else None,
            ),
            metrics_dir=metrics_dir if port is not None else None,
        )
    )
    print(
        f"aiotaskq worker {worker.id}\n"
        f"  queues:      {', '.join(worker.queues)}\n"
        f"  lanes:       {worker.lanes.describe(options.concurrency)}\n"
        f"  concurrency: {options.concurrency}\n"
        f"  threads:     {options.threads}\n"
        f"  loop:        {_loop_name(options.loop)}\n"
        f"  connections: {worker.budget}"
        + (f"\n  metrics:     http://0.0.0.0:{port}/metrics" if port and not metrics_dir else ""),
        flush=True,
    )

    async def main() -> None:
        install_signal_handlers(worker)
        try:
            await worker.run()
        finally:
            ignore_stop_signals()
        if worker.abandoned_threads or worker.stubborn:
            # Tasks ran past the grace period and their rows were given back: sync tasks in
            # their threads (Python would wait for them at exit), or coroutines that ignore
            # their cancellation (the loop's shutdown would wait for them forever). Leave
            # without waiting for either.
            logging.getLogger(__name__).warning(
                "worker.exit: %d sync tasks still running in their threads and %d coroutines "
                "that ignored their cancellation are abandoned",
                worker.abandoned_threads,
                len(worker.stubborn),
            )
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status())

    def status() -> int:
        # A recycled child asks its supervisor for a replacement; alone, a recycled worker
        # exits 0 for its process manager to start it again.
        return REPLACE_ME if worker.recycled and options.supervised else 0

    _asyncio_run(main(), options.loop)
    return status()


def _supervise(options: argparse.Namespace) -> int:
    """``run --processes N``: a supervisor of N children, each this same command line."""
    from ..worker.supervisor import Supervisor, child_command

    command = getattr(options, "respawn", None)
    if command is None:
        raise Mistake(
            "--processes starts its workers from the command line; run it as "
            '"aiotaskq run" or "python manage.py aiotaskq run", not through call_command()'
        )
    supervisor = Supervisor(child_command(command), options.processes, options.grace)
    port = _metrics_port(options)
    if port is None:
        return int(asyncio.run(supervisor.run()))
    # The children write their counts in a directory of the supervisor's, which serves
    # their sum (and keeps what a replaced child counted).
    with tempfile.TemporaryDirectory(prefix="aiotaskq-metrics-") as directory:
        os.environ[METRICS_DIR_ENV] = directory
        _serve_metrics(port, directory)
        return int(asyncio.run(supervisor.run()))


#: Where a child of ``--processes`` writes its metrics (set by the supervisor).
METRICS_DIR_ENV = "AIOTASKQ_METRICS_DIR"


def _metrics_port(options: argparse.Namespace) -> int | None:
    from ..conf import get_settings

    port: int | None = options.metrics_port
    return port if port is not None else get_settings().METRICS_PORT


def _serve_metrics(port: int, directory: str | None = None) -> None:
    from django.core.exceptions import ImproperlyConfigured

    try:
        from .. import metrics
    except ImproperlyConfigured as exc:
        raise Mistake(f"--metrics-port {port}: {exc}") from None
    try:
        metrics.serve(port, directory)
    except OSError as exc:
        raise Mistake(
            f"--metrics-port {port}: the port cannot be served ({exc.strerror or exc}); "
            "choose another"
        ) from None


def own_command_line() -> list[str]:
    """This process's command line, to start another like it (``--processes``)."""
    return [sys.executable, *sys.orig_argv[1:]]


def setup_django(settings_module: str | None) -> None:
    """Import the settings module (``--settings``, else ``DJANGO_SETTINGS_MODULE``) and set
    Django up, as ``manage.py`` does: the project in the current directory is importable.

    Raises:
        Mistake: no settings module is named, or it cannot be imported.
    """
    origin = "--settings"
    if settings_module:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    else:
        settings_module = os.environ.get("DJANGO_SETTINGS_MODULE")
        origin = "DJANGO_SETTINGS_MODULE"
    if not settings_module:
        raise Mistake(
            "no Django settings: pass --settings mysite.settings or set DJANGO_SETTINGS_MODULE"
        )
    if settings_module.endswith(".py") or os.sep in settings_module:
        raise Mistake(
            f"the settings module {settings_module!r} (from {origin}) is a file name; "
            "give its dotted module path, for example mysite.settings"
        )
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    # Imported here, not first by django.setup(), to tell a module that is not there from
    # one that raised: Django then finds it in sys.modules.
    try:
        importlib.import_module(settings_module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if settings_module == missing or settings_module.startswith(f"{missing}."):
            path = os.environ.get("PYTHONPATH")
            looked = f"the current directory {cwd}" + (f" and PYTHONPATH={path}" if path else "")
            raise Mistake(
                f"cannot import the settings module {settings_module!r} (from {origin}): "
                f"{exc}; looked in {looked}; pass --settings with the module's dotted path, "
                "run from the project's directory, or add that directory to PYTHONPATH"
            ) from exc
        raise _settings_raised(settings_module, exc) from exc
    except Exception as exc:
        raise _settings_raised(settings_module, exc) from exc
    import django

    django.setup()


def _settings_raised(module: str, exc: Exception) -> Mistake:
    return Mistake(
        f"the settings module {module!r} raised {type(exc).__name__}: {exc} "
        "(--traceback shows where)"
    )


def explain(exc: BaseException) -> str | None:
    """The one-line message for a known mistake (a settings module that cannot be imported,
    bad settings, a database that cannot be reached or is not migrated), else ``None``:
    anything else is a bug and keeps its traceback."""
    from django.core.exceptions import ImproperlyConfigured

    from ..errors import ConfigurationError

    if isinstance(exc, Mistake | InvalidWorkerOptions):
        return str(exc)
    module = os.environ.get("DJANGO_SETTINGS_MODULE")
    where = f" {module}" if module else ""
    if isinstance(exc, ConfigurationError):
        return f"bad configuration in the settings{where}: {exc}"
    if isinstance(exc, ImproperlyConfigured):
        return f"the Django settings{where} are not usable: {exc}"
    if isinstance(exc, DatabaseError):
        return _database_problem(exc)
    return None


# SQLSTATE classes of a server that cannot be used at all: connection exceptions, refused
# logins, an unknown database, a server shutting down or starting up. A client-side failure
# to connect (refused, timed out, a pool that could not connect) has no SQLSTATE.
_UNREACHABLE = ("08", "28", "3D", "57P")


def _database_problem(exc: DatabaseError) -> str | None:
    driver = _driver_error(exc)
    reason = str(exc).splitlines()[0].rpartition("failed: ")[2] if str(exc) else "no reason given"
    if isinstance(driver, psycopg.errors.UndefinedTable):
        return (
            f"the database at {_address()} has no aiotaskq tables ({reason}); "
            'run "python manage.py migrate"'
        )
    if isinstance(driver, psycopg.OperationalError) and (
        driver.sqlstate is None or driver.sqlstate.startswith(_UNREACHABLE)
    ):
        from ..conf import get_settings

        alias = get_settings().DATABASE
        return (
            f"cannot connect to the database at {_address()}: {reason}; check that PostgreSQL is "
            "running and accepts connections there, and the HOST, PORT, NAME, USER and "
            f"PASSWORD of DATABASES[{alias!r}]"
        )
    return None


def _driver_error(exc: BaseException) -> psycopg.Error | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, psycopg.Error):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _address() -> str:
    """Where the task table's database is, as libpq will look for it (the ``PG*`` variables
    fill in what the settings leave out)."""
    from ..db.connect import conninfo

    params = psycopg.conninfo.conninfo_to_dict(conninfo())
    host = str(params.get("host") or os.environ.get("PGHOST") or "the local socket")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    name = params.get("dbname") or os.environ.get("PGDATABASE") or "(default)"
    return f"{host}:{port} (database {name})"


def main(argv: Sequence[str] | None = None) -> int:
    """The ``aiotaskq`` console script."""
    parser = OneLineErrors(
        prog="aiotaskq",
        description=DESCRIPTION,
        epilog=EXAMPLES.format(prog="aiotaskq"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"aiotaskq {version()}",
        help="print the version and exit",
    )
    add_commands(parser)
    options = parser.parse_args(argv)
    options.respawn = (
        own_command_line() if argv is None else [sys.executable, "-m", "aiotaskq.cli", *argv]
    )
    configure_logging(options.log_level)
    try:
        setup_django(options.settings)
        return execute(options)
    except Exception as exc:
        message = explain(exc)
        if message is None or options.traceback:
            raise
        print(error_line(options.command, message), file=sys.stderr)
        return 2
