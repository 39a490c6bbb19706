"""The web reader's Starlette application: routes, pages, error pages.

Pages: ``/`` (stories, newest activity first, with ``agg list``'s filters and
pages of links), ``/story/ID`` (every report, the original source, the
representative's text), ``/search?q=`` (FTS5, one result per story) and
``/feeds`` (``agg status``). Each request reads one snapshot of the database
through a read-only connection, so the reader keeps working while ``agg fetch``
or the daemon writes (WAL readers never block the writer, nor it them).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from aggregator.search import SearchQueryError, marked_html, search
from aggregator.stats import feeds_status
from aggregator.store import Store, StoreError, from_db_time, utc_now
from aggregator.times import parse_since, time_ago, time_until
from aggregator.web.safety import SecurityHeaders, safe_href

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 50
SEARCH_LIMIT = 50
SQLITE_MAX_INTEGER = 2**63 - 1
WHOLE_NUMBER = re.compile(r"[0-9]{1,30}")


class ReadOnlyStores:
    """Read-only connections to one database, one per request in flight, reused between requests."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._idle: list[Store] = []
        self._lock = threading.Lock()

    @contextmanager
    def snapshot(self) -> Iterator[Store]:
        """A store whose reads all see the database as it was when the first one ran."""
        with self._lock:
            store = self._idle.pop() if self._idle else None
        try:
            store = store or Store.open(self.path, readonly=True)
        except StoreError as exc:
            raise HTTPException(503, str(exc)) from None
        conn = store.db.conn
        conn.execute("BEGIN")
        try:
            yield store
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")  # nothing was written: this only ends the snapshot
            with self._lock:
                self._idle.append(store)

    def close(self) -> None:
        with self._lock:
            while self._idle:
                self._idle.pop().close()


TEXT_SOURCES = {"page": "the article's page", "feed-content": "the feed's content", "feed-summary": "the feed's summary"}
RECENT = timedelta(days=7)


def _when(value: str | None) -> str:
    moment = from_db_time(value)
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "?"


def _age(value: str | None, now: datetime) -> str:
    """``2 h ago`` within a week, else the date: an age in hundreds of days says little."""
    moment = from_db_time(value)
    if moment is not None and now - moment > RECENT:
        return f"{moment:%-d %b %Y}"
    return time_ago(value, now)


