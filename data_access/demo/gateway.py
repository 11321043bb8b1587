"""The demo traffic as an AI Gateway inference table, plus the served-entities table that maps it.

Same requests as the legacy demo row for row (same pool entries, ids, times, statuses, latencies), written in the
gateway layout: `served_entity_id` instead of request metadata, a `requester` per request and
`logging_error_codes` where the payload was not logged. Everything new is drawn from its own counter streams
(`S_REQUESTER`, `S_TROLL`), numbered after the legacy generator's, so the legacy demo is untouched by this module.

Layout differences that are the layouts' own, not the generator's: a request whose metadata lacked its model
version (legacy) names a served entity the served-entities table does not hold (gateway); a request too large to
log has a null request in both, and here also the reason MAX_REQUEST_SIZE_EXCEEDED.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa

from data_access.demo.pool import _Pool
from data_access.demo.rows import _client_ids, _Plan, _uniform, _uuid_strings
from data_access.demo.traffic import ENDPOINT_NAME, MODEL_NAME, ROLLOUT
from data_access.schema import GATEWAY_PAYLOAD_ARROW, SERVED_ENTITIES_ARROW

# New per-request streams: after the legacy generator's 14 (0..13), which stay as they are.
S_REQUESTER, S_TROLL = 14, 15

SERVED_ENTITY_IDS = {6: "5c0f9a7e1b2d4e3f8a6b7c8d9e0f1a26", 7: "9e2b7c4d6f1a4b8c9d0e1f2a3b4c5d67"}
# The id a no-version request names: a served entity of an endpoint configuration the table no longer holds.
UNKNOWN_ENTITY_ID = "0d1e2f3a4b5c4d6e8f9a0b1c2d3e4f50"


# The endpoint's configurations: (change time, config version, {model version: traffic share}).
def _utc(ms: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(milliseconds=ms)


CONFIGS: tuple[tuple[datetime, int, dict[int, float]], ...] = (
    (datetime(2026, 3, 18, 9, 30), 1, {6: 1.0}),
    (_utc(ROLLOUT[0][0]), 2, {6: 0.9, 7: 0.1}),
    (_utc(ROLLOUT[1][0]), 3, {6: 0.5, 7: 0.5}),
    (_utc(ROLLOUT[2][0]), 4, {7: 1.0}),
)

# Who calls the endpoint: the chat front end's service principal carries most traffic, analysts and
# engineers the rest (a few far more than others). Fictional people at example domains.
FRONTEND_PRINCIPAL = "3f6c1a2b-8d4e-4f7a-9b0c-5e2d1f8a7c64"
BATCH_PRINCIPAL = "b81d4e6a-2c3f-4a5b-8e7d-9f0a1c2b3d45"
PEOPLE = (
    "maria.lopez@example.com",
    "jun.tanaka@example.com",
    "amara.okafor@example.com",
    "lukas.becker@example.com",
    "priya.raman@example.com",
    "tom.hughes@example.com",
    "sofia.rossi@example.com",
    "ahmed.haddad@example.com",
    "emma.larsen@example.com",
    "diego.fernandez@example.com",
    "chloe.martin@example.com",
    "noah.fischer@example.org",
    "hana.kim@example.org",
    "olivia.brown@example.org",
    "mateo.silva@example.org",
    "ines.dubois@example.org",
    "yusuf.demir@example.net",
    "lena.novak@example.net",
    "kofi.mensah@example.net",
    "ava.wilson@example.net",
)
# A few requesters send most toxic prompts (what "who sends toxic prompts" should find).
TROLLS = ("tom.hughes@example.com", "kofi.mensah@example.net", "lena.novak@example.net")
TROLL_SHARE = 0.7  # of toxic prompts; the rest come from anyone, like other prompts
REQUESTERS = (FRONTEND_PRINCIPAL, BATCH_PRINCIPAL, *PEOPLE)
_PEOPLE_ZIPF = 1.0 / (np.arange(len(PEOPLE)) + 2.0) ** 0.9
_WEIGHTS = np.concatenate([[0.35, 0.05], 0.6 * _PEOPLE_ZIPF / _PEOPLE_ZIPF.sum()])
_CDF = np.cumsum(_WEIGHTS / _WEIGHTS.sum())


def _requesters(plan: _Plan, pool: _Pool, seed: int, rows: np.ndarray) -> pa.Array:
    u = _uniform(seed, S_REQUESTER, rows)
    anyone = np.minimum(np.searchsorted(_CDF, u, side="right"), len(REQUESTERS) - 1)
    toxic_entries = np.zeros(len(pool.requests), bool)  # prompt k's answers are entries 2k and 2k+1
    toxic_entries[: 2 * len(pool.kinds)] = np.repeat(np.array(pool.kinds) == "toxic", 2)
    toxic = toxic_entries[plan.entry]
    troll_u = _uniform(seed, S_TROLL, rows)
    troll = toxic & (troll_u < TROLL_SHARE)
    which_troll = np.minimum((troll_u / TROLL_SHARE * len(TROLLS)).astype(np.int64), len(TROLLS) - 1)
    names = pa.array([*REQUESTERS, *TROLLS], pa.string())
    index = np.where(troll, len(REQUESTERS) + which_troll, anyone)
    return names.take(pa.array(index))


def _served_entity_ids(plan: _Plan) -> pa.Array:
    ids = pa.array([SERVED_ENTITY_IDS[6], SERVED_ENTITY_IDS[7], UNKNOWN_ENTITY_ID], pa.string())
    index = np.where(plan.no_version, 2, plan.version.astype(np.int64) - 6)
    return ids.take(pa.array(index))


def gateway_table(plan: _Plan, pool: _Pool, seed: int, start: int) -> pa.Table:
    """Rows [start, start + len(plan)) of the demo month in the AI Gateway layout."""
    n = len(plan.entry)
    rows = np.arange(start, start + n, dtype=np.uint64)
    entry = pa.array(plan.entry)
    requests = pool.requests.take(entry)
    not_logged = requests.is_null()
    codes = pa.array([None, ["MAX_REQUEST_SIZE_EXCEEDED"]], pa.list_(pa.string()))
    columns = {
        "request_date": pa.array((plan.ts_ms // 86_400_000).astype(np.int32), pa.date32()),
        "databricks_request_id": _uuid_strings(plan.id_hi, plan.id_lo, ~plan.null_ids),
        "client_request_id": _client_ids(plan.client_id, plan.has_client_id),
        "request_time": pa.array(plan.ts_ms * 1000, pa.timestamp("us")),
        "status_code": pa.array(plan.status, pa.int32()),
        "sampling_fraction": pa.array(np.ones(n), pa.float64()),
        "execution_duration_ms": pa.array(plan.latency_ms, pa.int64()),
        "request": requests,
        "response": pool.responses.take(entry),
        "served_entity_id": _served_entity_ids(plan),
        "logging_error_codes": codes.take(pa.array(np.asarray(not_logged).astype(np.int64))),
        "requester": _requesters(plan, pool, seed, rows),
    }
    return pa.table(columns, schema=GATEWAY_PAYLOAD_ARROW)


def served_entities() -> pa.Table:
    """`system.serving.served_entities` rows of the demo endpoint: one per served entity and configuration, change
    times at the v6 -> v7 canary steps. The entity a no-version request names is absent on purpose."""
    rows = []
    for change_time, config_version, shares in CONFIGS:
        for version in shares:
            rows.append(
                {
                    "served_entity_id": SERVED_ENTITY_IDS[version],
                    "endpoint_name": ENDPOINT_NAME,
                    "entity_name": MODEL_NAME,
                    "entity_version": str(version),
                    "served_entity_name": f"{MODEL_NAME}-{version}",
                    "entity_type": "CUSTOM_MODEL",
                    "endpoint_config_version": config_version,
                    "change_time": change_time,
                }
            )
    return pa.Table.from_pylist(rows, schema=SERVED_ENTITIES_ARROW)
