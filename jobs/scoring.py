"""What both scoring engines share: parse payload rows and score their texts (payload Arrow table in, requests
Arrow table out, same order), the run summary, and the --watch loop."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from core.sampling import SAMPLED_SCORERS, in_sample, percent, rates_text
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


def join_errors(named: list[tuple[str, list[str | None]]], rows: int) -> list[str | None]:
    joined: list[str | None] = []
    for i in range(rows):
        reasons = [f"{name}: {errors[i]}" for name, errors in named if errors[i]]
        joined.append("; ".join(reasons) or None)
    return joined


# One scorer slot's output: its requests columns (values and its scorer column) and its named reasons.
SlotOutput = tuple[dict[str, list], list[tuple[str, list[str | None]]]]


def _texts_scored(slot: str, text_of: Mapping[str, str]) -> Callable[[pa.Table, Profile], SlotOutput]:
    """A slot whose one scorer scores text columns: requests column -> the parsed text column it scores."""

    def run(parsed: pa.Table, profile: Profile) -> SlotOutput:
        scorer: Scorer = getattr(profile, slot)
        scored = {output: score_column(scorer, parsed[text]) for output, text in text_of.items()}
        return {output: values for output, (values, _) in scored.items()}, [
            (output, errors) for output, (_, errors) in scored.items()
        ]

    return run


def _pii(parsed: pa.Table, profile: Profile) -> SlotOutput:
    prompts, responses = parsed["prompt_text"], parsed["response_text"]
    prompt, prompt_err = score_column(profile.pii, prompts)
    response, response_err = score_column(profile.pii, responses)
    columns = {
        "prompt_pii_count": prompt,
        "response_pii_count": response,
        "prompt_pii_kinds": per_distinct(prompts, profile.pii.kinds),
        "response_pii_kinds": per_distinct(responses, profile.pii.kinds),
    }
    return columns, [("prompt_pii_count", prompt_err), ("response_pii_count", response_err)]


def _language(parsed: pa.Table, profile: Profile) -> SlotOutput:
    prompt = per_distinct(parsed["prompt_text"], lambda distinct: profile.language.labels(distinct).values)
    response = per_distinct(parsed["response_text"], lambda distinct: profile.language.labels(distinct).values)
    columns = {
        "prompt_language": prompt,
        "response_language": response,
        "response_language_match": _language_match(prompt, response),
    }
    return columns, []


def _support(parsed: pa.Table, profile: Profile) -> SlotOutput:
    support, support_err, support_scorer = _rag_support(profile, parsed)
    return {"response_rag_support": support, "rag_support_scorer": support_scorer}, [
        ("response_rag_support", support_err)
    ]


# Every scorer slot of a profile (core.sampling.SAMPLED_SCORERS names them), in the order reasons are joined.
SLOTS: dict[str, Callable[[pa.Table, Profile], SlotOutput]] = {
    "toxicity": _texts_scored("toxicity", {"prompt_toxicity": "prompt_text", "response_toxicity": "response_text"}),
    "readability": _texts_scored("readability", {"response_fk_grade": "response_text"}),
    "perplexity": _texts_scored("perplexity", {"response_perplexity": "response_text"}),
    "pii": _pii,
    "refusal": _texts_scored("refusal", {"response_refusal": "response_text"}),
    "injection": _texts_scored("injection", {"prompt_injection": "prompt_text"}),
    "sentiment": _texts_scored("sentiment", {"prompt_sentiment": "prompt_text"}),
    "language": _language,
    "rag_support": _support,
}
_TEXT_COLUMNS = ("prompt_text", "response_text", "retrieved_context")


def _only(parsed: pa.Table, keep: list[bool]) -> pa.Table:
    """The rows with their texts emptied where `keep` is false, so a scorer never reads them."""
    mask = pa.array(keep, pa.bool_())
    for name in _TEXT_COLUMNS:
        if name in parsed.column_names:
            column = parsed[name]
            emptied = pc.if_else(mask, column, pa.scalar(None, column.type))
            parsed = parsed.set_column(parsed.column_names.index(name), name, emptied)
    return parsed


def score_slot(parsed: pa.Table, profile: Profile, slot: str, keep: list[bool] | None = None) -> SlotOutput:
    """One scorer slot's columns for parsed rows. Rows where `keep` is false (outside its sample) are not read
    and get neither a value nor a scorer id (core/sampling.py); other rows get this profile's scorer id."""
    columns, errors = SLOTS[slot](parsed if keep is None else _only(parsed, keep), profile)
    scorer_column = SAMPLED_SCORERS[slot]
    if scorer_column not in columns:
        columns[scorer_column] = [getattr(profile, slot).id] * parsed.num_rows
    if keep is not None:
        columns[scorer_column] = [s if k else None for s, k in zip(columns[scorer_column], keep, strict=True)]
    return columns, errors


def score_parsed(
    parsed: pa.Table,
    profile: Profile,
    scored_at: datetime | None = None,
    sample_rates: Mapping[str, float] | None = None,
) -> pa.Table:
    """Add the metric columns to parsed rows. One text that fails gets a null and a reason; the batch goes on.

    `sample_rates` (slot -> rate below 1) limits a scorer to its deterministic sample of request ids; the rates
    are recorded in each row's `sample_rates`."""
    rates = {slot: rate for slot, rate in (sample_rates or {}).items() if rate < 1.0}
    ids = parsed["request_id"].to_pylist() if rates else []
    columns: dict[str, list] = {}
    named_errors: list[tuple[str, list[str | None]]] = []
    for slot in SLOTS:
        keep = in_sample(ids, rates[slot]) if slot in rates else None
        slot_columns, slot_errors = score_slot(parsed, profile, slot, keep)
        columns.update(slot_columns)
        named_errors.extend(slot_errors)
    rows = parsed.num_rows
    at = (scored_at or datetime.now(UTC)).replace(tzinfo=None)
    columns.update(
        score_error=join_errors(named_errors, rows), scored_at=[at] * rows, sample_rates=[rates_text(rates)] * rows
    )
    for name in REQUESTS_ARROW.names:
        if name in columns:
            field = REQUESTS_ARROW.field(name)
            parsed = parsed.append_column(field, pa.array(columns[name], field.type))
    return parsed.select(REQUESTS_ARROW.names)


def parse_and_score(
    payload: pa.Table,
    profile: Profile,
    scored_at: datetime | None = None,
    sample_rates: Mapping[str, float] | None = None,
) -> pa.Table:
    """The whole per-row pipeline of the scoring job (also used by the demo generator's fast path)."""
    return score_parsed(parse_payload(payload), profile, scored_at, sample_rates)


@dataclass
class JobSummary:
    read: int = 0
    written: int = 0
    failed: int = 0  # rows kept with a parse error
    seconds: float = 0.0
    full_rescan: bool = False  # the whole payload table was checked, not only the window after the watermark
    not_logged: int = 0  # rows whose payload Databricks did not log (logging_error_codes), reason kept
    unmapped: int = 0  # gateway rows whose served_entity_id the served-entities table lacks: no version
    sample_rates: dict[str, float] = field(default_factory=dict)  # scorers limited to a sample of requests

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
        if self.sample_rates:
            sampled = ", ".join(f"{slot} at {percent(rate)}" for slot, rate in sorted(self.sample_rates.items()))
            line += f"; sampled by request id: {sampled} (the rest keep those scores empty)"
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
