"""Names of a package imported from its parts on first use: what a package's ``__getattr__`` does.

``aggregator.dedup`` and ``aggregator.pipeline`` give every name of their
parts from the package itself, without importing every part when the package
is: reading the settings loads neither rapidfuzz nor sqlite-utils, and the
grouping worker's process loads neither aiohttp nor feedparser.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import import_module
from typing import Any


def lazy_attributes(package: str, homes: Mapping[str, str], parts: Iterable[str] = ()) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``homes`` maps each name to the module holding it (a part of the
    package by its short name, or a dotted module path); each of ``parts`` is also given as the submodule itself.
    A name once imported is kept in the package, so it is looked up only once."""
    submodules = frozenset(parts)

    def __getattr__(name: str) -> Any:
        if name in submodules:
            return import_module(f"{package}.{name}")
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(home if "." in home else f"{package}.{home}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
