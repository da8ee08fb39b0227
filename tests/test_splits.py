"""p13n_utils.splits: no test interaction in train, time order respected, deterministic ties,
small users kept in train, user-disjoint cold-start splits, PersonaChat held-out turns."""

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from p13n_utils import data, splits, synthetic


def pairs(frame):
    return set(zip(frame["user_id"], frame["item_id"]))


@pytest.fixture
def ratings():
    return synthetic.ratings(n_users=40, n_items=60, seed=0, min_per_user=1, max_per_user=25)


@pytest.mark.parametrize("kwargs", [dict(n_test=1), dict(n_test=3), dict(test_frac=0.2), {}])
def test_temporal_split_has_no_leakage_and_respects_time(ratings, kwargs):
    train, test = splits.temporal_split(ratings, **kwargs)
    assert len(test) > 0
    assert not pairs(train) & pairs(test)
    assert len(train) + len(test) == len(ratings)
    last_train = train.groupby("user_id")["timestamp"].max()
    first_test = test.groupby("user_id")["timestamp"].min()
    assert (first_test >= last_train.reindex(first_test.index)).all()
    assert set(test["user_id"]) <= set(train["user_id"])  # every tested user keeps a history


def test_temporal_split_holds_out_the_requested_number(ratings):
    counts = ratings.groupby("user_id").size()
    _, test = splits.temporal_split(ratings, n_test=3)
    held = test.groupby("user_id").size()
    assert (held == 3).all()
    assert set(held.index) == set(counts[counts >= 4].index)  # users with < 4 rows stay in train
    _, test = splits.temporal_split(ratings, test_frac=0.25)
    held = test.groupby("user_id").size()
    expected = np.maximum(1, np.floor(0.25 * counts[held.index]))
    assert (held == expected).all()


def test_users_with_too_few_ratings_stay_in_train():
    ratings = synthetic.ratings(n_users=5, n_items=10, seed=1).iloc[:0]
    ratings = pd.concat([ratings, pd.DataFrame({"user_id": [1, 2, 2], "item_id": [5, 5, 6],
                                                "rating": [4.0, 3.0, 2.0], "timestamp": [10, 10, 20]})])
    train, test = splits.temporal_split(ratings, n_test=1)
    assert 1 in set(train["user_id"]) and 1 not in set(test["user_id"])
    assert test[["user_id", "item_id"]].values.tolist() == [[2, 6]]


def test_temporal_split_breaks_time_ties_deterministically(ratings):
    tied = pd.DataFrame({"user_id": [7] * 4, "item_id": [40, 10, 30, 20],
                         "rating": [1.0, 2.0, 3.0, 4.0], "timestamp": [5] * 4})
    _, test = splits.temporal_split(tied, n_test=2)
    assert test["item_id"].tolist() == [30, 40]
    shuffled = ratings.sample(frac=1.0, random_state=3)
    a = splits.temporal_split(ratings, n_test=2)
    b = splits.temporal_split(shuffled, n_test=2)
    pdt.assert_frame_equal(a[1], b[1])
    pdt.assert_frame_equal(a[0], b[0])


def test_repeated_interaction_cannot_leak_into_train():
    ratings = pd.DataFrame({"user_id": [1, 1, 1], "item_id": [3, 4, 3], "rating": [2.0, 3.0, 5.0],
                            "timestamp": [1, 2, 3]})
    train, test = splits.temporal_split(ratings, n_test=1)
    assert test["item_id"].tolist() == [3]
    assert train["item_id"].tolist() == [4]


def test_temporal_split_input_errors(ratings):
    with pytest.raises(ValueError, match="not both"):
        splits.temporal_split(ratings, test_frac=0.2, n_test=1)
    with pytest.raises(ValueError, match="test_frac"):
        splits.temporal_split(ratings, test_frac=1.5)
    with pytest.raises(KeyError, match="when"):
        splits.temporal_split(ratings, time_col="when")


def test_user_split_is_user_disjoint_and_seeded(ratings):
    train, test = splits.user_split(ratings, test_users_frac=0.25, seed=0)
    assert not set(train["user_id"]) & set(test["user_id"])
    assert test["user_id"].nunique() == 10
    assert len(train) + len(test) == len(ratings)
    again = splits.user_split(ratings.sample(frac=1.0, random_state=1), 0.25, seed=0)
    assert set(again[1]["user_id"]) == set(test["user_id"])
    other = splits.user_split(ratings, 0.25, seed=1)
    assert set(other[1]["user_id"]) != set(test["user_id"])


def test_personachat_split_holds_out_last_turns():
    dialogues = synthetic.personachat(n_dialogues=30, seed=0, min_turns=1, max_turns=7)
    split = splits.personachat_split(dialogues, n_test_turns=1, n_val_turns=1)
    n_turns = dialogues.set_index("dialogue_id")["turns"].map(len)
    splittable = n_turns[n_turns > 2].index
    assert sorted(split.test["dialogue_id"]) == sorted(splittable)
    assert (split.test["turn"].to_numpy() == n_turns[split.test["dialogue_id"]].to_numpy() - 1).all()
    assert (split.val["turn"].to_numpy() == n_turns[split.val["dialogue_id"]].to_numpy() - 2).all()
    # no held-out reply is a train target; train keeps the loader's schema
    train_replies = {(d, reply) for d, turns in zip(split.train["dialogue_id"], split.train["turns"])
                     for _, reply in turns}
    for part in (split.val, split.test):
        assert not train_replies & set(zip(part["dialogue_id"], part["reply"]))
    assert list(split.train.columns) == list(dialogues.columns)
    total = split.train["turns"].map(len).sum() + len(split.val) + len(split.test)
    assert total == n_turns.sum()
    # short dialogues stay whole in train; history of a test turn is everything before it
    short = n_turns[n_turns <= 2].index
    kept = split.train.set_index("dialogue_id").loc[short, "turns"].map(len)
    assert (kept == n_turns[short]).all()
    row = split.test.iloc[0]
    original = dialogues.set_index("dialogue_id").loc[row["dialogue_id"], "turns"]
    assert row["history"] == original[:-1] and (row["partner"], row["reply"]) == original[-1]


