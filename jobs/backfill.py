"""Backfill one scorer on requests rows already written without it: a scorer added after they were scored, or
one whose sample rate went up (core/sampling.py).

    python -m jobs.score --backfill toxicity [--since 2026-04-01] [--sample-rate toxicity=0.5]

Only the scorer's own columns change (its values, its scorer id, its reasons appended to `score_error`, the
row's `sample_rates`); every other score is left as it is. Rows are taken in (date, request id) order,
and each batch is one transaction together with its dates' rollups, holding the same lock as the scoring job.
A row counts as done once its scorer id is set, so a backfill killed at any moment and run again scores each
remaining row once and never touches a finished one; no row is ever added.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import pyarrow as pa

from core.sampling import SAMPLED_SCORERS, in_sample, percent, rates_from_text, rates_text
from data_access.duckdb_store import DuckDBStore
from data_access.schema import REQUESTS_ARROW
from jobs.scoring import join_errors, score_slot
from metrics.profiles import Profile

# What a scorer reads from a requests row.
TEXT_COLUMNS = ("prompt_text", "response_text", "retrieved_context", "sample_rates")


@dataclass
class BackfillSummary:
    scorer: str
    rate: float = 1.0
    scored: int = 0  # rows the scorer filled in
    left_out: int = 0  # rows outside its sample at `rate`: still empty, the rate recorded
    seconds: float = 0.0
    dates: int | None = None  # Spark: dates rewritten (each one commit, its rollups refreshed)
    recovered: int = 0  # Spark: dates a killed run had staged, applied at the start of this one

    def line(self) -> str:
        line = f"backfill {self.scorer}: scored {self.scored:,} rows"
        if self.rate < 1.0:
            line += f", {self.left_out:,} left out of the {percent(self.rate)} sample (rate recorded)"
        if self.dates is not None:
            line += f", {self.dates:,} date(s) rewritten and their rollups refreshed"
        if self.recovered:
            line += f" ({self.recovered:,} staged by an interrupted run, applied first)"
        rate = (self.scored + self.left_out) / self.seconds if self.seconds > 0 else 0.0
        return line + f", {rate:,.0f} rows/s"


def run_backfill(
    store: DuckDBStore,
    profile: Profile,
    slot: str,
    *,
    since: date | None = None,
    rate: float = 1.0,
    batch_size: int = 5_000,
    limit: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> BackfillSummary:
    """Score the rows `slot` has not scored (from `since` on, at most `limit`), batch by batch."""
    with store.one_scoring_job():
        store.ensure_tables()  # a scorer added since the last run gets its columns here
        return _backfill(store, profile, slot, since, rate, batch_size, limit, on_progress)


def _backfill(
    store: DuckDBStore,
    profile: Profile,
    slot: str,
    since: date | None,
    rate: float,
    batch_size: int,
    limit: int | None,
    on_progress: Callable[[int, int], None] | None,
) -> BackfillSummary:
    started = time.perf_counter()
    summary = BackfillSummary(slot, rate)
    scorer_column = SAMPLED_SCORERS[slot]
    needs = "retrieved_context" if slot == "rag_support" else None  # no context: nothing to support
    pending = store.unscored_count(scorer_column, since, needs)
    total = pending if limit is None else min(limit, pending)
    seen, after = 0, None
    while limit is None or seen < limit:
        want = batch_size if limit is None else min(batch_size, limit - seen)
        rows = store.unscored_rows(scorer_column, since, after, want, needs, TEXT_COLUMNS)
        if rows.num_rows == 0:
            break
        after = (rows["date"][-1].as_py(), rows["request_id"][-1].as_py())
        seen += rows.num_rows
        filled = _filled(rows, profile, slot, rate, summary)
        if filled.num_rows:
            store.fill_scores(filled.drop(["date"]), scorer_column, sorted(set(filled["date"].to_pylist()), key=str))
        if on_progress:
            on_progress(seen, total)
        if rows.num_rows < want:
            break
    summary.seconds = time.perf_counter() - started
    return summary


def _changes(
    rows: pa.Table, profile: Profile, slot: str, rate: float, summary: BackfillSummary
) -> tuple[pa.Table, dict[str, list], list[str | None], list[str | None]]:
    """The rows that change, with the slot's new columns, its new reasons and each row's new `sample_rates`:
    rows in the sample get scored; rows outside it only get the rate recorded, unless it already is (a rerun
    then changes nothing for them). Counts what it did in `summary`."""
    keep = in_sample(rows["request_id"].to_pylist(), rate)
    old_rates = [rates_from_text(text) for text in rows["sample_rates"].to_pylist()]
    changes = [k or old.get(slot) != rate for k, old in zip(keep, old_rates, strict=True)]
    rows = rows.filter(pa.array(changes, pa.bool_()))
    keep = [k for k, change in zip(keep, changes, strict=True) if change]
    old_rates = [old for old, change in zip(old_rates, changes, strict=True) if change]
    summary.scored += sum(keep)
    summary.left_out += len(keep) - sum(keep)
    if not rows.num_rows:
        return rows, {}, [], []
    columns, named_errors = score_slot(rows, profile, slot, keep)
    new_rates = [rates_text({**old, slot: rate}) for old in old_rates]
    return rows, columns, join_errors(named_errors, rows.num_rows), new_rates


def _filled(rows: pa.Table, profile: Profile, slot: str, rate: float, summary: BackfillSummary) -> pa.Table:
    """The slot's new columns for the rows that change (`_changes`), keyed by date and request id; `score_error`
    holds only the new reasons (the store appends them)."""
    rows, columns, errors, new_rates = _changes(rows, profile, slot, rate, summary)
    if not rows.num_rows:
        return rows
    fields = [pa.field("date", pa.date32()), pa.field("request_id", pa.string())]
    arrays = [rows["date"].combine_chunks(), rows["request_id"].combine_chunks()]
    for name, values in columns.items():
        fields.append(REQUESTS_ARROW.field(name))
        arrays.append(pa.array(values, REQUESTS_ARROW.field(name).type))
    fields += [pa.field("score_error", pa.string()), pa.field("sample_rates", pa.string())]
    arrays += [pa.array(errors, pa.string()), pa.array(new_rates, pa.string())]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def backfilled_rows(rows: pa.Table, profile: Profile, slot: str, rate: float, summary: BackfillSummary) -> pa.Table:
    """Whole requests rows in, the ones that change out, whole and in the same layout: the slot's columns set,
    its new reasons appended to `score_error`, `sample_rates` updated, every other column as it was (the Spark
    backfill, whose engine rewrites rows rather than updating columns in place)."""
    changed, columns, errors, new_rates = _changes(rows, profile, slot, rate, summary)
    if not changed.num_rows:
        return changed
    old_errors = changed["score_error"].to_pylist()
    merged = ["; ".join(r for r in (old, new) if r) or None for old, new in zip(old_errors, errors, strict=True)]
    for name, values in {**columns, "score_error": merged, "sample_rates": new_rates}.items():
        index = changed.schema.get_field_index(name)
        field = changed.schema.field(index)
        typed = pa.array(values, REQUESTS_ARROW.field(name).type).cast(field.type)
        changed = changed.set_column(index, field, typed)
    return changed
