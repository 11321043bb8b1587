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
            "The toxicity scorer's probability for the model's answer (the light profile's scorer measures "
            "offensive language, Detoxify measures toxicity; each chart names its scorer).",
        ),
        MetricInfo(
            "prompt_toxicity", "Prompt toxicity", "probability 0-1", True, "toxicity_scorer",
            "The toxicity scorer's probability for the user's message; flags abusive users (each chart names its "
            "scorer).",
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

@dataclass(frozen=True)
class ScorerKind:
    """What a family of scorer ids measures, named for what it is (ids start with `prefix`)."""

    prefix: str
    name: str  # e.g. "offensive language (alt-profanity-check)"
    flagged: str  # adjective for a text at or above a threshold: "Offensive", "Toxic"
    description: str  # one or two sentences for help texts


_PROFANITY = (
    "offensive language (alt-profanity-check)",
    "Offensive",
    "alt-profanity-check's probability that the text is offensive language: a linear model over words, trained "
    "on profanity and insults. It is no toxicity model: polite hostility, threats and identity attacks without "
    "swear words score low.",
)
SCORER_KINDS = (
    ScorerKind("alt-profanity-check", *_PROFANITY),
    ScorerKind("profanity-check", *_PROFANITY),  # rows scored before ids named the package exactly
    ScorerKind(
        "detoxify",
        "toxicity (Detoxify)",
        "Toxic",
        "Detoxify's probability that the text is toxic: a transformer classifier trained on Jigsaw's toxic "
        "comment data (rude, disrespectful or hateful text, with or without swear words).",
    ),
    ScorerKind("textstat", "Flesch-Kincaid grade (textstat)", "", "textstat's Flesch-Kincaid grade level of the text."),
    ScorerKind(
        "wordfreq-unigram",
        "unigram perplexity under wordfreq's English word frequencies (not a language model)",
        "",
        "How rare the text's words are in English (wordfreq's frequencies), ignoring word order.",
    ),
    ScorerKind(
        "transformers",
        "causal language model perplexity (transformers)",
        "",
        "How surprising the text is to a causal language model, token by token.",
    ),
)


def scorer_kind(scorer_id: str | None) -> ScorerKind | None:
    """The kind of a scorer id (longest matching prefix), None when unknown."""
    if not scorer_id:
        return None
    matches = [kind for kind in SCORER_KINDS if scorer_id.startswith(kind.prefix)]
    return max(matches, key=lambda kind: len(kind.prefix)) if matches else None


def scorer_caption(scorer_id: str | None) -> str:
    """How a chart names the scorer behind its numbers, e.g. 'scored by alt-profanity-check-1.9.1 (offensive …)'."""
    if not scorer_id:
        return "scorer unknown"
    kind = scorer_kind(scorer_id)
    return f"scored by {scorer_id}" + (f" ({kind.name})" if kind else "")


def flagged_word(scorer_id: str | None) -> str:
    """What a text at or above the threshold is called under this scorer: 'Offensive', 'Toxic'."""
    kind = scorer_kind(scorer_id)
    return kind.flagged if kind and kind.flagged else "Flagged"


def scorer_help(scorer_id: str | None) -> str:
    """A help text describing the scorer in force (its id and what it measures)."""
    kind = scorer_kind(scorer_id)
    if not scorer_id:
        return "No scorer has scored this selection."
    return f"Scorer in force: {scorer_id}." + (f" {kind.description}" if kind else "")


def number(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"
