"""Checks of the exercises of ``02_global_preference``: perplexity from summed
log-probabilities, NDCG@k by hand, and choosing the item-mean shrinkage on validation pairs."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .. import baselines, lesson, metrics

__all__ = ["SHRINKAGE_GRID", "pooled_perplexity", "validation_history", "validation_mae",
           "check_1", "check_2", "check_3"]

SHRINKAGE_GRID = (0, 1, 2, 5, 10, 20, 50)


def pooled_perplexity(scores: pd.DataFrame) -> float:
    """``exp(-sum(logprob_sum) / sum(n_tokens))``: every token of every reply weighs the same."""
    return float(np.exp(-scores["logprob_sum"].sum() / scores["n_tokens"].sum()))


def check_1(answer, scores: pd.DataFrame):
    """Exercise 1: ``answer`` is the token-pooled perplexity of the rows of ``scores`` (columns
    ``logprob_sum`` and ``n_tokens``, as :func:`tasks.score_personachat` returns them)."""
    if answer is None:
        return lesson.check("exercise 1", None, "")
    expected = pooled_perplexity(scores)
    ok = isinstance(answer, (int, float, np.floating)) and math.isclose(float(answer), expected, rel_tol=1e-4)
    return lesson.check("exercise 1", ok,
                        "add up logprob_sum and n_tokens over all rows first, then take "
                        "exp(-total log-probability / total tokens); the log-probabilities are in nats "
                        "(natural log) and negative",
                        success=f"pooled perplexity {expected:.2f}")


def _cases(seed: int = 0, n_cases: int = 40):
    """Seeded ranked lists (no duplicates) with relevant sets of varying size, and cut-offs."""
    rng = np.random.default_rng(seed)
    for _ in range(n_cases):
        ranked = [int(i) for i in rng.permutation(30)[: int(rng.integers(5, 21))]]
        relevant = {int(i) for i in rng.choice(30, size=int(rng.integers(1, 9)), replace=False)}
        yield ranked, relevant, int(rng.choice([1, 3, 5, 10]))


def check_2(my_ndcg: Callable[[Sequence, set, int], float] | None):
    """Exercise 2: ``my_ndcg(recommended, relevant, k)`` must agree with
    :func:`metrics.ndcg_at_k` on seeded random lists."""
    if my_ndcg is None:
        return lesson.check("exercise 2", None, "")
    for ranked, relevant, k in _cases():
        expected = metrics.ndcg_at_k(ranked, relevant, k)
        try:
            got = float(my_ndcg(list(ranked), set(relevant), k))
        except Exception as err:  # the learner's function failed: say so, with the case
            return lesson.check("exercise 2", False, f"your function raised {type(err).__name__}: {err} "
                                f"on recommended={ranked}, relevant={sorted(relevant)}, k={k}")
        if not math.isclose(got, expected, abs_tol=1e-9):
            return lesson.check("exercise 2", False,
                                f"on recommended={ranked}, relevant={sorted(relevant)}, k={k} you return "
                                f"{got:.4f}, expected {expected:.4f}: the item at rank i (from 1) is discounted "
                                "by 1/log2(i + 1), and the ideal DCG puts min(|relevant|, k) hits on top")
    return lesson.check("exercise 2", True, "", success="your NDCG@k agrees with metrics.ndcg_at_k on 40 lists")


def validation_history(rating) -> pd.DataFrame:
    """The ratings known when predicting ``rating.val``: ``rating.train`` without the
    validation pairs (``rating.train`` holds them, since it is the history of the test pairs)."""
    val_keys = pd.MultiIndex.from_frame(rating.val[["user_id", "item_id"]])
    in_val = pd.MultiIndex.from_frame(rating.train[["user_id", "item_id"]]).isin(val_keys)
    return rating.train[~in_val]


def validation_mae(rating, shrinkage: float) -> float:
    """Mean over users of the per-user MAE of the shrunk item mean on ``rating.val``."""
    pred = baselines.ItemMean(shrinkage=shrinkage).fit(validation_history(rating)).predict(rating.val)
    return float(metrics.rating_errors(rating.val, pred)["mae"].mean())


def check_3(answer, rating, grid: Sequence[float] = SHRINKAGE_GRID):
    """Exercise 3: ``answer`` is the shrinkage of ``grid`` with the lowest validation MAE
    (:func:`validation_mae`; any of several tied values counts)."""
    if answer is None:
        return lesson.check("exercise 3", None, "")
    maes = {s: validation_mae(rating, s) for s in grid}
    best = min(maes.values())
    ok = answer in maes and maes[answer] <= best + 1e-12
    return lesson.check("exercise 3", ok,
                        f"choose among {tuple(grid)}: fit on nb02.validation_history(rating) (the history "
                        "without the validation pairs), predict rating.val, and compare the mean over users "
                        "of metrics.rating_errors(...)['mae']",
                        success="validation MAE by shrinkage: "
                                + ", ".join(f"{s}: {m:.3f}" for s, m in maes.items()))
