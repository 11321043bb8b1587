"""The scoring job on Spark: the same parser and scorers as the embedded job, run by Spark executors.

    python -m jobs.score --engine spark [--payload-table T] [--requests-table T] [--checkpoint PATH] [--profile P]
    python -m jobs.score --engine spark --full-rescan | --limit N   # the whole table, one commit
    python -m jobs.spark_score --from-duckdb data/inference.duckdb   # copy the demo payload into local Spark

Which rows: a scheduled run reads the payload table as a Structured Streaming source (`availableNow`, with a
checkpoint), so it reads only what was added since the last run (`run_spark_stream`). In each micro-batch the
Ibis `unscored_payload` query, compiled for the "databricks" dialect and run by `spark.sql`, keeps the rows
whose id the requests table lacks, so "which ids are pending" and "which duplicate wins" have one definition
for both engines (the parity tests run that SQL on Spark and DuckDB). Rows with neither id get their
content-hash id from the parser first and are anti-joined on it. The pending rows are spread over the executors
and scored by `mapInArrow` with `jobs.scoring.parse_and_score` (Arrow in, Arrow out: no pandas round trip that
would mangle maps, nulls in integer columns or timestamps). Models load once per Python worker process.

Writing: one commit per micro-batch (per run for `--full-rescan` and `--limit`). New rows are anti-joined on
`request_id` against the target once more at write time, so a replayed micro-batch, a rerun or a retried task
never writes an id twice: a Delta target gets `MERGE INTO ... WHEN NOT MATCHED THEN INSERT *` (one atomic Delta
commit), any other format (parquet, the local default) an INSERT of the anti-joined rows.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from data_access.config import Settings, TableName, settings_for_command
from data_access.errors import DataAccessError
from data_access.layouts import detect_layout, local_served_entities, served_entities_problem
from data_access.payload import parse_payload
from data_access.queries.job import PayloadSpec, payload_without_id, served_entities_probe, unscored_payload
from data_access.schema import (
    JOB_INPUT_ARROW,
    LAYOUT_SCHEMAS,
    PAYLOAD_SCHEMA,
    REQUESTS_ARROW,
    REQUESTS_SCHEMA,
    SERVED_ENTITIES_SCHEMA,
    column_ddl,
)
from jobs.rollups import refresh_spark_rollups
from jobs.scoring import JobSummary, parse_and_score, run_every
from jobs.spark_session import job_session, ship_code
from metrics.profiles import FullProfileOptions, Profile, build_profile

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


T = TypeVar("T")

# Spark's LIMIT takes a 32-bit integer (a larger one fails analysis): --limit is capped at this many rows.
SPARK_MAX_LIMIT = 2**31 - 1

# Spark timestamps are instants: hand them over as UTC so the session time zone cannot shift them.
SPARK_REQUESTS_ARROW = pa.schema(
    [pa.field(f.name, pa.timestamp("us", tz="UTC")) if pa.types.is_timestamp(f.type) else f for f in REQUESTS_ARROW]
)
_PARSED_ID = "_parsed_request_id"


REQUESTS_DDL = column_ddl(REQUESTS_SCHEMA)
# The requests table is partitioned by date: a run's rollup refresh then reads only the dates it wrote.
PARTITIONED_BY_DATE = "PARTITIONED BY (`date`)"
PAYLOAD_DDL = column_ddl(PAYLOAD_SCHEMA)


def quoted(name: TableName) -> str:
    """A validated table name, quoted for Spark SQL."""
    return name.sql("databricks")


# ---------------------------------------------------------------------------------------------------------
# Executor side
# ---------------------------------------------------------------------------------------------------------

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
        yield from payload.append_column(_PARSED_ID, ids).to_batches()


# ---------------------------------------------------------------------------------------------------------
# Driver side
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SparkScoringJob:
    payload: TableName
    requests: TableName
    profile: str = "light"
    options: FullProfileOptions | None = None  # the full profile's models; read on the driver, sent to workers
    partitions: int | None = None  # scoring tasks; default: the cluster's default parallelism
    rows_per_batch: int = 5_000  # rows handed to the scorers at once inside a task
    payload_format: str = "auto"  # auto (from the table's columns), legacy or gateway
    served_entities: TableName | None = None  # maps gateway rows' served_entity_id; unreadable: null versions
    # Incremental runs: where the stream remembers what it has read (a folder or a Unity Catalog volume path),
    # and at most how many of the payload table's files one micro-batch takes (None: the source's default).
    checkpoint: str | None = None
    files_per_batch: int | None = None
    # Scorer slot -> share of requests it scores (core/sampling.py), as sorted pairs so the job stays hashable.
    sample_rates: tuple[tuple[str, float], ...] = ()


def table_exists(spark: SparkSession, name: TableName) -> bool:
    try:
        return bool(spark.catalog.tableExists(str(name)))
    except Exception:  # a missing catalog or schema raises instead of answering False
        return False


def table_provider(spark: SparkSession, name: TableName) -> str:
    """The table's format ('delta', 'parquet', ...), lower case."""
    for row in spark.sql(f"DESCRIBE TABLE EXTENDED {quoted(name)}").collect():
        if row["col_name"] == "Provider":
            return str(row["data_type"]).strip().lower()
    return "unknown"


