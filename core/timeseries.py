"""Time-series arithmetic the charts share: count-weighted smoothing over buckets. Pure numpy and pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd


def smoothed(values: np.ndarray, counts: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Count-weighted rolling mean over `window` consecutive buckets, centred, and the count behind each value.

    Each bucket weighs as many values as it holds, so a bucket of 2 requests moves the line as little as 2
    requests should: the smoothed value is sum(value x count) / sum(count) over the window, i.e. the mean of all
    values in those buckets. Buckets without a value (NaN) add nothing; a window with no count gives NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    counts = np.where(np.isnan(values), 0.0, np.asarray(counts, dtype=np.float64))
    weighted = pd.Series(np.where(counts > 0, values * counts, 0.0))
    rolling = {"window": max(int(window), 1), "center": True, "min_periods": 1}
    total = pd.Series(counts).rolling(**rolling).sum().to_numpy()
    sums = weighted.rolling(**rolling).sum().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, sums / total, np.nan), total
