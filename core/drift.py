"""Has each metric's distribution moved between two sides (versions or date windows)? Lakehouse-Monitoring-style
drift statistics from fine histograms: KS, Wasserstein and PSI, with a plain-language reading."""

from __future__ import annotations

import pandas as pd

from core import stats
from core.catalog import METRICS
from core.comparison import NO_SCORER, Histograms, no_scorer_note

# --- Drift --------------------------------------------------------------------------------------------------


# What the Drift statistics table shows at first (it fits 1440 px), and what its details table adds.
DRIFT_COLUMNS = (
    "label", "unit", "baseline_median", "comparison_median", "ks_statistic", "ks_p_value", "wasserstein", "psi",
    "psi_reading",
)  # fmt: skip
DRIFT_DETAIL_COLUMNS = ("label", "scorer", "n_baseline", "n_comparison")


def drift_table(hist: Histograms, baseline: object, comparison: object) -> pd.DataFrame:
    """Lakehouse-Monitoring-style drift statistics for every metric, with a plain-language reading."""
    rows = []
    for metric, info in METRICS.items():
        scorer = NO_SCORER if info.scorer_column is None else hist.shared_scorer(metric, [baseline, comparison])
        row: dict[str, object] = {"metric": metric, "label": info.label, "unit": info.unit, "scorer": scorer or ""}
        if scorer is None:
            rows.append(row | {"reading": f"{info.label}: {no_scorer_note(hist, metric, [baseline, comparison])}."})
            continue
        rows_b, rows_c = hist.sample(baseline, metric, scorer), hist.sample(comparison, metric, scorer)
        if rows_b.empty or rows_c.empty:
            rows.append(row | {"reading": f"{info.label}: no values on one side, nothing to compare."})
            continue
        rows.append(row | drift_row(rows_b, rows_c, info.label, info.unit))
    return pd.DataFrame(rows)


def drift_row(rows_b: pd.DataFrame, rows_c: pd.DataFrame, label: str, unit: str) -> dict[str, object]:
    first, second = stats.aligned(rows_b, rows_c)
    ks = stats.kolmogorov_smirnov(first, second)
    distance = stats.wasserstein(first, second)
    psi = stats.population_stability_index(first, second)
    return {
        "n_baseline": first.n,
        "n_comparison": second.n,
        "baseline_median": first.quantile(0.5),
        "comparison_median": second.quantile(0.5),
        "ks_statistic": ks.statistic,
        "ks_p_value": ks.p_value,
        "wasserstein": distance.distance,
        "psi": psi.value,
        "psi_reading": stats.psi_label(psi.value),
        "reading": stats.drift_reading(label, unit, ks, distance, psi, first.n, second.n),
    }


def binning_bounds(rows_b: pd.DataFrame, rows_c: pd.DataFrame) -> tuple[float, float]:
    """How far the binned KS D and Wasserstein distance can be from their raw-value values (share, metric unit)."""
    first, second = stats.aligned(rows_b, rows_c)
    return stats.kolmogorov_smirnov(first, second).max_d_error, stats.wasserstein(first, second).max_error
