"""Every page that shows a sampled scorer's figures says how many requests they rest on, and its shares, tests
and intervals use the scored rows only.

A real embedded store is scored by the scoring job with `--sample-rate detoxify=0.1 --sample-rate perplexity=0.3`
(a second one without rates); the pages run under AppTest and their captions, counts and shares are checked
against counts taken directly from the requests table with DuckDB SQL.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core import monitor_rules as mr
from core.comparison import compare_pair
from core.sampling import SAMPLING_HELP, pooled, sampled_captions
from core.versions import version_label
from data_access.demo import generate_payload
from data_access.demo_registry import DEMO_MODEL_NAME, build_demo_registry
from data_access.queries import Filters
from testkit.apptest import app_for
from testkit.catalog_fetch import catalog_fetch
from testkit.sampled import REQUESTS, score_store
from ui import report

ROWS = 2_000
OVERVIEW, TRENDS, TOXICITY = "views/overview.py", "views/trends.py", "views/toxicity.py"
DRIFT, REQUESTS_PAGE = "views/drift.py", "views/requests.py"
RATES = ("--sample-rate", "detoxify=0.1", "--sample-rate", "perplexity=0.3")


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    payload = generate_payload(ROWS, seed=23)
    found = {}
    for name, flags in (("sampled", RATES), ("full", ())):
        path = tmp_path_factory.mktemp(name) / "inference.duckdb"
        assert score_store(path, payload, *flags) == 0
        found[name] = path
    return found


def counts(path: Path, where: str = "TRUE") -> pd.DataFrame:
    """Per version, straight from the requests table: requests, requests each scorer scored, values and the
    values at or above 0.5."""
    sql = f"""
        SELECT model_version, count(*) AS requests,
               count(toxicity_scorer) AS toxicity_scored, count(perplexity_scorer) AS perplexity_scored,
               count(prompt_toxicity) AS prompts, count(*) FILTER (WHERE prompt_toxicity >= 0.5) AS prompts_flagged,
               count(response_toxicity) AS responses,
               count(*) FILTER (WHERE response_toxicity >= 0.5) AS responses_flagged,
               count(response_perplexity) AS perplexities
        FROM requests WHERE {where} GROUP BY ALL"""
    with duckdb.connect(str(path), read_only=True) as con:
        frame = con.sql(sql).df()
    return frame[frame["model_version"].notna()].set_index("model_version")


def overlap(path: Path) -> tuple[object, object]:
    """First and last day both v6 and v7 served (the Overview's default comparison window)."""
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(
            "SELECT min(date), max(date) FROM (SELECT date FROM requests WHERE model_version IN ('6', '7') "
            "GROUP BY date HAVING count(DISTINCT model_version) = 2)"
        ).fetchone()  # type: ignore[return-value]


def expected_note(row: pd.Series, slot: str) -> str:
    scored, requests = int(row[f"{slot}_scored"]), int(row["requests"])
    return f"sampled, {scored:,} of {requests:,} requests scored ({100 * scored / requests:.2g}%)"


@pytest.fixture
def app(
    stores: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str, str], AppTest]]:
    def start(store: str, page: str) -> AppTest:
        folder = tmp_path / store
        folder.mkdir(exist_ok=True)
        shutil.copy(stores[store], folder / "inference.duckdb")
        at = app_for(folder, monkeypatch)
        at.run()
        if page != OVERVIEW:
            at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    yield start
    st.cache_data.clear()
    st.cache_resource.clear()


def sampled_captions_of(at: AppTest) -> dict[str, str]:
    """The sampled-scorer captions on the page, by the scorer they name; each carries the sampling help."""
    found = {}
    for caption in at.caption:
        if caption.value.startswith("**") and "requests scored" in caption.value:
            assert caption.help == SAMPLING_HELP
            found[caption.value.split("**")[1]] = caption.value
    return found