def partitioned_by_date(spark: SparkSession, name: TableName) -> bool:
    return any(c.isPartition and c.name.lower() == "date" for c in spark.catalog.listColumns(str(name)))


def partition_command(requests: TableName) -> str:
    """The one-off command that partitions an older requests table by date (`partition_requests_by_date`)."""
    return f"`python -m jobs.spark_score --partition-requests --requests-table {requests}`"


def unpartitioned_warning(requests: TableName) -> str:
    return (
        f"warning: the requests table {requests} is not partitioned by date, so every rollup refresh reads all of "
        f"it: run {partition_command(requests)} once"
    )


def partition_requests_by_date(spark: SparkSession, requests: TableName) -> bool:
    """Rewrite an unpartitioned requests table partitioned by date (False: it already was). Delta: one atomic
    `CREATE OR REPLACE TABLE ... AS`, keeping the table's history; parquet: copied aside, then recreated from the
    copy (the copy stays if the recreation fails: `<table>__copy`)."""
    if partitioned_by_date(spark, requests):
        return False
    table = quoted(requests)
    if table_provider(spark, requests) == "delta":
        spark.sql(f"CREATE OR REPLACE TABLE {table} {PARTITIONED_BY_DATE} AS SELECT * FROM {table}")
        return True
    copy = replace(requests, table=f"{requests.table}__copy")
    spark.sql(f"DROP TABLE IF EXISTS {quoted(copy)}")
    spark.sql(f"CREATE TABLE {quoted(copy)} USING parquet AS SELECT * FROM {table}")
    if spark.table(str(copy)).count() != spark.table(str(requests)).count():
        raise DataAccessError(f"Copying {requests} lost rows; {requests} is left as it was.")
    # Recreated under its own name (a renamed partitioned table keeps its old partition paths in the catalog)
    spark.sql(f"DROP TABLE {table}")
    spark.sql(f"CREATE TABLE {table} USING parquet {PARTITIONED_BY_DATE} AS SELECT * FROM {quoted(copy)}")
    spark.sql(f"DROP TABLE {quoted(copy)}")
    return True


