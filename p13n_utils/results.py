"""The results contract: every number a notebook reports goes through :func:`record`.

A row is ``{"task", "level", "method", "metric", "value", "lower", "upper", "n"}`` with
``level`` one of ``global | persona | user`` and ``lower``/``upper`` a 95% bootstrap interval
where one applies. Under the runner (env ``P13N_RESULTS`` names a JSON-lines file) each row is
appended to that file as soon as it is recorded, so nothing is lost if a later cell fails; in
interactive use rows are kept in memory. :func:`table` shows them as a DataFrame.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np

LEVELS = ("global", "persona", "user")
COLUMNS = ("task", "level", "method", "metric", "value", "lower", "upper", "n")
_ROWS: list[dict] = []


def _finite(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def make_row(task, level, method, metric, value, lower=None, upper=None, n=None) -> dict:
    """Validate the fields of one results row and return it as a dict."""
    for name, text in (("task", task), ("method", method), ("metric", metric)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{name} must be a non-empty string, got {text!r}")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    value = _finite("value", value)
    lower = None if lower is None else _finite("lower", lower)
    upper = None if upper is None else _finite("upper", upper)
    if (lower is None) != (upper is None):
        raise ValueError("give both lower and upper, or neither")
    if lower is not None and not lower <= upper:
        raise ValueError(f"lower ({lower}) must not exceed upper ({upper})")
    if n is not None:
        if isinstance(n, bool) or int(n) != n or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        n = int(n)
    return dict(task=task, level=level, method=method, metric=metric,
                value=value, lower=lower, upper=upper, n=n)


def record(task: str, level: str, method: str, metric: str, value: float,
           lower: float | None = None, upper: float | None = None, n: int | None = None) -> dict:
    """Record one result row (validated). Re-recording the same task/level/method/metric
    replaces the earlier row in memory (re-running a cell); the runner keeps the last one."""
    row = make_row(task, level, method, metric, value, lower, upper, n)
    key = _key(row)
    _ROWS[:] = [r for r in _ROWS if _key(r) != key]
    _ROWS.append(row)
    path = os.environ.get("P13N_RESULTS")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    return row


def _key(row: dict) -> tuple:
    return row["task"], row["level"], row["method"], row["metric"]


def bootstrap_ci(values: Iterable[float], n_resamples: int = 2000, confidence: float = 0.95,
                 seed: int = 0, statistic=np.mean) -> tuple[float, float, float]:
    """``(statistic(values), lower, upper)``: a seeded percentile bootstrap interval.

    ``values`` are per-item numbers (per user, per dialogue). For a paired comparison of two
    methods on the same users, pass the per-user differences."""
    values = np.asarray(list(values), dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("bootstrap_ci needs a non-empty 1-d sequence of numbers")
    if not np.all(np.isfinite(values)):
        raise ValueError("bootstrap_ci got NaN or infinite values; drop or fix them first")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_resamples, values.size))
    stats = np.apply_along_axis(statistic, 1, values[idx]) if statistic is not np.mean \
        else values[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    lower, upper = np.quantile(stats, [alpha, 1 - alpha])
    return float(statistic(values)), float(lower), float(upper)


def ci_row(task: str, level: str, method: str, metric: str, per_item_values, n_resamples: int = 2000,
           seed: int = 0, transform=None) -> dict:
    """A validated row with the bootstrap mean and interval of ``per_item_values``, NOT recorded
    (e.g. another notebook's baseline recomputed on the same users, for a figure).
    ``transform`` (e.g. ``np.exp`` for a perplexity from NLLs) maps the value and both bounds."""
    values = np.asarray(list(per_item_values), dtype=float)
    value, lower, upper = bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
    if transform is not None:
        value, lower, upper = (float(transform(x)) for x in (value, lower, upper))
    return make_row(task, level, method, metric, value, lower, upper, n=values.size)


def record_ci(task: str, level: str, method: str, metric: str, per_item_values,
              n_resamples: int = 2000, seed: int = 0) -> dict:
    """Bootstrap the mean of ``per_item_values`` and record it with its interval and n."""
    values = np.asarray(list(per_item_values), dtype=float)
    mean, lower, upper = bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
    return record(task, level, method, metric, mean, lower, upper, n=values.size)


def rows() -> list[dict]:
    """The rows recorded in this process, in order."""
    return list(_ROWS)


def clear() -> None:
    """Forget the rows recorded in this process (not the runner's file)."""
    _ROWS.clear()


def read_rows(path: str | Path) -> list[dict]:
    """Read a JSON-lines results file; later rows replace earlier ones with the same key."""
    latest: dict[tuple, dict] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = make_row(**json.loads(line))
            latest.pop(_key(row), None)
            latest[_key(row)] = row
    return list(latest.values())


def table(rows_: list[dict] | None = None):
    """The rows (default: this process's) as a pandas DataFrame in contract column order."""
    import pandas as pd

    return pd.DataFrame(rows() if rows_ is None else rows_, columns=list(COLUMNS))


# --------------------------------------------------------------------------- statistics over users


def paired_difference(a: pd.Series, b: pd.Series, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Paired comparison of two methods on the same users: bootstrap the per-user ``a - b``.

    Parameters
    ----------
    a, b : Series indexed by user (e.g. :func:`per_user_nll` of two methods).

    Returns
    -------
    dict with ``mean`` (of a - b), ``lower``, ``upper`` (95% interval), ``n`` and
    ``share_a_lower`` (share of users where a < b).
    """
    if set(a.index) != set(b.index):
        raise ValueError("a and b must cover the same users (a paired comparison); "
                         f"{len(set(a.index) ^ set(b.index))} users differ")
    diff = (a - b.reindex(a.index)).to_numpy()
    mean, lower, upper = bootstrap_ci(diff, n_resamples=n_resamples, seed=seed)
    return {"mean": mean, "lower": lower, "upper": upper, "n": diff.size,
            "share_a_lower": float((diff < 0).mean())}


def record_ppl(task: str, level: str, method: str, per_user: pd.Series, n_resamples: int = 2000,
               seed: int = 0) -> dict:
    """Record ``ppl = exp(mean per-user NLL)`` with the bootstrap interval over users
    (the interval of the mean NLL, exponentiated: the percentile bootstrap commutes with a
    monotone map)."""
    mean, lower, upper = bootstrap_ci(per_user.to_numpy(), n_resamples=n_resamples, seed=seed)
    return record(task, level, method, "ppl", float(np.exp(mean)), float(np.exp(lower)),
                          float(np.exp(upper)), n=len(per_user))


def record_rating_errors(task: str, level: str, method: str, errors: pd.DataFrame, n_resamples: int = 2000,
                         seed: int = 0) -> dict:
    """Record ``mae`` and ``rmse`` of per-user rating errors (:func:`rating_errors`), each with
    a bootstrap interval over users, and return both rows as ``{"mae": row, "rmse": row}``.

    ``mae`` is the mean over users of the user's MAE. ``rmse`` is ``sqrt(mean over users of
    the user's MSE)`` and its interval the square root of the MSE's interval (the percentile
    bootstrap commutes with a monotone map): averaging per-user RMSEs instead would, with one
    rating per user, just repeat the MAE."""
    mae = record_ci(task, level, method, "mae", errors["mae"], n_resamples=n_resamples, seed=seed)
    mean, lower, upper = bootstrap_ci(errors["mse"].to_numpy(), n_resamples=n_resamples, seed=seed)
    rmse = record(task, level, method, "rmse", float(np.sqrt(mean)), float(np.sqrt(lower)),
                          float(np.sqrt(upper)), n=len(errors))
    return {"mae": mae, "rmse": rmse}





def fmt_ci(value: float, lower: float | None = None, upper: float | None = None, digits: int = 3,
           signed: bool = False) -> str:
    """``"0.123 [0.100, 0.150]"``: a value with its interval, as every table of the series shows it
    (``signed=True``: ``"+0.123 [-0.010, +0.250]"``, for differences)."""
    spec = f"{'+' if signed else ''}.{digits}f"
    text = f"{value:{spec}}"
    if lower is not None and upper is not None:
        text += f" [{lower:{spec}}, {upper:{spec}}]"
    return text


def paired_table(comparisons: dict, digits: int = 3):
    """A table of paired comparisons: one row per ``{label: paired_difference(...)}`` entry with
    the mean difference and its 95% interval (``fmt_ci``), ``n`` users, and the share of users
    where the first method is lower."""
    import pandas as pd

    return pd.DataFrame(
        [{"comparison": label, "difference [95% CI]": fmt_ci(d["mean"], d["lower"], d["upper"], digits),
          "n": d["n"], "share lower": f"{d['share_a_lower']:.0%}"} for label, d in comparisons.items()]
    ).set_index("comparison")
