"""Reading and validating ``feeds.yaml``: the subscriptions and the settings.

The file has a ``defaults:`` block (per-feed defaults and global fetch
settings), an optional ``hosts:`` block (politeness per host), an optional
``dedup:`` block (story grouping thresholds) and the ``feeds:`` list.
Every problem is reported with the file, line and key, all at once, and a
config with any problem is rejected whole, so nothing is fetched from a
half-understood file.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aggregator.dedup import DedupSettings
from aggregator.urls import feed_identity

if TYPE_CHECKING:
    from ruamel.yaml import YAML

DEFAULT_CONFIG_PATH = Path("feeds.yaml")

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# White space as str.isspace has it (the same characters for str patterns): a URL with any is a typo.
_WHITESPACE = re.compile(r"\s")
# The first segment of a plain path that is more likely a forgotten "https://":
# dotted labels ending in a top-level domain, not a feed file's extension.
_HOST_LIKE = re.compile(r"^(?:[a-z0-9-]+\.)+(?!(?:xml|rss|atom|json|rdf|yaml|yml|txt|html?)$)[a-z]{2,}$", re.IGNORECASE)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30}


class ConfigError(Exception):
    """The config file is unusable; ``problems`` lists each one as ``file:line: key: what``."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = Path(path)
        self.problems = problems
        super().__init__("\n".join(problems))


def parse_duration(value: Any) -> float:
    """Seconds in ``30m``, ``2h``, ``1h30m``, ``90s``, ``1d``, or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{value!r} is negative")
        return float(value)
    text = str(value).strip().lower().replace(" ", "")
    if not text:
        raise ValueError("empty duration")
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"{value!r} is not a duration (write it like 30m, 2h, 1h30m, 90s or 1d)")
    return total


def parse_size(value: Any) -> int:
    """Bytes in ``10MiB``, ``500kB``, or a bare number of bytes."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size (write it like 10MiB, 500kB or 1048576)")
    return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass
class HostPolicy:
    """Politeness towards one host: how many requests at once, how long between them."""

    max_in_flight: int = 2
    min_delay: float = 0.0


@dataclass
class Settings:
    """Global settings, from the ``defaults:`` block."""

    interval: float = 30 * 60
    extract: bool = True
    concurrency: int = 20
    per_host: int = 2
    host_delay: float = 0.0
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    request_timeout: float = 60.0
    max_body: int = 10 * 2**20
    extract_timeout: float = 20.0
    min_interval: float = 10 * 60
    max_interval: float = 24 * 3600
    jitter: float = 0.1
    failure_threshold: int = 10
    redirect_threshold: int = 3
    retention: float = 90 * 86400
    allow_private_networks: bool = False
    hosts: dict[str, HostPolicy] = field(default_factory=dict)
    dedup: DedupSettings = field(default_factory=DedupSettings)

    def host_policy(self, host: str) -> HostPolicy:
        host = host.lower()
        return self.hosts.get(host) or HostPolicy(self.per_host, self.host_delay)


@dataclass
class FeedConfig:
    """One subscription."""

    url: str
    title: str | None = None
    tags: list[str] = field(default_factory=list)
    interval: float | None = None
    extract: bool = True
    enabled: bool = True
    line: int | None = None


@dataclass
class Config:
    path: Path
    settings: Settings
    feeds: list[FeedConfig]

    def feed(self, url: str) -> FeedConfig | None:
        """The subscription to the same feed as ``url`` (:func:`aggregator.urls.feed_identity`),
        with its line in the file."""
        wanted = feed_identity(url)
        for index, feed in enumerate(self.feeds):
            if feed_identity(feed.url) == wanted:
                if feed.line is None:  # read by the fast loader, which keeps no line numbers
                    feed.line = _feed_line(self.path, index)
                return feed
        return None


