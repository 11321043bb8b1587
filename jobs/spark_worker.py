"""The Spark engine's executor side: what runs inside `mapInArrow` on every Python worker.

Apart from the driver's code so a worker imports only Arrow, the parser and the scorers. Executors get it with the
rest of this repo's packages (`jobs.spark_session.ship_code`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa

from data_access.payload import parse_payload
from data_access.schema import JOB_INPUT_ARROW
from jobs.scoring import parse_and_score
from jobs.spark_tables import SPARK_REQUESTS_ARROW
from metrics.profiles import FullProfileOptions, Profile, build_profile

PARSED_ID = "_parsed_request_id"  # the id the parser gives a payload row (a content hash if it has none)

# One profile per (name, options) per Python worker process: scorers load their models on first use and
# keep them, so a model loads once per worker, not once per batch or task (Spark reuses its workers).
_WORKER_PROFILES: dict[tuple[str, FullProfileOptions | None], Profile] = {}
WORKER_STATS: dict[str, int] = {"profiles_built": 0, "batches_scored": 0}


def worker_profile(name: str, options: FullProfileOptions | None) -> Profile:
    key = (name, options if name == "full" else None)
    profile = _WORKER_PROFILES.get(key)
    if profile is None:
        profile = build_profile(name, options)
        _WORKER_PROFILES[key] = profile
        WORKER_STATS["profiles_built"] += 1
    return profile


def _as_payload(batch: pa.RecordBatch, layout: str = "legacy") -> pa.Table:
    """Spark's Arrow rows in the parser's input layout (Spark's UTC timestamps become naive UTC)."""
    schema = JOB_INPUT_ARROW[layout]
    return pa.Table.from_batches([batch]).select(schema.names).cast(schema)


def score_batches(
    batches: Iterator[pa.RecordBatch],
    profile_name: str,
    options: FullProfileOptions | None,
    scored_at: datetime,
    rows_read: Any = None,
    layout: str = "legacy",
    sample_rates: dict[str, float] | None = None,
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: payload batches in, requests batches out (parse and score, never raising per row).
    `sample_rates` limit scorers to the same hash sample of request ids as the embedded engine."""
    profile = worker_profile(profile_name, options)
    for batch in batches:
        if batch.num_rows == 0:
            continue
        rows = parse_and_score(_as_payload(batch, layout), profile, scored_at, sample_rates)
        rows = rows.cast(SPARK_REQUESTS_ARROW)
        WORKER_STATS["batches_scored"] += 1
        if rows_read is not None:
            rows_read.add(rows.num_rows)
        yield from rows.to_batches()


def with_parsed_id(batches: Iterator[pa.RecordBatch], layout: str = "legacy") -> Iterator[pa.RecordBatch]:
    """mapInArrow body: payload rows plus the id the parser gives them (a content hash when they have none)."""
    for batch in batches:
        payload = _as_payload(batch, layout)
        ids = parse_payload(payload)["request_id"]
        yield from payload.append_column(PARSED_ID, ids).to_batches()
