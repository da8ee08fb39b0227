"""Checks of the exercises of notebook 07 (Bradley–Terry, DPO, length bias, Personalized Soups, RL advantages).

Each ``check_<n>(answer, ...)`` recomputes the reference from the arguments it is given
(log-probability tensors, a frame of per-pair log-probabilities, a LoRA layer) and calls
:func:`p13n_utils.lesson.check`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .. import alignment, lesson, rl
from .nb06 import lora_layer, same_tensor

__all__ = ["lora_layer", "shorter_reply_share", "normalised_pref_acc", "check_1", "check_2", "check_3", "check_4",
           "check_5"]


def _columns(logps: pd.DataFrame) -> tuple[np.ndarray, ...]:
    missing = {"chosen_logp", "rejected_logp", "chosen_tokens", "rejected_tokens"} - set(logps.columns)
    if missing:
        raise KeyError(f"logps has no column(s) {sorted(missing)}: pass alignment.preference_logps(...)")
    return tuple(logps[c].to_numpy(dtype=float) for c in ("chosen_logp", "rejected_logp", "chosen_tokens",
                                                            "rejected_tokens"))


def shorter_reply_share(logps: pd.DataFrame) -> float:
    """Of the pairs whose two replies differ in length, the share in which the reply with the
    higher *summed* log-probability is the shorter one (nan if every pair has equal lengths)."""
    chosen, rejected, n_chosen, n_rejected = _columns(logps)
    differ = n_chosen != n_rejected
    if not differ.any():
        return float("nan")
    picks_chosen = chosen > rejected
    chosen_shorter = n_chosen < n_rejected
    return float((picks_chosen == chosen_shorter)[differ].mean())


def normalised_pref_acc(logps: pd.DataFrame, users) -> float:
    """``pref_acc`` of the length-normalised preference (mean log-probability per token),
    per user (:func:`p13n_utils.alignment.per_user_accuracy`) and averaged over users."""
    chosen, rejected, n_chosen, n_rejected = _columns(logps)
    return float(alignment.per_user_accuracy(chosen / n_chosen - rejected / n_rejected, users).mean())


def check_1(answer, policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    """Exercise 1: the DPO loss of a batch, by hand."""
    ok = None
    if answer is not None:
        tensors = [torch.as_tensor(t, dtype=torch.float64) for t in
                   (policy_chosen, policy_rejected, ref_chosen, ref_rejected)]
        reference = float(alignment.dpo_loss(*tensors, beta=beta)[0])
        ok = math.isclose(float(answer), reference, rel_tol=1e-5, abs_tol=1e-7)
    return lesson.check("Exercise 1 (the DPO loss)", ok,
                        "the implicit reward is beta * (policy log-prob - reference log-prob) for each reply; the "
                        "loss is the mean over pairs of -log sigmoid(reward of chosen - reward of rejected) "
                        "(torch.nn.functional.logsigmoid is stable)")


def check_2(answer, logps: pd.DataFrame):
    """Exercise 2: how often the summed log-probability prefers the shorter reply."""
    ok = None
    if answer is not None:
        reference = shorter_reply_share(logps)
        ok = math.isclose(float(answer), reference, abs_tol=1e-9) or (math.isnan(reference) and math.isnan(answer))
    return lesson.check("Exercise 2 (summed log-probabilities and length)", ok,
                        "keep only the pairs whose replies differ in length (chosen_tokens != rejected_tokens); "
                        "the summed preference picks the reply with the larger logp; count how often that reply "
                        "has fewer tokens, divided by the number of pairs kept")


def check_3(answer, logps: pd.DataFrame, users):
    """Exercise 3: ``pref_acc`` of the length-normalised preference, averaged over users."""
    ok = None
    if answer is not None:
        ok = math.isclose(float(answer), normalised_pref_acc(logps, users), abs_tol=1e-9)
    return lesson.check("Exercise 3 (length-normalised preference)", ok,
                        "divide each reply's summed log-probability by its number of tokens, take chosen minus "
                        "rejected as the margin, then alignment.per_user_accuracy(margin, users).mean() (the "
                        "same averaging over users as the zero_shot row)")


def check_4(answer, layer, adapter_names: Sequence[str], weights: Sequence[float]):
    """Exercise 4: the weight update of a Personalized Soup on one LoRA layer."""
    ok = None
    if answer is not None:
        if len(adapter_names) != len(weights):
            raise ValueError(f"{len(adapter_names)} adapters, {len(weights)} weights")
        with torch.no_grad():
            reference = sum(float(w) * layer.get_delta_weight(name) for name, w in zip(adapter_names, weights))
            ok = same_tensor(answer, reference, atol=1e-7)
    return lesson.check("Exercise 4 (the soup's weight update)", ok,
                        "each adapter's update is layer.scaling[name] * layer.lora_B[name].weight @ "
                        "layer.lora_A[name].weight (out x in); the soup's is the weighted sum of those updates, "
                        "with the user's weights")


def check_5(answer, rewards):
    """Exercise 5: GRPO's advantages of one RL step, by hand, from the rewards of its samples
    (``rewards``: (n_prompts, k), one row per prompt). The answer may be (n_prompts, k) or flat."""
    ok = None
    if answer is not None:
        reference = rl.group_advantages(rewards, "grpo").numpy().astype(float)
        answer = np.asarray(answer, dtype=float).reshape(-1)
        ok = answer.shape == reference.shape and bool(np.allclose(answer, reference, rtol=1e-3, atol=1e-4))
    return lesson.check("Exercise 5 (GRPO advantages)", ok,
                        "within each prompt's row: subtract the row's mean reward, then divide by the row's "
                        "SAMPLE standard deviation (ddof=1, as torch.std) plus 1e-4; RLOO instead subtracts the "
                        "mean of the other k - 1 rewards and does not divide")
