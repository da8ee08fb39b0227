"""Fairness: per-group gaps against a hand computation on a toy table, popularity shares,
exposure and the re-ranking cap; bad input (one-member groups, missing groups)."""

import warnings

import numpy as np
import pandas as pd
import pytest

from p13n_utils import fairness


def toy():
    values = pd.Series([0.2, 0.4, 0.9, 1.1, 1.0, 0.5, 0.7], index=list("abcdefg"))
    groups = pd.Series(["x", "x", "y", "y", "y", "z", "z"], index=list("abcdefg"))
    return values, groups


def test_group_gaps_match_a_hand_computation():
    values, groups = toy()
    table, summary = fairness.group_gaps(values, groups, n_resamples=200)
    by_hand = {"x": (0.2 + 0.4) / 2, "y": (0.9 + 1.1 + 1.0) / 3, "z": (0.5 + 0.7) / 2}
    assert dict(zip(table["group"], table["mean"])) == pytest.approx(by_hand)
    assert dict(zip(table["group"], table["n"])) == {"x": 2, "y": 3, "z": 2}
    assert summary["difference"] == pytest.approx(by_hand["y"] - by_hand["x"])
    assert summary["ratio"] == pytest.approx(by_hand["x"] / by_hand["y"])
    assert (summary["lowest"], summary["highest"]) == ("x", "y")
    assert (table["lower"] <= table["mean"]).all() and (table["mean"] <= table["upper"]).all()


def test_group_gaps_agree_with_metricframe_difference():
    from fairlearn.metrics import MetricFrame

    values, groups = toy()
    frame = MetricFrame(metrics=lambda t, p: np.mean(t), y_true=values, y_pred=values, sensitive_features=groups)
    assert fairness.group_gaps(values, groups, n_resamples=50)[1]["difference"] == pytest.approx(frame.difference())


def test_a_one_member_group_is_left_out_of_the_gap_with_a_warning():
    values, groups = toy()
    groups["g"] = "solo"
    with pytest.warns(UserWarning, match="solo"):
        table, summary = fairness.group_gaps(values, groups, n_resamples=50)
    solo = table.set_index("group").loc["solo"]
    assert not solo["in_gap"] and solo["n"] == 1 and np.isnan(solo["lower"])
    assert summary["lowest"] == "x"  # the solo user (0.7) would not be the lowest anyway; the gap ignores it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="fewer than two groups"):
            fairness.group_gaps(values, pd.Series(["x"] * 6 + ["y"], index=values.index), n_resamples=50)
    with pytest.raises(KeyError, match="no group"):
        fairness.group_gaps(values, groups.drop("a"))


def test_activity_groups_are_equal_sized_quartiles():
    counts = pd.Series([1, 1, 1, 1, 5, 6, 7, 8], index=range(8))
    groups = fairness.activity_groups(counts)
    assert groups.value_counts().to_dict() == {"Q1": 2, "Q2": 2, "Q3": 2, "Q4": 2}
    assert groups[7] == "Q4" and groups[0] == "Q1"
    with pytest.raises(ValueError):
        fairness.activity_groups(counts.iloc[:3])


def test_popularity_shares_exposure_and_cap():
    popular = fairness.popular_items(np.array([50, 1, 2, 40, 3, 4, 5, 6, 7, 8]), top_frac=0.2)
    assert popular.nonzero()[0].tolist() == [0, 3]
    recs = np.array([[0, 3, 1], [0, 2, 4]])
    shares = fairness.popularity_shares(recs, {0: {1}, 1: {0, 5}}, popular)
    assert shares["rec_share"] == pytest.approx(3 / 6) and shares["heldout_share"] == pytest.approx(1 / 3)
    assert shares["ratio"] == pytest.approx(1.5)
    exposure = fairness.exposure_by_group(recs, np.where(popular, "head", "tail"))
    w = 1 / np.log2([2, 3, 4])
    assert exposure["head"] == pytest.approx((w[0] + w[1] + w[0]) / (2 * w.sum()))
    assert fairness.exposure_by_group(recs, np.where(np.arange(10) < 9, "seen", "never"))["never"] == 0
    capped = fairness.cap_popular(np.array([[0, 3, 1, 2, 4]]), popular, k=3, max_popular=1)
    assert capped.tolist() == [[0, 1, 2]]
    assert fairness.cap_popular(np.array([[0, 3, 1]]), popular, k=3, max_popular=3).tolist() == [[0, 3, 1]]
    with pytest.raises(ValueError):
        fairness.cap_popular(recs, popular, k=3, max_popular=4)


def test_gap_interval_brackets_the_gap_and_excludes_zero_for_separated_groups():
    values = pd.Series(np.r_[np.full(20, 1.0), np.full(20, 2.0)] + np.linspace(0, 0.1, 40))
    groups = pd.Series(["a"] * 20 + ["b"] * 20)
    _, summary = fairness.group_gaps(values, groups, n_resamples=300)
    assert summary["difference_lower"] <= summary["difference"] <= summary["difference_upper"]
    assert summary["difference_lower"] > 0.5
