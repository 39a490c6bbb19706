"""JSON as agg prints and writes it: one module light enough for every command's ``--json``.

Its own module so that ``agg list --json`` and the like do not import the
exports (lxml, nh3) to print a line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_C1_CONTROLS = re.compile("[\x7f-\x9f]")


def json_text(document: Any) -> str:
    """``document`` as JSON, non-ASCII text kept as it is but every control character escaped.

    json.dumps escapes C0 controls but lets C1 ones (U+0080-U+009F) through,
    and a terminal shown the output would obey them as escape sequences.
    """
    text = json.dumps(document, ensure_ascii=False, default=str)
    return _C1_CONTROLS.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def json_bytes(document: Mapping[str, Any]) -> bytes:
    """``document`` as a JSON file: a line for each top-level key, and for each item of a top-level list.

    Readable, and written by the C encoder: an indented dump runs the pure-Python one, which
    took a third of the CPU time of a digest export (bench/read_scale.py).
    """
    parts = ["{\n"]
    for number, (key, value) in enumerate(document.items()):
        parts.append((",\n  " if number else "  ") + json_text(key) + ": ")
        if isinstance(value, list) and value:
            parts.append("[\n    " + ",\n    ".join(map(json_text, value)) + "\n  ]")
        else:
            parts.append(json_text(value))
    parts.append("\n}\n")
    return "".join(parts).encode("utf-8")
