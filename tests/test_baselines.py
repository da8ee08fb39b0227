"""Rating baselines with fit/predict (p13n_utils.baselines), on synthetic ratings."""

import numpy as np
import pandas as pd
import pytest

from p13n_utils import baselines
from p13n_utils.baselines import ItemMean, SegmentItemMean, UserItemBias


def test_user_item_bias_recovers_planted_biases_and_item_mean_falls_back():
    rng = np.random.default_rng(0)
    users, items = np.arange(40), np.arange(30)
    b_user, b_item = rng.normal(0, 0.8, 40), rng.normal(0, 0.8, 30)
    rows = [(u, i, 3.0 + b_user[u] + b_item[i]) for u in users for i in items if rng.random() < 0.7]
    train = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    pairs = pd.DataFrame({"user_id": [0, 1, 2, 999, 0, 998], "item_id": [0, 1, 2, 3, 777, 3], "rating": 3.0})
    truth = np.array([3.0 + b_user[u] + b_item[i] for u, i in zip(pairs.user_id[:3], pairs.item_id[:3])])
    bias = UserItemBias(reg_user=0.1, reg_item=0.1, n_iter=30, clip=(-10, 10)).fit(train).predict(pairs)
    assert np.abs(bias[:3] - truth).max() < 0.05
    mu = train["rating"].mean()
    item_only = ItemMean().fit(train).predict(pairs)
    assert item_only[3] == pytest.approx(train.loc[train.item_id == 3, "rating"].mean())
    assert item_only[4] == pytest.approx(mu)                               # unseen item
    # unknown users get no user bias: the item's baseline, the same for every unknown user
    assert bias[3] == bias[5] and bias[3] == pytest.approx(3.0 + b_user.mean() + b_item[3], abs=0.1)
    assert np.isclose(ItemMean(shrinkage=1e9).fit(train).predict(pairs), mu).all()
    clipped = UserItemBias(reg_user=0.1, reg_item=0.1, clip=(2.5, 3.5)).fit(train).predict(pairs)
    assert clipped.min() >= 2.5 and clipped.max() <= 3.5
    with pytest.raises(ValueError, match="empty"):
        UserItemBias().fit(train.iloc[:0])
    with pytest.raises(ValueError, match="empty"):
        ItemMean().fit(train.iloc[:0])


def test_item_mean_shrinks_toward_the_global_mean():
    train = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [7, 7, 8], "rating": [5.0, 5.0, 2.0]})
    pairs = pd.DataFrame({"user_id": [1, 1], "item_id": [7, 8]})
    mu = 4.0
    np.testing.assert_allclose(ItemMean(shrinkage=1.0).fit(train).predict(pairs), [(10 + mu) / 3, (2 + mu) / 2])


def test_segment_item_mean_uses_the_persona_and_falls_back():
    # persona 0 loves item 1, persona 1 hates it; item 2 is rated by nobody
    train = pd.DataFrame({"user_id": [1, 2, 3, 4], "item_id": [1, 1, 1, 1], "rating": [5.0, 5.0, 1.0, 1.0]})
    segments = pd.Series({1: 0, 2: 0, 3: 1, 4: 1, 5: 0})
    pairs = pd.DataFrame({"user_id": [5, 3, 99, 5], "item_id": [1, 1, 1, 2]})
    raw = SegmentItemMean(segments, shrinkage=0.0).fit(train).predict(pairs)
    np.testing.assert_allclose(raw, [5.0, 1.0, 3.0, 3.0])   # persona means; unknown user, unseen item: means
    shrunk = SegmentItemMean(segments, shrinkage=2.0).fit(train).predict(pairs)
    assert shrunk[0] == pytest.approx((10 + 2 * 3.0) / 4)
    no_persona = SegmentItemMean(segments.map(lambda s: -1)).fit(train).predict(pairs)
    assert (no_persona == 3.0).all()
