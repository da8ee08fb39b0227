"""Classic top-K baselines that a recommender-systems course expects beside ALS and BPR.

Each is a minimal reference implementation on the :class:`p13n_utils.recsys.Recommender`
interface (``fit(X)`` on the users × items CSR matrix, then ``score`` / ``recommend`` by row):

* :class:`EASE` — the closed-form linear item-item model of Steck (2019, arXiv 1905.03375).
* :class:`ItemKNN` — cosine item-item neighbourhoods (Sarwar et al. 2001; Deshpande & Karypis 2004).
* :class:`SAR` — Smart Adaptive Recommendations, simplified from microsoft/recommenders: item
  co-occurrence similarity times a time-decayed user affinity (:func:`time_decay`).
* :class:`TorchBPR` — Bayesian Personalized Ranking (Rendle et al. 2009, arXiv 1205.2618) in a
  few lines of PyTorch, negatives drawn **uniformly** over the catalog (as cornac's BPR does;
  ``implicit``'s BPR draws them from the interaction list, i.e. in proportion to popularity).

Defaults were chosen on a validation grid on MovieLens latest-small under the published protocol
(``recsys.make_protocol(ratings, test_frac=0.25, min_rating=0, split="stratified")``, its
validation split; each class's docstring gives the grid and the NDCG@10 it reached; for
comparison, ``recsys.ImplicitALS``'s defaults reach 0.195 there). Everything is seeded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp

from . import memory
from .recsys import Interactions, Recommender, binarize

__all__ = ["EASE", "ItemKNN", "SAR", "time_decay", "TorchBPR", "bpr_step"]


class EASE(Recommender):
    """EASE: scores ``X B`` with the item-item matrix ``B`` of the closed form

    ``P = (XᵀX + λI)⁻¹``,  ``B = I − P · diag(1 / diag(P))``  (so ``diag(B) = 0``),

    the least-squares solution of ``min ‖X − XB‖² + λ‖B‖²`` under ``diag(B) = 0`` (Steck 2019).
    ``X`` is the binarized training matrix. Cost: one ``n_items × n_items`` inverse (about a
    minute for 10k items on 2 CPU cores; memory a few ``4 n_items²`` bytes).

    Parameters
    ----------
    reg : float > 0, the regulariser λ. Default 300, the best of the validation grid {100, 300,
        1000} on MovieLens latest-small under the published protocol (see the module docstring):
        NDCG@10 0.217 there (100: 0.213, 1000: 0.211).
    """

    name = "ease"

    def __init__(self, reg: float = 300.0):
        if reg <= 0:
            raise ValueError(f"reg must be positive, got {reg}")
        self.reg = float(reg)

    def _fit(self, X):
        X = binarize(X)
        dense = X.toarray()  # users × items is small; a sparse XᵀX would hold n_items² pairs as (value, index)
        gram = dense.T @ dense  # float32 (half the memory of float64); counts of 0/1 products: exact
        del dense
        gram[np.diag_indices_from(gram)] += self.reg
        n = len(gram)
        ok, reason = memory.fits(memory.dense_bytes(n, n, dtype=np.float64, copies=3),
                                 f"EASE's inverse of the {n:,} × {n:,} Gram matrix (numpy inverts in float64: "
                                 "a copy, the identity it solves against, the result)",
                                 "inverted in float32 in place instead (scipy; scores may differ in the last digits)")
        if ok:
            P = np.linalg.inv(gram)
        else:
            print(reason)
            P = scipy.linalg.inv(gram.T, overwrite_a=True, check_finite=False)  # gram.T: the same matrix, Fortran order
        del gram  # in place from here: one n_items² matrix instead of four (Binder gives ~2 GB)
        P /= -np.diag(P).copy()                 # column j divided by −P_jj
        P[np.diag_indices_from(P)] += 1.0       # B = I − P diag(1/diag P), whose diagonal is 0
        self.B_ = P
        self.X_ = X

    def score(self, users):
        users = self._rows(users)
        return np.asarray(self.X_[users] @ self.B_)


class ItemKNN(Recommender):
    """Item-kNN: user ``u``'s score for item ``i`` is the sum of the cosine similarities between
    ``i`` and the items ``u`` has in train, counting only ``i``'s ``neighbours`` most similar items.

    ``sim(i, j) = x_iᵀ x_j / (‖x_i‖ ‖x_j‖)`` over the binarized item columns ``x_i``;
    ``score(u, i) = Σ_{j ∈ N_k(i) ∩ I_u} sim(i, j)``.

    Parameters
    ----------
    neighbours : int ≥ 1, neighbours kept per item (``None``: all of them). Default 100, the best
        of the validation grid {20, 50, 100, 200, all} on MovieLens latest-small under the
        published protocol (module docstring): NDCG@10 0.193 there (all neighbours: 0.164).
    block : int, default 1024
        Items whose similarity rows are computed at once (memory ``block × n_items``; the
        result does not depend on it).
    """

    name = "item_knn"

    def __init__(self, neighbours: int | None = 100, block: int = 1024):
        if neighbours is not None and neighbours < 1:
            raise ValueError(f"neighbours must be >= 1 or None, got {neighbours}")
        self.neighbours, self.block = neighbours, block

    def _fit(self, X):
        X = binarize(X)
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=0)).ravel())
        Xn = X @ sp.diags(1.0 / np.maximum(norms, 1e-12))
        XnT, n = Xn.T.tocsr(), X.shape[1]
        blocks = []
        for start in range(0, n, self.block):  # a block of rows at a time: bounded memory
            sim = (XnT[start:start + self.block] @ Xn).toarray().astype(np.float32)
            sim[np.arange(len(sim)), np.arange(start, start + len(sim))] = 0.0   # no item is its own neighbour
            if self.neighbours is not None and self.neighbours < n:
                weakest = np.argpartition(-sim, self.neighbours, axis=1)[:, self.neighbours:]
                np.put_along_axis(sim, weakest, 0.0, axis=1)  # row i keeps its top neighbours
            blocks.append(sp.csr_matrix(sim))
        self.sim_ = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, n), dtype=np.float32)
        self.X_ = X

    def score(self, users):
        users = self._rows(users)
        return np.asarray((self.X_[users] @ self.sim_.T).todense())


def time_decay(ratings: pd.DataFrame, interactions: Interactions, half_life_days: float = 365.0,
               time_col: str = "timestamp") -> sp.csr_matrix:
    """Weights ``2^(−age / half_life)`` aligned with ``interactions.matrix``, for :class:`SAR`.

    ``age`` is the time in days (MovieLens' ``timestamp`` is in seconds) between a rating and the
    **same user's** latest rating: each user's newest rating weighs 1, one half-life older ½.
    The default half-life is a year (see :class:`SAR` for the grid; SAR's own default is 30 days).
    SAR measures age from the latest rating of the whole data set; that multiplies each user's
    weights by one constant, which changes no ranking, but on a data set spanning decades it
    underflows to 0 for early users (2^−250 in float32), so the age is taken per user here.
    """
    ratings = ratings.drop_duplicates(["user_id", "item_id"], keep="last")
    times = ratings[time_col].to_numpy(dtype=np.float64)
    latest = ratings.groupby("user_id")[time_col].transform("max").to_numpy(dtype=np.float64)
    weights = np.power(2.0, -(latest - times) / 86400.0 / float(half_life_days))
    rows = interactions.user_rows(ratings["user_id"].to_numpy())
    cols = interactions.item_cols(ratings["item_id"].to_numpy())
    return sp.csr_matrix((weights, (rows, cols)), shape=interactions.matrix.shape)


class SAR(Recommender):
    """SAR (simplified): ``score = A S`` with a user-item affinity ``A`` and an item-item similarity ``S``.

    * ``C = BᵀB`` counts co-occurrences on the binarized matrix ``B`` (``C_ii`` = item ``i``'s users);
      ``S = C_ij / (C_ii + C_jj − C_ij)`` (Jaccard, SAR's default) or ``C_ij / sqrt(C_ii C_jj)``
      (``"cosine"``) or ``C`` itself (``"cooccurrence"``).
    * ``A_ui = r_ui · w_ui``: the rating times a time-decay weight (:func:`time_decay`), or the
      rating alone when ``decay`` is ``None``.

    Simplified from microsoft/recommenders' ``SARSingleNode``: no co-occurrence threshold, no
    normalisation of scores to the rating scale.

    Parameters
    ----------
    similarity : ``"jaccard"``, ``"cosine"`` or ``"cooccurrence"``.
    decay : csr_matrix, optional, the weights ``w`` (same shape as the ``X`` given to ``fit``).

    Notes
    -----
    Validation grid on MovieLens latest-small under the published protocol (module docstring),
    NDCG@10: similarity {jaccard, cosine, cooccurrence} × decay {none, half-life 30 days,
    365 days}: cooccurrence 0.179 / 0.177 / 0.181, cosine 0.170 / 0.144 / 0.166, jaccard
    0.162 / 0.136 / 0.156. Hence the defaults ``similarity="cooccurrence"`` here and
    ``half_life_days=365`` in :func:`time_decay`; the published SAR row used jaccard and 30 days.
    """

    name = "sar"

    def __init__(self, similarity: str = "cooccurrence", decay: sp.csr_matrix | None = None):
        if similarity not in ("jaccard", "cosine", "cooccurrence"):
            raise ValueError(f"similarity must be jaccard, cosine or cooccurrence; got {similarity!r}")
        self.similarity, self.decay = similarity, decay

    def _fit(self, X):
        dense = binarize(X).toarray()
        C = dense.T @ dense  # float32 co-occurrence counts, exact (no sparse n_items² intermediate)
        del dense
        counts = np.diag(C).copy()
        if self.similarity == "jaccard":
            S = C / np.maximum(counts[:, None] + counts[None, :] - C, 1e-12)
        elif self.similarity == "cosine":
            S = C / np.maximum(np.sqrt(np.outer(counts, counts)), 1e-12)
        else:
            S = C
        if self.decay is not None:
            if self.decay.shape != X.shape:
                raise ValueError(f"decay has shape {self.decay.shape}, X {X.shape}")
            X = sp.csr_matrix(X.multiply(self.decay))
        self.S_, self.A_ = S.astype(np.float32, copy=False), sp.csr_matrix(X, dtype=np.float32)

    def score(self, users):
        users = self._rows(users)
        return np.asarray(self.A_[users] @ self.S_)


# --------------------------------------------------------------------------- BPR in torch
def bpr_step(U, V, b, u, i, j, lr: float, reg: float, weight=None) -> None:
    """One stochastic-gradient **ascent** step of BPR on a batch of triples (user ``u`` prefers ``i`` to ``j``).

    ``x_uij = x_uᵀ(y_i − y_j) + b_i − b_j``; each triple adds ``lr`` times the gradient of
    ``ln σ(x_uij) − reg (‖x_u‖² + ‖y_i‖² + ‖y_j‖² + b_i² + b_j²) / 2``:
    ``g = σ(−x_uij)``, ``x_u += lr (g (y_i − y_j) − reg x_u)``, ``y_i += lr (g x_u − reg y_i)``,
    ``y_j += lr (−g x_u − reg y_j)``, ``b_i += lr (g − reg b_i)``, ``b_j += lr (−g − reg b_j)``.
    Updates of one batch are summed (``index_add_``), as if the triples were visited at once.
    ``weight`` (0/1 per triple) switches triples off (a "negative" the user has in fact seen).
    """
    import torch

    xu, yi, yj = U[u], V[i], V[j]
    w = torch.ones(len(u), device=U.device) if weight is None else weight
    g = torch.sigmoid(-((xu * (yi - yj)).sum(1) + b[i] - b[j]))
    W, G = w[:, None], g[:, None]
    U.index_add_(0, u, lr * W * (G * (yi - yj) - reg * xu))
    V.index_add_(0, i, lr * W * (G * xu - reg * yi))
    V.index_add_(0, j, lr * W * (-G * xu - reg * yj))
    b.index_add_(0, i, lr * w * (g - reg * b[i]))
    b.index_add_(0, j, lr * w * (-g - reg * b[j]))


class TorchBPR(Recommender):
    """BPR with **uniform** negative sampling, trained by :func:`bpr_step` in PyTorch.

    Each epoch visits every training interaction ``(u, i)`` once in a seeded random order and
    pairs it with an item ``j`` drawn uniformly from the catalog; a ``j`` the user has in train
    is skipped (weight 0), as cornac does. Scores ``x_uᵀ y_i + b_i``.

    Parameters
    ----------
    factors, learning_rate, regularization, epochs : the model and its SGD. Defaults: the best
        of a validation grid on latest-small under the published protocol (module docstring), 64
        factors, tried in steps: epochs {20, 50, 60} × learning_rate {0.05, 0.1, 0.2} ×
        regularization {0.001, 0.01, 0.05} × init_std {0.01, 0.1} × batch_size {256, 1024, 2048}
        (not the full product). NDCG@10 0.162 there (epochs 50, learning_rate 0.05,
        regularization 0.01, batch 2048); with 0.001 regularization 0.151 at most.
    batch_size : triples per step.
    init_std : float, standard deviation of the initial factors (normal, mean 0).
    seed : int (the initial factors and the sampling).
    device : torch device, default CPU.
    """

    name = "bpr_torch"

    def __init__(self, factors: int = 64, learning_rate: float = 0.05, regularization: float = 0.01,
                 epochs: int = 50, batch_size: int = 2048, init_std: float = 0.1, seed: int = 0,
                 device: str = "cpu"):
        self.factors, self.learning_rate, self.regularization = int(factors), float(learning_rate), float(regularization)
        self.epochs, self.batch_size, self.seed, self.device = int(epochs), int(batch_size), int(seed), device
        self.init_std = float(init_std)

    def _fit(self, X):
        import torch

        X = binarize(X).tocoo()
        n_users, n_items = X.shape
        seen = np.sort(X.row.astype(np.int64) * n_items + X.col)  # (u, i) pairs as one sorted key
        rng = np.random.default_rng(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        U = (self.init_std * torch.randn(n_users, self.factors, generator=gen)).to(self.device)
        V = (self.init_std * torch.randn(n_items, self.factors, generator=gen)).to(self.device)
        b = torch.zeros(n_items, device=self.device)
        users, items = X.row.astype(np.int64), X.col.astype(np.int64)
        for _ in range(self.epochs):
            order = rng.permutation(users.size)
            negatives = rng.integers(0, n_items, size=users.size)
            keys = users[order] * n_items + negatives
            found = np.searchsorted(seen, keys)
            valid = ~((found < seen.size) & (seen[np.minimum(found, seen.size - 1)] == keys))
            for start in range(0, users.size, self.batch_size):
                sl = slice(start, start + self.batch_size)
                u, i, j = (torch.as_tensor(a[sl], device=self.device)
                           for a in (users[order], items[order], negatives))
                w = torch.as_tensor(valid[sl], dtype=torch.float32, device=self.device)
                bpr_step(U, V, b, u, i, j, self.learning_rate, self.regularization, w)
        self.user_factors_ = U.cpu().numpy()
        self.item_factors_ = V.cpu().numpy()
        self.item_bias_ = b.cpu().numpy()

    def score(self, users):
        users = self._rows(users)
        return self.user_factors_[users] @ self.item_factors_.T + self.item_bias_