def _feed_line(path: Path, index: int) -> int | None:
    """The line of the ``index``-th feed of a valid config file (its feeds are its list's items, in order)."""
    try:
        return load_yaml_document(path)["feeds"].lc.item(index)[0] + 1
    except (ConfigError, AttributeError, IndexError, KeyError, TypeError):
        return None


def describe_duplicate(url: str, existing: FeedConfig) -> str:
    """Where the subscription ``url`` duplicates is: ``line 12`` or, spelled otherwise, ``line 12, as URL``."""
    where = f"line {existing.line}" if existing.line else "its feeds list"
    return where if existing.url == url else f"{where}, as {existing.url}"


# Which YAML value each key takes, and how to read it.
_FEED_KEYS = {"url", "title", "tags", "interval", "extract", "enabled"}
_TOP_KEYS = {"defaults", "feeds", "hosts", "dedup"}
_DURATION_SETTINGS = {
    "interval", "host_delay", "connect_timeout", "read_timeout", "request_timeout",
    "extract_timeout", "min_interval", "max_interval", "retention",
}
_INT_SETTINGS = {"concurrency", "per_host", "failure_threshold", "redirect_threshold"}
_BOOL_SETTINGS = {"extract", "allow_private_networks"}


def resolve_config_path(path: str | Path | None) -> Path:
    """The path given, else ``$AGG_CONFIG``, else ``./feeds.yaml``."""
    if path:
        return Path(path)
    return Path(os.environ.get("AGG_CONFIG") or DEFAULT_CONFIG_PATH)


# ruamel.yaml is imported when a file is read: commands that read none (agg --help, agg list,
# agg status) start without its 15-30 ms of imports.


def _yaml() -> YAML:
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip: keeps comments, order and line numbers
    yaml.preserve_quotes = True
    return yaml


