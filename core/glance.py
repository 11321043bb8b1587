"""At a glance: the seed's three measures (perplexity, Flesch-Kincaid grade, toxic share) per version, each with
its 95% interval, its scorer, how many values it rests on, and the verdict of the Overview's test (Holm-adjusted).

Built from a `core.comparison.PairComparison`, so every number is the one the version cards and the tests table
show. Pure: no Streamlit, no SQL, no Plotly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from core import stats
from core.comparison import PairComparison
from core.scorers import flagged_word
from core.versions import version_label


@dataclass(frozen=True)
class GlanceValue:
    version: str
    value: float
    low: float  # 95% interval
    high: float
    n: int  # values the figure rests on


@dataclass(frozen=True)
class GlancePanel:
    key: str  # the measure's key in the tests table
    title: str  # what the value is, e.g. "Median perplexity (unigram)"
    short: str  # the measure in two or three words, for a pie's title
    scorer: str | None  # the exact scorer id; None when the versions share none
    percent: bool  # a share, shown as a percentage
    values: tuple[GlanceValue, ...]
    verdict: str  # the test's reading, e.g. "v7 lower: significant, large effect (p < 0.001, Holm)"
    note: str = ""  # what else a reader must know about this panel

    def text(self, value: float) -> str:
        """A value as the cards write it."""
        if value != value:
            return "–"
        return f"{value:.2%}" if self.percent else f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"


def panels(compared: PairComparison, baseline: str, newer: str, threshold: float) -> list[GlancePanel]:
    """The three panels in the seed's order, baseline first (one version when `baseline` is `newer`)."""
    scorers = compared.scorers
    table = compared.table.loc[list(dict.fromkeys([baseline, newer]))]
    perplexity_scorer = scorers.get("response_perplexity")
    kind = " (unigram)" if perplexity_scorer and "unigram" in perplexity_scorer else ""
    means = ", ".join(
        f"{version_label(v)} {table.loc[v, 'perplexity_mean']:,.0f}"
        for v in table.index
        if table.loc[v, "perplexity_mean"] == table.loc[v, "perplexity_mean"]
    )
    specs = (
        (
            "perplexity",
            f"Median perplexity{kind}",
            "Perplexity",
            "response_perplexity",
            "perplexity_median",
            "perplexity_n",
            False,
            "The median, as the card and the test (Mann-Whitney U, on ranks) read it: the mean"
            + (f" ({means})" if means else "")
            + " is pulled up by a few extreme responses such as pasted logs.",
        ),
        ("fk", "Mean Flesch-Kincaid grade", "Flesch-Kincaid grade", "response_fk_grade", "fk_mean", "fk_n", False, ""),
        (
            "toxicity_rate",
            f"{flagged_word(scorers.get('response_toxicity'))} responses (score ≥ {threshold:.2f})",
            f"{flagged_word(scorers.get('response_toxicity'))} responses",
            "response_toxicity",
            "toxicity_rate",
            "toxicity_n",
            True,
            "",
        ),
    )
    return [
        GlancePanel(
            key,
            title,
            short,
            scorers.get(metric),
            percent,
            tuple(
                GlanceValue(
                    str(version),
                    float(table.loc[version, column]),
                    float(table.loc[version, f"{column}_low"]),
                    float(table.loc[version, f"{column}_high"]),
                    int(table.loc[version, n_column]),
                )
                for version in table.index
            ),
            verdict(compared.tests, key, version_label(newer), version_label(baseline)),
            note,
        )
        for key, title, short, metric, column, n_column, percent, note in specs
    ]


def verdict(tests: pd.DataFrame | None, key: str, newer: str, baseline: str) -> str:
    """The tests table's reading of one measure: direction, verdict, Holm-adjusted p and effect size."""
    if tests is None:
        return "one version selected: nothing to test"
    row = tests.loc[tests["key"] == key].iloc[0]
    if row["p_holm"] != row["p_holm"]:
        return f"not tested: {row['note']}" if row["note"] else "not tested"
    reading = f"{row['verdict']} ({stats.p_text(row['p_holm'])}, Holm)"
    if row["p_holm"] >= stats.ALPHA or not row["difference"]:
        return reading
    direction = "higher" if row["difference"] > 0 else "lower"
    return f"{newer} {direction} than {baseline}: {reading}"


def seed_shares(panel: GlancePanel) -> list[float]:
    """The seed's pie: each version's value as a share of the values summed over the versions (NaN: no values)."""
    total = sum(v.value for v in panel.values if v.value == v.value)
    return [v.value / total if total and v.value == v.value else math.nan for v in panel.values]
