"""Monitors: rule files, evaluation on demo traffic, alert state, and notifications that arrive once.

Evaluation runs on real demo requests in DuckDB (rollups built) through the job's own code; figures are checked
against pandas on the same rows. Webhooks are a loopback HTTP receiver that records every request (the wire is
the only thing replaced). A toxicity regression is injected into v7: 30% of its responses score 0.9 on April
13-15 (while v6 still serves, for the canary) and 12% on April 22 (v7 alone, for the threshold rule).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from core import monitor_rules as mr
from core import pricing
from data_access import alert_store, alerts
from data_access.config import TableName, load_settings
from data_access.queries import run
from data_access.schema import REQUESTS_ARROW
from data_access.sources import DatabricksSQLSource, DuckDBSource
from jobs import monitors
from testkit.fake_warehouse import serve_warehouse
from testkit.tables import write_requests

ROOT = Path(__file__).resolve().parent.parent
TABLE = TableName("requests")
CANARY_SPAN = (datetime(2026, 4, 13), datetime(2026, 4, 16))
THRESHOLD_SPAN = (datetime(2026, 4, 22), datetime(2026, 4, 23))
RULES = """
clock = "wall"
[webhooks.slack]
format = "slack"
[webhooks.generic]
format = "generic"

[[rule]]
name = "toxic-v7"
metric = "toxic_share"
threshold = 0.5
above = 0.05
versions = ["7"]
window = "24h"
min_samples = 100
severity = "critical"
notify = ["slack", "generic"]

[[rule]]
name = "canary-toxicity"
kind = "canary"
measure = "toxicity_rate"
min_effect = 0.2
window = "3d"
min_samples = 50
notify = ["slack", "generic"]
"""
# (evaluation time, the notifications it must send): the canary fires on its span and resolves once the
# 3-day window has left it; the threshold rule fires on April 22's traffic and resolves two days later.
STEPS = (
    (datetime(2026, 4, 12, 12), []),
    (datetime(2026, 4, 16), [("canary-toxicity", "firing")]),
    (datetime(2026, 4, 17), []),
    (datetime(2026, 4, 21), [("canary-toxicity", "resolved")]),
    (datetime(2026, 4, 23), [("toxic-v7", "firing")]),
    (datetime(2026, 4, 23, 12), []),
    (datetime(2026, 4, 25), [("toxic-v7", "resolved")]),
)


# --- Data ----------------------------------------------------------------------------------------------------


def inject_regression(rows: pa.Table) -> pa.Table:
    frame = rows.to_pandas()
    rng = np.random.default_rng(5)
    v7 = frame["model_version"] == "7"
    for (start, end), share in ((CANARY_SPAN, 0.30), (THRESHOLD_SPAN, 0.12)):
        inside = v7 & (frame["request_time"] >= start) & (frame["request_time"] < end)
        inside &= frame["response_toxicity"].notna()
        chosen = inside & (rng.random(len(frame)) < share)
        frame.loc[chosen, "response_toxicity"] = 0.9
    return pa.Table.from_pandas(frame, schema=REQUESTS_ARROW, preserve_index=False)


@pytest.fixture(scope="session")
def regressed_rows(demo_rows: pa.Table) -> pa.Table:
    return inject_regression(demo_rows)


@pytest.fixture(scope="session")
def regressed_db(tmp_path_factory: pytest.TempPathFactory, regressed_rows: pa.Table) -> Path:
    return write_requests(tmp_path_factory.mktemp("monitors-demo") / "inference.duckdb", regressed_rows)


@pytest.fixture
def workdir(tmp_path: Path, regressed_db: Path) -> Path:
    """A private copy of the regressed demo data (the alert tables are written into it) and the rules."""
    (tmp_path / "inference.duckdb").write_bytes(regressed_db.read_bytes())
    (tmp_path / "monitors.toml").write_text(RULES)
    return tmp_path


# --- A loopback webhook receiver ---------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    received: list[dict] = field(default_factory=list)  # every request, accepted or not
    fail_first: int = 0  # answer 503 to this many requests first
    delay_s: float = 0.0

    def accepted(self) -> list[dict]:
        return [r for r in self.received if r["status"] == 200]

    def unique(self) -> dict[str, dict]:
        """What a receiver that dedupes on the idempotency key keeps."""
        return {r["key"]: r for r in self.accepted()}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver("")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(state.delay_s)
            with lock:
                status = 503 if state.fail_first > 0 else 200
                state.fail_first -= 1 if status == 503 else 0
                state.received.append(
                    {"path": self.path, "key": self.headers["Idempotency-Key"], "body": json.loads(body),
                     "status": status}
                )  # fmt: skip
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()


def hook_env(receiver: Receiver) -> dict[str, str]:
    return {
        "INFERENCE_EXPLORER_WEBHOOK_SLACK": f"{receiver.url}/slack/T000/B000/secret-token",
        "INFERENCE_EXPLORER_WEBHOOK_GENERIC": f"{receiver.url}/generic?token=secret-token",
    }


def settings_for(workdir: Path, receiver: Receiver) -> object:
    environ = {"INFERENCE_EXPLORER_DATA_DIR": str(workdir), **hook_env(receiver)}
    return load_settings(environ=environ, secrets={})


def run_step(workdir: Path, receiver: Receiver, at: datetime, **options: object) -> monitors.RunSummary:
    return monitors.run_monitors(
        settings_for(workdir, receiver), rules_path=workdir / "monitors.toml", at=at, backoff_s=0.01, **options
    )


# --- Rule files -----------------------------------------------------------------------------------------------


def test_the_shipped_example_file_is_valid() -> None:
    rule_file = mr.load_rules(ROOT / "monitors.toml")
    assert rule_file.problems == ()
    kinds = {rule.kind for rule in rule_file.rules}
    assert kinds == {"threshold", "canary"} and len(rule_file.rules) >= 6
    assert {r.figure for r in rule_file.rules if r.kind == "threshold"} >= {
        "toxic_share", "percentile", "error_rate", "unparsed_share", "mean", "cost_per_1k"
    }  # fmt: skip


def test_a_broken_rule_is_named_with_its_field_and_the_others_still_load() -> None:
    text = (
        RULES
        + """
