"""The floor of bench/fetch_scale.py: a bare aiohttp client that makes the requests and nothing else.

Usage: python bench/aiohttp_floor.py URLS_JSON ETAGS_JSON CONCURRENCY

GETs every URL of the JSON list in URLS_JSON, CONCURRENCY in flight on one
session, with ``If-None-Match`` when ETAGS_JSON (written by an earlier run)
holds the URL's ETag; reads each body, then writes the ETags to ETAGS_JSON.
Nothing is parsed or stored, and only asyncio and aiohttp are imported: its
wall time, start-up included, is what the bench server and this machine
allow any Python client, and fetch_scale.py prints it beside agg's.
"""

import asyncio
import json
import sys
from pathlib import Path

import aiohttp


async def fetch_all(urls: list[str], etags: dict[str, str], concurrency: int) -> dict[str, str]:
    slots = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fetch(url: str) -> tuple[str, str | None]:
            headers = {"If-None-Match": etags[url]} if url in etags else {}
            async with slots, session.get(url, headers=headers) as response:
                await response.read()
                return url, response.headers.get("ETag") or etags.get(url)

        answers = await asyncio.gather(*(fetch(url) for url in urls))
    return {url: etag for url, etag in answers if etag}


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__.splitlines()[2])
    urls_file, etags_file, concurrency = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    urls = json.loads(urls_file.read_text())
    etags = json.loads(etags_file.read_text()) if etags_file.exists() else {}
    etags_file.write_text(json.dumps(asyncio.run(fetch_all(urls, etags, concurrency))))


if __name__ == "__main__":
    main()
