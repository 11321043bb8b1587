"""The five-minute job at production scale: one incremental run against the full-table query, and the clean-run rate.

Run: `python -m bench.bench_job [--sizes 1000000 5000000 20000000] [--clean-rows 50000 1000000] [--spark]`.

Incremental run. A payload table of N demo rows (1M, 5M, 20M) with everything scored but the newest 5,000 rows,
the watermark where the previous run left it (the newest scored row) and the default late-arrival margin (60 min).
Timed, in the same process and on the same file:
- `full-table query`: the query the job ran before issue 16 for each batch of 5,000 rows (rank every payload row
  by id, anti-join the whole requests table): the baseline;
- `window query`: the same query restricted to the watermark's window, returning the same 5,000 rows (checked);
- `incremental run`: `jobs.score.run_once` end to end: read, parse, score, write 5,000 rows, move the watermark,
  refresh the rollups. After each repetition its rows and watermark are removed again, so every repetition does
  the same work. Each contender gets one warm-up and the same repetitions; the median is reported.
With `--spark`, the Spark engine's incremental run (`run_spark_stream`: a checkpoint that already read the old
files, the 5,000 new rows in a new file) against the Spark full-table pending query, on local[2].

Fixtures are built once per size in `--cache-dir` and reused: the payload comes from the demo generator (sizes
above 1M repeat the generated 1M-row month over earlier 30-day periods with fresh ids, see `_repeat_base`); the
requests rows of the already-scored part are derived in SQL from the payload (ids, times, dates, status, latency,
versions; texts and metrics left empty: the queries timed here read only ids and times), except rows without an
id, which the parser gives their content-hash id.

Clean-run rate: a fresh payload of `--clean-rows` rows scored from scratch by the job as it was before issue 16
(`previous_job_run` below: one whole-table query per batch) and by `run_once`, light profile, warm scorers.
The machine is shared: the load average is printed with every result.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.compute as pc

from bench.machine import describe
from data_access.config import TableName
from data_access.demo import generate_payload, iter_payload_batches
from data_access.duckdb_store import DuckDBStore, job_state_name
from data_access.payload import parse_payload
from data_access.queries.job import PayloadWindow, from_epoch_ms
from data_access.schema import PAYLOAD_ARROW
from jobs.score import DEFAULT_LATE_MARGIN, run_once
from jobs.scoring import parse_and_score, parse_failures, score_parsed
from metrics.profiles import Profile, build_profile

NEW_ROWS = 5_000
BASE_ROWS = 1_000_000  # larger fixtures repeat this many generated rows
PAYLOAD, REQUESTS = TableName("payload"), TableName("requests")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


def median_of(run: Callable[[], Any], repeats: int, after: Callable[[], None] | None = None) -> tuple[float, Any]:
    """One warm-up, then `repeats` timed runs; the median seconds and the last result."""
    result = None
    times = []
    for attempt in range(repeats + 1):
        started = time.perf_counter()
        result = run()
        if attempt:
            times.append(time.perf_counter() - started)
        if after is not None:
            after()
    return statistics.median(times), result


# --- Fixtures ---------------------------------------------------------------------------------------------


def build_fixture(folder: Path, rows: int, profile: Profile) -> Path:
    """A DuckDB file with `rows` payload rows, all but the newest NEW_ROWS scored, watermark and rollups set."""
    path = folder / f"job-{rows}.duckdb"
    if path.exists():
        return path
    building = path.with_name(path.name + ".building")
    building.unlink(missing_ok=True)
    started = time.perf_counter()
    store = DuckDBStore(building, PAYLOAD, REQUESTS)
    if rows > BASE_ROWS and rows % BASE_ROWS == 0:
        _repeat_base(folder, building, rows, profile)
    else:
        store.replace_payload(iter_payload_batches(rows, seed=7))
    store.ensure_tables()
    with duckdb.connect(str(building)) as con:
        (cutoff,) = con.execute(
            f"SELECT timestamp_ms FROM payload ORDER BY timestamp_ms LIMIT 1 OFFSET {rows - NEW_ROWS}"
        ).fetchall()[0]
        con.sql(f"""
            INSERT INTO requests (request_id, client_request_id, request_time, date, endpoint_name, model_name,
                                  model_version, status_code, latency_ms, sampling_fraction, scored_at)
            SELECT coalesce(databricks_request_id, client_request_id), client_request_id, epoch_ms(timestamp_ms),
                   date, element_at(request_metadata, 'endpoint_name')[1],
                   element_at(request_metadata, 'model_name')[1], element_at(request_metadata, 'model_version')[1],
                   status_code, execution_time_ms,
                   sampling_fraction, now()::TIMESTAMP
            FROM payload
            WHERE timestamp_ms < {cutoff} AND coalesce(databricks_request_id, client_request_id) IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY coalesce(databricks_request_id, client_request_id)
                                       ORDER BY timestamp_ms, execution_time_ms, request, response) = 1
        """)
        anonymous = con.sql(
            f"SELECT * FROM payload WHERE timestamp_ms < {cutoff} "
            "AND databricks_request_id IS NULL AND client_request_id IS NULL"
        ).to_arrow_table()
        (newest_scored,) = con.execute(
            f"SELECT max(timestamp_ms) FROM payload WHERE timestamp_ms < {cutoff}"
        ).fetchall()[0]
    if anonymous.num_rows:
        store.append(parse_and_score(anonymous, profile))
    store.append(parse_and_score(anonymous.slice(0, 0), profile), from_epoch_ms(newest_scored))  # the watermark
    store.refresh_rollups()
    building.replace(path)
    print(f"  built the {rows:,}-row fixture in {time.perf_counter() - started:,.0f} s ({load()})")
    return path


def _repeat_base(folder: Path, building: Path, rows: int, profile: Profile) -> None:
    """A payload of `rows` rows as the 1M-row demo month repeated over earlier 30-day periods (fresh ids).

    Generating 20M demo rows takes long on two cores; repeating the month keeps the traffic's density per hour
    (what the watermark's window holds) and its texts, and puts the newest 5,000 rows in the original month.
    """
    base = build_fixture(folder, BASE_ROWS, profile)
    DuckDBStore(building, PAYLOAD, REQUESTS).replace_payload(PAYLOAD_ARROW.empty_table())
    with duckdb.connect(str(building)) as con:
        con.execute(f"ATTACH '{base}' AS base (READ_ONLY)")
        for period in range(rows // BASE_ROWS - 1, -1, -1):  # oldest first, as an inference table grows
            suffix = f"'-p{period}'" if period else "''"
            con.execute(f"""
                INSERT INTO payload SELECT client_request_id || {suffix}, databricks_request_id || {suffix},
                       date - INTERVAL ({30 * period}) DAY, timestamp_ms - {30 * period * 86_400_000}, status_code,
                       execution_time_ms, request, response, sampling_fraction, request_metadata
                FROM base.payload ORDER BY timestamp_ms
            """)


def undo_run(path: Path, since: datetime, watermark: datetime) -> None:
    """Remove what an incremental run wrote (rows scored since `since`) and put the watermark back."""
    with duckdb.connect(str(path)) as con:
        con.execute("DELETE FROM requests WHERE scored_at >= ?", [since])
        con.execute(f'UPDATE "{job_state_name(REQUESTS).table}" SET watermark = ?', [watermark])


# --- Embedded engine --------------------------------------------------------------------------------------


def bench_incremental(path: Path, rows: int, profile: Profile, repeats: int) -> dict[str, float]:
    store = DuckDBStore(path, PAYLOAD, REQUESTS)
    mark = store.watermark()
    assert mark is not None
    window = PayloadWindow(mark - DEFAULT_LATE_MARGIN, mark - DEFAULT_LATE_MARGIN)
    full_s, full_rows = median_of(lambda: store.unscored(NEW_ROWS), repeats)
    window_s, window_rows = median_of(lambda: store.unscored(NEW_ROWS, window), repeats)
    same = full_rows["databricks_request_id"].equals(window_rows["databricks_request_id"])
    assert same and window_rows.num_rows > 0, "the window query must return the full-table query's rows"
    since = datetime.now(UTC).replace(tzinfo=None)

    def run() -> Any:
        return run_once(store, profile, batch_size=NEW_ROWS)

    run_s, summary = median_of(run, repeats, after=lambda: undo_run(path, since, mark))
    assert summary.written >= window_rows.num_rows, summary.line()
    print(
        f"  {rows:>11,} rows | full-table query {full_s:7.2f} s | window query {window_s:6.3f} s "
        f"({full_s / window_s:6.0f}x) | incremental run {run_s:5.2f} s ({full_s / run_s:5.1f}x the full-table "
        f"query alone) | {load()}"
    )
    return {"full_query_s": full_s, "window_query_s": window_s, "run_s": run_s}


# --- Spark engine -----------------------------------------------------------------------------------------


def bench_spark(path: Path, rows: int, folder: Path, repeats: int) -> dict[str, float]:
    """The Spark incremental run on the same rows: old files already read by the stream, the newest in a new one."""
    from jobs.spark_runs import SparkScoringJob, pending_payload, run_spark_stream
    from jobs.spark_session import local_spark
    from jobs.spark_tables import PAYLOAD_DDL, REQUESTS_DDL

    base = folder / f"spark-{rows}"
    shutil.rmtree(base, ignore_errors=True)
    (base / "payload").mkdir(parents=True)
    (base / "requests").mkdir(parents=True)
    requests_columns = [
        f'timezone(\'UTC\', "{name}") AS "{name}"' if name in ("request_time", "scored_at") else f'"{name}"'
        for name in duckdb.connect(str(path), read_only=True).sql("SELECT * FROM requests LIMIT 0").columns
    ]
    with duckdb.connect(str(path), read_only=True) as con:
        (cutoff,) = con.execute(
            f"SELECT timestamp_ms FROM payload ORDER BY timestamp_ms LIMIT 1 OFFSET {rows - NEW_ROWS}"
        ).fetchall()[0]
        con.sql(
            f"COPY (SELECT * FROM payload WHERE timestamp_ms < {cutoff}) TO '{base}/payload/old' "
            "(FORMAT parquet, PER_THREAD_OUTPUT)"
        )
        con.sql(f"COPY (SELECT {', '.join(requests_columns)} FROM requests) TO '{base}/requests/part.parquet'")
        new_rows = con.sql(f"SELECT * FROM payload WHERE timestamp_ms >= {cutoff}").to_arrow_table()
    spark = local_spark("local[2]", warehouse_dir=base / "warehouse")
    for name, ddl in (("payload", PAYLOAD_DDL), ("requests", REQUESTS_DDL)):
        spark.sql(f"DROP TABLE IF EXISTS {name}")
        spark.sql(f"CREATE TABLE {name} ({ddl}) USING parquet LOCATION '{base / name}'")
    checkpoint = base / "checkpoint"
    # The stream has read the old files (the previous runs did): a pass that marks them read and writes nothing.
    (
        spark.readStream.table("payload")
        .writeStream.foreachBatch(lambda batch, batch_id: None)
        .option("checkpointLocation", str(checkpoint))
        .trigger(availableNow=True)
        .start()
        .awaitTermination()
    )
    spark.createDataFrame(new_rows, PAYLOAD_DDL).coalesce(1).write.insertInto("payload")
    job = SparkScoringJob(PAYLOAD, REQUESTS, "light", checkpoint=str(checkpoint))
    saved = base / "checkpoint.saved"
    shutil.copytree(checkpoint, saved)
    before = {p.name for p in (base / "requests").iterdir()}

    def undo() -> None:
        for written in (base / "requests").iterdir():
            if written.name not in before:
                shutil.rmtree(written) if written.is_dir() else written.unlink()
        shutil.rmtree(checkpoint)
        shutil.copytree(saved, checkpoint)
        spark.sql("REFRESH TABLE requests")

    full_s, pending = median_of(lambda: pending_payload(spark, job, None).count(), repeats)
    run_s, summary = median_of(lambda: run_spark_stream(spark, job), repeats, after=undo)
    assert summary.written == pending, (pending, summary.line())
    print(
        f"  {rows:>11,} rows | Spark full-table pending query {full_s:7.2f} s | Spark incremental run "
        f"{run_s:6.2f} s ({full_s / run_s:5.1f}x the full-table query alone) | {load()}"
    )
    return {"spark_full_query_s": full_s, "spark_run_s": run_s}


# --- Clean-run rate ---------------------------------------------------------------------------------------


def previous_job_run(store: DuckDBStore, profile: Profile, batch_size: int = 5_000) -> int:
    """The job before issue 16, as the baseline: one whole-table query per batch, then every id-less row."""
    store.ensure_tables()
    store.pending_count()
    written = 0
    while (payload := store.unscored(batch_size)).num_rows:
        rows = parse_and_score(payload, profile)
        parse_failures(rows)
        written += store.append(rows)
    anonymous = store.payload_without_id()
    if anonymous.num_rows:
        parsed = parse_payload(anonymous)
        existing = store.existing_ids(parsed["request_id"])
        fresh = parsed.filter(pc.invert(pc.is_in(parsed["request_id"], value_set=existing)))
        written += store.append(score_parsed(fresh, profile)) if fresh.num_rows else 0
    store.refresh_rollups()
    return written


def bench_clean_run(folder: Path, rows: int, profile: Profile) -> None:
    payload = generate_payload(rows, seed=7)
    results = {}
    for label, run in (("previous job", previous_job_run), ("incremental job", run_once)):
        path = folder / f"clean-{rows}-{label.split()[0]}.duckdb"
        path.unlink(missing_ok=True)
        store = DuckDBStore(path, PAYLOAD, REQUESTS)
        store.replace_payload(payload)
        started = time.perf_counter()
        run(store, profile)  # type: ignore[operator]
        results[label] = time.perf_counter() - started
        with duckdb.connect(str(path), read_only=True) as con:
            (count,) = con.execute("SELECT count(*) FROM requests").fetchall()[0]
        path.unlink()
        rate = count / results[label]
        print(f"  clean run, {rows:>9,} rows | {label:15} {results[label]:7.1f} s = {rate:7,.0f} rows/s | {load()}")
    ratio = results["previous job"] / results["incremental job"]
    print(f"  clean run, {rows:>9,} rows | incremental job / previous job (time ratio): {ratio:.2f}x")


def warm(profile: Profile) -> None:
    """Load every scorer's model before timing (the job pays that once per process)."""
    parse_and_score(generate_payload(200, seed=3), profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 5_000_000, 20_000_000])
    parser.add_argument("--clean-rows", type=int, nargs="*", default=[50_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--spark", action="store_true", help="also the Spark engine's incremental run")
    parser.add_argument("--cache-dir", type=Path, default=Path("data/bench"), help="fixtures, built once per size")
    args = parser.parse_args()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    print(describe())
    profile = build_profile("light")
    warm(profile)
    print(f"Incremental run: {NEW_ROWS:,} new rows on payload tables of each size (median of {args.repeats})")
    for rows in args.sizes:
        path = build_fixture(args.cache_dir, rows, profile)
        bench_incremental(path, rows, profile, args.repeats)
        if args.spark:
            bench_spark(path, rows, args.cache_dir, args.repeats)
    if args.clean_rows:
        print("Clean run (light profile, warm scorers):")
    for rows in args.clean_rows:
        bench_clean_run(args.cache_dir, rows, profile)
    print(describe())


if __name__ == "__main__":
    main()
