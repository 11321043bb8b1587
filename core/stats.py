"""Two-sample statistics from engine-side aggregates: binned histograms and counts, never per-request rows.

A histogram arrives as ordered bins: every value in bin i is below every value in bin i+1 (the engine bins by
a monotone function of the value), and each bin carries its count, sum, smallest and largest value. From that:

- Mann-Whitney U: exact for values that share no bin with a different value; otherwise values sharing a bin
  are treated as ties, so |U - U_exact| <= 0.5 * sum over bins of n1_b * n2_b (`MannWhitney.max_u_error`).
- Kolmogorov-Smirnov D: the ECDF gap at bin ends, so D <= D_exact <= D + the largest single-bin share
  (`KolmogorovSmirnov.max_d_error`); p-value by Smirnov's asymptotic distribution, as scipy's method="asymp".
- Wasserstein-1 distance: each value moved to its bin's mean moves it by at most its bin's spread, so the error
  is at most the count-weighted mean bin spread of each sample, summed (`Wasserstein.max_error`).
- Population stability index over equal-height baseline bins (merged from the fine bins) with a small floor
  for empty bins, the scheme Databricks Lakehouse Monitoring uses for numeric columns; we use 10 bins, the
  convention behind the 0.1 / 0.2 reading thresholds (Lakehouse Monitoring's finer bins read higher).
- Quantiles by interpolation inside a bin, off by at most that bin's spread.

Two-proportion z-tests cover rates; Holm's step-down adjusts a page's family of p-values (both statsmodels').
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from statsmodels.stats import proportion

PSI_BINS = 10  # equal-height bins on the baseline: the convention PSI's 0.1 / 0.2 reading thresholds come from
PSI_FLOOR = 1e-4  # share given to an empty bin so the logarithm stays finite
PSI_MODERATE, PSI_MAJOR = 0.1, 0.2  # Databricks: < 0.1 no significant change, < 0.2 moderate, else significant
ALPHA = 0.05


@dataclass(frozen=True)
class Binned:
    """One sample as ordered bins (bins with no values have count 0 and NaN bounds)."""

    counts: np.ndarray  # int64
    sums: np.ndarray
    lows: np.ndarray  # smallest value in the bin
    highs: np.ndarray  # largest value in the bin

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def mean(self) -> float:
        return float(self.sums.sum() / self.n) if self.n else math.nan

    @property
    def spreads(self) -> np.ndarray:
        return np.where(self.counts > 0, np.nan_to_num(self.highs - self.lows), 0.0)

    def quantile(self, q: float) -> float:
        """The q-quantile as numpy's default (linear) method defines it, interpolated inside bins."""
        if self.n == 0:
            return math.nan
        position = q * (self.n - 1)
        below = math.floor(position)
        low_value = self._order_statistic(below)
        if position == below:
            return low_value
        return low_value + (position - below) * (self._order_statistic(below + 1) - low_value)

    def _order_statistic(self, k: int) -> float:
        """Estimate of the k-th smallest value (0-based): spread evenly between its bin's bounds."""
        ends = np.cumsum(self.counts)
        b = int(np.searchsorted(ends, k, side="right"))
        count = int(self.counts[b])
        rank_in_bin = k - (int(ends[b]) - count)
        if count == 1:
            return float(self.sums[b])
        return float(self.lows[b] + (self.highs[b] - self.lows[b]) * rank_in_bin / (count - 1))


def binned(rows: pd.DataFrame) -> Binned:
    """One sample from histogram rows with columns bin, n, total, lo, hi (any order, one row per bin)."""
    if rows["bin"].duplicated().any():
        raise ValueError("a histogram lists a bin twice; aggregate it per bin first")
    ordered = rows.sort_values("bin")
    return Binned(
        ordered["n"].to_numpy(np.int64),
        ordered["total"].to_numpy(np.float64),
        ordered["lo"].to_numpy(np.float64),
        ordered["hi"].to_numpy(np.float64),
    )


