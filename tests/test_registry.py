"""The registry data layer against a real local MLflow store, and rollback against a loopback serving API.

The demo registry is built once per session (it takes a few seconds). Tests that roll back reset the serving
alias with MLflow's own client before they start. The Databricks serving-endpoints API is answered by an
`http.server` on 127.0.0.1 that records what MLflow's deployments client sends.
"""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before MLflow is used: tests send nothing out

import http.server
import json
import platform
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from data_access import registry
from data_access.demo_registry import (
    CORPUS,
    DEMO_MODEL_NAME,
    DEMO_RUN_NAME,
    DEMO_VERSIONS,
    EVAL_SET,
    build_demo_registry,
    content_words,
)
from data_access.errors import DataAccessError
from data_access.identity import NO_SIGN_IN, Viewer, anonymous
from data_access.registry import RegistryConfig, RollbackSettings, audit, comparing, reading, rollback
from testkit.wire import Recorded as WireRecorded
from testkit.wire import Reply, serve

MODEL = DEMO_MODEL_NAME
ENDPOINT = "dbdemos_endpoint_advanced"
TOKEN = "dapi0123456789abcdef0123456789abcdef"


def signed_in(name: str) -> Viewer:
    return Viewer(name, "signed in with Streamlit")


ANA = signed_in("ana")


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> RegistryConfig:
    return build_demo_registry(tmp_path_factory.mktemp("mlflow_store"))


@pytest.fixture
def client(store: RegistryConfig) -> MlflowClient:
    return MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.registry_uri)


@pytest.fixture
def champion_at_7(client: MlflowClient) -> Iterator[None]:
    client.set_registered_model_alias(MODEL, "champion", "7")
    yield
    client.set_registered_model_alias(MODEL, "champion", "7")


def champion(client: MlflowClient) -> str:
    return str(client.get_registered_model(MODEL).aliases["champion"])


def settings(tmp_path: Path, **overrides: Any) -> RollbackSettings:
    values: dict[str, Any] = {"audit_log_path": tmp_path / "audit" / "rollback.jsonl", "enabled": True}
    values.update(overrides)
    return RollbackSettings(**values)


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------------ loopback serving endpoints


def served_endpoint(state: str = "NOT_UPDATING") -> dict[str, Any]:
    """What Databricks answers to GET /api/2.0/serving-endpoints/{name} for the chatbot endpoint."""
    return {
        "name": ENDPOINT,
        "creator": "data-team@example.com",
        "creation_timestamp": 1716000000000,
        "last_updated_timestamp": 1716500000000,
        "state": {"ready": "READY", "config_update": state},
        "config": {
            "served_entities": [
                {
                    "name": f"{MODEL}-7",
                    "entity_name": MODEL,
                    "entity_version": "7",
                    "workload_size": "Small",
                    "workload_type": "CPU",
                    "scale_to_zero_enabled": True,
                    "environment_vars": {"DATABRICKS_TOKEN": "{{secrets/dbdemos/rag_sp_token}}"},
                    "state": {"deployment": "DEPLOYMENT_READY", "deployment_state_message": ""},
                    "creator": "data-team@example.com",
                    "creation_timestamp": 1716500000000,
                },
                {
                    "name": "guardrail",
                    "entity_name": "main.dbdemos.guardrail_model",
                    "entity_version": "2",
                    "workload_size": "Medium",
                    "scale_to_zero_enabled": False,
                    "state": {"deployment": "DEPLOYMENT_READY"},
                    "creator": "data-team@example.com",
                    "creation_timestamp": 1716400000000,
                },
            ],
            "traffic_config": {
                "routes": [
                    {"served_model_name": f"{MODEL}-7", "traffic_percentage": 100},
                    {"served_model_name": "guardrail", "traffic_percentage": 0},
                ]
            },
            "auto_capture_config": {
                "catalog_name": "main",
                "schema_name": "dbdemos",
                "table_name_prefix": "rag_app",
                "enabled": True,
                "state": {"payload_table": {"name": "rag_app_payload", "status": "ACTIVE"}},
            },
            "config_version": 4,
        },
        "id": "88fd3f75a0d24b0380ddc40484d7a31b",
        "permission_level": "CAN_MANAGE",
        "route_optimized": False,
    }