def load_yaml_document(path: Path, *, round_trip: bool = True) -> Any:
    """The YAML tree of ``path``.

    Round trip (the default) keeps comments, order and line numbers, for
    writers and for error messages; ``round_trip=False`` gives plain dicts and
    lists from the C loader (ruamel.yaml.clib), ten times faster on a config of
    a thousand feeds.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        with path.open(encoding="utf-8") as handle:
            return (_yaml() if round_trip else YAML(typ="safe")).load(handle)
    except FileNotFoundError:
        raise ConfigError(path, [f"{path}: no such file (create it, or pass --config PATH)"]) from None
    except OSError as exc:  # a folder, no permission, an I/O error
        raise ConfigError(path, [f"{path}: cannot read it: {exc.strerror or exc}"]) from None
    except (YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(path, [f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}"]) from None


def save_yaml_document(path: Path, document: Any) -> None:
    """Write a round-trip YAML tree atomically (temporary file, then rename), in the file's own indentation."""
    yaml = _yaml()
    yaml.indent(**_indentation_of(path))
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            yaml.dump(document, handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _indentation_of(path: Path) -> dict[str, int]:
    """The block indentation of the YAML file at ``path``, as ``YAML.indent`` takes it.

    ruamel re-indents the whole file on dump, so without this a one-line
    edit would rewrite every line of a file indented differently from the
    defaults. A new or sequence-free file gets agg's style (``  - url: …``).
    """
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.util import load_yaml_guess_indent

    try:
        _, sequence_indent, dash_offset = load_yaml_guess_indent(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, YAMLError):
        sequence_indent = dash_offset = None
    if sequence_indent is None or dash_offset is None:
        mapping = sequence_indent or 2
        return {"mapping": mapping, "sequence": mapping + 2, "offset": 2}
    return {"mapping": max(2, sequence_indent - dash_offset), "sequence": sequence_indent, "offset": dash_offset}


def validate_feed_url(url: Any, base_dir: Path | None = None) -> str:
    """The URL to fetch for a subscription, or ValueError saying what is wrong.

    http(s) URLs need a host; ``file://`` URLs and plain paths (relative to
    the config file) name local feeds.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("must be a non-empty string")
    url = url.strip()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise ValueError(f"{url!r} has no host")
        try:
            parts.port  # noqa: B018 -- reading it raises ValueError for a port out of range or not a number
        except ValueError:
            raise ValueError(f"{url!r} has a bad port") from None
        if _WHITESPACE.search(url):
            raise ValueError(f"{url!r} contains white space")
        return url
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"{url!r}: a file:// URL takes an absolute path, like file:///srv/feeds/news.xml")
        return url
    if scheme and len(scheme) > 1:
        raise ValueError(f"{url!r}: only http, https, file:// URLs and local paths are supported")
    local = Path(url).expanduser()
    if not local.is_absolute() and base_dir is not None:
        local = base_dir / local
    if not local.exists() and _HOST_LIKE.match(url.split("/", 1)[0]):
        raise ValueError(f"{url!r} looks like a web address without its scheme: write https://{url}")
    return local.resolve().as_uri()


def _line(node: Any, key: Any = None) -> int | None:
    """The line of a node (or of one of its keys) read by the round-trip loader; None from the fast one."""
    try:
        if key is not None and isinstance(node, dict):
            return node.lc.key(key)[0] + 1
        return node.lc.line + 1
    except (AttributeError, KeyError, TypeError):
        return None


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate the config; raise :class:`ConfigError` listing every problem."""
    path = resolve_config_path(path)
    try:
        return _validate(path, load_yaml_document(path, round_trip=False))
    except ConfigError:
        # Read again with the round-trip loader: it gives the line numbers that say where each
        # problem is, and it is the reference for YAML 1.2 (libyaml refuses some valid 1.2 documents).
        return _validate(path, load_yaml_document(path))


def _validate(path: Path, document: Any) -> Config:
    problems: list[str] = []

    def problem(node: Any, key: Any, message: str) -> None:
        line = _line(node, key)
        where = f"{path}:{line}" if line else str(path)
        problems.append(f"{where}: {key}: {message}" if key is not None else f"{where}: {message}")

    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(path, [f"{path}:1: the file must be a mapping with a 'feeds:' list"])
    for key in document:
        if key not in _TOP_KEYS:
            problem(document, key, f"unknown key (expected one of: {', '.join(sorted(_TOP_KEYS))})")

    settings = _read_settings(document, problem)
    feeds = _read_feeds(document, settings, path, problem)
    if problems:
        raise ConfigError(path, problems)
    return Config(path=path, settings=settings, feeds=feeds)


def _read_settings(document: dict, problem) -> Settings:
    settings = Settings()
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, dict):
        problem(document, "defaults", "must be a mapping")
        defaults = {}
    known = {f.name for f in dataclasses.fields(Settings)} - {"hosts", "dedup"}
    for key, value in defaults.items():
        if key not in known:
            problem(defaults, key, f"unknown setting (expected one of: {', '.join(sorted(known))})")
            continue
        try:
            setattr(settings, key, _convert_setting(key, value))
        except ValueError as exc:
            problem(defaults, key, str(exc))
    if settings.min_interval > settings.max_interval:
        problem(defaults, "min_interval", "is longer than max_interval")

    hosts = document.get("hosts") or {}
    if not isinstance(hosts, dict):
        problem(document, "hosts", "must be a mapping of host name to {per_host, delay}")
        hosts = {}
    for host, policy in hosts.items():
        if not isinstance(policy, dict):
            problem(hosts, host, "must be a mapping with per_host and/or delay")
            continue
        parsed = HostPolicy(settings.per_host, settings.host_delay)
        for key, value in policy.items():
            try:
                if key == "per_host":
                    parsed.max_in_flight = _positive_int(value)
                elif key == "delay":
                    parsed.min_delay = parse_duration(value)
                else:
                    problem(policy, key, "unknown host setting (expected per_host or delay)")
            except ValueError as exc:
                problem(policy, key, str(exc))
        settings.hosts[str(host).lower()] = parsed

    dedup = document.get("dedup") or {}
    if not isinstance(dedup, dict):
        problem(document, "dedup", "must be a mapping")
        dedup = {}
    dedup_fields = {f.name: f for f in dataclasses.fields(DedupSettings)}
    for key, value in dedup.items():
        if key not in dedup_fields:
            problem(dedup, key, f"unknown dedup setting (expected one of: {', '.join(sorted(dedup_fields))})")
            continue
        try:
            setattr(settings.dedup, key, _coerce_like(getattr(settings.dedup, key), value))
        except ValueError as exc:
            problem(dedup, key, str(exc))
    return settings


