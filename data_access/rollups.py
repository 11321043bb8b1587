"""The rollups of the requests table that keep the pages fast at scale: layout and the rows pages read.

Every page number is an aggregate computed in the engine. These rollups hold the aggregates the pages need, in the
spirit of Lakehouse Monitoring's profile metrics table:

- the minute profile: per minute x date x endpoint x version x scorers, request and error counts, token sums
  (also of the requests whose tokens the parser estimated) and, for every metric, count, sum, sum of squares,
  min and max;
- the hourly profile: the same per hour (60 times fewer rows, what figures at an hour and coarser read), with
  each hour's first and last minute and its busiest minute (`hourly_profile`);
- the histograms: per hour x date x endpoint x version x metric x scorer x bin, count, sum, min and max, on fine
  bins (`core.catalog`: 1% wide in relative terms for skewed positive metrics, 0.001 for probabilities, 0.05 for
  grades). The hour and the fine bins are what the percentile and threshold figures at hour grain rest on; no
  other key multiplies its rows (date follows from the hour, and there is one scorer per metric and row);
- the requesters: per date x endpoint x version x toxicity scorer x requester x prompt-toxicity bin of 0.01
  (`REQUESTER_BIN`; every score below `REQUESTER_FLOOR` in one bin), scored prompts: who sends toxic prompts,
  at every threshold on the Toxicity page's 0.01 grid from 0.05 up;
- the prompt samples: per date x endpoint x version x toxicity scorer, the `PROMPT_SAMPLE_SIZE` scored prompts
  that come first by `sample_key`, with a preview: the Toxicity page's scatter sample of any selection is the
  first prompts among these (each selection is a union of whole strata);
- the flagged requests: every request whose prompt or response toxicity is at least 0.05 (`FLAGGED_FLOOR`, the
  lowest threshold the Toxicity page offers), with the columns its flagged list shows and texts cut as it cuts them;
- the newest flagged requests: of those, per date x endpoint x version x toxicity scorer x target (prompt, response,
  either) x 0.01 toxicity bin, the `NEWEST_KEPT` newest: the flagged list's first page (newest first) at any threshold
  on the page's 0.01 grid holds only these, so it reads a few percent of the flagged rows;
- the latency histogram: per hour x date x endpoint x version x latency bin, count, min and max, on log-spaced bins
  `LATENCY_BIN_RATIO` wide (5%): what the Usage page's latency percentiles rest on. The fine histograms hold latency
  too, at 1%, but a month of hours is ~370k of their rows at 10M requests; this one has a third of that, and it holds
  nothing else, so a page reads no other metric's rows to find latency's;
- the band histograms: the histograms with `BAND_FINE_BINS` (4) adjacent fine bins merged, what the Trends band
  reads at hour grain (`band_histograms`).

The profiles, the histograms, the requesters, the latency histogram and the band histograms are additive over their
keys, so every sidebar filter (dates, versions, endpoints) and every grain from a minute to a month is an aggregate
of a rollup;
the sample and the flagged rollups hold requests, and any selection of them reads the same rows the requests
table gives. Page queries (`data_access.queries`) read them through `minute_rows` / `profile_rows` /
`histogram_rows` and the like, which with `from_rollups=False` build the same rows from the raw table by the same
Ibis expressions: identical numbers, only slower. Pages check `rollup_status.rollup_freshness` on every engine
and fall back to the raw table when the rollups are missing or behind.

`data_access.rollup_refresh` keeps them current on any engine. By hand: `python -m jobs.rollups --duckdb PATH |
--databricks`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import replace
from functools import cache

import ibis
import ibis.expr.types as ir

from core.catalog import METRIC_SCORER_COLUMN, METRICS, NONPOSITIVE_BIN, Binning, below_hour
from data_access.config import TableName
from data_access.queries import Filters, filtered, is_error, requests_table, sum_counts
from data_access.queries.listing import LISTED_KEYS, PREVIEW_CHARS, TEXT_CHARS

ROLLUP_VERSION = 7  # bump when a rollup's layout or binning changes: old tables then read as missing
SCORER_COLUMNS = tuple(dict.fromkeys(METRIC_SCORER_COLUMN.values()))  # every scorer column, once


def bin_index(binning: Binning, x: ir.FloatingValue) -> ir.IntegerValue:
    """The engine-side bin of a value under a catalog binning (see `core.catalog.Binning`)."""
    if binning.kind == "linear":
        return (x * binning.scale).floor()
    return ibis.cases((x > 0, (x.ln() * binning.scale).floor()), else_=ibis.literal(NONPOSITIVE_BIN, "int64"))


def scorer_of(t: ir.Table, metric: str) -> ir.StringValue:
    """The column naming the scorer of a metric, or a null string for operational metrics."""
    column = METRIC_SCORER_COLUMN.get(metric)
    return (t[column] if column else ibis.null("string")).cast("string").name("scorer")


# --- Rollups ---------------------------------------------------------------------------------------------


def minute_rollup_name(requests: TableName) -> TableName:
    return replace(requests, table=f"{requests.table}__minute_v{ROLLUP_VERSION}")


def hourly_rollup_name(requests: TableName) -> TableName:
    return replace(requests, table=f"{requests.table}__hourly_v{ROLLUP_VERSION}")


def histogram_rollup_name(requests: TableName) -> TableName:
    return replace(requests, table=f"{requests.table}__hist_v{ROLLUP_VERSION}")


def requester_rollup_name(requests: TableName) -> TableName:
    return replace(requests, table=f"{requests.table}__requesters_v{ROLLUP_VERSION}")


def newest_flagged_rollup_name(requests: TableName) -> TableName:
    return replace(requests, table=f"{requests.table}__newest_v{ROLLUP_VERSION}")


def sample_rollup_name(requests: TableName) -> TableName:
    return replace(requests, table=f"{requests.table}__samples_v{ROLLUP_VERSION}")


def flagged_rollup_name(requests: TableName) -> TableName:
    return replace(requests, table=f"{requests.table}__flagged_v{ROLLUP_VERSION}")


def latency_rollup_name(requests: TableName) -> TableName:
    return replace(requests, table=f"{requests.table}__latency_v{ROLLUP_VERSION}")


def band_rollup_name(requests: TableName) -> TableName:
    return replace(requests, table=f"{requests.table}__band_v{ROLLUP_VERSION}")


def minute_profile(t: ir.Table) -> ir.Table:
    """Per minute x date x endpoint x version x scorers: counts, token sums and every metric's moments."""
    estimated = t.tokens_estimated.fill_null(False)
    measures: dict[str, ir.Value] = {
        "requests": t.count(),
        "errors": t.count(where=is_error(t)),
        "parse_errors": t.count(where=t.parse_error.notnull()),
        "total_tokens_sum": t.total_tokens.cast("float64").sum(),
        "estimated_requests": t.count(where=estimated),
        "estimated_prompt_tokens": t.prompt_tokens.cast("float64").sum(where=estimated),
        "estimated_completion_tokens": t.completion_tokens.cast("float64").sum(where=estimated),
    }
    for metric in METRICS:
        x = t[metric].cast("float64")
        measures |= {
            f"{metric}__n": x.count(),
            f"{metric}__sum": x.sum(),
            f"{metric}__sumsq": (x * x).sum(),
            f"{metric}__min": x.min(),
            f"{metric}__max": x.max(),
        }
    keys = [t.request_time.truncate("m").name("bucket"), t.date, t.endpoint_name, t.model_version]
    return t.group_by([*keys, *(t[c] for c in SCORER_COLUMNS)]).agg(**measures)


