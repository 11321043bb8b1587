"""Pure chart builders and frame helpers for the Toxicity, Usage and cost, and Requests pages.

Frames in, Plotly figures out; no Streamlit, no queries. Colours and layout come from `ui.charts`, so a
version looks the same on every page.
"""

from __future__ import annotations

import calendar
import html
import textwrap
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.catalog import grain_of
from core.pricing import UNKNOWN_VERSION
from core.versions import version_label, version_sort_key
from ui.charts import MIN_COUNT, _layout, strength, time_series, version_color

Side = Literal["prompt", "response"]
Measure = Literal["mean", "share"]
PERCENTILE_DASHES = {"p50_ms": ("p50", "solid"), "p95_ms": ("p95", "dash"), "p99_ms": ("p99", "dot")}


def _by_version(frame: pd.DataFrame) -> list[tuple[object, pd.DataFrame]]:
    """Rows per model version, versions in numeric order, a missing version (None) last."""
    versions = frame["model_version"]
    known = sorted({str(v) for v in versions.dropna()}, key=version_sort_key)
    groups: list[tuple[object, pd.DataFrame]] = [(v, frame[versions.astype(str) == v]) for v in known]
    if versions.isna().any():
        groups.append((None, frame[versions.isna()]))
    return groups


def _hover_text(text: object, width: int = 70, lines: int = 6) -> str:
    """Text safe for a Plotly hover: escaped, wrapped, at most a few lines."""
    if not isinstance(text, str) or not text:
        return "(no text)"
    wrapped = textwrap.wrap(" ".join(text.split()), width) or [""]
    shown = wrapped[:lines] + (["…"] if len(wrapped) > lines else [])
    return "<br>".join(html.escape(line) for line in shown)


def _custom(*columns: pd.Series) -> np.ndarray:
    """Per-point data for Plotly: an object array keeps numbers numbers (hover formats them) beside text."""
    return np.stack([column.to_numpy(dtype=object) for column in columns], axis=1)


def _versions(versions: pd.Series) -> pd.Series:
    """Versions as text, a missing version as None (not the text "None")."""
    return versions.astype(object).map(lambda v: None if v is None or v != v else str(v))


def _iso(buckets: pd.Series) -> pd.Series:
    return pd.to_datetime(buckets).dt.strftime("%Y-%m-%dT%H:%M:%S")


# ---------------------------------------------------------------------------------------------------------
# Frame helpers
# ---------------------------------------------------------------------------------------------------------


def missing_versions(chosen: tuple[str, ...], frame: pd.DataFrame) -> list[str]:
    """Versions picked in the sidebar that have no rows in this result (no traffic in the range)."""
    present = set(frame["model_version"].dropna().astype(str)) if "model_version" in frame else set()
    return [v for v in chosen if v not in present]


def single_bucket(frame: pd.DataFrame) -> bool:
    return "bucket" in frame and frame["bucket"].nunique() == 1


def scorer_counts(trend: pd.DataFrame) -> pd.Series:
    """Scored prompts plus responses per toxicity scorer, most first; scorers that scored nothing are dropped."""
    scored = trend["prompts_scored"] + trend["responses_scored"]
    totals = scored.groupby(trend["toxicity_scorer"]).sum()
    return totals[totals > 0].sort_values(ascending=False)


def text_keys(rows: pd.DataFrame) -> tuple[tuple[datetime | None, str], ...]:
    """(request_time, request_id) of each row, as `listing.request_texts` takes them."""
    return tuple(
        (None if pd.isna(at) else pd.Timestamp(at).to_pydatetime(), str(request_id))
        for at, request_id in zip(rows["request_time"], rows["request_id"], strict=True)
    )


def with_texts(rows: pd.DataFrame, texts: pd.DataFrame) -> pd.DataFrame:
    """Rows with `prompt_text` and `response_text` joined in by request id, row order kept."""
    looked_up = texts.drop_duplicates("request_id").set_index("request_id")
    out = rows.copy()
    for column in ("prompt_text", "response_text"):
        out[column] = out["request_id"].map(looked_up[column]) if len(looked_up) else None
    return out


