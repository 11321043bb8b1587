"""Caps on what a page draws of a text or payload: exact pretty-printing within the caps, bounded output beyond."""

from __future__ import annotations

import json
import random

from data_access.text_caps import ELIDED, MAX_SHOWN_CHARS, MAX_SHOWN_DEPTH, _pretty_tokens, shown_json, shown_text


def _random_value(rng: random.Random, depth: int) -> object:
    kind = rng.choice(["dict", "list", "str", "num", "lit"] if depth < 6 else ["str", "num", "lit"])
    if kind == "dict":
        return {rng.choice(["a", "b c", 'q"uote', "ключ", ",:{}[]"]) + str(i): _random_value(rng, depth + 1)
                for i in range(rng.randint(0, 3))}  # fmt: skip
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == "str":
        return rng.choice(["", "plain", 'with "quotes" and \\ backslash', "новая\nстрока", "{[,:]}", "emoji 🙂"])
    if kind == "num":
        return rng.choice([0, -1, 3.25, 1e-7, 12345678901234])
    return rng.choice([True, False, None])


def test_within_the_caps_it_is_json_dumps_exactly() -> None:
    rng = random.Random(17)
    for _ in range(300):
        value = _random_value(rng, 0)
        text = json.dumps(value, ensure_ascii=False)
        expected = json.dumps(value, indent=2, ensure_ascii=False)
        assert shown_json(text).text == expected
        assert _pretty_tokens(text, 10**9, 10**9) == (expected, False)  # the flat scanner agrees, compact input too
        assert _pretty_tokens(json.dumps(value, indent=4, ensure_ascii=False), 10**9, 10**9)[0] == expected


def test_deeper_levels_are_elided() -> None:
    text = json.dumps({"a": {"b": {"c": [1, {"d": 2}]}, "e": 3}})
    assert _pretty_tokens(text, 10**9, 2) == ('{\n  "a": {\n    "b": {…},\n    "e": 3\n  }\n}', True)


def test_a_200000_deep_payload_is_drawn_shallow_and_short() -> None:
    depth = 200_000
    shown = shown_json('{"x": ' + "[" * depth + "1" + "]" * depth + "}")  # json.loads would overflow the stack
    assert shown.language == "json" and f"{depth + 1:,} deep" in shown.note
    assert len(shown.text) <= MAX_SHOWN_CHARS + 1
    deepest_indent = max(len(line) - len(line.lstrip(" ")) for line in shown.text.splitlines())
    assert deepest_indent // 2 <= MAX_SHOWN_DEPTH
    assert ELIDED in shown.text


def test_a_huge_payload_is_cut_and_says_so() -> None:
    text = json.dumps({"messages": [{"role": "user", "content": "word " * 120_000}]})
    shown = shown_json(text)
    assert len(shown.text) == MAX_SHOWN_CHARS + 1 and shown.text.startswith('{\n  "messages": [\n    {')
    assert f"of {len(text):,} characters" in shown.note and shown.full_chars == len(text)


def test_texts_and_broken_json() -> None:
    assert shown_text("short").text == "short" and not shown_text("short").cut
    long = shown_text("y" * 50_000)
    assert len(long.text) == MAX_SHOWN_CHARS + 1 and "50,000" in long.note
    broken = shown_json('{"unterminated": "str')
    assert (broken.text, broken.language) == ('{"unterminated": "str', None)
    assert shown_json(None).text == "(null)" and shown_text(None).text == "(none)"
