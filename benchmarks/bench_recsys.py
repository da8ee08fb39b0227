"""Collaborative filtering speed and quality, side by side in one run.

Run from the repository root (offline is fine)::

    P13N_DATA_MIRROR=../shared/data .venv/bin/python benchmarks/bench_recsys.py

On MovieLens latest-small, the test split of notebook 08's protocol (each user's last 20% of
ratings held out, positives rated >= 4), with fixed hyper-parameters (below), it measures for
implicit ALS, implicit BPR and our PyTorch ALS (``torch_mf``):

* fit time (median and min of ``--repeats`` fits; implicit with BLAS limited to one thread, as
  ``implicit`` recommends, plus one ALS row without that limit to show why; torch_mf on one CPU
  thread, its default, plus one row with every torch thread);
* NDCG@10 on the test split (same seed every fit);
* recommendation throughput: users/s for the top-10 of every user, excluding their training
  items — through our generic path (numpy scores + ``recsys.top_k``), implicit's own batched
  ``recommend``, and torch_mf's on-device ``torch.topk``.

Every method runs on the CPU; when CUDA is available the same script adds torch_mf on ``cuda``
and, if ``implicit``'s CUDA build (CUDA 13 + ``rmm``) is importable, implicit's GPU ALS/BPR,
and reports their speedups over the CPU rows. Results go to ``benchmarks/results/recsys.json``
(atomically) and a table is printed.

``--quick`` uses a small subsample and 1 repeat (seconds) and writes nothing unless ``--out`` is
given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results" / "recsys.json"
K = 10
ALS = dict(factors=64, regularization=0.05, alpha=10.0, iterations=15)
BPR = dict(factors=64, learning_rate=0.05, regularization=0.01, iterations=100)
TARGETS = {"als_fit_s": 1.0, "torch_mf_ndcg_rel_gap": 0.10}


def _median_min(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), min(values)


def time_fits(make, X, repeats: int):
    """Fit ``make()`` on ``X`` ``repeats`` times; returns (last model, wall seconds per fit).

    Wall time includes the wrapper's input conversion; for torch on CUDA the model
    synchronises before and after its training loop."""
    seconds, model = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        model = make().fit(X)
        seconds.append(time.perf_counter() - start)
    return model, seconds


def time_recommend(recommend, users: np.ndarray, repeats: int) -> float:
    """Users per second of ``recommend(users)`` (best of ``repeats``, after one warm-up call)."""
    recommend(users)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        recommend(users)
        best = min(best, time.perf_counter() - start)
    return users.size / best


def run(quick: bool = False, repeats: int = 3) -> dict:
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    from p13n_utils import config, data, recsys
    from p13n_utils.torch_als import TorchALS

    load_at_start = os.getloadavg()[0]
    config.setup("default")  # seeds, BLAS limited to 1 thread for implicit, quiet libraries
    ml = data.load_movielens("latest-small")
    ratings = recsys.subsample(ml.ratings, n_users=80, n_items=500) if quick else ml.ratings
    catalog = ratings["item_id"].unique() if quick else ml.movies["item_id"]
    _, test = recsys.make_protocol(ratings, item_ids=catalog)
    X = test.train.matrix
    users = test.users
    repeats = 1 if quick else repeats
    als_params = dict(ALS, iterations=3) if quick else ALS
    bpr_params = dict(BPR, iterations=10) if quick else BPR

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    implicit_gpu = recsys.implicit_uses_gpu()
    makers = [("als", "implicit", "cpu", lambda: recsys.ImplicitALS(**als_params, use_gpu=False)),
              ("bpr", "implicit", "cpu", lambda: recsys.ImplicitBPR(**bpr_params, use_gpu=False))]
    makers += [("torch_mf", "p13n_utils (torch)", "cpu (1 thread)" if d == "cpu" else d,
                lambda d=d: TorchALS(**als_params, device=d)) for d in devices]
    makers += [("torch_mf", "p13n_utils (torch)", f"cpu ({torch.get_num_threads()} threads)",
                lambda: TorchALS(**als_params, device="cpu", cpu_threads=None))]
    if implicit_gpu:
        makers += [("als", "implicit", "cuda", lambda: recsys.ImplicitALS(**als_params, use_gpu=True)),
                   ("bpr", "implicit", "cuda", lambda: recsys.ImplicitBPR(**bpr_params, use_gpu=True))]

    rows = []
    for method, library, device, make in makers:
        model, seconds = time_fits(make, X, repeats)
        ndcg = float(recsys.evaluate(model, test, k=K)[0][f"ndcg@{K}"].mean())
        generic = time_recommend(lambda u: recsys.Recommender.recommend(model, u, K, exclude=X), users, repeats)
        row = {"method": method, "library": library, "device": device,
               "fit_s_median": _median_min(seconds)[0], "fit_s_min": _median_min(seconds)[1],
               f"ndcg@{K}": ndcg, "recommend_users_per_s_numpy": generic}
        if library == "implicit":
            own = model.model_
            row["recommend_users_per_s_implicit"] = time_recommend(
                lambda u: own.recommend(u, X[u], N=K, filter_already_liked_items=True), users, repeats)
        else:
            row["recommend_users_per_s_torch"] = time_recommend(lambda u: model.recommend(u, K, exclude=X), users, repeats)
        rows.append(row)
        print(f"{method:9s} {device:15s} fit {row['fit_s_median']:.3f} s  ndcg@{K} {ndcg:.4f}", flush=True)

    # ALS with BLAS free to use every core: why implicit asks for one BLAS thread
    import implicit.als

    def unlimited():
        with threadpool_limits(os.cpu_count(), user_api="blas"):
            model = implicit.als.AlternatingLeastSquares(**als_params, random_state=0, use_gpu=False)
            start = time.perf_counter()
            model.fit(recsys.binarize(X), show_progress=False)
            return time.perf_counter() - start

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # implicit's own BLAS warning
        unlimited_s = [unlimited() for _ in range(repeats)]
    rows.append({"method": "als", "library": "implicit (BLAS threads not limited)", "device": "cpu",
                 "fit_s_median": _median_min(unlimited_s)[0], "fit_s_min": _median_min(unlimited_s)[1]})

    def find(method, library, device):
        return next((r for r in rows if (r["method"], r["library"], r["device"]) == (method, library, device)), None)

    als_cpu, torch_cpu = find("als", "implicit", "cpu"), find("torch_mf", "p13n_utils (torch)", "cpu (1 thread)")
    gap = torch_cpu[f"ndcg@{K}"] / als_cpu[f"ndcg@{K}"] - 1
    if torch.cuda.is_available():
        cuda = {"device_name": torch.cuda.get_device_name(0), "implicit_gpu": implicit_gpu, "speedups": {}}
        for method, library in (("torch_mf", "p13n_utils (torch)"), ("als", "implicit"), ("bpr", "implicit")):
            cpu = find(method, library, "cpu (1 thread)" if method == "torch_mf" else "cpu")
            gpu = find(method, library, "cuda")
            if cpu and gpu:
                cuda["speedups"][method] = {"fit": cpu["fit_s_median"] / gpu["fit_s_median"]}
        if not implicit_gpu:
            cuda["implicit_gpu_note"] = "implicit's CUDA build (CUDA 13 + rmm-cu13) is not importable here"
    else:
        cuda = "not available in this run"
    blas = [{"internal_api": i["internal_api"], "num_threads": i["num_threads"]}
            for i in threadpool_info() if i["user_api"] == "blas"]
    return {
        "benchmark": "bench_recsys",
        "quick": quick,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "load_average_1min_at_start": load_at_start,
                    "load_average_1min_at_end": os.getloadavg()[0],
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "implicit": _version("implicit"), "blas": blas},
        "data": {"dataset": "movielens latest-small" + (" (quick subsample)" if quick else ""),
                 "users": int(X.shape[0]), "items": int(X.shape[1]), "train_interactions": int(X.nnz),
                 "evaluated_users": int(users.size)},
        "settings": {"als": als_params, "bpr": bpr_params, "repeats": repeats, "k": K},
        "rows": rows,
        "cuda": cuda,
        "checks": {"als_fit_s_target": TARGETS["als_fit_s"],
                   "als_fit_within_target": als_cpu["fit_s_median"] <= TARGETS["als_fit_s"],
                   "torch_mf_ndcg_rel_gap": gap,
                   "torch_mf_within_10pct": abs(gap) <= TARGETS["torch_mf_ndcg_rel_gap"]},
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def table(result: dict) -> str:
    """The rows as a markdown table."""
    lines = ["| method | library | device | fit s (median / min) | NDCG@10 | users/s (numpy top-k) | users/s (library's own) |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        own = r.get("recommend_users_per_s_implicit", r.get("recommend_users_per_s_torch"))
        ndcg = f"{r['ndcg@10']:.4f}" if "ndcg@10" in r else "—"
        numpy_rate = f"{r['recommend_users_per_s_numpy']:,.0f}" if "recommend_users_per_s_numpy" in r else "—"
        own_rate = f"{own:,.0f}" if own is not None else "—"
        lines.append(f"| {r['method']} | {r['library']} | {r['device']} | {r['fit_s_median']:.3f} / "
                     f"{r['fit_s_min']:.3f} | {ndcg} | {numpy_rate} | {own_rate} |")
    return "\n".join(lines)


def write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".json", delete=False) as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(f.name, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, nothing written unless --out")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help=f"JSON path (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    result = run(quick=args.quick, repeats=args.repeats)
    print(table(result))
    print(json.dumps({"cuda": result["cuda"], "checks": result["checks"]}, indent=2))
    out = args.out or (None if args.quick else DEFAULT_OUT)
    if out is not None:
        write_json(result, out)
        print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
