"""The training engine every trainer of the series shares: tokenized pairs, batches,
sequence log-probabilities, one training loop, one config and one result type.

- :func:`encode_pairs` tokenizes (prompt, target) pairs exactly as
  :func:`p13n_utils.generation.score` does (prompt with the tokenizer's special tokens, target
  without, then an eos token) and masks the prompt with label ``-100``; :func:`collate` pads a
  batch on the right or the left (with explicit position ids, so both give the same loss).
- :func:`sequence_logps` (summed log-probability of the target tokens) and :func:`lm_loss` (the
  SFT loss) are what the fine-tuning methods (:mod:`p13n_utils.finetune`) and DPO
  (:mod:`p13n_utils.alignment`) optimise.
- :class:`TrainConfig` holds the settings every trainer shares (steps, learning rate, batch size,
  seed, ...); :func:`train_loop` is the one plain PyTorch loop (AdamW, gradient clipping, seeded
  batches) and :class:`TrainResult` what every trainer returns (loss per step, seconds, tokens,
  trainable parameters, and the trained model).
- :func:`training_memory_bytes` and :func:`available_memory_bytes` say whether a training run
  fits in this machine's memory (e.g. full fine-tuning on a 2 GB Binder machine).

Bad input: no pairs at all raise ``ValueError``; fewer than ``TrainConfig.min_pairs`` pairs raise
:class:`NotEnoughHistoryError` (a ``ValueError``; the documented fallback is a shared adapter).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import memory
from .generation import pad_id  # the one definition, shared with scoring and generation

__all__ = [
    "IGNORE_INDEX", "NotEnoughHistoryError", "TrainConfig", "TrainResult", "as_pairs", "encode_pairs",
    "check_history", "encode_training_pairs", "collate", "to_device", "model_device", "pad_id",
    "sequence_logps", "lm_loss", "sft_step", "batch_indices", "train_loop", "tokens_per_step",
    "target_logits_if_short", "training_memory_bytes",
    "available_memory_bytes",
]

IGNORE_INDEX = -100
"""Label of the positions that do not count in the loss (prompt and padding)."""


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


@dataclass(frozen=True)
class TrainConfig:
    """The settings every trainer shares (LoRA, full fine-tuning, soft prompts, DPO).

    Attributes
    ----------
    lr : float
        AdamW's learning rate (no default: it depends on the method, e.g. ~1e-3 for LoRA,
        ~2e-5 for full fine-tuning, ~1e-2 for soft prompts).
    steps : int, default 20
        Optimizer steps.
    batch_size : int, default 4
        Examples (or preference pairs) per step.
    seed : int, default 0
        Seeds the batches and any random initialisation (a LoRA's A, a soft prompt's start).
    weight_decay : float, default 0
    max_grad_norm : float or None, default 1.0
        Gradient-norm clipping (None: none).
    max_length : int, optional
        Cut prompts from the left to this many tokens (:func:`encode_pairs`).
    append_eos : bool, default True
        End each target with the eos token. For rating pairs, False puts the whole loss on the
        digit (the only token :func:`p13n_utils.tasks.predict_ratings` reads).
    min_pairs : int, default 1
        Fewer training pairs (for a user) raise :class:`NotEnoughHistoryError`.
    progress : bool, default False
        A tqdm bar.

    ``dataclasses.replace(cfg, steps=5)`` gives a copy with other settings.
    """

    lr: float
    steps: int = 20
    batch_size: int = 4
    seed: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    max_length: int | None = None
    append_eos: bool = True
    min_pairs: int = 1
    progress: bool = False

    def replace(self, **changes) -> "TrainConfig":
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def settings(self) -> dict:
        """The settings that change what is learned (all but ``progress``), e.g. for a cache key."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "progress"}


