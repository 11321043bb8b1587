"""Deterministic per-scorer sampling: which requests an expensive scorer scores, the same in every run and engine.

A request is in a scorer's sample when `sample_point(request_id) < rate`. The point is a stable 64-bit hash of
the request id mapped to [0, 1): the first 8 bytes of the MD5 digest of the id's UTF-8 bytes, read big-endian,
divided by 2**64. It depends on nothing but the id, so every run, both engines (they score through the same
Python) and every scorer pick the same requests; samples are nested (a request in the 10% sample is in the 50%
one). Spark SQL computes the same point as `conv(substr(md5(request_id), 1, 16), 16, 10) / pow(2, 64)`.

Under this uniform hash sampling a share or a mean over the sampled requests is an unbiased estimate of the
share or mean over all of them; its interval is the one of the n values actually scored, so it is wider.

A row left out of a scorer's sample keeps that scorer's value *and* scorer id empty, and records the rate in
the row's `sample_rates` column (`"toxicity=0.1"`); a failed or empty text keeps its scorer id instead (and a
failure its reason in `score_error`). So every row is accounted for: scored, failed, no text, or not sampled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

import pandas as pd

from core.catalog import METRICS
from core.versions import version_label

# The scorers a rate can be set for (the scoring profile's slots), each with the column naming its scorer.
SAMPLED_SCORERS: dict[str, str] = {
    "toxicity": "toxicity_scorer",
    "readability": "readability_scorer",
    "perplexity": "perplexity_scorer",
    "pii": "pii_scorer",
    "refusal": "refusal_scorer",
    "injection": "injection_scorer",
    "sentiment": "sentiment_scorer",
    "language": "language_scorer",
    "rag_support": "rag_support_scorer",
}
# Scorers whose empty scorer id means "outside the sample" (RAG support's also means "no retrieved context").
COVERED_SCORERS: tuple[str, ...] = tuple(slot for slot in SAMPLED_SCORERS if slot != "rag_support")
# Scorer names people also use (the packages behind the slots): `--sample-rate detoxify=0.1` sets toxicity.
SCORER_ALIASES: dict[str, str] = {
    "detoxify": "toxicity",
    "profanity-check": "toxicity",
    "alt-profanity-check": "toxicity",
    "textstat": "readability",
    "lm": "perplexity",
    "transformers": "perplexity",
    "wordfreq-unigram": "perplexity",
    "pii-patterns": "pii",
    "refusal-rules": "refusal",
    "injection-similarity": "injection",
    "vader": "sentiment",
    "py3langid": "language",
    "lexical-support": "rag_support",
    "rag-support": "rag_support",
}
_SCALE = float(2**64)


def sample_point(request_id: str) -> float:
    """The request's stable place in [0, 1): first 8 bytes of MD5(id, UTF-8), big-endian, over 2**64."""
    digest = hashlib.md5(request_id.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def in_sample(request_ids: Iterable[str | None], rate: float) -> list[bool]:
    """Whether each request is in a sample at `rate` (1 takes every request, 0 none; an id-less row: none)."""
    if rate >= 1.0:
        return [True for _ in request_ids]
    return [rid is not None and sample_point(rid) < rate for rid in request_ids]


def scorer_name(name: str) -> str:
    """The slot a user's scorer name sets (`detoxify` -> `toxicity`); ValueError naming the accepted names."""
    key = name.strip().lower().replace("_", "-")
    slot = key.replace("-", "_") if key.replace("-", "_") in SAMPLED_SCORERS else SCORER_ALIASES.get(key)
    if slot is None:
        raise ValueError(
            f"unknown scorer {name.strip()!r}; use one of {', '.join(SAMPLED_SCORERS)} (or {', '.join(SCORER_ALIASES)})"
        )
    return slot


def parse_rate(text: str) -> tuple[str, float]:
    """`NAME=RATE` (rate in (0, 1]) as (slot, rate); ValueError saying what is wrong."""
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"{text.strip()!r} is not NAME=RATE (e.g. detoxify=0.1)")
    slot = scorer_name(name)
    try:
        rate = float(value.strip())
    except ValueError:
        rate = float("nan")
    if not 0.0 < rate <= 1.0:  # also refuses nan
        raise ValueError(f"the rate of {name.strip()} must be a number above 0, at most 1, not {value.strip()!r}")
    return slot, rate


def parse_rates(entries: Iterable[str]) -> dict[str, float]:
    """Rates from `NAME=RATE` entries (later entries win); rates of 1 are dropped (every row is scored)."""
    rates: dict[str, float] = {}
    for entry in entries:
        if entry.strip():
            slot, rate = parse_rate(entry)
            rates[slot] = rate
    return {slot: rate for slot, rate in rates.items() if rate < 1.0}


def rates_text(rates: Mapping[str, float]) -> str | None:
    """How a row records the rates below 1 it was scored under: `perplexity=0.5,toxicity=0.1`; None: all full."""
    below = sorted((slot, rate) for slot, rate in rates.items() if rate < 1.0)
    return ",".join(f"{slot}={rate:g}" for slot, rate in below) or None


