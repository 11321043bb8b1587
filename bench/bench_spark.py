"""Scoring throughput on local Spark against the embedded (DuckDB) engine, and how Spark scales with threads.

Run: `python -m bench.bench_spark [--rows N] [--threads 1 2 4] [--repeats R]`.

Same demo payload, same `light` profile, same rows per scorer batch (5,000) on both engines. The baseline is
the embedded job (`jobs.score.run_once`, one Python process) measured in this run. Spark runs
`jobs.spark_runs.run_spark_once` on `local[k]` for each k, one partition per thread. Both are timed warm:
models already loaded (the embedded profile scored a few rows first; every Spark worker process scored a
warm-up table first), so the numbers compare steady-state scoring plus each engine's read/anti-join/write,
not start-up. Session start-up and the warm-up run are printed separately. Each timed run scores the whole
payload into a fresh requests table; the best of `--repeats` runs is reported.

Wall time on a shared machine depends on what else runs (the load average is printed). CPU time does much less:
the bench also sums the CPU seconds of this process and all its descendants (the Spark JVM, its Python
daemon and workers) over each timed run, read from /proc, so "CPU ms per row" compares the engines' work and
"cores busy" (CPU s / wall s) shows how much parallelism each master actually got.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from bench.machine import describe
from data_access.config import TableName
from data_access.demo import generate_payload
from data_access.duckdb_store import DuckDBStore
from jobs.score import run_once
from jobs.scoring import parse_and_score
from jobs.spark_runs import SparkScoringJob, run_spark_once
from jobs.spark_session import local_spark
from jobs.spark_tables import write_payload_table
from metrics.profiles import build_profile

ROWS_PER_BATCH = 5_000
WARMUP_ROWS = 400


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min)"


def tree_cpu_seconds(root: int | None = None) -> float:
    """CPU seconds (user + system) used so far by process `root` (default: this one) and all its descendants."""
    root = os.getpid() if root is None else root
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        parent[int(entry.name)] = int(fields[1])  # fields[0] is the state: ppid, ..., utime at [11], stime at [12]
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree = {root}
    grew = True
    while grew:
        children = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        tree |= children
        grew = bool(children)
    return sum(ticks.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


@dataclass
class Timing:
    label: str
    seconds: list[float]
    rows: int
    cpu_seconds: list[float]

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.best

    @property
    def cpu_ms_per_row(self) -> float:
        return 1000 * min(self.cpu_seconds) / self.rows

    @property
    def cores_busy(self) -> float:
        best = self.seconds.index(self.best)
        return self.cpu_seconds[best] / self.best


def bench_embedded(payload: pa.Table, repeats: int, folder: Path) -> Timing:
    profile = build_profile("light")
    parse_and_score(payload.slice(0, WARMUP_ROWS), profile)  # loads the models once, as a warm worker has them
    seconds: list[float] = []
    cpus: list[float] = []
    for attempt in range(repeats):
        store = DuckDBStore(folder / f"embedded-{attempt}.duckdb", TableName("payload"), TableName("requests"))
        store.replace_payload(payload)
        cpu, started = tree_cpu_seconds(), time.perf_counter()
        summary = run_once(store, profile, batch_size=ROWS_PER_BATCH)
        seconds.append(time.perf_counter() - started)
        cpus.append(tree_cpu_seconds() - cpu)
        assert summary.written > 0.9 * payload.num_rows, summary.line()
    return Timing("embedded DuckDB (1 process)", seconds, summary.written, cpus)


def bench_spark(payload: pa.Table, threads: int, repeats: int, folder: Path) -> tuple[Timing, float, float]:
    started = time.perf_counter()
    spark = local_spark(f"local[{threads}]", warehouse_dir=folder / f"warehouse-{threads}")
    startup = time.perf_counter() - started
    try:
        write_payload_table(spark, TableName("payload"), payload)
        write_payload_table(spark, TableName("warmup_payload"), payload.slice(0, WARMUP_ROWS))
        warm = SparkScoringJob(TableName("warmup_payload"), TableName("warmup_requests"), "light", partitions=threads)
        started = time.perf_counter()
        run_spark_once(spark, warm)  # starts one Python worker per thread and loads its models
        warmup = time.perf_counter() - started
        seconds: list[float] = []
        cpus: list[float] = []
        for attempt in range(repeats):
            job = SparkScoringJob(
                TableName("payload"),
                TableName(f"requests_{attempt}"),
                "light",
                partitions=threads,
                rows_per_batch=ROWS_PER_BATCH,
            )
            cpu, started = tree_cpu_seconds(), time.perf_counter()
            summary = run_spark_once(spark, job)
            seconds.append(time.perf_counter() - started)
            cpus.append(tree_cpu_seconds() - cpu)
            assert summary.written > 0.9 * payload.num_rows, summary.line()
        return Timing(f"Spark local[{threads}]", seconds, summary.written, cpus), startup, warmup
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="demo payload rows (default: %(default)s)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4], help="local[k] values")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per engine; the best is kept")
    args = parser.parse_args(argv)

    print(f"machine: {describe()}")
    print(f"before: {load()}")
    payload = generate_payload(args.rows, 7)
    print(f"data: {payload.num_rows:,} demo payload rows, profile light, {ROWS_PER_BATCH:,} rows per scorer batch")
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        folder = Path(tmp)
        baseline = bench_embedded(payload, args.repeats, folder)
        results: list[tuple[Timing, float, float]] = []
        for threads in args.threads:
            results.append(bench_spark(payload, threads, args.repeats, folder))
            print(f"  measured local[{threads}] ({load()})", flush=True)
    report(baseline, results)
    print(f"after: {load()}")


def report(baseline: Timing, results: list[tuple[Timing, float, float]]) -> None:
    single = next((timing for timing, _, _ in results if timing.label.endswith("[1]")), None)
    print()
    header = (
        f"{'engine':<28} {'best s':>7} {'runs s':>12} {'rows/s':>7} {'vs DuckDB':>9} {'vs local[1]':>11} "
        f"{'CPU ms/row':>10} {'CPU vs DuckDB':>13} {'cores busy':>10}"
    )
    print(header)
    print("-" * len(header))
    print(_line(baseline, baseline, single, include_single=False))
    for timing, _, _ in results:
        print(_line(timing, baseline, single, include_single=single is not None))
    print()
    for timing, startup, warmup in results:
        print(f"{timing.label}: session start {startup:.1f} s, warm-up run ({WARMUP_ROWS} rows) {warmup:.1f} s")


def _line(timing: Timing, baseline: Timing, single: Timing | None, include_single: bool) -> str:
    runs = ", ".join(f"{s:.1f}" for s in timing.seconds)
    versus_duckdb = f"{timing.rows_per_second / baseline.rows_per_second:.2f}x"
    versus_single = f"{timing.rows_per_second / single.rows_per_second:.2f}x" if include_single and single else "-"
    cpu_ratio = f"{timing.cpu_ms_per_row / baseline.cpu_ms_per_row:.2f}x"
    return (
        f"{timing.label:<28} {timing.best:>7.1f} {runs:>12} {timing.rows_per_second:>7,.0f} "
        f"{versus_duckdb:>9} {versus_single:>11} {timing.cpu_ms_per_row:>10.3f} {cpu_ratio:>13} "
        f"{timing.cores_busy:>10.2f}"
    )


if __name__ == "__main__":
    main()