# The body the deployments client must PUT to roll the endpoint back to version 6: written out by hand from
# Databricks' ServedEntityInput/TrafficConfig/AutoCaptureConfigInput, not computed by the code under test.
EXPECTED_PUT_BODY = {
    "served_entities": [
        {
            "name": f"{MODEL}-6",
            "entity_name": MODEL,
            "entity_version": "6",
            "workload_size": "Small",
            "workload_type": "CPU",
            "scale_to_zero_enabled": True,
            "environment_vars": {"DATABRICKS_TOKEN": "{{secrets/dbdemos/rag_sp_token}}"},
        },
        {
            "name": "guardrail",
            "entity_name": "main.dbdemos.guardrail_model",
            "entity_version": "2",
            "workload_size": "Medium",
            "scale_to_zero_enabled": False,
        },
    ],
    "traffic_config": {
        "routes": [
            {"served_model_name": f"{MODEL}-6", "traffic_percentage": 100},
            {"served_model_name": "guardrail", "traffic_percentage": 0},
        ]
    },
    "auto_capture_config": {
        "catalog_name": "main",
        "schema_name": "dbdemos",
        "table_name_prefix": "rag_app",
        "enabled": True,
    },
}

ERRORS = {
    403: {"error_code": "PERMISSION_DENIED", "message": "User does not have CAN_MANAGE permission on the endpoint."},
    409: {"error_code": "RESOURCE_CONFLICT", "message": "Endpoint is currently being updated."},
}


@dataclass
class Recorded:
    method: str
    path: str
    body: Any
    headers: dict[str, str]


@dataclass
class FakeServing:
    """Answers the serving-endpoints REST API for one endpoint; records every request."""

    endpoint: dict[str, Any]
    get_status: int = 200
    put_status: int = 200
    requests: list[Recorded] = field(default_factory=list)

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if path == f"/api/2.0/serving-endpoints/{ENDPOINT}" and method == "GET":
            return (200, self.endpoint) if self.get_status == 200 else (self.get_status, ERRORS[self.get_status])
        if path == f"/api/2.0/serving-endpoints/{ENDPOINT}/config" and method == "PUT":
            if self.put_status != 200:
                return self.put_status, ERRORS[self.put_status]
            updating = {**self.endpoint, "state": {"ready": "READY", "config_update": "IN_PROGRESS"}}
            return 200, {**updating, "pending_config": body}
        return 404, {"error_code": "NOT_FOUND", "message": f"No API at {path}."}

    def endpoint_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith("/api/2.0/serving-endpoints")]