[[rule]]
name = "bad-window"
metric = "error_rate"
above = 0.1
window = "soon"

[[rule]]
name = "bad-metric"
metric = "toxicity"
above = 0.1
window = "1h"

[[rule]]
name = "bad-hook"
metric = "error_rate"
above = 0.1
window = "1h"
notify = ["pager"]

[[rule]]
name = "both-sides"
metric = "error_rate"
above = 0.1
below = 0.01
window = "1h"

[[rule]]
name = "typo"
metric = "error_rate"
abvoe = 0.1
window = "1h"

[[rule]]
name = "toxic-v7"
metric = "error_rate"
above = 0.1
window = "1h"
"""
    )
    rule_file = mr.parse_rules(tomllib.loads(text))
    assert [r.name for r in rule_file.rules] == ["toxic-v7", "canary-toxicity"]
    found = {(p.rule, p.field) for p in rule_file.problems}
    assert found == {
        ("bad-window", "window"), ("bad-metric", "metric"), ("bad-hook", "notify"), ("both-sides", "above"),
        ("typo", "abvoe"), ("toxic-v7", "name"),
    }  # fmt: skip
    assert all(p.rule in p.line() and p.field in p.line() for p in rule_file.problems)


def test_an_unreadable_file_is_one_problem(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text("[[rule]\nname=")
    rule_file = mr.load_rules(tmp_path / "m.toml")
    assert rule_file.rules == () and len(rule_file.problems) == 1 and "TOML" in rule_file.problems[0].message


def test_state_changes_notify_once_per_firing_and_once_per_resolution() -> None:
    state, sent = None, []
    for outcome in [mr.OK, mr.FIRING, mr.FIRING, mr.INSUFFICIENT, mr.FIRING, mr.OK, mr.OK, mr.INSUFFICIENT, mr.FIRING]:
        change = mr.next_state(state, outcome)
        if change.notify:
            sent.append(change.state)
        state = change.state
    assert sent == ["firing", "resolved", "firing"]


# --- Figures against pandas ---------------------------------------------------------------------------------


def test_threshold_figures_match_pandas(regressed_db: Path, regressed_rows: pa.Table) -> None:
    text = """
