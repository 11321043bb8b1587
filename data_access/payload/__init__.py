"""Turn raw inference-table payload rows into typed requests rows.

This is the only place that understands the JSON that Databricks Model Serving logs, in both table layouts
(legacy payload tables and AI Gateway-enabled inference tables, see data_access/schema.py) and every body shape:
chat and completions, pyfunc records, and agents. Agents served on Databricks answer as `ChatAgent`
(`{"messages": [...]}`) or `ResponsesAgent` (`{"output": [{"type": "message", "content": [{"type": "output_text",
"text": ...}]}]}`, with `usage.input_tokens`/`output_tokens`), and take `input` as well as `messages`
(mlflow.org/docs/latest/genai/flavors/responses-agent-intro). A response may carry its MLflow trace in
`databricks_output.trace` (`{"info": ..., "data": {"spans": [...]}}`); the documents returned by its RETRIEVER spans
(span type in `span_type` or the JSON-encoded `mlflow.spanType` attribute, documents with `page_content` in
`outputs` or `mlflow.spanOutputs`; docs.databricks.com/en/mlflow3/genai/tracing/data-model) are kept as
`retrieved_context`, capped at `MAX_CONTEXT_CHARS`, with their count. Everything in a payload
row is untrusted: any field may be null, of the wrong type, invalid JSON, nested thousands of levels deep,
megabytes long or hold lone UTF-16 surrogates. Parsing never raises; whatever cannot be understood leaves a
null field plus a short, stable reason in `parse_error` ("; "-joined), and everything that could be
extracted is kept.

Input rows have the `PAYLOAD_SCHEMA` columns, or the `GATEWAY_PAYLOAD_SCHEMA` columns plus the served-entity
columns the job joins on (`ENTITY_COLUMNS`); output rows have exactly `PARSED_COLUMNS` (`PARSED_ARROW`).
A gateway row whose payload Databricks did not log (`logging_error_codes`, e.g. MAX_REQUEST_SIZE_EXCEEDED) keeps
that reason in `logging_error_codes`, not as a parse error of ours.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from data_access.payload.bodies import _parse_request, _parse_response, _retrieved, _usage
from data_access.payload.fields import (
    _checked_float,
    _checked_int,
    _day,
    _gateway_digest,
    _gateway_time,
    _id_text,
    _logging_codes,
    _metadata,
    _raw_text,
    _request_time,
    _row_digest,
    _utf8_size,
)
from data_access.schema import ENTITY_COLUMNS, GATEWAY_PAYLOAD_ARROW, PARSED_ARROW, PARSED_COLUMNS, PAYLOAD_ARROW

_INT32_RANGE = (-(2**31), 2**31 - 1)
_INT64_RANGE = (-(2**63), 2**63 - 1)
_PAYLOAD_NAMES = tuple(PAYLOAD_ARROW.names)
_GATEWAY_NAMES = tuple(GATEWAY_PAYLOAD_ARROW.names) + ENTITY_COLUMNS
# Raw rows by column name, in the order the parser receives them.
_LegacyRow = namedtuple("_LegacyRow", _PAYLOAD_NAMES)
_GatewayRow = namedtuple("_GatewayRow", _GATEWAY_NAMES)
# Columns only a legacy or only a gateway table has: which parser a row or table gets.
_GATEWAY_MARKERS = frozenset({"request_time", "request_date", "execution_duration_ms", "served_entity_id"})
_LEGACY_MARKERS = frozenset({"timestamp_ms", "execution_time_ms", "request_metadata", "date"})


# ---------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------


def estimate_tokens(text: str | None) -> int:
    """Estimate how many tokens `text` holds when the response reports no `usage`.

    Method: ceil(UTF-8 bytes / 4), OpenAI's rule of thumb of about four characters per token for English
    text (byte-based so that non-Latin scripts, which tokenise into more tokens per character, count more).
    Returns 0 for None, an empty string or a non-string. Lone surrogates count as the 3 bytes of the U+FFFD
    that replaces them.
    """
    if not isinstance(text, str) or not text:
        return 0
    return -(-_utf8_size(text) // 4)


def is_gateway(columns: Any) -> bool:
    """Whether rows with these column names are in the AI Gateway layout (else legacy)."""
    names = set(columns)
    return bool(names & _GATEWAY_MARKERS) and not names & _LEGACY_MARKERS


def parse_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Parse one payload row (plain Python values) into a dict with exactly the `PARSED_COLUMNS` keys.

    The layout follows the row's keys (`is_gateway`). `request_metadata` may be a dict, a list of (key, value)
    pairs (pyarrow's `to_pylist()` of a map column), None or anything else. Never raises.
    """
    get = row.get if isinstance(row, Mapping) else _no_field
    gateway = False
    try:
        gateway = isinstance(row, Mapping) and is_gateway(row.keys())
        values = tuple(get(name) for name in (_GATEWAY_NAMES if gateway else _PAYLOAD_NAMES))
    except Exception:  # a Mapping whose .get misbehaves: treat the row as empty rather than fail
        values = (None,) * len(_GATEWAY_NAMES if gateway else _PAYLOAD_NAMES)
    return dict(zip(PARSED_COLUMNS, _parse_values(values, gateway), strict=True))