def hourly_profile(t: ir.Table) -> ir.Table:
    """Per hour x date x endpoint x version x scorers: the minute profile summed over the hour (`bucket` is the
    hour), its first and last minute, and the busiest minute: `endpoint_peak`, the most requests in one minute of
    the row's date, endpoint and version within the hour, and `version_peak`, the same over every endpoint. Rows
    of one hour, date and endpoint (or version) may differ there (each sees the minutes its scorers had rows in),
    but their largest is exact, which is what the Usage page takes (`queries.usage`)."""
    m = minute_profile(t)
    keys = ["date", "endpoint_name", "model_version", *SCORER_COLUMNS]
    measures = [c for c in m.columns if c not in ("bucket", *keys)]
    minute = [m.bucket, m.date, m.model_version]
    m = m.mutate(
        endpoint_minute=_count(m.requests.sum().over(group_by=[*minute, m.endpoint_name])),
        version_minute=_count(m.requests.sum().over(group_by=minute)),
    )
    return m.group_by([m.bucket.truncate("h").name("bucket"), *keys]).agg(
        **{c: merged(m[c]) for c in measures},
        first_minute=m.bucket.min(),
        last_minute=m.bucket.max(),
        endpoint_peak=m.endpoint_minute.max(),
        version_peak=m.version_minute.max(),
    )