@dataclass
class TrainResult:
    """What every trainer returns: what was trained, and the training log (for the loss curves
    and the cost table).

    Attributes
    ----------
    model
        The model to use next: a peft model with the new adapter active (LoRA, DPO), the model
        trained in place (full fine-tuning), the frozen LM (soft prompts), or the shared base
        (one adapter per group, saved to a store).
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
    adapter_name : str or None
        The adapter trained (LoRA, DPO).
    prefixes : :class:`p13n_utils.finetune.UserPrefixes` or None
        The per-user soft prompts (soft-prompt training).
    groups : dict
        group -> TrainResult of each adapter (:func:`p13n_utils.finetune.train_adapters`).
    skipped : dict
        group -> :class:`NotEnoughHistoryError`: the groups served by the fallback.
    loaded : bool
        True when the model was loaded from a saved adapter instead of trained
        (:func:`p13n_utils.alignment.train_or_load_dpo_lora`); the log is then the saved one.
    """

    model: object = None
    losses: list = field(default_factory=list)
    seconds: float = 0.0
    n_examples: int = 0
    n_tokens: int = 0
    trainable_params: int = 0
    metrics: dict = field(default_factory=dict)
    adapter_name: str | None = None
    prefixes: object = None
    groups: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    loaded: bool = False

    LOG_FIELDS = ("losses", "seconds", "n_examples", "n_tokens", "trainable_params", "metrics")

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

    def log(self) -> dict:
        """The log fields as plain JSON values (saved beside an adapter; :meth:`from_log` reads them)."""
        return {name: getattr(self, name) for name in self.LOG_FIELDS}

    @classmethod
    def from_log(cls, log: dict, **kwargs) -> "TrainResult":
        return cls(**{name: log[name] for name in cls.LOG_FIELDS if name in log}, **kwargs)


# =========================================================================== collation
def as_pairs(pairs) -> list[tuple[str, str]]:
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
    pairs = as_pairs(pairs)
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


_TARGETS_ONLY = contextvars.ContextVar("p13n_targets_only", default=False)
"""True inside a training loop short of memory: :func:`sequence_logps` computes the logits
(49,152 numbers a token for SmolLM2, the largest activation by far) only from the first target
position on, instead of at every prompt position."""


def collate(examples: Sequence[dict], pad_id: int, padding_side: str | None = None) -> dict:
    """Pad encoded examples into a batch of tensors.

    Parameters
    ----------
    examples : list of dict
        From :func:`encode_pairs`.
    pad_id : int
        The tokenizer's pad token id (masked out anyway).
    padding_side : {"right", "left"}, optional
        Right padding is the usual choice for training; left padding is what batched generation
        uses. Both give the same loss because the position ids count from each sequence's first
        real token. Default right, or left inside a training loop short of memory (the targets
        then sit together at the end, so few positions need logits: :func:`sequence_logps`).

    Returns
    -------
    dict of torch.Tensor
        ``input_ids``, ``attention_mask``, ``position_ids`` and ``labels`` (``-100`` on the
        prompt and the padding), each of shape (batch, longest sequence).
    """
    if padding_side is None:
        padding_side = "left" if _TARGETS_ONLY.get() else "right"
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


def to_device(batch: dict, device) -> dict:
    """The batch's tensors on ``device``."""
    return {key: value.to(device) for key, value in batch.items()}


def model_device(model):
    """The device of the model's (first) parameters."""
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
    batch = to_device(batch, model_device(model))
    keep = _target_span(batch["labels"]) if _TARGETS_ONLY.get() else 0   # 0: logits at every position
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], use_cache=False,
                   **({"logits_to_keep": keep} if keep else {})).logits
    labels = batch["labels"][:, 1:]                      # the token at t+1 is predicted at t
    if keep:
        labels = labels[:, -(keep - 1):]                 # the positions whose logits were kept
    token_nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels,
                                ignore_index=IGNORE_INDEX, reduction="none")   # 0 where ignored
    return -token_nll.sum(dim=1), (labels != IGNORE_INDEX).sum(dim=1)


_REPORTED: set[str] = set()


@contextlib.contextmanager
def target_logits_if_short(model, n_tokens: int, part: str):
    """Inside the block, :func:`sequence_logps` computes logits at the target positions only
    when the logits of ``n_tokens`` tokens at every position do not fit in the memory available
    (:func:`p13n_utils.memory.fits`; the reason is printed once per ``part``). The same
    log-probabilities, less memory; on a machine with enough memory nothing changes."""
    need = memory.logits_bytes(n_tokens, 1, model.config.vocab_size, copies=2)
    ok, reason = memory.fits(need, f"{part}: logits at every position of {n_tokens} tokens",
                             "logits of the target tokens only (the same log-probabilities up to rounding)")
    if not ok and part not in _REPORTED:
        _REPORTED.add(part)
        print(reason)
    token = _TARGETS_ONLY.set(_TARGETS_ONLY.get() or not ok)
    try:
        yield
    finally:
        _TARGETS_ONLY.reset(token)