def aligned(baseline: pd.DataFrame, comparison: pd.DataFrame) -> tuple[Binned, Binned]:
    """Two samples on the union of their bins, so bin i means the same value range in both."""
    bins = np.union1d(baseline["bin"].to_numpy(), comparison["bin"].to_numpy())

    def spread(rows: pd.DataFrame) -> Binned:
        if rows["bin"].duplicated().any():
            raise ValueError("a histogram lists a bin twice; aggregate it per bin first")
        slots = np.searchsorted(bins, rows["bin"].to_numpy())
        counts = np.zeros(len(bins), np.int64)
        sums = np.zeros(len(bins))
        lows, highs = np.full(len(bins), np.nan), np.full(len(bins), np.nan)
        counts[slots] = rows["n"].to_numpy(np.int64)
        sums[slots] = rows["total"].to_numpy(np.float64)
        lows[slots] = rows["lo"].to_numpy(np.float64)
        highs[slots] = rows["hi"].to_numpy(np.float64)
        return Binned(counts, sums, lows, highs)

    return spread(baseline), spread(comparison)


@dataclass(frozen=True)
class MannWhitney:
    u: float  # U of the comparison sample: pairs where it is larger, plus half the ties
    p_value: float
    n_baseline: int
    n_comparison: int
    max_u_error: float  # bound on |u - U from raw values| caused by binning

    @property
    def prob_greater(self) -> float:
        """P(comparison value > baseline value) + half P(equal): 0.5 means no shift."""
        return self.u / (self.n_baseline * self.n_comparison)

    @property
    def cliffs_delta(self) -> float:
        return 2 * self.prob_greater - 1


def mann_whitney(baseline: Binned, comparison: Binned) -> MannWhitney:
    """Two-sided Mann-Whitney U, normal approximation with tie and continuity correction (as scipy's)."""
    n1, n2 = baseline.n, comparison.n
    if n1 == 0 or n2 == 0:
        raise ValueError("Mann-Whitney U needs values in both samples.")
    c1 = baseline.counts.astype(np.float64)
    c2 = comparison.counts.astype(np.float64)
    below1 = np.cumsum(c1) - c1
    u = float(np.sum(c2 * (below1 + 0.5 * c1)))
    n = n1 + n2
    ties = c1 + c2
    tie_term = float(np.sum(ties**3 - ties))
    variance = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:  # every value tied: no evidence of a shift
        p_value = 1.0
    else:
        z = (max(u, n1 * n2 - u) - n1 * n2 / 2 - 0.5) / math.sqrt(variance)
        p_value = float(min(1.0, 2 * scipy_stats.norm.sf(z)))
    return MannWhitney(u, p_value, n1, n2, float(0.5 * np.sum(c1 * c2)))


@dataclass(frozen=True)
class KolmogorovSmirnov:
    statistic: float
    p_value: float
    max_d_error: float  # the raw-value D lies in [statistic, statistic + max_d_error]


def kolmogorov_smirnov(baseline: Binned, comparison: Binned) -> KolmogorovSmirnov:
    n1, n2 = baseline.n, comparison.n
    if n1 == 0 or n2 == 0:
        raise ValueError("The KS test needs values in both samples.")
    cdf1 = np.cumsum(baseline.counts) / n1
    cdf2 = np.cumsum(comparison.counts) / n2
    d = float(np.max(np.abs(cdf1 - cdf2)))
    # scipy's asymptotic two-sided p-value: Smirnov's distribution at the effective sample size.
    effective_n = np.round(max(n1, n2) * min(n1, n2) / (n1 + n2))
    p_value = float(np.clip(scipy_stats.kstwo.sf(d, effective_n), 0.0, 1.0))
    max_share = float(np.max(np.maximum(baseline.counts / n1, comparison.counts / n2)))
    return KolmogorovSmirnov(d, p_value, max_share)


@dataclass(frozen=True)
class Wasserstein:
    distance: float  # in the metric's unit
    max_error: float


