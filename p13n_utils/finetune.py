"""Putting the user into the weights: full fine-tuning, LoRA (one adapter per user), soft prompts.

The survey's *representation learning* family (Zhang et al. 2025, https://arxiv.org/abs/2411.00027)
personalizes the model itself instead of its prompt. This module holds minimal, readable
reference implementations of the variants notebook 06 compares:

- **Data**: :func:`personachat_pairs` and :func:`rating_pairs` turn the users' *training* data
  (``PersonaChatEval.train``, the ratings before a user's held-out ones) into (prompt, target)
  pairs written with the very prompt builders the evaluation uses (:mod:`p13n_utils.prompts`), so
  a fine-tuned model is evaluated with :func:`p13n_utils.tasks.score_personachat` /
  :func:`~p13n_utils.tasks.predict_ratings` unchanged.
- **Collation**: :func:`encode_pairs` tokenizes each pair exactly as
  :func:`p13n_utils.generation.score` does (prompt with the tokenizer's special tokens, target
  without, then an eos token) and marks the prompt with label ``-100``; :func:`collate` pads a
  batch on the right or the left (with explicit position ids, so both give the same loss).
- **Training**: :func:`train_loop` is one plain PyTorch loop (AdamW, gradient clipping, seeded
  batches, a loss per step) used by every trainer here and in :mod:`p13n_utils.alignment`:
  :func:`train_lora` (a LoRA adapter via peft; call it again on the returned model to add one
  adapter per user or per persona), :func:`train_full` (all weights) and
  :func:`train_soft_prompts` (per-user virtual tokens: one learned embedding per user,
  trained jointly across users with the LM frozen).
- **One adapter per user (OPPU)**: train a global adapter on everyone, fold it into the weights
  with :func:`merge_into_base`, then train each user's adapter on top with :func:`train_lora`, or
  one per user / per persona in one call with :func:`train_adapters` (``min_pairs`` guards users
  with too little history). Adapters are saved atomically (:func:`save_adapter`), checked against
  the base model when loaded (:func:`load_adapter`), and switched per user without reloading the
  base model (:class:`AdapterStore` ``activate`` / ``switch``, :func:`use_adapter`);
  :func:`plain_model` removes every adapter again.
- **Costs**: :func:`adapter_cost` (trainable parameters, bytes on disk, seconds) and
  :func:`extrapolate_cost` (the same for 10^3 / 10^6 users).

Bad input (documented fallbacks)
    * No training pairs at all: ``ValueError``.
    * Fewer than ``min_pairs`` pairs for a user: :class:`NotEnoughHistoryError` (a ``ValueError``);
      the notebook catches it and scores that user with the global adapter::

          try:
              model, log = finetune.train_lora(model, tok, pairs_u, adapter_name=f"user_{u}", min_pairs=8, user=u)
          except finetune.NotEnoughHistoryError:
              fallback.append(u)          # this user is served by the global adapter

    * An adapter asked for a user who has none: ``KeyError`` naming the users that have one.
    * An adapter saved for another base model (other shapes, or other weights, e.g. a user adapter
      trained on top of the global adapter loaded into the plain base model):
      :class:`AdapterMismatchError` saying what differs.
    * A save that fails half-way leaves nothing behind (temporary folder, then rename).

Caching: :func:`p13n_utils.cache.fingerprint` hashes every parameter of the model
(adapters loaded but inactive included) and which adapter is active. Scoring one adapter per
user or per persona passes ``cache=False`` to the scorers of :mod:`p13n_utils.tasks` anyway:
each such score is computed once, and memoising it would only fill the disk.

Example
-------
>>> from p13n_utils import finetune, models
>>> base, tok = models.load_lm(fresh=True)              # a private copy: training changes it
>>> pairs = [("<prompt in the chat format>", "the reply to learn")]
>>> model, log = finetune.train_lora(base, tok, pairs, steps=10, adapter_name="global")
>>> log.losses[:3], log.seconds
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import config, prompts
from .cache import fingerprint

__all__ = [
    "IGNORE_INDEX", "DEFAULT_TARGET_MODULES", "NotEnoughHistoryError", "AdapterMismatchError",
    "personachat_rows", "personachat_pairs", "rating_label", "rating_rows", "rating_pairs",
    "encode_pairs", "collate", "sequence_logps", "lm_loss",
    "TrainLog", "train_loop", "add_lora", "train_lora", "train_full", "merge_into_base", "use_adapter",
    "UserPrefixes", "SoftPromptLM", "prefixed_forward", "train_soft_prompts",
    "base_signature", "save_adapter", "load_adapter", "AdapterStore", "train_adapters", "plain_model",
    "count_parameters", "model_bytes", "folder_bytes", "adapter_cost", "extrapolate_cost",
]

IGNORE_INDEX = -100
"""Label of the positions that do not count in the loss (prompt and padding)."""
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
"""The attention projections of Llama-style models (SmolLM2, Qwen, Llama), where LoRA goes."""
ADAPTER_META = "p13n_adapter.json"
"""File written next to peft's files by :func:`save_adapter`: the base model's signature."""


class NotEnoughHistoryError(ValueError):
    """A user has too few training pairs for an adapter of their own.

    The documented fallback: serve the user with the global (or persona) adapter.

    Attributes
    ----------
    user, n_pairs, min_pairs
    """

    def __init__(self, user, n_pairs: int, min_pairs: int):
        self.user, self.n_pairs, self.min_pairs = user, n_pairs, min_pairs
        who = "this data set" if user is None else f"user {user!r}"
        super().__init__(f"{who} has {n_pairs} training pairs, fewer than min_pairs={min_pairs}: too little "
                         "history for an adapter of its own; fall back to the global (or persona) adapter")


class AdapterMismatchError(ValueError):
    """An adapter does not fit the model it is loaded into (other base model or other weights)."""


# =========================================================================== training data
def personachat_rows(ev, users: Sequence | None = None) -> pd.DataFrame:
    """The training turns of ``users`` (all users for None), one row per turn.

    Built from ``ev.train`` of a :class:`p13n_utils.tasks.PersonaChatEval`, where the held-out
    (validation and test) turns are already cut off, so nothing evaluated is trained on.

    Returns
    -------
    DataFrame
        ``dialogue_id, user_id, turn, persona, history, partner, reply``: the columns of
        ``ev.test``, so the same ``context_fn`` works on both.
    """
    from .splits import explode_turns

    train = ev.train
    if users is not None:
        unknown = sorted(set(users) - set(train["user_id"]))
        if unknown:
            raise KeyError(f"users {unknown[:5]} have no PersonaChat dialogues (user ids are "
                           f"0..{train['user_id'].max()})")
        train = train[train["user_id"].isin(list(users))]
    rows = explode_turns(train.drop(columns="user_id"))
    rows.insert(1, "user_id", rows["dialogue_id"].map(train.set_index("dialogue_id")["user_id"]).astype("int64"))
    return rows


def personachat_pairs(tokenizer, rows: pd.DataFrame, context_fn=None, header: str = prompts.HEADERS["user"],
                      n_history: int = 2) -> pd.DataFrame:
    """(prompt, target) pairs of PersonaChat turns, in the evaluation's prompt format.

    Parameters
    ----------
    tokenizer
    rows : DataFrame
        From :func:`personachat_rows` (or any frame with ``partner``, ``history``, ``reply``).
    context_fn : callable, optional
        ``context_fn(row) -> list of str or None``, as for
        :func:`p13n_utils.tasks.score_personachat` (e.g. the user's facts); None: global prompts.
    header, n_history
        As in :func:`p13n_utils.tasks.personachat_prompts`.

    Returns
    -------
    DataFrame
        ``prompt, target`` plus ``user_id``, ``dialogue_id`` and ``turn`` when ``rows`` has them.
    """
    from .tasks import personachat_prompts

    out = pd.DataFrame({"prompt": personachat_prompts(tokenizer, rows, context_fn, header, n_history),
                        "target": [str(r) for r in rows["reply"]]})
    for column in ("user_id", "dialogue_id", "turn"):
        if column in rows:
            out[column] = rows[column].to_numpy()
    return out


def rating_label(rating: float) -> str:
    """The label a rating is trained to: the nearest of ``"1"``…``"5"`` (halves round up:
    3.5 -> ``"4"``; 0.5 -> ``"1"``)."""
    return str(int(min(5, max(1, math.floor(float(rating) + 0.5)))))


def rating_rows(rv, users: Sequence, before: str = "val") -> pd.DataFrame:
    """Each user's history ratings (oldest first), the training data of a rating adapter.

    Parameters
    ----------
    rv : :class:`p13n_utils.tasks.RatingEval`
    users : user ids
    before : {"val", "test"}, default "val"
        ``"val"`` keeps the user's validation ratings out of training (they stay available for
        choosing hyper-parameters); ``"test"`` trains on them too. Test ratings are never used.

    Returns
    -------
    DataFrame
        ``user_id, item_id, rating, timestamp`` rows; a user without history contributes none.
    """
    frames = [rv.history(user, before=before) for user in users]  # KeyError for an unknown user
    if not frames:
        raise ValueError("users is empty")
    return pd.concat(frames, ignore_index=True)


def rating_pairs(tokenizer, rows: pd.DataFrame, movies: pd.DataFrame, context_fn=None,
                 header: str = prompts.HEADERS["user_ratings"]) -> pd.DataFrame:
    """(prompt, target) pairs of ratings: the prompt of :func:`p13n_utils.tasks.rating_prompts`
    and the label :func:`rating_label` (the digit read by :func:`~p13n_utils.tasks.predict_ratings`).

    ``context_fn(row)`` gives the context lines of a row; it must only use what was known before
    that rating (e.g. the user's earlier ratings), as at test time. Train on these pairs with
    ``append_eos=False``: the digit is the only token the evaluation reads.

    Returns
    -------
    DataFrame
        ``prompt, target, user_id, item_id, rating``.
    """
    from .tasks import rating_prompts

    out = pd.DataFrame({"prompt": rating_prompts(tokenizer, rows, movies, context_fn, header),
                        "target": [rating_label(r) for r in rows["rating"]]})
    for column in ("user_id", "item_id", "rating"):
        out[column] = rows[column].to_numpy()
    return out


# =========================================================================== collation
def _as_pairs(pairs) -> list[tuple[str, str]]:
    """A list of (prompt, target) string tuples from a list of tuples or a DataFrame."""
    if isinstance(pairs, pd.DataFrame):
        missing = {"prompt", "target"} - set(pairs.columns)
        if missing:
            raise KeyError(f"pairs has no column(s) {sorted(missing)}; build it with personachat_pairs or rating_pairs")
        pairs = list(zip(pairs["prompt"], pairs["target"]))
    out = []
    for i, pair in enumerate(pairs):
        if len(pair) != 2 or not all(isinstance(text, str) for text in pair):
            raise TypeError(f"pairs[{i}] must be a (prompt, target) tuple of strings, got {pair!r}")
        out.append((pair[0], pair[1]))
    return out


def encode_pairs(tokenizer, pairs, max_length: int | None = None, append_eos: bool = True) -> list[dict]:
    """Token ids and labels of each (prompt, target) pair; the prompt is masked from the loss.

    The prompt is tokenized with the tokenizer's special tokens and the target without, as in
    :func:`p13n_utils.generation.score`, so training raises exactly the likelihood that the
    evaluation measures.

    Parameters
    ----------
    tokenizer
    pairs : list of (prompt, target) or DataFrame with ``prompt`` and ``target`` columns
    max_length : int, optional
        Cut the prompt from the left so that a sequence has at most ``max_length`` tokens (the
        target is never cut).
    append_eos : bool, default True
        End each target with the eos token, so the model also learns where a reply stops.

    Returns
    -------
    list of dict
        ``{"input_ids": prompt_ids + target_ids, "labels": [-100] * len(prompt_ids) + target_ids}``.

    Raises
    ------
    ValueError
        If there are no pairs, a target is empty or a prompt gives no token.
    """
    pairs = _as_pairs(pairs)
    if not pairs:
        raise ValueError("no training pairs: the data set is empty (check the user's history and the split)")
    prompt_ids = tokenizer([p for p, _ in pairs], add_special_tokens=True)["input_ids"]
    target_ids = tokenizer([t for _, t in pairs], add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id] if append_eos and tokenizer.eos_token_id is not None else []
    examples = []
    for i, (p_ids, t_ids) in enumerate(zip(prompt_ids, target_ids)):
        if not t_ids:
            raise ValueError(f"pairs[{i}] has an empty target: there is nothing to learn")
        if not p_ids:
            raise ValueError(f"pairs[{i}] has a prompt that gives no token")
        t_ids = list(t_ids) + eos
        if max_length is not None:
            if len(t_ids) >= max_length:
                raise ValueError(f"pairs[{i}]: the target has {len(t_ids)} tokens, max_length={max_length} "
                                 "leaves no room for the prompt")
            p_ids = p_ids[-(max_length - len(t_ids)):]
        examples.append({"input_ids": list(p_ids) + t_ids, "labels": [IGNORE_INDEX] * len(p_ids) + t_ids})
    return examples


def collate(examples: Sequence[dict], pad_id: int, padding_side: str = "right") -> dict:
    """Pad encoded examples into a batch of tensors.

    Parameters
    ----------
    examples : list of dict
        From :func:`encode_pairs`.
    pad_id : int
        The tokenizer's pad token id (masked out anyway).
    padding_side : {"right", "left"}
        Right padding is the usual choice for training; left padding is what batched generation
        uses. Both give the same loss because the position ids count from each sequence's first
        real token.

    Returns
    -------
    dict of torch.Tensor
        ``input_ids``, ``attention_mask``, ``position_ids`` and ``labels`` (``-100`` on the
        prompt and the padding), each of shape (batch, longest sequence).
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if not examples:
        raise ValueError("cannot collate an empty batch")
    width = max(len(example["input_ids"]) for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        span = slice(0, n) if padding_side == "right" else slice(width - n, width)
        input_ids[row, span] = torch.tensor(example["input_ids"])
        labels[row, span] = torch.tensor(example["labels"])
        attention_mask[row, span] = 1
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, "labels": labels}


def _to_device(batch: dict, device) -> dict:
    return {key: value.to(device) for key, value in batch.items()}


def _device(model):
    return next(model.parameters()).device


def sequence_logps(model, batch: dict):
    """Summed log-probability of the labelled (target) tokens of each sequence.

    Parameters
    ----------
    model
        A causal LM (a peft model, a :class:`SoftPromptLM`, ...).
    batch : dict
        From :func:`collate` (``labels`` -100 where a token does not count).

    Returns
    -------
    logps : torch.Tensor (batch,)
        Sum over target tokens of log p(token | everything before it), in nats.
    n_tokens : torch.Tensor (batch,)
        Number of target tokens of each sequence.
    """
    batch = _to_device(batch, _device(model))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], use_cache=False).logits
    labels = batch["labels"][:, 1:]                      # the token at t+1 is predicted at t
    token_nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels,
                                ignore_index=IGNORE_INDEX, reduction="none")   # 0 where ignored
    return -token_nll.sum(dim=1), (labels != IGNORE_INDEX).sum(dim=1)