def _target_span(labels: torch.Tensor) -> int:
    """Positions, counted from the end, that hold every target token and the one before it
    (0 when that is the whole sequence)."""
    columns = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    if len(columns) == 0:
        return 0
    keep = labels.shape[1] - int(columns[0]) + 1
    return keep if keep < labels.shape[1] else 0


def lm_loss(model, batch: dict):
    """Mean negative log-likelihood per target token over the whole batch (the SFT loss)."""
    logps, n_tokens = sequence_logps(model, batch)
    return -logps.sum() / n_tokens.sum().clamp(min=1)


def check_history(n_pairs: int, train: TrainConfig, user=None, what: str = "training pairs") -> None:
    """The bad-input checks of every trainer: ``ValueError`` for no pairs at all,
    :class:`NotEnoughHistoryError` for fewer than ``train.min_pairs`` (``user`` is named)."""
    if n_pairs == 0:
        who = "" if user is None else f" for user {user!r}"
        raise ValueError(f"no {what}{who}: the data set is empty (check the user's history and the split)")
    if n_pairs < train.min_pairs:
        raise NotEnoughHistoryError(user, n_pairs, train.min_pairs)


def encode_training_pairs(tokenizer, pairs, train: TrainConfig, user=None) -> list[dict]:
    """:func:`encode_pairs` after :func:`check_history`, with ``train``'s ``max_length`` and ``append_eos``."""
    pairs = as_pairs(pairs)
    check_history(len(pairs), train, user)
    return encode_pairs(tokenizer, pairs, max_length=train.max_length, append_eos=train.append_eos)


def sft_step(model, examples: list[dict], pad: int):
    """The ``step_loss`` of supervised fine-tuning on ``examples`` (for :func:`train_loop`)."""
    def step_loss(indices):
        batch = collate([examples[i] for i in indices], pad)
        return lm_loss(model, batch), int(batch["attention_mask"].sum()), {}
    return step_loss


# =========================================================================== the training loop
def batch_indices(n: int, batch_size: int, steps: int, seed: int):
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


