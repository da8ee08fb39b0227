"""Retrieval: our reference BM25 against bm25s (and rank-bm25), the retrieve() entry point and
its documented edge cases, dense retrieval through faiss, per-user selection."""

import numpy as np
import pandas as pd
import pytest

from p13n_utils import retrieval
from p13n_utils.retrieval import BM25, EmbeddingCache, retrieve, tokenize

CORPUS = [
    "i love my two dogs and walking them in the park",
    "my favorite food is pizza , i eat pizza every friday",
    "i work as a nurse in a big hospital",
    "dogs are better than cats , i think",
    "i am a vegan and i love cooking",
    "the hospital shifts are long but i love helping people",
    "a",  # a one-character document: empty after tokenization
]


# --------------------------------------------------------------------------- tokenization
def test_tokenize_drops_one_character_tokens_and_stopwords_like_bm25s():
    import bm25s

    assert tokenize("I love my dog, a LOT!") == ["love", "my", "dog", "lot"]
    assert tokenize("it is the dog", stopwords=None) == ["it", "is", "the", "dog"]
    for text in CORPUS + ["Isn't it 2 o'clock? I'd say x-ray", "ÉTÉ à Paris"]:
        expected = bm25s.tokenize([text], stopwords="en", return_ids=False, show_progress=False)[0]
        assert tokenize(text) == expected


def test_stopword_list_is_bm25s_english_list():
    import bm25s.stopwords

    assert set(retrieval.STOPWORDS_EN) == set(bm25s.stopwords.STOPWORDS_EN)


def test_tokenize_rejects_non_strings():
    with pytest.raises(TypeError, match="string"):
        tokenize(["not", "a", "string"])


# --------------------------------------------------------------------------- BM25
@pytest.mark.parametrize("k1,b", [(1.5, 0.75), (1.2, 0.5), (0.9, 1.0), (2.0, 0.0)])
@pytest.mark.parametrize("query", ["dogs park", "i love pizza pizza", "hospital nurse shifts", "zebra dogs"])
def test_reference_bm25_equals_bm25s(query, k1, b):
    ours = retrieval.bm25_scores(query, CORPUS, k1=k1, b=b, backend="reference")
    lib = retrieval.bm25_scores(query, CORPUS, k1=k1, b=b, backend="bm25s")
    assert ours.shape == (len(CORPUS),)
    np.testing.assert_allclose(ours, lib, rtol=1e-5, atol=1e-6)
    assert ours.max() > 0  # every query shares at least one token with the corpus


def test_reference_bm25_matches_the_formula_by_hand():
    docs = [["dog", "park"], ["cat"], ["dog", "dog", "cat", "fish"]]
    scores = BM25(k1=1.5, b=0.75).fit(docs).scores(["dog"])
    avgdl, n, df = 7 / 3, 3, 2
    idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
    expected = [idf * tf / (tf + 1.5 * (1 - 0.75 + 0.75 * dl / avgdl)) for tf, dl in ((1, 2), (0, 1), (2, 4))]
    np.testing.assert_allclose(scores, expected)


def test_variant_matters_atire_robertson_is_rank_bm25_not_lucene():
    """The documented recipe: bm25s(method="atire", idf_method="robertson") equals rank_bm25's
    BM25Okapi with epsilon=0, and it is a different scoring from the lucene variant we use."""
    import bm25s
    from rank_bm25 import BM25Okapi

    docs = [tokenize(t) for t in CORPUS[:6]]
    query = tokenize("i love dogs and pizza")
    atire = bm25s.BM25(method="atire", idf_method="robertson")
    atire.index(docs, show_progress=False)
    okapi = BM25Okapi(docs, epsilon=0.0)
    np.testing.assert_allclose(atire.get_scores(query), okapi.get_scores(query), rtol=1e-5, atol=1e-6)
    lucene = BM25().fit(docs).scores(query)
    assert not np.allclose(lucene, okapi.get_scores(query))


def test_bm25_query_without_known_tokens_scores_zero():
    for backend in ("bm25s", "reference"):
        assert not retrieval.bm25_scores("the a i", CORPUS, backend=backend).any()
    with pytest.raises(ValueError, match="backend"):
        retrieval.bm25_scores("dogs", CORPUS, backend="lucene")


def test_bm25_needs_fit_and_valid_parameters():
    with pytest.raises(RuntimeError, match="fit"):
        BM25().scores(["dog"])
    with pytest.raises(ValueError, match="k1"):
        BM25(k1=-1)


# --------------------------------------------------------------------------- retrieve()
def test_retrieve_bm25_ranks_the_matching_documents_first():
    # both mention "dogs"; the shorter document wins (length normalisation); "walk" != "walking"
    assert retrieve("bm25", "where do you walk your dogs ?", CORPUS, 2) == [3, 0]
    assert retrieve("bm25", "hospital", CORPUS, 2, bm25_backend="reference") == [2, 5]


def test_unknown_retriever_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        retrieve("tfidf", "dogs", CORPUS, 2)
    for name in retrieval.RETRIEVERS:
        assert name in str(info.value)


@pytest.mark.parametrize("query", ["", "   ", "\n"])
@pytest.mark.parametrize("name", retrieval.RETRIEVERS)
def test_empty_query_is_an_error_for_every_retriever(name, query):
    with pytest.raises(ValueError, match="empty query"):
        retrieve(name, query, CORPUS, 2, times=range(len(CORPUS)), embeddings=EmbeddingCache(_bag_of_words))


