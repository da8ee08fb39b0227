"""Reinforcement learning from a reward model: a minimal policy-gradient step (RLOO / GRPO).

RLHF (Ouyang et al. 2022) optimises a policy ``pi`` against a learned reward ``r(x, y)`` while a
KL term keeps it near a reference ``pi_ref``:

    maximise  E_{y ~ pi(.|x)} [ r(x, y) ]  -  kl_coef * KL(pi(.|x) || pi_ref(.|x)).

One step of :func:`train_rl_lora`, readable top to bottom in :func:`rl_step_loss`:

1. **sample** ``k`` replies per prompt from the policy (:func:`sample_replies`, batched
   :func:`p13n_utils.generation.generate`);
2. **score** them with a reward model (any ``reward_fn(rows, replies) -> rewards``, e.g. a
   Bradley–Terry head of :mod:`p13n_utils.alignment` on the replies' embeddings);
3. **advantages** within each prompt's group of ``k`` (:func:`group_advantages`): RLOO's
   leave-one-out baseline (Ahmadian et al. 2024) or GRPO's group normalisation (Shao et al. 2024);
4. **loss** (:func:`policy_gradient_loss`): ``-advantage * log pi`` per token plus
   ``kl_coef`` times a per-token KL estimate to the reference (the same model with its adapters
   disabled: no second copy of the weights), averaged per reply then over replies — what trl's
   ``GRPOTrainer`` computes with ``loss_type="grpo"`` for one on-policy step (checked in the tests);
5. one optimizer step (:func:`p13n_utils.training.train_loop`).

The policy is a LoRA adapter on the shared base (:func:`p13n_utils.adapters.add_lora`); it
starts equal to the reference (B = 0), so the first step's KL is 0.

Bad input: fewer than 2 samples per prompt (``k < 2``: no group to compare a reply with), no
prompts, an empty prompt, a negative ``kl_coef`` or an unknown advantage raise ``ValueError``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .adapters import DEFAULT_TARGET_MODULES, add_lora, adapter_params
from .generation import generate
from .training import IGNORE_INDEX, TrainConfig, TrainResult, collate, model_device, pad_id, train_loop

__all__ = ["ADVANTAGES", "check_settings", "group_advantages", "per_token_kl", "policy_gradient_loss",
           "sample_replies", "completion_batch", "token_logps", "rl_step_loss", "train_rl_lora", "sequence_kl",
           "fit_reward_head", "embedding_reward", "evaluate_policy"]

ADVANTAGES = ("rloo", "grpo")
"""The two group baselines: leave-one-out mean (RLOO) and group mean / group std (GRPO)."""
GRPO_EPS = 1e-4
"""Added to the group's standard deviation before dividing (trl's value)."""


def check_settings(k: int, kl_coef: float, advantage: str) -> None:
    """The bad-input checks of the RL step (``ValueError`` with what to change)."""
    if advantage not in ADVANTAGES:
        raise ValueError(f"advantage must be one of {ADVANTAGES}, got {advantage!r}")
    if int(k) != k or k < 2:
        raise ValueError(f"k={k} samples per prompt: RLOO and GRPO compare each reply with the other replies to "
                         "the same prompt, so k must be an integer >= 2")
    if not kl_coef >= 0:
        raise ValueError(f"kl_coef must be >= 0 (0: no leash to the reference), got {kl_coef}")


# =========================================================================== advantages and loss
def group_advantages(rewards, advantage: str = "rloo") -> torch.Tensor:
    """Advantages of ``k`` replies to each prompt, from their rewards.

    Parameters
    ----------
    rewards : array or tensor (n_prompts, k)
        Row ``i`` holds the rewards of the ``k`` replies sampled for prompt ``i``.
    advantage : {"rloo", "grpo"}
        ``"rloo"``: ``A_j = r_j - mean_{l != j} r_l`` (each reply against the mean of the others:
        an unbiased baseline). ``"grpo"``: ``A_j = (r_j - mean_l r_l) / (std_l r_l + 1e-4)``
        (the sample standard deviation, as trl's ``scale_rewards="group"``).

    Returns
    -------
    tensor (n_prompts * k,), float32, prompt-major (the order of :func:`sample_replies`).
    """
    rewards = torch.as_tensor(np.asarray(rewards, dtype=np.float64))      # float64 here, float32 out
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be (n_prompts, k), got shape {tuple(rewards.shape)}")
    check_settings(rewards.shape[1], 0.0, advantage)
    k = rewards.shape[1]
    if advantage == "rloo":
        baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / (k - 1)
        return (rewards - baseline).reshape(-1).float()
    mean, std = rewards.mean(dim=1, keepdim=True), rewards.std(dim=1, keepdim=True)
    return ((rewards - mean) / (std + GRPO_EPS)).reshape(-1).float()


def per_token_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) at the sampled tokens (Schulman's k3):
    ``exp(ref - logp) - (ref - logp) - 1``, always >= 0 and 0 where the two agree."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


def policy_gradient_loss(logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor,
                         advantages: torch.Tensor, kl_coef: float):
    """The loss of one on-policy step: policy gradient with a per-token KL penalty.

    ``loss = mean_i [ sum_t m_it * ratio_it * ( -A_i + kl_coef * KL_it ) / sum_t m_it ]`` with
    ``ratio = exp(logp - logp.detach())``: its value is 1, its gradient that of ``log pi``, so
    the gradient is the REINFORCE estimator ``-A_i * grad log pi(y_it)`` per token, plus the
    KL's own gradient and ``KL_it * grad log pi(y_it)`` (the replies were sampled from ``pi``, so
    moving ``pi`` also moves which tokens carry the KL; trl's ``use_bias_correction_kl``).

    Parameters
    ----------
    logps : tensor (n, T)
        Log-probability of each sampled token under the policy (with gradients).
    ref_logps : tensor (n, T)
        The same under the reference (no gradients).
    mask : tensor (n, T)
        1 for the reply's tokens, 0 for padding.
    advantages : tensor (n,)
        From :func:`group_advantages`.
    kl_coef : float >= 0

    Returns
    -------
    loss : tensor ()
    kl : tensor (n,)
        The mean per-token KL estimate of each reply (detached), for the logs.
    """
    if not kl_coef >= 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    mask = mask.to(logps.dtype)
    ratio = torch.exp(logps - logps.detach())                # = 1, gradient of log pi
    kl = per_token_kl(logps, ref_logps)
    per_token = -ratio * advantages[:, None] + kl_coef * ratio * kl
    n_tokens = mask.sum(dim=1).clamp(min=1.0)
    loss = ((per_token * mask).sum(dim=1) / n_tokens).mean()
    return loss, ((kl * mask).sum(dim=1) / n_tokens).detach()


# =========================================================================== sampling and scoring
def _autocast(model, dtype):
    """Autocast to ``dtype`` on the model's device (None: a no-op): the matrix products run in
    bf16 where the hardware computes it natively, the weights and the loss stay float32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(model_device(model).type, dtype=dtype)


def sample_replies(model, tokenizer, prompts: Sequence[str], k: int, max_new_tokens: int = 16,
                   temperature: float = 1.0, seed: int = 0, batch_size: int = 32,
                   autocast_dtype=None) -> list[str]:
    """``k`` sampled replies per prompt from the model as it is (active adapter), prompt-major:
    replies ``i*k .. i*k+k-1`` answer ``prompts[i]``. Batched :func:`p13n_utils.generation.generate`
    (left padding); ``autocast_dtype=torch.bfloat16`` samples under bf16 autocast (faster where
    the hardware computes bf16 natively, :func:`p13n_utils.models.auto_dtype`)."""
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts to sample replies for")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompts[{i}] is empty: give the policy something to reply to")
    repeated = [prompt for prompt in prompts for _ in range(k)]
    with _autocast(model, autocast_dtype):
        return generate(model, tokenizer, repeated, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        do_sample=True, temperature=temperature, seed=seed, progress=False)


