"""The pages on an AI Gateway inference table: who sends toxic prompts, the requester filter, hashed requesters,
and payloads Databricks did not log, on the gateway demo built by the app's own first start. Numbers are checked
against pandas on the requests table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.requesters import requester_label
from data_access.config import TableName, load_settings
from data_access.queries import Filters, requests, run, toxicity, versions
from data_access.sources import DuckDBSource
from jobs.bootstrap import build_demo
from testkit.apptest import app_for

REQUESTS = TableName("requests")
THRESHOLD = 0.5


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("gateway-demo")
    environ = {
        "INFERENCE_EXPLORER_DATA_DIR": str(data_dir),
        "INFERENCE_EXPLORER_DEMO_FORMAT": "gateway",
        "INFERENCE_EXPLORER_DEMO_REQUESTS": "3000",
    }
    build_demo(load_settings(environ=environ, secrets={}))
    return data_dir


@pytest.fixture(scope="module")
def raw(folder: Path) -> pd.DataFrame:
    with duckdb.connect(str(folder / "inference.duckdb"), read_only=True) as con:
        return con.sql("SELECT * FROM requests").to_df()


def _query(folder: Path, query: object) -> pd.DataFrame:
    return run(DuckDBSource(folder / "inference.duckdb"), query).table.to_pandas()  # type: ignore[arg-type]


@pytest.mark.parametrize("from_rollups", [True, False])
def test_toxic_requesters_match_pandas(folder: Path, raw: pd.DataFrame, from_rollups: bool) -> None:
    flagged = toxicity.FlaggedQuery(THRESHOLD, "prompt")
    found = _query(folder, toxicity.toxic_requesters(REQUESTS, Filters(), flagged, from_rollups))
    scored = raw[raw.prompt_toxicity.notna()]
    expected = (
        scored.assign(hit=scored.prompt_toxicity >= THRESHOLD)
        .groupby("requester")
        .agg(prompts=("hit", "size"), flagged=("hit", "sum"))
        .query("flagged > 0")
        .sort_values(["flagged", "requester"], ascending=[False, True])
        .head(toxicity.MAX_REQUESTERS)
    )
    assert found.requester.tolist() == expected.index.tolist()
    assert found.flagged.tolist() == expected.flagged.tolist() and found.prompts.tolist() == expected.prompts.tolist()
    all_flagged = int((scored.prompt_toxicity >= THRESHOLD).sum())
    assert found.share_of_flagged.tolist() == pytest.approx((expected.flagged / all_flagged).tolist())
    assert found.flagged_rate.tolist() == pytest.approx((expected.flagged / expected.prompts).tolist())
    # The demo's trolls send most toxic prompts: they lead the ranking, and their flagged rates stand out.
    trolls = {"tom.hughes@example.com", "kofi.mensah@example.net", "lena.novak@example.net"}
    assert found.requester.iloc[0] in trolls
    assert set(found.sort_values("flagged_rate", ascending=False).requester[:3]) == trolls


@pytest.mark.parametrize("threshold", [0.05, 0.3, 0.87, 0.349, 0.02])  # the last two: off the rollup's grid
def test_toxic_requesters_from_the_rollup_equal_the_requests_at_any_threshold(folder: Path, threshold: float) -> None:
    """The requesters rollup bins hundredths from 0.05: on that grid it answers, elsewhere the requests do; the
    numbers are the same either way."""
    flagged = toxicity.FlaggedQuery(threshold, "prompt")
    fast, slow = (toxicity.toxic_requesters(REQUESTS, Filters(), flagged, f) for f in (True, False))
    on_grid = round(threshold * 1000) % 10 == 0 and threshold >= 0.05
    assert ("__requesters_v" in fast.sql("duckdb")) == on_grid
    pd.testing.assert_frame_equal(_query(folder, fast), _query(folder, slow))


def test_requester_filter_and_unlogged_counts_match_pandas(folder: Path, raw: pd.DataFrame) -> None:
    who = "noah.fischer@example.org"
    search = requests.RequestSearch(requester=who)
    count = _query(folder, requests.request_count(REQUESTS, Filters(), search))
    assert int(count.rows.iloc[0]) == int((raw.requester == who).sum()) > 0
    page = _query(folder, requests.request_page(REQUESTS, Filters(), search, page_size=200))
    assert set(page.request_id) == set(raw.request_id[raw.requester == who])
    # A requester typed with SQL in it is one literal, never SQL.
    odd = requests.RequestSearch(requester="x' OR '1'='1")
    assert int(_query(folder, requests.request_count(REQUESTS, Filters(), odd)).rows.iloc[0]) == 0

    unlogged = _query(folder, versions.not_logged_by_version(REQUESTS, Filters()))
    expected = raw[raw.logging_error_codes.notna()].groupby(["model_version", "logging_error_codes"]).size()
    assert unlogged.requests.sum() == expected.sum() >= 1
    assert dict(zip(unlogged.model_version, unlogged.requests, strict=True)) == {
        version: int(n) for (version, _), n in expected.items()
    }


@pytest.fixture
def app(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTest]:
    yield app_for(folder, monkeypatch)
    st.cache_data.clear()
    st.cache_resource.clear()


def _open(at: AppTest, page: str) -> AppTest:
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _frames(at: AppTest) -> list[pd.DataFrame]:
    return [frame.value for frame in at.dataframe]


def test_toxicity_page_ranks_requesters_with_links(app: AppTest) -> None:
    at = _open(app, "views/toxicity.py")
    assert "Who sends toxic prompts" in [s.value for s in at.subheader]
    senders = next(f for f in _frames(at) if "share_of_flagged" in f.columns)
    assert senders.requester.iloc[0] in {"tom.hughes@example.com", "kofi.mensah@example.net", "lena.novak@example.net"}
    assert all(link.startswith("requests?") and "requester=" in link for link in senders.requests)
    assert senders.flagged.is_monotonic_decreasing


def test_hashed_requesters_show_no_identity(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_EXPLORER_HASH_REQUESTERS", "true")
    at = _open(app_for(folder, monkeypatch), "views/toxicity.py")
    senders = next(f for f in _frames(at) if "share_of_flagged" in f.columns)
    assert all(name.startswith("requester-") and len(name) == 20 for name in senders.requester)
    assert not any("@" in link for link in senders.requests)
    assert requester_label("tom.hughes@example.com", True) in set(senders.requester)  # stable: same hash anywhere
    st.cache_data.clear()
    st.cache_resource.clear()


def test_requests_page_filters_by_requester(app: AppTest, raw: pd.DataFrame) -> None:
    at = _open(app, "views/requests.py")
    who = "jun.tanaka@example.com"
    at.selectbox(key="requester").set_value(who).run()
    assert not at.exception, [e.value for e in at.exception]
    expected = int((raw.requester == who).sum())
    assert any(f"of {expected:,}." in c.value for c in at.caption), [c.value for c in at.caption]


def test_overview_counts_unlogged_payloads_per_version(app: AppTest, raw: pd.DataFrame) -> None:
    at = _open(app, "views/overview.py")
    assert "Not logged by Databricks" in [s.value for s in at.subheader]
    shown = next(f for f in _frames(at) if "logging_error_codes" in f.columns)
    assert shown.requests.sum() == raw.logging_error_codes.notna().sum()


def test_time_charts_mark_the_served_entity_changes(app: AppTest) -> None:
    at = _open(app, "views/trends.py")
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    hovers = " ".join(a.get("hovertext", "") for a in spec["layout"].get("annotations", []))
    # data_access.demo.gateway.CONFIGS: v7 added at the canary's start, the split changed, v6 removed
    assert "config 2: v7 added (serving v6, v7)" in hovers
    assert "config 3: configuration changed" in hovers and "config 4: v6 removed (serving v7)" in hovers
    assert "v7 first served" in hovers  # and the traffic's own events beside them
