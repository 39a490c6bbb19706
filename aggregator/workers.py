"""Worker processes that run one function for the event loop, talked to over sockets the loop reads itself.

:class:`WorkerProcesses` starts its processes (from a fork server, never a
fork of the process running the event loop) on the first call. Each worker
holds one end of a socket pair and answers the calls sent to it in order (up
to 8 queued): a length and a pickle each way. The event loop reads the
replies as its own I/O.

Why not :class:`concurrent.futures.ProcessPoolExecutor`: its results come back
through a pipe read by a helper thread, which needs the interpreter lock the
event loop holds to take each one. A 50-entry feed's parse (about 68 KB pickled)
does not fit a 64 KB pipe, so the worker waited on that thread mid-reply: in a
cold run over 1,000 feeds, py-spy found the workers in that send in 28% of their
samples, and the pool's two helper threads took 0.5 CPU seconds of the main
process (``bench/README.md``, speed round 4).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import pickle
import signal
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!Q")
# Room in each socket for a whole request or reply, so neither side waits on
# the other mid-message (the kernel caps it at net.core.wmem_max).
_SOCKET_BUFFER = 1 << 20
_JOIN_SECONDS = 5.0
# Calls sent to a worker ahead of its answers: it starts the next the moment it replies,
# however late the busy event loop reads that reply (cold run of 1,000 feeds, median of 3:
# 2 queued, 3.95 s; 4, 3.73 s; 8, 3.26 s).
_CALLS_QUEUED_PER_WORKER = 8


class WorkerDied(Exception):
    """The worker answering a call exited (killed, out of memory) before it replied."""


@dataclass
class _Worker:
    process: Any  # a multiprocessing Process of the fork server context
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    # The calls sent and not yet answered, oldest first: a worker answers in order.
    waiting: deque[asyncio.Future] = field(default_factory=deque)
    replies: asyncio.Task | None = None


class WorkerProcesses:
    """``workers`` processes calling ``function`` (a module-level function) for async callers.

    ``await call(*args)`` returns ``function(*args)`` or raises what it
    raised; :class:`WorkerDied` when its worker died meanwhile, and for every
    call once no worker is left. A caller cancelled while its call runs
    leaves nothing behind: the reply is read and dropped. Use as
    ``async with``, or call :meth:`close`.
    """

    def __init__(self, function: Callable[..., Any], workers: int):
        self.function = function
        self.workers = workers
        self._alive: list[_Worker] = []
        self._starting: asyncio.Task | None = None
        self._reply_read = asyncio.Condition()
        self._closed = False

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers alive (none before the first call)."""
        return [worker.process.pid for worker in self._alive]

    async def call(self, *args: Any) -> Any:
        if self._closed:
            raise RuntimeError("the worker processes are closed")
        if self._starting is None:
            self._starting = asyncio.create_task(self._start())
        await asyncio.shield(self._starting)
        request = pickle.dumps(args, pickle.HIGHEST_PROTOCOL)
        async with self._reply_read:
            try:
                worker = await self._reply_read.wait_for(self._least_busy)
            except asyncio.CancelledError:
                self._reply_read.notify()  # a wakeup this caller was given goes to the next one waiting
                raise
            if isinstance(worker, WorkerDied):
                raise worker
            assert worker is not None  # wait_for returns the predicate's first true answer
            reply = asyncio.get_running_loop().create_future()
            worker.waiting.append(reply)
            worker.writer.write(_LENGTH.pack(len(request)))
            worker.writer.write(request)
        return await reply

    def _least_busy(self) -> _Worker | WorkerDied | None:
        """The worker with the fewest calls waiting, if it has room for another; None when all are full."""
        if not self._alive:
            return WorkerDied("every worker process has died")
        worker = min(self._alive, key=lambda candidate: len(candidate.waiting))
        return worker if len(worker.waiting) < _CALLS_QUEUED_PER_WORKER else None

    async def _start(self) -> None:
        context = multiprocessing.get_context("forkserver")
        pairs = [socket.socketpair() for _ in range(self.workers)]
        for pair in pairs:
            for end in pair:
                end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
                end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        processes = [context.Process(target=_serve, args=(theirs, self.function), daemon=True) for _, theirs in pairs]
        try:
            # Starting a process waits on the fork server (and starts it, the first time): not in the loop's thread.
            await asyncio.to_thread(_start_all, processes)
        except Exception as exc:
            for ours, _ in pairs:
                ours.close()
            await asyncio.to_thread(_kill_all, [process for process in processes if process.pid is not None])
            raise WorkerDied(f"could not start worker processes: {exc}") from exc
        finally:
            for _, theirs in pairs:
                theirs.close()
        for (ours, _), process in zip(pairs, processes):
            reader, writer = await asyncio.open_unix_connection(sock=ours)
            worker = _Worker(process, reader, writer)
            worker.replies = asyncio.create_task(self._read_replies(worker))
            self._alive.append(worker)

    async def _read_replies(self, worker: _Worker) -> None:
        try:
            while True:
                (size,) = _LENGTH.unpack(await worker.reader.readexactly(_LENGTH.size))
                blob = await worker.reader.readexactly(size)
                reply = worker.waiting.popleft()
                try:
                    succeeded, value = pickle.loads(blob)
                except Exception as exc:  # noqa: BLE001 -- e.g. a class this process cannot import: that call's failure
                    succeeded, value = False, exc
                if reply.done():  # its caller was cancelled
                    pass
                elif succeeded:
                    reply.set_result(value)
                else:
                    reply.set_exception(value)
                async with self._reply_read:
                    self._reply_read.notify()
        except (asyncio.IncompleteReadError, ConnectionError):
            if not self._closed:
                log.warning("worker process %d died", worker.process.pid)
        except Exception:  # a bug here must not leave callers waiting for ever
            log.exception("reading worker process %d's replies failed", worker.process.pid)
        await self._discard(worker)

    async def _discard(self, worker: _Worker) -> None:
        worker.writer.close()
        if worker in self._alive:
            self._alive.remove(worker)
        while worker.waiting:
            reply = worker.waiting.popleft()
            if not reply.done():
                reply.set_exception(WorkerDied(f"worker process {worker.process.pid} died"))
        async with self._reply_read:
            self._reply_read.notify_all()
        await asyncio.to_thread(_kill_all, [worker.process])

    async def close(self) -> None:
        """Stop the workers. A call still running is abandoned: its caller gets :class:`WorkerDied`."""
        self._closed = True
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        workers, self._alive = self._alive, []
        for worker in workers:
            worker.writer.close()
        # Each worker's reader sees its socket closed and discards it (kills and reaps the process).
        await asyncio.gather(*(worker.replies for worker in workers if worker.replies), return_exceptions=True)

    async def __aenter__(self) -> WorkerProcesses:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _start_all(processes: list[Any]) -> None:
    for process in processes:
        process.start()


