import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aggregator.dedup import grouper as grouper_module
from aggregator.dedup import (
    DedupSettings,
    Report,
    StoryGrouper,
    clean_title,
    credited_outlet,
    original_source,
    score_pair,
)
from aggregator.dedup.features import Features, make_features
from aggregator.dedup.vectors import NO_VECTOR, TOKENS

FIXTURE = Path(__file__).parent / "fixtures" / "dedup" / "stories.jsonl"
T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)


def fixture_reports(*ids: str) -> list[Report]:
    reports = []
    for line in FIXTURE.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if not ids or row["id"] in ids:
            published = datetime.fromisoformat(row["published"].replace("Z", "+00:00"))
            reports.append(Report(row["id"], row["title"], row["text"], row["url"], row["source"], published))
    return reports


def headline(report_id, title, hours=0.0, **kwargs) -> Report:
    return Report(id=report_id, title=title, published=T0 + timedelta(hours=hours), **kwargs)


def test_clean_title_removes_outlet_tags_and_folds():
    assert clean_title("UPDATE 2-Central bank lifts key rate - Valdoria Herald", "Valdoria Herald") == (
        "central bank lifts key rate"
    )
    assert clean_title("WATCH: Séisme à Malatya | Reuters") == "seisme a malatya"
    assert clean_title("EXCLUSIVE: Hallberg strike: what passengers need to know") == (
        "hallberg strike what passengers need to know"
    )


def test_syndicated_copy_with_other_headline_and_utm_url_joins_its_original():
    original = fixture_reports("nd1")[0]
    copy = Report(
        id="copy",
        title="Car dealers take Norvik to court, saying they are owed $86 million",
        # The syndicator adds its own credit line and drops the dateline.
        text=original.text.replace("DETROIT (Wire) - ", "") + " (Reporting by Wire Service staff.)",
        url="https://www.lakeside.example.com/biz/norvik?utm_source=twitter&utm_medium=social",
        source="Lakeside Courier",
        published=original.published + timedelta(hours=2),
    )
    grouper = StoryGrouper()
    first = grouper.add(original)
    placed = grouper.add(copy)
    assert placed.story_id == first.story_id
    assert placed.rule == "similar"
    assert placed.evidence["text"] > 0.8


def test_same_url_after_canonicalisation_is_identity():
    grouper = StoryGrouper()
    a = grouper.add(headline("a", "Ferry crews strike at Harbor Line", url="https://news.example.com/ferry-strike"))
    b = grouper.add(headline("b", "Something else entirely", 1, url="http://m.news.example.com/ferry-strike/?utm_source=x"))
    assert (b.story_id, b.rule) == (a.story_id, "same-url")


def test_two_lawsuits_against_one_company_in_one_week_stay_apart():
    grouper = StoryGrouper()
    grouper.add_many(fixture_reports("nd1", "nd2", "nd3", "nd4", "nd5", "no1", "no2", "no3", "no4"))
    clusters = grouper.clusters()
    dealers = {clusters[i] for i in ("nd1", "nd2", "nd3", "nd4", "nd5")}
    oregon = {clusters[i] for i in ("no1", "no2", "no3", "no4")}
    assert dealers.isdisjoint(oregon)
    assert clusters["nd1"] == clusters["nd2"] == clusters["nd3"]
    assert clusters["no1"] == clusters["no2"] == clusters["no3"]


def test_ceo_fired_and_reinstated_days_later_stay_apart():
    ids = ("hf1", "hf2", "hf3", "hf4", "hb1", "hb2", "hb3", "hb4")
    clusters = StoryGrouper()
    clusters.add_many(fixture_reports(*ids))
    stories = clusters.clusters()
    assert {stories[i] for i in ids[:4]}.isdisjoint({stories[i] for i in ids[4:]})


def test_generic_titles_never_match_on_title_alone():
    grouper = StoryGrouper()
    first = grouper.add(headline("a", "Live updates", source="World Today"))
    second = grouper.add(headline("b", "Live updates", 1, source="Daily Compass"))
    third = grouper.add(headline("c", "Morning briefing", 2))
    fourth = grouper.add(headline("d", "Morning briefing", 3))
    assert len({first.story_id, second.story_id}) == 2
    assert len({third.story_id, fourth.story_id}) == 2