def parse_payload(table: pa.Table) -> pa.Table:
    """Parse every payload row of `table`: same row count and order, schema `PARSED_ARROW`.

    The layout follows the table's columns (`is_gateway`); columns missing from `table` are read as null.
    No de-duplication happens here.
    """
    gateway = is_gateway(table.column_names)
    columns = [
        table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows
        for name in (_GATEWAY_NAMES if gateway else _PAYLOAD_NAMES)
    ]
    parsed_rows = [_parse_values(values, gateway) for values in zip(*columns, strict=True)]
    parsed_columns = list(zip(*parsed_rows, strict=True)) or [()] * len(PARSED_COLUMNS)
    arrays = [pa.array(values, type=field.type) for values, field in zip(parsed_columns, PARSED_ARROW, strict=True)]
    return pa.Table.from_arrays(arrays, schema=PARSED_ARROW)


# ---------------------------------------------------------------------------------------------------------
# One row
# ---------------------------------------------------------------------------------------------------------


def _no_field(_name: str) -> None:
    return None


def _parse_values(raw: tuple[Any, ...], gateway: bool = False) -> tuple[Any, ...]:
    """The parsed values of one payload row (raw values in `PAYLOAD_ARROW` order, or `_GATEWAY_NAMES` order for
    a gateway row), in `PARSED_COLUMNS` order. Never raises.
    """
    try:
        return _parse_gateway(raw) if gateway else _parse_legacy(raw)
    except Exception as exc:  # last resort so one row can never stop a job; the tests keep this unreached
        return _fallback_row(raw, exc, gateway)


def _ids(databricks_request_id: Any, client_request_id: Any, digest: Callable[[], str]) -> tuple[str, str | None]:
    """The row's id (Databricks', else the client's, else a content digest) and the client's id."""
    client_id = _id_text(client_request_id)
    return _id_text(databricks_request_id) or client_id or digest(), client_id


def _parse_legacy(raw: tuple[Any, ...]) -> tuple[Any, ...]:
    row = _LegacyRow._make(raw)
    errors: list[str] = []
    request_id, client_id = _ids(row.databricks_request_id, row.client_request_id, lambda: _row_digest(raw))
    request_time = _request_time(row.timestamp_ms, errors)
    day = _day(row.date, request_time, errors)
    metadata = _metadata(row.request_metadata, errors)
    served = (metadata.get("endpoint_name"), metadata.get("model_name"), metadata.get("model_version"), None, None)
    return _parse_common(
        (request_id, client_id, request_time, day),
        served,
        row.status_code,
        (row.execution_time_ms, "execution_time_ms"),
        row.sampling_fraction,
        row.request,
        row.response,
        (None, None),
        errors,
    )


