"""Putting the user into the weights: full fine-tuning, LoRA (one adapter per user), soft prompts.

The survey's *representation learning* family (Zhang et al. 2025, https://arxiv.org/abs/2411.00027)
personalizes the model itself instead of its prompt. This module holds minimal, readable
reference implementations of the variants notebook 06 compares, on the shared training engine
(:mod:`p13n_utils.training`: one :class:`~p13n_utils.training.TrainConfig` in, one
:class:`~p13n_utils.training.TrainResult` out) and the adapter lifecycle
(:mod:`p13n_utils.adapters`):

- **Data**: :func:`personachat_pairs` and :func:`rating_pairs` turn the users' *training* data
  (``PersonaChatEval.train``, the ratings before a user's held-out ones) into (prompt, target)
  pairs written with the very prompt builders the evaluation uses (:mod:`p13n_utils.prompts`), so
  a fine-tuned model is evaluated with :func:`p13n_utils.tasks.score_personachat` /
  :func:`~p13n_utils.tasks.predict_ratings` unchanged.
- **Methods**: :func:`train_lora` (a LoRA adapter via peft; call it again on the returned model
  to add one adapter per user or per persona), :func:`train_full` (all weights) and
  :func:`train_soft_prompts` (per-user virtual tokens: one learned embedding per user, trained
  jointly across users with the LM frozen).
- **One adapter per user (OPPU)**: train a global adapter on everyone, fold it into the weights
  with :func:`p13n_utils.adapters.merge_into_base`, then train each user's adapter on top with
  :func:`train_lora`, or one per user / per persona in one call with :func:`train_adapters`
  (``TrainConfig.min_pairs`` guards users with too little history; a
  :class:`~p13n_utils.adapters.AdapterStore` keeps them on disk).

Bad input (documented fallbacks)
    * No training pairs at all: ``ValueError``.
    * Fewer than ``min_pairs`` pairs for a user: :class:`~p13n_utils.training.NotEnoughHistoryError`
      (a ``ValueError``); the notebook catches it and scores that user with the global adapter::

          try:
              result = finetune.train_lora(model, tok, pairs_u, train.replace(min_pairs=8), f"user_{u}", user=u)
          except training.NotEnoughHistoryError:
              fallback.append(u)          # this user is served by the global adapter

Caching: :func:`p13n_utils.cache.fingerprint` hashes every parameter of the model
(adapters loaded but inactive included) and which adapter is active. Scoring one adapter per
user or per persona passes ``cache=False`` to the scorers of :mod:`p13n_utils.tasks` anyway:
each such score is computed once, and memoising it would only fill the disk.

Example
-------
>>> from p13n_utils import finetune, models, training
>>> base, tok = models.load_lm(fresh=True)              # a private copy: training changes it
>>> pairs = [("<prompt in the chat format>", "the reply to learn")]
>>> result = finetune.train_lora(base, tok, pairs, training.TrainConfig(lr=1e-3, steps=10), "global")
>>> result.losses[:3], result.seconds, result.model     # the peft model, "global" active
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import prompts
from .adapters import (DEFAULT_TARGET_MODULES, AdapterStore, add_lora, adapter_params, has_injected_adapters,
                       is_peft, plain_model)
from .training import (IGNORE_INDEX, NotEnoughHistoryError, TrainConfig, TrainResult, collate, encode_pairs,
                       encode_training_pairs, pad_id, sft_step, to_device, tokens_per_step, train_loop)

__all__ = [
    "personachat_rows", "personachat_pairs", "rating_label", "rating_rows", "rating_pairs", "group_rows",
    "train_lora", "train_full", "UserPrefixes", "SoftPromptLM", "prefixed_forward", "train_soft_prompts",
    "train_adapters",
]


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


def group_rows(pool: pd.DataFrame, assignments: pd.Series, evaluated, n_per_group: int, seed: int = 0,
               column: str = "persona") -> pd.DataFrame:
    """The training rows of a per-group adapter: up to ``n_per_group`` rows of each group (e.g.
    persona) that has an evaluated user, drawn from ``pool`` (the *other* users' training rows).

    Parameters
    ----------
    pool : DataFrame with ``user_id``
    assignments : Series
        user -> group (e.g. ``FactPersonas.assignments``); users without a group are left out.
    evaluated : user ids
        Only the groups of these users get an adapter.
    n_per_group : int
    seed : int
        Seeds the shuffle before each group's first ``n_per_group`` rows are kept.
    column : str, default "persona"
        The group column added to the rows.
    """
    needed = set(assignments.reindex(evaluated).dropna().astype(int))
    pool = pool.assign(**{column: pool["user_id"].map(assignments)}).dropna(subset=[column])
    pool = pool[pool[column].isin(needed)].astype({column: int})
    return pool.sample(frac=1, random_state=seed).groupby(column).head(n_per_group)


# =========================================================================== LoRA and full fine-tuning
def train_lora(model, tokenizer, pairs, train: TrainConfig, adapter_name: str = "default", r: int = 8,
               alpha: float = 16, target_modules: Sequence[str] = DEFAULT_TARGET_MODULES, dropout: float = 0.0,
               user=None) -> TrainResult:
    """Train a new LoRA adapter on (prompt, target) pairs; the base weights stay frozen.

    Parameters
    ----------
    model
        A transformers model (wrapped in place) or the peft model of an earlier call (a new
        adapter is added beside the others: one per user or per persona).
    tokenizer
    pairs : list of (prompt, target) or DataFrame with ``prompt``, ``target``
    train : TrainConfig
        Steps, learning rate, batch size, seed (also of A's initialisation), ``min_pairs``,
        ``append_eos``, ... A few steps at ``lr=1e-3`` suit the CPU budgets of notebook 06.
    adapter_name : str
        Name of the new adapter (it is left active).
    r, alpha, target_modules, dropout
        See :func:`p13n_utils.adapters.add_lora`.
    user : optional
        Named in the error messages.

    Returns
    -------
    TrainResult
        ``model`` is the peft model with the trained adapter active; loss per step, seconds,
        tokens, trainable parameters.

    Raises
    ------
    ValueError
        No pairs.
    NotEnoughHistoryError
        Fewer than ``train.min_pairs`` pairs.
    """
    examples = encode_training_pairs(tokenizer, pairs, train, user)
    model = add_lora(model, adapter_name, r, alpha, target_modules, dropout, train.seed)
    result = train_loop(model, adapter_params(model, adapter_name), sft_step(model, examples, pad_id(tokenizer)),
                        len(examples), train, desc=f"LoRA {adapter_name}",
                        tokens_per_step=tokens_per_step(examples, train.batch_size))
    result.adapter_name = adapter_name
    return result


def train_full(model, tokenizer, pairs, train: TrainConfig) -> TrainResult:
    """Full fine-tuning: every weight of ``model`` is trained, in place.

    The learning rate is much smaller than LoRA's (all weights move). Memory: weights +
    gradients + two AdamW moments, four times the model size
    (:func:`p13n_utils.training.training_memory_bytes`).

    Returns
    -------
    TrainResult
        ``model`` is ``model``, trained.
    """
    if is_peft(model) or has_injected_adapters(model):
        raise TypeError("train_full expects a plain transformers model; fold adapters in first with "
                        "adapters.merge_into_base(model, adapter_name)")
    examples = encode_training_pairs(tokenizer, pairs, train)
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    return train_loop(model, params, sft_step(model, examples, pad_id(tokenizer)), len(examples), train,
                      desc="full fine-tuning", tokens_per_step=tokens_per_step(examples, train.batch_size))


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


def train_soft_prompts(model, tokenizer, pairs: pd.DataFrame, train: TrainConfig, n_virtual: int = 8) -> TrainResult:
    """Learn one soft prompt per user, jointly across users, with the LM frozen.

    Each training row's user selects their row of a :class:`UserPrefixes` table, whose
    embeddings are put in front of the row's prompt (:func:`prefixed_forward`); the loss is the
    usual target-token loss. Batches mix users; only the table is updated.

    Parameters
    ----------
    model, tokenizer
    pairs : DataFrame
        ``user_id, prompt, target`` (e.g. :func:`personachat_pairs` of several users).
    train : TrainConfig
        The table starts from the embeddings of ``n_virtual`` random vocabulary tokens (seeded
        by ``train.seed``), the same for every user; ``max_length`` counts the real tokens only;
        each user needs ``train.min_pairs`` pairs (:class:`NotEnoughHistoryError` otherwise).
    n_virtual : int, default 8
        Virtual tokens per user (parameters per user: ``n_virtual * hidden``).

    Returns
    -------
    TrainResult
        ``prefixes`` is the :class:`UserPrefixes` table: ``result.prefixes.for_user(model, user)``
        is the model to score that user with; ``model`` is the (unchanged) LM.
    """
    if not isinstance(pairs, pd.DataFrame) or "user_id" not in pairs:
        raise TypeError("pairs must be a DataFrame with columns user_id, prompt, target (e.g. personachat_pairs)")
    if pairs.empty:
        raise ValueError("no training pairs: the data set is empty")
    counts = pairs["user_id"].value_counts()
    if counts.min() < train.min_pairs:
        raise NotEnoughHistoryError(counts.idxmin(), int(counts.min()), train.min_pairs)
    examples = encode_pairs(tokenizer, pairs, max_length=train.max_length, append_eos=train.append_eos)
    row_users = pairs["user_id"].tolist()
    embeddings = model.get_input_embeddings().weight
    rng = np.random.default_rng(train.seed)
    init_ids = torch.as_tensor(rng.choice(embeddings.shape[0], size=n_virtual, replace=False), device=embeddings.device)
    torch.manual_seed(train.seed)
    prefixes = UserPrefixes(sorted(counts.index.tolist()), embeddings[init_ids].detach().float())
    prefixes.to(embeddings.device)
    pad = pad_id(tokenizer)

    def step_loss(indices):
        batch = to_device(collate([examples[i] for i in indices], pad, "right"), embeddings.device)  # prefix first
        logits = prefixed_forward(model, prefixes([row_users[i] for i in indices]), batch["input_ids"],
                                  batch["attention_mask"], batch["position_ids"], use_cache=False).logits
        labels = batch["labels"][:, 1:]
        loss = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX)
        return loss, int(batch["attention_mask"].sum()), {}

    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    try:
        result = train_loop(model, list(prefixes.parameters()), step_loss, len(examples), train, desc="soft prompts",
                            tokens_per_step=tokens_per_step(examples, train.batch_size, extra=n_virtual))
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    result.prefixes = prefixes
    return result


# =========================================================================== one adapter per group
def train_adapters(model, tokenizer, pairs: pd.DataFrame, train: TrainConfig, by: str = "user_id",
                   groups: Sequence | None = None, prefix: str = "user", store: AdapterStore | None = None,
                   **lora) -> TrainResult:
    """One LoRA adapter per group of ``pairs`` (per user: OPPU; per persona), each trained only
    on its own rows, beside the others in one model (the base is never reloaded).

    Parameters
    ----------
    model
        The shared base (e.g. the global adapter folded in with
        :func:`p13n_utils.adapters.merge_into_base`): a transformers model (wrapped in place) or
        a peft model.
    tokenizer
    pairs : DataFrame
        ``prompt``, ``target`` and the ``by`` column.
    train : TrainConfig
        The same settings and seed for every group. A group with fewer than ``train.min_pairs``
        rows (none at all included) is skipped: the documented fallback is to serve it with the
        shared base.
    by : str, default "user_id"
        The column that names the group of a row.
    groups : sequence, optional
        The groups to train (default: every group of ``pairs``).
    prefix : str, default "user"
        Adapter names are ``f"{prefix}_{group}"`` (:meth:`AdapterStore.adapter_name` for "user").
    store : AdapterStore, optional
        Save each adapter there (atomically) and unload it from ``model`` right after, so that
        memory stays flat however many users there are; :meth:`AdapterStore.activate` loads
        it back. Without a store every adapter stays loaded.
    **lora
        The adapter's shape, passed to :func:`train_lora` (``r``, ``alpha``, ``target_modules``,
        ``dropout``).

    Returns
    -------
    TrainResult
        ``model``: with a store, the plain base (every adapter saved and unloaded); without one,
        a peft model holding every trained adapter (the model passed if none was trained).
        ``groups``: group -> the TrainResult of its adapter; ``skipped``: group ->
        :class:`NotEnoughHistoryError`, for the groups served by the fallback.
    """
    if not isinstance(pairs, pd.DataFrame) or by not in pairs:
        raise TypeError(f"pairs must be a DataFrame with columns prompt, target and {by!r}")
    by_group = {group: rows for group, rows in pairs.groupby(by, sort=True)}
    groups = sorted(by_group) if groups is None else list(groups)
    if not groups:
        raise ValueError("no groups to train: pairs is empty and no groups were given")
    out = TrainResult(model=model)
    for group in groups:
        rows = by_group.get(group, pairs.iloc[:0])
        if len(rows) < max(train.min_pairs, 1):
            out.skipped[group] = NotEnoughHistoryError(group, len(rows), max(train.min_pairs, 1))
            continue
        name = f"{prefix}_{group}"
        result = train_lora(out.model, tokenizer, rows, train, name, user=group, **lora)
        out.model, out.groups[group] = result.model, result
        result.model = None               # the shared model is out.model; keep one reference
        if store is not None:
            store.save(out.model, group, adapter_name=name)
            out.model.delete_adapter(name)
    if store is not None:
        out.model = plain_model(out.model)        # every adapter is on disk: hand back the plain base
    out.losses = [float(np.mean(step)) for step in zip(*(r.losses for r in out.groups.values()))]
    out.seconds = sum(r.seconds for r in out.groups.values())
    out.n_examples = sum(r.n_examples for r in out.groups.values())
    out.n_tokens = sum(r.n_tokens for r in out.groups.values())
    out.trainable_params = sum(r.trainable_params for r in out.groups.values())
    return out
