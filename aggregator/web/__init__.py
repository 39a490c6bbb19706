"""``agg serve``: a local, read-only web reader over the database.

A thin shell over the library API, as the command line is: the pages show
what :meth:`aggregator.store.Store.stories`, :meth:`~aggregator.store.Store.story`,
:func:`aggregator.search.search` and :func:`aggregator.stats.feeds_status` return.

- ``app.py``: the Starlette application: its routes, pages and error pages;
- ``safety.py``: what keeps feed content inert: the response headers (a
  Content-Security-Policy that allows no inline script), which links may be
  followed, and whether an address is this machine only;
- ``templates/`` (Jinja2, autoescaped) and ``static/`` (the stylesheet and the
  keyboard script, which only enhances: every page works without it).
"""