def completion_batch(tokenizer, prompts: Sequence[str], replies: Sequence[str], padding_side: str = "right") -> dict:
    """A batch of prompt + reply + eos (:func:`p13n_utils.training.collate`, padded on
    ``padding_side``), the prompt masked from the labels. The reply is tokenized again from its
    text, as the scorers of the series do; an empty reply keeps its eos token (the policy chose to
    stop). Left padding ends every reply at the last position, so :func:`token_logps` can keep the
    logits of the last few positions only."""
    prompt_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    reply_ids = tokenizer(list(replies), add_special_tokens=False)["input_ids"]
    examples = [{"input_ids": p + r + [tokenizer.eos_token_id], "labels": [IGNORE_INDEX] * len(p) + r + [tokenizer.eos_token_id]}
                for p, r in zip(prompt_ids, reply_ids)]
    return collate(examples, pad_id(tokenizer), padding_side)


def token_logps(model, batch: dict, keep: int | None = None):
    """Log-probability of each labelled token of ``batch`` under ``model``.

    ``keep``: score only the last ``keep`` tokens of each row (a left-padded
    :func:`completion_batch` whose replies are at most ``keep`` tokens): the vocabulary projection
    then runs on those positions only. Default: every position.

    Returns
    -------
    logps : tensor (n, keep) (default (n, T - 1))
        ``log p(token_{t+1} | tokens_<=t)``; 0 where the label is ignored.
    mask : tensor, same shape
        1 where the token is a reply token.
    """
    batch = {key: value.to(model_device(model)) for key, value in batch.items()}
    n = batch["input_ids"].shape[1] - 1 if keep is None else min(keep, batch["input_ids"].shape[1] - 1)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], use_cache=False, logits_to_keep=n + 1).logits
    labels = batch["labels"][:, -n:]                   # the tokens the kept positions predict
    logps = -F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                             reduction="none")
    return logps, (labels != IGNORE_INDEX)


