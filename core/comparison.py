"""The numbers the Overview and Drift pages show, assembled from engine aggregates. Pure pandas, no Streamlit.

Inputs are the frames of `data_access.queries.versions` queries: version totals (one row per version) and fine
histograms (one row per group x metric x scorer x bin). Numbers from different scorers are never pooled:
every metric number names its scorer, and two groups are compared only on a scorer they share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from core import stats
from core.catalog import METRICS
from core.scorers import scorer_help

NO_SCORER = ""  # operational metrics (latency, tokens) have no scorer
_EMPTY = pd.DataFrame({"bin": pd.Series(dtype="int64"), "n": pd.Series(dtype="int64"), "total": [], "lo": [], "hi": []})


class Histograms:
    """Fine histogram rows split once by (group, metric, scorer): group is a version or a window label."""

    def __init__(self, rows: pd.DataFrame) -> None:
        frame = rows.assign(scorer=rows["scorer"].fillna(NO_SCORER).astype(str))
        self.rows = frame
        self._samples = {
            (None if _missing(group) else group, metric, scorer): part.reset_index(drop=True)
            for (group, metric, scorer), part in frame.groupby(["group", "metric", "scorer"], dropna=False, sort=False)
        }
        counts = frame.groupby(["group", "metric", "scorer"], dropna=False, sort=False)["n"].sum()
        self.counts = {(None if _missing(g) else g, m, s): int(n) for (g, m, s), n in counts.items()}

    @property
    def empty(self) -> bool:
        return not self._samples

    def groups(self) -> list[object]:
        return list(dict.fromkeys(key[0] for key in self._samples))

    def sample(self, group: object, metric: str, scorer: str) -> pd.DataFrame:
        return self._samples.get((group, metric, scorer), _EMPTY)

    def scorers(self, group: object, metric: str) -> dict[str, int]:
        """Values per scorer for one group and metric."""
        return {s: n for (g, m, s), n in self.counts.items() if g == group and m == metric}

    def shared_scorer(self, metric: str, groups: Sequence[object]) -> str | None:
        """The scorer with the most values among those every group has for this metric; None if none is shared."""
        per_group = [self.scorers(group, metric) for group in groups]
        shared = set.intersection(*(set(counts) for counts in per_group)) if per_group else set()
        if not shared:
            return None
        return max(sorted(shared), key=lambda scorer: sum(counts[scorer] for counts in per_group))


def overlap_window(traffic_by_day: pd.DataFrame, first: object, second: object) -> tuple[date, date] | None:
    """First and last day on which both versions served requests (a canary period), from daily traffic rows
    (bucket, model_version, requests); None when they never served on the same day."""
    served = traffic_by_day[traffic_by_day["requests"] > 0]
    days = [set(pd.to_datetime(served.loc[served["model_version"] == v, "bucket"]).dt.date) for v in (first, second)]
    both = sorted(days[0] & days[1])
    return (both[0], both[-1]) if both else None


def shared_scorers(hist: Histograms, pair: Sequence[object]) -> dict[str, str | None]:
    """For each scored metric, the scorer the versions of `pair` share (see `Histograms.shared_scorer`)."""
    return {metric: hist.shared_scorer(metric, pair) for metric, info in METRICS.items() if info.scorer_column}


@dataclass(frozen=True)
class PairComparison:
    """What the Overview and the registry's side-by-side show for two versions (or one)."""

    scorers: dict[str, str | None]  # the scorer each scored metric is compared on
    table: pd.DataFrame  # `version_table` rows of the pair, indexed by model_version
    tests: pd.DataFrame | None  # `compare_versions`; None when only one version is chosen


