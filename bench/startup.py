"""Start-up time of everyday agg commands, side by side with ``sqlite-utils --help``.

Usage: python bench/startup.py [--runs N] [--base CHECKOUT] [--importtime] [--quick]

Times, in fresh processes with stdout piped (as a script or cron reads it):
``agg --help``, ``agg list``, ``agg status`` and ``agg list --json`` on a
database of the bundled samples (served by ``aggregator.devserver`` on
127.0.0.1 and fetched once into a temporary folder), and ``sqlite-utils
--help``, the yardstick: a click command line over SQLite, started by the same
Python from the same venv. Every command is run N times (default 15), all
interleaved, so that the machine's noise falls on each alike; the table gives
the median wall time and its ratio to the yardstick's median, with PASS when
the ratio is at most 1.2 (issue 18).

``--base CHECKOUT`` times the same commands from another checkout of agg too
(``git worktree add /tmp/base REV``), in the same rounds, with its package put
first on PYTHONPATH: before and after side by side; ``--also LABEL=CHECKOUT``
adds more columns the same way (a variant being tried, say). The verdict
in the summary line is this checkout's. ``--importtime`` prints,
for each command, the modules ``python -X importtime`` shows taking longest
(cumulative, with what imported them), to see what a command loads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregator.devserver import SampleServer, write_config  # noqa: E402

TARGET_RATIO = 1.2
SAMPLES = ROOT / "data" / "samples"
COMMANDS = {"agg --help": ["--help"], "agg list": ["list"], "agg status": ["status"],
            "agg list --json": ["list", "--json"]}


def scripts_dir() -> Path:
    return Path(sys.executable).parent


def prepare_database(folder: Path) -> tuple[Path, Path]:
    """The samples fetched once into ``folder``: the config and the database the commands read."""
    config, db = folder / "feeds.yaml", folder / "agg.db"
    with SampleServer(SAMPLES) as server:
        write_config(server, SAMPLES / "feeds.yaml", config)
        subprocess.run([sys.executable, str(scripts_dir() / "agg"), "--config", str(config), "--db", str(db),
                        "--quiet", "fetch"], check=True, env=env_for(ROOT))
    return config, db


def env_for(checkout: Path) -> dict[str, str]:
    """The environment that makes ``agg`` run the package of ``checkout``."""
    return {**os.environ, "PYTHONPATH": str(checkout), "NO_COLOR": "1"}


def agg_command(args: list[str], config: Path, db: Path) -> list[str]:
    return [sys.executable, str(scripts_dir() / "agg"), "--config", str(config), "--db", str(db), *args]


def yardstick() -> list[str]:
    return [sys.executable, str(scripts_dir() / "sqlite-utils"), "--help"]


def wall_time(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
    return time.perf_counter() - started


def measure(runs: int, checkouts: dict[str, Path], config: Path, db: Path) -> dict[tuple[str, str], list[float]]:
    """Wall times of every (checkout, command) and of the yardstick, ``runs`` rounds, interleaved."""
    plan = [(("", "sqlite-utils --help"), yardstick(), dict(os.environ))]
    for label, checkout in checkouts.items():
        plan += [((label, name), agg_command(args, config, db), env_for(checkout)) for name, args in COMMANDS.items()]
    for key, command, env in plan:  # warm the file cache once: every timed run then starts alike
        wall_time(command, env)
    times: dict[tuple[str, str], list[float]] = {key: [] for key, _, _ in plan}
    for _ in range(runs):
        for key, command, env in plan:
            times[key].append(wall_time(command, env))
    return times


def print_table(times: dict[tuple[str, str], list[float]], checkouts: dict[str, Path], runs: int) -> bool:
    reference = statistics.median(times[("", "sqlite-utils --help")])
    print(f"Median wall time of {runs} runs each, interleaved; stdout piped; ratio to `sqlite-utils --help` "
          f"({reference * 1000:.0f} ms); target {TARGET_RATIO}x.\n")
    labels = list(checkouts)
    header = "| command | " + " | ".join(f"{label} ms | {label} ratio | {label} verdict" for label in labels) + " |"
    print(header)
    print("|---|" + "---|---|---|" * len(labels))
    all_pass = True
    for name in COMMANDS:
        cells = []
        for label in labels:
            median = statistics.median(times[(label, name)])
            ratio = median / reference
            verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
            if label == labels[-1]:
                all_pass &= verdict == "PASS"
            cells.append(f"{median * 1000:.0f} | {ratio:.2f}x | {verdict}")
        print(f"| `{name}` | " + " | ".join(cells) + " |")
    print("| `sqlite-utils --help` | " + " | ".join(f"{reference * 1000:.0f} | 1.00x | -" for _ in labels) + " |")
    return all_pass


def import_times(command: list[str], env: dict[str, str], top: int) -> list[tuple[int, str]]:
    """The ``top`` imports with the largest cumulative time (µs), indented as importtime nests them."""
    done = subprocess.run([command[0], "-X", "importtime", *command[1:]], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env=env, check=True)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|", 2)
        rows.append((int(cumulative.strip()), name.rstrip()))
    return sorted(rows, reverse=True)[:top]


def print_import_times(checkouts: dict[str, Path], config: Path, db: Path, top: int) -> None:
    for label, checkout in checkouts.items():
        for name, args in COMMANDS.items():
            print(f"\n`{name}` ({label}): slowest imports, cumulative µs")
            for micros, module in import_times(agg_command(args, config, db), env_for(checkout), top):
                print(f"  {micros:>8,}  {module}")
    print("\n`sqlite-utils --help`: slowest imports, cumulative µs")
    for micros, module in import_times(yardstick(), dict(os.environ), top):
        print(f"  {micros:>8,}  {module}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command (default 15)")
    parser.add_argument("--base", type=Path, metavar="CHECKOUT", help="another checkout to time side by side")
    parser.add_argument("--also", action="append", default=[], metavar="LABEL=CHECKOUT",
                        help="one more checkout to time side by side (repeatable)")
    parser.add_argument("--importtime", action="store_true", help="show each command's slowest imports")
    parser.add_argument("--top", type=int, default=12, help="imports shown per command (default 12)")
    parser.add_argument("--quick", action="store_true", help="5 runs each")
    args = parser.parse_args()
    runs = 5 if args.quick else args.runs
    checkouts = {"before": args.base.resolve()} if args.base else {}
    for also in args.also:
        label, _, checkout = also.partition("=")
        checkouts[label] = Path(checkout).resolve()
    checkouts["after" if len(checkouts) else "agg"] = ROOT
    with tempfile.TemporaryDirectory(prefix="agg-startup-") as folder:
        config, db = prepare_database(Path(folder))
        times = measure(runs, checkouts, config, db)
        all_pass = print_table(times, checkouts, runs)
        if args.importtime:
            print_import_times(checkouts, config, db, args.top)
    print(f"\nsummary: {'every command within' if all_pass else 'some command over'} {TARGET_RATIO}x "
          f"the start-up of sqlite-utils --help ({list(checkouts)[-1]})")
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
