"""Per-scorer sampling and backfill on real DuckDB (and local Spark for the cross-engine check).

The sample is a hash of the request id (core/sampling.py): checked against an independent computation of the
documented formula in DuckDB SQL, against binomial bounds, and across engines; every row is written whatever the
rates; a backfill killed midway and rerun ends with every row scored once and the other scores untouched.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from core.sampling import in_sample, parse_rates, rates_from_text, rates_text, sample_point, scorer_name
from data_access.config import SettingError, TableName, load_settings
from data_access.demo import generate_payload
from data_access.duckdb_store import DuckDBStore
from data_access.payload import parse_payload
from jobs import score as score_cli
from jobs.score import run_once
from metrics.profiles import build_profile
from testkit.sampled import score_store as _job

ROWS = 2_000
PAYLOAD, REQUESTS = TableName("payload"), TableName("requests")
ROOT = Path(__file__).resolve().parent.parent
OTHER_SCORES = ("response_fk_grade", "readability_scorer", "response_perplexity", "perplexity_scorer", "pii_scorer")


def _requests(path: Path, columns: str = "*") -> pa.Table:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.sql(f"SELECT {columns} FROM requests ORDER BY request_id").to_arrow_table()


@pytest.fixture(scope="module")
def payload() -> pa.Table:
    return generate_payload(ROWS, seed=23)


@pytest.fixture(scope="module")
def ids(payload: pa.Table) -> list[str]:
    return sorted(set(parse_payload(payload)["request_id"].to_pylist()))


@pytest.fixture(scope="module")
def full_run(payload: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("full") / "inference.duckdb"
    assert _job(path, payload) == 0
    return path


@pytest.fixture(scope="module")
def sampled_run(payload: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sampled") / "inference.duckdb"
    assert _job(path, payload, "--sample-rate", "detoxify=0.1", "--sample-rate", "perplexity=0.3") == 0
    return path


# --- The hash --------------------------------------------------------------------------------------------


def test_sample_point_is_the_documented_formula_computed_independently_in_sql(ids: list[str]) -> None:
    # DuckDB's own md5, first 16 hex digits as an unsigned 64-bit number, over 2**64.
    with duckdb.connect() as con:
        con.register("ids", pa.table({"request_id": ids}))
        sql = "SELECT request_id, ('0x' || substr(md5(request_id), 1, 16))::UBIGINT::DOUBLE / 2**64 FROM ids"
        expected = dict(con.sql(sql).fetchall())
    assert all(math.isclose(sample_point(i), expected[i], rel_tol=1e-12, abs_tol=1e-15) for i in ids)
    assert all(0.0 <= sample_point(i) < 1.0 for i in ids)


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5, 0.9])
def test_chosen_share_is_within_binomial_bounds(rate: float) -> None:
    n = 20_000
    chosen = sum(in_sample([f"req-{i}" for i in range(n)], rate))
    sigma = math.sqrt(n * rate * (1 - rate))
    assert abs(chosen - n * rate) <= 4 * sigma  # deterministic ids: this either holds or the hash is not uniform


def test_samples_are_nested_and_rate_one_takes_every_row(ids: list[str]) -> None:
    small, large = in_sample(ids, 0.1), in_sample(ids, 0.5)
    assert all(b for a, b in zip(small, large, strict=True) if a)
    assert all(in_sample(ids, 1.0)) and not any(in_sample([None], 0.9))


def test_rate_parsing_and_names() -> None:
    assert parse_rates(["detoxify=0.1", "perplexity = 0.5", "toxicity=0.2", "pii=1"]) == {
        "toxicity": 0.2,
        "perplexity": 0.5,
    }
    assert scorer_name("RAG-support") == "rag_support" and scorer_name("vader") == "sentiment"
    assert rates_from_text(rates_text({"toxicity": 0.1, "pii": 0.25, "refusal": 1.0})) == {"toxicity": 0.1, "pii": 0.25}
    for bad in ("detoxify", "detoxify=0", "detoxify=1.5", "detoxify=nan", "nope=0.1"):
        with pytest.raises(ValueError):
            parse_rates([bad])


def test_the_setting_is_validated_with_one_line_naming_it() -> None:
    settings = load_settings({"INFERENCE_EXPLORER_SAMPLE_RATES": "detoxify=0.1, lm=0.5"}, {})
    assert settings.sample_rates == {"toxicity": 0.1, "perplexity": 0.5}
    assert load_settings({}, {"app": {"sample_rates": {"detoxify": 0.25}}}).sample_rates == {"toxicity": 0.25}
    with pytest.raises(SettingError) as raised:
        load_settings({"INFERENCE_EXPLORER_SAMPLE_RATES": "detoxify=2"}, {})
    assert "sample_rates" in str(raised.value) and "INFERENCE_EXPLORER_SAMPLE_RATES" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_bad_sample_rate_flag_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert score_cli.main(["--duckdb", str(tmp_path / "x.duckdb"), "--sample-rate", "detoxify=0"]) == 2
    assert "--sample-rate" in capsys.readouterr().err


# --- The embedded job --------------------------------------------------------------------------------------


def test_sampled_run_keeps_every_row_and_scores_exactly_the_hash_sample(
    sampled_run: Path, full_run: Path, ids: list[str]
) -> None:
    sampled, full = _requests(sampled_run), _requests(full_run)
    assert sampled["request_id"].to_pylist() == ids == full["request_id"].to_pylist()  # rows never lost
    chosen = dict(zip(ids, in_sample(ids, 0.1), strict=True))
    tox_scorer = sampled["toxicity_scorer"].to_pylist()
    assert [s is not None for s in tox_scorer] == [chosen[i] for i in ids]
    chosen_ppl = in_sample(ids, 0.3)
    assert [s is not None for s in sampled["perplexity_scorer"].to_pylist()] == chosen_ppl
    assert set(sampled["sample_rates"].to_pylist()) == {"perplexity=0.3,toxicity=0.1"}
    # In the sample the values are a full run's; outside it they are empty; unsampled scorers are untouched.
    for column in ("prompt_toxicity", "response_toxicity"):
        got, want = sampled[column].to_pylist(), full[column].to_pylist()
        assert [g for g, c in zip(got, chosen.values(), strict=True) if not c] == [None] * (
            len(ids) - sum(chosen.values())
        )
        assert [g for g, c in zip(got, chosen.values(), strict=True) if c] == [
            w for w, c in zip(want, chosen.values(), strict=True) if c
        ]
    for column in ("response_fk_grade", "readability_scorer", "prompt_sentiment", "pii_scorer", "score_error"):
        if column == "score_error":  # reasons of toxicity and perplexity appear only for sampled rows
            continue
        assert sampled[column].to_pylist() == full[column].to_pylist()


def test_unsampled_is_told_apart_from_failed_and_empty(sampled_run: Path) -> None:
    rows = _requests(sampled_run, "request_id, response_text, response_toxicity, toxicity_scorer, sample_rates")
    empty_in_sample = [r for r in rows.to_pylist() if r["response_text"] is None and r["toxicity_scorer"] is not None]
    assert empty_in_sample, "the demo has error responses inside the 10% sample"
    # A row with no text inside the sample names its scorer; a row outside the sample names none, with the rate.
    assert all(r["response_toxicity"] is None for r in empty_in_sample)
    outside = [r for r in rows.to_pylist() if r["toxicity_scorer"] is None]
    assert outside and all(rates_from_text(r["sample_rates"])["toxicity"] == 0.1 for r in outside)
    assert all(sample_point(r["request_id"]) >= 0.1 for r in outside)


def test_summary_line_names_the_rates(payload: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _job(tmp_path / "x.duckdb", payload, "--limit", "200", "--sample-rate", "detoxify=0.1") == 0
    assert "sampled by request id: toxicity at 10%" in capsys.readouterr().out


# --- Backfill ------------------------------------------------------------------------------------------------


def test_backfill_scores_only_the_missing_rows_and_leaves_other_scores(
    sampled_run: Path, full_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "inference.duckdb"
    shutil.copy(sampled_run, path)
    before = _requests(path)
    flags = ["--duckdb", str(path), "--quiet"]
    assert score_cli.main([*flags, "--backfill", "detoxify", "--sample-rate", "toxicity=0.4"]) == 0
    middle = _requests(path)
    chosen = in_sample(middle["request_id"].to_pylist(), 0.4)
    assert [s is not None for s in middle["toxicity_scorer"].to_pylist()] == chosen
    assert score_cli.main([*flags, "--backfill", "toxicity"]) == 0  # now every row
    after, full = _requests(path), _requests(full_run)
    assert after.num_rows == before.num_rows
    assert after["response_toxicity"].to_pylist() == full["response_toxicity"].to_pylist()
    assert after["toxicity_scorer"].to_pylist() == full["toxicity_scorer"].to_pylist()
    for column in (*OTHER_SCORES, "scored_at"):
        assert after[column].to_pylist() == before[column].to_pylist()
    assert "scored 0 rows" in _backfill_again(flags, capsys)  # idempotent: nothing left


def _backfill_again(flags: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert score_cli.main([*flags, "--backfill", "toxicity"]) == 0
    return capsys.readouterr().out


def test_backfill_since_a_date(sampled_run: Path, tmp_path: Path) -> None:
    path = tmp_path / "inference.duckdb"
    shutil.copy(sampled_run, path)
    assert score_cli.main(["--duckdb", str(path), "--quiet", "--backfill", "perplexity", "--since", "2026-04-20"]) == 0
    rows = _requests(path, "date, request_id, perplexity_scorer").to_pylist()
    late = [r for r in rows if r["date"] is not None and r["date"].isoformat() >= "2026-04-20"]
    early = [r for r in rows if r not in late]
    assert late and all(r["perplexity_scorer"] is not None for r in late)
    assert [r["perplexity_scorer"] is not None for r in early] == in_sample([r["request_id"] for r in early], 0.3)


def test_backfill_refuses_unknown_scorers_and_bad_dates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--duckdb", str(tmp_path / "x.duckdb")]  # (the Spark engine's backfill: tests/test_spark_backfill.py)
    assert score_cli.main([*base, "--backfill", "nope"]) == 2
    assert "unknown scorer 'nope'" in capsys.readouterr().err
    assert score_cli.main([*base, "--backfill", "toxicity", "--since", "April"]) == 2
    assert "April" in capsys.readouterr().err
    assert score_cli.main([*base, "--since", "2026-04-01"]) == 2
    assert "--since goes with --backfill" in capsys.readouterr().err


def test_backfill_killed_midway_resumes_to_every_row_scored_once(
    sampled_run: Path, full_run: Path, tmp_path: Path
) -> None:
    path = tmp_path / "inference.duckdb"
    shutil.copy(sampled_run, path)
    before = _requests(path)
    command = [sys.executable, "-m", "jobs.score", "--duckdb", str(path), "--quiet", "--backfill", "toxicity"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([*command, "--batch-size", "100"], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:  # kill once some batches committed
            if _filled(path) > before["toxicity_scorer"].length() - before["toxicity_scorer"].null_count + 40:
                break
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert subprocess.run(command, cwd=ROOT, env=env, check=False).returncode == 0
    after, full = _requests(path), _requests(full_run)
    assert after.num_rows == before.num_rows and after["request_id"].to_pylist() == before["request_id"].to_pylist()
    assert after["response_toxicity"].to_pylist() == full["response_toxicity"].to_pylist()
    for column in OTHER_SCORES:
        assert after[column].to_pylist() == before[column].to_pylist()
    reasons = [r for r in after["score_error"].to_pylist() if r]
    assert all(r.count("response_toxicity:") <= 1 for r in reasons)  # no reason written twice


def _filled(path: Path) -> int:
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            return int(con.sql("SELECT count(toxicity_scorer) FROM requests").fetchall()[0][0])
    except duckdb.Error:  # the job holds the file for a moment
        return 0


def test_rows_left_out_become_scored_in_later_runs_only_by_backfill(payload: pa.Table, tmp_path: Path) -> None:
    # A normal run never rescans written rows: the backfill is the one way to fill a sample in.
    path = tmp_path / "inference.duckdb"
    _job(path, payload, "--limit", "300", "--sample-rate", "detoxify=0.1")
    run_once(DuckDBStore(path, PAYLOAD, REQUESTS), build_profile("light"))
    rows = _requests(path, "toxicity_scorer, sample_rates").to_pylist()
    assert sum(r["toxicity_scorer"] is None for r in rows[:]) >= 200
    assert len(rows) == len(set(parse_payload(payload)["request_id"].to_pylist()))


# --- Both engines ---------------------------------------------------------------------------------------------


@pytest.mark.spark
def test_spark_scores_the_same_sample(payload: pa.Table, sampled_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("pyspark")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("Spark needs a Java runtime")
    from jobs.spark_runs import SparkScoringJob, run_spark_once
    from jobs.spark_session import local_spark
    from jobs.spark_tables import write_payload_table

    spark: Any = local_spark("local[2]", warehouse_dir=tmp_path / "warehouse")  # getOrCreate: shared session
    job = SparkScoringJob(
        TableName("sample_payload"),  # names of its own: the Spark session is shared with other test files
        TableName("sample_requests"),
        sample_rates=(("perplexity", 0.3), ("toxicity", 0.1)),
    )
    spark.sql("DROP TABLE IF EXISTS sample_requests")
    write_payload_table(spark, job.payload, payload)
    summary = run_spark_once(spark, job)
    assert summary.written == len(set(parse_payload(payload)["request_id"].to_pylist()))
    columns = ["request_id", "toxicity_scorer", "perplexity_scorer", "response_toxicity", "sample_rates"]
    on_spark = sorted(spark.table("sample_requests").select(*columns).collect(), key=lambda r: r["request_id"])
    embedded = _requests(sampled_run, ", ".join(columns)).to_pylist()
    assert [r.asDict() for r in on_spark] == embedded  # same ids chosen, same values, same recorded rates
    # And Spark SQL's own md5 picks those ids with the documented formula.
    sql = "SELECT request_id FROM sample_requests WHERE conv(substr(md5(request_id), 1, 16), 16, 10) / pow(2, 64) < 0.1"
    assert sorted(r[0] for r in spark.sql(sql).collect()) == [r["request_id"] for r in embedded if r["toxicity_scorer"]]


# --- What the pages show ----------------------------------------------------------------------------------------


def _page_figures(path: Path) -> tuple[Any, pa.Table]:
    """The Overview's version figures (v6 against v7) and the scorer coverage, through the pages' own queries."""
    from core.comparison import compare_pair
    from data_access.queries import Filters, run
    from data_access.queries.sampling import scorer_coverage
    from data_access.queries.versions import histograms_by_version, version_totals
    from data_access.sources import DuckDBSource

    source = DuckDBSource(path)
    totals = run(source, version_totals(REQUESTS, Filters())).table.to_pandas()
    histograms = run(source, histograms_by_version(REQUESTS, Filters())).table.to_pandas()
    coverage = run(source, scorer_coverage(REQUESTS, Filters())).table
    return compare_pair(totals, histograms, "6", "7", 0.5), coverage


def _wilson(k: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval, by its formula."""
    z, p = 1.959963984540054, k / n
    centre, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def test_pages_rest_on_the_sampled_values_and_say_so(sampled_run: Path, full_run: Path) -> None:
    from core.sampling import sampled_figures

    sampled, coverage = _page_figures(sampled_run)
    full, full_coverage = _page_figures(full_run)
    with duckdb.connect(str(sampled_run), read_only=True) as con:
        raw = (
            con.sql(
                "SELECT model_version, count(*) AS requests, count(toxicity_scorer) AS tox_scored, "
                "count(perplexity_scorer) AS ppl_scored, count(response_toxicity) AS n, "
                "count(*) FILTER (WHERE response_toxicity >= 0.5) AS k FROM requests GROUP BY ALL"
            )
            .to_arrow_table()
            .to_pylist()
        )
    by_version = {r["model_version"]: r for r in raw}
    rows = {r["model_version"]: r for r in coverage.to_pylist()}
    for version in ("6", "7"):
        expected = by_version[version]
        # Coverage from the rollup equals the raw count of scored requests.
        assert rows[version]["requests"] == expected["requests"]
        assert rows[version]["toxicity_scored"] == expected["tox_scored"]
        assert rows[version]["perplexity_scored"] == expected["ppl_scored"]
        assert rows[version]["readability_scored"] == expected["requests"]
        # The share and its interval come from the n values actually scored: Wilson's formula on the raw rows.
        figures = sampled.table.loc[version]
        assert figures["toxicity_n"] == expected["n"]
        assert figures["toxicity_rate"] == pytest.approx(expected["k"] / expected["n"])
        low, high = _wilson(expected["k"], expected["n"])
        assert figures["toxicity_rate_low"] == pytest.approx(low, abs=1e-9)
        assert figures["toxicity_rate_high"] == pytest.approx(high, abs=1e-9)
        # A tenth of the values: the interval is sqrt(10) (a common event) to 10 (a rare one) times as wide.
        width = figures["toxicity_rate_high"] - figures["toxicity_rate_low"]
        full_width = full.table.loc[version, "toxicity_rate_high"] - full.table.loc[version, "toxicity_rate_low"]
        assert 3 < width / full_width < 12
        assert full.table.loc[version, "toxicity_n"] > 8 * expected["n"]
    notes = sampled_figures(coverage.to_pandas(), ["6", "7"])
    assert set(notes) == {"toxicity", "perplexity"}
    share = by_version["7"]["tox_scored"] / by_version["7"]["requests"]
    assert notes["toxicity"]["7"] == (
        f"sampled, {by_version['7']['tox_scored']:,} of {by_version['7']['requests']:,} requests scored "
        f"({100 * share:.2g}%)"
    )
    assert sampled_figures(full_coverage.to_pandas(), ["6", "7"]) == {}


def test_overview_says_which_scorers_were_sampled(
    sampled_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streamlit as st

    from core.sampling import SAMPLING_HELP
    from testkit.apptest import app_for

    shutil.copy(sampled_run, tmp_path / "inference.duckdb")
    at = app_for(tmp_path, monkeypatch)
    try:
        at.run()
        assert not at.exception
        sampled = [c for c in at.caption if "requests scored" in c.value]
        assert [c.value.split("**")[1] for c in sampled] == ["Toxicity", "Perplexity"]
        assert all(c.help == SAMPLING_HELP for c in sampled) and "unbiased" in SAMPLING_HELP
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()