def rates_from_text(text: str | None) -> dict[str, float]:
    """The rates a row's `sample_rates` records (the inverse of `rates_text`)."""
    if not text:
        return {}
    return dict((slot, float(rate)) for slot, _, rate in (part.partition("=") for part in text.split(",")))


def percent(rate: float) -> str:
    """A rate as people say it: 0.1 -> '10%', 0.025 -> '2.5%'."""
    return f"{rate * 100:.3g}%"


SAMPLING_HELP = (
    "Sampled: this scorer scored only the requests whose id hashes into its sample, a choice that ignores the "
    "text, so shares and means of the scored requests are unbiased estimates for all of them; their intervals and "
    "tests rest on the values actually scored, so they are wider than a full scoring would give."
)


def coverage_note(scored: int, requests: int) -> str:
    """How much of the traffic a figure's scorer scored, when it is not all: 'sampled, 4,812 of 48,120 requests
    scored (10%)'; '' when every request was scored (or none was seen). The share is the one observed, which
    differs a little from the rate set (the hash picks each request with that probability)."""
    if requests <= 0 or scored >= requests:
        return ""
    return f"sampled, {scored:,} of {requests:,} requests scored ({100 * scored / requests:.2g}%)"


def sampled_figures(
    coverage: pd.DataFrame, versions: Sequence[object], slots: Iterable[str] = COVERED_SCORERS
) -> dict[str, dict[object, str]]:
    """From `scorer_coverage` rows: for each scorer (of `slots`) that left requests of these versions out of its
    sample, the note per version (`coverage_note`); scorers that scored every request are absent."""
    found: dict[str, dict[object, str]] = {}
    rows = coverage.set_index("model_version")
    for slot in (s for s in COVERED_SCORERS if s in set(slots)):
        notes = {
            version: coverage_note(int(rows.at[version, f"{slot}_scored"]), int(rows.at[version, "requests"]))
            for version in versions
            if version in rows.index
        }
        if any(notes.values()):
            found[slot] = {version: note or "every request scored" for version, note in notes.items()}
    return found


SLOT_OF_COLUMN: dict[str, str] = {column: slot for slot, column in SAMPLED_SCORERS.items()}


def slots_of(metrics: Iterable[str]) -> list[str]:
    """The scorers (slots) behind these metrics, in order and once each; operational metrics have none."""
    columns = (METRICS[m].scorer_column for m in metrics if m in METRICS)
    return list(dict.fromkeys(SLOT_OF_COLUMN[c] for c in columns if c in SLOT_OF_COLUMN))


def slot_scorers(metric_scorers: Mapping[str, str | None]) -> dict[str, str | None]:
    """The scorer id a page shows per slot, from its scorer per metric (the first metric of a slot wins)."""
    found: dict[str, str | None] = {}
    for metric, scorer in metric_scorers.items():
        for slot in slots_of([metric]):
            found.setdefault(slot, scorer)
    return found


def slot_title(slot: str) -> str:
    return slot.replace("_", " ").capitalize()


def pooled(coverage: pd.DataFrame, label: object) -> pd.DataFrame:
    """`scorer_coverage` rows summed over the versions into one row whose model_version is `label` (the
    coverage of a figure over every version, e.g. one of Drift's date windows)."""
    counts = [c for c in coverage.columns if c != "model_version"]
    summed = {c: [int(coverage[c].sum())] for c in counts}
    return pd.DataFrame({"model_version": [label], **summed})


def sampled_captions(
    coverage: pd.DataFrame,
    groups: Sequence[object],
    slots: Iterable[str] = COVERED_SCORERS,
    scorers: Mapping[str, str | None] | None = None,
    label: Callable[[object], str] = version_label,
) -> list[str]:
    """One line per sampled scorer of `slots`, saying per group (a version, or a pooled label) how many requests
    it scored: '**Toxicity** (detoxify-...): v6 sampled, 1,234 of 12,340 requests scored (10%); v7 ...'.
    Empty when every scorer scored every request of these groups. `scorers`: the scorer id a page shows per slot."""
    lines = []
    for slot, notes in sampled_figures(coverage, list(dict.fromkeys(groups)), slots).items():
        scorer = (scorers or {}).get(slot)
        named = f"**{slot_title(slot)}**" + (f" ({scorer})" if scorer else "")
        lines.append(f"{named}: " + "; ".join(f"{label(g)} {note}" for g, note in notes.items()))
    return lines


def unscored_notes(coverage: pd.DataFrame, slots: Iterable[str]) -> list[str]:
    """For a filter or sort on sampled scores (the Requests page): per sampled scorer of `slots`, how many requests
    it left out, which have no value (they were not scored; they are not clean or low)."""
    total = pooled(coverage, "all")
    requests = int(total.at[0, "requests"])
    lines = []
    for slot in sampled_figures(total, ["all"], slots):
        scored = int(total.at[0, f"{slot}_scored"])
        lines.append(
            f"**{slot_title(slot)}** is {coverage_note(scored, requests)}: the other {requests - scored:,} "
            "requests have no value because they were not in its sample, not because they scored low, so a range "
            "on it keeps scored requests only, and its sort orders only those."
        )
    return lines