def _reply_length(batch: dict) -> int:
    """The longest reply of a batch, in labelled tokens."""
    return int((batch["labels"] != IGNORE_INDEX).sum(dim=1).max())


def sequence_kl(model, tokenizer, prompts: Sequence[str], replies: Sequence[str], batch_size: int = 16,
                autocast_dtype=None) -> np.ndarray:
    """Summed log-ratio ``log pi(y|x) - log pi_ref(y|x)`` of each (prompt, reply) under the active
    adapter vs the model with adapters disabled. Averaged over replies sampled from the policy, it
    estimates KL(pi || pi_ref) in nats per reply."""
    out = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _autocast(model, autocast_dtype):
            for start in range(0, len(prompts), batch_size):
                batch = completion_batch(tokenizer, prompts[start:start + batch_size],
                                         replies[start:start + batch_size], padding_side="left")
                keep = _reply_length(batch)
                logps, mask = token_logps(model, batch, keep)
                with model.disable_adapter():
                    ref, _ = token_logps(model, batch, keep)
                out.append(((logps - ref) * mask).sum(dim=1).double().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0)


# =========================================================================== one step, and the loop
def rl_step_loss(model, tokenizer, rows: pd.DataFrame, reward_fn: Callable, k: int, kl_coef: float,
                 advantage: str = "rloo", max_new_tokens: int = 16, temperature: float = 1.0, seed: int = 0,
                 autocast_dtype=None):
    """Sample, score, advantages, loss: everything of one RL step but the optimizer's update.

    Parameters
    ----------
    model
        A peft model whose active adapter is the policy.
    rows : DataFrame
        The step's prompts (column ``prompt``) and whatever ``reward_fn`` needs (user, context).
    reward_fn : callable
        ``reward_fn(rows, replies) -> array (len(rows),)``: ``rows`` repeats each prompt's row ``k``
        times (prompt-major), ``replies`` the sampled texts.
    k, kl_coef, advantage, max_new_tokens, temperature, seed, autocast_dtype
        See :func:`train_rl_lora`.

    Returns
    -------
    loss : tensor ()
    n_tokens : int
    metrics : dict
        ``reward`` (mean of the samples), ``kl`` (mean per-token KL estimate), ``reply_tokens``,
        ``sample_s`` / ``reward_s`` / ``loss_s`` (seconds of each part; ``loss_s`` covers the reference
        and policy passes, the backward pass comes after), ``replies`` (the texts) and ``rewards``
        (n_prompts, k).
    """
    check_settings(k, kl_coef, advantage)
    t0 = time.perf_counter()
    replies = sample_replies(model, tokenizer, rows["prompt"].tolist(), k, max_new_tokens, temperature, seed,
                             autocast_dtype=autocast_dtype)                                   # 1. sample
    t1 = time.perf_counter()
    repeated = rows.loc[rows.index.repeat(k)].reset_index(drop=True)
    rewards = np.asarray(reward_fn(repeated, replies), dtype=np.float32)                      # 2. score
    t2 = time.perf_counter()
    advantages = group_advantages(rewards.reshape(len(rows), k), advantage)                   # 3. advantages
    batch = completion_batch(tokenizer, repeated["prompt"].tolist(), replies, padding_side="left")
    keep = _reply_length(batch)                            # score the reply positions only
    with _autocast(model, autocast_dtype):
        with torch.no_grad(), model.disable_adapter():
            ref_logps, mask = token_logps(model, batch, keep)                                 # the reference
        logps, _ = token_logps(model, batch, keep)                                            # the policy
    loss, kl = policy_gradient_loss(logps, ref_logps, mask, advantages.to(logps.device), kl_coef)  # 4. loss
    metrics = {"reward": float(rewards.mean()), "kl": float(kl.mean()), "reply_tokens": float(mask.sum(1).float().mean()),
               "sample_s": t1 - t0, "reward_s": t2 - t1, "loss_s": time.perf_counter() - t2, "replies": replies,
               "rewards": rewards.reshape(len(rows), k)}
    return loss, int(batch["attention_mask"].sum()), metrics


