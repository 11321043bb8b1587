"""Parse payload rows and score their texts: payload Arrow table in, requests Arrow table out, same order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from data_access.payload import parse_payload
from data_access.schema import REQUESTS_ARROW
from metrics.base import Scorer
from metrics.profiles import Profile


def score_column(scorer: Scorer, texts: pa.ChunkedArray | pa.Array) -> tuple[list[float | None], list[str | None]]:
    """Score each distinct text once (chatbot traffic repeats itself), then spread the results back."""
    encoded = (
        pc.dictionary_encode(texts).combine_chunks()
        if isinstance(texts, pa.ChunkedArray)
        else (pc.dictionary_encode(texts))
    )
    distinct: Sequence[str | None] = encoded.dictionary.to_pylist()
    scores = scorer.score(distinct)
    values, errors = [], []
    for index in encoded.indices.to_pylist():
        if index is None:  # no text at all (an error response): nothing to score, nothing to explain
            values.append(None)
            errors.append(None)
        else:
            values.append(scores.values[index])
            errors.append(scores.errors[index])
    return values, errors


def _join_errors(named: list[tuple[str, list[str | None]]], rows: int) -> list[str | None]:
    joined: list[str | None] = []
    for i in range(rows):
        reasons = [f"{name}: {errors[i]}" for name, errors in named if errors[i]]
        joined.append("; ".join(reasons) or None)
    return joined


def score_parsed(parsed: pa.Table, profile: Profile, scored_at: datetime | None = None) -> pa.Table:
    """Add the metric columns to parsed rows. One text that fails gets a null and a reason; the batch goes on."""
    prompts, responses = parsed["prompt_text"], parsed["response_text"]
    prompt_tox, prompt_tox_err = score_column(profile.toxicity, prompts)
    response_tox, response_tox_err = score_column(profile.toxicity, responses)
    grade, grade_err = score_column(profile.readability, responses)
    perplexity, perplexity_err = score_column(profile.perplexity, responses)
    rows = parsed.num_rows
    at = (scored_at or datetime.now(UTC)).replace(tzinfo=None)
    metric_columns = {
        "prompt_toxicity": prompt_tox,
        "response_toxicity": response_tox,
        "toxicity_scorer": [profile.toxicity.id] * rows,
        "response_fk_grade": grade,
        "readability_scorer": [profile.readability.id] * rows,
        "response_perplexity": perplexity,
        "perplexity_scorer": [profile.perplexity.id] * rows,
        "score_error": _join_errors(
            [
                ("prompt_toxicity", prompt_tox_err),
                ("response_toxicity", response_tox_err),
                ("response_fk_grade", grade_err),
                ("response_perplexity", perplexity_err),
            ],
            rows,
        ),
        "scored_at": [at] * rows,
    }
    for name, values in metric_columns.items():
        parsed = parsed.append_column(REQUESTS_ARROW.field(name), pa.array(values, REQUESTS_ARROW.field(name).type))
    return parsed.select(REQUESTS_ARROW.names)


def parse_and_score(payload: pa.Table, profile: Profile, scored_at: datetime | None = None) -> pa.Table:
    """The whole per-row pipeline of the scoring job (also used by the demo generator's fast path)."""
    return score_parsed(parse_payload(payload), profile, scored_at)
