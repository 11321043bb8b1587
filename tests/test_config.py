"""Settings resolution: environment over secrets over defaults; table names validated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_access.config import SETTINGS, Setting, SettingError, TableName, load_settings, read_secrets_files, setting
from data_access.errors import DataAccessError
from data_access.sources import DatabricksSQLSource, DuckDBSource, open_source

ROOT = Path(__file__).resolve().parent.parent

SECRETS = {
    "databricks": {"host": "https://adb-1.2.azuredatabricks.net/", "warehouse_id": "wh1", "token": "dapiSECRET"},
    "app": {"requests_table": "main.dbdemos.inference_requests"},
}


def test_defaults_are_the_embedded_demo() -> None:
    settings = load_settings(environ={}, secrets={})
    assert settings.backend == "duckdb"
    assert isinstance(open_source(settings), DuckDBSource)
    assert str(settings.requests_table) == "requests"


def test_secrets_select_databricks() -> None:
    settings = load_settings(environ={}, secrets=SECRETS)
    assert settings.backend == "databricks"
    assert settings.databricks is not None
    assert settings.databricks.host == "adb-1.2.azuredatabricks.net"
    assert settings.databricks.http_path == "/sql/1.0/warehouses/wh1"
    assert settings.requests_table == TableName("inference_requests", "dbdemos", "main")
    assert isinstance(open_source(settings), DatabricksSQLSource)
    assert "dapiSECRET" not in repr(settings)


def test_environment_wins_over_secrets() -> None:
    env = {"DATABRICKS_HTTP_PATH": "/sql/1.0/warehouses/other", "INFERENCE_EXPLORER_BACKEND": "duckdb"}
    settings = load_settings(environ=env, secrets=SECRETS)
    assert settings.backend == "duckdb" and settings.databricks is None
    env = {"DATABRICKS_HOST": "h.cloud.databricks.com", "DATABRICKS_WAREHOUSE_ID": "w9", "DATABRICKS_CLIENT_ID": "c"}
    settings = load_settings(environ=env, secrets={})
    assert settings.databricks is not None
    assert (settings.databricks.http_path, settings.databricks.client_id) == ("/sql/1.0/warehouses/w9", "c")


def test_databricks_selected_but_missing_says_what_to_set() -> None:
    with pytest.raises(DataAccessError) as raised:
        load_settings(environ={"INFERENCE_EXPLORER_BACKEND": "databricks"}, secrets={})
    assert "warehouse_id" in raised.value.hint


@pytest.mark.parametrize("bad", ["", "a.b.c.d", "x; DROP TABLE y", "`t`", "a..b", "1table", "t-1"])
def test_table_names_are_validated(bad: str) -> None:
    with pytest.raises(DataAccessError):
        TableName.parse(bad)


def test_table_name_parts() -> None:
    assert TableName.parse("t") == TableName("t")
    assert TableName.parse("s.t") == TableName("t", "s")
    assert str(TableName.parse("c.s.t")) == "c.s.t"


# --- Every setting is checked once, at start, and a wrong one is named with its origin ---------------------------


# Settings whose type refuses plain words: numbers, choices, flags, names. New declarations join automatically.
STRICT = [s for s in SETTINGS if not s.accepts("abc")]


def test_strict_settings_cover_every_number() -> None:
    numeric = {"query_timeout_s", "connect_timeout_s", "demo_requests", "demo_seed"}
    assert numeric <= {s.key for s in STRICT}


@pytest.mark.parametrize("declared", STRICT, ids=lambda s: s.key)
def test_garbage_in_the_environment_names_the_setting(declared: Setting) -> None:
    with pytest.raises(SettingError) as raised:
        load_settings(environ={declared.env: "abc"}, secrets={})
    text = str(raised.value)
    assert declared.key in text and f"environment variable {declared.env}" in text and "expected" in text
    assert "\n" not in text


@pytest.mark.parametrize("declared", STRICT, ids=lambda s: s.key)
def test_garbage_in_the_secrets_file_names_the_setting(declared: Setting) -> None:
    with pytest.raises(SettingError) as raised:
        load_settings(environ={}, secrets={declared.section: {declared.key: "abc"}})
    text = str(raised.value)
    assert f"[{declared.section}] {declared.key}" in text and "secrets file" in text


@pytest.mark.parametrize("declared", SETTINGS, ids=lambda s: s.key)
def test_every_setting_refuses_a_table_where_a_value_belongs(declared: Setting) -> None:
    with pytest.raises(SettingError, match=declared.key):
        load_settings(environ={}, secrets={declared.section: {declared.key: {"nested": 1}}})


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("query_timeout_s", "1.5"),
        ("query_timeout_s", 1.5),
        ("query_timeout_s", "0"),
        ("query_timeout_s", True),
        ("demo_requests", "-5"),
        ("demo_seed", "x"),
        ("demo_seed", 2**40),
        ("connect_timeout_s", "nan"),
        ("allow_rollback", "maybe"),
        ("backend", "postgres"),
        ("host", "https://evil host/"),
    ],
)
def test_out_of_range_and_wrong_types_are_refused(key: str, raw: object) -> None:
    declared = setting(key)
    with pytest.raises(SettingError, match=key):
        load_settings(environ={}, secrets={declared.section: {declared.key: raw}})


def test_good_values_in_either_place() -> None:
    env = {"INFERENCE_EXPLORER_QUERY_TIMEOUT": " 90 ", "INFERENCE_EXPLORER_ALLOW_ROLLBACK": "yes"}
    secrets = {"app": {"demo_requests": 2_000, "demo_seed": "11", "connect_timeout_s": 5.0, "query_timeout_s": "x"}}
    settings = load_settings(environ=env, secrets=secrets)  # the environment's 90 wins over the secrets' "x"
    assert (settings.query_timeout_s, settings.allow_rollback) == (90, True)
    assert (settings.demo_requests, settings.demo_seed, settings.connect_timeout_s) == (2_000, 11, 5)
    assert settings.connect_bound_s == 5


def test_all_wrong_values_are_named_at_once_and_secrets_are_not_echoed() -> None:
    secrets = {"databricks": {"host": "h.cloud.databricks.com", "warehouse_id": "w", "token": ["dapiSECRET"]}}
    with pytest.raises(SettingError) as raised:
        load_settings(environ={"INFERENCE_EXPLORER_DEMO_SEED": "x"}, secrets=secrets)
    text = str(raised.value)
    assert "demo_seed" in text and "token" in text and "dapiSECRET" not in text


def test_a_broken_secrets_file_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "secrets.toml"
    broken.write_text('[app]\nquery_timeout_s = "unterminated\n')
    with pytest.raises(SettingError, match=r"secrets\.toml"):
        read_secrets_files([broken])


def _command(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("INFERENCE_EXPLORER_", "DATABRICKS_"))}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(ROOT), "HOME": str(cwd), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


COMMANDS = [["-m", "jobs.score", "--quiet"], ["-m", "jobs.spark_score"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[1])
@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"INFERENCE_EXPLORER_DEMO_REQUESTS": "abc"}, "demo_requests"),
        ({"INFERENCE_EXPLORER_QUERY_TIMEOUT": "1.5"}, "query_timeout_s"),
        ({"INFERENCE_EXPLORER_DEMO_SEED": "x"}, "demo_seed"),
    ],
)
def test_commands_exit_2_with_one_line(command: list[str], env: dict[str, str], named: str, tmp_path: Path) -> None:
    done = _command(command, tmp_path, **env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and named in done.stderr and "Traceback" not in done.stderr
    assert next(iter(env)) in done.stderr


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[1])
def test_commands_read_the_secrets_file(command: list[str], tmp_path: Path) -> None:
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text('[app]\nconnect_timeout_s = "soon"\n')
    done = _command(command, tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "connect_timeout_s" in done.stderr and "[app] connect_timeout_s" in done.stderr


def test_gateway_settings_and_their_errors() -> None:
    settings = load_settings(environ={}, secrets={})
    assert (settings.payload_format, settings.demo_format, settings.hash_requesters) == ("auto", "legacy", False)
    assert str(settings.served_entities_table) == "system.serving.served_entities"
    env = {
        "INFERENCE_EXPLORER_PAYLOAD_FORMAT": "gateway",
        "INFERENCE_EXPLORER_DEMO_FORMAT": "gateway",
        "INFERENCE_EXPLORER_HASH_REQUESTERS": "1",
    }
    secrets = {"app": {"payload_format": "legacy", "served_entities_table": "main.ops.entities"}}
    settings = load_settings(environ=env, secrets=secrets)
    assert (settings.payload_format, settings.demo_format, settings.hash_requesters) == ("gateway", "gateway", True)
    assert settings.served_entities_table == TableName("entities", "ops", "main")
    with pytest.raises(DataAccessError, match="payload_format") as error:
        load_settings(environ={"INFERENCE_EXPLORER_PAYLOAD_FORMAT": "parquet"}, secrets={})
    assert "'auto', 'legacy', 'gateway'" in str(error.value)


def test_precision_takes_fp32_int8_and_bf16() -> None:
    for value in ("fp32", "int8", "bf16"):
        assert load_settings(environ={"INFERENCE_EXPLORER_PRECISION": value}, secrets={}).precision == value
    assert load_settings(environ={}, secrets={"app": {"precision": "bf16"}}).precision == "bf16"
    with pytest.raises(DataAccessError, match="precision") as error:
        load_settings(environ={"INFERENCE_EXPLORER_PRECISION": "fp16"}, secrets={})
    assert "'fp32', 'int8', 'bf16'" in str(error.value)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"INFERENCE_EXPLORER_LM_MAX_TOKENS": "lots"}, "INFERENCE_EXPLORER_LM_MAX_TOKENS"),
        ({"INFERENCE_EXPLORER_PRECISION": "int4"}, "precision"),
    ],
)
def test_full_profile_settings_exit_2_with_one_line(env: dict[str, str], named: str, tmp_path: Path) -> None:
    done = _command(["-m", "jobs.score", "--quiet", "--profile", "full"], tmp_path, **env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and named in done.stderr
    assert "Traceback" not in done.stderr
