"""Where the prompt and the response sit in a request or response body: the request format and the last user
message, the response text and its token usage, and the documents an agent retrieved (from its MLflow trace)."""

from __future__ import annotations

from typing import Any

from data_access.payload.fields import _DECODER, _clean_text, _coerce_int, _decode_json

# How deep the shape walkers look into a decoded payload; real payloads need 4-5 levels.
_MAX_DEPTH = 10
# Token counts above 2**53 are not trustworthy JSON numbers; the bound also keeps sums inside int64.
_MAX_TOKENS = 2**53

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
# Retrieved documents kept per request, in characters (the count of documents is kept whole).
MAX_CONTEXT_CHARS = 20_000
_CONTEXT_SEPARATOR = "\n\n"

# A message list without any user message: distinct from "no text found at all".
_NO_USER = object()


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
