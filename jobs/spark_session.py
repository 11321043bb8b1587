"""Spark sessions for the jobs: a local one that stays on this machine, the cluster's on Databricks, and this
repo's packages shipped to the executors."""

from __future__ import annotations

import functools
import logging
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from data_access.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# The packages executors import; shipped with the job so workers need no install of this repo.
CODE_PACKAGES = ("core", "data_access", "jobs", "metrics")
REPO_ROOT = Path(__file__).resolve().parent.parent
MASTER_ENV = "INFERENCE_EXPLORER_SPARK_MASTER"


def local_spark(
    master: str = "local[2]",
    warehouse_dir: Path | None = None,
    metastore_dir: Path | None = None,
    app_name: str = "inference-explorer",
) -> SparkSession:
    """A local Spark session that stays on this machine: no UI, loopback only, UTC, workers on this Python.

    `metastore_dir` keeps the table catalog (a Derby metastore) there across processes; without it the
    catalog lives in memory (tests). Tables are written under `warehouse_dir` (default: a new temp dir).
    """
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers need this venv's pyarrow and scorers
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    warehouse = Path(warehouse_dir) if warehouse_dir else Path(tempfile.mkdtemp(prefix="spark-warehouse-"))
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.warehouse.dir", str(warehouse.resolve()))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "4")  # the default 200 is for clusters
        # Generated classes a session keeps compiled (default 100): one page's statement over the rollups makes ~20,
        # its fallback over the requests table ~40, so with the default a session serving a few pages compiled
        # each statement's classes again on every visit (and the JVM then compiled those new classes again).
        .config("spark.sql.codegen.cache.maxEntries", "2000")
        .config("spark.python.worker.reuse", "true")  # keeps each worker's model cache (the default, made explicit)
    )
    if metastore_dir is not None:
        metastore = Path(metastore_dir).resolve()
        metastore.mkdir(parents=True, exist_ok=True)
        builder = (
            builder.config(
                "spark.hadoop.javax.jdo.option.ConnectionURL",
                f"jdbc:derby:;databaseName={metastore / 'metastore_db'};create=true",
            )
            .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={metastore}")
            .enableHiveSupport()
        )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    quiet_query_errors()
    return spark


def quiet_query_errors() -> None:
    """PySpark logs every failed query's JVM stack as JSON on stderr; we report a one-line reason instead."""
    from pyspark.logger import PySparkLogger

    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)


def job_session(settings: Settings) -> SparkSession:
    """The cluster's session on Databricks (or under spark-submit), else a local one with a persistent catalog."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None or "DATABRICKS_RUNTIME_VERSION" in os.environ:
        spark = active or SparkSession.builder.getOrCreate()
        quiet_query_errors()
        return spark
    spark_dir = settings.data_dir / "spark"
    return local_spark(
        os.environ.get(MASTER_ENV, "local[*]"), warehouse_dir=spark_dir / "warehouse", metastore_dir=spark_dir
    )


@functools.cache
def _code_archive() -> Path:
    """This repo's packages as one zip, built once per driver process: modules and their package data (the
    injection corpus, the demo texts), which the packages read through importlib.resources."""
    archive = Path(tempfile.mkdtemp(prefix="inference-explorer-code-")) / "inference_explorer_code.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for package in CODE_PACKAGES:
            for source in sorted((REPO_ROOT / package).rglob("*")):
                if source.is_file() and "__pycache__" not in source.parts:
                    bundle.write(source, source.relative_to(REPO_ROOT).as_posix())
    return archive


def ship_code(spark: SparkSession) -> None:
    """Put this repo's packages on every executor's Python path (once per SparkContext)."""
    context = spark.sparkContext
    if getattr(context, "_inference_explorer_code", False):
        return
    context.addPyFile(str(_code_archive()))
    context._inference_explorer_code = True  # type: ignore[attr-defined]
