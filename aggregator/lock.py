"""The run lock: at most one agg run (``agg fetch`` or ``agg daemon``) per database.

The lock is an ``fcntl.flock`` on a file next to the database
(``agg.db`` → ``agg.db.lock``). The kernel releases it when the process
ends, however it ends, so a killed run never leaves a stale lock behind.
The file holds the holder's pid and command, for the message a second run
prints; it is never deleted (deleting a flock file lets two runs each
lock a different file of the same name).

A run can hand its lock to a process it starts, which finishes its work in
the background (``agg fetch`` leaving a large grouping backlog to
``agg group``): the child inherits the locked file descriptor, so the lock
is held without a gap until the child ends.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path


class LockHeld(Exception):
    """Another run holds the lock; the message says which, and what to do; ``holder`` is its line."""

    def __init__(self, message: str, holder: str = ""):
        super().__init__(message)
        self.holder = holder


class LockUnavailable(Exception):
    """The lock file cannot be opened (a folder in its place, no permission): no run can start."""


def lock_path_for(db_path: str | Path) -> Path:
    db_path = Path(db_path)
    return db_path.with_name(db_path.name + ".lock")


class RunLock:
    """``with RunLock(db_path):`` — raises :class:`LockHeld` at once if another run holds it, unless ``wait``.

    ``wait`` is True to wait for any holder, or a function asked with the
    :class:`LockHeld` it would raise: true to wait for that holder (after
    telling the user, say), false to raise it.
    """

    def __init__(self, db_path: str | Path, *, wait: bool | Callable[[LockHeld], bool] = False,
                 purpose: str | None = None):
        self.path = lock_path_for(db_path)
        self.wait = wait
        self.purpose = purpose or " ".join(["agg", *sys.argv[1:]])
        self._fd: int | None = None
        self._handed_over = False

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LockUnavailable(f"cannot open the lock file {self.path}: {exc.strerror or exc}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if self.wait is True else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                held = LockHeld(
                    f"another agg run holds {self.path}{f' ({holder})' if holder else ''}; "
                    "this run did nothing. Try again later, or pass --wait to wait for it", holder
                )
                if not (callable(self.wait) and self.wait(held)):
                    raise held from None
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._hold(fd)

    def _hold(self, fd: int) -> None:
        self._fd = fd
        self._handed_over = False
        self.name_holder(os.getpid(), self.purpose)

    def name_holder(self, pid: int, purpose: str) -> None:
        """Write who holds the lock, for the message a second run prints."""
        assert self._fd is not None
        started = datetime.now(UTC).isoformat(timespec="seconds")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {pid}, {purpose}, since {started}\n".encode(), 0)

    def hand_over(self) -> int:
        """:attr:`fd`, for a child process to inherit (``pass_fds``) and :meth:`adopt`; call it before the child starts.

        From then on :meth:`release` only closes this process's descriptor:
        unlocking would unlock the child's too (they share one open file).
        If the child could not be started, :meth:`take_back` undoes it.
        """
        if self._fd is None:
            raise RuntimeError("the lock is not held")
        self._handed_over = True
        return self._fd

    def take_back(self) -> None:
        """The lock is this process's alone again (no child inherited it)."""
        self._handed_over = False

    @classmethod
    def adopt(cls, db_path: str | Path, fd: int, *, purpose: str | None = None) -> RunLock:
        """The lock a parent run handed over as descriptor ``fd``; :class:`LockUnavailable` if it is not that."""
        lock = cls(db_path, purpose=purpose)
        try:
            same_file = os.path.samestat(os.fstat(fd), os.stat(lock.path))
            # Succeeds at once on the descriptor that holds the lock, fails on any other.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            same_file = False
        if not same_file:
            raise LockUnavailable(f"descriptor {fd} does not hold the lock {lock.path}")
        lock._hold(fd)
        return lock

    def release(self) -> None:
        if self._fd is not None:
            if not self._handed_over:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def fd(self) -> int | None:
        """The locked descriptor (None when not held)."""
        return self._fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        if not self.held:  # an adopted lock is held already
            self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
