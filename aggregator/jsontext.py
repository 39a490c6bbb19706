"""JSON as agg prints and writes it: one module light enough for every command's ``--json``.

Its own module so that ``agg list --json`` and the like do not import the
exports (lxml, nh3) to print a line.
"""

from __future__ import annotations

import json
import re
from typing import Any

_C1_CONTROLS = re.compile("[\x7f-\x9f]")


def json_text(document: Any, *, indent: int | None = None) -> str:
    """``document`` as JSON, non-ASCII text kept as it is but every control character escaped.

    json.dumps escapes C0 controls but lets C1 ones (U+0080-U+009F) through,
    and a terminal shown the output would obey them as escape sequences.
    """
    text = json.dumps(document, ensure_ascii=False, indent=indent, default=str)
    return _C1_CONTROLS.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def json_bytes(document: Any) -> bytes:
    return (json_text(document, indent=2) + "\n").encode("utf-8")
