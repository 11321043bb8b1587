"""Which inference-table layout a payload table has, told from its columns on any engine.

Databricks writes two layouts (data_access/schema.py): the legacy payload table and the AI Gateway-enabled
inference table. The columns come from `SELECT * FROM t LIMIT 0`, compiled by sqlglot for the engine's
dialect: the same statement answers on DuckDB, a Databricks SQL warehouse and Spark, reads no rows (no scan
billed) and needs only the SELECT grant the job needs anyway. `payload_format` ("auto", "legacy", "gateway")
in `[app]` or INFERENCE_EXPLORER_PAYLOAD_FORMAT overrides the detection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import sqlglot.expressions as sge

from data_access.config import PAYLOAD_FORMATS, TableName
from data_access.errors import DataAccessError
from data_access.schema import LAYOUT_SCHEMAS

Layout = Literal["legacy", "gateway"]
LAYOUT_LABELS = {"legacy": "a legacy payload table", "gateway": "an AI Gateway inference table"}


def columns_sql(table: TableName, dialect: str) -> str:
    """`SELECT * FROM table LIMIT 0` for a dialect: the table's columns, no rows."""
    target = sge.table_(table.table, db=table.schema, catalog=table.catalog, quoted=True)
    return sge.select("*").from_(target).limit(0).sql(dialect)


def missing_columns(columns: Iterable[str], layout: str) -> list[str]:
    """The columns of `layout` that `columns` lack (names compare case-insensitively, as Databricks does)."""
    present = {name.lower() for name in columns}
    return [name for name in LAYOUT_SCHEMAS[layout].names if name.lower() not in present]


def layout_of(columns: Iterable[str], payload_format: str = "auto", table: object = "the payload table") -> Layout:
    """The layout of a table with these columns, or a DataAccessError naming the columns that are missing."""
    columns = list(columns)
    if payload_format not in PAYLOAD_FORMATS:
        raise DataAccessError(
            f"Unknown payload_format '{payload_format}'.", "Set payload_format to auto, legacy or gateway."
        )
    candidates = ("legacy", "gateway") if payload_format == "auto" else (payload_format,)
    missing = {layout: missing_columns(columns, layout) for layout in candidates}
    for layout in candidates:
        if not missing[layout]:
            return layout  # type: ignore[return-value]
    closest = min(candidates, key=lambda layout: len(missing[layout]))
    chosen = "" if payload_format == "auto" else f" (payload_format = {payload_format})"
    raise DataAccessError(
        f"{table} is not an inference table Databricks writes{chosen}: as {LAYOUT_LABELS[closest]} it lacks "
        f"{', '.join(missing[closest])}.",
        "Point payload_table (--payload-table) at the inference table of the serving endpoint, or set "
        "payload_format to legacy or gateway if detection picked the wrong layout.",
    )


def detect_layout(
    run_columns: Callable[[str], list[str]], table: TableName, dialect: str, payload_format: str = "auto"
) -> Layout:
    """Detect the layout with `run_columns(sql) -> column names`, the engine-specific way to run one statement."""
    if payload_format in ("legacy", "gateway"):
        return payload_format  # type: ignore[return-value]
    return layout_of(run_columns(columns_sql(table, dialect)), payload_format, table)


def local_served_entities(name: TableName) -> TableName:
    """Off Databricks there is no `system` catalog: a DuckDB file (one catalog) and a local Spark catalog read
    `system.serving.served_entities` as `serving.served_entities` (where the gateway demo and
    `python -m jobs.spark_score --from-duckdb` write it), any other name as given."""
    return TableName(name.table, name.schema) if name.catalog == "system" else name


def served_entities_problem(table: TableName, reason: str) -> str:
    """What to say, once per run, when the served-entities table cannot be read, and which grants fix it.

    Databricks: only account admins can query system.serving.served_entities until they grant access
    (docs.databricks.com/en/ai-gateway/configure-ai-gateway-endpoints.html, "Grant access to system tables").
    """
    catalog, schema = table.catalog or "<catalog>", table.schema or "<schema>"
    return (
        f"Cannot read the served-entities table {table} ({reason}). Gateway rows are scored without endpoint, "
        "model name or version: they show as unversioned and are counted on every page. To map them, an account "
        f"admin grants: GRANT USE CATALOG ON CATALOG {catalog} TO `you`; GRANT USE SCHEMA ON SCHEMA {catalog}.{schema} "
        f"TO `you`; GRANT SELECT ON TABLE {table} TO `you` (or point served_entities_table / "
        "--served-entities-table at a copy you can read)."
    )