def _handler(fake: FakeServing) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            path = urlparse(self.path).path
            fake.requests.append(Recorded(self.command, path, body, dict(self.headers)))
            status, payload = fake.answer(self.command, path, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _point_databricks_at(monkeypatch: pytest.MonkeyPatch, host: str, tmp_path: Path) -> None:
    for name in (
        "DATABRICKS_CONFIG_PROFILE",
        "DATABRICKS_CLIENT_ID",
        "DATABRICKS_CLIENT_SECRET",
        "DATABRICKS_AUTH_TYPE",
        "DATABRICKS_ACCOUNT_ID",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_HOST", host)
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no-databrickscfg"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def serving(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeServing]:
    fake = FakeServing(endpoint=served_endpoint())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _point_databricks_at(monkeypatch, f"http://127.0.0.1:{server.server_port}", tmp_path)
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(5)


# ------------------------------------------------------------------------------------------- demo registry


def test_build_is_idempotent_and_keeps_a_rollback(store: RegistryConfig, client: MlflowClient, tmp_path: Path) -> None:
    store_dir = Path(unquote(urlparse(store.tracking_uri).path)).parent
    before = {mv.version: mv.run_id for mv in client.search_model_versions(f"name = '{MODEL}'")}
    client.set_registered_model_alias(MODEL, "champion", "6")
    try:
        again = build_demo_registry(store_dir)
        after = {mv.version: mv.run_id for mv in client.search_model_versions(f"name = '{MODEL}'")}
        assert again == store
        assert after == before
        assert champion(client) == "6"  # a rollback made in the app survives a restart
    finally:
        client.set_registered_model_alias(MODEL, "champion", "7")
    assert (store_dir / "mlflow.db").is_file()
    assert (store_dir / "artifacts").is_dir()


def test_demo_runs_are_real_runs_with_differing_params(client: MlflowClient) -> None:
    versions = sorted(client.search_model_versions(f"name = '{MODEL}'"), key=lambda mv: int(mv.version))
    assert [int(mv.version) for mv in versions] == list(range(1, 8))
    runs = [client.get_run(mv.run_id) for mv in versions]
    assert {run.info.run_name for run in runs} == {DEMO_RUN_NAME}
    assert len({run.data.params["chunk_size"] for run in runs}) > 3
    for spec, run in zip(DEMO_VERSIONS, runs, strict=True):
        assert run.data.params["llm_endpoint"] == spec.llm_endpoint
        assert int(run.data.params["retriever_k"]) == spec.retriever_k
        assert 0.0 <= run.data.metrics["answer_relevance"] <= 1.0
        assert 0.0 <= run.data.metrics["faithfulness"] <= 1.0
        assert ("retrieval_hit_rate" in run.data.metrics) == spec.returns_sources
    aliases = client.get_registered_model(MODEL).aliases
    assert {alias: str(version) for alias, version in aliases.items()} == {"champion": "7", "previous": "6"}


def test_registered_model_answers_chat_messages(client: MlflowClient) -> None:
    model = mlflow.pyfunc.load_model(client.get_model_version_download_uri(MODEL, "7"))
    question, expected, doc_id = EVAL_SET[0]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]
    output = model.predict(pd.DataFrame({"messages": [messages]}))
    assert list(output.columns) == ["result", "sources"]
    answer, sources = output["result"].iloc[0], list(output["sources"].iloc[0])
    assert doc_id in sources and set(sources) <= set(CORPUS)
    assert set(content_words(expected)) <= set(content_words(answer))  # the rollback steps are in the answer
    shorter = model.predict(pd.DataFrame({"messages": [messages]}), params={"max_tokens": 5})
    assert len(shorter["result"].iloc[0].split("\n\n")[0].split()) <= 5


# ------------------------------------------------------------------------------------------------ reading


def test_list_versions(store: RegistryConfig, client: MlflowClient, champion_at_7: None) -> None:
    frame = reading.list_versions(store, MODEL)
    assert list(frame.columns) == list(reading.VERSION_COLUMNS)
    assert frame["version"].tolist() == [7, 6, 5, 4, 3, 2, 1]
    assert frame["status"].eq("READY").all()
    assert frame["run_name"].eq(DEMO_RUN_NAME).all()
    assert frame.loc[frame["version"] == 7, "aliases"].iloc[0] == ["champion"]
    assert frame.loc[frame["version"] == 6, "aliases"].iloc[0] == ["previous"]
    assert frame.loc[frame["version"] < 6, "aliases"].map(len).eq(0).all()
    for row in frame.itertuples():
        mv = client.get_model_version(MODEL, str(row.version))
        assert row.run_id == mv.run_id
        assert row.source == mv.source
        assert row.description == mv.description == DEMO_VERSIONS[row.version - 1].description
        assert row.created == pd.Timestamp(mv.creation_timestamp, unit="ms")
        assert row.updated >= row.created


def test_list_versions_of_an_unknown_model_is_a_clear_error(store: RegistryConfig) -> None:
    with pytest.raises(DataAccessError) as caught:
        reading.list_versions(store, "no_such_model")
    assert "no_such_model" in str(caught.value)
    assert "Traceback" not in str(caught.value)


def _local_files(client: MlflowClient, version: str) -> dict[str, int]:
    root = Path(unquote(urlparse(client.get_model_version_download_uri(MODEL, version)).path))
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def test_version_detail(store: RegistryConfig, client: MlflowClient) -> None:
    detail = reading.version_detail(store, MODEL, 7)
    assert detail.problems == []
    assert detail.version == 7 and detail.status == "READY"
    assert detail.run_name == DEMO_RUN_NAME
    assert "python_function" in detail.flavors
    assert detail.python_version == platform.python_version()
    assert detail.mlflow_version == mlflow.__version__
    assert f"mlflow=={mlflow.__version__}" in detail.requirements
    assert "langchain-community==0.2.10" in detail.requirements
    inputs = detail.signature_inputs.to_dict("records")
    assert inputs == [{"name": "messages", "type": "array<object<content: string, role: string>>", "required": True}]
    assert detail.signature_outputs["name"].tolist() == ["result", "sources"]
    assert detail.signature_outputs["type"].tolist() == ["string", "array<string>"]
    assert detail.signature_params.to_dict("records") == [
        {"name": "max_tokens", "type": "long", "default": 120, "shape": None}
    ]
    run = client.get_run(detail.run_id)
    assert detail.params == run.data.params
    assert detail.metrics == run.data.metrics
    files = detail.artifacts[~detail.artifacts["is_dir"]]
    assert dict(zip(files["path"], files["size_bytes"].astype(int), strict=True)) == _local_files(client, "7")
    folder = detail.artifacts.set_index("path").loc["artifacts"]
    assert folder["is_dir"] and folder["size_bytes"] == sum(
        size for path, size in _local_files(client, "7").items() if path.startswith("artifacts/")
    )
    assert {"MLmodel", "requirements.txt", "python_model.pkl", "artifacts/corpus.json"} <= set(files["path"])
    assert detail.mlmodel["flavors"] == detail.flavors


def test_version_detail_of_an_old_version_has_no_sources_output(store: RegistryConfig) -> None:
    detail = reading.version_detail(store, MODEL, "2")
    assert detail.signature_outputs["name"].tolist() == ["result"]
    assert detail.signature_params.empty
    assert detail.params["retriever_k"] == "2"


def test_compare_versions_6_to_7(store: RegistryConfig, client: MlflowClient) -> None:
    comparison = comparing.compare_versions(store, MODEL, 6, 7)
    assert comparison.problems == []
    changes = comparison.changes
    assert list(changes.columns) == list(comparing.CHANGE_COLUMNS)
    by_key = {(r.section, r.item): r for r in changes.itertuples()}
    assert by_key[("parameter", "chunk_size")][3:] == ("800", "1000", "changed")
    assert by_key[("parameter", "retriever_k")][3:] == ("4", "5", "changed")
    assert by_key[("signature params", "max_tokens")][3:] == (None, "long = 120", "added")
    assert by_key[("requirement", "langchain-community")][3:] == (None, "langchain-community==0.2.10", "added")
    assert by_key[("requirement", "langchain")][3:] == ("langchain==0.2.1", "langchain==0.2.11", "changed")
    assert ("requirement", "mlflow") not in by_key and ("parameter", "temperature") not in by_key
    # Metrics: exactly those whose logged values differ between the two runs.
    old = client.get_run(client.get_model_version(MODEL, "6").run_id).data.metrics
    new = client.get_run(client.get_model_version(MODEL, "7").run_id).data.metrics
    expected = {k: (old.get(k), new.get(k)) for k in set(old) | set(new) if old.get(k) != new.get(k)}
    got = {r.item: (r.old, r.new) for r in changes.itertuples() if r.section == "metric"}
    assert got == expected


def test_compare_versions_3_to_4_adds_the_sources_output(store: RegistryConfig) -> None:
    changes = comparing.compare_versions(store, MODEL, 3, 4).changes
    row = changes[(changes["section"] == "signature output") & (changes["item"] == "sources")]
    assert row[["old", "new", "change"]].values.tolist() == [[None, "array<string>", "added"]]
    metric = changes[(changes["section"] == "metric") & (changes["item"] == "retrieval_hit_rate")]
    assert metric["change"].tolist() == ["added"]


def test_a_version_compared_with_itself_has_no_changes(store: RegistryConfig) -> None:
    assert comparing.compare_versions(store, MODEL, 5, 5).changes.empty


def test_diff_values_reports_added_removed_changed() -> None:
    rows = comparing.diff_values(
        "parameter", {"a": "1", "b": "2", "c": float("nan")}, {"b": "3", "c": float("nan"), "d": "4"}
    )
    assert [(r["item"], r["old"], r["new"], r["change"]) for r in rows] == [
        ("a", "1", None, "removed"),
        ("b", "2", "3", "changed"),
        ("d", None, "4", "added"),
    ]


def test_requirement_map_keys_by_canonical_name() -> None:
    mapping = comparing.requirement_map(["Databricks_VectorSearch==0.40", "pandas>=2", "-r other.txt"])
    assert mapping == {
        "databricks-vectorsearch": "Databricks_VectorSearch==0.40",
        "pandas": "pandas>=2",
        "-r other.txt": "-r other.txt",
    }


# ------------------------------------------------------------------------------------- rollback, registry


def test_rollback_is_refused_when_disabled(
    store: RegistryConfig, client: MlflowClient, tmp_path: Path, champion_at_7: None
) -> None:
    config = settings(tmp_path, enabled=False)
    result = rollback.rollback(
        MODEL, 6, confirmation=rollback.confirmation_phrase(MODEL, 7, 6), viewer=ANA, config=store, settings=config
    )
    assert (result.ok, result.outcome) == (False, "refused")
    assert "INFERENCE_EXPLORER_ALLOW_ROLLBACK=1" in result.message
    assert "allow_rollback = true" in result.message
    assert champion(client) == "7"
    [record] = audit_lines(config.audit_log_path)
    assert (record["outcome"], record["actor"], record["model"]) == ("refused", ANA.audit_name, MODEL)
    assert record["to_version"] == 6


def test_rollback_is_refused_on_a_wrong_confirmation(
    store: RegistryConfig, client: MlflowClient, tmp_path: Path, champion_at_7: None
) -> None:
    config = settings(tmp_path)
    for typed in ("yes", f"roll back {MODEL} from 6 to 7", f"roll back {MODEL} from 7 to 5", ""):
        result = rollback.rollback(MODEL, 6, confirmation=typed, viewer=ANA, config=store, settings=config)
        assert result.outcome == "refused"
        assert f"roll back {MODEL} from 7 to 6" in result.message  # says the exact phrase to type
    assert champion(client) == "7"
    records = audit_lines(config.audit_log_path)
    assert [r["outcome"] for r in records] == ["refused"] * 4
    assert {(r["from_version"], r["to_version"]) for r in records} == {(7, 6)}


@pytest.mark.parametrize(
    ("to_version", "words"),
    [(7, "not earlier"), (8, "not earlier"), (0, "has no version 0"), ("six", "not a version number")],
)
def test_rollback_is_refused_for_a_version_that_is_not_earlier_or_missing(
    store: RegistryConfig, client: MlflowClient, tmp_path: Path, champion_at_7: None, to_version: Any, words: str
) -> None:
    result = rollback.rollback(
        MODEL,
        to_version,
        confirmation=f"roll back {MODEL} from 7 to {to_version}",
        viewer=ANA,
        config=store,
        settings=settings(tmp_path),
    )
    assert result.outcome == "refused" and words in result.message
    assert champion(client) == "7"


def test_rollback_moves_the_alias_and_audits_it(
    store: RegistryConfig, client: MlflowClient, tmp_path: Path, champion_at_7: None
) -> None:
    config = settings(tmp_path)
    phrase = rollback.confirmation_phrase(MODEL, 7, 6)
    assert phrase == f"roll back {MODEL} from 7 to 6"
    result = rollback.rollback(
        MODEL, "6", confirmation=f"  {phrase} ", viewer=signed_in("ana@example.com"), config=store, settings=config
    )
    assert (result.ok, result.outcome, result.from_version, result.to_version) == (True, "success", 7, 6)
    assert champion(client) == "6"
    assert reading.alias_version(store, MODEL, "champion") == 6
    listed = reading.list_versions(store, MODEL)
    assert listed.loc[listed["version"] == 6, "aliases"].iloc[0] == ["champion", "previous"]
    [record] = audit_lines(config.audit_log_path)
    assert {k: record[k] for k in ("actor", "model", "alias", "from_version", "to_version", "endpoint", "outcome")} == {
        "actor": "ana@example.com (signed in with Streamlit)",
        "model": MODEL,
        "alias": "champion",
        "from_version": 7,
        "to_version": 6,
        "endpoint": None,
        "outcome": "success",
    }
    assert pd.Timestamp(record["timestamp"]).tzinfo is not None
    # A second rollback goes on from where the first left the alias.
    bo = signed_in("bo")
    again = rollback.rollback(
        MODEL, 5, confirmation=rollback.confirmation_phrase(MODEL, 6, 5), viewer=bo, config=store, settings=config
    )
    assert again.ok and champion(client) == "5"
    frame = audit.read_audit_log(config.audit_log_path)
    assert frame[["actor", "from_version", "to_version", "outcome"]].values.tolist() == [
        ["bo (signed in with Streamlit)", 6, 5, "success"],
        ["ana@example.com (signed in with Streamlit)", 7, 6, "success"],
    ]


def test_rollback_of_an_unknown_model_fails_cleanly(store: RegistryConfig, tmp_path: Path) -> None:
    config = settings(tmp_path)
    result = rollback.rollback(
        "no_such_model",
        1,
        confirmation="roll back no_such_model from 2 to 1",
        viewer=ANA,
        config=store,
        settings=config,
    )
    assert result.outcome == "failed" and "Nothing was changed" in result.message
    assert "Traceback" not in result.message
    assert audit_lines(config.audit_log_path)[0]["outcome"] == "failed"


@pytest.mark.parametrize("viewer", [anonymous(NO_SIGN_IN), Viewer("  ", "signed in with Streamlit"), None], ids=str)
def test_rollback_by_an_anonymous_caller_is_refused_and_audited(
    store: RegistryConfig, client: MlflowClient, tmp_path: Path, champion_at_7: None, viewer: Viewer | None
) -> None:
    config = settings(tmp_path)
    result = rollback.rollback(
        MODEL, 6, confirmation=rollback.confirmation_phrase(MODEL, 7, 6), viewer=viewer, config=store, settings=config
    )
    assert result.outcome == "refused" and "signed-in viewer" in result.message and champion(client) == "7"
    [record] = audit_lines(config.audit_log_path)
    assert record["outcome"] == "refused" and record["actor"].startswith(("anonymous", "(signed in"))


def test_read_audit_log_keeps_unreadable_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    good = {
        "timestamp": "2026-01-01T00:00:00Z",
        "actor": "ana",
        "model": MODEL,
        "alias": "champion",
        "from_version": 7,
        "to_version": 6,
        "endpoint": None,
        "outcome": "success",
        "message": "ok",
    }
    path.write_text(json.dumps(good) + "\n{not json\n\n[1, 2]\n", encoding="utf-8")
    frame = audit.read_audit_log(path, newest_first=False)
    assert frame["line"].tolist() == [1, 2, 4]
    assert frame["outcome"].tolist() == ["success", "unreadable", "unreadable"]
    assert frame.iloc[0][list(audit.AUDIT_COLUMNS)].to_dict() == good
    assert audit.read_audit_log(tmp_path / "missing.jsonl").empty


# ------------------------------------------------------------------------------------- rollback, endpoint


def test_rollback_updates_the_serving_endpoint(
    store: RegistryConfig, client: MlflowClient, tmp_path: Path, serving: FakeServing, champion_at_7: None
) -> None:
    config = settings(tmp_path, endpoint_name=ENDPOINT)
    result = rollback.rollback(
        MODEL, 6, confirmation=rollback.confirmation_phrase(MODEL, 7, 6), viewer=ANA, config=store, settings=config
    )
    assert result.outcome == "success", result.message
    get, put = serving.endpoint_requests()
    assert (get.method, get.path) == ("GET", f"/api/2.0/serving-endpoints/{ENDPOINT}")
    assert (put.method, put.path) == ("PUT", f"/api/2.0/serving-endpoints/{ENDPOINT}/config")
    assert put.body == EXPECTED_PUT_BODY
    assert put.headers["Authorization"] == f"Bearer {TOKEN}"
    assert champion(client) == "6"
    [record] = audit_lines(config.audit_log_path)
    assert (record["endpoint"], record["outcome"], record["endpoint_served_version_before"]) == (
        ENDPOINT,
        "success",
        "7",
    )
    assert TOKEN not in config.audit_log_path.read_text(encoding="utf-8")


VIEWER_TOKEN = "eyJviewer.forwarded-by-databricks-apps-5555"


def test_rollback_acts_with_the_viewers_own_token_and_audits_them(
    store: RegistryConfig, client: MlflowClient, tmp_path: Path, serving: FakeServing, champion_at_7: None
) -> None:
    """A viewer Databricks Apps signed in: the endpoint is read and changed with their forwarded token, not the app's,
    so the workspace decides whether this person may; the audit names them and holds neither token."""
    viewer = Viewer("ana@example.com", "signed in with Databricks Apps", token=VIEWER_TOKEN)
    config = settings(tmp_path, endpoint_name=ENDPOINT)
    result = rollback.rollback(
        MODEL, 6, confirmation=rollback.confirmation_phrase(MODEL, 7, 6), viewer=viewer, config=store, settings=config
    )
    assert result.outcome == "success", result.message
    get, put = serving.endpoint_requests()
    assert (get.method, put.method, put.body) == ("GET", "PUT", EXPECTED_PUT_BODY)
    assert {get.headers["Authorization"], put.headers["Authorization"]} == {f"Bearer {VIEWER_TOKEN}"}
    assert champion(client) == "6"
    [record] = audit_lines(config.audit_log_path)
    assert record["actor"] == "ana@example.com (signed in with Databricks Apps)" and record["outcome"] == "success"
    assert record["acting_with"] == "the viewer's own Databricks token"
    logged = config.audit_log_path.read_text(encoding="utf-8")
    assert VIEWER_TOKEN not in logged and TOKEN not in logged and VIEWER_TOKEN not in repr(viewer)


def test_a_viewer_the_workspace_refuses_changes_nothing(
    store: RegistryConfig, client: MlflowClient, tmp_path: Path, serving: FakeServing, champion_at_7: None
) -> None:
    serving.put_status = 403  # this person may read the endpoint but not manage it
    viewer = Viewer("bo@example.com", "signed in with Databricks Apps", token=VIEWER_TOKEN)
    config = settings(tmp_path, endpoint_name=ENDPOINT)
    result = rollback.rollback(
        MODEL, 6, confirmation=rollback.confirmation_phrase(MODEL, 7, 6), viewer=viewer, config=store, settings=config
    )
    assert result.outcome == "failed" and "(403)" in result.message
    assert "bo@example.com" in result.message and "app's identity" not in result.message
    assert "put back to version 7" in result.message and champion(client) == "7"
    assert all(r.headers["Authorization"] == f"Bearer {VIEWER_TOKEN}" for r in serving.endpoint_requests())
    [record] = audit_lines(config.audit_log_path)
    assert (record["actor"], record["outcome"]) == ("bo@example.com (signed in with Databricks Apps)", "failed")
    assert VIEWER_TOKEN not in config.audit_log_path.read_text(encoding="utf-8")


def test_a_unity_catalog_alias_moves_with_the_viewers_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a Databricks registry, the alias move itself is the viewer's call (MLflow's Unity Catalog registry API,
    their bearer token); reading the registry stays with the app's credentials."""
    uc_model = "main.dbdemos.chatbot"

    def respond(request: WireRecorded) -> Reply:
        if request.path.startswith("/api/2.0/mlflow/unity-catalog/registered-models/get"):
            model = {"name": uc_model, "aliases": [{"alias": "champion", "version": "7"}]}
            return Reply(200, json.dumps({"registered_model": model}).encode())
        if request.path.startswith("/api/2.0/mlflow/unity-catalog/model-versions/get"):
            version = {"name": uc_model, "version": "6", "status": "READY"}
            return Reply(200, json.dumps({"model_version": version}).encode())
        if request.path == "/api/2.0/mlflow/unity-catalog/registered-models/alias" and request.method == "POST":
            return Reply(200, b"{}")
        return Reply(404, b'{"error_code": "NOT_FOUND", "message": "not here"}')

    with serve(respond, tls=False) as workspace:
        _point_databricks_at(monkeypatch, f"http://{workspace.host}", tmp_path)
        viewer = Viewer("ana@example.com", "signed in with Databricks Apps", token=VIEWER_TOKEN)
        config = settings(tmp_path)
        result = rollback.rollback(
            uc_model,
            6,
            confirmation=rollback.confirmation_phrase(uc_model, 7, 6),
            viewer=viewer,
            config=RegistryConfig("databricks", "databricks-uc"),
            settings=config,
        )
    assert result.outcome == "success", result.message
    [moved] = [r for r in workspace.requests if r.path.endswith("/registered-models/alias")]
    assert moved.method == "POST" and moved.json() == {"name": uc_model, "alias": "champion", "version": "6"}
    assert moved.headers["Authorization"] == f"Bearer {VIEWER_TOKEN}"
    reads = [r for r in workspace.requests if r.path.startswith("/api/2.0/mlflow/unity-catalog/") and r is not moved]
    assert reads and {r.headers["Authorization"] for r in reads} == {f"Bearer {TOKEN}"}
    [record] = audit_lines(config.audit_log_path)
    assert (record["actor"], record["outcome"]) == ("ana@example.com (signed in with Databricks Apps)", "success")