def ensure_tables(spark: SparkSession, job: SparkScoringJob) -> tuple[PayloadSpec, str | None]:
    """Create or complete the requests table; the payload's layout, and why served entities cannot be read."""
    if not table_exists(spark, job.payload):
        raise DataAccessError(
            f"The payload table {job.payload} is not in the Spark catalog.",
            "Point --payload-table at the inference table (catalog.schema.table), "
            "or copy the demo payload in with `python -m jobs.spark_score --from-duckdb PATH`.",
        )
    # No USING clause: Delta on Databricks, the session's default format (parquet) elsewhere.
    spark.sql(f"CREATE TABLE IF NOT EXISTS {quoted(job.requests)} ({REQUESTS_DDL}) {PARTITIONED_BY_DATE}")
    add_missing_columns(spark, job.requests)
    layout = detect_layout(lambda sql: spark.sql(sql).columns, job.payload, "databricks", job.payload_format)
    if layout != "gateway" or job.served_entities is None:
        return PayloadSpec(job.payload, layout), None
    try:
        spark.sql(served_entities_probe(job.served_entities).sql("databricks")).collect()
    except Exception as error:  # AnalysisException: missing table or schema; a denied grant on Databricks
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        return PayloadSpec(job.payload, layout), served_entities_problem(job.served_entities, reason)
    return PayloadSpec(job.payload, layout, job.served_entities), None


def add_missing_columns(spark: SparkSession, requests: TableName) -> None:
    """Columns added to the requests layout since the table was created (a new scorer's pair, the AI Gateway
    columns): they are nullable and added last, so existing rows read them as null."""
    present = {name.lower() for name in spark.table(str(requests)).columns}
    missing = {name: dtype for name, dtype in REQUESTS_SCHEMA.items() if name.lower() not in present}
    if missing:
        spark.sql(f"ALTER TABLE {quoted(requests)} ADD COLUMNS ({column_ddl(missing)})")


def pending_payload(
    spark: SparkSession, job: SparkScoringJob, limit: int | None, spec: PayloadSpec | None = None
) -> DataFrame:
    """Payload rows whose id the requests table lacks, one per id (the embedded job's rule, same SQL)."""
    spec = spec or PayloadSpec(job.payload)
    size = None if limit is None else min(limit, SPARK_MAX_LIMIT)
    keyed = spark.sql(unscored_payload(spec, job.requests, size).sql("databricks"))
    if limit is not None:
        return keyed  # like the embedded job, a limited run takes only rows that have an id
    without_id = spark.sql(payload_without_id(spec).sql("databricks"))
    names = JOB_INPUT_ARROW[spec.layout].names
    id_schema = f"{column_ddl(_input_schema(spec.layout))}, `{_PARSED_ID}` STRING"
    add_id = functools.partial(with_parsed_id, layout=spec.layout)
    hashed = without_id.mapInArrow(add_id, id_schema).dropDuplicates([_PARSED_ID])
    done = spark.table(str(job.requests)).select("request_id")
    fresh = hashed.join(done, hashed[_PARSED_ID] == done["request_id"], "left_anti").select(*names)
    return keyed.unionByName(fresh)


def _input_schema(layout: str) -> Any:
    """The Ibis schema of the parser's input in a layout (gateway: plus the joined entity columns)."""
    import ibis

    return ibis.Schema.from_pyarrow(JOB_INPUT_ARROW[layout])


def score_frame(
    payload: DataFrame,
    job: SparkScoringJob,
    scored_at: datetime,
    partitions: int,
    rows_read: Any = None,
    layout: str = "legacy",
) -> DataFrame:
    """Requests rows for payload rows, scored in `partitions` parallel tasks."""
    body = functools.partial(
        score_batches,
        profile_name=job.profile,
        options=job.options,
        scored_at=scored_at,
        rows_read=rows_read,
        layout=layout,
        sample_rates=dict(job.sample_rates),
    )
    return payload.repartition(partitions).mapInArrow(body, REQUESTS_DDL)


