"""Prompt injection / jailbreak attempts: a prompt's similarity to known attacks, and classic attack phrases.

Two signals, the larger wins (0 to 1):
- similarity: the highest cosine similarity between the prompt and any attack in our corpus
  (metrics/corpora/prompt_injection_attacks.txt: written for this project, sources and licence in its header),
  over TF-IDF word uni- and bigrams (scikit-learn) fitted on that corpus with English stop words dropped;
- rules: phrases that are attacks wherever they appear ("ignore all previous instructions", "developer mode",
  "reveal your system prompt", DAN-style personas), kept as data in metrics/corpora/prompt_injection_rules.txt
  with their sources; a match scores 1.0.

A prompt at or above `FLAG_AT` counts as an attempt. The id names scikit-learn's version and a hash of the corpus
and rules, so editing either is a new scorer. No well-kept library installs offline with such rules inside it (the
rules file's header says which were considered and why not), so the rules are ours, next to the corpus.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

from metrics.base import Outcome, Scores, has_text, in_chunks, score_texts
from metrics.identity import package_version

# Package data read through importlib.resources: Spark executors import this package from a zip.
CORPUS = files("metrics") / "corpora" / "prompt_injection_attacks.txt"
FLAG_AT = 0.5
CHUNK_TEXTS = 4096
RULES_FILE = files("metrics") / "corpora" / "prompt_injection_rules.txt"


def attack_rules(path: Traversable = RULES_FILE) -> dict[str, str]:
    """Rule name -> regular expression, from the rules file (`name: regex` per non-comment line)."""
    rules: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        name, separator, pattern = line.partition(": ")
        if not separator or not name.isidentifier() or name in rules:
            raise ValueError(f"{path}:{number}: expected a new rule as 'name: regex', got {line[:60]!r}")
        rules[name] = pattern.strip()
    return rules


def attack_corpus(path: Traversable = CORPUS) -> list[str]:
    """The corpus's attacks, one per non-comment line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


class InjectionScorer:
    """0-1: similarity to a known attack, or 1.0 when a classic attack phrase appears."""

    metric = "injection"

    def __init__(self, corpus: Traversable = CORPUS, rules: Traversable = RULES_FILE) -> None:
        self.corpus = corpus
        self.rules = attack_rules(rules)
        self._rule = re.compile("|".join(f"(?:{rule})" for rule in self.rules.values()), re.IGNORECASE)
        digest = hashlib.blake2b(digest_size=8)
        digest.update(corpus.read_bytes())
        digest.update("\n".join(self.rules.values()).encode())
        self.id = f"injection-similarity:scikit-learn-{package_version('scikit-learn')}:c{digest.hexdigest()[:10]}"
        self._vectorizer: Any = None
        self._attacks: Any = None

    def score(self, texts: Sequence[str | None]) -> Scores:
        if has_text(texts):
            self._load()
        return score_texts(texts, self._score_distinct)

    def _load(self) -> None:
        if self._vectorizer is not None:
            return
        from sklearn.feature_extraction.text import TfidfVectorizer

        attacks = attack_corpus(self.corpus)
        self._vectorizer = TfidfVectorizer(ngram_range=(1, 2), stop_words="english", sublinear_tf=True)
        self._attacks = self._vectorizer.fit_transform(attacks).T.tocsr()  # rows are L2-normalised

    def _score_distinct(self, texts: list[str]) -> list[Outcome]:
        return in_chunks(self._predict, texts, CHUNK_TEXTS)

    def _predict(self, texts: list[str]) -> list[float]:
        similarity = (self._vectorizer.transform(texts) @ self._attacks).max(axis=1).toarray().ravel()
        return [
            1.0 if self._rule.search(text) else min(float(value), 1.0)
            for text, value in zip(texts, similarity, strict=True)
        ]
