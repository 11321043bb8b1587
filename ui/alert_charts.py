"""Pure chart builders for the Alerts page: a rule's value over its evaluations against its limit."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ui.charts import FADED

STATE_COLORS = {"firing": "#E45756", "resolved": "#54A24B", "ok": "#4C78A8", "insufficient data": "#BAB0AC"}
STATE_ICONS = {"firing": "🔴", "resolved": "🟢", "ok": "🔵", "insufficient data": "⚪"}


def sparkline(history: pd.DataFrame, limit: float | None, title: str) -> go.Figure:
    """The value at each evaluation (points coloured by state), and the limit as a dashed line."""
    fig = go.Figure()
    rows = history.sort_values("evaluated_at")
    fig.add_trace(
        go.Scatter(
            x=rows["evaluated_at"],
            y=rows["value"],
            mode="lines+markers",
            name="value",
            line={"color": "#1F2A37", "width": 1.5},
            marker={
                "color": [STATE_COLORS.get(s, "#BAB0AC") for s in rows["state"]],
                "size": 7,
                # Below the rule's minimum sample the value is noise: faded, as on every time chart.
                "opacity": [FADED if s == "insufficient data" else 1.0 for s in rows["state"]],
            },
            customdata=rows[["state", "samples"]],
            hovertemplate="%{y:.4g} · %{customdata[0]} · %{customdata[1]:,} values<extra></extra>",
            connectgaps=False,
        )
    )
    if limit is not None and limit == limit:
        fig.add_hline(y=limit, line={"dash": "dash", "color": STATE_COLORS["firing"], "width": 1})
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "font": {"size": 13}},
        height=170,
        margin={"l": 10, "r": 10, "t": 32, "b": 10},
        showlegend=False,
        xaxis_title=None,
        yaxis_title=None,
    )
    return fig
