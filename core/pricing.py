"""The user's price table and the costs it implies. Pure: frames and dicts in, frames out, no Streamlit.

A version is priced only when both its prompt and completion prices are set (0 is a valid price). An unpriced
version's cost is missing (NaN), never 0, and totals say which versions they leave out. The editable table holds
prices as text so an empty cell shows blank (Streamlit draws a missing number as "None").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd

from core.versions import version_label, version_sort_key

PROMPT_PRICE = "USD per 1K prompt tokens"
COMPLETION_PRICE = "USD per 1K completion tokens"
VERSION = "Model version"
UNKNOWN_VERSION = "unknown"  # requests whose metadata named no version can still be priced under this name
UNKNOWN_LABEL = "unknown version"  # what `core.versions.version_label` calls a missing version


@dataclass(frozen=True)
class Price:
    prompt_per_1k: float | None = None
    completion_per_1k: float | None = None

    @property
    def complete(self) -> bool:
        return self.prompt_per_1k is not None and self.completion_per_1k is not None


# Prefilled for versions the user has not priced yet, so the page shows costs at once; labelled as examples.
EXAMPLE_PRICE = Price(0.0005, 0.0015)


def key_label(key: str) -> str:
    """A price-table key as the version label used on every page: "v7", or "unknown version"."""
    return version_label(None if key == UNKNOWN_VERSION else key)


def label_key(label: object) -> str:
    """The price-table key behind a version label (inverse of `key_label`; a bare key is taken as is)."""
    text = str(label).strip()
    if text in (UNKNOWN_LABEL, UNKNOWN_VERSION):
        return UNKNOWN_VERSION
    return text[1:] if text.startswith("v") else text


def version_keys(versions: pd.Series) -> pd.Series:
    """Model versions as price-table keys: text, with a missing version named `UNKNOWN_VERSION`."""
    return versions.astype(object).where(versions.notna(), UNKNOWN_VERSION).astype(str)


def price_table(versions: Iterable[str], saved: Mapping[str, Price], example: Price = Price()) -> pd.DataFrame:
    """One editable row per version (labelled "v7", "unknown version"), with the prices saved so far as text;
    a version never saved gets `example`, and a missing price is an empty cell."""
    ordered = sorted(set(versions), key=version_sort_key)
    chosen = [saved.get(v, example) for v in ordered]
    return pd.DataFrame(
        {
            VERSION: [key_label(v) for v in ordered],
            PROMPT_PRICE: [_price_text(p.prompt_per_1k) for p in chosen],
            COMPLETION_PRICE: [_price_text(p.completion_per_1k) for p in chosen],
        }
    )


def _price_text(value: float | None) -> str:
    return "" if value is None else f"{value:.10g}"


def _price_value(value: object, version: str, what: str, problems: list[str]) -> float | None:
    if isinstance(value, str):
        value = value.strip().removeprefix("$").strip()
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        problems.append(f"{key_label(version)}: the {what} price {value!r} is not a number; it is ignored.")
        return None
    if not math.isfinite(number) or number < 0:
        problems.append(f"{key_label(version)}: the {what} price {value} must be 0 or more; it is ignored.")
        return None
    return number


def read_prices(edited: pd.DataFrame) -> tuple[dict[str, Price], list[str]]:
    """Prices from the edited table, and what was wrong with any cell (a bad cell counts as empty)."""
    prices: dict[str, Price] = {}
    problems: list[str] = []
    for row in edited.to_dict("records"):
        version = label_key(row[VERSION])
        prompt = _price_value(row.get(PROMPT_PRICE), version, "prompt", problems)
        completion = _price_value(row.get(COMPLETION_PRICE), version, "completion", problems)
        prices[version] = Price(prompt, completion)
        if (prompt is None) != (completion is None):
            problems.append(f"{key_label(version)} has only one of its two prices, so it stays unpriced.")
    return prices, problems


def with_costs(usage: pd.DataFrame, prices: Mapping[str, Price]) -> pd.DataFrame:
    """Add `priced`, `prompt_cost`, `completion_cost` and `cost` (USD; NaN where the version is unpriced)."""
    out = usage.copy()
    price = version_keys(out["model_version"]).map(lambda v: prices.get(v, Price()))
    out["priced"] = price.map(lambda p: p.complete).astype(bool)
    prompt_rate = price.map(lambda p: p.prompt_per_1k if p.complete else math.nan).astype("float64")
    completion_rate = price.map(lambda p: p.completion_per_1k if p.complete else math.nan).astype("float64")
    out["prompt_cost"] = out["prompt_tokens"].astype("float64") / 1000 * prompt_rate
    out["completion_cost"] = out["completion_tokens"].astype("float64") / 1000 * completion_rate
    out["cost"] = out["prompt_cost"] + out["completion_cost"]
    return out


def cost_summary(costed: pd.DataFrame) -> pd.DataFrame:
    """Per version: requests, tokens, how many of them were estimated, and the cost or 'unpriced'."""
    grouped = costed.groupby(version_keys(costed["model_version"]).rename("model_version"), sort=False)
    summary = grouped.agg(
        requests=("requests", "sum"),
        prompt_tokens=("prompt_tokens", "sum"),
        completion_tokens=("completion_tokens", "sum"),
        estimated_prompt_tokens=("estimated_prompt_tokens", "sum"),
        estimated_completion_tokens=("estimated_completion_tokens", "sum"),
        priced=("priced", "all"),
    )
    summary["cost_usd"] = grouped["cost"].sum(min_count=1).where(summary["priced"])
    tokens = summary["prompt_tokens"] + summary["completion_tokens"]
    guessed_tokens = summary["estimated_prompt_tokens"] + summary["estimated_completion_tokens"]
    summary["estimated_token_share"] = (guessed_tokens / tokens.where(tokens > 0)).astype("float64")
    summary["cost"] = [
        f"${cost:,.2f}" if priced else "unpriced"
        for cost, priced in zip(summary["cost_usd"], summary["priced"], strict=True)
    ]
    summary = summary.reset_index()
    return summary.sort_values("model_version", key=lambda s: s.map(version_sort_key)).reset_index(drop=True)


def token_totals(summary: pd.DataFrame) -> tuple[int, float, int]:
    """(tokens, the share of them estimated, requests) over a `cost_summary`."""
    tokens = int(summary["prompt_tokens"].sum() + summary["completion_tokens"].sum())
    estimated = summary["estimated_prompt_tokens"].sum() + summary["estimated_completion_tokens"].sum()
    return tokens, float(estimated / tokens) if tokens else 0.0, int(summary["requests"].sum())


def priced_total(summary: pd.DataFrame) -> tuple[float | None, list[str]]:
    """The total cost of the priced versions (None if none is priced) and the versions it leaves out."""
    priced = summary[summary["priced"]]
    unpriced = summary.loc[~summary["priced"], "model_version"].tolist()
    return (float(priced["cost_usd"].sum()) if len(priced) else None), unpriced
