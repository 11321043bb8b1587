"""Deterministic demo traffic: raw inference-table rows of one RAG chatbot endpoint during April 2026.

Design: every request is one *pool entry* (a request JSON, a response JSON and the status code they
imply) plus *per-request fields* (ids, time, model version, latency). The pool holds about ten
thousand entries and is built once per seed with ordinary Python. Per-request fields are a pure
function of (seed, row index, n_requests) through a counter-based hash, so any slice of rows is
generated on its own with numpy and pyarrow: batches concatenate to the full table and no per-row
Python runs at scale.

`generate_requests` uses the same split: it parses and scores each used pool entry once and fans the
result out to every request, overwriting the per-request columns. The few rows whose parsed form
depends on per-request fields (no request ids, metadata without a model version) are parsed as the
real rows they are, so the result equals parsing and scoring the whole payload.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import pyarrow as pa

from data_access.demo.pool import _Pool, _pool
from data_access.demo.rows import _client_ids, _load, _payload_table, _Plan, _plan, _uuid_strings
from data_access.demo.traffic import ENDPOINT_NAME, MODEL_NAME, MONTH_START_MS
from data_access.schema import LAYOUT_ARROW, REQUESTS_ARROW

T = TypeVar("T")

# =====================================================================================================
# Public API
# =====================================================================================================


BUILD_THREADS = 2


def _is_count(value: object, minimum: int) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= minimum


def _check(n_requests: int, seed: int, batch_rows: int = 1) -> tuple[int, int, int]:
    """The arguments as plain ints, or a ValueError naming the bad one."""
    if not _is_count(n_requests, 0):
        raise ValueError(f"n_requests must be a non-negative integer, got {n_requests!r}")
    if not _is_count(seed, 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not _is_count(batch_rows, 1):
        raise ValueError(f"batch_rows must be a positive integer, got {batch_rows!r}")
    return int(n_requests), int(seed), int(batch_rows)


def _threaded(build: Callable[[int], T], items: Sequence[int]) -> Iterator[T]:
    """`build(item)` for each item, in order, on BUILD_THREADS threads with a bounded lookahead.

    numpy and Arrow release the GIL, so both cores work while the caller consumes the previous result;
    at most BUILD_THREADS + 1 results are alive at once.
    """
    with ThreadPoolExecutor(max_workers=BUILD_THREADS) as executor:
        pending: deque[Future[T]] = deque()
        for item in items:
            pending.append(executor.submit(build, item))
            if len(pending) >= BUILD_THREADS:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _batch_plans(n_requests: int, seed: int, batch_rows: int) -> Iterator[_Plan]:
    _pool(seed)  # build the caches before worker threads ask for them
    _load(seed)
    return _threaded(
        lambda start: _plan(n_requests, seed, start, min(start + batch_rows, n_requests)),
        range(0, n_requests, batch_rows),
    )


def iter_payload_batches(
    n_requests: int, seed: int = 7, batch_rows: int = 1_000_000, layout: str = "legacy"
) -> Iterator[pa.Table]:
    """The rows of `generate_payload(n_requests, seed)` in order, at most `batch_rows` per table.

    `layout="gateway"` writes the same traffic as an AI Gateway inference table (data_access/demo/gateway.py).
    Arguments are checked on the call; batches are built lazily, on two threads, ahead of the caller.
    """
    n_requests, seed, batch_rows = _check(n_requests, seed, batch_rows)
    pool = _pool(seed)
    _load(seed)
    if layout == "gateway":
        from data_access.demo.gateway import gateway_table

    def build(start: int) -> pa.Table:
        plan = _plan(n_requests, seed, start, min(start + batch_rows, n_requests))
        if layout == "gateway":
            return gateway_table(plan, pool, seed, start)
        return _payload_table(plan, pool)

    return _threaded(build, range(0, n_requests, batch_rows))


def generate_payload(n_requests: int = 50_000, seed: int = 7, layout: str = "legacy") -> pa.Table:
    """A month of inference-table rows (PAYLOAD_ARROW, or GATEWAY_PAYLOAD_ARROW for `layout="gateway"`), exactly
    `n_requests` of them, in time order.

    Same seed, same table; another seed gives other ids, times, prompt mix and wording.
    """
    n_requests, seed, _ = _check(n_requests, seed)
    batches = list(iter_payload_batches(n_requests, seed, layout=layout))
    return pa.concat_tables(batches) if batches else LAYOUT_ARROW[layout].empty_table()


# Columns of the requests table that come from per-request fields rather than from the JSON texts.
PER_REQUEST_COLUMNS = (
    "request_id",
    "client_request_id",
    "request_time",
    "date",
    "endpoint_name",
    "model_name",
    "model_version",
    "status_code",
    "latency_ms",
    "sampling_fraction",
)


def generate_requests(
    n_requests: int, seed: int, parse_and_score: Callable[[pa.Table], pa.Table], batch_rows: int = 1_000_000
) -> pa.Table:
    """The requests table (REQUESTS_ARROW) of `generate_payload(n_requests, seed)`, same rows, same order.

    `parse_and_score` maps payload rows to requests rows (one per input, same order). It is called
    once, on one row per distinct pool entry plus the rows whose parse depends on per-request fields
    (no request ids, no model_version); the text-derived columns are fanned out by index and the
    PER_REQUEST_COLUMNS set vectorised.
    """
    n_requests, seed, batch_rows = _check(n_requests, seed, batch_rows)
    if n_requests == 0:
        return REQUESTS_ARROW.empty_table()
    pool = _pool(seed)
    plans = list(_batch_plans(n_requests, seed, batch_rows))
    used = np.unique(np.concatenate([p.entry for p in plans]))
    odd_plans = [_take_plan(p, np.flatnonzero(p.irregular)) for p in plans]
    payload = pa.concat_tables([_pool_payload(pool, used)] + [_payload_table(p, pool) for p in odd_plans])
    scored = parse_and_score(payload)
    if scored.num_rows != payload.num_rows:
        raise ValueError(f"parse_and_score returned {scored.num_rows} rows for {payload.num_rows} payload rows")
    scored = scored.select(REQUESTS_ARROW.names).cast(REQUESTS_ARROW).combine_chunks()
    first_odd = len(used) + np.cumsum([0] + [len(p.entry) for p in odd_plans])

    def build(k: int) -> pa.Table:
        plan = plans[k]
        source = np.searchsorted(used, plan.entry)
        source[plan.irregular] = first_odd[k] + np.arange(first_odd[k + 1] - first_odd[k])
        return _requests_batch(scored, plan, source)

    return pa.concat_tables(list(_threaded(build, range(len(plans)))))


def _pool_payload(pool: _Pool, entries: np.ndarray) -> pa.Table:
    """One payload row per pool entry; per-request fields are placeholders that get overwritten."""
    n = len(entries)
    ids = pa.array([f"pool-{e}" for e in entries.tolist()], pa.string())
    plan = _Plan(
        entry=entries,
        ts_ms=np.full(n, MONTH_START_MS, np.int64),
        version=np.full(n, 7, np.int8),
        status=pool.status[entries],
        latency_ms=np.ones(n, np.int64),
        id_hi=np.zeros(n, np.uint64),
        id_lo=np.zeros(n, np.uint64),
        client_id=np.zeros(n, np.uint64),
        has_client_id=np.zeros(n, bool),
        null_ids=np.zeros(n, bool),
        no_version=np.zeros(n, bool),
    )
    table = _payload_table(plan, pool)
    return table.set_column(table.schema.get_field_index("databricks_request_id"), "databricks_request_id", ids)


def _take_plan(plan: _Plan, index: np.ndarray) -> _Plan:
    return _Plan(**{name: getattr(plan, name)[index] for name in _Plan.__dataclass_fields__})


def _per_request_columns(plan: _Plan) -> dict[str, pa.Array]:
    n = len(plan.entry)
    zeros = pa.array(np.zeros(n, np.int64))
    columns = {
        "request_id": _uuid_strings(plan.id_hi, plan.id_lo, np.ones(n, bool)),
        "client_request_id": _client_ids(plan.client_id, plan.has_client_id),
        "request_time": pa.array(plan.ts_ms * 1000, pa.timestamp("us")),
        "date": pa.array((plan.ts_ms // 86_400_000).astype(np.int32), pa.date32()),
        "endpoint_name": pa.array([ENDPOINT_NAME], pa.string()).take(zeros),
        "model_name": pa.array([MODEL_NAME], pa.string()).take(zeros),
        "model_version": pa.array(["6", "7"], pa.string()).take(pa.array(plan.version.astype(np.int64) - 6)),
        "status_code": pa.array(plan.status, pa.int32()),
        "latency_ms": pa.array(plan.latency_ms, pa.int64()),
        "sampling_fraction": pa.array(np.ones(n), pa.float64()),
    }
    assert tuple(columns) == PER_REQUEST_COLUMNS
    return columns


def _requests_batch(scored: pa.Table, plan: _Plan, source: np.ndarray) -> pa.Table:
    """Scored pool rows fanned out to requests, with per-request columns from the plan.

    Irregular rows keep every column as parsed, since those rows were parsed as themselves.
    """
    index = pa.array(source)
    irregular = np.flatnonzero(plan.irregular)
    own = pa.array(source[irregular])
    overrides = _per_request_columns(plan)
    columns = []
    for field in REQUESTS_ARROW:
        parsed = scored.column(field.name).chunk(0)
        if field.name in overrides:
            columns.append(_patched(overrides[field.name], irregular, parsed.take(own)))
        else:
            columns.append(parsed.take(index))
    return pa.Table.from_arrays(columns, schema=REQUESTS_ARROW)


def _patched(values: pa.Array, rows: np.ndarray, replacements: pa.Array) -> pa.Array:
    """`values` with the entries at `rows` replaced by `replacements` (one take, only when needed)."""
    if len(rows) == 0:
        return values
    index = np.arange(len(values))
    index[rows] = len(values) + np.arange(len(rows))
    return pa.concat_arrays([values, replacements.cast(values.type)]).take(pa.array(index))
