"""The shareable report: one self-contained HTML file of the current comparison, readable with no server and no
network. It holds the filters in force, the version cards with their tests, the at-a-glance figure (and the seed's
pie view of it), the readability and toxicity trends, and the SQL behind each figure.

Charts stay interactive offline: plotly.js is written into the file once, from the plotly package (no CDN).
Pure: no Streamlit. `collect` runs the trend queries through an injected `fetch` (the page passes its cached one),
`build_html` writes the file.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, Protocol

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from core import glance, sampling
from core.catalog import METRICS, histogram_grain
from core.comparison import TEST_COLUMNS, TEST_DETAIL_COLUMNS, PairComparison
from core.rollout import Marker
from core.sampling import slot_scorers
from core.scorers import scorer_caption
from core.versions import version_label, version_sort_key
from data_access.errors import DataAccessError
from data_access.queries import DIALECT_NAMES, Filters
from ui import detail_charts, glance_charts, trend_charts
from ui.charts import MIN_COUNT, with_markers
from ui.version_cards import VersionCard, version_cards


class Shown(Protocol):
    """A query result as the pages hold it (`ui.data.Frame`): the rows, the SQL that ran (in `dialect`) and the
    same query compiled for Databricks, which "SQL for this chart" offers to paste."""

    data: pd.DataFrame
    sql: str
    dialect: str
    databricks_sql: str


Fetch = Callable[..., Shown]


@dataclass(frozen=True)
class ReportContext:
    """What the Overview shows the report of."""

    filters: Filters
    grain: str
    baseline: str
    newer: str
    threshold: float
    overlap_only: bool
    window: tuple[date, date] | None  # the days both versions served, when the comparison kept to them
    dialect: str  # the SQL dialect of the source the numbers came from
    requests_table: str
    from_rollups: bool
    min_count: int = MIN_COUNT  # the sidebar's fading: buckets with fewer values are faded
    smoothing: int = 1  # the sidebar's smoothing: a rolling mean over this many buckets


@dataclass(frozen=True)
class Section:
    title: str
    figure: go.Figure | None
    sql: tuple[Shown, ...]  # the queries behind the figure
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Report:
    context: ReportContext
    cards: list[VersionCard]
    tests: pd.DataFrame | None
    comparison_sql: tuple[Shown, ...]
    sections: list[Section] = field(default_factory=list)
    sampled: tuple[str, ...] = ()  # per sampled scorer, how many requests of each version it scored
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def file_name(context: ReportContext) -> str:
    names = "-".join(version_label(v) for v in dict.fromkeys([context.baseline, context.newer]))
    return f"inference-explorer-report-{names}.html"


def report_grain(grain: str) -> str:
    """Minutes over weeks would make a file of many megabytes: a report draws hours at the finest (its trends read
    the hourly histograms too)."""
    return histogram_grain(grain)


def collect(
    fetch: Fetch,
    context: ReportContext,
    compared: PairComparison,
    comparison_sql: Sequence[Shown],
    markers: Sequence[Marker] = (),
    markers_note: str = "",
) -> Report:
    """Everything the report shows: the comparison the page computed, plus the two trends (queried here, through
    the page's `fetch`, only when a report is asked for) with the page's rollout markers. A failing trend query
    becomes a note in its section."""
    panels = glance.panels(compared, context.baseline, context.newer, context.threshold)
    subtitle = glance_charts.subtitle(context.filters, context.window, [v.version for v in panels[0].values])
    notes = tuple(p.note for p in panels if p.note)
    sections = [
        Section(
            "At a glance",
            glance_charts.glance_figure(panels, subtitle),
            tuple(comparison_sql),
            (glance_charts.BARS_CAPTION, *notes),
        ),
        Section(
            "At a glance, the seed's pie style",
            glance_charts.seed_pie_figure(panels, subtitle),
            tuple(comparison_sql),
            (glance_charts.SEED_CAVEAT,),
        ),
        _guarded("Readability over time", lambda: _readability(fetch, context, compared.scorers)),
        _guarded("Toxicity over time", lambda: _toxicity(fetch, context, compared.scorers)),
    ]
    sections[2:] = [_marked(section, markers, markers_note) for section in sections[2:]]
    cards = version_cards(compared, context.baseline, context.newer, context.threshold)
    sampled = _sampled(fetch, context, compared.scorers)
    return Report(context, cards, compared.tests, tuple(comparison_sql), sections, sampled)


def _sampled(fetch: Fetch, context: ReportContext, scorers: dict[str, str | None]) -> tuple[str, ...]:
    """The Overview's sampled-scorer captions for the compared days: how many requests each figure rests on."""
    window = context.window
    filters = replace(context.filters, start=window[0], end=window[1]) if window else context.filters
    try:
        coverage = fetch("queries.sampling.scorer_coverage", filters=filters, from_rollups=context.from_rollups)
    except DataAccessError as error:
        return (f"How many requests each scorer scored could not be read: {error.message}",)
    lines = sampling.sampled_captions(coverage.data, [context.baseline, context.newer], scorers=slot_scorers(scorers))
    return tuple(lines)


def _marked(section: Section, markers: Sequence[Marker], note: str) -> Section:
    """A time chart with the rollout markers the page draws (first and last served, share crossings, ...)."""
    if section.figure is None or not markers:
        return section
    return replace(section, figure=with_markers(section.figure, markers), notes=(*section.notes, note))


def _guarded(title: str, build: Callable[[], Section]) -> Section:
    try:
        return build()
    except DataAccessError as error:
        return Section(title, None, (), (f"Could not be read: {error.message} {error.hint or ''}".strip(),))


def _readability(fetch: Fetch, context: ReportContext, scorers: dict[str, str | None]) -> Section:
    metric, grain = "response_fk_grade", report_grain(context.grain)
    arguments = {"filters": context.filters, "grain": grain, "metric": metric, "from_rollups": context.from_rollups}
    trend = fetch("queries.trends.metric_trend", **arguments)
    band = fetch("queries.trends.metric_band", **arguments)
    title = f"{METRICS[metric].label} over time"
    if trend.data.empty:
        return Section(title, None, (trend, band), ("No readability values in this selection.",))
    scorer = scorers.get(metric) or trend_charts.scorers_by_output(trend.data)[0]

    def of_scorer(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["scorer"] == scorer] if scorer else frame[frame["scorer"].isna()]

    figure = trend_charts.trend_chart(
        of_scorer(trend.data), of_scorer(band.data), METRICS[metric], grain, scorer_caption(scorer),
        min_count=context.min_count, window=context.smoothing,
    )  # fmt: skip
    notes = (*_grain_note(context.grain), *_sampled_notes(fetch, context, metric, scorer, of_scorer(trend.data)))
    return Section(title, figure, (trend, band), notes)


def _toxicity(fetch: Fetch, context: ReportContext, scorers: dict[str, str | None]) -> Section:
    grain = report_grain(context.grain)
    shares = fetch(
        "queries.toxicity.toxicity_shares", filters=context.filters, grain=grain, threshold=context.threshold,
        scorer=scorers.get("response_toxicity"), from_rollups=context.from_rollups,
    )  # fmt: skip
    title = "Toxicity over time"
    rows = shares.data
    scorer = scorers.get("response_toxicity") or (
        str(rows["toxicity_scorer"].dropna().iloc[0]) if rows["toxicity_scorer"].notna().any() else None
    )
    rows = rows[rows["toxicity_scorer"] == scorer] if scorer else rows.iloc[0:0]
    if rows.empty:
        return Section(title, None, (shares,), ("No toxicity scores in this selection.",))
    figure = detail_charts.toxicity_trend_chart(
        rows,
        "response",
        "share",
        grain,
        context.threshold,
        scorer_caption(scorer),
        context.min_count,
        context.smoothing,
    )
    notes = (*_grain_note(context.grain), *_sampled_notes(fetch, context, "response_toxicity", scorer, rows))
    return Section(title, figure, (shares,), notes)


def _sampled_notes(
    fetch: Fetch, context: ReportContext, metric: str, scorer: str | None, rows: pd.DataFrame
) -> tuple[str, ...]:
    """Under a trend of a sampled scorer: how many requests of each version drawn it scored in the dates shown."""
    try:
        coverage = fetch("queries.sampling.scorer_coverage", filters=context.filters, from_rollups=context.from_rollups)
    except DataAccessError as error:
        return (f"How many requests the scorer scored could not be read: {error.message}",)
    versions = sorted(rows["model_version"].dropna().astype(str).unique(), key=version_sort_key)
    slots = sampling.slots_of([metric])
    lines = sampling.sampled_captions(coverage.data, versions, slots, dict.fromkeys(slots, scorer))
    return tuple(line.replace("**", "") for line in lines)


def _grain_note(grain: str) -> tuple[str, ...]:
    if grain == report_grain(grain):
        return ()
    return (f"Drawn per {report_grain(grain)}: the page was set to {grain}s, too many points for a shared file.",)


# --- HTML ----------------------------------------------------------------------------------------------------

EXPORT_TEMPLATE = "plotly_white"


def for_export(fig: go.Figure) -> go.Figure:
    """A copy drawn the same outside the app: importing Streamlit makes its own template Plotly's default, and
    that one leaves axes without automatic margins (tick labels would be cut at the edge)."""
    copy = go.Figure(fig)
    copy.update_layout(template=EXPORT_TEMPLATE)
    copy.update_xaxes(automargin=True)
    copy.update_yaxes(automargin=True)
    return copy


PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png", "scale": 2}}

_STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1280px; padding: 24px; color: #222; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta { color: #555; } .note { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
.cards { display: flex; flex-wrap: wrap; gap: 16px; }
.card { border: 1px solid #ccc; border-radius: 8px; padding: 12px; flex: 1 1 520px; }
.card td.value { font-size: 1.15em; font-weight: bold; }
.good { color: #1a7f37; } .bad { color: #c62828; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; font-size: 0.85em; white-space: pre-wrap; }
details { margin: 6px 0; }
"""


def build_html(report: Report) -> str:
    """The report as one HTML document with everything inlined (about 5 MB, most of it plotly.js)."""
    context = report.context
    names = " vs ".join(version_label(v) for v in dict.fromkeys([context.baseline, context.newer]))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Inference Explorer report: {html.escape(names)}</title>",
        f"<style>{_STYLE}</style>",
        # plotly.js from the installed plotly package, so the file needs no network.
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body>",
        f"<h1>Inference Explorer report: {html.escape(names)}</h1>",
        f'<p class="meta">Generated {report.generated_at:%Y-%m-%d %H:%M} UTC from the requests table '
        f"<code>{html.escape(context.requests_table)}</code> ({html.escape(context.dialect)}"
        f"{', through the summary tables' if context.from_rollups else ''}). Charts are interactive: hover, zoom, "
        "and the camera icon saves a PNG. No server or network needed.</p>",
        _filters_html(context),
        "<h2>Version cards</h2>",
        _cards_html(report.cards),
        _sampled_html(report.sampled),
        _sql_html(report.comparison_sql, "SQL for the cards and the tests"),
        _tests_html(report.tests, context) if report.tests is not None else "",
    ]
    for number, section in enumerate(report.sections):
        parts.append(_section_html(section, f"figure-{number}"))
    parts.append("</body></html>")
    return "\n".join(parts)


def _filters_html(context: ReportContext) -> str:
    filters = context.filters
    window = (
        f"{context.window[0]} to {context.window[1]}, the days both versions served"
        if context.window
        else "all selected dates"
        + (
            " (the versions never served on the same day)"
            if context.overlap_only and context.baseline != context.newer
            else ""
        )
    )
    rows = (
        ("Dates (UTC)", f"{filters.start or 'first'} to {filters.end or 'last'}"),
        ("Model versions", ", ".join(version_label(v) for v in filters.versions) or "all versions"),
        ("Endpoints", ", ".join(filters.endpoints) or "all endpoints"),
        ("Time granularity", report_grain(context.grain)),
        ("Faded below", f"{context.min_count} values per bucket"),
        ("Smoothing", f"rolling mean over {context.smoothing} buckets" if context.smoothing > 1 else "none"),
        ("Baseline (older)", version_label(context.baseline)),
        ("Newer", version_label(context.newer)),
        ("Toxicity threshold", f"{context.threshold:.2f}"),
        ("Compared on", window),
    )
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<h2>Filters in force</h2><table id="filters">{body}</table>'


def _cards_html(cards: list[VersionCard]) -> str:
    blocks = []
    for card in cards:
        rows = []
        for figure in card.figures:
            delta = ""
            if figure.delta:
                better = figure.delta.startswith("-")  # every card reads lower as better
                delta = f'<span class="{"good" if better else "bad"}">{html.escape(figure.delta)}</span>'
            compared = f"<td>{delta}</td><td>{html.escape(figure.note)}</td>" if card.role == "newer" else ""
            rows.append(
                f'<tr><th title="{html.escape(figure.help)}">{html.escape(figure.label)}</th>'
                f'<td class="value" data-version="{html.escape(card.version)}" data-key="{figure.key}">'
                f"{html.escape(figure.value)}</td>{compared}</tr>"
            )
        blocks.append(
            f'<div class="card"><h3>{html.escape(version_label(card.version))} · {card.role} · '
            f"{card.requests:,} requests</h3><table>{''.join(rows)}</table></div>"
        )
    return f'<div class="cards">{"".join(blocks)}</div>'


def _sampled_html(lines: Sequence[str]) -> str:
    """The sampled-scorer captions (markdown bold as <strong>), with what sampling does to the figures."""
    if not lines:
        return ""
    items = "".join(f"<li>{_bold(line)}</li>" for line in lines)
    help_text = html.escape(sampling.SAMPLING_HELP)
    return f'<div id="sampled"><p class="note">{help_text}</p><ul class="note">{items}</ul></div>'


def _bold(text: str) -> str:
    parts = [html.escape(part) for part in text.split("**")]
    return "".join(f"<strong>{part}</strong>" if i % 2 else part for i, part in enumerate(parts))


_TEST_LABELS = {
    "measure": "Measure",
    "difference": "Difference",
    "p_holm": "p (Holm)",
    "effect": "Effect",
    "effect_size": "Size",
    "verdict": "Verdict",
    "scorer": "Scorer",
    "test": "Test",
    "statistic": "Statistic",
    "p_value": "p (raw)",
    "n_baseline": "n (baseline)",
    "n_comparison": "n (newer)",
    "note": "Note",
}
_RATES = {"error_rate", "toxicity_rate", "prompt_toxicity_rate", "refusal_rate", "response_pii_rate"}
_RATES |= {"language_match_rate", "injection_rate", "prompt_pii_rate"}


def _tests_html(tests: pd.DataFrame, context: ReportContext) -> str:
    labels = _TEST_LABELS | {"baseline": version_label(context.baseline), "comparison": version_label(context.newer)}

    def table(columns: Sequence[str], table_id: str) -> str:
        head = "".join(f"<th>{html.escape(labels[c])}</th>" for c in columns)
        body = "".join(
            "<tr>"
            + "".join(
                f'<td data-key="{row["key"]}" data-column="{c}">{html.escape(_cell(row, c))}</td>' for c in columns
            )
            + "</tr>"
            for _, row in tests.iterrows()
        )
        return f'<table id="{table_id}"><tr>{head}</tr>{body}</table>'

    return (
        f"<h2>Is {html.escape(version_label(context.newer))} different from "
        f"{html.escape(version_label(context.baseline))}?</h2>"
        '<p class="note">Rates: two-proportion z-test; skewed metrics: Mann-Whitney U on the engine\'s fine '
        "histograms. p-values are Holm-adjusted within two families (quality; safety and content). Read the effect "
        "size too: Cliff's delta for distributions, Cohen's h for rates.</p>"
        + table(TEST_COLUMNS, "tests")
        + "<details><summary>Test details: scorers, statistics, raw p-values, sample sizes</summary>"
        + table(TEST_DETAIL_COLUMNS, "test-details")
        + "</details>"
    )


def _cell(row: pd.Series, column: str) -> str:
    value: Any = row[column]
    if isinstance(value, str):
        return value
    if value is None or value != value:
        return "–"
    if column in ("p_holm", "p_value"):
        return "< 0.001" if value < 0.001 else f"{value:.3f}"
    if column in ("n_baseline", "n_comparison"):
        return f"{int(value):,}"
    if column in ("baseline", "comparison", "difference") and row["key"] in _RATES:
        return f"{value:+.2%}" if column == "difference" else f"{value:.2%}"
    if column == "difference":
        return f"{value:+,.0f}" if abs(value) >= 1000 else f"{value:+,.3g}"
    return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def _section_html(section: Section, div_id: str) -> str:
    parts = [f"<h2>{html.escape(section.title)}</h2>"]
    if section.figure is not None:
        parts.append(
            pio.to_html(
                for_export(section.figure),
                full_html=False,
                include_plotlyjs=False,
                div_id=div_id,
                config=PLOTLY_CONFIG | {"toImageButtonOptions": {"format": "png", "scale": 2, "filename": div_id}},
            )
        )
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in section.notes]
    if section.sql:
        parts.append(_sql_html(section.sql, "SQL for this chart"))
    return "\n".join(parts)


def _sql_html(frames: Sequence[Shown], label: str) -> str:
    """As the page's "SQL for this chart": the Databricks SQL to paste, and on another engine the SQL that ran."""
    if not frames:
        return ""
    blocks = []
    for frame in frames:
        blocks.append(f'<p class="note">Databricks SQL:</p><pre class="sql">{html.escape(frame.databricks_sql)}</pre>')
        if frame.dialect != "databricks":
            name = DIALECT_NAMES.get(frame.dialect, frame.dialect)
            blocks.append(
                f'<p class="note">As it ran here ({name}):</p><pre class="sql">{html.escape(frame.sql)}</pre>'
            )
    return f"<details><summary>{html.escape(label)}</summary>{''.join(blocks)}</details>"


def figures_json(document: str) -> list[dict[str, Any]]:
    """The Plotly figures written into a report (for tests and tools that read one back)."""
    found, decoder, start = [], json.JSONDecoder(), 0
    marker = "Plotly.newPlot("
    while (at := document.find(marker, start)) != -1:
        cursor = document.index(",", at) + 1  # past the div id
        data, end = decoder.raw_decode(document, document.index("[", cursor))
        layout, end = decoder.raw_decode(document, document.index("{", end))
        found.append({"data": data, "layout": layout})
        start = end
    return found