def compare_pair(
    totals: pd.DataFrame, histogram_rows: pd.DataFrame, baseline: object, comparison: object, threshold: float
) -> PairComparison:
    """Each version's figures and, for two different versions, the tests of the newer against the older."""
    pair = [baseline, comparison] if baseline != comparison else [baseline]
    hist = Histograms(histogram_rows)
    scorers = shared_scorers(hist, pair)
    table = version_table(totals, hist, threshold, scorers)
    table = table[table["model_version"].isin(pair)].set_index("model_version")
    tests = compare_versions(totals, hist, baseline, comparison, threshold, scorers) if len(pair) == 2 else None
    return PairComparison(scorers, table, tests)


def overlap_note(first: str, second: str) -> str:
    """What a comparison says when the two versions never served on the same day."""
    return (
        f"{first} and {second} never served on the same day in this selection, so the comparison covers all "
        "selected dates and mixes model and time effects."
    )


def _missing(value: object) -> bool:
    return value is None or value != value  # None or NaN


def rate_at_or_above(rows: pd.DataFrame, metric: str, threshold: float) -> tuple[int, int]:
    """(values >= threshold, values) from fine bins: exact at the bins' 1/scale resolution."""
    binning = METRICS[metric].binning
    if binning.kind != "linear":
        raise ValueError(f"{metric} is log-binned; rates need a linear binning")
    first_bin = round(threshold * binning.scale)
    return int(rows.loc[rows["bin"] >= first_bin, "n"].sum()), int(rows["n"].sum())


# --- Overview: per-version figures -------------------------------------------------------------------


def version_table(
    totals: pd.DataFrame, hist: Histograms, threshold: float, scorers: dict[str, str | None]
) -> pd.DataFrame:
    """One row per known version: traffic, errors, latency percentiles, tokens and scored metrics.

    `scorers` names the scorer used for each scored metric (see `shared_scorer`); a metric whose scorer is None
    is left empty. Percentiles come from fine bins (latency within 1%). The readability and perplexity means and
    medians and the toxic share carry 95% intervals (`<column>_low`, `<column>_high`).
    """
    rows = []
    for _, total in totals.dropna(subset=["model_version"]).iterrows():
        version = total["model_version"]
        requests = int(total["requests"])
        row: dict[str, object] = {
            "model_version": version,
            "requests": requests,
            "errors": int(total["errors"]),
            "error_rate": int(total["errors"]) / requests if requests else math.nan,
            "total_tokens": float(total["total_tokens"]),
            "tokens_per_request": float(total["total_tokens"]) / requests if requests else math.nan,
        }
        latency = stats.binned(hist.sample(version, "latency_ms", NO_SCORER))
        row |= {"latency_n": latency.n, "latency_p50": latency.quantile(0.5), "latency_p95": latency.quantile(0.95)}
        completion = stats.binned(hist.sample(version, "completion_tokens", NO_SCORER))
        row |= {"completion_tokens_mean": completion.mean}
        for metric, key in (("response_fk_grade", "fk"), ("response_perplexity", "perplexity")):
            values = _scored(hist, version, metric, scorers)
            row |= {f"{key}_mean": values.mean, f"{key}_median": values.quantile(0.5), f"{key}_n": values.n}
            row |= dict(zip((f"{key}_mean_low", f"{key}_mean_high"), stats.mean_interval(values), strict=True))
            row |= dict(zip((f"{key}_median_low", f"{key}_median_high"), stats.median_interval(values), strict=True))
        toxic = _scored_rows(hist, version, "response_toxicity", scorers)
        above, scored = rate_at_or_above(toxic, "response_toxicity", threshold) if len(toxic) else (0, 0)
        row |= {"toxicity_above": above, "toxicity_n": scored, "toxicity_rate": above / scored if scored else math.nan}
        row |= dict(
            zip(("toxicity_rate_low", "toxicity_rate_high"), stats.proportion_interval(above, scored), strict=True)
        )
        rows.append(row)
    return pd.DataFrame(rows)


