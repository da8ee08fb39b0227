"""Fairness and bias (notebook 10): quality gaps between groups of users, popularity bias of
recommenders and what a simple exposure re-ranking costs.

* :func:`activity_groups` — users in quartiles of activity (how much history they have);
* :func:`group_gaps` — per-group mean quality with ``fairlearn``'s ``MetricFrame``, bootstrap
  intervals and the largest gap;
* :func:`popular_items` / :func:`popularity_shares` / :func:`exposure_by_group` — how much of
  what a recommender shows comes from the head of the popularity curve;
* :func:`cap_popular` — re-rank so that at most ``max_popular`` of the top ``k`` are popular.
"""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .results import bootstrap_ci

__all__ = ["activity_groups", "group_gaps", "popular_items", "popularity_shares", "exposure_by_group",
           "cap_popular"]


def activity_groups(counts: pd.Series, n_groups: int = 4) -> pd.Series:
    """user -> activity group ``"Q1"`` (least history) .. ``"Q4"`` (most), equal-sized by rank
    (ties broken by order, so every group has members)."""
    if len(counts) < n_groups:
        raise ValueError(f"{len(counts)} users cannot fill {n_groups} activity groups")
    ranks = counts.rank(method="first")
    labels = [f"Q{i + 1}" for i in range(n_groups)]
    return pd.qcut(ranks, n_groups, labels=labels).astype(str).rename("activity")


