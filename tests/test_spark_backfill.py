"""The backfill on local Spark (jobs/spark_backfill.py): the same rows and values as the embedded engine's.

A requests table scored with toxicity sampled at 10% by the embedded job is copied into the shared local Spark
session (tables here are prefixed `bf_`), partitioned by date; the backfill must then fill in exactly the rows
of the wider sample with the values the scorer gives those texts, keep every row and every other column, honour
--since, end equal to an uninterrupted run when interrupted between any two of its steps, write nothing on a
second run, and leave the rollups of the changed dates equal to a recomputation from the table.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from core.sampling import in_sample
from data_access.config import TableName
from data_access.demo import generate_payload
from data_access.duckdb_store import DuckDBStore
from data_access.rollups import minute_rollup_name
from data_access.schema import REQUESTS_ARROW
from jobs import score as score_cli
from jobs import spark_backfill
from jobs.rollups import refresh_spark_rollups
from jobs.spark_backfill import SparkBackfill, run_spark_backfill, stage_name
from jobs.spark_tables import SPARK_REQUESTS_ARROW
from metrics.profiles import build_profile

pytestmark = pytest.mark.spark
pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs a Java runtime (java on PATH or JAVA_HOME)", allow_module_level=True)

ROWS = 600  # 30 days of demo traffic, of which the first DAYS are kept: every Spark statement costs seconds
DAYS = 6
PAYLOAD, REQUESTS = TableName("payload"), TableName("requests")
TOXICITY = ("prompt_toxicity", "response_toxicity", "toxicity_scorer")


def _embedded_run(folder: Path, payload: pa.Table, *flags: str) -> pa.Table:
    path = folder / "inference.duckdb"
    DuckDBStore(path, PAYLOAD, REQUESTS).replace_payload(payload)
    assert score_cli.main(["--duckdb", str(path), "--quiet", "--no-monitors", *flags]) == 0
    with duckdb.connect(str(path), read_only=True) as con:
        return con.sql("SELECT * FROM requests ORDER BY request_id").to_arrow_table()


@pytest.fixture(scope="module")
def payload() -> pa.Table:
    rows = generate_payload(ROWS, seed=23)
    return rows.filter(pc.less(rows["date"], pa.scalar(date(2026, 4, 1 + DAYS))))


@pytest.fixture(scope="module")
def sampled(payload: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """Requests rows scored with toxicity at 10%: the rest wait for a backfill."""
    return _embedded_run(tmp_path_factory.mktemp("sampled"), payload, "--sample-rate", "detoxify=0.1")


@pytest.fixture(scope="module")
def full(payload: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """The same rows scored in full by the main run: what a complete backfill must end with."""
    return _embedded_run(tmp_path_factory.mktemp("full"), payload)


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from jobs.spark_session import local_spark

    session = local_spark("local[2]", warehouse_dir=tmp_path_factory.mktemp("bf-warehouse"))  # getOrCreate: shared
    yield session


def load(spark: Any, name: str, rows: pa.Table, partitioned: bool = True) -> TableName:
    """The rows as a fresh Spark table (partitioned by date, as the Spark job writes it), with its rollups."""
    table = TableName(name)
    for stale in (table, minute_rollup_name(table), stage_name(table, "toxicity"), stage_name(table, "perplexity")):
        spark.sql(f"DROP TABLE IF EXISTS {stale.table}")
    layout = pa.schema([f for f in SPARK_REQUESTS_ARROW if f.name in rows.column_names])
    writer = spark.createDataFrame(rows.cast(layout)).write
    (writer.partitionBy("date") if partitioned else writer).saveAsTable(name)
    if rows.num_columns == len(SPARK_REQUESTS_ARROW):  # an older layout has none (the backfill builds them)
        refresh_spark_rollups(spark, table)
    return table


def read(spark: Any, table: TableName) -> pa.Table:
    """The table's rows as Arrow, in the embedded layout (naive UTC times) and request id order."""
    rows = spark.table(str(table)).toArrow().select(REQUESTS_ARROW.names)
    return rows.cast(SPARK_REQUESTS_ARROW).cast(REQUESTS_ARROW).sort_by("request_id")


def backfill(spark: Any, table: TableName, slot: str = "toxicity", **options: Any) -> Any:
    return run_spark_backfill(spark, SparkBackfill(table, slot, **options))


def assert_only_columns_changed(before: pa.Table, after: pa.Table, changed: tuple[str, ...]) -> None:
    assert after["request_id"].to_pylist() == before["request_id"].to_pylist()  # no row lost or duplicated
    for name in before.column_names:
        if name not in changed:
            assert after[name].equals(before[name]), name


