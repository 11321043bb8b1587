"""Paged request lists (Requests, Toxicity): sort and page-size controls, the page picker, texts joined in."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd
import streamlit as st

from ui import data, detail_charts

PAGE_SIZES = (25, 50, 100, 200)


def order_controls(
    columns: list[Any], sorts: Mapping[str, str], key: str, sort_label: str = "Sort by"
) -> tuple[str, bool, int]:
    """(sort column, descending, rows per page), drawn into three columns; widget keys start with `key`."""
    sort = columns[0].selectbox(sort_label, list(sorts), format_func=sorts.__getitem__, key=f"{key}_sort")
    descending = columns[1].toggle("Descending", value=True, key=f"{key}_desc")
    page_size = columns[2].selectbox("Rows per page", PAGE_SIZES, index=1, key=f"{key}_page_size")
    return sort, descending, page_size


def page_picker(total: int, page_size: int, key: str) -> int:
    """The page the user picks (0-based) among those `total` rows fill."""
    pages = max(1, math.ceil(total / page_size))
    picked = st.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, value=1, step=1, key=f"{key}_page")
    return int(picked) - 1


def with_texts(rows: pd.DataFrame, inline: bool, **text_arguments: Any) -> pd.DataFrame:
    """The page's rows with their prompt and response, looked up by key when the listing did not carry them."""
    if inline or rows.empty:
        return rows
    texts = data.fetch_or_stop("queries.listing.request_texts", keys=detail_charts.text_keys(rows), **text_arguments)
    return detail_charts.with_texts(rows, texts.data)


def shown_range(page: int, page_size: int, shown: int, total: int) -> str:
    """'51–100 of 1,234': which rows of the whole list this page shows."""
    first = page * page_size
    return f"{first + 1:,}–{first + shown:,} of {total:,}"
