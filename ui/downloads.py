"""Every table and chart can be taken away as CSV (and filtered requests as Parquet)."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import pandas as pd
import streamlit as st

from data_access import text_caps


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def csv_button(frame: pd.DataFrame, name: str, label: str = "Download CSV") -> None:
    st.download_button(label, csv_bytes(frame), f"{name}.csv", "text/csv", key=f"csv-{name}", icon="⬇️")


def capped_text(
    value: str | Mapping[str, Any] | None, name: str, label: str, as_json: bool = False, always_download: bool = False
) -> None:
    """A user's text or a raw payload (a mapping is written as JSON), drawn within the caps of data_access.text_caps
    (pretty-printed JSON when `as_json`), with the full value as a download whenever something was left out (or
    always, if asked)."""
    text = json.dumps(dict(value), ensure_ascii=False) if isinstance(value, Mapping) else value
    shown = text_caps.shown_json(text) if as_json else text_caps.shown_text(text)
    st.code(shown.text, language=shown.language, wrap_lines=True)
    if shown.cut:
        st.caption(f"Cut for the browser: {shown.note}. The download has all of it.")
    if text is not None and (shown.cut or always_download):
        extension, mime = ("json", "application/json") if as_json else ("txt", "text/plain")
        st.download_button(
            f"Download the full {label} ({len(text):,} characters)", lambda: text.encode("utf-8", "replace"),
            f"{name}.{extension}", mime, key=f"full-{name}", icon="⬇️",
        )  # fmt: skip
