"""Checks of notebook 09's exercises (evaluating the ladder).

1. (warm-up) Bonferroni-adjusted p-values of the ladder's paired tests, by hand.
2. (standard) Do two direct metrics rank the same methods alike? Kendall tau between the ranking
   of one notebook's user-level methods by perplexity and by ROUGE-L.
3. (challenge) A second way to a paired p-value: the sign-flip permutation test of per-user
   differences, compared with the paired bootstrap's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import evaluation, lesson

__all__ = ["check_1", "check_2", "check_3", "metric_pair", "sign_flip_p"]


# --------------------------------------------------------------------------- exercise 1
def check_1(adjusted, p_values):
    """The learner's Bonferroni-adjusted p-values: ``min(m * p, 1)`` for each of the m p-values."""
    name = "Exercise 1 (Bonferroni)"
    if adjusted is None:
        return lesson.check(name, None, "")
    p = np.asarray(p_values, dtype=float)
    expected = np.minimum(p * p.size, 1.0)
    got = np.asarray(adjusted, dtype=float)
    ok = got.shape == expected.shape and bool(np.allclose(got, expected, atol=1e-9))
    return lesson.check(name, ok, "multiply every p-value by the number of tests m (here len(p_values)) "
                                  "and cap at 1; keep the original order.",
                        success=f"{int((expected <= 0.05).sum())} of {p.size} claims survive Bonferroni at 0.05")


# --------------------------------------------------------------------------- exercise 2
def metric_pair(frame: pd.DataFrame, notebook: str, task: str, metric_a: str, metric_b: str,
                level: str = "user") -> pd.DataFrame:
    """The methods of ``notebook`` at ``level`` that have both metrics: one row per method with
    the two values (columns ``metric_a``, ``metric_b``)."""
    part = frame[(frame["notebook"] == notebook) & (frame["task"] == task) & (frame["level"] == level)]
    wide = part.pivot_table(index="method", columns="metric", values="value")
    if metric_a not in wide or metric_b not in wide:
        raise ValueError(f"{notebook} records no {task} rows with both {metric_a!r} and {metric_b!r}")
    return wide[[metric_a, metric_b]].dropna()


def check_2(tau, frame: pd.DataFrame, notebook: str, task: str, metric_a: str, metric_b: str):
    """The learner's Kendall tau between the rankings of ``notebook``'s user-level methods by
    ``metric_a`` and ``metric_b``, each oriented so that higher is better."""
    name = "Exercise 2 (do two direct metrics agree?)"
    if tau is None:
        return lesson.check(name, None, "")
    pair = metric_pair(frame, notebook, task, metric_a, metric_b)
    signs = [-1.0 if evaluation.lower_is_better(m) else 1.0 for m in (metric_a, metric_b)]
    expected = evaluation.kendall_tau(signs[0] * pair[metric_a], signs[1] * pair[metric_b])
    ok = bool(np.isclose(float(tau), expected, atol=1e-9))
    return lesson.check(name, ok, f"orient both metrics so that higher is better (negate {metric_a} if "
                                  "lower is better), then count concordant minus discordant pairs over the "
                                  "pairs of methods (evaluation.kendall_tau or scipy.stats.kendalltau).",
                        success=f"tau = {expected:+.3f} over {len(pair)} methods")


# --------------------------------------------------------------------------- exercise 3
def sign_flip_p(diff, n_permutations: int = 20000, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of "mean difference = 0" (the check's reference):
    under the null each user's difference is as likely to have either sign."""
    diff = np.asarray(diff, dtype=float)
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n_permutations, diff.size))
    null = np.abs((signs * diff).mean(axis=1))
    return float(((null >= abs(diff.mean()) - 1e-12).sum() + 1) / (n_permutations + 1))


def check_3(p_value, a: pd.Series, b: pd.Series):
    """The learner's sign-flip permutation p-value of ``a - b`` on the shared users, within a
    Monte-Carlo tolerance (0.02, or both below 0.005) of the check's own 20,000-permutation value."""
    name = "Exercise 3 (a permutation test)"
    if p_value is None:
        return lesson.check(name, None, "")
    users = a.index.intersection(b.index)
    expected = sign_flip_p((a.loc[users] - b.loc[users]).to_numpy())
    got = float(p_value)
    ok = abs(got - expected) <= 0.02 or (got < 0.005 and expected < 0.005)
    return lesson.check(name, ok, "pair on the shared users, d = a - b; draw random signs s (±1) per user, "
                                  "many times; the p-value is the share of |mean(s * d)| >= |mean(d)| "
                                  "(count +1 over n + 1).", success=f"p = {expected:.4f}")
