"""The backfill on the Spark engine: one scorer filled in on requests rows written without it, date by date.

    python -m jobs.score --engine spark --backfill toxicity [--since 2026-04-01] [--sample-rate toxicity=0.5]

Which rows and values are exactly the embedded backfill's (jobs/backfill.py): rows whose scorer id is empty, in
the scorer's deterministic sample (core/sampling.py) scored by the same Python on the executors (`mapInArrow`),
rows outside it only getting the rate recorded; every other column as it was. Spark rewrites rows rather than
updating columns, so the work goes in units of whole dates (consecutive dates until a unit holds `--batch-size`
unscored rows), each in four steps:

1. stage: the unit's changed rows, whole, go to a stage table beside the requests table
   (`<requests>__backfill_<scorer>`): on Delta an atomic append; locally, with the unchanged rows of their dates,
   by dynamic partition overwrite, so each date's stage appears whole or not at all;
2. apply: Delta (Databricks): one `MERGE INTO requests USING stage ... WHEN MATCHED AND <scorer id> IS NULL THEN
   UPDATE SET *`, one atomic commit that never touches a row added meanwhile; local parquet (no MERGE there):
   `INSERT OVERWRITE requests PARTITION (date)` of the staged dates in dynamic mode, from the stage plus any
   row the stage lacks (one written meanwhile);
3. the rollups of those dates are refreshed (`jobs.rollups`; a backfill changes no row count, so the count-based
   rule would not see them);
4. the stage is emptied.

A run starts by applying whatever an interrupted run left staged (steps 2-4 again: both applies are idempotent),
so a kill at any moment loses no row and leaves no date unscored or with stale rollups; then it scores what is
still unscored. A second run finds nothing to change and writes nothing. Local parquet is not transactional:
between the delete and the rename of a date's files a reader sees that date empty; a kill there is repaired
from the stage by the next run. The local requests table must be partitioned by `date`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlglot.expressions as sge

from core.sampling import SAMPLED_SCORERS
from data_access.config import Settings, TableName
from data_access.errors import DataAccessError
from data_access.rollup_refresh import on_dates
from jobs.backfill import BackfillSummary, backfilled_rows
from jobs.rollups import refresh_spark_rollups
from jobs.spark_score import guarded, spark_job_lock
from jobs.spark_session import job_session, ship_code
from jobs.spark_tables import (
    add_missing_columns,
    partition_command,
    partitioned_by_date,
    quoted,
    table_exists,
    table_provider,
)
from jobs.spark_worker import worker_profile
from metrics.profiles import FullProfileOptions

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

INCOMING_VIEW = "inference_explorer_backfilled"
Day = date | None  # a requests row may lack a date; such rows form a unit of their own


@dataclass(frozen=True)
class SparkBackfill:
    requests: TableName
    slot: str  # the scorer slot (core.sampling.SAMPLED_SCORERS)
    rate: float = 1.0  # its sample rate
    since: date | None = None
    profile: str = "light"
    options: FullProfileOptions | None = None
    rows_per_unit: int = 5_000  # whole dates are grouped until a unit holds this many unscored rows
    limit: int | None = None  # at most this many unscored rows examined this run
    partitions: int | None = None  # scoring tasks per unit; default: the cluster's default parallelism

    @property
    def scorer_column(self) -> str:
        return SAMPLED_SCORERS[self.slot]

    @property
    def needs(self) -> str | None:
        return "retrieved_context" if self.slot == "rag_support" else None  # no context: nothing to support


def stage_name(requests: TableName, slot: str) -> TableName:
    """The stage table of one scorer's backfill, beside the requests table."""
    return replace(requests, table=f"{requests.table}__backfill_{slot}")


# ---------------------------------------------------------------------------------------------------------
# Executor side
# ---------------------------------------------------------------------------------------------------------