def test_toxicity_page_names_the_sample_and_its_shares_divide_by_scored_texts(app, stores) -> None:
    at = app("sampled", TOXICITY)
    raw = counts(stores["sampled"])
    captions = sampled_captions_of(at)
    assert list(captions) == ["Toxicity"]
    for version in ("6", "7"):
        assert f"{version_label(version)} {expected_note(raw.loc[version], 'toxicity')}" in captions["Toxicity"]
    assert int(raw["toxicity_scored"].sum()) < 0.15 * int(raw["requests"].sum())  # the sample really is small
    headline = {m.label: m for m in at.metric}
    for version in ("6", "7"):
        row = raw.loc[version]
        metric = headline[f"{version_label(version)} toxic prompts"]
        # Share of the scored prompts (k / n), never of the requests.
        assert metric.value == f"{row['prompts_flagged'] / row['prompts']:.2%}"
        assert str(metric.delta).startswith(f"{row['prompts_flagged']:,} of {row['prompts']:,};")
        assert row["prompts"] < row["requests"] / 5
    # The flagged list and the requesters can only hold scored requests: the page says the rest are not clean.
    assert any(c.value.startswith("Rows ") and "not clean" in c.value for c in at.caption)


def test_trends_names_the_sample_of_the_metric_shown_only(app, stores) -> None:
    at = app("sampled", TRENDS)
    assert sampled_captions_of(at) == {}  # the default metric (readability) is scored in full
    raw = counts(stores["sampled"])
    for metric, title, slot in (
        ("response_perplexity", "Perplexity", "perplexity"),
        ("response_toxicity", "Toxicity", "toxicity"),
    ):
        at.selectbox(key="trend_metric").set_value(metric).run()
        assert not at.exception
        captions = sampled_captions_of(at)
        assert list(captions) == [title]
        assert all(f"v{v} {expected_note(raw.loc[v], slot)}" in captions[title] for v in ("6", "7"))


def test_drift_names_each_sides_sample_and_its_tests_rest_on_scored_values(app, stores) -> None:
    at = app("sampled", DRIFT)
    raw = counts(stores["sampled"])
    captions = sampled_captions_of(at)
    assert list(captions) == ["Toxicity", "Perplexity"]
    for title, slot in (("Toxicity", "toxicity"), ("Perplexity", "perplexity")):
        assert all(f"v{v} {expected_note(raw.loc[v], slot)}" in captions[title] for v in ("6", "7"))
    drift = next(frame.value for frame in at.dataframe if "n_baseline" in frame.value.columns).set_index("metric")
    # The KS test and PSI rest on the scored values of each side: n is the scored count, not the requests.
    assert drift.loc["response_perplexity", "n_baseline"] == raw.loc["6", "perplexities"]
    assert drift.loc["response_perplexity", "n_comparison"] == raw.loc["7", "perplexities"]
    assert drift.loc["response_toxicity", "n_baseline"] == raw.loc["6", "responses"]


def test_drift_between_date_windows_names_each_windows_sample(app, stores) -> None:
    at = app("sampled", DRIFT)
    at.radio(key="drift_mode").set_value("windows").run()
    assert not at.exception
    first, last = at.date_input(key="drift_base_window").value, at.date_input(key="drift_comp_window").value
    captions = sampled_captions_of(at)
    assert list(captions) == ["Toxicity", "Perplexity"]
    with duckdb.connect(str(stores["sampled"]), read_only=True) as con:
        for start, end in (first, last):  # every version of the window pooled, unversioned requests included
            requests, scored = con.execute(
                "SELECT count(*), count(toxicity_scorer) FROM requests WHERE date BETWEEN ? AND ?", [start, end]
            ).fetchone()  # type: ignore[misc]
            share = f"{100 * scored / requests:.2g}%"
            assert (
                f"{start} – {end} sampled, {scored:,} of {requests:,} requests scored ({share})" in captions["Toxicity"]
            )


