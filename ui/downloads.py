"""Every table and chart can be taken away as CSV (and filtered requests as Parquet), every chart as PNG."""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Mapping
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from data_access import text_caps
from ui.report import for_export


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


PNG_SIZE = (1280, 720)  # a 16:9 slide


@functools.cache
def png_renderer() -> str | None:
    """The Chrome or Chromium kaleido drives to draw a PNG on the server (it downloads none), or None."""
    try:
        from choreographer.browsers.chromium import Chromium
    except ImportError:  # kaleido not installed
        return None
    return Chromium.find_browser(skip_local=False)


def png_bytes(fig: go.Figure, width: int = PNG_SIZE[0], height: int = PNG_SIZE[1]) -> bytes:
    """The figure as a PNG of the given size in CSS pixels, drawn by plotly.js in a headless browser (kaleido).

    Offline: plotly.js comes from the plotly package and MathJax (kaleido's default is a CDN URL) is left out.
    Kaleido 1.5 sometimes evaluates before its page's script has run on a busy machine ("kaleido_scopes is not
    defined"); one more try in a fresh browser draws it.
    """
    import kaleido
    from kaleido.errors import JavascriptError

    spec = for_export(fig).to_dict()
    options = {"format": "png", "width": width, "height": height, "scale": 1}
    try:
        return bytes(kaleido.calc_fig_sync(spec, opts=options, kopts={"mathjax": False}))
    except JavascriptError:
        return bytes(kaleido.calc_fig_sync(spec, opts=options, kopts={"mathjax": False}))


def png_button(fig: go.Figure, name: str, label: str = "Download PNG", height: int = PNG_SIZE[1]) -> None:
    """A PNG of the chart, drawn only when clicked (a headless browser takes a second or two)."""
    if png_renderer() is None:
        st.caption("PNG: use the camera icon at the chart's top right (this server has no Chrome for kaleido).")
        return
    st.download_button(
        label,
        lambda: png_bytes(fig, PNG_SIZE[0], height),
        f"{name}.png",
        "image/png",
        key=f"png-{name}",
        icon=":material/image:",
    )


def chart(fig: go.Figure, name: str, **options: Any) -> Any:
    """`st.plotly_chart` (with `options`) and a PNG download of the same figure below it; returns the chart's event.
    The chart's own camera icon saves a PNG named after it too, drawn by the browser."""
    config = {"toImageButtonOptions": {"format": "png", "filename": name, "scale": 2}}
    event = st.plotly_chart(fig, config=config, **options)
    png_button(fig, name, "Download chart (PNG)")
    return event


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
