"""A tasks module with a bug: importing it raises (tests/test_cli_mistakes.py)."""

raise ZeroDivisionError("a bug in a tasks module")
