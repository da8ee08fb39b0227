"""Shared figure helpers: one style, one place figures are saved, one plot of results with CIs."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt

from . import config

LEVEL_COLORS = {"global": "#7f7f7f", "persona": "#1f77b4", "user": "#d62728"}

plt.rcParams.update({
    "figure.dpi": 100, "savefig.dpi": 120, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "font.size": 10,
})


def savefig(fig, name: str) -> Path:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` (atomically) and return the path."""
    if not name or "/" in name:
        raise ValueError(f"figure name must be a plain file name without '/', got {name!r}")
    path = config.figures_dir() / (name if name.endswith(".png") else f"{name}.png")
    buffer = io.BytesIO()
    fig.savefig(buffer, bbox_inches="tight", format="png")
    config.atomic_write(path, buffer.getvalue())
    return path


def plot_results(table, metric: str, task: str | None = None, ax=None, lower_is_better=None):
    """Horizontal bars of ``value`` with 95% CIs for one metric, coloured by level.

    ``table`` is a results DataFrame (``results.table()``) or a list of rows. Rows are ordered
    global → persona → user, then by value. Returns the figure."""
    import pandas as pd

    df = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
    df = df[df["metric"] == metric]
    if task is not None:
        df = df[df["task"] == task]
    if df.empty:
        raise ValueError(f"no rows for metric {metric!r}" + (f" and task {task!r}" if task else ""))
    order = {"global": 0, "persona": 1, "user": 2}
    df = df.assign(_o=df["level"].map(order)).sort_values(["_o", "value"], ascending=[False, True])
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.35 * len(df) + 1.2))
    y = range(len(df))
    err = None
    if df["lower"].notna().all():
        err = [df["value"] - df["lower"], df["upper"] - df["value"]]
    ax.barh(list(y), df["value"], xerr=err, color=[LEVEL_COLORS[lv] for lv in df["level"]],
            alpha=0.8, capsize=3)
    ax.set_yticks(list(y), [f"{m} ({lv})" for m, lv in zip(df["method"], df["level"])])
    hint = "" if lower_is_better is None else (" (lower is better)" if lower_is_better
                                                 else " (higher is better)")
    ax.set_xlabel(metric + hint)
    ax.set_title(task or "")
    return ax.figure