def merged(measure: ir.Column) -> ir.Scalar:
    """A minute profile measure over several minutes: extremes take theirs, counts and sums add up (counts as
    64-bit integers, `sum_counts`)."""
    name = measure.get_name()
    if name.endswith(("__min", "__max")):
        return measure.min() if name.endswith("__min") else measure.max()
    return sum_counts(measure) if measure.type().is_integer() else measure.sum()


def _count(total: ir.IntegerValue) -> ir.IntegerValue:
    return total.cast("float64").cast("int64")  # as `sum_counts`: DuckDB would widen it to 128 bits


def histograms(t: ir.Table) -> ir.Table:
    """Per hour x date x endpoint x version x metric x scorer x fine bin: count, sum, min and max of the values."""
    parts = []
    for metric, info in METRICS.items():
        x = t[metric].cast("float64")
        keys = [
            t.request_time.truncate("h").name("hour"),
            t.date,
            t.endpoint_name,
            t.model_version,
            scorer_of(t, metric),
            bin_index(info.binning, x).name("bin"),
        ]
        part = (
            t.filter(x.notnull())
            .group_by(keys)
            .agg(n=x.count(), total=x.sum(), lo=x.min(), hi=x.max())
            .mutate(metric=ibis.literal(metric))
        )
        parts.append(part.select(*HISTOGRAM_COLUMNS))
    return ibis.union(*parts, distinct=False)


BAND_FINE_BINS = 4  # fine bins per band bin: the Trends band's bins at hour grain (a power of two, see `band_bin`)


def band_bin(fine: ir.IntegerValue) -> ir.IntegerValue:
    """The band bin holding a fine bin: `BAND_FINE_BINS` adjacent fine bins, in value order (floor division). Times
    1/4, not divided by 4: exact for a power of two, and Databricks compiles a division to try_divide, which a
    warehouse that only speaks SQL may lack (as `toxicity_hundredths`)."""
    return (fine * (1 / BAND_FINE_BINS)).floor()


def band_histograms(t: ir.Table) -> ir.Table:
    """The histograms (`histograms`) on band bins (`band_bin`): per hour x date x endpoint x version x metric x
    scorer x band bin, count, smallest and largest value. What the Trends band reads at hour grain: a month of one
    metric's hours is ~69k rows at 10M requests against the fine histograms' ~183k, which it would otherwise
    group into these bins on every visit."""
    h = histograms(t)
    keys = [h.hour, h.date, h.endpoint_name, h.model_version, h.metric, h.scorer, band_bin(h.bin).name("bin")]
    return h.group_by(keys).agg(n=sum_counts(h.n), lo=h.lo.min(), hi=h.hi.max())


LATENCY_BIN_RATIO = 1.05  # each latency bin's upper edge over its lower edge: what bounds a percentile's error
LATENCY_BINNING = Binning("log", 1 / math.log(LATENCY_BIN_RATIO))


def latency_histogram(t: ir.Table) -> ir.Table:
    """Per hour x date x endpoint x version x latency bin (`LATENCY_BINNING`, log-spaced): count, smallest and
    largest latency. Latencies of 0 or less share one bin, below every other."""
    x = t.latency_ms.cast("float64")
    keys = [
        t.request_time.truncate("h").name("hour"),
        t.date,
        t.endpoint_name,
        t.model_version,
        bin_index(LATENCY_BINNING, x).name("bin"),
    ]
    return t.filter(x.notnull()).group_by(keys).agg(n=x.count(), lo=x.min(), hi=x.max())


