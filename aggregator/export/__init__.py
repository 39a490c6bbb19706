"""Export and import: OPML subscriptions, the JSON digest, JSON Feed 1.1 and Atom 1.0.

This package owns the formats agg exchanges with other readers. Its files
are its parts: :mod:`~aggregator.export.stories` (stories as the exports see
them), :mod:`~aggregator.export.digest`, :mod:`~aggregator.export.feeds`
(JSON Feed and Atom), :mod:`~aggregator.export.opml` (export and import) and
:mod:`~aggregator.export.files` (writing). The builders are pure: they take plain records (:class:`ExportStory`,
:class:`~aggregator.config.FeedConfig`) and return the document. The I/O
is kept to three small functions: :func:`load_stories` (reads the store),
:func:`import_opml` (merges subscriptions into feeds.yaml) and
:func:`write_atomic`.

Decisions, documented for users in ``docs/digest.md``:

* OPML export puts a feed in the folder of its *first* tag and lists all
  its tags in the OPML 2.0 ``category`` attribute, so a feed appears once
  and an import gives back every tag. Untagged feeds sit at the top level.
* OPML import turns the folders an outline sits in, and its ``category``
  entries, into tags. Only http(s) subscriptions are imported; a file with
  a DOCTYPE is refused, so entity expansion and external entities never
  happen.
* Item ids are ``urn:agg:story:<id>``: a story keeps its id across runs
  (a merged story lives on under the older id), so readers see an item
  once and then updates of it.
* Item HTML is built from escaped plain text and links agg makes itself
  (http(s) only), then passed through nh3 with a small allow-list, so
  nothing a feed sent can run in a reader.
"""

from __future__ import annotations

from aggregator.jsontext import json_bytes, json_text  # the exports' JSON, as before

from .digest import DIGEST_VERSION, build_digest
from .feeds import ATOM_NS, DEFAULT_FEED_ID, DEFAULT_FEED_TITLE, JSON_FEED_VERSION, build_atom, build_json_feed, story_html
from .files import write_atomic
from .opml import ImportPlan, OpmlError, OpmlFeed, build_opml, import_opml, import_url, parse_opml, plan_import
from .stories import SUMMARY_CHARS, SUMMARY_SENTENCES, ExportReport, ExportStory, lead_summary, load_stories, story_from_row

__all__ = [
    "ATOM_NS", "DEFAULT_FEED_ID", "DEFAULT_FEED_TITLE", "DIGEST_VERSION", "JSON_FEED_VERSION", "SUMMARY_CHARS",
    "SUMMARY_SENTENCES", "ExportReport", "ExportStory", "ImportPlan", "OpmlError", "OpmlFeed", "build_atom",
    "build_digest", "build_json_feed", "build_opml", "import_opml", "import_url", "json_bytes", "json_text",
    "lead_summary", "load_stories", "parse_opml", "plan_import", "story_from_row", "story_html", "write_atomic",
]
