"""Checks of notebook 12's exercises (personalize for yourself).

1. (warm-up) your persona by hand: the PersonaChat persona whose centroid is nearest (cosine) to
   the mean embedding of your facts; recomputed from the centroids and your fact vectors.
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
def check_1(persona, centroids: np.ndarray, fact_vectors: np.ndarray):
    """The learner's persona index equals the nearest centroid to their facts' mean direction."""
    name = "Exercise 1 (your persona by hand)"
    if persona is None:
        return lesson.check(name, None, "")
    mean = np.asarray(fact_vectors, dtype=np.float64).mean(axis=0)
    expected = int(np.argmax(np.asarray(centroids, dtype=np.float64) @ (mean / np.linalg.norm(mean))))
    ok = np.ndim(persona) == 0 and int(persona) == expected
    return lesson.check(
        name, ok,
        "average your facts' vectors, scale the mean to unit length, take its dot product with every "
        f"row of the centroids ({len(centroids)} personas) and return the index of the largest (np.argmax).",
        success=f"persona {expected} is the nearest to your facts")


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
