"""Pure chart builders: data frames in, Plotly figures out. No Streamlit, no queries."""

from __future__ import annotations

import html
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.rollout import Marker
from core.timeseries import smoothed

# Indexed by numeric version modulo 10, so version 6 is always blue and 7 always orange on every page.
PALETTE = (
    "#54A24B",
    "#E45756",
    "#72B7B2",
    "#B279A2",
    "#FF9DA6",
    "#9D755D",
    "#4C78A8",
    "#F58518",
    "#EECA3B",
    "#BAB0AC",
)


def version_color(version: str) -> str:
    try:
        index = int(float(version))
    except ValueError:
        index = zlib.crc32(version.encode())
    return PALETTE[index % len(PALETTE)]


def _layout(fig: go.Figure, title: str, y_title: str, x_title: str = "Time (UTC)") -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left"},
        xaxis_title=x_title,
        yaxis_title=y_title,
        legend_title_text="Model version",
        hovermode="x unified",
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        height=420,
    )
    return fig


# --- Low-count buckets and smoothing: the one rule every time chart follows ----------------------------------

MIN_COUNT = 30  # buckets with fewer values are drawn faded: their figure is too noisy to read on its own
FADED = 0.2  # opacity of a bucket below the minimum count
SMOOTH_HELP = (
    "Draws a rolling mean over this many buckets (centred) over the raw points, which stay visible behind it. "
    "Each bucket weighs as many values as it holds, so the smoothed value is the mean of all values in the "
    "window, not a mean of bucket means. 1 = no smoothing."
)


def strength(counts: np.ndarray, min_count: int) -> np.ndarray:
    """Each bucket's opacity: full at or above the minimum count, faded below."""
    return np.where(np.asarray(counts, dtype=np.float64) >= min_count, 1.0, FADED).astype(np.float32)


def enough(values: np.ndarray, counts: np.ndarray, min_count: int) -> np.ndarray:
    """The values of well-filled buckets, NaN elsewhere: what a line may join (a thin bucket stays a dot)."""
    return np.where(np.asarray(counts, dtype=np.float64) >= min_count, np.asarray(values, dtype=np.float64), np.nan)


def time_series(
    x: object,
    y: np.ndarray,
    counts: np.ndarray,
    *,
    name: str,
    colour: str,
    min_count: int = MIN_COUNT,
    window: int = 1,
    hovertemplate: str | None = None,
    customdata: object = None,
    dash: str = "solid",
    legendgroup: str | None = None,
    showlegend: bool = True,
    count_word: str = "values",
    weights: np.ndarray | None = None,
) -> list[go.Scatter]:
    """One series of a time chart as traces: a line joining only buckets with at least `min_count` values, a dot
    per bucket (faded below it; the dots carry hover and selection data), and with `window` > 1 a count-weighted
    rolling mean drawn over them (`core.timeseries.smoothed`), itself left out where its window holds too few.
    `weights` replace the counts as smoothing weights (a total per bucket: equal weights; a rate: minutes)."""
    group = legendgroup or name
    y = np.asarray(y, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    smoothing = window > 1
    traces = [
        go.Scatter(
            x=x, y=enough(y, counts, min_count), name=name, legendgroup=group, showlegend=showlegend, mode="lines",
            connectgaps=False, hoverinfo="skip", opacity=0.45 if smoothing else 1.0,
            line={"color": colour, "dash": dash, "width": 1 if smoothing else 2},
        ),
        go.Scatter(
            x=x, y=y, name=name, legendgroup=group, showlegend=False, mode="markers",
            marker={"color": colour, "size": 5, "opacity": strength(counts, min_count)},
            customdata=customdata, hovertemplate=hovertemplate,
        ),
    ]  # fmt: skip
    if smoothing:
        mean, _ = smoothed(y, counts if weights is None else weights, window)
        _, behind = smoothed(y, counts, window)
        traces.append(
            go.Scatter(
                x=x, y=enough(mean, behind, min_count), name=f"{name} ({window}-bucket mean)", legendgroup=group,
                showlegend=False, mode="lines", connectgaps=False, line={"color": colour, "dash": dash, "width": 3},
                customdata=behind, hovertemplate=f"smoothed %{{y:.4g}} over %{{customdata:,}} {count_word}"
                f"<extra>{name}</extra>",
            )
        )  # fmt: skip
    return traces


# --- Rollout markers -------------------------------------------------------------------------------------------

MARKER_COLOUR = "#6B7280"


def with_markers(fig: go.Figure, markers: Sequence[Marker]) -> go.Figure:
    """Each rollout marker as a dotted vertical rule across the plot and a short label above it (staggered on three
    rows so neighbours do not overlap); hovering the label lists what changed. The figure's x axis is a date axis."""
    for position, marker in enumerate(markers):
        at = pd.Timestamp(marker.at).strftime("%Y-%m-%d %H:%M:%S")
        fig.add_shape(
            type="line", x0=at, x1=at, xref="x", y0=0, y1=1, yref="paper", layer="below",
            line={"color": MARKER_COLOUR, "width": 1, "dash": "dot"},
        )  # fmt: skip
        fig.add_annotation(
            x=at, xref="x", y=1.0 - 0.045 * (position % 3), yref="paper", yanchor="top", xanchor="left",
            text=html.escape(marker.label), showarrow=False, font={"size": 10, "color": "#374151"},
            bgcolor="rgba(255,255,255,0.75)",
            hovertext="<br>".join(
                [f"<b>{pd.Timestamp(marker.at):%Y-%m-%d %H:%M} UTC</b>", *(html.escape(t) for t in marker.texts)]
            ),
        )  # fmt: skip
    return fig
