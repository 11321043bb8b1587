"""Table layouts shared by every engine: the raw payload table and the flat requests table.

The payload layout is exactly what Databricks Model Serving writes to an inference table.
The requests table is our typed, one-row-per-request view of it; every page reads it.
"""

from __future__ import annotations

import ibis
import ibis.expr.datatypes as dt
import pyarrow as pa

PAYLOAD_SCHEMA = ibis.schema(
    {
        "client_request_id": dt.string,
        "databricks_request_id": dt.string,
        "date": dt.date,
        "timestamp_ms": dt.int64,
        "status_code": dt.int32,
        "execution_time_ms": dt.int64,
        "request": dt.string,
        "response": dt.string,
        "sampling_fraction": dt.float64,
        "request_metadata": dt.Map(dt.string, dt.string),
    }
)

# Metric columns and the column naming the scorer that produced them. Numbers from different
# scorers are never pooled: every aggregate over a metric also groups or filters by its scorer.
METRIC_SCORER_COLUMN: dict[str, str] = {
    "prompt_toxicity": "toxicity_scorer",
    "response_toxicity": "toxicity_scorer",
    "response_fk_grade": "readability_scorer",
    "response_perplexity": "perplexity_scorer",
}

REQUESTS_SCHEMA = ibis.schema(
    {
        "request_id": dt.string,  # databricks_request_id, else client_request_id, else a hash of the row
        "client_request_id": dt.string,
        "request_time": dt.timestamp,  # UTC, from timestamp_ms, no time zone
        "date": dt.date,
        "endpoint_name": dt.string,
        "model_name": dt.string,
        "model_version": dt.string,
        "status_code": dt.int32,
        "latency_ms": dt.int64,
        "sampling_fraction": dt.float64,
        # chat, completions, dataframe_split, dataframe_records, inputs, instances or unknown
        "request_format": dt.string,
        "prompt_text": dt.string,  # last user message
        "response_text": dt.string,
        "request_bytes": dt.int64,  # UTF-8 size of the raw request JSON
        "response_bytes": dt.int64,
        "prompt_tokens": dt.int64,
        "completion_tokens": dt.int64,
        "total_tokens": dt.int64,
        "tokens_estimated": dt.boolean,  # true when not taken from the response's `usage`
        "parse_error": dt.string,  # null when the payload parsed cleanly
        "prompt_toxicity": dt.float64,
        "response_toxicity": dt.float64,
        "toxicity_scorer": dt.string,
        "response_fk_grade": dt.float64,
        "readability_scorer": dt.string,
        "response_perplexity": dt.float64,
        "perplexity_scorer": dt.string,
        "score_error": dt.string,  # why a metric is null, "; "-joined, null when all scored
        "scored_at": dt.timestamp,
    }
)

PARSED_COLUMNS: tuple[str, ...] = REQUESTS_SCHEMA.names[: REQUESTS_SCHEMA.names.index("parse_error") + 1]
METRIC_COLUMNS: tuple[str, ...] = REQUESTS_SCHEMA.names[len(PARSED_COLUMNS) :]


def arrow_schema(schema: ibis.Schema) -> pa.Schema:
    """The Arrow layout of a table schema (timestamps in microseconds, no time zone)."""
    return schema.to_pyarrow()


PAYLOAD_ARROW = arrow_schema(PAYLOAD_SCHEMA)
REQUESTS_ARROW = arrow_schema(REQUESTS_SCHEMA)
PARSED_ARROW = pa.schema([REQUESTS_ARROW.field(name) for name in PARSED_COLUMNS])
