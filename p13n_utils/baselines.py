"""Rating baselines without an LLM, one per rung of the ladder, on the same (user, item) pairs.

Each is a small estimator in the scikit-learn style: set the hyper-parameters in the
constructor, ``fit(train)`` on a ratings frame (``user_id, item_id, rating``), then
``predict(pairs)`` on a frame of (``user_id, item_id``) pairs, which returns one float per row::

    ItemMean().fit(rating.train).predict(rating.test)

* :class:`ItemMean` — global: each item's mean training rating.
* :class:`SegmentItemMean` — persona level: the item's mean among the users of the same
  persona, shrunk toward the item's overall mean.
* :class:`UserItemBias` — user level: ``mu + b_user + b_item`` (Koren's baseline predictor).

A user (item) unseen in training falls back to the coarser level, as each docstring says.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["ItemMean", "SegmentItemMean", "UserItemBias"]


def _check_train(train: pd.DataFrame) -> float:
    """The global mean rating of ``train`` (which must not be empty)."""
    if train.empty:
        raise ValueError("train is empty: no rating to fit on")
    return float(train["rating"].mean())


class ItemMean:
    """Global baseline: each item's mean training rating, shrunk toward the global mean with
    ``shrinkage`` pseudo-ratings; an item with no training rating gets the global mean."""

    def __init__(self, shrinkage: float = 0.0):
        self.shrinkage = shrinkage

    def fit(self, train: pd.DataFrame) -> "ItemMean":
        self.mu_ = _check_train(train)
        stats = train.groupby("item_id")["rating"].agg(["sum", "count"])
        self.means_ = (stats["sum"] + self.shrinkage * self.mu_) / (stats["count"] + self.shrinkage)
        return self

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        return pairs["item_id"].map(self.means_).fillna(self.mu_).to_numpy(dtype=float)


class SegmentItemMean:
    """Persona level, no LLM: the item's mean rating among the users of the pair's persona,
    shrunk toward the item's overall mean with ``shrinkage`` pseudo-ratings.

    ``segments`` maps user_id -> persona; a user without a persona (missing or ``-1``: cold
    start) gets the item's overall mean, and an unseen item the global mean."""

    def __init__(self, segments: pd.Series, shrinkage: float = 5.0):
        self.segments = segments
        self.shrinkage = shrinkage

    def fit(self, train: pd.DataFrame) -> "SegmentItemMean":
        self.overall_ = ItemMean().fit(train)
        seg_train = train.assign(segment=train["user_id"].map(self.segments)).dropna(subset=["segment"])
        self.stats_ = seg_train.groupby(["segment", "item_id"])["rating"].agg(["sum", "count"])
        return self

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        prior = self.overall_.predict(pairs)
        keys = pd.MultiIndex.from_arrays([pairs["user_id"].map(self.segments).fillna(-1).to_numpy(),
                                          pairs["item_id"].to_numpy()])
        found = self.stats_.reindex(keys)
        sums, counts = found["sum"].fillna(0).to_numpy(), found["count"].fillna(0).to_numpy()
        denominator = counts + self.shrinkage
        return np.where(denominator > 0, (sums + self.shrinkage * prior) / np.maximum(denominator, 1e-12), prior)


class UserItemBias:
    """User level, no LLM: ``mu + b_user + b_item`` (Koren's baseline predictor), fitted by
    ``n_iter`` rounds of alternating regularised means (``reg_user``, ``reg_item`` pseudo-ratings
    of zero bias).

    A user (item) without training ratings gets ``b = 0``: the item's (global) baseline.
    Predictions are clipped to ``clip``.
    """

    def __init__(self, reg_user: float = 5.0, reg_item: float = 5.0, n_iter: int = 10,
                 clip: tuple[float, float] = (0.5, 5.0)):
        self.reg_user, self.reg_item, self.n_iter, self.clip = reg_user, reg_item, n_iter, clip

    def fit(self, train: pd.DataFrame) -> "UserItemBias":
        self.mu_ = _check_train(train)
        users, items = train["user_id"].to_numpy(), train["item_id"].to_numpy()
        residual = train["rating"].to_numpy(dtype=float) - self.mu_
        b_user = pd.Series(0.0, index=np.unique(users))
        b_item = pd.Series(0.0, index=np.unique(items))
        for _ in range(self.n_iter):
            r = residual - b_user.reindex(users).to_numpy()
            grouped = pd.DataFrame({"i": items, "r": r}).groupby("i")["r"]
            b_item = grouped.sum() / (grouped.count() + self.reg_item)
            r = residual - b_item.reindex(items).to_numpy()
            grouped = pd.DataFrame({"u": users, "r": r}).groupby("u")["r"]
            b_user = grouped.sum() / (grouped.count() + self.reg_user)
        self.b_user_, self.b_item_ = b_user, b_item
        return self

    def predict(self, pairs: pd.DataFrame) -> np.ndarray:
        pred = (self.mu_ + pairs["user_id"].map(self.b_user_).fillna(0.0).to_numpy()
                + pairs["item_id"].map(self.b_item_).fillna(0.0).to_numpy())
        return np.clip(pred, *self.clip)
