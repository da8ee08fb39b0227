"""Ranking and rating-error metrics against their definitions and scikit-learn."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, ndcg_score

from p13n_utils import metrics


def _ndcg_sklearn(ranked, relevant, n_items, k):
    """sklearn's nDCG of a ranking given as item ids (scores decrease along the list)."""
    scores = np.zeros(n_items)
    scores[np.asarray(ranked)] = np.arange(len(ranked), 0, -1)
    truth = np.zeros(n_items)
    truth[list(relevant)] = 1
    return ndcg_score(truth[None], scores[None], k=k)


@pytest.mark.parametrize("seed", range(5))
def test_ndcg_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n_items, k = 30, 10
    ranked = rng.permutation(n_items)  # a full ranking: no ties for sklearn to average over
    relevant = set(rng.choice(n_items, size=int(rng.integers(1, 15)), replace=False).tolist())
    assert metrics.ndcg_at_k(ranked, relevant, k) == pytest.approx(_ndcg_sklearn(ranked, relevant, n_items, k))


def test_definitions_on_a_worked_example():
    ranked = [7, 3, 9, 1, 5]
    relevant = {3, 5, 8}
    # hits at ranks 2 and 5; 3 relevant items
    assert metrics.recall_at_k(ranked, relevant, 5) == pytest.approx(2 / 3)
    assert metrics.recall_at_k(ranked, relevant, 2) == pytest.approx(1 / 3)
    dcg = 1 / np.log2(3) + 1 / np.log2(6)
    idcg = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert metrics.ndcg_at_k(ranked, relevant, 5) == pytest.approx(dcg / idcg)
    # precision at the hits: 1/2 and 2/5; normalised by min(|relevant|, k) = 3
    assert metrics.average_precision_at_k(ranked, relevant, 5) == pytest.approx((1 / 2 + 2 / 5) / 3)
    # with k=2 only one relevant item could fit: normaliser min(3, 2) = 2
    assert metrics.average_precision_at_k(ranked, relevant, 2) == pytest.approx((1 / 2) / 2)


def test_perfect_and_empty_rankings():
    assert metrics.ndcg_at_k([1, 2, 3], {1, 2}, 3) == pytest.approx(1.0)
    assert metrics.average_precision_at_k([1, 2, 3], {1, 2}, 3) == pytest.approx(1.0)
    assert metrics.ndcg_at_k([4, 5, 6], {1, 2}, 3) == 0.0
    assert metrics.average_precision_at_k([4, 5, 6], {1, 2}, 3) == 0.0


def test_padding_and_duplicates_never_count():
    assert metrics.recall_at_k([-1, -1, 2], {2, -1}, 3) == pytest.approx(1 / 2)
    # a repeated relevant item counts once
    assert metrics.recall_at_k([2, 2, 2], {2, 3}, 3) == pytest.approx(1 / 2)
    assert metrics.ndcg_at_k([2, 2], {2, 3}, 2) == pytest.approx(1 / (1 + 1 / np.log2(3)))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no relevant items"):
        metrics.ndcg_at_k([1, 2], set(), 2)
    for k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            metrics.recall_at_k([1, 2], {1}, k)


def test_ranking_metrics_per_user():
    recs = {"a": [1, 2, 3], "b": [3, 2, 1], "c": [9, 9, 9]}
    relevant = {"a": {1}, "b": {1, 2}, "c": set()}
    table = metrics.ranking_metrics(recs, relevant, k=3)
    assert table["user"].tolist() == ["a", "b"]  # c has nothing to find
    assert table.loc[0, "ndcg@3"] == pytest.approx(metrics.ndcg_at_k([1, 2, 3], {1}, 3))
    assert table.loc[1, "recall@3"] == pytest.approx(1.0)
    assert table["n_relevant"].tolist() == [1, 2]
    # 2-d array input: users are row numbers
    as_array = metrics.ranking_metrics(np.array([[1, 2, 3], [3, 2, 1]]), {0: {1}, 1: {1, 2}}, k=3)
    assert as_array["ndcg@3"].tolist() == pytest.approx(table["ndcg@3"].tolist())
    with pytest.raises(KeyError, match="no recommendations"):
        metrics.ranking_metrics(recs, {"z": {1}}, k=3)


def test_catalog_coverage():
    recs = np.array([[0, 1, -1], [1, 2, 3]])
    assert metrics.catalog_coverage(recs, n_items=10) == pytest.approx(4 / 10)
    assert metrics.catalog_coverage(recs, n_items=10, k=1) == pytest.approx(2 / 10)
    assert metrics.catalog_coverage({"u": [5]}, n_items=5 + 1) == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="positive"):
        metrics.catalog_coverage(recs, n_items=0)
    with pytest.raises(ValueError, match="catalog"):
        metrics.catalog_coverage(recs, n_items=2)


def test_per_user_errors_match_sklearn():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 4, size=40)
    y_true = rng.integers(1, 6, size=40).astype(float)
    y_pred = y_true + rng.normal(0, 1, size=40)
    table = metrics.per_user_errors(users, y_true, y_pred).set_index("user")
    for user in np.unique(users):
        mask = users == user
        assert table.loc[user, "n"] == mask.sum()
        assert table.loc[user, "mae"] == pytest.approx(mean_absolute_error(y_true[mask], y_pred[mask]))
        assert table.loc[user, "rmse"] == pytest.approx(np.sqrt(mean_squared_error(y_true[mask], y_pred[mask])))


def test_per_user_errors_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        metrics.per_user_errors([1, 1], [3.0, np.nan], [3.0, 4.0])
    with pytest.raises(ValueError, match="no ratings"):
        metrics.per_user_errors([], [], [])
    with pytest.raises(ValueError, match="same length"):
        metrics.per_user_errors([1, 2], [3.0], [3.0, 4.0])
    assert isinstance(metrics.per_user_errors([1], [3.0], [3.5]), pd.DataFrame)


def test_precision_and_both_average_precisions_by_hand():
    # hits at ranks 1 and 3 of 4; five relevant items, so the two MAP denominators differ
    recommended, relevant = [1, 2, 3, 4], {1, 3, 5, 6, 7}
    assert metrics.precision_at_k(recommended, relevant, 4) == pytest.approx(2 / 4)
    # sum of precision@i at the hits: 1/1 + 2/3 = 5/3
    assert metrics.average_precision_at_k(recommended, relevant, 4) == pytest.approx((5 / 3) / 4)  # min(5, 4)
    assert metrics.average_precision_all_at_k(recommended, relevant, 4) == pytest.approx((5 / 3) / 5)  # |rel|
    # fewer relevant items than k: the two MAPs agree, precision still divides by k
    assert metrics.average_precision_all_at_k([9, 1], {1}, 2) == pytest.approx(1 / 2)
    assert metrics.average_precision_at_k([9, 1], {1}, 2) == pytest.approx(1 / 2)
    assert metrics.precision_at_k([1, -1, -1], {1}, 3) == pytest.approx(1 / 3)  # empty slots are misses


def test_ranking_metrics_has_precision_and_map_all():
    table = metrics.ranking_metrics({"a": [1, 2, 3, 4]}, {"a": {1, 3, 5, 6, 7}}, k=4)
    assert table.loc[0, "precision@4"] == pytest.approx(0.5)
    assert table.loc[0, "map@4"] == pytest.approx(5 / 12)
    assert table.loc[0, "map_all@4"] == pytest.approx(1 / 3)
