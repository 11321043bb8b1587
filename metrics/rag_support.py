"""RAG support: how much of a response is found in the context the retriever gave the model (lexical).

`LexicalSupportScorer` is a lexical support score, not an entailment judge: the share of the response's
content words and numbers (lower-cased, stop words and one-letter tokens dropped, a plural "s" stripped) that
also occur in the retrieved context. 1.0 means every content word of the answer is in the context; a low
value points to an answer drawn from elsewhere (or a hallucination), though a faithful paraphrase also scores
low and a contradiction built from the context's own words scores high.

A model-based judge (an NLI model or an LLM judge) can replace it by implementing `SupportJudge`: pairs of
response and context in, one 0-1 value or reason per pair out, with its own exact id.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from metrics.base import EMPTY_TEXT, NO_WORDS, Scores, UnscorableText, blank_reason, failure_reason

NO_CONTEXT = "no retrieved context"
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|\w+", re.UNICODE)
_STOP_WORDS_TEXT = """
a about above after again against all also am an and any are as at be because been before being below between
both but by can can't could did do does doing don't down during each few for from further had has have having
he her here here's hers herself him himself his how i i'm if in into is it it's its itself just let me more
most my myself no nor not now of off on once only or other our ours ourselves out over own please same she
should so some such sure than thank thanks that that's the their theirs them themselves then there there's
these they they're this those through to too under until up very was we we're were what when where which while
who whom why will with won't would yes you you're your yours yourself yourselves
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())


@runtime_checkable
class SupportJudge(Protocol):
    id: str
    metric: str  # "rag_support"

    def score_pairs(self, responses: Sequence[str | None], contexts: Sequence[str | None]) -> Scores:
        """One 0-1 support value (or reason) per (response, context) pair, in order."""
        ...


def content_tokens(text: str) -> set[str]:
    """Lower-cased content words and numbers; a trailing plural 's' is dropped so 'refunds' meets 'refund'."""
    tokens = set()
    for token in _TOKEN.findall(text.lower()):
        if token in STOP_WORDS or (len(token) < 2 and not token.isdigit()):
            continue
        tokens.add(token[:-1] if len(token) > 3 and token.endswith("s") and not token.isdigit() else token)
    return tokens


class LexicalSupportScorer:
    """Share of the response's content tokens found in the retrieved context (0-1)."""

    metric = "rag_support"

    def __init__(self) -> None:
        rules = hashlib.blake2b(" ".join(sorted(STOP_WORDS)).encode() + _TOKEN.pattern.encode(), digest_size=8)
        self.id = f"lexical-support:s{rules.hexdigest()[:10]}"

    def score_pairs(self, responses: Sequence[str | None], contexts: Sequence[str | None]) -> Scores:
        if len(responses) != len(contexts):
            raise ValueError(f"{len(responses)} responses but {len(contexts)} contexts")
        values: list[float | None] = []
        errors: list[str | None] = []
        context_tokens: dict[str, set[str]] = {}
        for response, context in zip(responses, contexts, strict=True):
            value, error = self._one(response, context, context_tokens)
            values.append(value)
            errors.append(error)
        return Scores(values=values, errors=errors)

    def _one(
        self, response: str | None, context: str | None, memo: dict[str, set[str]]
    ) -> tuple[float | None, str | None]:
        if (reason := blank_reason(response)) is not None:
            return None, reason
        if blank_reason(context) is not None:
            return None, NO_CONTEXT
        try:
            return self.support(response, memo.setdefault(context, content_tokens(context))), None  # type: ignore[arg-type]
        except Exception as error:  # one pair failing never spoils the others
            return None, failure_reason(error)

    @staticmethod
    def support(response: str, context_tokens: set[str]) -> float:
        claimed = content_tokens(response)
        if not claimed:
            raise UnscorableText(NO_WORDS)
        return len(claimed & context_tokens) / len(claimed)


__all__ = ["EMPTY_TEXT", "NO_CONTEXT", "LexicalSupportScorer", "SupportJudge", "content_tokens"]
