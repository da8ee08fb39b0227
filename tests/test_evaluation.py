"""p13n_utils.evaluation: notebook 09's analysis on small synthetic rows and per-user values."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau

from p13n_utils import evaluation as ev
from p13n_utils import recsys, synthetic


# --------------------------------------------------------------------------- multiple comparisons
# Hand-worked, m = 4, p = (0.01, 0.04, 0.03, 0.005); sorted 0.005 < 0.01 < 0.03 < 0.04.
# Holm: 4*0.005 = 0.02, 3*0.01 = 0.03, 2*0.03 = 0.06, 1*0.04 = 0.04 -> running max 0.02, 0.03, 0.06, 0.06.
# BH:   0.005*4/1 = 0.02, 0.01*4/2 = 0.02, 0.03*4/3 = 0.04, 0.04*4/4 = 0.04 -> running min from the top: same.
P = [0.01, 0.04, 0.03, 0.005]


def test_holm_matches_the_hand_worked_example():
    np.testing.assert_allclose(ev.holm(P), [0.03, 0.06, 0.06, 0.02])


def test_benjamini_hochberg_matches_the_hand_worked_example():
    np.testing.assert_allclose(ev.benjamini_hochberg(P), [0.02, 0.04, 0.04, 0.02])


def test_bh_running_minimum_and_caps():
    # sorted 0.02, 0.03, 0.9: BH 0.06, 0.045, 0.9 -> running min from the top 0.045, 0.045, 0.9
    np.testing.assert_allclose(ev.benjamini_hochberg([0.9, 0.02, 0.03]), [0.9, 0.045, 0.045])
    np.testing.assert_allclose(ev.holm([0.5, 0.6]), [1.0, 1.0])  # 2*0.5 = 1.0, capped


def test_holm_is_never_below_bh():
    p = np.random.default_rng(0).uniform(size=30) ** 3
    assert np.all(ev.holm(p) >= ev.benjamini_hochberg(p) - 1e-12)


@pytest.mark.parametrize("bad", [[], [0.1, 1.5], [np.nan]])
def test_bad_p_values_are_refused(bad):
    with pytest.raises(ValueError):
        ev.holm(bad)


def test_correction_table_flags_survivors_and_drops_untestable():
    tests = pd.DataFrame({"claim": list("abcde"), "p": P + [np.nan]})
    out = ev.correction_table(tests, alpha=0.05)
    assert list(out["claim"]) == list("abcd")
    assert list(out["raw"]) == [True, True, True, True]
    assert list(out["holm"]) == [True, False, False, True]
    assert list(out["bh"]) == [True, True, True, True]


# --------------------------------------------------------------------------- one difference
def test_bootstrap_p_value_small_for_a_clear_gain_large_for_none():
    rng = np.random.default_rng(1)
    p_gain, _ = ev.bootstrap_p_value(1.0 + rng.normal(0, 0.5, 40), n_resamples=999)
    p_none, _ = ev.bootstrap_p_value(rng.normal(0, 1, 40), n_resamples=999)
    assert p_gain == pytest.approx(2 / 1000)  # no resampled mean <= 0: (0 + 1) * 2 / (999 + 1)
    assert p_none > 0.2
    with pytest.raises(ValueError):
        ev.bootstrap_p_value([])


def test_paired_test_pairs_on_shared_users_and_refuses_disjoint():
    a = pd.Series([1.0, 2.0, 3.0, 9.0], index=["u1", "u2", "u3", "u4"])
    b = pd.Series([0.5, 1.5, 2.5], index=["u1", "u2", "u3"])
    out = ev.paired_test(a, b, n_resamples=200)
    assert out["n"] == 3 and out["diff"] == pytest.approx(0.5) and out["kind"] == "paired"
    assert out["lower"] == pytest.approx(0.5) and out["upper"] == pytest.approx(0.5)  # every user gains exactly 0.5
    with pytest.raises(ValueError, match="share no users"):
        ev.paired_test(a, pd.Series([1.0], index=["x"]))


def test_paired_test_reports_on_the_metrics_scale():
    """ppl rows come from per-user NLLs: the difference is exp(mean NLL a) - exp(mean NLL b)."""
    a = pd.Series([1.0, 1.2, 0.8], index=[1, 2, 3])
    b = pd.Series([0.5, 0.7, 0.3], index=[1, 2, 3])
    out = ev.paired_test(a, b, n_resamples=100, metric="ppl")
    assert out["diff"] == pytest.approx(np.exp(1.0) - np.exp(0.5))
    assert out["lower"] <= out["diff"] <= out["upper"] and out["p"] < 0.05
    rmse = ev.paired_test(pd.Series([4.0, 4.0]), pd.Series([1.0, 1.0]), n_resamples=50, metric="rmse")
    assert rmse["diff"] == pytest.approx(1.0)  # sqrt(4) - sqrt(1)


def test_approx_test_gives_p_005_at_z_196():
    half = 1.96 * 0.1 / np.sqrt(2)  # each row's se 0.1/sqrt(2): the difference's se is 0.1
    a = {"value": 0.196, "lower": 0.196 - half, "upper": 0.196 + half, "n": 10}
    b = {"value": 0.0, "lower": -half, "upper": half, "n": 10}
    out = ev.approx_test(a, b)
    assert out["p"] == pytest.approx(0.05, abs=1e-4) and out["kind"] == "unpaired"
    assert out["lower"] == pytest.approx(0.0, abs=1e-9)
    flat = ev.approx_test({"value": 1, "lower": 1, "upper": 1, "n": 1}, {"value": 0, "lower": 0, "upper": 0, "n": 1})
    assert flat["kind"] == "untestable" and np.isnan(flat["p"])


# --------------------------------------------------------------------------- the ladder
def _summary(size="smoke"):
    def row(level, method, value, half=0.05, n=20, task="t", metric="mae"):
        return {"notebook": "02_x", "task": task, "level": level, "method": method, "metric": metric,
                "value": value, "lower": value - half, "upper": value + half, "n": n}
    rows = [row("global", "item_mean", 0.90), row("global", "llm", 1.20), row("persona", "segment", 0.85),
            row("user", "contextual", 0.60), row("user", "shuffled_user", 0.50), row("user", "rag_k1", 0.10),
            row("user", "oppu", 0.70), row("user", "oppu_other_user", 0.71),
            row("global", "popularity", 0.1, task="r", metric="ndcg@10", n=30),
            row("user", "als", 0.3, task="r", metric="ndcg@10", n=30)]
    return {"notebooks": [{"notebook": "02_x", "size": size}], "rows": rows}


def _per_user(frame, n=20, seed=0):
    """Per-user values around each row's value (user u's noise shared across methods: pairing helps)."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, 0.3, n)
    return pd.DataFrame([{"task": r.task, "metric": r.metric, "method": r.method, "set": r.set, "user": u,
                          "value": r.value + shared[u] + rng.normal(0, 0.01)}
                         for r in frame.itertuples() for u in range(int(r.n) if r.n <= n else n)])