def _coerce_like(default: Any, value: Any) -> Any:
    """``value`` as the type of ``default`` (a dedup threshold), or ValueError."""
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) and isinstance(value, bool):
            return value
    elif isinstance(default, (int, float)) and isinstance(value, (int, float)):
        return type(default)(value)
    elif isinstance(default, str) and isinstance(value, str):
        return value
    raise ValueError(f"{value!r} is not a {type(default).__name__}")


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{value!r} is not a whole number of at least 1")
    return value


def _convert_setting(key: str, value: Any) -> Any:
    if key in _DURATION_SETTINGS:
        return parse_duration(value)
    if key in _INT_SETTINGS:
        return _positive_int(value)
    if key in _BOOL_SETTINGS:
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not true or false")
        return value
    if key == "max_body":
        return parse_size(value)
    if key == "jitter":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{value!r} is not a fraction between 0 and 1")
        return float(value)
    raise ValueError("unsupported setting")


def _read_feeds(document: dict, settings: Settings, path: Path, problem) -> list[FeedConfig]:
    raw_feeds = document.get("feeds")
    if raw_feeds is None:
        return []
    if not isinstance(raw_feeds, list):  # the round-trip loader's CommentedSeq is a list too
        problem(document, "feeds", "must be a list of feeds, each with a url")
        return []
    feeds: list[FeedConfig] = []
    seen: dict[str, FeedConfig] = {}
    for index, item in enumerate(raw_feeds):
        if isinstance(item, str):
            item = {"url": item}
        if not isinstance(item, dict):
            line = raw_feeds.lc.item(index)[0] + 1 if hasattr(raw_feeds, "lc") else None
            problems_where = f"line {line}" if line else f"item {index + 1}"
            problem(raw_feeds, None, f"feeds {problems_where}: each feed must be a mapping with a url")
            continue
        feed = FeedConfig(url="", extract=settings.extract, line=_line(item))
        for key, value in item.items():
            if key not in _FEED_KEYS:
                problem(item, key, f"unknown feed key (expected one of: {', '.join(sorted(_FEED_KEYS))})")
                continue
            try:
                if key == "url":
                    feed.url = validate_feed_url(value, path.parent)
                elif key == "title":
                    feed.title = None if value is None else str(value)
                elif key == "tags":
                    if isinstance(value, str):
                        value = [value]
                    if not isinstance(value, list) or not all(isinstance(t, (str, int)) for t in value):
                        raise ValueError("must be a list of words")
                    feed.tags = [str(t) for t in value]
                elif key == "interval":
                    feed.interval = parse_duration(value)
                elif key in ("extract", "enabled"):
                    if not isinstance(value, bool):
                        raise ValueError(f"{value!r} is not true or false")
                    setattr(feed, key, value)
            except ValueError as exc:
                problem(item, key, str(exc))
        if "url" not in item:
            problem(item, None, "feed has no url")
            continue
        if not feed.url:
            continue
        first = seen.setdefault(feed_identity(feed.url), feed)
        if first is not feed:
            problem(item, "url", f"duplicate feed {feed.url}: the same feed as {describe_duplicate(feed.url, first)}")
            continue
        feeds.append(feed)
    return feeds
