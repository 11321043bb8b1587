"""Language of a text: py3langid's most likely ISO 639-1 code (97 languages, model bundled in the package).

py3langid is a maintained, faster fork of langid.py (Lui and Baldwin, 2012): a naive Bayes model over byte
n-grams, shipped inside the wheel. Only the first HEAD_CHARS characters are read (a chat text's language shows
in its first sentence, and reading a pasted log to the end costs time); the id records that cap.

A batch is scored at once with py3langid's own model and the same arithmetic as its `classify` (which scores one
text per call): the byte automaton that finds the n-gram features steps through every text of the batch together
(one numpy step per byte position), the feature counts form one sparse matrix, and one product with the model's
table gives every text's class scores. `tests/test_scorers_labelled.py` checks it agrees with `classify`.

`labels` gives the codes; `score` (the scorer interface) gives the detector's normalised confidence in them.
A text with too few letters to tell (digits, symbols, a word or two) gets no language.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from metrics.base import NO_WORDS, Outcome, Scores, UnscorableText, has_text, in_chunks, score_texts
from metrics.identity import package_id

HEAD_CHARS = 120
MIN_LETTERS = 8  # fewer letters than this: no language
CHUNK_TEXTS = 4096  # texts stepped through the automaton together (bounds the byte matrix)
# At least MIN_LETTERS letters (word characters other than digits and "_"), without counting past them.
_ENOUGH_LETTERS = re.compile(rf"(?:[\W\d_]*[^\W\d_]){{{MIN_LETTERS}}}")


@dataclass(frozen=True)
class Labels:
    values: list[str | None]  # one ISO 639-1 code per text
    errors: list[str | None]


class LanguageScorer:
    metric = "language"

    def __init__(self) -> None:
        self.id = f"{package_id('py3langid')}:head{HEAD_CHARS}"
        self._model: _BatchModel | None = None

    def score(self, texts: Sequence[str | None]) -> Scores:
        if has_text(texts):
            self._load()
        return score_texts(texts, lambda distinct: [_confidence(o) for o in self._detect_all(distinct)])

    def labels(self, texts: Sequence[str | None]) -> Labels:
        """The language code of each text, or None with the reason."""
        if has_text(texts):
            self._load()
        codes: dict[str, str] = {}

        def detect(distinct: list[str]) -> list[Outcome]:
            outcomes = self._detect_all(distinct)
            for text, outcome in zip(distinct, outcomes, strict=True):
                if isinstance(outcome, tuple):
                    codes[text] = outcome[0]
            return [_confidence(outcome) for outcome in outcomes]

        scores = score_texts(texts, detect)
        values = [
            codes.get(text) if isinstance(text, str) and value is not None else None
            for text, value in zip(texts, scores.values, strict=True)
        ]
        return Labels(values=values, errors=scores.errors)

    def detect(self, text: str) -> tuple[str, float]:
        """(code, confidence) of one text; UnscorableText when it has too few letters."""
        outcome = self._detect_all([text])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _detect_all(self, texts: list[str]) -> list[tuple[str, float] | BaseException]:
        heads = [text[:HEAD_CHARS] for text in texts]
        wordy = [i for i, head in enumerate(heads) if _ENOUGH_LETTERS.match(head)]
        outcomes: list[tuple[str, float] | BaseException] = [UnscorableText(NO_WORDS)] * len(texts)
        if wordy:
            self._load()
            assert self._model is not None
            found = in_chunks(self._model.classify, [heads[i] for i in wordy], CHUNK_TEXTS)
            for i, outcome in zip(wordy, found, strict=True):
                outcomes[i] = outcome
        return outcomes

    def _load(self) -> None:
        if self._model is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier  # decompresses the model (~3 s)

            self._model = _BatchModel(LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True))


def _confidence(outcome: tuple[str, float] | BaseException) -> Outcome:
    return outcome if isinstance(outcome, BaseException) else outcome[1]


class _BatchModel:
    """py3langid's normalised-probability classifier over many texts at once (its arithmetic, vectorised)."""

    def __init__(self, identifier: Any) -> None:
        import numpy as np

        self.classes: list[str] = list(identifier.nb_classes)
        self.table = np.asarray(identifier.nb_ptc)  # features x classes, log P(feature | class)
        self.prior = np.asarray(identifier.nb_pc, dtype=np.float32)
        self.next_state = np.frombuffer(identifier.tk_nextmove, dtype=np.dtype(identifier.tk_nextmove.typecode))
        self.row_base = np.asarray(identifier._rowbase, dtype=np.int64)
        self.output = np.asarray(identifier.tk_output, dtype=np.int64)  # feature id a state emits, or -1
        self.alias_pairs: list[tuple[int, int]] = list(identifier._alias_pairs)  # (kept, folded) columns

    def classify(self, texts: list[str]) -> list[tuple[str, float]]:
        import numpy as np
        from scipy.sparse import csr_matrix

        encoded = [_encode(text) for text in texts]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        order = np.argsort(-lengths, kind="stable")  # longest first: the texts still walking are a prefix
        data = np.zeros((len(encoded), int(lengths.max(initial=0))), dtype=np.uint8)
        for row, i in enumerate(order):
            data[row, : lengths[i]] = np.frombuffer(encoded[i], dtype=np.uint8)
        walking = np.searchsorted(-lengths[order], -np.arange(data.shape[1]), side="right")
        state = np.zeros(len(encoded), dtype=np.int64)
        rows, features = [], []
        for position, active in enumerate(walking):
            moved = self.next_state[self.row_base[state[:active]] + data[:active, position]]
            state[:active] = moved
            emitted = self.output[moved]
            hit = np.flatnonzero(emitted >= 0)
            rows.append(hit)
            features.append(emitted[hit])
        row_ids = np.concatenate([order[hit] for hit in rows] or [np.zeros(0, dtype=np.int64)])
        # Only the features these texts emit take part: their rows of the (float16) table, in float32.
        used, columns = np.unique(np.concatenate(features or [np.zeros(0, dtype=np.int64)]), return_inverse=True)
        counts = csr_matrix(
            (np.ones(len(row_ids), dtype=np.float32), (row_ids, columns.ravel())), shape=(len(encoded), len(used))
        )
        counts.sum_duplicates()
        counts.data = np.log1p(counts.data)
        scores = np.asarray(counts @ self.table[used].astype(np.float32)) + self.prior
        scores[np.diff(counts.indptr) == 0] = 0.0  # no feature at all: uniform, as py3langid does
        scores *= (1.0 / np.sqrt(np.maximum(lengths, 1))).astype(np.float32)[:, None]
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
        for kept, folded in self.alias_pairs:  # one label spelled twice (srl -> sr): fold the second into the first
            scores[:, kept] += scores[:, folded]
            scores[:, folded] = 0.0
        best = scores.argmax(axis=1)
        return [(self.classes[c], float(scores[i, c])) for i, c in enumerate(best)]


def _encode(text: str) -> bytes:
    """The bytes py3langid reads: an all-capitals text lower-cased, NFC, UTF-8 (lone surrogates kept)."""
    if text.isupper():
        text = text.lower()
    return unicodedata.normalize("NFC", text).encode("utf8", errors="surrogatepass")