def write_new_rows(spark: SparkSession, rows: DataFrame, requests: TableName) -> None:
    """Append rows whose request id the target lacks, in one commit; an id is never written twice.

    `rows` hold each id once (`pending_payload` de-duplicates); the anti-join here guards against a run
    that committed the same ids meanwhile (a concurrent job, or a rerun of a task after a lost executor).
    """
    if table_provider(spark, requests) == "delta":
        view = "inference_explorer_incoming"
        rows.createOrReplaceTempView(view)
        try:
            spark.sql(
                f"MERGE INTO {quoted(requests)} AS target USING {view} AS incoming "
                "ON target.request_id = incoming.request_id WHEN NOT MATCHED THEN INSERT *"
            )
        finally:
            spark.catalog.dropTempView(view)
        return
    target = spark.table(str(requests))
    new = rows.join(target.select("request_id"), "request_id", "left_anti")
    # insertInto is by position, and a parquet table lists its partition column (date) last
    new.select(*target.columns).write.insertInto(str(requests))


def _run_counts(spark: SparkSession, requests: TableName, scored_at: datetime, summary: JobSummary) -> list[Any]:
    """Rows this run wrote (they carry its `scored_at`): how many, failed to parse, not logged, without an entity;
    returns their dates (the rollups' dates to refresh)."""
    from pyspark.sql import functions as F

    table = spark.table(str(requests)).filter(F.col("scored_at") == F.lit(scored_at))
    unmapped = F.col("served_entity_id").isNotNull() & F.col("model_version").isNull()
    row = table.agg(
        F.count(F.lit(1)).alias("written"),
        F.count("parse_error").alias("failed"),
        F.count("logging_error_codes").alias("not_logged"),
        F.count(F.when(unmapped, 1)).alias("unmapped"),
        F.collect_set("date").alias("dates"),
    ).collect()[0]
    summary.written, summary.failed = int(row["written"]), int(row["failed"])
    summary.not_logged, summary.unmapped = int(row["not_logged"]), int(row["unmapped"])
    return list(row["dates"])


def _start_run(spark: SparkSession, job: SparkScoringJob, warn: Callable[[str], None] | None) -> PayloadSpec:
    """Tables checked, the served-entities problem said once, code shipped, the Arrow batch size set."""
    spec, entities_problem = ensure_tables(spark, job)
    say = warn or (lambda message: print(message, file=sys.stderr, flush=True))
    if entities_problem:
        say(f"warning: {entities_problem}")
    if not partitioned_by_date(spark, job.requests):
        say(unpartitioned_warning(job.requests))
    ship_code(spark)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(job.rows_per_batch))
    return spec


def _partitions(spark: SparkSession, job: SparkScoringJob) -> int:
    return job.partitions or max(spark.sparkContext.defaultParallelism, 1)


def _finish(
    spark: SparkSession, job: SparkScoringJob, summary: JobSummary, scored_at: datetime, rows_read: Any
) -> None:
    summary.read = int(rows_read.value)
    spark.catalog.refreshTable(str(job.requests))  # a stream wrote through its own session: list the files again
    dates = _run_counts(spark, job.requests, scored_at, summary)
    refresh_spark_rollups(spark, job.requests, dates)  # what the pages read: only the dates this run wrote


def run_spark_once(
    spark: SparkSession,
    job: SparkScoringJob,
    limit: int | None = None,
    warn: Callable[[str], None] | None = None,
    full_rescan: bool = False,
) -> JobSummary:
    """Score every pending payload row (at most `limit`) on Spark and write them in one commit.

    This checks the whole payload table against the whole requests table: `--limit` and `--full-rescan` runs.
    Scheduled runs use `run_spark_stream`, which reads only what is new.
    `warn` hears, once per run, that the served-entities table cannot be read (default: stderr)."""
    started = time.perf_counter()
    summary = JobSummary(full_rescan=full_rescan, sample_rates=dict(job.sample_rates))
    if limit == 0:
        ensure_tables(spark, job)
        return summary
    spec = _start_run(spark, job, warn)
    scored_at = datetime.now(UTC)  # one value per run: it marks this run's rows, and a retried task repeats it
    rows_read = spark.sparkContext.accumulator(0)
    pending = pending_payload(spark, job, limit, spec)
    scored = score_frame(pending, job, scored_at, _partitions(spark, job), rows_read, spec.layout)
    write_new_rows(spark, scored, job.requests)
    _finish(spark, job, summary, scored_at, rows_read)
    summary.seconds = time.perf_counter() - started
    return summary


