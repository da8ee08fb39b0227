"""Recommenders, protocol and bad input, on synthetic data with planted group structure."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from p13n_utils import metrics, prompts, recsys, recsys_llm
from p13n_utils.torch_als import SparsePattern, TorchALS


def planted(n_users=200, n_items=300, n_groups=4, per_user=40, seed=0):
    """Users in ``n_groups`` groups; a group's users mostly rate (highly) items of its own
    block of the catalog, popular items of the block more often; the rest is noise."""
    rng = np.random.default_rng(seed)
    block = n_items // n_groups
    weights = 1.0 / np.arange(1, block + 1)  # Zipf popularity inside a block
    rows = []
    for user in range(n_users):
        group = user % n_groups
        own = group * block + rng.choice(block, size=int(per_user * 0.85), replace=False,
                                         p=weights / weights.sum())
        noise = rng.choice(np.setdiff1d(np.arange(n_items), own), size=per_user - own.size, replace=False)
        for item in own:
            rows.append((user, int(item), float(rng.choice([4.0, 5.0]))))
        for item in noise:
            rows.append((user, int(item), float(rng.choice([1.0, 2.0, 3.0]))))
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    ratings["timestamp"] = rng.permutation(len(ratings)).astype("int64")
    ratings["rating"] = ratings["rating"].astype("float32")
    return ratings, np.arange(n_items + 20)  # 20 catalog items nobody rated


@pytest.fixture(scope="module")
def protocol():
    ratings, catalog = planted()
    return recsys.make_protocol(ratings, catalog)


def mean_ndcg(model, split, k=10):
    return recsys.evaluate(model.fit(split.train.matrix), split, k)[0][f"ndcg@{k}"].mean()


# --------------------------------------------------------------------------- data, protocol
def test_interactions_from_ratings():
    ratings = pd.DataFrame({"user_id": [10, 10, 20, 10], "item_id": [1, 2, 2, 1],
                            "rating": [3.0, 4.0, 5.0, 4.5]})
    inter = recsys.Interactions.from_ratings(ratings, item_ids=[1, 2, 3])
    assert inter.matrix.shape == (2, 3)
    assert inter.matrix[0, 0] == pytest.approx(4.5)  # a repeated pair keeps its last row
    assert inter.matrix[1, 1] == pytest.approx(5.0) and inter.matrix[1, 2] == 0
    assert inter.user_rows([20, 10]).tolist() == [1, 0]
    assert inter.item_cols([3]).tolist() == [2]
    with pytest.raises(KeyError, match="PopularityRecommender"):
        inter.user_rows([10, 99])
    with pytest.raises(KeyError, match="catalog"):
        inter.item_cols([7])


@pytest.mark.parametrize("bad, message", [
    (pd.DataFrame({"user_id": [1, 2], "item_id": [1, 1], "rating": [4.0, np.nan]}), "NaN"),
    (pd.DataFrame({"user_id": [1], "item_id": [1], "rating": [0.0]}), "positive"),
    (pd.DataFrame({"user_id": [], "item_id": [], "rating": []}), "empty"),
    (pd.DataFrame({"user_id": [1], "item_id": [1]}), "missing"),
])
def test_bad_ratings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        recsys.Interactions.from_ratings(bad)
    if message == "NaN":
        with pytest.raises(ValueError, match=message):
            recsys.make_protocol(pd.concat([planted()[0], bad.assign(timestamp=0)]))


def test_protocol_is_temporal_and_leak_free(protocol):
    validation, test = protocol
    assert validation.train.matrix.shape == test.train.matrix.shape
    assert (validation.train.item_ids == test.train.item_ids).all()
    # validation train ⊂ test train: tuning never sees test ratings
    def pairs(m):
        coo = m.tocoo()
        return set(zip(coo.row.tolist(), coo.col.tolist()))

    assert pairs(validation.train.matrix) <= pairs(test.train.matrix)
    for split in protocol:
        train = split.train.matrix
        for user, items in split.relevant.items():
            assert items and all(train[user, i] == 0 for i in items)
        # every held-out rating is later than the user's training ratings
        last_train = split.train_ratings.groupby("user_id")["timestamp"].max()
        first_out = split.heldout_ratings.groupby("user_id")["timestamp"].min()
        assert (first_out >= last_train.reindex(first_out.index)).all()
    # test positives have rating >= 4
    held = test.heldout_ratings
    pos_items = {(u, test.train.item_ids[i]) for r, items in test.relevant.items()
                 for u in [test.train.user_ids[r]] for i in items}
    ratings_of = held.set_index(["user_id", "item_id"])["rating"]
    assert all(ratings_of.loc[p] >= 4 for p in pos_items)
    assert test.train.n_items == 320  # the unrated catalog items stay recommendable


# --------------------------------------------------------------------------- ranking
def test_top_k_orders_excludes_and_pads():
    scores = np.array([[0.1, 0.9, 0.5, 0.3], [1.0, 2.0, 3.0, 4.0]])
    exclude = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 1, 1, 0]]))
    assert recsys.top_k(scores, 2).tolist() == [[1, 2], [3, 2]]
    assert recsys.top_k(scores, 3, exclude).tolist() == [[2, 3, 0], [3, -1, -1]]
    with pytest.raises(ValueError, match="larger than the catalog"):
        recsys.top_k(scores, 5)
    with pytest.raises(ValueError, match="positive integer"):
        recsys.top_k(scores, 0)


def _models(n_users):
    return [recsys.PopularityRecommender(),
            recsys.SegmentPopularityRecommender(np.arange(n_users) % 4),
            recsys.ImplicitALS(factors=8, iterations=3),
            recsys.ImplicitBPR(factors=8, iterations=3),
            TorchALS(factors=8, iterations=3, device="cpu"),
            recsys.ContentRecommender(np.eye(6)),
            recsys.HybridRecommender(recsys.PopularityRecommender(), recsys.ContentRecommender(np.eye(6)))]


@pytest.mark.parametrize("index", range(7))
def test_every_model_refuses_an_empty_matrix_and_unseen_users(index):
    model = _models(4)[index]
    with pytest.raises(ValueError, match="no interactions"):
        model.fit(sp.csr_matrix((4, 6), dtype=np.float32))
    X = sp.csr_matrix(np.array([[5, 0, 4, 0, 0, 0], [0, 3, 0, 0, 0, 1], [4, 4, 0, 0, 0, 0],
                                [0, 0, 0, 5, 2, 0]], dtype=np.float32))
    model.fit(X)
    recs = model.recommend([0, 3], k=6, exclude=X)
    assert recs.shape == (2, 6)
    # a user with 2 training items has only 4 left: the last two slots are empty
    assert (recs[0, 4:] == -1).all() and (recs[0, :4] >= 0).all()
    assert not set(recs[0, :4]) & {0, 2}
    with pytest.raises(IndexError, match="cold-start"):
        model.recommend([4], k=2)
    with pytest.raises(ValueError, match="larger than the catalog"):
        model.recommend([0], k=7)


def test_not_fitted_and_nan_matrix():
    with pytest.raises(RuntimeError, match="not fitted"):
        recsys.PopularityRecommender().recommend([0], k=1)
    X = sp.csr_matrix(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="NaN"):
        recsys.PopularityRecommender().fit(X)


def test_popularity_recommends_the_most_popular_unseen_items():
    X = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 1, 1]], dtype=np.float32))
    model = recsys.PopularityRecommender().fit(X)  # counts 3, 2, 2, 1
    assert model.recommend([0, 2], k=1, exclude=X).tolist() == [[2], [1]]


def test_segment_popularity_uses_the_segment_and_falls_back_to_global():
    # segment 0 loves item 0, segment 1 loves item 2; globally item 2 wins
    X = sp.csr_matrix(np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 1, 0]],
                               dtype=np.float32))
    segments = np.array([0, 0, 1, 1, 1, -1])
    model = recsys.SegmentPopularityRecommender(segments, smoothing=0).fit(X)
    assert model.recommend([0, 2, 5], k=1).tolist() == [[0], [2], [2]]
    # huge smoothing: every segment falls back to global popularity
    model = recsys.SegmentPopularityRecommender(segments, smoothing=1e9).fit(X)
    assert model.recommend([0], k=1).tolist() == [[2]]
    with pytest.raises(ValueError, match="entries"):
        recsys.SegmentPopularityRecommender(segments[:3]).fit(X)


# --------------------------------------------------------------------------- quality on planted data
def test_collaborative_filtering_beats_popularity(protocol):
    _, test = protocol
    popularity = mean_ndcg(recsys.PopularityRecommender(), test)
    als = mean_ndcg(recsys.ImplicitALS(factors=16, regularization=0.05, alpha=10, iterations=10), test)
    bpr = mean_ndcg(recsys.ImplicitBPR(factors=16, learning_rate=0.05, iterations=100), test)
    assert als > 1.5 * popularity
    assert bpr > popularity


def test_torch_als_matches_implicit(protocol):
    """The PyTorch reference lands within 10% of implicit's NDCG@10 on the same split, and
    with the same start it finds nearly the same factors."""
    _, test = protocol
    params = dict(factors=16, regularization=0.05, alpha=10.0, iterations=10, seed=3)
    ours = TorchALS(**params, device="cpu").fit(test.train.matrix)
    theirs = recsys.ImplicitALS(**params).fit(test.train.matrix)
    ndcg_ours = recsys.evaluate(ours, test)[0]["ndcg@10"].mean()
    ndcg_theirs = recsys.evaluate(theirs, test)[0]["ndcg@10"].mean()
    assert abs(ndcg_ours - ndcg_theirs) <= 0.10 * ndcg_theirs
    users = test.users[:20]
    corr = np.corrcoef(ours.score(users).ravel(), theirs.score(users).ravel())[0, 1]
    assert corr > 0.99


def test_torch_als_paths_agree(protocol):
    """Sparse-kernel path (CPU/CUDA) and gather path (other devices) compute the same thing,
    and the on-device recommend matches the generic numpy one."""
    _, test = protocol
    a = TorchALS(factors=8, iterations=3, device="cpu", use_sparse_kernels=True).fit(test.train.matrix)
    b = TorchALS(factors=8, iterations=3, device="cpu", use_sparse_kernels=False).fit(test.train.matrix)
    # float32 rounding differs between the two paths and CG amplifies it a little
    assert np.corrcoef(a.score(test.users).ravel(), b.score(test.users).ravel())[0, 1] > 0.999
    on_device = a.recommend(test.users, 10, exclude=test.train.matrix)
    generic = recsys.Recommender.recommend(a, test.users, 10, exclude=test.train.matrix)
    assert (on_device == generic).mean() > 0.99  # float ties may order differently


def test_sparse_pattern_products():
    import torch

    M = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32))
    P, Y = torch.rand(2, 4), torch.rand(3, 4)
    dense_dots = (P @ Y.T).numpy()
    values = torch.tensor([2.0, 3.0, 5.0])
    for sparse in (True, False):
        pattern = SparsePattern(M, torch.device("cpu"), use_sparse_kernels=sparse)
        np.testing.assert_allclose(pattern.sampled_dot(P, Y).numpy(),
                                   [dense_dots[0, 0], dense_dots[0, 2], dense_dots[1, 1]], rtol=1e-5)
        W = np.array([[2.0, 0, 3.0], [0, 5.0, 0]])
        np.testing.assert_allclose(pattern.matmul(values, Y).numpy(), W @ Y.numpy(), rtol=1e-5)


def test_content_and_hybrid():
    # items 0-2 point one way, items 3-5 another; user 0 liked item 0 (rating 5) only
    emb = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2], [0, 1], [0.1, 0.9], [0.2, 0.8]])
    X = sp.csr_matrix(np.array([[5, 0, 0, 0, 0, 0], [0, 0, 0, 5, 4, 5], [0, 0, 0, 5, 5, 0]],
                               dtype=np.float32))
    content = recsys.ContentRecommender(emb).fit(X)
    assert content.recommend([0], k=2, exclude=X).tolist() == [[1, 2]]
    # popularity prefers items 3/4, content prefers 1/2: the blend weight decides
    pure_cf = recsys.HybridRecommender(recsys.PopularityRecommender(), recsys.ContentRecommender(emb), 0.0).fit(X)
    pure_content = recsys.HybridRecommender(recsys.PopularityRecommender(), recsys.ContentRecommender(emb), 1.0).fit(X)
    assert pure_cf.recommend([0], k=1, exclude=X)[0, 0] in (3, 4)
    assert pure_content.recommend([0], k=1, exclude=X)[0, 0] == 1
    with pytest.raises(ValueError, match="embeddings"):
        recsys.ContentRecommender(np.eye(3)).fit(X)
    with pytest.raises(ValueError, match="weighting"):
        recsys.ContentRecommender(emb, weighting="median")
    # "centered": below-average ratings push away
    Xc = sp.csr_matrix(np.array([[5, 0, 0, 1, 0, 0]], dtype=np.float32))
    centered = recsys.ContentRecommender(emb, weighting="centered").fit(Xc)
    assert centered.recommend([0], k=1, exclude=Xc)[0, 0] == 1


def test_content_helps_cold_items(protocol):
    """Items nobody rated in train can only be found through their content."""
    _, test = protocol
    n_items = test.train.n_items
    # an embedding that knows each item's block (the planted structure)
    emb = np.eye(5)[np.minimum(np.arange(n_items) // 75, 4)]
    cold = recsys.cold_item_cols(test, max_train=0)
    assert set(range(300, 320)) <= set(cold.tolist())
    als = recsys.ImplicitALS(factors=16, alpha=10, iterations=10).fit(test.train.matrix)
    als_recs = als.recommend(test.users, 50, exclude=test.train.matrix)
    assert not set(als_recs.ravel().tolist()) & set(range(300, 320))  # CF never finds unrated items
    content = recsys.ContentRecommender(emb).fit(test.train.matrix)
    assert set(content.recommend(test.users, 50, exclude=test.train.matrix).ravel().tolist()) & set(cold.tolist())


# --------------------------------------------------------------------------- evaluation helpers
def test_evaluate_and_slices(protocol):
    _, test = protocol
    model = recsys.PopularityRecommender().fit(test.train.matrix)
    per_user, recs = recsys.evaluate(model, test, k=5)
    assert len(per_user) == len(test.relevant) and recs.shape == (len(test.relevant), 5)
    first = int(per_user["user"].iloc[0])
    assert per_user["ndcg@5"].iloc[0] == pytest.approx(metrics.ndcg_at_k(recs[0], test.relevant[first], 5))
    assert per_user["n_train"].iloc[0] == test.train.matrix[first].nnz
    again, _ = recsys.evaluate(None, test, k=5, recommendations=recs)
    pd.testing.assert_frame_equal(per_user, again)
    n_train = per_user.set_index("user")["n_train"]
    for threshold in (n_train.min() - 1, n_train.min(), n_train.max()):
        cold_users = recsys.cold_user_rows(test, max_train=threshold)
        assert cold_users.tolist() == sorted(n_train.index[n_train <= threshold])
    cold_items = recsys.cold_item_cols(test, max_train=3)
    table = recsys.cold_item_recall(recs, test.users, test, cold_items, k=5)
    assert set(table.columns) == {"user", "cold_recall@5"}
    with pytest.raises(ValueError, match="rankings"):
        recsys.evaluate(None, test, recommendations=recs[:3])


def test_evaluate_and_record_records_what_evaluate_measures(protocol):
    from p13n_utils import results

    _, test = protocol
    model = recsys.PopularityRecommender().fit(test.train.matrix)
    results.clear()
    table, recs, line = recsys.evaluate_and_record("movielens-topk", "global", "popularity", model, test, k=5,
                                                   n_resamples=100)
    expected, _ = recsys.evaluate(model, test, k=5)
    pd.testing.assert_frame_equal(table, expected)
    recorded = {r["metric"]: r for r in results.rows()}
    assert set(recorded) == {"ndcg@5", "recall@5", "map@5", "coverage"}
    assert recorded["ndcg@5"]["value"] == pytest.approx(table["ndcg@5"].mean())
    assert recorded["coverage"]["value"] == pytest.approx(metrics.catalog_coverage(recs, test.train.n_items))
    assert "ndcg@5" in line and "coverage" in line
    results.clear()
    recsys.evaluate_and_record("movielens-topk", "global", "popularity", model, test, k=5,
                               users=test.users[:3], n_resamples=100)
    assert "coverage" not in {r["metric"] for r in results.rows()}  # only over the whole population
    results.clear()


def test_tune_picks_the_best_on_validation(protocol):
    validation, _ = protocol
    segments = np.arange(validation.train.n_users) % 4  # the planted groups
    best, table = recsys.tune(lambda smoothing: recsys.SegmentPopularityRecommender(segments, smoothing),
                              {"smoothing": [0.0, 1e9]}, validation)
    assert best == {"smoothing": 0.0}
    assert table["ndcg@10"].is_monotonic_decreasing and len(table) == 2


# --------------------------------------------------------------------------- LLM helpers
def test_item_texts_and_liked_titles(protocol):
    movies = pd.DataFrame({"item_id": [1, 2], "title": ["Alien", "Heat"], "year": pd.array([1979, pd.NA], dtype="Int64"),
                           "genres": ["Horror|Sci-Fi", "(no genres listed)"]})
    tags = pd.DataFrame({"item_id": [1, 1, 1], "tag": ["Space", "space", "scary"]})
    texts = recsys.item_texts(movies, [1, 2, 3], tags)
    assert texts == ["Alien (1979). Genres: Horror, Sci-Fi. Tags: space, scary.", "Heat.", "Unknown item 3."]
    _, test = protocol
    catalog = pd.DataFrame({"item_id": test.train.item_ids, "title": [f"M{i}" for i in test.train.item_ids],
                            "genres": "Drama"})
    titles = recsys.liked_titles(test, catalog, user_row=0, n=3)
    mine = test.train_ratings[(test.train_ratings.user_id == test.train.user_ids[0]) & (test.train_ratings.rating >= 4)]
    newest = mine.sort_values("timestamp", ascending=False)["item_id"].head(3)
    assert titles == [f"M{i}" for i in newest]


class _PlainTokenizer:
    chat_template = None


def test_llm_rerank_orders_by_p_yes(monkeypatch):
    from p13n_utils import generation

    def fake_distribution(model, tokenizer, prompts, candidates, **kwargs):
        # "yes" is likely exactly when the candidate is a comedy
        p = np.array([0.9 if "Comedy" in prompt.split("enjoy")[1] else 0.2 for prompt in prompts])
        return np.stack([p, 1 - p], axis=1)

    monkeypatch.setattr(generation, "next_token_distribution", fake_distribution)
    candidates = np.array([[10, 11, 12], [20, 21, 22]])
    texts = [["A. Genres: Drama.", "B. Genres: Comedy.", "C. Genres: Drama."],
             ["D. Genres: Comedy.", "E. Genres: Drama.", "F. Genres: Comedy."]]
    reranked, p_yes = recsys_llm.llm_rerank(None, _PlainTokenizer(), [["X"], ["Y"]], candidates, texts,
                                              shared_prefix=False)
    assert reranked.tolist() == [[11, 10, 12], [20, 22, 21]]  # ties keep the base order
    assert p_yes.shape == (2, 3)
    with pytest.raises(ValueError, match="one entry per user"):
        recsys_llm.llm_rerank(None, _PlainTokenizer(), [["X"]], candidates, texts)
    asks = prompts.profile_prompts(_PlainTokenizer(), [["Alien (1979)", "Heat (1995)"]])
    assert "Alien (1979); Heat (1995)" in asks[0] and asks[0].endswith("Assistant:")


def test_shared_prefix_scoring_matches_full_prompts():
    """Encoding a user's profile once and reusing its cache gives the same probabilities as
    scoring every full prompt (real LM; a few seconds)."""
    from p13n_utils import models

    model, tokenizer = models.load_lm()
    liked = [["Alien (1979)", "Heat (1995)", "Toy Story (1995)"]]
    texts = [["Casino (1995). Genres: Crime, Drama.", "Babe (1995). Genres: Children, Drama.",
              "Se7en (1995). Genres: Mystery, Thriller. Tags: dark."]]
    candidates = np.array([[4, 5, 6]])
    shared, p_shared = recsys_llm.llm_rerank(model, tokenizer, liked, candidates, texts, batch_size=2)
    plain, p_plain = recsys_llm.llm_rerank(model, tokenizer, liked, candidates, texts, shared_prefix=False)
    np.testing.assert_allclose(p_shared, p_plain, atol=1e-4)
    assert (shared == plain).all()
    asks = prompts.rerank_prompts(tokenizer, liked[0], texts[0])
    prefix, rests = recsys_llm._split_at_shared_line(asks)
    assert prefix.endswith("Toy Story (1995).\n") and all(r.startswith("Would they enjoy") for r in rests)
    with pytest.raises(ValueError, match="single-token"):
        recsys_llm.next_token_shared_prefix(model, tokenizer, asks, ["Yes please", "No"])


def test_subsample_keeps_popular_items_and_a_seeded_user_sample():
    ratings, _ = planted()
    small = recsys.subsample(ratings, n_users=30, n_items=50, seed=1)
    counts = ratings.groupby("item_id").size().sort_values(ascending=False, kind="stable")
    assert set(small["item_id"]) <= set(counts.index[:50])
    assert small["user_id"].nunique() <= 30
    pd.testing.assert_frame_equal(small, recsys.subsample(ratings, n_users=30, n_items=50, seed=1))
    pd.testing.assert_frame_equal(recsys.subsample(ratings), ratings.reset_index(drop=True))


def test_visible_tags_drop_tags_on_heldout_movies():
    tags = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 11, 10], "tag": ["a", "b", "c"]})
    heldout = pd.DataFrame({"user_id": [1], "item_id": [10], "rating": [5.0]})
    kept = recsys.visible_tags(tags, heldout)
    assert kept["tag"].tolist() == ["b", "c"]  # user 2's tag on movie 10 reveals nothing about user 1
    assert recsys.visible_tags(tags.iloc[:0], heldout).empty


def test_tune_refuses_an_empty_grid(protocol):
    validation, _ = protocol
    with pytest.raises(ValueError, match="grid is empty"):
        recsys.tune(lambda smoothing: recsys.PopularityRecommender(), {"smoothing": []}, validation)


def test_make_protocol_global_time_cut_never_trains_on_later_ratings():
    ratings, _ = planted()
    ratings = ratings.assign(timestamp=np.random.default_rng(3).permutation(len(ratings)))
    validation, test = recsys.make_protocol(ratings, split="global_time")
    assert test.train_ratings["timestamp"].max() < test.heldout_ratings["timestamp"].min()
    assert validation.train_ratings["timestamp"].max() < validation.heldout_ratings["timestamp"].min()
    assert list(test.train.user_ids) == list(validation.train.user_ids)
    _, per_user = recsys.make_protocol(ratings)
    assert per_user.train_ratings["timestamp"].max() > per_user.heldout_ratings["timestamp"].min()
    with pytest.raises(ValueError, match="split"):
        recsys.make_protocol(ratings, split="random")


def test_random_ranking_is_seeded_per_user_and_every_recommender_beats_it(protocol):
    _, test = protocol
    rand = recsys.RandomRecommender(seed=3).fit(test.train.matrix)
    users = test.users[:5]
    np.testing.assert_array_equal(rand.score(users)[2], rand.score(users[2:3])[0])   # independent of the batch
    np.testing.assert_array_equal(rand.score(users), recsys.RandomRecommender(seed=3).fit(test.train.matrix).score(users))
    assert not np.array_equal(rand.score(users), recsys.RandomRecommender(seed=4).fit(test.train.matrix).score(users))
    floor = mean_ndcg(recsys.RandomRecommender(seed=0), test)
    for model in (recsys.PopularityRecommender(), recsys.ImplicitALS(factors=8, iterations=5, use_gpu=False),
                  recsys.ImplicitBPR(factors=8, iterations=20, use_gpu=False)):
        assert mean_ndcg(model, test) > floor


def test_bpr_on_one_thread_is_reproducible(protocol):
    _, test = protocol
    fits = [recsys.ImplicitBPR(factors=8, iterations=10, seed=1, use_gpu=False).fit(test.train.matrix) for _ in range(2)]
    np.testing.assert_array_equal(fits[0].user_factors_, fits[1].user_factors_)
    np.testing.assert_array_equal(fits[0].item_factors_, fits[1].item_factors_)


# --------------------------------------------------------------------------- ids, drops, stratified
def test_make_split_reports_what_it_drops():
    train = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 11, 10], "rating": [5.0, 4.0, 3.0]})
    heldout = pd.DataFrame({"user_id": [1, 2, 2, 1], "item_id": [99, 11, 10, 12], "rating": [5.0, 4.0, 5.0, 2.0]})
    with pytest.warns(UserWarning, match="1 outside the catalog, 1 already in train"):
        split = recsys.make_split(train, heldout, [1, 2], [10, 11, 12], min_rating=4.0)
    assert split.dropped == {"outside the catalog": 1, "already in train": 1}
    assert split.relevant == {1: {1}}  # user 2's item 11; item 12 is below min_rating (not a positive)
    quiet = recsys.make_split(train, heldout.iloc[[1]], [1, 2], [10, 11, 12])
    assert quiet.dropped == {"outside the catalog": 0, "already in train": 0}


def test_recommend_ids_takes_and_returns_ids():
    ratings = pd.DataFrame({"user_id": ["ann", "ann", "bob", "bob", "cy"],
                            "item_id": [10, 20, 20, 30, 30], "rating": 1.0})
    inter = recsys.Interactions.from_ratings(ratings, item_ids=[10, 20, 30, 40])
    model = recsys.PopularityRecommender().fit(inter)
    out = model.recommend_ids(["ann", "cy"], k=2)
    assert out.columns.tolist() == ["user_id", "rank", "item_id"]
    # ann has 10 and 20: left are 30 (2 users) and 40 (none); cy has 30: 20 (2 users), then 10 or 40
    assert out[out.user_id == "ann"]["item_id"].tolist() == [30, 40]
    assert out[out.user_id == "cy"]["item_id"].tolist()[0] == 20
    assert set(model.recommend_ids(["ann"], k=4, exclude_seen=False)["item_id"]) == {10, 20, 30, 40}
    with pytest.raises(RuntimeError, match="Interactions"):
        recsys.PopularityRecommender().fit(inter.matrix).recommend_ids(["ann"], 2)
    with pytest.raises(KeyError):
        model.recommend_ids(["zed"], 2)


def test_stratified_protocol_holds_out_a_quarter_of_each_item():
    ratings, catalog = planted()
    validation, test = recsys.make_protocol(ratings, catalog, test_frac=0.25, min_rating=0, split="stratified")
    held = test.heldout_ratings.groupby("item_id").size()
    total = ratings.groupby("item_id").size()
    np.testing.assert_array_equal(held.reindex(total.index, fill_value=0), total - np.round(0.75 * total))
    # every held-out rating is relevant (min_rating=0) and none is in train
    assert sum(len(v) for v in test.relevant.values()) == len(test.heldout_ratings)
    assert len(validation.train_ratings) + len(validation.heldout_ratings) == len(test.train_ratings)
