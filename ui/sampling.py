"""The one caption every page draws under a sampled scorer's figures (core/sampling.py): how many requests each
scorer scored, per version (or per pooled side), with the help that says why the figures stay unbiased and
their intervals are wider. Pages draw nothing when every request was scored."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import pandas as pd
import streamlit as st

from core import sampling
from core.versions import version_label
from data_access.queries import Filters
from ui import data


def coverage(filters: Filters, use_rollups: bool) -> data.Frame:
    """Per version, the requests each sampled scorer scored (from the minute rollup when it is in use)."""
    return data.fetch_or_stop("queries.sampling.scorer_coverage", filters=filters, from_rollups=use_rollups)


def captions(
    rows: pd.DataFrame,
    groups: Sequence[object],
    slots: Iterable[str] = sampling.COVERED_SCORERS,
    scorers: Mapping[str, str | None] | None = None,
    label: Callable[[object], str] = version_label,
) -> list[str]:
    """Draw one caption per sampled scorer of `slots` over these groups (versions, or pooled labels); returns
    the lines drawn (none when every request was scored)."""
    lines = sampling.sampled_captions(rows, groups, slots, scorers, label)
    for line in lines:
        st.caption(line, help=sampling.SAMPLING_HELP)
    return lines


def unscored_captions(rows: pd.DataFrame, slots: Iterable[str]) -> list[str]:
    """Under a filter or sort on sampled scores: that the rows outside the sample have no value (not 'clean')."""
    lines = sampling.unscored_notes(rows, slots)
    for line in lines:
        st.caption(line, help=sampling.SAMPLING_HELP)
    return lines
