import math

import numpy as np
import pandas as pd
import pytest

from p13n_utils import baselines, lesson, metrics, synthetic, tasks
from p13n_utils.exercises import nb02


def test_check_1_pools_tokens_not_replies():
    scores = pd.DataFrame({"logprob_sum": [-2.0, -12.0], "n_tokens": [1, 3]})
    pooled = math.exp(14.0 / 4)
    assert nb02.check_1(pooled, scores) is True
    mean_of_replies = math.exp((2.0 / 1 + 12.0 / 3) / 2)  # averages per reply first: not pooled
    with pytest.raises(lesson.ExerciseFailed, match="add up logprob_sum and n_tokens"):
        nb02.check_1(mean_of_replies, scores)
    with pytest.raises(lesson.ExerciseFailed):
        nb02.check_1("33.1", scores)


def right_ndcg(recommended, relevant, k):
    gains = [1.0 / math.log2(i + 2) for i, item in enumerate(recommended[:k]) if item in relevant]
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return sum(gains) / ideal


def test_check_2_accepts_a_correct_ndcg_and_names_a_failing_case():
    assert nb02.check_2(right_ndcg) is True
    def ideal_without_cap(rec, rel, k):  # the ideal DCG of |relevant| hits, even beyond k
        dcg = sum(1.0 / math.log2(i + 2) for i, x in enumerate(rec[:k]) if x in rel)
        return dcg / sum(1.0 / math.log2(i + 2) for i in range(len(rel)))

    unnormalised = lambda rec, rel, k: sum(1.0 / math.log2(i + 2) for i, x in enumerate(rec[:k]) if x in rel)
    for wrong in (unnormalised, ideal_without_cap):
        with pytest.raises(lesson.ExerciseFailed, match="recommended="):
            nb02.check_2(wrong)
    with pytest.raises(lesson.ExerciseFailed, match="raised ZeroDivisionError"):
        nb02.check_2(lambda rec, rel, k: 1 / 0)


@pytest.fixture(scope="module")
def rating():
    ml = synthetic.movielens(n_users=40, n_items=25, seed=2)
    return tasks.movielens_rating_eval_set(ml, n_users=8, n_per_user=2, seed=0)


def test_validation_history_drops_exactly_the_validation_pairs(rating):
    history = nb02.validation_history(rating)
    val = set(zip(rating.val["user_id"], rating.val["item_id"]))
    assert not val & set(zip(history["user_id"], history["item_id"]))
    assert len(history) == len(rating.train) - len(rating.val)


def test_check_3_takes_the_best_shrinkage_on_validation(rating):
    grid = (0, 3, 30)
    maes = {}
    for s in grid:  # the learner's loop, written independently of validation_mae
        pred = baselines.ItemMean(shrinkage=s).fit(nb02.validation_history(rating)).predict(rating.val)
        maes[s] = metrics.rating_errors(rating.val, pred)["mae"].mean()
    best = min(maes, key=maes.get)
    worst = max(maes, key=maes.get)
    assert maes[worst] > maes[best]  # the synthetic data separates them
    assert nb02.check_3(best, rating, grid=grid) is True
    with pytest.raises(lesson.ExerciseFailed, match="validation_history"):
        nb02.check_3(worst, rating, grid=grid)
    with pytest.raises(lesson.ExerciseFailed):
        nb02.check_3(7, rating, grid=grid)  # not in the grid


@pytest.mark.parametrize("check, args", [(nb02.check_1, (pd.DataFrame(),)), (nb02.check_2, ()),
                                         (nb02.check_3, (None,))])
def test_none_is_not_attempted(check, args, capsys):
    assert check(None, *args) is None
    assert "not attempted yet" in capsys.readouterr().out
