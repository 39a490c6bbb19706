"""agg: a news-feed aggregator that folds duplicate reports of one story into one.

The pipeline, one module per stage:
config → fetch → parse → extract → dedup → store → export, driven by
:mod:`aggregator.pipeline` and exposed on the command line by :mod:`aggregator.cli`.
"""

__version__ = "0.1.0"