def backfill_batches(
    batches: Iterator[pa.RecordBatch],
    slot: str,
    rate: float,
    profile_name: str,
    options: FullProfileOptions | None,
    scored: Any = None,
    left_out: Any = None,
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: unscored requests rows in, the rows that change out, whole, in the same layout."""
    profile = worker_profile(profile_name, options)
    for batch in batches:
        if batch.num_rows == 0:
            continue
        summary = BackfillSummary(slot, rate)
        rows = backfilled_rows(pa.Table.from_batches([batch]), profile, slot, rate, summary)
        if scored is not None:
            scored.add(summary.scored)
            left_out.add(summary.left_out)
        yield from rows.cast(batch.schema).to_batches()


# ---------------------------------------------------------------------------------------------------------
# Statements (each compiled for Spark / Databricks SQL; the Delta ones are parsed on local Spark in the tests)
# ---------------------------------------------------------------------------------------------------------


def dates_predicate(dates: Sequence[Day], alias: str | None = None) -> str:
    """`alias.date IN (DATE literals) [OR alias.date IS NULL]`, the dates as typed literals built by the compiler."""
    column = sge.column("date", table=alias, quoted=True)
    parts: list[sge.Expression] = []
    days = [d for d in dates if d is not None]
    if days:
        condition = on_dates(days)
        condition.set("this", column)
        parts.append(condition)
    if None in dates or not parts:
        parts.append(column.is_(sge.null()) if None in dates else sge.false())
    return sge.or_(*parts).sql("databricks")


def _columns(names: Sequence[str], alias: str | None = None) -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{prefix}`{name}`" for name in names)


def stage_whole_dates(stage: TableName, requests: TableName, columns: Sequence[str], dates: Sequence[Day]) -> str:
    """Local stage: the changed rows (the incoming view) plus the unchanged rows of their dates, each date's
    partition replaced whole (dynamic partition overwrite)."""
    return (
        f"INSERT OVERWRITE {quoted(stage)} PARTITION (`date`) "
        f"SELECT {_columns(columns)} FROM {INCOMING_VIEW} UNION ALL "
        f"SELECT {_columns(columns, 't')} FROM {quoted(requests)} AS t "
        f"LEFT ANTI JOIN {INCOMING_VIEW} AS i ON t.`request_id` = i.`request_id` "
        f"WHERE {dates_predicate(dates, 't')}"
    )


def stage_changed_rows(stage: TableName, columns: Sequence[str]) -> str:
    """Delta stage: the changed rows, appended in one atomic commit."""
    return f"INSERT INTO {quoted(stage)} ({_columns(columns)}) SELECT {_columns(columns)} FROM {INCOMING_VIEW}"


def apply_by_overwrite(stage: TableName, requests: TableName, columns: Sequence[str], dates: Sequence[Day]) -> str:
    """Local parquet: the staged dates rewritten from the stage, plus any row of theirs the stage lacks (written
    after it was staged). Needs spark.sql.sources.partitionOverwriteMode=dynamic (else every date is replaced)."""
    return (
        f"INSERT OVERWRITE {quoted(requests)} PARTITION (`date`) "
        f"SELECT {_columns(columns, 's')} FROM {quoted(stage)} AS s WHERE {dates_predicate(dates, 's')} UNION ALL "
        f"SELECT {_columns(columns, 't')} FROM {quoted(requests)} AS t "
        f"LEFT ANTI JOIN {quoted(stage)} AS s ON t.`request_id` = s.`request_id` "
        f"WHERE {dates_predicate(dates, 't')}"
    )


def apply_by_merge(stage: TableName, requests: TableName, scorer_column: str, dates: Sequence[Day]) -> str:
    """Delta (Databricks): the staged rows' values set on the matching rows the scorer has not scored, in one
    atomic commit; the date condition lets Delta skip other dates' files. Applying it twice changes nothing."""
    return (
        f"MERGE INTO {quoted(requests)} AS target "
        f"USING (SELECT * FROM {quoted(stage)} WHERE {dates_predicate(dates)}) AS staged "
        f"ON target.`request_id` = staged.`request_id` AND {dates_predicate(dates, 'target')} "
        f"WHEN MATCHED AND target.`{scorer_column}` IS NULL THEN UPDATE SET *"
    )


def empty_stage(stage: TableName, delta: bool) -> str:
    return f"DELETE FROM {quoted(stage)}" if delta else f"TRUNCATE TABLE {quoted(stage)}"


def create_stage(stage: TableName, requests: TableName, delta: bool) -> str:
    """An empty copy of the requests table's columns (same order): Delta in the catalog's default format on
    Databricks, partitioned parquet locally."""
    layout = "" if delta else "USING parquet PARTITIONED BY (`date`) "
    return f"CREATE TABLE IF NOT EXISTS {quoted(stage)} {layout}AS SELECT * FROM {quoted(requests)} LIMIT 0"


# ---------------------------------------------------------------------------------------------------------
# Driver side
# ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def dynamic_partition_overwrite(spark: SparkSession) -> Iterator[None]:
    """INSERT OVERWRITE replaces only the partitions it writes (the default, static, would empty the table)."""
    key = "spark.sql.sources.partitionOverwriteMode"
    before = spark.conf.get(key, "static")
    spark.conf.set(key, "dynamic")
    try:
        yield
    finally:
        spark.conf.set(key, before)


class _Target:
    """The requests table being backfilled and how this engine writes it."""

    def __init__(self, spark: SparkSession, requests: TableName) -> None:
        if not table_exists(spark, requests):
            raise DataAccessError(
                f"The requests table {requests} is not in the Spark catalog.",
                "Run the scoring job first (`python -m jobs.score --engine spark`), or pass --requests-table.",
            )
        add_missing_columns(spark, requests)  # a scorer added since the table was made gets its columns
        self.spark, self.requests = spark, requests
        self.delta = table_provider(spark, requests) == "delta"
        if not self.delta and not partitioned_by_date(spark, requests):
            raise DataAccessError(
                f"The requests table {requests} is not partitioned by date, which the local Spark backfill "
                "rewrites date by date (Delta tables are updated by MERGE and need no partitioning).",
                f"Run {partition_command(requests)} once: it recreates the table PARTITIONED BY (`date`).",
            )
        self.columns = list(spark.table(str(requests)).columns)

    def stage(self, slot: str) -> TableName:
        stage = stage_name(self.requests, slot)
        self.spark.sql(create_stage(stage, self.requests, self.delta))
        return stage

    def staged_dates(self, stage: TableName) -> list[Day]:
        rows = self.spark.sql(f"SELECT DISTINCT `date` FROM {quoted(stage)}").collect()
        return sorted((row[0] for row in rows), key=_date_order)

    def apply(self, stage: TableName, slot: str, dates: Sequence[Day]) -> None:
        """Steps 2-4 for staged dates: apply, refresh their rollups, empty the stage."""
        if self.delta:
            self.spark.sql(apply_by_merge(stage, self.requests, SAMPLED_SCORERS[slot], dates))
        else:
            with dynamic_partition_overwrite(self.spark):
                self.spark.sql(apply_by_overwrite(stage, self.requests, self.columns, dates))
        self.spark.catalog.refreshTable(str(self.requests))
        refresh_spark_rollups(self.spark, self.requests, list(dates))
        self.spark.sql(empty_stage(stage, self.delta))
        self.spark.catalog.refreshTable(str(stage))

    def recover(self) -> int:
        """Apply what interrupted runs staged (every scorer's stage): the number of dates applied."""
        applied = 0
        for slot in SAMPLED_SCORERS:
            stage = stage_name(self.requests, slot)
            if not table_exists(self.spark, stage):
                continue
            self.spark.catalog.refreshTable(str(stage))
            dates = self.staged_dates(stage)
            if dates:
                self.apply(stage, slot, dates)
                applied += len(dates)
        return applied


def pending_by_date(spark: SparkSession, job: SparkBackfill) -> list[tuple[Day, int]]:
    """Rows the scorer has not scored (from `since` on), counted per date, in date order (no date last)."""
    rows = _unscored(spark, job).groupBy("date").count().collect()
    return sorted(((row["date"], int(row["count"])) for row in rows), key=lambda pair: _date_order(pair[0]))


def _unscored(spark: SparkSession, job: SparkBackfill) -> DataFrame:
    from pyspark.sql import functions as F

    table = spark.table(str(job.requests))
    condition = F.col(job.scorer_column).isNull()
    if job.since is not None:
        condition &= F.col("date") >= F.lit(job.since)
    if job.needs:
        condition &= F.col(job.needs).isNotNull()
    return table.filter(condition)


def units(pending: Sequence[tuple[Day, int]], rows_per_unit: int, limit: int | None) -> list[tuple[list[Day], int]]:
    """Consecutive dates grouped until a group holds `rows_per_unit` unscored rows (a bigger date alone), rows
    without a date alone, stopping at `limit` rows: (dates, rows to take from them)."""
    groups: list[tuple[list[Day], int]] = []
    left = limit
    for day, count in pending:
        if left is not None and left <= 0:
            break
        take = count if left is None else min(count, left)
        left = None if left is None else left - take
        last = groups[-1] if groups else None
        if last is not None and day is not None and None not in last[0] and last[1] < rows_per_unit:
            groups[-1] = ([*last[0], day], last[1] + take)
        else:
            groups.append(([day], take))
    return groups


def run_spark_backfill(
    spark: SparkSession, job: SparkBackfill, on_progress: Callable[[int, int], None] | None = None
) -> BackfillSummary:
    """Apply what an interrupted run staged, then score the rows `job.slot` has not scored, unit by unit."""
    from pyspark import StorageLevel

    started = time.perf_counter()
    summary = BackfillSummary(job.slot, job.rate, dates=0)
    target = _Target(spark, job.requests)
    summary.recovered = target.recover()
    summary.dates = summary.recovered
    stage = target.stage(job.slot)
    ship_code(spark)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(min(job.rows_per_unit, 10_000)))
    scored, left_out = spark.sparkContext.accumulator(0), spark.sparkContext.accumulator(0)
    body = functools.partial(
        backfill_batches,
        slot=job.slot,
        rate=job.rate,
        profile_name=job.profile,
        options=job.options,
        scored=scored,
        left_out=left_out,
    )
    partitions = job.partitions or max(spark.sparkContext.defaultParallelism, 1)
    plan = units(pending_by_date(spark, job), job.rows_per_unit, job.limit)
    total, done = sum(rows for _, rows in plan), 0
    for dates, rows in plan:
        unscored = _unscored(spark, job).filter(dates_predicate(dates))
        if job.limit is not None:
            unscored = unscored.orderBy("date", "request_id").limit(rows)
        incoming = unscored.repartition(partitions).mapInArrow(body, spark.table(str(job.requests)).schema)
        incoming = incoming.persist(StorageLevel.MEMORY_AND_DISK)  # scored once, read by the stage statement
        try:
            if incoming.count():
                changed = sorted({r[0] for r in incoming.select("date").distinct().collect()}, key=_date_order)
                _stage(spark, target, stage, incoming, changed)
                target.apply(stage, job.slot, changed)
                summary.dates += len(changed)
        finally:
            incoming.unpersist()
        done += rows
        if on_progress:
            on_progress(done, total)
    summary.scored, summary.left_out = int(scored.value), int(left_out.value)
    summary.seconds = time.perf_counter() - started
    return summary


