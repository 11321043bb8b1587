"""The month of traffic the demo depicts: endpoint, model, the canary rollout of version 7, an incident, and
the shares of errors, odd payloads and request formats."""

from __future__ import annotations

from datetime import UTC, datetime

ENDPOINT_NAME = "dbdemos_endpoint_advanced"
MODEL_NAME = "dbdemos_advanced_chatbot_model"


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


MONTH_START_MS = _ms(2026, 4, 1)
MONTH_END_MS = _ms(2026, 5, 1)
MINUTES = (MONTH_END_MS - MONTH_START_MS) // 60_000
# Canary rollout of version 7: (start of step in ms, share of traffic on v7 from then on).
ROLLOUT: tuple[tuple[int, float], ...] = (
    (_ms(2026, 4, 12, 10), 0.10),
    (_ms(2026, 4, 17, 10), 0.50),
    (_ms(2026, 4, 21, 9), 1.00),
)
# Right after the 50% step v7 is briefly under-provisioned: a burst of 503s on its replicas.
INCIDENT = (_ms(2026, 4, 17, 14, 5), _ms(2026, 4, 17, 14, 50), 0.20)

# Per-request shares (of all rows). Error shares are base rates; 429 scales with load.
P_503 = 0.009
P_504 = {6: 0.005, 7: 0.002}
P_429 = 0.004
P_400 = 0.0035
P_MALFORMED = 0.002  # malformed pool entries: truncated / non-JSON / no messages / null request
P_NULL_IDS = 0.0005  # no databricks_request_id (half of those carry a client_request_id)
P_NO_VERSION = 0.0005  # request_metadata without model_version
P_CLIENT_ID = 0.03
P_DUPLICATE = 0.0005  # a retry logged twice with the same request id

# Share of successful requests per prompt kind.
KIND_SHARES: dict[str, float] = {
    "on_topic": 0.768,
    "multi_turn": 0.08,
    "off_topic": 0.05,
    "non_english": 0.05,
    "toxic": 0.03,
    "injection": 0.015,
    "empty": 0.005,
    "long": 0.002,
}
FORMAT_SHARES: dict[str, float] = {
    "chat": 0.85,
    "completions": 0.04,
    "dataframe_split": 0.04,
    "dataframe_records": 0.04,
    "inputs": 0.03,
}
DOCS = "https://docs.databricks.com/en/"
