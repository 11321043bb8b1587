"""Pure chart builders: data frames in, Plotly figures out. No Streamlit, no queries."""

from __future__ import annotations

import zlib

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
