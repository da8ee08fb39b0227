"""Evaluation metrics shared by the notebooks: ranking metrics for top-K recommendation
(``ndcg@k``, ``recall@k``, ``precision@k``, ``map@k``, ``map_all@k``, catalog ``coverage``) and per-user rating errors
(``mae``, ``rmse``).

Every metric is computed **per user** so that a notebook can report a mean with a bootstrap
interval over users (:func:`p13n_utils.results.record_ci`).

Conventions (binary relevance, the usual top-K setting):

* ``recommended`` is a ranked sequence of item ids, best first. The id ``-1`` marks an empty
  slot (a user with fewer than K items left to recommend) and never counts as a hit.
* ``relevant`` is the set of the user's held-out positive items. A user with no relevant item
  has no defined recall or nDCG: the per-user functions raise, and :func:`ranking_metrics`
  leaves such users out (the caller decides who is evaluated).
* Duplicated ids in ``recommended`` count once, at their first position.

Definitions, with ``hit_i = 1`` if the item at rank ``i`` (1-based) is relevant:

* ``dcg@k = sum_i hit_i / log2(i + 1)``; ``ndcg@k = dcg@k / idcg@k`` where ``idcg@k`` is the
  DCG of a perfect list, with ``min(|relevant|, k)`` hits on top.
* ``recall@k = (number of hits in the top k) / |relevant|``.
* ``precision@k = (number of hits in the top k) / k`` (an empty slot is a miss).
* ``ap@k = sum_i precision@i * hit_i / min(|relevant|, k)``; ``map@k`` is its mean over users.
  This is the truncated denominator of most recent papers and libraries (e.g. RecBole's MAP@k):
  a perfect top ``k`` scores 1 even when the user has more than ``k`` relevant items.
* ``ap_all@k = sum_i precision@i * hit_i / |relevant|``; ``map_all@k`` is its mean over users.
  This is the MAP of microsoft/recommenders' ``map_at_k`` and hence of its README's "Algorithm
  Comparison" table (MovieLens 100k): a user with many held-out items cannot reach 1 in a top
  ``k``, so ``map_all@k <= map@k``. Compare a MAP with a published one only under the same name.
* ``coverage = (distinct items recommended to anybody) / (catalog size)``.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "ndcg_at_k",
    "recall_at_k",
    "precision_at_k",
    "average_precision_at_k",
    "average_precision_all_at_k",
    "ranking_metrics",
    "catalog_coverage",
    "per_user_errors",
]


# --------------------------------------------------------------------------- one user
def _hits(recommended: Sequence, relevant: Iterable, k: int) -> tuple[np.ndarray, int]:
    """The 0/1 hit vector of the top ``k`` recommendations and the number of relevant items."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    relevant = set(relevant)
    if not relevant:
        raise ValueError(
            "the user has no relevant items: recall and nDCG are undefined; "
            "evaluate only users with at least one held-out positive"
        )
    seen: set = set()
    hits = []
    for item in list(recommended)[:k]:
        hit = item != -1 and item in relevant and item not in seen
        seen.add(item)
        hits.append(1.0 if hit else 0.0)
    return np.asarray(hits, dtype=float), len(relevant)


