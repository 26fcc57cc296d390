"""Django's own tests of its tasks framework, fetched at test time.

They are not in the Django wheel, only in its sdist on PyPI. :func:`django_tests_dir`
downloads the sdist of the installed Django version once (``pip download``), keeps its
``tests/tasks/`` package in ``.cache/django-tests/<version>/`` (git-ignored) and returns the
directory to put on ``sys.path`` so that ``tasks.tasks`` and ``tasks.test_*`` import. The
tests are never copied into this repository: they follow the installed version, under
Django's licence, from Django's own release.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "django-tests"
DOWNLOAD_TIMEOUT = 300.0

__all__ = ["CACHE", "django_tests_dir"]


class Unavailable(Exception):
    """Django's tests could not be fetched; the message says why."""


def django_tests_dir(version: str | None = None) -> Path:
    """The directory holding Django's ``tasks`` test package for ``version`` (the installed
    Django by default), downloaded on first use.

    Raises:
        Unavailable: pip is missing, the download failed (no network, no such sdist) or the
            sdist has no ``tests/tasks/``.
    """
    version = version or django.__version__
    target = CACHE / version / "tests"
    if (target / "tasks" / "__init__.py").is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix=".download-") as tmp:
        sdist = _download(version, Path(tmp))
        staged = Path(tmp) / "tests"
        _extract_tasks_tests(sdist, version, staged)
        target.parent.mkdir(exist_ok=True)
        try:
            # A rename is atomic: a run that stops half-way leaves no half-filled cache, and
            # of two runs racing, the second finds the first one's directory in place.
            staged.rename(target)
        except OSError:
            if not (target / "tasks" / "__init__.py").is_file():
                raise
    return target


def _download(version: str, into: Path) -> Path:
    command = [
        sys.executable,
        *("-m", "pip", "download", "--no-deps", "--no-binary", ":all:"),
        *("--disable-pip-version-check", "--quiet", "--dest", str(into)),
        f"Django=={version}",
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"pip download of the Django {version} sdist failed: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise Unavailable(
            f"pip download of the Django {version} sdist failed (no network?): " + " | ".join(tail)
        )
    found = sorted(into.glob("[Dd]jango-*.tar.gz"))
    if not found:
        raise Unavailable(f"pip download left no Django {version} sdist in {into}")
    return found[0]


def _extract_tasks_tests(sdist: Path, version: str, into: Path) -> None:
    """Extract ``<top>/tests/tasks/*`` from the sdist into ``into/tasks/``."""
    into.mkdir()
    with tarfile.open(sdist) as archive:
        members = [
            m
            for m in archive.getmembers()
            if m.isfile()
            and len(parts := Path(m.name).parts) == 4
            and parts[1:3] == ("tests", "tasks")
        ]
        if not members:
            raise Unavailable(f"the Django {version} sdist has no tests/tasks/ directory")
        (into / "tasks").mkdir()
        for member in members:
            source = archive.extractfile(member)
            assert source is not None
            with source, open(into / "tasks" / Path(member.name).name, "wb") as out:
                shutil.copyfileobj(source, out)
