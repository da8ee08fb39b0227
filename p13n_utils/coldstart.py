"""Cold start: how much of a user's history each personalization level needs (notebook 10).

* :func:`recent_history` — a user's history cut to its ``n`` most recent items (the simulated
  cold-start user: someone who has only rated ``n`` things so far);
* :func:`assign_genre_persona` — the persona a user with only a few ratings joins (nearest
  genre-taste centroid; none without history);
* :func:`als_fold_in` — a new user's ALS factor from the fixed item factors, in closed form
  (one exact ALS user step: no refit of the model);
* :func:`overtake_point` — the smallest history length from which one level beats another;
* :func:`fallback_level` / :func:`fallback_curve` — the policy global → persona → user as the
  history grows, measured from the single levels' per-user losses.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["recent_history", "assign_genre_persona", "als_fold_in", "overtake_point", "fallback_level", "fallback_curve",
           "rating_ladder", "new_user_ndcg", "cold_context"]


def recent_history(history: pd.DataFrame, n: int, time_col: str = "timestamp") -> pd.DataFrame:
    """The ``n`` most recent rows of one user's ``history`` (oldest first).

    ``n = 0`` gives an empty frame (a brand-new user); ``n`` larger than the history gives all
    of it. A negative ``n`` is an error."""
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n (items of history kept) must be a non-negative integer, got {n!r}")
    ordered = history.sort_values(time_col, kind="mergesort")
    return ordered.iloc[len(ordered) - min(int(n), len(ordered)):].reset_index(drop=True)


def assign_genre_persona(personas, history: pd.DataFrame, genres: pd.DataFrame, population: pd.Series,
                         min_rating: float = 4.0, prior: float = 5.0) -> int:
    """The genre persona (of :func:`p13n_utils.personas.movielens_genre_personas`) nearest to a
    user who has only ``history``: the user's genre taste is computed as in
    :func:`p13n_utils.personas.genre_taste` against the training ``population`` share
    (:func:`p13n_utils.personas.genre_share`), then the closest persona centroid wins.
    ``-1`` (no persona: the global fallback) for an empty history or one with no known movie."""
    known = history[history["item_id"].isin(genres.index)]
    if known.empty:
        return -1
    liked = known[known["rating"] >= min_rating]
    chosen = liked if len(liked) else known
    flags = genres.loc[chosen["item_id"].to_numpy()].to_numpy()
    pop = population.reindex(genres.columns).to_numpy()
    taste = np.log((flags.sum(axis=0) + prior * pop) / (len(flags) + prior) / pop)
    centroids = personas.taste.groupby(personas.assignments).mean()
    distances = ((centroids.to_numpy() - taste) ** 2).sum(axis=1)
    return int(centroids.index[int(np.argmin(distances))])


def als_fold_in(item_factors: np.ndarray, items: Sequence[int], regularization: float,
                alpha: float) -> np.ndarray:
    """The ALS factor of a new user who interacted with ``items``, the item factors held fixed.

    Implicit ALS (Hu, Koren & Volinsky 2008) gives observed cells confidence ``alpha`` and all
    others 1, so the user's exact least-squares solution is

        x_u = (YᵀY + λI + (alpha - 1) Σ_{i∈I} y_i y_iᵀ)⁻¹ · alpha Σ_{i∈I} y_i

    — what one ALS user half-step computes (``implicit``'s ``recalculate_user``), here for one
    user, with numpy. A user with no items gets the zero vector (the model then scores every
    item 0: fall back to popularity, see notebook 10).

    Parameters
    ----------
    item_factors : ndarray (n_items, f), the fitted ``Y``.
    items : column indices of the user's interactions (repeats count once).
    regularization, alpha : the model's λ and confidence (``ImplicitALS`` / ``TorchALS``).
    """
    Y = np.asarray(item_factors, dtype=np.float64)
    items = np.unique(np.asarray(list(items), dtype=np.int64))
    if items.size and (items.min() < 0 or items.max() >= len(Y)):
        raise IndexError(f"item columns must lie in 0..{len(Y) - 1}, got {items.min()}..{items.max()}")
    f = Y.shape[1]
    if items.size == 0:
        return np.zeros(f)
    Yi = Y[items]
    A = Y.T @ Y + regularization * np.eye(f) + (alpha - 1.0) * Yi.T @ Yi
    b = alpha * Yi.sum(axis=0)
    return np.linalg.solve(A, b)


def overtake_point(challenger: Mapping[int, float], incumbent: Mapping[int, float],
                   lower_is_better: bool = True) -> int | None:
    """The smallest history length ``n`` from which ``challenger`` is better than ``incumbent``
    at every larger ``n`` of the grid too (``None``: never). Both map n -> mean quality."""
    ns = sorted(set(challenger) & set(incumbent))
    if not ns:
        raise ValueError("the two curves share no history length")
    better = [(challenger[n] < incumbent[n]) if lower_is_better else (challenger[n] > incumbent[n]) for n in ns]
    for i, n in enumerate(ns):
        if all(better[i:]):
            return n
    return None


def fallback_level(n_history: int, persona_from: int | None, user_from: int | None) -> str:
    """The level the fallback policy serves to a user with ``n_history`` items:
    ``user`` once ``n_history >= user_from``, else ``persona`` once ``n_history >= persona_from``,
    else ``global`` (a threshold ``None`` never switches)."""
    if n_history < 0:
        raise ValueError(f"n_history must be >= 0, got {n_history}")
    if user_from is not None and n_history >= user_from:
        return "user"
    if persona_from is not None and n_history >= persona_from:
        return "persona"
    return "global"


def fallback_curve(losses: Mapping[str, Mapping[int, pd.Series]], persona_from: int | None,
                   user_from: int | None) -> dict[int, pd.Series]:
    """Per-user losses of the fallback policy at each history length: at ``n`` it takes the
    per-user losses of the level :func:`fallback_level` picks.

    ``losses[level][n]`` is a Series user -> loss for ``level`` in ``global``, ``persona``,
    ``user``."""
    missing = {"global", "persona", "user"} - set(losses)
    if missing:
        raise ValueError(f"losses lacks the levels {sorted(missing)}")
    return {n: losses[fallback_level(n, persona_from, user_from)][n] for n in sorted(losses["global"])}


# --------------------------------------------------------------------------- notebook 10's cold-start runs
def rating_ladder(others: pd.DataFrame, histories: Mapping, pairs: pd.DataFrame, n: int, personas,
                  genres: pd.DataFrame, population: pd.Series) -> dict[str, pd.Series]:
    """Per-user MAE on ``pairs`` of the three rating levels without an LM when each evaluated user
    keeps only their ``n`` latest ratings (``histories``: user -> full history) and every other
    user keeps all of theirs (``others``).

    Levels: ``global`` (item mean, :class:`~p13n_utils.baselines.ItemMean`), ``persona`` (item mean
    inside the persona the user's ``n`` ratings join, :func:`assign_genre_persona`; none at
    ``n = 0``), ``user`` (``mu + b_user + b_item`` fitted with the ``n`` ratings)."""
    from .baselines import ItemMean, SegmentItemMean, UserItemBias
    from .metrics import rating_errors

    kept = {u: recent_history(h, n) for u, h in histories.items()}
    train = pd.concat([others, *kept.values()], ignore_index=True)
    joined = pd.Series({u: assign_genre_persona(personas, h, genres, population) for u, h in kept.items()}, dtype=int)
    models = {"global": ItemMean(shrinkage=5.0), "user": UserItemBias(),
              "persona": SegmentItemMean(pd.concat([personas.assignments, joined]))}
    return {level: rating_errors(pairs, models[level].fit(train).predict(pairs)).set_index("user")["mae"]
            for level in ("global", "persona", "user")}


def new_user_ndcg(user_ratings: pd.DataFrame, n: int, n_max: int, interactions, item_factors: np.ndarray,
                  regularization: float, alpha: float, segments, personas, genres: pd.DataFrame,
                  population: pd.Series, k: int = 10) -> dict[str, float]:
    """NDCG@k of the three levels for one new user who has revealed their first ``n`` ratings.

    The relevant items are the user's liked movies (rating ≥ 4) after their first ``n_max``
    ratings, the same at every ``n``; only the ``n`` revealed items are excluded from the ranking.
    ``global``: popularity (``segments.global_share_`` of a fitted
    :class:`~p13n_utils.recsys.SegmentPopularityRecommender`); ``persona``: popularity inside the
    persona the ``n`` ratings join; ``user``: the ALS fold-in (:func:`als_fold_in`), with the
    popularity fallback at ``n = 0``."""
    from .metrics import ndcg_at_k
    from .recsys import top_k

    r = user_ratings.sort_values("timestamp", kind="mergesort")
    seen = interactions.item_cols(r["item_id"].iloc[:n])
    later = r.iloc[n_max:]
    relevant = set(interactions.item_cols(later.loc[later["rating"] >= 4, "item_id"]).tolist())
    if not relevant:
        raise ValueError(f"user {r['user_id'].iloc[0]} has no liked movie after their first {n_max} ratings")
    persona = assign_genre_persona(personas, r.iloc[:n], genres, population)
    popularity = segments.global_share_
    scores = {"global": popularity,
              "persona": segments.segment_scores_[persona] if persona >= 0 else popularity,
              "user": item_factors @ als_fold_in(item_factors, seen, regularization, alpha) if n > 0 else popularity}
    exclude = sp.csr_matrix((np.ones(len(seen)), (np.zeros(len(seen), int), seen)), shape=(1, len(popularity)))
    return {level: ndcg_at_k(top_k(s[None, :], k, exclude)[0], relevant, k) for level, s in scores.items()}


def cold_context(kind: str, lines: Sequence[str], documents: Sequence[str] | None = None, query: str | None = None,
                 persona_lines: Sequence[str] | None = None, rag_k: int = 4) -> list[str] | None:
    """The context block of a cold-start rating prompt built from a user's ``n`` latest ratings
    (``lines`` as the prompt shows them, ``documents`` as the retriever matches them).

    ``kind``: ``"persona"`` (the description of the persona the ratings join, ``persona_lines``),
    ``"prompt"`` (the ratings themselves, notebook 04's contextual prompt) or ``"rag"`` (the top
    ``rag_k`` of them by BM25 against ``query``, notebook 05). ``None`` (the global prompt) when
    there is no rating yet."""
    from . import retrieval

    if kind not in ("persona", "prompt", "rag"):
        raise ValueError(f"kind must be 'persona', 'prompt' or 'rag', got {kind!r}")
    if not len(lines):
        return None
    if kind == "persona":
        return None if persona_lines is None else list(persona_lines)
    if kind == "prompt":
        return list(lines)
    idx = retrieval.retrieve("bm25", query, list(documents), rag_k)
    return [lines[i] for i in idx]