REQUESTER_BIN = 10  # histogram bins (0.001) per requester bin: 0.01, the Toxicity page's threshold step
REQUESTER_FLOOR = 5  # requester bins below this (scores under 0.05, the lowest threshold offered) are one bin


def requester_bin(score: ir.FloatingValue) -> ir.IntegerValue:
    """The requester rollup's bin of a prompt-toxicity score: whole hundredths of the histogram's 0.001 bin, so that
    bin >= e exactly when the histogram bin is >= 10 e (the threshold rule of `queries.toxicity`); scores below
    `REQUESTER_FLOOR` hundredths share the bin below it."""
    return ibis.greatest(toxicity_hundredths(score), REQUESTER_FLOOR - 1)


def toxicity_hundredths(score: ir.FloatingValue) -> ir.IntegerValue:
    """The whole hundredths of a toxicity score as the histograms bin it: >= e exactly when the 0.001 bin is
    >= 10 e, so a threshold on the 0.01 grid is reached exactly by the scores of whole hundredths."""
    # Times 0.1, not divided by 10: Databricks compiles a division to try_divide, which a warehouse that only
    # speaks SQL (and the loopback one) may lack. Exact: 0.1 as a double is slightly above 0.1, so b * 0.1 never
    # rounds below a whole number it reaches, and stays far from the next one.
    return (bin_index(METRICS["prompt_toxicity"].binning, score) * (1 / REQUESTER_BIN)).floor()


def requester_prompts(t: ir.Table) -> ir.Table:
    """Per date x endpoint x version x toxicity scorer x requester x prompt-toxicity bin: scored prompts."""
    scored = t.filter(t.prompt_toxicity.notnull())
    keys = [t.date, t.endpoint_name, t.model_version, t.toxicity_scorer, t.requester]
    return scored.group_by([*keys, requester_bin(scored.prompt_toxicity.cast("float64")).name("bin")]).agg(
        n=scored.count()
    )


PROMPT_SAMPLE_SIZE = 500  # prompts in the Toxicity page's scatter sample, and kept per stratum by the sample rollup
SAMPLE_STRATA = (
    "date",
    "endpoint_name",
    "model_version",
    "toxicity_scorer",
)  # every sidebar filter selects whole strata


def sample_key(at: ir.TimestampValue) -> ir.IntegerValue:
    """The millisecond of the minute a request arrived at: as good as random (unrelated to what was asked),
    spread evenly over time, the same on every engine, and cheap to compute over a whole table (a hash of the
    request id is none of the last). Ties are broken by the request id. A difference from the minute's start, not
    second() * 1000 + millisecond(): Databricks SQL has no millisecond() and Ibis spells it DATE_FORMAT(.., 'SSS'),
    which is Spark's alone; DATEDIFF(MILLISECOND, ..) means the same on every engine."""
    return at.delta(at.truncate("m"), unit="millisecond").cast("int64")


def sample_candidates(t: ir.Table) -> ir.Table:
    """Scored prompts with their `sample_key` and a preview of the prompt."""
    scored = t.filter(t.prompt_toxicity.notnull())
    return scored.select(
        *dict.fromkeys([*SAMPLE_STRATA, *LISTED_KEYS]),
        "prompt_toxicity",
        scored.prompt_text.substr(0, PREVIEW_CHARS).name("prompt_preview"),
        sample_key(scored.request_time).name("sample_key"),
    )


def prompt_samples(t: ir.Table) -> ir.Table:
    """Per stratum (`SAMPLE_STRATA`), the first `PROMPT_SAMPLE_SIZE` scored prompts by (`sample_key`, request id),
    each with its rank
    and the stratum's count of scored prompts (what the freshness check sums, once per stratum)."""
    c = sample_candidates(t)
    strata = [c[k] for k in SAMPLE_STRATA]
    ranked = c.mutate(
        sample_rank=ibis.row_number().over(group_by=strata, order_by=[c.sample_key, c.request_id]),
        stratum_prompts=c.count().over(group_by=strata),
    )
    return ranked.filter(ranked.sample_rank < PROMPT_SAMPLE_SIZE)


FLAGGED_FLOOR = REQUESTER_BIN * REQUESTER_FLOOR  # histogram bins (0.001): 0.05, the lowest threshold offered


