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

import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from data_access.schema import ENTITY_COLUMNS, GATEWAY_PAYLOAD_ARROW, PARSED_ARROW, PARSED_COLUMNS, PAYLOAD_ARROW

# How deep the shape walkers look into a decoded payload; real payloads need 4-5 levels.
_MAX_DEPTH = 10
_INT32_RANGE = (-(2**31), 2**31 - 1)
_INT64_RANGE = (-(2**63), 2**63 - 1)
# Token counts above 2**53 are not trustworthy JSON numbers; the bound also keeps sums inside int64.
_MAX_TOKENS = 2**53
_EPOCH = dt.datetime(1970, 1, 1)
_ONE_MS = dt.timedelta(milliseconds=1)
_MIN_MS = -((_EPOCH - dt.datetime.min) // _ONE_MS)
_MAX_MS = (dt.datetime.max - _EPOCH) // _ONE_MS
# strict=False accepts raw control characters (NUL, newlines) in strings: keep the text, not lose it.
_DECODER = json.JSONDecoder(strict=False)

# Where a prompt may sit in a pyfunc-style record, in order of preference.
_PROMPT_KEYS = ("messages", "prompt", "query", "question", "input", "inputs", "text", "content")
# Where a response text may sit in a prediction, in order of preference.
_RESPONSE_KEYS = (
    "predictions",
    "outputs",
    "result",
    "content",
    "answer",
    "output",
    "text",
    "generated_text",
    "response",
)
_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
_REQUEST_FORMATS = ("dataframe_split", "dataframe_records", "inputs", "instances")
_METADATA_KEYS = ("endpoint_name", "model_name", "model_version")
_PAYLOAD_NAMES = tuple(PAYLOAD_ARROW.names)
_GATEWAY_NAMES = tuple(GATEWAY_PAYLOAD_ARROW.names) + ENTITY_COLUMNS
# Columns only a legacy or only a gateway table has: which parser a row or table gets.
_GATEWAY_MARKERS = frozenset({"request_time", "request_date", "execution_duration_ms", "served_entity_id"})
_LEGACY_MARKERS = frozenset({"timestamp_ms", "execution_time_ms", "request_metadata", "date"})
# Retrieved documents kept per request, in characters (the count of documents is kept whole).
MAX_CONTEXT_CHARS = 20_000
_CONTEXT_SEPARATOR = "\n\n"

# A message list without any user message: distinct from "no text found at all".
_NO_USER = object()


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


def _parse_legacy(raw: tuple[Any, ...]) -> tuple[Any, ...]:
    (
        client_request_id,
        databricks_request_id,
        date,
        timestamp_ms,
        status_code,
        execution_time_ms,
        request,
        response,
        sampling_fraction,
        request_metadata,
    ) = raw
    errors: list[str] = []
    client_id = _id_text(client_request_id)
    request_id = _id_text(databricks_request_id) or client_id
    if request_id is None:
        request_id = _row_digest(raw)
    request_time = _request_time(timestamp_ms, errors)
    day = _day(date, request_time, errors)
    metadata = _metadata(request_metadata, errors)
    served = (metadata.get("endpoint_name"), metadata.get("model_name"), metadata.get("model_version"), None, None)
    return _parse_common(
        (request_id, client_id, request_time, day),
        served,
        status_code,
        (execution_time_ms, "execution_time_ms"),
        sampling_fraction,
        request,
        response,
        (None, None),
        errors,
    )


def _parse_gateway(raw: tuple[Any, ...]) -> tuple[Any, ...]:
    (
        request_date,
        databricks_request_id,
        client_request_id,
        request_time_value,
        status_code,
        sampling_fraction,
        execution_duration_ms,
        request,
        response,
        served_entity_id,
        logging_error_codes,
        requester,
        endpoint_name,
        entity_name,
        entity_version,
        served_entity_name,
    ) = raw
    errors: list[str] = []
    client_id = _id_text(client_request_id)
    request_id = _id_text(databricks_request_id) or client_id
    if request_id is None:
        request_id = _gateway_digest(raw)
    request_time = _gateway_time(request_time_value, errors)
    day = _day(request_date, request_time, errors)
    served = (
        _id_text(endpoint_name),
        _id_text(entity_name),
        _id_text(entity_version),
        _id_text(served_entity_id),
        _id_text(served_entity_name),
    )
    return _parse_common(
        (request_id, client_id, request_time, day),
        served,
        status_code,
        (execution_duration_ms, "execution_duration_ms"),
        sampling_fraction,
        request,
        response,
        (_id_text(requester), _logging_codes(logging_error_codes, errors)),
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
    row.update(
        request_id=_id_text(databricks) or _id_text(client) or (_gateway_digest(raw) if gateway else _row_digest(raw)),
        client_request_id=_id_text(client),
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


# ---------------------------------------------------------------------------------------------------------
# Scalar fields
# ---------------------------------------------------------------------------------------------------------


def _clean_text(text: str) -> str:
    """`text` as Arrow can store it: lone surrogates become U+FFFD, valid surrogate pairs are joined."""
    if text.isascii():  # O(1) in CPython: the common case costs nothing
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def _utf8_size(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(_clean_text(text).encode("utf-8"))


def _id_text(value: Any) -> str | None:
    """A request id as text: strings and integers only, empty means missing."""
    if isinstance(value, str):
        return _clean_text(value) if value else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _row_digest(raw: tuple[Any, ...]) -> str:
    """A stable id from the row's raw fields: "sha1:" + SHA-1 hex digest of a canonical JSON.

    The canonical form is `json.dumps` (ASCII, default separators) of the ten raw fields in `PAYLOAD_ARROW`
    order, with the date as ISO text and the metadata map as [key, value] pairs sorted by key.
    """
    try:
        fields = list(raw)
        fields[2] = fields[2].isoformat() if isinstance(fields[2], dt.date) else fields[2]
        pairs = _metadata_pairs(fields[9])
        if pairs is not None:  # dict and pair-list forms of the same map hash alike
            fields[9] = sorted(([str(key), value] for key, value in pairs), key=lambda pair: pair[0])
        canonical = json.dumps(fields, ensure_ascii=True, default=repr)
    except Exception:  # unprintable garbage: still a stable id, from the field types
        canonical = repr([type(field).__name__ for field in raw])
    return "sha1:" + hashlib.sha1(canonical.encode("ascii"), usedforsecurity=False).hexdigest()


def _gateway_digest(raw: tuple[Any, ...]) -> str:
    """A stable id for a gateway row without ids: "sha1:" + SHA-1 of the canonical JSON of its logged fields.

    Canonical form: `json.dumps` (ASCII, default separators) of the twelve `GATEWAY_PAYLOAD_SCHEMA` fields in
    order, dates and times as ISO text (times as naive UTC). The joined served-entity fields are not part of it.
    """
    try:
        fields = [
            _naive_utc(field).isoformat() if isinstance(field, dt.date) else field
            for field in raw[: len(GATEWAY_PAYLOAD_ARROW)]
        ]
        canonical = json.dumps(fields, ensure_ascii=True, default=repr)
    except Exception:  # unprintable garbage: still a stable id, from the field types
        canonical = repr([type(field).__name__ for field in raw])
    return "sha1:" + hashlib.sha1(canonical.encode("ascii"), usedforsecurity=False).hexdigest()


def _naive_utc(value: dt.date) -> dt.date:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _gateway_time(value: Any, errors: list[str]) -> dt.datetime | None:
    """Naive UTC time of a gateway `request_time` (a timestamp; engines may hand it over with a time zone)."""
    if isinstance(value, dt.datetime):
        return _naive_utc(value)  # type: ignore[return-value]
    if value is None:
        errors.append("timestamp: missing")
        return None
    if isinstance(value, str):
        try:
            return _naive_utc(dt.datetime.fromisoformat(value))  # type: ignore[return-value]
        except ValueError:
            pass
    errors.append("timestamp: invalid value")
    return None


def _logging_codes(value: Any, errors: list[str]) -> str | None:
    """`logging_error_codes` as ", "-joined text; None when the payload was logged whole (null or empty list)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        errors.append("logging_error_codes: invalid value")
        return None
    codes = [_clean_text(code) for code in value if isinstance(code, str) and code]
    return ", ".join(codes) if codes else None


def _coerce_int(value: Any) -> int | None:
    """An integer from int, integral float or numeric text; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str) and len(value) < 40:
        try:
            return int(value)
        except ValueError:
            return _coerce_int(_coerce_float(value))
    return None


def _coerce_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:
            return None
    if isinstance(value, str) and len(value) < 40:
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _checked_int(value: Any, bounds: tuple[int, int], name: str, errors: list[str]) -> int | None:
    if value is None:
        return None
    number = _coerce_int(value)
    if number is None or not bounds[0] <= number <= bounds[1]:
        errors.append(f"{name}: invalid value")
        return None
    return number


def _checked_float(value: Any, name: str, errors: list[str]) -> float | None:
    if value is None:
        return None
    number = _coerce_float(value)
    if number is None or not math.isfinite(number):
        errors.append(f"{name}: invalid value")
        return None
    return number


def _request_time(timestamp_ms: Any, errors: list[str]) -> dt.datetime | None:
    """Naive UTC time of `timestamp_ms` (milliseconds since the Unix epoch)."""
    if timestamp_ms is None:
        errors.append("timestamp: missing")
        return None
    millis = _coerce_int(timestamp_ms)
    if millis is None:
        errors.append("timestamp: invalid value")
        return None
    if not _MIN_MS <= millis <= _MAX_MS:
        errors.append("timestamp: out of range")
        return None
    return _EPOCH + dt.timedelta(milliseconds=millis)


def _day(value: Any, request_time: dt.datetime | None, errors: list[str]) -> dt.date | None:
    """The `date` column when usable, else the day of the request time."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    if value is not None:
        errors.append("date: invalid value")
    return request_time.date() if request_time is not None else None


def _metadata_pairs(value: Any) -> list[tuple[Any, Any]] | None:
    """(key, value) pairs of a map given as a dict or a list of pairs; None when it is neither."""
    if isinstance(value, Mapping):
        return list(value.items())
    if isinstance(value, list | tuple):
        pairs = []
        for item in value:
            if isinstance(item, list | tuple) and len(item) == 2:
                pairs.append((item[0], item[1]))
            elif isinstance(item, Mapping) and "key" in item:
                pairs.append((item.get("key"), item.get("value")))
            else:
                return None
        return pairs
    return None


def _metadata(value: Any, errors: list[str]) -> dict[str, str]:
    """The metadata keys we use, as text (integers are stringified, other values ignored)."""
    if value is None:
        errors.append("metadata: missing")
        return {}
    pairs = _metadata_pairs(value)
    if pairs is None:
        errors.append("metadata: not a map")
        return {}
    found: dict[str, str] = {}
    for key, item in pairs:
        if key in _METADATA_KEYS:
            text = _id_text(item)
            if text is not None:
                found[key] = text
    errors.extend(f"metadata: missing {key}" for key in _METADATA_KEYS if key not in found)
    return found


def _raw_text(value: Any, side: str, errors: list[str], report_missing: bool = True) -> tuple[str | None, int]:
    """A raw request/response as text plus its UTF-8 size; bytes are decoded, other types rejected."""
    if value is None:
        if report_missing:
            errors.append(f"{side}: missing")
        return None, 0
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace"), len(value)
    if not isinstance(value, str):
        errors.append(f"{side}: not a string")
        return None, 0
    if value.isascii():
        return value, len(value)
    text = _clean_text(value)
    return text, len(text.encode("utf-8"))


def _decode_json(text: str, side: str, errors: list[str]) -> tuple[Any, bool]:
    """(decoded value, ok). Errors are recorded as short reasons, never raised."""
    try:
        return _DECODER.decode(text), True
    except json.JSONDecodeError as exc:
        errors.append(f"{side}: invalid JSON ({exc.msg} at char {exc.pos})")
    except RecursionError:
        errors.append(f"{side}: invalid JSON (nested too deeply)")
    except ValueError:  # an integer literal beyond Python's digit limit
        errors.append(f"{side}: invalid JSON (number too long)")
    return None, False


# ---------------------------------------------------------------------------------------------------------
# Request: format and last user message
# ---------------------------------------------------------------------------------------------------------


def _parse_request(text: str | None, errors: list[str]) -> tuple[str, str | None, str | None]:
    """(request_format, prompt_text, conversation text for token estimates)."""
    if text is None:
        return "unknown", None, None
    body, ok = _decode_json(text, "request", errors)
    if not ok:
        return "unknown", None, None
    request_format, found = _find_prompt(body)
    if found is _NO_USER:
        errors.append("request: no user message")
        return request_format, None, None
    if found is None:
        errors.append("request: unrecognised shape")
        return request_format, None, None
    prompt, conversation = found
    if prompt is None:
        errors.append("request: user message has no text")
        return request_format, None, conversation and _clean_text(conversation)
    return request_format, _clean_text(prompt), _clean_text(conversation)


def _find_prompt(body: Any) -> tuple[str, Any]:
    """(request_format, prompt result) for a decoded request body."""
    if not isinstance(body, dict):
        return "unknown", _prompt_in(body, 0)
    if "messages" in body:
        messages = body["messages"]
        return "chat", _prompt_in_messages(messages) if isinstance(messages, list) else _NO_USER
    if "prompt" in body:
        return "completions", _prompt_in(body["prompt"], 0)
    if isinstance(body.get("input"), list):  # ResponsesAgent / Responses API: messages and items under "input"
        return "responses", _prompt_in_messages(body["input"])
    if "dataframe_split" in body:
        return "dataframe_split", _prompt_in_split(body["dataframe_split"])
    for request_format in _REQUEST_FORMATS[1:]:
        if request_format in body:
            return request_format, _prompt_in(body[request_format], 0)
    return "unknown", _prompt_in(body, 0)


def _prompt_in_split(split: Any) -> Any:
    """The prompt in the last row of a pandas "split" frame: {"columns": [...], "data": [[...], ...]}."""
    if not isinstance(split, dict):
        return None
    data = split.get("data")
    if not isinstance(data, list) or not data or not isinstance(data[-1], list):
        return None
    last_row = data[-1]
    columns = split.get("columns")
    if isinstance(columns, list):
        for key in _PROMPT_KEYS:
            if key in columns:
                index = columns.index(key)
                return _prompt_in(last_row[index], 1) if index < len(last_row) else None
    if len(last_row) == 1:  # a single unnamed column can only be the prompt
        return _prompt_in(last_row[0], 1)
    return None


def _prompt_in(value: Any, depth: int) -> Any:
    """(last user text, conversation text), _NO_USER or None, looking through records and columns."""
    if depth > _MAX_DEPTH:
        return None
    if isinstance(value, str):
        return value, value
    if isinstance(value, list):
        if not value:
            return None
        if any(isinstance(item, dict) and "role" in item for item in value):
            return _prompt_in_messages(value)
        return _prompt_in(value[-1], depth + 1)  # several records: the last one
    if isinstance(value, dict):
        if "role" in value and "content" in value:  # one bare message
            return _prompt_in_messages([value])
        fallback = None
        for key in _PROMPT_KEYS:
            if key in value:
                found = _prompt_in(value[key], depth + 1)
                if isinstance(found, tuple):
                    return found
                fallback = fallback or found
        return fallback
    return None


def _prompt_in_messages(messages: list[Any]) -> Any:
    """(last user message text or None, all message texts) of a chat message list, or _NO_USER."""
    texts: list[str] = []
    last_user: str | None = None
    has_user = False
    for message in messages:
        if not isinstance(message, dict):
            continue
        text = _content_text(message.get("content"))
        if text:
            texts.append(text)
        if message.get("role") == "user":
            has_user, last_user = True, text
    if not has_user:
        return _NO_USER
    return last_user, "\n".join(texts)


def _content_text(content: Any) -> str | None:
    """Text of a message `content`: a string, or the text parts of a part list joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return None
    texts = [text for part in content if (text := _part_text(part)) is not None]
    return "\n".join(texts) if texts else None


def _part_text(part: Any) -> str | None:
    if isinstance(part, str):
        return part
    if isinstance(part, dict):
        text = part.get("text")
        if isinstance(text, str) and part.get("type", "text") in _TEXT_PART_TYPES:
            return text
    return None


# ---------------------------------------------------------------------------------------------------------
# Response: text and usage
# ---------------------------------------------------------------------------------------------------------


def _parse_response(text: str | None, expects_answer: bool, errors: list[str]) -> tuple[str | None, Any]:
    """(response_text, decoded body for `usage`). Shape problems count only on rows that should answer."""
    if text is None:
        if expects_answer:
            errors.append("response: missing")
        return None, None
    body, ok = _decode_json(text, "response", errors if expects_answer else [])
    if not ok:
        return None, None
    found = _response_in(body, 0)
    if found is None:
        if expects_answer:
            errors.append("response: unrecognised shape")
        return None, body
    return _clean_text(found), body


def _response_in(value: Any, depth: int) -> str | None:
    if depth > _MAX_DEPTH:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if not value:
            return None
        if all(isinstance(part, dict) and "type" in part for part in value):
            parts_text = _content_text(value)  # content parts, e.g. of a Responses API message
            if parts_text is not None:
                return parts_text
        return _response_in(value[-1], depth + 1)  # one prediction per record: the last one
    if not isinstance(value, dict):
        return None
    if "choices" in value:
        return _choice_text(value["choices"])
    if "error_code" in value or "error" in value:
        return None  # an error object is no answer, even if it has a "message"
    if isinstance(value.get("messages"), list):  # ChatAgent: the last assistant message is the answer
        return _last_assistant_text(value["messages"])
    output = value.get("output")
    if isinstance(output, list) and any(isinstance(item, dict) and item.get("type") == "message" for item in output):
        return _last_assistant_text(output)  # ResponsesAgent: output items, the last message item answers
    for key in _RESPONSE_KEYS:
        if key in value:
            found = _response_in(value[key], depth + 1)
            if found is not None:
                return found
    return None


def _last_assistant_text(messages: list[Any]) -> str | None:
    """Text of the last assistant message (ChatAgent messages or ResponsesAgent `message` items) that has text."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role", "assistant") == "assistant":
            if message.get("type", "message") != "message":
                continue  # function_call, function_call_output, reasoning items
            text = _content_text(message.get("content"))
            if text:
                return text
    return None


def _choice_text(choices: Any) -> str | None:
    """Text of choices[0]: chat `message.content` (string or parts) or completions `text`."""
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    message = choice.get("message")
    if isinstance(message, dict):
        return _content_text(message.get("content"))
    text = choice.get("text")
    return text if isinstance(text, str) else None


def _usage(body: Any, errors: list[str]) -> tuple[int | None, int | None, int | None]:
    """(prompt, completion, total) token counts from a response's `usage`; None where absent or unusable."""
    if not isinstance(body, dict) or "usage" not in body:
        return None, None, None
    usage = body["usage"]
    if not isinstance(usage, dict):
        errors.append("response: invalid usage")
        return None, None, None
    counts = []
    invalid = False
    # Chat completions name them prompt/completion tokens; the Responses API (ResponsesAgent) input/output tokens.
    for key, alias in (("prompt_tokens", "input_tokens"), ("completion_tokens", "output_tokens"), ("total_tokens", "")):
        value = usage.get(key, usage.get(alias))
        number = _token_count(value)
        invalid = invalid or (number is None and value is not None)
        counts.append(number)
    if invalid:
        errors.append("response: invalid usage")
    return counts[0], counts[1], counts[2]


def _token_count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = _coerce_int(value)
    return number if number is not None and 0 <= number <= _MAX_TOKENS else None


# ---------------------------------------------------------------------------------------------------------
# Agent responses: retrieved documents from the MLflow trace in databricks_output.trace
# ---------------------------------------------------------------------------------------------------------


def _retrieved(body: Any) -> tuple[str | None, int | None]:
    """(retrieved documents' text capped at MAX_CONTEXT_CHARS, document count); (None, None) without a trace."""
    if not isinstance(body, dict):
        return None, None
    extra = body.get("databricks_output")
    trace = extra.get("trace") if isinstance(extra, dict) else None
    trace = _maybe_json(trace)
    if not isinstance(trace, dict):
        return None, None
    data = _maybe_json(trace.get("data"))
    spans = data.get("spans") if isinstance(data, dict) else trace.get("spans")
    if not isinstance(spans, list):
        return None, None
    texts: list[str] = []
    count = 0
    for span in spans:
        documents = _retriever_documents(span)
        count += len(documents)
        texts.extend(text for document in documents if (text := _document_text(document)))
    if not texts:
        return None, count
    context = _CONTEXT_SEPARATOR.join(texts)
    return _clean_text(context[:MAX_CONTEXT_CHARS]), count


def _maybe_json(value: Any) -> Any:
    """MLflow stores span attributes (and some exporters the whole trace) as JSON text: decode it when so."""
    if isinstance(value, str) and value[:1] in ("{", "[", '"'):
        try:
            return _DECODER.decode(value)
        except (ValueError, RecursionError):
            return None
    return value


def _retriever_documents(span: Any) -> list[Any]:
    """The documents a RETRIEVER span returned; [] for any other span."""
    if not isinstance(span, dict):
        return []
    attributes = span.get("attributes") if isinstance(span.get("attributes"), dict) else {}
    span_type = span.get("span_type") or _maybe_json(attributes.get("mlflow.spanType"))
    if span_type != "RETRIEVER":
        return []
    outputs = span.get("outputs", attributes.get("mlflow.spanOutputs"))
    outputs = _maybe_json(outputs)
    if isinstance(outputs, dict):  # {"documents": [...]} from some retrievers
        outputs = outputs.get("documents")
    return outputs if isinstance(outputs, list) else []


def _document_text(document: Any) -> str | None:
    if isinstance(document, str):
        return document or None
    if isinstance(document, dict):
        for key in ("page_content", "content", "text"):
            text = document.get(key)
            if isinstance(text, str) and text:
                return text
    return None
