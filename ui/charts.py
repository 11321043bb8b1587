"""Pure chart builders: data frames in, Plotly figures out. No Streamlit, no queries."""

from __future__ import annotations

import zlib

import pandas as pd
import plotly.graph_objects as go

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


def version_label(version: object) -> str:
    return f"v{version}" if version is not None and str(version) != "nan" else "unknown version"


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


def volume_chart(volume: pd.DataFrame, grain: str) -> go.Figure:
    """Requests per time bucket, stacked by model version, so a rollout shows as one colour taking over."""
    fig = go.Figure()
    for version, rows in volume.groupby("model_version", dropna=False, sort=True):
        fig.add_trace(
            go.Bar(
                x=rows["bucket"],
                y=rows["requests"],
                name=version_label(version),
                marker_color=version_color(str(version)),
                customdata=rows[["errors"]],
                hovertemplate="%{y:,} requests (%{customdata[0]:,} errors)<extra>%{fullData.name}</extra>",
            )
        )
    fig.update_layout(barmode="stack", bargap=0)
    return _layout(fig, f"Requests per {grain} by model version", f"Requests per {grain}")
