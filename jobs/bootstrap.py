"""First start of the embedded default: build the demo inference table, score it, and create the MLflow store.

Everything is built beside its final place and moved in only when complete, so an interrupted first start
is simply redone, and a file lock keeps two app processes from building at once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from data_access.config import Settings
from data_access.demo import iter_payload_batches
from data_access.demo.gateway import served_entities
from data_access.duckdb_store import DuckDBStore
from data_access.errors import DataAccessError
from data_access.schema import SERVED_ENTITIES_ARROW
from jobs.score import run_once
from metrics.profiles import build_profile

Progress = Callable[[float, str], None]


def demo_ready(settings: Settings) -> bool:
    return settings.duckdb_path.exists()


def build_demo(settings: Settings, on_progress: Progress | None = None) -> None:
    """Generate, store and score the demo traffic (light profile), then build the demo model registry."""
    try:
        _build_demo(settings, on_progress or (lambda fraction, message: None))
    except OSError as error:  # an unwritable or full data folder: say which and how to choose another
        raise DataAccessError(
            f"Cannot build the demo data in {settings.data_dir}: {error.strerror or error}.",
            "Set INFERENCE_EXPLORER_DATA_DIR (or data_dir under [app] in .streamlit/secrets.toml) to a writable "
            "folder with about 200 MB free.",
        ) from None


def _build_demo(settings: Settings, report: Progress) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(settings.data_dir / ".bootstrap.lock"):
        if demo_ready(settings):
            return
        building = settings.duckdb_path.with_name(settings.duckdb_path.name + ".building")
        building.unlink(missing_ok=True)
        store = DuckDBStore(
            building, settings.payload_table, settings.requests_table, served_entities=settings.served_entities_table
        )
        layout = settings.demo_format
        report(0.02, f"Generating {settings.demo_requests:,} demo requests ({layout} inference-table layout)…")
        store.replace_payload(iter_payload_batches(settings.demo_requests, settings.demo_seed, layout=layout), layout)
        if layout == "gateway" and store.served_entities is not None:
            store.replace_table(store.served_entities, served_entities(), SERVED_ENTITIES_ARROW)
        report(0.1, "Scoring readability, toxicity and perplexity (light profile)…")
        scoring = _scoring_progress(report)  # the sample_rates setting applies to the demo too
        run_once(store, build_profile("light"), on_progress=scoring, sample_rates=settings.sample_rates)
        report(0.87, "Creating the demo MLflow model registry…")
        _build_registry(settings)
        if settings.monitors_file.exists():
            report(0.95, "Evaluating the monitor rules…")
            _evaluate_monitors(settings, building)
        building.replace(settings.duckdb_path)
        report(1.0, "Demo data ready.")


def _scoring_progress(report: Progress) -> Callable[[int, int], None]:
    """Progress of the first scoring run, with its rate and the time left at that rate."""
    started = time.monotonic()

    def show(done: int, total: int) -> None:
        rate = done / max(time.monotonic() - started, 1e-6)
        left = (total - done) / rate if rate else 0.0
        message = f"Scored {done:,} of {total:,} requests ({rate:,.0f} a second, about {left:,.0f} s left)…"
        report(0.1 + 0.75 * done / max(total, 1), message)

    return show


def _build_registry(settings: Settings) -> None:
    from data_access.demo_registry import build_demo_registry  # MLflow is slow to import: only on first start

    build_demo_registry(settings.mlflow_dir, settings.model_name)  # idempotent, locked, completes a partial store


def _evaluate_monitors(settings: Settings, path: Path) -> None:
    """A first evaluation, so the Alerts page shows each rule's state from the start (notifications only go to
    webhooks that are configured)."""
    from jobs.monitors import run_monitors

    with contextlib.suppress(DataAccessError):  # the demo is usable without it; the page says how to evaluate by hand
        run_monitors(settings, duckdb_path=path)