def _parse_gateway(raw: tuple[Any, ...]) -> tuple[Any, ...]:
    row = _GatewayRow._make(raw)
    errors: list[str] = []
    request_id, client_id = _ids(row.databricks_request_id, row.client_request_id, lambda: _gateway_digest(raw))
    request_time = _gateway_time(row.request_time, errors)
    day = _day(row.request_date, request_time, errors)
    entity = (row.endpoint_name, row.entity_name, row.entity_version, row.served_entity_id, row.served_entity_name)
    return _parse_common(
        (request_id, client_id, request_time, day),
        tuple(_id_text(value) for value in entity),
        row.status_code,
        (row.execution_duration_ms, "execution_duration_ms"),
        row.sampling_fraction,
        row.request,
        row.response,
        (_id_text(row.requester), _logging_codes(row.logging_error_codes, errors)),
        errors,
    )


def _parse_common(
    ids: tuple[Any, ...],
    served: tuple[str | None, ...],
    status_code: Any,
    execution: tuple[Any, str],
    sampling_fraction: Any,
    request: Any,
    response: Any,
    caller: tuple[str | None, str | None],
    errors: list[str],
) -> tuple[Any, ...]:
    """Everything both layouts share: status, the request and response bodies, tokens and the trace."""
    request_id, client_id, request_time, day = ids
    endpoint_name, model_name, model_version, served_entity_id, served_entity_name = served
    requester, logging_codes = caller
    status = _checked_int(status_code, _INT32_RANGE, "status_code", errors)
    latency = _checked_int(execution[0], _INT64_RANGE, execution[1], errors)
    sampling = _checked_float(sampling_fraction, "sampling_fraction", errors)
    # A part Databricks did not log, with its reason in logging_error_codes, is no parse error of ours.
    unlogged = logging_codes is not None

    request_text, request_bytes = _raw_text(request, "request", errors, report_missing=not unlogged)
    request_format, prompt_text, conversation = _parse_request(request_text, errors)

    response_text_raw, response_bytes = _raw_text(response, "response", errors, report_missing=False)
    expects_answer = (status is None or status == 200) and not (unlogged and response_text_raw is None)
    response_text, usage_source = _parse_response(response_text_raw, expects_answer, errors)
    context, documents = _retrieved(usage_source)

    prompt_tokens, completion_tokens, total_tokens = _usage(usage_source, errors)
    estimated = False
    if prompt_tokens is None:
        prompt_tokens, estimated = estimate_tokens(conversation), True
    if completion_tokens is None:
        completion_tokens, estimated = estimate_tokens(response_text), True
    if total_tokens is None:
        total_tokens = prompt_tokens + completion_tokens

    return (
        request_id,
        client_id,
        request_time,
        day,
        endpoint_name,
        model_name,
        model_version,
        status,
        latency,
        sampling,
        request_format,
        prompt_text,
        response_text,
        request_bytes,
        response_bytes,
        prompt_tokens,
        completion_tokens,
        total_tokens,
        estimated,
        "; ".join(errors) if errors else None,
        requester,
        logging_codes,
        served_entity_id,
        served_entity_name,
        context,
        documents,
    )


def _fallback_row(raw: tuple[Any, ...], exc: Exception, gateway: bool = False) -> tuple[Any, ...]:
    """A row that only keeps the ids, for an input the parser could not handle at all."""
    row = dict.fromkeys(PARSED_COLUMNS)
    client, databricks = (raw[2], raw[1]) if gateway else (raw[0], raw[1])
    request_id, client_id = _ids(databricks, client, lambda: _gateway_digest(raw) if gateway else _row_digest(raw))
    row.update(
        request_id=request_id,
        client_request_id=client_id,
        request_format="unknown",
        request_bytes=0,
        response_bytes=0,
        prompt_tokens=0,
        completion_tokens=0,
        total_tokens=0,
        tokens_estimated=True,
        parse_error=f"parser: unexpected {type(exc).__name__}",
    )
    return tuple(row.values())