def epoch_ms(at: object) -> int | None:
    """A naive UTC timestamp as epoch milliseconds (the payload's timestamp_ms), None when missing."""
    if at is None or pd.isna(at):
        return None
    return int(pd.Timestamp(at).value // 1_000_000)


def flagged_total(shares: pd.DataFrame, target: str, points: tuple[tuple[datetime, str | None], ...]) -> int | None:
    """How many prompts or responses reach the threshold, summed from the share rows (restricted to the
    picked (bucket, version) points, which must be buckets of these rows). None for "either": a request
    with both a toxic prompt and a toxic response must be counted once, which needs the requests."""
    if target not in ("prompt", "response"):
        return None
    rows = shares
    if points:
        picked = {(pd.Timestamp(b), v) for b, v in points}
        versions = _versions(shares["model_version"])
        keep = [(pd.Timestamp(b), v) in picked for b, v in zip(shares["bucket"], versions, strict=True)]
        rows = shares[keep]
    return int(rows[f"{target}s_flagged"].sum())


# ---------------------------------------------------------------------------------------------------------
# Toxicity
# ---------------------------------------------------------------------------------------------------------


def with_toxicity_shares(tox: pd.DataFrame) -> pd.DataFrame:
    """Add `prompt_share` and `response_share`: flagged / scored, NaN where nothing was scored."""
    out = tox.copy()
    for side in ("prompt", "response"):
        scored = out[f"{side}s_scored"].astype("float64")
        out[f"{side}_share"] = out[f"{side}s_flagged"].astype("float64") / scored.where(scored > 0)
    return out


def toxicity_by_version(share_rows: pd.DataFrame) -> pd.DataFrame:
    """Per version (requests without one in their own row): prompts and responses scored and flagged, and the
    flagged shares, summed over the share rows' buckets."""
    counts = ["prompts_scored", "prompts_flagged", "responses_scored", "responses_flagged"]
    return with_toxicity_shares(share_rows.groupby("model_version", dropna=False)[counts].sum().reset_index())


def toxicity_trend_chart(
    frame: pd.DataFrame,
    side: Side,
    measure: Measure,
    grain: str,
    threshold: float,
    caption: str,
    min_count: int = MIN_COUNT,
    window: int = 1,
) -> go.Figure:
    """Mean toxicity (from the trend rows) or the share at or above the threshold (from the share rows) per
    bucket and version. Points carry (version, bucket) so a selection can narrow the flagged list. Rows without a
    version are left out: a few malformed requests per bucket give 0%/100% spikes that would dominate the chart
    (the page states how many, see `unversioned_requests`). Buckets with fewer than `min_count` scored texts are
    faded dots, not joined; `window` > 1 adds a count-weighted rolling mean."""
    versioned = frame[frame["model_version"].notna()]
    rows_all = with_toxicity_shares(versioned) if measure == "share" else versioned
    column = f"{side}_share" if measure == "share" else f"{side}_mean"
    scored = f"{side}s_scored"
    fig = go.Figure()
    for version, rows in _by_version(rows_all):
        rows = rows[rows[scored] > 0]
        if rows.empty:
            continue
        extra = rows[f"{side}s_flagged"] if measure == "share" else rows[scored]
        fig.add_traces(
            time_series(
                rows["bucket"], rows[column].to_numpy(np.float64), rows[scored].to_numpy(np.float64),
                name=version_label(version), colour=version_color(str(version)), min_count=min_count,
                window=window, count_word=f"scored {side}s",
                customdata=_custom(_versions(rows["model_version"]), _iso(rows["bucket"]), rows[scored], extra),
                hovertemplate=(
                    "%{y:.1%}: %{customdata[3]:,} of %{customdata[2]:,} scored<extra>%{fullData.name}</extra>"
                    if measure == "share"
                    else "mean %{y:.3f} over %{customdata[2]:,} scored<extra>%{fullData.name}</extra>"
                ),
            )
        )  # fmt: skip
    what = "prompt" if side == "prompt" else "response"
    if measure == "share":
        title = f"Share of {what}s at or above {threshold:.2f}, per {grain}"
        fig = _layout(fig, f"{title}<br><sup>{html.escape(caption)}</sup>", f"Share of scored {what}s")
        fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    else:
        title = f"Mean {what} toxicity per {grain}"
        fig = _layout(fig, f"{title}<br><sup>{html.escape(caption)}</sup>", "Mean toxicity (probability 0-1)")
        fig.add_hline(y=threshold, line_dash="dot", line_color="grey", annotation_text=f"threshold {threshold:.2f}")
        fig.update_yaxes(range=[0, 1])
    # Half-width charts: the legend goes above the plot so the plot keeps its width.
    fig.update_layout(
        clickmode="event+select", dragmode="select",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "left", "x": 0, "title_text": ""},
        margin={"t": 90},
    )  # fmt: skip
    return fig


