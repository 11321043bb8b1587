"""The Spark engine's tables in the catalog: names quoted for Spark SQL, the requests and payload layouts (as DDL,
and the requests rows in the Arrow types Spark hands over), what a table is (there, its format, partitioned by
date), columns added to an older requests table, the one-off rewrite partitioned by date, and tables written from
Arrow rows (the local demo copy, tests).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from data_access.config import TableName
from data_access.errors import DataAccessError
from data_access.schema import LAYOUT_SCHEMAS, PAYLOAD_SCHEMA, REQUESTS_ARROW, REQUESTS_SCHEMA, column_ddl

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

REQUESTS_DDL = column_ddl(REQUESTS_SCHEMA)
# The requests table is partitioned by date: a run's rollup refresh then reads only the dates it wrote.
PARTITIONED_BY_DATE = "PARTITIONED BY (`date`)"
PAYLOAD_DDL = column_ddl(PAYLOAD_SCHEMA)
# Spark timestamps are instants: hand them over as UTC so the session time zone cannot shift them.
SPARK_REQUESTS_ARROW = pa.schema(
    [pa.field(f.name, pa.timestamp("us", tz="UTC")) if pa.types.is_timestamp(f.type) else f for f in REQUESTS_ARROW]
)


def quoted(name: TableName) -> str:
    """A validated table name, quoted for Spark SQL."""
    return name.sql("databricks")


def table_exists(spark: SparkSession, name: TableName) -> bool:
    try:
        return bool(spark.catalog.tableExists(str(name)))
    except Exception:  # a missing catalog or schema raises instead of answering False
        return False


def table_provider(spark: SparkSession, name: TableName) -> str:
    """The table's format ('delta', 'parquet', ...), lower case."""
    for row in spark.sql(f"DESCRIBE TABLE EXTENDED {quoted(name)}").collect():
        if row["col_name"] == "Provider":
            return str(row["data_type"]).strip().lower()
    return "unknown"


def partitioned_by_date(spark: SparkSession, name: TableName) -> bool:
    return any(c.isPartition and c.name.lower() == "date" for c in spark.catalog.listColumns(str(name)))


def partition_command(requests: TableName) -> str:
    """The one-off command that partitions an older requests table by date (`partition_requests_by_date`)."""
    return f"`python -m jobs.spark_score --partition-requests --requests-table {requests}`"


def unpartitioned_warning(requests: TableName) -> str:
    return (
        f"warning: the requests table {requests} is not partitioned by date, so every rollup refresh reads all of "
        f"it: run {partition_command(requests)} once"
    )


def partition_requests_by_date(spark: SparkSession, requests: TableName) -> bool:
    """Rewrite an unpartitioned requests table partitioned by date (False: it already was). Delta: one atomic
    `CREATE OR REPLACE TABLE ... AS`, keeping the table's history; parquet: copied aside, then recreated from the
    copy (the copy stays if the recreation fails: `<table>__copy`)."""
    if partitioned_by_date(spark, requests):
        return False
    table = quoted(requests)
    if table_provider(spark, requests) == "delta":
        spark.sql(f"CREATE OR REPLACE TABLE {table} {PARTITIONED_BY_DATE} AS SELECT * FROM {table}")
        return True
    copy = replace(requests, table=f"{requests.table}__copy")
    spark.sql(f"DROP TABLE IF EXISTS {quoted(copy)}")
    spark.sql(f"CREATE TABLE {quoted(copy)} USING parquet AS SELECT * FROM {table}")
    if spark.table(str(copy)).count() != spark.table(str(requests)).count():
        raise DataAccessError(f"Copying {requests} lost rows; {requests} is left as it was.")
    # Recreated under its own name (a renamed partitioned table keeps its old partition paths in the catalog)
    spark.sql(f"DROP TABLE {table}")
    spark.sql(f"CREATE TABLE {table} USING parquet {PARTITIONED_BY_DATE} AS SELECT * FROM {quoted(copy)}")
    spark.sql(f"DROP TABLE {quoted(copy)}")
    return True


def add_missing_columns(spark: SparkSession, requests: TableName) -> None:
    """Columns added to the requests layout since the table was created (a new scorer's pair, the AI Gateway
    columns): they are nullable and added last, so existing rows read them as null."""
    present = {name.lower() for name in spark.table(str(requests)).columns}
    missing = {name: dtype for name, dtype in REQUESTS_SCHEMA.items() if name.lower() not in present}
    if missing:
        spark.sql(f"ALTER TABLE {quoted(requests)} ADD COLUMNS ({column_ddl(missing)})")


def write_payload_table(
    spark: SparkSession, name: TableName, payload: pa.Table, mode: str = "overwrite", layout: str = "legacy"
) -> int:
    """(Re)write a payload table in the Spark catalog from Arrow rows in a layout (legacy or gateway)."""
    return write_table(spark, name, payload, LAYOUT_SCHEMAS[layout], mode)


def write_table(spark: SparkSession, name: TableName, rows: pa.Table, schema: Any, mode: str = "overwrite") -> int:
    """(Re)write a Spark table with an Ibis schema's columns from Arrow rows (payload, served entities)."""
    arrow = schema.to_pyarrow()
    rows = rows.select(arrow.names).cast(arrow)
    ddl = column_ddl(schema)
    frame = spark.createDataFrame(rows, schema=ddl) if rows.num_rows else spark.createDataFrame([], ddl)
    frame.write.mode(mode).saveAsTable(str(name))
    return int(spark.table(str(name)).count())
