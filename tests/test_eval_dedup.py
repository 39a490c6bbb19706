"""Story grouping measured against gold labels. Floors are only ever raised, just under what was measured."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.dedup import Report
from aggregator.evaluate import UCI_HEADLINES, evaluate_file, format_result, score_clustering

FIXTURES = Path(__file__).parent / "fixtures" / "dedup"
# A second set we wrote, a little later than the first. Both were written and tuned beside the rules they
# score, so they check that nothing breaks, not how the grouping generalises: the stories-dev files below,
# real reports grouped by people, do that.
EXTRA = Path(__file__).parent / "fixtures" / "dedup-extra" / "stories.jsonl"
STORIES_DEV = Path("stories-dev")

# Measured 2026-12-07 on the engine of issue 16 (TF-IDF of whole texts, names and leads, average link, a
# story's cohesion), in each file's order:
# fixtures P 1.000 R 1.000, B-cubed F1 1.000; extra fixtures B-cubed F1 1.000;
# UCI headlines pairwise P 0.917 F1 0.721, B-cubed F1 0.732;
# AllSides B-cubed P 0.974 R 0.910 F1 0.941, pairwise P 0.932 F1 0.895;
# ECB+ B-cubed P 0.953 R 0.846 F1 0.896, pairwise P 0.924 F1 0.874.
# Floors are only ever raised, and sit just under what was measured, with one exception: the cohesion rule
# (DedupSettings.cohesion_share) took ECB+'s B-cubed F1 in file order from 0.901 to 0.896, its floor from 0.90
# to 0.89, for precision on every set (AllSides B-cubed P 0.959 -> 0.974, pairwise 0.885 -> 0.932; ECB+ 0.950
# -> 0.953; UCI 0.914 -> 0.916) and, over 20 shuffled orders, AllSides F1 0.930 -> 0.937 at ECB+'s 0.891 -> 0.887
# (docs/dedup.md).
FIXTURE_FLOORS = {"pairwise_precision": 0.99, "pairwise_f1": 0.98, "bcubed_f1": 0.99}
EXTRA_FLOORS = {"pairwise_precision": 0.99, "pairwise_f1": 0.98, "bcubed_f1": 0.99}
UCI_FLOORS = {"pairwise_precision": 0.91, "pairwise_f1": 0.715, "bcubed_f1": 0.727}
STORIES_DEV_FLOORS = {
    "allsides.jsonl": {"bcubed_precision": 0.97, "bcubed_f1": 0.935, "pairwise_precision": 0.925},
    "ecbplus.jsonl": {"bcubed_precision": 0.948, "bcubed_f1": 0.89, "pairwise_precision": 0.92},
}
# The same files in 8 shuffled orders of arrival (eval-dedup --orders 8): a file lists a story's reports
# together, which flatters an incremental grouper. Means measured: AllSides B-cubed P 0.963 F1 0.937,
# ECB+ B-cubed P 0.932 F1 0.893 (lowest of the 8: 0.959 / 0.934 and 0.909 / 0.882).
SHUFFLED_ORDERS = 8
STORIES_DEV_SHUFFLED_FLOORS = {
    "allsides.jsonl": {"bcubed_precision": 0.958, "bcubed_f1": 0.932},
    "ecbplus.jsonl": {"bcubed_precision": 0.925, "bcubed_f1": 0.886},
}


def test_scores_of_known_clusterings():
    gold = {"a": 1, "b": 1, "c": 1, "d": 2}
    perfect = score_clustering(gold, {"a": "x", "b": "x", "c": "x", "d": "y"})
    assert perfect["pairwise_f1"] == perfect["bcubed_f1"] == 1.0
    split = score_clustering(gold, {"a": "x", "b": "x", "c": "z", "d": "y"})
    assert split["pairwise_precision"] == 1.0
    assert split["pairwise_recall"] == pytest.approx(1 / 3)
    assert split["bcubed_recall"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1) / 4)
    lumped = score_clustering(gold, {k: "x" for k in gold})
    assert lumped["pairwise_precision"] == pytest.approx(3 / 6)
    assert lumped["gold_clusters"] == 2 and lumped["predicted_clusters"] == 1


def test_fixtures_cover_the_hard_cases():
    rows = [json.loads(line) for path in FIXTURES.glob("*.jsonl") for line in path.read_text().splitlines()]
    stories = {row["story"] for row in rows}
    assert len(rows) >= 50 and len(stories) >= 15
    assert {"norvik-dealers", "norvik-oregon", "halvard-fired", "halvard-back"} <= stories
    assert {"valdoria-march", "valdoria-june", "rovers-cup", "rovers-playoff"} <= stories


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.jsonl")), ids=lambda p: p.name)
def test_own_fixtures_stay_above_floors(path):
    result = evaluate_file(path)
    measured = result.to_dict()
    for name, floor in FIXTURE_FLOORS.items():
        assert measured[name] >= floor, f"{name} fell to {measured[name]:.3f}\n{format_result(result)}"


def test_extra_fixtures_stay_above_floors():
    rows = [json.loads(line) for line in EXTRA.read_text().splitlines()]
    assert len(rows) >= 40 and len({row["story"] for row in rows}) >= 15
    measured = evaluate_file(EXTRA).to_dict()
    for name, floor in EXTRA_FLOORS.items():
        assert measured[name] >= floor, f"{name} fell to {measured[name]:.3f}"


def stories_dev_file(shared_data: Path, name: str) -> Path:
    """One of the stories-dev files, or the test skipped when the shared data does not hold it."""
    path = shared_data / STORIES_DEV / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.mark.parametrize("name", sorted(STORIES_DEV_FLOORS))
def test_real_reports_grouped_by_people_stay_above_floors(shared_data, name):
    result = evaluate_file(stories_dev_file(shared_data, name))
    assert result.documents >= 400 and result.gold_clusters >= 40
    measured = result.to_dict()
    for metric, floor in STORIES_DEV_FLOORS[name].items():
        assert measured[metric] >= floor, f"{metric} fell to {measured[metric]:.3f}\n{format_result(result)}"


@pytest.mark.parametrize("name", sorted(STORIES_DEV_SHUFFLED_FLOORS))
def test_real_reports_in_shuffled_orders_of_arrival_stay_above_floors(shared_data, name):
    orders = evaluate_file(stories_dev_file(shared_data, name), orders=SHUFFLED_ORDERS).orders
    assert orders is not None and orders["count"] == SHUFFLED_ORDERS
    for metric, floor in STORIES_DEV_SHUFFLED_FLOORS[name].items():
        assert orders["mean"][metric] >= floor, f"mean {metric} over shuffled orders fell to {orders['mean'][metric]:.3f}"


def test_uci_headlines_stay_above_floors(shared_data):
    path = shared_data / UCI_HEADLINES
    if not path.is_file():
        pytest.skip(f"{path} not found")
    result = evaluate_file(path, fmt="uci")
    assert result.documents == 6366 and result.gold_clusters == 87
    measured = result.to_dict()
    for name, floor in UCI_FLOORS.items():
        assert measured[name] >= floor, f"{name} fell to {measured[name]:.3f}\n{format_result(result)}"


def test_format_result_is_a_table():
    result = evaluate_file(FIXTURES / "stories.jsonl")
    text = format_result(result)
    assert "pairwise P / R / F1" in text and "B-cubed" in text
    assert json.loads(json.dumps(result.to_dict()))["documents"] == result.documents


def test_cli_eval_dedup_prints_table_and_json(agg, tmp_path):
    config = tmp_path / "absent.yaml"  # no config: default thresholds
    table = agg("--config", config, "eval-dedup", FIXTURES / "stories.jsonl")
    assert table.exit_code == 0, table.output
    assert "pairwise P / R / F1" in table.output
    as_json = agg("--config", config, "eval-dedup", "--json", FIXTURES / "stories.jsonl")
    measured = json.loads(as_json.output)
    assert measured["documents"] == 57 and measured["gold_clusters"] == 18


def test_cli_eval_dedup_in_shuffled_orders_gives_their_mean_and_lowest_figures(agg, tmp_path):
    """A file that lists each story's reports together, grouped as they would arrive: in other orders too."""
    config = tmp_path / "absent.yaml"
    once = json.loads(agg("--config", config, "eval-dedup", "--json", "--orders", "3", EXTRA).output)
    again = json.loads(agg("--config", config, "eval-dedup", "--json", "--orders", "3", EXTRA).output)
    assert once["orders"] == again["orders"]  # the same orders every time
    orders = once["orders"]
    assert orders["count"] == 3
    for metric in ("pairwise_precision", "pairwise_f1", "bcubed_precision", "bcubed_recall", "bcubed_f1"):
        assert 0 < orders["lowest"][metric] <= orders["mean"][metric] <= 1
    table = agg("--config", config, "eval-dedup", "--orders", "3", EXTRA)
    assert "3 shuffled orders, mean pairwise P / R / F1" in table.output and "lowest B-cubed" in table.output
    assert json.loads(agg("--config", config, "eval-dedup", "--json", EXTRA).output)["orders"] is None


