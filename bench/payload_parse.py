"""Payload parser throughput on typical chat rows.

Run: `python -m bench.payload_parse [--rows N]`. The baseline, measured in the same run, is the floor any parser
pays: `json.loads` of every request and response and nothing else. The target is >= 30,000 rows/s single-threaded
for `parse_payload` (Arrow table in, Arrow table out). The same rows are also parsed in the AI Gateway layout
(same bodies, the served-entity columns the job joins on); its rate is reported beside the legacy one (target: within
10%).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import random
import time
from collections.abc import Callable

import pyarrow as pa

from bench.machine import describe
from data_access.payload import parse_payload, parse_row
from data_access.schema import ENTITY_COLUMNS, GATEWAY_PAYLOAD_ARROW, PAYLOAD_ARROW

_TEXT = (
    "model serving endpoint latency token vector index retrieval answer question databricks cluster "
    "notebook table catalog schema request response the a of to and in is for with on how what why"
)
_WORDS = _TEXT.split(" ")


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."


def _chat_row(rng: random.Random, index: int) -> dict[str, object]:
    """One chat row shaped like a RAG chatbot's: system prompt, a few turns, usage in the response."""
    messages = [{"role": "system", "content": _sentence(rng, 40)}]
    for _ in range(rng.randint(0, 2)):
        messages.append({"role": "user", "content": _sentence(rng, rng.randint(8, 30))})
        messages.append({"role": "assistant", "content": _sentence(rng, rng.randint(30, 80))})
    messages.append({"role": "user", "content": _sentence(rng, rng.randint(8, 30))})
    answer = " ".join(_sentence(rng, rng.randint(10, 25)) for _ in range(rng.randint(2, 6)))
    response = {
        "id": f"chatcmpl-{index}",
        "object": "chat.completion",
        "model": "llama",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 120, "total_tokens": 420},
    }
    timestamp_ms = 1_735_689_600_000 + index * 1000
    return {
        "client_request_id": None,
        "databricks_request_id": f"req-{index:08d}",
        "date": dt.date(2025, 1, 1),
        "timestamp_ms": timestamp_ms,
        "status_code": 200,
        "execution_time_ms": rng.randint(200, 4000),
        "request": json.dumps({"messages": messages, "max_tokens": 500, "temperature": 0.1}),
        "response": json.dumps(response),
        "sampling_fraction": 1.0,
        "request_metadata": [("endpoint_name", "chatbot"), ("model_name", "bot"), ("model_version", "7")],
    }


def _gateway_row(row: dict[str, object]) -> dict[str, object]:
    """The same request as the AI Gateway layout logs it, with the served-entity columns the job joins on."""
    timestamp_ms = int(row["timestamp_ms"])  # type: ignore[call-overload]
    return {
        "request_date": row["date"],
        "databricks_request_id": row["databricks_request_id"],
        "client_request_id": row["client_request_id"],
        "request_time": dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=timestamp_ms),
        "status_code": row["status_code"],
        "sampling_fraction": row["sampling_fraction"],
        "execution_duration_ms": row["execution_time_ms"],
        "request": row["request"],
        "response": row["response"],
        "served_entity_id": "3f9c1c2e-served-entity",
        "logging_error_codes": [],
        "requester": "analyst@example.com",
        "endpoint_name": "chatbot",
        "entity_name": "bot",
        "entity_version": "7",
        "served_entity_name": "bot-7",
    }


def _best_rate(run: Callable[[], object], rows: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return rows / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = random.Random(7)
    rows = [_chat_row(rng, index) for index in range(args.rows)]
    table = pa.Table.from_pylist(rows, schema=PAYLOAD_ARROW)
    requests = table.column("request").to_pylist()
    responses = table.column("response").to_pylist()
    mean_bytes = (table.column("request").nbytes + table.column("response").nbytes) / args.rows

    def json_only() -> None:
        for request, response in zip(requests, responses, strict=True):
            json.loads(request)
            json.loads(response)

    baseline = _best_rate(json_only, args.rows, args.repeats)
    vector = _best_rate(lambda: parse_payload(table), args.rows, args.repeats)
    per_row = _best_rate(lambda: [parse_row(row) for row in rows], args.rows, args.repeats)
    gateway_schema = pa.schema([*GATEWAY_PAYLOAD_ARROW, *(pa.field(name, pa.string()) for name in ENTITY_COLUMNS)])
    gateway_table = pa.Table.from_pylist([_gateway_row(row) for row in rows], schema=gateway_schema)
    gateway = _best_rate(lambda: parse_payload(gateway_table), args.rows, args.repeats)

    print(f"machine: {describe()}")
    print(f"python {platform.python_version()}, pyarrow {pa.__version__}")
    print(f"rows: {args.rows} typical chat rows, {mean_bytes:,.0f} bytes of request+response JSON per row")
    print(f"baseline json.loads only : {baseline:>10,.0f} rows/s  (1.00x)")
    print(f"parse_payload (Arrow)    : {vector:>10,.0f} rows/s  ({vector / baseline:.2f}x of baseline)")
    print(f"parse_row (dicts)        : {per_row:>10,.0f} rows/s  ({per_row / baseline:.2f}x of baseline)")
    verdict = "met" if gateway >= 0.9 * vector else "NOT met"
    print(
        f"parse_payload, AI Gateway: {gateway:>10,.0f} rows/s  ({gateway / baseline:.2f}x of baseline, "
        f"{gateway / vector:.2f}x of the legacy layout; target within 10%: {verdict})"
    )
    print(f"target 30,000 rows/s     : {'met' if vector >= 30_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
