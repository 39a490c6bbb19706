"""The README's screenshots of ``agg serve``: the stories page and a story page, over the demo's stories.

    .venv/bin/python -m tests.screenshots [OUT_FOLDER]      (default: docs/)

Fetches the bundled samples as ``make demo`` does (served on 127.0.0.1, into a
temporary database), serves them with the reader and photographs two pages
with Debian's Chromium (the browser tests' one).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from aggregator.devserver import SampleServer
from aggregator.store import Store
from tests.reader import CHROMIUM, CHROMIUM_ARGS, SAMPLES, ReaderInThread, run_agg

VIEWPORT = {"width": 1100, "height": 1000}


def demo_db(folder: Path) -> Path:
    with SampleServer(SAMPLES) as samples:
        config = folder / "feeds.yaml"
        config.write_text(samples.substitute((SAMPLES / "feeds.yaml").read_text(encoding="utf-8")), encoding="utf-8")
        run_agg("--config", config, "--db", folder / "agg.db", "fetch")
    return folder / "agg.db"


def pictured_story(db: Path) -> int:
    """A story carried by many outlets whose texts credit no other outlet (the clearest example)."""
    store = Store.open(db, readonly=True)
    try:
        return store.db.execute("SELECT id FROM stories WHERE merged_into IS NULL AND credited_outlet IS NULL "
                                "ORDER BY n_outlets DESC, id LIMIT 1").fetchone()[0]
    finally:
        store.close()


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = demo_db(Path(folder))
        story = pictured_story(db)
        with ReaderInThread(db) as reader, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
            for path, name in (("/", "serve-stories.png"), (f"/story/{story}", "serve-story.png")):
                page.goto(reader.url(path))
                page.screenshot(path=out / name)
                print(out / name)
            browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "docs")
