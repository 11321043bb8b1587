"""Pure chart builders for the Overview, Trends and Drift pages: frames in, Plotly figures out.

Time axes carry epoch milliseconds as float arrays on a date axis, so Plotly ships them as compact binary
arrays and WebGL draws a month of minutes (tens of thousands of points per version) without stalling.
Colours and layout come from `ui.charts`, so a version looks the same on every page.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core import stats
from core.catalog import NONPOSITIVE_BIN, Binning, MetricInfo
from core.timeseries import smoothed
from core.versions import version_label, version_sort_key
from ui.charts import MIN_COUNT, _layout, enough, strength, version_color

PSI_AXIS_FLOOR = 1e-4


def epoch_ms(values: pd.Series) -> np.ndarray:
    """Timestamps (naive UTC) as float milliseconds since the epoch."""
    stamps = pd.to_datetime(values)
    return (stamps.to_numpy(dtype="datetime64[ms]").astype(np.int64)).astype(np.float64)


def by_version(frame: pd.DataFrame, column: str = "model_version") -> list[tuple[object, pd.DataFrame]]:
    """Rows per version, numeric versions in order, a missing version last."""
    missing = frame[column].isna()
    versions = sorted(frame.loc[~missing, column].unique(), key=lambda v: version_sort_key(str(v)))
    groups: list[tuple[object, pd.DataFrame]] = [(v, frame[frame[column] == v]) for v in versions]
    # Not groupby(dropna=False): pandas 2.3 fails on a None key in an object column.
    return groups + ([(None, frame[missing])] if missing.any() else [])


def rgba(hex_colour: str, alpha: float) -> str:
    red, green, blue = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def _date_axis(fig: go.Figure) -> go.Figure:
    fig.update_xaxes(type="date", hoverformat="%Y-%m-%d %H:%M")
    return fig


# --- Overview ----------------------------------------------------------------------------------------------


def shares(traffic: pd.DataFrame) -> pd.DataFrame:
    """Per bucket, each version's share of requests (rows of a bucket sum to 1); missing version is a column."""
    table = traffic.assign(version=traffic["model_version"].map(version_label))
    wide = table.pivot_table(index="bucket", columns="version", values="requests", aggfunc="sum", fill_value=0)
    return wide.div(wide.sum(axis=1), axis=0)


