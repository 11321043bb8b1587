"""Requests tables that tests build and share: the demo generator's scored rows, and a synthetic table with every
awkward case the detail pages meet (two toxicity scorers, missing versions, null scores, estimated tokens, missing
latencies and status codes, parse errors, ids without a payload id, a duplicated id, hostile texts), with the
payload rows behind it; and writers that put them in a DuckDB data dir as the app reads it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from data_access.config import TableName
from data_access.rollup_refresh import refresh_rollups
from data_access.schema import PAYLOAD_ARROW, REQUESTS_ARROW

TABLE = TableName("requests")
DEMO_ROWS, DEMO_SEED = 6_000, 11
ROWS = 4_000
START = datetime(2026, 4, 1)
SCORERS = ("profanity-check-1.9.1", "detoxify-0.5.4")
TRICKY_PROMPTS = (
    "It's 50% off_the_table, isn't it?",
    "100%",
    "a_b",
    "axb",
    "C:\\Users\\me\\notebook.py fails with \\n in the path",
    "'; DROP TABLE requests; --",
    '" OR 1=1 --',
    "ÄRGER über Ünicode and ümlauts",
    "You are a STUPID useless bot",
    "How do I create a Delta table?",
    "Explain Unity Catalog grants",
)


def with_retrieved_context(parsed: pa.Table) -> pa.Table:
    """Every third row gets a retrieved context (the demo has no retriever): every sixth its own response, so
    the RAG support metric has values on both ends of its scale."""
    responses = parsed["response_text"].to_pylist()
    contexts = [
        None if i % 3 else (responses[i] if i % 6 == 0 else responses[(i + 1) % len(responses)])
        for i in range(len(responses))
    ]
    index = parsed.column_names.index("retrieved_context")
    return parsed.set_column(index, "retrieved_context", pa.array(contexts, pa.string()))


def demo_requests() -> pa.Table:
    from data_access.demo import generate_requests
    from data_access.payload import parse_payload
    from jobs.scoring import score_parsed
    from metrics.profiles import build_profile

    profile = build_profile("light")
    return generate_requests(
        DEMO_ROWS, DEMO_SEED, lambda payload: score_parsed(with_retrieved_context(parse_payload(payload)), profile)
    )


def write_requests(path: Path, rows: pa.Table, rollups: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:
        con.register("incoming", rows)
        con.execute("CREATE TABLE requests AS SELECT * FROM incoming")
        con.unregister("incoming")
        if rollups:
            refresh_rollups(con, TABLE)
    return path


def demo_directory(base: Path, rows: pa.Table, rollups: bool = True) -> Path:
    """A data dir holding inference.duckdb with the demo requests (built once per session and variant)."""
    folder = base / f"analytics-demo-{'rollups' if rollups else 'raw'}"
    if not (folder / "inference.duckdb").exists():
        write_requests(folder / "inference.duckdb", rows, rollups)
    return folder


def synthetic_requests(rows: int = ROWS, seed: int = 3) -> pd.DataFrame:
    """Requests over three days in April 2026, in time order, with every awkward case the pages meet."""
    rng = np.random.default_rng(seed)
    ms = np.sort(rng.integers(0, 3 * 86_400_000, rows))
    times = pd.Series(pd.to_datetime(ms, unit="ms", origin=pd.Timestamp(START)))
    later = np.arange(rows) > rows * 0.45
    version = np.where(later & (rng.random(rows) < 0.9), "7", "6").astype(object)
    version[rng.random(rows) < 0.01] = None
    endpoint = np.where(rng.random(rows) < 0.8, "ep_a", "ep_b").astype(object)
    version[(endpoint == "ep_b") & (times.dt.day == 2).to_numpy() & (rng.random(rows) < 0.1)] = "5"  # only on ep_b
    status = rng.choice([200, 200, 200, 200, 200, 200, 200, 200, 200, 429, 503], rows).astype(object)
    status[rng.random(rows) < 0.005] = None
    latency = np.exp(rng.normal(7, 0.6, rows)).round().astype(object)
    latency[rng.random(rows) < 0.01] = None
    latency[rng.random(rows) < 0.003] = 0
    prompts = np.array(TRICKY_PROMPTS, dtype=object)[rng.integers(0, len(TRICKY_PROMPTS), rows)]
    parse_failed = rng.random(rows) < 0.01
    prompts[parse_failed] = None
    responses = np.array([f"Answer {i % 37}: use 100% of the cluster_size" for i in range(rows)], dtype=object)
    responses[parse_failed | (rng.random(rows) < 0.01)] = None

    def toxicity(texts: np.ndarray) -> np.ndarray:
        scores = (rng.random(rows) ** 3).round(4).astype(object)  # skewed low, like real traffic
        scores[rng.random(rows) < 0.03] = 0.5  # exactly on the default threshold
        scores[rng.random(rows) < 0.02] = 0.37
        scores[pd.isna(texts)] = None
        scores[rng.random(rows) < 0.02] = None  # scorer failed on this text
        return scores

    prompt_tox, response_tox = toxicity(prompts), toxicity(responses)
    scorer = np.where(rng.random(rows) < 0.8, SCORERS[0], SCORERS[1]).astype(object)
    prompt_tokens = rng.integers(5, 400, rows).astype(object)
    completion_tokens = rng.integers(1, 900, rows).astype(object)
    no_tokens = rng.random(rows) < 0.01
    prompt_tokens[no_tokens] = None
    completion_tokens[no_tokens] = None
    total = [None if p is None else p + c for p, c in zip(prompt_tokens, completion_tokens, strict=True)]
    ids = [f"{rng.integers(0, 2**62):016x}-{i:05d}" for i in range(rows)]
    ids[7] = "sha1:" + "ab" * 20  # a payload row that had neither id
    frame = pd.DataFrame(
        {
            "request_id": ids,
            "client_request_id": [f"client-{i}" if i % 50 == 0 else None for i in range(rows)],
            "request_time": times,
            "date": times.dt.date,
            "endpoint_name": endpoint,
            "model_name": "chatbot",
            "model_version": version,
            "status_code": status,
            "latency_ms": latency,
            "sampling_fraction": 1.0,
            "request_format": "chat",
            "prompt_text": prompts,
            "response_text": responses,
            "request_bytes": 100,
            "response_bytes": 200,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": total,
            "tokens_estimated": rng.random(rows) < 0.15,
            "parse_error": np.where(parse_failed, "request: not JSON", None),
            "prompt_toxicity": prompt_tox,
            "response_toxicity": response_tox,
            "toxicity_scorer": scorer,
            "response_fk_grade": rng.normal(9, 3, rows).round(2),
            "readability_scorer": "textstat-0.7.8",
            "response_perplexity": np.exp(rng.normal(4, 0.5, rows)),
            "perplexity_scorer": "wordfreq-unigram-3.1.1",
            "score_error": np.where(pd.isna(prompt_tox) & pd.notna(prompts), "prompt_toxicity: failed", None),
            "scored_at": pd.Timestamp("2026-05-01"),
        }
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    # Columns this table does not model (newer layouts' fields) are null, as the payload-table layout leaves them.
    columns = [table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(len(frame), f.type)
               for f in REQUESTS_ARROW]  # fmt: skip
    return pa.Table.from_arrays(columns, schema=REQUESTS_ARROW)


def payload_rows(requests: pa.Table) -> pa.Table:
    """The payload rows behind the requests: by Databricks id, by client id only, one without ids, one id twice."""
    rows = []
    for i, r in enumerate(requests.to_pylist()):
        ts = int(r["request_time"].replace(tzinfo=UTC).timestamp() * 1000)
        no_ids = r["request_id"].startswith("sha1:")
        by_client = i % 50 == 0 and i > 0
        rows.append(
            {
                "client_request_id": r["request_id"] if by_client else None,
                "databricks_request_id": None if (no_ids or by_client) else r["request_id"],
                "date": r["date"],
                "timestamp_ms": ts,
                "status_code": r["status_code"],
                "execution_time_ms": r["latency_ms"],
                "request": json.dumps({"messages": [{"role": "user", "content": r["prompt_text"]}]}),
                "response": json.dumps({"choices": [{"message": {"content": r["response_text"]}}]}),
                "sampling_fraction": 1.0,
                "request_metadata": [("model_version", r["model_version"] or "")],
            }
        )
    retry = dict(rows[10], timestamp_ms=rows[10]["timestamp_ms"] + 5, request='{"retry": true}')
    decoy = dict(rows[12], databricks_request_id=None, client_request_id=None, timestamp_ms=rows[7]["timestamp_ms"] + 1)
    return pa.Table.from_pylist([*rows, retry, decoy], schema=PAYLOAD_ARROW)


def write_data_dir(folder: Path, requests: pa.Table, rollups: bool = True) -> Path:
    """A data dir as the app reads it: inference.duckdb with requests, payload and (optionally) rollups."""
    folder.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(folder / "inference.duckdb")) as con:
        con.register("incoming_requests", requests)
        con.register("incoming_payload", payload_rows(requests))
        con.execute("CREATE TABLE requests AS SELECT * FROM incoming_requests")
        con.execute("CREATE TABLE payload AS SELECT * FROM incoming_payload")
        if rollups:
            refresh_rollups(con, TABLE)
    return folder