def test_generic_title_joins_on_its_body():
    reports = fixture_reports("ta1", "ta2", "mq2")  # two "Live updates" pages: one storm, one quake
    grouper = StoryGrouper()
    placements = grouper.add_many(reports)
    assert placements["ta2"].story_id == placements["ta1"].story_id
    assert placements["mq2"].story_id != placements["ta1"].story_id


def test_no_chaining_through_a_bridging_report():
    a = headline("a", "Orbital Freight wins NASA contract for lunar cargo landers")
    b = headline("b", "Orbital Freight lunar cargo contract draws protest from rival Selene Aerospace", 1)
    c = headline("c", "Selene Aerospace chief executive Mara Quint steps down after protest", 2)

    # Headlines only: B~C 0.30 and A~C 0.17, so C's average link to the story of A and B is 0.24.
    settings = DedupSettings(join_threshold=0.28, merge_threshold=0.28)

    def joins(existing: list[Report], newcomer: Report) -> bool:
        grouper = StoryGrouper(settings)
        first = grouper.add_many(existing)
        return grouper.add(newcomer).story_id in {p.story_id for p in first.values()}

    assert joins([b], c), "B~C: C matches B alone"
    assert not joins([a], c), "A≁C"
    assert joins([a], b)
    grouper = StoryGrouper(settings)
    placements = grouper.add_many([a, b, c])
    assert placements["a"].story_id == placements["b"].story_id
    assert placements["c"].story_id != placements["a"].story_id


def test_ids_are_stable_across_runs_and_merges_go_into_the_older_id():
    # Headlines only: A~B 0.58, B~C 0.40, A~C 0.36, so A and C stay apart until B shows them one story.
    settings = DedupSettings(join_threshold=0.38, merge_threshold=0.32)
    a = headline("a", "Harbor Line ferry strike halts crossings to Vantor Island")
    c = headline("c", "Vantor Island cut off as crews walk out at Harbor Line", 1)
    b = headline("b", "Harbor Line ferry crews strike, halting Vantor Island crossings", 2)
    other = headline("x", "Kestrel recalls 300,000 chargers over shock risk", 2)

    first_run = StoryGrouper(settings, first_new_id=10)
    placed = first_run.add_many([a, c])
    assert (placed["a"].story_id, placed["c"].story_id) == (10, 11)

    # A later run is seeded with what the first stored, then sees the bridging report.
    second_run = StoryGrouper(settings, first_new_id=12)
    second_run.seed(10, [a])
    second_run.seed(11, [c])
    bridging = second_run.add(b)
    unrelated = second_run.add(other)
    assert bridging.story_id == 10
    assert [(m.merged, m.into) for m in second_run.merges] == [(11, 10)]
    assert second_run.resolve(11) == 10
    assert second_run.clusters() == {"a": 10, "c": 10, "b": 10, "x": 12}
    assert unrelated.story_id == 12


def test_reports_outside_the_window_never_match():
    title = "Bank of Valdoria raises key interest rate to 4.25 percent"
    grouper = StoryGrouper(DedupSettings(window_hours=72))
    first = grouper.add(headline("a", title))
    months_later = grouper.add(headline("b", title, 24 * 90))
    assert months_later.story_id != first.story_id


def test_every_placement_is_explained():
    grouper = StoryGrouper()
    placements = grouper.add_many(fixture_reports())
    rules = {p.rule for p in placements.values()}
    assert rules <= {"seed", "same-url", "same-guid", "same-body", "similar"}
    for placement in placements.values():
        if placement.rule == "similar":
            assert placement.score >= grouper.settings.join_threshold
            assert "average_link" in placement.evidence and "best_member" in placement.evidence


def test_credited_outlet_and_original_source():
    assert credited_outlet("The board met on Friday, the Financial Times reported.") == "Financial Times"
    assert credited_outlet("Prices rose, according to Reuters.") == "Reuters"
    assert credited_outlet("The deal was first reported by Bloomberg News on Monday.") == "Bloomberg News"
    assert credited_outlet("The minister said prices would fall.") is None
    reports = fixture_reports("hb1", "hb2", "hb4")
    earliest, credited = original_source(reports)
    assert earliest.id == "hb1"
    assert credited == "Nordic Business"