def _polygon(x: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The outline of the area between two lines, for a WebGL 'toself' fill ('tonexty' does not draw in WebGL)."""
    return np.concatenate([x, x[::-1]]), np.concatenate([upper, lower[::-1]])


def scorers_by_output(trend: pd.DataFrame) -> list[str | None]:
    """The scorers behind a metric trend's rows, the one with the most values first (None: scorer unknown)."""
    produced = trend.assign(scorer=trend["scorer"].fillna("")).groupby("scorer")["n"].sum()
    return [scorer or None for scorer in produced.sort_values(ascending=False).index]


def share_chart(traffic: pd.DataFrame, grain: str, min_count: int = MIN_COUNT) -> go.Figure:
    """Each version's share of requests per bucket, stacked to 100%: a rollout is one colour taking over.
    Buckets with fewer than `min_count` requests are left out (a bucket of one request is 100% of something)."""
    fig = go.Figure()
    totals = traffic.groupby("bucket")["requests"].sum()
    traffic = traffic[traffic["bucket"].isin(totals.index[totals >= min_count])]
    share = shares(traffic)
    x = epoch_ms(pd.Series(share.index))
    bottom = np.zeros(len(share))
    for version, _ in by_version(traffic):
        label, colour = version_label(version), version_color(str(version))
        top = bottom + share[label].to_numpy() * 100
        outline_x, outline_y = _polygon(x, top, bottom)
        fig.add_trace(
            go.Scattergl(
                x=outline_x,
                y=outline_y,
                name=label,
                legendgroup=label,
                mode="lines",
                fill="toself",
                fillcolor=rgba(colour, 0.6),
                line={"width": 0},
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scattergl(
                x=x,
                y=top,
                name=label,
                legendgroup=label,
                showlegend=False,
                mode="lines",
                line={"color": colour, "width": 1},
                customdata=share[label].to_numpy() * 100,
                hovertemplate="%{customdata:.1f}% of requests<extra>%{fullData.name}</extra>",
            )
        )
        bottom = top
    fig.update_yaxes(range=[0, 100], ticksuffix="%")
    title = (
        f"Share of requests per {grain} by model version"
        f"<br><sup>Buckets with fewer than {min_count} requests are left out.</sup>"
    )
    return _date_axis(_layout(fig, title, "Share of requests"))


def requests_chart(traffic: pd.DataFrame, grain: str, min_count: int = MIN_COUNT) -> go.Figure:
    """Requests per bucket for each version (WebGL lines and dots, so a month of minutes stays light); buckets
    with fewer than `min_count` requests are faded dots, not joined."""
    fig = go.Figure()
    for version, rows in by_version(traffic):
        counts = rows["requests"].to_numpy(np.float64)
        fig.add_trace(
            go.Scattergl(
                x=epoch_ms(rows["bucket"]),
                y=enough(counts, counts, min_count),
                name=version_label(version),
                legendgroup=version_label(version),
                mode="lines",
                connectgaps=False,
                hoverinfo="skip",
                line={"color": version_color(str(version)), "width": 1.5},
            )
        )
        fig.add_trace(
            go.Scattergl(
                x=epoch_ms(rows["bucket"]),
                y=counts,
                name=version_label(version),
                legendgroup=version_label(version),
                showlegend=False,
                mode="markers",
                marker={"color": version_color(str(version)), "size": 4, "opacity": strength(counts, min_count)},
                customdata=rows["errors"].to_numpy(np.float64),
                hovertemplate="%{y:,} requests (%{customdata:,} errors)<extra>%{fullData.name}</extra>",
            )
        )
    return _date_axis(_layout(fig, f"Requests per {grain} by model version", f"Requests per {grain}"))


def version_share_bar(totals: pd.DataFrame) -> go.Figure:
    """Each version's share of all requests in the selection."""
    fig = go.Figure()
    all_requests = totals["requests"].sum()
    for version, rows in by_version(totals):
        count = int(rows["requests"].sum())
        fig.add_trace(
            go.Bar(
                y=[version_label(version)],
                x=[100 * count / all_requests if all_requests else 0],
                orientation="h",
                name=version_label(version),
                marker_color=version_color(str(version)),
                text=[f"{count:,} requests"],
                textposition="auto",
                hovertemplate="%{x:.1f}% of requests<extra>%{fullData.name}</extra>",
            )
        )
    fig.update_layout(showlegend=False, hovermode="closest", height=80 + 50 * len(fig.data))
    fig.update_xaxes(range=[0, 100], ticksuffix="%")
    return _layout(fig, "Share of all requests in the selection", "", "Share of requests")


# --- Trends ------------------------------------------------------------------------------------------------


def trend_chart(
    trend: pd.DataFrame,
    band: pd.DataFrame | None,
    info: MetricInfo,
    grain: str,
    caption: str,
    min_count: int = MIN_COUNT,
    log_y: bool = False,
    window: int = 1,
) -> go.Figure:
    """Mean per bucket and version, a spread band, and the number of values behind each bucket.

    `log_y` draws the values on a log axis, for heavy-tailed metrics (perplexity) whose outliers flatten the rest.

    `band` holds the 10th-90th percentiles (hour grain and coarser); without it the band is mean ± one
    standard deviation, clipped to the bucket's min and max. Buckets with fewer than min_count values are
    drawn faded, and the lower panel shows the counts, so a thin bucket is not over-read. `window` > 1 draws a
    count-weighted rolling mean over that many buckets on top (`core.timeseries.smoothed`).
    """
    frame = trend
    if band is not None and not band.empty:
        frame = trend.merge(band, on=["bucket", "model_version", "scorer"], how="left")
        lower, upper, band_name = frame["p10"], frame["p90"], "10th–90th percentile"
    else:
        lower = np.maximum(frame["mean"] - frame["sd"].fillna(0), frame["lo"])
        upper = np.minimum(frame["mean"] + frame["sd"].fillna(0), frame["hi"])
        band_name = "mean ± 1 standard deviation"
    frame = frame.assign(band_low=lower, band_high=upper)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.06)
    for version, rows in by_version(frame):
        _add_version_trend(fig, version, rows, min_count, joined=grain != "minute", window=window)
    title = (
        f"{info.label} per {grain} by model version"
        f"<br><sup>Dots: mean (faded{', and not joined,' if grain != 'minute' else ''} below {min_count} values); "
        f"{'band' if grain != 'minute' else 'whiskers'}: {band_name}. {caption}</sup>"
    )
    _layout(fig, title, f"{info.label} ({info.unit})")
    fig.update_layout(height=560, margin={"t": 80})
    fig.update_yaxes(title_text=f"Values per {grain}", row=2, col=1)
    if log_y:
        fig.update_yaxes(type="log", title_text=f"{info.label} ({info.unit}, log scale)", row=1, col=1)
    fig.update_xaxes(title_text="", row=1, col=1)
    fig.update_xaxes(title_text="Time (UTC)", row=2, col=1)
    return _date_axis(fig)


def trend_download(trend: pd.DataFrame, band: pd.DataFrame | None) -> pd.DataFrame:
    """What the Trends page offers as CSV: means and counts, with the percentile band when there is one.

    `model_version` keeps the raw values ("7") as every other download does; "v7" labels belong on charts only.
    """
    if band is None:
        return trend.reset_index(drop=True)
    return trend.merge(band, on=["bucket", "model_version", "scorer"], how="left")


def _add_version_trend(
    fig: go.Figure, version: object, rows: pd.DataFrame, min_count: int, joined: bool, window: int = 1
) -> None:
    """One version's band, means and counts. Values go out as float32 (x stays float64: epoch milliseconds need
    it), which halves what a month of minutes sends to the browser."""
    colour = version_color(str(version))
    label = version_label(version)
    x = epoch_ms(rows["bucket"])
    counts = rows["n"].to_numpy(np.float32)
    low, high = rows["band_low"].to_numpy(np.float32), rows["band_high"].to_numpy(np.float32)
    means = rows["mean"].to_numpy(np.float32)
    band_bars = None
    if joined:
        banded = ~(np.isnan(low) | np.isnan(high))
        outline_x, outline_y = _polygon(x[banded], high[banded], low[banded])
        fig.add_trace(
            go.Scattergl(
                x=outline_x,
                y=outline_y,
                legendgroup=label,
                name=f"{label} band",
                mode="lines",
                fill="toself",
                fillcolor=rgba(colour, 0.18),
                line={"width": 0},
                showlegend=False,
                hoverinfo="skip",
            ),
            row=1,
            col=1,
        )
    else:  # a month of minutes: the band as thin whiskers on the dots, which sends no second copy of the times
        band_bars = {
            "type": "data",
            "symmetric": False,
            "array": high - means,
            "arrayminus": means - low,
            "color": rgba(colour, 0.12),
            "thickness": 1,
            "width": 0,
        }
    if not joined:  # a legend entry drawn solid (the dots' own symbol would take the first dot's fading)
        fig.add_trace(
            go.Scattergl(
                x=[None], y=[None], name=label, legendgroup=label, mode="markers", marker={"color": colour, "size": 8}
            ),
            row=1,
            col=1,
        )
    if joined:  # the line joins only well-filled buckets: a run of thin buckets reads as dots, not as a trend
        fig.add_trace(
            go.Scattergl(
                x=x,
                y=enough(means, counts, min_count),
                name=label,
                legendgroup=label,
                mode="lines",
                connectgaps=False,
                opacity=0.45 if window > 1 else 1.0,
                line={"color": colour, "width": 1 if window > 1 else 1.5},
                hoverinfo="skip",
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Scattergl(
            x=x,
            y=means,
            name=f"{label} mean",
            legendgroup=label,
            showlegend=False,
            mode="markers",
            marker={
                "color": colour,
                "size": 5 if joined else 3,
                "opacity": strength(counts, min_count),
            },
            error_y=band_bars,
            # Per minute the band travels once, in the whiskers; hover shows it from there.
            customdata=np.column_stack([counts, low, high]) if joined else counts[:, None],
            hovertemplate=(
                "mean %{y:.3g} (band %{customdata[1]:.3g}–%{customdata[2]:.3g}), " if joined else "mean %{y:.3g}, "
            )
            + "%{customdata[0]:,} values<extra>"
            + label
            + "</extra>",
        ),
        row=1,
        col=1,
    )
    if window > 1:
        mean, behind = smoothed(means, counts, window)
        fig.add_trace(
            go.Scattergl(
                x=x,
                y=enough(mean, behind, min_count),
                name=f"{label} {window}-bucket mean",
                legendgroup=label,
                showlegend=False,
                mode="lines",
                connectgaps=False,
                line={"color": colour, "width": 3},
                customdata=behind,
                hovertemplate="smoothed %{y:.3g} over %{customdata:,} values<extra>" + label + "</extra>",
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Scattergl(
            x=x,
            y=counts,
            name=f"{label} values",
            legendgroup=label,
            mode="lines",
            line={"color": colour, "width": 1},
            showlegend=False,
            hovertemplate="%{y:,} values<extra>" + label + "</extra>",
        ),
        row=2,
        col=1,
    )


# --- Drift -------------------------------------------------------------------------------------------------


def display_bins(rows_b: pd.DataFrame, rows_c: pd.DataFrame, binning: Binning, max_bins: int = 60) -> pd.DataFrame:
    """Fine bins merged into at most max_bins equal-width display bins (in log space for log binning).

    Returns lower, upper, baseline and comparison shares of all values (values <= 0 of a log-binned metric
    are left out of the frame; their shares are in the attrs "nonpositive_baseline"/"nonpositive_comparison").
    """
    n_b, n_c = rows_b["n"].sum(), rows_c["n"].sum()
    both = pd.concat([rows_b.assign(side="baseline"), rows_c.assign(side="comparison")])
    positive = both[both["bin"] != NONPOSITIVE_BIN]
    frame = pd.DataFrame(columns=["lower", "upper", "baseline", "comparison"])
    if not positive.empty:
        first, last = int(positive["bin"].min()), int(positive["bin"].max())
        step = max(1, math.ceil((last - first + 1) / max_bins))
        slot = (positive["bin"] - first) // step
        counts = positive.assign(slot=slot).pivot_table(
            index="slot", columns="side", values="n", aggfunc="sum", fill_value=0
        )
        counts = counts.reindex(range(int(slot.max()) + 1), fill_value=0)
        starts = first + counts.index.to_numpy() * step
        frame = pd.DataFrame(
            {
                "lower": binning.lower_edge(starts),
                "upper": binning.lower_edge(starts + step),
                "baseline": counts.get("baseline", 0) / n_b if n_b else 0.0,
                "comparison": counts.get("comparison", 0) / n_c if n_c else 0.0,
            }
        ).reset_index(drop=True)
    nonpositive = both[both["bin"] == NONPOSITIVE_BIN]
    frame.attrs["nonpositive_baseline"] = nonpositive.loc[nonpositive["side"] == "baseline", "n"].sum() / max(n_b, 1)
    frame.attrs["nonpositive_comparison"] = nonpositive.loc[nonpositive["side"] == "comparison", "n"].sum() / max(
        n_c, 1
    )
    return frame


def distribution_chart(
    display: pd.DataFrame,
    info: MetricInfo,
    binning: Binning,
    labels: tuple[str, str],
    colours: tuple[str, str],
    caption: str,
) -> go.Figure:
    """Both distributions as outlined step histograms (share of values per bin)."""
    fig = go.Figure()
    for side, label, colour in zip(("baseline", "comparison"), labels, colours, strict=True):
        x = np.append(display["lower"].to_numpy(np.float64), display["upper"].to_numpy(np.float64)[-1:])
        y = np.append(display[side].to_numpy(np.float64), display[side].to_numpy(np.float64)[-1:]) * 100
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                name=label,
                mode="lines",
                line={"shape": "hv", "color": colour, "width": 2},
                fill="tozeroy",
                fillcolor=rgba(colour, 0.2),
                hovertemplate="from %{x:.3g}: %{y:.2f}% of values<extra>%{fullData.name}</extra>",
            )
        )
    if binning.kind == "log":
        fig.update_xaxes(type="log")
    title = f"Distribution of {info.label.lower()}<br><sup>{caption}</sup>"
    fig = _layout(fig, title, "Share of values per bin (%)", f"{info.label} ({info.unit})")
    fig.update_layout(legend_title_text="", hovermode="x unified")
    return fig


def ecdf_chart(
    rows_b: pd.DataFrame,
    rows_c: pd.DataFrame,
    info: MetricInfo,
    binning: Binning,
    labels: tuple[str, str],
    colours: tuple[str, str],
) -> go.Figure:
    """Cumulative distributions at the fine bins' upper ends, with the Kolmogorov-Smirnov gap marked."""
    first, second = stats.aligned(rows_b, rows_c)
    ends = np.fmax(first.highs, second.highs)
    cdf_b = np.cumsum(first.counts) / max(first.n, 1)
    cdf_c = np.cumsum(second.counts) / max(second.n, 1)
    fig = go.Figure()
    for cdf, label, colour in ((cdf_b, labels[0], colours[0]), (cdf_c, labels[1], colours[1])):
        fig.add_trace(
            go.Scatter(
                x=ends,
                y=cdf * 100,
                name=label,
                mode="lines",
                line={"shape": "hv", "color": colour, "width": 2},
                hovertemplate="≤ %{x:.4g}: %{y:.1f}% of values<extra>%{fullData.name}</extra>",
            )
        )
    if len(ends):
        gap = int(np.argmax(np.abs(cdf_b - cdf_c)))
        fig.add_trace(
            go.Scatter(
                x=[ends[gap], ends[gap]],
                y=[cdf_b[gap] * 100, cdf_c[gap] * 100],
                mode="lines+markers",
                name=f"KS gap {abs(cdf_b[gap] - cdf_c[gap]):.1%}",
                line={"color": "black", "dash": "dot"},
                hoverinfo="skip",
            )
        )
    if binning.kind == "log" and np.nanmin(ends, initial=np.inf) > 0:
        fig.update_xaxes(type="log")
    fig = _layout(
        fig, f"Cumulative distribution of {info.label.lower()}", "Values at or below (%)", f"{info.label} ({info.unit})"
    )
    fig.update_layout(legend_title_text="", hovermode="closest")
    fig.update_yaxes(range=[0, 100])
    return fig


def psi_chart(drift: pd.DataFrame) -> go.Figure:
    """Population stability index per metric against Databricks' 0.1 and 0.2 reading thresholds (log axis, so
    both a 0.001 and an 8 are readable; values below 0.0001 are drawn at 0.0001)."""
    rows = drift.dropna(subset=["psi"]).iloc[::-1]
    colours = [
        "#54A24B" if v < stats.PSI_MODERATE else "#EECA3B" if v < stats.PSI_MAJOR else "#E45756" for v in rows["psi"]
    ]
    fig = go.Figure(
        go.Bar(
            y=rows["label"],
            x=np.maximum(rows["psi"].to_numpy(np.float64), PSI_AXIS_FLOOR),
            orientation="h",
            marker_color=colours,
            text=[f"{v:.3g}" for v in rows["psi"]],
            textposition="outside",
            customdata=np.column_stack([rows["psi"], rows["psi_reading"]]),
            hovertemplate="PSI %{customdata[0]:.4f}: %{customdata[1]}<extra></extra>",
        )
    )
    for threshold, text, side in (
        (stats.PSI_MODERATE, "moderate 0.1 ", "right"),
        (stats.PSI_MAJOR, " 0.2 major", "left"),
    ):
        fig.add_vline(x=threshold, line_dash="dash", line_color="grey")
        fig.add_annotation(
            x=math.log10(threshold), y=1.02, yref="paper", text=text, showarrow=False, yanchor="bottom", xanchor=side
        )
    fig = _layout(fig, "Population stability index by metric", "", "PSI (log scale; 0 = same distribution)")
    fig.update_xaxes(type="log", range=[math.log10(PSI_AXIS_FLOOR), math.log10(max(10.0, rows["psi"].max() * 3))])
    fig.update_layout(showlegend=False, hovermode="closest", height=140 + 32 * len(rows))
    return fig
