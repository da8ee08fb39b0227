"""Checks of notebook 12's exercises (personalize for yourself).

1. (warm-up) ALS fold-in by hand: solve the new user's normal equations with numpy; compared
   with :func:`p13n_utils.own_user.fold_in_user`.
2. (standard) how personal is each list: the number of titles each list shares with the
   popularity list; recomputed from the round's lists.
3. (challenge) leave one rating out: fold the learner in again without the title that drove the
   ALS list most, and count how many of the ALS top-k titles change; recomputed with
   :func:`p13n_utils.own_user.fold_in_user` and :func:`p13n_utils.own_user.fold_in_contributions`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .. import lesson, own_user

__all__ = ["check_1", "check_2", "check_3", "shared_with_popularity", "leave_top_driver_out"]


# --------------------------------------------------------------------------- exercise 1
def check_1(x, item_factors: np.ndarray, items: Sequence[int], regularization: float, alpha: float):
    """The learner's fold-in vector equals :func:`own_user.fold_in_user`'s."""
    name = "Exercise 1 (ALS fold-in by hand)"
    if x is None:
        return lesson.check(name, None, "")
    expected = own_user.fold_in_user(item_factors, items, regularization, alpha)
    x = np.asarray(x, dtype=float).ravel()
    ok = x.shape == expected.shape and np.allclose(x, expected, rtol=1e-4, atol=1e-6)
    return lesson.check(
        name, ok,
        f"return a vector of {expected.size} factors. A = YᵀY + λI + (α − 1) Σ y_i y_iᵀ over your items, "
        "b = α Σ y_i; then x = np.linalg.solve(A, b). Use each item once.",
        success="your factors match the package's fold-in")


# --------------------------------------------------------------------------- exercise 2
def shared_with_popularity(recommendations: Mapping) -> dict:
    """``{method: number of its titles also in the popularity list}`` for every other list."""
    popular = set(recommendations["popularity"]["title"])
    return {m: len(popular & set(recommendations[m]["title"]))
            for m in own_user.RECOMMENDERS if m != "popularity" and m in recommendations}


def check_2(answer, recommendations: Mapping):
    """The learner's ``{method: shared titles}`` equals :func:`shared_with_popularity`."""
    name = "Exercise 2 (how personal is each list)"
    if answer is None:
        return lesson.check(name, None, "")
    expected = shared_with_popularity(recommendations)
    ok = isinstance(answer, Mapping) and {m: int(v) for m, v in answer.items()} == expected
    return lesson.check(
        name, ok,
        f"a dict with one entry per list other than popularity ({', '.join(expected)}): the size of the "
        "intersection of its 'title' column with the popularity list's.",
        success="right: " + ", ".join(f"{m} {v}" for m, v in expected.items()))


# --------------------------------------------------------------------------- exercise 3
def leave_top_driver_out(item_factors: np.ndarray, liked: Sequence[int], seen: Sequence[int],
                         regularization: float, alpha: float, k: int = 10) -> tuple[int, int]:
    """``(dropped item column, number of top-k items that change)`` when the liked item that
    contributes most to the folded-in top-k is removed from the fold-in (the items the learner
    rated, ``seen``, stay excluded from both lists)."""
    Y = np.asarray(item_factors, dtype=np.float64)
    liked = np.unique(np.asarray(liked, dtype=np.int64))
    if liked.size < 2:
        raise ValueError("leave-one-out needs at least two liked items")

    def top(items):
        scores = Y @ own_user.fold_in_user(Y, items, regularization, alpha)
        scores[np.asarray(seen, dtype=np.int64)] = -np.inf
        return np.argsort(-scores, kind="stable")[:k]

    before = top(liked)
    parts = own_user.fold_in_contributions(Y, liked, before, regularization, alpha)
    dropped = int(liked[np.argmax(parts.sum(axis=0))])
    after = top(liked[liked != dropped])
    return dropped, int(k - len(set(before) & set(after)))


def check_3(answer, item_factors: np.ndarray, liked: Sequence[int], seen: Sequence[int],
            regularization: float, alpha: float, k: int = 10):
    """The learner's ``(dropped column, changed titles)`` equals :func:`leave_top_driver_out`'s."""
    name = "Exercise 3 (leave your top driver out)"
    if answer is None:
        return lesson.check(name, None, "")
    expected = leave_top_driver_out(item_factors, liked, seen, regularization, alpha, k)
    ok = isinstance(answer, (tuple, list)) and len(answer) == 2 and tuple(int(a) for a in answer) == expected
    return lesson.check(
        name, ok,
        "the driver is the liked column whose fold_in_contributions, summed over the top-k items, is largest; "
        "fold in again without it, exclude every rated column from both rankings, and count the top-k items "
        "of the first list that are missing from the second.",
        success=f"right: dropping column {expected[0]} changes {expected[1]} of the top {k}")
