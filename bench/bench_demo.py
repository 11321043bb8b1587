"""Demo traffic generator throughput: vectorised generator vs a naive per-row Python loop.

Run from the repository root:
    python -m bench.bench_demo                 # baseline (100k rows) + generator at 1M rows, ~1 minute
    python -m bench.bench_demo --ten-million   # also 10M rows: whole table in memory (~13 GB) and streamed

Every measurement runs in a fresh child process, so each peak RSS is that measurement's own. The pool of
distinct texts is built (and timed) once per process before the clock starts, for the generator and the
baseline alike: both then produce rows of the same layout and distributions. The baseline draws each
row's fields with `random`, makes its id with `uuid`, picks its pool texts in a Python loop and builds the
Arrow table from Python rows.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import random
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench.machine import describe

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # `python bench/bench_demo.py` works too

import pyarrow as pa  # noqa: E402

from data_access import demo  # noqa: E402
from data_access.demo import traffic  # noqa: E402
from data_access.schema import PAYLOAD_ARROW, REQUESTS_ARROW  # noqa: E402

SEED = 7
BASELINE_ROWS = 100_000
TARGET_10M_SECONDS = 120.0


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# --- the baseline: one Python iteration per row -----------------------------------------------------


def naive_payload(n: int, seed: int) -> pa.Table:
    """Rows like the generator's, drawn one at a time (same pool, load curve, rollout and error rates)."""
    pool = demo._pool(seed)
    requests, responses = pool.requests.to_pylist(), pool.responses.to_pylist()
    status, tokens = pool.status.tolist(), pool.completion_tokens.tolist()
    cdf, prompt_cdf = demo._load(seed)[1].tolist(), pool.prompt_cdf.tolist()
    malformed_first, malformed_pairs = pool.malformed
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        u = (i + rng.random()) / n
        minute = min(bisect.bisect_right(cdf, u) - 1, traffic.MINUTES - 1)
        ts = traffic.MONTH_START_MS + minute * 60_000 + int(rng.random() * 60_000)
        share = 0.0
        for start, step_share in traffic.ROLLOUT:
            if ts >= start:
                share = step_share
        version = 7 if rng.random() < share else 6
        roll = rng.random()
        if roll < traffic.P_MALFORMED:
            entry = malformed_first + 2 * rng.randrange(malformed_pairs) + (version == 7)
        elif roll < traffic.P_MALFORMED + traffic.P_503 + traffic.P_504[version] + traffic.P_429 + traffic.P_400:
            first, count = pool.errors[rng.choice(["503", "504", "429", "400"])]
            entry = first + rng.randrange(count)
        else:
            prompt = min(bisect.bisect_right(prompt_cdf, rng.random()), len(prompt_cdf) - 1)
            entry = 2 * prompt + (version == 7)
        median = (420 + 11 * tokens[entry]) if version == 7 else (650 + 24 * tokens[entry])
        rows.append(
            {
                "client_request_id": f"chatui-{rng.getrandbits(64):016x}"
                if rng.random() < traffic.P_CLIENT_ID
                else None,
                "databricks_request_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "date": datetime.fromtimestamp(ts / 1000, UTC).date(),
                "timestamp_ms": ts,
                "status_code": status[entry],
                "execution_time_ms": int(rng.lognormvariate(math.log(median), 0.3)),
                "request": requests[entry],
                "response": responses[entry],
                "sampling_fraction": 1.0,
                "request_metadata": [
                    ("model_name", traffic.MODEL_NAME),
                    ("model_version", str(version)),
                    ("endpoint_name", traffic.ENDPOINT_NAME),
                ],
            }
        )
    return pa.Table.from_pylist(rows, schema=PAYLOAD_ARROW)


# --- measurements (each in its own child process) ---------------------------------------------------


def _parse_only(payload: pa.Table) -> pa.Table:
    """The scoring job's parse step with empty metric columns: isolates the generator's own cost."""
    from data_access.payload import parse_payload

    parsed = parse_payload(payload)
    for field in REQUESTS_ARROW:
        if field.name not in parsed.column_names:
            parsed = parsed.append_column(field, pa.nulls(parsed.num_rows, field.type))
    return parsed


def _stream(n: int) -> int:
    rows = 0
    for batch in demo.iter_payload_batches(n, SEED):
        rows += batch.num_rows  # each batch is dropped before the next one is built
    return rows


MEASUREMENTS = {
    "baseline": lambda n: naive_payload(n, SEED).num_rows,
    "payload": lambda n: demo.generate_payload(n, SEED).num_rows,
    "stream": _stream,
    "requests": lambda n: demo.generate_requests(n, SEED, _parse_only).num_rows,
}


def child(kind: str, n: int) -> None:
    start = time.perf_counter()
    demo._pool(SEED)
    demo._load(SEED)
    pool_seconds = time.perf_counter() - start
    start = time.perf_counter()
    rows = MEASUREMENTS[kind](n)
    seconds = time.perf_counter() - start
    assert rows == n, (rows, n)
    print(json.dumps({"seconds": seconds, "pool_seconds": pool_seconds, "peak_rss_mib": peak_rss_mib()}))


def measure(kind: str, n: int) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.bench_demo", "--child", kind, str(n)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(label: str, n: int, result: dict[str, float], baseline_rps: float | None) -> float:
    rps = n / result["seconds"]
    ratio = f"{rps / baseline_rps:7.1f}x baseline" if baseline_rps else " " * 17
    print(
        f"{label:<44} {n:>11,} rows {result['seconds']:8.2f} s {rps:>12,.0f} rows/s {ratio}"
        f"   peak RSS {result['peak_rss_mib']:>8,.0f} MiB"
    )
    return rps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ten-million", action="store_true", help="also generate 10M rows (needs ~14 GB RAM)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    print(f"Machine: {describe()}")
    base = measure("baseline", BASELINE_ROWS)
    print(f"Pool of distinct texts built in {base['pool_seconds']:.2f} s per process (not in the timings below)")
    baseline_rps = report("naive per-row Python loop (baseline)", BASELINE_ROWS, base, None)
    report("generate_payload", 1_000_000, measure("payload", 1_000_000), baseline_rps)
    report("iter_payload_batches, streamed", 1_000_000, measure("stream", 1_000_000), baseline_rps)
    report("generate_requests (parse each pool entry once)", 1_000_000, measure("requests", 1_000_000), baseline_rps)
    if args.ten_million:
        whole = measure("payload", 10_000_000)
        report("generate_payload", 10_000_000, whole, baseline_rps)
        report("iter_payload_batches, streamed", 10_000_000, measure("stream", 10_000_000), baseline_rps)
        verdict = "OK" if whole["seconds"] < TARGET_10M_SECONDS else "TOO SLOW"
        print(f"generate_payload(10M): {whole['seconds']:.1f} s vs target < {TARGET_10M_SECONDS:.0f} s: {verdict}")


if __name__ == "__main__":
    main()
