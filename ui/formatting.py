"""What each metric is called, its unit, which way is better, and how numbers are shown."""

from __future__ import annotations

from dataclasses import dataclass

from data_access.schema import METRIC_SCORER_COLUMN


@dataclass(frozen=True)
class MetricInfo:
    column: str  # column in the requests table
    label: str
    unit: str
    lower_is_better: bool
    scorer_column: str | None  # the column naming the scorer; None for operational metrics
    help: str


METRICS: dict[str, MetricInfo] = {
    info.column: info
    for info in (
        MetricInfo(
            "response_fk_grade", "Flesch-Kincaid grade", "US school grade", True, "readability_scorer",
            "Years of schooling needed to read the response easily; lower reads more easily.",
        ),
        MetricInfo(
            "response_toxicity", "Response toxicity", "probability 0-1", True, "toxicity_scorer",
            "How likely the model's answer is offensive.",
        ),
        MetricInfo(
            "prompt_toxicity", "Prompt toxicity", "probability 0-1", True, "toxicity_scorer",
            "How likely the user's message is offensive; flags abusive users.",
        ),
        MetricInfo(
            "response_perplexity", "Response perplexity", "perplexity", True, "perplexity_scorer",
            "How surprising the response is to a language model; lower is more fluent and predictable.",
        ),
        MetricInfo("latency_ms", "Latency", "ms", True, None, "Model Serving execution time."),
        MetricInfo("completion_tokens", "Completion tokens", "tokens", True, None, "Tokens the model generated."),
        MetricInfo("prompt_tokens", "Prompt tokens", "tokens", True, None, "Tokens sent to the model."),
    )
}
assert all(METRICS[column].scorer_column == scorer for column, scorer in METRIC_SCORER_COLUMN.items())

SCORER_NOTES = {
    "wordfreq-unigram": "unigram perplexity under wordfreq's English word frequencies (not a language model)",
    "profanity-check": "alt-profanity-check's probability of offensive language",
    "detoxify": "Detoxify toxicity",
    "textstat": "textstat Flesch-Kincaid grade",
}


def scorer_caption(scorer_id: str | None) -> str:
    """How a chart names the scorer behind its numbers, e.g. 'scored by wordfreq-unigram-3.1.1 (unigram …)'."""
    if not scorer_id:
        return "scorer unknown"
    note = next((text for prefix, text in SCORER_NOTES.items() if scorer_id.startswith(prefix)), "")
    return f"scored by {scorer_id}" + (f" ({note})" if note else "")


def number(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"
