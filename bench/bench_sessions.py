"""Concurrent sessions on one SQL warehouse: how long N sessions' queries take together, by connection pool size.

The warehouse is the loopback one (testkit.fake_warehouse) with the real databricks-sql-connector in front: each
statement spends `--delay` seconds "on the warehouse" (a wait, standing for warehouse time, not local CPU) and then
runs on DuckDB. Every contender runs the same N statements from N threads at once; the baseline is a pool of one
connection, which is how the app queued every session before the pool. A ratio is baseline time / contender time
for the same statements (higher is better).

    python -m bench.bench_sessions                 # 8 sessions, pools 1, 2, 4, 8, 0.25 s per statement
    python -m bench.bench_sessions --sessions 16 --pools 1,4,16 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.machine import describe
from data_access import queries
from data_access.config import DatabricksSettings, TableName
from data_access.queries import versions
from data_access.sources import DatabricksSQLSource
from testkit.fake_warehouse import FakeWarehouse, serve_warehouse
from testkit.tables import synthetic_requests, write_requests

TOKEN = "dapiBENCH-SESSIONS-TOKEN"
REQUESTS = TableName("requests")


def _one_round(warehouse: FakeWarehouse, pool_size: int, sessions: int) -> float:
    settings = DatabricksSettings(
        host=warehouse.host, http_path=warehouse.http_path, token=TOKEN, tls_ca_file=str(warehouse.cert_path)
    )
    source = DatabricksSQLSource(
        settings, timeout_s=600, connect_options={"enable_telemetry": False}, pool_size=pool_size
    )
    statement = versions.traffic(REQUESTS, queries.Filters(), "day", from_rollups=False).sql("databricks")
    try:
        _all_at_once(source, statement, sessions)  # warm-up, the same work: every connection the pool allows is open
        return _all_at_once(source, statement, sessions)
    finally:
        source.close()


def _all_at_once(source: DatabricksSQLSource, statement: str, sessions: int) -> float:
    failures: list[BaseException] = []

    def run() -> None:
        try:
            source.execute(statement)
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=run) for _ in range(sessions)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"a session failed: {failures[0]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument(
        "--pools", default="1,2,4,8", help="pool sizes to time, comma-separated; the first is the baseline"
    )
    parser.add_argument("--delay", type=float, default=0.25, help="seconds each statement spends on the warehouse")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    pools = [int(size) for size in args.pools.split(",")]
    print(describe())
    print(
        f"{args.sessions} sessions at once, {args.delay:g} s per statement on the loopback warehouse, "
        f"median of {args.repeat}"
    )
    with tempfile.TemporaryDirectory() as folder:
        path = write_requests(Path(folder) / "bench.duckdb", synthetic_requests(2_000), rollups=False)
        with serve_warehouse(path, token=TOKEN, delay_s=args.delay, direct_wait_s=0.05, poll_wait_s=0.02) as warehouse:
            times = {
                size: statistics.median(_one_round(warehouse, size, args.sessions) for _ in range(args.repeat))
                for size in pools
            }
    baseline = times[pools[0]]
    for size, seconds in times.items():
        print(
            f"pool {size:>3}: {seconds:6.2f} s for all {args.sessions}   {baseline / seconds:5.2f}x vs pool {pools[0]}"
        )


if __name__ == "__main__":
    main()
