"""The Toxicity, Usage and cost, and Requests pages under Streamlit's AppTest.

The pages run against the synthetic requests of tests/test_details.py in a DuckDB data dir (with the analytics
rollups, without them, and with toxicity never scored); the numbers they show are checked against pandas.
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from core import pricing
from data_access.queries import requests
from data_access.schema import REQUESTS_ARROW
from testkit.apptest import app_for
from testkit.tables import SCORERS, synthetic_requests, write_data_dir

ROOT = Path(__file__).resolve().parent.parent
TOXICITY, USAGE, REQUESTS = "views/toxicity.py", "views/usage.py", "views/requests.py"


@pytest.fixture(scope="session")
def rows() -> pa.Table:
    return synthetic_requests(rows=2_500, seed=5)


@pytest.fixture(scope="session")
def raw(rows: pa.Table) -> pd.DataFrame:
    return rows.to_pandas()


@pytest.fixture(scope="session")
def with_rollups(tmp_path_factory: pytest.TempPathFactory, rows: pa.Table) -> Path:
    return write_data_dir(tmp_path_factory.mktemp("pages-rollups"), rows)


@pytest.fixture(scope="session")
def without_rollups(tmp_path_factory: pytest.TempPathFactory, rows: pa.Table) -> Path:
    return write_data_dir(tmp_path_factory.mktemp("pages-raw"), rows, rollups=False)


@pytest.fixture(scope="session")
def never_scored(tmp_path_factory: pytest.TempPathFactory, rows: pa.Table) -> Path:
    frame = rows.to_pandas()
    frame[["prompt_toxicity", "response_toxicity", "toxicity_scorer"]] = None
    table = pa.Table.from_pandas(frame, schema=REQUESTS_ARROW, preserve_index=False)
    return write_data_dir(tmp_path_factory.mktemp("pages-unscored"), table)


def open_page(at: AppTest, page: str) -> AppTest:
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements: object) -> list[str]:
    return [str(e.value) for e in elements]  # type: ignore[attr-defined]


def metric(at: AppTest, label: str) -> tuple[str, str]:
    found = [m for m in at.metric if m.label == label]
    assert found, [m.label for m in at.metric]
    return found[0].value, found[0].proto.delta


# ---------------------------------------------------------------------------------------------------------
# Toxicity
# ---------------------------------------------------------------------------------------------------------


def shown_scorer(raw: pd.DataFrame) -> pd.DataFrame:
    """The page shows one scorer at a time, by default the one that scored most (never a pool of both)."""
    return raw[raw["toxicity_scorer"] == SCORERS[0]]


def prompt_share(raw: pd.DataFrame, version: str, threshold: float = 0.5) -> tuple[int, int]:
    rows = shown_scorer(raw)
    scored = rows.loc[(rows["model_version"] == version) & rows["prompt_toxicity"].notna(), "prompt_toxicity"]
    return int((scored >= threshold).sum()), len(scored)


@pytest.mark.parametrize("rollups", [True, False])
def test_toxicity_page_shows_pandas_numbers(
    with_rollups: Path, without_rollups: Path, raw: pd.DataFrame, rollups: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(app_for(with_rollups if rollups else without_rollups, monkeypatch), TOXICITY)
    for version in ("6", "7"):
        flagged, scored = prompt_share(raw, version)
        value, delta = metric(at, f"v{version} toxic prompts")
        assert value == f"{flagged / scored:.2%}"
        assert delta.startswith(f"{flagged:,} of {scored:,}")
    assert any("computed from every request" in c for c in texts(at.caption)) == (not rollups)
    total = int((shown_scorer(raw)["prompt_toxicity"] >= 0.5).sum())
    assert any(f"of {total:,} flagged requests" in c for c in texts(at.caption))
    assert len(at.get("plotly_chart")) == 3  # prompt and response trends, the scatter


def test_toxicity_trends_leave_out_unversioned_requests_and_say_how_many(app: AppTest, raw: pd.DataFrame) -> None:
    at = open_page(app, TOXICITY)
    unversioned = int(raw["model_version"].isna().sum())
    assert unversioned > 0  # the synthetic data has malformed requests without a version
    assert any(
        c.startswith(f"{unversioned:,} requests carry no model version") and "left out of the per-version charts" in c
        for c in texts(at.caption)
    )
    for measure in ("share", "mean"):
        at.radio(key="tox_measure").set_value(measure).run()
        trends = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")][:2]
        names = {trace["name"] for spec in trends for trace in spec["data"]}
        assert names == {"v5", "v6", "v7"}, names  # no "unknown version" series


def test_toxicity_threshold_target_and_version_change_what_is_shown(app: AppTest, raw: pd.DataFrame) -> None:
    at = open_page(app, TOXICITY)
    at.slider(key="tox_threshold").set_value(0.37).run()
    flagged, scored = prompt_share(raw, "7", 0.37)
    assert metric(at, "v7 toxic prompts")[0] == f"{flagged / scored:.2%}"
    at.radio(key="tox_target").set_value("either").run()
    ours = shown_scorer(raw)
    either = int(((ours["prompt_toxicity"] >= 0.37) | (ours["response_toxicity"] >= 0.37)).sum())
    assert any(f"of {either:,} flagged requests" in c for c in texts(at.caption))
    at.sidebar.multiselect(key="version").set_value(["7"]).run()
    assert not at.exception
    assert [m.label for m in at.metric] == ["v7 toxic prompts"]
    only_7 = ours[ours["model_version"] == "7"]
    either_7 = int(((only_7["prompt_toxicity"] >= 0.37) | (only_7["response_toxicity"] >= 0.37)).sum())
    assert any(f"of {either_7:,} flagged requests" in c for c in texts(at.caption))
    table = at.dataframe[0].value
    assert set(table["model_version"]) == {"7"} and len(table) == min(50, either_7)


def test_toxicity_sorted_by_score_fetches_texts_by_lookup(app: AppTest, raw: pd.DataFrame) -> None:
    at = open_page(app, TOXICITY)
    at.selectbox(key="tox_sort").set_value("prompt_toxicity").run()
    table = at.dataframe[0].value
    assert list(table["prompt_toxicity"]) == sorted(table["prompt_toxicity"], reverse=True)
    by_id = raw.set_index("request_id")["prompt_text"]
    assert all(table["prompt_text"] == table["request_id"].map(by_id))


def test_toxicity_empty_selection_and_never_scored(
    app: AppTest, never_scored: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(app, TOXICITY)
    at.sidebar.multiselect(key="endpoint").set_value(["ep_a"])
    at.sidebar.multiselect(key="version").set_value(["5"]).run()  # version 5 only served on ep_b
    assert not at.exception
    assert any("No requests match" in i for i in texts(at.info))
    unscored = open_page(app_for(never_scored, monkeypatch), TOXICITY)
    assert any("No toxicity scores" in w for w in texts(unscored.warning))


def test_toxicity_single_day_and_a_version_without_traffic(app: AppTest) -> None:
    at = open_page(app, TOXICITY)
    at.sidebar.date_input(key="dates").set_value((date(2026, 4, 1), date(2026, 4, 1)))
    at.sidebar.selectbox(key="grain").select("day")
    at.sidebar.multiselect(key="version").set_value(["5", "6"]).run()
    assert not at.exception
    infos = texts(at.info)
    assert any("Only one time bucket" in i for i in infos)
    assert any("v5 has no requests" in i for i in infos)  # v5 served on April 2 only


# ---------------------------------------------------------------------------------------------------------
# Usage and cost
# ---------------------------------------------------------------------------------------------------------


def test_usage_page_prices_some_versions_and_leaves_the_rest_unpriced(app: AppTest, raw: pd.DataFrame) -> None:
    at = open_page(app, USAGE)
    tokens = int(raw["prompt_tokens"].fillna(0).sum() + raw["completion_tokens"].fillna(0).sum())
    assert metric(at, "Tokens")[0] == f"{tokens:,}"
    # Example prices are prefilled (and say so), so every version is costed at first.
    example = pricing.EXAMPLE_PRICE
    cost_all = (
        raw["prompt_tokens"].fillna(0).sum() / 1000 * example.prompt_per_1k
        + raw["completion_tokens"].fillna(0).sum() / 1000 * example.completion_per_1k
    )
    assert metric(at, "Estimated cost (priced versions)")[0] == f"${cost_all:,.2f}"
    assert any("Example prices — edit to match your contract" in c for c in texts(at.caption))
    assert "Every version priced" in texts(at.caption)
    editor = at.dataframe[0].value  # the price editor
    assert editor[pricing.PROMPT_PRICE].tolist() == ["0.0005"] * len(editor)
    at.session_state["usage_prices"] = {"6": pricing.Price(0.5, 1.5), "7": pricing.Price(None, 2.0)}
    at.run()
    v6 = raw[raw["model_version"] == "6"]
    no_version = raw[~raw["model_version"].isin(["6", "7"])]  # v5 and unversioned: still at the example price
    cost = v6["prompt_tokens"].fillna(0).sum() / 1000 * 0.5 + v6["completion_tokens"].fillna(0).sum() / 1000 * 1.5
    cost += no_version["prompt_tokens"].fillna(0).sum() / 1000 * example.prompt_per_1k
    cost += no_version["completion_tokens"].fillna(0).sum() / 1000 * example.completion_per_1k
    value, delta = metric(at, "Estimated cost (priced versions)")
    assert value == f"${cost:,.2f}" and not delta  # no delta arrow under the cost
    assert any(c.startswith("Unpriced: ") and "v7" in c and "v5" not in c for c in texts(at.caption))
    summary = at.dataframe[1].value
    assert summary.set_index("model_version").loc["v7", "cost"] == "unpriced"  # never $0
    assert any("Left out, not counted as $0: v7 (no price)" in c for c in texts(at.caption))
    at.session_state["usage_prices"] = {v: pricing.Price() for v in ("5", "6", "7", pricing.UNKNOWN_VERSION)}
    at.run()
    assert metric(at, "Estimated cost (priced versions)")[0] == "unpriced"
    assert any("No version has a price" in i for i in texts(at.info))
    labels = [c for c in texts(at.caption) if c.startswith("Unpriced: ")]
    assert labels and "vunknown" not in labels[0]
    if raw["model_version"].isna().any():
        assert "unknown version" in labels[0]
    assert "vunknown" not in at.dataframe[1].value["model_version"].tolist()


def test_usage_page_shows_estimated_tokens_and_both_latency_views(app: AppTest, raw: pd.DataFrame) -> None:
    at = open_page(app, USAGE)
    estimated = raw[raw["tokens_estimated"]]
    share = (estimated["prompt_tokens"].fillna(0).sum() + estimated["completion_tokens"].fillna(0).sum()) / (
        raw["prompt_tokens"].fillna(0).sum() + raw["completion_tokens"].fillna(0).sum()
    )
    assert not metric(at, "Tokens")[1]  # a share, not a change: a caption, no delta arrow
    assert f"{share:.1%} estimated" in texts(at.caption)
    assert any("each is within 5% of the exact value" in c for c in texts(at.caption))
    at.sidebar.selectbox(key="grain").select("minute").run()
    assert not at.exception
    titles = [chart.proto.spec for chart in at.get("plotly_chart")]
    assert any("1 standard deviation; pick hour or coarser" in spec for spec in titles)


def test_usage_page_empty_selection(app: AppTest) -> None:
    at = open_page(app, USAGE)
    at.sidebar.multiselect(key="endpoint").set_value(["ep_a"])
    at.sidebar.multiselect(key="version").set_value(["5"]).run()
    assert not at.exception
    assert any("No requests match" in i for i in texts(at.info))


# ---------------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------------


def shown_total(at: AppTest) -> int:
    for caption in texts(at.caption):
        found = re.search(r"Requests [\d,]+–[\d,]+ of ([\d,]+)\.", caption)
        if found:
            return int(found.group(1).replace(",", ""))
    raise AssertionError(texts(at.caption))


@pytest.mark.parametrize("needle", ["50%", "a_b", "\\", "'; DROP TABLE requests; --", "ärger"])
def test_requests_search_counts_literal_matches(app: AppTest, raw: pd.DataFrame, needle: str) -> None:
    at = open_page(app, REQUESTS)
    at.text_input(key="req_text").set_value(needle).run()
    assert not at.exception
    hit = raw["prompt_text"].fillna("").str.lower().str.contains(needle.lower(), regex=False)
    hit |= raw["response_text"].fillna("").str.lower().str.contains(needle.lower(), regex=False)
    assert shown_total(at) == hit.sum() > 0


def test_requests_filters_and_no_match(app: AppTest, raw: pd.DataFrame) -> None:
    at = open_page(app, REQUESTS)
    assert shown_total(at) == len(raw)
    at.multiselect(key="req_status").set_value([429, None])
    at.radio(key="req_parse").set_value("without").run()
    expected = raw[(raw["status_code"].isin([429]) | raw["status_code"].isna()) & raw["parse_error"].isna()]
    assert shown_total(at) == len(expected)
    at.text_input(key="req_text").set_value("no such text anywhere").run()
    assert any("No request matches" in i for i in texts(at.info))


def test_requests_open_one_shows_metrics_and_raw_payload(app: AppTest, raw: pd.DataFrame) -> None:
    at = open_page(app, REQUESTS)
    row = raw.iloc[3]
    at.text_input(key="req_open_id").set_value(row["request_id"]).run()
    assert not at.exception
    assert any(row["request_id"] in s for s in texts(at.subheader))
    code = texts(at.code)
    assert row["prompt_text"] in code
    assert any(row["prompt_text"] in c and '"messages"' in c for c in code)  # the raw request JSON, as logged
    metrics = at.dataframe[-1].value
    assert "toxicity_scorer" not in metrics.columns and any(str(row["toxicity_scorer"]) in s for s in metrics["scorer"])
    at.text_input(key="req_open_id").set_value("no-such-id").run()
    assert any("No request with id" in w for w in texts(at.warning))


def test_requests_export_says_when_the_cap_applied(
    app: AppTest, raw: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(app, REQUESTS)
    at.button(key="req_export").click().run()
    assert any(f"All {len(raw):,} matching requests" in c for c in texts(at.caption))
    monkeypatch.setattr(requests, "EXPORT_ROW_CAP", 100)
    at.button(key="req_export").click().run()
    assert not at.exception
    assert any("the cap applied" in w and f"{len(raw):,} requests match" in w for w in texts(at.warning))
    assert [b.label for b in at.get("download_button")][-2:] == ["CSV (100 rows)", "Parquet (100 rows)"]