# -- the DB step ------------------------------------------------------------

import pytest  # noqa: E402

from aggregator.dedup import group_new_entries, resolve_story_id  # noqa: E402
from aggregator.dedup.session import _observed_reports  # noqa: E402
from aggregator.store import Store  # noqa: E402


def _insert_entries(db, reports, feed_ids, status="ok"):
    for report in reports:
        db.execute(
            "INSERT INTO entries (feed_id, guid, link, title, text, published, first_seen, changed_at, "
            "content_hash, extract_status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [feed_ids[report.source], f"guid-{report.id}", report.url, report.title, report.text,
             report.published.isoformat(timespec="seconds"), report.published.isoformat(timespec="seconds"),
             report.published.isoformat(timespec="seconds"), "x", status],
        )


@pytest.fixture
def store(tmp_path):
    store = Store.open(tmp_path / "agg.db")
    yield store
    store.close()


def _feeds(db, reports):
    ids = {}
    for source in sorted({r.source for r in reports}):
        cursor = db.execute(
            "INSERT INTO feeds (url, title, created_at) VALUES (?, ?, ?)",
            [f"https://{len(ids)}.example.com/feed", source, "2024-01-01T00:00:00+00:00"],
        )
        ids[source] = cursor.lastrowid
    return ids


def test_group_new_entries_writes_stories_idempotently_and_keeps_ids(store):
    db = store.db
    first_batch = fixture_reports("hf1", "hf2", "hf3", "no1", "no2", "no3")
    second_batch = fixture_reports("hf4", "no4", "hb1", "hb2")
    feed_ids = _feeds(db, first_batch + second_batch)
    _insert_entries(db, first_batch, feed_ids)
    _insert_entries(db, fixture_reports("kx1"), {"Consumer Tech": feed_ids["Tech Pulse"]}, status="pending")

    summary = group_new_entries(db, DedupSettings())
    assert summary.placed == 6 and summary.new_stories == 2
    assert group_new_entries(db, DedupSettings()).placed == 0  # nothing left: idempotent

    story_of = dict(db.execute("SELECT title, story_id FROM entries").fetchall())
    fired_id = story_of["Halvard Systems ousts CEO Dana Pryce"]
    oregon_id = story_of["Oregon sues Norvik Motors, says it misreported hybrid emissions"]
    assert story_of["BREAKING: Halvard board fires co-founder Dana Pryce as CEO"] == fired_id
    assert fired_id != oregon_id
    assert story_of["Kestrel recalls 300,000 chargers over shock risk"] is None  # still pending extraction

    _insert_entries(db, second_batch, feed_ids)
    group_new_entries(db, DedupSettings())
    story_of = dict(db.execute("SELECT title, story_id FROM entries").fetchall())
    assert story_of["Halvard Systems ousts CEO Dana Pryce"] == fired_id  # ids never change
    assert story_of["Halvard shares slide 9% after CEO Pryce dismissed"] == fired_id
    assert story_of["Norvik Brava emissions case: what Oregon is alleging"] == oregon_id
    reinstated = story_of["Dana Pryce to return as Halvard CEO after staff revolt"]
    assert reinstated not in (fired_id, oregon_id)

    fired = dict(zip(
        ("title", "n_reports", "n_outlets", "representative_id", "original_entry_id", "first_seen", "merged_into"),
        db.execute(
            "SELECT title, n_reports, n_outlets, representative_id, original_entry_id, first_seen, merged_into "
            "FROM stories WHERE id = ?", [fired_id],
        ).fetchone(),
    ))
    assert fired["n_reports"] == 4 and fired["n_outlets"] == 4
    assert fired["title"] == "Halvard Systems ousts CEO Dana Pryce"
    assert fired["first_seen"] == "2024-05-03T13:00:00+00:00"
    assert fired["merged_into"] is None
    members = db.execute("SELECT rule, score, evidence FROM story_members WHERE story_id = ?", [fired_id]).fetchall()
    assert sorted(rule for rule, _, _ in members) == ["seed", "similar", "similar", "similar"]
    assert all(json.loads(evidence) is not None for _, _, evidence in members)
    assert db.execute("SELECT count(*) FROM story_members").fetchone()[0] == 10
    assert resolve_story_id(db, fired_id) == fired_id


