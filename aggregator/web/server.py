"""Serving the reader: in the foreground for ``agg serve``, or from a thread for tests and benches."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import uvicorn

from aggregator.web.app import create_app

START_TIMEOUT_SECONDS = 10.0


def serve(db_path: Path, host: str, port: int, *, verbose: bool = False) -> None:
    """Serve the reader over ``db_path`` until interrupted (Ctrl-C or SIGTERM)."""
    uvicorn.run(create_app(db_path), host=host, port=port, log_level="info" if verbose else "warning",
                access_log=verbose, server_header=False)


class ReaderInThread:
    """The reader over ``db_path`` on 127.0.0.1 and a free port, served by uvicorn from a thread.

    ``with ReaderInThread(db) as reader: httpx.get(reader.url("/"))``; the server stops with the block.
    """

    def __init__(self, db_path: Path, **app_options: Any) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        config = uvicorn.Config(create_app(db_path, **app_options), log_level="warning", access_log=False,
                                server_header=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="agg-reader", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def __enter__(self) -> ReaderInThread:
        self._thread.start()
        started = threading.Event()
        for _ in range(int(START_TIMEOUT_SECONDS / 0.02)):
            if self._server.started or not self._thread.is_alive():
                break
            started.wait(0.02)
        if not self._server.started:
            self.__exit__()
            raise RuntimeError(f"the reader did not start within {START_TIMEOUT_SECONDS:.0f} s")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=START_TIMEOUT_SECONDS)
        self._socket.close()