@pytest.mark.parametrize(("status", "words"), [(409, "busy"), (403, "No permission")])
def test_a_failed_endpoint_update_puts_the_alias_back(
    store: RegistryConfig,
    client: MlflowClient,
    tmp_path: Path,
    serving: FakeServing,
    champion_at_7: None,
    status: int,
    words: str,
) -> None:
    serving.put_status = status
    config = settings(tmp_path, endpoint_name=ENDPOINT)
    result = rollback.rollback(
        MODEL, 6, confirmation=rollback.confirmation_phrase(MODEL, 7, 6), viewer=ANA, config=store, settings=config
    )
    assert (result.ok, result.outcome) == (False, "failed")
    assert words in result.message and f"({status})" in result.message
    assert "put back to version 7" in result.message
    assert TOKEN not in result.message and "Traceback" not in result.message
    assert [r.method for r in serving.endpoint_requests()] == ["GET", "PUT"]
    assert champion(client) == "7"
    [record] = audit_lines(config.audit_log_path)
    assert (record["outcome"], record["from_version"], record["to_version"]) == ("failed", 7, 6)
    assert TOKEN not in config.audit_log_path.read_text(encoding="utf-8")


def test_an_unreadable_endpoint_stops_before_any_change(
    store: RegistryConfig, client: MlflowClient, tmp_path: Path, serving: FakeServing, champion_at_7: None
) -> None:
    serving.get_status = 403
    config = settings(tmp_path, endpoint_name=ENDPOINT)
    result = rollback.rollback(
        MODEL, 6, confirmation=rollback.confirmation_phrase(MODEL, 7, 6), viewer=ANA, config=store, settings=config
    )
    assert result.outcome == "failed" and "(403)" in result.message and "Nothing was changed" in result.message
    assert [r.method for r in serving.endpoint_requests()] == ["GET"]
    assert champion(client) == "7"
    assert audit_lines(config.audit_log_path)[0]["outcome"] == "failed"