def lm_loss(model, batch: dict):
    """Mean negative log-likelihood per target token over the whole batch (the SFT loss)."""
    logps, n_tokens = sequence_logps(model, batch)
    return -logps.sum() / n_tokens.sum().clamp(min=1)


# =========================================================================== the training loop
@dataclass
class TrainLog:
    """What a training run leaves behind (for loss curves and the cost table).

    Attributes
    ----------
    losses : list of float
        The training loss of each step.
    seconds : float
        Wall-clock time of the loop.
    n_examples : int
        Training examples (pairs) available.
    n_tokens : int
        Tokens processed (prompt + target, all steps; padding excluded).
    trainable_params : int
        Parameters the optimizer updated.
    metrics : dict of list
        Extra per-step values (e.g. DPO's reward margin and accuracy).
    """

    losses: list = field(default_factory=list)
    seconds: float = 0.0
    n_examples: int = 0
    n_tokens: int = 0
    trainable_params: int = 0
    metrics: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.losses)

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(1, self.steps)

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else float("nan")

    def frame(self) -> pd.DataFrame:
        """One row per step: ``step, loss`` and the extra metrics."""
        return pd.DataFrame({"step": np.arange(1, self.steps + 1), "loss": self.losses, **self.metrics})


def _batch_indices(n: int, batch_size: int, steps: int, seed: int):
    """``steps`` lists of example indices: seeded shuffles of all examples, cut into batches
    (a batch never mixes two epochs; with fewer examples than batch_size, every batch is all)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng(seed)
    batch_size = min(batch_size, n)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:
            order = rng.permutation(n).tolist()
        yield order[:batch_size]
        order = order[batch_size:]


def train_loop(model, params: list, step_loss: Callable, n_examples: int, steps: int, lr: float,
               batch_size: int = 4, seed: int = 0, weight_decay: float = 0.0, max_grad_norm: float | None = 1.0,
               progress: bool = False, desc: str = "training") -> TrainLog:
    """The one training loop behind every trainer: AdamW on ``params``, a loss per step.

    Parameters
    ----------
    model
        Put in train mode during the loop (its mode is restored afterwards).
    params : list of torch.nn.Parameter
        What the optimizer updates (an adapter, a prefix table, or all weights).
    step_loss : callable
        ``step_loss(indices) -> (loss, n_tokens, metrics)``: the loss of the examples
        ``indices``, the number of tokens it processed, and a dict of extra floats (or ``{}``).
    n_examples, steps, lr, batch_size, seed
        Batches are seeded shuffles of ``range(n_examples)`` (see :func:`_batch_indices`).
    weight_decay : float, default 0
    max_grad_norm : float or None, default 1.0
        Gradient-norm clipping (None: none).
    progress : bool, default False
        A tqdm bar (``leave=False``).

    Returns
    -------
    TrainLog
    """
    from tqdm.auto import tqdm

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not params:
        raise ValueError("there is no parameter to train")
    log = TrainLog(n_examples=n_examples, trainable_params=sum(p.numel() for p in params))
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    was_training = model.training
    model.train()
    start = time.perf_counter()
    try:
        for indices in tqdm(_batch_indices(n_examples, batch_size, steps, seed), total=steps, desc=desc,
                            leave=False, disable=not progress):
            loss, n_tokens, metrics = step_loss(indices)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            log.losses.append(float(loss.detach()))
            log.n_tokens += int(n_tokens)
            for key, value in metrics.items():
                log.metrics.setdefault(key, []).append(float(value))
    finally:
        log.seconds = time.perf_counter() - start
        model.train(was_training)
    return log


def _check_pairs(tokenizer, pairs, min_pairs: int, user, max_length: int | None,
                 append_eos: bool = True) -> list[dict]:
    """Encode the pairs after the bad-input checks of every trainer."""
    pairs = _as_pairs(pairs)
    if not pairs:
        who = "" if user is None else f" for user {user!r}"
        raise ValueError(f"no training pairs{who}: the data set is empty (check the user's history and the split)")
    if len(pairs) < min_pairs:
        raise NotEnoughHistoryError(user, len(pairs), min_pairs)
    return encode_pairs(tokenizer, pairs, max_length=max_length, append_eos=append_eos)


def _pad_id(tokenizer) -> int:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
    return pad_id


def _sft_step(model, examples: list[dict], pad_id: int):
    """The ``step_loss`` of supervised fine-tuning on ``examples``."""
    def step_loss(indices):
        batch = collate([examples[i] for i in indices], pad_id)
        return lm_loss(model, batch), int(batch["attention_mask"].sum()), {}
    return step_loss


# =========================================================================== LoRA
def _is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _has_injected_adapters(model) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(module, BaseTunerLayer) for module in model.modules())


def add_lora(model, adapter_name: str = "default", r: int = 8, alpha: float = 16,
             target_modules: Sequence[str] = DEFAULT_TARGET_MODULES, dropout: float = 0.0, seed: int = 0):
    """Add a fresh LoRA adapter (``W + (alpha / r) B A``, B = 0 at first) and make it the active one.

    Parameters
    ----------
    model
        A transformers model (wrapped into a peft model, **in place**: pass a private copy,
        ``load_lm(fresh=True)``) or a peft model returned by an earlier call (the adapter is
        added next to the existing ones).
    adapter_name : str
        Must be new, e.g. ``"global"``, ``"persona_3"``, ``"user_42"``.
    r, alpha, target_modules, dropout
        The LoRA rank, scale numerator, modules adapted and dropout.
    seed : int
        Seeds torch before the (random) initialisation of A.

    Returns
    -------
    peft.PeftModel
    """
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=dropout,
                      bias="none", task_type="CAUSAL_LM")
    torch.manual_seed(seed)
    if _is_peft(model):
        if adapter_name in model.peft_config:
            raise ValueError(f"the model already has an adapter named {adapter_name!r} "
                             f"(adapters: {list(model.peft_config)}); choose another name or delete_adapter it")
        model.add_adapter(adapter_name, lora)
    else:
        if _has_injected_adapters(model):
            raise ValueError("this model already carries peft adapters: pass the peft model returned by the "
                             "first train_lora/add_lora call, not the base model it wraps")
        with warnings.catch_warnings():      # a transformers deprecation peft triggers, not ours
            warnings.simplefilter("ignore", FutureWarning)
            model = get_peft_model(model, lora, adapter_name=adapter_name)
    model.set_adapter(adapter_name)
    return model


def _adapter_params(model, adapter_name: str) -> list:
    params = [p for name, p in model.named_parameters() if f".{adapter_name}." in name]
    if not params:
        raise KeyError(f"no parameters for adapter {adapter_name!r}; adapters: {list(model.peft_config)}")
    return params


def train_lora(model, tokenizer, pairs, r: int = 8, alpha: float = 16,
               target_modules: Sequence[str] = DEFAULT_TARGET_MODULES, steps: int = 20, lr: float = 1e-3,
               batch_size: int = 4, seed: int = 0, adapter_name: str = "default", dropout: float = 0.0,
               min_pairs: int = 1, user=None, max_length: int | None = None, append_eos: bool = True,
               weight_decay: float = 0.0, progress: bool = False):
    """Train a new LoRA adapter on (prompt, target) pairs; the base weights stay frozen.

    Parameters
    ----------
    model
        A transformers model (wrapped in place) or the peft model of an earlier call (a new
        adapter is added beside the others: one per user or per persona).
    tokenizer
    pairs : list of (prompt, target) or DataFrame with ``prompt``, ``target``
    r, alpha, target_modules, dropout
        See :func:`add_lora`.
    steps, lr, batch_size, seed, weight_decay
        See :func:`train_loop`. A few steps at ``lr=1e-3`` suit the CPU budgets of notebook 06.
    adapter_name : str
        Name of the new adapter (it is left active).
    min_pairs : int, default 1
        Fewer pairs raise :class:`NotEnoughHistoryError` (the fallback: the global adapter).
    user : optional
        Named in the error messages.
    max_length, append_eos
        See :func:`encode_pairs`. For rating pairs, ``append_eos=False`` puts the whole loss on
        the digit (the only token :func:`~p13n_utils.tasks.predict_ratings` reads).
    progress : bool, default False

    Returns
    -------
    model : peft.PeftModel
        With the trained adapter active.
    log : TrainLog
        Loss per step, seconds, tokens, trainable parameters.

    Raises
    ------
    ValueError
        No pairs.
    NotEnoughHistoryError
        Fewer than ``min_pairs`` pairs.
    """
    examples = _check_pairs(tokenizer, pairs, min_pairs, user, max_length, append_eos)
    model = add_lora(model, adapter_name, r, alpha, target_modules, dropout, seed)
    log = train_loop(model, _adapter_params(model, adapter_name), _sft_step(model, examples, _pad_id(tokenizer)),
                     len(examples), steps, lr, batch_size, seed, weight_decay, progress=progress,
                     desc=f"LoRA {adapter_name}")
    return model, log


def train_full(model, tokenizer, pairs, steps: int = 20, lr: float = 2e-5, batch_size: int = 4, seed: int = 0,
               min_pairs: int = 1, max_length: int | None = None, append_eos: bool = True,
               weight_decay: float = 0.0, progress: bool = False) -> TrainLog:
    """Full fine-tuning: every weight of ``model`` is trained, in place.

    Parameters are those of :func:`train_lora`; the learning rate is much smaller (all weights
    move). Memory: weights + gradients + two AdamW moments, four times the model size.

    Returns
    -------
    TrainLog
    """
    if _is_peft(model) or _has_injected_adapters(model):
        raise TypeError("train_full expects a plain transformers model; fold adapters in first with "
                        "merge_into_base(model, adapter_name)")
    examples = _check_pairs(tokenizer, pairs, min_pairs, None, max_length, append_eos)
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    return train_loop(model, params, _sft_step(model, examples, _pad_id(tokenizer)), len(examples), steps, lr,
                      batch_size, seed, weight_decay, progress=progress, desc="full fine-tuning")


def merge_into_base(model, adapter_name: str):
    """Fold one adapter into the weights and drop every adapter: the plain model that results
    is the "global" model on top of which per-user adapters are trained (OPPU).

    Returns
    -------
    transformers.PreTrainedModel
        The base model object, its weights now ``W + (alpha / r) B A``.
    """
    if not _is_peft(model) or adapter_name not in model.peft_config:
        known = list(model.peft_config) if _is_peft(model) else []
        raise KeyError(f"no adapter {adapter_name!r} to merge; the model's adapters: {known}")
    model.set_adapter(adapter_name)
    return model.merge_and_unload(adapter_names=[adapter_name])


@contextlib.contextmanager
def use_adapter(model, adapter_name: str | None):
    """Within the block, ``adapter_name`` is the active adapter (None: all adapters disabled,
    i.e. the base model); the previously active adapter is restored afterwards.

    Example: ``with use_adapter(model, "user_7"): tasks.score_personachat(model, ..., cache=False)``.
    """
    if adapter_name is None:
        with model.disable_adapter():
            yield model
        return
    if adapter_name not in model.peft_config:
        raise KeyError(f"no adapter {adapter_name!r} is loaded; loaded adapters: {list(model.peft_config)}")
    previous = model.active_adapter
    model.set_adapter(adapter_name)
    try:
        yield model
    finally:
        model.set_adapter(previous)


# =========================================================================== soft prompts
def prefixed_forward(model, prefix, input_ids, attention_mask=None, position_ids=None, **kwargs):
    """Run ``model`` with ``prefix`` (virtual token embeddings) in front of each sequence.

    Parameters
    ----------
    model
        A causal LM.
    prefix : torch.Tensor (batch, n_virtual, hidden)
        One row of virtual tokens per sequence (e.g. each row's user).
    input_ids, attention_mask, position_ids
        As the model takes them; left or right padded. The prefix takes positions
        ``0..n_virtual-1`` and the real tokens follow it.
    **kwargs
        Passed on (``use_cache``, ``logits_to_keep``).

    Returns
    -------
    The model's output, with ``logits`` for the real tokens only (the prefix positions cut
    off), so they line up with ``input_ids``.
    """
    n_rows, n_virtual = input_ids.shape[0], prefix.shape[1]
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if position_ids is None:
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    embeds = model.get_input_embeddings()(input_ids)
    ones = torch.ones((n_rows, n_virtual), dtype=attention_mask.dtype, device=attention_mask.device)
    virtual_positions = torch.arange(n_virtual, device=position_ids.device).expand(n_rows, n_virtual)
    output = model(inputs_embeds=torch.cat([prefix.to(embeds.dtype), embeds], dim=1),
                   attention_mask=torch.cat([ones, attention_mask], dim=1),
                   position_ids=torch.cat([virtual_positions, position_ids + n_virtual], dim=1), **kwargs)
    if not kwargs.get("logits_to_keep"):      # logits_to_keep keeps the last positions: already aligned
        output.logits = output.logits[:, n_virtual:]
    return output


class UserPrefixes(torch.nn.Module):
    """Per-user virtual tokens ("user embeddings"): ``n_virtual`` learned input embeddings per
    user, put in front of every prompt of that user.

    The whole thing is one ``nn.Embedding(n_users, n_virtual * hidden)``: a user's row, reshaped
    to (n_virtual, hidden), is their soft prompt. Every user starts from the same ``init``, so
    the differences between users come only from their data.

    Parameters
    ----------
    users : sequence
        The user ids, in a fixed order.
    init : torch.Tensor (n_virtual, hidden)
        The starting soft prompt (e.g. embeddings of real tokens).
    """

    def __init__(self, users, init):
        super().__init__()
        self.users = list(users)
        if len(set(self.users)) != len(self.users):
            raise ValueError("users must be distinct")
        self.index = {user: i for i, user in enumerate(self.users)}
        self.n_virtual, self.hidden = init.shape
        self.embedding = torch.nn.Embedding(len(self.users), self.n_virtual * self.hidden)
        with torch.no_grad():
            self.embedding.weight.copy_(init.reshape(1, -1).expand(len(self.users), -1))

    def rows(self, users) -> torch.Tensor:
        """Row indices of ``users`` in the table (``KeyError`` for a user without a soft prompt)."""
        unknown = [u for u in users if u not in self.index]
        if unknown:
            raise KeyError(f"no soft prompt for user(s) {unknown[:5]}; users with one: {self.users[:10]}"
                           f"{'...' if len(self.users) > 10 else ''} ({len(self.users)} users)")
        return torch.tensor([self.index[u] for u in users], device=self.embedding.weight.device)

    def forward(self, users) -> torch.Tensor:
        """The soft prompts of ``users``: a tensor (len(users), n_virtual, hidden)."""
        return self.embedding(self.rows(users)).view(len(users), self.n_virtual, self.hidden)

    def for_user(self, model, user) -> "SoftPromptLM":
        """``model`` with ``user``'s soft prompt in front of every input, ready for
        :func:`p13n_utils.generation.score` and the scorers of :mod:`p13n_utils.tasks`."""
        return SoftPromptLM(model, self([user])[0].detach())

    @property
    def params_per_user(self) -> int:
        return self.n_virtual * self.hidden


class SoftPromptLM(torch.nn.Module):
    """A causal LM with one fixed soft prompt in front of every input (for scoring).

    It takes ``input_ids, attention_mask, position_ids, logits_to_keep`` like the model and
    returns logits aligned with ``input_ids``, so :func:`p13n_utils.generation.score`,
    :func:`~p13n_utils.generation.next_token_distribution` and the scorers of
    :mod:`p13n_utils.tasks` work on it unchanged (``generate`` does not). Its parameters include
    the soft prompt, so :func:`p13n_utils.cache.fingerprint` differs from user to user.
    """

    def __init__(self, model, prefix: torch.Tensor):
        super().__init__()
        self.model = model
        self.prefix = torch.nn.Parameter(prefix.clone(), requires_grad=False)
        self.config = model.config

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        prefix = self.prefix.unsqueeze(0).expand(input_ids.shape[0], -1, -1)
        return prefixed_forward(self.model, prefix, input_ids, attention_mask, position_ids, **kwargs)


def train_soft_prompts(model, tokenizer, pairs: pd.DataFrame, n_virtual: int = 8, steps: int = 50, lr: float = 1e-2,
                       batch_size: int = 8, seed: int = 0, max_length: int | None = None, min_pairs: int = 1,
                       append_eos: bool = True, progress: bool = False):
    """Learn one soft prompt per user, jointly across users, with the LM frozen.

    Each training row's user selects their row of a :class:`UserPrefixes` table, whose
    embeddings are put in front of the row's prompt (:func:`prefixed_forward`); the loss is the
    usual target-token loss. Batches mix users; only the table is updated.

    Parameters
    ----------
    model, tokenizer
    pairs : DataFrame
        ``user_id, prompt, target`` (e.g. :func:`personachat_pairs` of several users).
    n_virtual : int, default 8
        Virtual tokens per user (parameters per user: ``n_virtual * hidden``).
    steps, lr, batch_size, seed
        See :func:`train_loop`. The table starts from the embeddings of ``n_virtual`` random
        vocabulary tokens (seeded), the same for every user.
    max_length, append_eos : optional
        As in :func:`encode_pairs` (``max_length`` counts the real tokens only).
    min_pairs : int, default 1
        Each user needs this many pairs (:class:`NotEnoughHistoryError` otherwise).

    Returns
    -------
    prefixes : UserPrefixes
        ``prefixes.for_user(model, user)`` is the model to score that user with.
    log : TrainLog
    """
    if not isinstance(pairs, pd.DataFrame) or "user_id" not in pairs:
        raise TypeError("pairs must be a DataFrame with columns user_id, prompt, target (e.g. personachat_pairs)")
    if pairs.empty:
        raise ValueError("no training pairs: the data set is empty")
    counts = pairs["user_id"].value_counts()
    if counts.min() < min_pairs:
        raise NotEnoughHistoryError(counts.idxmin(), int(counts.min()), min_pairs)
    examples = encode_pairs(tokenizer, pairs, max_length=max_length, append_eos=append_eos)
    row_users = pairs["user_id"].tolist()
    embeddings = model.get_input_embeddings().weight
    rng = np.random.default_rng(seed)
    init_ids = torch.as_tensor(rng.choice(embeddings.shape[0], size=n_virtual, replace=False), device=embeddings.device)
    torch.manual_seed(seed)
    prefixes = UserPrefixes(sorted(counts.index.tolist()), embeddings[init_ids].detach().float())
    prefixes.to(embeddings.device)
    pad_id = _pad_id(tokenizer)

    def step_loss(indices):
        batch = _to_device(collate([examples[i] for i in indices], pad_id), embeddings.device)
        logits = prefixed_forward(model, prefixes([row_users[i] for i in indices]), batch["input_ids"],
                                  batch["attention_mask"], batch["position_ids"], use_cache=False).logits
        labels = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels,
                                                 ignore_index=IGNORE_INDEX)
        return loss, int(batch["attention_mask"].sum()), {}

    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    try:
        log = train_loop(model, list(prefixes.parameters()), step_loss, len(examples), steps, lr, batch_size, seed,
                         progress=progress, desc="soft prompts")
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    return prefixes, log


# =========================================================================== saving and loading adapters
def _base_model(model):
    if not _is_peft(model):
        return model
    try:
        return model.get_base_model()
    except KeyError:                      # every adapter was deleted: peft's lookup of the active one fails
        return model.base_model.model


def base_signature(model) -> dict:
    """What an adapter must agree with: the base model's name, architecture and weights.

    Returns
    -------
    dict
        ``name`` (last part of the model's path or id), ``model_type``, ``hidden_size``,
        ``num_hidden_layers``, ``vocab_size`` and ``weights`` (a fingerprint of the base weights,
        adapters excluded).
    """
    config = _base_model(model).config
    name = str(getattr(config, "_name_or_path", "") or config.model_type)
    return {"name": Path(name).name or name, "model_type": config.model_type,
            "hidden_size": getattr(config, "hidden_size", None),
            "num_hidden_layers": getattr(config, "num_hidden_layers", None),
            "vocab_size": getattr(config, "vocab_size", None), "weights": fingerprint(model, adapters=False)}


def folder_bytes(path) -> int:
    """Total size of the files under ``path`` (bytes)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def save_adapter(model, adapter_name: str, directory, extra: dict | None = None) -> Path:
    """Save one adapter to ``directory`` atomically (nothing half-written if it fails).

    The adapter is written into a temporary folder next to ``directory`` and renamed into place
    (replacing an older version). Besides peft's ``adapter_config.json`` and
    ``adapter_model.safetensors``, ``p13n_adapter.json`` records the base model's
    :func:`base_signature` and ``extra`` (e.g. ``{"user": 42}``), checked by :func:`load_adapter`.

    Returns
    -------
    Path
        ``directory``.
    """
    if not _is_peft(model) or adapter_name not in model.peft_config:
        known = list(model.peft_config) if _is_peft(model) else []
        raise KeyError(f"no adapter {adapter_name!r} to save; the model's adapters: {known}")
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    old = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save_pretrained(str(tmp), selected_adapters=[adapter_name])
        saved = tmp if adapter_name == "default" else tmp / adapter_name   # peft's layout
        (saved / "README.md").unlink(missing_ok=True)
        meta = {"adapter_name": adapter_name, "base": base_signature(model), **(extra or {})}
        (saved / ADAPTER_META).write_text(json.dumps(meta, indent=2, default=str))
        saved.chmod(0o755)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}-{time.time_ns()}")
            directory.rename(old)
        saved.rename(directory)
    except BaseException:
        if old is not None and not directory.exists():
            old.rename(directory)         # put the previous version back
            old = None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return directory


