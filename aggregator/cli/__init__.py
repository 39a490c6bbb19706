"""The ``agg`` command line: a thin shell over the library API.

Data goes to stdout (a table on a terminal, plain lines when piped, JSON
lines with ``--json``); logs, progress and errors go to stderr. Everything
that came from a feed or a page is made safe for the terminal first.

Exit statuses: 0 success (a run where some feeds failed is still a
success: each failure is reported and stored); 1 agg could not run (bad
config, unusable database); 2 bad usage; 75 another run holds the lock.

One file a part: ``app`` (the ``agg`` group, its context and what every
command shares), ``running`` (fetch, group, daemon, status), ``reading``
(list, show, search, stats), ``feeds`` (feeds, import), ``exports``
(export) and ``tools`` (serve, eval-dedup). Importing the package registers
every command.
"""

from aggregator.cli import exports, feeds, reading, running, tools  # noqa: F401  (each registers its commands)
from aggregator.cli.app import Context, TerminalSafeFormatter, cli, main, terminal_safe
from aggregator.cli.running import BACKGROUND_GROUPING
from aggregator.times import time_ago

__all__ = ["BACKGROUND_GROUPING", "Context", "TerminalSafeFormatter", "cli", "main", "terminal_safe", "time_ago"]
