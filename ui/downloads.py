"""Every table and chart can be taken away as CSV (and filtered requests as Parquet)."""

from __future__ import annotations

import io

import pandas as pd
import streamlit as st


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def csv_button(frame: pd.DataFrame, name: str, label: str = "Download CSV") -> None:
    st.download_button(label, csv_bytes(frame), f"{name}.csv", "text/csv", key=f"csv-{name}", icon="⬇️")