def _check_adapter_fits(model, directory: Path, check_weights: bool) -> None:
    """Raise :class:`AdapterMismatchError` if the adapter in ``directory`` does not fit ``model``."""
    from safetensors import safe_open

    meta_path = directory / ADAPTER_META
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    saved = meta.get("base", {})
    here = base_signature(model)
    for key in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size"):
        if key in saved and saved[key] != here[key]:
            raise AdapterMismatchError(
                f"the adapter in {config.display_path(directory)} was trained on {saved.get('name')!r} ({key}={saved[key]}), but this "
                f"model is {here['name']!r} ({key}={here[key]}): load it into the base model it was trained on")
    # the shapes of the LoRA matrices against the modules they adapt
    base = _base_model(model)
    weights = directory / "adapter_model.safetensors"
    if weights.is_file():
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():
                if ".lora_A." not in key and ".lora_B." not in key:
                    continue
                module_name = key.split(".lora_")[0].removeprefix("base_model.model.")
                try:
                    module = base.get_submodule(module_name)
                except AttributeError:
                    raise AdapterMismatchError(
                        f"the adapter in {config.display_path(directory)} adapts {module_name!r}, which this model "
                        f"({here['name']!r}) does not have: it was trained on another base model "
                        f"({saved.get('name', 'unknown')!r})") from None
                module = getattr(module, "base_layer", module)
                shape = f.get_slice(key).get_shape()
                expected = module.in_features if ".lora_A." in key else module.out_features
                got = shape[1] if ".lora_A." in key else shape[0]
                if got != expected:
                    raise AdapterMismatchError(
                        f"the adapter in {config.display_path(directory)} has {key} of shape {tuple(shape)}, but {module_name} of this "
                        f"model ({here['name']!r}) needs {expected} features: it was trained on another base model "
                        f"({saved.get('name', 'unknown')!r})")
    if check_weights and "weights" in saved and saved["weights"] != here["weights"]:
        raise AdapterMismatchError(
            f"the adapter in {config.display_path(directory)} was trained on base weights {saved['weights']} ({saved.get('name')!r}) but "
            f"this model's weights are {here['weights']} ({here['name']!r}): same architecture, other weights. "
            "A per-user (OPPU) adapter must be loaded into the base with the global adapter merged "
            "(merge_into_base), a global adapter into the plain base. check_weights=False skips this check.")


