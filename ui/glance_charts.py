"""Pure chart builders for the Overview's "At a glance" figure: panels in (`core.glance`), Plotly figures out.

Both figures are laid out to be pasted into a slide: titled, with large type, readable at 1280 x 720.
"""

from __future__ import annotations

import html
from datetime import date

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.glance import GlancePanel, seed_shares
from core.versions import version_label
from data_access.queries import Filters
from ui.charts import version_color

SLIDE = {"width": 1280, "height": 720}  # a 16:9 slide; the PNG download uses it
FONT = {"family": "Helvetica, Arial, sans-serif", "size": 15}


BARS_CAPTION = (
    "Bars: each version's value (the cards' numbers); whiskers: 95% interval (Wilson for the share, normal for the "
    "mean, distribution-free for the median). Above each panel, the verdict of the test in the table below, "
    "Holm-adjusted; below it, the scorer and the number of values behind each bar."
)


def subtitle(filters: Filters, window: tuple[date, date] | None, versions: list[str]) -> str:
    """Which versions, dates and endpoints a figure covers, in one line."""
    names = " vs ".join(version_label(v) for v in versions)
    if window is not None:
        dates = f"{window[0]} to {window[1]}, the days both served"
    elif filters.start is not None and filters.end is not None:
        dates = f"{filters.start} to {filters.end}"
    else:
        dates = "all dates"
    endpoints = ", ".join(filters.endpoints) if filters.endpoints else "all endpoints"
    return f"{names} · {dates} (UTC) · {endpoints}"


def _scorer_line(panel: GlancePanel) -> str:
    return f"scorer: {html.escape(panel.scorer)}" if panel.scorer else "no scorer shared by the versions"


def _n_line(panel: GlancePanel) -> str:
    return "n = " + " · ".join(f"{version_label(v.version)} {v.n:,}" for v in panel.values)


def _wrap(text: str, width: int = 44) -> str:
    """Plotly draws no automatic line breaks: break long scorer ids and verdicts by hand."""
    words, lines, line = text.split(" "), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "<br>".join([*lines, line])


def glance_figure(panels: list[GlancePanel], subtitle: str, height: int = SLIDE["height"]) -> go.Figure:
    """One bar per version and measure with its 95% interval; each panel names its scorer, its n and the test's
    verdict."""
    fig = make_subplots(
        rows=1,
        cols=len(panels),
        subplot_titles=[f"<b>{html.escape(p.title)}</b><br>{_wrap(p.verdict)}" for p in panels],
        horizontal_spacing=0.09,
    )
    for column, panel in enumerate(panels, start=1):
        labels = [version_label(v.version) for v in panel.values]
        values = [v.value for v in panel.values]
        fig.add_trace(
            go.Bar(
                x=labels,
                y=values,
                marker_color=[version_color(v.version) for v in panel.values],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [v.high - v.value for v in panel.values],
                    "arrayminus": [v.value - v.low for v in panel.values],
                    "color": "#333333",
                    "thickness": 2,
                    "width": 10,
                },
                customdata=[
                    [panel.text(v.low), panel.text(v.high), f"{v.n:,}", panel.text(v.value)] for v in panel.values
                ],
                hovertemplate="%{customdata[3]} (95% interval %{customdata[0]} to %{customdata[1]}), "
                "%{customdata[2]} values<extra>%{x}</extra>",
                name=panel.title,
                showlegend=False,
            ),
            row=1,
            col=column,
        )
        fig.update_xaxes(
            tickvals=labels,
            ticktext=[f"{label}: <b>{panel.text(v.value)}</b>" for label, v in zip(labels, panel.values, strict=True)],
            tickfont={"size": 17},
            title_text=f"{_wrap(_scorer_line(panel), 40)}<br>{_n_line(panel)}",
            title_font={"size": 12, "color": "#555555"},
            row=1,
            col=column,
        )
        fig.update_yaxes(rangemode="tozero", tickformat=".1%" if panel.percent else None, row=1, col=column)
    fig.update_annotations(font={"size": 15})  # the panel titles
    fig.update_layout(
        title=_title(f"<b>At a glance</b><br><sup>{html.escape(subtitle)} · whiskers: 95% intervals</sup>"),
        font=FONT,
        height=height,
        margin={"l": 60, "r": 20, "t": 170, "b": 110},
        bargap=0.35,
        plot_bgcolor="white",
        hovermode="closest",
    )
    fig.update_yaxes(gridcolor="#e5e5e5", zerolinecolor="#999999")
    return fig


SEED_CAVEAT = (
    "The seed's pie style: each slice is a version's value as a share of the values summed over the versions. "
    "It shows neither the values' scale nor their intervals nor whether a difference is real: read the bars for that."
)


def seed_pie_figure(panels: list[GlancePanel], subtitle: str, height: int = SLIDE["height"]) -> go.Figure:
    """The seed write-up's three pies, on the same numbers as `glance_figure`."""
    fig = make_subplots(
        rows=1,
        cols=len(panels),
        specs=[[{"type": "domain"}] * len(panels)],
        subplot_titles=[
            f"<b>{html.escape(p.short)}</b>: share of the summed {_what(p)}<br>"
            f"<span style='font-size:12px;color:#555555'>{_wrap(_scorer_line(p), 48)}<br>{_n_line(p)}</span>"
            for p in panels
        ],
    )
    for column, panel in enumerate(panels, start=1):
        shares = seed_shares(panel)
        fig.add_trace(
            go.Pie(
                labels=[version_label(v.version) for v in panel.values],
                values=[v.value for v in panel.values],
                marker={"colors": [version_color(v.version) for v in panel.values]},
                sort=False,
                direction="clockwise",
                text=[f"{panel.text(v.value)}<br>{s:.0%}" for v, s in zip(panel.values, shares, strict=True)],
                textinfo="label+text",
                textposition="inside",
                insidetextorientation="horizontal",
                textfont={"size": 16},
                hovertemplate="%{label}: %{text} of the sum<extra>" + html.escape(panel.short) + "</extra>",
                name=panel.short,
            ),
            row=1,
            col=column,
        )
    fig.update_annotations(font={"size": 15}, yshift=30)
    fig.update_layout(
        title=_title(
            f"<b>At a glance, the seed's pie style</b><br>"
            f"<sup>{html.escape(subtitle)}<br>{_wrap(SEED_CAVEAT, 150)}</sup>"
        ),
        font=FONT,
        height=height,
        margin={"l": 20, "r": 20, "t": 230, "b": 40},
        legend={"orientation": "h", "y": -0.02, "x": 0.5, "xanchor": "center"},
    )
    return fig


def _title(text: str) -> dict[str, object]:
    """A slide title at the top left, its subtitle lines below it."""
    return {"text": text, "x": 0.01, "xanchor": "left", "y": 0.96, "yanchor": "top", "font": {"size": 22}}


def _what(panel: GlancePanel) -> str:
    return "rate" if panel.percent else "median" if panel.title.startswith("Median") else "mean"
