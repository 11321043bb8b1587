"""What every page draws on the demo, as numbers: the metric tiles, each table's numeric columns and each chart
trace's numeric x, y and z, taken from the running app under Streamlit's AppTest (default filters).

This complements `testkit.page_snapshot` (the query results): statistics computed after the queries (version
comparison, Holm-adjusted p-values, KS, PSI, percentiles, costs) are checked here. Labels, column names and
styling may change; the numbers may not. Rewrite only after a deliberate change of the demo data:

    python -m testkit.page_render
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from testkit.page_snapshot import build_demo, write_golden

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "page_render.json.gz"
PAGES = (
    "views/overview.py",
    "views/trends.py",
    "views/toxicity.py",
    "views/usage.py",
    "views/drift.py",
    "views/requests.py",
    "views/registry.py",
)
SIGNIFICANT_DIGITS = 10


@contextmanager
def _data_dir(folder: Path) -> Iterator[None]:
    import streamlit as st

    saved = {k: os.environ.get(k) for k in ("INFERENCE_EXPLORER_DATA_DIR", "DATABRICKS_HOST")}
    os.environ["INFERENCE_EXPLORER_DATA_DIR"] = str(folder)
    os.environ.pop("DATABRICKS_HOST", None)
    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        st.cache_data.clear()
        st.cache_resource.clear()


def _numbers(values: Any) -> list[float] | None:
    """A numeric series rounded for storage, or None when the values are not numbers (texts, dates, booleans)."""
    array = np.asarray(values, dtype=object).ravel()
    if array.size == 0 or not all(
        v is None or (isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_))
        for v in array
    ):
        return None
    if all(v is None for v in array):
        return None
    return [
        None
        if v is None or (isinstance(v, float | np.floating) and math.isnan(v))
        else float(f"{float(v):.{SIGNIFICANT_DIGITS}g}")
        for v in array
    ]


def _decoded(values: Any) -> Any:
    """Plotly's JSON keeps numpy arrays as {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(values, dict) and "bdata" in values:
        array = np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"]))
        return array.tolist()
    return values


def _page(at: Any) -> dict[str, Any]:
    series: list[dict[str, Any]] = []
    for i, frame in enumerate(at.dataframe):
        table = frame.value
        for column in table.columns:
            values = _numbers(table[column].astype(object).where(table[column].notna(), None).tolist())
            if values is not None:
                series.append({"from": f"table {i} column {column}", "values": values})
    for i, chart in enumerate(at.get("plotly_chart")):
        for j, trace in enumerate(json.loads(chart.proto.spec).get("data", [])):
            for axis in ("x", "y", "z"):
                numbers = _numbers(_decoded(trace[axis])) if axis in trace else None
                if numbers is not None:
                    series.append({"from": f"chart {i} trace {j} ({trace.get('name')}) {axis}", "values": numbers})
    metrics = [[m.label, m.value] for m in at.metric]
    return {"metrics": metrics, "series": series}


def render(data_dir: Path) -> dict[str, Any]:
    """{page: {"metrics": [[label, value]], "series": [{"from", "values"}]}} for every page, default filters."""
    from streamlit.testing.v1 import AppTest

    drawn: dict[str, Any] = {}
    with _data_dir(data_dir):
        for page in PAGES:
            at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
            at.run()
            if page != PAGES[0]:
                at.switch_page(page).run()
            problems = [str(e.value) for e in (*at.exception, *at.error)]
            if problems:
                raise RuntimeError(f"{page} failed to draw: {problems}")
            drawn[page] = _page(at)
    return drawn


def stable(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """What two independent builds drew alike; a series that differs is listed under "volatile" and not compared:
    the demo registry's evaluation timings are wall-clock, and its artifact sizes depend on the folder's path."""
    kept: dict[str, Any] = {}
    for page, drawn in first.items():
        again = {s["from"]: s["values"] for s in second[page]["series"]}
        same = [s for s in drawn["series"] if again.get(s["from"]) == s["values"]]
        volatile = sorted({s["from"] for s in drawn["series"]} - {s["from"] for s in same})
        metrics = [m for m in drawn["metrics"] if m in second[page]["metrics"]]
        kept[page] = {"metrics": metrics, "series": same, "volatile": volatile}
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=GOLDEN)
    args = parser.parse_args(argv)
    taken = []
    for nested in ("", "a/longer/path/than/the/first"):  # MLflow writes the store's path into artifacts
        with tempfile.TemporaryDirectory(prefix="page-render-") as scratch:
            taken.append(render(build_demo(Path(scratch) / nested)))
    drawn = stable(*taken)
    write_golden(args.out, drawn)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