def assert_as_the_main_run(after: pa.Table, full: pa.Table) -> None:
    """Toxicity's values and scorer ids as the main run wrote them, and the same reasons (appended, not in the
    main run's order)."""
    for name in TOXICITY:
        assert after[name].to_pylist() == full[name].to_pylist(), name
    reasons = [set(r.split("; ")) if r else set() for r in after["score_error"].to_pylist()]
    assert reasons == [set(r.split("; ")) if r else set() for r in full["score_error"].to_pylist()]


def files(spark: Any, table: TableName) -> set[str]:
    return set(spark.table(str(table)).inputFiles())


def assert_rollups_fresh(spark: Any, table: TableName) -> None:
    """The minute rollup's toxicity counts and sums per date equal the table's, computed independently."""
    rollup = minute_rollup_name(table).table
    from_rollup = spark.sql(
        f"SELECT date, sum(response_toxicity__n) AS n, sum(response_toxicity__sum) AS s FROM {rollup} GROUP BY date"
    ).collect()
    from_table = spark.sql(
        f"SELECT date, count(response_toxicity) AS n, sum(response_toxicity) AS s FROM {table.table} GROUP BY date"
    ).collect()
    expected = {r["date"]: (r["n"], r["s"]) for r in from_table}
    assert {r["date"]: r["n"] for r in from_rollup} == {d: n for d, (n, _) in expected.items()}
    for r in from_rollup:
        assert math.isclose(r["s"] or 0.0, expected[r["date"]][1] or 0.0, rel_tol=1e-9, abs_tol=1e-12)


# --- Rows, values, sample, rollups, no-op ------------------------------------------------------------------------


def test_backfill_scores_the_sample_keeps_every_row_and_a_rerun_writes_nothing(
    spark: Any, sampled: pa.Table, full: pa.Table
) -> None:
    table = load(spark, "bf_requests", sampled)
    before = read(spark, table)

    summary = backfill(spark, table, rate=0.4)
    middle = read(spark, table)
    assert_only_columns_changed(before, middle, (*TOXICITY, "sample_rates", "score_error"))
    chosen = in_sample(middle["request_id"].to_pylist(), 0.4)
    assert [s is not None for s in middle["toxicity_scorer"].to_pylist()] == chosen  # the 40% sample, nothing else
    was_scored = [s is not None for s in before["toxicity_scorer"].to_pylist()]
    assert summary.scored == sum(chosen) - sum(was_scored)
    assert summary.left_out == len(chosen) - sum(chosen)
    rates = middle["sample_rates"].to_pylist()
    assert all(r == "toxicity=0.4" for r, old in zip(rates, was_scored, strict=True) if not old)
    assert_rollups_fresh(spark, table)

    backfill(spark, table)  # now every row, at rate 1
    after = read(spark, table)
    assert_only_columns_changed(before, after, (*TOXICITY, "sample_rates", "score_error"))
    assert_as_the_main_run(after, full)
    # ... which are the scorer's own values on these texts, computed here directly.
    texts = after["response_text"].to_pylist()
    direct = build_profile("light").toxicity.score([t for t in texts if t is not None]).values
    assert [v for v, t in zip(after["response_toxicity"].to_pylist(), texts, strict=True) if t is not None] == direct
    assert_rollups_fresh(spark, table)

    written = files(spark, table)
    again = backfill(spark, table)
    assert (again.scored, again.left_out, again.dates) == (0, 0, 0)
    assert files(spark, table) == written  # a second run rewrites nothing
    assert read(spark, table).equals(after)


def test_backfill_since_a_date_leaves_earlier_dates_alone(spark: Any, sampled: pa.Table) -> None:
    table = load(spark, "bf_since", sampled)
    before = read(spark, table)
    since = date(2026, 4, 20)
    summary = backfill(spark, table, since=since)
    after = read(spark, table)
    assert_only_columns_changed(before, after, (*TOXICITY, "sample_rates", "score_error"))
    for row, old in zip(after.to_pylist(), before.to_pylist(), strict=True):
        if row["date"] >= since:
            assert row["toxicity_scorer"] is not None
        else:
            assert row["toxicity_scorer"] == old["toxicity_scorer"]  # untouched
    assert summary.dates == len({r["date"] for r in after.to_pylist() if r["date"] >= since})
    assert_rollups_fresh(spark, table)