def unversioned_requests(trend: pd.DataFrame) -> int:
    """Requests without a model version in the toxicity trend rows (left out of the per-version charts)."""
    return int(trend.loc[trend["model_version"].isna(), "requests"].sum())


def toxicity_scatter(sample: pd.DataFrame, threshold: float, caption: str, mode: str) -> go.Figure:
    """Each sampled prompt at its time and toxicity; hover shows the prompt. Points carry the request id."""
    fig = go.Figure()
    for version, rows in _by_version(sample):
        fig.add_trace(
            go.Scattergl(
                x=rows["request_time"],
                y=rows["prompt_toxicity"],
                mode="markers",
                name=version_label(version),
                marker={"color": version_color(str(version)), "size": 7, "opacity": 0.75},
                customdata=_custom(rows["request_id"], rows["prompt_preview"].map(_hover_text)),
                hovertemplate="toxicity %{y:.3f}<br>%{customdata[1]}<extra>%{fullData.name}</extra>",
            )
        )
    fig.add_hline(y=threshold, line_dash="dot", line_color="grey", annotation_text=f"threshold {threshold:.2f}")
    which = f"{len(sample):,} most toxic prompts" if mode == "top" else f"a fixed sample of {len(sample):,} prompts"
    fig = _layout(fig, f"Prompts by toxicity: {which}<br><sup>{html.escape(caption)}</sup>", "Prompt toxicity (0-1)")
    fig.update_yaxes(range=[-0.02, 1.02])
    fig.update_layout(hovermode="closest", clickmode="event+select", dragmode="select")
    return fig


def selected_points(selection: Mapping[str, Any] | None) -> tuple[tuple[datetime, str | None], ...]:
    """(bucket start, model version or None) of the points picked on a trend chart, in a stable order."""
    picked = set()
    for point in (selection or {}).get("points", []):
        data = point.get("customdata")
        if isinstance(data, list | tuple) and len(data) >= 2:
            picked.add((datetime.fromisoformat(str(data[1])), None if data[0] is None else str(data[0])))
    return tuple(sorted(picked, key=lambda p: (p[0], p[1] is None, p[1] or "")))


def selected_request_ids(selection: Mapping[str, Any] | None) -> list[str]:
    """Request ids of the points picked on the scatter, in selection order, without repeats."""
    ids: list[str] = []
    for point in (selection or {}).get("points", []):
        data = point.get("customdata")
        if isinstance(data, list | tuple) and data and str(data[0]) not in ids:
            ids.append(str(data[0]))
    return ids


# ---------------------------------------------------------------------------------------------------------
# Usage and cost
# ---------------------------------------------------------------------------------------------------------


def bucket_minutes(start: pd.Timestamp, grain: str, first: date | None = None, last: date | None = None) -> float:
    """Minutes of a bucket inside the selected dates (edge weeks and months are only partly selected)."""
    start = pd.Timestamp(start)
    if grain == "month":
        end = start + timedelta(days=calendar.monthrange(start.year, start.month)[1])
    else:
        end = start + timedelta(minutes=grain_of(grain).minutes)
    if first is not None:
        start = max(start, pd.Timestamp(first))
    if last is not None:
        end = min(end, pd.Timestamp(last) + timedelta(days=1))
    return max((end - start).total_seconds() / 60, 0.0)


