"""``python -m aiotaskq.cli``: the ``aiotaskq`` command."""

from . import main

raise SystemExit(main())
