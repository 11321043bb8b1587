"""The Model registry page under AppTest, against a real local MLflow store and a real scored requests table.

The store is built once per module with `build_demo_registry` (seven versions from real runs; champion -> 7,
previous -> 6). Every test starts with champion back on 7 and an empty audit log. Expected numbers come from
MLflow's own client and from pandas over the same requests rows, never from the page's helpers.
"""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before MLflow is used: tests send nothing out

import math
import shutil
import socket
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import streamlit as st
from mlflow import MlflowClient
from streamlit.testing.v1 import AppTest

from data_access.config import TableName
from data_access.demo import generate_requests
from data_access.demo_registry import DEMO_MODEL_NAME, build_demo_registry
from data_access.queries import Filters
from data_access.queries.pages import PAGE_QUERIES
from data_access.registry.rollback import confirmation_phrase
from data_access.rollup_refresh import refresh_rollups
from jobs.scoring import parse_and_score
from metrics.profiles import build_profile
from ui import registry_data
from ui import registry_view as view

ROOT = Path(__file__).resolve().parent.parent
MODEL = DEMO_MODEL_NAME
PAGE = "views/registry.py"
TOKEN = "dapi0123456789abcdef0123456789abcdef"


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """inference.duckdb with a small scored requests table (April 2026, versions 6 then 7), and the MLflow store
    where the app looks for it (data_dir/mlflow)."""
    folder = tmp_path_factory.mktemp("registry-page")
    profile = build_profile("light")
    rows = generate_requests(3_000, 5, lambda payload: parse_and_score(payload, profile))
    with duckdb.connect(str(folder / "inference.duckdb")) as con:
        con.register("incoming", rows)
        con.sql("CREATE TABLE requests AS SELECT * FROM incoming")
    build_demo_registry(folder / "mlflow", MODEL)
    return folder


@pytest.fixture(scope="module")
def requests_rows(data_dir: Path) -> pd.DataFrame:
    with duckdb.connect(str(data_dir / "inference.duckdb"), read_only=True) as con:
        rows = con.sql("SELECT * FROM requests").df()
    return rows.assign(date=pd.to_datetime(rows["date"]).dt.date)


