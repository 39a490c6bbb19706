"""Canonical URLs: one spelling per article address, so that copies of a link compare equal.

Pure functions, no I/O: the fetcher uses them to key pages and the dedup
stage uses them as the first (cheapest) identity test between reports.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

# Click and campaign identifiers: they never name a document, a feed's included.
CLICK_PARAMS = frozenset(
    {
        "fbclid", "gclid", "dclid", "gclsrc", "msclkid", "yclid", "twclid", "ttclid",
        "mc_cid", "mc_eid", "mkt_tok", "_ga", "_gl", "igshid",
    }
)
# Exact query keys that only say how a reader arrived, never which page it is.
TRACKING_PARAMS = CLICK_PARAMS | frozenset(
    {
        "spm", "scm",
        "ref", "ref_src", "ref_url", "referrer", "src", "source", "cmpid", "cmp",
        "ncid", "ocid", "ito", "itm_source", "itm_medium", "itm_campaign",
        "smid", "smtyp", "sr_share", "share", "via", "rss", "feed", "track",
        "outputtype", "amp", "amp_js_v", "usqp", "__twitter_impression",
        "cid", "sh", "s_cid", "wt.mc_id", "ns_mchannel", "ns_source", "ns_campaign",
        "ns_linkname", "ns_fee", "at_medium", "at_campaign", "at_custom1",
        "hootpostid", "sc_cid", "soc_src", "soc_trk", "taid", "xtor",
    }
)
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "hsa_", "oly_", "vero_", "_hs")
HOST_PREFIXES = ("www.", "www2.", "m.", "mobile.", "amp.")
DEFAULT_PORTS = {"http": 80, "https": 443}
AMP_PATH_SUFFIX = re.compile(r"(?:/amp|\.amp)(?:\.html?)?/?$", re.IGNORECASE)
SAFE_PATH_CHARS = "/%:@!$&'()*+,;=-._~"


def _is_tracking(key: str, exact: frozenset[str] = TRACKING_PARAMS) -> bool:
    folded = key.lower()
    return folded in exact or folded.startswith(TRACKING_PREFIXES)


def _netloc(host: str, port: int | None, scheme: str) -> str:
    """``host[:port]``, without the scheme's default port (nor 443, which https gets)."""
    if ":" in host:
        host = f"[{host}]"
    return host if port in (None, DEFAULT_PORTS[scheme], DEFAULT_PORTS["https"]) else f"{host}:{port}"


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


def _strip_host_prefixes(host: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in HOST_PREFIXES:
            if host.startswith(prefix) and host.count(".") >= 2:
                host = host[len(prefix):]
                changed = True
    return host


def _canonical(url: str) -> str | None:
    """The canonical spelling of an absolute http(s) URL, or None when it is not one."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    netloc = _netloc(_strip_host_prefixes(parts.hostname.lower().rstrip(".")), _port(parts), scheme)
    # Re-quote after unquoting so that %7E and ~ (and other equivalent spellings) agree.
    path = quote(unquote(parts.path), safe=SAFE_PATH_CHARS)
    path = re.sub(r"/{2,}", "/", path)
    while True:
        trimmed = AMP_PATH_SUFFIX.sub("", path).rstrip("/")
        if trimmed == path:
            break
        path = trimmed
    path = path or "/"
    params = sorted(
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if not _is_tracking(key)
    )
    return urlunsplit(("https", netloc, path, urlencode(params), ""))


def canonical_url(url: str, page_canonical: str | None = None) -> str:
    """One spelling for an article's address; never raises.

    The page's own ``rel=canonical`` wins when it is an absolute http(s)
    URL. Otherwise: https, lower-case host without ``www.``/``m.``/``amp.``,
    no default port, no fragment, no tracking parameters, the remaining
    parameters sorted, no ``/amp`` suffix and no trailing slash. Input that
    is not an http(s) URL comes back stripped but otherwise unchanged.
    """
    try:
        if page_canonical:
            preferred = _canonical(page_canonical)
            if preferred is not None:
                return preferred
        return _canonical(url) or (url or "").strip()
    except (ValueError, TypeError, UnicodeError):
        return (url or "").strip() if isinstance(url, str) else ""


def feed_identity(url: str) -> str:
    """What two subscriptions share when they are the same feed; never raises.

    Kinder than :func:`canonical_url`, since a feed's address is its own
    (``?feed=atom`` and ``/amp`` can name another feed): the scheme and host
    in any case, http or https, a default port, a fragment and click or
    campaign parameters (``utm_*``, ``fbclid``, ...) make no difference;
    everything else does. A local feed's URL is its own identity.
    """
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            return url.strip()
        netloc = _netloc(parts.hostname.lower().rstrip("."), _port(parts), scheme)
        params = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True)
                  if not _is_tracking(key, CLICK_PARAMS)]
        return urlunsplit(("https", netloc, parts.path or "/", urlencode(params), ""))
    except (ValueError, TypeError, UnicodeError):
        return url.strip() if isinstance(url, str) else ""


def host_of(url: str) -> str:
    """The host of ``url`` without ``www.``-like prefixes ("" when there is none); never raises."""
    try:
        host = urlsplit((url or "").strip()).hostname or ""
    except (ValueError, TypeError):
        return ""
    return _strip_host_prefixes(host.lower().rstrip("."))
