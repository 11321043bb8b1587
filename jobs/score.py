"""The incremental scoring job: new inference-table rows in, typed and scored requests rows out.

    python -m jobs.score --help

Runs once, or every N seconds with --watch (the original team scored every five minutes). Each batch is
written in one transaction and only ids the requests table lacks are read, so a job killed at any moment and
started again ends with exactly the rows of one clean run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.compute as pc
from tqdm import tqdm

from data_access.config import Settings, TableName, settings_for_command
from data_access.duckdb_store import DuckDBStore
from data_access.errors import DataAccessError
from data_access.payload import parse_payload
from jobs.scoring import JobSummary, parse_and_score, parse_failures, run_every, score_parsed
from metrics.profiles import FullProfileOptions, Profile, build_profile


def _score_rows_without_id(store: DuckDBStore, profile: Profile, summary: JobSummary) -> None:
    """Rows with neither id get a content hash as id from the parser; score the ones not written yet."""
    payload = store.payload_without_id()
    if payload.num_rows == 0:
        return
    parsed = parse_payload(payload)
    existing = store.existing_ids(parsed["request_id"])
    fresh = parsed.filter(pc.invert(pc.is_in(parsed["request_id"], value_set=existing)))
    if fresh.num_rows:
        rows = score_parsed(fresh, profile)
        summary.read += rows.num_rows
        summary.failed += parse_failures(rows)
        summary.written += store.append(rows)


def run_once(
    store: DuckDBStore,
    profile: Profile,
    batch_size: int = 5_000,
    limit: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> JobSummary:
    """Score every pending payload row (at most `limit`), one committed batch at a time."""
    started = time.perf_counter()
    summary = JobSummary()
    store.ensure_tables()
    pending = store.pending_count()
    total = pending if limit is None else min(limit, pending)
    while limit is None or summary.read < limit:
        size = batch_size if limit is None else min(batch_size, limit - summary.read)
        payload = store.unscored(size)
        if payload.num_rows == 0:
            break
        rows = parse_and_score(payload, profile)  # scored with the file closed, so the app can read meanwhile
        summary.read += rows.num_rows
        summary.failed += parse_failures(rows)
        summary.written += store.append(rows)
        if on_progress:
            on_progress(summary.read, total)
    if limit is None:
        _score_rows_without_id(store, profile, summary)
    store.refresh_rollups()  # the pages read these pre-aggregates; cheap when no date changed
    summary.seconds = time.perf_counter() - started
    return summary


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
        "--profile",
        choices=("light", "full"),
        default=settings.scoring_profile,
        help="light: offline scorers shipped in packages; full: Detoxify + causal LM (default: %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=5_000, help="rows per committed batch")
    parser.add_argument("--limit", type=int, default=None, help="score at most N rows this run")
    parser.add_argument("--watch", type=float, default=None, metavar="SECONDS", help="run again every N seconds")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    # --- Spark engine (jobs/spark_score.py) ---
    parser.add_argument(
        "--engine",
        choices=("duckdb", "spark"),
        default="duckdb",
        help="duckdb: the embedded file; spark: tables in the Spark catalog, one commit per run (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    settings = settings_for_command()
    args = _parser(settings).parse_args(argv)
    if args.batch_size < 1 or (args.limit is not None and args.limit < 0):
        print("error: --batch-size must be at least 1 and --limit not negative", file=sys.stderr)
        return 2
    if args.engine == "spark":  # --- Spark engine: same flags, run by jobs/spark_score.py ---
        from jobs.spark_score import main_spark

        return main_spark(args, settings)
    try:
        store = DuckDBStore(args.duckdb, TableName.parse(args.payload_table), TableName.parse(args.requests_table))
        profile = build_profile(
            args.profile, FullProfileOptions.from_env(os.environ) if args.profile == "full" else None
        )

        def once() -> JobSummary:
            with tqdm(desc="scoring", unit="row", disable=args.quiet, file=sys.stderr) as bar:

                def advance(done: int, total: int) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                return run_once(store, profile, args.batch_size, args.limit, advance)

        return run_every(once, args.watch, "every committed batch is kept")
    except DataAccessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
