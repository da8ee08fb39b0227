"""Top-K recommendation: the data structure, the evaluation protocol and the recommenders of
notebook 08 (global → persona → user, plus the LLM-enhanced ones).

The pieces, in the order a notebook uses them:

1. :class:`Interactions` — a users × items sparse matrix of ratings with its id mappings.
2. :func:`make_protocol` — per-user temporal holdout (test; or one global time cut,
   ``split="global_time"``), and a validation split carved from the training part the same way
   (every hyper-parameter is chosen on validation).
3. Recommenders sharing one interface, ``fit(X)`` on the users × items rating matrix, then
   ``score(users)`` / ``recommend(users, k, exclude)`` by user row (``recommend_ids(user_ids, k)``
   by id, for a model fitted on an :class:`Interactions`):
   :class:`RandomRecommender` (the floor), :class:`PopularityRecommender` (global),
   :class:`SegmentPopularityRecommender` (persona),
   :class:`ImplicitALS` and :class:`ImplicitBPR` (user-level collaborative filtering from the
   ``implicit`` library, on the GPU when one is usable), :class:`ContentRecommender`
   (embeddings of item text) and :class:`HybridRecommender` (both). The PyTorch reference
   implementation of ALS lives in :mod:`p13n_utils.torch_als`; EASE, item-kNN, SAR and a
   torch BPR with uniform negatives in :mod:`p13n_utils.recsys_classic`.
4. :func:`evaluate` — per-user ``ndcg@k``, ``recall@k``, ``map@k`` on held-out positives,
   ranking over every catalog item the user has not interacted with in train; :func:`tune`
   picks hyper-parameters on the validation split.
5. Text of items and users for the LLM-enhanced methods (:func:`item_texts`,
   :func:`liked_titles`); LM reranking lives in :mod:`p13n_utils.recsys_llm`, embeddings in
   :func:`p13n_utils.cache.embed`.

Documented behaviour on awkward input
-------------------------------------
* NaN, infinite or non-positive ratings, or an empty rating table: ``ValueError``.
* An empty interaction matrix (no interactions): ``fit`` raises ``ValueError``.
* Users unseen in train have no row: :meth:`Interactions.user_rows` raises ``KeyError`` and
  ``recommend`` raises ``IndexError`` for a row outside the matrix. Serve them with
  :class:`PopularityRecommender` (the cold-start fallback).
* Items unseen in train (catalog items nobody interacted with) keep their column: collaborative
  filtering scores them ~0 (it knows nothing about them), content-based methods can rank them.
  A test item outside the catalog is left out of the relevant set by :func:`make_split`, which
  counts it in ``split.dropped`` and warns.
* ``k`` larger than the catalog raises ``ValueError``; a user with fewer than ``k``
  un-interacted items gets ``-1`` in the empty slots (metrics never count ``-1`` as a hit).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import metrics, prompts

__all__ = [
    "Interactions", "TopKSplit", "make_split", "make_protocol", "subsample", "binarize", "top_k",
    "Recommender", "RandomRecommender", "PopularityRecommender", "SegmentPopularityRecommender", "ImplicitALS",
    "ImplicitBPR", "ContentRecommender", "HybridRecommender", "evaluate", "evaluate_and_record", "tune",
    "cold_user_rows", "cold_item_cols", "cold_item_recall", "implicit_uses_gpu",
    "visible_tags", "item_texts", "liked_titles",
]


# =========================================================================== data
def _check_ratings(ratings: pd.DataFrame) -> None:
    """Raise a ValueError naming the fix if ``ratings`` cannot become an interaction matrix."""
    missing = {"user_id", "item_id", "rating"} - set(ratings.columns)
    if missing:
        raise ValueError(f"ratings needs columns user_id, item_id, rating; missing {sorted(missing)}")
    if ratings.empty:
        raise ValueError("ratings is empty: there is nothing to build an interaction matrix from")
    values = ratings["rating"].to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} ratings are NaN or infinite; drop them "
                         "(ratings.dropna(subset=['rating'])) or impute them first")
    if (values <= 0).any():
        raise ValueError("ratings must be positive (a zero would vanish from the sparse matrix); "
                         "for implicit feedback use rating=1.0")
    if ratings[["user_id", "item_id"]].isna().any().any():
        raise ValueError("user_id and item_id must not be missing")


@dataclass(frozen=True)
class Interactions:
    """A users × items CSR matrix of ratings plus the ids of its rows and columns.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix, float32, shape (n_users, n_items)
        ``matrix[u, i]`` is user ``u``'s rating of item ``i`` (0 = no interaction).
    user_ids, item_ids : ndarray
        The user id of each row and the item id of each column.
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    _user_pos: dict = field(default=None, repr=False, compare=False)
    _item_pos: dict = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_user_pos", {u: r for r, u in enumerate(self.user_ids.tolist())})
        object.__setattr__(self, "_item_pos", {i: c for c, i in enumerate(self.item_ids.tolist())})

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    @classmethod
    def from_ratings(cls, ratings: pd.DataFrame, user_ids: Sequence | None = None,
                     item_ids: Sequence | None = None) -> "Interactions":
        """Build the matrix from a ratings table (columns ``user_id, item_id, rating``).

        Parameters
        ----------
        ratings : DataFrame
            One row per rating. A repeated (user, item) pair keeps its last row.
        user_ids, item_ids : sequence, optional
            The rows and columns to use (e.g. every user, the whole catalog), so that several
            matrices share one indexing. Default: the sorted ids present in ``ratings``.
        """
        _check_ratings(ratings)
        ratings = ratings.drop_duplicates(["user_id", "item_id"], keep="last")
        user_ids = np.asarray(sorted(ratings["user_id"].unique()) if user_ids is None else user_ids)
        item_ids = np.asarray(sorted(ratings["item_id"].unique()) if item_ids is None else item_ids)
        empty = cls(sp.csr_matrix((len(user_ids), len(item_ids)), dtype=np.float32), user_ids, item_ids)
        rows = empty.user_rows(ratings["user_id"].to_numpy())
        cols = empty.item_cols(ratings["item_id"].to_numpy())
        matrix = sp.csr_matrix((ratings["rating"].to_numpy(dtype=np.float32), (rows, cols)),
                               shape=(len(user_ids), len(item_ids)))
        matrix.sort_indices()
        return cls(matrix, user_ids, item_ids)

    def user_rows(self, user_ids: Iterable) -> np.ndarray:
        """Row numbers of ``user_ids``; ``KeyError`` lists any user the matrix does not know."""
        return self._lookup(user_ids, self._user_pos, "users",
                            "they have no history here: use PopularityRecommender as the "
                            "cold-start fallback, or drop them")

    def item_cols(self, item_ids: Iterable) -> np.ndarray:
        """Column numbers of ``item_ids``; ``KeyError`` lists any item outside the catalog."""
        return self._lookup(item_ids, self._item_pos, "items",
                            "pass the whole catalog as item_ids when building the matrix")

    @staticmethod
    def _lookup(ids, positions: dict, what: str, hint: str) -> np.ndarray:
        ids = np.asarray(list(ids) if not isinstance(ids, (np.ndarray, pd.Series)) else ids)
        out = np.fromiter((positions.get(x, -1) for x in ids.tolist()), dtype=np.int64, count=ids.size)
        if (out < 0).any():
            unknown = sorted(set(ids[out < 0].tolist()))
            raise KeyError(f"{len(unknown)} {what} not in the interaction matrix, e.g. "
                           f"{unknown[:5]}: {hint}")
        return out


