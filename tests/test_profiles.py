"""p13n_utils.profiles: the four kinds of user data from both data sets, unknown users, cold
start, profiles built from a split contain no held-out data."""

import pandas as pd
import pytest

from p13n_utils import data, profiles, splits, synthetic


@pytest.fixture
def ml():
    return synthetic.movielens(n_users=15, n_items=40, seed=0, variant="latest-small")


@pytest.fixture
def ml100k():
    return synthetic.movielens(n_users=10, n_items=30, seed=1, variant="100k")


def test_movielens_profile_has_the_four_kinds(ml100k):
    user = int(ml100k.ratings["user_id"].value_counts().index[0])
    p = profiles.movielens_profile(ml100k, user)
    own = ml100k.ratings[ml100k.ratings["user_id"] == user]
    assert len(p.interactions) == len(own)
    assert p.interactions["timestamp"].is_monotonic_increasing
    assert list(p.interactions.columns) == ["item_id", "rating", "timestamp"]
    row = ml100k.users.set_index("user_id").loc[user]
    assert p.attributes == {"age": row["age"], "gender": row["gender"],
                            "occupation": row["occupation"], "zip": row["zip"]}
    rating = p.interactions.set_index("item_id")["rating"]
    assert len(p.preferences) > 0
    for a, b, margin in zip(p.preferences["preferred"], p.preferences["other"], p.preferences["margin"]):
        assert rating[a] >= 4 and rating[b] <= 2 and margin == rating[a] - rating[b]


def test_preference_pairs_are_complete_or_a_seeded_sample():
    inter = pd.DataFrame({"item_id": [1, 2, 3, 4, 5], "rating": [5.0, 4.0, 1.0, 2.0, 3.0],
                          "timestamp": range(5)})
    full = profiles.preference_pairs(inter, max_pairs=None)
    assert set(zip(full["preferred"], full["other"])) == {(1, 3), (1, 4), (2, 3), (2, 4)}
    a = profiles.preference_pairs(inter, max_pairs=2, seed=5)
    b = profiles.preference_pairs(inter, max_pairs=2, seed=5)
    assert len(a) == 2 and a.equals(b)
    assert profiles.preference_pairs(inter[inter["rating"] > 3]).empty


def test_tags_become_texts(ml):
    user = int(ml.tags["user_id"].iloc[0])
    p = profiles.movielens_profile(ml, user)
    own = ml.tags[ml.tags["user_id"] == user]
    assert sorted(p.texts["text"]) == sorted(own["tag"])
    assert set(p.texts["source"]) == {"tag"} and p.attributes == {}


def test_unknown_user_is_a_keyerror_with_the_user_count(ml):
    with pytest.raises(KeyError, match="has 15 users .ids 1..15"):
        profiles.movielens_profile(ml, 999)
    dialogues = synthetic.personachat(n_dialogues=4)
    with pytest.raises(KeyError, match="has 4 users .characters."):
        profiles.personachat_profile(dialogues, 42)


def test_user_without_history_is_a_cold_start_profile(ml):
    train, test = splits.user_split(ml.ratings, test_users_frac=0.2, seed=0)
    cold_user = int(test["user_id"].iloc[0])
    p = profiles.movielens_profile(ml, cold_user, ratings=train)
    assert p.is_cold_start and p.interactions.empty and p.texts.empty and p.preferences.empty
    assert "cold start" in repr(p) and "(none)" in p.summary()
    everyone = profiles.movielens_profiles(ml, ratings=train)
    assert everyone[cold_user].is_cold_start
    assert sorted(everyone) == list(range(1, 16))


def test_profiles_from_a_split_hold_no_test_data(ml):
    train, test = splits.temporal_split(ml.ratings, n_test=2)
    built = profiles.movielens_profiles(ml, ratings=train)
    for user, held in test.groupby("user_id"):
        p = built[user]
        assert not set(held["item_id"]) & set(p.interactions["item_id"])
        assert not set(held["item_id"]) & (set(p.preferences["preferred"]) | set(p.preferences["other"]))
        if len(p.texts):
            assert p.texts["timestamp"].max() <= p.interactions["timestamp"].max()


def test_movielens_profiles_equal_single_builds(ml):
    everyone = profiles.movielens_profiles(ml)
    for user in (1, 7):
        one = profiles.movielens_profile(ml, user)
        pd.testing.assert_frame_equal(everyone[user].interactions, one.interactions)
        pd.testing.assert_frame_equal(everyone[user].texts, one.texts)
        pd.testing.assert_frame_equal(everyone[user].preferences, one.preferences)


def test_personachat_profile_is_a_character_across_its_dialogues():
    dialogues = synthetic.personachat(n_dialogues=5, seed=2, min_turns=3, n_characters=3)
    # dialogue 4 plays the character of dialogue 1, its facts reworded (case, punctuation)
    dialogues.at[4, "persona"] = [f.upper().rstrip(".") for f in dialogues.at[1, "persona"]]
    ids = profiles.personachat_user_ids(dialogues)
    user = int(ids.iloc[1])
    assert ids.iloc[4] == user and ids.nunique() == 3
    p = profiles.personachat_profile(dialogues, user)
    assert p.attributes == {"persona_facts": dialogues.at[1, "persona"], "dialogue_ids": [1, 4]}
    assert p.texts[p.texts["source"] == "persona"]["text"].tolist() == dialogues.at[1, "persona"]
    own = p.texts[p.texts["source"] == "dialogue"]
    expected = [r for d in (1, 4) for _, r in dialogues.at[d, "turns"]]
    assert own["text"].tolist() == expected
    assert own["timestamp"].tolist() == list(range(len(expected)))
    assert own["item_id"].tolist() == [d for d in (1, 4) for _ in dialogues.at[d, "turns"]]
    partner_lines = {partner for d in (1, 4) for partner, _ in dialogues.at[d, "turns"]}
    assert not partner_lines & set(p.texts["text"])
    split = splits.personachat_split(dialogues, 1, 1)
    trained = profiles.personachat_profile(split.train, user)
    held_out = set(split.test[split.test["dialogue_id"].isin([1, 4])]["reply"])
    assert held_out and held_out.isdisjoint(trained.texts["text"])
    everyone = profiles.personachat_profiles(dialogues)
    assert sorted(everyone) == sorted(ids.unique())
    pd.testing.assert_frame_equal(everyone[user].texts, p.texts)


def test_summary_is_short_on_the_real_data():
    ml = data.load_movielens()
    p = profiles.movielens_profile(ml, 414)  # the heaviest rater
    text = p.summary()
    assert len(text.splitlines()) <= 10 and max(map(len, text.splitlines())) <= 200
    assert len(p.preferences) == 200 and len(p.interactions) == 2698
    pc = data.load_personachat()
    character = profiles.personachat_profile(pc, 0)
    assert len(character.summary().splitlines()) <= 10
    assert len(character.attributes["dialogue_ids"]) >= 5  # a character plays 5-18 dialogues
    assert len(profiles.personachat_profiles(pc)) == 100
