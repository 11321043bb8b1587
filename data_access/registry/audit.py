"""The rollback audit log: one JSON record per line, appended whatever the outcome, read back for the page."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

AUDIT_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "actor",
    "model",
    "alias",
    "from_version",
    "to_version",
    "endpoint",
    "outcome",
    "message",
)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def append_audit(path: Path, record: Mapping[str, Any]) -> None:
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line)  # one write per record: appends from several processes do not interleave lines


def ensure_audit_log(path: Path) -> str | None:
    """None when the audit log can be appended to, else why not."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as error:
        return (
            f"The rollback audit log {path} cannot be written ({error.strerror or error}); nothing was changed. "
            "Fix the folder's permissions or point the app's data folder elsewhere."
        )
    return None


def read_audit_log(path: Path, newest_first: bool = True) -> pd.DataFrame:
    """Every audit record (`AUDIT_COLUMNS` plus `line`); a line that is not a record is kept as `unreadable`."""
    path = Path(path)
    columns = [*AUDIT_COLUMNS, "line"]
    if not path.exists():
        return pd.DataFrame(columns=columns)
    rows = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            rows.append({**_audit_row(line, number), "line": number})
    frame = pd.DataFrame(rows, columns=columns).astype(object)
    frame = frame.where(frame.notna(), None)  # a missing field is None, not NaN, in every text column
    for column in ("from_version", "to_version", "line"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame.iloc[::-1].reset_index(drop=True) if newest_first else frame


def _audit_row(line: str, number: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        return {"outcome": "unreadable", "message": f"Line {number} of the audit log is not a JSON record."}
    return {key: record.get(key) for key in AUDIT_COLUMNS}