def with_request_rate(usage: pd.DataFrame, grain: str, first: date | None, last: date | None) -> pd.DataFrame:
    """Add `bucket_minutes` and `requests_per_minute` (the bucket's average rate)."""
    out = usage.copy()
    out["bucket_minutes"] = [bucket_minutes(b, grain, first, last) for b in out["bucket"]]
    out["requests_per_minute"] = out["requests"] / out["bucket_minutes"].where(out["bucket_minutes"] > 0)
    return out


def tokens_chart(usage: pd.DataFrame, grain: str, min_count: int = MIN_COUNT, window: int = 1) -> go.Figure:
    """Prompt (solid) and completion (dashed) tokens per bucket and version; buckets with fewer than `min_count`
    requests faded, and with `window` > 1 a rolling mean of the bucket totals."""
    fig = go.Figure()
    for version, rows in _by_version(usage):
        counts = rows["requests"].to_numpy(np.float64)
        for column, dash, what in (("prompt_tokens", "solid", "prompt"), ("completion_tokens", "dash", "completion")):
            fig.add_traces(
                time_series(
                    rows["bucket"], rows[column].to_numpy(np.float64), counts,
                    name=f"{version_label(version)} {what}", colour=version_color(str(version)), dash=dash,
                    legendgroup=str(version), min_count=min_count, window=window, weights=np.ones(len(rows)),
                    count_word="requests", customdata=counts,
                    hovertemplate=f"%{{y:,}} {what} tokens (%{{customdata:,}} requests)"
                    "<extra>%{fullData.name}</extra>",
                )
            )  # fmt: skip
    return _layout(fig, f"Tokens per {grain}: prompt (solid) and completion (dashed)", f"Tokens per {grain}")


def token_source_chart(summary: pd.DataFrame) -> go.Figure:
    """Per version (rows of `pricing.cost_summary`), tokens reported by the endpoint and tokens the parser
    estimated because the response carried no `usage`."""
    fig = go.Figure()
    versions, reported, estimated, colors = [], [], [], []
    named = summary.assign(model_version=summary["model_version"].replace({UNKNOWN_VERSION: None}))
    for version, rows in _by_version(named):
        total = rows["prompt_tokens"].sum() + rows["completion_tokens"].sum()
        guessed = rows["estimated_prompt_tokens"].sum() + rows["estimated_completion_tokens"].sum()
        versions.append(version_label(version))
        reported.append(total - guessed)
        estimated.append(guessed)
        colors.append(version_color(str(version)))
    fig.add_trace(
        go.Bar(
            x=versions,
            y=reported,
            name="reported by the endpoint",
            marker_color=colors,
            hovertemplate="%{y:,} reported tokens<extra></extra>",
        )
    )
    fig.add_trace(
        go.Bar(
            x=versions,
            y=estimated,
            name="estimated (no usage in the response)",
            marker={"color": colors, "pattern": {"shape": "/"}, "opacity": 0.6},
            hovertemplate="%{y:,} estimated tokens<extra></extra>",
        )
    )
    fig.update_layout(barmode="stack")
    fig = _layout(fig, "Reported vs estimated tokens by version", "Tokens", x_title="Model version")
    fig.update_layout(legend_title_text="Token counts", hovermode="closest")
    return fig


def cost_chart(costed: pd.DataFrame, grain: str, min_count: int = MIN_COUNT) -> go.Figure:
    """Estimated cost per bucket for priced versions only; unpriced versions are left out, not drawn at $0.
    Bars of buckets with fewer than `min_count` requests are faded."""
    fig = go.Figure()
    priced = costed[costed["priced"]]
    for version, rows in _by_version(priced):
        fig.add_trace(
            go.Bar(
                x=rows["bucket"],
                y=rows["cost"],
                name=version_label(version),
                marker={"color": version_color(str(version)), "opacity": strength(rows["requests"], min_count)},
                hovertemplate="$%{y:,.4f}<extra>%{fullData.name}</extra>",
            )
        )
    fig.update_layout(barmode="stack", bargap=0)
    return _layout(fig, f"Estimated cost per {grain} (priced versions)", f"USD per {grain}")