def subsample(ratings: pd.DataFrame, n_users: int | None = None, n_items: int | None = None,
              seed: int = 0) -> pd.DataFrame:
    """A smaller rating table for quick runs: keep the ``n_items`` most-rated items (ties by
    item id), then a seeded random sample of ``n_users`` users. ``None`` keeps everything."""
    if n_items is not None:
        counts = ratings.groupby("item_id").size().reset_index(name="n")
        keep = counts.sort_values(["n", "item_id"], ascending=[False, True])["item_id"].head(n_items)
        ratings = ratings[ratings["item_id"].isin(set(keep.tolist()))]
    if n_users is not None:
        users = np.sort(ratings["user_id"].unique())
        chosen = np.random.default_rng(seed).permutation(users)[:n_users]
        ratings = ratings[ratings["user_id"].isin(set(chosen.tolist()))]
    return ratings.reset_index(drop=True)


def binarize(X: sp.csr_matrix) -> sp.csr_matrix:
    """A copy of ``X`` with every stored interaction set to 1 (implicit feedback)."""
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    X.data[:] = 1.0
    return X


# =========================================================================== protocol
@dataclass
class TopKSplit:
    """One train / held-out split for top-K evaluation.

    Attributes
    ----------
    train : Interactions
        Everything the models may see (ratings of the training part).
    relevant : dict row -> set of columns
        Held-out positives (rating ≥ ``min_rating``) of each user that has any, excluding
        items the user already has in train (they are never recommended).
    train_ratings, heldout_ratings : DataFrame
        The two parts as tables (for text profiles, slices and tags).
    dropped : dict reason -> int
        Held-out positives left out of ``relevant``: ``"outside the catalog"`` (an item not in
        ``item_ids``: no model could recommend it) and ``"already in train"`` (the user has the
        item in train too, so it is never recommended to them).
    """

    train: Interactions
    relevant: dict
    train_ratings: pd.DataFrame
    heldout_ratings: pd.DataFrame
    dropped: dict = field(default_factory=dict)

    @property
    def users(self) -> np.ndarray:
        """The evaluated user rows (those with at least one held-out positive), sorted."""
        return np.asarray(sorted(self.relevant), dtype=np.int64)


