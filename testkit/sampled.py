"""A real embedded store scored by the scoring job under per-scorer sample rates (`--sample-rate`), for the
sampling tests of the job and of the pages."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from data_access.config import TableName
from data_access.duckdb_store import DuckDBStore
from jobs import score as score_cli

PAYLOAD, REQUESTS = TableName("payload"), TableName("requests")


def score_store(path: Path, payload: pa.Table, *flags: str) -> int:
    """Load `payload` into a new DuckDB file at `path` (if none is there) and run the scoring job on it with
    `flags` (e.g. `--sample-rate detoxify=0.1`); the job's exit code. The job also refreshes the rollups."""
    store = DuckDBStore(path, PAYLOAD, REQUESTS)
    if not path.exists():
        store.replace_payload(payload)
    return score_cli.main(["--duckdb", str(path), "--quiet", "--no-monitors", *flags])
