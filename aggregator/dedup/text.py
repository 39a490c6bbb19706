"""Text normalisation for grouping: folding, tokens, cleaned titles, names and figures, the lead.

Pure functions of strings, shared by the features and the credit finder.
"""

from __future__ import annotations

import codecs
import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

STOPWORDS = frozenset(
    """a an the and or but nor of in on at to for from by with without into onto over under about
    after before as than then that this these those it its is are was were be been being has have had
    do does did will would can could should may might must shall not no yes so if when while where who
    whom whose which what why how all any both each few more most other some such only own same too very
    just also up down out off again further once here there he she they them his her their our we you
    your i me my us him one two says said say saying tell told report reports reported reporting
    according new news latest update updates live watch video photos breaking exclusive
    de la le les el en y et du des der die das und""".split()
)
GENERIC_TITLES = frozenset(
    {
        "live updates", "live", "live blog", "morning briefing", "evening briefing", "news briefing",
        "the briefing", "briefing", "top stories", "news in brief", "in brief", "headlines",
        "daily digest", "the latest", "breaking news", "news", "what we know", "what to know",
        "weather", "markets wrap", "market wrap", "opinion", "letters", "editorial",
    }
)
TITLE_PREFIX = re.compile(
    r"^\s*(?:(?:watch|video|exclusive|breaking(?: news)?|update(?:d)?(?:\s*\d+)?|live|analysis|opinion|"
    r"photos?|refile|corrected|correction|rpt|factbox|explainer|just in|developing|urgent|"
    r"in pictures|podcast|listen|report)\s*[-:|–—]+\s*)+",
    re.IGNORECASE,
)
# " - BBC News", " | Reuters", " — The Guardian": a short tail after a separator.
TITLE_SUFFIX = re.compile(r"\s+[-|–—•·]\s+([^-|–—•·]{2,40})$")
TOKEN = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")
NUMBER = re.compile(r"^\d")
# Most reports have no figures: they share this empty set instead of holding one each.
NO_TOKENS: frozenset[str] = frozenset()


THOUSANDS_SEPARATOR = re.compile(r"(?<=\d)[,.](?=\d{3}\b)")
DECIMAL_COMMA = re.compile(r"(?<=\d),(?=\d{1,2}\b)")
NUMBER_PUNCTUATION = re.compile(r"\d[,.]\d")
# Proper names and figures: capitalised words (also hyphenated, like "Lumen-47c") and numbers.
ENTITY = re.compile(r"\b(?:[A-Z][\w'-]*[\w]|\d[\d.,:]*\d|\d)")


YEAR = re.compile(r"^(?:19|20)\d\d$")


def figures(names: Iterable[str]) -> frozenset[str]:
    """The figures among names: numbers that tell events apart (counts, amounts, scores), not years or 1-9."""
    found = frozenset(t for t in names if NUMBER.match(t) and (len(t) > 1 or "." in t) and not YEAR.match(t))
    return found or NO_TOKENS


def years(names: Iterable[str]) -> frozenset[str]:
    """The years among names ("2009"): reports of one event that give years share one."""
    return frozenset(t for t in names if YEAR.match(t)) or NO_TOKENS


def normalise_numbers(text: str) -> str:
    """"1,100" and "1.100" read as 1100; "6,4" as 6.4, so figures agree across styles and languages."""
    if not NUMBER_PUNCTUATION.search(text):  # one cheap pass spares most texts the two rewriting ones
        return text
    return DECIMAL_COMMA.sub(".", THOUSANDS_SEPARATOR.sub("", text))


