"""Dedup: fold reports of one event from many outlets into one story.

The package's files are the stages of grouping:

- :mod:`~aggregator.dedup.settings`: the thresholds (``DedupSettings``) and the batch size, light to import;
- :mod:`~aggregator.dedup.text`: folding, tokens, cleaned titles, names, the lead past page chrome;
- :mod:`~aggregator.dedup.features`: each report's vectors and the window's word frequencies;
- :mod:`~aggregator.dedup.scoring`: how alike two reports are (``score_pair``);
- :mod:`~aggregator.dedup.grouper`: the incremental grouper (``StoryGrouper``), pure and in memory;
- :mod:`~aggregator.dedup.credit`: a story's original source;
- :mod:`~aggregator.dedup.session`: the database step (``GroupingSession``, ``group_new_entries``).

The engine is pure: it takes :class:`Report` records and returns
:class:`Placement` decisions, so that the pipeline and ``agg eval-dedup`` run
exactly the same code. Names are imported from here on first use, so that
reading the settings (as ``config.py`` does) loads neither rapidfuzz nor
sqlite-utils.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aggregator.dedup.settings import DedupSettings
from aggregator.lazy import lazy_attributes

_HOMES = {
    "Report": "features", "Features": "features",
    "Placement": "grouper", "Merge": "grouper", "StoryGrouper": "grouper",
    "score_pair": "scoring", "time_factor": "scoring",
    "clean_title": "text", "fold": "text", "lead_of": "text",
    "credited_outlet": "credit", "report_credit": "credit", "original_source": "credit",
    "GroupingSession": "session", "GroupingSummary": "session", "group_new_entries": "session",
    "resolve_story_id": "session", "WRITE_CHUNK": "session", "SEED_ROWS": "session",
}

__all__ = ["DedupSettings", *_HOMES]

if TYPE_CHECKING:  # the names __getattr__ gives, for type checkers
    from aggregator.dedup.credit import credited_outlet, original_source, report_credit  # noqa: F401
    from aggregator.dedup.features import Features, Report  # noqa: F401
    from aggregator.dedup.grouper import Merge, Placement, StoryGrouper  # noqa: F401
    from aggregator.dedup.scoring import score_pair, time_factor  # noqa: F401
    from aggregator.dedup.session import (  # noqa: F401
        SEED_ROWS, WRITE_CHUNK, GroupingSession, GroupingSummary, group_new_entries, resolve_story_id,
    )
    from aggregator.dedup.text import clean_title, fold, lead_of  # noqa: F401


__getattr__ = lazy_attributes(__name__, _HOMES)
