"""The pages' figures computed in pandas from the raw rows: the baseline of `bench.bench_pages`.

Each function returns the same columns as the catalog query of the same name (ui and views show these), computed
the way a notebook would: narrow columns loaded into a DataFrame, grouped there. Percentiles are exact (numpy's
linear rule), where the engine estimates them inside 1%-wide bins; the bench checks both agree within that.
Texts are fetched for the shown rows only, by id, as the app does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from core.catalog import GRAINS, METRIC_SCORER_COLUMN, METRICS, NONPOSITIVE_BIN, histogram_grain
from data_access.queries import Filters, listing, toxicity, usage
from data_access.schema import REQUESTS_ARROW

PANDAS_FREQ = {"minute": "min", "15 minutes": "15min", "hour": "h", "3 hours": "3h", "6 hours": "6h", "day": "D"}
TEXTS = ("prompt_text", "response_text", "retrieved_context")
NARROW = [f.name for f in REQUESTS_ARROW if f.name not in TEXTS]  # every column but the long texts
# What every figure needs: keys, filters, and the flags `prepare` derives.
BASE = ("request_id", "request_time", "date", "endpoint_name", "model_version", "status_code", "parse_error")
BASE += ("score_error",)
BOTH_TEXTS = {"prompt_text": "prompt_text", "response_text": "response_text"}
Figure = Callable[["Rows", Filters, str, str], pd.DataFrame]


class Rows:
    """The filtered month's narrow rows, and a way to fetch the texts of a few of them."""

    def __init__(self, frame: pd.DataFrame, texts: Callable[[list[str], int], pd.DataFrame], table_rows: int):
        self.frame = frame
        self.texts = texts
        self.table_rows = table_rows


def bucket(times: pd.Series, grain: str) -> pd.Series:
    if grain in PANDAS_FREQ:
        return times.dt.floor(PANDAS_FREQ[grain])
    if grain == "week":
        return (times.dt.normalize() - pd.to_timedelta(times.dt.weekday, unit="D")).astype(times.dtype)
    if grain == "month":
        return times.dt.to_period("M").dt.start_time.astype(times.dtype)
    raise ValueError(f"unknown granularity {grain!r}; choose one of {', '.join(GRAINS)}")


def fine_bin(metric: str, values: pd.Series) -> pd.Series:
    binning = METRICS[metric].binning
    x = values.to_numpy(dtype=np.float64)
    if binning.kind == "linear":
        return pd.Series(np.floor(x * binning.scale), index=values.index)
    with np.errstate(divide="ignore", invalid="ignore"):
        logged = np.floor(np.log(x) * binning.scale)
    return pd.Series(np.where(x > 0, logged, NONPOSITIVE_BIN), index=values.index)


def _group(frame: pd.DataFrame, keys: list[str | pd.Series]) -> pd.core.groupby.DataFrameGroupBy:
    return frame.groupby(keys, dropna=False, sort=True)


def version_totals(rows: Rows, filters: Filters, grain: str, metric: str) -> pd.DataFrame:
    f = rows.frame
    g = _group(f.assign(minute=f.request_time.dt.floor("min")), ["model_version"])
    return g.agg(
        requests=("request_id", "size"),
        errors=("is_error", "sum"),
        parse_errors=("has_parse_error", "sum"),
        total_tokens=("total_tokens", "sum"),
        prompt_tokens=("prompt_tokens", "sum"),
        completion_tokens=("completion_tokens", "sum"),
        first_seen=("minute", "min"),
        last_seen=("minute", "max"),
    ).reset_index()


def traffic(rows: Rows, filters: Filters, grain: str, metric: str) -> pd.DataFrame:
    f = rows.frame
    g = _group(f, [bucket(f.request_time, grain).rename("bucket"), "model_version"])
    return g.agg(requests=("request_id", "size"), errors=("is_error", "sum")).reset_index()


def histograms_by_version(rows: Rows, filters: Filters, grain: str, metric: str) -> pd.DataFrame:
    f = rows.frame
    parts = []
    for name in METRICS:
        scorer = f[METRIC_SCORER_COLUMN[name]] if name in METRIC_SCORER_COLUMN else pd.Series(None, index=f.index)
        part = pd.DataFrame({"group": f.model_version, "scorer": scorer, "x": f[name].astype("float64")})
        part = part[part.x.notna()]
        part["bin"] = fine_bin(name, part.x)
        g = _group(part, ["group", "scorer", "bin"]).x.agg(n="size", total="sum", lo="min", hi="max")
        parts.append(g.reset_index().assign(metric=name))
    return pd.concat(parts, ignore_index=True)


