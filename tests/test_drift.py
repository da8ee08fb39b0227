"""Drift: gap windows, the recency-weighted user offset by hand, the refresh rule."""

import numpy as np
import pandas as pd
import pytest

from p13n_utils import drift


def test_gap_windows_label_each_gap():
    labels = drift.gap_windows([0, 5, 30, 400], [0, 30, 365])
    assert labels.tolist() == ["[0, 30) d", "[0, 30) d", "[30, 365) d", "≥ 365 d"]
    with pytest.raises(ValueError, match="negative"):
        drift.gap_windows([-1], [0, 30])
    with pytest.raises(ValueError, match="increase from 0"):
        drift.gap_windows([1], [5, 30])


def test_recency_weighted_offset_by_hand():
    D = drift.DAY
    train = pd.DataFrame({"user_id": [1, 1, 2, 2], "item_id": [10, 11, 10, 11],
                          "rating": [5.0, 1.0, 3.0, 3.0], "timestamp": [0, 100 * D, 0, 100 * D]})
    model = drift.RecencyUserBias(half_life_days=100, reg_user=1.0, reg_item=0.0).fit(train)
    m10, m11 = 4.0, 2.0  # item means (reg_item 0)
    w_old, w_new = 0.5, 1.0  # the older rating is one half-life older than the user's latest
    b1 = (w_old * (5 - m10) + w_new * (1 - m11)) / (w_old + w_new + 1.0)
    assert model.b_user_[1] == pytest.approx(b1)
    flat = drift.RecencyUserBias(half_life_days=None, reg_user=1.0, reg_item=0.0).fit(train)
    assert flat.b_user_[1] == pytest.approx(((5 - m10) + (1 - m11)) / 3)
    pred = model.predict(pd.DataFrame({"user_id": [1, 99], "item_id": [10, 10]}))
    assert pred[0] == pytest.approx(m10 + b1) and pred[1] == pytest.approx(m10)  # new user: item mean
    with pytest.raises(ValueError):
        drift.RecencyUserBias(half_life_days=0)
    with pytest.raises(ValueError, match="empty"):
        drift.RecencyUserBias().fit(train.iloc[:0])


def test_refresh_interval():
    assert drift.refresh_interval({"a": 0.2, "b": 0.15, "c": 0.05}) == "c"
    assert drift.refresh_interval({"a": 0.2, "b": 0.15}) is None
    assert drift.refresh_interval({"a": -0.1, "b": 0.1}) is None
