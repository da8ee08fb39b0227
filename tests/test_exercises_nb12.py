"""Checks of notebook 12's exercises on random item factors and hand-made lists (no LM): a right
answer passes, a wrong one raises with a hint, None is "not attempted yet"."""

import numpy as np
import pandas as pd
import pytest

from p13n_utils import lesson
from p13n_utils.exercises import nb12

RNG = np.random.default_rng(0)
Y = RNG.normal(size=(40, 4))
LIKED, SEEN, REG, ALPHA = [3, 7, 11, 20], [3, 7, 11, 20, 25], 1.0, 2.0


def fold_in_by_hand(Y, items, reg, alpha):
    Yu = Y[sorted(set(items))]
    A = Y.T @ Y + reg * np.eye(Y.shape[1]) + (alpha - 1) * Yu.T @ Yu
    return np.linalg.solve(A, alpha * Yu.sum(axis=0))


def test_check_1_persona(capsys):
    centroids = np.eye(4)[:3]  # three unit centroids along the first three axes
    facts = np.array([[0.1, 0.9, 0.0, 0.2], [0.3, 0.8, 0.1, 0.0]])  # both lean towards axis 1
    assert nb12.check_1(1, centroids, facts) is True
    assert nb12.check_1(np.int64(1), centroids, facts) is True
    with pytest.raises(lesson.ExerciseFailed, match="np.argmax"):
        nb12.check_1(0, centroids, facts)
    with pytest.raises(lesson.ExerciseFailed, match="3 personas"):
        nb12.check_1([1, 1], centroids, facts)  # one index, not a list
    assert nb12.check_1(None, centroids, facts) is None
    assert "not attempted" in capsys.readouterr().out


def _list(titles):
    return pd.DataFrame({"rank": range(1, len(titles) + 1), "title": titles, "because": ["x"] * len(titles)})


RECS = {"popularity": _list(["a", "b", "c", "d"]), "persona_popularity": _list(["a", "b", "e", "f"]),
        "als_fold_in": _list(["c", "g", "h", "i"]), "content_embed": _list(["j", "k", "l", "m"]),
        "llm_profile": _list(["a", "b", "c", "d"])}


def test_check_2_shared_titles():
    right = {"persona_popularity": 2, "als_fold_in": 1, "content_embed": 0, "llm_profile": 4}
    assert nb12.check_2(right, RECS) is True
    with pytest.raises(lesson.ExerciseFailed, match="intersection"):
        nb12.check_2({**right, "als_fold_in": 3}, RECS)
    with pytest.raises(lesson.ExerciseFailed):
        nb12.check_2([2, 1, 0, 4], RECS)
    assert nb12.check_2(None, RECS) is None


def test_check_3_leave_the_top_driver_out():
    scores = lambda items: Y @ fold_in_by_hand(Y, items, REG, ALPHA)  # noqa: E731

    def top(items):
        s = scores(items)
        s[SEEN] = -np.inf
        return np.argsort(-s, kind="stable")[:10]

    before = top(LIKED)
    # the driver by hand: each liked item's share alpha * y_t^T A^-1 y_i, summed over the top 10
    Yu = Y[sorted(LIKED)]
    A = Y.T @ Y + REG * np.eye(4) + (ALPHA - 1) * Yu.T @ Yu
    share = (ALPHA * Y[before] @ np.linalg.solve(A, Yu.T)).sum(axis=0)
    dropped = sorted(LIKED)[int(np.argmax(share))]
    after = top([i for i in LIKED if i != dropped])
    right = (dropped, 10 - len(set(before) & set(after)))
    assert nb12.check_3(right, Y, LIKED, SEEN, REG, ALPHA) is True
    with pytest.raises(lesson.ExerciseFailed, match="driver"):
        nb12.check_3((dropped, right[1] + 1), Y, LIKED, SEEN, REG, ALPHA)
    other = next(i for i in LIKED if i != dropped)
    with pytest.raises(lesson.ExerciseFailed):
        nb12.check_3((other, right[1]), Y, LIKED, SEEN, REG, ALPHA)
    assert nb12.check_3(None, Y, LIKED, SEEN, REG, ALPHA) is None
