"""Implicit-feedback ALS in PyTorch (notebook 08's ``torch_mf``): a minimal, readable
re-implementation of the ``implicit`` library's ALS that runs on any torch device (CPU, CUDA, MPS).

* :class:`SparsePattern` — the observed cells of the users × items matrix, with the two sparse
  products ALS needs;
* :func:`least_squares_cg` — one ALS half-step (all rows at once, conjugate gradient);
* :class:`TorchALS` — the recommender.

The model (Hu, Koren & Volinsky 2008, "Collaborative Filtering for Implicit Feedback
Datasets"): user ``u`` and item ``i`` get factor vectors ``x_u``, ``y_i``; every cell of the
users × items matrix is a target ``p_ui`` (1 if ``u`` interacted with ``i``, else 0) with a
confidence ``c_ui`` (``alpha`` if observed, else 1). ALS minimises

    sum_ui c_ui (p_ui - x_u · y_i)^2 + regularization (|x|^2 + |y|^2)

by alternating: with the item factors ``Y`` fixed, each user's factor solves a ridge
regression ``(Yᵀ C_u Y + λ I) x_u = Yᵀ C_u p_u``, and vice versa. Like ``implicit`` (whose CPU
solver we mirror, so both land on the same factors), we do not solve exactly but take a few
conjugate-gradient steps from the previous factors (Takács, Pilászy & Tikk 2011). The trick
that makes it cheap: ``Yᵀ C_u Y = YᵀY + Yᵀ (C_u - I) Y`` where ``C_u - I`` is zero except on
the user's own items, so one half-step costs ``O(nnz · factors + n · factors²)``. All users are
updated at once with two sparse products (:class:`SparsePattern`) — no Python loop over users.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp

from .recsys import Recommender, _check_k, binarize

__all__ = ["TorchALS", "SparsePattern", "least_squares_cg"]


class SparsePattern:
    """The observed cells of a users × items matrix on a torch device, with the two sparse
    products ALS needs. On CPU and CUDA they use torch's sparse CSR kernels; on other devices
    (e.g. MPS) plain gathers and ``index_add_``, which every device supports.

    Parameters
    ----------
    matrix : scipy CSR matrix (its stored entries are the pattern; values are ignored).
    device : torch.device
    use_sparse_kernels : bool, optional — force one path (default: by device type).
    """

    def __init__(self, matrix: sp.csr_matrix, device, use_sparse_kernels: bool | None = None):
        import torch

        matrix = sp.csr_matrix(matrix)
        matrix.sort_indices()
        self.shape = matrix.shape
        self.nnz = matrix.nnz
        self.crow = torch.as_tensor(matrix.indptr, dtype=torch.long, device=device)
        self.cols = torch.as_tensor(matrix.indices, dtype=torch.long, device=device)
        self.rows = torch.repeat_interleave(torch.arange(self.shape[0], device=device),
                                            torch.diff(self.crow))
        self.sparse = device.type in ("cpu", "cuda") if use_sparse_kernels is None else use_sparse_kernels

    def _csr(self, values):
        import torch

        with warnings.catch_warnings():  # "sparse CSR support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow, self.cols, values, size=self.shape,
                                           check_invariants=False)

    def sampled_dot(self, P, Y):
        """``p_u · y_i`` at every observed cell (u, i): a (nnz,) tensor in CSR order."""
        import torch

        if self.sparse:
            ones = torch.ones(self.nnz, dtype=P.dtype, device=P.device)
            return torch.sparse.sampled_addmm(self._csr(ones), P, Y.T, beta=0.0).values()
        return (P[self.rows] * Y[self.cols]).sum(dim=1)

    def matmul(self, values, Y):
        """``out[u] = Σ_{i observed} values_ui y_i``: the sparse matrix with ``values`` times ``Y``."""
        import torch

        if self.sparse:
            return self._csr(values) @ Y
        out = torch.zeros((self.shape[0], Y.shape[1]), dtype=Y.dtype, device=Y.device)
        return out.index_add_(0, self.rows, values[:, None] * Y[self.cols])


def least_squares_cg(pattern: SparsePattern, confidence, X, Y, regularization: float,
                     cg_steps: int = 3):
    """One ALS half-step: update every row of ``X`` (in place) with ``Y`` fixed.

    Parameters
    ----------
    pattern : SparsePattern of shape (len(X), len(Y)), the observed interactions.
    confidence : Tensor (nnz,), ``c`` of each observed interaction (CSR order).
    X : Tensor (n, f), the factors being solved for, warm start; updated in place.
    Y : Tensor (m, f), the fixed factors.
    regularization : float, λ.
    cg_steps : int, conjugate-gradient steps per row (all rows step together).
    """
    import torch

    f = X.shape[1]
    YtY = Y.T @ Y + regularization * torch.eye(f, dtype=Y.dtype, device=Y.device)

    def apply_A(P):
        """(YᵀY + λI) p_u + Σ_{i observed} (c_ui - 1) (y_i · p_u) y_i, for every row u."""
        return P @ YtY + pattern.matmul((confidence - 1) * pattern.sampled_dot(P, Y), Y)

    b = pattern.matmul(confidence, Y)                 # Yᵀ C_u p_u = Σ_{i observed} c_ui y_i
    r = b - apply_A(X)                                 # residual
    p = r.clone()                                      # search direction
    rs_old = (r * r).sum(dim=1)
    for _ in range(cg_steps):
        active = rs_old > 1e-20                        # rows already solved stop moving
        Ap = apply_A(p)
        denom = (p * Ap).sum(dim=1)
        step = torch.where(active, rs_old / torch.where(active, denom, 1.0), 0.0)
        X += step[:, None] * p
        r -= step[:, None] * Ap
        rs_new = (r * r).sum(dim=1)
        beta = torch.where(active, rs_new / torch.where(active, rs_old, 1.0), 0.0)
        p = r + beta[:, None] * p
        rs_old = rs_new
    return X


class TorchALS(Recommender):
    """Implicit-feedback ALS in PyTorch (conjugate-gradient solver), on any torch device.

    Parameters
    ----------
    factors, regularization, alpha, iterations : as in :class:`p13n_utils.recsys.ImplicitALS`
        (an observed interaction has confidence ``alpha``).
    cg_steps : int, conjugate-gradient steps per half-iteration (``implicit`` uses 3).
    seed : int — factors start as ``0.01 * uniform[0, 1)`` from ``numpy.random.default_rng(seed)``,
        the same start as ``implicit``, so the two can be compared factor by factor.
    device : str, optional — ``"cpu"``, ``"cuda"``, ``"mps"``; default
        :func:`p13n_utils.config.get_device`.
    use_sparse_kernels : bool, optional — see :class:`SparsePattern` (default: by device).
    cpu_threads : int or None, default 1 — torch threads while fitting on the CPU (restored
        afterwards); ``None`` keeps torch's setting. One thread is the default because every
        ALS step is a chain of small memory-bound sparse ops: on a busy shared CPU with
        OpenMP's default spin-waiting, threads waiting for each other at every op made a fit
        10-50x slower (0.4 s → 20 s on latest-small), while a second thread saves about 0.1 s
        there on a quiet machine (``benchmarks/bench_recsys.py`` measures both).
    """

    name = "torch_mf"

    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 10.0,
                 iterations: int = 15, cg_steps: int = 3, seed: int = 0, device: str | None = None,
                 use_sparse_kernels: bool | None = None, cpu_threads: int | None = 1):
        if factors < 1 or iterations < 1 or cg_steps < 1:
            raise ValueError("factors, iterations and cg_steps must be >= 1")
        if alpha <= 0 or regularization < 0:
            raise ValueError("alpha must be > 0 and regularization >= 0")
        self.factors, self.regularization, self.alpha = int(factors), float(regularization), float(alpha)
        self.iterations, self.cg_steps, self.seed = int(iterations), int(cg_steps), int(seed)
        self.device, self.use_sparse_kernels = device, use_sparse_kernels
        self.cpu_threads = cpu_threads

    def _fit(self, X):
        import torch

        from . import config

        device = torch.device(self.device or config.get_device())
        threads = torch.get_num_threads()
        if device.type == "cpu" and self.cpu_threads is not None:
            torch.set_num_threads(self.cpu_threads)
        try:
            self._fit_on(X, device)
        finally:
            torch.set_num_threads(threads)

    def _fit_on(self, X, device):
        import torch

        X = binarize(X)
        by_user = SparsePattern(X, device, self.use_sparse_kernels)
        by_item = SparsePattern(X.T.tocsr(), device, self.use_sparse_kernels)
        conf = torch.full((X.nnz,), self.alpha, dtype=torch.float32, device=device)
        rng = np.random.default_rng(self.seed)
        n_users, n_items = X.shape
        U = torch.as_tensor(rng.random((n_users, self.factors), dtype=np.float32) * 0.01, device=device)
        V = torch.as_tensor(rng.random((n_items, self.factors), dtype=np.float32) * 0.01, device=device)
        _sync(device)
        start = time.perf_counter()
        for _ in range(self.iterations):
            least_squares_cg(by_user, conf, U, V, self.regularization, self.cg_steps)
            least_squares_cg(by_item, conf, V, U, self.regularization, self.cg_steps)
        _sync(device)
        self.fit_seconds_ = time.perf_counter() - start
        self.device_ = device
        self.user_factors_, self.item_factors_ = U, V

    def score(self, users):
        """Scores as a numpy array (moved to the CPU)."""
        users = self._rows(users)
        return self._score_tensor(users).cpu().numpy()

    def _score_tensor(self, users):
        import torch

        index = torch.as_tensor(users, dtype=torch.long, device=self.device_)
        return self.user_factors_[index] @ self.item_factors_.T

    def recommend(self, users, k: int = 10, exclude: sp.csr_matrix | None = None) -> np.ndarray:
        """Top-``k`` on the model's device (masking and ``torch.topk`` there); same contract
        as :meth:`p13n_utils.recsys.Recommender.recommend`."""
        import torch

        users = self._rows(users)
        _check_k(k, self.n_items_)
        out = []
        for start in range(0, users.size, 1024):
            block = users[start:start + 1024]
            scores = self._score_tensor(block)
            if exclude is not None:
                seen = exclude[block].tocoo()
                scores[torch.as_tensor(seen.row, device=scores.device),
                       torch.as_tensor(seen.col, device=scores.device)] = -torch.inf
            values, items = torch.topk(scores, k, dim=1)
            items[torch.isneginf(values)] = -1
            out.append(items.cpu().numpy())
        return np.vstack(out).astype(np.int64) if out else np.empty((0, k), dtype=np.int64)


def _sync(device) -> None:
    """Wait for queued GPU work so that timings measure it."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