def _kill_all(processes: list[Any]) -> None:
    """Kill and reap: a worker idle or busy has nothing left that anyone waits for."""
    for process in processes:
        if process.is_alive():
            process.kill()
        process.join(_JOIN_SECONDS)


def _serve(connection: socket.socket, function: Callable[..., Any]) -> None:
    """A worker's life: answer calls until the other end closes the socket."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle: it closes the socket
    with connection:
        while True:
            header = _receive(connection, _LENGTH.size)
            if header is None:
                return
            request = _receive(connection, _LENGTH.unpack(header)[0])
            if request is None:
                return
            args = pickle.loads(request)
            try:
                reply = pickle.dumps((True, function(*args)), pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # noqa: BLE001 -- the caller gets what the function raised
                reply = _pickled_failure(exc)
            try:
                connection.sendall(_LENGTH.pack(len(reply)) + reply)
            except OSError:  # the main process closed its end: nobody is waiting for the reply
                return


def _pickled_failure(exc: Exception) -> bytes:
    try:
        return pickle.dumps((False, exc), pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 -- an exception that cannot be pickled travels as its text
        return pickle.dumps((False, RuntimeError(f"{type(exc).__name__}: {exc}")), pickle.HIGHEST_PROTOCOL)


def _receive(connection: socket.socket, size: int) -> bytes | None:
    """Exactly ``size`` bytes, or None at the end of the stream."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = connection.recv_into(view[received:])
        if count == 0:
            return None
        received += count
    return bytes(buffer)
