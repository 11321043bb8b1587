"""Sentiment of a prompt: VADER's compound score, from -1 (most negative) to +1 (most positive).

vaderSentiment ships its lexicon (7,500 scored words, emoticons and emoji) inside the package and its rules
handle negation, intensifiers, capitals and "but", which suits short chat messages. A text scoring at or
below NEGATIVE_AT counts as negative, the threshold VADER's authors suggest.

Longer texts are scored as VADER's authors advise for paragraphs: sentence by sentence, the compound scores
averaged. Only the first MAX_SENTENCES sentences of at most SENTENCE_CHARS characters are read (VADER's
negation check is quadratic in a sentence's words, and a pasted log is no sentiment); the id records both caps.
Sentences repeat in chat traffic, so each distinct one is scored once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from metrics.base import Scores, has_text, score_each
from metrics.identity import package_id

NEGATIVE_AT = -0.05
MAX_SENTENCES = 8
SENTENCE_CHARS = 300
MAX_REMEMBERED = 100_000
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


class SentimentScorer:
    metric = "sentiment"

    def __init__(self) -> None:
        self.id = f"vader:{package_id('vaderSentiment')}:sentences{MAX_SENTENCES}x{SENTENCE_CHARS}"
        self._analyzer: Any = None
        self._sentences: dict[str, float] = {}

    def score(self, texts: Sequence[str | None]) -> Scores:
        if has_text(texts):
            self._load()
        return score_each(texts, self.compound)

    def compound(self, text: str) -> float:
        """Mean VADER compound score of the text's first sentences."""
        sentences = [part for part in _SENTENCE_END.split(text, maxsplit=MAX_SENTENCES) if part.strip()]
        scores = [self._sentence(part[:SENTENCE_CHARS]) for part in sentences[:MAX_SENTENCES]]
        return sum(scores) / len(scores) if scores else 0.0

    def _sentence(self, sentence: str) -> float:
        score = self._sentences.get(sentence)
        if score is None:
            if len(self._sentences) >= MAX_REMEMBERED:
                self._sentences.clear()
            self._load()
            score = self._sentences[sentence] = float(self._analyzer.polarity_scores(sentence)["compound"])
        return score

    def _load(self) -> None:
        if self._analyzer is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # reads the lexicon (~0.1 s)

            self._analyzer = SentimentIntensityAnalyzer()