def _fold_to_ascii(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: accents (combining marks) vanish, other non-ASCII characters part words."""
    assert isinstance(error, UnicodeEncodeError)
    chunk = error.object[error.start:error.end]
    return "".join("" if unicodedata.combining(ch) else " " for ch in chunk), error.end


codecs.register_error("agg-fold", _fold_to_ascii)


def fold(text: str) -> str:
    """Lower case, accents removed, punctuation turned into spaces, spaces collapsed."""
    return fold_normalised(normalise_numbers(text or ""))


def fold_normalised(text: str) -> str:
    """:func:`fold` of text whose numbers are normalised already."""
    if not text.isascii():
        # Tokens are ASCII: decompose, then let the codec drop the marks in one C-level pass
        # (the handler sees only the few runs of non-ASCII characters).
        text = unicodedata.normalize("NFKD", text).encode("ascii", "agg-fold").decode("ascii")
    return " ".join(TOKEN.findall(text.lower()))


def clean_title(title: str, source: str = "") -> str:
    """The title without outlet suffixes ("- BBC News") or tags ("WATCH:", "UPDATE 2-"), folded."""
    text = (title or "").strip()
    text = TITLE_PREFIX.sub("", text)
    folded_source = fold(source)
    for _ in range(2):
        tail = TITLE_SUFFIX.search(text)
        if not tail:
            break
        folded_tail = fold(tail.group(1))
        names_outlet = folded_source and (folded_source in folded_tail or folded_tail in folded_source)
        looks_like_outlet = len(folded_tail.split()) <= 4 and tail.group(1)[:1].isupper()
        if not (names_outlet or looks_like_outlet):
            break
        text = text[: tail.start()]
    return fold(text)


def tokens(folded: str) -> list[str]:
    """Informative tokens of folded text: no stopwords, no one-letter words."""
    return [t for t in folded.split() if t not in STOPWORDS and (len(t) > 1 or t.isdigit())]


def first_tokens(text: str, limit: int) -> list[str]:
    """The first ``limit`` informative tokens of a normalised text: ``tokens(fold_normalised(text))[:limit]``,
    folding only as much of the text as they take (a lead's 60 words, not the article)."""
    size = 16 * limit
    while 0 < size < len(text):
        # Cut at a space: no token spans one, so the tokens before it are the text's first.
        cut = text.rfind(" ", 0, size)
        if cut > 0:
            found = tokens(fold_normalised(text[:cut]))
            if len(found) >= limit:
                return found[:limit]
        size *= 4
    return tokens(fold_normalised(text))[:limit]


def token_counts(folded: str) -> Counter[str]:
    """How often each informative token (see :func:`tokens`) occurs, in order of first occurrence."""
    # Counting runs in C; the filter then looks at each distinct word once, not at every occurrence.
    counts = Counter(folded.split())
    for word in [w for w in counts if w in STOPWORDS or (len(w) == 1 and not w.isdigit())]:
        del counts[word]
    return counts


def entities_normalised(text: str) -> Counter[str]:
    """Folded names and figures of a text whose numbers are normalised, with how often each occurs.

    Names and figures tell one event from another of the same kind: two earthquakes, two rehab check-ins.
    """
    # One fold for all matches: newlines keep them apart and cost nothing to fold.
    return token_counts(fold_normalised("\n".join(ENTITY.findall(text))))


def body_fingerprint(folded_body: str) -> str:
    return hashlib.sha1(folded_body.encode()).hexdigest()


def is_generic_title(folded_title: str, min_tokens: int) -> bool:
    """A title that names no story ("Live updates", "Top stories") or has too few informative words."""
    return folded_title in GENERIC_TITLES or len(set(tokens(folded_title))) < min_tokens


# A paragraph of prose: eight words or more, ending a sentence somewhere.
SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?:\s|$)")
PARAGRAPH_BREAK = re.compile(r"\n\s*\n|\n")


# Page chrome left in a text (menus, share bars, lists of related headlines, footers) comes in runs of lines that
# end no sentence; an article's own such lines (a dateline, a subhead, a caption) come one or two at a time.
CHROME_RUN = 3
SENTENCE_ENDS = (".", "!", "?", "…", "。", "！", "？", "।", "؟")
CLOSING_MARKS = "\"'”’“‘»)]"  # after a sentence's end: closing quotes (English, German, French) and brackets
# A line this long is prose even without a sentence end (a paragraph cut short); a headline or menu is shorter.
PROSE_LINE_WORDS = 20


def is_prose(paragraph: str) -> bool:
    """Whether a line of a text reads as prose: it ends with a sentence's end, or runs to ``PROSE_LINE_WORDS`` words."""
    # Its end, not a full stop anywhere: a headline may hold one ("U.S. stocks fall", "6.1-magnitude quake").
    ends_a_sentence = paragraph.rstrip().rstrip(CLOSING_MARKS).rstrip().endswith(SENTENCE_ENDS)
    return ends_a_sentence or len(paragraph.split()) >= PROSE_LINE_WORDS


def without_chrome(body: str) -> str:
    """The body without its runs of ``CHROME_RUN`` or more lines that are not prose (:func:`is_prose`): page chrome.

    Related headlines and menus name other stories' people and places, and
    those names would count as the report's own. Datelines, subheads and short
    quotes stand alone between prose lines and stay, and so do the lines of a
    text wrapped at a width (each continued by a line in lower case: they are
    read as one). A body that is nothing but such lines (a list) is kept whole.
    """
    if "\n" not in body:
        return body
    lines = _unwrapped([paragraph for paragraph in PARAGRAPH_BREAK.split(body) if paragraph.strip()])
    if not any(reads_as_prose for _, reads_as_prose in lines):
        return body
    kept: list[str] = []
    run: list[str] = []  # the lines since the last prose line
    for line, reads_as_prose in lines:
        if reads_as_prose:
            if len(run) < CHROME_RUN:
                kept.extend(run)
            run = []
            kept.append(line)
        else:
            run.append(line)
    if len(run) < CHROME_RUN:
        kept.extend(run)
    # Lines only joined, none dropped: the text as it came.
    return "\n".join(kept) if len(kept) < len(lines) else body


def _unwrapped(lines: list[str]) -> list[tuple[str, bool]]:
    """Each line with whether it reads as prose (:func:`is_prose`), a line the next one continues (it starts in lower
    case: a text wrapped at a width) joined to it first."""
    joined: list[tuple[str, bool]] = []
    for line in lines:
        if joined and line.lstrip()[:1].islower() and not joined[-1][1]:
            line = f"{joined[-1][0].rstrip()} {line.lstrip()}"
            joined[-1] = (line, is_prose(line))
        else:
            joined.append((line, is_prose(line)))
    return joined


def lead_of(body: str) -> str:
    """The body from its first paragraph of prose on: menus, bylines, datelines and captions before it skipped.

    Page chrome comes in short lines without sentences ("Related stories",
    "By Jane Doe", "5 March 2021", "Share this"); the article starts with the
    first paragraph of eight words or more that ends a sentence. A body with no
    such paragraph is its own lead.
    """
    position = 0
    for match in PARAGRAPH_BREAK.finditer(body + "\n"):
        paragraph = body[position:match.start()]
        if len(paragraph.split()) >= 8 and SENTENCE_END.search(paragraph):
            return body[position:]
        position = match.end()
    return body
