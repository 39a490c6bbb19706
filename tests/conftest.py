"""Shared fixtures: a scripted local HTTP server, the shared real data, a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.server import ScriptedServer

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """``$AGG_SHARED_DATA``, else ``../shared/data`` beside the project."""
    return Path(os.environ.get("AGG_SHARED_DATA") or PROJECT_ROOT.parent / "shared" / "data")


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared test data not found at {path} (set AGG_SHARED_DATA)")
    return path


@pytest.fixture
def server():
    with ScriptedServer() as srv:
        yield srv


# -- feed documents and the command line, for tests that drive agg end to end --

def rss_document(items: list[dict], title: str = "Test feed") -> bytes:
    """An RSS 2.0 document; each item is a dict of element name → text (guid, title, link, pubDate, ...)."""
    from xml.sax.saxutils import escape

    def item_xml(item: dict) -> str:
        return "<item>" + "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in item.items()) + "</item>"

    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"<title>{escape(title)}</title><link>http://example.test/</link><description>test</description>"
        + "".join(item_xml(item) for item in items)
        + "</channel></rss>"
    ).encode("utf-8")


@pytest.fixture
def agg():
    """Run the ``agg`` command line in-process: ``agg("--config", cfg, "fetch")`` → click Result."""
    from click.testing import CliRunner

    from aggregator.cli import cli

    def invoke(*args: str, env: dict[str, str] | None = None):
        return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)

    return invoke


# -- the web reader (agg serve) --

@pytest.fixture(scope="session")
def reader_db(tmp_path_factory: pytest.TempPathFactory):
    """The samples and the crafted feeds fetched with ``agg fetch`` (see tests/reader.py); built once."""
    from tests.reader import build_reader_db

    return build_reader_db(tmp_path_factory.mktemp("reader"))


@pytest.fixture(scope="session")
def running_reader(reader_db):
    """The reader over :func:`reader_db`, served by uvicorn on 127.0.0.1."""
    from tests.reader import ReaderInThread

    with ReaderInThread(reader_db.path) as reader:
        yield reader