def test_shuffled_orders_are_other_orders_of_the_same_reports_and_the_same_for_a_seed():
    from aggregator.evaluate import shuffled_orders

    start = datetime(2024, 5, 3, tzinfo=UTC)
    reports = [Report(id=str(i), title=f"report {i}", published=start + timedelta(days=i % 3) if i < 6 else None)
               for i in range(12)]
    orders = shuffled_orders(reports, 4)
    assert len({tuple(r.id for r in order) for order in orders}) == 4  # four different orders
    assert [r.id for r in shuffled_orders(reports, 4)[2]] == [r.id for r in orders[2]]  # the same for the same seed
    for order in orders:
        assert sorted(r.id for r in order) == sorted(r.id for r in reports)


def test_published_times_are_read_in_the_forms_real_files_use(agg, tmp_path):
    from aggregator.evaluate import load_jsonl

    rows = [
        {"id": "a", "title": "t", "story": 1, "published": "2014-03-10T12:00:00Z"},
        {"id": "b", "title": "t", "story": 1, "published": "Mon, 10 Mar 2014 12:00:00 GMT"},
        {"id": "c", "title": "t", "story": 1, "published": 1394452800000},
        {"id": "d", "title": "t", "story": 1, "published": "1394452800"},
        {"id": "e", "title": "t", "story": 1, "published": "last Tuesday"},
    ]
    path = tmp_path / "times.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    reports, gold = load_jsonl(path)
    times = {r.id: r.published for r in reports}
    assert times["a"] == times["b"] == times["c"] == times["d"] and times["a"].year == 2014
    assert times["e"] is None and set(gold) == set(times)


