"""Light toxicity: alt-profanity-check's offensive-language probability, batched."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from profanity_check import predict_prob

from metrics.base import EMPTY_TEXT
from metrics.profanity import ProfanityScorer

TEXTS = [
    "Thanks for reaching out! I can help you reset your password.",
    "You are a stupid worthless idiot and I hate you.",
    "The endpoint returned a 429 error; please retry in a few minutes.",
    "What the hell is wrong with this damn thing?",
    "Have a wonderful day.",
]


@pytest.fixture(scope="module")
def scorer() -> ProfanityScorer:
    return ProfanityScorer()


def test_id_names_the_package_and_version(scorer: ProfanityScorer) -> None:
    assert scorer.id == f"alt-profanity-check-{version('alt-profanity-check')}" == "alt-profanity-check-1.9.1"
    assert scorer.metric == "toxicity"


def test_values_equal_the_packages_predict_prob(scorer: ProfanityScorer) -> None:
    scores = scorer.score(TEXTS)
    assert scores.errors == [None] * len(TEXTS)
    assert scores.values == pytest.approx(predict_prob(TEXTS).tolist(), rel=1e-12, abs=1e-15)


def test_offensive_text_scores_high_and_polite_text_low(scorer: ProfanityScorer) -> None:
    polite, insult = scorer.score([TEXTS[0], TEXTS[1]]).values
    assert polite is not None and insult is not None
    assert 0.0 <= polite < 0.2 and 0.8 < insult <= 1.0


def test_blank_texts_and_order_with_repeats(scorer: ProfanityScorer) -> None:
    texts = [TEXTS[1], None, TEXTS[0], "", TEXTS[1], "  "]
    scores = scorer.score(texts)
    expected = predict_prob([TEXTS[1], TEXTS[0]]).tolist()
    assert scores.values == pytest.approx([expected[0], None, expected[1], None, expected[0], None])
    assert scores.errors == [None, EMPTY_TEXT, None, EMPTY_TEXT, None, EMPTY_TEXT]


def test_chunked_batches_give_the_same_numbers(scorer: ProfanityScorer, monkeypatch: pytest.MonkeyPatch) -> None:
    many = [f"{text} (message {i})" for i, text in enumerate(TEXTS * 3)]
    monkeypatch.setattr("metrics.profanity.CHUNK_TEXTS", 4)
    chunked = scorer.score(many).values
    assert chunked == pytest.approx(predict_prob(many).tolist(), rel=1e-12, abs=1e-15)