def load_adapter(model, directory, adapter_name: str, check_weights: bool = True):
    """Load a saved adapter into ``model`` under ``adapter_name``, after checking that it fits.

    Parameters
    ----------
    model
        A transformers model (wrapped in place) or a peft model (the adapter is added; the base
        model is not reloaded).
    directory : path
        Written by :func:`save_adapter` (or any peft adapter folder: then only shapes are checked).
    adapter_name : str
        Must not be loaded already.
    check_weights : bool, default True
        Also compare the base weights' fingerprint with the one recorded at saving.

    Returns
    -------
    peft.PeftModel
        The adapter is loaded but not activated (use :func:`use_adapter` or ``set_adapter``).

    Raises
    ------
    FileNotFoundError
        Not an adapter folder.
    AdapterMismatchError
        The adapter was trained on another base model or other base weights.
    """
    from peft import PeftModel

    directory = Path(directory)
    if not (directory / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{config.display_path(directory)} is not an adapter folder (no adapter_config.json); "
                                "save adapters with finetune.save_adapter")
    _check_adapter_fits(model, directory, check_weights)
    if _is_peft(model):
        if adapter_name in model.peft_config:
            raise ValueError(f"an adapter named {adapter_name!r} is already loaded; adapters: {list(model.peft_config)}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model.load_adapter(str(directory), adapter_name=adapter_name)
        return model
    if _has_injected_adapters(model):
        raise ValueError("this model already carries peft adapters: pass the peft model that wraps it")
    with warnings.catch_warnings():          # a transformers deprecation peft triggers, not ours
        warnings.simplefilter("ignore", FutureWarning)
        return PeftModel.from_pretrained(model, str(directory), adapter_name=adapter_name)


class AdapterStore:
    """One adapter folder per user under ``root`` (``root/user-<id>/``), loaded on demand
    into one model so that switching users never reloads the base model.

    Examples
    --------
    >>> store = AdapterStore(config.CACHE_DIR / "adapters" / "oppu")
    >>> store.save(model, user=42, adapter_name="user_42")
    >>> model = store.activate(model, 42)        # loads the adapter once, then set_adapter
    >>> store.users()                              # [42, ...]
    """

    def __init__(self, root):
        self.root = Path(root)

    @staticmethod
    def adapter_name(user) -> str:
        """The adapter name of a user inside the model: ``"user_<id>"``."""
        return f"user_{user}"

    def path(self, user) -> Path:
        return self.root / f"user-{user}"

    def save(self, model, user, adapter_name: str | None = None) -> Path:
        """Save the user's adapter (default name :meth:`adapter_name`) atomically. A numpy id
        (``np.int64(42)``, as pandas hands them out) is stored as the plain number, so that
        :meth:`users` gives ids that compare equal to the data's."""
        user = user.item() if isinstance(user, np.generic) else user
        return save_adapter(model, adapter_name or self.adapter_name(user), self.path(user), extra={"user": user})

    def users(self) -> list:
        """The users that have a saved adapter (sorted)."""
        if not self.root.is_dir():
            return []
        found = []
        for meta in self.root.glob(f"user-*/{ADAPTER_META}"):
            found.append(json.loads(meta.read_text()).get("user"))
        return sorted((u for u in found if u is not None), key=lambda u: (str(type(u)), u))

    def _check_known(self, user) -> None:
        if not (self.path(user) / ADAPTER_META).is_file():
            known = self.users()
            raise KeyError(f"no adapter for user {user!r} in {config.display_path(self.root)}; users with an adapter: {known[:20]}"
                           f"{'...' if len(known) > 20 else ''} ({len(known)} users). Fall back to the global "
                           "adapter for this user, or train one (train_lora + AdapterStore.save)")

    def load(self, model, user, check_weights: bool = True):
        """Load the user's adapter into ``model`` (if not loaded yet); returns the peft model."""
        self._check_known(user)
        name = self.adapter_name(user)
        if _is_peft(model) and name in model.peft_config:
            return model
        return load_adapter(model, self.path(user), name, check_weights=check_weights)

    def activate(self, model, user):
        """Load (once) and make the user's adapter the active one; returns the peft model."""
        model = self.load(model, user)
        model.set_adapter(self.adapter_name(user))
        return model

    def switch(self, model, user):
        """Make ``user``'s adapter the active one and unload the other users' adapters of this
        store, so that one user adapter at a time is in memory however many users are served
        (the base model is never reloaded). Returns the peft model."""
        model = self.activate(model, user)
        keep = self.adapter_name(user)
        for name in list(model.peft_config):
            if name != keep and name.startswith("user_"):
                model.delete_adapter(name)
        return model

    def bytes_on_disk(self, user) -> int:
        self._check_known(user)
        return folder_bytes(self.path(user))


# =========================================================================== one adapter per group
def train_adapters(model, tokenizer, pairs: pd.DataFrame, by: str = "user_id", groups: Sequence | None = None,
                   prefix: str = "user", min_pairs: int = 1, store: "AdapterStore | None" = None, **train_kwargs):
    """One LoRA adapter per group of ``pairs`` (per user: OPPU; per persona), each trained only
    on its own rows, beside the others in one model (the base is never reloaded).

    Parameters
    ----------
    model
        The shared base (e.g. the global adapter folded in with :func:`merge_into_base`): a
        transformers model (wrapped in place) or a peft model.
    tokenizer
    pairs : DataFrame
        ``prompt``, ``target`` and the ``by`` column.
    by : str, default "user_id"
        The column that names the group of a row.
    groups : sequence, optional
        The groups to train (default: every group of ``pairs``). A group with fewer than
        ``min_pairs`` rows (none at all included) is skipped: the documented fallback is to
        serve it with the shared base.
    prefix : str, default "user"
        Adapter names are ``f"{prefix}_{group}"`` (:meth:`AdapterStore.adapter_name` for "user").
    min_pairs : int, default 1
    store : AdapterStore, optional
        Save each adapter there (atomically) and unload it from ``model`` right after, so that
        memory stays flat however many users there are; :meth:`AdapterStore.activate` loads
        it back. Without a store every adapter stays loaded.
    **train_kwargs
        Passed to :func:`train_lora` (``steps``, ``lr``, ``r``, ``batch_size``, ``seed``,
        ``append_eos``, ...); every group gets the same settings and seed.

    Returns
    -------
    model
        With a store: the plain base (every adapter saved and unloaded). Without one: a peft
        model holding every trained adapter (the model passed if none was trained).
    logs : dict
        group -> :class:`TrainLog`.
    skipped : dict
        group -> :class:`NotEnoughHistoryError`, for the groups served by the fallback.
    """
    if not isinstance(pairs, pd.DataFrame) or by not in pairs:
        raise TypeError(f"pairs must be a DataFrame with columns prompt, target and {by!r}")
    by_group = {group: rows for group, rows in pairs.groupby(by, sort=True)}
    groups = sorted(by_group) if groups is None else list(groups)
    if not groups:
        raise ValueError("no groups to train: pairs is empty and no groups were given")
    logs, skipped = {}, {}
    for group in groups:
        rows = by_group.get(group, pairs.iloc[:0])
        if len(rows) < max(min_pairs, 1):
            skipped[group] = NotEnoughHistoryError(group, len(rows), max(min_pairs, 1))
            continue
        name = f"{prefix}_{group}"
        model, logs[group] = train_lora(model, tokenizer, rows, adapter_name=name, min_pairs=min_pairs, user=group,
                                        **train_kwargs)
        if store is not None:
            store.save(model, group, adapter_name=name)
            model.delete_adapter(name)
    if store is not None:
        model = plain_model(model)        # every adapter is on disk: hand back the plain base
    return model, logs, skipped


def plain_model(model):
    """The transformers model inside ``model`` with every adapter removed (not merged): the
    base again, e.g. after the per-persona adapters were scored. A plain model is returned as is."""
    if not _is_peft(model):
        return model
    return model.unload()


# =========================================================================== costs
def count_parameters(model, adapter_name: str | None = None) -> int:
    """Parameters of one adapter (``adapter_name``), or of the whole model (None)."""
    if adapter_name is None:
        return sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in _adapter_params(model, adapter_name))


