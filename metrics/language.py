"""Language of a text: py3langid's most likely ISO 639-1 code (97 languages, model bundled in the package).

py3langid is a maintained, faster fork of langid.py (Lui and Baldwin, 2012): a naive Bayes model over byte
n-grams, shipped inside the wheel. Only the first HEAD_CHARS characters are read (a chat text's language shows
in its first sentence, and reading a pasted log to the end costs time); the id records that cap.

`labels` gives the codes; `score` (the scorer interface) gives the detector's normalised confidence in them.
A text with too few letters to tell (digits, symbols, a word or two) gets no language.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from metrics.base import NO_WORDS, Scores, UnscorableText, has_text, score_each
from metrics.identity import package_id

HEAD_CHARS = 120
MIN_LETTERS = 8  # fewer letters than this: no language


@dataclass(frozen=True)
class Labels:
    values: list[str | None]  # one ISO 639-1 code per text
    errors: list[str | None]


class LanguageScorer:
    metric = "language"

    def __init__(self) -> None:
        self.id = f"{package_id('py3langid')}:head{HEAD_CHARS}"
        self._identifier: Any = None

    def score(self, texts: Sequence[str | None]) -> Scores:
        if has_text(texts):
            self._load()
        return score_each(texts, lambda text: self.detect(text)[1])

    def labels(self, texts: Sequence[str | None]) -> Labels:
        """The language code of each text, or None with the reason."""
        if has_text(texts):
            self._load()
        codes: dict[str, str] = {}
        scores = score_each(texts, lambda text: self._remember(codes, text))
        values = [
            codes.get(text) if isinstance(text, str) and value is not None else None
            for text, value in zip(texts, scores.values, strict=True)
        ]
        return Labels(values=values, errors=scores.errors)

    def detect(self, text: str) -> tuple[str, float]:
        head = text[:HEAD_CHARS]
        if sum(c.isalpha() for c in head) < MIN_LETTERS:
            raise UnscorableText(NO_WORDS)
        self._load()
        code, confidence = self._identifier.classify(head)
        return str(code), float(confidence)

    def _remember(self, codes: dict[str, str], text: str) -> float:
        codes[text], confidence = self.detect(text)
        return confidence

    def _load(self) -> None:
        if self._identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier  # decompresses the model (~3 s)

            self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