def card_help(key: str, row: pd.Series, scorers: dict[str, str | None]) -> str:
    """The tooltip of one version card: the sample size behind the number and how to read it."""

    def scored_by(metric: str) -> str:
        return f"scored by {scorers.get(metric) or 'no shared scorer'}"

    # The row mixes counts and rates, so pandas hands counts back as floats: shown as whole numbers.
    count = {c: int(row[c]) for c in ("requests", "errors", "latency_n", "fk_n", "toxicity_above", "toxicity_n")}
    count["perplexity_n"] = int(row["perplexity_n"])
    requests = count["requests"]

    def of_requests(n: int) -> str:  # a figure on fewer values than requests (a sample, errors, empty texts)
        return f" ({n:,} of {requests:,} requests scored)" if n < requests else ""

    texts = {
        "requests": f"{requests:,} requests, {count['errors']:,} of them errors.",
        "error_rate": f"{count['errors']:,} of {requests:,} requests had no status 200.",
        "latency_p50": f"Median Model Serving time over {count['latency_n']:,} requests (from 1%-wide bins).",
        "latency_p95": f"95% of {count['latency_n']:,} requests were served faster than this (from 1%-wide bins).",
        "tokens_per_request": f"{row['total_tokens']:,.0f} tokens in all; the test compares completion tokens "
        f"(mean {row['completion_tokens_mean']:,.1f} per request).",
        "fk_mean": f"Mean over {count['fk_n']:,} responses{of_requests(count['fk_n'])}, "
        f"{scored_by('response_fk_grade')}; median {row['fk_median']:.2f}.",
        "toxicity_rate": f"{count['toxicity_above']:,} of {count['toxicity_n']:,} scored responses at or above the "
        f"threshold{of_requests(count['toxicity_n'])}. {scorer_help(scorers.get('response_toxicity'))}",
        "perplexity_median": f"Median over {count['perplexity_n']:,} responses{of_requests(count['perplexity_n'])}, "
        f"{scored_by('response_perplexity')} (from 1%-wide bins); the mean is {row['perplexity_mean']:,.1f}, pulled "
        "up by a few extreme responses such as pasted logs, so the card shows the median. The test (Mann-Whitney "
        "U) compares ranks, not means.",
    }
    return texts.get(key, "")


def perplexity_card_label(scorer: str | None) -> str:
    """The perplexity card's title, naming the kind of language model behind the number."""
    kind = " (unigram)" if scorer and "unigram" in scorer else " (language model)" if scorer else ""
    return f"Median perplexity{kind}"


def significance_note(p_holm: float, effect_size: str) -> tuple[str, str]:
    """(short text under a card's delta, full sentence for its tooltip) for a Holm-adjusted p and effect size.

    The short text fits a card at 1440 px ("n.s., p=0.41", "small, p<0.001", at most 16 characters); the
    sentence says it in words.
    """
    if p_holm != p_holm:
        return "not tested", "Not tested: no values to compare on one side."
    short_p = "p<0.001" if p_holm < 0.001 else f"p={p_holm:.2g}"
    long_p = stats.p_text(p_holm)
    if p_holm >= stats.ALPHA:
        return f"n.s., {short_p}", f"Not significant ({long_p}, Holm-adjusted): no clear difference."
    short_size = "trivial" if effect_size == "negligible" else effect_size  # same meaning, fits the card
    return f"{short_size}, {short_p}", f"Significant ({long_p}, Holm-adjusted), {effect_size} effect."


def _scored_rows(hist: Histograms, version: object, metric: str, scorers: dict[str, str | None]) -> pd.DataFrame:
    scorer = scorers.get(metric)
    return hist.sample(version, metric, scorer) if scorer is not None else _EMPTY


def _scored(hist: Histograms, version: object, metric: str, scorers: dict[str, str | None]) -> stats.Binned:
    return stats.binned(_scored_rows(hist, version, metric, scorers))


