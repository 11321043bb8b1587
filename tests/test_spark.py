"""The scoring job on local Spark: same rows as the embedded engine, incremental, idempotent, robust to bad rows.

One SparkSession (local[2]) for the whole test run: `spark_session()` is getOrCreate, so the parity tests
share it. Tables here are prefixed `sj_`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from data_access.config import TableName
from data_access.duckdb_store import DuckDBStore
from data_access.errors import DataAccessError
from data_access.payload import parse_payload
from data_access.queries import Query, filter_options
from data_access.schema import PAYLOAD_ARROW, REQUESTS_ARROW
from data_access.sources import SparkSource
from jobs import score as score_cli
from jobs import spark_score
from jobs.score import run_once
from jobs.spark_runs import SparkScoringJob, run_spark_once, write_new_rows
from jobs.spark_session import local_spark
from jobs.spark_tables import partitioned_by_date, unpartitioned_warning, write_payload_table
from metrics.profiles import build_profile

pytestmark = pytest.mark.spark
pyspark = pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs a Java runtime (java on PATH or JAVA_HOME)", allow_module_level=True)

T0 = 1_775_001_600_000  # 2026-04-01 00:00:00 UTC, in ms
META = [("endpoint_name", "bot"), ("model_name", "main.rag.bot"), ("model_version", "3")]


def spark_session(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return local_spark("local[2]", warehouse_dir=tmp_path_factory.mktemp("spark-warehouse"))


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    session = spark_session(tmp_path_factory)
    yield session
    session.stop()


def chat(prompt: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": prompt}]})


def answer(text: str) -> str:
    usage = {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}], "usage": usage})


def row(dbx: str | None, client: str | None, offset_ms: int, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "client_request_id": client,
        "databricks_request_id": dbx,
        "date": dt.date(2026, 4, 1),
        "timestamp_ms": T0 + offset_ms,
        "status_code": 200,
        "execution_time_ms": 500,
        "request": chat("What is Unity Catalog?"),
        "response": answer("Unity Catalog governs data and AI assets across workspaces."),
        "sampling_fraction": 1.0,
        "request_metadata": META,
    }
    return base | fields


def good_rows(count: int, start_ms: int) -> list[dict[str, Any]]:
    topics = ["Delta Lake", "MLflow", "Model Serving", "vector search", "feature tables", "job clusters"]
    return [
        row(
            f"dbx-{i:04d}",
            f"client-{i:04d}",
            start_ms + i * 1000,
            execution_time_ms=300 + 7 * i,
            request=chat(f"How do I use {topics[i % len(topics)]} for request {i}?"),
            response=answer(f"You configure {topics[(i * 5) % len(topics)]} in the workspace settings, step {i % 4}."),
        )
        for i in range(count)
    ]


def tricky_rows() -> list[dict[str, Any]]:
    """Duplicates, rows without ids, and rows the parser must survive."""
    deep = "[" * 5000 + "]" * 5000
    return [
        row("dup", "c-dup", 10, execution_time_ms=500, response=answer("The first answer wins.")),
        row("dup", "c-dup", 20, execution_time_ms=100, response=answer("A later retry.")),
        row("dup", "c-dup", 10, execution_time_ms=900, response=answer("Same time, slower: loses the tie.")),
        row(None, "client-only", 30),
        row("bad-json", None, 40, status_code=502, request="{not json", response="<html>502 Bad Gateway</html>"),
        row("deep", None, 50, request=deep, response=deep),
        row(
            "all-null",
            None,
            60,
            date=None,
            timestamp_ms=None,
            status_code=None,
            execution_time_ms=None,
            request=None,
            response=None,
            sampling_fraction=None,
            request_metadata=None,
        ),
        row("wrong-types", None, 70, request=json.dumps({"messages": 42}), response=json.dumps([1, 2, 3])),
        row("nan", None, 80, sampling_fraction=math.nan, request_metadata=[]),
        row("rude", None, 90, request=chat("you are a stupid idiot"), response=answer("Let us stay polite.")),
        row("huge", None, 100, response=answer("word " * 40_000)),
        row(
            "completion",
            None,
            110,
            request=json.dumps({"prompt": "Say hi"}),
            response=json.dumps({"choices": [{"text": "Hi"}]}),
        ),
        row(None, None, 120, request=chat("no ids at all"), execution_time_ms=11),
        row(None, None, 120, request=chat("no ids at all"), execution_time_ms=11),  # the same content again
        row(None, None, 130, request=chat("another row without ids"), execution_time_ms=12),
    ]


def payload_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=PAYLOAD_ARROW)


def spark_requests(spark: Any, name: str) -> pa.Table:
    return spark.table(name).toArrow()


def comparable(table: pa.Table) -> dict[str, dict[str, Any]]:
    """Rows by request id, without `scored_at`, timestamps as naive UTC."""
    out: dict[str, dict[str, Any]] = {}
    for record in table.to_pylist():
        record.pop("scored_at")
        if isinstance(record["request_time"], dt.datetime) and record["request_time"].tzinfo is not None:
            record["request_time"] = record["request_time"].astimezone(dt.UTC).replace(tzinfo=None)
        assert record["request_id"] not in out, f"request id {record['request_id']} written twice"
        out[record["request_id"]] = record
    return out


def assert_same_rows(left: dict[str, dict[str, Any]], right: dict[str, dict[str, Any]]) -> None:
    assert left.keys() == right.keys()
    for request_id, expected in left.items():
        actual = right[request_id]
        for column, value in expected.items():
            other = actual[column]
            if isinstance(value, float) and isinstance(other, float):
                assert math.isclose(value, other, rel_tol=1e-12), (request_id, column, value, other)
            else:
                assert value == other, (request_id, column, value, other)


def embedded_rows(tmp_path: Path, payload: pa.Table) -> pa.Table:
    """The embedded (DuckDB) engine's requests table for the same payload."""
    store = DuckDBStore(tmp_path / "embedded.duckdb", TableName("payload"), TableName("requests"))
    store.replace_payload(payload)
    run_once(store, build_profile("light"))
    with duckdb.connect(str(tmp_path / "embedded.duckdb"), read_only=True) as con:
        return con.sql("SELECT * FROM requests").to_arrow_table()


