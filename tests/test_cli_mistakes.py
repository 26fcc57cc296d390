"""Every mistake in the options is one line on stderr and exit status 2, for ``aiotaskq ...``
and ``python -m django aiotaskq ...`` alike. ``--version`` and the help texts."""

from __future__ import annotations

import importlib.metadata
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT

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


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port where nothing listens: bound, never listening, so connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


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
