"""Checks of notebook 10's exercises (open problems: cold start, fairness, drift).

1. (warm-up) the ALS fold-in of a new user by hand (numpy): against :func:`coldstart.als_fold_in`.
2. (standard) the activity-quartile MAE gap by hand (pandas ``groupby``): against
   ``fairlearn``'s ``MetricFrame`` through :func:`fairness.group_gaps`.
3. (challenge) choose the recency half-life on validation ratings, never on test: the check
   refits :class:`drift.RecencyUserBias` on the history before the validation ratings for each
   candidate and compares the learner's choice with the argmin.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .. import coldstart, drift, fairness, lesson, metrics

__all__ = ["check_1", "check_2", "check_3", "history_before_val", "validation_mae"]


# --------------------------------------------------------------------------- exercise 1
def check_1(factor, item_factors: np.ndarray, items: Sequence[int], regularization: float, alpha: float):
    """The learner's fold-in factor equals the closed form's."""
    name = "Exercise 1 (ALS fold-in by hand)"
    if factor is None:
        return lesson.check(name, None, "")
    expected = coldstart.als_fold_in(item_factors, items, regularization, alpha)
    factor = np.asarray(factor, dtype=float).ravel()
    ok = factor.shape == expected.shape and np.allclose(factor, expected, rtol=1e-4, atol=1e-6)
    return lesson.check(
        name, ok,
        f"return one vector of {expected.size} numbers. A = Y.T @ Y + regularization * I + (alpha - 1) * Yi.T @ Yi "
        "with Yi = Y[items] (each item once), b = alpha * Yi.sum(axis=0), then np.linalg.solve(A, b).",
        success="your factor matches the closed-form fold-in")


# --------------------------------------------------------------------------- exercise 2
def check_2(gap, values: pd.Series, groups: pd.Series):
    """The learner's gap (largest minus smallest group mean of ``values``) equals MetricFrame's."""
    name = "Exercise 2 (the activity gap by hand)"
    if gap is None:
        return lesson.check(name, None, "")
    _, summary = fairness.group_gaps(values, groups, n_resamples=10)
    ok = np.isfinite(float(gap)) and abs(float(gap) - summary["difference"]) < 1e-9
    return lesson.check(
        name, ok,
        "group the per-user values by their group (values.groupby(groups).mean()), then take the largest "
        "group mean minus the smallest one.",
        success=f"the gap {summary['difference']:.4f} matches fairlearn's MetricFrame.difference()")


# --------------------------------------------------------------------------- exercise 3
def history_before_val(rating) -> pd.DataFrame:
    """``rating.train`` without the evaluated users' validation ratings: what a model may see when
    it predicts those validation ratings."""
    val_keys = pd.MultiIndex.from_frame(rating.val[["user_id", "item_id"]])
    keys = pd.MultiIndex.from_frame(rating.train[["user_id", "item_id"]])
    return rating.train[~keys.isin(val_keys)].reset_index(drop=True)


def validation_mae(rating, half_life_days) -> float:
    """Mean over users of the validation MAE of :class:`drift.RecencyUserBias` (``half_life_days``,
    None = all history) fitted on :func:`history_before_val`."""
    model = drift.RecencyUserBias(half_life_days).fit(history_before_val(rating))
    return float(metrics.rating_errors(rating.val, model.predict(rating.val))["mae"].mean())


def check_3(choice, rating, half_lives: Sequence):
    """The learner's choice (``"all"`` for all history, or one of ``half_lives``) is the candidate
    with the lowest validation MAE (``None``: not attempted yet)."""
    name = "Exercise 3 (choose the half-life on validation)"
    if choice is None:
        return lesson.check(name, None, "")
    candidates = [None, *half_lives]
    scores = {h: validation_mae(rating, h) for h in candidates}
    best = min(candidates, key=lambda h: scores[h])
    return lesson.check(
        name, (choice == "all") if best is None else (choice == best),
        "fit drift.RecencyUserBias(h) on nb10.history_before_val(rating) (the test and validation ratings removed) for "
        "h = None and each half-life, predict rating.val, average metrics.rating_errors(...)['mae'] over users and "
        "keep the h with the lowest value (answer \"all\" when all history wins). Do not look at rating.test.",
        success=f"validation picks {'all history' if best is None else f'a half-life of {best} days'}")
