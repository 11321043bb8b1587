"""Honest scorer names: every scorer id is shown for what it measures, old ids included."""

from __future__ import annotations

import pytest

from core.scorers import flagged_word, scorer_caption, scorer_help, scorer_kind

PROFANITY = "offensive language (alt-profanity-check)"


@pytest.mark.parametrize("scorer_id", ["alt-profanity-check-1.9.1", "profanity-check-1.9.1"])
def test_the_light_toxicity_scorer_is_named_offensive_language(scorer_id: str) -> None:
    assert scorer_caption(scorer_id) == f"scored by {scorer_id} ({PROFANITY})"
    assert flagged_word(scorer_id) == "Offensive"
    assert "no toxicity model" in scorer_help(scorer_id) and scorer_id in scorer_help(scorer_id)


@pytest.mark.parametrize("scorer_id", ["detoxify-0.5.4:original:w0123456789:max512:fp32", "detoxify-original"])
def test_detoxify_is_named_toxicity(scorer_id: str) -> None:
    assert scorer_caption(scorer_id) == f"scored by {scorer_id} (toxicity (Detoxify))"
    assert flagged_word(scorer_id) == "Toxic"


def test_unknown_and_missing_scorers() -> None:
    assert scorer_kind("my-own-scorer-1.0") is None
    assert scorer_caption("my-own-scorer-1.0") == "scored by my-own-scorer-1.0"
    assert flagged_word("my-own-scorer-1.0") == "Flagged"
    assert scorer_caption(None) == "scorer unknown"
    assert scorer_help(None) == "No scorer has scored this selection."
