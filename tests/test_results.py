import json
import math

import numpy as np
import pandas as pd
import pytest

from p13n_utils import results


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.delenv("P13N_RESULTS", raising=False)
    results.clear()
    yield
    results.clear()


def test_record_keeps_rows_in_memory_and_replaces_same_key():
    results.record("t", "global", "m", "ndcg@10", 0.1)
    results.record("t", "global", "m", "ndcg@10", 0.2, 0.1, 0.3, n=5)
    results.record("t", "user", "m", "ndcg@10", 0.3)
    df = results.table()
    assert list(df.columns) == list(results.COLUMNS)
    assert len(df) == 2 and df.iloc[0]["value"] == 0.2 and df.iloc[0]["n"] == 5


@pytest.mark.parametrize("kwargs, message", [
    (dict(level="team"), "level must be one of"),
    (dict(value=float("nan")), "finite"),
    (dict(value=math.inf), "finite"),
    (dict(value="high"), "must be a number"),
    (dict(lower=0.1), "both lower and upper"),
    (dict(lower=0.5, upper=0.1), "must not exceed"),
    (dict(n=-1), "non-negative integer"),
    (dict(task=""), "task must be"),
])
def test_record_rejects_bad_rows(kwargs, message):
    row = dict(task="t", level="user", method="m", metric="mae", value=1.0)
    row.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        results.record(**row)


def test_record_appends_to_runner_file(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    monkeypatch.setenv("P13N_RESULTS", str(path))
    results.record("t", "user", "a", "mae", 1.0)
    results.record("t", "user", "a", "mae", 0.9)
    results.record("t", "persona", "b", "mae", 1.1)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 3
    rows = results.read_rows(path)
    assert [(r["method"], r["value"]) for r in rows] == [("a", 0.9), ("b", 1.1)]


def test_bootstrap_ci_is_seeded_and_covers_the_mean():
    values = np.random.default_rng(1).normal(2.0, 1.0, size=400)
    mean, lo, hi = results.bootstrap_ci(values, seed=7)
    assert (mean, lo, hi) == results.bootstrap_ci(values, seed=7)
    assert lo < mean < hi
    # the percentile interval of a mean is about +-1.96 standard errors
    se = values.std(ddof=1) / np.sqrt(values.size)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_bootstrap_ci_median_and_bad_input():
    mean, lo, hi = results.bootstrap_ci([1, 2, 3, 100], statistic=np.median)
    assert mean == 2.5 and lo <= hi
    with pytest.raises(ValueError, match="non-empty"):
        results.bootstrap_ci([])
    with pytest.raises(ValueError, match="NaN"):
        results.bootstrap_ci([1.0, float("nan")])


def test_record_ci_records_interval_and_n():
    row = results.record_ci("t", "user", "m", "mae", [1.0, 2.0, 3.0, 4.0], n_resamples=500)
    assert row["value"] == 2.5 and row["n"] == 4 and row["lower"] < 2.5 < row["upper"]


def test_fmt_ci_and_paired_table():
    assert results.fmt_ci(0.12345, 0.1, 0.15) == "0.123 [0.100, 0.150]"
    assert results.fmt_ci(2.0, digits=1) == "2.0"
    assert results.fmt_ci(0.02, -0.01, 0.05, digits=2, signed=True) == "+0.02 [-0.01, +0.05]"
    a = pd.Series([1.0, 2.0, 3.0], index=[1, 2, 3])
    b = pd.Series([2.0, 2.0, 4.0], index=[3, 2, 1])        # paired by user, not by position
    d = results.paired_difference(a, b, n_resamples=200)
    assert d["mean"] == pytest.approx(((1 - 4) + 0 + (3 - 2)) / 3) and d["share_a_lower"] == pytest.approx(1 / 3)
    table = results.paired_table({"a - b": d}, digits=2)
    assert table.loc["a - b", "n"] == 3 and table.loc["a - b", "difference [95% CI]"].startswith(f"{d['mean']:.2f} [")


def test_ci_row_is_validated_not_recorded_and_transforms_all_three():
    results.clear()
    nll = [1.0, 2.0, 3.0, 4.0]
    row = results.ci_row("t", "global", "m", "ppl", nll, n_resamples=200, transform=np.exp)
    mean, lower, upper = results.bootstrap_ci(nll, n_resamples=200)
    assert row["value"] == pytest.approx(np.exp(mean)) and row["n"] == 4
    assert (row["lower"], row["upper"]) == pytest.approx((np.exp(lower), np.exp(upper)))
    assert results.rows() == []  # not recorded
    with pytest.raises(ValueError, match="level"):
        results.ci_row("t", "nowhere", "m", "ppl", nll)