def wasserstein(baseline: Binned, comparison: Binned) -> Wasserstein:
    """Earth mover's distance between the samples, each value placed at its bin's mean."""
    if baseline.n == 0 or comparison.n == 0:
        raise ValueError("The Wasserstein distance needs values in both samples.")
    keep1, keep2 = baseline.counts > 0, comparison.counts > 0
    distance = scipy_stats.wasserstein_distance(
        baseline.sums[keep1] / baseline.counts[keep1],
        comparison.sums[keep2] / comparison.counts[keep2],
        baseline.counts[keep1],
        comparison.counts[keep2],
    )
    error = float(
        np.sum(baseline.counts * baseline.spreads) / baseline.n
        + np.sum(comparison.counts * comparison.spreads) / comparison.n
    )
    return Wasserstein(float(distance), error)


@dataclass(frozen=True)
class StabilityIndex:
    value: float
    edges: np.ndarray  # value where each coarse bin starts (the first is the smallest value seen)
    baseline_shares: np.ndarray
    comparison_shares: np.ndarray


def population_stability_index(
    baseline: Binned, comparison: Binned, bins: int = PSI_BINS, floor: float = PSI_FLOOR
) -> StabilityIndex:
    """PSI over equal-height baseline bins merged from the fine bins: sum of (c - b) * ln(c / b)."""
    if baseline.n == 0 or comparison.n == 0:
        raise ValueError("The population stability index needs values in both samples.")
    before = (np.cumsum(baseline.counts) - baseline.counts) / baseline.n
    coarse = np.minimum(np.floor(before * bins + 1e-9), bins - 1).astype(np.int64)  # 1e-9: exact deciles
    used = np.unique(coarse)
    base_shares = np.array([baseline.counts[coarse == k].sum() for k in used]) / baseline.n
    comp_shares = np.array([comparison.counts[coarse == k].sum() for k in used]) / comparison.n
    b, c = np.maximum(base_shares, floor), np.maximum(comp_shares, floor)
    lows = np.fmin(baseline.lows, comparison.lows)  # fmin: a bin may be empty in one sample
    edges = np.array([np.nanmin(np.where(coarse == k, lows, np.nan)) for k in used])
    return StabilityIndex(float(np.sum((c - b) * np.log(c / b))), edges, base_shares, comp_shares)


@dataclass(frozen=True)
class Proportions:
    baseline_rate: float
    comparison_rate: float
    z: float
    p_value: float
    ci_low: float  # 95% interval for comparison_rate - baseline_rate
    ci_high: float
    cohens_h: float

    @property
    def difference(self) -> float:
        return self.comparison_rate - self.baseline_rate