# --- Overview: is the newer version different? ---------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    key: str
    label: str
    metric: str | None  # the histogram behind a distribution test, or the rate's metric
    kind: str  # "rate" (two-proportion test) or "distribution" (Mann-Whitney U)
    summary: str  # what the baseline/comparison columns show: "rate", "mean" or "median"
    lower_is_better: bool
    threshold: float | None = None  # a rate's fixed threshold; None: the page's toxicity threshold
    family: str = "quality"  # p-values are Holm-adjusted within a family: "quality" or "safety"


MEASURES = (
    Measure("error_rate", "Error rate", None, "rate", "rate", True),
    Measure("latency", "Latency (ms)", "latency_ms", "distribution", "median", True),
    Measure("completion_tokens", "Completion tokens", "completion_tokens", "distribution", "mean", True),
    Measure("fk", "Flesch-Kincaid grade", "response_fk_grade", "distribution", "mean", True),
    Measure("toxicity_rate", "Response toxicity rate", "response_toxicity", "rate", "rate", True),
    # Perplexity is heavy-tailed (a pasted log scores in the millions): the median describes it, the mean does not.
    Measure("perplexity", "Response perplexity", "response_perplexity", "distribution", "median", True),
    Measure("prompt_toxicity_rate", "Prompt toxicity rate (user mix)", "prompt_toxicity", "rate", "rate", True),
    Measure("refusal_rate", "Refusal rate", "response_refusal", "rate", "rate", True, 0.5, "safety"),
    Measure("response_pii_rate", "Responses with PII", "response_pii_count", "rate", "rate", True, 1.0, "safety"),
    Measure(
        "language_match_rate",
        "Answered in the prompt's language",
        "response_language_match",
        "rate",
        "rate",
        False,
        0.5,
        "safety",
    ),
    Measure(
        "rag_support", "RAG support (lexical)", "response_rag_support", "distribution", "mean", False, None, "safety"
    ),
    # What users send, not what the model does: a difference means the versions saw different traffic.
    Measure("injection_rate", "Injection attempts (user mix)", "prompt_injection", "rate", "rate", True, 0.5, "safety"),
    Measure("prompt_pii_rate", "Prompts with PII (user mix)", "prompt_pii_count", "rate", "rate", True, 1.0, "safety"),
    Measure(
        "sentiment", "Prompt sentiment (user mix)", "prompt_sentiment", "distribution", "mean", False, None, "safety"
    ),
)


# What the Overview's tests table shows at first (it fits 1440 px), and what its details table adds.
TEST_COLUMNS = ("measure", "baseline", "comparison", "difference", "p_holm", "effect", "effect_size", "verdict")
TEST_DETAIL_COLUMNS = ("measure", "scorer", "test", "statistic", "p_value", "n_baseline", "n_comparison", "note")


def compare_versions(
    totals: pd.DataFrame,
    hist: Histograms,
    baseline: str,
    comparison: str,
    threshold: float,
    scorers: dict[str, str | None],
) -> pd.DataFrame:
    """One row per measure: both values, the difference, the test, raw and Holm-adjusted p, effect size."""
    by_version = totals.dropna(subset=["model_version"]).set_index("model_version")
    rows = []
    for measure in MEASURES:
        rows.append(_compare(measure, by_version, hist, baseline, comparison, threshold, scorers))
    table = pd.DataFrame(rows)
    # Two families, each Holm-adjusted on its own: the original quality measures, and the safety and content
    # measures added later (refusal, PII, injection, sentiment, language, RAG support).
    newer = table["key"].isin([m.key for m in MEASURES if m.family == "safety"]).to_numpy()
    p_holm = np.empty(len(table))
    for members in (~newer, newer):
        p_holm[members] = stats.holm(table.loc[members, "p_value"].to_numpy(np.float64))
    table["p_holm"] = p_holm
    table["verdict"] = [
        stats.verdict(p, effect) for p, effect in zip(table["p_holm"], table["effect_size"], strict=True)
    ]
    return table


