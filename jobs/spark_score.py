"""The scoring job on Spark, as commands: the same parser and scorers as the embedded job, run by Spark executors.

    python -m jobs.score --engine spark [--payload-table T] [--requests-table T] [--checkpoint PATH] [--profile P]
    python -m jobs.score --engine spark --full-rescan | --limit N   # the whole table, one commit
    python -m jobs.spark_score --from-duckdb data/inference.duckdb   # copy the demo payload into local Spark
    python -m jobs.spark_score --partition-requests [--requests-table T]

Here: the command's side (one job per requests table, a failure told in one line, the monitors after each run, the
local demo copy). The runs themselves are `jobs.spark_runs` (which rows, the stream, the write), what executors
run is `jobs.spark_worker`, the catalog side `jobs.spark_tables`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from data_access.config import Settings, TableName, settings_for_command
from data_access.errors import DataAccessError
from data_access.layouts import detect_layout, local_served_entities
from data_access.schema import SERVED_ENTITIES_SCHEMA
from jobs.scoring import JobSummary, run_every
from jobs.spark_runs import SparkScoringJob, run_spark_once, run_spark_stream
from jobs.spark_session import job_session
from jobs.spark_tables import partition_requests_by_date, table_exists, table_provider, write_payload_table, write_table
from metrics.profiles import FullProfileOptions

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

T = TypeVar("T")


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
# python -m jobs.spark_score: the embedded demo's payload into the local Spark catalog; partitioning by date
# ---------------------------------------------------------------------------------------------------------


def _copy_from_duckdb(settings: Settings, duckdb_path: Path, payload: TableName) -> list[str]:
    """Copy the payload table, and for the gateway layout its served-entities table, into the local Spark catalog
    (under the same local name the job reads: `serving.served_entities`); what was copied, one line each."""
    import duckdb

    from data_access.duckdb_store import quoted as duckdb_quoted
    from data_access.sources import connect_duckdb

    if not duckdb_path.exists():
        raise DataAccessError(f"{duckdb_path} does not exist.", "Start the app once to build the demo data.")
    entities = local_served_entities(settings.served_entities_table)
    with connect_duckdb(duckdb_path, read_only=True, wait_s=0) as con:
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
