from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.urls import canonical_url, host_of


def test_tracking_params_dropped_and_rest_sorted():
    url = "http://www.Example.COM/news/story?b=2&utm_source=twitter&a=1&fbclid=X&gclid=Y&mc_cid=1&ref=home#top"
    assert canonical_url(url) == "https://example.com/news/story?a=1&b=2"


def test_host_prefixes_amp_suffix_and_default_port():
    assert canonical_url("https://m.example.com:443/a/b/amp/") == "https://example.com/a/b"
    assert canonical_url("http://amp.example.com:80/a/b.amp") == "https://example.com/a/b"
    assert canonical_url("https://example.com/a?outputType=amp") == "https://example.com/a"


def test_trailing_slash_and_non_default_port_kept():
    assert canonical_url("https://example.com/a/") == canonical_url("https://example.com/a")
    assert canonical_url("https://example.com:8443/a") == "https://example.com:8443/a"
    assert canonical_url("https://example.com") == "https://example.com/"


def test_page_canonical_preferred_when_absolute():
    assert canonical_url("https://m.example.com/x?utm_medium=rss", "https://www.example.com/y/") == (
        "https://example.com/y"
    )
    assert canonical_url("https://example.com/x", "/relative/path") == "https://example.com/x"
    assert canonical_url("https://example.com/x", "mailto:someone@example.com") == "https://example.com/x"


def test_not_an_http_url_comes_back_stripped():
    assert canonical_url("  urn:uuid:1234  ") == "urn:uuid:1234"
    assert canonical_url("") == ""


def test_host_of():
    assert host_of("https://www.bbc.co.uk/news/1") == "bbc.co.uk"
    assert host_of("not a url") == ""


URLS = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda scheme, host, path, query, frag: f"{scheme}://{host}/{path}?{query}#{frag}",
        st.sampled_from(["http", "https", "HTTP", "ftp"]),
        st.sampled_from(["www.example.com", "m.Example.org:80", "amp.news.example:8080", "[::1]", "x.y"]),
        st.text(max_size=20),
        st.text(max_size=30),
        st.text(max_size=5),
    ),
)


@settings(max_examples=300, deadline=None)
@given(URLS, st.one_of(st.none(), URLS))
def test_never_raises_and_idempotent(url, page_canonical):
    once = canonical_url(url, page_canonical)
    assert isinstance(once, str)
    assert canonical_url(once) == once
    assert isinstance(host_of(url), str)
