"""The pool of request/response pairs the demo traffic draws from, built once per seed with ordinary Python:
on-topic questions with v6 (dense) and v7 (plain) answers, multi-turn chats, the odd prompts of
`data_access.demo.corpus`, errors and malformed payloads."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import numpy as np
import pyarrow as pa

from data_access.demo.corpus import FAILURES, TEXTS, TOPICS, Failure, Topic
from data_access.demo.traffic import DOCS, ENDPOINT_NAME, FORMAT_SHARES, KIND_SHARES, MODEL_NAME

T = TypeVar("T")

# =====================================================================================================
# Pool construction (once per seed).
# =====================================================================================================


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _token_count(text: str) -> int:
    """About four characters per token for Latin text, about one per character otherwise."""
    if not text:
        return 0
    non_ascii = 0 if text.isascii() else sum(1 for ch in text if ord(ch) > 127)
    return max(1, round((len(text) - non_ascii) / 4 + non_ascii * 0.9))


@dataclass(frozen=True)
class _Prompt:
    """One distinct conversation and the answer each model version gives to it."""

    kind: str
    messages: tuple[tuple[str, str], ...]  # (role, content), ending with the user turn
    fmt: str
    v6: str
    v7: str
    sources: tuple[str, ...]


def _pick(rng: np.random.Generator, items: Sequence[T]) -> T:
    return items[int(rng.integers(len(items)))]


def _question(rng: np.random.Generator, topic: Topic) -> tuple[str, str, dict[str, str]]:
    """A templated question about a topic: (question kind, text, template fields)."""
    roll = rng.random()
    if roll < 0.55:
        fields = {"s": _pick(rng, topic.actions)}
        return "action", _pick(rng, TEXTS.action_templates).format(**fields), fields
    if roll < 0.75:
        fields = {"s": _pick(rng, topic.concepts)}
        return "concept", _pick(rng, TEXTS.concept_templates).format(**fields), fields
    if roll < 0.87:
        a, b = topic.pairs[int(rng.integers(len(topic.pairs)))]
        fields = {"a": a, "b": b}
        return "pair", _pick(rng, TEXTS.pair_templates).format(**fields), fields
    fields = {"s": _pick(rng, topic.problems)}
    return "problem", _cap(_pick(rng, TEXTS.problem_templates).format(**fields)), fields


def _phrase(rng: np.random.Generator, question: str) -> str:
    """Vary greeting, sign-off and casing the way real users type."""
    prefix = _pick(rng, TEXTS.prefixes)
    if prefix.endswith("but ") and question[1:2].islower():
        question = question[0].lower() + question[1:]
    text = prefix + question + _pick(rng, TEXTS.suffixes)
    if rng.random() < 0.15:
        text = text.lower().rstrip("?")
    return text


def _facts_answer(rng: np.random.Generator, topic: Topic, qkind: str, fields: dict[str, str], dense: bool) -> str:
    leads, facts = (TEXTS.dense_leads, topic.dense) if dense else (TEXTS.plain_leads, topic.plain)
    caps = {k.upper(): _cap(v) for k, v in fields.items()}
    lead = _pick(rng, leads[qkind]).format(**fields, **caps)
    n_facts = int(rng.integers(3, 5)) if dense else int(rng.integers(2, 4))
    chosen = rng.choice(len(facts), size=min(n_facts, len(facts)), replace=False)
    parts = [_pick(rng, TEXTS.dense_openers if dense else TEXTS.plain_openers) + lead]
    parts += [facts[i] for i in chosen]
    if rng.random() < (0.25 if dense else 0.35):
        parts.append(
            ("For example:\n" if not dense else "Consider the following illustration:\n") + _pick(rng, topic.code)
        )
    parts.append(_pick(rng, TEXTS.dense_closers if dense else TEXTS.plain_closers))
    return " ".join(p for p in parts if p)


def _v6_answer(rng: np.random.Generator, topic: Topic, qkind: str, fields: dict[str, str]) -> str:
    roll = rng.random()
    if roll < 0.02:
        return _pick(rng, TEXTS.rude_v6)
    answer = _facts_answer(rng, topic, qkind, fields, dense=True)
    return _pick(rng, TEXTS.rude_v6_prefixes) + answer if roll < 0.035 else answer


def _on_topic_prompt(rng: np.random.Generator) -> _Prompt:
    topic = TOPICS[int(rng.integers(len(TOPICS)))]
    qkind, question, fields = _question(rng, topic)
    return _Prompt(
        "on_topic",
        (("user", _phrase(rng, question)),),
        _format(rng),
        _v6_answer(rng, topic, qkind, fields),
        _facts_answer(rng, topic, qkind, fields, dense=False),
        (DOCS + topic.doc,),
    )


def _multi_turn_prompt(rng: np.random.Generator) -> _Prompt:
    topic = TOPICS[int(rng.integers(len(TOPICS)))]
    qkind, question, fields = _question(rng, topic)
    first_answer = _facts_answer(rng, topic, qkind, fields, dense=False)
    messages = [("user", _phrase(rng, question)), ("assistant", first_answer), ("user", _pick(rng, TEXTS.followups))]
    if rng.random() < 0.3:  # a second follow-up round
        messages += [
            ("assistant", _facts_answer(rng, topic, "followup", fields, dense=False)),
            ("user", _pick(rng, TEXTS.followups)),
        ]
    return _Prompt(
        "multi_turn",
        tuple(messages),
        "chat",
        _v6_answer(rng, topic, "followup", fields),
        _facts_answer(rng, topic, "followup", fields, dense=False),
        (DOCS + topic.doc,),
    )


def _fixed_prompts(rng: np.random.Generator) -> list[_Prompt]:
    """Off-topic, toxic, injection, non-English and empty prompts (each a short fixed list)."""
    prompts: list[_Prompt] = []
    for text in TEXTS.off_topic:
        for _ in range(3):
            prompts.append(
                _Prompt(
                    "off_topic",
                    (("user", _phrase(rng, text)),),
                    _format(rng),
                    _pick(rng, TEXTS.off_topic_v6),
                    _pick(rng, TEXTS.off_topic_v7),
                    (),
                )
            )
    toxic = [f"{o} {b}" for o in TEXTS.toxic_openers for b in TEXTS.toxic_bodies] + list(TEXTS.toxic_standalone)
    for text in toxic:
        v6 = _pick(rng, TEXTS.toxic_v6) if rng.random() < 0.4 else TEXTS.toxic_v6_neutral[0]
        v7 = TEXTS.toxic_v7_quoting if rng.random() < 0.05 else _pick(rng, TEXTS.toxic_v7)
        prompts.append(_Prompt("toxic", (("user", text),), "chat", v6, v7, ()))
    for text, compliant in TEXTS.injections:
        for prefix in TEXTS.injection_prefixes:
            leak = TEXTS.leaked_prompt if compliant == "leak" else compliant
            v6 = leak if rng.random() < 0.45 else TEXTS.injection_v6_refusal
            prompts.append(_Prompt("injection", (("user", prefix + text),), "chat", v6, TEXTS.injection_v7, ()))
    for text, v6, v7 in TEXTS.non_english:
        prompts.append(_Prompt("non_english", (("user", text),), _format(rng), v6, v7, ()))
    for text in TEXTS.empty_prompts:
        prompts.append(_Prompt("empty", (("user", text),), "chat", TEXTS.empty_v6, TEXTS.empty_v7, ()))
    return prompts


def _long_log(rng: np.random.Generator, failure: Failure) -> str:
    """A pasted driver log of ~17-23k characters ending in a stack trace."""
    target = int(rng.integers(17_000, 23_000))
    day, hour = int(rng.integers(1, 31)), int(rng.integers(0, 24))
    lines = [_pick(rng, TEXTS.long_intros)]
    size = len(lines[0])
    while size < target - 2_500:
        values = {k: int(rng.integers(0, 60)) for k in ("m", "s", "t", "a", "b", "e", "k")}
        values |= {
            "d": day,
            "h": hour,
            "g": int(rng.integers(10, 400)),
            "i": int(rng.integers(1000, 90000)),
            "ms": int(rng.integers(40, 9000)),
            "n": 200,
        }
        line = _pick(rng, TEXTS.log_lines).format(**values)
        lines.append(line)
        size += len(line) + 1
    trace = [failure.exception] + ["\tat " + f for f in failure.frames * 6]
    trace.append(f"\t... {int(rng.integers(20, 90))} more")
    return "\n".join(lines + trace)


def _long_prompts(rng: np.random.Generator, count: int) -> list[_Prompt]:
    prompts = []
    for k in range(count):
        failure = FAILURES[k % len(FAILURES)]
        prompts.append(
            _Prompt(
                "long",
                (("user", _long_log(rng, failure)),),
                "chat",
                failure.dense,
                failure.plain,
                (DOCS + "optimizations/index.html",),
            )
        )
    return prompts


def _format(rng: np.random.Generator) -> str:
    return str(rng.choice(list(FORMAT_SHARES), p=list(FORMAT_SHARES.values())))


# --- JSON for one pool entry ------------------------------------------------------------------------


def _request_json(prompt: _Prompt, rng: np.random.Generator) -> str:
    question = prompt.messages[-1][1]
    if prompt.fmt == "chat":
        body: object = {"messages": [{"role": r, "content": c} for r, c in prompt.messages]}
        if rng.random() < 0.3:
            body = {**body, "max_tokens": 1024, "temperature": 0.1}
    elif prompt.fmt == "completions":
        body = {"prompt": question, "max_tokens": 512, "temperature": 0.2}
    elif prompt.fmt == "dataframe_split":
        body = {"dataframe_split": {"columns": ["query"], "data": [[question]]}}
    elif prompt.fmt == "dataframe_records":
        body = {"dataframe_records": [{"query": question}]}
    else:
        body = {"inputs": {"query": [question]}}
    return json.dumps(body, ensure_ascii=False)


def _prompt_tokens(prompt: _Prompt) -> int:
    if prompt.fmt == "chat":
        return sum(_token_count(c) + 4 for _, c in prompt.messages) + 3
    return _token_count(prompt.messages[-1][1]) + 1


def _response_json(prompt: _Prompt, answer: str, rng: np.random.Generator) -> tuple[str, int]:
    """The response body for one answer, and its completion token count."""
    completion = max(1, round(_token_count(answer) * float(rng.uniform(0.93, 1.07))))
    prompt_tokens = _prompt_tokens(prompt)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }
    sources = list(prompt.sources)
    if prompt.fmt == "chat":
        body: object = {
            "object": "chat.completion",
            "model": MODEL_NAME,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": usage,
        }
    elif prompt.fmt == "completions":
        body = {
            "object": "text_completion",
            "model": MODEL_NAME,
            "choices": [{"index": 0, "text": answer, "finish_reason": "stop"}],
            "usage": usage,
        }
    elif prompt.fmt == "dataframe_split":
        body = {"predictions": [answer]}
    elif prompt.fmt == "dataframe_records":
        body = {"predictions": [{"result": answer, "sources": sources}]}
    else:
        body = [{"result": answer, "sources": sources}]
    return json.dumps(body, ensure_ascii=False), completion


# --- error and malformed entries ----------------------------------------------------------------------

ERROR_BODIES: dict[str, tuple[int, tuple[dict[str, str] | None, ...]]] = {
    "503": (
        503,
        (
            None,
            {
                "error_code": "TEMPORARILY_UNAVAILABLE",
                "message": "The served entity is temporarily unavailable. Please retry the request.",
            },
        ),
    ),
    "504": (
        504,
        (
            None,
            {
                "error_code": "DEADLINE_EXCEEDED",
                "message": "The request timed out after 120 seconds waiting for the served model.",
            },
        ),
    ),
    "429": (
        429,
        (
            {
                "error_code": "REQUEST_LIMIT_EXCEEDED",
                "message": f"Exceeded the rate limit for endpoint {ENDPOINT_NAME}. Retry with backoff.",
            },
        ),
    ),
}
BAD_PARAMETERS: tuple[tuple[dict[str, object], str], ...] = (
    ({"temperature": 3.5}, "Invalid value for temperature: 3.5. It must be between 0.0 and 2.0."),
    ({"max_tokens": 0}, "max_tokens must be a positive integer, got 0."),
    ({"max_tokens": 200000}, "max_tokens 200000 exceeds the model's context window of 32768 tokens."),
    ({"n": 5}, "Parameter n greater than 1 is not supported by this endpoint."),
)
NON_JSON_REQUESTS = (
    "how do I vacuum a delta table",
    "query=how+to+create+a+cluster",
    "<html><body>test</body></html>",
    "{'messages': [{'role': 'user', 'content': 'hi'}]}",
    "messages=[object Object]",
)
MISSING_MESSAGES = (
    {"temperature": 0.1, "max_tokens": 256},
    {"message": "how do I restart a cluster?"},
    {"msgs": [{"role": "user", "content": "what is a DBU?"}]},
    {"messages": []},
)


@dataclass(frozen=True)
class _Entry:
    request: str | None
    response: str | None
    status: int
    completion_tokens: int
    prompt_tokens: int


def _error_entries(rng: np.random.Generator, chats: list[_Prompt], per_kind: int) -> dict[str, list[_Entry]]:
    """Failed requests: real requests paired with each error body the endpoint returns."""
    entries: dict[str, list[_Entry]] = {}
    for name, (status, bodies) in ERROR_BODIES.items():
        entries[name] = []
        for k in range(per_kind):
            prompt = chats[int(rng.integers(len(chats)))]
            body = bodies[k % len(bodies)]
            response = None if body is None else json.dumps(body)
            entries[name].append(_Entry(_request_json(prompt, rng), response, status, 0, _prompt_tokens(prompt)))
    entries["400"] = []
    for k in range(per_kind):
        prompt = chats[int(rng.integers(len(chats)))]
        params, message = BAD_PARAMETERS[k % len(BAD_PARAMETERS)]
        request = json.dumps(
            {"messages": [{"role": r, "content": c} for r, c in prompt.messages], **params}, ensure_ascii=False
        )
        response = json.dumps({"error_code": "BAD_REQUEST", "message": message})
        entries["400"].append(_Entry(request, response, 400, 0, _prompt_tokens(prompt)))
    return entries


def _malformed_pairs(rng: np.random.Generator, chats: list[_Prompt]) -> list[tuple[_Entry, _Entry]]:
    """Broken payloads, as (v6 entry, v7 entry) pairs so a 200 answer matches the serving version."""
    pairs: list[tuple[_Entry, _Entry]] = []

    def both(entry: _Entry) -> None:
        pairs.append((entry, entry))

    for _ in range(24):  # request JSON cut off by a logging limit; the model still answered
        prompt = chats[int(rng.integers(len(chats)))]
        request = _request_json(prompt, rng)
        cut = request[: int(rng.integers(10, max(11, len(request) - 2)))]
        pairs.append(tuple(_answered(prompt, cut, answer, rng) for answer in (prompt.v6, prompt.v7)))
    for _ in range(16):  # response JSON cut off
        prompt = chats[int(rng.integers(len(chats)))]
        request = _request_json(prompt, rng)
        v6, v7 = (_answered(prompt, request, answer, rng) for answer in (prompt.v6, prompt.v7))
        pairs.append(tuple(_truncate_response(e, rng) for e in (v6, v7)))
    for text in NON_JSON_REQUESTS:
        both(
            _Entry(
                text,
                json.dumps(
                    {"error_code": "MALFORMED_REQUEST", "message": "Invalid JSON given in the body of the request."}
                ),
                400,
                0,
                0,
            )
        )
    for body in MISSING_MESSAGES:
        both(
            _Entry(
                json.dumps(body),
                json.dumps({"error_code": "BAD_REQUEST", "message": "Missing required input field 'messages'."}),
                400,
                0,
                0,
            )
        )
    for _ in range(8):  # request too large to log: null request, answered normally
        prompt = chats[int(rng.integers(len(chats)))]
        pairs.append(tuple(_answered(prompt, None, answer, rng) for answer in (prompt.v6, prompt.v7)))
    return pairs


def _answered(prompt: _Prompt, request: str | None, answer: str, rng: np.random.Generator) -> _Entry:
    response, completion = _response_json(prompt, answer, rng)
    return _Entry(request, response, 200, completion, _prompt_tokens(prompt))


def _truncate_response(entry: _Entry, rng: np.random.Generator) -> _Entry:
    assert entry.response is not None
    cut = int(rng.integers(5, max(6, len(entry.response) - 2)))
    return _Entry(entry.request, entry.response[:cut], entry.status, entry.completion_tokens, entry.prompt_tokens)


# --- the pool ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pool:
    """Every distinct (request, response, status) the generator can emit, as parallel arrays.

    Layout: success entries first (prompt k answered by v6 at 2k, by v7 at 2k+1), then the error
    sub-pools, then malformed entries (again in v6/v7 pairs).
    """

    requests: pa.Array
    responses: pa.Array
    status: np.ndarray  # int32
    completion_tokens: np.ndarray  # int64, 0 for errors
    prompt_tokens: np.ndarray  # int64
    prompt_cdf: np.ndarray  # cumulative pick probability over prompts
    errors: dict[str, tuple[int, int]]  # error kind -> (first entry, entry count)
    malformed: tuple[int, int]  # (first entry, number of v6/v7 pairs)
    kinds: tuple[str, ...] = ()  # prompt kind of prompt k (entries 2k and 2k+1)


N_ON_TOPIC = 4_000
N_MULTI_TURN = 400
N_LONG = 30
ERRORS_PER_KIND = 60


def _unique_prompts(rng: np.random.Generator, make: Callable[[np.random.Generator], _Prompt], count: int) -> list:
    """`count` prompts with distinct conversations (duplicates from the templates are redrawn)."""
    seen: set[tuple] = set()
    prompts: list[_Prompt] = []
    while len(prompts) < count:
        prompt = make(rng)
        if prompt.messages not in seen:
            seen.add(prompt.messages)
            prompts.append(prompt)
    return prompts


def _prompt_weights(rng: np.random.Generator, kinds: list[str]) -> np.ndarray:
    """Kind shares from KIND_SHARES; within a kind a few prompts are asked far more often (Zipf-like)."""
    kinds_arr = np.array(kinds)
    weights = np.zeros(len(kinds))
    for kind, share in KIND_SHARES.items():
        members = np.flatnonzero(kinds_arr == kind)
        rank = rng.permutation(len(members))
        zipf = 1.0 / (rank + 8.0) ** 0.8
        weights[members] = share * zipf / zipf.sum()
    return weights / weights.sum()


@lru_cache(maxsize=4)
def _pool(seed: int) -> _Pool:
    rng = np.random.default_rng([seed, 0x9001])
    prompts = _unique_prompts(rng, _on_topic_prompt, N_ON_TOPIC)
    prompts += _unique_prompts(rng, _multi_turn_prompt, N_MULTI_TURN)
    prompts += _fixed_prompts(rng) + _long_prompts(rng, N_LONG)
    entries: list[_Entry] = []
    for prompt in prompts:
        request = _request_json(prompt, rng)
        entries += [_answered(prompt, request, prompt.v6, rng), _answered(prompt, request, prompt.v7, rng)]
    chats = [p for p in prompts if p.kind == "on_topic" and p.fmt == "chat"]
    errors: dict[str, tuple[int, int]] = {}
    for kind, kind_entries in _error_entries(rng, chats, ERRORS_PER_KIND).items():
        errors[kind] = (len(entries), len(kind_entries))
        entries += kind_entries
    pairs = _malformed_pairs(rng, chats)
    malformed = (len(entries), len(pairs))
    entries += [e for pair in pairs for e in pair]
    weights = _prompt_weights(rng, [p.kind for p in prompts])
    return _Pool(
        requests=pa.array([e.request for e in entries], pa.string()),
        responses=pa.array([e.response for e in entries], pa.string()),
        status=np.array([e.status for e in entries], np.int32),
        completion_tokens=np.array([e.completion_tokens for e in entries], np.int64),
        prompt_tokens=np.array([e.prompt_tokens for e in entries], np.int64),
        prompt_cdf=np.cumsum(weights),
        errors=errors,
        malformed=malformed,
        kinds=tuple(p.kind for p in prompts),
    )