def test_ladder_picks_the_best_non_control_per_level():
    frame = ev.rows_frame(_summary())
    lad = ev.ladder(frame, metrics=["mae"]).set_index("level")
    assert lad.loc["global", "method"] == "item_mean"
    assert lad.loc["persona", "method"] == "segment"
    assert lad.loc["user", "method"] == "contextual"  # not the control, not a k-sweep point
    assert lad.loc["user", "better"] == pytest.approx(0.30) and lad.loc["user", "kind"] == "unpaired"
    with pytest.raises(ValueError, match="unknown metric"):
        ev.ladder(frame, metrics=["accuracy_of_vibes"])


def test_ladder_pairs_when_per_user_values_exist():
    frame = ev.rows_frame(_summary())
    lad = ev.ladder(frame, per_user=_per_user(frame), metrics=["mae"], n_resamples=500).set_index("level")
    assert lad.loc["user", "kind"] == "paired"
    # the users' shared noise cancels in the paired difference: a far narrower interval than unpaired
    unpaired = ev.ladder(frame, metrics=["mae"]).set_index("level")
    assert (lad.loc["user", "upper"] - lad.loc["user", "lower"]) < (unpaired.loc["user", "upper"] - unpaired.loc["user", "lower"])
    assert lad.loc["user", "p"] < 0.01


def test_rows_on_different_users_are_not_compared():
    summary = _summary()
    summary["rows"].append({**summary["rows"][3], "method": "few_users", "value": 0.2, "lower": 0.15,
                            "upper": 0.25, "n": 5})
    lad = ev.ladder(ev.rows_frame(summary), metrics=["mae"])
    assert "few_users" not in set(lad["method"])  # n = 5: another set, which has no global row


