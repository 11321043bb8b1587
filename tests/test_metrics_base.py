"""The shared scoring contract: blank texts, distinct texts scored once, failures kept to their text."""

from __future__ import annotations

import math
import random

import pytest

from metrics.base import (
    BATCH_COST_TOKENS,
    EMPTY_TEXT,
    MAX_REASON_CHARS,
    NOT_A_TEXT,
    Scores,
    UnscorableText,
    failure_reason,
    has_text,
    isolate_failures,
    length_batches,
    score_each,
    score_texts,
)


def word_count(text: str) -> float:
    """A stand-in metric whose value is easy to predict, and that fails on the text 'boom'."""
    if text == "boom":
        raise RuntimeError("exploded on purpose")
    if text == "???":
        raise UnscorableText("no words")
    return float(len(text.split()))


def test_scores_must_pair_values_with_errors() -> None:
    with pytest.raises(ValueError, match="2 values but 1 errors"):
        Scores(values=[1.0, 2.0], errors=[None])


def test_blank_texts_get_a_reason_and_never_reach_the_metric() -> None:
    seen: list[list[str]] = []

    def record(distinct: list[str]) -> list[float]:
        seen.append(distinct)
        return [word_count(text) for text in distinct]

    scores = score_texts([None, "", "   \n\t", "two words", 42], record)  # type: ignore[list-item]
    assert scores.values == [None, None, None, 2.0, None]
    assert scores.errors == [EMPTY_TEXT, EMPTY_TEXT, EMPTY_TEXT, None, NOT_A_TEXT]
    assert seen == [["two words"]]


def test_each_distinct_text_is_scored_once_and_results_keep_input_order() -> None:
    calls: list[str] = []

    def count_calls(text: str) -> float:
        calls.append(text)
        return word_count(text)

    texts = ["a b c", "one", "a b c", "x y", "one", "a b c"]
    scores = score_each(texts, count_calls)
    assert scores.values == [3.0, 1.0, 3.0, 2.0, 1.0, 3.0]
    assert scores.errors == [None] * 6
    assert calls == ["a b c", "one", "x y"]


def test_a_failing_text_loses_only_its_own_value() -> None:
    scores = score_each(["fine text", "boom", "???", "also fine here"], word_count)
    assert scores.values == [2.0, None, None, 3.0]
    assert scores.errors == [None, "scorer failed: RuntimeError: exploded on purpose", "no words", None]


def test_a_batch_that_raises_is_retried_text_by_text() -> None:
    batches: list[list[str]] = []

    def batch_metric(texts: list[str]) -> list[float]:
        batches.append(texts)
        return [word_count(text) for text in texts]

    outcomes = isolate_failures(batch_metric, ["a b", "boom", "c"])
    assert outcomes[0] == 2.0 and outcomes[2] == 1.0
    assert isinstance(outcomes[1], RuntimeError)
    assert batches == [["a b", "boom", "c"], ["a b"], ["boom"], ["c"]]


def test_non_finite_values_and_wrong_result_counts_become_reasons() -> None:
    scores = score_texts(["a", "b"], lambda distinct: [math.inf, math.nan])
    assert scores.values == [None, None]
    assert scores.errors == ["scorer failed: non-finite value inf", "scorer failed: non-finite value nan"]
    short = score_texts(["a", "b"], lambda distinct: [1.0])
    assert short.values == [None, None]
    assert short.errors == ["scorer failed: RuntimeError: 1 results for 2 texts"] * 2


def test_failure_reasons_are_one_short_line() -> None:
    reason = failure_reason(ValueError("first line\nsecond line   " + "x" * 500))
    assert reason.startswith("scorer failed: ValueError: first line second line x")
    assert "\n" not in reason and len(reason) == MAX_REASON_CHARS
    assert failure_reason(KeyError()) == "scorer failed: KeyError"


def test_has_text_tells_whether_a_model_is_needed() -> None:
    assert not has_text([None, "", "  "])
    assert has_text([None, "x"])
    assert score_texts([], lambda distinct: []) == Scores(values=[], errors=[])


def batching_cost(batches: list[list[int]], lengths: list[int]) -> int:
    return sum(len(batch) * max(lengths[i] for i in batch) + BATCH_COST_TOKENS for batch in batches)


def all_cuts(order: list[int]) -> list[list[list[int]]]:
    """Every way to cut `order` into consecutive runs (2^(n-1) of them)."""
    ways = []
    for mask in range(2 ** (len(order) - 1)):
        batches, current = [], [order[0]]
        for position, item in enumerate(order[1:]):
            if mask >> position & 1:
                batches.append(current)
                current = []
            current.append(item)
        ways.append([*batches, current])
    return ways


@pytest.mark.parametrize("seed", range(6))
def test_length_batches_are_the_cheapest_cut_within_the_budgets(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(5, 40), rng.randint(90, 160)]) for _ in range(rng.randint(1, 11))]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batch_size, max_tokens = rng.randint(1, 6), rng.choice([150, 400, 10_000])

    def allowed(batches: list[list[int]]) -> bool:
        return all(
            len(b) <= batch_size and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= max_tokens) for b in batches
        )

    batches = length_batches(order, lengths, batch_size, max_tokens)
    assert [i for batch in batches for i in batch] == order and allowed(batches)
    cheapest = min(batching_cost(way, lengths) for way in all_cuts(order) if allowed(way))
    assert batching_cost(batches, lengths) == cheapest


def test_length_batches_cut_where_padding_costs_more_than_a_pass() -> None:
    lengths = [5, 5, 6, 40, 41]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    # Short texts share a pass; padding 5-token texts to 41 would cost more than a pass of their own.
    assert length_batches(order, lengths, batch_size=8, max_batch_tokens=10_000) == [[0, 1, 2], [3, 4]]
    assert length_batches(order, lengths, batch_size=2, max_batch_tokens=10_000) == [[0, 1], [2], [3, 4]]
    assert length_batches(order, lengths, batch_size=8, max_batch_tokens=80) == [[0, 1, 2], [3], [4]]
    assert length_batches([], lengths, batch_size=8, max_batch_tokens=80) == []
