"""The Overview's version cards as data: one card per version, eight figures each, the newer version's with its
difference and the test's short note. The Overview draws them with `st.metric`; the shareable report writes the
same cards as HTML. Pure: no Streamlit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core import comparison as page_stats
from core.comparison import PairComparison
from core.scorers import flagged_word
from ui.formatting import number


@dataclass(frozen=True)
class CardFigure:
    label: str
    key: str  # the version table's column
    value: str
    delta: str | None  # the newer version's difference from the baseline
    note: str  # short test note under the delta ("small, p<0.001")
    help: str  # the sample size, how to read it, and the test in a sentence
    coloured: bool  # its difference is coloured, lower being better (every card but Requests)


@dataclass(frozen=True)
class VersionCard:
    version: str
    role: str  # "baseline", "newer" or "only version"
    requests: int
    figures: tuple[CardFigure, ...]


def compact(value: float, digits: int = 2, sign: bool = False) -> str:
    """Large numbers shortened (1.24M, 35.2k) so a card stays readable."""
    plus = "+" if sign and value > 0 else ""
    if abs(value) >= 1e6:
        return f"{plus}{value / 1e6:.2f}M"
    if abs(value) >= 1e4:
        return f"{plus}{value / 1e3:.1f}k"
    return plus + number(value, digits)


def delta_text(value: float, kind: str) -> str:
    if value != value:
        return ""
    if kind == "rate":
        return f"{value * 100:+.2f} pp"
    if kind == "ms":
        return f"{value:+,.0f} ms"
    if kind == "number":
        return compact(value, 2, sign=True)
    return f"{value:+,.2f}"


Spec = tuple[str, str, Callable[[float], str], str | None, str | None]  # label, column, format, delta kind, test


def card_specs(scorers: dict[str, str | None], threshold: float) -> tuple[Spec, ...]:
    return (
        ("Requests", "requests", lambda v: f"{v:,.0f}", None, None),
        ("Error rate", "error_rate", lambda v: f"{v:.2%}", "rate", "error_rate"),
        ("Latency p50", "latency_p50", lambda v: f"{v:,.0f} ms", "ms", "latency"),
        ("Latency p95", "latency_p95", lambda v: f"{v:,.0f} ms", "ms", "latency"),
        ("Tokens per request", "tokens_per_request", lambda v: compact(v, 1), "number", "completion_tokens"),
        ("Avg Flesch-Kincaid grade", "fk_mean", lambda v: number(v, 2), "number", "fk"),
        (
            f"{flagged_word(scorers['response_toxicity'])} responses (≥ {threshold:.2f})",
            "toxicity_rate",
            lambda v: f"{v:.2%}",
            "rate",
            "toxicity_rate",
        ),
        (
            page_stats.perplexity_card_label(scorers.get("response_perplexity")),
            "perplexity_median",
            compact,
            "number",
            "perplexity",
        ),
    )


def version_cards(compared: PairComparison, baseline: str, newer: str, threshold: float) -> list[VersionCard]:
    """The baseline's card, then (for two versions) the newer one's with differences and Holm-adjusted notes."""
    table, tests, scorers = compared.table, compared.tests, compared.scorers
    notes = (
        {}
        if tests is None
        else {k: (p, e) for k, p, e in zip(tests["key"], tests["p_holm"], tests["effect_size"], strict=True)}
    )
    cards = []
    for version in dict.fromkeys([baseline, newer]):
        row = table.loc[version]
        is_newer = tests is not None and version == newer
        figures = []
        for label, key, fmt, kind, test_key in card_specs(scorers, threshold):
            value = row[key]
            delta = delta_text(value - table.loc[baseline, key], kind) or None if is_newer and kind else None
            short_note, full_note = (
                page_stats.significance_note(*notes[test_key]) if delta and test_key in notes else ("", "")
            )
            help_text = " ".join(t for t in (page_stats.card_help(key, row, scorers), full_note) if t)
            figures.append(
                CardFigure(label, key, fmt(value) if value == value else "–", delta, short_note, help_text, bool(kind))
            )
        role = "newer" if is_newer else "baseline" if tests is not None else "only version"
        cards.append(VersionCard(str(version), role, int(row["requests"]), tuple(figures)))
    return cards