def _compare(
    measure: Measure,
    totals: pd.DataFrame,
    hist: Histograms,
    baseline: str,
    comparison: str,
    threshold: float,
    scorers: dict[str, str | None],
) -> dict[str, object]:
    if measure.metric is None or METRICS[measure.metric].scorer_column is None:
        scorer: str | None = NO_SCORER
    else:
        scorer = scorers.get(measure.metric)
    row: dict[str, object] = {"measure": measure.label, "key": measure.key, "scorer": scorer or ""}
    empty = {
        "baseline": math.nan,
        "comparison": math.nan,
        "difference": math.nan,
        "test": "",
        "statistic": math.nan,
        "p_value": math.nan,
        "n_baseline": 0,
        "n_comparison": 0,
        "effect": math.nan,
        "effect_size": "",
        "note": "",
    }
    row |= empty
    if scorer is None:
        return row | {"note": no_scorer_note(hist, measure.metric, [baseline, comparison])}
    if measure.key == "error_rate":
        counts = [(int(totals.loc[v, "errors"]), int(totals.loc[v, "requests"])) for v in (baseline, comparison)]
        return row | _rate_row(*counts[0], *counts[1])
    rows_b = hist.sample(baseline, measure.metric, scorer)
    rows_c = hist.sample(comparison, measure.metric, scorer)
    if rows_b.empty or rows_c.empty:
        return row | {"note": "no values in one of the versions"}
    if measure.kind == "rate":
        at = threshold if measure.threshold is None else measure.threshold
        return row | _rate_row(
            *rate_at_or_above(rows_b, measure.metric, at), *rate_at_or_above(rows_c, measure.metric, at)
        )
    return row | _distribution_row(measure, rows_b, rows_c)


def no_scorer_note(hist: Histograms, metric: str | None, groups: Sequence[object]) -> str:
    """Why a scored metric cannot be compared: nobody scored it, or each side used a different scorer."""
    if metric is None or not any(hist.scorers(group, metric) for group in groups):
        return "no values on either side (the scorer has not run on these requests)"
    return "not comparable — the two sides were scored by different scorers, which are never pooled"


def _rate_row(k1: int, n1: int, k2: int, n2: int) -> dict[str, object]:
    if n1 == 0 or n2 == 0:
        return {"note": "no requests in one of the versions"}
    test = stats.two_proportions(k1, n1, k2, n2)
    return {
        "baseline": test.baseline_rate,
        "comparison": test.comparison_rate,
        "difference": test.difference,
        "test": "two-proportion z-test",
        "statistic": test.z,
        "p_value": test.p_value,
        "n_baseline": n1,
        "n_comparison": n2,
        "effect": test.cohens_h,
        "effect_size": stats.cohens_h_label(test.cohens_h),
        "note": f"95% CI of the difference {test.ci_low:+.2%} to {test.ci_high:+.2%}; effect is Cohen's h",
    }


def _distribution_row(measure: Measure, rows_b: pd.DataFrame, rows_c: pd.DataFrame) -> dict[str, object]:
    first, second = stats.aligned(rows_b, rows_c)
    test = stats.mann_whitney(first, second)

    def summary(values: stats.Binned) -> float:
        return values.quantile(0.5) if measure.summary == "median" else values.mean

    base, comp = summary(stats.binned(rows_b)), summary(stats.binned(rows_c))
    return {
        "baseline": base,
        "comparison": comp,
        "difference": comp - base,
        "test": "Mann-Whitney U",
        "statistic": test.u,
        "p_value": test.p_value,
        "n_baseline": test.n_baseline,
        "n_comparison": test.n_comparison,
        "effect": test.cliffs_delta,
        "effect_size": stats.cliffs_label(test.cliffs_delta),
        "note": (
            f"P(newer > older) = {test.prob_greater:.3f}; effect is Cliff's delta; "
            f"U exact to ±{test.max_u_error / (test.n_baseline * test.n_comparison):.2%} of pairs (binning)"
        ),
    }