[prices."6"]
prompt_per_1k = 0.001
completion_per_1k = 0.002
[prices."7"]
prompt_per_1k = 0.003
completion_per_1k = 0.004
[[rule]]
name = "toxic"
metric = "toxic_share"
threshold = 0.5
above = 0.05
window = "24h"
[[rule]]
name = "errors"
metric = "error_rate"
above = 0.05
window = "7d"
endpoints = ["dbdemos_endpoint_advanced"]
[[rule]]
name = "unparsed"
metric = "unparsed_share"
above = 0.05
window = "7d"
[[rule]]
name = "p95"
metric = "latency_p95"
above = 8000
window = "7d"
versions = ["6"]
[[rule]]
name = "fk"
metric = "mean"
score = "response_fk_grade"
above = 12
window = "90m"
min_samples = 1
[[rule]]
name = "cost"
metric = "cost_per_1k"
above = 1
window = "7d"
"""
    at = datetime(2026, 4, 22, 18, 30)
    rule_file = mr.parse_rules(tomllib.loads(text))
    source = DuckDBSource(regressed_db)
    results = {e.rule.name: e.verdict for e in monitors.evaluate(rule_file, source, TABLE, at, True)}
    raw = regressed_rows.to_pandas()
    week = raw[(raw["request_time"] >= at - pd.Timedelta("7D")) & (raw["request_time"] < at)]
    hour = raw["request_time"].dt.floor("h")

    def touched_hours(length: str) -> pd.DataFrame:
        """Histogram figures cover the whole hours the window touches."""
        return raw[(hour >= pd.Timestamp(at - pd.Timedelta(length)).floor("h")) & (hour < at)]

    day_hours = touched_hours("24h")
    tox = day_hours["response_toxicity"].dropna()
    assert results["toxic"].samples == len(tox)
    assert results["toxic"].value == pytest.approx((tox >= 0.5).mean())
    assert results["toxic"].outcome == mr.FIRING  # the injected regression
    errors = week["status_code"].isna() | (week["status_code"] != 200)
    assert results["errors"].value == pytest.approx(errors.mean()) and results["errors"].samples == len(week)
    assert results["unparsed"].value == pytest.approx(week["parse_error"].notna().mean())
    week_hours = touched_hours("7D")
    latency = week_hours.loc[week_hours["model_version"] == "6", "latency_ms"].dropna()
    assert results["p95"].samples == len(latency)
    assert results["p95"].value == pytest.approx(np.percentile(latency, 95), rel=0.01)  # 1%-wide bins
    fk_hours = touched_hours("90m")["response_fk_grade"].dropna()
    assert results["fk"].value == pytest.approx(fk_hours.mean()) and results["fk"].samples == len(fk_hours)
    prices = {"6": (0.001, 0.002), "7": (0.003, 0.004)}
    cost = sum(
        (part["prompt_tokens"].sum() * prices[v][0] + part["completion_tokens"].sum() * prices[v][1]) / 1000
        for v, part in week.groupby("model_version")
    )
    assert results["cost"].value == pytest.approx(cost / len(week) * 1000, rel=1e-9)
    assert results["cost"].samples == len(week)
    assert pricing.Price(0.001, 0.002) == rule_file.prices["6"]


def test_a_version_without_a_price_leaves_cost_without_a_value(regressed_db: Path) -> None:
    rule_file = mr.parse_rules({"rule": [{"name": "c", "metric": "cost_per_1k", "above": 1, "window": "7d"}]})
    (evaluation,) = monitors.evaluate(rule_file, DuckDBSource(regressed_db), TABLE, datetime(2026, 4, 20), True)
    assert evaluation.verdict.outcome == mr.INSUFFICIENT and "unpriced" in evaluation.verdict.detail


def test_rollups_and_raw_rows_give_the_same_verdicts(regressed_db: Path) -> None:
    rule_file = mr.parse_rules(tomllib.loads(RULES))
    source = DuckDBSource(regressed_db)
    for at, _ in STEPS[1:5]:
        fast = monitors.evaluate(rule_file, source, TABLE, at, True)
        slow = monitors.evaluate(rule_file, source, TABLE, at, False)
        assert [e.verdict for e in fast] == [e.verdict for e in slow]


def test_a_canary_uses_the_overview_comparison(regressed_db: Path) -> None:
    """The canary's p-value is the Overview's Holm-adjusted p for the same pair and days."""
    from core import comparison
    from core.catalog import METRICS
    from data_access.queries import Filters, run, versions

    rule_file = mr.parse_rules(tomllib.loads(RULES))
    source = DuckDBSource(regressed_db)
    at = datetime(2026, 4, 16)
    (canary,) = [e for e in monitors.evaluate(rule_file, source, TABLE, at, True) if e.rule.kind == "canary"]
    window = Filters(start=datetime(2026, 4, 13).date(), end=datetime(2026, 4, 15).date())
    totals = run(source, versions.version_totals(TABLE, window)).table.to_pandas()
    hist = comparison.Histograms(run(source, versions.histograms_by_version(TABLE, window)).table.to_pandas())
    scorers = {m: hist.shared_scorer(m, ["6", "7"]) for m, i in METRICS.items() if i.scorer_column}
    table = comparison.compare_versions(totals, hist, "6", "7", 0.5, scorers).set_index("key")
    assert canary.versions == ("6", "7") and canary.verdict.outcome == mr.FIRING
    assert canary.verdict.value == pytest.approx(table.loc["toxicity_rate", "effect"])
    assert stats_p(canary.verdict.detail) == pytest.approx(table.loc["toxicity_rate", "p_holm"], rel=0.01) or (
        table.loc["toxicity_rate", "p_holm"] < 0.001 and "p < 0.001" in canary.verdict.detail
    )


def stats_p(detail: str) -> float:
    marker = "p = "
    return float(detail.split(marker, 1)[1].split(" ", 1)[0]) if marker in detail else float("nan")


# --- States, history and notifications ------------------------------------------------------------------------


def test_rules_fire_and_resolve_once_each_on_the_injected_regression(workdir: Path, receiver: Receiver) -> None:
    for at, expected in STEPS:
        summary = run_step(workdir, receiver, at)
        assert summary.delivery is not None and summary.delivery.failed == 0
        sent = sorted({(n["body"].get("rule"), n["body"].get("state")) for n in receiver.accepted()
                       if n["body"].get("evaluated_at") == at.isoformat()})  # fmt: skip
        assert sent == sorted(expected), (at, sent, summary.lines())
    # Each transition reached each webhook exactly once; the bodies are the two formats.
    assert len(receiver.received) == 2 * 4 and len(receiver.unique()) == 8
    slack = [r["body"] for r in receiver.received if r["path"].startswith("/slack")]
    generic = [r["body"] for r in receiver.received if r["path"].startswith("/generic")]
    assert all(isinstance(b["text"], str) and b["blocks"] for b in slack)
    assert {b["state"] for b in generic} == {"firing", "resolved"}
    assert all(b["idempotency_key"] == r["key"] for r in receiver.received for b in [r["body"]])
    first = next(b for b in generic if b["rule"] == "toxic-v7" and b["state"] == "firing")
    assert first["links"]["Trends"].startswith("trends?version=7&dates=2026-04-22&dates=2026-04-22")
    assert first["value"] > 0.05 and first["samples"] >= 100
    assert_all_steps_recorded(DuckDBSource(workdir / "inference.duckdb"))


def assert_all_steps_recorded(source: DuckDBSource) -> pd.DataFrame:
    """History: one row per rule and evaluation of STEPS; states and notified changes as the page reads them."""
    history = source.execute(alerts.alert_history(TABLE).sql("duckdb")).to_pandas()
    assert len(history) == 2 * len(STEPS)
    states = source.execute(alerts.alert_states(TABLE).sql("duckdb")).to_pandas().set_index("rule")
    assert states.loc["toxic-v7", "state"] == "resolved" and states.loc["toxic-v7", "transition"] == 2
    transitions = source.execute(alerts.alert_transitions(TABLE).sql("duckdb")).to_pandas()
    assert len(transitions) == 4 and (transitions["delivered"] == 2).all()
    return states


def test_a_rerun_at_the_same_time_changes_nothing(workdir: Path, receiver: Receiver) -> None:
    run_step(workdir, receiver, STEPS[1][0])
    again = run_step(workdir, receiver, STEPS[1][0])
    assert again.queued == [] and len(receiver.received) == 2


def test_a_receiver_failing_three_times_then_accepting_gets_it_once(workdir: Path, receiver: Receiver) -> None:
    receiver.fail_first = 3
    summary = run_step(workdir, receiver, STEPS[1][0], attempts=5)
    assert summary.delivery is not None and summary.delivery.sent == 2
    assert [r["status"] for r in receiver.received] == [503, 503, 503, 200, 200]
    assert len(receiver.accepted()) == 2 and len(receiver.unique()) == 2
    outbox = duckdb.connect(str(workdir / "inference.duckdb"), read_only=True)
    attempts = dict(outbox.sql("SELECT webhook, attempts FROM requests_alert_outbox").fetchall())
    outbox.close()
    assert sorted(attempts.values()) == [1, 4]


def test_an_unreachable_receiver_keeps_the_notification_for_the_next_run(workdir: Path, receiver: Receiver) -> None:
    receiver.fail_first = 100
    first = run_step(workdir, receiver, STEPS[1][0], attempts=2)
    assert first.delivery is not None and first.delivery.failed == 2 and receiver.accepted() == []
    receiver.fail_first = 0
    second = run_step(workdir, receiver, STEPS[2][0], attempts=2)  # no new transition: the old ones go out
    assert second.queued == [] and second.delivery is not None and second.delivery.sent == 2
    assert len(receiver.unique()) == 2


def test_webhook_urls_never_reach_the_tables_or_the_output(
    workdir: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver.fail_first = 100
    summary = run_step(workdir, receiver, STEPS[1][0], attempts=2)
    printed = "\n".join(summary.lines()) + capsys.readouterr().out
    with duckdb.connect(str(workdir / "inference.duckdb"), read_only=True) as con:
        stored = str(con.sql("SELECT * FROM requests_alert_outbox").fetchall())
        stored += str(con.sql("SELECT * FROM requests_alert_history").fetchall())
    for text in (printed, stored):
        assert "secret-token" not in text and str(receiver.url.rsplit(":", 1)[1]) not in text
    assert repr(settings_for(workdir, receiver)).count("secret-token") == 0


# --- Kills between deciding and sending ------------------------------------------------------------------------


def _job(workdir: Path, receiver: Receiver, at: datetime) -> subprocess.Popen[str]:
    env = {**os.environ, "INFERENCE_EXPLORER_DATA_DIR": str(workdir), **hook_env(receiver)}
    command = [sys.executable, "-m", "jobs.monitors", "--rules", str(workdir / "monitors.toml"), "--at", at.isoformat()]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


@pytest.mark.slow
def test_sigkills_between_deciding_and_sending_deliver_each_transition_exactly_once(
    workdir: Path, receiver: Receiver
) -> None:
    """Per step: one run killed at a random moment after it committed its decision (during or after sends; the
    receiver answers slowly so kills land mid-request), one killed at a random moment from its start, then one
    run to the end. Every transition must reach every webhook, with one key each."""
    rng = random.Random(14)
    receiver.delay_s = 0.05
    kills = 0
    for at, sends in STEPS:
        if not sends:
            continue  # only the evaluations that decide a transition
        after_decision = _job(workdir, receiver, at)
        assert after_decision.stdout is not None
        for line in after_decision.stdout:
            if line.startswith("decided"):
                time.sleep(rng.uniform(0, 0.15))
                break
        after_decision.send_signal(signal.SIGKILL)
        kills += after_decision.wait() == -signal.SIGKILL
        anywhere = _job(workdir, receiver, at)
        time.sleep(rng.uniform(0, 4))
        anywhere.send_signal(signal.SIGKILL)
        kills += anywhere.wait() == -signal.SIGKILL
        finished = _job(workdir, receiver, at)
        assert finished.wait(timeout=120) == 0
    assert kills >= 4  # most runs really died mid-way
    unique = receiver.unique()
    with duckdb.connect(str(workdir / "inference.duckdb"), read_only=True) as con:
        outbox = con.sql("SELECT idempotency_key, rule, state, webhook FROM requests_alert_outbox").fetchall()
    expected = [(rule, state) for _, sends in STEPS for rule, state in sends]
    assert sorted((rule, state) for _, rule, state, _ in outbox) == sorted(expected * 2)  # decided once each
    assert set(unique) == {key for key, *_ in outbox}  # and each reached its webhook
    # A repeat (killed after the receiver accepted, before it was recorded) carries the same key and body.
    for request in receiver.accepted():
        assert request["body"] == unique[request["key"]]["body"]
    repeats = len(receiver.accepted()) - len(unique)
    print(f"{kills} kills; {len(receiver.accepted())} deliveries accepted for {len(unique)} keys ({repeats} repeats)")
    with duckdb.connect(str(workdir / "inference.duckdb"), read_only=True) as con:
        pending = con.sql("SELECT count(*) FROM requests_alert_outbox WHERE sent_at IS NULL").fetchall()[0][0]
    assert pending == 0


# --- The canary's error rates, on aggregates --------------------------------------------------------------------


@pytest.mark.slow
def test_the_canary_stays_quiet_on_an_a_a_split_and_fires_on_a_regression(demo_rows: pa.Table) -> None:
    from bench.bench_monitors import canary_rates

    rates = canary_rates(demo_rows.to_pandas(), seeds=100, regression=0.03)
    assert rates.false_alarms <= 5, rates
    assert rates.detections >= 80, rates


# --- After each scoring run ------------------------------------------------------------------------------------


def test_the_scoring_job_evaluates_the_rules_after_its_run(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from data_access.demo import generate_payload
    from data_access.duckdb_store import DuckDBStore
    from jobs import score

    path = tmp_path / "inference.duckdb"
    DuckDBStore(path, TableName("payload"), TABLE).replace_payload(generate_payload(300, seed=3))
    (tmp_path / "monitors.toml").write_text(RULES.replace('clock = "wall"', 'clock = "data"'))
    monkeypatch.setenv("INFERENCE_EXPLORER_MONITORS_FILE", str(tmp_path / "monitors.toml"))
    monkeypatch.setenv("INFERENCE_EXPLORER_DATA_DIR", str(tmp_path))
    for name, url in hook_env(receiver).items():
        monkeypatch.setenv(name, url)
    assert score.main(["--duckdb", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "monitors: evaluated 2 rule(s)" in out, out
    states = DuckDBSource(path).execute(alerts.alert_states(TABLE).sql("duckdb")).to_pandas()
    assert sorted(states["rule"]) == ["canary-toxicity", "toxic-v7"]
    assert (states["evaluated_at"] > pd.Timestamp("2026-04-01")).all()  # the data's clock: its newest request
    assert score.main(["--duckdb", str(path), "--quiet", "--no-monitors"]) == 0
    assert "monitors:" not in capsys.readouterr().out


# --- The Alerts page ---------------------------------------------------------------------------------------------


@pytest.fixture
def alerts_app(workdir: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    import streamlit as st

    from testkit.apptest import app_for

    broken = RULES + '\n[[rule]]\nname = "typo-rule"\nmetric = "error_rate"\nabove = 0.1\nwindow = "an hour"\n'
    (workdir / "monitors.toml").write_text(broken)
    for at, _ in STEPS[:5]:  # the canary fired and resolved, the threshold rule is firing
        run_step(workdir, receiver, at)
    monkeypatch.setenv("INFERENCE_EXPLORER_MONITORS_FILE", str(workdir / "monitors.toml"))
    for name, url in hook_env(receiver).items():
        monkeypatch.setenv(name, url)
    yield app_for(workdir, monkeypatch)
    st.cache_data.clear()
    st.cache_resource.clear()


def _page_text(at: object) -> str:
    parts = []
    for kind in ("title", "caption", "markdown", "info", "warning", "metric", "subheader"):
        for element in at.get(kind):  # type: ignore[attr-defined]
            parts.append(f"{getattr(element, 'label', '')} {element.value}")
    return " ".join(parts)


def test_the_alerts_page_shows_states_history_links_and_problems(alerts_app: object, receiver: Receiver) -> None:
    at = alerts_app
    at.run()  # type: ignore[attr-defined]
    at.switch_page("views/alerts.py").run()  # type: ignore[attr-defined]
    assert not at.exception, [e.value for e in at.exception]  # type: ignore[attr-defined]
    text = _page_text(at)
    assert "rule 'typo-rule', field 'window'" in text
    metrics = {m.label: m.value for m in at.metric}  # type: ignore[attr-defined]
    assert metrics["🔴 Firing"] == "1" and metrics["🟢 Resolved"] == "1"
    rules = at.dataframe[0].value.set_index("rule")  # type: ignore[attr-defined]
    assert rules.loc["toxic-v7", "state"] == "firing" and rules.loc["canary-toxicity", "state"] == "resolved"
    assert rules.loc["toxic-v7", "value"] > 0.05 and rules.loc["toxic-v7", "limit_value"] == 0.05
    assert rules.loc["toxic-v7", "Trends"] == (
        "trends?version=7&dates=2026-04-22&dates=2026-04-22&grain=hour&trend_metric=response_toxicity"
    )
    assert rules.loc["toxic-v7", "Requests"].startswith("requests?version=7&dates=2026-04-22")
    assert len(at.get("plotly_chart")) == 2  # type: ignore[attr-defined]
    transitions = at.dataframe[-1].value  # type: ignore[attr-defined]
    assert sorted(zip(transitions["rule"], transitions["state"], strict=True)) == [
        ("canary-toxicity", "firing"), ("canary-toxicity", "resolved"), ("toxic-v7", "firing")
    ]  # fmt: skip
    assert (transitions["delivered"] == 2).all()
    assert "secret-token" not in text and receiver.url not in text


def test_the_alerts_page_before_any_evaluation_lists_the_rules(
    tmp_path: Path, regressed_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streamlit as st

    from testkit.apptest import app_for

    (tmp_path / "inference.duckdb").write_bytes(regressed_db.read_bytes())
    monkeypatch.setenv("INFERENCE_EXPLORER_MONITORS_FILE", str(ROOT / "monitors.toml"))
    at = app_for(tmp_path, monkeypatch)
    try:
        at.run()
        at.switch_page("views/alerts.py").run()
        assert not at.exception, [e.value for e in at.exception]
        assert "No evaluation has been recorded yet" in _page_text(at)
        assert len(at.dataframe[0].value) == len(mr.load_rules(ROOT / "monitors.toml").rules)
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()


def test_a_webhook_url_that_is_not_http_is_named_without_showing_it() -> None:
    from data_access.config import SettingError

    with pytest.raises(SettingError) as raised:
        load_settings(environ={"INFERENCE_EXPLORER_WEBHOOK_ONCALL": "hooks.slack.com/secret-token"}, secrets={})
    assert "webhook oncall" in str(raised.value) and "secret-token" not in str(raised.value)
    settings = load_settings(environ={}, secrets={"webhooks": {"Audit": "https://example.com/secret-token"}})
    assert settings.webhook_urls == {"audit": "https://example.com/secret-token"}
    assert "secret-token" not in repr(settings)


def test_a_canary_between_registry_aliases_resolves_them(tmp_path: Path, regressed_db: Path) -> None:
    """`champion` and `previous` are read through the registry code the Model registry page uses."""
    from data_access.demo_registry import DEMO_MODEL_NAME, build_demo_registry

    build_demo_registry(tmp_path / "mlflow", DEMO_MODEL_NAME)  # champion -> 7, previous -> 6
    settings = load_settings(environ={"INFERENCE_EXPLORER_DATA_DIR": str(tmp_path)}, secrets={})
    rule = {"name": "c", "kind": "canary", "measure": "toxicity_rate", "baseline": "previous",
            "candidate": "champion", "window": "3d", "min_samples": 50}  # fmt: skip
    rule_file = mr.parse_rules({"rule": [rule]})
    at = datetime(2026, 4, 16)
    source = DuckDBSource(regressed_db)
    (evaluation,) = monitors.evaluate(rule_file, source, TABLE, at, True, monitors.registry_aliases(settings))
    assert evaluation.versions == ("6", "7") and evaluation.verdict.outcome == mr.FIRING
    (unresolved,) = monitors.evaluate(rule_file, source, TABLE, at, True, None)
    assert unresolved.verdict.outcome == mr.INSUFFICIENT and "registry" in unresolved.verdict.detail


# --- On Databricks: the alert tables in the warehouse, beside the requests table ------------------------------
# The warehouse is the loopback one (testkit/fake_warehouse.py): the real databricks-sql-connector sends every
# statement over TLS; the statements run on the test's DuckDB file after sqlglot transpiles them.

WAREHOUSE_TOKEN = "dapi-monitors-test"


def warehouse_settings(warehouse: object, data_dir: Path, receiver: Receiver) -> object:
    environ = {
        "INFERENCE_EXPLORER_DATA_DIR": str(data_dir),  # the embedded file must stay untouched
        "DATABRICKS_HOST": warehouse.host,  # type: ignore[attr-defined]
        "DATABRICKS_WAREHOUSE_ID": warehouse.http_path.rsplit("/", 1)[-1],  # type: ignore[attr-defined]
        "DATABRICKS_TOKEN": WAREHOUSE_TOKEN,
        "DATABRICKS_TLS_CA_FILE": str(warehouse.cert_path),  # type: ignore[attr-defined]
        **hook_env(receiver),
    }
    settings = load_settings(environ=environ, secrets={})
    assert settings.backend == "databricks"  # type: ignore[attr-defined]
    return settings


def warehouse_step(settings: object, workdir: Path, at: datetime, **options: object) -> monitors.RunSummary:
    return monitors.run_monitors(settings, rules_path=workdir / "monitors.toml", at=at, backoff_s=0.01, **options)


def wire_source(settings: object) -> DatabricksSQLSource:
    """The source `run_monitors` opens on the Databricks backend, kept to close its session while the warehouse
    listens (and without the connector's telemetry, which would call the workspace's other endpoints)."""
    return DatabricksSQLSource(settings.databricks, connect_options={"enable_telemetry": False})  # type: ignore[attr-defined]


def close(source: object) -> None:
    """Close the source's warehouse sessions while the warehouse still listens."""
    source.close()  # type: ignore[attr-defined]


