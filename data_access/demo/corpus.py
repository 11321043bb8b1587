"""The demo's text corpus: topics with their questions and answers, the odd prompts real traffic brings (off
topic, toxic, prompt injections, other languages, empty, pasted Spark failures), written by us and kept as JSON in
texts/ beside this module. `data_access.demo` builds its traffic from it.

v6 answers are built from long, dense sentences and v7 answers from short, plain ones: on textstat's
Flesch-Kincaid grade v6 traffic averages about 15 and v7 about 7.5, v7 answers are about half as long, and only
v6 is sometimes curt or rude.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

TEXTS_DIR = files("data_access.demo") / "texts"  # package data; importable from a zip too


@dataclass(frozen=True)
class Topic:
    doc: str
    actions: tuple[str, ...]
    concepts: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    problems: tuple[str, ...]
    dense: tuple[str, ...]
    plain: tuple[str, ...]
    code: tuple[str, ...]


@dataclass(frozen=True)
class Failure:
    """A Spark failure users paste with its stack trace, and how each version explains it."""

    exception: str
    frames: tuple[str, ...]
    dense: str
    plain: str


@dataclass(frozen=True)
class Texts:
    """Everything else the prompts and answers are built from (texts.json)."""

    action_templates: tuple[str, ...]
    concept_templates: tuple[str, ...]
    pair_templates: tuple[str, ...]
    problem_templates: tuple[str, ...]
    prefixes: tuple[str, ...]
    suffixes: tuple[str, ...]
    dense_leads: dict[str, tuple[str, ...]]
    plain_leads: dict[str, tuple[str, ...]]
    dense_openers: tuple[str, ...]
    plain_openers: tuple[str, ...]
    dense_closers: tuple[str, ...]
    plain_closers: tuple[str, ...]
    rude_v6: tuple[str, ...]
    rude_v6_prefixes: tuple[str, ...]
    followups: tuple[str, ...]
    off_topic: tuple[str, ...]
    off_topic_v6: tuple[str, ...]
    off_topic_v7: tuple[str, ...]
    toxic_openers: tuple[str, ...]
    toxic_bodies: tuple[str, ...]
    toxic_standalone: tuple[str, ...]
    toxic_v6: tuple[str, ...]
    toxic_v6_neutral: tuple[str, ...]
    toxic_v7: tuple[str, ...]
    toxic_v7_quoting: str
    injections: tuple[tuple[str, ...], ...]
    injection_prefixes: tuple[str, ...]
    leaked_prompt: str
    injection_v6_refusal: str
    injection_v7: str
    non_english: tuple[tuple[str, ...], ...]
    empty_prompts: tuple[str, ...]
    empty_v6: str
    empty_v7: str
    log_lines: tuple[str, ...]
    long_intros: tuple[str, ...]


def _frozen(value: Any) -> Any:
    """JSON lists as tuples (the generator treats the corpus as immutable), all the way down."""
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, dict):
        return {key: _frozen(item) for key, item in value.items()}
    return value


def _load(name: str) -> Any:
    return _frozen(json.loads((TEXTS_DIR / name).read_text(encoding="utf-8")))


TOPICS: tuple[Topic, ...] = tuple(Topic(**topic) for topic in _load("topics.json"))
FAILURES: tuple[Failure, ...] = tuple(Failure(**failure) for failure in _load("failures.json"))
TEXTS = Texts(**_load("texts.json"))
