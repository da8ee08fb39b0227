"""Checks of the exercises of notebook 03 (persona level): choosing the number of personas K.

Each ``check_<n>(answer, ...)`` recomputes the reference from the arguments it is given and
calls :func:`p13n_utils.lesson.check`: a right answer prints a tick, a wrong one raises
:class:`p13n_utils.lesson.ExerciseFailed` with a hint, ``None`` prints "not attempted yet".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import lesson, personas

__all__ = ["ks_passing_floor", "k_max_lift", "check_1", "check_2", "check_3"]


def ks_passing_floor(curve: pd.DataFrame, min_users: int) -> list[int]:
    """The K of ``curve`` whose smallest persona has at least ``min_users`` users, ascending."""
    return sorted(int(k) for k in curve.loc[curve["min_users"] >= min_users, "k"])


def k_max_lift(curve: pd.DataFrame, min_users: int) -> int:
    """"Most specific by measured specificity": among the K that pass the ``min_users`` floor,
    the one with the largest validation lift (``target_lift``; ties go to the smaller K)."""
    ok = curve[(curve["min_users"] >= min_users) & curve["target_lift"].notna()].sort_values("k")
    if ok.empty:
        raise ValueError(f"no K with a validation lift passes the floor of {min_users} users")
    return int(ok.loc[ok["target_lift"].idxmax(), "k"])


def _as_int(answer):
    if isinstance(answer, (bool, np.bool_)) or not isinstance(answer, (int, np.integer, float, np.floating)):
        return None
    return int(answer) if float(answer) == int(answer) else None


def check_1(answer, curve: pd.DataFrame, min_users: int):
    """Exercise 1: the list of K that satisfy the floor ``min_users`` (any order)."""
    ok = None
    if answer is not None:
        try:
            ok = sorted(int(k) for k in answer) == ks_passing_floor(curve, min_users)
        except (TypeError, ValueError):
            ok = False
    return lesson.check(
        "Exercise 1 (which K pass the floor)", ok,
        "keep the rows of `curve` whose `min_users` column is >= the floor and return their `k` values as a list",
        success=f"{ks_passing_floor(curve, min_users)}; choose_k_min_users takes the largest of them, "
                f"K = {personas.choose_k_min_users(curve, min_users)}")


def check_2(answer, curve: pd.DataFrame, floors):
    """Exercise 2: ``{m: K}`` for every floor ``m`` of ``floors``, K the one with the largest
    validation lift among those whose smallest persona has at least ``m`` users; the success
    message compares it, floor by floor, with :func:`p13n_utils.personas.choose_k_min_users`."""
    floors = [int(m) for m in floors]
    reference = {m: k_max_lift(curve, m) for m in floors}
    ok = None
    if answer is not None:
        try:
            ok = set(int(m) for m in answer) == set(floors) and all(
                _as_int(answer[m]) == reference[int(m)] for m in answer)
        except (TypeError, ValueError, KeyError, AttributeError):
            ok = False
    lift = curve.set_index("k")
    parts, differ = [], 0
    for m in floors:
        best, rule = reference[m], personas.choose_k_min_users(curve, m)
        differ += best != rule
        parts.append(f"m={m}: K={best} (lift {lift.loc[best, 'target_lift']:.4f} ± {lift.loc[best, 'target_lift_se']:.4f})"
                     + ("" if best == rule else f" vs the rule's K={rule} (lift {lift.loc[rule, 'target_lift']:.4f} "
                                                f"± {lift.loc[rule, 'target_lift_se']:.4f})"))
    return lesson.check(
        "Exercise 2 (most specific by measured specificity)", ok,
        "for each floor m: keep the rows of `curve` with min_users >= m, then take the `k` of the row with the "
        "largest `target_lift` (pandas: `.loc[frame['target_lift'].idxmax(), 'k']`); answer = {m: K}",
        success=f"the two rules disagree for {differ} of {len(floors)} floors; " + "; ".join(parts))


def check_3(answer, user_facts: dict, fact_vectors: dict, k: int, n_facts: int = 4, seed: int = 0):
    """Exercise 3: the ``specificity`` of the clustering with ``k`` personas, recomputed by hand
    (mean over users with a description of the cosine between the unit centroid of their
    description's fact vectors and the unit mean of their own fact vectors)."""
    reference = float(personas.persona_k_curve(user_facts, fact_vectors, [int(k)], n_facts=n_facts,
                                               seed=seed)["specificity"].iloc[0])
    ok = None
    if answer is not None:
        try:
            ok = bool(np.isclose(float(answer), reference, atol=1e-6))
        except (TypeError, ValueError):
            ok = False
    return lesson.check(
        "Exercise 3 (specificity by hand)", ok,
        "for each user: description = personas.context_for(user, n_facts); skip users with an empty one; "
        "d = unit(mean of the description's fact vectors), f = unit(mean of the user's own fact vectors); "
        "specificity = mean of d @ f over those users (unit(v) = v / ||v||)",
        success=f"specificity at K = {int(k)}: {reference:.4f}, the value in the curve")
