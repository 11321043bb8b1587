"""Monitors: seconds per evaluation of 50 rules at 10M requests, and the canary's error rates.

    python -m bench.bench_monitors [--rows 10000000] [--reps 5] [--db PATH] [--seeds 100]
                                   [--skip-speed | --skip-canary-rates] [--skip-baseline]

1. Speed. 50 rules (45 threshold rules over 1 h, 24 h and 7 d windows, with and without version filters, and 5
   canary rules) evaluated the way `python -m jobs.monitors` does (the rollups' freshness check, then the
   rules), on the analytics rollups of a 10M-request DuckDB file (built, or reused read-only with --db;
   `bench.bench_pages` builds the same file). Baseline in the same run: the same evaluation reading the
   requests table itself (`from_rollups=False`, identical numbers). Median wall and CPU seconds of --reps runs
   each, after one warm-up each.
2. Canary error rates, on aggregates (not by rerunning the job): v6's requests of the 50,000-request demo are
   hashed into 64 slots and the engine histograms them per slot once. Each seed puts a random 32 slots in half
   A and the rest in half B, sums their histograms (they are additive) and runs the canary verdict, which is the
   Overview's comparison of all its measures with Holm's adjustment. A/A: how often a toxicity canary fires
   (and how often a canary on any of the measures would) when nothing differs. Power: the same splits with an injected
   regression in half B: `--regression` of B's responses moved from below the 0.5 toxicity threshold to 0.9.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from bench.machine import describe
from core import monitor_rules as mr
from data_access.config import TableName
from data_access.queries import Filters, run, versions
from data_access.sources import DuckDBSource
from jobs import monitors

TABLE = TableName("requests")
SLOTS = 64
TOXIC_BIN = 900  # response_toxicity bins are 0.001 wide: an injected 0.9 lands here
AT = datetime(2026, 4, 20, 12)  # v6 and v7 both serve: every rule has data


# --- Canary error rates ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryRates:
    seeds: int
    regression: float
    n_per_half: int  # scored responses per half (toxicity)
    baseline_rate: float  # v6's toxic share at 0.5
    false_alarms: int  # A/A seeds where the toxicity canary fired
    any_measure_false_alarms: int  # A/A seeds where a canary on any of the measures would have fired
    detections: int  # seeds with the injected regression where it fired

    def lines(self) -> list[str]:
        return [
            f"canary A/A (two random halves of v6, {self.n_per_half:,} scored responses each, toxic share "
            f"{self.baseline_rate:.2%}): toxicity canary fired in {self.false_alarms}/{self.seeds} seeds, a canary "
            f"on any of the {len(mr.CANARY_MEASURES)} measures in {self.any_measure_false_alarms}/{self.seeds}",
            f"canary power: +{self.regression:.1%} of half B's responses made toxic: fired in "
            f"{self.detections}/{self.seeds} seeds",
        ]


def slot_aggregates(requests: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """v6's requests hashed into slots, and the engine's totals and fine histograms per slot."""
    v6 = requests[requests["model_version"] == "6"].copy()
    slot = pd.util.hash_pandas_object(v6["request_id"], index=False).to_numpy() % SLOTS
    v6["model_version"] = [f"s{s}" for s in slot]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "slots.duckdb"
        with duckdb.connect(str(path)) as con:
            con.register("incoming", v6)
            con.execute("CREATE TABLE requests AS SELECT * FROM incoming")
        source = DuckDBSource(path)
        totals = run(source, versions.version_totals(TABLE, Filters(), from_rollups=False)).table.to_pandas()
        hist = run(source, versions.histograms_by_version(TABLE, Filters(), from_rollups=False)).table.to_pandas()
    return totals, hist


def split(totals: pd.DataFrame, hist: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random halves "a" and "b" of the slots, their totals and histograms summed."""
    in_a = set(rng.choice(SLOTS, SLOTS // 2, replace=False).tolist())

    def half(version: str) -> str:
        return "a" if int(version[1:]) in in_a else "b"

    t = totals.assign(model_version=totals["model_version"].map(half))
    t = t.groupby("model_version", as_index=False)[["requests", "errors", "parse_errors", "total_tokens"]].sum()
    h = hist.assign(group=hist["group"].map(half), scorer=hist["scorer"].fillna(""))
    h = h.groupby(["group", "metric", "scorer", "bin"], as_index=False).agg(
        n=("n", "sum"), total=("total", "sum"), lo=("lo", "min"), hi=("hi", "max")
    )
    return t, h


def inject(hist: pd.DataFrame, share: float, rng: np.random.Generator) -> pd.DataFrame:
    """Move `share` of half B's toxicity values from below 0.5 to 0.9 (as if those responses turned toxic)."""
    rows = hist[(hist["group"] == "b") & (hist["metric"] == "response_toxicity")]
    below = rows[rows["bin"] < 500]
    moved = round(share * int(rows["n"].sum()))
    taken = rng.multivariate_hypergeometric(below["n"].to_numpy(np.int64), moved)
    out = hist.copy()
    out.loc[below.index, "total"] -= taken * (below["total"] / below["n"]).to_numpy()
    out.loc[below.index, "n"] -= taken
    target = rows.index[rows["bin"] == TOXIC_BIN]
    if len(target):
        out.loc[target, ["n", "total"]] += [moved, 0.9 * moved]
        out.loc[target, "lo"] = out.loc[target, "lo"].clip(upper=0.9)
        out.loc[target, "hi"] = out.loc[target, "hi"].clip(lower=0.9)
    else:
        scorer = rows["scorer"].iloc[0]
        extra = {"group": "b", "metric": "response_toxicity", "scorer": scorer, "bin": TOXIC_BIN, "n": moved,
                 "total": 0.9 * moved, "lo": 0.9, "hi": 0.9}  # fmt: skip
        out = pd.concat([out, pd.DataFrame([extra])], ignore_index=True)
    return out[out["n"] > 0]


def canary_rule(measure: str) -> mr.Rule:
    rule = {"name": measure, "kind": "canary", "measure": measure, "min_effect": 0.1, "window": "30d",
            "min_samples": 100}  # fmt: skip
    return mr.parse_rule(rule, measure, {})


def canary_rates(
    requests: pd.DataFrame,
    seeds: int = 100,
    regression: float = 0.03,
    aggregates: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> CanaryRates:
    totals, hist = aggregates or slot_aggregates(requests)
    rules = [canary_rule(key) for key in mr.CANARY_MEASURES]
    toxicity = next(r for r in rules if r.measure == "toxicity_rate")
    days = (date(2026, 4, 1), date(2026, 4, 30))
    false_alarms = any_alarm = detections = 0
    n_half = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        t, h = split(totals, hist, rng)
        aa = mr.CanaryInputs("a", "b", t, h, days)
        table = mr.canary_table(aa, 0.5)  # one comparison of the pair; each measure's rule reads its row
        fired = [mr.canary_verdict(rule, aa, table).outcome == mr.FIRING for rule in rules]
        false_alarms += fired[rules.index(toxicity)]
        any_alarm += any(fired)
        regressed = mr.CanaryInputs("a", "b", t, inject(h, regression, rng), days)
        detections += mr.canary_verdict(toxicity, regressed).outcome == mr.FIRING
        n_half += int(h.loc[(h["group"] == "b") & (h["metric"] == "response_toxicity"), "n"].sum())
    scored = requests.loc[requests["model_version"] == "6", "response_toxicity"].dropna()
    return CanaryRates(
        seeds, regression, n_half // max(seeds, 1), float((scored >= 0.5).mean()), false_alarms, any_alarm, detections
    )


# --- 50 rules at 10M requests -----------------------------------------------------------------------------------


def fifty_rules() -> mr.RuleFile:
    figures = [
        {"metric": "toxic_share", "threshold": 0.5, "above": 0.02},
        {"metric": "toxic_share", "score": "prompt_toxicity", "threshold": 0.8, "above": 0.05},
        {"metric": "latency_p95", "above": 8000},
        {"metric": "percentile", "score": "response_perplexity", "quantile": 0.99, "above": 5000},
        {"metric": "mean", "score": "response_fk_grade", "above": 14},
        {"metric": "mean", "score": "completion_tokens", "above": 400},
        {"metric": "error_rate", "above": 0.05},
        {"metric": "unparsed_share", "above": 0.01},
        {"metric": "cost_per_1k", "above": 1.0},
    ]
    scopes = [
        {"window": "1h"}, {"window": "24h"}, {"window": "7d"}, {"window": "24h", "versions": ["7"]},
        {"window": "7d", "versions": ["6"]},
    ]  # fmt: skip
    rules = []
    for i, (figure, scope) in enumerate((f, s) for f in figures for s in scopes):
        rules.append({"name": f"rule-{i:02d}", "min_samples": 10, **figure, **scope})
    for measure in ("toxicity_rate", "latency", "fk", "error_rate", "perplexity"):
        rules.append({"name": f"canary-{measure}", "kind": "canary", "measure": measure, "window": "30d"})
    prices = {v: {"prompt_per_1k": 0.0005, "completion_per_1k": 0.0015} for v in ("6", "7")}
    rule_file = mr.parse_rules({"rule": rules, "prices": prices})
    assert len(rule_file.rules) == 50 and not rule_file.problems, rule_file.problems
    return rule_file


def one_evaluation(source: DuckDBSource, rule_file: mr.RuleFile, from_rollups: bool) -> list[monitors.Evaluation]:
    """What `python -m jobs.monitors` does before recording: check the rollups are current, then evaluate
    (the baseline is told to read the requests table, as the job does when the rollups are behind)."""
    if from_rollups and not monitors.rollups_usable(source, TABLE):
        raise SystemExit(f"the rollups of {source.path} are missing or behind: refresh them first")
    return monitors.evaluate(rule_file, source, TABLE, AT, from_rollups)


def seconds_per_evaluation(
    source: DuckDBSource, rule_file: mr.RuleFile, from_rollups: bool, reps: int
) -> tuple[float, float]:
    """Median wall and CPU seconds (all threads of this process) per evaluation, after one warm-up."""
    one_evaluation(source, rule_file, from_rollups)
    wall, cpu = [], []
    for _ in range(reps):
        started, started_cpu = time.perf_counter(), time.process_time()
        one_evaluation(source, rule_file, from_rollups)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return statistics.median(wall), statistics.median(cpu)


def print_canary_rates(seeds: int, regressions: list[float]) -> None:
    from data_access.demo import generate_requests
    from jobs.scoring import parse_and_score
    from metrics.profiles import build_profile

    profile = build_profile("light")
    demo = generate_requests(50_000, 7, lambda payload: parse_and_score(payload, profile)).to_pandas()
    aggregates = slot_aggregates(demo)
    for number, regression in enumerate(regressions):
        lines = canary_rates(demo, seeds, regression, aggregates).lines()
        for line in lines if number == 0 else lines[1:]:
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--db", type=Path, default=None, help="reuse or create this DuckDB file")
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--regressions", type=float, nargs="+", default=[0.005, 0.01, 0.03])
    parser.add_argument("--skip-speed", action="store_true", help="only the canary rates")
    parser.add_argument("--skip-baseline", action="store_true", help="time the rollups only, not the requests table")
    parser.add_argument("--skip-canary-rates", action="store_true", help="only the speed")
    args = parser.parse_args()
    print(describe())
    if not args.skip_canary_rates:
        print_canary_rates(args.seeds, args.regressions)
    if args.skip_speed:
        return

    from bench.bench_pages import build

    path = args.db or Path(tempfile.gettempdir()) / f"bench-monitors-{args.rows}.duckdb"
    if not path.exists():
        build(path, args.rows)
    source = DuckDBSource(path)  # opens the file read-only for every query: a shared fixture is safe
    rule_file = fifty_rules()
    fast, fast_cpu = seconds_per_evaluation(source, rule_file, True, args.reps)
    print(describe())
    print(
        f"50 rules at {args.rows:,} requests, from the rollups: {fast:.2f} s per evaluation "
        f"({fast_cpu:.2f} s CPU; median of {args.reps})"
    )
    if args.skip_baseline:
        return
    slow, slow_cpu = seconds_per_evaluation(source, rule_file, False, max(1, args.reps // 2))
    print(describe())
    print(
        f"the same 50 rules from the requests table: {slow:.2f} s per evaluation ({slow_cpu:.2f} s CPU); "
        f"rollups are {slow / fast:.0f}x faster"
    )


if __name__ == "__main__":
    main()