def metric_trend(rows: Rows, filters: Filters, grain: str, metric: str) -> pd.DataFrame:
    f = rows.frame
    scored = f[f[metric].notna()]
    scorer = scored[METRIC_SCORER_COLUMN[metric]].rename("scorer")
    g = _group(scored, [bucket(scored.request_time, grain).rename("bucket"), "model_version", scorer])[metric]
    out = g.agg(n="size", mean="mean", sd="std", lo="min", hi="max").reset_index()
    return out


def metric_band(rows: Rows, filters: Filters, grain: str, metric: str) -> pd.DataFrame:
    f = rows.frame
    scored = f[f[metric].notna()]
    scorer = scored[METRIC_SCORER_COLUMN[metric]].rename("scorer")
    g = _group(scored, [bucket(scored.request_time, grain).rename("bucket"), "model_version", scorer])[metric]
    out = g.quantile([0.1, 0.25, 0.5, 0.75, 0.9]).unstack()
    out.columns = [f"p{round(q * 100)}" for q in out.columns]
    return out.reset_index()


def rollup_freshness(rows: Rows, filters: Filters, grain: str, metric: str) -> pd.DataFrame:
    """Nothing to check without rollups: the table's row count, which pandas knows from the load."""
    n = rows.table_rows
    return pd.DataFrame({"table_requests": [n], "rollup_requests": [n], "rollup_latency": [None],
                         "histogram_latency": [None]})  # fmt: skip


def toxicity_trend(rows: Rows, filters: Filters, grain: str, metric: str) -> pd.DataFrame:
    f = rows.frame
    g = _group(f, [bucket(f.request_time, grain).rename("bucket"), "model_version", "toxicity_scorer"])
    out = g.agg(
        requests=("request_id", "size"),
        prompts_scored=("prompt_toxicity", "count"),
        prompt_mean=("prompt_toxicity", "mean"),
        responses_scored=("response_toxicity", "count"),
        response_mean=("response_toxicity", "mean"),
    )
    return out.reset_index()


def _flag(scores: pd.Series, threshold: float = toxicity.DEFAULT_THRESHOLD) -> pd.Series:
    return np.floor(scores * toxicity.TOXICITY_SCALE) >= toxicity.threshold_bin(threshold)


def toxicity_shares(rows: Rows, filters: Filters, grain: str, metric: str) -> pd.DataFrame:
    f = rows.frame
    chart_grain = histogram_grain(grain)
    keys = [bucket(f.request_time, chart_grain).rename("bucket"), "model_version", "toxicity_scorer"]
    parts = []
    for column, side in (("prompt_toxicity", "prompts"), ("response_toxicity", "responses")):
        scored = f[f[column].notna()]
        g = _group(scored.assign(flag=_flag(scored[column])), [k if isinstance(k, str) else k[scored.index]
                                                                for k in keys])  # fmt: skip
        parts.append(g.agg(**{f"{side}_scored": ("flag", "size"), f"{side}_flagged": ("flag", "sum")}))
    return pd.concat(parts, axis=1).fillna(0).astype("int64").reset_index()


def prompt_sample(rows: Rows, filters: Filters, grain: str, metric: str) -> pd.DataFrame:
    """The first scored prompts by the millisecond of the minute they arrived at, then id; previews by id."""
    f = rows.frame
    scored = f[f.prompt_toxicity.notna()]
    key = scored.request_time.dt.second * 1000 + scored.request_time.dt.microsecond // 1000
    keyed = scored.assign(_key=key).sort_values(["_key", "request_id"])
    shown = keyed.head(toxicity.SAMPLE_POINTS)[["request_id", "request_time", "model_version", "prompt_toxicity"]]
    return _with_texts(rows, shown, {"prompt_text": "prompt_preview"}, listing.PREVIEW_CHARS)


def _newest(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["request_time", "request_id"], ascending=[False, True])


def _with_texts(rows: Rows, shown: pd.DataFrame, names: dict[str, str], chars: int) -> pd.DataFrame:
    texts = rows.texts(shown.request_id.tolist(), chars).rename(columns=names)
    return shown.merge(texts[["request_id", *names.values()]], on="request_id", how="left")


def flagged_requests(rows: Rows, filters: Filters, grain: str, metric: str) -> pd.DataFrame:
    """The page's first load: prompts at or above the threshold, newest first, first page of 50."""
    f = rows.frame
    hits = f[_flag(f.prompt_toxicity).fillna(False).astype(bool)]
    columns = ["request_id", "request_time", "model_version", "toxicity_scorer", "prompt_toxicity",
               "response_toxicity", "latency_ms"]  # fmt: skip
    shown = _newest(hits).head(50)[columns]
    return _with_texts(rows, shown, BOTH_TEXTS, listing.TEXT_CHARS)


