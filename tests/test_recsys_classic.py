"""EASE, item-kNN, SAR and the torch BPR on small synthetic data with planted structure."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from p13n_utils import recsys, recsys_classic as rc

from test_recsys import mean_ndcg, planted


@pytest.fixture(scope="module")
def protocol():
    ratings, catalog = planted()
    return recsys.make_protocol(ratings, catalog)


def test_ease_matches_its_closed_form_by_hand():
    X = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=np.float32))
    lam = 2.0
    G = X.T.toarray() @ X.toarray() + lam * np.eye(3)
    P = np.linalg.inv(G)
    # B_ij = -P_ij / P_jj off the diagonal, 0 on it
    B = np.array([[0 if i == j else -P[i, j] / P[j, j] for j in range(3)] for i in range(3)])
    model = rc.EASE(reg=lam).fit(X)
    np.testing.assert_allclose(model.B_, B, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.score([0, 1]), X.toarray()[:2] @ B, rtol=1e-4, atol=1e-5)
    # B solves the constrained ridge regression: the gradient (G B - X'X) is zero off the diagonal
    residual = G @ B - X.T.toarray() @ X.toarray()
    assert np.abs(residual - np.diag(np.diag(residual))).max() < 1e-5
    with pytest.raises(ValueError, match="positive"):
        rc.EASE(reg=0)


def test_item_knn_cosine_and_neighbour_cut_by_hand():
    # items 0 and 1 share users 0 and 1; item 2 has only user 2; item 3 shares user 1 with 0 and 1
    X = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 0, 1], [0, 0, 1, 0]], dtype=np.float32))
    full = rc.ItemKNN(neighbours=None).fit(X)
    cos_01, cos_03 = 2 / (np.sqrt(2) * np.sqrt(2)), 1 / (np.sqrt(2) * 1)
    sim = full.sim_.toarray()
    assert sim[0, 1] == pytest.approx(cos_01) and sim[0, 3] == pytest.approx(cos_03)
    assert np.all(np.diag(sim) == 0)
    # user 2 (has item 2 only) scores item 3 with sim(3, 2) = 0; user 0 scores item 3 with
    # sim(3, 0) + sim(3, 1) = 2 / sqrt(2)
    assert full.score([0])[0, 3] == pytest.approx(2 * cos_03)
    one = rc.ItemKNN(neighbours=1).fit(X)
    assert (one.sim_.toarray() > 0).sum(axis=1).max() == 1  # one neighbour per item


def test_item_knn_and_ease_do_not_depend_on_how_the_memory_is_spent():
    rng = np.random.default_rng(0)
    X = sp.csr_matrix((rng.random((40, 25)) < 0.3).astype(np.float32))
    for neighbours in (None, 3):
        whole = rc.ItemKNN(neighbours=neighbours, block=1024).fit(X)
        blocked = rc.ItemKNN(neighbours=neighbours, block=7).fit(X)  # rows 7 at a time: the same matrix
        assert np.array_equal(whole.sim_.toarray(), blocked.sim_.toarray())
    B = rc.EASE(reg=5.0).fit(X).B_                                   # in place, as the textbook formula
    P = np.linalg.inv((X.T @ X).toarray() + 5.0 * np.eye(25, dtype=np.float32))
    assert B.dtype == np.float32 and np.array_equal(B, np.eye(25, dtype=np.float32) - P / np.diag(P))
    Xb = X.copy()
    Xb.data[:] = 1.0
    assert np.array_equal(rc.SAR().fit(X).S_, (Xb.T @ Xb).toarray())   # dense counts = the sparse product


def test_sar_jaccard_and_decay_by_hand():
    X = sp.csr_matrix(np.array([[5, 4, 0], [3, 0, 0], [0, 2, 1]], dtype=np.float32))
    model = rc.SAR(similarity="jaccard").fit(X)
    # item 0 has users {0, 1}, item 1 {0, 2}: jaccard = 1 / 3
    assert model.S_[0, 1] == pytest.approx(1 / 3)
    assert model.S_[0, 0] == pytest.approx(1.0)
    # user 1 (rated item 0 with 3): score(item 1) = 3 * 1/3
    assert model.score([1])[0, 1] == pytest.approx(1.0)
    ratings = pd.DataFrame({"user_id": [0, 0, 1, 2, 2], "item_id": [0, 1, 0, 1, 2],
                            "rating": [5.0, 4.0, 3.0, 2.0, 1.0],
                            "timestamp": [0, 30 * 86400, 30 * 86400, 0, 30 * 86400]})
    inter = recsys.Interactions.from_ratings(ratings)
    w = rc.time_decay(ratings, inter, half_life_days=30).toarray()
    assert w[0, 0] == pytest.approx(0.5) and w[0, 1] == pytest.approx(1.0)  # one half-life older: 1/2
    assert w[1, 0] == pytest.approx(1.0)  # age counts from the same user's latest rating
    decayed = rc.SAR(decay=sp.csr_matrix(w)).fit(inter.matrix)
    assert decayed.A_.toarray()[0, 0] == pytest.approx(2.5)


def test_bpr_step_moves_toward_the_preferred_item():
    import torch

    U, V, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 0.0]]), torch.zeros(2)
    u, i, j = torch.tensor([0]), torch.tensor([0]), torch.tensor([1])
    rc.bpr_step(U, V, b, u, i, j, lr=1.0, reg=0.0)
    # x_uij = 0, g = sigma(0) = 1/2: y_i += g x_u, y_j -= g x_u, b_i += g, b_j -= g
    assert V.tolist() == [[0.5, 0.0], [-0.5, 0.0]] and b.tolist() == [0.5, -0.5]
    # a switched-off triple changes nothing
    before = V.clone()
    rc.bpr_step(U, V, b, u, i, j, lr=1.0, reg=0.0, weight=torch.zeros(1))
    assert torch.equal(V, before)


def test_torch_bpr_learns_a_planted_ranking():
    # users 0..19 watched items 0..9, users 20..39 items 10..19, nobody items 20..29; user 0 has
    # seen only items 0..4. BPR must put 5..9 on top for user 0, although each of 10..19 has one
    # more watcher (popularity would recommend them)
    rows = [(u, i) for u in range(40) for i in range(10 * (u // 20), 10 * (u // 20) + 10)
            if not (u == 0 and i >= 5)]
    X = sp.csr_matrix((np.ones(len(rows), np.float32), tuple(np.array(rows).T)), shape=(40, 30))
    model = rc.TorchBPR(factors=8, epochs=30, learning_rate=0.05, seed=0).fit(X)
    top = model.recommend([0], 5, exclude=X)[0]
    assert set(top.tolist()) == {5, 6, 7, 8, 9}
    popular = recsys.PopularityRecommender().fit(X).recommend([0], 5, exclude=X)[0]
    assert not set(popular.tolist()) & {5, 6, 7, 8, 9}  # the test does need personalization
    again = rc.TorchBPR(factors=8, epochs=30, learning_rate=0.05, seed=0).fit(X)
    np.testing.assert_array_equal(model.score([0]), again.score([0]))  # seeded: reproducible


@pytest.mark.parametrize("make", [lambda: rc.EASE(reg=50.0), lambda: rc.ItemKNN(neighbours=50),
                                  lambda: rc.SAR(), lambda: rc.SAR(similarity="jaccard"), lambda: rc.TorchBPR(factors=16, epochs=20, seed=0)])
def test_classic_models_beat_popularity_on_planted_groups(protocol, make):
    _, test = protocol
    pop = mean_ndcg(recsys.PopularityRecommender().fit(test.train.matrix), test)
    assert mean_ndcg(make().fit(test.train.matrix), test) > pop


def test_ease_short_of_memory_inverts_in_float32_with_a_printed_reason(monkeypatch, capsys):
    rng = np.random.default_rng(1)
    X = sp.csr_matrix((rng.random((40, 25)) < 0.3).astype(np.float32))
    exact = rc.EASE(reg=5.0).fit(X).B_
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("P13N_MEMORY_LIMIT_GB", "0.001")
    short = rc.EASE(reg=5.0).fit(X)
    assert "EASE's inverse of the 25 × 25 Gram matrix" in capsys.readouterr().out
    assert short.B_.dtype == np.float32 and np.allclose(short.B_, exact, atol=1e-5)
