"""Light "toxicity" metric: alt-profanity-check's probability that a text is offensive language.

It is a profanity classifier, not a toxicity model: it reacts to swear words and insults, not to polite
hostility, threats without swearing or identity attacks. Pages call it "offensive language
(alt-profanity-check)"; its id is the package and version (`alt-profanity-check-1.9.1`; rows scored before
ids named the package exactly carry `profanity-check-1.9.1`). A linear model over TF-IDF features that ships
inside the package: no download, tens of thousands of texts per second.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from metrics.base import Outcome, Scores, has_text, in_chunks, score_texts
from metrics.identity import package_id

CHUNK_TEXTS = 4096  # bounds the sparse feature matrix held at once
OFFENSIVE_CLASS = 1


class ProfanityScorer:
    """`profanity_check.predict_prob`, batched, computed from the package's own vectorizer and model."""

    metric = "toxicity"

    def __init__(self) -> None:
        self.id = package_id("alt-profanity-check")
        self._vectorizer: Any = None
        self._model: Any = None
        self._offensive_column = OFFENSIVE_CLASS

    def score(self, texts: Sequence[str | None]) -> Scores:
        if has_text(texts):
            self._load()
        return score_texts(texts, self._score_distinct)

    def _load(self) -> None:
        if self._model is not None:
            return
        # Importing the package unpickles its model (~1 s), hence only on first use.
        from profanity_check import profanity_check

        self._vectorizer = profanity_check.vectorizer
        self._model = profanity_check.model
        self._offensive_column = list(self._model.classes_).index(OFFENSIVE_CLASS)

    def _score_distinct(self, texts: list[str]) -> list[Outcome]:
        return in_chunks(self._predict, texts, CHUNK_TEXTS)

    def _predict(self, texts: list[str]) -> list[float]:
        # Same numbers as predict_prob, minus its per-row np.apply_along_axis loop.
        probabilities = self._model.predict_proba(self._vectorizer.transform(texts))
        return probabilities[:, self._offensive_column].tolist()
