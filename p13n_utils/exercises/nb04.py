"""Checks of the exercises of notebook 04 (user-level prompting).

Each ``check_<n>(answer, ...)`` recomputes the reference from the arguments it is given and
calls :func:`p13n_utils.lesson.check`: a right answer prints a tick, a wrong one raises
:class:`p13n_utils.lesson.ExerciseFailed` with a hint, ``None`` prints "not attempted yet".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import lesson, prompts
from ..retrieval import select_per_user

__all__ = ["share_with_fixed_point", "check_1", "check_2", "check_3"]


def share_with_fixed_point(n: int) -> float:
    """The exact probability that a uniformly random permutation of ``n`` users maps at least
    one user to themselves: ``1 - sum_{j=0..n} (-1)^j / j!`` (inclusion-exclusion)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return 1.0 - sum((-1) ** j / math.factorial(j) for j in range(n + 1))


def check_1(answer, facts):
    """Exercise 1: the system message of the contextual PersonaChat prompt for a user with
    these ``facts``, written by hand."""
    reference = prompts.personachat_system(list(facts), prompts.HEADERS["user"])
    ok = None if answer is None else isinstance(answer, str) and answer.strip() == reference
    return lesson.check(
        "Exercise 1 (contextual prompt by hand)", ok,
        "prompts.CHAT_SYSTEM, a newline, the header prompts.HEADERS['user'], then one line '- <fact>' per "
        "fact, lines joined with '\\n' (no blank line between them)",
        success="your system message is exactly what prompts.personachat_system builds")


def check_2(answer, n_users: int, tolerance: float = 0.03):
    """Exercise 2: the simulated share of random permutations of ``n_users`` users that leave
    at least one user with their own data (within ``tolerance`` of the exact value)."""
    exact = share_with_fixed_point(int(n_users))
    ok = None
    if answer is not None:
        try:
            ok = bool(abs(float(answer) - exact) <= tolerance)
        except (TypeError, ValueError):
            ok = False
    return lesson.check(
        "Exercise 2 (why a derangement)", ok,
        "draw many permutations with rng.permutation(n); a permutation p has a fixed point when "
        "(p == np.arange(n)).any(); the answer is the share of draws that have one (use a few thousand draws)",
        success=f"exact value {exact:.4f} (it tends to 1 - 1/e = {1 - math.exp(-1):.4f}): a plain shuffle "
                f"would leave some user with their own data in {exact:.0%} of runs")


def check_3(answer):
    """Exercise 3: ``(val_losses, selected_loss)``: a per-user validation-loss table with at
    least four templates (columns), and the mean validation loss of per-user selection on it."""
    ok, detail = None, ""
    if answer is not None:
        try:
            table, selected = answer
            table = pd.DataFrame(table)
            values = table.to_numpy(dtype=float)
            choice = select_per_user(table)
            reference = float(np.mean([table.at[u, c] for u, c in choice.items()]))
            ok = (table.shape[1] >= 4 and table.index.is_unique and np.isfinite(values).all()
                  and bool(np.isclose(float(selected), reference, atol=1e-9)))
            if ok:
                means = table.mean()
                detail = (f"per-user selection {reference:.4f} vs the best single template "
                          f"{means.idxmin()!r} {means.min():.4f}; choices: {choice.value_counts().to_dict()}")
                ok = reference <= means.min() + 1e-12
        except (TypeError, ValueError, KeyError):
            ok = False
    return lesson.check(
        "Exercise 3 (a fourth template)", ok,
        "answer = (table, selected): `table` one row per user and one column per template (the three of the "
        "notebook plus yours, no NaN); choice = uc.select_per_user(table); selected = the mean over users of "
        "table.at[user, choice[user]] (it can never exceed any column's mean: each user takes their minimum)",
        success=detail or "right")