def ndcg_at_k(recommended: Sequence, relevant: Iterable, k: int = 10) -> float:
    """Normalised discounted cumulative gain of one ranked list (binary relevance).

    Parameters
    ----------
    recommended : sequence
        Item ids, best first (``-1`` = empty slot).
    relevant : iterable
        The user's relevant (held-out positive) item ids; must not be empty.
    k : int
        Cut-off.

    Returns
    -------
    float in [0, 1].
    """
    hits, n_relevant = _hits(recommended, relevant, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float(hits @ discounts[: hits.size])
    idcg = float(discounts[: min(n_relevant, k)].sum())
    return dcg / idcg


def recall_at_k(recommended: Sequence, relevant: Iterable, k: int = 10) -> float:
    """Share of the user's relevant items found in the top ``k`` (denominator ``|relevant|``)."""
    hits, n_relevant = _hits(recommended, relevant, k)
    return float(hits.sum()) / n_relevant


def precision_at_k(recommended: Sequence, relevant: Iterable, k: int = 10) -> float:
    """Share of the top ``k`` slots holding a relevant item (denominator ``k``, even when the
    list is shorter or the user has fewer than ``k`` relevant items)."""
    hits, _ = _hits(recommended, relevant, k)
    return float(hits.sum()) / k


def _precision_sum(hits: np.ndarray) -> float:
    """``sum_i precision@i * hit_i`` over the ranks of a hit vector."""
    precision_at_i = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float((precision_at_i * hits).sum())


def average_precision_at_k(recommended: Sequence, relevant: Iterable, k: int = 10) -> float:
    """Average precision at ``k`` of one ranked list, divided by ``min(|relevant|, k)``; its mean
    over users is ``map@k`` (see the module docstring for the other convention)."""
    hits, n_relevant = _hits(recommended, relevant, k)
    return _precision_sum(hits) / min(n_relevant, k)


def average_precision_all_at_k(recommended: Sequence, relevant: Iterable, k: int = 10) -> float:
    """Average precision at ``k`` divided by **all** of the user's relevant items; its mean
    over users is ``map_all@k``, the MAP of microsoft/recommenders' benchmark table."""
    hits, n_relevant = _hits(recommended, relevant, k)
    return _precision_sum(hits) / n_relevant


# --------------------------------------------------------------------------- many users
def ranking_metrics(recommendations: Mapping | Sequence, relevant: Mapping, k: int = 10,
                    users: Iterable | None = None) -> pd.DataFrame:
    """Per-user ``ndcg@k``, ``recall@k``, ``precision@k``, ``map@k`` and ``map_all@k``.

    Parameters
    ----------
    recommendations : mapping user -> ranked item ids, or a 2-d array whose row ``u`` holds
        the ranking of user ``u`` (then users are row numbers).
    relevant : mapping user -> set of relevant item ids.
    k : int
        Cut-off.
    users : iterable, optional
        Users to evaluate. Default: every user of ``relevant`` with at least one relevant item.
        A user asked for explicitly must have recommendations and relevant items.

    Returns
    -------
    DataFrame with one row per user: ``user``, ``n_relevant``, ``ndcg@k``, ``recall@k``,
    ``map@k``, ``precision@k``, ``map_all@k``.
    """
    if users is None:
        users = [u for u, items in relevant.items() if len(items) > 0]
    rows = []
    for user in users:
        try:
            ranked = recommendations[user]
        except (KeyError, IndexError):
            raise KeyError(f"no recommendations for user {user!r}") from None
        items = relevant.get(user, ())
        rows.append({
            "user": user,
            "n_relevant": len(items),
            f"ndcg@{k}": ndcg_at_k(ranked, items, k),
            f"recall@{k}": recall_at_k(ranked, items, k),
            f"map@{k}": average_precision_at_k(ranked, items, k),
            f"precision@{k}": precision_at_k(ranked, items, k),
            f"map_all@{k}": average_precision_all_at_k(ranked, items, k),
        })
    columns = ["user", "n_relevant", f"ndcg@{k}", f"recall@{k}", f"map@{k}", f"precision@{k}", f"map_all@{k}"]
    return pd.DataFrame(rows, columns=columns)


def catalog_coverage(recommendations: Mapping | Sequence, n_items: int, k: int | None = None) -> float:
    """Share of the catalog that appears in at least one user's top ``k``.

    Parameters
    ----------
    recommendations : mapping user -> ranked item ids, or a 2-d array (one row per user).
    n_items : int
        Catalog size (the denominator), > 0.
    k : int, optional
        Cut-off; default: the whole lists.
    """
    if n_items < 1:
        raise ValueError(f"n_items must be positive, got {n_items}")
    lists = recommendations.values() if isinstance(recommendations, Mapping) else recommendations
    shown: set = set()
    for ranked in lists:
        shown.update(item for item in list(ranked)[:k] if item != -1)
    if len(shown) > n_items:
        raise ValueError(f"{len(shown)} distinct items recommended but the catalog has n_items={n_items}")
    return len(shown) / n_items


# --------------------------------------------------------------------------- rating errors
def per_user_errors(users: Sequence, y_true: Sequence, y_pred: Sequence) -> pd.DataFrame:
    """Per-user mean absolute error and root mean squared error of predicted ratings.

    Parameters
    ----------
    users, y_true, y_pred : sequences of equal length (one entry per rating).

    Returns
    -------
    DataFrame with one row per user: ``user``, ``n``, ``mae``, ``mse``, ``rmse``.
    """
    lengths = {len(users), len(y_true), len(y_pred)}
    if len(lengths) != 1:
        raise ValueError(f"users, y_true and y_pred must have the same length, got "
                         f"{len(users)}, {len(y_true)}, {len(y_pred)}")
    frame = pd.DataFrame({"user": np.asarray(users),
                          "y_true": np.asarray(y_true, dtype=float),
                          "y_pred": np.asarray(y_pred, dtype=float)})
    if frame.empty:
        raise ValueError("per_user_errors got no ratings")
    bad = ~np.isfinite(frame[["y_true", "y_pred"]].to_numpy()).all(axis=1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} ratings are NaN or infinite; drop or impute them first")
    frame["abs"] = (frame["y_true"] - frame["y_pred"]).abs()
    frame["sq"] = frame["abs"] ** 2
    out = frame.groupby("user", sort=True).agg(n=("abs", "size"), mae=("abs", "mean"), mse=("sq", "mean"))
    out["rmse"] = np.sqrt(out["mse"])
    return out.reset_index()


# --------------------------------------------------------------------------- generated text
def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L F1 of each prediction against its reference (``rouge_score``, with stemming).

    Parameters
    ----------
    predictions, references : sequences of str, same length.

    Returns
    -------
    ndarray of float in [0, 1], one per pair (an empty prediction scores 0).
    """
    from rouge_score import rouge_scorer

    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return np.array([scorer.score(str(ref), str(pred))["rougeL"].fmeasure
                     for pred, ref in zip(predictions, references)], dtype=float)


def persona_similarity(embedder, replies: Sequence[str], personas: Sequence[Sequence[str]]) -> np.ndarray:
    """Cosine between each reply's embedding and the centroid of its persona facts' embeddings.

    Parameters
    ----------
    embedder : sentence-transformers model (:func:`p13n_utils.models.load_embedder`).
    replies : sequence of str (an empty reply gets the embedding of the empty string).
    personas : one list of facts per reply (each non-empty).

    Returns
    -------
    ndarray of float in [-1, 1], one per reply.
    """
    replies, personas = [str(r) for r in replies], [list(p) for p in personas]
    if len(replies) != len(personas):
        raise ValueError(f"{len(replies)} replies for {len(personas)} personas")
    if any(len(p) == 0 for p in personas):
        raise ValueError("every reply needs at least one persona fact to compare with")
    facts = sorted({f for p in personas for f in p})
    fact_vecs = dict(zip(facts, embedder.encode(facts, normalize_embeddings=True)))
    reply_vecs = embedder.encode(replies, normalize_embeddings=True) if replies else np.zeros((0, 1))
    out = np.empty(len(replies))
    for i, (vec, persona) in enumerate(zip(reply_vecs, personas)):
        centroid = np.mean([fact_vecs[f] for f in persona], axis=0)
        out[i] = float(vec @ centroid / max(np.linalg.norm(centroid), 1e-12))
    return out


__all__ += ["rouge_l", "persona_similarity", "rating_errors"]


def rating_errors(pairs: pd.DataFrame, predictions) -> pd.DataFrame:
    """Per-user ``mae`` and ``rmse`` of ``predictions`` on ``pairs`` (one row per user)."""
    predictions = np.asarray(predictions, dtype=float)
    if predictions.shape != (len(pairs),):
        raise ValueError(f"{predictions.shape} predictions for {len(pairs)} pairs")
    return per_user_errors(pairs["user_id"].to_numpy(), pairs["rating"].to_numpy(), predictions)