@pytest.mark.parametrize("name", retrieval.RETRIEVERS)
def test_k_larger_than_the_history_returns_all_of_it(name):
    got = retrieve(name, "dogs", CORPUS, 50, times=range(len(CORPUS)), embeddings=EmbeddingCache(_bag_of_words))
    assert sorted(got) == list(range(len(CORPUS)))
    assert retrieve(name, "dogs", CORPUS, 0, times=range(len(CORPUS))) == []
    assert retrieve(name, "dogs", [], 3, times=[]) == []  # cold start: nothing to retrieve


@pytest.mark.parametrize("k", [-1, 1.5, True, "2"])
def test_bad_k_is_an_error(k):
    with pytest.raises(ValueError, match="non-negative integer"):
        retrieve("bm25", "dogs", CORPUS, k)


def test_recency_returns_the_latest_items_and_needs_times():
    times = [5, 1, 9, 9, 3, 0, 2]
    assert retrieve("recency", "anything", CORPUS, 3, times=times) == [3, 2, 0]  # tie 9/9: later first
    with pytest.raises(ValueError, match="times"):
        retrieve("recency", "anything", CORPUS, 3)
    with pytest.raises(ValueError, match="times"):
        retrieve("recency", "anything", CORPUS, 3, times=[1, 2])


def test_random_is_seeded_and_depends_on_query_and_seed():
    a = retrieve("random", "hello", CORPUS, 4, seed=0)
    assert a == retrieve("random", "hello", CORPUS, 4, seed=0)
    assert len(set(a)) == 4 and all(0 <= i < len(CORPUS) for i in a)
    draws = {tuple(retrieve("random", "hello", CORPUS, 4, seed=s)) for s in range(10)}
    assert len(draws) > 1
    queries = {tuple(retrieve("random", q, CORPUS, 4, seed=0)) for q in ("a dog", "a cat", "pizza", "work")}
    assert len(queries) > 1
    # the top-k of a larger k starts with the smaller k's items (the k sweep relies on it)
    assert retrieve("random", "hello", CORPUS, 6, seed=0)[:4] == a


# --------------------------------------------------------------------------- dense
VOCAB = sorted({t for text in CORPUS + ["dogs park walk cats hospital nurse"] for t in tokenize(text, None)})


def _bag_of_words(texts):
    """A fake embedder: bag-of-words counts over a fixed vocabulary (deterministic, no model)."""
    out = np.zeros((len(texts), len(VOCAB) + 1))
    for i, text in enumerate(texts):
        for token in tokenize(text, None):
            out[i, VOCAB.index(token) if token in VOCAB else -1] += 1
        out[i, -1] += 1e-3  # never an all-zero vector
    return out


def test_dense_scores_are_cosines_in_corpus_order():
    cache = EmbeddingCache(_bag_of_words)
    scores = retrieval.dense_scores("dogs park", CORPUS, cache)
    vectors = _bag_of_words(CORPUS + ["dogs park"])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(scores, vectors[:-1] @ vectors[-1], atol=1e-5)
    top = retrieve("dense", "dogs park", CORPUS, 2, embeddings=cache)
    assert top == list(np.argsort(-scores, kind="stable")[:2])
    with pytest.raises(ValueError, match="embeddings"):
        retrieve("dense", "dogs", CORPUS, 2)


def test_embedding_cache_encodes_each_text_once():
    calls = []

    def counting(texts):
        calls.append(list(texts))
        return _bag_of_words(texts)

    cache = EmbeddingCache(counting)
    cache.add(CORPUS)
    cache.vectors(CORPUS[:3] + ["dogs park"])
    assert sum(len(c) for c in calls) == len(set(CORPUS)) + 1
    assert len(cache) == len(set(CORPUS)) + 1


def test_top_k_breaks_ties_by_corpus_order():
    assert retrieval.top_k([1.0, 3.0, 3.0, 0.0], 3) == [1, 2, 0]
    assert retrieval.top_k([0.0, 0.0], 5) == [0, 1]


def test_dense_retrieval_with_minilm_finds_the_paraphrase():
    from p13n_utils import models

    cache = EmbeddingCache(models.load_embedder(device="cpu"))
    assert retrieve("dense", "do you have any pets ?", CORPUS, 1, embeddings=cache) in ([0], [3])
    assert retrieve("dense", "what do you do for a living ?", CORPUS[:6], 1, embeddings=cache) == [2]


# --------------------------------------------------------------------------- selection
def test_select_per_user_takes_the_lowest_loss_and_breaks_ties_left():
    losses = pd.DataFrame({"bm25": [1.0, 2.0, 3.0], "dense": [0.5, 2.0, 4.0], "recency": [2.0, 3.0, 1.0]},
                          index=[10, 11, 12])
    choice = retrieval.select_per_user(losses)
    assert choice.to_dict() == {10: "dense", 11: "bm25", 12: "recency"}
    with pytest.raises(ValueError, match="NaN"):
        retrieval.select_per_user(losses.assign(bm25=[np.nan, 1, 1]))
    with pytest.raises(ValueError, match="at least one"):
        retrieval.select_per_user(pd.DataFrame())
