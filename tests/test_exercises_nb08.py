"""Checks of notebook 08's exercises on synthetic interactions with planted groups (no LM):
a right answer passes, a wrong one raises with a hint, None is "not attempted yet"."""

import math

import numpy as np
import pytest

from p13n_utils import lesson, metrics, recsys, results
from p13n_utils.exercises import nb08
from test_recsys import planted

K = 10


def test_check_1_ndcg(capsys):
    recommended, relevant = [5, 3, 9, -1], {3, 9, 7}
    dcg = 1 / math.log2(3) + 1 / math.log2(4)                 # hits at ranks 2 and 3
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)            # three relevant items, k = 4
    assert nb08.check_1(dcg / idcg, recommended, relevant, k=4) is True
    assert "✓" in capsys.readouterr().out
    with pytest.raises(lesson.ExerciseFailed, match="log2"):
        nb08.check_1(2 / 3, recommended, relevant, k=4)        # that is recall@4
    with pytest.raises(lesson.ExerciseFailed):
        nb08.check_1(dcg / 4, recommended, relevant, k=4)      # normalised by k, not by min(|rel|, k)
    assert nb08.check_1(None, recommended, relevant, k=4) is None
    assert "not attempted" in capsys.readouterr().out


@pytest.fixture(scope="module")
def split():
    ratings, catalog = planted(n_users=120, n_items=200, seed=1)
    return recsys.make_protocol(ratings, catalog)[1]


def knn_by_hand(split):
    """Item-kNN the slow, obvious way: the full item × item cosine matrix."""
    X = recsys.binarize(split.train.matrix).toarray()
    norms = np.linalg.norm(X, axis=0)
    S = (X.T @ X) / np.maximum(np.outer(norms, norms), 1e-12)
    np.fill_diagonal(S, 0.0)
    recs = recsys.top_k(X[split.users] @ S, K, exclude=split.train.matrix[split.users])
    return recsys.evaluate(None, split, K, recommendations=recs)[0].set_index("user")[f"ndcg@{K}"]


def test_check_2_item_knn(split, capsys):
    knn = knn_by_hand(split)
    assert nb08.check_2(knn.mean(), split, K) is True
    assert "item-kNN" in capsys.readouterr().out
    popularity = recsys.evaluate(recsys.PopularityRecommender().fit(split.train.matrix), split, K)[0]
    assert knn.mean() > popularity[f"ndcg@{K}"].mean() + 0.01        # the planted groups reward kNN
    with pytest.raises(lesson.ExerciseFailed, match="binarize"):
        nb08.check_2(popularity[f"ndcg@{K}"].mean(), split, K)
    assert nb08.check_2(None, split, K) is None
    assert "not attempted" in capsys.readouterr().out


def test_check_3_paired_differences(split, capsys):
    als = recsys.ImplicitALS(factors=8, iterations=3, seed=0).fit(split.train.matrix)
    knn = knn_by_hand(split)
    base = {"popularity": recsys.PopularityRecommender().fit(split.train.matrix), "als": als}
    per = {name: recsys.evaluate(m, split, K)[0].set_index("user")[f"ndcg@{K}"] for name, m in base.items()}
    right = {name: results.paired_difference(knn, b, n_resamples=200, seed=0) for name, b in per.items()}
    assert nb08.check_3(right, split, als, K, n_resamples=200, seed=0) is True
    assert "match" in capsys.readouterr().out
    flipped = {name: results.paired_difference(b, knn, n_resamples=200, seed=0) for name, b in per.items()}
    assert abs(flipped["popularity"]["mean"]) > 0.01
    with pytest.raises(lesson.ExerciseFailed, match="popularity difference is off"):
        nb08.check_3(flipped, split, als, K, n_resamples=200, seed=0)
    with pytest.raises(lesson.ExerciseFailed, match="keys"):
        nb08.check_3({"als": right["als"]}, split, als, K, n_resamples=200, seed=0)
    assert nb08.check_3(None, split, als, K) is None
    assert "not attempted" in capsys.readouterr().out
