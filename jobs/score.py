"""The incremental scoring job: new inference-table rows in, typed and scored requests rows out.

    python -m jobs.score --help

Runs once, or every N seconds with --watch (the original team scored every five minutes). Each batch is
written in one transaction and only ids the requests table lacks are read, so a job killed at any moment and
started again ends with exactly the rows of one clean run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from core.sampling import parse_rate, rates_text, scorer_name
from data_access.config import PAYLOAD_FORMATS, Settings, TableName, settings_for_command
from data_access.duckdb_store import DuckDBStore
from data_access.errors import DataAccessError
from data_access.payload import parse_payload
from data_access.queries.job import WHOLE_TABLE, PayloadWindow, payload_times
from data_access.sources import Source
from jobs.backfill import run_backfill
from jobs.scoring import JobSummary, parse_and_score, parse_failures, run_every, score_parsed
from metrics.profiles import FullProfileOptions, Profile, build_profile

# Databricks writes inference-table rows asynchronously, up to about an hour after the request: each run
# reads again what arrived within this margin before its watermark (INFERENCE_EXPLORER_LATE_MARGIN_MINUTES).
DEFAULT_LATE_MARGIN = timedelta(hours=1)
# Pending rows fetched per query; each is scored and committed in batches of --batch-size.
CHUNK_ROWS = 50_000
ONE_MS = timedelta(milliseconds=1)
PROGRESS = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} rows | {rate_fmt} | {remaining} left"


def _rows_without_id(
    store: DuckDBStore, window: PayloadWindow, profile: Profile, sample_rates: Mapping[str, float]
) -> pa.Table:
    """Rows with neither id, scored, that are not written yet (the parser gives them a content hash as id).

    They come first in a run: the watermark moves only after them, so it never passes one that is unwritten.
    """
    payload = store.payload_without_id(window)
    if payload.num_rows == 0:
        return payload
    parsed = parse_payload(payload)
    existing = store.existing_ids(parsed["request_id"])
    fresh = parsed.filter(pc.invert(pc.is_in(parsed["request_id"], value_set=existing)))
    return score_parsed(fresh, profile, sample_rates=sample_rates) if fresh.num_rows else fresh


def covered_up_to(times: list[datetime | None], chunk_is_full: bool, ceiling: datetime | None) -> list[datetime | None]:
    """For each prefix of a chunk of pending rows in time order, the latest payload time it fully covers.

    After rows [0, i) are written, every pending row older than the next pending row is written, so the
    watermark may reach just before that row's time; after the whole chunk, the newest payload time seen
    at the start of the run (`ceiling`) if this was the last chunk, else just before the chunk's last time
    (the next chunk may hold more rows of that same millisecond). Rows without a time cover nothing.
    """
    covered: list[datetime | None] = [None] * (len(times) + 1)
    timed = [t for t in times if t is not None]
    if chunk_is_full:
        covered[len(times)] = timed[-1] - ONE_MS if timed else None
    else:
        covered[len(times)] = ceiling
    following = covered[len(times)]
    for i in range(len(times) - 1, -1, -1):
        if times[i] is not None:
            following = times[i] - ONE_MS
        covered[i] = following
    return covered


class _Writer:
    """Commits scored batches in order on a background thread while the next batch is scored.

    DuckDB works without the GIL, so a batch's write overlaps the scoring of the next one. One write is in flight
    at a time and each is still its own transaction with its watermark, so a kill leaves whole batches only.
    """

    def __init__(self, store: DuckDBStore, summary: JobSummary) -> None:
        self._store = store
        self._summary = summary
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring-job-writer")
        self._in_flight: Future[None] | None = None

    def submit(self, rows: pa.Table, watermark: datetime | None = None) -> None:
        self.wait()
        self._summary.read += rows.num_rows
        self._in_flight = self._pool.submit(self._write, rows, watermark)

    def _write(self, rows: pa.Table, watermark: datetime | None) -> None:
        self._summary.failed += parse_failures(rows)
        self._summary.count_gateway(rows)
        self._summary.written += self._store.append(rows, watermark)

    def wait(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()  # a failed write raises here

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown()


def run_once(
    store: DuckDBStore,
    profile: Profile,
    batch_size: int = 5_000,
    limit: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    *,
    late_margin: timedelta = DEFAULT_LATE_MARGIN,
    full_rescan: bool = False,
    warn: Callable[[str], None] | None = None,
    sample_rates: Mapping[str, float] | None = None,
) -> JobSummary:
    """One run of the job, holding the requests table so no second job scores the same rows (a second one gets
    a DataAccessError saying so, before it reads anything). `sample_rates`: scorer slot -> the share of requests
    it scores (core/sampling.py); every row is still written."""
    with store.one_scoring_job():
        return _score_pending(
            store,
            profile,
            batch_size,
            limit,
            on_progress,
            late_margin=late_margin,
            full_rescan=full_rescan,
            warn=warn,
            sample_rates=dict(sample_rates or {}),
        )


def _score_pending(
    store: DuckDBStore,
    profile: Profile,
    batch_size: int,
    limit: int | None,
    on_progress: Callable[[int, int], None] | None,
    *,
    late_margin: timedelta,
    full_rescan: bool,
    warn: Callable[[str], None] | None,
    sample_rates: dict[str, float],
) -> JobSummary:
    """Score every pending payload row (at most `limit`), one committed batch at a time.

    Reads only payload rows newer than the watermark minus `late_margin` (the whole table on a first run or
    with `full_rescan`), and moves the watermark with each batch, in the batch's transaction.
    `warn` hears, once per run, that a gateway table's served-entities table cannot be read (default: stderr).
    """
    started = time.perf_counter()
    summary = JobSummary(full_rescan=full_rescan, sample_rates=sample_rates)
    store.ensure_tables()
    if store.entities_problem:
        (warn or _stderr)(f"warning: {store.entities_problem}")
    mark = store.watermark()
    window = WHOLE_TABLE if full_rescan or mark is None else PayloadWindow(mark - late_margin, mark - late_margin)
    ceiling = store.latest_payload_time(window)  # the mark may reach what existed when the run started
    anonymous = _rows_without_id(store, window, profile, sample_rates)
    remaining = None if limit is None else limit - min(limit, anonymous.num_rows)
    anonymous = anonymous if limit is None else anonymous.slice(0, limit)
    writer = _Writer(store, summary)
    try:
        if anonymous.num_rows:
            writer.submit(anonymous)
        _score_window(
            store,
            profile,
            writer,
            window,
            ceiling,
            batch_size,
            remaining,
            anonymous.num_rows,
            on_progress,
            sample_rates,
        )
    finally:
        writer.close()
    store.refresh_rollups()  # the pages read these pre-aggregates; cheap when no date changed
    summary.seconds = time.perf_counter() - started
    return summary


def _score_window(
    store: DuckDBStore,
    profile: Profile,
    writer: _Writer,
    window: PayloadWindow,
    ceiling: datetime | None,
    batch_size: int,
    remaining: int | None,
    done: int,
    on_progress: Callable[[int, int], None] | None,
    sample_rates: dict[str, float],
) -> None:
    """Walk the window's pending rows in time order, a chunk per query, scoring and committing batch by batch."""
    cursor, total = window, None
    while remaining is None or remaining > 0:
        want = CHUNK_ROWS if remaining is None else min(CHUNK_ROWS, remaining)
        chunk = store.unscored(want, cursor)  # one query per chunk, over the part of the window not yet walked
        if total is None:  # a second count query only when the first chunk does not hold every pending row
            total = done + (chunk.num_rows if chunk.num_rows < want else store.pending_count(window))
            total = total if remaining is None else min(total, done + remaining)
        if chunk.num_rows == 0:
            break
        times = payload_times(chunk)
        covered = covered_up_to(times, chunk.num_rows == want, ceiling)
        for start in range(0, chunk.num_rows, batch_size):
            batch = chunk.slice(start, batch_size)
            writer.submit(parse_and_score(batch, profile, sample_rates=sample_rates), covered[start + batch.num_rows])
            done += batch.num_rows
            if on_progress:
                on_progress(done, total)
        if remaining is not None:
            remaining -= chunk.num_rows
        timed = [t for t in times if t is not None]
        if chunk.num_rows < want or not timed:
            break
        cursor = PayloadWindow(timed[-1], window.done_from)


