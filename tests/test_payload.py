"""The payload parser: every request/response shape, tokens, bad rows and property tests over junk input."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_access.payload import estimate_tokens, parse_payload, parse_row
from data_access.schema import PARSED_ARROW, PARSED_COLUMNS, PAYLOAD_ARROW

TS_MS = 1_717_243_200_123  # 2024-06-01 12:00:00.123 UTC
METADATA = {"endpoint_name": "chatbot", "model_name": "main.rag.bot", "model_version": "7"}
USAGE = {"prompt_tokens": 31, "completion_tokens": 9, "total_tokens": 40}


def payload_row(**overrides: Any) -> dict[str, Any]:
    """A clean 200 chat row; tests override the fields they are about."""
    row: dict[str, Any] = {
        "client_request_id": "client-1",
        "databricks_request_id": "dbx-1",
        "date": dt.date(2024, 6, 1),
        "timestamp_ms": TS_MS,
        "status_code": 200,
        "execution_time_ms": 850,
        "request": json.dumps({"messages": [{"role": "user", "content": "What is MLflow?"}]}),
        "response": json.dumps({"choices": [{"message": {"role": "assistant", "content": "A tool."}}]}),
        "sampling_fraction": 1.0,
        "request_metadata": list(METADATA.items()),
    }
    row.update(overrides)
    return row


def ceil_quarter_bytes(text: str) -> int:
    """Independent token estimate: ceil(UTF-8 bytes / 4)."""
    return math.ceil(len(text.encode("utf-8")) / 4)


def texts(request: Any, response: Any, status_code: int = 200) -> tuple[str, str | None, str | None, str | None]:
    """(request_format, prompt_text, response_text, parse_error) of a row with these bodies."""
    parsed = parse_row(
        payload_row(
            request=request if isinstance(request, str) else json.dumps(request),
            response=response if response is None or isinstance(response, str) else json.dumps(response),
            status_code=status_code,
        )
    )
    return parsed["request_format"], parsed["prompt_text"], parsed["response_text"], parsed["parse_error"]


def as_arrow(parsed: dict[str, Any]) -> pa.Table:
    return pa.Table.from_pylist([parsed], schema=PARSED_ARROW)


# ---------------------------------------------------------------------------------------------------------
# A full row, exactly
# ---------------------------------------------------------------------------------------------------------


def test_chat_row_parses_to_exact_output() -> None:
    request = json.dumps(
        {
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "What is Unity Catalog?"},
            ],
            "max_tokens": 200,
        }
    )
    response = json.dumps(
        {
            "id": "chatcmpl-1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "A governance layer."}}],
            "usage": USAGE,
        }
    )
    parsed = parse_row(payload_row(request=request, response=response))
    assert parsed == {
        "request_id": "dbx-1",
        "client_request_id": "client-1",
        "request_time": dt.datetime(2024, 6, 1, 12, 0, 0, 123_000),
        "date": dt.date(2024, 6, 1),
        "endpoint_name": "chatbot",
        "model_name": "main.rag.bot",
        "model_version": "7",
        "status_code": 200,
        "latency_ms": 850,
        "sampling_fraction": 1.0,
        "request_format": "chat",
        "prompt_text": "What is Unity Catalog?",
        "response_text": "A governance layer.",
        "request_bytes": len(request),
        "response_bytes": len(response),
        "prompt_tokens": 31,
        "completion_tokens": 9,
        "total_tokens": 40,
        "tokens_estimated": False,
        "parse_error": None,
        "requester": None,
        "logging_error_codes": None,
        "served_entity_id": None,
        "served_entity_name": None,
        "retrieved_context": None,
        "retrieved_documents": None,
    }
    assert tuple(parsed) == PARSED_COLUMNS


# ---------------------------------------------------------------------------------------------------------
# Request shapes
# ---------------------------------------------------------------------------------------------------------

HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("request_body", "expected_format", "expected_prompt"),
    [
        ({"messages": HI}, "chat", "hi"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]},
            "chat",
            "a\nb",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}, "see"]},
                ]
            },
            "chat",
            "see",
        ),
        ({"prompt": "Once upon a time"}, "completions", "Once upon a time"),
        ({"prompt": ["first", "second"]}, "completions", "second"),
        ({"dataframe_split": {"columns": ["messages"], "data": [[HI]]}}, "dataframe_split", "hi"),
        (
            {"dataframe_split": {"columns": ["id", "query"], "data": [[1, "q1"], [2, "q2"]]}},
            "dataframe_split",
            "q2",
        ),
        ({"dataframe_split": {"columns": ["x"], "data": [[{"messages": HI}]]}}, "dataframe_split", "hi"),
        ({"dataframe_split": {"data": [["only column"]]}}, "dataframe_split", "only column"),
        ({"dataframe_records": [{"messages": HI}]}, "dataframe_records", "hi"),
        ({"dataframe_records": [{"question": "first?"}, {"question": "last?"}]}, "dataframe_records", "last?"),
        ({"inputs": {"messages": HI}}, "inputs", "hi"),
        ({"inputs": {"query": ["a", "b"]}}, "inputs", "b"),
        ({"inputs": ["plain", "strings"]}, "inputs", "strings"),
        ({"inputs": {"prompt": "p"}}, "inputs", "p"),
        ({"instances": [{"text": "t1"}, {"text": "t2"}]}, "instances", "t2"),
        ({"instances": [{"input": {"messages": HI}}]}, "instances", "hi"),
        ({"input": [{"role": "user", "content": [{"type": "input_text", "text": "agent"}]}]}, "responses", "agent"),
        ({"query": "bare key"}, "unknown", "bare key"),
        ("just a string", "unknown", "just a string"),
    ],
)
def test_request_shapes(request_body: Any, expected_format: str, expected_prompt: str) -> None:
    request_format, prompt, response, error = texts(json.dumps(request_body), {"predictions": "ok"})
    assert (request_format, prompt, response, error) == (expected_format, expected_prompt, "ok", None)


def test_chat_takes_last_user_message_not_last_message() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "user", "content": "second"},
            {"role": "assistant", "content": "reply"},
            {"role": "tool", "content": "tool output"},
        ]
    }
    assert texts(body, {"predictions": "ok"})[1] == "second"


@pytest.mark.parametrize(
    ("request_body", "expected_format", "expected_error"),
    [
        ({"messages": [{"role": "system", "content": "s"}]}, "chat", "request: no user message"),
        ({"messages": []}, "chat", "request: no user message"),
        ({"messages": "hi"}, "chat", "request: no user message"),
        ({"messages": [{"role": "user", "content": None}]}, "chat", "request: user message has no text"),
        (
            {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}},
            "dataframe_split",
            "request: unrecognised shape",
        ),
        ({"dataframe_records": []}, "dataframe_records", "request: unrecognised shape"),
        ({"instances": [1, 2]}, "instances", "request: unrecognised shape"),
        ({"temperature": 0.5}, "unknown", "request: unrecognised shape"),
        (42, "unknown", "request: unrecognised shape"),
        (None, "unknown", "request: unrecognised shape"),
    ],
)
def test_request_without_prompt(request_body: Any, expected_format: str, expected_error: str) -> None:
    assert texts(json.dumps(request_body), {"predictions": "ok"}) == (expected_format, None, "ok", expected_error)


def test_depth_bound_stops_recursion_without_error() -> None:
    nested: Any = "deep"
    for _ in range(200):
        nested = {"inputs": nested}
    request_format, prompt, _, error = texts({"inputs": nested}, {"predictions": "ok"})
    assert (request_format, prompt, error) == ("inputs", None, "request: unrecognised shape")


# ---------------------------------------------------------------------------------------------------------
# Response shapes
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response_body", "expected_text"),
    [
        ({"choices": [{"message": {"role": "assistant", "content": "chat"}}]}, "chat"),
        (
            {"choices": [{"message": {"content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]}}]},
            "x\ny",
        ),
        ({"choices": [{"message": {"content": "first"}}, {"message": {"content": "second"}}]}, "first"),
        ({"choices": [{"text": "completion"}]}, "completion"),
        ({"choices": [{"message": {"content": ""}}]}, ""),
        ({"predictions": "s"}, "s"),
        ({"predictions": ["a", "b"]}, "b"),
        ({"predictions": [{"result": "r"}]}, "r"),
        ({"predictions": [{"content": "c"}]}, "c"),
        ({"predictions": [{"answer": "a"}]}, "a"),
        ({"predictions": [{"output": "o"}]}, "o"),
        ({"predictions": [{"text": "t"}]}, "t"),
        ({"predictions": {"result": "dict"}}, "dict"),
        ({"predictions": [{"choices": [{"message": {"content": "nested chat"}}]}]}, "nested chat"),
        ([{"result": "rag answer", "sources": ["doc1", "doc2"]}], "rag answer"),
        ("bare string", "bare string"),
        (
            {"output": [{"type": "message", "content": [{"type": "output_text", "text": "responses api"}]}]},
            "responses api",
        ),
    ],
)
def test_response_shapes(response_body: Any, expected_text: str) -> None:
    assert texts({"messages": HI}, json.dumps(response_body)) == ("chat", "hi", expected_text, None)


@pytest.mark.parametrize(
    "response",
    [
        json.dumps({"choices": []}),
        json.dumps({"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": []}}]}),
        json.dumps({"predictions": [1, 2]}),
        json.dumps({"error_code": "BAD_REQUEST", "message": "oops"}),
        json.dumps(3.5),
        json.dumps(None),
    ],
)
def test_200_response_without_text_is_a_parse_error(response: str) -> None:
    assert texts({"messages": HI}, response) == ("chat", "hi", None, "response: unrecognised shape")


def test_200_response_missing_or_invalid_is_a_parse_error() -> None:
    assert texts({"messages": HI}, None)[3] == "response: missing"
    assert texts({"messages": HI}, "{oops")[3] == (
        "response: invalid JSON (Expecting property name enclosed in double quotes at char 1)"
    )


@pytest.mark.parametrize(
    "response",
    [None, json.dumps({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "rate limit"}), "upstream timeout", "{"],
)
@pytest.mark.parametrize("status_code", [400, 429, 500, 503])
def test_non_200_error_response_is_not_a_parse_error(response: str | None, status_code: int) -> None:
    parsed = parse_row(payload_row(response=response, status_code=status_code))
    assert parsed["status_code"] == status_code
    assert (parsed["prompt_text"], parsed["response_text"], parsed["parse_error"]) == ("What is MLflow?", None, None)
    assert parsed["response_bytes"] == (len(response) if response else 0)
    assert (parsed["completion_tokens"], parsed["tokens_estimated"]) == (0, True)


# ---------------------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, 0), ("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("é", 1), ("日本語", 3), ("🙂🙂", 2), ("\ud800", 1)],
)
def test_estimate_tokens(text: str | None, expected: int) -> None:
    assert estimate_tokens(text) == expected


def test_estimate_tokens_matches_independent_rule() -> None:
    for text in ["The quick brown fox jumps over the lazy dog.", "Grüße aus München " * 13, "x" * 4001]:
        assert estimate_tokens(text) == ceil_quarter_bytes(text)


def test_usage_is_taken_when_present() -> None:
    response = {"choices": [{"message": {"content": "A tool."}}], "usage": USAGE}
    parsed = parse_row(payload_row(response=json.dumps(response)))
    assert (parsed["prompt_tokens"], parsed["completion_tokens"], parsed["total_tokens"]) == (31, 9, 40)
    assert parsed["tokens_estimated"] is False


def test_tokens_are_estimated_from_all_messages_and_the_answer_without_usage() -> None:
    messages = [
        {"role": "system", "content": "You answer questions about Databricks."},
        {"role": "user", "content": "Was ist ein Katalog?"},
        {"role": "assistant", "content": "Ein Namensraum für Schemas."},
        {"role": "user", "content": "Und ein Schema? Bitte kurz und präzise."},
    ]
    answer = "Ein Namensraum für Tabellen, Sichten und Funktionen."
    parsed = parse_row(
        payload_row(
            request=json.dumps({"messages": messages}),
            response=json.dumps({"choices": [{"message": {"content": answer}}]}),
        )
    )
    conversation = "\n".join(message["content"] for message in messages)
    assert parsed["prompt_tokens"] == ceil_quarter_bytes(conversation)
    assert parsed["completion_tokens"] == ceil_quarter_bytes(answer)
    assert parsed["total_tokens"] == ceil_quarter_bytes(conversation) + ceil_quarter_bytes(answer)
    assert parsed["tokens_estimated"] is True


def test_partial_usage_fills_the_rest() -> None:
    answer = "twelve bytes"
    without_total = {"choices": [{"text": answer}], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}
    parsed = parse_row(payload_row(response=json.dumps(without_total)))
    assert (parsed["prompt_tokens"], parsed["completion_tokens"], parsed["total_tokens"]) == (5, 7, 12)
    assert (parsed["tokens_estimated"], parsed["parse_error"]) == (False, None)

    only_prompt = {"choices": [{"text": answer}], "usage": {"prompt_tokens": 5.0}}
    parsed = parse_row(payload_row(response=json.dumps(only_prompt)))
    assert (parsed["prompt_tokens"], parsed["completion_tokens"], parsed["total_tokens"]) == (5, 3, 8)
    assert (parsed["tokens_estimated"], parsed["parse_error"]) == (True, None)


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "many", "completion_tokens": 2},
        {"prompt_tokens": -1, "completion_tokens": 2},
        "lots",
        {"prompt_tokens": 1.5, "completion_tokens": 2},
        {"prompt_tokens": 10**30, "completion_tokens": 2},
        {"prompt_tokens": True, "completion_tokens": 2},
    ],
)
def test_invalid_usage_is_estimated_and_reported(usage: Any) -> None:
    response = json.dumps({"choices": [{"message": {"content": "A tool."}}], "usage": usage})
    parsed = parse_row(payload_row(response=response))
    assert parsed["prompt_tokens"] == ceil_quarter_bytes("What is MLflow?")
    assert parsed["tokens_estimated"] is True
    assert parsed["parse_error"] == "response: invalid usage"


def test_usage_with_infinity_and_nan_is_estimated() -> None:
    response = '{"choices": [{"text": "abc"}], "usage": {"prompt_tokens": NaN, "completion_tokens": Infinity}}'
    parsed = parse_row(payload_row(response=response))
    assert (parsed["prompt_tokens"], parsed["completion_tokens"], parsed["total_tokens"]) == (4, 1, 5)
    assert parsed["parse_error"] == "response: invalid usage"


# ---------------------------------------------------------------------------------------------------------
# Ids, time, metadata, scalars
# ---------------------------------------------------------------------------------------------------------


def test_request_id_falls_back_to_client_id_then_a_stable_hash() -> None:
    assert parse_row(payload_row(databricks_request_id=None))["request_id"] == "client-1"
    assert parse_row(payload_row(databricks_request_id=""))["request_id"] == "client-1"
    hashed = parse_row(payload_row(databricks_request_id=None, client_request_id=None))["request_id"]
    assert hashed.startswith("sha1:") and len(hashed) == 45 and int(hashed[5:], 16) >= 0
    again = parse_row(payload_row(databricks_request_id=None, client_request_id=None))["request_id"]
    as_dict = parse_row(
        payload_row(databricks_request_id=None, client_request_id=None, request_metadata=dict(METADATA))
    )["request_id"]
    other = parse_row(payload_row(databricks_request_id=None, client_request_id=None, timestamp_ms=TS_MS + 1))
    assert hashed == again == as_dict
    assert other["request_id"] != hashed


def test_hash_is_sha1_of_the_raw_fields() -> None:
    row = payload_row(databricks_request_id=None, client_request_id=None, request_metadata=None)
    canonical = json.dumps(
        [None, None, "2024-06-01", TS_MS, 200, 850, row["request"], row["response"], 1.0, None], ensure_ascii=True
    )
    assert parse_row(row)["request_id"] == "sha1:" + hashlib.sha1(canonical.encode()).hexdigest()


def test_time_and_date() -> None:
    parsed = parse_row(payload_row(date=None, timestamp_ms=0))
    assert (parsed["request_time"], parsed["date"], parsed["parse_error"]) == (
        dt.datetime(1970, 1, 1),
        dt.date(1970, 1, 1),
        None,
    )
    # The date column wins over the timestamp's day (it is the table's partition column).
    parsed = parse_row(payload_row(date=dt.date(2024, 5, 31)))
    assert (parsed["request_time"].date(), parsed["date"]) == (dt.date(2024, 6, 1), dt.date(2024, 5, 31))


@pytest.mark.parametrize(
    ("timestamp_ms", "expected_error"),
    [
        (None, "timestamp: missing"),
        (2**62, "timestamp: out of range"),
        (-(2**62), "timestamp: out of range"),
        (10**40, "timestamp: out of range"),
        (float("nan"), "timestamp: invalid value"),
        ("yesterday", "timestamp: invalid value"),
        (True, "timestamp: invalid value"),
    ],
)
def test_bad_timestamp_gives_null_time_and_a_reason(timestamp_ms: Any, expected_error: str) -> None:
    parsed = parse_row(payload_row(timestamp_ms=timestamp_ms, date=None))
    assert (parsed["request_time"], parsed["date"], parsed["parse_error"]) == (None, None, expected_error)
    as_arrow(parsed)


def test_metadata_forms() -> None:
    as_ints = parse_row(payload_row(request_metadata={"endpoint_name": "ep", "model_name": "m", "model_version": 3}))
    assert (as_ints["endpoint_name"], as_ints["model_name"], as_ints["model_version"]) == ("ep", "m", "3")
    assert as_ints["parse_error"] is None
    missing = parse_row(payload_row(request_metadata=[("endpoint_name", "ep"), ("model_name", "m")]))
    assert (missing["endpoint_name"], missing["model_version"]) == ("ep", None)
    assert missing["parse_error"] == "metadata: missing model_version"
    assert parse_row(payload_row(request_metadata=None))["parse_error"] == "metadata: missing"
    assert parse_row(payload_row(request_metadata="v=7"))["parse_error"] == "metadata: not a map"
    assert parse_row(payload_row(request_metadata=[1, 2, 3]))["parse_error"] == "metadata: not a map"


def test_scalars_are_coerced_safely() -> None:
    parsed = parse_row(payload_row(status_code="200", execution_time_ms=12.0, sampling_fraction=1))
    assert (parsed["status_code"], parsed["latency_ms"], parsed["sampling_fraction"]) == (200, 12, 1.0)
    assert parsed["parse_error"] is None
    bad = parse_row(payload_row(status_code=2**40, execution_time_ms=10**30, sampling_fraction=float("inf")))
    assert (bad["status_code"], bad["latency_ms"], bad["sampling_fraction"]) == (None, None, None)
    assert bad["parse_error"] == (
        "status_code: invalid value; execution_time_ms: invalid value; sampling_fraction: invalid value"
    )
    as_arrow(bad)


# ---------------------------------------------------------------------------------------------------------
# Malformed and hostile rows
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_request", "expected_error"),
    [
        ("", "request: invalid JSON (Expecting value at char 0)"),
        ("{not json", "request: invalid JSON (Expecting property name enclosed in double quotes at char 1)"),
        ('{"messages": []} trailing', "request: invalid JSON (Extra data at char 17)"),
        ("[" * 100_000, "request: invalid JSON (nested too deeply)"),
        ("1" * 5000, "request: invalid JSON (number too long)"),
        (None, "request: missing"),
        (12345, "request: not a string"),
        ({"messages": HI}, "request: not a string"),
    ],
)
def test_malformed_request(raw_request: Any, expected_error: str) -> None:
    parsed = parse_row(payload_row(request=raw_request))
    assert (parsed["request_format"], parsed["prompt_text"], parsed["parse_error"]) == ("unknown", None, expected_error)
    assert parsed["response_text"] == "A tool."  # the rest of the row is kept
    as_arrow(parsed)


def test_lone_surrogates_become_replacement_characters() -> None:
    request = '{"messages": [{"role": "user", "content": "bad \\ud800 pair \\ud83d\\ude00"}]}'
    response = '"answer \\udfff"'
    parsed = parse_row(payload_row(request=request, response=response))
    assert parsed["prompt_text"] == "bad \ufffd pair \U0001f600"
    assert parsed["response_text"] == "answer \ufffd"
    raw_surrogate = parse_row(payload_row(request='"x\udc80"', databricks_request_id="id\ud800"))
    assert (raw_surrogate["prompt_text"], raw_surrogate["request_id"]) == ("x\ufffd", "id\ufffd")
    assert raw_surrogate["request_bytes"] == len('"x\ufffd"'.encode())
    as_arrow(parsed)
    as_arrow(raw_surrogate)


def test_nul_bytes_nan_and_infinity_survive() -> None:
    request = '{"messages": [{"role": "user", "content": "a\\u0000b\x00c"}], "temperature": NaN, "top_p": -Infinity}'
    parsed = parse_row(payload_row(request=request))
    assert (parsed["prompt_text"], parsed["parse_error"]) == ("a\x00b\x00c", None)
    assert as_arrow(parsed).column("prompt_text")[0].as_py() == "a\x00b\x00c"


def test_huge_text_is_kept_and_counted() -> None:
    big = "é" * 5_000_000  # 10 MB of UTF-8
    request = json.dumps({"messages": [{"role": "user", "content": big}]}, ensure_ascii=False)
    parsed = parse_row(payload_row(request=request))
    assert parsed["prompt_text"] == big
    assert parsed["request_bytes"] == len(request.encode("utf-8"))
    assert parsed["prompt_tokens"] == 2_500_000
    as_arrow(parsed)


def test_bytes_request_is_decoded() -> None:
    raw = json.dumps({"prompt": "héllo"}, ensure_ascii=False).encode()
    parsed = parse_row(payload_row(request=raw))
    assert (parsed["prompt_text"], parsed["request_bytes"], parsed["parse_error"]) == ("héllo", len(raw), None)


@pytest.mark.parametrize("row", [{}, None, "not a row", {"request": object(), "request_metadata": object()}])
def test_garbage_rows_still_give_a_row(row: Any) -> None:
    parsed = parse_row(row)
    assert tuple(parsed) == PARSED_COLUMNS
    assert parsed["request_id"].startswith("sha1:")
    assert "parser:" not in parsed["parse_error"]
    as_arrow(parsed)


# ---------------------------------------------------------------------------------------------------------
# parse_payload
# ---------------------------------------------------------------------------------------------------------


def payload_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=PAYLOAD_ARROW)


def test_parse_payload_keeps_order_count_and_schema() -> None:
    rows = [
        payload_row(databricks_request_id=f"r{index}", request=json.dumps({"prompt": f"p{index}"}))
        for index in range(50)
    ]
    rows[7] = payload_row(databricks_request_id="r7", request="{broken")
    rows[8] = payload_row(databricks_request_id="r0")  # duplicate id: kept, the job de-duplicates
    rows[9] = payload_row(databricks_request_id=None, client_request_id=None, request_metadata=None, date=None)
    table = payload_table(rows[::-1])
    parsed = parse_payload(table)
    assert parsed.schema == PARSED_ARROW
    assert parsed.num_rows == 50
    expected = [parse_row(row) for row in table.to_pylist()]
    assert parsed.to_pylist() == expected
    assert parsed.column("request_id").to_pylist()[-1] == "r0"
    assert parsed.column("prompt_text").to_pylist()[0] == "p49"
    assert parsed.column("parse_error").to_pylist()[50 - 1 - 7].startswith("request: invalid JSON")


def test_parse_payload_empty_and_missing_columns() -> None:
    empty = parse_payload(PAYLOAD_ARROW.empty_table())
    assert (empty.schema, empty.num_rows) == (PARSED_ARROW, 0)
    partial = pa.table({"databricks_request_id": ["a", None], "request": [json.dumps({"messages": HI}), None]})
    parsed = parse_payload(partial)
    assert parsed.schema == PARSED_ARROW
    assert parsed.column("request_id").to_pylist()[0] == "a"
    assert parsed.column("request_id")[1].as_py().startswith("sha1:")
    assert parsed.column("prompt_text").to_pylist() == ["hi", None]


def test_map_column_round_trip_matches_dict_metadata() -> None:
    table = payload_table([payload_row(request_metadata=METADATA)])
    parsed = parse_payload(table).to_pylist()[0]
    assert (parsed["endpoint_name"], parsed["model_name"], parsed["model_version"]) == ("chatbot", "main.rag.bot", "7")


# ---------------------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

any_char = st.one_of(
    st.characters(),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),  # lone surrogates
    st.sampled_from(["\x00", "\\", '"', "\ufffd", "\U0001f600"]),
)
any_text = st.one_of(st.text(any_char, max_size=40), st.builds(lambda n: "ab\ud800" * n, st.integers(0, 40_000)))
shape_keys = st.sampled_from(
    [
        "messages",
        "role",
        "content",
        "user",
        "prompt",
        "dataframe_split",
        "dataframe_records",
        "columns",
        "data",
        "inputs",
        "instances",
        "query",
        "text",
        "type",
        "choices",
        "message",
        "predictions",
        "result",
        "usage",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "error_code",
    ]
)
odd_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
json_values = st.recursive(
    st.one_of(st.none(), odd_numbers, any_text, shape_keys),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.one_of(shape_keys, any_text), children, max_size=4)
    ),
    max_leaves=25,
)
json_text = json_values.map(lambda value: json.dumps(value, allow_nan=True))
raw_field = st.one_of(json_text, any_text, st.none(), odd_numbers, json_values)
metadata = st.one_of(
    st.none(),
    st.dictionaries(st.one_of(st.sampled_from(list(METADATA)), any_text), st.one_of(any_text, odd_numbers, st.none())),
    st.lists(st.tuples(st.one_of(st.sampled_from(list(METADATA)), any_text), st.one_of(any_text, st.none()))),
    json_values,
)
payload_rows = st.fixed_dictionaries(
    {
        "client_request_id": st.one_of(st.none(), any_text, odd_numbers),
        "databricks_request_id": st.one_of(st.none(), any_text, odd_numbers),
        "date": st.one_of(st.none(), st.dates(), any_text, odd_numbers),
        "timestamp_ms": st.one_of(st.none(), odd_numbers, any_text),
        "status_code": st.one_of(st.none(), st.sampled_from([200, 400, 429, 500]), odd_numbers, any_text),
        "execution_time_ms": st.one_of(st.none(), odd_numbers),
        "request": raw_field,
        "response": raw_field,
        "sampling_fraction": st.one_of(st.none(), odd_numbers, any_text),
        "request_metadata": metadata,
    }
)


@PROPERTY_SETTINGS
@given(payload_rows)
def test_any_row_parses_to_a_valid_arrow_row(row: dict[str, Any]) -> None:
    parsed = parse_row(row)
    assert tuple(parsed) == PARSED_COLUMNS
    assert isinstance(parsed["request_id"], str) and parsed["request_id"]
    assert parsed["parse_error"] is None or "parser:" not in parsed["parse_error"]
    assert parsed["total_tokens"] >= 0
    table = as_arrow(parsed)
    assert table.schema == PARSED_ARROW


arrow_text = st.text(st.characters(codec="utf-8"), max_size=60)  # Arrow strings cannot hold lone surrogates
arrow_json = json_values.map(lambda value: json.dumps(value, allow_nan=True))
arrow_rows = st.fixed_dictionaries(
    {
        "client_request_id": st.one_of(st.none(), arrow_text),
        "databricks_request_id": st.one_of(st.none(), arrow_text),
        "date": st.one_of(st.none(), st.dates()),
        "timestamp_ms": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        "status_code": st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
        "execution_time_ms": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        "request": st.one_of(st.none(), arrow_text, arrow_json),
        "response": st.one_of(st.none(), arrow_text, arrow_json),
        "sampling_fraction": st.one_of(st.none(), st.floats()),
        "request_metadata": st.one_of(
            st.none(),
            st.dictionaries(
                st.one_of(st.sampled_from(list(METADATA)), arrow_text), st.one_of(st.none(), arrow_text), max_size=4
            ),
        ),
    }
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(arrow_rows, max_size=12))
def test_parse_payload_matches_parse_row_on_any_table(rows: list[dict[str, Any]]) -> None:
    table = payload_table(rows)
    parsed = parse_payload(table)
    assert parsed.schema == PARSED_ARROW
    assert parsed.num_rows == len(rows)
    assert parsed.to_pylist() == [parse_row(row) for row in table.to_pylist()]
    assert None not in parsed.column("request_id").to_pylist()


clean_text = st.text(st.characters(codec="utf-8"), max_size=40)  # no surrogates: json round-trips it unchanged
message_content = st.one_of(
    clean_text, st.lists(clean_text.map(lambda text: {"type": "text", "text": text}), min_size=1, max_size=3)
)
roles = st.sampled_from(["system", "user", "assistant", "tool", "User", ""])
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": message_content}), max_size=6)


def content_text(content: str | list[dict[str, str]]) -> str:
    return content if isinstance(content, str) else "\n".join(part["text"] for part in content)


@PROPERTY_SETTINGS
@given(
    before=messages,
    last_user=message_content,
    after=st.lists(st.fixed_dictionaries({"role": roles.filter(lambda r: r != "user"), "content": message_content})),
    extra=st.dictionaries(st.sampled_from(["max_tokens", "temperature", "stream", "prompt", "inputs"]), json_values),
    response=raw_field,
    status_code=st.sampled_from([200, 500]),
)
def test_valid_chat_always_yields_its_last_user_message(
    before: list[dict[str, Any]],
    last_user: str | list[dict[str, str]],
    after: list[dict[str, Any]],
    extra: dict[str, Any],
    response: Any,
    status_code: int,
) -> None:
    body = {**extra, "messages": [*before, {"role": "user", "content": last_user}, *after]}
    parsed = parse_row(payload_row(request=json.dumps(body), response=response, status_code=status_code))
    assert parsed["request_format"] == "chat"
    assert parsed["prompt_text"] == content_text(last_user)
    assert not (parsed["parse_error"] or "").startswith("request:")
    as_arrow(parsed)