def train_rl_lora(model, tokenizer, prompts: pd.DataFrame, reward_fn: Callable, train: TrainConfig, k: int = 4,
                  kl_coef: float = 0.05, advantage: str = "rloo", max_new_tokens: int = 16,
                  temperature: float = 1.0, adapter_name: str = "rl", r: int = 8, alpha: float = 16,
                  target_modules: Sequence[str] = DEFAULT_TARGET_MODULES, autocast_dtype=None) -> TrainResult:
    """Train a LoRA policy against ``reward_fn`` with :func:`rl_step_loss` (one update per sample).

    Parameters
    ----------
    model
        A transformers model (wrapped in place: pass a private copy) or a peft model (the
        adapter is added beside the others; the reference is the base with all adapters disabled).
    tokenizer
    prompts : DataFrame
        One row per training prompt (``prompt`` and the columns ``reward_fn`` reads);
        ``train.batch_size`` prompts per step, each sampled ``k`` times.
    reward_fn : callable
        ``reward_fn(rows, replies) -> rewards`` (see :func:`rl_step_loss`).
    train : TrainConfig
        ``lr, steps, batch_size, seed, max_grad_norm``.
    k : int >= 2, default 4
        Replies sampled per prompt (the group of the advantages).
    kl_coef : float >= 0, default 0.05
        Weight of the KL penalty to the reference (0: none, the policy may drift anywhere).
    advantage : {"rloo", "grpo"}
    max_new_tokens, temperature
        Sampling (short replies keep a CPU step affordable).
    adapter_name, r, alpha, target_modules
        The new LoRA adapter.
    autocast_dtype : torch dtype, optional
        Run sampling and the forward passes under autocast in this dtype (e.g. bf16 where
        :func:`p13n_utils.models.auto_dtype` says it is native); the LoRA weights, the optimizer
        and the loss stay float32.

    Returns
    -------
    TrainResult
        ``model`` with the adapter active; ``losses``; ``metrics`` per step: ``reward``, ``kl``,
        ``reply_tokens``, ``sample_s``, ``reward_s``, ``loss_s``; ``samples`` and ``rewards``: the replies
        of each step and their rewards, (n_prompts, k) per step.
    """
    check_settings(k, kl_coef, advantage)
    missing = {"prompt"} - set(prompts.columns)
    if missing or prompts.empty:
        raise ValueError("prompts must be a non-empty DataFrame with a 'prompt' column")
    prompts = prompts.reset_index(drop=True)
    model = add_lora(model, adapter_name, r, alpha, target_modules, seed=train.seed)
    samples: list[list[str]] = []
    step_rewards: list[np.ndarray] = []
    steps = iter(range(train.steps))

    def step_loss(indices):
        loss, n_tokens, metrics = rl_step_loss(model, tokenizer, prompts.iloc[indices], reward_fn, k, kl_coef,
                                               advantage, max_new_tokens, temperature,
                                               seed=train.seed * 100_003 + next(steps), autocast_dtype=autocast_dtype)
        samples.append(metrics.pop("replies"))
        step_rewards.append(metrics.pop("rewards"))
        return loss, n_tokens, metrics

    result = train_loop(model, adapter_params(model, adapter_name), step_loss, len(prompts), train,
                        desc=f"RL {adapter_name}")
    result.adapter_name = adapter_name
    result.samples, result.rewards = samples, step_rewards
    return result


