"""Checks of notebook 05's exercises (user-level RAG: BM25, dense retrieval, the k sweep).

1. (warm-up) BM25 by hand: the learner's score vector against the library's (``bm25s``).
2. (standard) dense retrieval by hand: cosine top-k with numpy against :func:`retrieval.retrieve`.
3. (challenge) extend the k sweep to ``k = 16, 32`` on the notebook's MovieLens users and say
   where the curve flattens; the check recomputes the curve with the package (LM outputs come
   from the on-disk memo when the learner scored the same prompts) and applies
   :func:`flat_k` to it.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import lesson, metrics, retrieval, tasks
from .. import user_context as uc

from ..prompts import movie_descriptions as _movie_descriptions

__all__ = ["check_1", "check_2", "check_3", "FLAT_TOL", "flat_k", "movie_query", "lm_predictor", "mae_curve"]

FLAT_TOL = 0.02
"""Exercise 3: the curve is flat from ``k`` on when no larger ``k`` of the grid lowers the MAE by
``FLAT_TOL`` (a fiftieth of a star) or more."""


# --------------------------------------------------------------------------- exercise 1
def check_1(scores, query: str, documents: Sequence[str], k1: float = 1.5, b: float = 0.75):
    """The learner's BM25 (Lucene variant) score of every document equals the ``bm25s`` library's."""
    name = "Exercise 1 (BM25 by hand)"
    if scores is None:
        return lesson.check(name, None, "")
    expected = retrieval.bm25_scores(query, list(documents), k1=k1, b=b, backend="bm25s")
    scores = np.asarray(scores, dtype=float).ravel()
    ok = scores.shape == expected.shape and np.allclose(scores, expected, atol=1e-4)
    return lesson.check(
        name, ok,
        f"return one score per document ({len(expected)} of them), in corpus order. Tokenize query and "
        "documents with retrieval.tokenize; idf(t) = log(1 + (N - df + 0.5) / (df + 0.5)) counts the documents "
        "that contain t; each query token (repeats included) adds idf * tf / (tf + k1 * (1 - b + b * |d| / avgdl)).",
        success=f"your scores match bm25s on all {len(expected)} documents")


# --------------------------------------------------------------------------- exercise 2
def check_2(top, query: str, documents: Sequence[str], embeddings: retrieval.EmbeddingCache):
    """The learner's cosine top-k (indices, best first) scores like the faiss-backed retriever's.

    Near-ties may be ordered differently by numpy and faiss, so the check compares the cosine
    similarities of the chosen documents, position by position, not the indices themselves."""
    name = "Exercise 2 (dense retrieval by hand)"
    if top is None:
        return lesson.check(name, None, "")
    top = [int(i) for i in np.asarray(top).ravel()]
    k = len(top)
    reference = retrieval.retrieve("dense", query, list(documents), k, embeddings=embeddings)
    cosine = embeddings.vectors(list(documents)) @ embeddings.vectors([query])[0]
    ok = (k > 0 and len(set(top)) == k and all(0 <= i < len(documents) for i in top)
          and np.allclose(cosine[top], cosine[reference], atol=1e-5))
    return lesson.check(
        name, ok,
        "the embeddings are unit vectors, so cosine similarity is a dot product: "
        "scores = embeddings.vectors(documents) @ embeddings.vectors([query])[0]; return the indices of "
        "the k largest scores, best first (np.argsort(-scores)[:k]).",
        success=f"your top {k} are the documents the dense retriever picks")


# --------------------------------------------------------------------------- exercise 3
def flat_k(curve: Mapping[int, float], tol: float = FLAT_TOL) -> int:
    """The smallest ``k`` of the grid from which no larger ``k`` lowers the loss by ``tol`` or more
    (where the curve flattens). ``curve`` maps k -> mean loss (lower is better)."""
    ks = sorted(int(k) for k in curve)
    if not ks:
        raise ValueError("the curve is empty")
    for i, k in enumerate(ks):
        later = [curve[j] for j in ks[i + 1:]]
        if not later or curve[k] - min(later) < tol:
            return k
    return ks[-1]  # pragma: no cover (the last k always qualifies)


def movie_query(rating, item_id) -> str:
    """The text a retriever matches for a target movie, as notebook 05 builds it:
    ``"Heat (1995; Action, Crime, Thriller)"`` (title, year and genres)."""
    return _movie_descriptions(rating.movies, [int(item_id)])[0]


def lm_predictor(model, tokenizer, movies: pd.DataFrame, batch_size: int = 16) -> Callable:
    """``predict(pairs, context_fn) -> expected ratings``: notebook 05's rating prompts through the
    LM (:func:`tasks.rating_prompts`, :func:`tasks.predict_ratings`, memoised on disk)."""
    def predict(pairs, context_fn):
        texts = tasks.rating_prompts(tokenizer, pairs, movies, context_fn)
        return tasks.predict_ratings(model, tokenizer, texts, batch_size=batch_size)[0]
    return predict


def mae_curve(predict: Callable, rating, items: pd.DataFrame, k_values: Sequence[int],
              retriever: str = "recency", seed: int = 0,
              embeddings: retrieval.EmbeddingCache | None = None) -> dict[int, float]:
    """Mean over users of the per-user MAE on the test ``items`` when the prompt lists the top ``k``
    of the user's rating history as ranked by ``retriever`` (``k = 0``: the global prompt).

    Parameters
    ----------
    predict : callable ``(pairs, context_fn) -> ndarray`` of predicted ratings (:func:`lm_predictor`).
    rating : :class:`p13n_utils.tasks.RatingEval`.
    items : DataFrame of test pairs (``user_id, item_id, rating``), e.g. notebook 05's ``items_ml["test"]``.
    k_values : the grid.
    retriever, seed, embeddings : as in :func:`p13n_utils.retrieval.retrieve`.
    """
    k_max = max(k_values)
    ranked = {}
    for row in items.itertuples(index=False):
        documents, lines, times = uc.ml_corpus(rating, int(row.user_id), before="test")
        query = movie_query(rating, row.item_id)
        idx = retrieval.retrieve(retriever, query, documents, k_max, times=times, embeddings=embeddings, seed=seed)
        ranked[(int(row.user_id), int(row.item_id))] = [lines[i] for i in idx]
    curve = {}
    for k in sorted(k_values):
        context = None if k == 0 else (lambda r, k=k: ranked[(int(r["user_id"]), int(r["item_id"]))][:k])
        errors = metrics.rating_errors(items, predict(items, context))
        curve[int(k)] = float(errors["mae"].mean())
    return curve


def check_3(curve, flat, predict: Callable, rating, items: pd.DataFrame, retriever: str = "recency",
            seed: int = 0, tol: float = FLAT_TOL, must_include: Sequence[int] = (0, 16, 32)):
    """The learner's ``{k: mean MAE}`` matches the package's recomputation on the same items
    (within 0.01 MAE), covers ``must_include``, and ``flat`` is where that curve flattens."""
    name = "Exercise 3 (where the k curve flattens)"
    if curve is None:
        return lesson.check(name, None, "")
    try:
        curve = {int(k): float(v) for k, v in dict(curve).items()}
    except (TypeError, ValueError):
        return lesson.check(name, False, "curve_3 must be a dict {k: mean MAE over users}, e.g. {0: 1.6, 1: 1.4, ...}")
    missing = sorted(set(must_include) - set(curve))
    if missing:
        return lesson.check(name, False, f"extend the grid: the curve has no k = {missing}")
    reference = mae_curve(predict, rating, items, sorted(curve), retriever=retriever, seed=seed)
    off = {k: round(curve[k] - reference[k], 4) for k in reference if abs(curve[k] - reference[k]) > 0.01}
    if off:
        return lesson.check(
            name, False,
            f"the MAE at k = {sorted(off)} differs from the package's recomputation (your value minus it: {off}). "
            f"Rank each user's history before the test rating with retrieval.retrieve({retriever!r}, ...), keep the "
            "top k lines of uc.ml_corpus, score with tasks.rating_prompts + tasks.predict_ratings, and average "
            "metrics.rating_errors(items, pred)['mae'] over users; k = 0 is the global prompt (context None).")
    expected = flat_k(reference, tol)
    return lesson.check(
        name, flat is not None and int(flat) == expected,
        f"your curve is right; now find the smallest k from which no larger k of the grid lowers the MAE by "
        f"{tol} or more (nb05.flat_k states the rule).",
        success=f"the curve matches the package's and flattens at k = {expected}")