def make_split(train_ratings: pd.DataFrame, heldout_ratings: pd.DataFrame,
               user_ids: Sequence, item_ids: Sequence, min_rating: float = 4.0) -> TopKSplit:
    """Build a :class:`TopKSplit` from a train part and a held-out part.

    Held-out ratings below ``min_rating`` are not positives. Positives outside the catalog
    ``item_ids``, or that the user also has in train, are left out of the relevant sets; how many
    is stored in ``split.dropped`` and said by a warning (nothing is dropped silently).
    """
    import warnings

    _check_ratings(heldout_ratings)
    train = Interactions.from_ratings(train_ratings, user_ids=user_ids, item_ids=item_ids)
    positives = heldout_ratings[heldout_ratings["rating"] >= min_rating]
    in_catalog = positives["item_id"].isin(set(np.asarray(item_ids).tolist()))
    dropped = {"outside the catalog": int((~in_catalog).sum())}
    positives = positives[in_catalog]
    rows = train.user_rows(positives["user_id"].to_numpy())
    cols = train.item_cols(positives["item_id"].to_numpy())
    in_train = np.asarray(train.matrix[rows, cols]).ravel() != 0 if rows.size else np.zeros(0, bool)
    dropped["already in train"] = int(in_train.sum())
    relevant: dict[int, set] = {}
    for row, col in zip(rows[~in_train].tolist(), cols[~in_train].tolist()):
        relevant.setdefault(row, set()).add(col)
    if any(dropped.values()):
        warnings.warn("make_split left held-out positives out of the relevant sets: "
                      + ", ".join(f"{n} {why}" for why, n in dropped.items() if n), stacklevel=2)
    return TopKSplit(train, relevant, train_ratings.reset_index(drop=True),
                     heldout_ratings.reset_index(drop=True), dropped)


def make_protocol(ratings: pd.DataFrame, item_ids: Sequence | None = None, test_frac: float = 0.2,
                  min_rating: float = 4.0, split: str = "temporal", seed: int = 42) -> tuple[TopKSplit, TopKSplit]:
    """Holdout (time-ordered by default): ``(validation, test)`` splits sharing one indexing.

    ``test``: the last ``test_frac`` of the ratings by time are held out, the rest is train.
    ``validation``: the same cut applied again to that train part, so that tuning never sees
    the test ratings. Rows are all users of ``ratings``; columns are ``item_ids`` (pass the
    whole catalog, e.g. ``movies.item_id``, so that items nobody rated stay recommendable),
    joined with every rated item.

    split : "temporal" (default) cuts each user's own history
        (:func:`p13n_utils.splits.temporal_split`: other users' later ratings stay in train);
        "global_time" cuts everybody at one time (:func:`p13n_utils.splits.global_time_split`,
        ``min_train=0``: users who appear only after the cut are held out whole, as cold-start
        users), so nothing in train is later than what is predicted;
        "stratified" holds out a random ``test_frac`` of each **item's** ratings
        (:func:`p13n_utils.splits.stratified_split`, ``by="item"``, ``seed``): the published
        protocol of microsoft/recommenders' benchmark table (``test_frac=0.25``, ``seed=42``,
        ``min_rating=0``: every held-out rating is relevant). Its validation split is the same
        rule applied to the train part.
    """
    from .splits import global_time_split, stratified_split, temporal_split

    if split == "stratified":
        cut = lambda frame: stratified_split(frame, ratio=1 - test_frac, by="item", seed=seed)  # noqa: E731
    elif split == "temporal":
        cut = lambda frame: temporal_split(frame, test_frac=test_frac)  # noqa: E731
    elif split == "global_time":
        cut = lambda frame: global_time_split(frame, test_frac=test_frac, min_train=0)  # noqa: E731
    else:
        raise ValueError(f"split must be 'temporal', 'global_time' or 'stratified', got {split!r}")
    _check_ratings(ratings)
    user_ids = np.asarray(sorted(ratings["user_id"].unique()))
    catalog = set(ratings["item_id"].unique().tolist())
    if item_ids is not None:
        catalog |= set(np.asarray(item_ids).tolist())
    item_ids = np.asarray(sorted(catalog))
    train, test = cut(ratings)
    inner, valid = cut(train)
    validation = make_split(inner, valid, user_ids, item_ids, min_rating)
    return validation, make_split(train, test, user_ids, item_ids, min_rating)


