"""Renders agg's bundled sample feeds and article pages from their sources.

Owns: turning ``outlets.yaml`` (the seven fictional outlets), ``articles.yaml``
(every entry's text and gold story label) and ``templates/<outlet>.html`` (each
outlet's page chrome) into the files ``aggregator.devserver`` serves from
``data/samples/``:

- ``feeds/<outlet>.xml|.atom|.json``: RSS 2.0, Atom 1.0 or JSON Feed 1.1;
- ``<outlet>/<slug>.html``: one page per entry;
- ``feeds.yaml``: the demo's subscriptions; ``stories.jsonl``: the gold labels.

Every link is written with the ``{{BASE_URL}}`` placeholder, which the server
fills in. Run ``python data/samples/source/build.py`` after editing a source;
``--check`` only reports whether the rendered files are up to date.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path
from string import Template
from xml.sax.saxutils import escape as xml_escape

from ruamel.yaml import YAML

SOURCE = Path(__file__).resolve().parent
SAMPLES = SOURCE.parent
BASE_URL = "{{BASE_URL}}"
FEED_SUFFIXES = {"rss": ".xml", "json": ".json"}
# One Atom feed is served as .xml so that servers and clients must sniff it.
ATOM_SUFFIXES = {"wsi": ".xml"}
INTERVAL_OVERRIDES = {"wsi": "10m"}
RELATED_COUNT = 4
JSON_LD_OUTLETS = frozenset({"wsi", "harborchronicle"})


@dataclass(frozen=True)
class Outlet:
    key: str
    name: str
    description: str
    format: str
    feed_content: str
    tags: list[str]
    guid: str
    date_format: str
    paragraph: str
    related_item: str
    inline: str

    @property
    def feed_path(self) -> str:
        suffix = ATOM_SUFFIXES.get(self.key, ".atom") if self.format == "atom" else FEED_SUFFIXES[self.format]
        return f"/feeds/{self.key}{suffix}"

    @property
    def feed_url(self) -> str:
        return BASE_URL + self.feed_path

    @property
    def home_url(self) -> str:
        return f"{BASE_URL}/{self.key}/"

    def show_date(self, moment: datetime) -> str:
        return self.date_format.format(d=moment)


@dataclass(frozen=True)
class Entry:
    outlet: Outlet
    slug: str
    story: str
    role: str
    title: str
    author: str
    published: datetime
    section: str
    teaser: str
    paragraphs: list[str]
    copy_of: str | None
    credits: str | None
    tracking: str | None

    @property
    def ref(self) -> str:
        return f"{self.outlet.key}/{self.slug}"

    @property
    def url(self) -> str:
        return f"{BASE_URL}/{self.outlet.key}/{self.slug}.html"

    @property
    def feed_link(self) -> str:
        """The link as the feed gives it: tracking parameters are added there only."""
        return f"{self.url}?{self.tracking}" if self.tracking else self.url

    @property
    def guid(self) -> str:
        return self.outlet.guid.format(url=self.url, slug=self.slug, date=self.published.date().isoformat())

    @property
    def guid_is_link(self) -> bool:
        return self.guid == self.url


def load_yaml(path: Path) -> object:
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def as_utc(value: object) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is None:  # the YAML loader hands back UTC timestamps as naive datetimes
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def load_outlets() -> dict[str, Outlet]:
    raw = load_yaml(SOURCE / "outlets.yaml")
    assert isinstance(raw, dict)
    return {key: Outlet(key=key, **fields) for key, fields in raw.items()}


def load_entries(outlets: dict[str, Outlet]) -> list[Entry]:
    raw = load_yaml(SOURCE / "articles.yaml")
    assert isinstance(raw, list)
    by_ref: dict[str, Entry] = {}
    for item in raw:
        entry = Entry(
            outlet=outlets[item["outlet"]],
            slug=item["slug"],
            story=item["story"],
            role=item["role"],
            title=item["title"],
            author=item["author"],
            published=as_utc(item["published"]),
            section=item["section"],
            teaser=item["teaser"],
            paragraphs=[p.strip() for p in item.get("body", "").split("\n\n") if p.strip()],
            copy_of=item.get("copy_of"),
            credits=item.get("credits"),
            tracking=item.get("tracking"),
        )
        by_ref[entry.ref] = entry
    # A syndicated copy carries its original's text word for word.
    return [
        replace(entry, paragraphs=by_ref[entry.copy_of].paragraphs) if entry.copy_of else entry
        for entry in by_ref.values()
    ]


def newest_first(entries: Iterable[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: e.published, reverse=True)


def plain_body_html(entry: Entry) -> str:
    """The body as a feed carries it: bare paragraphs, no page chrome."""
    return "\n".join(f"<p>{html.escape(p, quote=False)}</p>" for p in entry.paragraphs)


# --- article pages ---------------------------------------------------------


def page_body_html(entry: Entry, related: list[Entry]) -> str:
    outlet = entry.outlet
    blocks = [outlet.paragraph.format(text=html.escape(p, quote=False)) for p in entry.paragraphs]
    if outlet.inline and related and len(blocks) >= 4:
        blocks.insert(2, outlet.inline.format(url=related[0].url, title=html.escape(related[0].title)))
    return "\n".join(blocks)


def source_note_html(entry: Entry, by_ref: dict[str, Entry]) -> str:
    if entry.copy_of:
        original = by_ref[entry.copy_of]
        return (
            f'<p class="source-note">This article was first published by '
            f'<a href="{original.url}">{html.escape(original.outlet.name)}</a>.</p>'
        )
    if entry.credits:
        credited = by_ref[entry.credits]
        return (
            f'<p class="source-note">Source: <a href="{credited.url}">{html.escape(credited.title)}</a>, '
            f"{html.escape(credited.outlet.name)}</p>"
        )
    return ""


def json_ld_html(entry: Entry, canonical_url: str) -> str:
    document = {
        "@context": "https://schema.org",
        "@type": "NewsArticle",
        "headline": entry.title,
        "description": entry.teaser,
        "datePublished": entry.published.isoformat(),
        "author": {"@type": "Person", "name": entry.author},
        "publisher": {"@type": "Organization", "name": entry.outlet.name},
        "mainEntityOfPage": canonical_url,
        "articleSection": entry.section,
    }
    text = json.dumps(document, ensure_ascii=False, indent=2).replace("</", "<\\/")
    return f'<script type="application/ld+json">\n{text}\n</script>'


def render_page(entry: Entry, siblings: list[Entry], by_ref: dict[str, Entry]) -> str:
    outlet = entry.outlet
    related = [other for other in siblings if other is not entry][:RELATED_COUNT]
    canonical_url = by_ref[entry.copy_of].url if entry.copy_of else entry.url
    template = Template((SOURCE / "templates" / f"{outlet.key}.html").read_text(encoding="utf-8"))
    return template.substitute(
        title=html.escape(entry.title),
        teaser=html.escape(entry.teaser),
        author=html.escape(entry.author),
        section=html.escape(entry.section),
        section_slug=entry.section.lower().replace(" ", "-"),
        slug=entry.slug,
        published_iso=entry.published.isoformat(),
        date_display=outlet.show_date(entry.published),
        canonical_url=canonical_url,
        feed_url=outlet.feed_url,
        json_ld=json_ld_html(entry, canonical_url) if outlet.key in JSON_LD_OUTLETS else "",
        body=page_body_html(entry, related),
        source_note=source_note_html(entry, by_ref),
        related="\n".join(
            outlet.related_item.format(
                url=other.url, title=html.escape(other.title), date=outlet.show_date(other.published)
            )
            for other in related
        ),
        related_headline=html.escape(related[0].title) if related else "",
    )


# --- feeds -----------------------------------------------------------------


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def render_rss(outlet: Outlet, entries: list[Entry]) -> str:
    items = []
    for entry in entries:
        content = (
            f"      <content:encoded>{xml_escape(plain_body_html(entry))}</content:encoded>\n"
            if outlet.feed_content == "full"
            else ""
        )
        permalink = "true" if entry.guid_is_link else "false"
        items.append(
            "    <item>\n"
            f"      <title>{xml_escape(entry.title)}</title>\n"
            f"      <link>{xml_escape(entry.feed_link)}</link>\n"
            f'      <guid isPermaLink="{permalink}">{xml_escape(entry.guid)}</guid>\n'
            f"      <pubDate>{format_datetime(entry.published)}</pubDate>\n"
            f"      <dc:creator>{xml_escape(entry.author)}</dc:creator>\n"
            f"      <category>{xml_escape(entry.section)}</category>\n"
            f"      <description>{xml_escape(entry.teaser)}</description>\n"
            f"{content}"
            "    </item>\n"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:atom="http://www.w3.org/2005/Atom">\n'
        "  <channel>\n"
        f"    <title>{xml_escape(outlet.name)}</title>\n"
        f"    <link>{outlet.home_url}</link>\n"
        f'    <atom:link href="{outlet.feed_url}" rel="self" type="application/rss+xml"/>\n'
        f"    <description>{xml_escape(outlet.description)}</description>\n"
        "    <language>en</language>\n"
        f"    <lastBuildDate>{format_datetime(entries[0].published)}</lastBuildDate>\n"
        "    <ttl>30</ttl>\n"
        f"{''.join(items)}"
        "  </channel>\n"
        "</rss>\n"
    )


def render_atom(outlet: Outlet, entries: list[Entry]) -> str:
    items = []
    for entry in entries:
        content = (
            f'    <content type="html">{xml_escape(plain_body_html(entry))}</content>\n'
            if outlet.feed_content == "full"
            else ""
        )
        items.append(
            "  <entry>\n"
            f"    <id>{xml_escape(entry.guid)}</id>\n"
            f"    <title>{xml_escape(entry.title)}</title>\n"
            f'    <link rel="alternate" type="text/html" href="{xml_escape(entry.feed_link)}"/>\n'
            f"    <published>{rfc3339(entry.published)}</published>\n"
            f"    <updated>{rfc3339(entry.published)}</updated>\n"
            f"    <author><name>{xml_escape(entry.author)}</name></author>\n"
            f'    <category term="{xml_escape(entry.section)}"/>\n'
            f"    <summary>{xml_escape(entry.teaser)}</summary>\n"
            f"{content}"
            "  </entry>\n"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en">\n'
        f"  <id>{outlet.home_url}</id>\n"
        f"  <title>{xml_escape(outlet.name)}</title>\n"
        f"  <subtitle>{xml_escape(outlet.description)}</subtitle>\n"
        f'  <link rel="alternate" type="text/html" href="{outlet.home_url}"/>\n'
        f'  <link rel="self" type="application/atom+xml" href="{outlet.feed_url}"/>\n'
        f"  <updated>{rfc3339(entries[0].published)}</updated>\n"
        f"  <author><name>{xml_escape(outlet.name)}</name></author>\n"
        f"{''.join(items)}"
        "</feed>\n"
    )


def render_json_feed(outlet: Outlet, entries: list[Entry]) -> str:
    def item(entry: Entry) -> dict[str, object]:
        fields: dict[str, object] = {
            "id": entry.guid,
            "url": entry.feed_link,
            "title": entry.title,
            "summary": entry.teaser,
        }
        if outlet.feed_content == "full":
            fields["content_html"] = plain_body_html(entry)
        elif outlet.feed_content == "summary":
            fields["content_text"] = "\n\n".join(entry.paragraphs)
        else:
            fields["content_text"] = entry.teaser
        fields["date_published"] = rfc3339(entry.published)
        fields["authors"] = [{"name": entry.author}]
        fields["tags"] = [entry.section]
        return fields

    document = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": outlet.name,
        "home_page_url": outlet.home_url,
        "feed_url": outlet.feed_url,
        "description": outlet.description,
        "language": "en",
        "authors": [{"name": outlet.name}],
        "items": [item(entry) for entry in entries],
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


FEED_RENDERERS = {"rss": render_rss, "atom": render_atom, "json": render_json_feed}


# --- demo config and gold labels -------------------------------------------


def render_feeds_yaml(outlets: Iterable[Outlet]) -> str:
    lines = [
        "# agg demo subscriptions: served by aggregator.devserver from data/samples/",
        "# (generated by data/samples/source/build.py from source/outlets.yaml)",
        "defaults:",
        "  interval: 30m",
        "feeds:",
    ]
    for outlet in outlets:
        lines.append(f'  - url: "{outlet.feed_url}"')
        lines.append(f"    title: {outlet.name}")
        lines.append(f"    tags: [{', '.join(outlet.tags)}]")
        if outlet.key in INTERVAL_OVERRIDES:
            lines.append(f"    interval: {INTERVAL_OVERRIDES[outlet.key]}")
    return "\n".join(lines) + "\n"


def render_stories_jsonl(entries: list[Entry]) -> str:
    ordered = sorted(entries, key=lambda e: (e.story, e.published))
    return "".join(
        json.dumps(
            {
                "feed": entry.outlet.feed_path,
                "guid": entry.guid,
                "url": entry.feed_link,
                "title": entry.title,
                "story": entry.story,
                "role": entry.role,
            },
            ensure_ascii=False,
        )
        + "\n"
        for entry in ordered
    )


def render_all() -> dict[str, str]:
    """Every rendered file, by path relative to ``data/samples/``."""
    outlets = load_outlets()
    entries = load_entries(outlets)
    by_ref = {entry.ref: entry for entry in entries}
    files: dict[str, str] = {}
    for outlet in outlets.values():
        own = newest_first(e for e in entries if e.outlet is outlet)
        files[outlet.feed_path.lstrip("/")] = FEED_RENDERERS[outlet.format](outlet, own)
        for entry in own:
            files[f"{outlet.key}/{entry.slug}.html"] = render_page(entry, own, by_ref)
    files["feeds.yaml"] = render_feeds_yaml(outlets.values())
    files["stories.jsonl"] = render_stories_jsonl(entries)
    return files


def stale_files(rendered: dict[str, str]) -> list[Path]:
    """Files in rendered folders that the sources no longer produce."""
    folders = {SAMPLES / Path(relative).parent for relative in rendered if "/" in relative}
    return sorted(
        path
        for folder in folders
        if folder.is_dir()
        for path in folder.iterdir()
        if path.is_file() and path.relative_to(SAMPLES).as_posix() not in rendered
    )


def out_of_date(rendered: dict[str, str]) -> list[str]:
    """Paths whose file on disk differs from what the sources render, plus stale ones."""
    differing = [
        relative
        for relative, text in rendered.items()
        if not (SAMPLES / relative).is_file() or (SAMPLES / relative).read_text(encoding="utf-8") != text
    ]
    return differing + [path.relative_to(SAMPLES).as_posix() for path in stale_files(rendered)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report out-of-date files, write nothing")
    args = parser.parse_args(argv)
    rendered = render_all()
    if args.check:
        problems = out_of_date(rendered)
        for relative in problems:
            print(f"out of date: {relative}", file=sys.stderr)
        return 1 if problems else 0
    for path in stale_files(rendered):
        path.unlink()
    for relative, text in rendered.items():
        target = SAMPLES / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    print(f"wrote {len(rendered)} files under {SAMPLES}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