def _paragraphs(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def _evidence(evidence: object) -> list[tuple[str, str]]:
    """The scores that joined a report to its story (``Store.story`` gives them as an object), as pairs to show."""
    if not isinstance(evidence, dict):
        return []
    return [(str(name), f"{score:.2f}" if isinstance(score, float) else str(score))
            for name, score in evidence.items()]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(ago=_age, until=time_until, when=_when, href=safe_href, paragraphs=_paragraphs,
                       evidence=_evidence, marked=lambda text: Markup(marked_html(text)),
                       source=lambda name: TEXT_SOURCES.get(name, name or "?"))
    return env


class Reader:
    """The pages over one database."""

    def __init__(self, db_path: Path, page_size: int = PAGE_SIZE) -> None:
        self.db_path = db_path
        self.page_size = page_size
        self.stores = ReadOnlyStores(db_path)
        self.templates = _environment()

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            self.stores.close()

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(name).render(db_name=self.db_path.name, **context)
        return HTMLResponse(html, status_code=status)

    # -- pages -------------------------------------------------------------

    def stories(self, request: Request) -> Response:
        params = request.query_params
        filters = {name: params.get(name, "").strip() for name in ("since", "tag", "feed")}
        min_outlets = _whole_number(params, "min_outlets", 1)
        page = _whole_number(params, "page", 1)
        since = _since(filters["since"])
        if min_outlets > 1:
            filters["min_outlets"] = str(min_outlets)
        with self.stores.snapshot() as store:
            stories = list(store.stories(since=since, feed=filters["feed"] or None, tag=filters["tag"] or None,
                                         min_outlets=min_outlets, limit=self.page_size + 1,
                                         offset=(page - 1) * self.page_size))
            tags = store.feed_tags()
            waiting = store.count_ready_for_story()
        shown = {name: value for name, value in filters.items() if value}
        return self.render(
            "stories.html", section="stories", stories=stories[:self.page_size], filters=shown, tags=tags,
            min_outlets=min_outlets, waiting=waiting, page=page,
            newer=_page_link(shown, page - 1) if page > 1 else None,
            older=_page_link(shown, page + 1) if len(stories) > self.page_size else None,
            now=utc_now())

    def story(self, request: Request) -> Response:
        story_id = request.path_params["story_id"]
        if story_id > SQLITE_MAX_INTEGER:
            raise HTTPException(404, f"There is no story {story_id}.")
        with self.stores.snapshot() as store:
            story = store.story(story_id)
            if story is None:
                raise HTTPException(404, f"There is no story {story_id}.")
            if story["id"] != story_id:  # folded into an older story: that one is the page
                return RedirectResponse(f"/story/{story['id']}", status_code=301)
            story["reports"] = list(story["reports"])  # read within the snapshot, however the store hands them
            representative = store.entry(story["representative_id"]) if story["representative_id"] else None
        original = next((r for r in story["reports"] if r["id"] == story["original_entry_id"]), None)
        return self.render("story.html", section="stories", story=story, original=original,
                           representative=representative, now=utc_now())

    def search(self, request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        since_text = request.query_params.get("since", "").strip()
        since = _since(since_text)
        hits, problem, not_indexed = [], None, 0
        if query:
            with self.stores.snapshot() as store:
                try:
                    hits = search(store, query, since=since, limit=SEARCH_LIMIT)
                except (SearchQueryError, StoreError) as exc:
                    problem = str(exc)
                not_indexed = store.entries_not_indexed() if store.db["search_index_state"].exists() else 0
        return self.render("search.html", status=400 if problem else 200, section="search", query=query,
                           since=since_text, hits=hits, problem=problem, not_indexed=not_indexed, now=utc_now())

    def feeds(self, request: Request) -> Response:
        now = utc_now()
        with self.stores.snapshot() as store:
            report = feeds_status(store, now)
        return self.render("feeds.html", section="feeds", report=report, now=now)

    # -- errors ------------------------------------------------------------

    def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        detail = exc.detail if exc.status_code != 404 or exc.detail != "Not Found" else (
            f"Nothing here: {request.url.path}")
        return self.render("error.html", status=exc.status_code, section="", status_code=exc.status_code,
                           detail=detail)

    def server_error(self, request: Request, exc: Exception) -> Response:
        log.error("error serving %s", request.url.path, exc_info=exc)
        return self.render("error.html", status=500, section="", status_code=500,
                           detail="Something went wrong reading the database; the server's log says what.")


def _whole_number(params: Any, name: str, default: int) -> int:
    value = params.get(name, "").strip()
    if not value:
        return default
    if not WHOLE_NUMBER.fullmatch(value) or not 1 <= int(value) <= SQLITE_MAX_INTEGER:
        raise HTTPException(400, f"{name.replace('_', ' ')} must be a whole number of 1 or more, not {value!r}.")
    return int(value)


def _since(value: str) -> Any:
    try:
        return parse_since(value)
    except ValueError as exc:
        raise HTTPException(400, f"since: {exc}.") from None


def _page_link(filters: dict[str, str], page: int) -> str:
    query = dict(filters, page=str(page)) if page > 1 else filters
    return "/?" + urlencode(query) if query else "/"


def create_app(db_path: str | Path, *, page_size: int = PAGE_SIZE) -> ASGIApp:
    """The reader over the database at ``db_path`` (opened read-only, request by request)."""
    reader = Reader(Path(db_path), page_size)
    app = Starlette(
        routes=[
            Route("/", reader.stories, name="stories"),
            Route("/story/{story_id:int}", reader.story, name="story"),
            Route("/search", reader.search, name="search"),
            Route("/feeds", reader.feeds, name="feeds"),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        exception_handlers={HTTPException: reader.http_error, Exception: reader.server_error},
        lifespan=reader.lifespan,
    )
    return SecurityHeaders(app)


def serve(db_path: Path, host: str, port: int, *, verbose: bool = False) -> None:
    """Serve the reader over ``db_path`` until interrupted (Ctrl-C or SIGTERM)."""
    import uvicorn

    uvicorn.run(create_app(db_path), host=host, port=port, log_level="info" if verbose else "warning",
                access_log=verbose, server_header=False)