@contextlib.contextmanager
def progress_bar(description: str, quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (none with --quiet); yields the callback a run reports (rows done, total) to."""
    with tqdm(desc=description, unit=" rows", disable=quiet, file=sys.stderr, bar_format=PROGRESS) as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield advance


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def evaluate_monitors(
    settings: Settings,
    duckdb_path: Path,
    requests: TableName,
    source: Source | None = None,
    alerts_in_source: bool | None = None,
) -> None:
    """After a scoring run the monitors see the new rows; their trouble is reported, never stops the scoring.
    `source`: where the engine wrote them (the Spark engine's session; default: the embedded file)."""
    if not settings.monitors_file.exists():
        return
    from jobs.monitors import run_monitors

    try:
        summary = run_monitors(settings, duckdb_path, requests, source=source, alerts_in_source=alerts_in_source)
    except DataAccessError as error:
        print(f"monitors: {error}", file=sys.stderr)
        return
    for line in summary.lines():
        print(f"monitors: {line}", flush=True)


def _rates_shown(rates: Mapping[str, float]) -> str:
    return ": " + rates_text(rates) if rates else ", none: every scorer scores every request"


def sample_rates(settings: Settings, entries: list[str]) -> dict[str, float]:
    """The sample_rates setting with --sample-rate entries over it (a rate of 1 lifts a setting's sampling)."""
    rates = dict(settings.sample_rates)
    for entry in entries:
        slot, rate = parse_rate(entry)
        rates[slot] = rate
    return {slot: rate for slot, rate in rates.items() if rate < 1.0}


def _parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.score",
        description="Parse and score new inference-table rows into the requests table (incremental, idempotent).",
        epilog="Every flag also comes from the environment (INFERENCE_EXPLORER_*) or .streamlit/secrets.toml [app].",
    )
    parser.add_argument("--duckdb", type=Path, default=settings.duckdb_path, help="DuckDB file (default: %(default)s)")
    parser.add_argument("--payload-table", default=str(settings.payload_table), help="raw inference table")
    parser.add_argument("--requests-table", default=str(settings.requests_table), help="scored requests table")
    parser.add_argument(
        "--payload-format",
        choices=PAYLOAD_FORMATS,
        default=settings.payload_format,
        help="inference-table layout: auto (from its columns), legacy or gateway (default: %(default)s)",
    )
    parser.add_argument(
        "--served-entities-table",
        default=str(settings.served_entities_table),
        help="maps a gateway row's served_entity_id to endpoint, model and version (default: %(default)s); "
        "when it cannot be read, rows are still scored, without a version",
    )
    parser.add_argument(
        "--profile",
        choices=("light", "full"),
        default=settings.scoring_profile,
        help="light: offline scorers shipped in packages; full: Detoxify + causal LM (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=5_000, help="rows per committed batch")
    parser.add_argument("--limit", type=int, default=None, help="score at most N rows this run")
    parser.add_argument("--watch", type=float, default=None, metavar="SECONDS", help="run again every N seconds")
    parser.add_argument(
        "--late-margin-minutes",
        type=float,
        default=settings.late_margin_minutes,
        help="read again rows up to this much older than the watermark, for rows logged late (default: %(default)s)",
    )
    parser.add_argument(
        "--full-rescan",
        action="store_true",
        help="check the whole payload table, not only rows after the watermark, and report what was missing",
    )
    parser.add_argument(
        "--sample-rate",
        action="append",
        default=[],
        metavar="SCORER=RATE",
        help="score only this share of requests with a scorer (repeatable, e.g. detoxify=0.1): the same requests in "
        "every run and engine, by a hash of the request id; others keep that score empty (default: the "
        f"sample_rates setting{_rates_shown(settings.sample_rates)})",
    )
    parser.add_argument(
        "--backfill",
        metavar="SCORER",
        default=None,
        help="instead of new rows, score the requests rows this scorer has not scored (added later, or now sampled "
        "at a higher rate); only its columns change; resumable and idempotent like a run; with --engine spark "
        "whole dates are rewritten (Delta: MERGE), --batch-size unscored rows per commit, and their rollups refreshed",
    )
    parser.add_argument(
        "--since", metavar="DATE", default=None, help="with --backfill: only rows from this date on (YYYY-MM-DD)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--no-monitors", action="store_true", help="do not evaluate the monitor rules after each run (jobs/monitors.py)"
    )
    # --- Spark engine (jobs/spark_score.py) ---
    parser.add_argument(
        "--engine",
        choices=("duckdb", "spark"),
        default="duckdb",
        help="duckdb: the embedded file; spark: tables in the Spark catalog, read as a stream (default: %(default)s)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="Spark: where the stream remembers what it read (default locally: under the data folder; "
        "on Databricks pass a Unity Catalog volume path)",
    )
    parser.add_argument(
        "--files-per-batch",
        type=int,
        default=None,
        help="Spark: at most this many payload-table files per micro-batch (default: the source's own)",
    )
    return parser


def _open_store(args: argparse.Namespace) -> DuckDBStore:
    return DuckDBStore(
        args.duckdb,
        TableName.parse(args.payload_table),
        TableName.parse(args.requests_table),
        payload_format=args.payload_format,
        served_entities=TableName.parse(args.served_entities_table),
    )


def _profile(args: argparse.Namespace) -> Profile:
    return build_profile(args.profile, FullProfileOptions.from_env(os.environ) if args.profile == "full" else None)


def _main_backfill(args: argparse.Namespace, settings: Settings) -> int:
    """`--backfill SCORER [--since DATE]`: on the embedded engine here, on Spark by jobs/spark_backfill.py."""
    try:
        if args.backfill is None:
            raise ValueError("--since goes with --backfill SCORER")
        slot = scorer_name(args.backfill)
        since = date.fromisoformat(args.since) if args.since else None
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.engine == "spark":
        from jobs.spark_backfill import main_spark_backfill

        return main_spark_backfill(args, settings, slot, since)
    try:
        with progress_bar(f"backfill {slot}", args.quiet) as advance:
            summary = run_backfill(
                _open_store(args),
                _profile(args),
                slot,
                since=since,
                rate=args.sample_rates.get(slot, 1.0),
                batch_size=args.batch_size,
                limit=args.limit,
                on_progress=advance,
            )
    except DataAccessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(summary.line(), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    settings = settings_for_command()
    args = _parser(settings).parse_args(argv)
    if args.batch_size < 1 or (args.limit is not None and args.limit < 0) or args.late_margin_minutes < 0:
        print("error: --batch-size must be at least 1, --limit and --late-margin-minutes not negative", file=sys.stderr)
        return 2
    try:
        args.sample_rates = sample_rates(settings, args.sample_rate)
    except ValueError as error:
        print(f"error: --sample-rate: {error}", file=sys.stderr)
        return 2
    try:  # the full profile's own settings, checked before any work like every other setting
        if args.profile == "full":
            FullProfileOptions.from_env(os.environ)
    except ValueError as error:
        print(f"error: invalid full-profile setting: {error}", file=sys.stderr)
        return 2
    if args.backfill is not None or args.since is not None:
        return _main_backfill(args, settings)
    if args.engine == "spark":  # --- Spark engine: same flags, run by jobs/spark_score.py ---
        from jobs.spark_score import main_spark

        return main_spark(args, settings)
    try:
        store = _open_store(args)
        profile = _profile(args)

        def once() -> JobSummary:
            with progress_bar("scoring", args.quiet) as advance:
                summary = run_once(
                    store,
                    profile,
                    args.batch_size,
                    args.limit,
                    advance,
                    late_margin=timedelta(minutes=args.late_margin_minutes),
                    full_rescan=args.full_rescan,
                    sample_rates=args.sample_rates,
                )
            if not args.no_monitors:
                evaluate_monitors(settings, args.duckdb, TableName.parse(args.requests_table))
            return summary

        return run_every(once, args.watch, "every committed batch is kept")
    except DataAccessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