def test_personachat_split_on_the_real_data():
    dialogues = data.load_personachat("valid")
    split = splits.personachat_split(dialogues, n_test_turns=1, n_val_turns=1)
    assert len(split.test) == len(split.val) == 1_000
    assert split.train["turns"].map(len).sum() == 7_801 - 2_000


def test_movielens_temporal_split_on_the_real_data():
    ml = data.load_movielens()
    train, test = splits.temporal_split(ml.ratings, n_test=5)
    assert test["user_id"].nunique() == 610  # every user has >= 20 ratings
    assert len(test) == 3_050 and len(train) == 100_836 - 3_050
    assert not pairs(train) & pairs(test)


def test_global_time_split_puts_every_train_row_before_every_test_row(ratings):
    train, test = splits.global_time_split(ratings, test_frac=0.25, min_train=0)
    assert train["timestamp"].max() < test["timestamp"].min()
    assert len(train) + len(test) <= len(ratings) and abs(len(test) / len(ratings) - 0.25) < 0.05
    assert splits.later_train_share(train, test) == 0.0
    assert list(train.columns) == list(ratings.columns) and list(test.columns) == list(ratings.columns)
    pdt.assert_frame_equal(train, train.sort_values(["user_id", "timestamp"], kind="mergesort").reset_index(drop=True))


def test_global_time_split_cut_time_min_train_and_repeats():
    ratings = pd.DataFrame({"user_id": [1, 1, 1, 2, 3, 3], "item_id": [10, 11, 10, 12, 13, 14],
                            "timestamp": [1, 2, 5, 6, 2, 7], "rating": 4.0})
    train, test = splits.global_time_split(ratings, cut_time=5)
    # user 2 appears only after the cut: dropped with min_train=1, kept with min_train=0
    assert test[["user_id", "item_id"]].values.tolist() == [[1, 10], [3, 14]]
    assert train[["user_id", "item_id"]].values.tolist() == [[1, 11], [3, 13]]   # (1, 10) repeated later: removed
    _, with_new = splits.global_time_split(ratings, cut_time=5, min_train=0)
    assert 2 in set(with_new["user_id"])
    with pytest.raises(ValueError, match="test_frac"):
        splits.global_time_split(ratings, test_frac=1.5)
    with pytest.raises(KeyError, match="timestamp"):
        splits.global_time_split(ratings.drop(columns="timestamp"))


def test_per_user_temporal_split_lets_other_users_later_ratings_into_train():
    # user 1 is active early, user 2 late: user 1's test rating is older than all of user 2's train
    ratings = pd.DataFrame({"user_id": [1, 1, 2, 2, 2], "item_id": [1, 2, 3, 4, 5],
                            "timestamp": [1, 2, 10, 11, 12], "rating": 4.0})
    train, test = splits.temporal_split(ratings, n_test=1)
    later = splits.later_train_share(train, test)
    assert later == pytest.approx((2 / 3 + 0) / 2)       # user 1's test (t=2): 2 of 3 train rows later
    train_g, test_g = splits.global_time_split(ratings, test_frac=0.4)
    assert splits.later_train_share(train_g, test_g) == 0.0


def test_stratified_split_matches_the_reference_rule_by_hand():
    # items with 4, 2, 6 and 1 ratings; at ratio 0.75 the reference keeps round(0.75 n) in train,
    # with numpy's half-to-even rounding: 3.0 -> 3, 1.5 -> 2, 4.5 -> 4, 0.75 -> 1
    items = ["a"] * 4 + ["b"] * 2 + ["c"] * 6 + ["d"]
    frame = pd.DataFrame({"user_id": range(len(items)), "item_id": items, "rating": 1.0})
    n_train = {"a": 3, "b": 2, "c": 4, "d": 1}
    # the reference: np.random.seed(42); draws = np.random.rand(n) in row order; within each
    # item, the rows with the smallest draws go to train
    draws = np.random.RandomState(42).rand(len(frame))
    expected_train = set()
    for item, n in n_train.items():
        rows = [r for r in range(len(frame)) if items[r] == item]
        expected_train |= set(sorted(rows, key=lambda r: draws[r])[:n])
    train, test = splits.stratified_split(frame, ratio=0.75, by="item", seed=42)
    assert set(train["user_id"]) == expected_train
    assert set(test["user_id"]) == set(range(len(frame))) - expected_train
    assert train.groupby("item_id").size().to_dict() == n_train
    # by user: each user has one row, round(0.75) = 1, so nothing is held out
    train_u, test_u = splits.stratified_split(frame, by="user")
    assert len(train_u) == len(frame) and test_u.empty
    # another seed changes the assignment of some rows, not the counts
    other, _ = splits.stratified_split(frame, seed=0)
    assert other.groupby("item_id").size().to_dict() == n_train
    with pytest.raises(ValueError, match="by must be"):
        splits.stratified_split(frame, by="time")
    with pytest.raises(ValueError, match="ratio"):
        splits.stratified_split(frame, ratio=1.0)