def test_a_scorer_added_since_gets_its_columns_and_the_main_runs_values(
    spark: Any, sampled: pa.Table, full: pa.Table
) -> None:
    added = ("prompt_sentiment", "sentiment_scorer")
    older = sampled.slice(0, 60)
    table = load(spark, "bf_older", older.drop_columns(list(added)))  # written before the sentiment scorer existed
    summary = backfill(spark, table, slot="sentiment")
    after = read(spark, table)
    assert summary.scored == older.num_rows
    assert_only_columns_changed(older, after, (*added, "sample_rates", "score_error"))
    for name in added:
        assert after[name].to_pylist() == full.slice(0, 60)[name].to_pylist(), name


# --- Interrupted between any two steps --------------------------------------------------------------------------


class Killed(BaseException):
    """The run stops dead here (BaseException: nothing of ours catches it), as a killed process would."""


# Where each run dies, right before the step: the unit staged and nothing applied; applied, rollups not refreshed;
# refreshed, the stage not emptied. The rerun applies what was staged, then goes on and dies at the next point.
DEATHS = (
    ("after staging", "_Target", "apply"),
    ("after applying", "", "refresh_spark_rollups"),
    ("after the rollups", "", "empty_stage"),
)


def dies_the_second_time(original: Any, step: str) -> Any:
    """`original`, except that its second call in a run (the second unit, or the first after a recovery) dies."""
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed(step)
        return original(*args, **kwargs)

    return wrapper


def test_runs_killed_between_any_two_steps_and_rerun_end_as_an_uninterrupted_run(
    spark: Any, sampled: pa.Table, full: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = load(spark, "bf_killed", sampled)
    before = read(spark, table)
    for step, owner, name in DEATHS:
        where = getattr(spark_backfill, owner) if owner else spark_backfill
        with monkeypatch.context() as patch:
            patch.setattr(where, name, dies_the_second_time(getattr(where, name), step))
            with pytest.raises(Killed):
                backfill(spark, table, rows_per_unit=1)  # a unit per date
        assert read(spark, table)["request_id"].to_pylist() == before["request_id"].to_pylist(), step
    staged = spark.table(stage_name(table, "toxicity").table).count()
    assert staged > 0  # the last run died with a unit staged

    summary = backfill(spark, table, rows_per_unit=1)
    assert summary.recovered == 1 and summary.dates > 1
    after = read(spark, table)
    assert_only_columns_changed(before, after, (*TOXICITY, "sample_rates", "score_error"))
    assert_as_the_main_run(after, full)
    assert_rollups_fresh(spark, table)
    assert spark.table(stage_name(table, "toxicity").table).count() == 0


# The requests rows (an Arrow file) as the command's own local catalog holds them: partitioned by date, with rollups.
LOAD = """
import sys
import pyarrow as pa
from data_access.config import TableName, load_settings
from jobs.rollups import refresh_spark_rollups
from jobs.spark_tables import SPARK_REQUESTS_ARROW
from jobs.spark_session import job_session
spark = job_session(load_settings())
rows = pa.ipc.open_file(sys.argv[1]).read_all().cast(SPARK_REQUESTS_ARROW)
spark.createDataFrame(rows).write.partitionBy("date").saveAsTable("bf_process")
refresh_spark_rollups(spark, TableName("bf_process"))
"""
ROOT = Path(__file__).resolve().parent.parent


def _rewritten_dates(folder: Path, before: dict[str, set[str]]) -> int:
    """How many of the table's date folders hold other data files than at the start (rewritten since)."""
    now = {d.name: {f.name for f in d.glob("part-*")} for d in folder.glob("date=*")}
    return sum(1 for name, parts in before.items() if now.get(name, parts) != parts)


def test_a_backfill_process_killed_midway_and_rerun_ends_as_an_uninterrupted_run(
    spark: Any, sampled: pa.Table, full: pa.Table, tmp_path: Path
) -> None:
    env = {**os.environ, "INFERENCE_EXPLORER_DATA_DIR": str(tmp_path), "INFERENCE_EXPLORER_SPARK_MASTER": "local[2]"}
    with pa.ipc.new_file(tmp_path / "rows.arrow", sampled.schema) as out:
        out.write_table(sampled)
    subprocess.run([sys.executable, "-c", LOAD, str(tmp_path / "rows.arrow")], cwd=ROOT, env=env, check=True)
    folder = tmp_path / "spark" / "warehouse" / "bf_process"
    start = {d.name: {f.name for f in d.glob("part-*")} for d in folder.glob("date=*")}
    flags = ["--engine", "spark", "--requests-table", "bf_process", "--quiet", "--backfill", "toxicity"]
    command = [sys.executable, "-m", "jobs.score", *flags, "--batch-size", "30"]  # units of about two dates
    job = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE)
    while job.poll() is None and _rewritten_dates(folder, start) < 1:
        time.sleep(0.1)
    os.killpg(job.pid, signal.SIGKILL)  # the driver and its JVM, as a lost node would, somewhere in the next unit
    job.wait()
    assert 0 < _rewritten_dates(folder, start) < len(start), "the kill must land mid-run for this test to mean anything"

    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    for name in ("bf_process", minute_rollup_name(TableName("bf_process")).table):
        spark.read.parquet(str(tmp_path / "spark" / "warehouse" / name)).createOrReplaceTempView(name)
    try:
        table = TableName("bf_process")
        after = read(spark, table)
        assert_only_columns_changed(read_arrow(sampled), after, (*TOXICITY, "sample_rates", "score_error"))
        assert_as_the_main_run(after, full)
        assert_rollups_fresh(spark, table)
    finally:
        for name in ("bf_process", minute_rollup_name(TableName("bf_process")).table):
            spark.catalog.dropTempView(name)


