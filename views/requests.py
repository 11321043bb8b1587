"""Requests: search and filter individual requests, open one to read it in full, download the matches."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.catalog import METRICS
from core.requesters import identity_of, requester_label
from core.sampling import SLOT_OF_COLUMN, percent, rates_from_text, slots_of
from core.scorers import scorer_caption
from core.versions import version_label
from data_access import text_caps
from data_access.queries import requests
from data_access.queries.listing import PREVIEW_CHARS
from ui import columns, data, detail_charts, downloads, filters, paging, sampling

FIELD_LABELS = {"prompt_text": "Prompt", "response_text": "Response", "request_id": "Request id"}
SORT_LABELS = {
    "request_time": "Time",
    "latency_ms": "Latency",
    "total_tokens": "Total tokens",
    "prompt_toxicity": "Prompt toxicity",
    "response_toxicity": "Response toxicity",
    "response_fk_grade": "Flesch-Kincaid grade",
    "response_perplexity": "Perplexity",
    "status_code": "Status code",
    "response_refusal": "Refusal",
    "response_pii_count": "PII in response",
    "prompt_pii_count": "PII in prompt",
    "prompt_injection": "Prompt injection similarity",
    "prompt_sentiment": "Prompt sentiment",
    "response_language_match": "Response in the prompt's language",
    "response_rag_support": "RAG support (lexical)",
}
RANGE_LABELS = {c: METRICS[c].label if c in METRICS else "Total tokens" for c in requests.RANGE_COLUMNS}
TABLE_ORDER = (
    "request_time",
    "model_version",
    "status_code",
    "prompt_text",
    "response_text",
    "latency_ms",
    "total_tokens",
    "tokens_estimated",
    "prompt_toxicity",
    "response_toxicity",
    "response_fk_grade",
    "response_perplexity",
    "response_refusal",
    "response_pii_count",
    "prompt_pii_count",
    "prompt_injection",
    "prompt_sentiment",
    "prompt_language",
    "response_language",
    "response_rag_support",
    "has_parse_error",
    "has_score_error",
    "request_id",
)
PARSE_LABELS = {"any": "Any", "with": "Only with a parse error", "without": "Only without"}


def status_label(code: object) -> str:
    return "no status" if code is None or pd.isna(code) else str(int(code))


def metric_ranges() -> tuple[requests.MetricRange, ...]:
    chosen = st.multiselect(
        "Metric ranges", list(requests.RANGE_COLUMNS), format_func=RANGE_LABELS.__getitem__, key="req_ranges",
        help="Keep requests whose value lies in a range (both ends included). Requests without a value drop out.",
    )  # fmt: skip
    ranges = []
    for column in chosen:
        low_col, high_col = st.columns(2)
        low = low_col.number_input(f"{RANGE_LABELS[column]} at least", value=None, key=f"req_low_{column}")
        high = high_col.number_input(f"{RANGE_LABELS[column]} at most", value=None, key=f"req_high_{column}")
        ranges.append(requests.MetricRange(column, low, high))
    return tuple(ranges)


def open_request(request_id: str, request_time: object) -> None:
    """Everything about one request: texts, metrics with their scorers, tokens, errors, and the raw payload."""
    at = None if request_time is None or pd.isna(request_time) else pd.Timestamp(request_time).to_pydatetime()
    found = data.fetch_or_stop("queries.requests.request_detail", request_id=request_id, request_time=at)
    if found.data.empty:
        st.warning(f"No request with id {request_id!r} in the requests table.")
        return
    row = found.data.iloc[0]
    st.subheader(f"Request {request_id}")
    facts = st.columns(4)
    facts[0].metric("Model version", version_label(row["model_version"]))
    facts[1].metric("Status", status_label(row["status_code"]))
    facts[2].metric("Latency", "–" if pd.isna(row["latency_ms"]) else f"{int(row['latency_ms']):,} ms")
    facts[3].metric(
        "Tokens", "–" if pd.isna(row["total_tokens"]) else f"{int(row['total_tokens']):,}",
        "estimated" if row["tokens_estimated"] else "reported by the endpoint", delta_color="off",
    )  # fmt: skip
    requester = requester_label(row["requester"], data.settings().hash_requesters)
    st.caption(
        f"{row['request_time']} UTC · endpoint {row['endpoint_name']} · format {row['request_format']} · "
        f"prompt {row['prompt_tokens']} + completion {row['completion_tokens']} tokens · requester {requester}"
    )
    prompt_col, response_col = st.columns(2)
    key = request_id[:40]
    with prompt_col:
        st.markdown("**Prompt** (last user message)")
        prompt = row["prompt_text"] if isinstance(row["prompt_text"], str) else None
        downloads.capped_text(prompt, f"request_{key}_prompt", "prompt")
    with response_col:
        st.markdown("**Response**")
        response = row["response_text"] if isinstance(row["response_text"], str) else None
        downloads.capped_text(response, f"request_{key}_response", "response")
    metrics = pd.DataFrame(
        [
            {
                "metric": info.label,
                "value": row[column],
                "unit": info.unit,
                "scorer": scorer_caption(row[info.scorer_column])
                if isinstance(row[info.scorer_column], str)
                else not_sampled(info.scorer_column, row["sample_rates"]),
            }
            for column, info in METRICS.items()
            if info.scorer_column
        ]
    )
    st.dataframe(metrics, hide_index=True, width="stretch")
    if isinstance(row["logging_error_codes"], str):
        st.warning(
            f"Not logged by Databricks: {row['logging_error_codes']}. The payload part it names was too large or "
            "failed to log, so it is empty here; this is Databricks' reason, not a parse error."
        )
    sides = ("prompt", "response")
    found_pii = [f"{side}: {row[f'{side}_pii_kinds']}" for side in sides if _text(row[f"{side}_pii_kinds"])]
    languages = [f"{side}: {row[f'{side}_language']}" for side in sides if _text(row[f"{side}_language"])]
    st.caption(
        "Personal data found: " + ("; ".join(found_pii) if found_pii else "none")
        + " · Languages: " + ("; ".join(languages) if languages else "unknown")
    )  # fmt: skip
    if isinstance(row["parse_error"], str):
        st.error(f"Parse error: {text_caps.shown_text(row['parse_error'], 2_000).text}")
    if isinstance(row["score_error"], str):
        st.warning(f"Score errors: {text_caps.shown_text(row['score_error'], 2_000).text}")
    try:
        layout = data.payload_layout()
    except data.DataAccessError as error:
        data.show_error(error)
        return
    payload = data.fetch_or_stop(
        "queries.requests.raw_payload", payload=data.settings().payload_table, request_id=request_id,
        timestamp_ms=detail_charts.epoch_ms(row["request_time"]),
        day=None if pd.isna(row["date"]) else pd.Timestamp(row["date"]).date(), layout=layout,
    )  # fmt: skip
    with st.expander("Raw payload (as logged by Model Serving)", expanded=False):
        if payload.data.empty:
            st.info("No payload row with this request id (the payload table may have been trimmed).")
        for number, raw in enumerate(payload.data.itertuples(index=False), start=1):
            if len(payload.data) > 1:
                st.caption(f"Payload row {number} of {len(payload.data)} with this id (the first is the one scored).")
            name = f"payload_{key}_{number}"
            st.markdown("**request**")
            request = raw.request if isinstance(raw.request, str) else None
            downloads.capped_text(request, f"{name}_request", "request", as_json=True, always_download=True)
            st.markdown("**response**")
            response = raw.response if isinstance(raw.response, str) else None
            downloads.capped_text(response, f"{name}_response", "response", as_json=True, always_download=True)
            if layout == "gateway":
                st.markdown("**served_entity_id, requester, logging_error_codes**")
                codes = raw.logging_error_codes
                logged = {
                    "served_entity_id": raw.served_entity_id,
                    "requester": requester_label(raw.requester, data.settings().hash_requesters),
                    "logging_error_codes": [] if codes is None else [str(code) for code in codes],
                }
                downloads.capped_text(logged, f"{name}_metadata", "metadata", as_json=True)
            else:
                st.markdown("**request_metadata**")
                metadata = dict(raw.request_metadata) if raw.request_metadata is not None else {}
                downloads.capped_text(metadata, f"{name}_metadata", "metadata", as_json=True)
        data.show_sql(payload, label="SQL for the payload lookup")
    downloads.csv_button(found.data, f"request_{request_id[:40]}", "Download this request (CSV)")


def not_sampled(scorer_column: str, rates: object) -> str:
    """A missing scorer: outside that scorer's sample (the row records the rate it was scored under), or unscored."""
    slot = SLOT_OF_COLUMN.get(scorer_column)
    rate = rates_from_text(rates if isinstance(rates, str) else None).get(slot or "")
    return f"not in its sample (sampled at {percent(rate)})" if rate is not None else "–"


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value)


