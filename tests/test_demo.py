"""The demo traffic generator: layout, determinism, realism of the month, and the fast requests path.

Realism checks re-derive every number from the raw payload (json, textstat, profanity-check), not from the
generator's internals.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import textstat
from profanity_check import predict_prob

from data_access import demo
from data_access.demo import traffic
from data_access.payload import parse_payload
from data_access.schema import PAYLOAD_ARROW, REQUESTS_ARROW

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ROWS = 50_000  # the app's default demo size
REQUEST_KEYS = {"messages", "prompt", "dataframe_split", "dataframe_records", "inputs"}


@pytest.fixture(scope="module")
def month() -> pa.Table:
    return demo.generate_payload(DEFAULT_ROWS, seed=7)


@pytest.fixture(scope="module")
def rows(month: pa.Table) -> list[dict[str, Any]]:
    return month.to_pylist()


def _version(row: dict[str, Any]) -> str | None:
    return dict(row["request_metadata"]).get("model_version")


def _json(text: str | None) -> Any:
    try:
        return None if text is None else json.loads(text)
    except ValueError:
        return None


def _chat_answer(row: dict[str, Any]) -> str | None:
    body = _json(row["response"])
    if row["status_code"] != 200 or not isinstance(body, dict) or "choices" not in body:
        return None
    return body["choices"][0].get("message", {}).get("content")


def _last_user_message(row: dict[str, Any]) -> str | None:
    body = _json(row["request"])
    if isinstance(body, dict) and isinstance(body.get("messages"), list) and body["messages"]:
        return body["messages"][-1]["content"]
    if isinstance(body, dict) and isinstance(body.get("prompt"), str):
        return body["prompt"]
    return None


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# --- layout and contract ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 999])
def test_exactly_n_rows_in_the_payload_layout(n: int) -> None:
    table = demo.generate_payload(n, seed=3)
    assert table.schema == PAYLOAD_ARROW
    assert table.num_rows == n


@pytest.mark.parametrize("bad", [-1, 2.5, True, "10", None])
def test_bad_arguments_are_refused_on_the_call(bad: Any) -> None:
    with pytest.raises(ValueError, match="n_requests"):
        demo.generate_payload(bad)
    with pytest.raises(ValueError, match="seed"):
        demo.iter_payload_batches(10, bad)
    with pytest.raises(ValueError, match="batch_rows"):
        demo.iter_payload_batches(10, 3, batch_rows=bad if bad != -1 else 0)


def test_numpy_integers_are_plain_counts() -> None:
    assert demo.generate_payload(np.int64(40), np.int64(3)).equals(demo.generate_payload(40, 3))


def test_batches_concatenate_to_the_whole_table() -> None:
    batches = list(demo.iter_payload_batches(2_500, seed=3, batch_rows=777))
    assert [b.num_rows for b in batches] == [777, 777, 777, 169]
    assert all(b.schema == PAYLOAD_ARROW for b in batches)
    assert pa.concat_tables(batches).equals(demo.generate_payload(2_500, seed=3))


def test_same_seed_same_table_even_in_another_process(tmp_path: Path) -> None:
    table = demo.generate_payload(2_000, seed=5)
    assert table.equals(demo.generate_payload(2_000, seed=5))
    path = tmp_path / "payload.arrow"
    code = (
        "import sys, pyarrow as pa\n"
        "from data_access.demo import generate_payload\n"
        "table = generate_payload(2_000, seed=5)\n"
        "with pa.ipc.new_file(sys.argv[1], table.schema) as writer:\n"
        "    writer.write_table(table)\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, env=env, check=True)
    assert pa.ipc.open_file(path).read_all().equals(table)


def test_another_seed_gives_other_traffic() -> None:
    a, b = demo.generate_payload(2_000, seed=3), demo.generate_payload(2_000, seed=4)
    ids_a, ids_b = (set(t["databricks_request_id"].drop_null().to_pylist()) for t in (a, b))
    assert len(ids_a) > 1_900 and not ids_a & ids_b
    assert pc.sum(pc.not_equal(a["timestamp_ms"], b["timestamp_ms"])).as_py() > 1_900
    same_request = pc.sum(pc.fill_null(pc.equal(a["request"], b["request"]), False)).as_py()
    assert same_request < 200


# --- the month --------------------------------------------------------------------------------------


def test_every_row_is_in_april_2026_with_a_matching_date(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        moment = _utc(row["timestamp_ms"])
        assert (moment.year, moment.month) == (2026, 4)
        assert row["date"] == moment.date()
    assert {dict(r["request_metadata"])["endpoint_name"] for r in rows} == {traffic.ENDPOINT_NAME}
    assert {dict(r["request_metadata"])["model_name"] for r in rows} == {traffic.MODEL_NAME}
    assert {r["sampling_fraction"] for r in rows} == {1.0}


def test_version_timeline_follows_the_canary(rows: list[dict[str, Any]]) -> None:
    (ten, _), (half, _), (full, _) = traffic.ROLLOUT
    assert (_utc(ten).day, _utc(half).day, _utc(full).day) == (12, 17, 21)
    stages: dict[str, list[str]] = {"before": [], "ten": [], "half": [], "full": []}
    for row in rows:
        version, ts = _version(row), row["timestamp_ms"]
        if version is None:
            continue
        stage = "before" if ts < ten else "ten" if ts < half else "half" if ts < full else "full"
        stages[stage].append(version)
    assert set(stages["before"]) == {"6"}
    assert set(stages["full"]) == {"7"}
    assert stages["ten"].count("7") / len(stages["ten"]) == pytest.approx(0.10, abs=0.03)
    assert stages["half"].count("7") / len(stages["half"]) == pytest.approx(0.50, abs=0.05)


def test_daily_and_weekly_load_cycle(rows: list[dict[str, Any]]) -> None:
    moments = [_utc(r["timestamp_ms"]) for r in rows]
    weekday = [m for m in moments if m.weekday() < 5]
    by_hour = Counter(m.hour for m in weekday)
    assert max(by_hour.values()) > 4 * min(by_hour.values())
    assert statistics.mean(by_hour[h] for h in range(10, 17)) > 3 * statistics.mean(by_hour[h] for h in range(0, 5))
    per_day = Counter(m.date() for m in moments)
    weekend_days = [c for d, c in per_day.items() if d.weekday() >= 5]
    holidays = {datetime(2026, 4, 3).date(), datetime(2026, 4, 6).date()}  # Good Friday, Easter Monday
    work_days = [c for d, c in per_day.items() if d.weekday() < 5 and d not in holidays]
    assert len(per_day) == 30
    assert statistics.mean(weekend_days) < 0.6 * statistics.mean(work_days)
    assert max(per_day[d] for d in holidays) < min(work_days)
    # Timestamps spread over the whole month: at the default size nearly every busy minute has data.
    busy = [m for m in weekday if 10 <= m.hour < 16 and m.date() not in holidays]
    busy_minutes = {(m.date(), m.hour, m.minute) for m in busy}
    assert len(busy_minutes) >= 0.995 * len({m.date() for m in busy}) * 6 * 60
    assert len({(m.date(), m.hour, m.minute) for m in moments}) > 0.6 * 30 * 24 * 60


def test_error_shares(rows: list[dict[str, Any]]) -> None:
    status = Counter(r["status_code"] for r in rows)
    server = sum(c for s, c in status.items() if s >= 500) / len(rows)
    client = sum(c for s, c in status.items() if 400 <= s < 500) / len(rows)
    assert 0.01 <= server <= 0.02
    assert 0.006 <= client <= 0.015
    assert {400, 429, 503, 504} <= set(status)
    errors = [r for r in rows if r["status_code"] >= 500]
    assert any(r["response"] is None for r in errors)
    bodies = [_json(r["response"]) for r in errors if r["response"] is not None]
    assert bodies and all(set(b) == {"error_code", "message"} for b in bodies)
    # 504s are timeouts: they take longer than any normal answer's median.
    timeouts = [r["execution_time_ms"] for r in rows if r["status_code"] == 504]
    assert min(timeouts) > 100_000


def _malformed(row: dict[str, Any]) -> bool:
    if row["databricks_request_id"] is None or _version(row) is None or row["request"] is None:
        return True
    body = _json(row["request"])
    if not isinstance(body, dict) or not REQUEST_KEYS & body.keys() or body.get("messages") == []:
        return True
    return row["response"] is not None and _json(row["response"]) is None


def test_malformed_rows_are_rare_but_present(rows: list[dict[str, Any]]) -> None:
    malformed = [r for r in rows if _malformed(r)]
    assert 0.0015 <= len(malformed) / len(rows) <= 0.005
    assert any(r["request"] is None for r in malformed)
    assert any(r["request"] is not None and _json(r["request"]) is None for r in malformed)  # truncated/non-JSON
    assert any(r["response"] is not None and _json(r["response"]) is None for r in malformed)
    assert any(r["databricks_request_id"] is None for r in malformed)
    assert any(_version(r) is None for r in malformed)


def test_retries_logged_twice_and_client_ids(rows: list[dict[str, Any]]) -> None:
    ids = Counter(r["databricks_request_id"] for r in rows if r["databricks_request_id"] is not None)
    twice = {i for i, c in ids.items() if c > 1}
    assert 1 <= len(twice) <= 0.002 * len(rows)
    assert max(ids.values()) == 2
    for request_id in twice:
        first, second = (r for r in rows if r["databricks_request_id"] == request_id)
        assert (first["request"], first["response"]) == (second["request"], second["response"])
        assert second["timestamp_ms"] >= first["timestamp_ms"]
    client_share = sum(r["client_request_id"] is not None for r in rows) / len(rows)
    assert 0 < client_share < 0.05


def test_request_and_response_shapes(rows: list[dict[str, Any]]) -> None:
    requests = [_json(r["request"]) for r in rows if r["status_code"] == 200]
    responses = [_json(r["response"]) for r in rows if r["status_code"] == 200]
    kinds = Counter(next(iter(REQUEST_KEYS & b.keys()), "other") for b in requests if isinstance(b, dict))
    assert kinds["messages"] / len(requests) > 0.75
    assert all(kinds[k] > 0 for k in REQUEST_KEYS)
    chat = [b for b in responses if isinstance(b, dict) and "choices" in b and "message" in b["choices"][0]]
    completions = [b for b in responses if isinstance(b, dict) and "choices" in b and "text" in b["choices"][0]]
    assert chat and completions and all("usage" in b for b in chat + completions)
    assert any(isinstance(b, dict) and set(b) == {"predictions"} for b in responses)
    bare = [b for b in responses if isinstance(b, list)]
    assert bare and all({"result", "sources"} <= set(b[0]) for b in bare)
    multi_turn = [b for b in requests if isinstance(b, dict) and len(b.get("messages", [])) >= 3]
    assert multi_turn and all(b["messages"][1]["role"] == "assistant" for b in multi_turn)


def test_prompt_variety(rows: list[dict[str, Any]]) -> None:
    prompts = [p for p in (_last_user_message(r) for r in rows) if p is not None]
    assert len(set(prompts)) > 2_000
    assert any(len(p) > 15_000 and "\tat " in p for p in prompts)  # pasted stack traces
    assert any(not p.strip() for p in prompts)
    assert any("ignore previous instructions" in p.lower() for p in prompts)
    assert any("Comment " in p for p in prompts) and any(p.startswith("Wie ") for p in prompts)
    assert any(p.startswith("¿") for p in prompts)
    assert any(any("\u3040" <= ch <= "\u309f" for ch in p) for p in prompts)  # Japanese kana
    assert any(p.startswith(("如何", "为什么")) for p in prompts)
    topics = (
        "delta",
        "unity catalog",
        "mlflow",
        "serving",
        "dlt",
        "spark",
        "warehouse",
        "dbu",
        "cluster",
        "notebook",
        "job",
    )
    assert all(any(t in p.lower() for p in prompts) for t in topics)
    short = [p for p in prompts if len(p) < 2_000]
    offensive = predict_prob(short) > 0.8
    assert 0.01 < offensive.mean() < 0.1


def test_token_counts_follow_text_length(rows: list[dict[str, Any]]) -> None:
    pairs = []
    for row in rows:
        answer = _chat_answer(row)
        if answer and answer.isascii():
            pairs.append((len(answer), _json(row["response"])["usage"]["completion_tokens"]))
    chars, tokens = np.array(pairs, dtype=float).T
    assert np.corrcoef(chars, tokens)[0, 1] > 0.95
    assert 3.0 < np.median(chars / tokens) < 5.0


def test_v7_answers_are_shorter_plainer_faster_and_politer(rows: list[dict[str, Any]]) -> None:
    answers: dict[str, list[str]] = {"6": [], "7": []}
    latency: dict[str, list[int]] = {"6": [], "7": []}
    for row in rows:
        answer, version = _chat_answer(row), _version(row)
        if answer and version in answers and len(row["request"] or "") < 2_000:
            answers[version].append(answer)
            latency[version].append(row["execution_time_ms"])
    v6, v7 = answers["6"], answers["7"]
    assert statistics.mean(map(len, v7)) < 0.7 * statistics.mean(map(len, v6))
    grade6 = statistics.mean(textstat.flesch_kincaid_grade(t) for t in v6[:400])
    grade7 = statistics.mean(textstat.flesch_kincaid_grade(t) for t in v7[:400])
    assert 13 <= grade6 <= 16.5
    assert 6.5 <= grade7 <= 10
    assert statistics.median(latency["7"]) < 0.6 * statistics.median(latency["6"])
    assert np.percentile(latency["6"], 99) > 2.5 * statistics.median(latency["6"])  # heavy tail
    rude6, rude7 = (float((predict_prob(a) > 0.8).mean()) for a in (v6, v7))
    assert rude6 > 0.01
    assert rude7 < rude6 / 3


# --- the fast requests path -------------------------------------------------------------------------

SCORED_AT = datetime(2026, 5, 1, 6, 0)


def _tiny_score(payload: pa.Table) -> pa.Table:
    """Parse with the real parser, then deterministic stand-in metrics derived from the texts."""
    parsed = parse_payload(payload)
    rows = parsed.num_rows
    prompt_len = pc.cast(pc.utf8_length(parsed["prompt_text"]), pa.float64())
    response_len = pc.cast(pc.utf8_length(parsed["response_text"]), pa.float64())
    metrics = {
        "prompt_toxicity": pc.divide(prompt_len, 1_000.0),
        "response_toxicity": pa.nulls(rows, pa.float64()),
        "toxicity_scorer": pa.array(["tiny-length"] * rows, pa.string()),
        "response_fk_grade": response_len,
        "readability_scorer": pa.array(["tiny-length"] * rows, pa.string()),
        "response_perplexity": pa.nulls(rows, pa.float64()),
        "perplexity_scorer": pa.array(["tiny-null"] * rows, pa.string()),
        "score_error": pc.if_else(pc.is_null(parsed["response_text"]), "no response", pa.scalar(None, pa.string())),
        "scored_at": pa.array([SCORED_AT] * rows, pa.timestamp("us")),
    }
    for name, values in metrics.items():
        parsed = parsed.append_column(REQUESTS_ARROW.field(name), values)
    for field in REQUESTS_ARROW:  # the scores this stand-in does not model stay empty
        if field.name not in parsed.column_names:
            parsed = parsed.append_column(field, pa.nulls(rows, field.type))
    return parsed.select(REQUESTS_ARROW.names)


def _without_scored_at(table: pa.Table) -> pa.Table:
    return table.drop_columns(["scored_at"])


def test_fast_requests_equal_parsing_every_row() -> None:
    payload = demo.generate_payload(3_000, seed=9)
    ids = payload["databricks_request_id"]
    # The sample holds every per-request oddity the fast path must get right.
    assert pc.sum(pc.and_(pc.is_null(ids), pc.is_null(payload["client_request_id"]))).as_py() >= 1  # sha1 id
    assert pc.sum(pc.and_(pc.is_null(ids), pc.is_valid(payload["client_request_id"]))).as_py() >= 1
    versions = pc.map_lookup(payload["request_metadata"], pa.scalar("model_version"), "first")
    assert pc.sum(pc.is_null(versions)).as_py() >= 1
    assert len(pc.unique(ids.drop_null())) < len(ids.drop_null())  # a retry logged twice
    assert pc.sum(pc.not_equal(payload["status_code"], 200)).as_py() > 0

    expected = _tiny_score(payload)
    fast = demo.generate_requests(3_000, 9, _tiny_score)
    assert fast.schema == REQUESTS_ARROW
    assert _without_scored_at(fast).equals(_without_scored_at(expected))
    assert fast["request_id"].null_count == 0
    assert any(i.startswith("sha1:") for i in fast["request_id"].to_pylist())


def test_fast_requests_with_the_light_scoring_job() -> None:
    from jobs.scoring import parse_and_score
    from metrics.profiles import build_profile

    profile = build_profile("light")

    def score(payload: pa.Table) -> pa.Table:
        return parse_and_score(payload, profile, scored_at=SCORED_AT)

    expected = score(demo.generate_payload(1_500, seed=4))
    fast = demo.generate_requests(1_500, 4, score)
    order = [("request_id", "ascending"), ("request_time", "ascending")]
    assert _without_scored_at(fast).sort_by(order).equals(_without_scored_at(expected).sort_by(order))
    assert fast["response_fk_grade"].drop_null().length() > 1_000


def test_fast_requests_parse_each_pool_entry_once() -> None:
    calls: list[int] = []

    def counting(payload: pa.Table) -> pa.Table:
        calls.append(payload.num_rows)
        return _tiny_score(payload)

    table = demo.generate_requests(30_000, 7, counting)
    assert table.num_rows == 30_000
    assert len(calls) == 1
    assert calls[0] < 15_000  # one row per distinct (request, response), not one per request
    assert len(pc.unique(table["response_text"])) < calls[0]


def test_fast_requests_contract() -> None:
    assert demo.generate_requests(0, 7, _tiny_score).num_rows == 0
    assert demo.generate_requests(5, 7, _tiny_score).num_rows == 5
    with pytest.raises(ValueError, match="n_requests"):
        demo.generate_requests(-5, 7, _tiny_score)
    with pytest.raises(ValueError, match="returned 1 rows"):
        demo.generate_requests(50, 7, lambda payload: _tiny_score(payload.slice(0, 1)))
