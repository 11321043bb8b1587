"""The Spark engine's runs: which payload rows to score, scoring them on the executors, and writing each id once.

Which rows: a scheduled run reads the payload table as a Structured Streaming source (`availableNow`, with a
checkpoint), so it reads only what was added since the last run (`run_spark_stream`). In each micro-batch the
Ibis `unscored_payload` query, compiled for the "databricks" dialect and run by `spark.sql`, keeps the rows
whose id the requests table lacks, so "which ids are pending" and "which duplicate wins" have one definition
for both engines (the parity tests run that SQL on Spark and DuckDB). Rows with neither id get their
content-hash id from the parser first and are anti-joined on it. The pending rows are spread over the executors
and scored by `mapInArrow` with `jobs.scoring.parse_and_score` (`jobs.spark_worker`; Arrow in, Arrow out: no pandas
round trip that would mangle maps, nulls in integer columns or timestamps). Models load once per Python worker process.

Writing: one commit per micro-batch (per run for `--full-rescan` and `--limit`). New rows are anti-joined on
`request_id` against the target once more at write time, so a replayed micro-batch, a rerun or a retried task
never writes an id twice: a Delta target gets `MERGE INTO ... WHEN NOT MATCHED THEN INSERT *` (one atomic Delta
commit), any other format (parquet, the local default) an INSERT of the anti-joined rows.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from data_access.config import TableName
from data_access.errors import DataAccessError
from data_access.layouts import detect_layout, served_entities_problem
from data_access.queries.job import PayloadSpec, payload_without_id, served_entities_probe, unscored_payload
from data_access.schema import JOB_INPUT_ARROW, column_ddl
from jobs.rollups import refresh_spark_rollups
from jobs.scoring import JobSummary
from jobs.spark_session import ship_code
from jobs.spark_tables import (
    PARTITIONED_BY_DATE,
    REQUESTS_DDL,
    add_missing_columns,
    partitioned_by_date,
    quoted,
    table_exists,
    table_provider,
    unpartitioned_warning,
)
from jobs.spark_worker import PARSED_ID, score_batches, with_parsed_id
from metrics.profiles import FullProfileOptions

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# Spark's LIMIT takes a 32-bit integer (a larger one fails analysis): --limit is capped at this many rows.
SPARK_MAX_LIMIT = 2**31 - 1


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
    id_schema = f"{column_ddl(_input_schema(spec.layout))}, `{PARSED_ID}` STRING"
    add_id = functools.partial(with_parsed_id, layout=spec.layout)
    hashed = without_id.mapInArrow(add_id, id_schema).dropDuplicates([PARSED_ID])
    done = spark.table(str(job.requests)).select("request_id")
    fresh = hashed.join(done, hashed[PARSED_ID] == done["request_id"], "left_anti").select(*names)
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
