import json
import math

import numpy as np
import pandas as pd
import pytest

from p13n_utils import results


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.delenv("P13N_RESULTS", raising=False)
    monkeypatch.delenv("P13N_USER_VALUES", raising=False)
    results.clear()
    results.use_set("t", "t-set")  # the evaluation set of task "t" in these tests
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
    row = results.ci_row("t", "global", "m", "ppl", nll, n_resamples=200, transform=np.exp, set="t-set")
    mean, lower, upper = results.bootstrap_ci(nll, n_resamples=200)
    assert row["value"] == pytest.approx(np.exp(mean)) and row["n"] == 4
    assert (row["lower"], row["upper"]) == pytest.approx((np.exp(lower), np.exp(upper)))
    assert results.rows() == []  # not recorded
    with pytest.raises(ValueError, match="level"):
        results.ci_row("t", "nowhere", "m", "ppl", nll)


# --------------------------------------------------------------------------- sets and per-user values


def test_set_ids_differ_for_different_subsets_and_not_for_order():
    a = results.set_id("personachat", [3, 1, 2])
    assert a == results.set_id("personachat", np.array([1, 2, 3])) and a.startswith("pc-3u-")
    assert results.set_id("personachat", [1, 2, 4]) != a  # same size, other users
    assert results.set_id("personachat", [1, 2]) != a
    assert results.set_id("movielens-rating", [1, 2, 3]).startswith("mlr-3u-")
    with pytest.raises(ValueError, match="at least one user"):
        results.set_id("personachat", [])


def test_eval_set_ids_come_from_the_users():
    from p13n_utils import synthetic, tasks

    ml = synthetic.movielens(n_users=30, n_items=40, seed=0)
    small = tasks.movielens_rating_eval_set(ml, n_users=5, seed=0)
    other = tasks.movielens_rating_eval_set(ml, n_users=5, seed=1)
    assert small.set_id == results.set_id("movielens-rating", small.users)
    assert set(small.users) != set(other.users) and small.set_id != other.set_id


def test_record_ci_keeps_per_user_values_and_derives_the_set():
    s = pd.Series([1.0, 2.0, 4.0], index=pd.Index([10, 11, 12], name="user"))
    row = results.record_ci("t", "user", "m", "mae", s, n_resamples=50)
    assert row["set"] == results.set_id("t", [10, 11, 12])
    kept = results.user_values("t")
    assert kept[["method", "metric", "set", "user", "value"]].values.tolist() == [
        ["m", "mae", row["set"], 10, 1.0], ["m", "mae", row["set"], 11, 2.0], ["m", "mae", row["set"], 12, 4.0]]
    # a following row without users of its own (a summary) takes the same set
    assert results.record("t", "user", "m", "coverage", 0.3)["set"] == row["set"]
    # plain values without user ids: the users= argument names them
    r2 = results.record_ci("t", "user", "m2", "mae", [1.0, 3.0], users=[10, 11], n_resamples=50)
    assert r2["set"] == results.set_id("t", [10, 11]) != row["set"]
    with pytest.raises(ValueError, match="several values for one user"):
        results.record_ci("t", "user", "m3", "mae", [1.0, 3.0], users=[10, 10], n_resamples=50)


def test_record_paired_names_the_row_and_keeps_differences():
    a = pd.Series([1.0, 2.0, 3.0], index=pd.Index([1, 2, 3], name="user_id"))
    b = pd.Series([1.5, 2.0, 2.0], index=pd.Index([3, 2, 1], name="user_id"))  # another order
    d = results.record_paired("t", "user", "m", "mae", a, b, "global", n_resamples=50)
    assert d["row"]["metric"] == "mae_diff_vs_global" and d["row"]["value"] == pytest.approx(0.5 / 3)
    kept = results.user_values("t").set_index("user")["value"]
    assert kept.to_dict() == {1: -1.0, 2: 0.0, 3: 1.5}
    r = results.record_paired("t", "user", "m", "ppl", a, b, "global", ratio=True, n_resamples=50)["row"]
    assert r["metric"] == "ppl_ratio_vs_global" and r["value"] == pytest.approx(np.exp(0.5 / 3))


def test_per_user_file_round_trips_and_pair_pairs_by_user(tmp_path, monkeypatch):
    monkeypatch.setenv("P13N_USER_VALUES", str(tmp_path / "nb.users.jsonl"))
    results.record_ci("t", "user", "a", "mae", pd.Series([1.0, 2.0, 3.0], index=pd.Index([5, 6, 7], name="user")),
                      n_resamples=20, set="t-x")
    results.record_ci("t", "user", "a", "mae", pd.Series([1.5, 2.0, 3.0], index=pd.Index([5, 6, 7], name="user")),
                      n_resamples=20, set="t-x")  # re-run: replaces
    results.record_ci("t", "global", "b", "mae", pd.Series([0.5, 9.0], index=pd.Index([7, 5], name="user")),
                      n_resamples=20, set="t-x")
    frame = results.read_user_values(tmp_path / "nb.users.jsonl")
    assert len(frame) == 5
    results.write_user_values(frame, tmp_path / "out" / "04_x.csv.gz")
    back = results.load_per_user(tmp_path / "out")
    assert list(back.columns) == ["notebook", *results.USER_COLUMNS] and set(back["notebook"]) == {"04_x"}
    paired = results.pair(back, "t", "mae", "t-x", "a", "b")
    assert paired.index.tolist() == [5, 7]
    assert paired.loc[5].tolist() == [1.5, 9.0] and paired.loc[7].tolist() == [3.0, 0.5]
    with pytest.raises(ValueError, match="no per-user values for method 'c'.*methods there: a, b"):
        results.pair(back, "t", "mae", "t-x", "a", "c")
    with pytest.raises(ValueError, match="no per-user values"):
        results.pair(back, "t", "mae", "other-set", "a", "b")


def test_pair_with_no_common_user_is_a_clear_error():
    frame = pd.DataFrame({"task": "t", "level": "user", "method": ["a", "b"], "metric": "mae", "set": "s",
                          "user": [1, 2], "value": [1.0, 2.0]})
    with pytest.raises(ValueError, match="no user in common"):
        results.pair(frame, "t", "mae", "s", "a", "b")


def test_load_per_user_without_files_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="p13n_utils.run"):
        results.load_per_user(tmp_path)


def test_render_markdown_shows_the_set_and_the_legend():
    from p13n_utils import metric_registry, run

    summary = {"notebooks": [], "rows": [dict(notebook="05_x", task="t", level="user", method="m",
                                             metric="ppl_ratio_vs_global", set="pc-3u-abc", value=0.9,
                                             lower=0.8, upper=1.0, n=3)]}
    text = run.render_markdown(summary)
    assert "| ppl_ratio_vs_global | user | m | 0.9 | [0.8, 1] | 3 | pc-3u-abc | 05_x |" in text
    assert metric_registry.get("ppl").description in text and "_ratio_vs_<method>" in text