def _date_order(day: Day) -> tuple[bool, date | None]:
    return (day is None, day)


def _stage(spark: SparkSession, target: _Target, stage: TableName, incoming: DataFrame, dates: list[Day]) -> None:
    incoming.createOrReplaceTempView(INCOMING_VIEW)
    try:
        if target.delta:
            spark.sql(stage_changed_rows(stage, target.columns))
        else:
            with dynamic_partition_overwrite(spark):
                spark.sql(stage_whole_dates(stage, target.requests, target.columns, dates))
    finally:
        spark.catalog.dropTempView(INCOMING_VIEW)
    spark.catalog.refreshTable(str(stage))


def main_spark_backfill(args: argparse.Namespace, settings: Settings, slot: str, since: date | None) -> int:
    """`python -m jobs.score --engine spark --backfill SCORER [--since DATE]`: same flags and exit codes as the
    embedded backfill; holds the Spark scoring job's lock, so it never runs beside a scoring run."""
    from jobs.score import progress_bar

    try:
        job = SparkBackfill(
            requests=TableName.parse(args.requests_table),
            slot=slot,
            rate=args.sample_rates.get(slot, 1.0),
            since=since,
            profile=args.profile,
            options=FullProfileOptions.from_env(os.environ) if args.profile == "full" else None,
            rows_per_unit=args.batch_size,
            limit=args.limit,
        )
        with spark_job_lock(settings, job.requests):
            spark = job_session(settings)
            with progress_bar(f"backfill {slot}", args.quiet) as advance:
                summary = guarded(lambda: run_spark_backfill(spark, job, advance))
    except (DataAccessError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(summary.line(), flush=True)
    return 0
