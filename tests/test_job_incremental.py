"""The embedded job reads only what is new: a watermark on payload time, a late-arrival margin, kills at random points.

Real DuckDB files and real `python -m jobs.score` processes killed with SIGKILL: after every kill the watermark
covers only written rows, and after the rounds the requests table is what one clean run over the same payload
gives, apart from the one row logged later than the margin, which only `--full-rescan` finds.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from data_access.config import TableName
from data_access.demo import generate_payload
from data_access.duckdb_store import DuckDBStore
from data_access.payload import parse_payload
from data_access.queries.job import epoch_ms
from jobs.score import main, run_once
from metrics.profiles import build_profile

ROWS = 2_400
PAYLOAD, REQUESTS = TableName("payload"), TableName("requests")
ROOT = Path(__file__).resolve().parent.parent
MARGIN = timedelta(days=1)  # the demo's 2,400 rows span a month: about 80 rows a day fall inside the margin
HOUR_MS = 3_600_000


def _store(path: Path) -> DuckDBStore:
    return DuckDBStore(path, PAYLOAD, REQUESTS)


def _append_payload(path: Path, rows: pa.Table) -> None:
    with duckdb.connect(str(path)) as con:
        con.register("incoming", rows)
        con.sql("INSERT INTO payload SELECT * FROM incoming")


def _requests(path: Path) -> pa.Table:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.sql("SELECT * EXCLUDE (scored_at) FROM requests ORDER BY request_id").to_arrow_table()


def _written_ids(path: Path) -> set[str]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {row[0] for row in con.sql("SELECT request_id FROM requests").fetchall()}


def _without_ids(rows: pa.Table) -> pa.Table:
    nulls = pa.nulls(rows.num_rows, pa.string())
    return rows.set_column(0, "client_request_id", nulls).set_column(1, "databricks_request_id", nulls)


@pytest.fixture(scope="module")
def traffic() -> dict[str, pa.Table]:
    """A month of demo traffic cut into three rounds, with rows that arrive late.

    `late` rows are logged one round after their time, within the margin before the previous round's newest
    row; `too_late` is logged two rounds late, older than the margin: only a full rescan finds it. Two of the
    late rows carry no id at all (the parser gives them a content hash).
    """
    payload = generate_payload(ROWS, seed=23)
    ts = payload["timestamp_ms"].to_numpy()
    cuts = [int(ts[int(ROWS * share)]) for share in (0.4, 0.7)] + [int(ts[-1]) + 1]
    margin_ms = int(MARGIN / timedelta(milliseconds=1))
    late_mask = ((ts > cuts[0] - margin_ms + HOUR_MS) & (ts < cuts[0] - HOUR_MS)) | (
        (ts > cuts[1] - margin_ms + HOUR_MS) & (ts < cuts[1] - HOUR_MS)
    )
    late_index = [int(i) for i in late_mask.nonzero()[0][::4]]  # every fourth row of those windows arrives late
    too_late_index = int((ts < cuts[0] - 3 * margin_ms).nonzero()[0][-1])
    withheld = {*late_index, too_late_index}
    anonymous = {late_index[0], late_index[-1]}
    rows = [
        _without_ids(payload.slice(i, 1)) if i in anonymous else payload.slice(i, 1) for i in range(payload.num_rows)
    ]
    full = pa.concat_tables(rows)
    rounds = []
    for r, cut in enumerate(cuts):
        lower = cuts[r - 1] if r else -1
        on_time = [i for i in range(ROWS) if lower <= ts[i] < cut and i not in withheld]
        late = [i for i in late_index if r and lower - margin_ms < ts[i] < lower]
        rounds.append(full.take(on_time + late + ([too_late_index] if r == len(cuts) - 1 else [])))
    assert sum(r.num_rows for r in rounds) == ROWS
    return {"full": full, "rounds": rounds, "too_late": full.slice(too_late_index, 1)}  # type: ignore[dict-item]


@pytest.fixture(scope="module")
def clean(traffic: dict[str, pa.Table], tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """One clean run over the whole payload, from scratch."""
    path = tmp_path_factory.mktemp("clean") / "inference.duckdb"
    store = _store(path)
    store.replace_payload(traffic["full"])
    run_once(store, build_profile("light"), batch_size=300)
    return _requests(path)


def _start_job(path: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "jobs.score", "--duckdb", str(path), "--batch-size", "60", "--quiet",
        "--late-margin-minutes", str(MARGIN / timedelta(minutes=1)),
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _written_count(path: Path) -> int | None:
    try:
        return len(_written_ids(path))
    except duckdb.Error:  # the job holds the write lock right now, or has not created the table yet
        return None


def _kill_after(path: Path, more_rows: int) -> int:
    """Start the job, SIGKILL it once it committed `more_rows` more rows (or when it ends); rows it wrote."""
    start = _written_count(path) or 0
    job = _start_job(path)
    written = start
    while job.poll() is None and written - start < more_rows:
        time.sleep(0.25)  # a reader holds the file while it looks: look seldom, so the job gets the write lock
        written = _written_count(path) or written
    job.send_signal(signal.SIGKILL)
    job.wait()
    return (_written_count(path) or 0) - start


def _assert_watermark_covers_only_written_rows(path: Path, visible: pa.Table, mark_before: int | None) -> None:
    """Every payload row at or before the watermark, and after the mark this round started from, is written."""
    mark = _store(path).watermark()
    if mark is None:
        return
    ts = visible["timestamp_ms"]
    covered = pc.less_equal(ts, epoch_ms(mark))
    if mark_before is not None:
        covered = pc.and_(covered, pc.greater(ts, mark_before))
    ids = set(parse_payload(visible.filter(covered))["request_id"].to_pylist())
    missing = ids - _written_ids(path)
    assert not missing, f"the watermark {mark} passed {len(missing)} unwritten rows"


def test_kills_across_runs_with_late_rows_give_one_clean_run(
    traffic: dict[str, pa.Table], clean: pa.Table, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "inference.duckdb"
    _store(path).replace_payload(traffic["rounds"][0].slice(0, 0))
    rng = random.Random(16)
    visible = traffic["rounds"][0].slice(0, 0)
    killed_mid_run = 0
    for round_rows in traffic["rounds"]:
        _append_payload(path, round_rows)
        visible = pa.concat_tables([visible, round_rows])
        mark = _store(path).watermark()
        mark_before = None if mark is None else epoch_ms(mark)
        # a kill at a random point of this round's work, then a run to the end
        killed_mid_run += _kill_after(path, rng.randint(1, round_rows.num_rows // 2)) > 0
        _assert_watermark_covers_only_written_rows(path, visible, mark_before)
        summary = run_once(_store(path), build_profile("light"), batch_size=200, late_margin=MARGIN)
        assert summary.read == summary.written  # a run reads rows it writes, not the whole table
        _assert_watermark_covers_only_written_rows(path, visible, mark_before)
    assert killed_mid_run >= 2, "the kills must land mid-run for this test to mean anything"

    too_late_id = parse_payload(traffic["too_late"])["request_id"][0].as_py()
    written = _requests(path)
    assert too_late_id not in set(written["request_id"].to_pylist())  # older than the margin: not seen
    assert written.equals(clean.filter(pc.not_equal(clean["request_id"], too_late_id)))

    capsys.readouterr()
    assert main(["--duckdb", str(path), "--quiet", "--full-rescan"]) == 0
    assert "full rescan: 1 rows were missing" in capsys.readouterr().out
    assert _requests(path).equals(clean)


def test_a_run_reads_only_rows_after_the_watermark_minus_the_margin(
    traffic: dict[str, pa.Table], tmp_path: Path
) -> None:
    """A row older than the margin that was never written stays unread by normal runs (proof the window is
    bounded), and a row inside the margin is read."""
    path = tmp_path / "inference.duckdb"
    first = traffic["rounds"][0]
    store = _store(path)
    store.replace_payload(first.slice(0, first.num_rows - 1))
    run_once(store, build_profile("light"), late_margin=MARGIN)
    mark = store.watermark()
    assert mark is not None and epoch_ms(mark) == pc.max(first.slice(0, first.num_rows - 1)["timestamp_ms"]).as_py()
    old = first.slice(10, 1).set_column(1, "databricks_request_id", pa.array(["never-seen"]))
    old = old.set_column(3, "timestamp_ms", pa.array([epoch_ms(mark - MARGIN) - 1], pa.int64()))
    recent = first.slice(first.num_rows - 1, 1)  # newer than the mark
    inside = first.slice(11, 1).set_column(1, "databricks_request_id", pa.array(["inside-margin"]))
    inside = inside.set_column(3, "timestamp_ms", pa.array([epoch_ms(mark - MARGIN) + 1], pa.int64()))
    _append_payload(path, pa.concat_tables([old, recent, inside]))
    summary = run_once(store, build_profile("light"), late_margin=MARGIN)
    assert (summary.read, summary.written) == (2, 2)
    ids = _written_ids(path)
    assert "inside-margin" in ids and "never-seen" not in ids
    rescan = run_once(store, build_profile("light"), late_margin=MARGIN, full_rescan=True)
    assert (rescan.written, rescan.full_rescan) == (1, True)
    assert "never-seen" in _written_ids(path)


def test_a_limited_run_moves_the_watermark_only_over_what_it_wrote(
    traffic: dict[str, pa.Table], tmp_path: Path
) -> None:
    path = tmp_path / "inference.duckdb"
    payload = traffic["rounds"][0]
    store = _store(path)
    store.replace_payload(payload)
    run_once(store, build_profile("light"), batch_size=70, limit=250)
    mark = store.watermark()
    assert mark is not None
    ts = payload["timestamp_ms"]
    written = _written_ids(path)
    ids = parse_payload(payload)["request_id"]
    unwritten_times = [t for t, i in zip(ts.to_pylist(), ids.to_pylist(), strict=True) if i not in written]
    assert epoch_ms(mark) < min(unwritten_times)  # never past a row that was not written
    assert epoch_ms(mark) >= max(t for t, i in zip(ts.to_pylist(), ids.to_pylist(), strict=True) if i in written) - 1


def test_the_progress_bar_shows_rows_per_second_and_time_left(
    traffic: dict[str, pa.Table], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "inference.duckdb"
    _store(path).replace_payload(traffic["rounds"][0].slice(0, 300))
    assert main(["--duckdb", str(path), "--batch-size", "100"]) == 0
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "300/300 rows" in last and "rows/s" in last and "left" in last, last
