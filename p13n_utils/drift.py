"""Drift (notebook 10): a user's taste and the catalog move on, so a profile or a model built on
old data predicts worse the older it gets.

* :func:`gap_windows` — label each later rating by how long after a reference time it came;
* :class:`RecencyUserBias` — ``item mean + user offset`` where the offset weighs each past rating
  by ``0.5 ** (age / half_life)`` (``half_life=None``: all history counts the same);
* :func:`refresh_interval` — the first window in which a per-user model has lost a given share
  of its advantage over the global model: how often it would need refreshing.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["DAY", "gap_windows", "RecencyUserBias", "refresh_interval"]

DAY = 86_400
"""Seconds per day (MovieLens timestamps are Unix seconds)."""


def gap_windows(gaps_days: Sequence[float], edges_days: Sequence[float]) -> pd.Series:
    """Window label of each gap (days): ``"[a, b) d"`` for consecutive ``edges_days``, the last
    window open-ended (``"≥ b d"``). A negative gap is an error (the rating came before the
    reference: it would be training data)."""
    gaps = np.asarray(gaps_days, dtype=float)
    edges = list(edges_days)
    if (gaps < 0).any():
        raise ValueError("negative time gaps: a predicted rating lies before the data the model was built on")
    if edges != sorted(edges) or len(edges) < 1 or edges[0] != 0:
        raise ValueError(f"edges_days must increase from 0, got {edges}")
    labels = [f"[{a:g}, {b:g}) d" for a, b in zip(edges[:-1], edges[1:])] + [f"≥ {edges[-1]:g} d"]
    index = np.searchsorted(edges, gaps, side="right") - 1
    return pd.Series(pd.Categorical([labels[i] for i in index], categories=labels, ordered=True))


class RecencyUserBias:
    """User level with recency weighting: ``m_i + b_u`` where ``m_i`` is the item's mean rating
    (shrunk toward the global mean with ``reg_item`` pseudo-ratings) and

        b_u = Σ_j w_j (r_j - m_{i_j}) / (Σ_j w_j + reg_user),   w_j = 0.5 ** (age_j / half_life),

    ``age_j`` the days between rating ``j`` and the user's latest training rating. With
    ``half_life_days=None`` every weight is 1 (all history counts the same). A user without
    training ratings gets ``b_u = 0`` (the global item mean: the documented cold-start fallback).
    """

    def __init__(self, half_life_days: float | None = None, reg_user: float = 5.0, reg_item: float = 5.0,
                 clip: tuple[float, float] = (0.5, 5.0)):
        if half_life_days is not None and half_life_days <= 0:
            raise ValueError(f"half_life_days must be > 0 or None, got {half_life_days}")
        self.half_life_days, self.reg_user, self.reg_item, self.clip = half_life_days, reg_user, reg_item, clip

    def fit(self, train: pd.DataFrame) -> "RecencyUserBias":
        if train.empty:
            raise ValueError("train is empty: no rating to fit on")
        self.mu_ = float(train["rating"].mean())
        stats = train.groupby("item_id")["rating"].agg(["sum", "count"])
        self.item_mean_ = (stats["sum"] + self.reg_item * self.mu_) / (stats["count"] + self.reg_item)
        residual = train["rating"].to_numpy(float) - train["item_id"].map(self.item_mean_).to_numpy()
        if self.half_life_days is None:
            weight = np.ones(len(train))
        else:
            latest = train.groupby("user_id")["timestamp"].transform("max").to_numpy()
            age_days = (latest - train["timestamp"].to_numpy()) / DAY
            weight = 0.5 ** (age_days / self.half_life_days)
        frame = pd.DataFrame({"u": train["user_id"].to_numpy(), "wr": weight * residual, "w": weight})
        sums = frame.groupby("u")[["wr", "w"]].sum()
        self.b_user_ = sums["wr"] / (sums["w"] + self.reg_user)
        return self

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        pred = (pairs["item_id"].map(self.item_mean_).fillna(self.mu_).to_numpy()
                + pairs["user_id"].map(self.b_user_).fillna(0.0).to_numpy())
        return np.clip(pred, *self.clip)


def refresh_interval(gain: Mapping[str, float], keep: float = 0.5) -> str | None:
    """The first window (in ``gain``'s order) where the per-user model's gain over the global
    model has fallen below ``keep`` × its gain in the first window: by then it should have been
    refreshed. ``None`` when it never falls that far within the windows measured (or when
    there was no gain to lose in the first window)."""
    windows = list(gain)
    if not windows:
        raise ValueError("gain is empty")
    first = gain[windows[0]]
    if not first > 0:
        return None
    for window in windows[1:]:
        if gain[window] < keep * first:
            return window
    return None
