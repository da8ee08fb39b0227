"""Retrieval over one user's own history: the "R" of personalized RAG.

The survey (Zhang et al. 2025, its section on personalized retrieval-augmented generation)
builds a user-level prompt by *retrieving* the few items of the user's history that matter for
the current input: LaMP (Salemi et al. 2024) retrieves the user's past documents with BM25 or
a dense retriever and shows that the choice of retriever and of the number of items ``k``
matters. This module has
the four retrievers notebook 05 compares, behind one entry point, :func:`retrieve`:

``bm25``
    Sparse lexical match (BM25, Lucene variant), through the ``bm25s`` library; :class:`BM25` is
    a minimal reference implementation of the same formula, tested equal to ``bm25s``.
``dense``
    Cosine similarity of sentence embeddings (all-MiniLM-L6-v2 by default) with an exact
    ``faiss`` inner-product index (:func:`dense_scores`).
``recency``
    The ``k`` most recent items (no query needed, but one is still required, see below).
``random``
    ``k`` items drawn at random, seeded by ``seed`` and the query (a control: does *which*
    items we retrieve matter, or only that the prompt mentions the user's data?).

How to make our BM25 and ``bm25s`` agree
----------------------------------------
Both must see the **same tokens** and use the **same scoring variant**:

* tokenization: ``bm25s.tokenize`` lower-cases, keeps tokens matching ``(?u)\\b\\w\\w+\\b``
  (so it silently **drops one-character tokens** such as "i" or "a") and removes its English
  stop words by default. :func:`tokenize` does exactly that (:data:`TOKEN_PATTERN`,
  :data:`STOPWORDS_EN`, a copy of ``bm25s.stopwords.STOPWORDS_EN``);
* variant: ``bm25s.BM25(method="lucene")`` (its default) scores
  ``idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl))`` with
  ``idf(t) = log(1 + (N - df + 0.5) / (df + 0.5))`` — :class:`BM25`. Other variants differ in
  the idf (``method="atire", idf_method="robertson"`` reproduces ``rank_bm25.BM25Okapi`` with
  ``epsilon=0``) and would not match;
* the same ``k1`` and ``b``; a repeated query token counts once per repetition; a query token
  absent from the corpus adds nothing.

Conventions of :func:`retrieve`
-------------------------------
* The corpus is a list of strings; the result is a list of **indices** into it, best first.
  Ties keep corpus order (the earlier item first), so results are deterministic.
* ``k`` larger than the corpus returns **every** item (ranked): a user with a short history
  simply gets all of it. ``k=0`` returns ``[]``. A negative ``k`` raises.
* An **empty corpus** returns ``[]`` (a cold-start user): the caller falls back to a persona
  or to the global prompt (:func:`p13n_utils.tasks.context_with_fallback`).
* An **empty query** (blank string) raises a ValueError for every retriever: it is almost
  always a bug upstream (a missing partner message or movie title).
* An **unknown retriever** name raises a ValueError that lists :data:`RETRIEVERS`.

Per-user retriever choice (the survey's "retriever selection"): :func:`select_per_user` picks,
for each user, the option with the lowest validation loss.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from typing import Sequence

import numpy as np
import pandas as pd

from .cache import embed

__all__ = ["RETRIEVERS", "TOKEN_PATTERN", "STOPWORDS_EN", "tokenize", "BM25", "bm25_scores",
           "EmbeddingCache", "dense_scores", "top_k", "retrieve", "select_per_user"]

RETRIEVERS = ("bm25", "dense", "recency", "random")
"""The retriever names :func:`retrieve` accepts."""

TOKEN_PATTERN = r"(?u)\b\w\w+\b"
"""bm25s's default token pattern: words of at least two characters."""

STOPWORDS_EN = (
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
)
"""The English stop words of ``bm25s`` (``bm25s.stopwords.STOPWORDS_EN``), copied so that the
reference tokenizer does not depend on the library."""

_TOKEN_RE = re.compile(TOKEN_PATTERN)