selected, grain = filters.current()
st.title("Requests")
st.caption("Find individual requests, read them in full with their scores, and download what matches.")

statuses = data.fetch_or_stop("queries.requests.status_counts", filters=selected)
if statuses.data.empty:
    st.info(data.NO_MATCH)
    st.stop()

with st.container(border=True):
    search_col, fields_col = st.columns([3, 2])
    text = search_col.text_input(
        "Search text", key="req_text", placeholder="Contains… (case-insensitive; % and _ are plain characters)"
    )
    fields = fields_col.multiselect(
        "In", list(requests.SEARCH_FIELDS), default=["prompt_text", "response_text"], key="req_fields",
        format_func=FIELD_LABELS.__getitem__,
    )  # fmt: skip
    status_col, parse_col = st.columns([3, 2])
    codes = [None if pd.isna(code) else int(code) for code in statuses.data["status_code"]]
    counts = dict(zip(codes, statuses.data["requests"], strict=True))
    chosen_codes = status_col.multiselect(
        "Status", codes, key="req_status", placeholder="Any status",
        format_func=lambda code: f"{status_label(code)} ({counts[code]:,})",
    )  # fmt: skip
    parse_error = parse_col.radio(
        "Parse error", list(PARSE_LABELS), format_func=PARSE_LABELS.__getitem__, horizontal=True, key="req_parse"
    )
    ranges = metric_ranges()
    requesters = data.fetch_or_stop("queries.toxicity.requester_options", filters=selected).data
    hashed = data.settings().hash_requesters
    identities = [str(r) for r in requesters["requester"]]
    labels = [requester_label(r, hashed) for r in identities]
    chosen_requester = st.selectbox(
        "Requester", labels, index=None, key="requester", bind="query-params", disabled=not labels,
        placeholder="Any requester" if labels else "Not logged in this inference table (legacy layout)",
        help="Who called the endpoint (AI Gateway inference tables log it). The link from the Toxicity page "
        "fills this in.",
    )  # fmt: skip  # no format_func: the URL carries the option as shown, so links can name it

