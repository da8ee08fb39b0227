"""The results contract: every number a notebook reports goes through :func:`record`.

A row is ``{"task", "level", "method", "metric", "set", "value", "lower", "upper", "n"}`` with
``level`` one of ``global | persona | user``, ``metric`` a name of the registry
(:mod:`p13n_utils.metric_registry`: one name, one meaning), ``set`` a short id of the evaluation
set (which users; :func:`set_id`) so that rows on different subsets are never compared by
accident, and ``lower``/``upper`` a 95% bootstrap interval where one applies.

Per-user values. A row computed from per-user values (:func:`record_ci`, :func:`record_ppl`,
:func:`record_rating_errors`, :func:`record_paired`) keeps them: :func:`user_values` in memory,
and under the runner ``build/results/<notebook>.users.csv.gz`` (columns ``task, level, method,
metric, set, user, value``), so any two methods evaluated on the same users can be paired later
(:func:`load_per_user`, :func:`pair`).

Which set? ``set=`` if given; else the users of the per-user values (``users=``, or the index of
a Series indexed by user) give :func:`set_id`; else the set last used for the same task in this
process (a paired or summary row recorded right after its per-user rows), which
:func:`p13n_utils.tasks.eval_sets` starts with the shared evaluation sets.

Under the runner (env ``P13N_RESULTS`` names a JSON-lines file) each row is appended to that file
as soon as it is recorded (per-user values to env ``P13N_USER_VALUES``), so nothing is lost if a
later cell fails; in interactive use rows are kept in memory. :func:`table` shows them as a
DataFrame.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from . import metric_registry

LEVELS = ("global", "persona", "user")
COLUMNS = ("task", "level", "method", "metric", "set", "value", "lower", "upper", "n")
USER_COLUMNS = ("task", "level", "method", "metric", "set", "user", "value")
_ROWS: list[dict] = []
_USER_VALUES: dict[tuple, pd.Series] = {}  # row key -> per-user values
_LAST_SET: dict[str, str] = {}  # task -> the set id last used for it in this process

# short prefixes of the set ids of the series' tasks (other tasks use their own name)
TASK_ABBREVIATIONS = {"personachat": "pc", "movielens-rating": "mlr", "movielens-topk": "mlk",
                      "movielens-pref": "mlp"}


def _finite(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def set_id(task: str, users) -> str:
    """A short id of an evaluation set: ``"<task abbreviation>-<n>u-<hash>"``, e.g.
    ``"pc-100u-3f2a9c"`` for 100 PersonaChat users. The hash (6 hex digits of SHA-1) is over the
    sorted user ids, so two different subsets of the same size get different ids and the same
    users always get the same id, whichever notebook builds them."""
    keys = sorted({str(u) for u in (users.tolist() if hasattr(users, "tolist") else users)})
    if not keys:
        raise ValueError("set_id needs at least one user")
    digest = hashlib.sha1("\n".join(keys).encode()).hexdigest()[:6]
    return f"{TASK_ABBREVIATIONS.get(task, task)}-{len(keys)}u-{digest}"


def use_set(task: str, set_: str) -> str:
    """Make ``set_`` the set of ``task``'s next rows that have no users of their own (see the
    module docstring); returns it. :func:`p13n_utils.tasks.eval_sets` calls it."""
    if not isinstance(set_, str) or not set_.strip():
        raise ValueError(f"a set id must be a non-empty string, got {set_!r}")
    _LAST_SET[task] = set_
    return set_


def _users_of(values, users=None):
    """The user ids of per-item values: ``users`` if given, else the index of a Series indexed
    by user (named ``user``/``user_id``, or any index that is not a plain 0..n-1 range)."""
    if users is not None:
        users = np.asarray(list(users))
        if users.size != len(values):
            raise ValueError(f"{users.size} users for {len(values)} values")
        return users
    if isinstance(values, pd.Series):
        index = values.index
        if index.name in ("user", "user_id") or not isinstance(index, pd.RangeIndex):
            return index.to_numpy()
    return None


def _resolve_set(task: str, set_: str | None, users) -> str:
    if set_ is None and users is not None:
        set_ = set_id(task, users)
    if set_ is None:
        set_ = _LAST_SET.get(task)
    if set_ is None:
        raise ValueError(f"no evaluation set for task {task!r}: pass set= (e.g. results.set_id(task, users)) "
                         "or users=, or build the task's set with tasks.eval_sets first")
    return use_set(task, set_)


def make_row(task, level, method, metric, value, lower=None, upper=None, n=None, set=None) -> dict:
    """Validate the fields of one results row and return it as a dict (``metric`` must be in
    the registry, :func:`p13n_utils.metric_registry.validate`; ``set`` a non-empty id)."""
    for name, text in (("task", task), ("method", method), ("metric", metric)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{name} must be a non-empty string, got {text!r}")
    metric_registry.validate(metric)
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    if not isinstance(set, str) or not set.strip():
        raise ValueError(f"set (the evaluation set's id, results.set_id) must be a non-empty string, got {set!r}")
    value = _finite("value", value)
    lower = None if lower is None else _finite("lower", lower)
    upper = None if upper is None else _finite("upper", upper)
    if (lower is None) != (upper is None):
        raise ValueError("give both lower and upper, or neither")
    if lower is not None and not lower <= upper:
        raise ValueError(f"lower ({lower}) must not exceed upper ({upper})")
    if n is not None:
        if isinstance(n, bool) or int(n) != n or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        n = int(n)
    return dict(task=task, level=level, method=method, metric=metric, set=set,
                value=value, lower=lower, upper=upper, n=n)


def record(task: str, level: str, method: str, metric: str, value: float,
           lower: float | None = None, upper: float | None = None, n: int | None = None,
           set: str | None = None, per_user: pd.Series | None = None) -> dict:
    """Record one result row (validated). Re-recording the same task/level/method/metric/set
    replaces the earlier row in memory (re-running a cell); the runner keeps the last one.

    ``set``: the evaluation set's id (default: from the users of ``per_user``, else the task's
    current set, see the module docstring). ``per_user``: the per-user values the row was
    computed from (a Series indexed by user), kept beside the row."""
    users = None if per_user is None else _users_of(per_user)
    if per_user is not None and users is None:
        raise ValueError("per_user must be a Series indexed by user")
    if isinstance(task, str) and task.strip():  # else make_row names the bad task
        set = _resolve_set(task, set, users)
    row = make_row(task, level, method, metric, value, lower, upper, n, set=set)
    key = _key(row)
    _ROWS[:] = [r for r in _ROWS if _key(r) != key]
    _ROWS.append(row)
    path = os.environ.get("P13N_RESULTS")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    if per_user is not None:
        _keep_user_values(row, pd.Series(np.asarray(per_user, dtype=float), index=users))
    return row


def _keep_user_values(row: dict, values: pd.Series) -> None:
    _USER_VALUES[_key(row)] = values
    path = os.environ.get("P13N_USER_VALUES")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        head = {k: row[k] for k in ("task", "level", "method", "metric", "set")}
        users = [u.item() if hasattr(u, "item") else u for u in values.index]
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({**head, "users": users, "values": values.tolist()}) + "\n")


def _key(row: dict) -> tuple:
    return row["task"], row["level"], row["method"], row["metric"], row["set"]


def bootstrap_ci(values: Iterable[float], n_resamples: int = 2000, confidence: float = 0.95,
                 seed: int = 0, statistic=np.mean) -> tuple[float, float, float]:
    """``(statistic(values), lower, upper)``: a seeded percentile bootstrap interval.

    ``values`` are per-item numbers (per user, per dialogue). For a paired comparison of two
    methods on the same users, pass the per-user differences."""
    values = np.asarray(list(values), dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("bootstrap_ci needs a non-empty 1-d sequence of numbers")
    if not np.all(np.isfinite(values)):
        raise ValueError("bootstrap_ci got NaN or infinite values; drop or fix them first")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_resamples, values.size))
    stats = np.apply_along_axis(statistic, 1, values[idx]) if statistic is not np.mean \
        else values[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    lower, upper = np.quantile(stats, [alpha, 1 - alpha])
    return float(statistic(values)), float(lower), float(upper)


def ci_row(task: str, level: str, method: str, metric: str, per_item_values, n_resamples: int = 2000,
           seed: int = 0, transform=None, set: str | None = None, users=None) -> dict:
    """A validated row with the bootstrap mean and interval of ``per_item_values``, NOT recorded
    (e.g. another notebook's baseline recomputed on the same users, for a figure).
    ``transform`` (e.g. ``np.exp`` for a perplexity from NLLs) maps the value and both bounds;
    ``set``/``users`` as in :func:`record_ci`."""
    users = _users_of(per_item_values, users)
    values = np.asarray(list(per_item_values), dtype=float)
    value, lower, upper = bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
    if transform is not None:
        value, lower, upper = (float(transform(x)) for x in (value, lower, upper))
    if set is None and users is not None:
        set = set_id(task, users)
    return make_row(task, level, method, metric, value, lower, upper, n=values.size,
                    set=set if set is not None else _LAST_SET.get(task))


def record_ci(task: str, level: str, method: str, metric: str, per_item_values,
              n_resamples: int = 2000, seed: int = 0, set: str | None = None, users=None) -> dict:
    """Bootstrap the mean of ``per_item_values`` and record it with its interval and n.

    The per-user values are kept with the row when their users are known: ``users`` (one id
    per value), or the index of a Series indexed by user. ``set`` defaults to
    :func:`set_id` of those users (see the module docstring)."""
    users = _users_of(per_item_values, users)
    values = np.asarray(list(per_item_values), dtype=float)
    mean, lower, upper = bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
    per_user = None if users is None else pd.Series(values, index=users)
    if per_user is not None and not per_user.index.is_unique:
        raise ValueError("record_ci got several values for one user: average them per user first")
    return record(task, level, method, metric, mean, lower, upper, n=values.size, set=set, per_user=per_user)


def rows() -> list[dict]:
    """The rows recorded in this process, in order."""
    return list(_ROWS)


def clear() -> None:
    """Forget the rows, per-user values and current sets of this process (not the runner's files)."""
    _ROWS.clear()
    _USER_VALUES.clear()
    _LAST_SET.clear()


def user_values(task: str | None = None) -> pd.DataFrame:
    """The per-user values kept in this process (columns :data:`USER_COLUMNS`), optionally of
    one task only."""
    frames = [pd.DataFrame({**dict(zip(USER_COLUMNS[:5], key)), "user": v.index, "value": v.to_numpy()})
              for key, v in _USER_VALUES.items() if task is None or key[0] == task]
    if not frames:
        return pd.DataFrame(columns=list(USER_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(USER_COLUMNS)]


def read_rows(path: str | Path) -> list[dict]:
    """Read a JSON-lines results file; later rows replace earlier ones with the same key."""
    latest: dict[tuple, dict] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = make_row(**json.loads(line))
            latest.pop(_key(row), None)
            latest[_key(row)] = row
    return list(latest.values())


def table(rows_: list[dict] | None = None):
    """The rows (default: this process's) as a pandas DataFrame in contract column order."""
    import pandas as pd

    return pd.DataFrame(rows() if rows_ is None else rows_, columns=list(COLUMNS))


# --------------------------------------------------------------------------- statistics over users


def read_user_values(path: str | Path) -> pd.DataFrame:
    """Read the runner's per-user JSON-lines file (env ``P13N_USER_VALUES``) into a frame with
    :data:`USER_COLUMNS`; a later block for the same row replaces an earlier one."""
    latest: dict[tuple, dict] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            block = json.loads(line)
            key = tuple(block[k] for k in USER_COLUMNS[:5])
            latest.pop(key, None)
            latest[key] = block
    frames = [pd.DataFrame({**{k: b[k] for k in USER_COLUMNS[:5]}, "user": b["users"], "value": b["values"]})
              for b in latest.values()]
    if not frames:
        return pd.DataFrame(columns=list(USER_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(USER_COLUMNS)]


def write_user_values(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write per-user values as a compact gzipped CSV (values to 6 significant digits, a
    fixed gzip timestamp so that an unchanged file stays byte-identical)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = frame[list(USER_COLUMNS)].to_csv(index=False, float_format="%.6g", lineterminator="\n")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(text.encode("utf-8"))
    os.replace(tmp, path)
    return path


def load_per_user(directory: str | Path) -> pd.DataFrame:
    """Every ``<notebook>.users.csv.gz`` (or ``<notebook>.csv.gz``) under ``directory``
    (``build/results`` or ``figures/per_user``) as one frame with columns ``notebook, task,
    level, method, metric, set, user, value``. ``FileNotFoundError`` if there is none."""
    directory = Path(directory)
    files = sorted(directory.glob("*.csv.gz"))
    if not files:
        raise FileNotFoundError(f"no per-user files (*.csv.gz) in {directory}: run the notebooks with "
                                "python -m p13n_utils.run first")
    frames = []
    for f in files:
        frame = pd.read_csv(f, dtype={"user": str})
        frame.insert(0, "notebook", f.name.split(".")[0])
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    out["user"] = _tidy_users(out["user"])
    return out


def _tidy_users(users: pd.Series) -> pd.Series:
    """User ids read as text: back to integers when all of them are."""
    numeric = pd.to_numeric(users, errors="coerce")
    return numeric.astype("int64") if numeric.notna().all() else users


def pair(frame: pd.DataFrame, task: str, metric: str, set: str, method_a: str, method_b: str) -> pd.DataFrame:
    """The per-user values of two methods on the same users: a frame indexed by user with
    columns ``a`` and ``b`` (only the users both have), ready for :func:`paired_difference`.

    ``frame`` is :func:`load_per_user`'s (or :func:`user_values`'). ``ValueError`` if a method
    has no values for this task/metric/set, or if the two have no user in common."""
    sel = frame[(frame["task"] == task) & (frame["metric"] == metric) & (frame["set"] == set)]
    sides = {}
    for side, method in (("a", method_a), ("b", method_b)):
        mine = sel[sel["method"] == method]
        if mine.empty:
            have = sorted(sel["method"].unique())
            raise ValueError(f"no per-user values for method {method!r} on task {task!r}, metric {metric!r}, "
                             f"set {set!r}; methods there: {', '.join(have) or 'none'}")
        sides[side] = mine.drop_duplicates("user", keep="last").set_index("user")["value"]
    out = pd.concat(sides, axis=1, join="inner").sort_index()
    if out.empty:
        raise ValueError(f"{method_a!r} and {method_b!r} have no user in common on {task}/{metric}/{set}: "
                         "a paired comparison needs the same users")
    out.index.name = "user"
    return out


def paired_difference(a: pd.Series, b: pd.Series, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Paired comparison of two methods on the same users: bootstrap the per-user ``a - b``.

    Parameters
    ----------
    a, b : Series indexed by user (e.g. :func:`per_user_nll` of two methods).

    Returns
    -------
    dict with ``mean`` (of a - b), ``lower``, ``upper`` (95% interval), ``n`` and
    ``share_a_lower`` (share of users where a < b).
    """
    if set(a.index) != set(b.index):
        raise ValueError("a and b must cover the same users (a paired comparison); "
                         f"{len(set(a.index) ^ set(b.index))} users differ")
    diff = (a - b.reindex(a.index)).to_numpy()
    mean, lower, upper = bootstrap_ci(diff, n_resamples=n_resamples, seed=seed)
    return {"mean": mean, "lower": lower, "upper": upper, "n": diff.size,
            "share_a_lower": float((diff < 0).mean())}


def record_ppl(task: str, level: str, method: str, per_user: pd.Series, n_resamples: int = 2000,
               seed: int = 0, set: str | None = None) -> dict:
    """Record ``ppl = exp(mean per-user NLL)`` with the bootstrap interval over users
    (the interval of the mean NLL, exponentiated: the percentile bootstrap commutes with a
    monotone map)."""
    mean, lower, upper = bootstrap_ci(per_user.to_numpy(), n_resamples=n_resamples, seed=seed)
    return record(task, level, method, "ppl", float(np.exp(mean)), float(np.exp(lower)),
                  float(np.exp(upper)), n=len(per_user), set=set, per_user=per_user)


def record_rating_errors(task: str, level: str, method: str, errors: pd.DataFrame, n_resamples: int = 2000,
                         seed: int = 0, set: str | None = None) -> dict:
    """Record ``mae`` and ``rmse`` of per-user rating errors (:func:`rating_errors`), each with
    a bootstrap interval over users, and return both rows as ``{"mae": row, "rmse": row}``.

    ``mae`` is the mean over users of the user's MAE. ``rmse`` is ``sqrt(mean over users of
    the user's MSE)`` and its interval the square root of the MSE's interval (the percentile
    bootstrap commutes with a monotone map): averaging per-user RMSEs instead would, with one
    rating per user, just repeat the MAE."""
    mae = record_ci(task, level, method, "mae", errors["mae"], n_resamples=n_resamples, seed=seed, set=set)
    mean, lower, upper = bootstrap_ci(errors["mse"].to_numpy(), n_resamples=n_resamples, seed=seed)
    rmse = record(task, level, method, "rmse", float(np.sqrt(mean)), float(np.sqrt(lower)),
                  float(np.sqrt(upper)), n=len(errors), set=set, per_user=errors["mse"])
    return {"mae": mae, "rmse": rmse}


def record_paired(task: str, level: str, method: str, metric: str, a: pd.Series, b: pd.Series, baseline: str,
                  ratio: bool = False, n_resamples: int = 2000, seed: int = 0, set: str | None = None) -> dict:
    """Record the paired comparison of ``method`` with ``baseline`` on the same users, with its
    per-user differences, and return the :func:`paired_difference` dict (plus ``"row"``).

    ``a``, ``b``: per-user values (Series indexed by user) of ``method`` and ``baseline``.
    The row's metric is ``<metric>_diff_vs_<baseline>`` (the mean of ``a - b``), or with
    ``ratio=True`` ``<metric>_ratio_vs_<baseline>``: ``exp`` of the mean of ``a - b`` and of its
    bounds, for per-user NLLs (a perplexity ratio). Its set is that of the paired users."""
    d = paired_difference(a, b, n_resamples=n_resamples, seed=seed)
    diff = (a - b.reindex(a.index)).astype(float)
    name = f"{metric}_{'ratio' if ratio else 'diff'}_vs_{baseline}"
    value, lower, upper = (np.exp([d["mean"], d["lower"], d["upper"]]) if ratio
                           else (d["mean"], d["lower"], d["upper"]))
    d["row"] = record(task, level, method, name, float(value), float(lower), float(upper), n=d["n"], set=set,
                      per_user=diff)
    return d





def fmt_ci(value: float, lower: float | None = None, upper: float | None = None, digits: int = 3,
           signed: bool = False) -> str:
    """``"0.123 [0.100, 0.150]"``: a value with its interval, as every table of the series shows it
    (``signed=True``: ``"+0.123 [-0.010, +0.250]"``, for differences)."""
    spec = f"{'+' if signed else ''}.{digits}f"
    text = f"{value:{spec}}"
    if lower is not None and upper is not None:
        text += f" [{lower:{spec}}, {upper:{spec}}]"
    return text


def paired_table(comparisons: dict, digits: int = 3):
    """A table of paired comparisons: one row per ``{label: paired_difference(...)}`` entry with
    the mean difference and its 95% interval (``fmt_ci``), ``n`` users, and the share of users
    where the first method is lower."""
    import pandas as pd

    return pd.DataFrame(
        [{"comparison": label, "difference [95% CI]": fmt_ci(d["mean"], d["lower"], d["upper"], digits),
          "n": d["n"], "share lower": f"{d['share_a_lower']:.0%}"} for label, d in comparisons.items()]
    ).set_index("comparison")
