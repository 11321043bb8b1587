"""Table layouts shared by every engine: the raw payload tables, the served-entities table and the requests table.

Databricks writes inference tables in two layouts (data_access/layouts.py tells them apart):
- legacy (`PAYLOAD_SCHEMA`): the payload table of custom-model endpoints, which Databricks now calls the
  legacy experience (docs.databricks.com/en/machine-learning/model-serving/enable-model-serving-inference-tables.html);
- AI Gateway (`GATEWAY_PAYLOAD_SCHEMA`): the layout Databricks recommends for custom models, foundation models and
  agents ("AI Gateway-enabled inference table schema", docs.databricks.com/en/ai-gateway/inference-tables.html).
  Rows name only a `served_entity_id`; `system.serving.served_entities` maps it to endpoint, model and version.
The requests table is our typed, one-row-per-request view of either; every page reads it.
"""

from __future__ import annotations

import ibis
import ibis.expr.datatypes as dt
import pyarrow as pa
from ibis.backends.sql.datatypes import DatabricksType

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

# AI Gateway-enabled inference table, as documented (column order as Databricks lists it).
GATEWAY_PAYLOAD_SCHEMA = ibis.schema(
    {
        "request_date": dt.date,
        "databricks_request_id": dt.string,
        "client_request_id": dt.string,
        "request_time": dt.timestamp,
        "status_code": dt.int32,
        "sampling_fraction": dt.float64,
        "execution_duration_ms": dt.int64,
        "request": dt.string,
        "response": dt.string,
        "served_entity_id": dt.string,
        "logging_error_codes": dt.Array(dt.string),
        "requester": dt.string,
    }
)

# The columns of `system.serving.served_entities` we read (the system table has more; only these are selected).
# One row per served entity and endpoint configuration change.
SERVED_ENTITIES_SCHEMA = ibis.schema(
    {
        "served_entity_id": dt.string,
        "endpoint_name": dt.string,
        "entity_name": dt.string,
        "entity_version": dt.string,
        "served_entity_name": dt.string,
        "entity_type": dt.string,
        "endpoint_config_version": dt.int64,
        "change_time": dt.timestamp,
    }
)
# What the job joins onto each gateway row (latest row per served_entity_id), named as the parser reads them.
ENTITY_COLUMNS: tuple[str, ...] = ("endpoint_name", "entity_name", "entity_version", "served_entity_name")

LAYOUT_SCHEMAS: dict[str, ibis.Schema] = {"legacy": PAYLOAD_SCHEMA, "gateway": GATEWAY_PAYLOAD_SCHEMA}

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
        # chat, completions, responses (agents), dataframe_split, dataframe_records, inputs, instances, unknown
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
        # Added with the AI Gateway layout; all nullable and last, so older tables gain them with ADD COLUMN.
        "requester": dt.string,  # the user or service principal that called the endpoint (gateway layout only)
        "logging_error_codes": dt.string,  # why Databricks did not log a payload, ", "-joined; null when logged
        "served_entity_id": dt.string,
        "served_entity_name": dt.string,
        "retrieved_context": dt.string,  # retriever documents of an agent's MLflow trace, capped in size
        "retrieved_documents": dt.int32,  # how many documents the trace's retriever spans returned
        # Added with the PII, refusal, injection, sentiment, language and RAG scorers; nullable and last too.
        "prompt_pii_count": dt.float64,  # findings of personal data (metrics/pii.py)
        "response_pii_count": dt.float64,
        "prompt_pii_kinds": dt.string,  # e.g. "email,card"; "" when none
        "response_pii_kinds": dt.string,
        "pii_scorer": dt.string,
        "response_refusal": dt.float64,  # 1.0 when the response declines to answer
        "refusal_scorer": dt.string,
        "prompt_injection": dt.float64,  # 0-1, similarity to known prompt-injection / jailbreak attempts
        "injection_scorer": dt.string,
        "prompt_sentiment": dt.float64,  # VADER compound, -1 to 1
        "sentiment_scorer": dt.string,
        "prompt_language": dt.string,  # ISO 639-1
        "response_language": dt.string,
        "response_language_match": dt.float64,  # 1.0 when the response is in the prompt's language
        "language_scorer": dt.string,
        "response_rag_support": dt.float64,  # lexical: share of the response's content words in retrieved_context
        "rag_support_scorer": dt.string,
        # Per-scorer sampling (core/sampling.py): the rates below 1 the row was scored under, "toxicity=0.1";
        # null when every scorer ran. A scorer that left the row out of its sample keeps value and id empty.
        "sample_rates": dt.string,
    }
)

_FIRST_METRIC = REQUESTS_SCHEMA.names.index("prompt_toxicity")
_LAST_METRIC = REQUESTS_SCHEMA.names.index("scored_at")
_FIRST_NEW_METRIC = REQUESTS_SCHEMA.names.index("prompt_pii_count")
# Columns that came with the AI Gateway layout (older requests tables lack them until the job adds them).
GATEWAY_COLUMNS: tuple[str, ...] = REQUESTS_SCHEMA.names[_LAST_METRIC + 1 : _FIRST_NEW_METRIC]
PARSED_COLUMNS: tuple[str, ...] = REQUESTS_SCHEMA.names[:_FIRST_METRIC] + GATEWAY_COLUMNS
# The scorers' columns: the first three scores, then (older tables lack them until the job adds them) the rest.
SCORER_COLUMNS_ADDED: tuple[str, ...] = REQUESTS_SCHEMA.names[_FIRST_NEW_METRIC:]
METRIC_COLUMNS: tuple[str, ...] = REQUESTS_SCHEMA.names[_FIRST_METRIC : _LAST_METRIC + 1] + SCORER_COLUMNS_ADDED


def arrow_schema(schema: ibis.Schema) -> pa.Schema:
    """The Arrow layout of a table schema (timestamps in microseconds, no time zone)."""
    return schema.to_pyarrow()


PAYLOAD_ARROW = arrow_schema(PAYLOAD_SCHEMA)
GATEWAY_PAYLOAD_ARROW = arrow_schema(GATEWAY_PAYLOAD_SCHEMA)
SERVED_ENTITIES_ARROW = arrow_schema(SERVED_ENTITIES_SCHEMA)
LAYOUT_ARROW: dict[str, pa.Schema] = {"legacy": PAYLOAD_ARROW, "gateway": GATEWAY_PAYLOAD_ARROW}
# What the job hands the parser per layout: the table's columns, for the gateway plus the joined entity columns.
JOB_INPUT_ARROW: dict[str, pa.Schema] = {
    "legacy": PAYLOAD_ARROW,
    "gateway": pa.schema([*GATEWAY_PAYLOAD_ARROW, *(pa.field(name, pa.string()) for name in ENTITY_COLUMNS)]),
}
REQUESTS_ARROW = arrow_schema(REQUESTS_SCHEMA)
PARSED_ARROW = pa.schema([REQUESTS_ARROW.field(name) for name in PARSED_COLUMNS])


def column_ddl(schema: ibis.Schema) -> str:
    """`name TYPE, ...` of an Ibis schema in Spark/Databricks SQL (the DDL of the tables a job creates there)."""
    return ", ".join(f"`{name}` {DatabricksType.from_ibis(dtype).sql('databricks')}" for name, dtype in schema.items())
