"""Every mistake on the command line is one line on stderr and exit status 2, for
``aiotaskq ...`` and ``python -m django aiotaskq ...`` alike; a bug keeps its traceback.
``--version`` and the help texts."""

from __future__ import annotations

import importlib.metadata
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import ROOT, _admin_conninfo

CLI = (sys.executable, "-m", "aiotaskq.cli")
MANAGE = (sys.executable, "-m", "django", "aiotaskq")
BOTH = pytest.mark.parametrize("entry", [CLI, MANAGE], ids=["aiotaskq", "manage.py"])


def _run(
    entry: tuple[str, ...], *args: str, env: dict[str, str] | None = None, unset: str = ""
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop(unset, None)
    return subprocess.run(
        [*entry, *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_line(out: subprocess.CompletedProcess[str]) -> str:
    """The error line of a mistake: exit status 2, one line on stderr, no traceback."""
    assert out.returncode == 2, out
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert "error:" in lines[0]
    return lines[0]


def _mistake(name: str) -> dict[str, str]:
    return {"AIOTASKQ_TEST_MISTAKE": name}


# --- the settings module --------------------------------------------------------------------


def test_a_settings_module_that_is_not_there() -> None:
    line = _one_line(_run(CLI, "status", "--settings", "nosuch.settings"))
    assert line.startswith("aiotaskq status: error: cannot import the settings module")
    assert "'nosuch.settings'" in line
    assert "No module named 'nosuch'" in line
    assert f"the current directory {ROOT}" in line
    assert "--settings" in line
    assert "PYTHONPATH" in line


def test_a_wrong_django_settings_module() -> None:
    out = _run(CLI, "retry", "--failed", env={"DJANGO_SETTINGS_MODULE": "tests.nosuch"})
    line = _one_line(out)
    assert "'tests.nosuch' (from DJANGO_SETTINGS_MODULE)" in line
    assert "No module named 'tests.nosuch'" in line


def test_no_settings_at_all() -> None:
    line = _one_line(_run(CLI, "status", unset="DJANGO_SETTINGS_MODULE"))
    assert "no Django settings" in line
    assert "--settings" in line
    assert "DJANGO_SETTINGS_MODULE" in line


def test_a_settings_module_that_raises() -> None:
    args = ("status", "--settings", "tests.settings_mistakes")
    line = _one_line(_run(CLI, *args, env=_mistake("raises")))
    assert "'tests.settings_mistakes' raised RuntimeError: the settings refuse to load" in line
    assert "--traceback" in line
    # --traceback shows where it was raised.
    out = _run(CLI, *args, "--traceback", env=_mistake("raises"))
    assert out.returncode == 1
    assert "Traceback" in out.stderr
    assert 'settings_mistakes.py", line' in out.stderr


def test_a_settings_file_name_instead_of_a_module() -> None:
    line = _one_line(_run(CLI, "status", "--settings", "tests/settings.py"))
    assert "'tests/settings.py' (from --settings) is a file name" in line
    assert "mysite.settings" in line


def test_django_improperly_configured_at_setup() -> None:
    out = _run(
        CLI, "status", "--settings", "tests.settings_mistakes", env=_mistake("duplicate-app")
    )
    line = _one_line(out)
    assert "the Django settings tests.settings_mistakes are not usable" in line
    assert "Application labels aren't unique, duplicates: aiotaskq" in line


@BOTH
@pytest.mark.parametrize(
    ("mistake", "named"),
    [
        ("unknown-key", 'Unknown key AIOTASKQ["DIRTY_AFTERR"]. Did you mean "DIRTY_AFTER"?'),
        ("bad-value", 'AIOTASKQ["POLL_INTERVAL"] must be a positive number, got -1'),
    ],
)
def test_a_bad_aiotaskq_setting(entry: tuple[str, ...], mistake: str, named: str) -> None:
    out = _run(entry, "status", "--settings", "tests.settings_mistakes", env=_mistake(mistake))
    line = _one_line(out)
    assert line.startswith(
        "aiotaskq status: error: bad configuration in the settings tests.settings_mistakes: "
    )
    assert named in line


# --- the database ---------------------------------------------------------------------------


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port where nothing listens: bound, never listening, so connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@BOTH
@pytest.mark.parametrize(
    "command", [("status",), ("retry", "--failed"), ("delete", "--dirty")], ids=lambda c: c[0]
)
def test_the_database_unreachable(
    entry: tuple[str, ...], command: tuple[str, ...], dead_port: int
) -> None:
    out = _run(entry, *command, "--settings", "tests.settings", env={"PGPORT": str(dead_port)})
    line = _one_line(out)
    assert line.startswith(f"aiotaskq {command[0]}: error: cannot connect to the database at")
    assert f"127.0.0.1:{dead_port}" in line
    assert "Connection refused" in line
    assert "HOST, PORT" in line


def test_manage_py_traceback_shows_the_database_error(dead_port: int) -> None:
    out = _run(MANAGE, "status", "--traceback", env={"PGPORT": str(dead_port)})
    assert out.returncode == 1
    assert "Traceback" in out.stderr
    assert "aiotaskq.errors.DatabaseError: Reading the queue status failed" in out.stderr


def test_a_database_without_the_tables() -> None:
    name = f"aiotaskq_cli_empty_{os.getpid()}"
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
        try:
            out = _run(
                CLI, "status", "--settings", "tests.settings", env={"AIOTASKQ_TEST_DATABASE": name}
            )
        finally:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    line = _one_line(out)
    assert f"(database {name}) has no aiotaskq tables" in line
    assert 'run "python manage.py migrate"' in line


# --- options --------------------------------------------------------------------------------


# Every case through ``aiotaskq``; through manage.py the ones marked, which share the parser.
_BAD_OPTIONS = [
    (
        ("run", "--concurrency", "0"),
        "argument --concurrency: must be a positive integer, got '0'",
    ),
    (("run", "--concurrency", "abc"), "argument --concurrency: must be a positive integer"),
    (("run", "--threads", "-3"), "argument --threads: must be a positive integer"),
    (("run", "--grace", "-1"), "argument --grace: must be a number of seconds, 0 or more"),
    (("run", "--grace", "soon"), "argument --grace: must be a number of seconds, 0 or more"),
    (("run", "--grace", "nan"), "argument --grace: must be a number of seconds"),
    (("run", "--queues", "a,,b"), "argument --queues: 'a,,b' has an empty entry"),
    (("run", "--queues", "a,"), "argument --queues: 'a,' has an empty entry"),
    (("run", "--queues", "default,web hooks"), "The queue name 'web hooks' may contain only"),
    (("run", "--queues", "q" * 64), "is 64 bytes; the limit is 63"),
    (("retry", "--queue", "a/b"), "argument --queue: The queue name 'a/b' may contain only"),
    (("delete", "not-a-uuid"), "argument ID: invalid UUID value: 'not-a-uuid'"),
    (("run", "--bogus"), "unrecognized arguments: --bogus"),
    (("start",), "invalid choice: 'start'"),
    ((), "the following arguments are required"),
]
_THROUGH_MANAGE = [
    ("run", "--concurrency", "0"),
    ("run", "--grace", "-1"),
    ("run", "--queues", "a,,b"),
    ("run", "--bogus"),
    (),
]


def _case_id(value: object) -> str:
    if value in (CLI, MANAGE):
        return "aiotaskq" if value == CLI else "manage.py"
    if isinstance(value, tuple):
        return " ".join(value) or "nothing"
    return "-"


@pytest.mark.parametrize(
    ("entry", "args", "named"),
    [(CLI, *case) for case in _BAD_OPTIONS]
    + [(MANAGE, *case) for case in _BAD_OPTIONS if case[0] in _THROUGH_MANAGE],
    ids=_case_id,
)
def test_a_bad_option(entry: tuple[str, ...], args: tuple[str, ...], named: str) -> None:
    settings = ("--settings", "tests.settings") if args else ()
    line = _one_line(_run(entry, *args, *settings))
    assert named in line
    assert "--help)" in line


@BOTH
def test_retry_without_a_selection(entry: tuple[str, ...]) -> None:
    line = _one_line(_run(entry, "retry", "--settings", "tests.settings"))
    assert line == "aiotaskq retry: error: name task ids, or pass --failed and/or --dirty"


# --- a bug is not a mistake -----------------------------------------------------------------


def test_a_bug_keeps_its_traceback() -> None:
    args = ("run", "--burst", "--settings", "tests.settings_mistakes")
    out = _run(CLI, *args, env=_mistake("buggy-tasks"))
    assert out.returncode == 1
    assert "Traceback" in out.stderr
    assert "ZeroDivisionError: a bug in a tasks module" in out.stderr


# --- --version and help ---------------------------------------------------------------------


@BOTH
def test_version(entry: tuple[str, ...]) -> None:
    out = _run(entry, "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"aiotaskq {importlib.metadata.version('django-aiotaskq')}\n"


EXAMPLES = {
    (): [
        "run --settings mysite.settings --concurrency 200 --queues default,webhooks",
        "status --json",
        "retry --failed --queue webhooks",
    ],
    ("run",): [
        "run --settings mysite.settings --concurrency 200 --queues default,webhooks",
        "run --burst",
    ],
    ("status",): ["status --json"],
    ("retry",): ["retry --failed --queue webhooks"],
    ("delete",): ["delete --dirty --queue webhooks"],
}


@BOTH
@pytest.mark.parametrize("command", list(EXAMPLES), ids=lambda c: " ".join(c) or "top")
def test_help_reads_as_plain_words_with_examples(
    entry: tuple[str, ...], command: tuple[str, ...]
) -> None:
    out = _run(entry, *command, "--help")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "examples:\n" in text
    for example in EXAMPLES[command]:
        # Each example is a line of its own, after the command's name.
        assert any(
            line.strip().startswith(("aiotaskq ", "__main__.py aiotaskq ")) and example in line
            for line in text.splitlines()
        ), (example, text)
    for markup in ("``", ":class:", ":func:", ":meth:"):
        assert markup not in text, text
    assert not any(line.startswith(".. ") for line in text.splitlines()), text
    if entry == CLI:
        # The first line after the usage says what the command does, in a full sentence.
        description = text.split("\n\n")[1]
        assert description[0].isupper(), text
        assert description.rstrip().endswith("."), text


def test_run_with_a_bad_queue_names_it_before_touching_the_database(dead_port: int) -> None:
    out = _run(CLI, "run", "--queues", "ok,b@d", env={"PGPORT": str(dead_port)})
    line = _one_line(out)
    assert "'b@d'" in line
    assert "'ok'" not in line


def test_run_against_a_database_that_does_not_exist_is_one_line() -> None:
    # Waiting would not mend it: the worker refuses at once (a database that does not answer
    # is waited for instead: tests/faults/test_outage.py).
    out = _run(
        CLI,
        "run",
        "--settings",
        "tests.settings",
        env={"AIOTASKQ_TEST_DATABASE": "aiotaskq_no_such_database"},
    )
    line = _one_line(out)
    assert line.startswith("aiotaskq run: error: cannot connect to the database at")
    assert 'database "aiotaskq_no_such_database" does not exist' in line


def test_run_burst_with_the_database_down_is_one_line(dead_port: int) -> None:
    out = _run(
        CLI, "run", "--burst", "--settings", "tests.settings", env={"PGPORT": str(dead_port)}
    )
    line = _one_line(out)
    assert line.startswith("aiotaskq run: error: cannot connect to the database at")
    assert f"127.0.0.1:{dead_port}" in line
