"""The test settings with one mistake, chosen by ``AIOTASKQ_TEST_MISTAKE``, for
tests/test_cli_mistakes.py."""

import os

from tests.settings import *  # noqa: F403
from tests.settings import AIOTASKQ, INSTALLED_APPS

match os.environ.get("AIOTASKQ_TEST_MISTAKE"):
    case "raises":
        raise RuntimeError("the settings refuse to load")
    case "unknown-key":
        AIOTASKQ = {**AIOTASKQ, "DIRTY_AFTERR": 3}
    case "bad-value":
        AIOTASKQ = {**AIOTASKQ, "POLL_INTERVAL": -1}
    case "duplicate-app":
        INSTALLED_APPS = [*INSTALLED_APPS, "aiotaskq"]
    case "buggy-tasks":
        AIOTASKQ = {**AIOTASKQ, "IMPORTS": ["tests.cli_buggy_tasks"]}
