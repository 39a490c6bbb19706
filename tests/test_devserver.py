"""aggregator.devserver over real HTTP, and the bundled samples it serves (data/samples/)."""

from __future__ import annotations

import gzip
import http.client
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import feedparser
import pytest

from aggregator.devserver import SampleServer, accepts_gzip, dates_in, etag_matches, shift_dates, xml_root_name

PROJECT = Path(__file__).resolve().parents[1]
SAMPLES = PROJECT / "data" / "samples"
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"

RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<item><title>a</title><link>{{BASE_URL}}/page.html</link></item></channel></rss>"""
ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<!-- an Atom feed behind a .xml name -->
<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title></feed>"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("site")
    root = base / "root"
    (root / "feeds").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "sub").mkdir()
    (root / "feeds" / "news.xml").write_bytes(RSS)
    (root / "feeds" / "wire.xml").write_bytes(ATOM)
    (root / "feeds" / "tech.atom").write_bytes(ATOM)
    (root / "feeds" / "items.json").write_text('{"items": [], "home": "{{BASE_URL}}/"}')
    (root / "data" / "plain.json").write_text('{"home": "{{BASE_URL}}/"}')
    (root / "page.html").write_text('<a href="{{BASE_URL}}/other.html">x</a>' * 200)
    (root / "notes.txt").write_text("see {{BASE_URL}}/page.html\n")
    (root / "logo.png").write_bytes(b"\x89PNG{{BASE_URL}}")
    (base / "secret.txt").write_text("outside the root\n")
    (root / "escape.txt").symlink_to(base / "secret.txt")
    return root


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[SampleServer]:
    with SampleServer(site) as running:
        yield running


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def connect(server: SampleServer) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(urlsplit(server.base_url).netloc, timeout=10)


def raw_status(server: SampleServer, path: str) -> int:
    """Status for a request path sent exactly as written (urllib would tidy ``..`` away)."""
    connection = connect(server)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_base_url_names_the_bound_loopback_port(server: SampleServer) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.base_url)
    assert not server.base_url.endswith(":0")


@pytest.mark.parametrize("path", ["/feeds/news.xml", "/page.html", "/feeds/items.json", "/notes.txt"])
def test_placeholder_is_replaced_by_the_live_base_url_in_text_files(server: SampleServer, path: str) -> None:
    status, _, body = get(server.base_url + path)
    assert status == 200
    assert b"{{BASE_URL}}" not in body
    assert server.base_url.encode() in body


def test_binary_files_are_served_untouched(server: SampleServer, site: Path) -> None:
    status, _, body = get(server.base_url + "/logo.png")
    assert (status, body) == (200, (site / "logo.png").read_bytes())


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/feeds/news.xml", "application/rss+xml"),
        ("/feeds/wire.xml", "application/atom+xml"),
        ("/feeds/tech.atom", "application/atom+xml"),
        ("/feeds/items.json", "application/feed+json"),
        ("/data/plain.json", "application/json"),
        ("/page.html", "text/html; charset=utf-8"),
        ("/logo.png", "image/png"),
    ],
)
def test_content_type_follows_extension_folder_and_xml_root(
    server: SampleServer, path: str, content_type: str
) -> None:
    _, headers, _ = get(server.base_url + path)
    assert headers["Content-Type"] == content_type


def test_etag_and_last_modified_answer_conditional_requests_with_304(server: SampleServer) -> None:
    url = server.base_url + "/feeds/news.xml"
    status, headers, body = get(url)
    etag, last_modified = headers["ETag"], headers["Last-Modified"]
    assert status == 200 and re.fullmatch(r'"[0-9a-f]+"', etag)

    status, headers, body = get(url, {"If-None-Match": etag})
    assert (status, body, headers["ETag"]) == (304, b"", etag)
    assert get(url, {"If-None-Match": f'"stale", W/{etag}'})[0] == 304
    assert get(url, {"If-Modified-Since": last_modified})[0] == 304

    assert get(url, {"If-None-Match": '"stale"'})[0] == 200
    # If-None-Match decides alone when both validators are sent.
    assert get(url, {"If-None-Match": '"stale"', "If-Modified-Since": last_modified})[0] == 200
    assert get(url, {"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"})[0] == 200


def test_etag_is_a_hash_of_the_served_bytes(server: SampleServer, site: Path) -> None:
    _, plain_headers, _ = get(server.base_url + "/notes.txt")
    with SampleServer(site) as other:  # another port, so other bytes after substitution
        _, other_headers, _ = get(other.base_url + "/notes.txt")
    assert plain_headers["ETag"] != other_headers["ETag"]
    assert get(server.base_url + "/notes.txt")[1]["ETag"] == plain_headers["ETag"]


def test_gzip_is_sent_when_accepted_and_validates_on_its_own_etag(server: SampleServer) -> None:
    url = server.base_url + "/page.html"
    _, _, plain = get(url)
    status, headers, body = get(url, {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert int(headers["Content-Length"]) == len(body) < len(plain)
    assert gzip.decompress(body) == plain
    assert get(url, {"Accept-Encoding": "gzip", "If-None-Match": headers["ETag"]})[0] == 304
    assert "Content-Encoding" not in get(url, {"Accept-Encoding": "gzip;q=0, identity"})[1]


def test_query_string_is_ignored_for_file_lookup(server: SampleServer) -> None:
    tracked = get(server.base_url + "/page.html?utm_source=rss&utm_medium=feed")
    plain = get(server.base_url + "/page.html")
    assert tracked[0] == 200 and tracked[2] == plain[2]


@pytest.mark.parametrize("path", ["/missing.html", "/sub", "/sub/", "/", "/feeds/"])
def test_missing_files_and_folders_are_404_without_listing(server: SampleServer, path: str) -> None:
    status, _, body = get(server.base_url + path)
    assert status == 404 and b"news.xml" not in body


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/../../secret.txt",
        "/escape.txt",
        "//etc/passwd",
        "/%00",
        "/" + "x" * 5000,
    ],
)
def test_paths_leading_outside_the_root_or_nowhere_are_refused(server: SampleServer, path: str) -> None:
    assert raw_status(server, path) == 404


def test_head_sends_headers_without_body(server: SampleServer) -> None:
    connection = connect(server)
    try:
        connection.request("HEAD", "/page.html")
        response = connection.getresponse()
        assert response.status == 200 and int(response.getheader("Content-Length", "0")) > 0
        assert response.read() == b""
    finally:
        connection.close()


def test_server_stops_on_exit(site: Path) -> None:
    with SampleServer(site) as running:
        url = running.base_url + "/notes.txt"
        assert get(url)[0] == 200
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("gzip", True), ("gzip, deflate, br", True), ("br;q=1.0, gzip;q=0.5", True), ("*", True),
     ("gzip;q=0", False), ("identity", False), ("", False)],
)
def test_accepts_gzip(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_etag_matching_is_weak_and_knows_the_wildcard() -> None:
    assert etag_matches('W/"abc"', '"abc"') and etag_matches("*", '"abc"')
    assert not etag_matches('"abd"', '"abc"')


def test_xml_root_name_skips_prologue_comments_and_prefixes() -> None:
    assert xml_root_name(ATOM) == "feed"
    assert xml_root_name(b'<?xml version="1.0"?><rdf:RDF xmlns:rdf="x"/>') == "rdf"


# --- the bundled samples --------------------------------------------------


@pytest.fixture(scope="module")
def samples() -> Iterator[SampleServer]:
    with SampleServer(SAMPLES) as running:
        yield running


@pytest.fixture(scope="module")
def gold() -> list[dict[str, str]]:
    lines = (SAMPLES / "stories.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def sample_feed_paths() -> list[str]:
    return sorted(f"/feeds/{path.name}" for path in (SAMPLES / "feeds").iterdir())


def feed_links(samples: SampleServer, feed_path: str) -> list[tuple[str, str]]:
    """(guid, link) of every entry of a served sample feed, checking it parses cleanly."""
    status, _, body = get(samples.base_url + feed_path)
    assert status == 200
    if feed_path.endswith(".json"):
        document = json.loads(body)
        assert document["version"] == JSON_FEED_VERSION
        assert document["items"]
        return [(item["id"], item["url"]) for item in document["items"]]
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.entries
    return [(entry.id, entry.link) for entry in parsed.entries]


@pytest.mark.parametrize("feed_path", sample_feed_paths())
def test_every_sample_feed_parses_and_every_link_serves_an_html_page(
    samples: SampleServer, feed_path: str
) -> None:
    for _, link in feed_links(samples, feed_path):
        assert link.startswith(samples.base_url + "/")
        status, headers, body = get(link)
        assert status == 200, link
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert b"{{BASE_URL}}" not in body and b"<title>" in body


def test_samples_cover_the_three_feed_formats() -> None:
    kinds = Counter(
        "json" if path.suffix == ".json" else xml_root_name(path.read_bytes()[:2048])
        for path in (SAMPLES / "feeds").iterdir()
    )
    assert kinds["rss"] >= 3 and kinds["feed"] >= 2 and kinds["json"] >= 1
    assert sum(kinds.values()) >= 6


def test_gold_labels_name_exactly_the_entries_of_the_sample_feeds(
    samples: SampleServer, gold: list[dict[str, str]]
) -> None:
    served = {
        (feed_path, guid, link)
        for feed_path in sample_feed_paths()
        for guid, link in feed_links(samples, feed_path)
    }
    labelled = {
        (row["feed"], samples.substitute(row["guid"]), samples.substitute(row["url"])) for row in gold
    }
    assert labelled == served
    assert len(gold) == len(labelled)


def test_gold_labels_hold_repeated_stories_and_singletons(gold: list[dict[str, str]]) -> None:
    outlets_per_story = Counter(row["story"] for row in gold)
    assert 25 <= len(gold) <= 40
    assert 8 <= len(outlets_per_story) <= 10
    assert sum(1 for count in outlets_per_story.values() if count >= 3) >= 5
    roles = {row["role"] for row in gold}
    assert {"original", "syndicated", "light-rewrite", "heavy-rewrite", "summary"} <= roles


def test_syndicated_copies_carry_tracking_and_point_canonical_at_their_original(
    samples: SampleServer, gold: list[dict[str, str]]
) -> None:
    copies = [row for row in gold if row["role"] == "syndicated"]
    assert copies
    for copy in copies:
        assert "utm_source=rss&utm_medium=feed" in copy["url"]
        _, _, page = get(samples.substitute(copy["url"]))
        canonical = re.search(rb'<link rel="canonical" href="([^"]+)"', page)
        assert canonical is not None
        original_url = canonical.group(1).decode()
        originals = [row for row in gold if samples.substitute(row["url"]) == original_url]
        assert [row["story"] for row in originals] == [copy["story"]]
        assert originals[0]["role"] == "original"


def test_rendered_samples_are_up_to_date_with_their_sources() -> None:
    spec = importlib.util.spec_from_file_location("samples_build", SAMPLES / "source" / "build.py")
    assert spec is not None and spec.loader is not None
    build: ModuleType = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the module runs.
    sys.modules[spec.name] = build
    try:
        spec.loader.exec_module(build)
    finally:
        del sys.modules[spec.name]
    assert build.out_of_date(build.render_all()) == [], "run: python data/samples/source/build.py"


# --- the command line -----------------------------------------------------


def test_cli_writes_the_demo_config_once_listening_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "demo" / "feeds.yaml"
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator.devserver", str(SAMPLES), "--write-config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=PROJECT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 20
        while not config.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        text = config.read_text(encoding="utf-8")
        assert "{{BASE_URL}}" not in text
        feed_url = re.search(r'url: "(http://127\.0\.0\.1:\d+/feeds/dailyledger\.xml)"', text)
        assert feed_url is not None
        assert get(feed_url.group(1))[0] == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    assert f"serving {SAMPLES} at http://127.0.0.1:" in stderr.decode()


def test_the_samples_can_be_served_dated_up_to_now_in_their_order_and_spacing() -> None:
    now = datetime.now(UTC)
    with SampleServer(SAMPLES) as as_written, SampleServer(SAMPLES, newest_at=now) as moved:
        for path in [*sample_feed_paths(), "/wsi/norland-central-bank-holds-rate.html"]:
            written, shifted = (dates_in(get(server.base_url + path)[2]) for server in (as_written, moved))
            assert written and [date + moved.date_shift for date in written] == shifted, path
        newest = max(date for path in sample_feed_paths() for date in dates_in(get(moved.base_url + path)[2]))
    assert newest == now.replace(second=0, microsecond=0)
    assert moved.date_shift.total_seconds() % 60 == 0 and as_written.date_shift == timedelta(0)


def test_the_dates_keep_how_they_are_written() -> None:
    shift = timedelta(days=2, minutes=5)
    body = (b"<pubDate>Fri, 06 Mar 2026 11:15:00 +0000</pubDate><updated>2026-03-06T08:50:00Z</updated>"
            b'<time datetime="2026-03-02T21:10+01:00">Monday 2 March 2026, 21:10</time>'
            b"Last-Modified: Wed, 04 Mar 2026 21:50:00 GMT; 2026-03-02 (a day, no time: left)")
    assert shift_dates(body, shift) == (
        b"<pubDate>Sun, 08 Mar 2026 11:20:00 +0000</pubDate><updated>2026-03-08T08:55:00Z</updated>"
        b'<time datetime="2026-03-04T21:15+01:00">Monday 2 March 2026, 21:10</time>'
        b"Last-Modified: Fri, 06 Mar 2026 21:55:00 GMT; 2026-03-02 (a day, no time: left)")


def serve_demo(config: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """``python -m aggregator.devserver SAMPLES --write-config CONFIG`` and the first line it prints:
    ``serving ... at URL`` once it has written the config, or why it cannot serve."""
    process = subprocess.Popen([sys.executable, "-m", "aggregator.devserver", str(SAMPLES), "--write-config",
                                str(config), *args], stderr=subprocess.PIPE, cwd=PROJECT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return process, process.stderr.readline().decode()


def test_a_demo_config_can_be_served_again_on_the_port_it_names(tmp_path: Path) -> None:
    config = tmp_path / "demo" / "feeds.yaml"
    first, line = serve_demo(config)
    try:
        text = config.read_text(encoding="utf-8")
        base_url = re.search(r"http://127\.0\.0\.1:\d+", line).group()
        assert text.startswith(f"# served by python -m aggregator.devserver at {base_url}: ")
        assert f"--write-config {config}" in text.splitlines()[1]
        # While it serves, the port is taken: a second server says so and which file named the port.
        second, complaint = serve_demo(config)
        assert second.wait(20) == 1
        assert f"(the port {config} was written for)" in complaint
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=20)
    again, line = serve_demo(config)
    try:
        assert base_url in line and config.read_text(encoding="utf-8") == text
        assert get(f"{base_url}/feeds/dailyledger.xml")[0] == 200
    finally:
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=20)
    assert again.returncode == 0