def test_lines_without_an_id_or_a_text_are_counted_in_a_warning(agg, tmp_path):
    rows = [
        {"title": "Port strike halts ferries to Vantor Island", "text": "", "story": 1},
        {"id": "b", "title": "Ferries to Vantor Island halted by port strike", "story": 1},
        {"id": "c", "title": "Kestrel recalls 300,000 chargers", "text": "Kestrel said on Monday " * 10, "story": 2},
    ]
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    result = agg("eval-dedup", path)
    assert result.exit_code == 0, result.output
    assert "1 of 3 lines have no 'id': numbered by their line (first: line 1)" in result.stderr
    assert "2 of 3 lines have no 'text': grouped on their titles alone (first: line 1)" in result.stderr
    as_json = json.loads(agg("eval-dedup", "--json", path).stdout)
    assert as_json["documents"] == 3 and len(as_json["warnings"]) == 2
    clean = agg("eval-dedup", FIXTURES / "stories.jsonl")
    assert "warning" not in clean.stderr


def test_undated_reports_are_placed_as_fetched_with_their_neighbours():
    from aggregator.evaluate import as_fetched

    t0 = datetime(2021, 5, 3, 12, tzinfo=UTC)
    reports = [Report("u0", "a"), Report("d1", "b", published=t0), Report("u1", "c"),
               Report("d2", "d", published=t0 + timedelta(days=9)), Report("u2", "e")]
    times = {r.id: r.published for r in as_fetched(reports)}
    # Never after every dated report, nor left without a time to be placed last and kept forever.
    assert times == {"u0": t0, "d1": t0, "u1": t0, "d2": t0 + timedelta(days=9), "u2": t0 + timedelta(days=9)}
    assert all(r.published is None for r in as_fetched([Report("x", "a"), Report("y", "b")]))


def test_an_undated_report_is_grouped_at_the_time_of_the_reports_fetched_with_it():
    """An undated rewrite next to its dated original joins it; the same rewrite among reports of ten days
    later is placed at their time, too far from the original to join it (never placed after everything)."""
    from aggregator.evaluate import evaluate_reports
    from tests.test_dedup import article

    t0 = datetime(2021, 5, 3, 12, tzinfo=UTC)
    body = ("Dock workers at the port of Vantor walked out on Monday over a pay offer, halting the island's "
            "ferries; the union said the strike by 1,200 members would last until Friday.")
    rewrite = Report("b", "Ferries halted as Vantor port strikes", body.replace("Monday", "Monday morning"))
    later = [Report(f"x{i}", f"Report {i} of the later days", article(i, 60), published=t0 + timedelta(days=10))
             for i in range(4)]
    original = Report("a", "Vantor dock workers strike over pay", body, published=t0)
    gold = {"a": 1, "b": 1, **{f"x{i}": 10 + i for i in range(4)}}

    next_to_it = evaluate_reports([original, rewrite, *later], gold)
    assert next_to_it.pairwise_recall == 1.0 and next_to_it.pairwise_precision == 1.0
    among_later_ones = evaluate_reports([original, *later, rewrite], gold)
    assert among_later_ones.pairwise_recall == 0.0 and among_later_ones.predicted_clusters == 6


@pytest.mark.parametrize("content, fmt, message", [
    ('{"title": "no label"}\n', "jsonl", "line 1: each line must be a JSON object with a gold 'story' label"),
    ('{"id": 1, "story": "x"}\nnot json\n', "jsonl", "line 2: not JSON"),
    ('{"id": 1, "story": "x"}\n{"id": 1, "story": "y"}\n', "jsonl", "line 2: id '1' appears twice"),
    ("root:x:0:0:root:/root:/bin/bash\n", "uci", "no labelled documents found"),
])
def test_unusable_files_get_a_clear_error(agg, tmp_path, content, fmt, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    result = agg("eval-dedup", "--format", fmt, path)
    assert result.exit_code == 1 and message in result.output
