"""The AI Gateway layout and agent responses: parsing, logging errors, retrieved documents, layout detection."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from data_access.config import TableName
from data_access.errors import DataAccessError
from data_access.layouts import columns_sql, detect_layout, layout_of
from data_access.payload import parse_payload, parse_row
from data_access.payload.bodies import MAX_CONTEXT_CHARS
from data_access.schema import GATEWAY_PAYLOAD_ARROW, PARSED_ARROW, PAYLOAD_ARROW

TIME = dt.datetime(2026, 4, 12, 10, 30, 5, 123000)
CHAT_REQUEST = json.dumps({"messages": [{"role": "user", "content": "What is MLflow?"}]})
CHAT_RESPONSE = json.dumps(
    {
        "choices": [{"message": {"role": "assistant", "content": "A tool."}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
)


def gateway_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "request_date": TIME.date(),
        "databricks_request_id": "dbx-1",
        "client_request_id": None,
        "request_time": TIME,
        "status_code": 200,
        "sampling_fraction": 1.0,
        "execution_duration_ms": 640,
        "request": CHAT_REQUEST,
        "response": CHAT_RESPONSE,
        "served_entity_id": "se-7",
        "logging_error_codes": [],
        "requester": "ana@example.com",
        "endpoint_name": "chatbot",
        "entity_name": "main.rag.bot",
        "entity_version": "7",
        "served_entity_name": "bot-7",
    }
    row.update(overrides)
    return row


def legacy_row() -> dict[str, Any]:
    return {
        "client_request_id": None,
        "databricks_request_id": "dbx-1",
        "date": TIME.date(),
        "timestamp_ms": int((TIME - dt.datetime(1970, 1, 1)).total_seconds() * 1000),
        "status_code": 200,
        "execution_time_ms": 640,
        "request": CHAT_REQUEST,
        "response": CHAT_RESPONSE,
        "sampling_fraction": 1.0,
        "request_metadata": [("endpoint_name", "chatbot"), ("model_name", "main.rag.bot"), ("model_version", "7")],
    }


def test_gateway_row_parses_like_the_same_legacy_row_plus_its_own_columns() -> None:
    gateway, legacy = parse_row(gateway_row()), parse_row(legacy_row())
    own = {"requester", "served_entity_id", "served_entity_name"}
    assert {key: value for key, value in gateway.items() if key not in own} == {
        key: value for key, value in legacy.items() if key not in own
    }
    assert all(legacy[key] is None for key in own)
    assert (gateway["requester"], gateway["served_entity_id"], gateway["served_entity_name"]) == (
        "ana@example.com",
        "se-7",
        "bot-7",
    )
    assert gateway["request_time"] == TIME and gateway["latency_ms"] == 640 and gateway["parse_error"] is None


def test_gateway_table_in_arrow_with_a_utc_time_zone() -> None:
    """Spark hands timestamps over as UTC instants: the parser stores naive UTC, like legacy rows."""
    row = gateway_row()
    table = pa.Table.from_pylist([row], schema=GATEWAY_PAYLOAD_ARROW)
    utc = table.set_column(3, "request_time", table["request_time"].cast(pa.timestamp("us", tz="UTC")))
    parsed = parse_payload(utc)
    assert parsed.schema == PARSED_ARROW
    assert parsed["request_time"].to_pylist() == [TIME]
    assert parsed["model_version"].to_pylist() == [None]  # no served-entity columns joined: version unknown
    assert parsed["parse_error"].to_pylist() == [None]


def test_unlogged_payload_keeps_the_reason_apart_from_parse_errors() -> None:
    parsed = parse_row(gateway_row(request=None, logging_error_codes=["MAX_REQUEST_SIZE_EXCEEDED"]))
    assert parsed["logging_error_codes"] == "MAX_REQUEST_SIZE_EXCEEDED"
    assert parsed["parse_error"] is None
    assert parsed["response_text"] == "A tool."
    both = parse_row(
        gateway_row(
            request=None, response=None, logging_error_codes=["MAX_REQUEST_SIZE_EXCEEDED", "MAX_RESPONSE_SIZE_EXCEEDED"]
        )
    )
    assert both["logging_error_codes"] == "MAX_REQUEST_SIZE_EXCEEDED, MAX_RESPONSE_SIZE_EXCEEDED"
    assert both["parse_error"] is None and both["response_text"] is None
    # Without a logging reason a missing request is ours to report.
    assert parse_row(gateway_row(request=None))["parse_error"] == "request: missing"


@pytest.mark.parametrize(
    ("value", "codes", "error"),
    [
        (None, None, None),
        ([], None, None),
        ("MAX_RESPONSE_SIZE_EXCEEDED", "MAX_RESPONSE_SIZE_EXCEEDED", None),
        (["", None, "X"], "X", None),
        (42, None, "logging_error_codes: invalid value"),
    ],
)
def test_logging_error_codes_values(value: Any, codes: str | None, error: str | None) -> None:
    parsed = parse_row(gateway_row(logging_error_codes=value))
    assert (parsed["logging_error_codes"], parsed["parse_error"]) == (codes, error)


def test_gateway_row_without_ids_gets_a_stable_content_hash() -> None:
    row = gateway_row(databricks_request_id=None, client_request_id=None)
    first, again = parse_row(row), parse_row(dict(row))
    assert first["request_id"].startswith("sha1:") and first["request_id"] == again["request_id"]
    assert parse_row({**row, "execution_duration_ms": 641})["request_id"] != first["request_id"]
    # The joined served-entity fields are not part of the row as logged.
    assert parse_row({**row, "entity_version": None})["request_id"] == first["request_id"]


def test_gateway_bad_time_is_a_parse_error_not_a_failure() -> None:
    assert parse_row(gateway_row(request_time=None))["parse_error"] == "timestamp: missing"
    parsed = parse_row(gateway_row(request_time=12, request_date=None))
    assert parsed["parse_error"] == "timestamp: invalid value" and parsed["date"] is None


# ---------------------------------------------------------------------------------------------------------
# Agents
# ---------------------------------------------------------------------------------------------------------

DOCS = [
    {"page_content": "Unity Catalog governs tables.", "metadata": {"doc_uri": "a"}},
    {"page_content": "MLflow tracks models.", "metadata": {"doc_uri": "b"}},
]


def mlflow2_trace(documents: list[Any]) -> dict[str, Any]:
    """A trace as MLflow 2 serialises it: span attributes are JSON text."""
    spans = [
        {"name": "agent", "attributes": {"mlflow.spanType": json.dumps("AGENT")}},
        {
            "name": "retrieve",
            "attributes": {
                "mlflow.spanType": json.dumps("RETRIEVER"),
                "mlflow.spanOutputs": json.dumps(documents),
            },
        },
    ]
    return {"info": {"request_id": "tr-1"}, "data": {"spans": spans}}


def agent_text(request: Any, response: Any) -> dict[str, Any]:
    return parse_row(gateway_row(request=json.dumps(request), response=json.dumps(response)))


def test_chat_agent_response_and_messages_request() -> None:
    response = {
        "messages": [
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c1"}]},
            {"role": "tool", "content": "rows: 3"},
            {"role": "assistant", "content": "There are three tables."},
        ]
    }
    parsed = agent_text({"messages": [{"role": "user", "content": "How many tables?"}]}, response)
    assert (parsed["request_format"], parsed["prompt_text"], parsed["response_text"]) == (
        "chat",
        "How many tables?",
        "There are three tables.",
    )
    assert parsed["parse_error"] is None and parsed["tokens_estimated"] is True
    assert parsed["retrieved_documents"] is None  # no trace


def test_responses_agent_output_items_usage_and_trace() -> None:
    request = {"input": [{"role": "user", "content": "What governs tables?"}]}
    response = {
        "object": "response",
        "output": [
            {"type": "function_call", "name": "search", "arguments": "{}"},
            {"type": "function_call_output", "output": "found"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Unity Catalog."}]},
        ],
        "usage": {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15},
        "databricks_output": {"trace": mlflow2_trace(DOCS)},
    }
    parsed = agent_text(request, response)
    assert (parsed["request_format"], parsed["prompt_text"], parsed["response_text"]) == (
        "responses",
        "What governs tables?",
        "Unity Catalog.",
    )
    assert (parsed["prompt_tokens"], parsed["completion_tokens"], parsed["total_tokens"]) == (12, 3, 15)
    assert parsed["tokens_estimated"] is False
    assert parsed["retrieved_documents"] == 2
    assert parsed["retrieved_context"] == "Unity Catalog governs tables.\n\nMLflow tracks models."


def test_mlflow3_span_dicts_and_trace_as_text() -> None:
    trace = {"data": {"spans": [{"span_type": "RETRIEVER", "outputs": [{"content": "doc one"}, "doc two"]}]}}
    response = {"messages": [{"role": "assistant", "content": "ok"}], "databricks_output": {"trace": json.dumps(trace)}}
    parsed = agent_text({"messages": [{"role": "user", "content": "q"}]}, response)
    assert (parsed["retrieved_documents"], parsed["retrieved_context"]) == (2, "doc one\n\ndoc two")


def test_retrieved_context_is_capped_but_counted() -> None:
    documents = [{"page_content": "x" * 9_000} for _ in range(5)]
    response = {
        "messages": [{"role": "assistant", "content": "ok"}],
        "databricks_output": {"trace": mlflow2_trace(documents)},
    }
    parsed = agent_text({"messages": [{"role": "user", "content": "q"}]}, response)
    assert parsed["retrieved_documents"] == 5
    assert len(parsed["retrieved_context"]) == MAX_CONTEXT_CHARS


@pytest.mark.parametrize(
    "trace",
    [None, "not json {", 17, {"data": {"spans": "x"}}, {"data": {"spans": [None, {"attributes": "x"}]}}],
)
def test_broken_traces_lose_nothing_else(trace: Any) -> None:
    response = {"messages": [{"role": "assistant", "content": "ok"}], "databricks_output": {"trace": trace}}
    parsed = agent_text({"messages": [{"role": "user", "content": "q"}]}, response)
    assert parsed["response_text"] == "ok" and parsed["parse_error"] is None
    assert parsed["retrieved_context"] is None


# ---------------------------------------------------------------------------------------------------------
# Layout detection
# ---------------------------------------------------------------------------------------------------------


def test_layout_of_columns_and_override() -> None:
    assert layout_of(PAYLOAD_ARROW.names) == "legacy"
    assert layout_of([name.upper() for name in GATEWAY_PAYLOAD_ARROW.names]) == "gateway"
    with pytest.raises(
        DataAccessError, match=r"\(payload_format = gateway\): as an AI Gateway inference table it lacks"
    ):
        layout_of(PAYLOAD_ARROW.names, payload_format="gateway")
    with pytest.raises(DataAccessError, match=r"lacks served_entity_id, logging_error_codes, requester"):
        layout_of(
            [
                n
                for n in GATEWAY_PAYLOAD_ARROW.names
                if n not in {"served_entity_id", "logging_error_codes", "requester"}
            ]
        )
    with pytest.raises(DataAccessError, match="payload_format"):
        layout_of(PAYLOAD_ARROW.names, payload_format="csv")


def test_detect_layout_on_duckdb(tmp_path: Any) -> None:
    with duckdb.connect(str(tmp_path / "x.duckdb")) as con:
        for name, schema in (("legacy", PAYLOAD_ARROW), ("gw", GATEWAY_PAYLOAD_ARROW)):
            con.register("empty", schema.empty_table())
            con.sql(f"CREATE TABLE {name} AS SELECT * FROM empty")
            con.unregister("empty")
        con.sql("CREATE TABLE other (id INTEGER, request VARCHAR)")

        def columns(sql: str) -> list[str]:
            return con.sql(sql).columns

        assert detect_layout(columns, TableName("legacy"), "duckdb") == "legacy"
        assert detect_layout(columns, TableName("gw"), "duckdb") == "gateway"
        assert detect_layout(columns, TableName("gw"), "duckdb", "legacy") == "legacy"  # the override wins
        with pytest.raises(DataAccessError, match="other is not an inference table"):
            detect_layout(columns, TableName("other"), "duckdb")
    assert columns_sql(TableName("t", "s", "c"), "databricks") == "SELECT * FROM `c`.`s`.`t` LIMIT 0"