def flagged_candidates(t: ir.Table) -> ir.Table:
    """Requests whose prompt or response toxicity reaches `FLAGGED_FLOOR` (in histogram bins, as the shares
    count them), with the columns of the Toxicity page's flagged list and its texts, cut where it cuts them."""
    binning = METRICS["prompt_toxicity"].binning
    hit = (bin_index(binning, t.prompt_toxicity.cast("float64")) >= FLAGGED_FLOOR) | (
        bin_index(binning, t.response_toxicity.cast("float64")) >= FLAGGED_FLOOR
    )
    rows = t.filter(hit)  # a null score is not a hit
    return rows.select(
        "date",
        "endpoint_name",
        *LISTED_KEYS,
        "toxicity_scorer",
        "prompt_toxicity",
        "response_toxicity",
        "latency_ms",
        rows.prompt_text.substr(0, TEXT_CHARS).name("prompt_text"),
        rows.response_text.substr(0, TEXT_CHARS).name("response_text"),
    )


def flagged_requests(t: ir.Table) -> ir.Table:
    """Every flagged request (`flagged_candidates`)."""
    return flagged_candidates(t).order_by("request_time")  # in time order: a newest-first page skips most row groups


NEWEST_KEPT = 50  # flagged requests kept per stratum, target and 0.01 bin: the flagged list's first page, at most
NEWEST_STRATA = SAMPLE_STRATA  # every sidebar filter and the scorer choice select whole strata


def flagged_bins(t: ir.Table) -> dict[str, ir.IntegerValue]:
    """Per target of the flagged list, the 0.01 bin (`toxicity_hundredths`) of what it flags, null when the row
    does not reach `FLAGGED_FLOOR` there: "either" takes the higher of prompt and response."""
    floor = FLAGGED_FLOOR // REQUESTER_BIN
    bins = {}
    for target, column in (("prompt", "prompt_toxicity"), ("response", "response_toxicity")):
        hundredths = toxicity_hundredths(t[column].cast("float64"))
        bins[target] = ibis.cases((hundredths >= floor, hundredths))
    bins["either"] = ibis.greatest(bins["prompt"].fill_null(-1), bins["response"].fill_null(-1))
    return bins


def newest_flagged(t: ir.Table) -> ir.Table:
    """The flagged requests that are among the `NEWEST_KEPT` newest (request_time descending, then request_id, as
    the flagged list orders) of their stratum (`NEWEST_STRATA`) and 0.01 bin for some target: at a threshold on
    the 0.01 grid from 0.05 a target's flagged rows are whole bins, so any selection's newest `NEWEST_KEPT` are
    among these. Each row keeps its rank per target (null where it is not flagged there) and, for prompt and
    response, its bin's size in its stratum (what the freshness check sums, once per bin)."""
    rows = flagged_candidates(t)
    strata = [rows[k] for k in NEWEST_STRATA]
    newest_first = [ibis.desc(rows.request_time), rows.request_id]
    ranked = {}
    for target, flagged_bin in flagged_bins(rows).items():
        group = [*strata, flagged_bin]
        ranked[f"{target}_rank"] = ibis.cases(
            (flagged_bin >= 0, ibis.row_number().over(group_by=group, order_by=newest_first))
        )
        if target != "either":
            ranked[f"{target}_bin_rows"] = ibis.cases((flagged_bin >= 0, rows.count().over(group_by=group)))
    ranked_rows = rows.mutate(**ranked)
    kept = ibis.or_(*(ranked_rows[f"{target}_rank"] < NEWEST_KEPT for target in ("prompt", "response", "either")))
    return ranked_rows.filter(kept).order_by("request_time")


HISTOGRAM_COLUMNS = (
    "hour",
    "date",
    "endpoint_name",
    "model_version",
    "metric",
    "scorer",
    "bin",
    "n",
    "total",
    "lo",
    "hi",
)


def minute_rows(table: TableName, filters: Filters, from_rollups: bool) -> ir.Table:
    if from_rollups:
        return filtered(stored(minute_rollup_name(table), minute_profile), filters)
    return minute_profile(filtered(requests_table(table), filters))


