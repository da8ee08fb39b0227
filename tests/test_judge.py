"""LLM-as-judge arithmetic (p13n_utils.judge) with fake judges; no model."""

import numpy as np
import pandas as pd
import pytest

from p13n_utils import judge

PAIRS = pd.DataFrame({
    "user_id": [1, 2, 3, 4],
    "facts": [["i have a dog."], ["i play music."], ["i love tea."], ["i run."]],
    "partner": ["pets?", "hobbies?", "drinks?", "sports?"],
    "own": ["my dog is old and lazy", "guitar", "tea with milk please", "running"],
    "other": ["guitar", "my dog is old and lazy", "running", "tea with milk"],
})


def verdicts(scorer):
    return judge.judge_verdicts(judge.judge_items(PAIRS), scorer)


def test_both_orders_are_asked():
    items = judge.judge_items(PAIRS)
    assert len(items) == 8
    assert all(sorted(g) == ["own_in_a", "own_in_b"] for _, g in items.groupby("user_id")["order"])
    first = items.iloc[0]
    assert first["a"] == PAIRS["own"][0] and "A: my dog is old and lazy" in first["prompt"] and "i have a dog." in first["prompt"]


def test_a_judge_that_always_says_a_is_at_chance_and_always_flips():
    per_user = judge.judge_bias(verdicts(lambda items: np.full(len(items), 0.9)))
    assert per_user["correct"].tolist() == [0.5] * 4          # right in one order of each pair
    assert per_user["flipped"].tolist() == [1.0] * 4          # the verdict follows the slot
    assert per_user["picked_a"].tolist() == [1.0] * 4
    assert per_user["correct_order_avg"].tolist() == [0.0] * 4  # mean P(own) = 0.5, not > 0.5


def test_an_oracle_judge():
    oracle = lambda items: np.where(items["order"] == "own_in_a", 0.8, 0.2)  # noqa: E731
    per_user = judge.judge_bias(verdicts(oracle))
    assert per_user["correct"].tolist() == [1.0] * 4 and per_user["flipped"].tolist() == [0.0] * 4
    assert per_user["picked_a"].tolist() == [0.5] * 4 and per_user["correct_order_avg"].tolist() == [1.0] * 4


def test_a_judge_that_prefers_the_longer_reply():
    def longer(items):
        return (items["a"].str.split().map(len) >= items["b"].str.split().map(len)).astype(float) * 0.6 + 0.2

    per_user = judge.judge_bias(verdicts(longer))
    # words: user 1 own 6 vs 1, user 2 own 1 vs 6, user 3 own 4 vs 1, user 4 own 1 vs 3
    assert per_user["own_longer"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert per_user["picked_longer"].tolist() == [1.0] * 4
    assert per_user["correct"].tolist() == [1.0, 0.0, 1.0, 0.0]   # right exactly when the own reply is longer
    assert per_user["flipped"].tolist() == [0.0] * 4


def test_equal_lengths_are_left_out_of_the_length_bias():
    pairs = PAIRS.assign(other=["a b c d e f", "x", "y", "z"])  # user 1: 6 vs 6 words; user 4: 1 vs 1
    v = judge.judge_verdicts(judge.judge_items(pairs), lambda items: np.full(len(items), 0.7))
    per_user = judge.judge_bias(v)
    assert np.isnan(per_user.loc[1, "own_longer"]) and np.isnan(per_user.loc[4, "picked_longer"])


def test_bad_input():
    with pytest.raises(ValueError, match="empty"):
        judge.judge_items(PAIRS.assign(other=["", "b", "c", "d"]))
    items = judge.judge_items(PAIRS)
    with pytest.raises(ValueError, match="one probability"):
        judge.judge_verdicts(items, lambda items: np.full(3, 0.5))
    with pytest.raises(ValueError, match="one probability"):
        judge.judge_verdicts(items, lambda items: np.full(len(items), 1.5))
    v = judge.judge_verdicts(items, lambda items: np.full(len(items), 0.5))
    with pytest.raises(ValueError, match="each order"):
        judge.judge_bias(v.iloc[1:])


def test_llm_judge_entry_with_a_fake_judge(characters):
    from p13n_utils import config, tasks

    pc = tasks.personachat_eval_set(characters(n_users=4, dialogues_per_user=2), n_users=None)
    cfg = config.get_sizes("smoke")
    out = judge.llm_judge(cfg, pc, None, None, n_users=4, record=False,
                          scorer=lambda items: np.where(items["order"] == "own_in_a", 0.9, 0.1))
    summary = out["summary"].set_index("metric")
    assert summary.loc["judge_acc", "value"] == 1.0 and summary.loc["judge_flip_rate", "value"] == 0.0
    assert summary.loc["judge_acc", "n"] == 4 and len(out["verdicts"]) == 8
    assert (out["verdicts"].groupby("user_id")["a"].first() != "").all()
    with pytest.raises(ValueError, match="at least 2 users"):
        judge.judge_pairs(pc, n_users=1)