def test_on_databricks_the_alert_tables_live_in_the_warehouse(
    workdir: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job writes the tables through the warehouse; the Alerts page reads them through it."""
    local = workdir / "local"  # the data folder: on Databricks the monitors write nothing there
    with serve_warehouse(workdir / "inference.duckdb", token=WAREHOUSE_TOKEN, writable=True) as warehouse:
        settings = warehouse_settings(warehouse, local, receiver)
        wire = wire_source(settings)
        for at, expected in STEPS:
            summary = warehouse_step(settings, workdir, at, source=wire)
            assert summary.delivery is not None and summary.delivery.failed == 0
            sent = sorted({(n["body"].get("rule"), n["body"].get("state")) for n in receiver.accepted()
                           if n["body"].get("evaluated_at") == at.isoformat()})  # fmt: skip
            assert sent == sorted(expected), (at, sent, summary.lines())
        again = warehouse_step(settings, workdir, STEPS[-1][0], source=wire)  # the same clock again: no change
        assert again.queued == [] and again.delivery is not None and again.delivery.sent == 0
        close(wire)
        statements = [statement.text for statement in warehouse.statements]
        page = alerts_page_over(warehouse, workdir, monkeypatch)
        page_statements = [statement.text for statement in warehouse.statements[len(statements) :]]
    assert not page.exception and not page.error, [e.value for e in page.exception]
    shown = page.dataframe[0].value.set_index("rule")
    assert alerts.alert_states(TABLE).sql("databricks") in page_statements
    assert "secret-token" not in _page_text(page)
    assert len(receiver.received) == 2 * 4 and len(receiver.unique()) == 8
    for kind in ("state", "history", "outbox"):
        name = f"`requests_alert_{kind}`"
        assert sum(s.startswith(f"CREATE TABLE IF NOT EXISTS {name}") for s in statements) == len(STEPS) + 1
        assert any(s.startswith(f"MERGE INTO {name}") for s in statements)
    assert any(s.startswith("UPDATE `requests_alert_outbox`") for s in statements)  # deliveries recorded
    assert not any("secret-token" in s or receiver.url in s for s in statements)  # webhook URLs stay secret
    assert not local.exists()
    # The tables, from the warehouse's own storage; what the page showed, read over the wire, is what they hold.
    states = assert_all_steps_recorded(DuckDBSource(workdir / "inference.duckdb"))
    assert shown["state"].to_dict() == states["state"].to_dict()
    assert shown["value"].to_dict() == pytest.approx(states["value"].to_dict(), nan_ok=True)
    assert len(page.dataframe[-1].value) == 4  # the notified changes


def alerts_page_over(warehouse: object, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """The app configured through the environment (as Databricks Apps runs it), opened on the Alerts page."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from ui import data

    monkeypatch.setenv("INFERENCE_EXPLORER_DATA_DIR", str(workdir / "local"))
    monkeypatch.setenv("INFERENCE_EXPLORER_MONITORS_FILE", str(workdir / "monitors.toml"))
    for name in ("INFERENCE_EXPLORER_BACKEND", "DATABRICKS_HTTP_PATH", "DATABRICKS_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_HOST", warehouse.host)  # type: ignore[attr-defined]
    monkeypatch.setenv("DATABRICKS_WAREHOUSE_ID", warehouse.http_path.rsplit("/", 1)[-1])  # type: ignore[attr-defined]
    monkeypatch.setenv("DATABRICKS_TOKEN", WAREHOUSE_TOKEN)
    monkeypatch.setenv("DATABRICKS_TLS_CA_FILE", str(warehouse.cert_path))  # type: ignore[attr-defined]
    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        page = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
        page.switch_page("views/alerts.py").run()
        close(data.source())
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()
    return page


class JobKilled(BaseException):
    """The job's process ending (a kill): no handler of ours runs, nothing more reaches the warehouse."""


@dataclass
class DyingSource:
    """The warehouse connection of a job that dies just before sending one chosen statement (deterministic kill
    points); everything before it reaches the real warehouse over the wire."""

    source: object
    dies_before: str
    dialect: str = "databricks"
    label: str = "a job about to die"

    def execute(self, sql: str) -> pa.Table:
        if sql.startswith(self.dies_before):
            raise JobKilled(self.dies_before)
        return self.source.execute(sql)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["outbox", "history", "state"])
