"""Percentiles from fine histogram bins, computed in the engine (the engine-side twin of `core.stats.Binned`).

As numpy's default (linear) percentile: the order statistics k = floor((n - 1) q) and k + 1 (0-based) mixed by
the fraction. Each order statistic is placed evenly between its bin's smallest and largest value (exact at both
ends), so a percentile is off by at most its bin's spread.
"""

from __future__ import annotations

from collections.abc import Sequence

import ibis
import ibis.expr.types as ir


def percentile_name(q: float) -> str:
    return f"p{round(q * 100)}"


def binned_percentiles(bins: ir.Table, partition: Sequence[str], quantiles: Sequence[float]) -> ir.Table:
    """Per partition: `n` (values) and one column per quantile (`p50`, `p95`, ...), from rows with columns `bin`
    (ordered by value), `n`, `lo` and `hi`, one row per partition and bin."""
    keys = list(partition)
    running = ibis.window(group_by=keys, order_by="bin", preceding=None, following=0)
    counted = bins.mutate(cum=bins.n.sum().over(running), total=bins.n.sum().over(ibis.window(group_by=keys)))
    c = counted.mutate(before=counted.cum - counted.n)

    def order_statistic(k: ir.NumericValue) -> ir.FloatingScalar:
        inside = (c.before <= k) & (k < c.cum)
        return (c.lo + (c.hi - c.lo) * (k - c.before) / ibis.greatest(c.n - 1, 1)).max(where=inside)

    parts: dict[str, ir.Scalar] = {"n": c.total.max()}
    for q in quantiles:
        position = (c.total - 1).cast("float64") * ibis.literal(q, type="float64")  # DOUBLE, not DECIMAL, math
        k = position.floor()
        name = percentile_name(q)
        parts[f"_{name}_low"] = order_statistic(k)
        parts[f"_{name}_high"] = order_statistic(ibis.least(k + 1, c.total - 1))
        parts[f"_{name}_fraction"] = (position - k).max()
    ranked = c.group_by(keys).agg(**parts)
    percentiles = {}
    for q in quantiles:
        name = percentile_name(q)
        low, high = ranked[f"_{name}_low"], ranked[f"_{name}_high"]
        percentiles[name] = low + ranked[f"_{name}_fraction"] * (high - low)
    return ranked.select(*keys, "n", **percentiles)