def group_gaps(values: pd.Series, groups: pd.Series, min_size: int = 2, n_resamples: int = 2000,
               seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Mean of a per-user quality ``values`` in each group, by ``fairlearn.metrics.MetricFrame``.

    Parameters
    ----------
    values : Series user -> quality (e.g. MAE or NDCG of that user).
    groups : Series user -> group label (users missing from it are an error).
    min_size : groups with fewer users are left out of the gap (their mean is one or two users'
        noise) with a warning naming them; they stay in the table with ``in_gap = False``.

    Returns
    -------
    (table, summary): the table has one row per group (``group, n, mean, lower, upper, in_gap``;
    95% bootstrap interval over the group's users, none for a one-user group); the summary holds
    ``difference`` (largest minus smallest group mean among the groups in the gap, what
    ``MetricFrame.difference()`` reports) with ``difference_lower`` / ``difference_upper``, a 95%
    bootstrap interval resampling the two groups' users independently (the two groups are picked
    after looking, so an interval that only just excludes 0 is weak evidence), ``ratio`` (smallest / largest), ``lowest`` and
    ``highest`` (group labels).
    """
    from fairlearn.metrics import MetricFrame

    values = pd.Series(values, dtype=float)
    if values.empty:
        raise ValueError("values is empty: no user to compare")
    missing = values.index.difference(groups.index)
    if len(missing):
        raise KeyError(f"{len(missing)} users have no group, e.g. {list(missing[:3])}")
    groups = groups.loc[values.index].astype(str)
    mean = lambda y_true, y_pred: float(np.mean(y_true))  # noqa: E731  (the quality is already per user)
    frame = MetricFrame(metrics={"mean": mean, "n": lambda y_true, y_pred: len(y_true)},
                        y_true=values.to_numpy(), y_pred=values.to_numpy(), sensitive_features=groups.to_numpy())
    table = frame.by_group.reset_index().rename(columns={"sensitive_feature_0": "group"})
    table["n"] = table["n"].astype(int)
    table["in_gap"] = table["n"] >= min_size
    small = table.loc[~table["in_gap"], "group"].tolist()
    if small:
        warnings.warn(f"groups with fewer than {min_size} users left out of the gap: {small}", stacklevel=2)
    bounds = [bootstrap_ci(values[groups == g], n_resamples=n_resamples, seed=seed)[1:] if n > 1 else (np.nan, np.nan)
              for g, n in zip(table["group"], table["n"])]
    table["lower"], table["upper"] = [b[0] for b in bounds], [b[1] for b in bounds]
    kept = table[table["in_gap"]]
    if len(kept) < 2:
        raise ValueError(f"fewer than two groups with at least {min_size} users: no gap to measure "
                         f"(group sizes {dict(zip(table['group'], table['n']))})")
    means = frame.by_group["mean"][kept["group"].to_numpy()]
    low, high = values[groups == means.idxmin()].to_numpy(), values[groups == means.idxmax()].to_numpy()
    rng = np.random.default_rng(seed)
    diffs = (high[rng.integers(0, high.size, (n_resamples, high.size))].mean(axis=1)
             - low[rng.integers(0, low.size, (n_resamples, low.size))].mean(axis=1))
    summary = {"difference": float(means.max() - means.min()),
               "difference_lower": float(np.quantile(diffs, 0.025)), "difference_upper": float(np.quantile(diffs, 0.975)),
               "ratio": float(means.min() / means.max()) if means.max() else float("nan"),
               "lowest": str(means.idxmin()), "highest": str(means.idxmax())}
    return table[["group", "n", "mean", "lower", "upper", "in_gap"]], summary


def popular_items(train_counts: pd.Series | np.ndarray, top_frac: float = 0.1) -> np.ndarray:
    """Boolean mask over items: the ``top_frac`` most interacted-with items in training
    (``train_counts[i]`` = interactions of item column ``i``; ties broken by column order)."""
    counts = np.asarray(train_counts, dtype=float)
    if not 0 < top_frac < 1:
        raise ValueError(f"top_frac must be in (0, 1), got {top_frac}")
    n_top = max(1, int(round(top_frac * counts.size)))
    order = np.argsort(-counts, kind="stable")
    mask = np.zeros(counts.size, dtype=bool)
    mask[order[:n_top]] = True
    return mask


def popularity_shares(recommendations: np.ndarray, relevant: Mapping[int, set], popular: np.ndarray) -> dict:
    """Share of recommended slots that hold a popular item, against the share of held-out
    positives that are popular (``relevant``: user row -> set of item columns).

    A ratio above 1 means the recommender shows the popular head more often than users' own
    held-out choices do (popularity bias). Unfilled slots (-1) are not counted."""
    recs = np.asarray(recommendations)
    shown = recs[recs >= 0]
    positives = np.fromiter((i for items in relevant.values() for i in items), dtype=np.int64)
    if shown.size == 0 or positives.size == 0:
        raise ValueError("need at least one recommended item and one held-out positive")
    rec_share, pos_share = float(popular[shown].mean()), float(popular[positives].mean())
    return {"rec_share": rec_share, "heldout_share": pos_share,
            "ratio": rec_share / pos_share if pos_share else float("inf")}


def exposure_by_group(recommendations: np.ndarray, item_group: np.ndarray) -> pd.Series:
    """Share of the total position-discounted exposure (``1 / log2(rank + 1)``, rank 1 = top)
    that each item group gets; ``item_group[i]`` is item column ``i``'s group label (a group
    never recommended gets 0)."""
    recs = np.asarray(recommendations)
    weights = np.broadcast_to(1.0 / np.log2(np.arange(2, recs.shape[1] + 2)), recs.shape)
    filled = recs >= 0
    labels = np.asarray(item_group)[recs[filled]]
    exposure = pd.Series(weights[filled]).groupby(labels).sum()
    groups = pd.unique(np.asarray(item_group))
    return (exposure / exposure.sum()).reindex(groups, fill_value=0.0).rename("exposure_share")


def cap_popular(ranked: np.ndarray, popular: np.ndarray, k: int, max_popular: int) -> np.ndarray:
    """Re-rank for exposure: keep each user's order but let at most ``max_popular`` popular items
    into the top ``k`` (the next non-popular items fill the freed slots).

    ``ranked`` is (users, m ≥ k) item columns, best first (-1 = no item)."""
    if not 0 <= max_popular <= k:
        raise ValueError(f"max_popular must be between 0 and k = {k}, got {max_popular}")
    out = np.full((len(ranked), k), -1, dtype=np.int64)
    for u, row in enumerate(np.asarray(ranked)):
        row = row[row >= 0]
        head = row[popular[row]][:max_popular]
        keep = set(head.tolist()) | set(row[~popular[row]].tolist())
        chosen = [i for i in row if i in keep][:k]
        out[u, :len(chosen)] = chosen
    return out
