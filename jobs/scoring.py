"""What both scoring engines share: parse payload rows and score their texts (payload Arrow table in, requests
Arrow table out, same order), the run summary, and the --watch loop."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from data_access.payload import parse_payload
from data_access.schema import REQUESTS_ARROW
from metrics.base import Scorer
from metrics.profiles import Profile

T = TypeVar("T")


def per_distinct(texts: pa.ChunkedArray | pa.Array, run: Callable[[list[str | None]], Sequence[T]]) -> list[T | None]:
    """Run `run` once on the distinct texts (chatbot traffic repeats itself), then spread results back to rows;
    a row with no text at all (an error response) gets None."""
    encoded = (
        pc.dictionary_encode(texts).combine_chunks()
        if isinstance(texts, pa.ChunkedArray)
        else (pc.dictionary_encode(texts))
    )
    results = run(encoded.dictionary.to_pylist())
    return [None if index is None else results[index] for index in encoded.indices.to_pylist()]


def score_column(scorer: Scorer, texts: pa.ChunkedArray | pa.Array) -> tuple[list[float | None], list[str | None]]:
    """Values and reasons of one scorer, each distinct text scored once; no text: no value and no reason."""
    pairs = per_distinct(texts, lambda distinct: list(zip(*_scored(scorer, distinct), strict=True)))
    values = [pair[0] if pair else None for pair in pairs]
    errors = [pair[1] if pair else None for pair in pairs]
    return values, errors


def _scored(scorer: Scorer, distinct: list[str | None]) -> tuple[list[float | None], list[str | None]]:
    scores = scorer.score(distinct)
    return scores.values, scores.errors


def _language_match(prompt: list[str | None], response: list[str | None]) -> list[float | None]:
    return [None if p is None or r is None else float(p == r) for p, r in zip(prompt, response, strict=True)]


def _rag_support(profile: Profile, parsed: pa.Table) -> tuple[list[float | None], list[str | None], list[str | None]]:
    """Support of each response by its retrieved context, reasons and scorer ids; rows without a context (no
    retriever ran) get no value, no reason and no scorer."""
    rows = parsed.num_rows
    values: list[float | None] = [None] * rows
    errors: list[str | None] = [None] * rows
    scorers: list[str | None] = [None] * rows
    if "retrieved_context" not in parsed.column_names:
        return values, errors, scorers
    contexts = parsed["retrieved_context"].to_pylist()
    with_context = [i for i, context in enumerate(contexts) if context is not None]
    if with_context:
        responses = parsed["response_text"].to_pylist()
        pairs = [responses[i] for i in with_context], [contexts[i] for i in with_context]
        scores = profile.rag_support.score_pairs(*pairs)
        for i, value, error in zip(with_context, scores.values, scores.errors, strict=True):
            values[i], errors[i], scorers[i] = value, error, profile.rag_support.id
    return values, errors, scorers


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
    prompt_pii, prompt_pii_err = score_column(profile.pii, prompts)
    response_pii, response_pii_err = score_column(profile.pii, responses)
    refusal, refusal_err = score_column(profile.refusal, responses)
    injection, injection_err = score_column(profile.injection, prompts)
    sentiment, sentiment_err = score_column(profile.sentiment, prompts)
    prompt_language = per_distinct(prompts, lambda distinct: profile.language.labels(distinct).values)
    response_language = per_distinct(responses, lambda distinct: profile.language.labels(distinct).values)
    support, support_err, support_scorer = _rag_support(profile, parsed)
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
                ("prompt_pii_count", prompt_pii_err),
                ("response_pii_count", response_pii_err),
                ("response_refusal", refusal_err),
                ("prompt_injection", injection_err),
                ("prompt_sentiment", sentiment_err),
                ("response_rag_support", support_err),
            ],
            rows,
        ),
        "scored_at": [at] * rows,
        "prompt_pii_count": prompt_pii,
        "response_pii_count": response_pii,
        "prompt_pii_kinds": per_distinct(prompts, profile.pii.kinds),
        "response_pii_kinds": per_distinct(responses, profile.pii.kinds),
        "pii_scorer": [profile.pii.id] * rows,
        "response_refusal": refusal,
        "refusal_scorer": [profile.refusal.id] * rows,
        "prompt_injection": injection,
        "injection_scorer": [profile.injection.id] * rows,
        "prompt_sentiment": sentiment,
        "sentiment_scorer": [profile.sentiment.id] * rows,
        "prompt_language": prompt_language,
        "response_language": response_language,
        "response_language_match": _language_match(prompt_language, response_language),
        "language_scorer": [profile.language.id] * rows,
        "response_rag_support": support,
        "rag_support_scorer": support_scorer,
    }
    for name, values in metric_columns.items():
        parsed = parsed.append_column(REQUESTS_ARROW.field(name), pa.array(values, REQUESTS_ARROW.field(name).type))
    return parsed.select(REQUESTS_ARROW.names)


def parse_and_score(payload: pa.Table, profile: Profile, scored_at: datetime | None = None) -> pa.Table:
    """The whole per-row pipeline of the scoring job (also used by the demo generator's fast path)."""
    return score_parsed(parse_payload(payload), profile, scored_at)


@dataclass
class JobSummary:
    read: int = 0
    written: int = 0
    failed: int = 0  # rows kept with a parse error
    seconds: float = 0.0
    full_rescan: bool = False  # the whole payload table was checked, not only the window after the watermark
    not_logged: int = 0  # rows whose payload Databricks did not log (logging_error_codes), reason kept
    unmapped: int = 0  # gateway rows whose served_entity_id the served-entities table lacks: no version

    def count_gateway(self, rows: pa.Table) -> None:
        """Count the gateway-only outcomes of scored rows (zero for legacy rows, whose new columns are null)."""
        self.not_logged += int(pc.sum(pc.is_valid(rows["logging_error_codes"])).as_py() or 0)
        unmapped = pc.and_(pc.is_valid(rows["served_entity_id"]), pc.is_null(rows["model_version"]))
        self.unmapped += int(pc.sum(unmapped).as_py() or 0)

    @property
    def rows_per_second(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        extra = "".join(
            f", {count:,} {what}"
            for count, what in (
                (self.not_logged, "not logged by Databricks (kept with its logging error code)"),
                (self.unmapped, "with a served entity the served-entities table lacks (kept without a version)"),
            )
            if count
        )
        line = (
            f"read {self.read:,} rows, wrote {self.written:,}, failed to parse {self.failed:,} (kept with reason)"
            f"{extra}, {self.rows_per_second:,.0f} rows/s"
        )
        if self.full_rescan:
            line += f"; full rescan: {self.written:,} rows were missing from the requests table"
        return line


def parse_failures(rows: pa.Table) -> int:
    """How many scored rows carry a parse error (they are kept, with the reason)."""
    return int(pc.sum(pc.is_valid(rows["parse_error"])).as_py() or 0)


def run_every(run: Callable[[], JobSummary], watch_s: float | None, resumes: str) -> int:
    """Run once, or every `watch_s` seconds, printing each run's summary; Ctrl-C stops with exit code 130.
    `resumes` tells the operator what an interruption keeps."""
    try:
        while True:
            print(run().line(), flush=True)
            if watch_s is None:
                return 0
            time.sleep(watch_s)
    except KeyboardInterrupt:
        print(f"stopped; {resumes}, the next run resumes", file=sys.stderr)
        return 130
