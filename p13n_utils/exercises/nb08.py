"""Checks of notebook 08's exercises (recommendation: ranking metrics, item-kNN on the ladder).

1. (warm-up) NDCG@k of one ranked list by hand, against :func:`p13n_utils.metrics.ndcg_at_k`.
2. (standard) item-kNN (cosine between the columns of the binarized user × item matrix): its mean
   NDCG@k on the test users, recomputed here with numpy.
3. (challenge) item-kNN on the ladder: paired NDCG@k differences item-kNN − popularity and
   item-kNN − ALS on the same users, recomputed with the package's evaluation and bootstrap.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from .. import lesson, metrics, recsys, results

__all__ = ["check_1", "check_2", "check_3"]


# --------------------------------------------------------------------------- exercise 1
def check_1(value, recommended, relevant, k: int = 10):
    """The learner's NDCG@k of one ranked list equals :func:`metrics.ndcg_at_k`."""
    name = "Exercise 1 (NDCG@k by hand)"
    if value is None:
        return lesson.check(name, None, "")
    expected = metrics.ndcg_at_k(list(recommended), set(relevant), k)
    return lesson.check(
        name, bool(np.isclose(float(value), expected, atol=1e-6)),
        "DCG = sum over the top-k ranks i (1-based) of hit_i / log2(i + 1); divide by the DCG of a perfect "
        "list, which has min(|relevant|, k) hits on top. A -1 slot is never a hit.",
        success=f"NDCG@{k} = {expected:.4f}")


# --------------------------------------------------------------------------- exercise 2
def _item_knn_ndcg(split: recsys.TopKSplit, k: int) -> pd.Series:
    """Per-user NDCG@k of item-kNN on ``split``'s evaluated users (the check's own numpy version).

    score(u, i) = sum over the user's training items j of cos(j, i), the cosine between item
    columns of the binarized matrix X. With Xn = X with unit-norm columns that is
    ``(X @ Xn.T) @ Xn``, a users × users product first, so the item × item matrix is never
    built; an item's similarity to itself only scores items the user already has, which are
    excluded."""
    X = recsys.binarize(split.train.matrix)
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=0))).ravel()
    Xn = X.multiply(1.0 / np.maximum(norms, 1e-12)[None, :]).tocsr()
    users = split.users
    scores = np.asarray((X[users] @ Xn.T) @ Xn.toarray())
    recs = recsys.top_k(scores, k, exclude=split.train.matrix[users])
    table = metrics.ranking_metrics(dict(zip(users.tolist(), recs)), split.relevant, k=k, users=users.tolist())
    return table.set_index("user")[f"ndcg@{k}"]


def check_2(mean_ndcg, split: recsys.TopKSplit, k: int = 10):
    """The learner's mean item-kNN NDCG@k over ``split.users`` matches the check's numpy version
    (within 0.002: equal scores may be ordered differently)."""
    name = "Exercise 2 (item-kNN)"
    if mean_ndcg is None:
        return lesson.check(name, None, "")
    expected = float(_item_knn_ndcg(split, k).mean())
    return lesson.check(
        name, bool(abs(float(mean_ndcg) - expected) <= 2e-3),
        "binarize the training matrix (recsys.binarize), divide each item column by its norm, score "
        "user u's item i by the sum of cos(j, i) over the user's training items j, exclude the training "
        f"items (recsys.top_k(scores, {k}, exclude=...)) and average recsys.evaluate(None, test, "
        f"recommendations=...)[0]['ndcg@{k}'] over test.users.",
        success=f"item-kNN NDCG@{k} = {expected:.4f} over {split.users.size} users")


# --------------------------------------------------------------------------- exercise 3
def check_3(answer: Mapping | None, split: recsys.TopKSplit, als: recsys.Recommender, k: int = 10,
            n_resamples: int = 2000, seed: int = 0):
    """``answer = {"popularity": d, "als": d}`` with ``d`` the output of
    :func:`results.paired_difference` of item-kNN's per-user NDCG@k minus the baseline's. The check
    recomputes both from ``split`` (popularity refitted, the fitted ``als`` evaluated) with the
    same ``n_resamples`` and ``seed``."""
    name = "Exercise 3 (item-kNN on the ladder)"
    if answer is None:
        return lesson.check(name, None, "")
    knn = _item_knn_ndcg(split, k)
    popularity = recsys.PopularityRecommender().fit(split.train.matrix)
    hint = ("for each baseline b, d = results.paired_difference(knn, b, n_resamples, seed) with knn and b "
            f"per-user ndcg@{k} Series indexed by user row (recsys.evaluate(model, test)[0].set_index('user'))"
            ", item-kNN first.")
    if not isinstance(answer, Mapping) or set(answer) != {"popularity", "als"}:
        return lesson.check(name, False, "answer_3 must be a dict with the keys 'popularity' and 'als'; " + hint)
    for label, model in (("popularity", popularity), ("als", als)):
        base = recsys.evaluate(model, split, k)[0].set_index("user")[f"ndcg@{k}"]
        d = results.paired_difference(knn, base, n_resamples=n_resamples, seed=seed)
        got = answer[label]
        try:
            close = all(abs(float(got[key]) - d[key]) <= tol
                        for key, tol in (("mean", 2e-3), ("lower", 5e-3), ("upper", 5e-3)))
        except (KeyError, TypeError, ValueError):
            close = False
        if not close:
            return lesson.check(name, False, f"the item-kNN − {label} difference is off. " + hint)
    return lesson.check(name, True, hint, success="both paired differences match")
