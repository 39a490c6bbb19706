"""Server-side request forgery: links and redirects from feed content may not reach private networks.

Offline, "the public internet" is a second loopback address: a server on
127.0.0.2 that these tests declare public by wrapping
``aggregator.fetch.is_public_address`` (the one place agg classifies an
address). Every other address keeps its real class, so 127.0.0.1, ::1,
localhost, 10.x, 192.168.x and 169.254.169.254 (cloud metadata) stay
private. A private server on 127.0.0.1 counts the requests that get through.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from aggregator import fetch
from tests.conftest import rss_document
from tests.server import Reply, ScriptedServer
from tests.test_pipeline import query, write_config

PUBLIC_STAND_IN = "127.0.0.2"
ARTICLE = ("<!doctype html><html><head><title>{title}</title></head><body><article><h1>{title}</h1>"
           + "".join(f"<p>On day {n} the council met to discuss the new bridge over the river and what the "
                     f"work, now in its {n}th week, will cost the town's {n * 100} households.</p>" for n in range(1, 13))
           + "</article></body></html>")
SECRET = b"<html><body><p>internal admin page: TOP SECRET</p></body></html>"


@pytest.fixture
def public_stand_in(monkeypatch):
    real = fetch.is_public_address
    monkeypatch.setattr(fetch, "is_public_address", lambda address: address == PUBLIC_STAND_IN or real(address))


@pytest.fixture
def public_server(public_stand_in):
    try:
        server = ScriptedServer(host=PUBLIC_STAND_IN)
    except OSError as exc:
        pytest.skip(f"cannot listen on {PUBLIC_STAND_IN}: {exc}")
    with server:
        yield server


def private_links(private: ScriptedServer) -> dict[str, str]:
    """Entry guid → a link into a private network."""
    return {
        "loopback": private.url("/admin"),
        "localhost": f"http://localhost:{private.port}/admin",
        "ipv6-loopback": f"http://[::1]:{private.port}/admin",
        "metadata": "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "private-10": "http://10.0.0.1/admin",
        "private-192": "http://192.168.1.1/admin",
        "mapped-v4": f"http://[::ffff:127.0.0.1]:{private.port}/admin",
        "redirect": "",  # filled in: a public page that redirects to the private server
    }


def serve_feed(public: ScriptedServer, private: ScriptedServer) -> tuple[str, dict[str, str]]:
    private.route("/admin", Reply(body=SECRET, content_type="text/html"))
    links = private_links(private)
    links["redirect"] = public.route("/go", Reply(302, headers={"Location": private.url("/admin")}))
    links["public"] = public.route("/story", Reply(body=ARTICLE.format(title="Bridge").encode(), content_type="text/html"))
    items = [{"guid": guid, "title": f"Entry {guid}", "link": link, "description": f"Summary of {guid}"}
             for guid, link in links.items()]
    return public.route("/feed.xml", Reply(body=rss_document(items))), links


def run_fetch(tmp_path: Path, agg, feed_url: str, allow_private: bool = False) -> Path:
    defaults = "connect_timeout: 1s\nrequest_timeout: 5s" + ("\nallow_private_networks: true" if allow_private else "")
    cfg = write_config(tmp_path, [{"url": feed_url, "extract": True}], defaults=defaults)
    db = tmp_path / "agg.db"
    result = agg("--config", cfg, "--db", db, "fetch")
    assert result.exit_code == 0, result.output
    return db


def page_outcomes(db: Path) -> dict[str, tuple[str, str | None, str]]:
    rows = query(db, "SELECT guid, extract_status, extract_error, text FROM entries")
    return {guid: (status, error, text) for guid, status, error, text in rows}


def test_links_from_a_public_feed_to_private_addresses_are_refused(tmp_path, server, public_server, agg):
    feed_url, links = serve_feed(public_server, server)
    outcomes = page_outcomes(run_fetch(tmp_path, agg, feed_url))

    assert server.requests == []  # nothing reached the private side, not even through the redirect
    for guid in links.keys() - {"public"}:
        status, error, text = outcomes[guid]
        assert status != "ok" and "non-public address" in error, (guid, status, error)
        assert "allow_private_networks" in error
        assert "SECRET" not in text and text == f"Summary of {guid}"  # the feed's own text is kept
    assert outcomes["public"][0] == "ok" and "bridge over the river" in outcomes["public"][2]


def test_allow_private_networks_lifts_the_refusal(tmp_path, server, public_server, agg):
    feed_url, _ = serve_feed(public_server, server)
    outcomes = page_outcomes(run_fetch(tmp_path, agg, feed_url, allow_private=True))

    # The loopback links (direct, by name, mapped, and through the redirect) were fetched this time.
    assert len(server.hits("/admin")) >= 3
    for guid in ("loopback", "localhost", "redirect"):
        status, error, _ = outcomes[guid]
        assert error is None or "non-public" not in error, (guid, status, error)
    assert all("non-public" not in (error or "") for _, error, _ in outcomes.values())


def test_redirect_of_a_public_feed_to_a_private_address_is_refused(tmp_path, server, public_server, agg):
    server.route("/internal-feed.xml", Reply(body=rss_document([{"guid": "internal", "title": "Internal"}])))
    feed_url = public_server.route("/feed.xml", Reply(301, headers={"Location": server.url("/internal-feed.xml")}))
    db = run_fetch(tmp_path, agg, feed_url)
    assert server.requests == []
    [(error,)] = query(db, "SELECT last_error FROM feeds")
    assert "non-public address" in error
    assert query(db, "SELECT count(*) FROM entries") == [(0,)]


def test_a_feed_the_user_put_on_a_local_address_may_link_locally(tmp_path, server, agg):
    server.route("/story", Reply(body=ARTICLE.format(title="Local").encode(), content_type="text/html"))
    feed_url = server.route("/feed.xml", Reply(body=rss_document(
        [{"guid": "local", "title": "Local story", "link": server.url("/story")}])))
    outcomes = page_outcomes(run_fetch(tmp_path, agg, feed_url))
    assert len(server.hits("/story")) == 1
    assert outcomes["local"][0] == "ok" and "bridge over the river" in outcomes["local"][2]


@pytest.fixture
def rebinding_name(monkeypatch):
    """``rebind.test``: public when agg checks it, loopback when it connects (DNS rebinding)."""
    real_resolve, real_getaddrinfo = fetch.resolve_addresses, socket.getaddrinfo

    async def checked(host: str, port: int) -> list[str]:
        return ["93.184.216.34"] if host == "rebind.test" else await real_resolve(host, port)

    def connected(host, *args, **kwargs):
        return real_getaddrinfo("127.0.0.1" if host == "rebind.test" else host, *args, **kwargs)

    monkeypatch.setattr(fetch, "resolve_addresses", checked)
    monkeypatch.setattr(socket, "getaddrinfo", connected)
    return "rebind.test"


def test_a_name_that_turns_private_after_the_check_is_refused_when_connecting(
        tmp_path, server, public_server, rebinding_name, agg):
    server.route("/admin", Reply(body=SECRET, content_type="text/html"))
    link = f"http://{rebinding_name}:{server.port}/admin"
    feed_url = public_server.route("/feed.xml", Reply(body=rss_document(
        [{"guid": "rebind", "title": "Rebinding", "link": link, "description": "Summary"}])))
    outcomes = page_outcomes(run_fetch(tmp_path, agg, feed_url))
    assert server.requests == []
    status, error, text = outcomes["rebind"]
    assert status != "ok" and "non-public address" in error and "SECRET" not in text
