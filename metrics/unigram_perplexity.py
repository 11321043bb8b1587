"""Light perplexity: how surprising a text's words are under wordfreq's English unigram frequencies.

PP = exp(−mean ln p(w)) over the tokens of `wordfreq.tokenize(text, "en")`, with
p(w) = `wordfreq.word_frequency(w, "en", minimum=MIN_PROBABILITY)`. A unigram model ignores word
order: it tells common-word prose (low) from jargon, names, codes and typos (high). Its numbers are
not comparable with a language model's perplexity, hence "unigram" in the scorer id.

Speed: wordfreq's Unicode token pattern costs ~0.2 ms on a chatbot reply, but chat vocabulary repeats.
So a text is cut into pieces at gaps no token can span, and each distinct piece is tokenized and
summed once (see `pieces`); the result equals tokenizing the whole text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

from metrics.base import NO_WORDS, Scores, UnscorableText, has_text, score_each

# Floor for words wordfreq does not list. Its "large" English list stops at frequency 1e-8 (once per
# hundred million words), so an unknown word counts as rare as the rarest listed one: no infinite
# perplexity and no cliff between the last listed word and the first unlisted one.
MIN_PROBABILITY = 1e-8
LANGUAGE = "en"
MAX_CACHED_PIECES = 200_000  # bounds the piece memo against endless distinct numbers and ids
# ASCII whitespace between two printable ASCII characters (used for texts that are not all ASCII).
_SAFE_GAP = re.compile(r"(?<=[!-~])[ \t\n\r\f\v]+(?=[!-~])")


def pieces(text: str) -> list[str]:
    """Cut `text` where wordfreq's tokenizer always has a token boundary, dropping the whitespace.

    Whitespace next to ASCII characters (1) is a Unicode word boundary, (2) is no grapheme extension
    (wordfreq matches whole graphemes), and (3) NFC normalization never composes across it, while the
    token pattern looks only ahead. So tokenize(text) == the tokens of each piece in order.
    """
    return text.split() if text.isascii() else _SAFE_GAP.split(text)


class UnigramPerplexityScorer:
    metric = "perplexity"

    def __init__(self, min_probability: float = MIN_PROBABILITY) -> None:
        if not 0.0 < min_probability <= 1.0:
            raise ValueError(f"min_probability must be in (0, 1], got {min_probability}")
        self.id = f"wordfreq-unigram-{version('wordfreq')}"
        self.min_probability = min_probability
        self._wordfreq: Any = None
        self._piece_sums: dict[str, tuple[float, int]] = {}

    def score(self, texts: Sequence[str | None]) -> Scores:
        if has_text(texts):
            self._load()
        return score_each(texts, self.perplexity)

    def perplexity(self, text: str) -> float:
        self._load()
        total, count = 0.0, 0
        memo = self._piece_sums
        for piece in pieces(text):
            sums = memo.get(piece)
            if sums is None:
                sums = self._piece_sum(piece)
            total += sums[0]
            count += sums[1]
        if not count:
            raise UnscorableText(NO_WORDS)
        return math.exp(-total / count)

    def _load(self) -> None:
        if self._wordfreq is not None:
            return
        import wordfreq  # reads its frequency tables on first use (~0.3 s)

        wordfreq.word_frequency("the", LANGUAGE)
        self._wordfreq = wordfreq

    def _piece_sum(self, piece: str) -> tuple[float, int]:
        """Σ ln p(w) and the token count of one piece, remembered for the next time it occurs."""
        tokens = self._wordfreq.tokenize(piece, LANGUAGE)
        total = 0.0
        for token in tokens:
            probability = self._wordfreq.word_frequency(token, LANGUAGE, minimum=self.min_probability)
            total += math.log(probability)
        if len(self._piece_sums) >= MAX_CACHED_PIECES:
            self._piece_sums.clear()
        self._piece_sums[piece] = sums = (total, len(tokens))
        return sums