def model_bytes(model) -> int:
    """Bytes of the model's parameters in memory (what a full copy per user would store)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def adapter_cost(n_params: int, seconds: float, bytes_on_disk: int | None = None, steps: int | None = None,
                 bytes_per_param: int = 4) -> dict:
    """The per-user cost of a personalization method, one row of the cost table.

    Parameters
    ----------
    n_params : int
        Trainable parameters stored per user (an adapter, a soft prompt, or a whole model for
        full fine-tuning): :func:`count_parameters` or ``TrainLog.trainable_params``.
    seconds : float
        Training time per user (``TrainLog.seconds``).
    bytes_on_disk : int, optional
        Measured size of the saved adapter (:func:`folder_bytes`); default ``n_params *
        bytes_per_param``.
    steps : int, optional

    Returns
    -------
    dict
        ``params, bytes, seconds`` (and ``steps``, ``seconds_per_step``).
    """
    out = {"params": int(n_params), "bytes": int(bytes_on_disk if bytes_on_disk is not None else n_params * bytes_per_param),
           "seconds": float(seconds)}
    if steps:
        out.update(steps=int(steps), seconds_per_step=float(seconds) / steps)
    return out


def extrapolate_cost(cost: dict, n_users: Sequence[int] = (1, 1_000, 1_000_000)) -> pd.DataFrame:
    """Scale a per-user cost (:func:`adapter_cost`) to many users (linear: one adapter each).

    Returns
    -------
    DataFrame
        One row per user count: ``users, params, disk_gb, train_hours`` (training hours on the
        machine that measured ``seconds``, one user after another).
    """
    rows = [{"users": int(n), "params": cost["params"] * int(n), "disk_gb": cost["bytes"] * int(n) / 1e9,
             "train_hours": cost["seconds"] * int(n) / 3600} for n in n_users]
    return pd.DataFrame(rows)
