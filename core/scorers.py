"""What each scorer measures and how pages name it: the scorer id's family, its name, the word for a flagged text."""

from __future__ import annotations

from dataclasses import dataclass


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
        "pii-patterns",
        "personal data (pattern recognizers with checksums, no NER)",
        "",
        "Findings of e-mail addresses, phone numbers (libphonenumber), card numbers (Luhn), IBANs (mod 97), IP "
        "addresses and national ids (python-stdnum). Names of people are not detected (no NER model).",
    ),
    ScorerKind(
        "refusal-rules",
        "refusal (phrase rules)",
        "",
        '1 when the opening of the response declines to answer ("I can\'t help with that", "I must decline").',
    ),
    ScorerKind(
        "injection-similarity",
        "prompt injection / jailbreak similarity (our attack corpus and rules)",
        "",
        "Highest TF-IDF similarity of the prompt to a corpus of known attack prompts, or 1 when a classic "
        "attack phrase appears; 0.5 or more counts as an attempt.",
    ),
    ScorerKind(
        "vader",
        "sentiment (VADER)",
        "",
        "VADER's compound sentiment of the prompt, sentence by sentence: -1 most negative, +1 most positive.",
    ),
    ScorerKind(
        "py3langid",
        "language (py3langid)",
        "",
        "py3langid's language of prompt and response; the metric is 1 when the response is in the prompt's language.",
    ),
    ScorerKind(
        "lexical-support",
        "lexical RAG support (not an entailment judge)",
        "",
        "Share of the response's content words and numbers found in the retrieved context: lexical overlap, "
        "not a check that the context entails the answer.",
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
