"""How numbers are shown (what each metric is lives in `core.catalog`, each scorer in `core.scorers`)."""

from __future__ import annotations


def number(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"
