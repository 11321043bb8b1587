"""The domain core without an engine: catalog, statistics (statsmodels' tests against independent computations),
the overlap window and the Overview's plain-language notes."""

from __future__ import annotations

import ast
import math
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats import multitest

from core import comparison as page_stats
from core import stats
from core.catalog import GRAINS, METRICS, NONPOSITIVE_BIN, grain_of, metric_info
from core.versions import version_label, version_sort_key


def test_core_imports_neither_the_pages_nor_the_engine() -> None:
    """The arrows point one way: views -> ui -> core <- data_access."""
    for path in (Path(__file__).resolve().parents[1] / "core").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        outside = {"ui", "views", "data_access", "streamlit", "ibis", "sqlglot", "duckdb"}
        banned = [name for name in imported if name.split(".")[0] in outside]
        assert not banned, f"{path.name} imports {banned}"


# --- Catalog ------------------------------------------------------------------------------------------------


def test_unknown_grain_or_metric_gets_a_clear_error() -> None:
    assert [(grain_of(g).unit, grain_of(g).step) for g in GRAINS] == [
        ("m", 1), ("m", 15), ("h", 1), ("h", 3), ("h", 6), ("D", 1), ("W", 1), ("M", 1)
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unknown granularity 'fortnight'; choose one of minute, 15 minutes, hour"):
        grain_of("fortnight")
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        metric_info("bleu")


def test_bin_edges_invert_the_binning() -> None:
    linear, log = METRICS["response_toxicity"].binning, METRICS["latency_ms"].binning
    assert linear.lower_edge(np.array([0, 500, 999])) == pytest.approx([0.0, 0.5, 0.999])
    values = np.array([1.0, 37.5, 1234.0])
    bins = np.floor(np.log(values) * log.scale)
    edges = log.lower_edge(bins)
    assert np.all(edges <= values) and np.all(values < edges * 1.01 + 1e-12)  # 1%-wide bins
    assert log.lower_edge(np.array([NONPOSITIVE_BIN]))[0] == 0.0


def test_versions_are_labelled_and_ordered_the_same_everywhere() -> None:
    assert sorted(["10", "7", "b", "6", "a"], key=version_sort_key) == ["6", "7", "10", "a", "b"]
    assert [version_label(v) for v in ("7", None, float("nan"))] == ["v7", "unknown version", "unknown version"]


# --- Statistics ---------------------------------------------------------------------------------------------


def test_psi_of_identical_samples_is_zero_and_grows_with_shift() -> None:
    rows = pd.DataFrame(
        {
            "bin": np.arange(50),
            "n": np.full(50, 20),
            "total": np.arange(50) * 20.0,
            "lo": np.arange(50.0),
            "hi": np.arange(50.0),
        }
    )
    same = stats.population_stability_index(*stats.aligned(rows, rows))
    assert same.value == 0.0
    moved = stats.population_stability_index(
        *stats.aligned(rows, rows.assign(bin=rows["bin"] + 10, lo=rows["lo"] + 10, hi=rows["hi"] + 10))
    )
    assert moved.value > stats.PSI_MAJOR


def test_two_proportions_is_the_chi_square_test_without_correction() -> None:
    test = stats.two_proportions(230, 10_000, 190, 9_000)
    chi2, p_value, _, _ = scipy_stats.chi2_contingency([[230, 9_770], [190, 8_810]], correction=False)
    assert test.p_value == pytest.approx(p_value, rel=1e-9)
    assert test.z**2 == pytest.approx(chi2, rel=1e-9)
    assert test.ci_low < test.difference < test.ci_high
    se = math.sqrt(0.023 * 0.977 / 10_000 + (190 / 9_000) * (1 - 190 / 9_000) / 9_000)
    assert test.ci_high - test.ci_low == pytest.approx(2 * 1.959963984540054 * se, rel=1e-9)


def test_holm_adjustment_matches_hand_computation() -> None:
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = stats.holm([0.2, float("nan"), 0.01])
    assert adjusted[0] == pytest.approx(0.2) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


def test_empty_or_malformed_samples_are_refused() -> None:
    empty = stats.Binned(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0))
    one = stats.Binned(np.ones(1, np.int64), np.ones(1), np.ones(1), np.ones(1))
    for test in (stats.mann_whitney, stats.kolmogorov_smirnov, stats.wasserstein, stats.population_stability_index):
        with pytest.raises(ValueError):
            test(empty, one)
    with pytest.raises(ValueError, match="requests in both samples"):
        stats.two_proportions(0, 0, 1, 2)
    twice = pd.DataFrame({"bin": [1, 1], "n": [1, 2], "total": [1.0, 2.0], "lo": [1.0, 1.0], "hi": [1.0, 1.0]})
    with pytest.raises(ValueError, match="twice"):
        stats.binned(twice)