def usage_trend(rows: Rows, filters: Filters, grain: str, metric: str) -> pd.DataFrame:
    f = rows.frame
    minute = _group(f, [f.request_time.dt.floor("min").rename("minute"), "model_version"]).request_id.size()
    peak = minute.rename("peak").reset_index()
    peak = _group(peak, [bucket(peak.minute, grain).rename("bucket"), "model_version"]).peak.max()
    estimated = f.tokens_estimated.fillna(False).astype(bool)
    f = f.assign(
        guessed=estimated.astype("int64"),
        guessed_prompt=f.prompt_tokens.where(estimated),
        guessed_completion=f.completion_tokens.where(estimated),
    )
    g = _group(f, [bucket(f.request_time, grain).rename("bucket"), "model_version"])
    out = g.agg(
        requests=("request_id", "size"),
        requests_with_tokens=("prompt_tokens", "count"),
        prompt_tokens=("prompt_tokens", "sum"),
        completion_tokens=("completion_tokens", "sum"),
        estimated_requests=("guessed", "sum"),
        estimated_prompt_tokens=("guessed_prompt", "sum"),
        estimated_completion_tokens=("guessed_completion", "sum"),
        latency_n=("latency_ms", "count"),
        mean_ms=("latency_ms", "mean"),
        std_ms=("latency_ms", "std"),
        min_ms=("latency_ms", "min"),
        max_ms=("latency_ms", "max"),
    )
    return out.join(peak.rename("peak_requests_per_minute")).reset_index()


def latency_percentiles(rows: Rows, filters: Filters, grain: str, metric: str) -> pd.DataFrame:
    f = rows.frame
    timed = f[f.latency_ms.notna()]
    g = _group(timed, [bucket(timed.request_time, grain).rename("bucket"), "model_version"]).latency_ms
    out = g.quantile(list(usage.PERCENTILES)).unstack()
    out.columns = [f"p{round(q * 100)}_ms" for q in out.columns]
    return out.join(g.size().rename("latency_n")).reset_index()


def status_counts(rows: Rows, filters: Filters, grain: str, metric: str) -> pd.DataFrame:
    return _group(rows.frame, ["status_code"]).request_id.size().rename("requests").reset_index()


def request_page(rows: Rows, filters: Filters, grain: str, metric: str) -> pd.DataFrame:
    """The first page, newest first: every number the list shows (extra columns do no harm), texts by id."""
    shown = _newest(rows.frame).head(50)
    return _with_texts(rows, shown, BOTH_TEXTS, listing.PREVIEW_CHARS)


def request_count(rows: Rows, filters: Filters, grain: str, metric: str) -> pd.DataFrame:
    return pd.DataFrame({"rows": [len(rows.frame)]})


FIGURES: dict[str, Figure] = {
    f.__name__: f
    for f in (
        version_totals, traffic, histograms_by_version, metric_trend, metric_band, rollup_freshness,
        toxicity_trend, toxicity_shares, prompt_sample, flagged_requests,
        usage_trend, latency_percentiles, status_counts, request_page,
        request_count,
    )
}  # fmt: skip
# engine estimates: the band inside 1% bins merged 4 at hour; latency inside the latency rollup's 5% bins
APPROXIMATE = {"metric_band": 0.05, "latency_percentiles": usage.LATENCY_RESOLUTION}
NOT_COMPARED = {"rollup_freshness"}  # about the rollups themselves, which pandas has not


def columns_for(sql: list[str]) -> list[str]:
    """The requests columns a page's figures need, from its queries over the rollups (DuckDB SQL): a column named
    there (a metric through its rollup fields `metric__n`, ... or a histogram's `'metric'`), with its scorer; every
    metric when a histogram query takes them all. At 10M requests, loading every non-text column (lists of PII
    kinds, ids and names no figure reads) would not fit in memory."""
    text = "\n".join(sql)
    every_metric = any("__hist_v" in q and not any(f"'{m}'" in q for m in METRICS) for q in sql)
    wanted = [c for c in NARROW if f'"{c}"' in text or f'"{c}__' in text or f"'{c}'" in text]
    wanted += [m for m in METRICS if every_metric or m in wanted]
    wanted += [METRIC_SCORER_COLUMN[m] for m in wanted if m in METRIC_SCORER_COLUMN]
    return [c for c in NARROW if c in {*BASE, *wanted}]


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """Derived flags the figures share, computed once per load (part of pandas' timed work)."""
    frame["is_error"] = frame.status_code.isna() | (frame.status_code != 200)
    frame["has_parse_error"] = frame.parse_error.notna()
    frame["has_score_error"] = frame.score_error.notna()
    return frame