STREAM_VIEW = "inference_explorer_new_payload"


def run_spark_stream(
    spark: SparkSession, job: SparkScoringJob, warn: Callable[[str], None] | None = None
) -> JobSummary:
    """Score what was added to the payload table since the last run: Structured Streaming, `availableNow`.

    The stream's checkpoint remembers which of the payload table's files (Delta: commits) were read, so a run
    reads only new ones, late rows included, whatever their request time. Each micro-batch is scored and
    written like a whole run of `run_spark_once` (MERGE on Delta), then the checkpoint commits it. A run
    killed between the write and the checkpoint commit replays that micro-batch next time, and the replay's
    anti-join on `request_id` finds its rows written: exactly one clean run's rows, under kills too.
    """
    if not job.checkpoint:
        raise DataAccessError(
            "The Spark job needs a checkpoint location to read the payload table incrementally.",
            "Pass --checkpoint (a folder, or a Unity Catalog volume path such as /Volumes/CAT/SCHEMA/VOLUME/scoring).",
        )
    started = time.perf_counter()
    summary = JobSummary(sample_rates=dict(job.sample_rates))
    spec = _start_run(spark, job, warn)
    partitions = _partitions(spark, job)
    scored_at = datetime.now(UTC)
    rows_read = spark.sparkContext.accumulator(0)

    def write_batch(batch: DataFrame, batch_id: int) -> None:
        session = batch.sparkSession  # the stream's own session: the view must live there
        batch.createOrReplaceTempView(STREAM_VIEW)
        try:
            pending = pending_payload(session, job, None, replace(spec, table=TableName(STREAM_VIEW)))
            scored = score_frame(pending, job, scored_at, partitions, rows_read, spec.layout)
            write_new_rows(session, scored, job.requests)
        finally:
            session.catalog.dropTempView(STREAM_VIEW)

    reader = spark.readStream.option("skipChangeCommits", "true")  # Delta: compaction and deletes are not new rows
    if job.files_per_batch:
        reader = reader.option("maxFilesPerTrigger", str(job.files_per_batch))
    query = (
        reader.table(str(job.payload))
        .writeStream.foreachBatch(write_batch)
        .option("checkpointLocation", job.checkpoint)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    _finish(spark, job, summary, scored_at, rows_read)
    summary.seconds = time.perf_counter() - started
    return summary


def default_checkpoint(settings: Settings, job: SparkScoringJob) -> str | None:
    """Locally, a folder under the data directory per (payload, requests) pair; on Databricks, none: pass one."""
    if on_databricks():
        return None
    return str(settings.data_dir / "spark" / "checkpoints" / f"{job.payload}--{job.requests}")


def spark_failure(error: Exception) -> DataAccessError:
    """One line a person can act on from a Spark/py4j failure, without the JVM or Python stack."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    python_error = next((line for line in reversed(lines) if _looks_like_python_error(line)), None)
    reason = python_error or (lines[0] if lines else type(error).__name__)
    return DataAccessError(f"The Spark scoring job failed: {reason[:300]}")


def _looks_like_python_error(line: str) -> bool:
    head = line.split(":", 1)[0].strip()
    return head.endswith(("Error", "Exception")) and " " not in head and not line.startswith(" ")


def on_databricks() -> bool:
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def spark_job_lock(settings: Settings, requests: TableName) -> contextlib.AbstractContextManager[None]:
    """One Spark scoring job at a time per requests table, on this machine: a file lock under the data folder,
    taken before the session starts, so a second job stops at once, reads nothing and says which lock it met.

    A file lock, not a lock row in a table: a row cannot be released by a job that dies (a crashed driver would
    block every later run until someone deletes it), whereas the operating system drops a dead holder's file lock.
    It only covers jobs on one machine, which is what local Spark is. On Databricks, drivers share no disk: there
    the job definition's `max_concurrent_runs: 1` keeps runs apart (docs/databricks_job.md), and the write's
    anti-join on request_id (MERGE) keeps even an overlapping run from writing an id twice."""
    if on_databricks():
        return contextlib.nullcontext()
    from data_access.duckdb_store import one_job_at_a_time  # not on executors: they never take it

    return one_job_at_a_time(settings.data_dir / "spark" / f"{requests}.scoring.lock", f"{requests} on Spark")


def main_spark(args: argparse.Namespace, settings: Settings) -> int:
    """`python -m jobs.score --engine spark`: same flags and exit codes as the embedded engine."""
    try:
        served_entities = TableName.parse(args.served_entities_table)
        job = SparkScoringJob(
            payload=TableName.parse(args.payload_table),
            requests=TableName.parse(args.requests_table),
            profile=args.profile,
            options=FullProfileOptions.from_env(os.environ) if args.profile == "full" else None,
            rows_per_batch=args.batch_size,
            payload_format=args.payload_format,
            served_entities=served_entities if on_databricks() else local_served_entities(served_entities),
            files_per_batch=args.files_per_batch,
            sample_rates=tuple(sorted(args.sample_rates.items())),
        )
        job = replace(job, checkpoint=args.checkpoint or default_checkpoint(settings, job))
        with spark_job_lock(settings, job.requests):
            spark = job_session(settings)

            def once() -> JobSummary:
                if args.limit is not None or args.full_rescan:
                    summary = run_spark_once(spark, job, args.limit, full_rescan=args.full_rescan)
                else:
                    summary = run_spark_stream(spark, job)
                if not args.no_monitors:
                    evaluate_monitors_on_spark(settings, spark, job.requests)
                return summary

            return run_every(lambda: guarded(once), args.watch, "every committed micro-batch is kept")
    except (DataAccessError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def evaluate_monitors_on_spark(settings: Settings, spark: SparkSession, requests: TableName) -> None:
    """After each run, as the embedded engine does: the rules read the requests table through this session, and
    the alert tables live beside it when it is a Delta table (written by MERGE). Local Spark's parquet tables
    cannot MERGE: there they are kept in an embedded file beside the local catalog (`spark/alerts.duckdb` under
    the data folder)."""
    from data_access.sources import SparkSource
    from jobs.score import evaluate_monitors

    delta = table_provider(spark, requests) == "delta"
    local_file = settings.data_dir / "spark" / "alerts.duckdb"
    evaluate_monitors(settings, local_file, requests, SparkSource(spark), alerts_in_source=delta)


def guarded(run: Callable[[], T]) -> T:
    try:
        return run()
    except DataAccessError:
        raise
    except Exception as error:  # AnalysisException, PythonException, Py4JJavaError: one line each
        if type(error).__module__.startswith(("pyspark", "py4j")):
            raise spark_failure(error) from None
        raise


# ---------------------------------------------------------------------------------------------------------
# Local convenience: the embedded demo's payload into the local Spark catalog
# ---------------------------------------------------------------------------------------------------------


def write_payload_table(
    spark: SparkSession, name: TableName, payload: pa.Table, mode: str = "overwrite", layout: str = "legacy"
) -> int:
    """(Re)write a payload table in the Spark catalog from Arrow rows in a layout (legacy or gateway)."""
    return write_table(spark, name, payload, LAYOUT_SCHEMAS[layout], mode)


def write_table(spark: SparkSession, name: TableName, rows: pa.Table, schema: Any, mode: str = "overwrite") -> int:
    """(Re)write a Spark table with an Ibis schema's columns from Arrow rows (payload, served entities)."""
    arrow = schema.to_pyarrow()
    rows = rows.select(arrow.names).cast(arrow)
    ddl = column_ddl(schema)
    frame = spark.createDataFrame(rows, schema=ddl) if rows.num_rows else spark.createDataFrame([], ddl)
    frame.write.mode(mode).saveAsTable(str(name))
    return int(spark.table(str(name)).count())


def _copy_from_duckdb(settings: Settings, duckdb_path: Path, payload: TableName) -> list[str]:
    """Copy the payload table, and for the gateway layout its served-entities table, into the local Spark catalog
    (under the same local name the job reads: `serving.served_entities`); what was copied, one line each."""
    import duckdb

    from data_access.duckdb_store import quoted as duckdb_quoted

    if not duckdb_path.exists():
        raise DataAccessError(f"{duckdb_path} does not exist.", "Start the app once to build the demo data.")
    entities = local_served_entities(settings.served_entities_table)
    with duckdb.connect(str(duckdb_path), read_only=True) as con:
        rows = con.sql(f"SELECT * FROM {duckdb_quoted(settings.payload_table)}").to_arrow_table()
        layout = detect_layout(lambda sql: rows.column_names, payload, "duckdb", settings.payload_format)
        entity_rows = None
        if layout == "gateway":
            try:
                entity_rows = con.sql(f"SELECT * FROM {duckdb_quoted(entities)}").to_arrow_table()
            except duckdb.CatalogException:  # no such table in the file: the rows still copy, without versions
                entity_rows = None
    spark = job_session(settings)
    done = [
        f"wrote {write_payload_table(spark, payload, rows, layout=layout):,} payload rows to the Spark table {payload}"
    ]
    if layout == "gateway" and entity_rows is None:
        done.append(f"{duckdb_path.name} has no served-entities table {entities}: gateway rows will have no version")
    elif entity_rows is not None:
        if entities.schema:
            spark.sql(f"CREATE DATABASE IF NOT EXISTS `{entities.schema}`")
        count = write_table(spark, entities, entity_rows, SERVED_ENTITIES_SCHEMA)
        done.append(f"wrote {count:,} served entities to the Spark table {entities} (the job reads it there locally)")
    return done


def main(argv: list[str] | None = None) -> int:
    settings = settings_for_command()
    parser = argparse.ArgumentParser(
        prog="python -m jobs.spark_score",
        description="Copy the embedded demo's payload table (and, for the AI Gateway layout, its served-entities "
        "table) into the local Spark catalog, to try `python -m jobs.score --engine spark` on this machine; or "
        "partition an existing requests table by date (--partition-requests).",
    )
    parser.add_argument("--from-duckdb", type=Path, default=settings.duckdb_path, help="(default: %(default)s)")
    parser.add_argument("--payload-table", default=str(settings.payload_table), help="Spark table to (re)write")
    parser.add_argument(
        "--partition-requests",
        action="store_true",
        help="rewrite the requests table partitioned by date, once (a table the job created before it partitioned)",
    )
    parser.add_argument("--requests-table", default=str(settings.requests_table), help="(default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        if args.partition_requests:
            lines = [_partition_requests(settings, TableName.parse(args.requests_table))]
        else:
            lines = _copy_from_duckdb(settings, args.from_duckdb, TableName.parse(args.payload_table))
    except DataAccessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def _partition_requests(settings: Settings, requests: TableName) -> str:
    with spark_job_lock(settings, requests):  # no scoring run writes meanwhile
        spark = job_session(settings)
        if not table_exists(spark, requests):
            raise DataAccessError(f"The requests table {requests} is not in the Spark catalog.")
        if not guarded(lambda: partition_requests_by_date(spark, requests)):
            return f"{requests} is already partitioned by date"
        return f"{requests} is now partitioned by date ({spark.table(str(requests)).count():,} rows)"


if __name__ == "__main__":
    sys.exit(main())
