"""Per-request fields (ids, time, version, status, latency) as a pure function of (seed, row): a counter-based
hash, so any row range is computed alone, and the payload rows built from them as Arrow columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import numpy as np
import pyarrow as pa

from data_access.demo.pool import _Pool, _pool
from data_access.demo.traffic import (
    ENDPOINT_NAME,
    INCIDENT,
    MINUTES,
    MODEL_NAME,
    MONTH_START_MS,
    P_400,
    P_429,
    P_503,
    P_504,
    P_CLIENT_ID,
    P_DUPLICATE,
    P_MALFORMED,
    P_NO_VERSION,
    P_NULL_IDS,
    ROLLOUT,
)
from data_access.schema import PAYLOAD_ARROW

# =====================================================================================================
# Per-request fields: a counter-based hash of (seed, stream, row) so any row range is computed alone.
# =====================================================================================================

_M64 = (1 << 64) - 1
# One independent random stream per per-request quantity.
(
    S_TIME,
    S_VERSION,
    S_CATEGORY,
    S_PICK,
    S_LAT1,
    S_LAT2,
    S_TAIL,
    S_ID1,
    S_ID2,
    S_CLIENT,
    S_CLIENT_ID,
    S_ODD,
    S_DUP,
    S_INCIDENT,
) = range(14)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijective, well-mixed uint64 -> uint64 map (numpy wraps on overflow)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _bits(seed: int, stream: int, rows: np.ndarray) -> np.ndarray:
    key = (seed * 0xD1B54A32D192ED03 + (stream + 1) * 0x8CB92BA72F3D8DD7) & _M64
    return _mix64(rows ^ np.uint64(key))


def _uniform(seed: int, stream: int, rows: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) per row."""
    return (_bits(seed, stream, rows) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _normal(seed: int, rows: np.ndarray) -> np.ndarray:
    """Standard normal per row (Box-Muller on two streams)."""
    u1, u2 = _uniform(seed, S_LAT1, rows), _uniform(seed, S_LAT2, rows)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


# --- load curve -------------------------------------------------------------------------------------


EASTER_HOLIDAYS = (2, 5)  # day offsets of April 3 and April 6, 2026


def _bump(hour: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((hour - centre) / width) ** 2)


@lru_cache(maxsize=4)
def _load(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(relative load per minute of April, mean 1; cumulative share of traffic at each minute edge).

    Two business-hours peaks in UTC (Europe mornings, US afternoons), quiet nights, weekends at about
    40%, European Easter holidays (Good Friday Apr 3, Easter Monday Apr 6) at 70%, adoption growing
    over the month, and day-to-day and hour-to-hour noise.
    """
    rng = np.random.default_rng([seed, 0x10AD])
    minute = np.arange(MINUTES)
    hour = (minute % 1440) / 60.0
    day = minute // 1440
    weekday = (datetime(2026, 4, 1).weekday() + day) % 7
    workday = 0.12 + 0.95 * _bump(hour, 10.5, 2.2) + 1.0 * _bump(hour, 15.5, 2.4) + 0.35 * _bump(hour, 20.5, 2.0)
    weekend = 0.12 + 0.3 * _bump(hour, 14.0, 4.0)
    shape = np.where(weekday >= 5, weekend, workday)
    growth = 1.0 + 0.25 * day / 30.0
    holiday = np.where(np.isin(day, EASTER_HOLIDAYS), 0.7, 1.0)
    day_noise = rng.lognormal(0.0, 0.08, 30)[day]
    hour_noise = rng.lognormal(0.0, 0.12, MINUTES // 60)[minute // 60]
    weight = shape * growth * holiday * day_noise * hour_noise
    relative = weight / weight.mean()
    cdf = np.concatenate([[0.0], np.cumsum(weight) / weight.sum()])
    return relative, cdf


def _timestamps(n: int, seed: int, rows: np.ndarray) -> np.ndarray:
    """Stratified draw from the load curve: row i lands in the i-th 1/n slice of traffic.

    Timestamps rise with the row index, and every minute carrying at least 2/n of the month's traffic
    gets at least one request.
    """
    _, cdf = _load(seed)
    u = (rows.astype(np.float64) + _uniform(seed, S_TIME, rows)) / n
    minute = np.clip(np.searchsorted(cdf, u, side="right") - 1, 0, MINUTES - 1)
    within = np.clip((u - cdf[minute]) / (cdf[minute + 1] - cdf[minute]), 0.0, 0.999999)
    return MONTH_START_MS + minute * 60_000 + (within * 60_000).astype(np.int64)


def _versions(seed: int, rows: np.ndarray, ts_ms: np.ndarray) -> np.ndarray:
    """6 or 7 per row following the canary rollout."""
    share = np.zeros(len(ts_ms))
    for start, step_share in ROLLOUT:
        share = np.where(ts_ms >= start, step_share, share)
    return np.where(_uniform(seed, S_VERSION, rows) < share, 7, 6).astype(np.int8)


# --- per-request plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Everything about a slice of requests except the pool strings."""

    entry: np.ndarray  # int64 pool entry
    ts_ms: np.ndarray
    version: np.ndarray  # int8, 6 or 7
    status: np.ndarray  # int32
    latency_ms: np.ndarray
    id_hi: np.ndarray  # uint64 halves of the databricks request id
    id_lo: np.ndarray
    client_id: np.ndarray  # uint64 bits of the client request id
    has_client_id: np.ndarray  # bool
    null_ids: np.ndarray  # bool: databricks_request_id missing
    no_version: np.ndarray  # bool: request_metadata lacks model_version

    @property
    def irregular(self) -> np.ndarray:
        """Rows whose parsed form depends on per-request fields."""
        return self.null_ids | self.no_version


def _entries(seed: int, src: np.ndarray, ts_ms: np.ndarray, version: np.ndarray, pool: _Pool) -> np.ndarray:
    """Pick each request's pool entry: an error kind by its rate, else a prompt answered by its version."""
    relative, _ = _load(seed)
    load = relative[(ts_ms - MONTH_START_MS) // 60_000]
    u = _uniform(seed, S_CATEGORY, src)
    pick = _uniform(seed, S_PICK, src)
    is_v7 = (version == 7).astype(np.int64)
    entry = 2 * np.minimum(np.searchsorted(pool.prompt_cdf, pick, side="right"), len(pool.prompt_cdf) - 1) + is_v7
    in_incident = (ts_ms >= INCIDENT[0]) & (ts_ms < INCIDENT[1]) & (version == 7)
    incident_503 = in_incident & (_uniform(seed, S_INCIDENT, src) < INCIDENT[2])
    p504 = np.where(version == 7, P_504[7], P_504[6])
    p429 = P_429 * np.clip(load, 0.3, 3.0)
    edges = [P_MALFORMED, P_503, p504, p429, P_400]
    lower = np.zeros(len(src))
    for kind, width in zip(["malformed", "503", "504", "429", "400"], edges, strict=True):
        chosen = (u >= lower) & (u < lower + width)
        if kind == "malformed":
            first, pairs = pool.malformed
            picked = first + 2 * np.minimum((pick * pairs).astype(np.int64), pairs - 1) + is_v7
        else:
            first, count = pool.errors[kind]
            picked = first + np.minimum((pick * count).astype(np.int64), count - 1)
        entry = np.where(chosen, picked, entry)
        lower = lower + width
    first, count = pool.errors["503"]
    return np.where(incident_503, first + np.minimum((pick * count).astype(np.int64), count - 1), entry)


def _latencies(
    seed: int,
    rows: np.ndarray,
    entry: np.ndarray,
    ts_ms: np.ndarray,
    version: np.ndarray,
    status: np.ndarray,
    pool: _Pool,
) -> np.ndarray:
    """Execution time: log-normal around a version- and length-dependent median, with a Pareto tail."""
    relative, _ = _load(seed)
    load = relative[(ts_ms - MONTH_START_MS) // 60_000]
    z = _normal(seed, rows)
    tail_u = _uniform(seed, S_TAIL, rows)
    completion = pool.completion_tokens[entry]
    prompt = pool.prompt_tokens[entry]
    v7 = version == 7
    median = np.where(v7, 420.0 + 11.0 * completion + 0.15 * prompt, 650.0 + 24.0 * completion + 0.3 * prompt)
    median *= 1.0 + 0.12 * (np.clip(load, 0.2, 3.0) - 1.0)
    ok = median * np.exp(0.3 * z)
    tail_p = np.where(v7, 0.015, 0.03)
    pareto = np.where(tail_u < tail_p, (tail_u / tail_p + 1e-9) ** (-1.0 / 1.6), 1.0)
    ok = np.minimum(ok * pareto, 110_000.0)
    latency = np.select(
        [status == 200, status == 503, status == 504, status == 429],
        [ok, 60.0 * np.exp(0.6 * z), 120_000.0 + 1_200.0 * (z + 3.0), 8.0 + 4.0 * np.exp(0.5 * z)],
        default=20.0 * np.exp(0.5 * z) + 3.0,
    )
    return np.maximum(latency, 1.0).astype(np.int64)


def _flag(seed: int, stream: int, rows: np.ndarray, share: float) -> np.ndarray:
    return _uniform(seed, stream, rows) < share


def _plan(n: int, seed: int, start: int, stop: int) -> _Plan:
    """Per-request fields of rows [start, stop) of an n-request month."""
    pool = _pool(seed)
    rows = np.arange(start, stop, dtype=np.uint64)
    # A retry logged twice: the row repeats the previous row's request (id, content), logged later.
    duplicate = (
        (rows > 0) & _flag(seed, S_DUP, rows, P_DUPLICATE) & ~_flag(seed, S_DUP, rows - np.uint64(1), P_DUPLICATE)
    )
    src = rows - duplicate.astype(np.uint64)
    ts_ms = _timestamps(n, seed, rows)
    ts_src = ts_ms.copy()
    ts_src[duplicate] = _timestamps(n, seed, src[duplicate])
    version = _versions(seed, src, ts_src)
    entry = _entries(seed, src, ts_src, version, pool)
    status = pool.status[entry]
    odd = _uniform(seed, S_ODD, src)
    null_ids = odd < P_NULL_IDS
    no_version = (odd >= P_NULL_IDS) & (odd < P_NULL_IDS + P_NO_VERSION)
    client_u = _uniform(seed, S_CLIENT, src)
    has_client_id = (client_u < P_CLIENT_ID) | (null_ids & (odd < P_NULL_IDS / 2))
    return _Plan(
        entry=entry,
        ts_ms=ts_ms,
        version=version,
        status=status,
        latency_ms=_latencies(seed, rows, entry, ts_ms, version, status, pool),
        id_hi=_bits(seed, S_ID1, src),
        id_lo=_bits(seed, S_ID2, src),
        client_id=_bits(seed, S_CLIENT_ID, src),
        has_client_id=has_client_id,
        null_ids=null_ids,
        no_version=no_version,
    )


# =====================================================================================================
# Arrow columns, built from fixed-width byte matrices (no per-row Python).
# =====================================================================================================

_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
# Byte value -> its two hex digits, as one uint16 in memory order, so one lookup writes two characters.
_HEX_PAIRS = np.frombuffer(b"".join(f"{b:02x}".encode() for b in range(256)), np.uint16)


def _hex_chars(words: Sequence[np.ndarray]) -> np.ndarray:
    """(n, 16 * len(words)) ASCII hex digits of uint64 columns, most significant nibble first."""
    big_endian = np.stack(words, axis=1).astype(">u8").view(np.uint8)
    return _HEX_PAIRS[big_endian].view(np.uint8).reshape(len(words[0]), 16 * len(words))


def _fixed_width_strings(chars: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """A string array from an (n, width) uint8 matrix; rows where `valid` is false are null (and empty)."""
    n, width = chars.shape
    if valid is None or valid.all():
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
        buffers = [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars))]
        return pa.Array.from_buffers(pa.string(), n, buffers, null_count=0)
    offsets = np.concatenate([[0], np.cumsum(valid * width)]).astype(np.int32)
    validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
    buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars[valid]))]
    return pa.Array.from_buffers(pa.string(), n, buffers, null_count=int(n - valid.sum()))