def test_resolve_story_id_follows_merges(store):
    db = store.db
    for story_id, merged_into in ((1, None), (2, 1), (3, 2)):
        db.execute(
            "INSERT INTO stories (id, first_seen, last_seen, merged_into) VALUES (?, ?, ?, ?)",
            [story_id, "2024-01-01T00:00:00+00:00", "2024-01-01T00:00:00+00:00", merged_into],
        )
    assert resolve_story_id(db, 3) == 1
    assert resolve_story_id(db, 1) == 1


# --------------------------------------------------------------------------
# Bounded work and memory per report
# --------------------------------------------------------------------------

WORDS = [f"w{i}x" for i in range(4000)]


def article(seed: int, n_words: int) -> str:
    """Text of distinct made-up words, so that every report's vocabulary is its own."""
    return " ".join(WORDS[(seed * 7919 + i * 31) % len(WORDS)] for i in range(n_words)) + "."


def test_grouper_keeps_no_texts_and_a_bounded_summary_of_each_body():
    settings = DedupSettings(max_vector_terms=20, max_names=5, max_body_chars=3000)
    long_body = article(1, 3000) + " Zephyrine Quarrow Ildemar Brisk Oltan Vesh Marrow Tull."
    grouper = StoryGrouper(settings)
    placed = grouper.add(Report("a", "Harbor crane collapse injures dock workers", long_body, published=T0))
    doc = grouper.stories[placed.story_id].members[0]
    assert grouper.members(placed.story_id)[0].text == ""  # features kept, text dropped
    assert len(doc.text.ids) == 20 and len(doc.names.ids) <= 5
    assert "zephyrine" not in doc.text.terms() and "zephyrine" not in TOKENS.tokens_of(doc.vocabulary)  # after the cut


def test_word_frequencies_cover_the_window_not_the_whole_batch():
    settings = DedupSettings(window_hours=24)
    reports = [
        Report(i, f"Report {i} on harbor {WORDS[i]} {WORDS[i + 1]}", article(i, 60), published=T0 + timedelta(hours=i))
        for i in range(24 * 30)
    ]
    grouper = StoryGrouper(settings)
    for report, _ in grouper.place_many(reports):
        # Reports up to two windows back stay indexed, and up to two windows ahead are counted.
        assert grouper._freq.n <= 4 * 24 + 2, report.id


def test_a_word_shared_by_too_many_stories_does_not_crowd_out_the_real_one():
    settings = DedupSettings(max_posting_stories=5, max_candidate_stories=3)
    grouper = StoryGrouper(settings)
    for i in range(12):  # twelve stories that all mention "harbor" in their titles
        grouper.add(headline(f"f{i}", f"Harbor {WORDS[3 * i]} {WORDS[3 * i + 1]} {WORDS[3 * i + 2]} report", i / 10))
    original = grouper.add(headline("o", "Harbor crane collapse injures Quarrow dock workers", 2))
    copy = grouper.add(headline("c", "Quarrow dock workers injured as harbor crane collapses", 3))
    assert copy.story_id == original.story_id and copy.rule == "similar"


def test_group_new_entries_reads_bodies_only_up_to_the_scoring_cut(store):
    db = store.db
    shared_start = article(5, 120)
    reports = [
        Report("x1", "Lighthouse keepers strike over pay", shared_start + " " + article(6, 200),
               "https://a.example.com/1", "Coast Daily", T0),
        Report("x2", "Keepers walk out at the lighthouses", shared_start + " " + article(7, 200),
               "https://b.example.com/2", "Shore News", T0 + timedelta(hours=1)),
    ]
    _insert_entries(db, reports, _feeds(db, reports))
    cut = len(shared_start)  # the bodies differ only after it
    group_new_entries(db, DedupSettings(max_body_chars=cut))
    rules = dict(db.execute("SELECT e.title, m.rule FROM entries e JOIN story_members m ON m.entry_id = e.id"))
    assert rules["Keepers walk out at the lighthouses"] == "same-body"


