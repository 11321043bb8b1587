"""Light perplexity: unigram perplexity under wordfreq's English frequencies."""

from __future__ import annotations

from importlib.metadata import version

import numpy as np
import pytest
import wordfreq
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics.base import EMPTY_TEXT, NO_WORDS
from metrics.unigram_perplexity import MIN_PROBABILITY, UnigramPerplexityScorer, pieces

TEXTS = [
    "Thanks for reaching out! I can help you reset your password.",
    "The quarterly report shows revenue grew 12% in Q3, driven by EMEA.",
    "Kubernetes pods reschedule when the kubelet evicts them under memory pressure.",
    "Don’t worry — it’s fine.",
]


def independent_perplexity(text: str) -> float:
    tokens = wordfreq.tokenize(text, "en")
    probabilities = np.array([max(wordfreq.word_frequency(t, "en"), MIN_PROBABILITY) for t in tokens])
    return float(np.exp(-np.log(probabilities).mean()))


@pytest.fixture(scope="module")
def scorer() -> UnigramPerplexityScorer:
    return UnigramPerplexityScorer()


def test_id_says_unigram_and_names_wordfreq_version(scorer: UnigramPerplexityScorer) -> None:
    assert scorer.id == f"wordfreq-unigram-{version('wordfreq')}" == "wordfreq-unigram-3.1.1"
    assert scorer.metric == "perplexity"


def test_values_match_an_independent_computation(scorer: UnigramPerplexityScorer) -> None:
    scores = scorer.score(TEXTS)
    assert scores.errors == [None] * len(TEXTS)
    assert scores.values == pytest.approx([independent_perplexity(t) for t in TEXTS], rel=1e-12)


def test_known_closed_forms(scorer: UnigramPerplexityScorer) -> None:
    the = wordfreq.word_frequency("the", "en")
    unknown = "zqxjvbnmwk"
    assert wordfreq.word_frequency(unknown, "en") == 0.0
    values = scorer.score(["the the the", unknown, f"the {unknown}"]).values
    assert values[0] == pytest.approx(1 / the, rel=1e-12)
    assert values[1] == pytest.approx(1 / MIN_PROBABILITY, rel=1e-12)  # unknown words sit on the floor
    assert values[2] == pytest.approx((the * MIN_PROBABILITY) ** -0.5, rel=1e-12)


def test_jargon_is_more_perplexing_than_plain_chat(scorer: UnigramPerplexityScorer) -> None:
    plain, _, jargon, _ = scorer.score(TEXTS).values
    assert plain is not None and jargon is not None
    assert plain < jargon


def test_blank_and_wordless_texts_get_reasons(scorer: UnigramPerplexityScorer) -> None:
    scores = scorer.score([None, "", " \n", "?! ... —", TEXTS[0]])
    assert scores.values[:4] == [None] * 4
    assert scores.errors == [EMPTY_TEXT, EMPTY_TEXT, EMPTY_TEXT, NO_WORDS, None]


def test_bounded_piece_memo_keeps_the_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("metrics.unigram_perplexity.MAX_CACHED_PIECES", 3)
    small_memo = UnigramPerplexityScorer()
    assert small_memo.score(TEXTS * 2).values == pytest.approx(
        [independent_perplexity(t) for t in TEXTS * 2], rel=1e-12
    )
    assert len(small_memo._piece_sums) <= 3


# Characters that stress the cut points: Unicode spaces, combining marks after spaces, joiners,
# emoji modifiers, curly quotes, contractions, CJK runs, case folding, control characters.
# fmt: off
TRICKY = [
    "a", "Z", "9", "don't", "l'avion", "tod@s", ".", ",", "-", "'", '"', "(", "%", "#", "_",
    " ", "  ", "\n", "\t", "\r\n", "\x1c", "\x0b", "\u00a0", "\u2000", "\u3000", "\u2028",
    "\u0301", "\u200d", "\u200b", "\ufe0f", "é", "e\u0301", "ß", "İ", "ﬁ", "’", "—", "…",
    "👍", "🏻", "👩\u200d💻", "🇺🇸", "中文", "日本語", "ไทย", "١٢٣", "\ud800",
]
# fmt: on


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(TRICKY) | st.text(max_size=3), max_size=25).map("".join))
def test_pieces_tokenize_exactly_like_the_whole_text(text: str) -> None:
    whole = wordfreq.tokenize(text, "en")
    assert [token for piece in pieces(text) for token in wordfreq.tokenize(piece, "en")] == whole


def test_realistic_texts_are_cut_into_words() -> None:
    assert pieces("Sure! Run  OPTIMIZE\nthen VACUUM.") == ["Sure!", "Run", "OPTIMIZE", "then", "VACUUM."]
    assert pieces("It’s fine — really.") == ["It’s", "fine — really."]  # no cut next to non-ASCII


def test_floor_must_be_a_probability() -> None:
    with pytest.raises(ValueError, match="min_probability"):
        UnigramPerplexityScorer(min_probability=0.0)