def _uuid_strings(hi: np.ndarray, lo: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Version-4 UUID text (8-4-4-4-12) from 128 random bits per row."""
    digits = _hex_chars([hi, lo])
    digits[:, 12] = ord("4")
    digits[:, 16] = _HEX[8 + (lo & np.uint64(3)).astype(np.intp)]
    chars = np.full((len(hi), 36), ord("-"), np.uint8)
    for out, (a, b) in zip((0, 9, 14, 19, 24), ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32)), strict=True):
        chars[:, out : out + b - a] = digits[:, a:b]
    return _fixed_width_strings(chars, valid)


CLIENT_PREFIX = b"chatui-"


def _client_ids(bits: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Client request ids as the chat front end sets them: `chatui-` + 16 hex digits."""
    prefix = np.broadcast_to(np.frombuffer(CLIENT_PREFIX, np.uint8), (len(bits), len(CLIENT_PREFIX)))
    return _fixed_width_strings(np.concatenate([prefix, _hex_chars([bits])], axis=1), valid)


METADATA_KEYS = pa.array(["model_name", "model_version", "endpoint_name"], pa.string())
METADATA_VALUES = pa.array([MODEL_NAME, "6", "7", ENDPOINT_NAME], pa.string())


def _metadata(version: np.ndarray, no_version: np.ndarray) -> pa.Array:
    """request_metadata maps; rows flagged `no_version` lack the model_version key."""
    n = len(version)
    slot = np.tile(np.arange(3), n)
    keep = ~(np.repeat(no_version, 3) & (slot == 1))
    value = np.where(slot == 0, 0, np.where(slot == 2, 3, np.repeat(version - 5, 3)))
    offsets = np.concatenate([[0], np.cumsum(3 - no_version.astype(np.int32))]).astype(np.int32)
    keys = METADATA_KEYS.take(pa.array(slot[keep]))
    values = METADATA_VALUES.take(pa.array(value[keep]))
    map_type = PAYLOAD_ARROW.field("request_metadata").type
    return pa.MapArray.from_arrays(pa.array(offsets), keys, values, type=map_type)


def _payload_table(plan: _Plan, pool: _Pool) -> pa.Table:
    entry = pa.array(plan.entry)
    n = len(plan.entry)
    columns = {
        "client_request_id": _client_ids(plan.client_id, plan.has_client_id),
        "databricks_request_id": _uuid_strings(plan.id_hi, plan.id_lo, ~plan.null_ids),
        "date": pa.array((plan.ts_ms // 86_400_000).astype(np.int32), pa.date32()),
        "timestamp_ms": pa.array(plan.ts_ms, pa.int64()),
        "status_code": pa.array(plan.status, pa.int32()),
        "execution_time_ms": pa.array(plan.latency_ms, pa.int64()),
        "request": pool.requests.take(entry),
        "response": pool.responses.take(entry),
        "sampling_fraction": pa.array(np.ones(n), pa.float64()),
        "request_metadata": _metadata(plan.version, plan.no_version),
    }
    return pa.table(columns, schema=PAYLOAD_ARROW)