@pytest.fixture(scope="module")
def scored(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One Spark run over good and tricky rows, tiny Arrow batches so each task scores many batches."""
    payload = payload_table(good_rows(60, 1_000) + tricky_rows())
    write_payload_table(spark, TableName("sj_payload"), payload)
    job = SparkScoringJob(TableName("sj_payload"), TableName("sj_requests"), "light", rows_per_batch=7, partitions=3)
    first = run_spark_once(spark, job)
    rows = spark_requests(spark, "sj_requests")
    return {"payload": payload, "job": job, "first": first, "rows": rows, "tmp": tmp_path_factory.mktemp("embedded")}


def expected_ids(payload: pa.Table) -> set[str]:
    """Independently: the id rule of the schema (databricks id, else client id, else the parser's hash)."""
    ids = set()
    for record, parsed in zip(payload.to_pylist(), parse_payload(payload).to_pylist(), strict=True):
        ids.add(record["databricks_request_id"] or record["client_request_id"] or parsed["request_id"])
    return ids


def test_every_id_is_written_once(scored: dict[str, Any]) -> None:
    rows, payload = scored["rows"], scored["payload"]
    ids = rows["request_id"].to_pylist()
    assert len(ids) == len(set(ids))
    assert set(ids) == expected_ids(payload)
    assert len(ids) == payload.num_rows - 3  # two retries of "dup" and one repeated id-less row
    summary = scored["first"]
    assert (summary.read, summary.written) == (payload.num_rows - 3, payload.num_rows - 3)


def test_duplicate_ids_keep_the_earliest_row(scored: dict[str, Any]) -> None:
    dup = next(r for r in scored["rows"].to_pylist() if r["request_id"] == "dup")
    assert dup["response_text"] == "The first answer wins."
    assert dup["latency_ms"] == 500


def test_bad_rows_are_kept_with_a_reason(scored: dict[str, Any]) -> None:
    by_id = {r["request_id"]: r for r in scored["rows"].to_pylist()}
    for request_id in ("bad-json", "deep", "all-null", "wrong-types"):
        assert by_id[request_id]["parse_error"], request_id
    assert by_id["all-null"]["request_time"] is None
    assert by_id["huge"]["response_fk_grade"] is not None
    assert by_id["rude"]["prompt_toxicity"] > 0.5 > by_id["dup"]["prompt_toxicity"]
    assert scored["first"].failed == sum(1 for r in by_id.values() if r["parse_error"])


def test_same_rows_as_the_embedded_engine(scored: dict[str, Any]) -> None:
    embedded = embedded_rows(scored["tmp"], scored["payload"])
    assert_same_rows(comparable(embedded), comparable(scored["rows"]))


def test_scored_at_is_one_instant_per_run(scored: dict[str, Any]) -> None:
    stamps = set(scored["rows"]["scored_at"].to_pylist())
    assert len(stamps) == 1


def test_second_run_writes_nothing(spark: Any, scored: dict[str, Any]) -> None:
    again = run_spark_once(spark, scored["job"])
    assert (again.read, again.written) == (0, 0)
    assert spark.table("sj_requests").count() == scored["rows"].num_rows


def test_the_write_skips_ids_another_run_committed_meanwhile(spark: Any, scored: dict[str, Any]) -> None:
    """Rows pending when a run started but committed by another run before it wrote are not written again."""
    from pyspark.sql import functions as F

    spark.table("sj_requests").orderBy("request_id").limit(5).write.saveAsTable("sj_race")
    committed = spark.table("sj_race").limit(3)
    new = committed.limit(1).withColumn("request_id", F.lit("brand-new"))
    write_new_rows(spark, committed.unionByName(new), TableName("sj_race"))
    ids = spark_requests(spark, "sj_race")["request_id"].to_pylist()
    assert len(ids) == 6 and len(set(ids)) == 6 and "brand-new" in ids


def test_a_limited_run_resumes_to_one_clean_run(spark: Any, scored: dict[str, Any]) -> None:
    job = SparkScoringJob(TableName("sj_payload"), TableName("sj_requests_resumed"), "light", rows_per_batch=5)
    first = run_spark_once(spark, job, limit=4)
    assert first.written == 4
    first_seen: dict[str, int] = {}
    for r in scored["payload"].to_pylist():
        key = r["databricks_request_id"] or r["client_request_id"]
        if key and r["timestamp_ms"] is not None:
            first_seen[key] = min(first_seen.get(key, r["timestamp_ms"]), r["timestamp_ms"])
    earliest = sorted((ts, key) for key, ts in first_seen.items())[:4]
    written = set(spark_requests(spark, "sj_requests_resumed")["request_id"].to_pylist())
    assert written == {key for _, key in earliest}
    rest = run_spark_once(spark, job)
    assert rest.written == scored["rows"].num_rows - 4
    assert_same_rows(comparable(scored["rows"]), comparable(spark_requests(spark, "sj_requests_resumed")))


def worker_stats(spark: Any) -> list[dict[str, int]]:
    """What each Python worker process reports about its profile cache (many tasks, to reach every worker)."""

    def probe(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from jobs.spark_worker import WORKER_STATS

        for _ in batches:
            pass
        yield pa.RecordBatch.from_pylist([{"pid": os.getpid(), **WORKER_STATS}])

    schema = "pid BIGINT, profiles_built BIGINT, batches_scored BIGINT"
    return spark.range(0, 64, 1, 16).mapInArrow(probe, schema).toArrow().to_pylist()


def test_models_load_once_per_worker_process(spark: Any, scored: dict[str, Any]) -> None:
    by_pid = {r["pid"]: r for r in worker_stats(spark)}
    scoring = [r for r in by_pid.values() if r["batches_scored"]]
    assert scoring, "no worker reported scoring; Python workers were not reused"
    assert all(r["profiles_built"] == 1 for r in scoring), by_pid
    # 3 tasks x 7-row batches over 72 rows: workers scored many batches each with their one profile
    assert sum(r["batches_scored"] for r in scoring) > len(scoring)


def test_cli_runs_the_same_command_on_spark(spark: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """`--limit`, resuming, and new payload rows arriving between runs, through `python -m jobs.score`."""
    write_payload_table(spark, TableName("sj_cli_payload"), payload_table(good_rows(5, 0)))
    argv = ["--engine", "spark", "--payload-table", "sj_cli_payload", "--requests-table", "sj_cli_requests", "--quiet"]
    assert score_cli.main([*argv, "--limit", "2"]) == 0
    assert "wrote 2" in capsys.readouterr().out
    assert score_cli.main(argv) == 0
    assert "wrote 3" in capsys.readouterr().out
    later = [row(f"late-{i}", None, 10_000_000 + i) for i in range(3)] + [row("dbx-0001", None, 99)]
    write_payload_table(spark, TableName("sj_cli_payload"), payload_table(later), mode="append")
    assert score_cli.main(argv) == 0
    assert "wrote 3" in capsys.readouterr().out  # dbx-0001 was scored already
    ids = set(spark_requests(spark, "sj_cli_requests")["request_id"].to_pylist())
    assert ids == {f"dbx-{i:04d}" for i in range(5)} | {f"late-{i}" for i in range(3)}


def test_cli_missing_payload_table_is_a_clear_error(spark: Any, capfd: pytest.CaptureFixture[str]) -> None:
    argv = ["--engine", "spark", "--payload-table", "sj_nowhere", "--requests-table", "sj_cli_requests", "--quiet"]
    assert score_cli.main(argv) == 1
    err = capfd.readouterr().err
    assert "sj_nowhere is not in the Spark catalog" in err
    assert "Traceback" not in err


def test_spark_source_runs_the_catalog(spark: Any, scored: dict[str, Any]) -> None:
    result = SparkSource(spark).execute(filter_options(TableName("sj_requests")).sql("databricks"))
    by_version = {(r["endpoint_name"], r["model_version"]): r["requests"] for r in result.to_pylist()}
    expected: dict[tuple[str | None, str | None], int] = {}
    for record in scored["rows"].to_pylist():
        key = (record["endpoint_name"], record["model_version"])
        expected[key] = expected.get(key, 0) + 1
    assert by_version == expected


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (filter_options(TableName("sj_missing_table")).sql("databricks"), "TABLE_OR_VIEW_NOT_FOUND"),
        ("SELEC broken", "PARSE_SYNTAX_ERROR"),
    ],
)
def test_spark_source_errors_are_one_clear_line(
    spark: Any, capfd: pytest.CaptureFixture[str], sql: str, message: str
) -> None:
    with pytest.raises(DataAccessError) as raised:
        SparkSource(spark).execute(sql)
    text = str(raised.value)
    assert "Spark rejected a query" in text and message in text
    assert "\n" not in text and "Traceback" not in text and "org.apache" not in text
    assert "Traceback" not in capfd.readouterr().err


def test_query_objects_compile_for_spark() -> None:
    query = filter_options(TableName("requests", "db", "main"))
    assert isinstance(query, Query) and "`main`.`db`.`requests`" in query.sql("databricks")


def test_requests_layout_matches_the_contract(spark: Any, scored: dict[str, Any]) -> None:
    """Every column of the contract, partitioned by date (a parquet table lists its partition column last)."""
    names = [f.name for f in spark.table("sj_requests").schema.fields]
    assert sorted(names) == sorted(REQUESTS_ARROW.names) and names[-1] == "date"
    assert partitioned_by_date(spark, TableName("sj_requests"))
    dates = {d.isoformat() if d else "__HIVE_DEFAULT_PARTITION__" for d in scored["rows"]["date"].to_pylist()}
    partitions = {r[0] for r in spark.sql("SHOW PARTITIONS sj_requests").collect()}
    assert partitions == {f"date={d}" for d in dates} and len(dates) > 1  # rows without a time have no date


def test_an_unpartitioned_requests_table_is_named_then_partitioned(
    spark: Any, scored: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """A requests table from before date partitioning: the job still runs and says in one line what to run;
    that command rewrites it partitioned by date with every row, and the job's runs then carry on."""
    old, table = TableName("sj_requests_old"), "sj_requests_old"
    spark.table("sj_requests").limit(40).write.saveAsTable(table)  # unpartitioned, as the job used to create it
    job = SparkScoringJob(TableName("sj_payload"), old, "light")
    assert run_spark_once(spark, job).written == scored["rows"].num_rows - 40
    warnings = [line for line in capsys.readouterr().err.splitlines() if "partitioned" in line]
    assert warnings == [unpartitioned_warning(old)]
    assert f"--partition-requests --requests-table {old}" in warnings[0]
    before = comparable(spark_requests(spark, table))
    assert spark_score.main(["--partition-requests", "--requests-table", table]) == 0
    assert "sj_requests_old is now partitioned by date" in capsys.readouterr().out
    assert partitioned_by_date(spark, old)
    assert_same_rows(before, comparable(spark_requests(spark, table)))
    assert spark_score.main(["--partition-requests", "--requests-table", table]) == 0
    assert "already partitioned by date" in capsys.readouterr().out
    assert run_spark_once(spark, job).written == 0
    assert not [line for line in capsys.readouterr().err.splitlines() if "partitioned" in line]