def test_a_report_with_the_guid_of_a_stored_report_joins_its_story():
    """Reissued under a new URL and a rewritten headline, the same GUID still says it is the same article."""
    grouper = StoryGrouper()
    first = grouper.add(headline("a", "Kestrel recalls 300,000 chargers over shock risk",
                                 guid="urn:kestrel-wire:2024:recall-0042", url="https://wire.example.com/a"))
    grouper.add(headline("x", "Harbor Line ferry strike halts crossings to Vantor Island", 1))
    again = grouper.add(headline("b", "UPDATE 2: Regulator widens charger recall", 2,
                                 guid="urn:kestrel-wire:2024:recall-0042", url="https://other.example.com/b"))
    assert (again.story_id, again.rule) == (first.story_id, "same-guid")


def test_a_report_matching_two_stories_joins_one_and_merges_them_only_if_they_match_as_wholes():
    """At the default thresholds: a bridging report joins the story it matches best; the other stays apart
    unless the two stories are alike as wholes, and then it is folded into the older id."""
    strike = ("Dock workers at the port of Vantor walked out over a pay offer, halting the ferries to Osric "
              "Island. The dockers' union said the strike by 1,200 members would last until Friday.")
    bridge = ("The Kestrel Street bridge was closed after inspectors found a cracked girder, cutting the "
              "Halden road link for months, city engineer Mara Quint said.")
    both = strike + " " + bridge
    fillers = [Report(f"f{i}", f"Report {i} on {WORDS[i]} {WORDS[i + 1]} {WORDS[i + 2]}", article(i, 60),
                      published=T0) for i in range(20)]

    grouper = StoryGrouper()
    grouper.add_many(fillers)
    a = grouper.add(Report("a", "Vantor dock workers strike over pay", strike, published=T0))
    b = grouper.add(Report("b", "Kestrel Street bridge closed after crack found", bridge, published=T0))
    bridging = grouper.add(Report("c", "Strike and bridge closure: a bad week for Vantor", both,
                                  published=T0 + timedelta(hours=1)))
    assert a.story_id != b.story_id
    assert bridging.story_id in (a.story_id, b.story_id) and bridging.rule == "similar"
    assert grouper.merges == []  # two different events: the report that tells both does not fold them
    assert grouper.resolve(a.story_id) != grouper.resolve(b.story_id)

    # Two reports of one strike kept apart by an earlier run (seeded as stored), then a third that joins
    # both: the two stories match as wholes, so the younger is folded into the older id.
    retold = strike.replace("walked out over", "began a walkout over").replace("halting", "stopping")
    grouper = StoryGrouper(first_new_id=30)
    grouper.add_many(fillers)
    grouper.seed(10, [Report("a", "Vantor dock workers strike over pay", strike, published=T0)])
    grouper.seed(11, [Report("b", "Ferries stop as Vantor port strike begins", retold, published=T0)])
    joined = grouper.add(Report("c", "Vantor port strike halts the Osric Island ferries", strike + " " + retold,
                                published=T0 + timedelta(hours=2)))
    assert joined.story_id == 10
    assert [(m.merged, m.into) for m in grouper.merges] == [(11, 10)]
    assert grouper.clusters()["b"] == 10


def test_the_lead_starts_past_page_chrome():
    from aggregator.dedup import lead_of

    page = ("Home\nWorld\nBusiness\nRelated stories\nBy Jane Doe, Business reporter\n5 March 2024\n"
            "Dock workers at the port of Vantor walked out on Monday over a pay offer.\nThe union said more.")
    assert lead_of(page).startswith("Dock workers at the port of Vantor")
    prose = "Dock workers at the port of Vantor walked out on Monday over a pay offer, the union said."
    assert lead_of(prose) == prose
    assert lead_of("Menu\nShare\nSubscribe") == "Menu\nShare\nSubscribe"  # no prose at all: the whole body