def test_control_table_says_which_rungs_survive_their_control():
    frame = ev.rows_frame(_summary())
    table = ev.control_table(frame).set_index("method")
    assert table.loc["contextual", "control"] == "shuffled_user"
    assert table.loc["oppu", "control"] == "oppu_other_user"
    assert bool(table.loc["contextual", "beats_global"]) and not bool(table.loc["contextual", "survives"])
    assert bool(table.loc["oppu", "beats_global"]) and not bool(table.loc["oppu", "survives"])
    assert ev.control_of("als", ["als", "popularity"]) is None
    # a set with no global row: the control comparison is still made
    summary = _summary()
    summary["rows"] = [{**r, "n": 7} for r in summary["rows"] if r["method"] in ("contextual", "shuffled_user")]
    alone = ev.control_table(ev.rows_frame(summary)).set_index("method")
    assert np.isnan(alone.loc["contextual", "vs_global"]) and not alone.loc["contextual", "beats_global"]
    assert alone.loc["contextual", "vs_control"] == pytest.approx(0.10)


# --------------------------------------------------------------------------- rankings
def test_kendall_tau_matches_scipy_with_ties():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 4, 12).astype(float), rng.integers(0, 4, 12).astype(float)
    assert ev.kendall_tau(x, y) == pytest.approx(kendalltau(x, y).statistic)
    assert ev.kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_tau_interval_is_tight_when_scores_are_sure():
    d = pd.DataFrame({"value": [1.0, 2.0, 3.0], "lower": [0.99, 1.99, 2.99], "upper": [1.01, 2.01, 3.01]})
    out = ev.tau_interval(d, d * 10, n_resamples=200)
    assert out["tau"] == out["lower"] == out["upper"] == 1.0 and out["n"] == 3
    with pytest.raises(ValueError):
        ev.tau_interval(d, d.iloc[::-1])


def test_direct_vs_indirect_orients_mae_so_higher_is_better():
    rows = []
    for label, level, d_method, i_method in ev.DIRECT_INDIRECT:
        v = {"global": 1.0, "persona": 0.9, "user": 0.7}[level]
        rows.append({"notebook": "02", "task": "movielens-rating", "level": level, "method": d_method,
                     "metric": "mae", "value": v, "lower": v - 0.01, "upper": v + 0.01, "n": 50})
        w = {"global": 0.1, "persona": 0.2, "user": 0.3}[level]
        rows.append({"notebook": "08", "task": "movielens-topk", "level": level, "method": i_method,
                     "metric": "ndcg@10", "value": w, "lower": w - 0.01, "upper": w + 0.01, "n": 50})
    table, tau = ev.direct_vs_indirect(ev.rows_frame({"notebooks": [], "rows": rows}), n_resamples=200)
    assert len(table) == 3 and tau["tau"] == pytest.approx(1.0)  # lower MAE and higher NDCG agree
    with pytest.raises(ValueError, match="no movielens-rating mae row"):
        ev.direct_vs_indirect(ev.rows_frame({"notebooks": [], "rows": rows[1:]}))


# --------------------------------------------------------------------------- loading
def test_load_summary_missing_names_the_command(tmp_path, monkeypatch):
    monkeypatch.delenv("P13N_RESULTS", raising=False)
    with pytest.raises(ev.ResultsMissing, match="python -m p13n_utils.run --size smoke"):
        ev.load_summary("smoke", build_dir=tmp_path, out_dir=tmp_path)


