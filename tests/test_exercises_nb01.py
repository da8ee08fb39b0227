import pandas as pd
import pytest

from p13n_utils import lesson, profiles, splits, synthetic
from p13n_utils.exercises import nb01


@pytest.fixture(scope="module")
def ml():
    return synthetic.movielens(n_users=12, n_items=30, seed=3)


def by_hand_last_n(ratings: pd.DataFrame, n: int) -> pd.DataFrame:
    """A learner's answer: sort with item id breaking ties, last n of users with more than n."""
    ordered = ratings.sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")
    tested = ordered.groupby("user_id").filter(lambda g: len(g) > n)
    return tested.groupby("user_id").tail(n)


def test_check_1_counts_users_per_kind(ml):
    train, _ = splits.temporal_split(ml.ratings, n_test=2)
    user_profiles = profiles.movielens_profiles(ml, ratings=train)
    right = {kind: sum(p.counts()[kind] > 0 for p in user_profiles.values()) for kind in nb01.KINDS}
    assert right["attributes"] == 0 and right["interactions"] > 0  # latest-small schema: no attributes
    assert nb01.check_1(right, user_profiles) is True
    wrong = dict(right, interactions=right["interactions"] + 1)
    with pytest.raises(lesson.ExerciseFailed, match="recount interactions"):
        nb01.check_1(wrong, user_profiles)
    with pytest.raises(lesson.ExerciseFailed, match="keys"):
        nb01.check_1({"texts": 1}, user_profiles)


def test_check_2_compares_with_temporal_split(ml):
    ratings = ml.ratings  # synthetic timestamps repeat on purpose, and some users are short
    assert nb01.check_2(by_hand_last_n(ratings, 3), ratings, n_test=3) is True
    no_tiebreak = (ratings.sort_values(["user_id", "timestamp"], kind="mergesort")
                   .groupby("user_id").filter(lambda g: len(g) > 3).groupby("user_id").head(3))
    with pytest.raises(lesson.ExerciseFailed, match="sort by user_id, timestamp"):
        nb01.check_2(no_tiebreak, ratings, n_test=3)
    with pytest.raises(lesson.ExerciseFailed, match="user_id and item_id"):
        nb01.check_2(pd.DataFrame({"user": [1]}), ratings, n_test=3)


def test_check_3_recounts_characters():
    dialogues = synthetic.personachat(n_dialogues=12, n_characters=4, seed=1)
    right = {m: profiles.personachat_user_ids(dialogues, min_shared=m).nunique() for m in (1, 2)}
    assert right == {1: 4, 2: 4}
    assert nb01.check_3(right, dialogues, min_shared_values=(1, 2)) is True
    with pytest.raises(lesson.ExerciseFailed, match=r"min_shared = \[2\]"):
        nb01.check_3({1: 4, 2: 12}, dialogues, min_shared_values=(1, 2))


@pytest.mark.parametrize("check, args", [(nb01.check_1, ({},)), (nb01.check_2, (pd.DataFrame(),)),
                                         (nb01.check_3, (pd.DataFrame(),))])
def test_none_is_not_attempted(check, args, capsys):
    assert check(None, *args) is None
    assert "not attempted yet" in capsys.readouterr().out