def test_runs_of_page_chrome_leave_the_body_and_an_articles_own_short_lines_stay():
    from aggregator.dedup.text import is_prose, without_chrome

    page = ("Home\nWorld\nBusiness\nBy Jane Doe, Business reporter\n"
            "Dock workers at the port of Vantor walked out on Monday over a pay offer.\n"
            "5 March 2024\n"  # a dateline alone between prose lines: the article's
            "The union said the strike by 1,200 members would last until Friday.\n"
            "Related stories\nKestrel Street bridge closed after crack found\nU.S. regulators fine Pellam Motors\n"
            "Share this article")  # a full stop inside a headline does not make it prose: a sentence ends a line
    assert without_chrome(page) == (
        "Dock workers at the port of Vantor walked out on Monday over a pay offer.\n5 March 2024\n"
        "The union said the strike by 1,200 members would last until Friday.")
    article_text = "Dock workers walked out.\nWhy now\nThe union said more.\n\nIt was the first strike in years."
    assert without_chrome(article_text) is article_text  # two short lines at most between prose: nothing dropped
    assert without_chrome("Menu\nShare\nSubscribe") == "Menu\nShare\nSubscribe"  # no prose at all: the whole body
    one_paragraph = "Home World Business Dock workers at the port of Vantor walked out on Monday."
    assert without_chrome(one_paragraph) is one_paragraph  # no lines to tell apart
    wrapped = ("Dock workers at the port of Vantor walked out on Monday over\na pay offer that the union called an\n"
               "insult to its members, halting the ferries to Osric Island for\nthe first time in a decade.\nShare this")
    assert without_chrome(wrapped) is wrapped  # a text wrapped at a width: its lines continue each other
    for prose_line in ("Police said no one was hurt.\r", "Er sagte: „Wir kommen wieder.“", "« Nous reviendrons. »",
                       "He said it was over . ''", "東京で会議が開かれた。", "Was it?\xa0"):
        assert is_prose(prose_line), prose_line
    long_line = " ".join(["word"] * 20)  # a paragraph cut short, without a sentence end, is still prose
    assert without_chrome(f"{long_line}\nA\nB\nC") == long_line


def test_a_text_of_lines_that_are_not_prose_but_one_short_sentence_is_read_whole():
    """What the page-chrome rule would leave of it is too short to be a body: the report keeps the body it has."""
    from aggregator.dedup.features import read_text

    ranking = "\n".join(f"{n}. {country}" for n, country in enumerate(
        ["Finland", "Norway", "Australia", "Canada", "Germany", "France", "Italy", "Spain", "Japan", "Chile"], 1))
    reading = read_text(Report("r", "The countries ranked", f"{ranking}\nAll rights reserved.", published=T0),
                        DedupSettings())
    assert reading.has_body and "norway" in reading.text_counts


def test_page_chrome_around_reports_neither_keeps_apart_one_story_nor_joins_two():
    """Related headlines and menus name other stories' people: counted as the report's own names, they made two
    outlets' reports of one story look apart, and two stories under one site's template look alike."""
    strike = ("Dock workers at the port of Vantor walked out over a pay offer, halting the ferries to Osric Island. "
              "The dockers' union said the strike by 1,200 members would last until Friday.")
    retold = ("Ferries to Osric Island stopped on Monday as dock workers at Vantor began a walkout over pay. "
              "The union said 1,200 of its members had joined the strike, due to end on Friday.")
    bridge = ("The Kestrel Street bridge in Halden was closed after inspectors found a cracked girder, cutting the "
              "road link for months, city engineer Mara Quint said on Monday.")

    def site(menu: str, related: list[str], body: str) -> str:
        return "\n".join([*menu.split(), "By Staff Reporter", body, "Related stories", *related, "Share this"])

    herald_related = ["Brannoch United sign striker Ilse Varga from Dormund", "Senator Orrin Blake faces ethics probe",
                      "Pellam Motors recalls 40,000 Torvin hatchbacks"]
    courier_related = ["Queen Adela opens Marrowgate library", "Tessaly wildfire forces Corvin Vale evacuations",
                       "Osgood Bank chief Hana Reyes steps down"]
    fillers = [Report(f"f{i}", f"Report {i} on {WORDS[i]} {WORDS[i + 1]} {WORDS[i + 2]}", article(i, 60),
                      published=T0) for i in range(20)]
    grouper = StoryGrouper()
    grouper.add_many(fillers)
    a = grouper.add(Report("a", "Vantor dock workers strike over pay",
                           site("Home News Sport Weather", herald_related, strike), published=T0))
    b = grouper.add(Report("b", "Ferries halted as Vantor port walkout begins",
                           site("Menu World Business Culture", courier_related, retold), published=T0))
    c = grouper.add(Report("c", "Halden bridge shut after inspectors find crack",
                           site("Home News Sport Weather", herald_related, bridge), published=T0))
    assert b.story_id == a.story_id  # one strike, told by two outlets under their own chrome
    assert c.story_id != a.story_id  # two stories under one outlet's chrome


