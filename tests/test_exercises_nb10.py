"""Notebook 10's exercise checks on small synthetic data: a right answer passes, a wrong one
raises ExerciseFailed with the hint, None prints "not attempted"."""

import numpy as np
import pandas as pd
import pytest

from p13n_utils import lesson, synthetic, tasks
from p13n_utils.exercises import nb10


def test_check_1_fold_in():
    Y = np.random.default_rng(0).normal(size=(8, 3))
    items = [1, 4, 4]
    Yi = Y[[1, 4]]
    right = np.linalg.solve(Y.T @ Y + 0.5 * np.eye(3) + (2.0 - 1) * Yi.T @ Yi, 2.0 * Yi.sum(axis=0))
    assert nb10.check_1(right, Y, items, 0.5, 2.0) is True
    with pytest.raises(lesson.ExerciseFailed, match="np.linalg.solve"):
        nb10.check_1(np.linalg.solve(Y.T @ Y + 0.5 * np.eye(3), Yi.sum(axis=0)), Y, items, 0.5, 2.0)
    assert nb10.check_1(None, Y, items, 0.5, 2.0) is None


def test_check_2_gap(capsys):
    values = pd.Series([0.2, 0.4, 0.9, 1.1, 1.0], index=list("abcde"))
    groups = pd.Series(["x", "x", "y", "y", "y"], index=list("abcde"))
    assert nb10.check_2(1.0 - 0.3, values, groups) is True
    with pytest.raises(lesson.ExerciseFailed, match="groupby"):
        nb10.check_2(values.max() - values.min(), values, groups)
    assert nb10.check_2(None, values, groups) is None
    assert "not attempted" in capsys.readouterr().out


def test_check_3_half_life_chosen_on_validation():
    ml = synthetic.movielens(n_users=30, n_items=40, seed=2)
    ml.ratings["timestamp"] = ml.ratings["timestamp"] + np.arange(len(ml.ratings)) * 86_400  # spread over days
    rating = tasks.movielens_rating_eval_set(ml, n_users=None, n_per_user=2, seed=0)
    assert not set(zip(rating.val["user_id"], rating.val["item_id"])) & set(
        zip(*nb10.history_before_val(rating)[["user_id", "item_id"]].to_numpy().T))
    half_lives = (1, 30)
    scores = {h: nb10.validation_mae(rating, h) for h in (None, *half_lives)}
    best = min(scores, key=scores.get)
    right = "all" if best is None else best
    wrong = next(h for h in ("all", *half_lives) if h != right)
    assert nb10.check_3(right, rating, half_lives) is True
    with pytest.raises(lesson.ExerciseFailed, match="rating.val"):
        nb10.check_3(wrong, rating, half_lives)
    assert nb10.check_3(None, rating, half_lives) is None