def independent_two_proportions(k1: int, n1: int, k2: int, n2: int) -> tuple[float, ...]:
    """The pooled z-test, Wald interval and Cohen's h written out from their textbook formulas."""
    p1, p2 = k1 / n1, k2 / n2
    pooled = (k1 + k2) / (n1 + n2)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (p2 - p1) / se_pooled if se_pooled else 0.0
    p_value = math.erfc(abs(z) / math.sqrt(2)) if se_pooled else 1.0
    half = 1.959963984540054 * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    h = 2 * math.asin(math.sqrt(p2)) - 2 * math.asin(math.sqrt(p1))
    return z, p_value, p2 - p1 - half, p2 - p1 + half, h


@pytest.mark.parametrize(
    "counts",
    [(230, 10_000, 190, 9_000), (0, 10, 1, 10), (5, 100, 9, 100), (0, 5, 5, 5), (400, 50_000, 420, 48_000),
     (3, 1_000, 30, 1_000), (1, 1, 0, 1), (0, 10, 0, 10), (10, 10, 10, 10)],
)  # fmt: skip
def test_two_proportions_equal_the_textbook_formulas(counts: tuple[int, int, int, int]) -> None:
    test = stats.two_proportions(*counts)
    expected = independent_two_proportions(*counts)
    got = (test.z, test.p_value, test.ci_low, test.ci_high, test.cohens_h)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_holm_equals_statsmodels_on_random_families() -> None:
    # Few families: statsmodels runs a full garbage collection per call, slow in a large test process.
    rng = np.random.default_rng(5)
    for _ in range(5):
        values = rng.random(rng.integers(1, 15)) ** 3
        values[rng.random(len(values)) < 0.2] = values[0]  # ties
        expected = multitest.multipletests(values, method="holm")[1]
        np.testing.assert_allclose(stats.holm(values.tolist()), expected, rtol=0, atol=1e-15)


def test_holm_equals_the_step_down_rule_on_random_families() -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        values = rng.choice([np.nan, 0.0, 1.0, 1e-5, 0.03], size=rng.integers(0, 9)).astype(float)
        values[rng.random(len(values)) < 0.5] = rng.random()  # some ties, some spread
        tested = [i for i in np.argsort(values, kind="stable") if not np.isnan(values[i])]
        expected, running = [math.nan] * len(values), 0.0
        for rank, i in enumerate(tested):
            running = max(running, min(1.0, (len(tested) - rank) * values[i]))
            expected[i] = running
        assert stats.holm(values.tolist()) == pytest.approx(expected, nan_ok=True, abs=1e-15)


# --- The overlap window -------------------------------------------------------------------------------------


def test_overlap_window_is_the_first_and_last_day_both_served() -> None:
    days = pd.to_datetime(["2026-04-10", "2026-04-11", "2026-04-12", "2026-04-13", "2026-04-11", "2026-04-13"])
    traffic = pd.DataFrame(
        {"bucket": days, "model_version": ["6", "6", "6", "6", "7", "7"], "requests": [5, 4, 0, 3, 2, 8]}
    )
    assert page_stats.overlap_window(traffic, "6", "7") == (date(2026, 4, 11), date(2026, 4, 13))
    assert page_stats.overlap_window(traffic[traffic["bucket"] < "2026-04-13"], "6", "7") == (
        date(2026, 4, 11),
        date(2026, 4, 11),
    )
    assert page_stats.overlap_window(traffic, "6", "8") is None