def test_a_story_admits_a_report_about_as_close_to_it_as_its_members_were():
    from aggregator.dedup.grouper import _Story

    settings = DedupSettings()  # cohesion_share 0.8, cohesion_cap 0.35, cohesion_min_joins 2
    story = _Story(1)
    assert story.admits(0.25, settings)  # a seed alone: no links to compare with
    story.linked(0.30)
    assert story.admits(0.25, settings)  # one link says little
    story.linked(0.50)
    assert (story.links, story.weakest_link) == (2, 0.30)
    assert story.admits(0.25, settings) and not story.admits(0.23, settings)  # 0.8 x 0.30 = 0.24
    tight = _Story(2)
    tight.linked(0.90)
    tight.linked(0.85)  # syndicated copies: the bar stops at the cap, so rewrites still join
    assert tight.admits(0.36, settings) and not tight.admits(0.34, settings)
    tight.linked(0.30, count=3)  # a story folded in: its links count, its weakest too
    assert (tight.links, tight.weakest_link) == (5, 0.30) and tight.admits(0.25, settings)


def test_title_words_weighed_zero_find_candidates_by_their_idf():
    """A title word's weight can round to 0.0 (extreme ``idf_power``): candidate search then weighs it by its idf,
    as for a word outside the title, and does not fail."""
    start = datetime(2024, 5, 3, 9, tzinfo=UTC)
    reports = [Report(id=str(i), title=f"People said government would make report {i} year",
                      published=start + timedelta(hours=i)) for i in range(12)]
    placed = StoryGrouper(DedupSettings(idf_power=200, prior_weight=20)).add_many(reports)
    assert len(placed) == 12


def test_a_story_not_sampled_past_its_first_member_is_joined_on_that_link_alone():
    """With ``min_representative_link`` set above the join threshold, a report joins a story on its score with the
    story's first member, and its evidence says so."""
    start = datetime(2024, 5, 3, 9, tzinfo=UTC)
    reports = [Report(id=i, title="Harbour authority reopens the north bridge after repairs", source=f"Outlet {i}",
                      published=start + timedelta(hours=n)) for n, i in enumerate("ab")]
    placed = StoryGrouper(DedupSettings(min_representative_link=0.99)).add_many(reports)
    assert placed["b"].story_id == placed["a"].story_id and placed["b"].rule == "similar"
    assert list(placed["b"].evidence) == ["representative_link"]
    assert placed["b"].evidence["representative_link"] == placed["b"].score > 0.24


def test_cohesion_keeps_a_tight_story_from_taking_in_a_report_that_links_well_below_its_members(monkeypatch):
    """Three reports that link strongly, then one of the same subject that links weakly: a story of its own."""
    links = {frozenset({"a", "b"}): 0.6, frozenset({"a", "c"}): 0.55, frozenset({"b", "c"}): 0.6}

    def score(x, y):
        return links.get(frozenset({x.report.id, y.report.id}), 0.27)

    monkeypatch.setattr(grouper_module, "pair_scores", lambda x, others, settings: [score(x, y) for y in others])
    monkeypatch.setattr(grouper_module, "score_pair", lambda x, y, settings: (score(x, y), {}))
    start = datetime(2024, 5, 3, 9, tzinfo=UTC)
    reports = [Report(id=i, title=f"Harbour authority reopens the north bridge {i}", published=start + timedelta(hours=n))
               for n, i in enumerate("abcd")]
    placed = StoryGrouper(DedupSettings()).add_many(reports)
    assert placed["b"].story_id == placed["c"].story_id == placed["a"].story_id
    assert placed["d"].rule == "seed"  # 0.27 clears the threshold (0.24) but not 0.8 x 0.55 = 0.44, capped to 0.35
    loose = StoryGrouper(DedupSettings(cohesion_share=0.0)).add_many(reports)
    assert loose["d"].story_id == loose["a"].story_id