def read_arrow(rows: pa.Table) -> pa.Table:
    return rows.select(REQUESTS_ARROW.names).cast(REQUESTS_ARROW).sort_by("request_id")


# --- The command, and what it refuses ---------------------------------------------------------------------------


def test_the_command_backfills_on_spark(
    spark: Any, sampled: pa.Table, full: pa.Table, capsys: pytest.CaptureFixture[str]
) -> None:
    table = load(spark, "bf_cli", sampled)
    argv = ["--engine", "spark", "--requests-table", table.table, "--quiet", "--backfill", "detoxify"]
    assert score_cli.main([*argv, "--limit", "10"]) == 0
    assert "scored 10 rows" in capsys.readouterr().out
    assert read(spark, table)["toxicity_scorer"].null_count == sampled["toxicity_scorer"].null_count - 10
    assert score_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "backfill toxicity: scored" in out and "date(s) rewritten and their rollups refreshed" in out, out
    assert read(spark, table)["response_toxicity"].to_pylist() == full["response_toxicity"].to_pylist()


def test_a_missing_or_unpartitioned_local_table_is_refused_with_what_to_do(
    spark: Any, sampled: pa.Table, capsys: pytest.CaptureFixture[str]
) -> None:
    table = load(spark, "bf_flat", sampled.slice(0, 50), partitioned=False)
    argv = ["--engine", "spark", "--requests-table", table.table, "--quiet", "--backfill", "toxicity"]
    assert score_cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "not partitioned by date" in err and "PARTITIONED BY" in err and "Traceback" not in err
    assert score_cli.main([*argv[:2], "--requests-table", "bf_missing", *argv[4:]]) == 1
    assert "bf_missing is not in the Spark catalog" in capsys.readouterr().err


# --- The Databricks (Delta) statements, parsed by Spark SQL's own parser ------------------------------------------


def test_the_delta_statements_parse_and_their_queries_run_on_spark_sql(spark: Any, sampled: pa.Table) -> None:
    table = load(spark, "bf_dialect", sampled.slice(0, 40))
    stage = stage_name(table, "toxicity")
    columns = spark.table(table.table).columns
    days = [date(2026, 4, 2), None, date(2026, 4, 1)]
    parse = spark._jsparkSession.sessionState().sqlParser().parsePlan
    merge = spark_backfill.apply_by_merge(stage, table, "toxicity_scorer", days)
    plan = parse(merge).toString()
    assert "MergeIntoTable" in plan and "isnull('target.toxicity_scorer)" in plan
    for statement in (
        spark_backfill.create_stage(stage, table, delta=True),
        spark_backfill.stage_changed_rows(stage, columns),
        spark_backfill.empty_stage(stage, delta=True),
    ):
        parse(statement)
    # The MERGE's source query and its date condition run as they are on the stage (here the local one).
    spark.sql(spark_backfill.create_stage(stage, table, delta=False))
    source = merge.split(" USING (", 1)[1].split(") AS staged", 1)[0]
    assert spark.sql(source).count() == 0
    rows = spark.sql(f"SELECT count(*) FROM {table.table} WHERE {spark_backfill.dates_predicate(days)}").collect()
    expected = sum(1 for d in sampled.slice(0, 40)["date"].to_pylist() if d in days)
    assert rows[0][0] == expected
