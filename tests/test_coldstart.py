"""Cold start: ALS fold-in of a new user against implicit and against refitting with the user;
the history cut, the overtake point and the fallback policy on tiny inputs."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from p13n_utils import coldstart, recsys, synthetic

from test_recsys import planted

ALS = dict(factors=8, regularization=1.0, alpha=2.0, iterations=30)


@pytest.fixture(scope="module")
def matrices():
    ratings, _ = planted(n_users=120, n_items=200)
    X = recsys.binarize(recsys.Interactions.from_ratings(ratings).matrix)
    user = 5
    without = X.tolil()
    without[user, :] = 0
    without = sp.csr_matrix(without)
    without.eliminate_zeros()
    return X, without, user


def test_fold_in_equals_implicits_recalculate_user(matrices):
    X, without, user = matrices
    model = recsys.ImplicitALS(**ALS, use_gpu=False).fit(without)
    mine = coldstart.als_fold_in(model.item_factors_, X[user].indices, ALS["regularization"], ALS["alpha"])
    theirs = model.model_.recalculate_user(0, X[user])
    np.testing.assert_allclose(mine, theirs, atol=1e-4)


def test_fold_in_matches_refitting_with_the_user(matrices):
    """Folding a new user into a model fitted without them ranks like a model refitted with
    them: the scores correlate and the top-10 (unseen items) mostly agree."""
    X, without, user = matrices
    full = recsys.ImplicitALS(**ALS, use_gpu=False).fit(X)
    old = recsys.ImplicitALS(**ALS, use_gpu=False).fit(without)
    items = X[user].indices
    folded = old.item_factors_ @ coldstart.als_fold_in(old.item_factors_, items, ALS["regularization"], ALS["alpha"])
    refit = full.item_factors_ @ full.user_factors_[user]
    assert np.corrcoef(folded, refit)[0, 1] > 0.95
    unseen = np.ones(folded.size, bool)
    unseen[items] = False
    top = lambda s: set(np.argsort(-np.where(unseen, s, -np.inf))[:10].tolist())  # noqa: E731
    assert len(top(folded) & top(refit)) >= 8
    # and a converged model's own user factor is (nearly) its fold-in: one exact user step
    again = coldstart.als_fold_in(full.item_factors_, items, ALS["regularization"], ALS["alpha"])
    assert np.abs(again - full.user_factors_[user]).max() < 0.05 * np.abs(again).max()


def test_fold_in_of_a_user_with_no_history_is_zero_and_bad_items_raise():
    Y = np.random.default_rng(0).normal(size=(6, 3))
    np.testing.assert_array_equal(coldstart.als_fold_in(Y, [], 1.0, 2.0), np.zeros(3))
    with pytest.raises(IndexError, match="0..5"):
        coldstart.als_fold_in(Y, [7], 1.0, 2.0)


def test_fold_in_closed_form_by_hand():
    Y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    lam, alpha = 0.5, 3.0
    # cells: items 0 and 2 observed (c = alpha, p = 1), item 1 not (c = 1, p = 0)
    C = np.diag([alpha, 1.0, alpha])
    p = np.array([1.0, 0.0, 1.0])
    expected = np.linalg.solve(Y.T @ C @ Y + lam * np.eye(2), Y.T @ C @ p)
    np.testing.assert_allclose(coldstart.als_fold_in(Y, [2, 0, 0], lam, alpha), expected)


def test_recent_history_keeps_the_latest_n():
    history = synthetic.ratings(n_users=1, n_items=30, seed=3, min_per_user=10)
    history["timestamp"] = np.arange(len(history))[::-1] * 10  # newest first on purpose
    kept = coldstart.recent_history(history, 3)
    assert kept["timestamp"].tolist() == sorted(history["timestamp"])[-3:]
    assert coldstart.recent_history(history, 0).empty
    assert len(coldstart.recent_history(history, 10_000)) == len(history)
    with pytest.raises(ValueError, match="non-negative"):
        coldstart.recent_history(history, -1)


def test_overtake_point_and_fallback_policy():
    glob = {0: 1.0, 1: 1.0, 2: 1.0, 4: 1.0}
    persona = {0: 1.1, 1: 0.95, 2: 0.9, 4: 0.9}
    user = {0: 1.2, 1: 1.0, 2: 0.92, 4: 0.8}
    assert coldstart.overtake_point(persona, glob) == 1
    assert coldstart.overtake_point(user, persona) == 4
    assert coldstart.overtake_point(glob, persona) is None
    assert [coldstart.fallback_level(n, 1, 4) for n in (0, 1, 3, 4, 9)] == [
        "global", "persona", "persona", "user", "user"]
    assert coldstart.fallback_level(5, None, None) == "global"
    with pytest.raises(ValueError):
        coldstart.fallback_level(-1, 1, 4)
    series = lambda d: {n: pd.Series([v, v]) for n, v in d.items()}  # noqa: E731
    curve = coldstart.fallback_curve({"global": series(glob), "persona": series(persona), "user": series(user)}, 1, 4)
    assert {n: s.mean() for n, s in curve.items()} == {0: 1.0, 1: 0.95, 2: 0.9, 4: 0.8}
    with pytest.raises(ValueError, match="levels"):
        coldstart.fallback_curve({"global": series(glob)}, 1, 4)


def test_a_few_ratings_join_the_persona_of_their_genres():
    from p13n_utils import personas

    ml = synthetic.movielens(n_users=40, n_items=60, seed=1)
    gp = personas.movielens_genre_personas(ml.ratings, ml.movies, k=3, seed=0)
    genres = personas.genre_matrix(ml.movies)
    population = personas.genre_share(ml.ratings, ml.movies)
    user = int(gp.assignments.index[0])
    history = ml.ratings[ml.ratings["user_id"] == user]
    # a user's whole history puts them at (or next to) their own cluster's centroid
    centroids = gp.taste.groupby(gp.assignments).mean()
    own = ((centroids - gp.taste.loc[user]) ** 2).sum(axis=1).idxmin()
    assert coldstart.assign_genre_persona(gp, history, genres, population) == own
    assert coldstart.assign_genre_persona(gp, history.iloc[:0], genres, population) == -1


def test_rating_ladder_at_zero_history_has_no_user_or_persona_signal():
    from p13n_utils import personas

    ml = synthetic.movielens(n_users=30, n_items=40, seed=4)
    ratings = ml.ratings
    evaluated = [1, 2, 3]
    pairs = ratings[ratings["user_id"].isin(evaluated)].groupby("user_id").tail(1)
    history = ratings[ratings["user_id"].isin(evaluated)].drop(pairs.index)
    others = ratings[~ratings["user_id"].isin(evaluated)]
    histories = {u: history[history["user_id"] == u] for u in evaluated}
    gp = personas.movielens_genre_personas(others, ml.movies, k=3, seed=0)
    genres, population = personas.genre_matrix(ml.movies), personas.genre_share(others, ml.movies)
    zero = coldstart.rating_ladder(others, histories, pairs, 0, gp, genres, population)
    assert set(zero) == {"global", "persona", "user"} and list(zero["user"].index) == evaluated
    # without history the persona level has no persona: it is the item mean without shrinkage toward a group
    item_mean = others.groupby("item_id")["rating"].mean()
    expected = (pairs.set_index("user_id")["item_id"].map(item_mean).fillna(others["rating"].mean())
                - pairs.set_index("user_id")["rating"]).abs()
    np.testing.assert_allclose(zero["persona"].loc[evaluated], expected.loc[evaluated].astype(float), atol=1e-6)
    more = coldstart.rating_ladder(others, histories, pairs, 5, gp, genres, population)
    assert not np.allclose(more["user"], zero["user"])


def test_cold_context_kinds():
    lines, docs = ["Heat (1995): 4", "Up (2009): 5"], ["Heat (1995; Action, Crime)", "Up (2009; Animation)"]
    assert coldstart.cold_context("prompt", []) is None
    assert coldstart.cold_context("prompt", lines) == lines
    assert coldstart.cold_context("persona", lines, persona_lines=["Favourite genres: Drama"]) == ["Favourite genres: Drama"]
    assert coldstart.cold_context("rag", lines, docs, query="Toy Story (1995; Animation)", rag_k=1) == ["Up (2009): 5"]
    with pytest.raises(ValueError, match="kind"):
        coldstart.cold_context("adapter", lines)


def test_new_user_ndcg_falls_back_to_popularity_without_history():
    from p13n_utils import personas

    ratings, _ = planted(n_users=60, n_items=80, per_user=16)
    ml_movies = pd.DataFrame({"item_id": np.arange(80), "genres": ["Action" if i < 40 else "Drama" for i in range(80)]})
    old = ratings[ratings["user_id"] >= 10]
    new_user = ratings[ratings["user_id"] == 0].copy()
    new_user["rating"] = 5.0
    inter = recsys.Interactions.from_ratings(old, item_ids=np.arange(80))
    als = recsys.ImplicitALS(**ALS, use_gpu=False).fit(inter.matrix)
    gp = personas.movielens_genre_personas(old, ml_movies, k=2, seed=0)
    seg = recsys.SegmentPopularityRecommender(gp.assignments.reindex(inter.user_ids).fillna(-1).astype(int)).fit(inter.matrix)
    args = (inter, als.item_factors_, 1.0, 2.0, seg, gp, personas.genre_matrix(ml_movies), personas.genre_share(old, ml_movies))
    zero = coldstart.new_user_ndcg(new_user, 0, 8, *args)
    assert zero["global"] == zero["persona"] == zero["user"]
    some = coldstart.new_user_ndcg(new_user, 8, 8, *args)
    assert some["user"] > zero["user"]  # the planted block structure: 8 ratings reveal the user's block
    with pytest.raises(ValueError, match="no liked movie"):
        coldstart.new_user_ndcg(new_user.assign(rating=1.0), 0, 8, *args)
