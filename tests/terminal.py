"""Run agg in a subprocess with stdout and/or stderr on a pseudo-terminal, as a person would see it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading


def run_on_terminal(args: list[str], *, stdout_too: bool = False, env: dict[str, str] | None = None,
                    timeout: float = 120) -> tuple[int, str, str]:
    """``python -m aggregator ARGS`` with stderr (and stdout, with ``stdout_too``) on a terminal.

    Returns the exit status, what went to a piped stdout ("" with ``stdout_too``) and the terminal's text.
    """
    main, secondary = os.openpty()
    screen = bytearray()

    def read() -> None:  # drain the terminal as it fills, so the child never blocks on it
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child's end closed
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    full_env = {**os.environ, "COLUMNS": "120", "TERM": "xterm", **(env or {})}
    try:
        process = subprocess.run([sys.executable, "-m", "aggregator", *args], stdin=subprocess.DEVNULL,
                                 stdout=secondary if stdout_too else subprocess.PIPE, stderr=secondary,
                                 env=full_env, timeout=timeout)
    finally:
        os.close(secondary)
        reader.join(timeout=10)
        os.close(main)
    stdout = "" if stdout_too else process.stdout.decode()
    return process.returncode, stdout, screen.decode(errors="replace")