def train_loop(model, params: list, step_loss: Callable, n_examples: int, train: TrainConfig,
               desc: str = "training", tokens_per_step: int | None = None) -> TrainResult:
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
    n_examples : int
        Batches are seeded shuffles of ``range(n_examples)`` (:func:`batch_indices`).
    train : TrainConfig
        ``steps, lr, batch_size, seed, weight_decay, max_grad_norm, progress``.
    desc : str
        The progress bar's label.
    tokens_per_step : int, optional
        The most tokens a step runs with gradients (:func:`tokens_per_step`). When their
        activations do not fit in the memory available (:func:`p13n_utils.memory.fits`), the
        loop prints why and trains with gradient checkpointing (each layer's activations are
        recomputed in the backward pass) and with logits at the target positions only (the
        prompt's are never used): the same loss, less memory, slower.

    Returns
    -------
    TrainResult
        With ``model`` set to ``model``.
    """
    from tqdm.auto import tqdm

    if train.steps < 1:
        raise ValueError(f"steps must be >= 1, got {train.steps}")
    if not params:
        raise ValueError("there is no parameter to train")
    result = TrainResult(model=model, n_examples=n_examples, trainable_params=sum(p.numel() for p in params))
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    was_training = model.training
    model.train()
    checkpointed = _checkpoint_if_short_of_memory(model, tokens_per_step, desc)
    targets_only = _TARGETS_ONLY.set(checkpointed is not None)
    start = time.perf_counter()
    try:
        for indices in tqdm(batch_indices(n_examples, train.batch_size, train.steps, train.seed), total=train.steps,
                            desc=desc, leave=False, disable=not train.progress):
            loss, n_tokens, metrics = step_loss(indices)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if train.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm)
            optimizer.step()
            result.losses.append(float(loss.detach()))
            result.n_tokens += int(n_tokens)
            for key, value in metrics.items():
                result.metrics.setdefault(key, []).append(float(value))
    finally:
        result.seconds = time.perf_counter() - start
        model.train(was_training)
        _TARGETS_ONLY.reset(targets_only)
        if checkpointed is not None:
            checkpointed()  # gradient checkpointing off again
        del optimizer
        memory.release()  # the freed activations back to the system (else the C heap keeps them)
    return result


def tokens_per_step(examples: list[dict], batch_size: int, sequences_per_example: int = 1, extra: int = 0) -> int:
    """The most tokens one step can run: ``batch_size`` examples padded to the longest one
    (plus ``extra`` tokens each, e.g. a soft prompt), ``sequences_per_example`` sequences each
    (2 for a preference pair)."""
    longest = max(len(e["input_ids"]) for e in examples) + extra
    return sequences_per_example * min(batch_size, len(examples)) * longest


def _checkpoint_if_short_of_memory(model, n_tokens: int | None, desc: str):
    """Switch on gradient checkpointing when ``n_tokens``' activations do not fit; return the
    function that switches it off (None: not needed, or not a transformers model)."""
    from transformers import PreTrainedModel

    if n_tokens is None:
        return None
    hf = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    if hf is None or not hf.supports_gradient_checkpointing:
        return None
    ok, reason = memory.fits(memory.activation_bytes(hf.config, n_tokens),
                             f"{desc}: backpropagation through {n_tokens} tokens a step",
                             "trained with gradient checkpointing instead (and, for LoRA and DPO, with the logits "
                             "of the target tokens only): the same loss up to rounding, less memory, slower")
    if ok:
        return None
    kind = desc.split()[0]  # "LoRA", "DPO", ...: said once, not once per user's adapter
    if kind not in _REPORTED:
        _REPORTED.add(kind)
        print(reason + f" (so are the later {kind} runs short of memory)")
    if hasattr(hf, "activation_checkpointing_enable"):  # transformers >= 5.2 names it so
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        return hf.activation_checkpointing_disable
    hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return hf.gradient_checkpointing_disable


# =========================================================================== does it fit in memory?
OPTIMIZER_STATES = {"adamw": 2, "adam": 2, "sgd": 0, "sgd_momentum": 1}
"""Tensors an optimizer keeps per trained parameter (AdamW: the first and second moments)."""


def training_memory_bytes(model, optimizer: str = "adamw", trainable_only: bool = False) -> int:
    """Memory that training all (or only the trainable) weights of ``model`` needs at least:
    the weights, one gradient per trained weight and the optimizer's states (activations excluded).

    For full fine-tuning with AdamW that is four times the model (weights, gradients, two
    moments): ~2.2 GB for a 135M-parameter model in float32.
    """
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: {sorted(OPTIMIZER_STATES)}")
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trained = [p for p in model.parameters() if p.requires_grad or not trainable_only]
    per_weight = 1 + OPTIMIZER_STATES[optimizer]          # its gradient and the optimizer's states
    return int(weights + per_weight * sum(p.numel() * p.element_size() for p in trained))


def _cgroup_limit(root: Path) -> int | None:
    """The memory limit of this process's cgroup (v2 ``memory.max``, v1 ``memory.limit_in_bytes``)."""
    for name in ("memory.max", "memory/memory.limit_in_bytes", "memory.limit_in_bytes"):
        path = root / name
        if path.is_file():
            text = path.read_text().strip()
            if text.isdigit() and int(text) < 2**60:          # "max" or a huge v1 number: no limit
                return int(text)
    return None


def available_memory_bytes(cgroup_root="/sys/fs/cgroup") -> int:
    """Memory this process may still use, in bytes.

    ``P13N_MEMORY_LIMIT_GB`` (e.g. ``2``, to try a Binder-sized machine) wins; else the cgroup's
    limit (a container such as Binder) minus what the cgroup already uses, when there is one; else
    psutil's available memory of the machine.
    """
    override = os.environ.get("P13N_MEMORY_LIMIT_GB")
    if override:
        import psutil

        limit = int(float(override) * 1e9)
        return max(0, limit - psutil.Process().memory_info().rss)
    root = Path(cgroup_root)
    limit = _cgroup_limit(root)
    if limit is not None:
        for name in ("memory.current", "memory/memory.usage_in_bytes", "memory.usage_in_bytes"):
            if (root / name).is_file():
                return max(0, limit - int((root / name).read_text().strip()))
        return limit
    import psutil

    return int(psutil.virtual_memory().available)