@pytest.fixture(scope="module")
def client(data_dir: Path) -> MlflowClient:
    uri = f"sqlite:///{(data_dir / 'mlflow' / 'mlflow.db').resolve()}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _clean_environment(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    monkeypatch.setenv("INFERENCE_EXPLORER_DATA_DIR", str(data_dir))
    for name in (
        "DATABRICKS_HOST",
        "DATABRICKS_TOKEN",
        "DATABRICKS_APP_NAME",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
        "INFERENCE_EXPLORER_ALLOW_ROLLBACK",
        "INFERENCE_EXPLORER_SERVING_ENDPOINT",
        "INFERENCE_EXPLORER_BACKEND",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def app(data_dir: Path, client: MlflowClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTest]:
    _clean_environment(monkeypatch, data_dir)
    client.set_registered_model_alias(MODEL, "champion", "7")
    (data_dir / "rollback_audit.jsonl").unlink(missing_ok=True)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    st.cache_data.clear()
    st.cache_resource.clear()
    client.set_registered_model_alias(MODEL, "champion", "7")


def open_page(at: AppTest) -> AppTest:
    at.switch_page(PAGE).run()  # straight to the page: app.py still runs first (filters, navigation)
    assert not at.exception, [e.value for e in at.exception]
    return at


def frame_with(at: AppTest, *columns: str) -> pd.DataFrame:
    """The first table on the page that has all these columns."""
    for element in at.dataframe:
        value = element.value
        frame = value.data if hasattr(value, "data") else value  # a Styler shows its frame
        if set(columns) <= set(frame.columns):
            return frame
    raise AssertionError(f"no table with columns {columns}")


def texts(elements: object) -> str:
    return "\n".join(str(e.value) for e in elements)  # type: ignore[attr-defined]


def run_params(client: MlflowClient, version: int) -> dict[str, str]:
    return dict(client.get_run(client.get_model_version(MODEL, str(version)).run_id).data.params)


# ------------------------------------------------------------------------------------------------ the page


def test_page_lists_every_version_and_marks_champion(app: AppTest, client: MlflowClient) -> None:
    open_page(app)
    assert not app.error
    versions = frame_with(app, "version", "aliases", "serving")
    expected = sorted((int(mv.version) for mv in client.search_model_versions(f"name = '{MODEL}'")), reverse=True)
    assert versions["version"].tolist() == expected == [7, 6, 5, 4, 3, 2, 1]
    assert versions.loc[versions["serving"], "version"].tolist() == [7]
    assert "champion" in versions.loc[versions["version"] == 7, "aliases"].item()
    assert versions.loc[versions["version"] == 6, "aliases"].item() == "previous"
    assert set(versions.columns) >= {"status", "created", "updated", "run_name", "run_id", "source", "description"}
    # Default comparison: previous (6) against champion (7).
    assert (app.selectbox(key="registry_old").value, app.selectbox(key="registry_new").value) == (6, 7)


def test_default_comparison_shows_registry_changes(app: AppTest, client: MlflowClient) -> None:
    open_page(app)
    changes = frame_with(app, "section", "item", "change", "old", "new")
    old, new = run_params(client, 6), run_params(client, 7)
    changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    assert set(changes.loc[changes["section"] == "parameter", "item"]) == changed
    chunk = changes[(changes["section"] == "parameter") & (changes["item"] == "chunk_size")].iloc[0]
    assert (chunk["old"], chunk["new"]) == (old["chunk_size"], new["chunk_size"])
    assert chunk["difference"] == float(new["chunk_size"]) - float(old["chunk_size"])
    # Requirements: the pins that differ between the two requirements.txt files.
    requirement_rows = changes[changes["section"] == "requirement"]
    assert "langchain" in set(requirement_rows["item"])


def test_selecting_two_versions_shows_their_differences(app: AppTest, client: MlflowClient) -> None:
    open_page(app)
    app.selectbox(key="registry_old").select(3)
    app.selectbox(key="registry_new").select(5)
    app.run()
    assert not app.exception
    changes = frame_with(app, "section", "item", "change", "old", "new")
    old, new = run_params(client, 3), run_params(client, 5)
    changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    assert changed and set(changes.loc[changes["section"] == "parameter", "item"]) == changed
    metrics_3 = client.get_run(client.get_model_version(MODEL, "3").run_id).data.metrics
    metrics_5 = client.get_run(client.get_model_version(MODEL, "5").run_id).data.metrics
    faith = changes[(changes["section"] == "metric") & (changes["item"] == "faithfulness")]
    if metrics_3["faithfulness"] != metrics_5["faithfulness"]:
        assert math.isclose(faith["difference"].item(), metrics_5["faithfulness"] - metrics_3["faithfulness"])
    # Neither version served in April: the live-traffic part says so instead of comparing nothing.
    assert "v3 and v5 served no requests" in texts(app.info)


def test_live_traffic_deltas_match_pandas(app: AppTest, requests_rows: pd.DataFrame) -> None:
    open_page(app)
    figures = frame_with(app, "figure", "v6", "v7", "difference").set_index("figure")
    # The default compares only the days both versions served (the canary window).
    days = [set(requests_rows.loc[requests_rows["model_version"] == v, "date"]) for v in ("6", "7")]
    both = sorted(days[0] & days[1])
    window = requests_rows[(requests_rows["date"] >= both[0]) & (requests_rows["date"] <= both[-1])]
    assert f"Compared on {both[0]} to {both[-1]}" in texts(app.caption)
    for version in ("6", "7"):
        rows = window[window["model_version"] == version]
        column = f"v{version}"
        assert figures.loc["Requests", column] == len(rows)
        assert math.isclose(figures.loc["Error rate", column], (rows["status_code"] != 200).mean(), rel_tol=1e-12)
        assert math.isclose(figures.loc["Tokens per request", column], rows["total_tokens"].mean(), rel_tol=1e-9)
        assert math.isclose(
            figures.loc["Flesch-Kincaid grade (mean)", column], rows["response_fk_grade"].mean(), rel_tol=1e-9
        )
        toxic = rows["response_toxicity"].dropna()
        assert math.isclose(
            figures.loc["Flagged responses (toxicity scorer, rate at threshold)", column],
            (toxic >= 0.5).mean(),
            abs_tol=1e-12,
        )
        # Percentiles come from 1%-wide bins.
        assert math.isclose(figures.loc["Latency p50", column], rows["latency_ms"].median(), rel_tol=0.011)
    difference = figures.loc["Latency p50", "v7"] - figures.loc["Latency p50", "v6"]
    assert math.isclose(figures.loc["Latency p50", "difference"], difference)
    tests = frame_with(app, "measure", "p_holm", "verdict")
    assert {"Latency (ms)", "Completion tokens", "Flesch-Kincaid grade", "Response toxicity rate"} <= set(
        tests["measure"]
    )
    assert "Response perplexity" in set(tests["measure"])


def test_live_traffic_follows_the_sidebar_dates(app: AppTest, requests_rows: pd.DataFrame) -> None:
    app.query_params["dates"] = ["2026-04-01", "2026-04-05"]
    open_page(app)
    # Only version 6 served in early April: the comparison says v7 had no traffic.
    served = set(requests_rows.loc[requests_rows["date"] <= date(2026, 4, 5), "model_version"].dropna())
    assert served == {"6"}
    assert "v7 served no requests" in texts(app.info)


def test_one_version_in_detail(app: AppTest, client: MlflowClient) -> None:
    open_page(app)
    assert app.selectbox(key="registry_detail").value == 7  # champion first
    app.selectbox(key="registry_detail").select(4).run()
    assert not app.exception
    params = frame_with(app, "name", "value")
    assert dict(zip(params["name"], params["value"], strict=True)) == run_params(client, 4)
    artifacts = frame_with(app, "tree", "size", "path")
    assert {"MLmodel", "requirements.txt"} <= set(artifacts["path"])
    inputs = frame_with(app, "name", "type", "required")
    assert "messages" in set(inputs["name"])
    flavors = frame_with(app, "flavor", "setting", "value")
    settings = flavors[flavors["flavor"] == "python_function"].set_index("setting")["value"]
    assert settings["loader_module"].startswith("mlflow.")
    assert not flavors["value"].str.contains(r"^/|/tmp", regex=True).any(), flavors  # no build-machine paths


def test_flavors_table_hides_local_paths() -> None:
    flavors = {
        "python_function": {
            "artifacts": {"corpus": {"path": "artifacts/corpus.json", "uri": "/tmp/tmpk3x9/corpus.json"}},
            "code": None,
            "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
            "loader_module": "mlflow.pyfunc.model",
            "model_path": "C:\\Users\\me\\model.pkl",
            "python_version": "3.11.9",
        },
        "custom": "not a mapping",
    }
    frame = view.flavors_frame(flavors)
    assert list(frame.columns) == ["flavor", "setting", "value"]
    rows = {(f, k): v for f, k, v in frame.itertuples(index=False)}
    assert rows == {
        ("custom", ""): "",
        ("python_function", "artifacts.corpus.path"): "artifacts/corpus.json",
        ("python_function", "env.conda"): "conda.yaml",
        ("python_function", "env.virtualenv"): "python_env.yaml",
        ("python_function", "loader_module"): "mlflow.pyfunc.model",
        ("python_function", "model_path"): "model.pkl",
        ("python_function", "python_version"): "3.11.9",
    }


# ---------------------------------------------------------------------------------------------- rollback


def test_rollback_switched_off_is_read_only_and_says_how_to_enable(app: AppTest, client: MlflowClient) -> None:
    open_page(app)
    hint = texts(app.info)
    assert "INFERENCE_EXPLORER_ALLOW_ROLLBACK=1" in hint
    assert "allow_rollback = true" in hint and "[app]" in hint and ".streamlit/secrets.toml" in hint
    buttons = [b for b in app.button if str(b.label).startswith("Roll back")]
    assert buttons and all(b.disabled for b in buttons)
    assert not [t for t in app.text_input if t.key == "rollback_confirmation"]
    assert str(client.get_registered_model(MODEL).aliases["champion"]) == "7"


def test_rollback_refuses_a_wrong_phrase_and_moves_champion_on_the_right_one(
    app: AppTest, client: MlflowClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERENCE_EXPLORER_ALLOW_ROLLBACK", "1")
    app.user = {"is_logged_in": True, "email": "alice@example.com"}
    open_page(app)
    assert app.selectbox(key="rollback_target").value == 6  # previous
    assert app.selectbox(key="rollback_target").options == ["v6 · previous", "v5", "v4", "v3", "v2", "v1"]
    phrase = confirmation_phrase(MODEL, 7, 6)
    assert phrase in texts(app.code)

    app.text_input(key="rollback_confirmation").input("roll back please")
    app.button(key="rollback_submit").click().run()
    assert not app.exception
    assert "Refused" in texts(app.warning) and phrase in texts(app.warning)
    assert str(client.get_registered_model(MODEL).aliases["champion"]) == "7"
    audit = frame_with(app, "result", "actor", "from_version", "to_version", "message")
    assert len(audit) == 1 and audit.loc[0, "result"].endswith("refused")

    app.text_input(key="rollback_confirmation").input(phrase)
    app.button(key="rollback_submit").click().run()
    assert not app.exception
    assert "Rolled back" in texts(app.success)
    assert str(client.get_registered_model(MODEL).aliases["champion"]) == "6"
    audit = frame_with(app, "result", "actor", "from_version", "to_version", "message")
    assert len(audit) == 2  # newest first
    newest = audit.iloc[0]
    assert newest["result"].endswith("success")
    assert (newest["from_version"], newest["to_version"]) == (7, 6)
    assert newest["actor"] == "alice@example.com (signed in with Streamlit)"
    # The audit file on disk holds the same two attempts, and the page now serves 6.
    lines = (data_dir / "rollback_audit.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    versions = frame_with(app, "version", "aliases", "serving")
    assert versions.loc[versions["serving"], "version"].tolist() == [6]


def test_signed_in_user_is_named_as_the_actor(app: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_EXPLORER_ALLOW_ROLLBACK", "1")
    app.user = {"is_logged_in": True, "email": "alice@example.com"}
    open_page(app)
    assert "Acting as alice@example.com (signed in with Streamlit)" in texts(app.caption)


def test_anonymous_viewer_sees_rollback_disabled_with_the_reason(
    app: AppTest, client: MlflowClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rollback switched on, nobody signed in: no form, a disabled button, the reason, and nothing changes."""
    monkeypatch.setenv("INFERENCE_EXPLORER_ALLOW_ROLLBACK", "1")
    app.user = {"is_logged_in": False}
    open_page(app)
    warning = texts(app.warning)
    assert "Rollback needs a signed-in viewer" in warning and "no sign-in of its own" in warning
    assert [b for b in app.button if b.key == "rollback_disabled" and b.disabled]
    assert not [t for t in app.text_input if t.key == "rollback_confirmation"]
    assert str(client.get_registered_model(MODEL).aliases["champion"]) == "7"
    assert not (data_dir / "rollback_audit.jsonl").exists() or not (data_dir / "rollback_audit.jsonl").read_text()


def test_databricks_apps_variables_alone_sign_nobody_in(app: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The platform's variables without the platform's verified token (AppTest sends no forwarded headers)."""
    monkeypatch.setenv("INFERENCE_EXPLORER_ALLOW_ROLLBACK", "1")
    for name, value in {
        "DATABRICKS_APP_NAME": "ie",
        "DATABRICKS_APP_PORT": "8000",
        "DATABRICKS_HOST": "adb-1.example.net",
    }.items():
        monkeypatch.setenv(name, value)
    app.user = {"is_logged_in": False}
    open_page(app)
    assert "no user token" in texts(app.warning)
    assert not [t for t in app.text_input if t.key == "rollback_confirmation"]


# ------------------------------------------------------------------------------------------------ failures


def test_missing_store_says_what_to_do_and_builds_on_request(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(data_dir / "inference.duckdb", tmp_path / "inference.duckdb")
    _clean_environment(monkeypatch, tmp_path)
    st.cache_data.clear()
    st.cache_resource.clear()
    at = open_page(AppTest.from_file(str(ROOT / "app.py"), default_timeout=120))
    message = texts(at.error)
    assert "There is no MLflow model registry" in message and "MLFLOW_TRACKING_URI" in message
    assert not (tmp_path / "mlflow").exists()  # nothing is built without asking
    at.button(key="registry_build").click().run()
    assert not at.exception and not at.error
    assert frame_with(at, "version", "aliases", "serving")["version"].tolist() == [7, 6, 5, 4, 3, 2, 1]
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers (a registry that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


def test_unreachable_registry_shows_a_message_without_secrets(app: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://token:{TOKEN}@127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    open_page(app)
    message = texts(app.error)
    assert "list the versions" in message
    assert TOKEN not in message and "Traceback" not in message
    assert TOKEN not in texts(app.caption) + texts(app.markdown)


def test_hanging_registry_gives_up_after_the_deadline(
    app: AppTest, silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{silent_server}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setattr(registry_data, "REGISTRY_READ_TIMEOUT_S", 1.0)
    open_page(app)
    assert "did not answer within 1 s" in texts(app.error)


# ---------------------------------------------------------------------------------------------- pure helpers


def _versions(aliases: dict[int, list[str]], count: int = 7, not_ready: tuple[int, ...] = ()) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "version": list(range(count, 0, -1)),
            "status": ["PENDING_REGISTRATION" if v in not_ready else "READY" for v in range(count, 0, -1)],
            "aliases": [aliases.get(v, []) for v in range(count, 0, -1)],
        }
    )


def test_default_pair_prefers_previous_then_the_version_before_champion() -> None:
    assert view.default_pair(_versions({7: ["champion"], 6: ["previous"]})) == (6, 7)
    assert view.default_pair(_versions({5: ["champion"], 2: ["previous"]})) == (2, 5)
    assert view.default_pair(_versions({5: ["champion"]})) == (4, 5)
    assert view.default_pair(_versions({1: ["champion"]})) == (7, 1)  # nothing earlier: the newest other
    assert view.default_pair(_versions({})) == (6, 7)
    assert view.default_pair(_versions({}, count=1)) is None


def test_rollback_targets_are_earlier_ready_versions() -> None:
    versions = _versions({7: ["champion"], 5: ["previous"]}, not_ready=(6,))
    assert view.rollback_targets(versions, 7) == [5, 4, 3, 2, 1]
    assert view.default_rollback_target([5, 4, 3, 2, 1], versions) == 5
    assert view.rollback_targets(versions, 1) == []
    assert view.rollback_targets(versions, None) == []
    assert view.default_rollback_target([4, 3], versions) == 4  # previous not a target: newest earlier


def test_change_summary_lists_every_section() -> None:
    changes = pd.DataFrame(
        {
            "section": ["parameter", "parameter", "requirement"],
            "item": ["a", "b", "x"],
            "old": ["1", None, "x==1"],
            "new": ["2", "3", None],
            "change": ["changed", "added", "removed"],
        }
    )
    summary = view.change_summary(changes).set_index("section")
    assert list(summary.index) == list(view.CHANGE_SECTIONS)
    assert summary.loc["parameter", ["added", "removed", "changed"]].tolist() == [1, 0, 1]
    assert summary.loc["requirement", "removed"] == 1 and summary.loc["metric", "summary"] == "unchanged"
    shown = view.changes_display(changes)
    assert shown["difference"].tolist()[0] == 1.0 and pd.isna(shown["difference"].tolist()[1])
    assert shown["relative_change"].tolist()[0] == 1.0
    assert view.change_summary(changes.iloc[0:0])["summary"].eq("unchanged").all()


def test_delta_chart_colours_follow_significance() -> None:
    deltas = pd.DataFrame(
        {
            "measure": ["A", "B", "C", "D"],
            "difference": [-1.0, 2.0, -3.0, 1.0],
            "relative_change": [-0.1, 0.2, -0.3, math.nan],
            "verdict": ["significant, small effect", "significant, large effect", "no clear difference", "x"],
            "p_holm": [0.01, 0.001, 0.4, math.nan],
        }
    )
    figure = view.delta_chart(deltas, "6", "7")
    bar = figure.data[0]
    colours = dict(zip(bar.y, bar.marker.color, strict=True))
    assert colours == {"A": view.BETTER, "B": view.WORSE, "C": view.UNCLEAR}  # D has no relative change
    assert "v6" in figure.layout.xaxis.title.text


def test_artifact_tree_indents_and_sizes() -> None:
    artifacts = pd.DataFrame(
        {
            "path": ["MLmodel", "artifacts", "artifacts/corpus.json"],
            "is_dir": [False, True, False],
            "size_bytes": pd.array([700, 2151, 2151], dtype="Int64"),
            "depth": [0, 0, 1],
        }
    )
    tree = view.artifact_tree_display(artifacts)
    assert tree["tree"].tolist() == ["📄 MLmodel", "📁 artifacts", "\u2003📄 corpus.json"]
    assert tree["size"].tolist() == ["700 B", "2.1 KiB", "2.1 KiB"]


def test_page_queries_compile_for_databricks_and_run_on_duckdb(
    data_dir: Path, requests_rows: pd.DataFrame, tmp_path: Path
) -> None:
    table = TableName("requests")
    queries = PAGE_QUERIES["Model registry"](table, Filters(), "hour")
    for query in queries:
        assert query.sql("databricks")
    # The page queries read the rollups, as the scoring job keeps them: build them on a copy of the table.
    shutil.copy(data_dir / "inference.duckdb", tmp_path / "inference.duckdb")
    with duckdb.connect(str(tmp_path / "inference.duckdb")) as con:
        refresh_rollups(con, table)
        results = {q.name: con.sql(q.sql("duckdb")).df() for q in queries}
    totals = results["version_totals"].set_index("model_version")
    expected = requests_rows["model_version"].value_counts()
    assert {v: int(totals.loc[v, "requests"]) for v in ("6", "7")} == {v: int(expected[v]) for v in ("6", "7")}
    assert set(results["histograms_by_version"]["group"]) == {"6", "7"}
