"""Checks of notebook 07's exercises (p13n_utils.exercises.nb07) on small tensors, a small frame
of log-probabilities and a tiny random Llama with two LoRA adapters: a right answer passes, a
wrong one raises ExerciseFailed with its hint, None is "not attempted"."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from p13n_utils import adapters, alignment, lesson
from p13n_utils.exercises import nb07

# per pair: summed log-probabilities and token counts of the chosen and the rejected reply
LOGPS = pd.DataFrame({"chosen_logp": [-20.0, -9.0, -30.0, -12.0, -8.0],
                      "rejected_logp": [-10.0, -18.0, -24.0, -12.5, -9.0],
                      "chosen_tokens": [10, 3, 20, 6, 4],
                      "rejected_tokens": [4, 9, 10, 6, 2]})
USERS = ["a", "a", "b", "b", "c"]


def test_check_1_the_dpo_loss_by_hand(capsys):
    rng = np.random.default_rng(0)
    pc, pr, rc, rr = (torch.as_tensor(-rng.uniform(5, 40, size=6)) for _ in range(4))
    beta = 0.1
    margin = beta * ((pc - rc) - (pr - rr))
    right = float(-torch.nn.functional.logsigmoid(margin).mean())
    assert nb07.check_1(right, pc, pr, rc, rr, beta) is True
    assert nb07.check_1(math.log(2), pc, pc, rc, rc, beta) is True     # policy = reference: log 2
    without_reference = float(-torch.nn.functional.logsigmoid(beta * (pc - pr)).mean())
    with pytest.raises(lesson.ExerciseFailed, match="reference"):
        nb07.check_1(without_reference, pc, pr, rc, rr, beta)
    assert nb07.check_1(None, pc, pr, rc, rr, beta) is None
    assert "not attempted" in capsys.readouterr().out


def test_check_2_summed_logps_prefer_the_shorter_reply():
    # pairs with different lengths: 0 (sum picks rejected, 4 tokens: shorter), 1 (picks chosen, 3: shorter),
    # 2 (picks rejected, 10: shorter), 4 (picks chosen, 4 tokens against 2: longer); pair 3 has equal lengths
    assert nb07.shorter_reply_share(LOGPS) == 0.75
    assert nb07.check_2(0.75, LOGPS) is True
    with pytest.raises(lesson.ExerciseFailed, match="differ in length"):
        nb07.check_2(0.6, LOGPS)                  # pair 3 kept: 3 of 5
    assert nb07.check_2(None, LOGPS) is None
    same = LOGPS.assign(rejected_tokens=LOGPS["chosen_tokens"])
    assert math.isnan(nb07.shorter_reply_share(same))


def test_check_3_length_normalised_pref_acc():
    # per-token margins: -2 + 2.5 > 0, -3 + 2 < 0 | -1.5 + 2.4 > 0, -2 + 2.083 > 0 | -2 + 4.5 > 0
    # per user: a 1/2, b 1, c 1 -> mean 5/6
    assert nb07.normalised_pref_acc(LOGPS, USERS) == pytest.approx(5 / 6)
    assert nb07.check_3(5 / 6, LOGPS, USERS) is True
    summed = alignment.per_user_accuracy(LOGPS["chosen_logp"] - LOGPS["rejected_logp"], USERS).mean()
    assert summed != pytest.approx(5 / 6)
    with pytest.raises(lesson.ExerciseFailed, match="per_user_accuracy"):
        nb07.check_3(summed, LOGPS, USERS)
    with pytest.raises(lesson.ExerciseFailed):
        nb07.check_3(4 / 5, LOGPS, USERS)         # pooled over pairs instead of averaged over users
    assert nb07.check_3(None, LOGPS, USERS) is None
    with pytest.raises(KeyError, match="chosen_tokens"):
        nb07.normalised_pref_acc(LOGPS.drop(columns="chosen_tokens"), USERS)


def test_check_4_the_soup_update_is_the_weighted_sum_of_the_updates(tiny_lm):
    model = tiny_lm()[0]
    for name, seed in (("p0", 0), ("p1", 1)):
        model = adapters.add_lora(model, name, r=4, alpha=8, seed=seed)
    layer = nb07.lora_layer(model)
    torch.manual_seed(0)
    for name in ("p0", "p1"):
        torch.nn.init.normal_(layer.lora_B[name].weight, std=0.1)
    weights = [0.3, 0.7]
    adapters.merge_adapters(model, ["p0", "p1"], weights, "soup")
    by_hand = sum(w * layer.scaling[n] * layer.lora_B[n].weight @ layer.lora_A[n].weight
                  for n, w in zip(("p0", "p1"), weights)).detach()
    assert nb07.check_4(by_hand, layer, ["p0", "p1"], weights) is True
    soup = (layer.scaling["soup"] * layer.lora_B["soup"].weight @ layer.lora_A["soup"].weight).detach()
    assert nb07.check_4(soup, layer, ["p0", "p1"], weights) is True        # the exact ("cat") merge
    with pytest.raises(lesson.ExerciseFailed, match="weighted sum"):
        nb07.check_4(by_hand, layer, ["p0", "p1"], [0.5, 0.5])
    assert nb07.check_4(None, layer, ["p0", "p1"], weights) is None
    with pytest.raises(ValueError, match="weights"):
        nb07.check_4(by_hand, layer, ["p0", "p1"], [1.0])


def test_check_5_grpo_advantages_by_hand(capsys):
    rewards = np.array([[0.5, -1.0, 2.0, 0.1], [3.0, 3.0, 1.0, 0.0]])
    centred = rewards - rewards.mean(axis=1, keepdims=True)
    right = centred / (rewards.std(axis=1, ddof=1, keepdims=True) + 1e-4)
    assert nb07.check_5(right, rewards) is True
    assert nb07.check_5(right.ravel().tolist(), rewards) is True           # flat, prompt-major
    with pytest.raises(lesson.ExerciseFailed, match="SAMPLE standard deviation"):
        nb07.check_5(centred / rewards.std(axis=1, keepdims=True), rewards)  # population std (ddof=0)
    k = rewards.shape[1]
    with pytest.raises(lesson.ExerciseFailed, match="RLOO"):
        nb07.check_5(k / (k - 1) * centred, rewards)                          # RLOO's advantages instead
    assert nb07.check_5(None, rewards) is None
    assert "not attempted" in capsys.readouterr().out