def test_a_warehouse_job_killed_between_its_writes_notifies_each_transition_once(
    workdir: Path, receiver: Receiver, kind: str
) -> None:
    """Killed before the outbox, between outbox and history (a decision never recorded), or between history and
    states; the next run, a minute later, records and sends the transition once, with one key per webhook."""
    at, expected = STEPS[1]  # the canary starts firing
    later = at.replace(minute=1)
    with serve_warehouse(workdir / "inference.duckdb", token=WAREHOUSE_TOKEN, writable=True) as warehouse:
        settings = warehouse_settings(warehouse, workdir / "local", receiver)
        wire = wire_source(settings)
        dying = DyingSource(wire, f"MERGE INTO `requests_alert_{kind}`")
        with pytest.raises(JobKilled):
            warehouse_step(settings, workdir, at, source=dying)
        assert receiver.received == []
        summary = warehouse_step(settings, workdir, later, source=wire)
        close(wire)
    assert summary.delivery is not None and summary.delivery.failed == 0
    assert len(receiver.accepted()) == 2 and len(receiver.unique()) == 2  # two webhooks, once each
    (generic,) = [n["body"] for n in receiver.accepted() if n["path"].startswith("/generic")]
    assert [(generic["rule"], generic["state"])] == expected
    recorded = at if kind == "state" else later  # a history written before the kill is the decision
    assert generic["evaluated_at"] == recorded.isoformat()
    source = DuckDBSource(workdir / "inference.duckdb")
    transitions = source.execute(alerts.alert_transitions(TABLE).sql("duckdb")).to_pandas()
    assert transitions[["rule", "state", "webhooks", "delivered"]].values.tolist() == [
        ["canary-toxicity", "firing", 2, 2]
    ]
    states = source.execute(alerts.alert_states(TABLE).sql("duckdb")).to_pandas().set_index("rule")
    assert states.loc["canary-toxicity", "transition"] == 1
    # The warehouse stores TIMESTAMP as an instant (UTC here): the state entered firing at the recorded clock.
    assert states.loc["canary-toxicity", "since"] == pd.Timestamp(recorded, tz="UTC")


