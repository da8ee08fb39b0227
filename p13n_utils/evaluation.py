"""Notebook 09's analysis of the series' results: the ladder across tasks, its multiple-comparison
correction, the matched controls, direct vs indirect rankings and seed variance.

Everything here reads the rows the runner collected (:func:`load_summary`) and, where they were
recorded, per-user values (a long frame ``task, metric, method, user, value``), so the notebook
only calls and shows.

* :func:`load_summary` — the rows of 00-08 of one run size, with a clear error saying which
  command to run when they are missing.
* :func:`paired_test` / :func:`approx_test` — a difference with its 95% interval and a two-sided
  p-value: from the paired bootstrap over users when per-user values exist, else a normal
  approximation from the two rows' intervals (unpaired, so conservative).
* :func:`holm` / :func:`benjamini_hochberg` — adjusted p-values (minimal, shown in 09).
* :func:`ladder` — for every task and metric, the best method at each granularity against the
  global baseline of the same evaluation set; :func:`control_table` — each user-level method
  against global and against its matched control (another user's data).
* :func:`kendall_tau` / :func:`tau_interval` — agreement of two rankings of methods.
* :func:`seed_spread` — a recommender refitted over seeds: spread over seeds vs over users.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import config

EVALUATION_NOTEBOOK = "09_evaluation"
LEVEL_ORDER = ("global", "persona", "user")

# The metrics the ladder compares by default (names of p13n_utils.metric_registry, which says
# their direction); derived rows (_diff_vs_, _ratio_vs_) and slices are left to their notebooks.
LADDER_METRICS = ("ppl", "rougeL", "persona_sim", "user_facts_sim", "mae", "rmse", "reward_pref_acc",
                  "logp_pref_acc", "dpo_pref_acc", "ndcg@10", "recall@10", "map@10")

# Methods that are not candidates for "best at a level": matched controls and floors.
CONTROL_METHODS = ("shuffled_user", "random")
_NOT_A_RUNG = re.compile(r"(?:_other_user$|_k\d+$)")
# Matched controls named by hand (another user's data fed the same way); ``<m>_other_user``
# is found by name.
NAMED_CONTROLS = {"contextual": "shuffled_user", "profile_augmented": "shuffled_user",
                  "refined_prompt": "shuffled_user"}


class ResultsMissing(FileNotFoundError):
    """The rows 09 reads do not exist yet; the message names the command that writes them."""


# --------------------------------------------------------------------------- loading
def run_command(size: str) -> str:
    """The command that writes the rows of 00-08 in ``size``."""
    return f"python -m p13n_utils.run --size {size} --only 00 01 02 03 04 05 06 07 08"


def load_summary(size: str, build_dir: Path | None = None, out_dir: Path | None = None) -> dict:
    """The runner's rows of the notebooks before 09, for run size ``size``.

    Under the runner (env ``P13N_RESULTS`` names 09's own rows file) the records of the
    notebooks already executed in this run are read from ``<build>/results/*.json``; otherwise,
    or if there are none, the aggregated ``results.json`` of that size (``figures/`` for the
    default size, ``build/<size>/figures/`` for another, see :func:`p13n_utils.run.output_dirs`).

    Returns ``{"notebooks": [...], "rows": [...]}`` (each row with its ``notebook``; rows of 09
    and later are left out). Raises
    :class:`ResultsMissing` naming the command to run, or ValueError if the file holds another
    run size."""
    from .run import output_dirs

    size = config.validate_size(size)
    default_build, default_out = output_dirs(size)
    if build_dir is None:
        env = os.environ.get("P13N_RESULTS")
        build_dir = Path(env).parent.parent if env else default_build
    out_dir = Path(out_dir or default_out)
    records = [json.loads(p.read_text()) for p in sorted(Path(build_dir, "results").glob("*.json"))
               if p.stem < EVALUATION_NOTEBOOK]
    if records and os.environ.get("P13N_RESULTS"):
        summary = {"notebooks": [{k: r.get(k) for k in ("notebook", "size", "seconds")} for r in records],
                   "rows": [{"notebook": r["notebook"], **row} for r in records for row in r["rows"]],
                   "per_user_dir": str(Path(build_dir, "results"))}
    else:
        path = out_dir / "results.json"
        if not path.exists():
            raise ResultsMissing(
                f"no results of the {size!r} size at {config.display_path(path)}: notebook 09 analyses the "
                f"rows of 00-08. Run them first:\n    {run_command(size)}")
        summary = json.loads(path.read_text())
        summary = {"notebooks": [n for n in summary["notebooks"] if n["notebook"] < EVALUATION_NOTEBOOK],
                   "rows": [r for r in summary["rows"] if r["notebook"] < EVALUATION_NOTEBOOK],
                   "per_user_dir": str(out_dir / "per_user")}
    sizes = {n.get("size") for n in summary["notebooks"]}
    if sizes - {size}:
        raise ValueError(f"the results hold run size(s) {sorted(sizes - {size})}, not {size!r}; "
                         f"run:\n    {run_command(size)}")
    if not summary["rows"]:
        raise ResultsMissing(f"the {size!r} results hold no rows; run:\n    {run_command(size)}")
    return summary


def load_per_user(summary: dict) -> pd.DataFrame | None:
    """Per-user values of the rows of :func:`load_summary` (long frame ``notebook, task, level,
    method, metric, set, user, value``, :func:`p13n_utils.results.load_per_user`), or None where
    none were kept (then every comparison falls back to :func:`approx_test`)."""
    from . import results

    folder = summary.get("per_user_dir")
    try:
        frame = results.load_per_user(folder) if folder else None
    except FileNotFoundError:
        return None
    if frame is None:
        return None
    frame = frame[frame["notebook"] < EVALUATION_NOTEBOOK]
    return None if frame.empty else frame


def rows_frame(summary: dict) -> pd.DataFrame:
    """The rows as a DataFrame with a ``set`` column: the row's evaluation-set id where it has one, else
    ``"<task>/n=<n>"`` (rows of one task on the same number of users are taken as one
    evaluation set: an assumption that per-user values check where they exist)."""
    frame = pd.DataFrame(summary["rows"])
    if frame.empty:
        raise ValueError("no rows")
    fallback = frame["task"] + "/n=" + frame["n"].astype("Int64").astype(str)
    frame["set"] = frame["set"].fillna(fallback) if "set" in frame else fallback
    return frame


def lower_is_better(metric: str) -> bool:
    """Whether a lower ``metric`` is better, from :mod:`p13n_utils.metric_registry` (ValueError
    naming close matches for an unknown name)."""
    from . import metric_registry

    return metric_registry.get(metric).direction == "lower"


def _aggregate(metric: str):
    """How a row's value comes from its per-user values (mean, exp of the mean for perplexity
    from NLLs, square root of the mean for RMSE from MSEs), as a function of a 2-d array of
    resampled users (one resample per row)."""
    from . import metric_registry

    kind = metric_registry.get(metric).aggregate
    if kind == "exp_mean":
        return lambda v: np.exp(v.mean(axis=-1))
    if kind == "sqrt_mean":
        return lambda v: np.sqrt(v.mean(axis=-1))
    return lambda v: v.mean(axis=-1)


# --------------------------------------------------------------------------- tests of one difference
def bootstrap_p_value(diff: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> tuple[float, np.ndarray]:
    """Two-sided p-value of "mean difference = 0" from the paired bootstrap, and the resampled means.

    Resample the per-user differences with replacement ``n_resamples`` times; the p-value is
    twice the smaller share of resampled means on either side of 0 (with +1 in numerator and
    denominator, so it is never exactly 0): the smallest level at which the percentile
    interval excludes 0."""
    diff = np.asarray(diff, dtype=float)
    if diff.ndim != 1 or diff.size == 0 or not np.all(np.isfinite(diff)):
        raise ValueError("need a non-empty 1-d array of finite per-user differences")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(n_resamples, diff.size))].mean(axis=1)
    return p_from_draws(means), means


def p_from_draws(draws: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no difference" from resampled differences:
    ``2 * (1 + min(#draws <= 0, #draws >= 0)) / (B + 1)``, capped at 1."""
    tail = min((draws <= 0).sum(), (draws >= 0).sum())
    return float(min(1.0, 2 * (tail + 1) / (draws.size + 1)))


def paired_test(a: pd.Series, b: pd.Series, n_resamples: int = 2000, seed: int = 0, metric: str | None = None) -> dict:
    """``a - b`` on the users both cover (Series indexed by user): the difference of the two
    rows' values, its 95% percentile interval and bootstrap p-value (:func:`p_from_draws`), from
    resampling the shared users jointly; ``n`` and ``kind="paired"``.

    ``metric`` (a registry name) says how a row's value comes from per-user values (a mean; exp
    of the mean NLL for ``ppl``; square root of the mean MSE for ``rmse``), so the difference is
    on the metric's own scale; default: the mean."""
    users = a.index.intersection(b.index)
    if users.empty:
        raise ValueError("a and b share no users: nothing to pair")
    stat = _aggregate(metric) if metric else (lambda v: v.mean(axis=-1))
    va, vb = a.loc[users].to_numpy(dtype=float), b.loc[users].to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, users.size, size=(n_resamples, users.size))
    draws = stat(va[idx]) - stat(vb[idx])
    lower, upper = np.quantile(draws, [0.025, 0.975])
    return {"diff": float(stat(va) - stat(vb)), "lower": float(lower), "upper": float(upper),
            "p": p_from_draws(draws), "n": int(users.size), "kind": "paired"}


def approx_test(row_a: Mapping, row_b: Mapping) -> dict:
    """``a - b`` from two rows' values and 95% intervals when no per-user values exist: each
    interval's half-width / 1.96 as its standard error, the two treated as independent
    (unpaired: conservative when the users are the same), a normal p-value. ``kind="unpaired"``;
    ``"untestable"`` with p = NaN when both intervals have zero width (e.g. one user)."""
    from scipy.stats import norm

    if row_a.get("lower") is None or row_b.get("lower") is None:
        raise ValueError("both rows need an interval (lower, upper) for an approximate test")
    se = math.hypot((row_a["upper"] - row_a["lower"]) / 3.92, (row_b["upper"] - row_b["lower"]) / 3.92)
    diff = row_a["value"] - row_b["value"]
    if se == 0:  # one user, or every user alike: no spread to test against
        return {"diff": float(diff), "lower": float(diff), "upper": float(diff), "p": float("nan"),
                "n": int(min(row_a.get("n") or 0, row_b.get("n") or 0)), "kind": "untestable"}
    p = float(2 * norm.sf(abs(diff) / se))
    return {"diff": float(diff), "lower": float(diff - 1.96 * se), "upper": float(diff + 1.96 * se), "p": p,
            "n": int(min(row_a.get("n") or 0, row_b.get("n") or 0)), "kind": "unpaired"}


# --------------------------------------------------------------------------- multiple comparisons
def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error rate).

    Sort the m p-values; the i-th smallest (i = 0..m-1) becomes ``(m - i) * p``, made
    non-decreasing along the sorted order and capped at 1. Reject where adjusted <= alpha."""
    p = _check_p(p_values)
    order = np.argsort(p)
    m = p.size
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate).

    Sort the m p-values; the i-th smallest (i = 1..m) becomes ``p * m / i``, made
    non-increasing from the largest down (a running minimum) and capped at 1."""
    p = _check_p(p_values)
    order = np.argsort(p)
    m = p.size
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def _check_p(p_values) -> np.ndarray:
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or p.size == 0:
        raise ValueError("need a non-empty 1-d sequence of p-values")
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    return p


def correction_table(tests: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """``tests`` (one row per comparison with a ``p`` column) with Holm and BH adjusted p-values
    and whether each claim survives at ``alpha``; rows whose p is NaN (untestable) are left out."""
    out = tests[tests["p"].notna()].copy()
    if out.empty:
        raise ValueError("no testable comparison (every p-value is NaN)")
    out["p_holm"] = holm(out["p"])
    out["p_bh"] = benjamini_hochberg(out["p"])
    out["raw"] = out["p"] <= alpha
    out["holm"] = out["p_holm"] <= alpha
    out["bh"] = out["p_bh"] <= alpha
    return out


# --------------------------------------------------------------------------- the ladder
def _compare(a: Mapping, b: Mapping, per_user: pd.DataFrame | None, n_resamples: int, seed: int) -> dict:
    """Paired test of row ``a`` against row ``b`` (same task, metric and evaluation set) where
    both have per-user values (:func:`p13n_utils.results.pair`), else :func:`approx_test`."""
    from . import results

    if per_user is not None and a.get("set") == b.get("set"):
        try:
            both = results.pair(per_user, a["task"], a["metric"], a["set"], a["method"], b["method"])
        except ValueError:  # one of them kept no per-user values
            both = None
        if both is not None and len(both) >= 2:
            return paired_test(both["a"], both["b"], n_resamples, seed, metric=a["metric"])
    return approx_test(a, b)


def _rungs(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows that may be a rung: not a control, a floor or a k-sweep point, with an interval over
    at least 2 users."""
    keep = ~frame["method"].isin(CONTROL_METHODS) & ~frame["method"].str.contains(_NOT_A_RUNG)
    return frame[keep & frame["lower"].notna() & (frame["n"].fillna(0) >= 2)]


def _best(part: pd.DataFrame, lower: bool) -> pd.Series:
    return part.sort_values(["value", "method"], ascending=[lower, True]).iloc[0]


def ladder(frame: pd.DataFrame, per_user: pd.DataFrame | None = None, metrics: Sequence[str] | None = None,
           n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """For every task, metric and evaluation set (``rows_frame``'s ``set``) that has a global
    row: the best method at each level, and its difference from the best global method
    (``diff, lower, upper, p, kind``; ``better`` is the difference in the good direction).

    ``metrics``: default every metric of :data:`LADDER_METRICS` present; an unknown name raises
    ValueError."""
    metrics = list(metrics) if metrics is not None else [m for m in LADDER_METRICS if m in set(frame["metric"])]
    out = []
    for metric in metrics:
        lower = lower_is_better(metric)
        part_m = _rungs(frame[frame["metric"] == metric])
        for (task, set_), part in part_m.groupby(["task", "set"], sort=True):
            if "global" not in set(part["level"]):
                continue
            base = _best(part[part["level"] == "global"], lower)
            for level in LEVEL_ORDER:
                if level not in set(part["level"]):
                    continue
                best = _best(part[part["level"] == level], lower)
                test = ({"diff": 0.0, "lower": 0.0, "upper": 0.0, "p": 1.0, "n": int(best["n"]), "kind": "baseline"}
                        if level == "global" else _compare(best, base, per_user, n_resamples, seed))
                out.append({"task": task, "metric": metric, "set": set_, "level": level,
                            "method": best["method"], "notebook": best.get("notebook"), "value": best["value"],
                            "baseline": base["method"], **test,
                            "better": -test["diff"] if lower else test["diff"]})
    return pd.DataFrame(out)


def control_of(method: str, methods: Sequence[str]) -> str | None:
    """The matched control of a user-level ``method`` among ``methods``: ``<method>_other_user``
    if recorded, else :data:`NAMED_CONTROLS`; None if it has none."""
    if f"{method}_other_user" in methods:
        return f"{method}_other_user"
    named = NAMED_CONTROLS.get(method)
    return named if named in methods else None


def control_table(frame: pd.DataFrame, per_user: pd.DataFrame | None = None, n_resamples: int = 2000,
                  seed: int = 0) -> pd.DataFrame:
    """Every user-level method that has a matched control, on each ladder metric: its difference
    from the best global method of the same set and from its control (another user's data fed
    the same way). ``survives`` says the difference from the control is significant in the good
    direction (its interval excludes 0). A set without a global row still gets its control
    comparison (``vs_global`` NaN, ``beats_global`` False)."""
    out = []
    for metric in [m for m in LADDER_METRICS if m in set(frame["metric"])]:
        lower = lower_is_better(metric)
        for (task, set_), part in frame[(frame["metric"] == metric) & frame["lower"].notna()].groupby(["task", "set"]):
            glob = _rungs(part[part["level"] == "global"])
            by_method = part.drop_duplicates("method").set_index("method")  # first notebook's row of a method
            for method in part.loc[part["level"] == "user", "method"]:
                control = control_of(method, list(by_method.index))
                if control is None:
                    continue
                row, ctrl = by_method.loc[method], by_method.loc[control]
                row = {**row.to_dict(), "method": method, "task": task, "metric": metric}
                none = {"diff": np.nan, "lower": np.nan, "upper": np.nan}  # no global row on these users
                base = _best(glob, lower) if not glob.empty else pd.Series({"method": None})
                vs_global = none if glob.empty else _compare(row, {**base.to_dict(), "task": task, "metric": metric},
                                                             per_user, n_resamples, seed)
                vs_control = _compare(row, {**ctrl.to_dict(), "method": control, "task": task, "metric": metric},
                                      per_user, n_resamples, seed)
                good = lambda t: t["upper"] < 0 if lower else t["lower"] > 0  # noqa: E731  interval on the good side of 0
                out.append({"task": task, "metric": metric, "set": set_, "method": method, "n": int(row["n"]),
                            "value": row["value"],
                            "control": control,
                            "baseline": base["method"], "vs_global": vs_global["diff"],
                            "vs_global_lower": vs_global["lower"], "vs_global_upper": vs_global["upper"],
                            "vs_control": vs_control["diff"], "vs_control_lower": vs_control["lower"],
                            "vs_control_upper": vs_control["upper"], "p_control": vs_control["p"],
                            "kind": vs_control["kind"], "beats_global": good(vs_global),
                            "survives": good(vs_control)})
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- rankings
def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two score lists of the same methods (ties counted as in tau-b)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError("need two 1-d score lists of the same length >= 2")
    i, j = np.triu_indices(x.size, k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    denom = math.sqrt((sx != 0).sum() * (sy != 0).sum())
    return float((sx * sy).sum() / denom) if denom else float("nan")


def tau_interval(direct: pd.DataFrame, indirect: pd.DataFrame, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Kendall tau between two rankings of the same signals with a bootstrap interval.

    ``direct`` / ``indirect``: one row per signal (same index, same order) with ``value, lower,
    upper``, already oriented so that higher is better. Each resample draws every signal's
    score from a normal with its row's value and standard error (interval half-width / 1.96), a
    parametric bootstrap over the users behind each row, and recomputes tau."""
    if not direct.index.equals(indirect.index):
        raise ValueError("direct and indirect must list the same signals in the same order")
    rng = np.random.default_rng(seed)
    se = lambda f: ((f["upper"] - f["lower"]) / 3.92).to_numpy(dtype=float)  # noqa: E731
    draws_d = rng.normal(direct["value"].to_numpy(float), se(direct), size=(n_resamples, len(direct)))
    draws_i = rng.normal(indirect["value"].to_numpy(float), se(indirect), size=(n_resamples, len(indirect)))
    taus = np.array([kendall_tau(a, b) for a, b in zip(draws_d, draws_i)])
    taus = taus[np.isfinite(taus)]
    lower, upper = np.quantile(taus, [0.025, 0.975]) if taus.size else (float("nan"), float("nan"))
    return {"tau": kendall_tau(direct["value"], indirect["value"]), "lower": float(lower),
            "upper": float(upper), "n": len(direct)}


# The same signal judged directly (rating MAE of the predictor built from it) and indirectly
# (NDCG@10 of the recommender it feeds): item averages, genre-persona averages, the user's own
# ratings (user + item biases vs matrix factorisation of the user's history).
DIRECT_INDIRECT = (("item averages", "global", "item_mean", "popularity"),
                   ("persona averages", "persona", "persona_item_mean", "persona_popularity"),
                   ("the user's own ratings", "user", "user_item_bias", "als"))


def direct_vs_indirect(frame: pd.DataFrame, pairs=DIRECT_INDIRECT, direct=("movielens-rating", "mae"),
                       indirect=("movielens-topk", "ndcg@10"), n_resamples: int = 2000, seed: int = 0):
    """The signals of ``pairs`` (``label, level, direct method, indirect method``) judged both
    ways: a table of both scores and :func:`tau_interval` of the two rankings (direct scores
    negated where lower is better). Uses the first row of each method (its defining notebook)."""
    def pick(task, metric, method):
        part = frame[(frame["task"] == task) & (frame["metric"] == metric) & (frame["method"] == method)]
        if part.empty:
            raise ValueError(f"no {task} {metric} row for {method!r}")
        return part.sort_values("notebook").iloc[0]
    table = []
    for label, level, d_method, i_method in pairs:
        d, i = pick(*direct, d_method), pick(*indirect, i_method)
        table.append({"signal": label, "level": level, "direct method": d_method, f"direct {direct[1]}": d["value"],
                      "d_lower": d["lower"], "d_upper": d["upper"], "indirect method": i_method,
                      f"indirect {indirect[1]}": i["value"], "i_lower": i["lower"], "i_upper": i["upper"]})
    table = pd.DataFrame(table).set_index("signal")
    sign = -1.0 if lower_is_better(direct[1]) else 1.0
    d = pd.DataFrame({"value": sign * table[f"direct {direct[1]}"], "lower": sign * table["d_upper" if sign < 0 else "d_lower"],
                      "upper": sign * table["d_lower" if sign < 0 else "d_upper"]})
    i = table[[f"indirect {indirect[1]}", "i_lower", "i_upper"]].set_axis(["value", "lower", "upper"], axis=1)
    return table, tau_interval(d, i, n_resamples, seed)


# --------------------------------------------------------------------------- seed variance
def sd_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(sd, lower, upper)``: the sample standard deviation (ddof=1) of a few values (e.g. one
    score per seed) with the chi-square interval ``sd * sqrt((n - 1) / chi2_q(n - 1))`` for
    q = 1 - alpha/2 and alpha/2, exact for normal values (a bootstrap of 5 values would be far
    too narrow)."""
    from scipy.stats import chi2

    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size < 2:
        raise ValueError("need at least 2 values for a standard deviation")
    n, sd = values.size, float(np.std(values, ddof=1))
    alpha = 1 - confidence
    return (sd, sd * math.sqrt((n - 1) / chi2.ppf(1 - alpha / 2, n - 1)),
            sd * math.sqrt((n - 1) / chi2.ppf(alpha / 2, n - 1)))


def seed_spread(make_model: Callable[[int], object], split, seeds: Sequence[int], k: int = 10,
                n_resamples: int = 2000) -> dict:
    """Refit ``make_model(seed)`` on ``split`` for each seed; compare the spread of the mean
    NDCG@k over seeds with its spread over users.

    Returns ``{"per_seed": Series of mean NDCG@k by seed, "seed_sd": sd over seeds (ddof=1),
    "seed_sd_lower"/"seed_sd_upper": its 95% interval (:func:`sd_interval`),
    "user_se": the bootstrap standard error of the mean over users (first seed), "n_users"}``."""
    from .recsys import evaluate

    if len(seeds) < 2:
        raise ValueError("need at least 2 seeds for a spread")
    per_seed, first = {}, None
    for seed in seeds:
        table, _ = evaluate(make_model(seed).fit(split.train.matrix), split, k=k)
        per_seed[seed] = float(table[f"ndcg@{k}"].mean())
        first = table[f"ndcg@{k}"].to_numpy() if first is None else first
    values = np.array(list(per_seed.values()))
    sd, lower, upper = sd_interval(values)
    rng = np.random.default_rng(0)
    boot = first[rng.integers(0, first.size, size=(n_resamples, first.size))].mean(axis=1)
    return {"per_seed": pd.Series(per_seed, name=f"ndcg@{k}"), "seed_sd": sd, "seed_sd_lower": lower,
            "seed_sd_upper": upper, "user_se": float(boot.std(ddof=1)), "n_users": int(first.size)}


# --------------------------------------------------------------------------- the figure
def plot_ladder(ladder_table: pd.DataFrame, controls: pd.DataFrame | None = None):
    """One figure for the whole ladder: each persona and user rung as its gain over the global
    baseline of the same evaluation set, in units of that baseline (``better / |global value|``,
    so every metric reads "right of 0 is better"; on a set without a global row, in units of the
    method's own value), with its 95% interval; for the user rungs
    that have a matched control (``control_table``), the gain over the control as a hollow
    marker. Returns the figure."""
    import matplotlib.pyplot as plt

    from .plotting import LEVEL_COLORS

    rungs = ladder_table[ladder_table["level"] != "global"].copy()
    if controls is not None and not controls.empty:  # user methods with a control that are not the best rung
        have = set(zip(rungs["task"], rungs["metric"], rungs["set"], rungs["method"]))
        extra = controls[[k not in have for k in zip(controls["task"], controls["metric"], controls["set"],
                                                      controls["method"])]]
        flip = np.where([lower_is_better(m) for m in extra["metric"]], -1.0, 1.0)
        rungs = pd.concat([rungs, pd.DataFrame({
            "task": extra["task"], "metric": extra["metric"], "set": extra["set"], "level": "user",
            "method": extra["method"], "n": extra["n"], "value": extra["value"], "better": flip * extra["vs_global"],
            "lower": extra["vs_global_lower"], "upper": extra["vs_global_upper"]})], ignore_index=True)
        rungs = rungs.sort_values(["task", "metric", "set", "level"], kind="stable")
    if rungs.empty:
        raise ValueError("no persona or user rung to plot")
    base = ladder_table[ladder_table["level"] == "global"].set_index(["task", "metric", "set"])["value"]
    # units: the global baseline's value; on a set without a global row, the method's own value
    scale = np.array([abs(base.get((t, m, s), v)) or 1.0 for t, m, s, v in
                      zip(rungs["task"], rungs["metric"], rungs["set"], rungs["value"])])
    sign = np.where([lower_is_better(m) for m in rungs["metric"]], -1.0, 1.0)
    gain = rungs["better"].to_numpy() / scale
    lo = np.minimum(sign * rungs["lower"], sign * rungs["upper"]) / scale
    hi = np.maximum(sign * rungs["lower"], sign * rungs["upper"]) / scale
    labels = [f"{t} · {m} · {lv}: {meth} (n={n})" for t, m, lv, meth, n in
              zip(rungs["task"], rungs["metric"], rungs["level"], rungs["method"], rungs["n"])]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rungs) + 1.5))
    y = np.arange(len(rungs))[::-1]
    ax.errorbar(gain, y, xerr=[gain - lo, hi - gain], fmt="o", ecolor="0.5", capsize=2, mfc="none", mec="none")
    ax.scatter(gain, y, c=[LEVEL_COLORS[lv] for lv in rungs["level"]], zorder=3, label="vs global")
    if controls is not None and not controls.empty:
        ctrl = controls.set_index(["task", "metric", "set", "method"])
        for yi, (t, m, s, meth), sc, sg in zip(y, rungs[["task", "metric", "set", "method"]].itertuples(index=False),
                                               scale, sign):
            if (t, m, s, meth) in ctrl.index:
                c = ctrl.loc[(t, m, s, meth)]
                ax.errorbar(sg * c["vs_control"] / sc, yi - 0.3, fmt="s", mfc="none", mec="k", ecolor="k", capsize=2,
                            xerr=[[abs(sg * c["vs_control"] - min(sg * c["vs_control_lower"], sg * c["vs_control_upper"])) / sc],
                                  [abs(max(sg * c["vs_control_lower"], sg * c["vs_control_upper"]) - sg * c["vs_control"]) / sc]])
        ax.errorbar([], [], fmt="s", mfc="none", mec="k", ecolor="k", label="user rung vs its control")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("gain over the global baseline, in units of its value (right of 0 is better)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("The ladder across tasks: each rung against the same users' global baseline")
    return fig