def profile_rows(table: TableName, filters: Filters, grain: str, from_rollups: bool) -> ir.Table:
    """The profile rows a figure at `grain` reads, each keyed by its `bucket` and with the `first_minute` and
    `last_minute` it covers: over the rollups at an hour and coarser, the hourly profile (60 times fewer rows than
    minutes); otherwise the minute profile (over the requests table built on the fly: the hourly profile is built
    from it, so it costs more there, for the same numbers)."""
    if from_rollups and not below_hour(grain):
        return filtered(stored(hourly_rollup_name(table), hourly_profile), filters)
    m = minute_rows(table, filters, from_rollups)
    return m.mutate(first_minute=m.bucket, last_minute=m.bucket)


def histogram_rows(table: TableName, filters: Filters, from_rollups: bool) -> ir.Table:
    if from_rollups:
        return filtered(stored(histogram_rollup_name(table), histograms), filters)
    return histograms(filtered(requests_table(table), filters))


def band_rows(table: TableName, filters: Filters, from_rollups: bool) -> ir.Table:
    if from_rollups:
        return filtered(stored(band_rollup_name(table), band_histograms), filters)
    return band_histograms(filtered(requests_table(table), filters))


def latency_rows(table: TableName, filters: Filters, from_rollups: bool) -> ir.Table:
    if from_rollups:
        return filtered(stored(latency_rollup_name(table), latency_histogram), filters)
    return latency_histogram(filtered(requests_table(table), filters))


def requester_rows(table: TableName, filters: Filters, from_rollups: bool) -> ir.Table:
    if from_rollups:
        return filtered(stored(requester_rollup_name(table), requester_prompts), filters)
    return requester_prompts(filtered(requests_table(table), filters))


def sample_rows(table: TableName, filters: Filters, from_rollups: bool) -> ir.Table:
    """Candidates for the scatter sample: the sample rollup's prompts, or every scored prompt of the table; the
    lowest `PROMPT_SAMPLE_SIZE` by (sample_key, request_id) of either are the same rows."""
    if from_rollups:
        return filtered(stored(sample_rollup_name(table), prompt_samples), filters)
    return sample_candidates(filtered(requests_table(table), filters))


def flagged_rows(table: TableName, filters: Filters, from_rollups: bool) -> ir.Table:
    """Candidates for the flagged list at a threshold of at least 0.05 (`FLAGGED_FLOOR`): the flagged rollup,
    or the requests table."""
    if from_rollups:
        return filtered(stored(flagged_rollup_name(table), flagged_requests), filters)
    return filtered(requests_table(table), filters)


def newest_flagged_rows(table: TableName, filters: Filters) -> ir.Table:
    """The newest flagged requests of the selection's strata (`newest_flagged`)."""
    return filtered(stored(newest_flagged_rollup_name(table), newest_flagged), filters)


def table_location(name: TableName) -> dict[str, str | None]:
    return {"name": name.table, "database": name.schema, "catalog": name.catalog}


def stored(name: TableName, build: Callable[[ir.Table], ir.Table]) -> ir.Table:
    """The rollup table `name`, which `build` fills from the requests table, as an Ibis table."""
    return ibis.table(_schema(build), **table_location(name))


@cache
def _schema(build: Callable[[ir.Table], ir.Table]) -> ibis.Schema:
    return build(requests_table(TableName("requests"))).schema()


def rollup_builds(requests: TableName) -> tuple[tuple[TableName, Callable[[ir.Table], ir.Table]], ...]:
    """Each rollup table with the expression that builds it from (some of) the requests."""
    return (
        (minute_rollup_name(requests), minute_profile),
        (hourly_rollup_name(requests), hourly_profile),
        (histogram_rollup_name(requests), histograms),
        (requester_rollup_name(requests), requester_prompts),
        (sample_rollup_name(requests), prompt_samples),
        (flagged_rollup_name(requests), flagged_requests),
        (newest_flagged_rollup_name(requests), newest_flagged),
        (latency_rollup_name(requests), latency_histogram),
        (band_rollup_name(requests), band_histograms),
    )


# --- Command line: `python -m jobs.rollups` (this module's old name for it still works) --------------------


if __name__ == "__main__":
    from jobs.rollups import main

    sys.exit(main())