# --- On Spark: the same statements in Spark SQL, and an evaluation after every Spark engine run ----------------


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    pytest.importorskip("pyspark")
    from jobs.spark_session import local_spark

    session = local_spark("local[2]", warehouse_dir=tmp_path_factory.mktemp("monitors-spark"))
    yield session
    session.stop()


def awkward_evaluations(at: datetime) -> list[monitors.Evaluation]:
    """Rules whose names and details need escaping in SQL text: quotes, backslashes, newlines, non-Latin."""
    names = ['it\'s \\ a "rule"', "ツール\nrule", "plain"]
    rules = [mr.parse_rule({"name": n, "metric": "error_rate", "above": 0.1, "window": "1h", "notify": ["slack"]},
                           n, {"slack": mr.Webhook("slack")}) for n in names]  # fmt: skip
    verdicts = [mr.Verdict(mr.FIRING, 0.25, 40, "10 errors in 40 requests; it's \\n"),
                mr.Verdict(mr.INSUFFICIENT, float("nan"), 3, "3 values, fewer than 100. 🙂"),
                mr.Verdict(mr.OK, None, 0, "")]  # fmt: skip
    return [monitors.Evaluation(r, v, at - r.window, at) for r, v in zip(rules, verdicts, strict=True)]


@pytest.mark.spark
def test_the_alert_statements_are_spark_sql(spark: object) -> None:
    """The DDL runs on Spark SQL, the rows' literals round-trip exactly, the page's and the job's queries run on the
    tables, and MERGE and UPDATE parse (local Spark's parquet tables cannot run them: Delta on Databricks does)."""
    from data_access.sources import SparkSource

    source = SparkSource(spark)
    table = TableName("monitors_dialect_requests")
    store = alert_store.WarehouseAlertStore(source, table)
    store.ensure()
    store.ensure()  # idempotent: IF NOT EXISTS
    at = datetime(2026, 4, 16, 12, 30)
    decision = monitors.decide({}, awkward_evaluations(at), at, {"slack": mr.Webhook("slack")}, None)
    parse = spark._jsparkSession.sessionState().sqlParser().parsePlan  # type: ignore[attr-defined]
    for kind, rows, keys, update in (("outbox", decision.outbox, ["idempotency_key"], False),
                                     ("history", decision.history, ["rule", "evaluated_at"], False),
                                     ("state", decision.states, ["rule"], True)):  # fmt: skip
        name, schema = store.names[kind], alert_store.ALERT_SCHEMAS[kind]
        parse(alert_store.merge_statement(name, schema, rows, keys, update))
        spark.sql(f"INSERT INTO {name.table} {alert_store.values_select(schema, rows)}")  # type: ignore[attr-defined]
    parse(f"UPDATE {store.names['outbox'].table} SET `attempts` = CAST(1 AS BIGINT) WHERE `rule` = 'x'")
    states = store.states()
    assert set(states) == {e.rule.name for e in awkward_evaluations(at)}
    for row in decision.states:
        stored = states[row["rule"]]
        assert stored["detail"] == row["detail"] and stored["since"] == at and stored["evaluated_at"] == at
    assert {(n.rule, n.state, n.webhook) for n in store.pending()} == {('it\'s \\ a "rule"', "firing", "slack")}
    (pending,) = store.pending()
    assert pending.body == decision.outbox[0]["body"] and "it's" in json.loads(pending.body)["text"]
    history = run(source, alerts.alert_history(table)).table.to_pylist()
    assert sorted(r["detail"] for r in history) == sorted(r["detail"] for r in decision.history)
    assert math.isnan(next(r for r in history if r["rule"] == "ツール\nrule")["value"] or math.nan)
    (change,) = run(source, alerts.alert_transitions(table)).table.to_pylist()
    assert (change["webhooks"], change["delivered"]) == (1, 0)


