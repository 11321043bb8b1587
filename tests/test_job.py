"""The scoring job on real DuckDB: every payload row accounted for once, idempotent, resumable after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from core.catalog import METRIC_SCORER_COLUMN as SCORER_COLUMN
from data_access.config import TableName
from data_access.demo import generate_payload
from data_access.duckdb_store import DuckDBStore
from data_access.payload import parse_payload
from data_access.schema import REQUESTS_ARROW, SCORER_COLUMNS_ADDED
from jobs.score import main, run_once
from metrics.profiles import build_profile

ROWS = 3_000
PAYLOAD, REQUESTS = TableName("payload"), TableName("requests")
ROOT = Path(__file__).resolve().parent.parent


def _store(path: Path, payload: pa.Table | None = None) -> DuckDBStore:
    store = DuckDBStore(path, PAYLOAD, REQUESTS)
    if payload is not None:
        store.replace_payload(payload)
    return store


def _requests(path: Path) -> pa.Table:
    with duckdb.connect(str(path), read_only=True) as con:
        table = con.sql("SELECT * EXCLUDE (scored_at) FROM requests ORDER BY request_id").to_arrow_table()
    return table


@pytest.fixture(scope="module")
def payload() -> pa.Table:
    return generate_payload(ROWS, seed=11)


@pytest.fixture(scope="module")
def clean_run(payload: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clean") / "inference.duckdb"
    run_once(_store(path, payload), build_profile("light"), batch_size=500)
    return path


def test_every_payload_id_is_written_exactly_once(payload: pa.Table, clean_run: Path) -> None:
    written = _requests(clean_run)
    expected_ids = set(parse_payload(payload)["request_id"].to_pylist())  # the parser's id rule, independently
    assert set(written["request_id"].to_pylist()) == expected_ids
    assert written.num_rows == len(expected_ids)
    assert written.schema.names == [n for n in REQUESTS_ARROW.names if n != "scored_at"]


def test_broken_rows_are_kept_with_a_reason(clean_run: Path) -> None:
    written = _requests(clean_run)
    broken = written.filter(pc.is_valid(written["parse_error"]))
    assert broken.num_rows > 0  # the demo data holds malformed rows on purpose
    assert all(row["request_id"] and row["parse_error"] for row in broken.to_pylist())


def test_metrics_are_filled_with_their_scorer(clean_run: Path) -> None:
    written = _requests(clean_run)
    profile = build_profile("light")
    ok = written.filter(pc.and_(pc.equal(written["status_code"], 200), pc.is_null(written["parse_error"])))
    assert set(ok["readability_scorer"].to_pylist()) == {profile.readability.id}
    grades = ok["response_fk_grade"].drop_null()
    assert len(grades) > 0.9 * ok.num_rows
    sample = ok.slice(0, 25)  # the stored numbers are what the scorer gives for the stored texts
    expected = profile.readability.score(sample["response_text"].to_pylist()).values
    assert sample["response_fk_grade"].to_pylist() == pytest.approx(expected, nan_ok=True)


def test_newer_metrics_are_filled_with_their_scorer(clean_run: Path) -> None:
    written = _requests(clean_run)
    profile = build_profile("light")
    ok = written.filter(pc.and_(pc.equal(written["status_code"], 200), pc.is_null(written["parse_error"])))
    sample = ok.slice(0, 40)
    prompts, responses = sample["prompt_text"].to_pylist(), sample["response_text"].to_pylist()
    checks = {
        "prompt_pii_count": (profile.pii, prompts),
        "response_pii_count": (profile.pii, responses),
        "response_refusal": (profile.refusal, responses),
        "prompt_injection": (profile.injection, prompts),
        "prompt_sentiment": (profile.sentiment, prompts),
    }
    for column, (scorer, texts) in checks.items():
        assert set(ok[SCORER_COLUMN[column]].to_pylist()) == {scorer.id}
        assert sample[column].to_pylist() == pytest.approx(scorer.score(texts).values, nan_ok=True), column
    assert sample["response_pii_kinds"].to_pylist() == profile.pii.kinds(responses)
    languages = profile.language.labels(prompts).values, profile.language.labels(responses).values
    assert sample["prompt_language"].to_pylist() == languages[0]
    assert sample["response_language"].to_pylist() == languages[1]
    match = [None if p is None or r is None else float(p == r) for p, r in zip(*languages, strict=True)]
    assert sample["response_language_match"].to_pylist() == match
    # No retriever context in the demo: no RAG support value and no scorer claimed for one.
    assert written["response_rag_support"].null_count == written.num_rows == written["rag_support_scorer"].null_count


def test_a_requests_table_from_before_the_newer_scorers_keeps_working(payload: pa.Table, tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    store = _store(path, payload)
    first = run_once(store, build_profile("light"), limit=500).written
    newer = [name for name in REQUESTS_ARROW.names if name in SCORER_COLUMNS_ADDED]
    with duckdb.connect(str(path)) as con:  # as the file was before these columns existed
        for name in newer:
            con.execute(f'ALTER TABLE requests DROP COLUMN "{name}"')
    assert run_once(store, build_profile("light")).written > 0
    written = _requests(path)
    assert written.schema.names == [n for n in REQUESTS_ARROW.names if n != "scored_at"]
    old_rows = written.filter(pc.is_null(written["pii_scorer"]))
    assert old_rows.num_rows == first  # rows scored before keep their values and get nulls in the new columns
    assert old_rows["response_fk_grade"].null_count < first
    assert written.filter(pc.is_valid(written["pii_scorer"])).num_rows == written.num_rows - first


def test_second_run_writes_nothing(clean_run: Path) -> None:
    before = _requests(clean_run)
    summary = run_once(_store(clean_run), build_profile("light"), batch_size=500)
    assert (summary.read, summary.written) == (0, 0)
    assert _requests(clean_run).equals(before)


def test_limit_then_rest_equals_one_run(payload: pa.Table, clean_run: Path, tmp_path: Path) -> None:
    path = tmp_path / "inference.duckdb"
    first = run_once(_store(path, payload), build_profile("light"), batch_size=300, limit=700)
    assert first.written == 700
    run_once(_store(path), build_profile("light"), batch_size=300)
    assert _requests(path).equals(_requests(clean_run))


def test_killed_job_resumes_to_the_same_rows(payload: pa.Table, clean_run: Path, tmp_path: Path) -> None:
    path = tmp_path / "inference.duckdb"
    _store(path, payload)
    command = [sys.executable, "-m", "jobs.score", "--duckdb", str(path), "--batch-size", "100", "--quiet"]
    job = subprocess.Popen(command, cwd=ROOT, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    written = 0
    while job.poll() is None and written < 500:  # kill it mid-run, after some batches were committed
        time.sleep(0.05)
        try:
            with duckdb.connect(str(path), read_only=True) as con:
                written = con.sql("SELECT count(*) FROM requests").fetchall()[0][0]
        except duckdb.Error:
            continue  # the job holds the write lock
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert 0 < written < ROWS, "the job must be killed mid-run for this test to mean anything"
    assert main(["--duckdb", str(path), "--batch-size", "400", "--quiet"]) == 0
    assert _requests(path).equals(_requests(clean_run))


def test_duplicate_ids_are_written_once(payload: pa.Table, tmp_path: Path) -> None:
    doubled = pa.concat_tables([payload, payload.slice(0, 50)])
    path = tmp_path / "inference.duckdb"
    run_once(_store(path, doubled), build_profile("light"), batch_size=200)
    ids = _requests(path)["request_id"]
    assert len(ids) == len(pc.unique(ids))


def test_rows_without_any_id_are_kept_once(payload: pa.Table, tmp_path: Path) -> None:
    nulls = pa.nulls(5, pa.string())
    anonymous = (
        payload.slice(0, 5).set_column(0, "client_request_id", nulls).set_column(1, "databricks_request_id", nulls)
    )
    path = tmp_path / "inference.duckdb"
    store = _store(path, pa.concat_tables([anonymous, anonymous]))  # the same anonymous rows twice
    run_once(store, build_profile("light"))
    run_once(store, build_profile("light"))
    ids = _requests(path)["request_id"].to_pylist()
    assert len(ids) == 5 and all(i.startswith("sha1:") for i in ids)


def test_cli_help_and_summary(tmp_path: Path, payload: pa.Table, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert "--watch" in capsys.readouterr().out
    path = tmp_path / "inference.duckdb"
    _store(path, payload.slice(0, 400))
    assert main(["--duckdb", str(path), "--quiet"]) == 0
    assert "read 400 rows, wrote 400" in capsys.readouterr().out


def test_missing_payload_table_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--duckdb", str(tmp_path / "new.duckdb"), "--quiet"]) == 1
    assert "payload table payload is not in" in capsys.readouterr().err
