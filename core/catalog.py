"""What the app measures: each metric's name, unit, scorer column and histogram binning, and the time grains.

The one home of these facts: the queries (`data_access`) bin and group by them, the pages (`ui`, `views`) name
and draw them. Pure Python and numpy: no Streamlit, no SQL, no Ibis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NONPOSITIVE_BIN = -(2**31)  # log-binned metrics: every value <= 0 shares this lowest bin


@dataclass(frozen=True)
class Grain:
    """A time bucket: `step` Ibis truncation `unit`s (15 minutes is 15 x "m"), `minutes` long (a month: on average).

    A step divides the next unit up (15 minutes an hour, 3 and 6 hours a day), so buckets align there."""

    unit: str
    step: int
    minutes: float


# Sidebar granularity -> its bucket, finest first. The steps between minute and day exist so that every span from
# one day to two months has a granularity drawing 60-250 buckets (`default_grain`).
GRAINS: dict[str, Grain] = {
    "minute": Grain("m", 1, 1),
    "15 minutes": Grain("m", 15, 15),
    "hour": Grain("h", 1, 60),
    "3 hours": Grain("h", 3, 180),
    "6 hours": Grain("h", 6, 360),
    "day": Grain("D", 1, 1440),
    "week": Grain("W", 1, 7 * 1440),
    "month": Grain("M", 1, 30.436875 * 1440),
}
AUTO_GRAIN = "auto"  # the sidebar's default: follow the date span
BUCKETS_WANTED = (60, 250)  # a time chart reads at a glance with this many buckets


def grain_of(grain: str) -> Grain:
    """A granularity's bucket; a clear error for an unknown one."""
    if grain not in GRAINS:
        raise ValueError(f"unknown granularity {grain!r}; choose one of {', '.join(GRAINS)}")
    return GRAINS[grain]


def below_hour(grain: str) -> bool:
    """Finer than the hourly histograms: percentiles and threshold shares come per hour at such a grain."""
    return grain_of(grain).minutes < 60


def histogram_grain(grain: str) -> str:
    """The grain of numbers read from the hourly histograms: an hour at the grains below it."""
    return "hour" if below_hour(grain) else grain


def span_buckets(days: int, grain: str) -> float:
    """How many buckets of `grain` a span of whole days holds (nominal: months on average)."""
    return days * 1440 / grain_of(grain).minutes


def default_grain(days: int) -> str:
    """The granularity a span of `days` whole days is drawn at: the finest giving `BUCKETS_WANTED` buckets, or,
    when none does (very long spans), the one whose count is nearest that range (by ratio)."""
    low, high = BUCKETS_WANTED

    def miss(grain: str) -> float:
        count = span_buckets(max(days, 1), grain)
        return max(low / count, count / high, 1.0)

    return min(GRAINS, key=lambda grain: (miss(grain), GRAINS[grain].minutes))


@dataclass(frozen=True)
class Binning:
    """Fine, monotone bins: a larger value never lands in a lower bin, which the statistics rely on.

    "linear": bin = floor(x * scale); "log": bin = floor(ln(x) * scale) for x > 0, else `NONPOSITIVE_BIN`.
    """

    kind: str
    scale: float

    def lower_edge(self, index: np.ndarray) -> np.ndarray:
        """Nominal value where each bin starts (for display; the statistics use each bin's real min and max)."""
        index = np.asarray(index, dtype=np.float64)
        if self.kind == "linear":
            return index / self.scale
        return np.where(index == NONPOSITIVE_BIN, 0.0, np.exp(index / self.scale))


LOG_1_PERCENT = Binning("log", 1 / math.log(1.01))


@dataclass(frozen=True)
class MetricInfo:
    column: str  # column in the requests table
    label: str
    unit: str
    scorer_column: str | None  # the column naming the scorer; None for operational metrics
    binning: Binning  # how the histogram rollup bins its values


METRICS: dict[str, MetricInfo] = {
    info.column: info
    for info in (
        MetricInfo(
            "response_fk_grade", "Flesch-Kincaid grade", "US school grade", "readability_scorer",
            Binning("linear", 20.0),  # 0.05 grade
        ),
        MetricInfo(
            "response_toxicity", "Response toxicity", "probability 0-1", "toxicity_scorer",
            Binning("linear", 1000.0),  # 0.001 probability
        ),
        MetricInfo(
            "prompt_toxicity", "Prompt toxicity", "probability 0-1", "toxicity_scorer", Binning("linear", 1000.0)
        ),
        MetricInfo("response_perplexity", "Response perplexity", "perplexity", "perplexity_scorer", LOG_1_PERCENT),
        MetricInfo("latency_ms", "Latency", "ms", None, LOG_1_PERCENT),
        # Whole numbers below ~100 still get a bin each.
        MetricInfo("completion_tokens", "Completion tokens", "tokens", None, LOG_1_PERCENT),
        MetricInfo("prompt_tokens", "Prompt tokens", "tokens", None, LOG_1_PERCENT),
        # Whole findings: bin n holds n findings.
        MetricInfo("prompt_pii_count", "PII in prompts", "findings", "pii_scorer", Binning("linear", 1.0)),
        MetricInfo("response_pii_count", "PII in responses", "findings", "pii_scorer", Binning("linear", 1.0)),
        MetricInfo("response_refusal", "Refusals", "share 0-1", "refusal_scorer", Binning("linear", 1000.0)),
        MetricInfo(
            "prompt_injection", "Prompt injection similarity", "similarity 0-1", "injection_scorer",
            Binning("linear", 1000.0),
        ),
        MetricInfo(
            "prompt_sentiment", "Prompt sentiment", "VADER compound -1 to 1", "sentiment_scorer",
            Binning("linear", 1000.0),
        ),
        MetricInfo(
            "response_language_match", "Response in the prompt's language", "share 0-1", "language_scorer",
            Binning("linear", 1000.0),
        ),
        MetricInfo(
            "response_rag_support", "RAG support (lexical)", "share of content words 0-1", "rag_support_scorer",
            Binning("linear", 1000.0),
        ),
    )
}  # fmt: skip

# Scored metrics and the column naming the scorer that produced them. Numbers from different scorers are never
# pooled: every aggregate over a metric also groups or filters by its scorer.
METRIC_SCORER_COLUMN: dict[str, str] = {
    column: info.scorer_column for column, info in METRICS.items() if info.scorer_column is not None
}


def metric_info(metric: str) -> MetricInfo:
    """A metric's catalog entry; a clear error for an unknown one."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    return METRICS[metric]
