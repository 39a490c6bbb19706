"""The JSON digest: the deduplicated stories of a window, each with every source and the evidence that joined it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aggregator import __version__
from aggregator.store import to_db_time

from .stories import ExportStory

DIGEST_VERSION = 1


def build_digest(
    stories: Sequence[ExportStory],
    *,
    since: datetime | None,
    until: datetime,
    min_outlets: int,
    generated_at: datetime,
) -> dict[str, Any]:
    """The digest document (schema: ``docs/digest.schema.json``, version :data:`DIGEST_VERSION`)."""
    return {
        "version": DIGEST_VERSION,
        "generator": f"agg {__version__}",
        "generated_at": to_db_time(generated_at),
        "window": {"since": to_db_time(since), "until": to_db_time(until)},
        "min_outlets": min_outlets,
        "story_count": len(stories),
        "report_count": sum(len(story.reports) for story in stories),
        "stories": [_digest_story(story) for story in stories],
    }


def _digest_story(story: ExportStory) -> dict[str, Any]:
    original = story.original
    representative = story.representative
    return {
        "id": story.id,
        "title": story.title,
        "first_seen": story.first_seen,
        "last_seen": story.last_seen,
        "report_count": len(story.reports),
        "outlet_count": len(story.outlets),
        "outlets": story.outlets,
        "summary": story.summary,
        "url": story.link,
        "representative_report_id": representative.id if representative else None,
        "original_source": {
            "report_id": original.id,
            "outlet": original.outlet,
            "url": original.url,
            "time": original.time,
            "credited_outlet": story.credited_outlet,
        } if original else None,
        "reports": [
            {
                "id": report.id,
                "outlet": report.outlet,
                "feed_url": report.feed_url,
                "title": report.title,
                "url": report.url,
                "published": report.published,
                "first_seen": report.first_seen,
                "extraction_status": report.extract_status,
            }
            for report in story.reports
        ],
    }