# =========================================================================== reward models and evaluation
def fit_reward_head(chosen_features, rejected_features, l2: float, mask=None, steps: int = 200,
                    seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A Bradley–Terry reward head (:func:`p13n_utils.alignment.train_reward_model`) ready to score
    new replies: returns ``features -> rewards``.

    The features are scaled as :func:`p13n_utils.alignment.fit_reward_margins` scales them (each
    divided by the std of the feature differences of *all* training pairs); the head is trained on
    the pairs of ``mask`` (default all: e.g. one persona's pairs).
    """
    from .alignment import train_reward_model

    chosen, rejected = np.asarray(chosen_features, dtype=np.float64), np.asarray(rejected_features, dtype=np.float64)
    scale = (chosen - rejected).std(axis=0) + 1e-8
    keep = np.ones(len(chosen), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    head = train_reward_model(chosen[keep] / scale, rejected[keep] / scale, l2=l2, steps=steps, seed=seed).model

    def reward(features) -> np.ndarray:
        with torch.no_grad():
            return head(torch.as_tensor(np.asarray(features) / scale, dtype=torch.float32)).numpy().astype(float)
    return reward


def embedding_reward(head: Callable, embed: Callable, context_vectors=None, context: str = "partner",
                     user_vectors=None) -> Callable:
    """A ``reward_fn`` for :func:`train_rl_lora`: a reward head (:func:`fit_reward_head`) on the
    :func:`p13n_utils.alignment.bt_features` of replies sampled now, the same features
    :func:`p13n_utils.alignment.preference_features` gives the training pairs.

    Parameters
    ----------
    head : callable
        ``features -> rewards``.
    embed : callable
        ``texts -> (n, d)`` unit embeddings (the reward model's encoder, e.g. MiniLM).
    context_vectors : mapping, optional
        ``text -> embedding`` of the rows' ``context`` column (e.g. the partner's message):
        adds the block ``context * reply``.
    user_vectors : mapping, optional
        ``user_id -> embedding`` (the user's profile): adds the block ``user * reply``.
    """
    from .alignment import bt_features

    def reward(rows: pd.DataFrame, replies) -> np.ndarray:
        conditions = []
        if context_vectors is not None:
            conditions.append(np.stack([context_vectors[key] for key in rows[context]]))
        if user_vectors is not None:
            conditions.append(np.stack([user_vectors[user] for user in rows["user_id"]]))
        return head(bt_features(embed(list(replies)), conditions or None))
    return reward


def evaluate_policy(model, tokenizer, rows: pd.DataFrame, reward_fn: Callable, adapter_name: str | None,
                    k: int = 4, max_new_tokens: int = 16, temperature: float = 1.0, seed: int = 0,
                    autocast_dtype=None) -> pd.DataFrame:
    """Sample ``k`` replies per held-out prompt from a policy and measure each: its reward and its
    log-ratio to the reference (:func:`sequence_kl`; averaged, the KL in nats per reply).

    Parameters
    ----------
    rows : DataFrame
        Held-out prompts (``prompt``, ``user_id`` and what ``reward_fn`` reads).
    adapter_name : str or None
        The policy's adapter; None: the reference (adapters disabled; its KL is 0).

    Returns
    -------
    DataFrame
        One row per sample: the columns of ``rows`` (repeated ``k`` times), ``reply, reward, kl``.
    """
    from .adapters import use_adapter

    if k < 1:
        raise ValueError(f"k must be >= 1 sample per prompt, got {k}")
    rows = rows.reset_index(drop=True)
    with use_adapter(model, adapter_name):
        replies = sample_replies(model, tokenizer, rows["prompt"].tolist(), k, max_new_tokens, temperature, seed,
                                 autocast_dtype=autocast_dtype)
        repeated = rows.loc[rows.index.repeat(k)].reset_index(drop=True)
        kl = (sequence_kl(model, tokenizer, repeated["prompt"].tolist(), replies, autocast_dtype=autocast_dtype)
              if adapter_name is not None
              else np.zeros(len(replies)))
    rewards = np.asarray(reward_fn(repeated, replies), dtype=float)
    return repeated.assign(reply=replies, reward=rewards, kl=kl)
