"""Rating baselines without an LLM, one per rung of the ladder, on the same (user, item) pairs.

* :func:`item_mean_predictions` — global: each item's mean training rating.
* :func:`segment_item_mean_predictions` — persona level: the item's mean among the users of the
  same persona, shrunk toward the item's overall mean.
* :func:`bias_predictions` — user level: ``mu + b_user + b_item`` (Koren's baseline predictor).

A user (item) unseen in training falls back to the coarser level, as each docstring says.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["item_mean_predictions", "segment_item_mean_predictions", "bias_predictions"]


def item_mean_predictions(train: pd.DataFrame, pairs: pd.DataFrame, shrinkage: float = 0.0) -> np.ndarray:
    """Global baseline: each item's mean training rating (shrunk toward the global mean with
    ``shrinkage`` pseudo-ratings); an item with no training rating gets the global mean."""
    if train.empty:
        raise ValueError("train is empty: no rating to average")
    mu = float(train["rating"].mean())
    stats = train.groupby("item_id")["rating"].agg(["sum", "count"])
    means = (stats["sum"] + shrinkage * mu) / (stats["count"] + shrinkage)
    return pairs["item_id"].map(means).fillna(mu).to_numpy(dtype=float)


def segment_item_mean_predictions(train: pd.DataFrame, pairs: pd.DataFrame, segments: pd.Series,
                                  shrinkage: float = 5.0) -> np.ndarray:
    """Persona level, no LLM: the item's mean rating among the users of the pair's persona,
    shrunk toward the item's overall mean with ``shrinkage`` pseudo-ratings.

    ``segments`` maps user_id -> persona; a user without a persona (missing or ``-1``: cold
    start) gets the item's overall mean, and an unseen item the global mean."""
    if train.empty:
        raise ValueError("train is empty: no rating to average")
    overall = pd.Series(item_mean_predictions(train, pairs), index=pairs.index)
    seg_train = train.assign(segment=train["user_id"].map(segments)).dropna(subset=["segment"])
    stats = seg_train.groupby(["segment", "item_id"])["rating"].agg(["sum", "count"])
    keys = pd.MultiIndex.from_arrays([pairs["user_id"].map(segments).fillna(-1).to_numpy(),
                                      pairs["item_id"].to_numpy()])
    found = stats.reindex(keys)
    sums, counts = found["sum"].fillna(0).to_numpy(), found["count"].fillna(0).to_numpy()
    prior = overall.to_numpy()
    denominator = counts + shrinkage
    return np.where(denominator > 0, (sums + shrinkage * prior) / np.maximum(denominator, 1e-12), prior)


def bias_predictions(train: pd.DataFrame, pairs: pd.DataFrame, reg_user: float = 5.0, reg_item: float = 5.0,
                     n_iter: int = 10, clip: tuple[float, float] = (0.5, 5.0)) -> np.ndarray:
    """User level, no LLM: ``mu + b_user + b_item`` (Koren's baseline predictor), fitted by
    alternating regularised means on ``train``.

    A user (item) without training ratings gets ``b = 0``: the item's (global) baseline.
    Predictions are clipped to ``clip``.
    """
    if train.empty:
        raise ValueError("train is empty: no rating to fit biases on")
    mu = float(train["rating"].mean())
    users, items = train["user_id"].to_numpy(), train["item_id"].to_numpy()
    residual = train["rating"].to_numpy(dtype=float) - mu
    b_user = pd.Series(0.0, index=np.unique(users))
    b_item = pd.Series(0.0, index=np.unique(items))
    for _ in range(n_iter):
        r = residual - b_user.reindex(users).to_numpy()
        grouped = pd.DataFrame({"i": items, "r": r}).groupby("i")["r"]
        b_item = grouped.sum() / (grouped.count() + reg_item)
        r = residual - b_item.reindex(items).to_numpy()
        grouped = pd.DataFrame({"u": users, "r": r}).groupby("u")["r"]
        b_user = grouped.sum() / (grouped.count() + reg_user)
    pred = (mu + pairs["user_id"].map(b_user).fillna(0.0).to_numpy()
            + pairs["item_id"].map(b_item).fillna(0.0).to_numpy())
    return np.clip(pred, *clip)