def test_load_summary_checks_the_size_and_reads_runner_records(tmp_path, monkeypatch):
    monkeypatch.delenv("P13N_RESULTS", raising=False)
    (tmp_path / "results.json").write_text(json.dumps(_summary(size="default")))
    with pytest.raises(ValueError, match="not 'smoke'"):
        ev.load_summary("smoke", build_dir=tmp_path, out_dir=tmp_path)
    # a results.json that holds only 09's own rows (a run of 09 alone aggregated it): nothing to read
    only_09 = {"notebooks": [{"notebook": "09_evaluation", "size": "smoke"}],
               "rows": [{**r, "notebook": "09_evaluation"} for r in _summary()["rows"]]}
    (tmp_path / "results.json").write_text(json.dumps(only_09))
    with pytest.raises(ev.ResultsMissing, match="--only 00 01"):
        ev.load_summary("smoke", build_dir=tmp_path, out_dir=tmp_path)
    # under the runner: the records of the notebooks before 09 in <build>/results/
    results_dir = tmp_path / "build" / "results"
    results_dir.mkdir(parents=True)
    summary = _summary()
    (results_dir / "02_x.json").write_text(json.dumps({"notebook": "02_x", "size": "smoke", "seconds": 1.0,
                                                       "rows": [{k: v for k, v in r.items() if k != "notebook"}
                                                                for r in summary["rows"]]}))
    (results_dir / "09_evaluation.json").write_text(json.dumps({"notebook": "09_evaluation", "size": "default",
                                                                "rows": []}))
    monkeypatch.setenv("P13N_RESULTS", str(results_dir / "09_evaluation.jsonl"))
    loaded = ev.load_summary("smoke", out_dir=tmp_path / "nowhere")
    assert len(loaded["rows"]) == len(summary["rows"]) and loaded["rows"][0]["notebook"] == "02_x"


# --------------------------------------------------------------------------- seeds
def test_seed_spread_of_a_seeded_random_ranking():
    _, split = recsys.make_protocol(synthetic.ratings(n_users=30, n_items=40, seed=0), min_rating=3.0)
    out = ev.seed_spread(lambda seed: recsys.RandomRecommender(seed=seed), split, seeds=range(5), k=5,
                         n_resamples=200)
    assert len(out["per_seed"]) == 5 and out["per_seed"].nunique() > 1
    assert out["seed_sd"] == pytest.approx(np.std(out["per_seed"].to_numpy(), ddof=1))
    assert 0 < out["seed_sd_lower"] < out["seed_sd"] < out["seed_sd_upper"]
    assert out["user_se"] > 0 and out["n_users"] == len(split.users)
    same = ev.seed_spread(lambda seed: recsys.PopularityRecommender(), split, seeds=[0, 1], k=5, n_resamples=50)
    assert same["seed_sd"] == 0.0
    with pytest.raises(ValueError):
        ev.seed_spread(lambda seed: recsys.PopularityRecommender(), split, seeds=[0])


def test_sd_interval_chi_square_by_hand():
    # values 1, 2, 3: sd = 1, n - 1 = 2; chi2(2) quantiles 0.0506356 (2.5%) and 7.3777589 (97.5%)
    sd, lower, upper = ev.sd_interval([1.0, 2.0, 3.0])
    assert sd == pytest.approx(1.0)
    assert lower == pytest.approx(np.sqrt(2 / 7.3777589), rel=1e-6)
    assert upper == pytest.approx(np.sqrt(2 / 0.0506356), rel=1e-5)
    with pytest.raises(ValueError):
        ev.sd_interval([1.0])


def test_plot_ladder_draws_rungs_and_controls_even_without_a_global_row():
    import matplotlib

    matplotlib.use("Agg")
    summary = _summary()
    summary["rows"] += [{**r, "n": 7} for r in _summary()["rows"] if r["method"] in ("contextual", "shuffled_user")]
    frame = ev.rows_frame(summary)
    fig = ev.plot_ladder(ev.ladder(frame), ev.control_table(frame))
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert any("contextual (n=7)" in text for text in labels) and any("segment" in text for text in labels)
    with pytest.raises(ValueError):
        ev.plot_ladder(ev.ladder(frame)[lambda t: t["level"] == "global"])


def test_load_per_user_none_without_files_and_drops_09(tmp_path):
    assert ev.load_per_user({"per_user_dir": str(tmp_path)}) is None
    assert ev.load_per_user({}) is None
    frame = pd.DataFrame({"task": ["t", "t"], "level": ["user", "user"], "method": ["a", "a"], "metric": ["mae", "mae"],
                          "set": ["s", "s"], "user": [1, 2], "value": [0.5, 0.7]})
    frame.to_csv(tmp_path / "04_x.users.csv.gz", index=False)
    frame.to_csv(tmp_path / "09_evaluation.users.csv.gz", index=False)
    loaded = ev.load_per_user({"per_user_dir": str(tmp_path)})
    assert set(loaded["notebook"]) == {"04_x"} and list(loaded["user"]) == [1, 2]