def latency_chart(latency: pd.DataFrame, grain: str, min_count: int = MIN_COUNT, window: int = 1) -> go.Figure:
    """p50/p95/p99 per version at hour grain and coarser; below an hour, mean with a ±1 sd band. Buckets with
    fewer than `min_count` latencies are faded dots; `window` > 1 adds a count-weighted rolling mean."""
    fig = go.Figure()
    percentiles = all(column in latency.columns for column in PERCENTILE_DASHES)
    for version, rows in _by_version(latency):
        color, label = version_color(str(version)), version_label(version)
        counts = rows["latency_n"].to_numpy(np.float64)
        common = {"colour": color, "legendgroup": str(version), "min_count": min_count, "window": window,
                  "count_word": "latencies", "customdata": counts}  # fmt: skip
        if percentiles:
            for column, (name, dash) in PERCENTILE_DASHES.items():
                fig.add_traces(
                    time_series(
                        rows["bucket"], rows[column].to_numpy(np.float64), counts, name=f"{label} {name}", dash=dash,
                        hovertemplate=f"{name} %{{y:,.0f}} ms of %{{customdata:,}}<extra>{label}</extra>", **common,
                    )
                )  # fmt: skip
        else:
            spread = rows["std_ms"].fillna(0)
            band_x = pd.concat([rows["bucket"], rows["bucket"].iloc[::-1]])
            band_y = pd.concat([rows["mean_ms"] + spread, (rows["mean_ms"] - spread).clip(lower=0).iloc[::-1]])
            fig.add_trace(
                go.Scatter(
                    x=band_x,
                    y=band_y,
                    fill="toself",
                    fillcolor=color,
                    opacity=0.2,
                    line={"width": 0},
                    name=f"{label} ±1 sd",
                    legendgroup=str(version),
                    hoverinfo="skip",
                )
            )
            fig.add_traces(
                time_series(
                    rows["bucket"], rows["mean_ms"].to_numpy(np.float64), counts, name=f"{label} mean",
                    hovertemplate=f"mean %{{y:,.0f}} ms of %{{customdata:,}}<extra>{label}</extra>", **common,
                )
            )  # fmt: skip
    title = (
        f"Latency percentiles per {grain}: p50 solid, p95 dashed, p99 dotted"
        if percentiles
        else f"Latency per {grain}: mean ± 1 standard deviation; pick hour or coarser for p50/p95/p99"
    )
    return _layout(fig, title, "Latency (ms)")


def request_rate_chart(rated: pd.DataFrame, grain: str, min_count: int = MIN_COUNT, window: int = 1) -> go.Figure:
    """Average requests per minute in each bucket (solid) and its busiest minute (dotted). Buckets with fewer than
    `min_count` requests are faded; `window` > 1 adds the rolling rate (requests over minutes in the window)."""
    fig = go.Figure()
    for version, rows in _by_version(rated):
        color, label = version_color(str(version)), version_label(version)
        counts = rows["requests"].to_numpy(np.float64)
        fig.add_traces(
            time_series(
                rows["bucket"], rows["requests_per_minute"].to_numpy(np.float64), counts, name=f"{label} average",
                colour=color, legendgroup=str(version), min_count=min_count, window=window, count_word="requests",
                weights=rows["bucket_minutes"].to_numpy(np.float64), customdata=counts,
                hovertemplate="%{y:,.2f} requests/min on average (%{customdata:,})<extra>" + label + "</extra>",
            )
        )  # fmt: skip
        if grain != "minute":
            fig.add_traces(
                time_series(
                    rows["bucket"], rows["peak_requests_per_minute"].to_numpy(np.float64), counts,
                    name=f"{label} busiest minute", colour=color, dash="dot", legendgroup=str(version),
                    min_count=min_count, hovertemplate="%{y:,} in the busiest minute<extra>" + label + "</extra>",
                )
            )  # fmt: skip
    title = "Requests per minute" if grain == "minute" else f"Requests per minute: {grain} average and busiest minute"
    return _layout(fig, title, "Requests per minute")