# --------------------------------------------------------------------------- tokens
def tokenize(text: str, stopwords: Sequence[str] | None = STOPWORDS_EN) -> list[str]:
    """Lower-case ``text`` and split it the way ``bm25s.tokenize`` does.

    Parameters
    ----------
    text : str
    stopwords : sequence of str or None, default :data:`STOPWORDS_EN`
        Tokens to drop; None keeps every token.

    Returns
    -------
    list of str
        Tokens of two or more word characters, in order (``"I love my dog!"`` ->
        ``["love", "my", "dog"]``: "i" is one character long and is dropped).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    stop = set(stopwords or ())
    return [token for token in _TOKEN_RE.findall(text.lower()) if token not in stop]


class BM25:
    """Minimal reference BM25 (the Lucene variant, ``bm25s``'s default).

    ``score(q, d) = sum over query tokens t of idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))``
    with ``idf(t) = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5))``, ``N`` documents, ``df(t)`` the
    number of documents that contain ``t``, ``|d|`` the document's length in tokens and
    ``avgdl`` the mean length.

    Parameters
    ----------
    k1 : float, default 1.5
        Term-frequency saturation (0: a term counts once however often it appears).
    b : float, default 0.75
        Length normalisation (0: none, 1: full).

    Examples
    --------
    >>> docs = [tokenize(t) for t in ["i love my dog", "cats are great", "my dog barks"]]
    >>> BM25().fit(docs).scores(tokenize("dog"))   # documents 0 and 2 match
    """

    def __init__(self, k1: float = 1.5, b: float = 0.75):
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"need k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1, self.b = float(k1), float(b)

    def fit(self, corpus_tokens: Sequence[Sequence[str]]) -> "BM25":
        """Count term frequencies and document frequencies of a tokenized corpus."""
        self.term_freqs = [Counter(doc) for doc in corpus_tokens]
        self.lengths = np.array([len(doc) for doc in corpus_tokens], dtype=float)
        self.n_docs = len(self.term_freqs)
        self.avgdl = float(self.lengths.mean()) if self.n_docs and self.lengths.sum() > 0 else 1.0
        df = Counter(token for tf in self.term_freqs for token in tf)
        self.idf = {t: math.log(1 + (self.n_docs - n + 0.5) / (n + 0.5)) for t, n in df.items()}
        return self

    def scores(self, query_tokens: Sequence[str]) -> np.ndarray:
        """The BM25 score of every document for ``query_tokens`` (float64, one per document)."""
        if not hasattr(self, "term_freqs"):
            raise RuntimeError("call fit(corpus_tokens) before scores(query_tokens)")
        out = np.zeros(self.n_docs)
        norm = self.k1 * (1 - self.b + self.b * self.lengths / self.avgdl)
        for token in query_tokens:
            if token not in self.idf:
                continue
            tf = np.array([freqs.get(token, 0) for freqs in self.term_freqs], dtype=float)
            # an empty document has tf = 0 and, with b = 1, norm = 0: its score stays 0
            out += self.idf[token] * np.divide(tf, tf + norm, out=np.zeros_like(tf), where=tf > 0)
        return out


def bm25_scores(query: str, corpus: Sequence[str], k1: float = 1.5, b: float = 0.75,
                stopwords: Sequence[str] | None = STOPWORDS_EN, backend: str = "bm25s") -> np.ndarray:
    """BM25 scores of each document of ``corpus`` for ``query``.

    Parameters
    ----------
    query : str
    corpus : list of str
    k1, b : float
        See :class:`BM25`.
    stopwords : sequence of str or None
        See :func:`tokenize`.
    backend : {"bm25s", "reference"}
        ``bm25s`` (the library, ``method="lucene"``) or our :class:`BM25`; they agree (tested).

    Returns
    -------
    ndarray of float64, one score per document (all zero if no query token is in the corpus).
    """
    docs = [tokenize(text, stopwords) for text in corpus]
    query_tokens = tokenize(query, stopwords)
    if backend == "reference":
        return BM25(k1, b).fit(docs).scores(query_tokens)
    if backend != "bm25s":
        raise ValueError(f"unknown BM25 backend {backend!r}; use 'bm25s' or 'reference'")
    if not query_tokens or not any(docs):
        return np.zeros(len(corpus))  # bm25s cannot index an all-empty corpus or score no tokens
    import logging

    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on import: one line per index
    index = bm25s.BM25(k1=k1, b=b, method="lucene")
    index.index(docs, show_progress=False)
    return index.get_scores(query_tokens).astype(np.float64)


# --------------------------------------------------------------------------- dense
class EmbeddingCache:
    """Unit-norm sentence embeddings, each distinct text encoded once (:func:`p13n_utils.cache.embed`).

    Parameters
    ----------
    embedder : sentence-transformers model or callable, optional
        :func:`p13n_utils.models.load_embedder` (anything with ``encode(texts,
        normalize_embeddings=True)``), or a function ``texts -> (n, d) array`` (tests). None:
        the default embedder, whose vectors are also kept on disk by :func:`p13n_utils.cache.embed`.
    batch_size : int, default 64

    Call :meth:`add` once with every text a notebook will need (one batched pass), then
    :meth:`vectors` is a dictionary lookup.
    """

    def __init__(self, embedder=None, batch_size: int = 64):
        self.embedder, self.batch_size = embedder, batch_size
        self._vectors: dict[str, np.ndarray] = {}

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = embed(texts, self.embedder, self.batch_size)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def add(self, texts: Sequence[str]) -> None:
        """Encode the texts not seen yet (one batched call)."""
        new = sorted({str(t) for t in texts} - set(self._vectors))
        if new:
            self._vectors.update(zip(new, self._encode(new)))

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), d)`` float32 unit vectors, encoding any new text first."""
        texts = [str(t) for t in texts]
        self.add(texts)
        return np.stack([self._vectors[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)

    def __len__(self) -> int:
        return len(self._vectors)


def dense_scores(query: str, corpus: Sequence[str], embeddings: EmbeddingCache) -> np.ndarray:
    """Cosine similarity of ``query`` to each document, through an exact faiss index.

    ``faiss.IndexFlatIP`` on unit vectors is exact cosine search; we ask it for every document
    and put the scores back in corpus order, so ranking (and tie-breaking) is done once, in
    :func:`top_k`, as for the other retrievers.
    """
    import faiss

    if not corpus:
        return np.zeros(0)
    docs = embeddings.vectors(corpus)
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(docs)
    sims, ids = index.search(embeddings.vectors([query]), len(corpus))
    out = np.empty(len(corpus))
    out[ids[0]] = sims[0]
    return out


# --------------------------------------------------------------------------- ranking
def top_k(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the ``k`` highest scores, best first; ties keep the earlier index first;
    ``k`` larger than ``len(scores)`` gives all of them."""
    scores = np.asarray(scores, dtype=float)
    order = np.lexsort((np.arange(scores.size), -scores))  # last key sorts first
    return order[:k].tolist()


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r} (k=0 retrieves nothing)")
    return int(k)


def _random_order(query: str, n: int, seed: int) -> np.ndarray:
    """A permutation of ``n`` seeded by ``seed`` and the query text (stable across runs:
    crc32, not Python's salted ``hash``)."""
    rng = np.random.default_rng([int(seed), zlib.crc32(query.encode("utf-8"))])
    return rng.permutation(n)


def retrieve(name: str, query: str, corpus: Sequence[str], k: int, *, times: Sequence[float] | None = None,
             embeddings: EmbeddingCache | None = None, seed: int = 0,
             stopwords: Sequence[str] | None = STOPWORDS_EN, bm25_backend: str = "bm25s") -> list[int]:
    """Retrieve ``k`` items of a user's ``corpus`` for ``query``; the single entry point of 05.

    Parameters
    ----------
    name : {"bm25", "dense", "recency", "random"}
        The retriever (:data:`RETRIEVERS`).
    query : str
        What the user must answer now (the partner's message, the target movie). Must not be
        blank, even for ``recency`` and ``random``, which do not use its content (``random``
        uses it only as part of its seed).
    corpus : list of str
        The user's own items (facts, earlier turns, rated movies).
    k : int >= 0
        Items to return; more than the corpus holds returns all of them.
    times : sequence of float, optional
        One timestamp per item (larger = more recent); required by ``recency``, where ties
        go to the later item in the corpus.
    embeddings : EmbeddingCache, optional
        Required by ``dense``.
    seed : int, default 0
        Seed of ``random``.
    stopwords, bm25_backend
        Options of ``bm25`` (:func:`bm25_scores`).

    Returns
    -------
    list of int
        Indices into ``corpus``, best first (most recent first for ``recency``).

    Raises
    ------
    ValueError
        Unknown retriever (the message lists the valid ones), negative ``k``, blank query,
        ``recency`` without matching ``times``, ``dense`` without ``embeddings``.
    """
    if name not in RETRIEVERS:
        raise ValueError(f"unknown retriever {name!r}; valid retrievers: {', '.join(RETRIEVERS)}")
    k = _check_k(k)
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"empty query {query!r}: there is nothing to retrieve for; pass the text the "
                         "user is answering (the partner's message, the target movie)")
    corpus = [str(text) for text in corpus]
    if k == 0 or not corpus:
        return []
    if name == "bm25":
        return top_k(bm25_scores(query, corpus, stopwords=stopwords, backend=bm25_backend), k)
    if name == "dense":
        if embeddings is None:
            raise ValueError("the dense retriever needs embeddings=EmbeddingCache(models.load_embedder())")
        return top_k(dense_scores(query, corpus, embeddings), k)
    if name == "recency":
        if times is None or len(times) != len(corpus):
            raise ValueError("the recency retriever needs times= with one timestamp per corpus item "
                             f"(got {None if times is None else len(times)} for {len(corpus)} items)")
        # most recent first; among equal times the later corpus position first
        order = np.lexsort((-np.arange(len(corpus)), -np.asarray(times, dtype=float)))
        return order[:k].tolist()
    return _random_order(query, len(corpus), seed)[:k].tolist()


# --------------------------------------------------------------------------- selection
def select_per_user(val_losses: pd.DataFrame) -> pd.Series:
    """For each user, the option (column) with the lowest validation loss.

    Retriever selection (and notebook 04's prompt refinement) in its simplest form: score every option on each user's *validation* data, keep the best one for that user,
    and only then evaluate it on test.

    Parameters
    ----------
    val_losses : DataFrame
        Indexed by user, one column per option (a retriever, a prompt template), values a
        loss (NLL, absolute error; lower is better). Ties go to the left-most column, so put
        the cheapest or default option first.

    Returns
    -------
    Series
        user -> chosen column name.
    """
    if val_losses.empty or val_losses.shape[1] == 0:
        raise ValueError("val_losses needs at least one user (row) and one option (column)")
    values = val_losses.to_numpy(dtype=float)
    if not np.isfinite(values).all():
        raise ValueError("val_losses holds NaN or infinite losses; score every option for every user first")
    choice = val_losses.columns[values.argmin(axis=1)]
    return pd.Series(choice, index=val_losses.index, name="choice")