# =========================================================================== ranking
def _check_k(k: int, n_items: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > n_items:
        raise ValueError(f"k={k} is larger than the catalog ({n_items} items); use k <= {n_items}")


def top_k(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
    """Columns of the ``k`` highest scores in each row, best first.

    Parameters
    ----------
    scores : ndarray (n_users, n_items)
    k : int, at most ``n_items``.
    exclude : csr_matrix (n_users, n_items), optional
        Stored entries are removed from the ranking (the user's training items).

    Returns
    -------
    ndarray (n_users, k) of int64; ``-1`` fills slots a user has no item left for.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-d (users × items), got shape {scores.shape}")
    _check_k(k, scores.shape[1])
    if exclude is not None:
        if exclude.shape != scores.shape:
            raise ValueError(f"exclude has shape {exclude.shape}, scores {scores.shape}")
        coo = exclude.tocoo()
        scores[coo.row, coo.col] = -np.inf
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    best[np.isneginf(np.take_along_axis(scores, best, axis=1))] = -1
    return best.astype(np.int64)


# =========================================================================== recommenders
class Recommender:
    """Base class: ``fit(X)`` on the users × items rating matrix, then score or recommend.

    Subclasses implement ``_fit(X)`` and ``score(users)``; ``users`` are row numbers of ``X``.
    """

    name = "recommender"

    def fit(self, X: "sp.csr_matrix | Interactions") -> "Recommender":
        """Learn from ``X`` (users × items, values = ratings). Returns ``self``.

        Given an :class:`Interactions`, the model also keeps its ids, so that
        :meth:`recommend_ids` can take user ids and return item ids."""
        if isinstance(X, Interactions):
            self.interactions_ = X
            X = X.matrix
        X = sp.csr_matrix(X, dtype=np.float32)
        if X.nnz == 0:
            raise ValueError(f"{self.name}: the interaction matrix {X.shape} has no interactions; "
                             "there is nothing to learn from (check the split and filters)")
        if not np.all(np.isfinite(X.data)):
            raise ValueError(f"{self.name}: the interaction matrix holds NaN or infinite values")
        self.n_users_, self.n_items_ = X.shape
        self._fit(X)
        return self

    def _fit(self, X: sp.csr_matrix) -> None:
        raise NotImplementedError

    def score(self, users: Sequence[int]) -> np.ndarray:
        """Scores of every item for the given user rows: ndarray (len(users), n_items)."""
        raise NotImplementedError

    def _rows(self, users) -> np.ndarray:
        if not hasattr(self, "n_users_"):
            raise RuntimeError(f"{self.name} is not fitted; call fit(X) first")
        users = np.atleast_1d(np.asarray(users, dtype=np.int64))
        bad = (users < 0) | (users >= self.n_users_)
        if bad.any():
            raise IndexError(f"user rows {users[bad][:5].tolist()} are outside the training matrix "
                             f"(0..{self.n_users_ - 1}); users unseen in train need a cold-start "
                             "fallback such as PopularityRecommender")
        return users

    def recommend(self, users: Sequence[int], k: int = 10,
                  exclude: sp.csr_matrix | None = None) -> np.ndarray:
        """Top-``k`` item columns per user row, best first (``-1`` = no item left).

        ``exclude`` is the full users × items matrix whose stored entries are skipped (pass the
        training matrix to rank only items the user has not interacted with)."""
        users = self._rows(users)
        _check_k(k, self.n_items_)
        rows = None if exclude is None else exclude[users]
        out = []
        for start in range(0, users.size, 1024):  # bounded memory: 1024 × n_items scores
            block = users[start:start + 1024]
            out.append(top_k(self.score(block), k,
                             None if rows is None else rows[start:start + 1024]))
        return np.vstack(out) if out else np.empty((0, k), dtype=np.int64)

    def recommend_ids(self, user_ids: Sequence, k: int = 10, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-``k`` item **ids** for user **ids**, the id-level face of :meth:`recommend`.

        Needs a model fitted on an :class:`Interactions` (``model.fit(split.train)``).
        ``exclude_seen`` skips each user's training items.

        Returns
        -------
        DataFrame with columns ``user_id``, ``rank`` (1 = best), ``item_id``; a user with fewer
        than ``k`` items left has fewer rows.
        """
        if not hasattr(self, "interactions_"):
            raise RuntimeError(f"{self.name}: recommend_ids needs ids; fit the model on an Interactions "
                               "(model.fit(split.train)) or map rows with recommend() yourself")
        inter = self.interactions_
        user_ids = np.atleast_1d(np.asarray(user_ids))
        cols = self.recommend(inter.user_rows(user_ids), k, exclude=inter.matrix if exclude_seen else None)
        users, ranks = np.repeat(user_ids, k), np.tile(np.arange(1, k + 1), user_ids.size)
        keep = cols.ravel() >= 0
        return pd.DataFrame({"user_id": users[keep], "rank": ranks[keep],
                             "item_id": inter.item_ids[cols.ravel()[keep]]})


class PopularityRecommender(Recommender):
    """Global level: every user gets the items with the most training interactions."""

    name = "popularity"

    def _fit(self, X):
        self.item_counts_ = np.asarray((X > 0).sum(axis=0), dtype=np.float64).ravel()

    def score(self, users):
        users = self._rows(users)
        return np.broadcast_to(self.item_counts_, (users.size, self.n_items_)).copy()


class RandomRecommender(Recommender):
    """The floor: a seeded random ranking. User row ``u`` gets the scores
    ``numpy.random.default_rng([seed, u]).random(n_items)``, so a user's ranking depends only on
    the seed and the row, not on which other users are asked; every recommender should beat it."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def _fit(self, X):
        pass

    def score(self, users):
        users = self._rows(users)
        return np.stack([np.random.default_rng([self.seed, int(u)]).random(self.n_items_) for u in users]) \
            if users.size else np.zeros((0, self.n_items_))


class SegmentPopularityRecommender(Recommender):
    """Persona level: popularity within the user's segment, shrunk toward global popularity.

    ``score(i) = (count_segment(i) + smoothing * share_global(i)) / (n_segment + smoothing)``,
    where ``count`` counts interactions of the segment's users and ``n_segment`` their total.
    Users without a segment (``-1``) get global popularity.

    Parameters
    ----------
    segments : array of int, one per user row; ``-1`` = no segment.
    smoothing : float ≥ 0, pseudo-interactions drawn from global popularity.
    """

    name = "persona_popularity"

    def __init__(self, segments: Sequence[int], smoothing: float = 100.0):
        self.segments = np.asarray(segments, dtype=np.int64)
        if smoothing < 0:
            raise ValueError(f"smoothing must be >= 0, got {smoothing}")
        self.smoothing = float(smoothing)

    def _fit(self, X):
        if self.segments.shape != (X.shape[0],):
            raise ValueError(f"segments has {self.segments.size} entries for {X.shape[0]} user rows")
        B = binarize(X)
        global_counts = np.asarray(B.sum(axis=0)).ravel()
        self.global_share_ = global_counts / global_counts.sum()
        n_segments = int(self.segments.max()) + 1 if (self.segments >= 0).any() else 0
        self.segment_scores_ = np.zeros((n_segments, X.shape[1]))
        for s in range(n_segments):
            counts = np.asarray(B[self.segments == s].sum(axis=0)).ravel()
            self.segment_scores_[s] = ((counts + self.smoothing * self.global_share_)
                                       / (counts.sum() + self.smoothing or 1.0))

    def score(self, users):
        users = self._rows(users)
        segs = self.segments[users]
        out = np.tile(self.global_share_, (users.size, 1))
        known = segs >= 0
        out[known] = self.segment_scores_[segs[known]]
        return out


def _implicit():
    """Import ``implicit`` quietly (it imports ``tqdm.auto``, which warns inside Jupyter when
    ipywidgets is missing) and return the package."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import implicit
        import implicit.als
        import implicit.bpr
        import implicit.gpu
    return implicit


def implicit_uses_gpu() -> bool:
    """True when ``implicit`` can fit on a GPU (CUDA extension built and ``rmm`` installed)."""
    return bool(_implicit().gpu.HAS_CUDA)


class _ImplicitMF(Recommender):
    """Shared wrapper of an ``implicit`` matrix-factorisation model (binary interactions)."""

    def __init__(self, use_gpu: bool | None = None, **params):
        self.use_gpu = implicit_uses_gpu() if use_gpu is None else bool(use_gpu)
        self.params = params

    def _make(self):
        raise NotImplementedError

    def _fit(self, X):
        from threadpoolctl import threadpool_limits

        # implicit parallelises over users itself; BLAS threads on top of it slow it down
        with threadpool_limits(1, user_api="blas"):
            model = self._make()
            start = time.perf_counter()
            model.fit(binarize(X), show_progress=False)
            self.fit_seconds_ = time.perf_counter() - start
        self.model_ = model  # may live on the GPU
        cpu = model.to_cpu() if self.use_gpu else model
        self.user_factors_ = np.asarray(cpu.user_factors, dtype=np.float32)
        self.item_factors_ = np.asarray(cpu.item_factors, dtype=np.float32)

    def score(self, users):
        users = self._rows(users)
        return self.user_factors_[users] @ self.item_factors_.T


class ImplicitALS(_ImplicitMF):
    """User level: implicit-feedback ALS (Hu, Koren & Volinsky 2008) from ``implicit``.

    Parameters
    ----------
    factors, regularization, alpha, iterations : as in ``implicit.als``; the confidence of an
        observed interaction is ``alpha`` (unobserved: 1).
    seed : int
    use_gpu : bool, optional. Default: the GPU when :func:`implicit_uses_gpu`.

    Notes
    -----
    The defaults come from validation grids on MovieLens latest-small (``iterations=15``, seed
    0), NDCG@10 on two validation splits: the published protocol's (``make_protocol(ratings,
    test_frac=0.25, min_rating=0, split="stratified")``; grid factors {16, 32, 64, 128} ×
    regularization {0.05, 1} × alpha {1, 5, 10}: best 0.197) and notebook 08's temporal one
    (``make_protocol(ratings, movies.item_id)``; 08's grid factors {8, 16, 32, 64} ×
    regularization {0.01, 1} × alpha {1, 2, 5}: best 0.104). Factors 16, regularization 1,
    alpha 2 give 0.195 and 0.102 (99% of both bests); the previous defaults (64, 0.05, 10) gave
    0.177 on the first. ``tune`` stays the way to adapt them to other data.
    """

    name = "als"

    def __init__(self, factors: int = 16, regularization: float = 1.0, alpha: float = 2.0,
                 iterations: int = 15, seed: int = 0, use_gpu: bool | None = None):
        super().__init__(use_gpu, factors=factors, regularization=regularization, alpha=alpha,
                         iterations=iterations, random_state=seed)

    def _make(self):
        return _implicit().als.AlternatingLeastSquares(**self.params, use_gpu=self.use_gpu)


class ImplicitBPR(_ImplicitMF):
    """User level: Bayesian Personalized Ranking (Rendle et al. 2009) from ``implicit``.

    num_threads : int, default 1. ``implicit`` runs BPR's stochastic gradient steps on several
        threads without locks (Hogwild), so with more than one thread two fits with the same
        seed differ; one thread makes a fit reproducible (0: every core, faster, not
        reproducible). On a GPU the fit is not bit-reproducible either.

    Notes
    -----
    ``implicit`` draws a negative item from the interaction list, i.e. in proportion to its
    popularity; :class:`p13n_utils.recsys_classic.TorchBPR` draws it uniformly (as cornac does).
    The defaults are the best of a validation grid on MovieLens latest-small under the published
    protocol (see :class:`ImplicitALS`; ``iterations=100``, one thread, seed 0): factors {32, 64,
    128} × learning_rate {0.01, 0.05, 0.1}, and learning_rate {0.0025, 0.005} at 64 factors,
    regularization 0.01. NDCG@10 0.156 there (the previous default learning rate 0.05 gave 0.091).
    On 08's temporal validation split (its grid: factors {16, 32, 64} × learning_rate {0.0025,
    0.005, 0.01}) the defaults give 0.086, 98% of the best (0.088).
    """

    name = "bpr"

    def __init__(self, factors: int = 64, learning_rate: float = 0.005, regularization: float = 0.01,
                 iterations: int = 100, seed: int = 0, use_gpu: bool | None = None, num_threads: int = 1):
        super().__init__(use_gpu, factors=factors, learning_rate=learning_rate,
                         regularization=regularization, iterations=iterations, random_state=seed)
        self.num_threads = int(num_threads)

    def _make(self):
        threads = {} if self.use_gpu else {"num_threads": self.num_threads}
        return _implicit().bpr.BayesianPersonalizedRanking(**self.params, use_gpu=self.use_gpu, **threads)


class ContentRecommender(Recommender):
    """Content-based: a user is the weighted mean of the embeddings of items they rated.

    Parameters
    ----------
    item_embeddings : ndarray (n_items, d), one row per column of the matrix (normalised here).
    weighting : ``"liked"`` (weight 1 for ratings ≥ ``min_rating``, else 0), ``"centered"``
        (rating minus the user's mean rating) or ``"uniform"`` (every rated item counts 1).
    min_rating : float, threshold of ``"liked"``.
    """

    name = "content_embed"

    def __init__(self, item_embeddings: np.ndarray, weighting: str = "liked", min_rating: float = 4.0):
        if weighting not in ("liked", "centered", "uniform"):
            raise ValueError(f"weighting must be liked, centered or uniform; got {weighting!r}")
        emb = np.asarray(item_embeddings, dtype=np.float32)
        self.item_embeddings = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        self.weighting, self.min_rating = weighting, min_rating

    def _fit(self, X):
        if X.shape[1] != self.item_embeddings.shape[0]:
            raise ValueError(f"{self.item_embeddings.shape[0]} item embeddings for {X.shape[1]} items")
        W = sp.csr_matrix(X, copy=True)
        if self.weighting == "liked":
            W.data = (W.data >= self.min_rating).astype(np.float32)
        elif self.weighting == "centered":
            counts = np.maximum(np.diff(W.indptr), 1)
            means = np.asarray(W.sum(axis=1)).ravel() / counts
            W.data = W.data - np.repeat(means, np.diff(W.indptr)).astype(np.float32)
        else:
            W.data[:] = 1.0
        self.user_vectors_ = np.asarray(W @ self.item_embeddings, dtype=np.float32)

    def score(self, users):
        users = self._rows(users)
        return self.user_vectors_[users] @ self.item_embeddings.T


def _standardize(scores: np.ndarray) -> np.ndarray:
    """Per-row z-scores (a row with no spread becomes zeros)."""
    mean = scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True)
    return (scores - mean) / np.where(std > 0, std, 1.0)


class HybridRecommender(Recommender):
    """Blend of two recommenders: ``(1 - weight) * z(cf) + weight * z(content)`` per user,
    with ``z`` the per-user z-score over the catalog. Both parts are fitted by ``fit``."""

    name = "hybrid"

    def __init__(self, cf: Recommender, content: Recommender, weight: float = 0.3):
        if not 0 <= weight <= 1:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        self.cf, self.content, self.weight = cf, content, float(weight)

    def _fit(self, X):
        self.cf.fit(X)
        self.content.fit(X)

    def score(self, users):
        users = self._rows(users)
        return ((1 - self.weight) * _standardize(self.cf.score(users))
                + self.weight * _standardize(self.content.score(users)))


# =========================================================================== evaluation
def evaluate(model: Recommender, split: TopKSplit, k: int = 10,
             users: Sequence[int] | None = None,
             recommendations: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-user ranking metrics of a fitted ``model`` on ``split``'s held-out positives.

    Every catalog item not in the user's train interactions is a candidate.

    Parameters
    ----------
    model : fitted Recommender (ignored when ``recommendations`` is given).
    split : TopKSplit
    k : int
    users : user rows to evaluate (default ``split.users``; each needs a held-out positive).
    recommendations : ndarray (len(users), ≥ k), optional — evaluate precomputed rankings
        (e.g. a reranked list) instead of calling the model.

    Returns
    -------
    (per_user, recommendations): a DataFrame (``user`` row, ``user_id``, ``n_relevant``,
    ``n_train``, ``ndcg@k``, ``recall@k``, ``map@k``, ``precision@k``, ``map_all@k``; see
    :mod:`p13n_utils.metrics` for the two MAP denominators) and the (len(users), k) item columns.
    """
    users = split.users if users is None else np.asarray(users, dtype=np.int64)
    if recommendations is None:
        recommendations = model.recommend(users, k, exclude=split.train.matrix)
    recommendations = np.asarray(recommendations)[:, :k]
    if recommendations.shape[0] != users.size:
        raise ValueError(f"{recommendations.shape[0]} rankings for {users.size} users")
    ranked = dict(zip(users.tolist(), recommendations))
    per_user = metrics.ranking_metrics(ranked, split.relevant, k=k, users=users.tolist())
    per_user.insert(1, "user_id", split.train.user_ids[users])
    per_user.insert(3, "n_train", np.diff(split.train.matrix.indptr)[users])
    return per_user, recommendations


def evaluate_and_record(task: str, level: str, method: str, model: Recommender | None, split: TopKSplit,
                        k: int = 10, users: Sequence[int] | None = None,
                        recommendations: np.ndarray | None = None, n_resamples: int = 2000,
                        seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, str]:
    """:func:`evaluate`, then record ``ndcg@k``, ``recall@k`` and ``map@k`` with bootstrap intervals
    over users (:func:`p13n_utils.results.record_ci`) and, over the whole user population
    (``users=None``), the catalog coverage. Returns ``(per_user, recommendations, summary line)``."""
    from . import results

    table, recs = evaluate(model, split, k=k, users=users, recommendations=recommendations)
    rows = {m: results.record_ci(task, level, method, m, table[m], n_resamples=n_resamples, seed=seed,
                                 users=table["user_id"]) for m in (f"ndcg@{k}", f"recall@{k}", f"map@{k}")}
    line = " · ".join(f"{m} {results.fmt_ci(r['value'], r['lower'], r['upper'], 4)}" for m, r in rows.items())
    if users is None:  # coverage only means something over the whole user population
        coverage = metrics.catalog_coverage(recs, split.train.n_items)
        results.record(task, level, method, "coverage", coverage, n=len(table), set=rows[f"ndcg@{k}"]["set"])
        line += f" · coverage {coverage:.3f}"
    return table, recs, line


def tune(make_model: Callable[..., Recommender], grid: Mapping[str, Sequence],
         split: TopKSplit, k: int = 10, metric: str | None = None) -> tuple[dict, pd.DataFrame]:
    """Grid search on a validation split.

    Parameters
    ----------
    make_model : callable(**params) -> Recommender
    grid : mapping parameter -> candidate values (every combination is tried).
    split : the validation TopKSplit (never the test one).
    metric : column to maximise, default ``ndcg@k``.

    Returns
    -------
    (best_params, table): the table has one row per combination with the mean metric and the
    fit time, best first.
    """
    metric = metric or f"ndcg@{k}"
    names = list(grid)
    tried, rows = [], []
    for values in itertools.product(*(grid[n] for n in names)):
        params = dict(zip(names, values))
        start = time.perf_counter()
        model = make_model(**params).fit(split.train.matrix)
        seconds = time.perf_counter() - start
        per_user, _ = evaluate(model, split, k)
        tried.append(params)
        rows.append({**params, metric: per_user[metric].mean(), "fit_s": seconds})
    if not rows:
        raise ValueError("the grid is empty: give at least one value per parameter")
    scores = [row[metric] for row in rows]
    best = tried[int(np.argmax(scores))]  # the first of equal scores, in grid order
    table = pd.DataFrame(rows).sort_values(metric, ascending=False, kind="stable")
    return dict(best), table.reset_index(drop=True)


# --------------------------------------------------------------------------- slices
def cold_user_rows(split: TopKSplit, max_train: int) -> np.ndarray:
    """Evaluated user rows with at most ``max_train`` training interactions (cold-start users)."""
    counts = np.diff(split.train.matrix.indptr)
    users = split.users
    return users[counts[users] <= max_train]


def cold_item_cols(split: TopKSplit, max_train: int) -> np.ndarray:
    """Catalog columns with at most ``max_train`` training interactions (cold items)."""
    counts = np.diff(split.train.matrix.tocsc().indptr)
    return np.flatnonzero(counts <= max_train)


def cold_item_recall(recommendations: np.ndarray, users: Sequence[int], split: TopKSplit,
                     cold_cols: Iterable[int], k: int = 10) -> pd.DataFrame:
    """Recall@k restricted to cold items, for users with at least one cold held-out positive.

    Returns a DataFrame with ``user`` and ``cold_recall@k`` (one row per such user)."""
    cold = set(np.asarray(list(cold_cols)).tolist())
    rows = []
    for user, ranked in zip(np.asarray(users).tolist(), recommendations):
        targets = split.relevant.get(user, set()) & cold
        if targets:
            rows.append({"user": user, f"cold_recall@{k}": metrics.recall_at_k(ranked, targets, k)})
    return pd.DataFrame(rows, columns=["user", f"cold_recall@{k}"])


# =========================================================================== texts
def visible_tags(tags: pd.DataFrame, *heldout: pd.DataFrame) -> pd.DataFrame:
    """Tags minus those a user put on an item whose rating is held out in any of ``heldout``:
    a tag on a held-out movie would leak that the user watched it."""
    if tags is None or tags.empty:
        return tags
    pairs = pd.concat([h[["user_id", "item_id"]] for h in heldout]) if heldout else None
    if pairs is None or pairs.empty:
        return tags.reset_index(drop=True)
    hidden = pd.MultiIndex.from_frame(pairs.drop_duplicates())
    keep = ~pd.MultiIndex.from_frame(tags[["user_id", "item_id"]]).isin(hidden)
    return tags[keep].reset_index(drop=True)


def item_texts(movies: pd.DataFrame, item_ids: Sequence, tags: pd.DataFrame | None = None,
               max_tags: int = 5) -> list[str]:
    """One short text per catalog item: ``"Title (year). Genres: a, b. Tags: x, y."``.

    ``tags`` (columns ``item_id, tag``) adds the item's most frequent tags. Pass only tags the
    evaluation may see (e.g. from training interactions) to avoid leaking held-out data.
    Items missing from ``movies`` get ``"Unknown item <id>."`` (:func:`p13n_utils.prompts.movie_text`,
    ``style="sentences"``).
    """
    top_tags: dict = {}
    if tags is not None and len(tags):
        counts = (tags.assign(tag=tags["tag"].astype(str).str.strip().str.lower())
                  .groupby(["item_id", "tag"]).size().rename("n").reset_index()
                  .sort_values(["item_id", "n", "tag"], ascending=[True, False, True]))
        top_tags = counts.groupby("item_id")["tag"].apply(lambda s: list(s[:max_tags])).to_dict()
    return prompts.movie_descriptions(movies, np.asarray(item_ids).tolist(), style="sentences", tags=top_tags,
                                      unknown="Unknown item {item}.")


def liked_titles(split: TopKSplit, movies: pd.DataFrame, user_row: int, n: int = 5,
                 min_rating: float = 4.0) -> list[str]:
    """The user's ``n`` most recent training items rated ≥ ``min_rating`` (titles, newest
    first); if there are none, their ``n`` highest-rated training items."""
    user_id = split.train.user_ids[user_row]
    mine = split.train_ratings[split.train_ratings["user_id"] == user_id]
    if "timestamp" not in mine.columns:
        mine = mine.assign(timestamp=np.arange(len(mine)))
    liked = mine[mine["rating"] >= min_rating].sort_values("timestamp", ascending=False)
    if liked.empty:
        liked = mine.sort_values(["rating", "timestamp"], ascending=False)
    return prompts.movie_descriptions(movies, liked["item_id"].head(n).tolist(), genres=False,
                                      unknown="item {item}")
