"""The scoring job on AI Gateway inference tables (DuckDB and local Spark): the same traffic in both layouts gives
the same requests table, served entities joined in the engine, an unreadable served-entities table said once and
every row still scored, unknown entity ids counted, older requests tables completed, unknown layouts named."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from data_access.config import TableName
from data_access.demo import generate_payload
from data_access.demo.gateway import UNKNOWN_ENTITY_ID, served_entities
from data_access.duckdb_store import DuckDBStore
from data_access.schema import GATEWAY_COLUMNS, REQUESTS_ARROW, SERVED_ENTITIES_ARROW, SERVED_ENTITIES_SCHEMA
from jobs import score as score_cli
from jobs.score import run_once
from jobs.scoring import JobSummary
from metrics.profiles import build_profile

ROWS, SEED = 4_000, 9
SPARK_ROWS = 600
PAYLOAD, REQUESTS, ENTITIES = TableName("payload"), TableName("requests"), TableName("served_entities", "serving")
# Columns both layouts fill; the rest are the gateway's own (requester, codes, served entity) and the run time.
COMMON = [name for name in REQUESTS_ARROW.names if name not in (*GATEWAY_COLUMNS, "scored_at")]


def _score(
    path: Path, layout: str, entities: TableName | None = ENTITIES, rows: int = ROWS
) -> tuple[pd.DataFrame, JobSummary, list]:
    """Write the demo month in a layout (gateway: with its served-entities table) and run the job on it."""
    store = DuckDBStore(path, PAYLOAD, REQUESTS, served_entities=entities)
    store.replace_payload(generate_payload(rows, SEED, layout=layout), layout)
    if layout == "gateway":
        store.replace_table(ENTITIES, served_entities(), SERVED_ENTITIES_ARROW)
    warnings: list[str] = []
    summary = run_once(store, build_profile("light"), batch_size=1_500, warn=warnings.append)
    with duckdb.connect(str(path), read_only=True) as con:
        written = con.sql("SELECT * FROM requests ORDER BY request_id").to_df()
    return written, summary, warnings


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("layouts")
    return {layout: _score(folder / f"{layout}.duckdb", layout) for layout in ("legacy", "gateway")}


def _errors_without(text: Any, dropped: str) -> str | None:
    if not isinstance(text, str):
        return None
    kept = [part for part in text.split("; ") if part != dropped]
    return "; ".join(kept) or None


def _same(left: pd.DataFrame, right: pd.DataFrame, columns: list[str]) -> None:
    pd.testing.assert_frame_equal(
        left[columns].reset_index(drop=True), right[columns].reset_index(drop=True), check_dtype=False
    )


def test_same_traffic_gives_the_same_requests_table_in_both_layouts(runs: dict[str, Any]) -> None:
    legacy, gateway = runs["legacy"][0], runs["gateway"][0]
    assert len(legacy) == len(gateway) > 0
    hashed = legacy.request_id.str.startswith("sha1:")
    assert hashed.sum() == gateway.request_id.str.startswith("sha1:").sum() >= 1
    legacy_keyed, gateway_keyed = legacy[~hashed], gateway[~gateway.request_id.str.startswith("sha1:")]
    assert legacy_keyed.request_id.tolist() == gateway_keyed.request_id.tolist()

    unknown = (gateway_keyed.served_entity_id == UNKNOWN_ENTITY_ID).to_numpy()
    unlogged = gateway_keyed.logging_error_codes.notna().to_numpy()
    assert unknown.sum() >= 1 and unlogged.sum() >= 1
    plain = ~unknown & ~unlogged
    _same(legacy_keyed[plain], gateway_keyed[plain], COMMON)

    # The layouts' own differences, exactly: a legacy row lacking its model version names an entity the
    # served-entities table lacks; a payload too large to log carries Databricks' reason instead of our parse error.
    lost, found = legacy_keyed[unknown], gateway_keyed[unknown]
    assert found.model_version.isna().all() and lost.model_version.isna().all()
    assert found.endpoint_name.isna().all() and found.model_name.isna().all()
    assert lost.parse_error.str.contains("metadata: missing model_version").all()
    assert [_errors_without(e, "metadata: missing model_version") for e in lost.parse_error] == [
        e if isinstance(e, str) else None for e in found.parse_error
    ]
    _same(lost, found, [c for c in COMMON if c not in ("endpoint_name", "model_name", "parse_error")])
    assert set(gateway_keyed[unlogged].logging_error_codes) == {"MAX_REQUEST_SIZE_EXCEEDED"}
    assert [_errors_without(e, "request: missing") for e in legacy_keyed[unlogged].parse_error] == [
        e if isinstance(e, str) else None for e in gateway_keyed[unlogged].parse_error
    ]
    _same(legacy_keyed[unlogged], gateway_keyed[unlogged], [c for c in COMMON if c != "parse_error"])

    # Rows with no id: the content hash covers the row as each layout logged it; everything else is equal.
    by_content = [c for c in COMMON if c != "request_id"]
    _same(
        legacy[hashed].sort_values(by_content[:4]),
        gateway[gateway.request_id.str.startswith("sha1:")].sort_values(by_content[:4]),
        by_content,
    )


def test_gateway_columns_are_filled_and_legacy_ones_null(runs: dict[str, Any]) -> None:
    legacy, gateway = runs["legacy"][0], runs["gateway"][0]
    assert legacy[list(GATEWAY_COLUMNS)].isna().all().all()
    assert gateway.requester.notna().all() and gateway.served_entity_id.notna().all()
    versions = gateway.groupby("served_entity_id").model_version.unique()
    assert {key: sorted(map(str, value)) for key, value in versions.items()} == {
        "5c0f9a7e1b2d4e3f8a6b7c8d9e0f1a26": ["6"],
        "9e2b7c4d6f1a4b8c9d0e1f2a3b4c5d67": ["7"],
        UNKNOWN_ENTITY_ID: ["None"],
    }
    assert set(gateway.served_entity_name.dropna()) == {
        "dbdemos_advanced_chatbot_model-6",
        "dbdemos_advanced_chatbot_model-7",
    }


def test_summary_counts_unlogged_and_unmapped_rows(runs: dict[str, Any]) -> None:
    gateway, summary, warnings = runs["gateway"]
    assert warnings == []
    assert summary.not_logged == gateway.logging_error_codes.notna().sum() >= 1
    assert summary.unmapped == (gateway.served_entity_id == UNKNOWN_ENTITY_ID).sum() >= 1
    assert "not logged by Databricks" in summary.line() and "served-entities table lacks" in summary.line()
    legacy_summary = runs["legacy"][1]
    assert (legacy_summary.not_logged, legacy_summary.unmapped) == (0, 0)


def test_unreadable_served_entities_table_is_said_once_and_every_row_is_scored(
    runs: dict[str, Any], tmp_path: Path
) -> None:
    rows, summary, warnings = _score(tmp_path / "nogrant.duckdb", "gateway", TableName("entities", "nowhere"))
    assert len(warnings) == 1
    assert "Cannot read the served-entities table nowhere.entities" in warnings[0]
    assert "GRANT SELECT ON TABLE nowhere.entities" in warnings[0] and "\n" not in warnings[0]
    assert len(rows) == len(runs["gateway"][0])
    assert rows.model_version.isna().all() and rows.served_entity_id.notna().all()
    assert summary.unmapped == len(rows)


def test_the_default_system_table_name_reads_the_demo_copy_in_a_duckdb_file(tmp_path: Path) -> None:
    store = DuckDBStore(
        tmp_path / "x.duckdb", PAYLOAD, REQUESTS, served_entities=TableName.parse("system.serving.served_entities")
    )
    assert store.served_entities == ENTITIES


def test_an_older_requests_table_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    store = DuckDBStore(path, PAYLOAD, REQUESTS)
    store.replace_payload(generate_payload(300, 5))
    old = pa.schema([field for field in REQUESTS_ARROW if field.name not in GATEWAY_COLUMNS])
    store.replace_table(REQUESTS, old.empty_table(), old)
    summary = run_once(store, build_profile("light"))
    with duckdb.connect(str(path), read_only=True) as con:
        columns = con.sql("SELECT * FROM requests LIMIT 0").columns
        written = con.sql("SELECT count(*) FROM requests").fetchall()[0][0]
    assert sorted(columns) == sorted(REQUESTS_ARROW.names) and written == summary.written > 0


def test_cli_detects_the_layout_and_names_missing_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cli.duckdb"
    store = DuckDBStore(path, PAYLOAD, REQUESTS)
    store.replace_payload(generate_payload(200, 5, layout="gateway"), "gateway")
    store.replace_table(ENTITIES, served_entities(), SERVED_ENTITIES_ARROW)
    argv = ["--duckdb", str(path), "--payload-table", "payload", "--requests-table", "requests", "--quiet"]
    assert score_cli.main([*argv, "--served-entities-table", "serving.served_entities"]) == 0
    out = capsys.readouterr()
    assert "wrote 199" in out.out and "warning" not in out.err  # 200 rows, one a retry logged twice
    assert score_cli.main([*argv, "--served-entities-table", "serving.served_entities"]) == 0  # the watermark run
    assert "wrote 0" in capsys.readouterr().out
    with duckdb.connect(str(path)) as con:
        con.sql("CREATE TABLE odd AS SELECT request_time, request, response, served_entity_id, requester FROM payload")
    assert score_cli.main([*argv[:2], "--payload-table", "odd", "--requests-table", "r2", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert (
        "odd is not an inference table" in err
        and "it lacks request_date, databricks_request_id, client_request_id, status_code" in err
    )
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------------------
# Local Spark, both layouts
# ---------------------------------------------------------------------------------------------------------

needs_java = pytest.mark.skipif(
    shutil.which("java") is None and not os.environ.get("JAVA_HOME"), reason="Spark needs a Java runtime"
)


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("pyspark")
    from jobs.spark_session import local_spark

    session = local_spark("local[2]", warehouse_dir=tmp_path_factory.mktemp("gw-spark-warehouse"))
    yield session


@needs_java
@pytest.mark.spark
@pytest.mark.parametrize("layout", ["legacy", "gateway"])
def test_spark_engine_on_both_layouts_equals_the_embedded_engine(
    spark: Any, layout: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from jobs.spark_tables import write_payload_table, write_table

    _score(tmp_path / "embedded.duckdb", layout, rows=SPARK_ROWS)
    with duckdb.connect(str(tmp_path / "embedded.duckdb"), read_only=True) as con:
        embedded = con.sql("SELECT * EXCLUDE (scored_at) FROM requests ORDER BY request_id").to_arrow_table()
    payload, requests = f"gw_{layout}_payload", f"gw_{layout}_requests"
    write_payload_table(spark, TableName(payload), generate_payload(SPARK_ROWS, SEED, layout=layout), layout=layout)
    write_table(spark, TableName("gw_entities"), served_entities(), SERVED_ENTITIES_SCHEMA)
    argv = ["--engine", "spark", "--payload-table", payload, "--requests-table", requests, "--quiet"]
    assert score_cli.main([*argv, "--served-entities-table", "gw_entities"]) == 0
    assert f"wrote {embedded.num_rows:,}" in capsys.readouterr().out
    on_spark = spark.table(requests).drop("scored_at").orderBy("request_id").toArrow()
    on_spark = on_spark.select(embedded.column_names)  # the Spark table keeps its partition column, date, last
    assert on_spark.cast(embedded.schema).equals(embedded)  # Spark's UTC instants cast to naive UTC


@needs_java
@pytest.mark.spark
def test_spark_engine_without_a_readable_served_entities_table(spark: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.spark_tables import write_payload_table

    write_payload_table(
        spark, TableName("gw_nogrant_payload"), generate_payload(300, SEED, layout="gateway"), layout="gateway"
    )
    argv = ["--engine", "spark", "--payload-table", "gw_nogrant_payload", "--requests-table", "gw_nogrant_requests"]
    assert score_cli.main([*argv, "--quiet", "--served-entities-table", "nowhere.entities"]) == 0
    out = capsys.readouterr()
    assert out.err.count("Cannot read the served-entities table nowhere.entities") == 1
    assert "kept without a version" in out.out
    written = spark.table("gw_nogrant_requests").toPandas()
    assert len(written) >= 299 and written.model_version.isna().all()  # 300 rows, maybe one retry logged twice
    assert f"wrote {len(written)}" in out.out


@needs_java
@pytest.mark.spark
def test_spark_from_duckdb_copies_the_served_entities_table(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from jobs import spark_score

    path = tmp_path / "demo.duckdb"
    store = DuckDBStore(path, TableName("gw_copy_payload"), REQUESTS)
    store.replace_payload(generate_payload(300, SEED, layout="gateway"), "gateway")
    store.replace_table(ENTITIES, served_entities(), SERVED_ENTITIES_ARROW)
    monkeypatch.setenv("INFERENCE_EXPLORER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("INFERENCE_EXPLORER_PAYLOAD_TABLE", "gw_copy_payload")
    monkeypatch.delenv("INFERENCE_EXPLORER_SERVED_ENTITIES_TABLE", raising=False)
    assert spark_score.main(["--from-duckdb", str(path)]) == 0
    assert "served entities to the Spark table serving.served_entities" in capsys.readouterr().out
    copied = spark.table("serving.served_entities").toArrow()
    assert copied.num_rows == served_entities().num_rows
    # The job, with its default served-entities table name, reads the copy locally and names every version.
    assert score_cli.main(["--engine", "spark", "--requests-table", "gw_copy_requests", "--quiet"]) == 0
    rows = spark.table("gw_copy_requests").select("served_entity_id", "model_version").collect()
    known = [r for r in rows if r["served_entity_id"] not in (None, UNKNOWN_ENTITY_ID)]
    assert known and all(r["model_version"] is not None for r in known)
    assert "Cannot read the served-entities table" not in capsys.readouterr().err
