"""How much of the traffic each sampled scorer scored (core/sampling.py), per model version.

A scorer that left a request out of its sample leaves its scorer column empty, and the profile rollups keep the
scorer columns as keys, so the rollup alone says how many requests each scorer scored: no scan of the raw table.
"""

from __future__ import annotations

from core.sampling import COVERED_SCORERS, SAMPLED_SCORERS
from data_access.config import TableName
from data_access.queries import Filters, Query, sum_counts
from data_access.rollups import profile_rows


def scorer_coverage(table: TableName, filters: Filters, from_rollups: bool = True) -> Query:
    """Per model version: requests, and for each scorer (`<slot>_scored`) the requests it scored (a value, a
    failure or an empty text; not the ones outside its sample). RAG support is left out: a request without a
    retrieved context has no RAG scorer either, so its coverage says nothing about sampling."""
    m = profile_rows(table, filters, "hour", from_rollups)  # no time buckets: the fewest rows
    scored = {
        f"{slot}_scored": sum_counts(m.requests, where=m[SAMPLED_SCORERS[slot]].notnull()) for slot in COVERED_SCORERS
    }
    expr = m.group_by("model_version").agg(requests=sum_counts(m.requests), **scored).order_by("model_version")
    return Query("scorer_coverage", expr)