def two_proportions(k1: int, n1: int, k2: int, n2: int) -> Proportions:
    """Pooled two-proportion z-test (the 2x2 chi-square test without continuity correction), statsmodels'."""
    if n1 == 0 or n2 == 0:
        raise ValueError("A proportion test needs requests in both samples.")
    p1, p2 = k1 / n1, k2 / n2
    if k1 + k2 in (0, n1 + n2):  # every request or none: the pooled variance is 0, no evidence of a difference
        z, p_value = 0.0, 1.0
    else:
        z, p_value = proportion.proportions_ztest([k2, k1], [n2, n1], value=0.0, prop_var=False)
    # Wald interval of p2 - p1 (unpooled variance) and Cohen's h = 2 asin(sqrt(p2)) - 2 asin(sqrt(p1)).
    ci_low, ci_high = proportion.confint_proportions_2indep(k2, n2, k1, n1, method="wald", compare="diff")
    h = proportion.proportion_effectsize(p2, p1)
    return Proportions(p1, p2, float(z), float(p_value), float(ci_low), float(ci_high), float(h))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment, NaN kept as NaN and left out of the family: controls the chance of any false
    'significant' among the tests that ran. The k-th smallest of m p-values becomes the running maximum of
    (m - j + 1) p_(j) over j <= k, capped at 1 (statsmodels' `multipletests(method="holm")` gives the same
    numbers, but runs a full garbage collection on every call: ~0.1 s each in a large process)."""
    values = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(len(values), np.nan)
    tested = np.flatnonzero(~np.isnan(values))
    if len(tested):
        order = tested[np.argsort(values[tested], kind="stable")]
        scaled = values[order] * np.arange(len(order), 0, -1)
        adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted.tolist()


# --- One version's figure with its 95% interval -------------------------------------------------------

Z95 = float(scipy_stats.norm.ppf(0.975))


def mean_interval(values: Binned) -> tuple[float, float]:
    """95% normal interval of the mean. The variance comes from the bins: the spread of the bin means plus, inside
    each bin, that of values spread evenly between its smallest and largest (spread^2 / 12)."""
    n = values.n
    if n < 2:
        return math.nan, math.nan
    filled = values.counts > 0
    counts = values.counts[filled].astype(np.float64)
    bin_means = values.sums[filled] / counts
    spreads = values.spreads[filled]
    squares = np.sum(counts * (bin_means - values.mean) ** 2) + np.sum(counts * spreads**2 / 12)
    half = Z95 * math.sqrt(squares / (n - 1) / n)
    return values.mean - half, values.mean + half


def median_interval(values: Binned) -> tuple[float, float]:
    """95% distribution-free interval of the median: the order statistics at ranks n/2 -+ 1.96 sqrt(n)/2
    (normal approximation to the binomial), read inside the bins as `Binned.quantile` does."""
    n = values.n
    if n < 2:
        return math.nan, math.nan
    half = Z95 * math.sqrt(n) / 2
    low = max(math.floor(n / 2 - half) - 1, 0)  # 0-based ranks
    high = min(math.ceil(n / 2 + half), n - 1)
    return values._order_statistic(low), values._order_statistic(high)


def proportion_interval(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a rate (statsmodels'); it stays inside [0, 1] for rare events."""
    if n == 0:
        return math.nan, math.nan
    low, high = proportion.proportion_confint(k, n, alpha=1 - 0.95, method="wilson")
    rate = k / n  # rounding leaves 1e-19 above a zero rate: keep the rate inside its interval
    return min(float(low), rate), max(float(high), rate)


# --- Plain-language readings -------------------------------------------------------------------------


def cliffs_label(delta: float) -> str:
    """Romano et al. (2006) thresholds for Cliff's delta."""
    size = abs(delta)
    return "negligible" if size < 0.147 else "small" if size < 0.33 else "medium" if size < 0.474 else "large"


def cohens_h_label(h: float) -> str:
    size = abs(h)
    return "negligible" if size < 0.2 else "small" if size < 0.5 else "medium" if size < 0.8 else "large"


def psi_label(value: float) -> str:
    return (
        "no significant change" if value < PSI_MODERATE else "moderate change" if value < PSI_MAJOR else "major change"
    )


def p_text(p_value: float) -> str:
    if p_value != p_value:
        return "–"
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def verdict(p_adjusted: float, effect: str) -> str:
    """One short phrase: is the difference real, and does it matter."""
    if p_adjusted != p_adjusted:
        return "not tested"
    if p_adjusted >= ALPHA:
        return "no clear difference"
    if effect == "negligible":
        return "real but negligible"
    return f"significant, {effect} effect"


def drift_reading(
    metric_label: str, unit: str, ks: KolmogorovSmirnov, distance: Wasserstein, psi: StabilityIndex, n1: int, n2: int
) -> str:
    """What the three drift statistics say together, in one or two sentences."""
    shift = f"values moved by {distance.distance:.3g} {unit} on average (Wasserstein)"
    if ks.p_value >= ALPHA:
        return (
            f"{metric_label}: no evidence of drift — the KS test finds no difference "
            f"({p_text(ks.p_value)}, {n1:,} vs {n2:,} values); {shift}; PSI {psi.value:.3f}."
        )
    reading = (
        f"{metric_label}: {psi_label(psi.value)} (PSI {psi.value:.3f}); the largest gap between the two "
        f"cumulative distributions is {ks.statistic:.1%} of values ({p_text(ks.p_value)}); {shift}."
    )
    if psi.value < PSI_MODERATE and min(n1, n2) > 10_000:
        reading += " With this many values even a tiny shift is statistically significant: judge by PSI and distance."
    return reading
