"""Checks of notebook 05's exercises, on tiny corpora, a bag-of-words embedder and a fake
rating predictor (no LM): a right answer passes, a wrong one raises with a hint, None is
"not attempted yet"."""

import math
from collections import Counter

import numpy as np
import pytest

from p13n_utils import lesson, retrieval, synthetic, tasks
from p13n_utils.exercises import nb05

DOCS = ["i love my dog and my dog loves me", "cats are great pets", "my dog barks at cats",
        "pizza and music tonight", "a long walk with the dog in the park with music"]
QUERY = "does your dog like cats?"


def bm25_by_hand(query, docs, k1=1.5, b=0.75):
    toks = [retrieval.tokenize(d) for d in docs]
    avgdl = np.mean([len(t) for t in toks])
    df = Counter(t for doc in toks for t in set(doc))
    out = np.zeros(len(docs))
    for t in retrieval.tokenize(query):
        idf = math.log(1 + (len(docs) - df[t] + 0.5) / (df[t] + 0.5))
        for j, doc in enumerate(toks):
            tf = doc.count(t)
            out[j] += idf * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl))
    return out


def test_check_1_bm25(capsys):
    assert nb05.check_1(bm25_by_hand(QUERY, DOCS), QUERY, DOCS) is True
    assert "✓" in capsys.readouterr().out
    with pytest.raises(lesson.ExerciseFailed, match="idf"):
        nb05.check_1(bm25_by_hand(QUERY, DOCS, b=0.0), QUERY, DOCS)   # no length normalisation
    with pytest.raises(lesson.ExerciseFailed, match="one score per document"):
        nb05.check_1(bm25_by_hand(QUERY, DOCS)[:3], QUERY, DOCS)
    assert nb05.check_1(None, QUERY, DOCS) is None
    assert "not attempted" in capsys.readouterr().out


VOCAB = sorted({t for text in DOCS + [QUERY] for t in retrieval.tokenize(text, stopwords=None)})


def bag_of_words(texts):
    return np.array([[Counter(retrieval.tokenize(t, stopwords=None))[w] for w in VOCAB] for t in texts], float) + 0.01


def test_check_2_dense(capsys):
    emb = retrieval.EmbeddingCache(bag_of_words)
    doc_vectors = bag_of_words(DOCS)
    cosine = (doc_vectors @ bag_of_words([QUERY])[0]) / (np.linalg.norm(doc_vectors, axis=1)
                                                         * np.linalg.norm(bag_of_words([QUERY])[0]))
    right = np.argsort(-cosine)[:3]
    assert nb05.check_2(right, QUERY, DOCS, emb) is True
    with pytest.raises(lesson.ExerciseFailed, match="dot product"):
        nb05.check_2(right[::-1], QUERY, DOCS, emb)                    # worst of the three first
    with pytest.raises(lesson.ExerciseFailed):
        nb05.check_2(np.argsort(cosine)[:3], QUERY, DOCS, emb)          # the three least similar
    assert nb05.check_2(None, QUERY, DOCS, emb) is None
    assert "not attempted" in capsys.readouterr().out


def test_flat_k_is_where_no_larger_k_helps_by_tol():
    curve = {0: 1.0, 1: 0.5, 2: 0.3, 4: 0.29, 8: 0.285}
    assert nb05.flat_k(curve, tol=0.02) == 2
    assert nb05.flat_k(curve, tol=0.001) == 8
    assert nb05.flat_k({0: 1.0, 1: 1.2, 2: 0.5}, tol=0.02) == 2   # a bump does not end the descent
    with pytest.raises(ValueError):
        nb05.flat_k({})


def fake_predict(pairs, context_fn):
    """Closer to the true rating the more history lines the prompt shows (an LM stand-in)."""
    n = [0 if context_fn is None else len(context_fn(row)) for _, row in pairs.iterrows()]
    return pairs["rating"].to_numpy(float) + 2.0 / (1 + np.asarray(n))


@pytest.fixture(scope="module")
def rating_items():
    ml = synthetic.movielens(n_users=30, n_items=60, seed=3)
    ev = tasks.movielens_rating_eval_set(ml, n_users=8, n_per_user=1, seed=0)
    return ev, ev.test


def test_check_3_k_curve(rating_items, capsys):
    ev, items = rating_items
    n_hist = np.array([len(ev.history(int(u), before="test")) for u in items["user_id"]])
    ks = (0, 1, 2, 4, 8, 16, 32)
    right = {k: float(np.mean(2.0 / (1 + np.minimum(k, n_hist)))) for k in ks}  # one item per user
    assert len(set(right.values())) > 3                                     # the curve moves
    flat = nb05.flat_k(right)
    assert nb05.check_3(right, flat, fake_predict, ev, items) is True
    assert "flattens" in capsys.readouterr().out
    with pytest.raises(lesson.ExerciseFailed, match="smallest k"):
        nb05.check_3(right, 32 if flat != 32 else 0, fake_predict, ev, items)
    wrong = {**right, 16: right[16] + 0.1}
    with pytest.raises(lesson.ExerciseFailed, match=r"k = \[16\]"):
        nb05.check_3(wrong, flat, fake_predict, ev, items)
    short = {k: v for k, v in right.items() if k <= 8}
    with pytest.raises(lesson.ExerciseFailed, match="extend the grid"):
        nb05.check_3(short, flat, fake_predict, ev, items)
    with pytest.raises(lesson.ExerciseFailed, match="dict"):
        nb05.check_3([1.0, 2.0], flat, fake_predict, ev, items)
    assert nb05.check_3(None, None, fake_predict, ev, items) is None
    assert "not attempted" in capsys.readouterr().out


def test_movie_query_is_title_year_and_genres(rating_items):
    ev, items = rating_items
    item = int(items["item_id"].iloc[0])
    movie = ev.movies.set_index("item_id").loc[item]
    query = nb05.movie_query(ev, item)
    assert f"Movie {item}" in query                            # synthetic titles are "Movie <id>, The"
    assert all(g in query for g in str(movie["genres"]).split("|"))