requester = identity_of(chosen_requester, identities, hashed) if chosen_requester else None
search = requests.RequestSearch(
    text.strip(), tuple(fields), tuple(chosen_codes), parse_error, ranges, requester=requester
)
problems = requests.search_problems(search)
if problems:
    for problem in problems:
        st.warning(problem)
    st.stop()
if search.text:
    st.caption("A text search reads every prompt and response in the selected dates; narrow the dates to speed it up.")

order = st.columns([2, 1, 1])
sort, descending, page_size = paging.order_controls(order, {s: SORT_LABELS[s] for s in requests.REQUEST_SORTS}, "req")

# A range on, or a sort by, a sampled scorer's values: rows outside its sample have no value (not "clean").
scored_columns = [c for c in (*(r.column for r in ranges), sort) if c in METRICS and METRICS[c].scorer_column]
coverage = sampling.coverage(selected, data.rollups_usable()) if scored_columns else None
if coverage is not None:
    sampling.unscored_captions(coverage.data, slots_of(scored_columns))

count = data.fetch_or_stop("queries.requests.request_count", filters=selected, search=search)
total = int(count.data["rows"].iloc[0])
if total == 0:
    st.info("No request matches this search. Loosen the text, the status or the metric ranges.")
    st.stop()
page = paging.page_picker(total, page_size, "req")
listing = data.fetch_or_stop(
    "queries.requests.request_page", filters=selected, search=search, sort=sort, descending=descending,
    page=page, page_size=page_size,
)  # fmt: skip
rows = paging.with_texts(listing.data, requests.page_texts_inline(sort, search), chars=PREVIEW_CHARS)
st.caption(f"Requests {paging.shown_range(page, page_size, len(rows), total)}. Select a row to open it.")
picked = st.dataframe(
    rows,
    hide_index=True,
    width="stretch",
    on_select="rerun",
    selection_mode="single-row",
    key="req_table",
    column_order=TABLE_ORDER,
    column_config=columns.REQUEST_ROWS,
)
st.caption("Column headers sort this page only; use “Sort by” to order every match.")
data.show_sql(listing, label="SQL for this page")
downloads.csv_button(rows, "requests_page", "Download this page (CSV)")

# --- Export of every match, bounded ---------------------------------------------------------------------
with st.container(border=True):
    cap = requests.EXPORT_ROW_CAP
    st.markdown(f"**Download every match** (at most {cap:,} rows, in the order above)")
    export_key = (selected, search, sort, descending)
    if st.button("Prepare download", key="req_export"):
        st.session_state["req_export_for"] = export_key
    if st.session_state.get("req_export_for") == export_key:
        export = data.fetch_or_stop(
            "queries.requests.export_requests",
            filters=selected,
            search=search,
            sort=sort,
            descending=descending,
            limit=cap,
        )
        if total > cap:
            st.warning(f"{total:,} requests match; the file holds the first {cap:,} of them (the cap applied).")
        else:
            st.caption(f"All {len(export.data):,} matching requests.")
        rows_text = f"{len(export.data):,} rows"
        buttons = st.columns(2)
        # Deferred: the file is encoded when clicked, not on every rerun of the page.
        buttons[0].download_button(
            f"CSV ({rows_text})", lambda: downloads.csv_bytes(export.data), "requests_export.csv", "text/csv",
            key="req_export_csv", icon="⬇️",
        )  # fmt: skip
        buttons[1].download_button(
            f"Parquet ({rows_text})", lambda: downloads.parquet_bytes(export.data), "requests_export.parquet",
            "application/vnd.apache.parquet", key="req_export_parquet", icon="⬇️",
        )  # fmt: skip

# --- One request ------------------------------------------------------------------------------------------
chosen_rows = picked.selection.rows if picked else []
typed_id = st.text_input("Or open a request by its id", key="req_open_id").strip()
if chosen_rows:
    chosen = rows.iloc[chosen_rows[0]]
    open_request(str(chosen["request_id"]), chosen["request_time"])
elif typed_id:
    open_request(typed_id, None)