def test_registry_comparison_names_the_sample_of_the_compared_days(
    stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "registry"
    folder.mkdir()
    shutil.copy(stores["sampled"], folder / "inference.duckdb")
    build_demo_registry(folder / "mlflow", DEMO_MODEL_NAME)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "INFERENCE_EXPLORER_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    at = app_for(folder, monkeypatch)
    try:
        at.switch_page("views/registry.py").run()
        assert not at.exception, [e.value for e in at.exception]
        assert (at.selectbox(key="registry_old").value, at.selectbox(key="registry_new").value) == (6, 7)
        first, last = overlap(stores["sampled"])
        raw = counts(stores["sampled"], f"date BETWEEN DATE '{first}' AND DATE '{last}'")
        captions = sampled_captions_of(at)
        assert list(captions) == ["Toxicity", "Perplexity"]
        assert all(f"v{v} {expected_note(raw.loc[v], 'perplexity')}" in captions["Perplexity"] for v in ("6", "7"))
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()


def test_overview_tests_and_cards_rest_on_the_scored_rows_of_the_window(app, stores) -> None:
    at = app("sampled", OVERVIEW)
    first, last = overlap(stores["sampled"])
    raw = counts(stores["sampled"], f"date BETWEEN DATE '{first}' AND DATE '{last}'")
    captions = sampled_captions_of(at)
    assert list(captions) == ["Toxicity", "Perplexity"]
    assert f"v7 {expected_note(raw.loc['7'], 'toxicity')}" in captions["Toxicity"]
    tests = next(frame.value for frame in at.dataframe if "n_baseline" in frame.value.columns).set_index("measure")
    toxicity = tests.loc["Response toxicity rate"]
    assert (toxicity["n_baseline"], toxicity["n_comparison"]) == (raw.loc["6", "responses"], raw.loc["7", "responses"])
    assert toxicity["baseline"] == pytest.approx(raw.loc["6", "responses_flagged"] / raw.loc["6", "responses"])
    perplexity = tests.loc["Response perplexity"]
    assert (perplexity["n_baseline"], perplexity["n_comparison"]) == tuple(raw.loc[["6", "7"], "perplexities"])
    helps = " ".join(m.help or "" for m in at.metric)
    assert f"({raw.loc['7', 'responses']:,} of {raw.loc['7', 'requests']:,} requests scored)" in helps


def test_requests_says_unsampled_rows_have_no_value(app, stores) -> None:
    at = app("sampled", REQUESTS_PAGE)
    assert sampled_captions_of(at) == {} and not [c for c in at.caption if "not in its sample" in c.value]
    at.selectbox(key="req_sort").set_value("response_toxicity").run()
    with duckdb.connect(str(stores["sampled"]), read_only=True) as con:
        requests, scored = con.execute("SELECT count(*), count(toxicity_scorer) FROM requests").fetchone()  # type: ignore[misc]
        unsampled = con.execute("SELECT min(request_id) FROM requests WHERE toxicity_scorer IS NULL").fetchone()[0]  # type: ignore[index]
    note = next(c for c in at.caption if c.value.startswith("**Toxicity** is sampled"))
    assert f"{scored:,} of {requests:,} requests scored" in note.value
    assert f"the other {requests - scored:,} requests have no value" in note.value and "not because" in note.value
    at.text_input(key="req_open_id").set_value(unsampled).run()
    detail = next(frame.value for frame in at.dataframe if "scorer" in frame.value.columns).set_index("metric")
    assert detail.loc["Response toxicity", "scorer"] == "not in its sample (sampled at 10%)"
    assert pd.isna(detail.loc["Response toxicity", "value"])


@pytest.mark.parametrize("page", [OVERVIEW, TOXICITY, DRIFT, REQUESTS_PAGE])
def test_an_unsampled_store_shows_no_sampling_caption(app, page: str) -> None:
    at = app("full", page)
    if page == REQUESTS_PAGE:
        at.selectbox(key="req_sort").set_value("response_toxicity").run()
    shown = [c.value for c in at.caption]
    assert not [c for c in shown if "requests scored" in c or "is sampled" in c or "not clean" in c]


def test_the_report_lists_the_sampled_scorers_of_the_compared_days(stores) -> None:
    documents = {}
    for store, path in stores.items():
        fetch = catalog_fetch(path, REQUESTS)
        first, last = overlap(path)
        window = Filters(start=first, end=last)
        totals = fetch("queries.versions.version_totals", filters=window, from_rollups=True)
        histograms = fetch("queries.versions.histograms_by_version", filters=window, from_rollups=True)
        result = compare_pair(totals.data, histograms.data, "6", "7", 0.5)
        context = report.ReportContext(Filters(), "day", "6", "7", 0.5, True, (first, last), "duckdb", "requests", True)
        documents[store] = report.build_html(report.collect(fetch, context, result, [totals, histograms]))
    first, last = overlap(stores["sampled"])
    raw = counts(stores["sampled"], f"date BETWEEN DATE '{first}' AND DATE '{last}'")
    sampled = documents["sampled"].split('<div id="sampled">', 1)[1].split("</div>", 1)[0]
    assert "<strong>Toxicity</strong>" in sampled and "<strong>Perplexity</strong>" in sampled
    assert f"v6 {expected_note(raw.loc['6'], 'toxicity')}" in sampled
    assert f"v7 {expected_note(raw.loc['7'], 'perplexity')}" in sampled
    assert '<div id="sampled">' not in documents["full"]
    # The toxicity trend (every selected date) says under the chart what each version's line rests on.
    raw_all = counts(stores["sampled"])
    assert "Toxicity (alt-profanity-check" in documents["sampled"]
    assert f"v7 {expected_note(raw_all.loc['7'], 'toxicity')}" in documents["sampled"]
    assert " sampled, " not in documents["full"]


def test_a_monitor_share_divides_by_the_scored_values_and_says_of_how_many_requests(stores) -> None:
    fetch = catalog_fetch(stores["sampled"], REQUESTS)
    totals = fetch("queries.versions.version_totals", filters=Filters(), from_rollups=True).data
    hist = fetch("queries.versions.histograms_by_version", filters=Filters(), from_rollups=True).data
    hist = hist.rename(columns={"group": "model_version"})
    rule = mr.Rule("toxic", "threshold", timedelta(days=30), figure="toxic_share", metric="response_toxicity",
                   threshold=0.5, above=0.1)  # fmt: skip
    value, samples, detail = mr.figure_value(rule, totals, hist, {})
    with duckdb.connect(str(stores["sampled"]), read_only=True) as con:
        requests, responses, flagged = con.execute(
            "SELECT count(*), count(response_toxicity), count(*) FILTER (WHERE response_toxicity >= 0.5) FROM requests"
        ).fetchone()  # type: ignore[misc]
    assert samples == responses and samples < requests / 5
    assert value == pytest.approx(flagged / responses)  # of the scored responses, not of the requests
    assert f"{responses:,} values of {requests:,} requests" in detail


def test_pooled_coverage_names_date_windows() -> None:
    coverage = pd.DataFrame(
        {"model_version": ["6", "7"], "requests": [100, 300], "toxicity_scored": [10, 30]}
        | {f"{s}_scored": [100, 300] for s in ("readability", "perplexity", "pii", "refusal", "injection")}
        | {f"{s}_scored": [100, 300] for s in ("sentiment", "language")}
    )
    both = pd.concat([pooled(coverage, "first"), pooled(coverage.iloc[:1], "second")], ignore_index=True)
    lines = sampled_captions(both, ["first", "second"], label=str.upper)
    assert lines == [
        "**Toxicity**: FIRST sampled, 40 of 400 requests scored (10%); SECOND sampled, 10 of 100 requests scored (10%)"
    ]
    assert sampled_captions(coverage, ["6", "7"], slots=["perplexity"]) == []