@pytest.mark.spark
def test_the_spark_engine_evaluates_the_rules_after_each_run(
    spark: object, tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from data_access.demo import generate_payload
    from jobs import score
    from jobs.spark_tables import write_payload_table

    write_payload_table(spark, TableName("monitors_payload"), generate_payload(300, seed=3))
    (tmp_path / "monitors.toml").write_text(RULES.replace('clock = "wall"', 'clock = "data"'))
    monkeypatch.setenv("INFERENCE_EXPLORER_MONITORS_FILE", str(tmp_path / "monitors.toml"))
    monkeypatch.setenv("INFERENCE_EXPLORER_DATA_DIR", str(tmp_path))
    for name, url in hook_env(receiver).items():
        monkeypatch.setenv(name, url)
    argv = ["--engine", "spark", "--payload-table", "monitors_payload", "--requests-table", "monitors_requests"]
    assert score.main([*argv, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "monitors: evaluated 2 rule(s)" in out, out
    # Parquet tables cannot MERGE: the alert tables are in the embedded file beside the local Spark catalog.
    source = DuckDBSource(tmp_path / "spark" / "alerts.duckdb")
    states = source.execute(alerts.alert_states(TableName("monitors_requests")).sql("duckdb")).to_pandas()
    assert sorted(states["rule"]) == ["canary-toxicity", "toxic-v7"]
    newest = spark.table("monitors_requests").agg({"request_time": "max"}).collect()[0][0]  # type: ignore[attr-defined]
    assert (states["evaluated_at"] == pd.Timestamp(newest).floor("min") + pd.Timedelta(minutes=1)).all()
    assert score.main([*argv, "--quiet", "--no-monitors"]) == 0
    assert "monitors:" not in capsys.readouterr().out