def histogram_rows(group: str, metric: str, scorer: str | None, values: list[float], scale: float) -> pd.DataFrame:
    """Fine-histogram rows of one sample, one bin per distinct value (linear bins of width 1 / scale)."""
    series = pd.Series(values, dtype=float)
    bins = np.floor(series * scale).astype("int64")
    grouped = series.groupby(bins).agg(["size", "sum", "min", "max"]).reset_index(names="bin")
    return pd.DataFrame(
        {"group": group, "metric": metric, "scorer": scorer, "bin": grouped["bin"], "n": grouped["size"],
         "total": grouped["sum"], "lo": grouped["min"], "hi": grouped["max"]}
    )  # fmt: skip


def test_compare_pair_tests_two_versions_and_shows_one_alone() -> None:
    totals = pd.DataFrame(
        {"model_version": ["6", "7"], "requests": [100, 120], "errors": [2, 9], "total_tokens": [1e3, 1.3e3]}
    )
    toxicity = {"6": [0.1] * 90 + [0.7] * 10, "7": [0.1] * 100 + [0.9] * 20}
    rows = pd.concat(
        [histogram_rows(v, "response_toxicity", "scorer-a", toxicity[v], 1000) for v in ("6", "7")]
        + [histogram_rows("6", "response_fk_grade", "scorer-b", [8.0, 9.0], 20)]  # v7 has no readability scores
        + [histogram_rows(v, "latency_ms", None, [100.0, 200.0, 300.0], 1) for v in ("6", "7")]
    )
    both = page_stats.compare_pair(totals, rows, "6", "7", threshold=0.5)
    assert list(both.table.index) == ["6", "7"]
    assert both.scorers["response_toxicity"] == "scorer-a" and both.scorers["response_fk_grade"] is None
    tests = both.tests.set_index("key")
    assert tests.loc["error_rate", "p_value"] == stats.two_proportions(2, 100, 9, 120).p_value
    assert tests.loc["toxicity_rate", "p_value"] == stats.two_proportions(10, 100, 20, 120).p_value
    assert math.isnan(tests.loc["fk", "p_value"]) and "no values on either side" not in tests.loc["fk", "note"]
    assert both.table.loc["7", "toxicity_rate"] == pytest.approx(20 / 120)
    alone = page_stats.compare_pair(totals, rows, "7", "7", threshold=0.5)
    assert alone.tests is None and list(alone.table.index) == ["7"]


# --- What the Overview writes under its cards ---------------------------------------------------------------


def test_significance_note_is_short_and_the_tooltip_says_it_in_full() -> None:
    assert page_stats.significance_note(0.4137, "negligible") == (
        "n.s., p=0.41",
        "Not significant (p = 0.414, Holm-adjusted): no clear difference.",
    )
    assert page_stats.significance_note(2e-9, "small") == (
        "small, p<0.001",
        "Significant (p < 0.001, Holm-adjusted), small effect.",
    )
    assert page_stats.significance_note(0.012, "large")[0] == "large, p=0.012"
    assert page_stats.significance_note(1e-5, "negligible") == (
        "trivial, p<0.001",
        "Significant (p < 0.001, Holm-adjusted), negligible effect.",
    )
    assert page_stats.significance_note(float("nan"), "")[0] == "not tested"
    assert all(len(page_stats.significance_note(p, "negligible")[0]) <= 16 for p in (1.0, 0.9, 0.04, 1e-12))


def test_perplexity_card_label_names_the_model_kind() -> None:
    assert page_stats.perplexity_card_label("wordfreq-unigram-3.1.1") == "Median perplexity (unigram)"
    assert page_stats.perplexity_card_label("gpt2-lm") == "Median perplexity (language model)"
    assert page_stats.perplexity_card_label(None) == "Median perplexity"