def test_years_named_tell_apart_reports_whose_time_is_only_when_they_were_fetched(store):
    """An entry without a publication time is placed at the time it was fetched, which dates the fetch, not the
    event: its years still count, in the database step as in `agg eval-dedup` (ECB+'s reports have no times)."""
    body = ("The city council approved the new harbour bridge after a long debate, officials said on Tuesday. "
            "Construction of the bridge is expected to take three years and cost the city a large sum. ")
    first = Report("y1", "Council approves harbour bridge", body + "The plan was first proposed in 2008.",
                   published=T0)
    second = Report("y2", "Council backs harbour bridge plan", body + "The vote came in 2013 after delays.",
                    published=T0)
    settings = DedupSettings()
    dated = score_pair(make_features(first, settings), make_features(second, settings), settings)[1]
    assert "years_clash" not in dated  # their feeds gave the times: the years named are only mentions
    fetched = [replace(r, time_estimated=True) for r in (first, second)]
    evidence = score_pair(*(make_features(r, settings) for r in fetched), settings)[1]
    assert evidence.get("years_clash") == 1.0
    # Stored without a publication time, an entry's report is dated by its fetch, and says so.
    feed_id = _feeds(store.db, [first])[first.source]
    entry_id = store.db.execute(
        "INSERT INTO entries (feed_id, guid, title, text, published, first_seen, changed_at, content_hash, "
        "extract_status) VALUES (?, 'g', ?, ?, NULL, ?, ?, 'x', 'ok')",
        [feed_id, first.title, first.text, T0.isoformat(), T0.isoformat()]).lastrowid
    [report] = _observed_reports(store.db, StoryGrouper(settings), {}, [entry_id])
    assert report.published == T0 and report.time_estimated and not make_features(report, settings).dated


def test_a_story_keeps_vectors_only_for_the_members_comparisons_read_and_decides_as_if_it_kept_all(monkeypatch):
    """Past its representative and newest members (the average link's sample), a member is never compared
    again: its vectors go, so a story of hundreds of syndicated copies holds a dozen members' vectors."""
    from tests.test_dedup_fastpaths import rewritten_reports

    reports = rewritten_reports()
    copies = [replace(reports[0], id=f"copy{n}", url=f"https://outlet{n}.example/story", source=f"Outlet {n}")
              for n in range(40)]
    settings = DedupSettings(window_hours=24 * 3650)
    grouper = StoryGrouper(settings)
    placed = grouper.add_many(reports + copies)
    story = grouper.stories[grouper.resolve(placed["copy0"].story_id)]
    kept = [m for m in story.members if len(m.text.ids)]
    assert len(story.members) > 40 and len(kept) <= settings.max_members_compared + 1
    assert story.representative in kept and story.members[-1] in kept
    monkeypatch.setattr(Features, "retire", lambda self: None)
    assert StoryGrouper(settings).add_many(reports + copies) == placed


def test_a_seeded_story_keeps_whole_only_its_face_and_newest_members():
    """Seeding attaches a stored story's members and then retires, at once, those no comparison reaches: all
    but the newest compared span and the story's face, which is its first member with a body (a bodiless
    first member that a bodied one replaced as the face is retired too)."""
    settings = DedupSettings()
    grouper = StoryGrouper(settings)
    members = [Report(id="teaser", title="Harbour bridge closes for repairs after storm damage", published=T0)]
    members += [Report(id=f"r{n}", title=f"Harbour bridge closes for repairs, report {n}", text=article(n, 120),
                       published=T0 + timedelta(minutes=n)) for n in range(20)]
    grouper.seed(7, members)
    story = grouper.stories[7]
    assert story.representative.report.id == "r0"
    span = max(settings.max_members_compared, max(2, settings.max_members_compared // 2) + 1)
    whole = {doc.report.id for doc in story.members if doc.sorted_title}
    assert whole == {"r0"} | {f"r{n}" for n in range(20 - span, 20)}
    assert all(doc.text is NO_VECTOR for doc in story.members if doc.report.id not in whole)