def test_an_endpoint_that_is_already_updating_is_refused(
    store: RegistryConfig, client: MlflowClient, tmp_path: Path, serving: FakeServing, champion_at_7: None
) -> None:
    serving.endpoint = served_endpoint(state="IN_PROGRESS")
    result = rollback.rollback(
        MODEL,
        6,
        confirmation=rollback.confirmation_phrase(MODEL, 7, 6),
        viewer=ANA,
        config=store,
        settings=settings(tmp_path, endpoint_name=ENDPOINT),
    )
    assert result.outcome == "refused" and "already updating" in result.message
    assert [r.method for r in serving.endpoint_requests()] == ["GET"]
    assert champion(client) == "7"


def test_an_unreachable_databricks_host_stops_before_any_change(
    store: RegistryConfig, client: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, champion_at_7: None
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _point_databricks_at(monkeypatch, f"http://127.0.0.1:{port}", tmp_path)
    config = settings(tmp_path, endpoint_name=ENDPOINT, endpoint_read_timeout_s=1.0)
    result = rollback.rollback(
        MODEL, 6, confirmation=rollback.confirmation_phrase(MODEL, 7, 6), viewer=ANA, config=store, settings=config
    )
    assert (
        result.outcome == "failed"
        and ("did not answer" in result.message or "Could not reach" in result.message)
        and "Nothing was changed" in result.message
    )
    assert champion(client) == "7"
    assert audit_lines(config.audit_log_path)[0]["outcome"] == "failed"


# ------------------------------------------------------------------------------------- endpoint planning


def test_plan_keeps_a_custom_served_entity_name() -> None:
    endpoint = served_endpoint()
    endpoint["config"]["served_entities"][0]["name"] = "chatbot"
    endpoint["config"]["traffic_config"]["routes"][0]["served_model_name"] = "chatbot"
    plan = rollback.plan_endpoint_update(endpoint, MODEL, 6)
    entity = plan.new_config["served_entities"][0]
    assert (entity["name"], entity["entity_version"]) == ("chatbot", "6")
    assert plan.new_config["traffic_config"]["routes"][0]["served_model_name"] == "chatbot"
    assert plan.served_version == "7"


def test_plan_for_a_legacy_served_models_endpoint() -> None:
    endpoint = {
        "name": ENDPOINT,
        "state": {"config_update": "NOT_UPDATING"},
        "config": {
            "served_models": [
                {
                    "name": f"{MODEL}-7",
                    "model_name": MODEL,
                    "model_version": "7",
                    "workload_size": "Small",
                    "scale_to_zero_enabled": True,
                    "state": {"deployment": "DEPLOYMENT_READY"},
                    "creator": "x",
                }
            ],
        },
    }
    plan = rollback.plan_endpoint_update(endpoint, MODEL, 5)
    assert plan.new_config == {
        "served_models": [
            {
                "name": f"{MODEL}-5",
                "model_name": MODEL,
                "model_version": "5",
                "workload_size": "Small",
                "scale_to_zero_enabled": True,
            }
        ]
    }


def test_plan_refuses_an_endpoint_that_does_not_serve_exactly_one_version() -> None:
    endpoint = served_endpoint()
    endpoint["config"]["served_entities"][1]["entity_name"] = "other_model"
    endpoint["config"]["served_entities"] = endpoint["config"]["served_entities"][1:]
    with pytest.raises(rollback.RollbackRefusedError, match="does not serve"):
        rollback.plan_endpoint_update(endpoint, MODEL, 6)
    endpoint = served_endpoint()
    endpoint["config"]["served_entities"][1].update(entity_name=MODEL, entity_version="6")
    with pytest.raises(rollback.RollbackRefusedError, match="more than one version"):
        rollback.plan_endpoint_update(endpoint, MODEL, 5)


def test_scrub_removes_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_TOKEN", "s3cr3t-value")
    text = registry.scrub(f"failed with s3cr3t-value and Bearer abc.def and {TOKEN} at https://u:pw@host/x")
    assert "s3cr3t-value" not in text and "abc.def" not in text and TOKEN not in text and "pw@" not in text


def test_a_store_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder", encoding="utf-8")
    with pytest.raises(DataAccessError) as caught:
        build_demo_registry(blocker / "store")
    assert "build the demo model registry" in str(caught.value) and "Traceback" not in str(caught.value)


def test_an_unwritable_audit_log_refuses_before_any_change(
    store: RegistryConfig, client: MlflowClient, tmp_path: Path, champion_at_7: None
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder", encoding="utf-8")
    config = settings(tmp_path, audit_log_path=blocker / "audit.jsonl")
    result = rollback.rollback(
        MODEL, 6, confirmation=rollback.confirmation_phrase(MODEL, 7, 6), viewer=ANA, config=store, settings=config
    )
    assert result.outcome == "refused" and "audit log" in result.message and "nothing was changed" in result.message
    assert champion(client) == "7"
