"""Preference alignment: preference pairs, Bradley–Terry reward models, DPO, adapter merging.

The survey's RLHF family (Zhang et al. 2025, https://arxiv.org/abs/2411.00027) aligns a model
with *pairwise preferences*, the fourth kind of user data: for a prompt x, a response y+ the user
prefers to y-. Notebook 07 builds on these minimal, readable pieces:

- **Preference pairs** from the tasks' data: PersonaChat (:func:`personachat_preference_pairs`:
  chosen = the user's own reply, rejected = another user's reply at the same turn of a
  conversation) and MovieLens (:func:`movielens_preference_pairs`: for one user, a movie they
  rated >= 4 against one they rated <= 2, given their history).
- **Reward model** (Bradley–Terry): ``P(y+ > y- | x) = sigmoid(r(x, y+) - r(x, y-))`` with a
  small head ``r`` on frozen sentence embeddings (:func:`bt_features`, :class:`RewardHead`,
  :func:`train_reward_model`). A linear head is logistic regression on feature differences.
  What the features see sets the level: :func:`preference_features` builds them from an
  embedding lookup (the response, its context, the user), :func:`fit_level_margins` fits a
  global, per-persona or user-conditioned head. ``pref_acc`` is the share of held-out pairs with
  a positive margin (:func:`reward_margins`, :func:`per_user_accuracy`).
- **DPO** (Rafailov et al. 2023): the policy's implicit reward is
  ``beta * (log pi(y|x) - log pi_ref(y|x))`` and the loss is Bradley–Terry on it
  (:func:`dpo_loss`, checked equal to trl's ``DPOTrainer`` loss in the tests).
  :func:`train_dpo_lora` trains a LoRA policy whose reference is the same model with its
  adapters disabled (no second copy of the weights); :func:`train_or_load_dpo_lora` saves it
  atomically and reloads it on a rerun (:class:`DPOAdapters`: several adapters of one model).
  :func:`implicit_reward_margin` gives ``pref_acc`` on held-out pairs; :func:`preference_logps`
  (memoised on disk) + :func:`dpo_margins` do the same with the reference scored once for
  several policies.
- **Merging** (Personalized Soups, Jang et al. 2023): :func:`p13n_utils.adapters.merge_adapters`
  mixes preference adapters (e.g. one per persona) with per-user weights (:func:`soup_weights`:
  from a user's similarity to each persona, sharpened by a temperature), without retraining;
  :func:`soup_sweep` scores held-out pairs at several temperatures.

DPO runs on the shared training engine (:mod:`p13n_utils.training`: a
:class:`~p13n_utils.training.TrainConfig` in, a :class:`~p13n_utils.training.TrainResult` with the
loss history out) and the adapter lifecycle of :mod:`p13n_utils.adapters`; the prompts of the
MovieLens pairs are :func:`p13n_utils.prompts.recommendation_prompt`.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import prompts
from .adapters import (ADAPTER_META, DEFAULT_TARGET_MODULES, add_lora, adapter_params, base_signature,
                       load_adapter, merge_adapters, save_adapter, use_adapter)
from .cache import fingerprint, memo, payload_key
from .training import (TrainConfig, TrainResult, check_history, collate, encode_pairs, pad_id,
                       sequence_logps, train_loop)

__all__ = [
    "personachat_preference_pairs", "movielens_preference_pairs", "rating_history_context", "fit_reward_margins",
    "bt_features", "preference_features", "fit_level_margins", "RewardHead", "bradley_terry_loss", "train_reward_model", "reward_margins",
    "per_user_accuracy", "dpo_loss", "encode_preferences", "preference_logps", "train_dpo_lora",
    "implicit_reward_margin", "dpo_margins", "record_policy", "train_or_load_dpo_lora", "DPOAdapters", "soup_weights", "soup_logps",
    "soup_sweep",
]


# =========================================================================== preference pairs
def personachat_preference_pairs(tokenizer, rows: pd.DataFrame, context_fn=None,
                                 header: str = prompts.HEADERS["user"], n_history: int = 2,
                                 seed: int = 0) -> pd.DataFrame:
    """One pair per turn: the user's own reply (chosen) against another user's reply at the
    same turn index of another conversation (rejected), after the same prompt.

    Parameters
    ----------
    tokenizer
    rows : DataFrame
        Turns with ``user_id, turn, partner, history, reply`` (``finetune.personachat_rows(ev)``
        for training pairs, ``ev.val`` / ``ev.test`` for held-out pairs).
    context_fn : callable, optional
        ``context_fn(row) -> list of str or None`` (the user's facts for a user-conditioned
        prompt, a persona description, or None for the global prompt).
    header, n_history
        As in :func:`p13n_utils.tasks.personachat_prompts`.
    seed : int
        Seeds the choice of the rejected reply.

    Returns
    -------
    DataFrame
        ``prompt, chosen, rejected, user_id, dialogue_id, turn, rejected_user_id``. A turn with no
        other user at that turn index takes another user's reply from any turn; a rejected
        reply is never the same text as the chosen one.
    """
    from .tasks import personachat_prompts

    if rows.empty:
        raise ValueError("rows is empty: no turn to build preference pairs from")
    users = rows["user_id"].to_numpy()
    if np.unique(users).size < 2:
        raise ValueError("preference pairs need the replies of at least two users (the rejected reply is "
                         "another user's)")
    replies = rows["reply"].astype(str).to_numpy()
    reply_codes = pd.factorize(replies)[0]             # compare integers, not strings
    turns = rows["turn"].to_numpy()
    rng = np.random.default_rng(seed)
    rejected, rejected_user = [], []
    for i in range(len(rows)):
        other = (users != users[i]) & (reply_codes != reply_codes[i])
        pool = np.flatnonzero(other & (turns == turns[i]))
        if pool.size == 0:
            pool = np.flatnonzero(other)
        if pool.size == 0:
            raise ValueError(f"row {i}: every other user's reply is the same text as this one; no rejected reply")
        j = int(rng.choice(pool))
        rejected.append(replies[j])
        rejected_user.append(users[j])
    out = pd.DataFrame({"prompt": personachat_prompts(tokenizer, rows, context_fn, header, n_history),
                        "chosen": replies, "rejected": rejected})
    for column in ("user_id", "dialogue_id", "turn"):
        if column in rows:
            out[column] = rows[column].to_numpy()
    out["rejected_user_id"] = rejected_user
    return out


def movielens_preference_pairs(tokenizer, ratings: pd.DataFrame, movies: pd.DataFrame, context_fn=None,
                               n_per_user: int = 4, liked: float = 4.0, disliked: float = 2.0, seed: int = 0,
                               header: str = prompts.HEADERS["user_ratings"]) -> pd.DataFrame:
    """For each user, pairs (a movie they liked, a movie they disliked) after a prompt about them.

    Parameters
    ----------
    tokenizer
    ratings : DataFrame
        ``user_id, item_id, rating``: the ratings pairs are drawn from (e.g. a user's later
        ratings, or held-out users' ratings).
    movies : DataFrame
        The catalog (``item_id, title, year, genres``).
    context_fn : callable, optional
        ``context_fn(user_id) -> list of str or None``: what the prompt says about the user, e.g.
        ``lambda u: user_context.ml_history_lines(rv, u)`` (their earlier ratings). It must not
        show the pair's movies. None: the global prompt.
    n_per_user : int, default 4
        Pairs per user at most (distinct (liked, disliked) combinations, seeded).
    liked, disliked : float
        Chosen movies are rated >= ``liked``, rejected ones <= ``disliked``; users without both
        give no pair.
    seed : int

    Returns
    -------
    DataFrame
        ``prompt, chosen, rejected, user_id, chosen_item, rejected_item`` (responses are
        :func:`p13n_utils.prompts.movie_text` descriptions).
    """
    from .prompts import movie_descriptions

    if not liked > disliked:
        raise ValueError(f"liked ({liked}) must be above disliked ({disliked})")
    rng = np.random.default_rng(seed)
    rows = []
    for user, mine in ratings.groupby("user_id", sort=True):
        good = mine.loc[mine["rating"] >= liked, "item_id"].to_numpy()
        bad = mine.loc[mine["rating"] <= disliked, "item_id"].to_numpy()
        if good.size == 0 or bad.size == 0:
            continue
        combos = rng.permutation(good.size * bad.size)[:n_per_user]
        prompt = prompts.recommendation_prompt(tokenizer, context_fn(user) if context_fn else None, header)
        for combo in combos:
            rows.append((prompt, user, good[combo // bad.size], bad[combo % bad.size]))
    if not rows:
        raise ValueError(f"no user has both a rating >= {liked} and one <= {disliked}: no preference pair")
    out = pd.DataFrame(rows, columns=["prompt", "user_id", "chosen_item", "rejected_item"])
    out.insert(1, "chosen", movie_descriptions(movies, out["chosen_item"].tolist()))
    out.insert(2, "rejected", movie_descriptions(movies, out["rejected_item"].tolist()))
    return out


def rating_history_context(ratings: pd.DataFrame, movies: pd.DataFrame, m: int = 8):
    """A ``context_fn`` for :func:`movielens_preference_pairs`: ``user -> lines``, the user's ``m``
    latest ratings in ``ratings`` (oldest first) as :func:`p13n_utils.prompts.rating_line` lines
    (``"Heat (1995): 4"``); ``[]`` for a user with none. ``ratings`` must be what was known before
    the pairs' ratings (e.g. the history part of a temporal split)."""
    from .prompts import movie_descriptions

    by_user = {user: rows for user, rows in ratings.groupby("user_id", sort=False)}

    def lines(user) -> list[str]:
        mine = by_user.get(user, ratings.iloc[:0]).tail(m)
        texts = movie_descriptions(movies, mine["item_id"].tolist(), genres=False)
        return [prompts.rating_line(text, rating) for text, rating in zip(texts, mine["rating"])]
    return lines


# =========================================================================== Bradley–Terry reward model
def bt_features(response_emb, prompt_emb=None) -> np.ndarray:
    """Features of (prompt, response) pairs for a reward head on frozen embeddings.

    ``[response]`` alone gives a reward that is the same for everyone and every context; with a
    conditioning embedding ``c`` (the conversation, or the user's profile),
    ``[response, c * response]`` lets the reward depend on it (the element-wise product is a
    diagonal bilinear term ``sum_k w_k c_k r_k``). Several conditioning embeddings (a list) add
    one product block each: ``[response, c1 * response, c2 * response, ...]``.

    Parameters
    ----------
    response_emb : array (n, d)
    prompt_emb : array (n, d), or a list of such arrays, optional

    Returns
    -------
    ndarray (n, d * (1 + number of conditioning embeddings)), float32
    """
    response_emb = np.asarray(response_emb, dtype=np.float32)
    if prompt_emb is None:
        return response_emb
    conditions = list(prompt_emb) if isinstance(prompt_emb, (list, tuple)) else [prompt_emb]
    blocks = [response_emb]
    for condition in conditions:
        condition = np.asarray(condition, dtype=np.float32)
        if condition.shape != response_emb.shape:
            raise ValueError(f"prompt_emb {condition.shape} and response_emb {response_emb.shape} must have the "
                             "same shape")
        blocks.append(condition * response_emb)
    return np.concatenate(blocks, axis=1)


def preference_features(pairs: pd.DataFrame, vectors, sides: Sequence[str] = ("chosen", "rejected"),
                        context: str | None = None, user_vectors=None) -> tuple[np.ndarray, np.ndarray]:
    """The :func:`bt_features` of both responses of each preference pair, from an embedding lookup.

    Parameters
    ----------
    pairs : DataFrame
        One row per pair: the two responses in the columns ``sides``, and ``user_id`` when
        ``user_vectors`` is given.
    vectors : mapping
        ``response -> embedding`` (a text or an item id -> array (d,)); also looks up the
        ``context`` column.
    sides : (str, str), default ``("chosen", "rejected")``
        The columns of the chosen and the rejected response, e.g. ``("chosen_item", "rejected_item")``.
    context : str, optional
        A column whose embedding conditions the reward (e.g. ``"partner"``, the message replied to):
        adds a block ``context * response``.
    user_vectors : mapping, optional
        ``user_id -> embedding`` (the user's profile or taste): adds a block ``user * response``,
        which makes the reward personal.

    Returns
    -------
    chosen, rejected : ndarray (n, d * (1 + number of conditions)), float32
        ``[response]``, ``[response, context * response]``, ``[response, user * response]`` or
        ``[response, context * response, user * response]``.
    """
    conditions = []
    if context is not None:
        conditions.append(np.stack([vectors[key] for key in pairs[context]]))
    if user_vectors is not None:
        conditions.append(np.stack([user_vectors[user] for user in pairs["user_id"]]))
    return tuple(bt_features(np.stack([vectors[key] for key in pairs[side]]), conditions or None) for side in sides)


class RewardHead(torch.nn.Module):
    """A scalar reward ``r(features)``: linear (``hidden=0``) or one hidden layer.

    The linear head has no bias: a constant cancels in ``r(y+) - r(y-)``.
    """

    def __init__(self, dim: int, hidden: int = 0):
        super().__init__()
        if hidden:
            self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1))
        else:
            self.net = torch.nn.Linear(dim, 1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """``mean(-log sigmoid(r+ - r-))``: the negative log-likelihood of the observed preferences
    under the Bradley–Terry model (DPO's loss is this, with its implicit reward)."""
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def train_reward_model(chosen_features, rejected_features, hidden: int = 0, l2: float = 1e-3, steps: int = 100,
                       seed: int = 0):
    """Fit a Bradley–Terry reward head on (chosen, rejected) feature pairs.

    The objective is :func:`bradley_terry_loss` plus ``l2 / 2 * ||weights||^2``, minimised
    full-batch with L-BFGS (for the linear head this is L2-regularised logistic regression on
    ``features+ - features-``, solved to convergence).

    Parameters
    ----------
    chosen_features, rejected_features : array (n, dim)
        E.g. :func:`bt_features` of the chosen and the rejected responses, best scaled to unit
        variance (on tiny features, e.g. products of unit embeddings, the objective is nearly
        flat and L-BFGS stops before it has learned anything).
    hidden : int, default 0
        0: a linear head; otherwise the width of one hidden layer.
    l2 : float, default 1e-3
    steps : int, default 100
        L-BFGS iterations at most.
    seed : int
        Seeds the initialisation of a hidden layer.

    Returns
    -------
    TrainResult
        ``model`` is the :class:`RewardHead`, in eval mode (``head(torch.as_tensor(features))``
        gives rewards); ``losses`` the objective at each L-BFGS evaluation.
    """
    # float64 gives L-BFGS's stopping tests (changes of the loss and of the weights) a precise
    # objective; features should still be on a unit scale (notebook 07 divides them by their std)
    chosen = torch.as_tensor(np.asarray(chosen_features, dtype=np.float64))
    rejected = torch.as_tensor(np.asarray(rejected_features, dtype=np.float64))
    if chosen.ndim != 2 or chosen.shape != rejected.shape:
        raise ValueError(f"chosen {tuple(chosen.shape)} and rejected {tuple(rejected.shape)} features must be two "
                         "arrays of the same shape (n_pairs, dim)")
    if chosen.shape[0] == 0:
        raise ValueError("no preference pairs to train on")
    torch.manual_seed(seed)
    head = RewardHead(chosen.shape[1], hidden).double()
    if not hidden:
        torch.nn.init.zeros_(head.net.weight)
    weights = [p for name, p in head.named_parameters() if name.endswith("weight")]
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-10, tolerance_change=1e-12)
    log = TrainResult(n_examples=chosen.shape[0], trainable_params=sum(p.numel() for p in head.parameters()))

    def closure():
        optimizer.zero_grad()
        loss = bradley_terry_loss(head(chosen), head(rejected)) + l2 / 2 * sum((w ** 2).sum() for w in weights)
        loss.backward()
        log.losses.append(float(loss.detach()))
        return loss

    start = time.perf_counter()
    optimizer.step(closure)
    log.seconds = time.perf_counter() - start
    log.model = head.float().eval()
    return log


def reward_margins(head: RewardHead, chosen_features, rejected_features) -> np.ndarray:
    """``r(chosen) - r(rejected)`` of each pair (positive: the model agrees with the user)."""
    with torch.no_grad():
        chosen = head(torch.as_tensor(np.asarray(chosen_features, dtype=np.float32)))
        rejected = head(torch.as_tensor(np.asarray(rejected_features, dtype=np.float32)))
    return (chosen - rejected).numpy().astype(float)


def per_user_accuracy(margins, users) -> pd.Series:
    """Preference accuracy per user: the share of the user's pairs with a positive margin (a tie,
    margin 0, counts as half). Feed it to ``results.record_ci`` for the interval over users, under
    the registry name of the margin's kind (``reward_pref_acc``, ``dpo_pref_acc``,
    ``logp_pref_acc`` ...)."""
    margins = np.asarray(margins, dtype=float)
    users = np.asarray(users)
    if margins.shape != users.shape:
        raise ValueError(f"{margins.shape} margins for {users.shape} users")
    correct = (margins > 0) + 0.5 * (margins == 0)
    return pd.Series(correct, index=users).groupby(level=0).mean().rename("pref_acc")


def fit_reward_margins(train_chosen, train_rejected, eval_chosen, eval_rejected, l2: float, steps: int = 200,
                       seed: int = 0, train_groups=None, eval_groups=None, min_pairs: int = 20):
    """Reward-model margins of held-out pairs, from one shared head and optionally one head per group.

    The features are first divided by the standard deviation of the training pairs' feature
    differences (unit variance: products of unit embeddings are tiny numbers, on which the
    objective is nearly flat). A shared head is trained on every training pair
    (:func:`train_reward_model`). With groups (e.g. each pair's user's persona), every group with
    at least ``min_pairs`` training pairs and one evaluation pair gets a head of its own, which
    scores that group's evaluation pairs; the other groups keep the shared head (the fallback).

    Parameters
    ----------
    train_chosen, train_rejected, eval_chosen, eval_rejected : arrays (n, dim)
    l2, steps, seed
        As for :func:`train_reward_model`.
    train_groups, eval_groups : arrays (n,), optional
        The group of each training / evaluation pair (NaN: none).
    min_pairs : int, default 20

    Returns
    -------
    margins : ndarray (n_eval,)
    heads : list of TrainResult
        The shared head first, then one per group trained.
    """
    scale = (train_chosen - train_rejected).std(axis=0) + 1e-8
    train_c, train_r, eval_c, eval_r = (f / scale for f in (train_chosen, train_rejected, eval_chosen, eval_rejected))
    shared = train_reward_model(train_c, train_r, l2=l2, steps=steps, seed=seed)
    margins, heads = reward_margins(shared.model, eval_c, eval_r), [shared]
    if train_groups is None:
        return margins, heads
    groups, eval_groups = np.asarray(train_groups), np.asarray(eval_groups)
    for group in np.unique(groups[~pd.isna(groups)]):
        mask, eval_mask = groups == group, eval_groups == group
        if mask.sum() < min_pairs or not eval_mask.any():
            continue                      # too few pairs for a head of its own: the shared head serves it
        head = train_reward_model(train_c[mask], train_r[mask], l2=l2, steps=steps, seed=seed)
        margins[eval_mask] = reward_margins(head.model, eval_c[eval_mask], eval_r[eval_mask])
        heads.append(head)
    return margins, heads


def fit_level_margins(pairs: dict, features, level: str, l2: float, split: str = "test", groups=None,
                      steps: int = 200, seed: int = 0, min_pairs: int = 20):
    """Reward-model margins at one level of personalization: heads fitted on ``pairs["train"]``,
    margins of the pairs of ``split``.

    * ``"global"``: one head on features that do not see the user;
    * ``"persona"``: the same features, one head per group of users (e.g. persona) with at least
      ``min_pairs`` training pairs, the global head for the others (:func:`fit_reward_margins`);
    * ``"user"``: one head on features that see the user (e.g. :func:`preference_features` with
      ``user_vectors``).

    Parameters
    ----------
    pairs : dict
        ``split -> DataFrame`` of preference pairs with a ``user_id`` column; holds ``"train"``
        and ``split``.
    features : callable
        ``features(pairs_frame, kind) -> (chosen, rejected)`` feature arrays, ``kind`` being
        ``"global"`` or ``"user"``.
    level : {"global", "persona", "user"}
    l2 : float
        The heads' L2 penalty (:func:`train_reward_model`).
    split : str, default "test"
        The pairs scored (e.g. ``"val"`` to choose ``l2``).
    groups : mapping or Series, optional
        ``user_id -> group``; required for ``level="persona"`` (users it does not map: the global head).
    steps, seed, min_pairs
        As for :func:`fit_reward_margins`.

    Returns
    -------
    margins : ndarray (len(pairs[split]),)
    heads : list of TrainResult
        The shared head first, then one per group trained.
    """
    if level not in ("global", "persona", "user"):
        raise ValueError(f"level must be 'global', 'persona' or 'user', got {level!r}")
    if level == "persona" and groups is None:
        raise ValueError("level 'persona' needs groups (user_id -> persona)")
    kind = "user" if level == "user" else "global"
    by_split = {s: pairs[s]["user_id"].map(groups).to_numpy() if level == "persona" else None
                for s in ("train", split)}
    return fit_reward_margins(*features(pairs["train"], kind), *features(pairs[split], kind), l2, steps=steps,
                              seed=seed, train_groups=by_split["train"], eval_groups=by_split[split],
                              min_pairs=min_pairs)


# =========================================================================== DPO
def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float = 0.1):
    """The DPO loss of a batch of preference pairs.

    With the implicit reward ``r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))``, DPO
    minimises the Bradley–Terry loss ``-log sigmoid(r(x, y+) - r(x, y-))`` over the pairs.

    Parameters
    ----------
    policy_chosen_logps, policy_rejected_logps : tensor (n,)
        Summed log-probabilities of the chosen / rejected responses under the policy.
    ref_chosen_logps, ref_rejected_logps : tensor (n,)
        The same under the frozen reference model.
    beta : float, default 0.1
        Strength of the implicit KL constraint (smaller: the policy may move further).

    Returns
    -------
    loss : tensor ()
        Mean over pairs (what trl's ``DPOTrainer`` with ``loss_type="sigmoid"`` computes).
    chosen_rewards, rejected_rewards : tensor (n,)
        The implicit rewards (detached), for margins and accuracy.
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    return losses.mean(), beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def _as_triples(pairs) -> list[tuple[str, str, str]]:
    if isinstance(pairs, pd.DataFrame):
        missing = {"prompt", "chosen", "rejected"} - set(pairs.columns)
        if missing:
            raise KeyError(f"pairs has no column(s) {sorted(missing)}; build it with personachat_preference_pairs "
                           "or movielens_preference_pairs")
        return list(zip(pairs["prompt"], pairs["chosen"], pairs["rejected"]))
    return [tuple(p) for p in pairs]


def encode_preferences(tokenizer, pairs, max_length: int | None = None) -> tuple[list[dict], list[dict]]:
    """Encode (prompt, chosen, rejected) triples as two lists of
    :func:`p13n_utils.training.encode_pairs` examples: (prompt, chosen) and (prompt, rejected).

    ``pairs``: a DataFrame with ``prompt, chosen, rejected`` or a list of triples.
    ``ValueError`` if there is none."""
    triples = _as_triples(pairs)
    if not triples:
        raise ValueError("no preference pairs: the data set is empty")
    chosen = encode_pairs(tokenizer, [(p, c) for p, c, _ in triples], max_length=max_length)
    rejected = encode_pairs(tokenizer, [(p, r) for p, _, r in triples], max_length=max_length)
    return chosen, rejected


def _pair_logps(model, chosen: list[dict], rejected: list[dict], indices, pad: int):
    """Summed log-probabilities of the chosen and rejected responses of the pairs ``indices``,
    in one forward pass over a batch of [chosen ..., rejected ...] (as trl does).

    Returns ``(logp_chosen, logp_rejected, response_tokens, batch_tokens)``: the two tensors of
    log-probabilities, the response tokens per sequence (chosen first, then rejected) and the
    number of tokens in the batch."""
    batch = collate([chosen[i] for i in indices] + [rejected[i] for i in indices], pad)
    logps, response_tokens = sequence_logps(model, batch)
    return logps[:len(indices)], logps[len(indices):], response_tokens, int(batch["attention_mask"].sum())


def preference_logps(model, tokenizer, pairs, batch_size: int = 8, max_length: int | None = None,
                     cache: bool = False) -> pd.DataFrame:
    """Summed log-probability of each pair's chosen and rejected response under ``model`` as it
    is (active adapter), in eval mode and without gradients.

    Parameters
    ----------
    model, tokenizer
    pairs : DataFrame with ``prompt, chosen, rejected`` (or a list of triples)
    batch_size : int, default 8
        Pairs per forward pass (each pass holds the chosen and the rejected sequences).
    max_length : int, optional
        See :func:`p13n_utils.training.encode_pairs`.
    cache : bool, default False
        Memoise the result on disk (``config.CACHE_DIR / "lm"``), keyed by
        :func:`p13n_utils.cache.fingerprint` (weights, active adapter, adapters on or off)
        and the exact texts, as the scorers of :mod:`p13n_utils.tasks` do.

    Returns
    -------
    DataFrame
        ``chosen_logp, rejected_logp, chosen_tokens, rejected_tokens``, one row per pair in input
        order (tokens: the response's tokens, its end-of-turn token included).
    """
    triples = _as_triples(pairs)

    def compute():
        chosen, rejected = encode_preferences(tokenizer, triples, max_length)
        pad = pad_id(tokenizer)
        out = {key: np.zeros(len(chosen)) for key in ("chosen_logp", "rejected_logp", "chosen_tokens",
                                                       "rejected_tokens")}
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(chosen), batch_size):
                    idx = list(range(start, min(start + batch_size, len(chosen))))
                    lp_c, lp_r, n_tokens, _ = _pair_logps(model, chosen, rejected, idx, pad)
                    n_tokens = n_tokens.cpu().numpy()
                    out["chosen_logp"][idx], out["rejected_logp"][idx] = lp_c.double().cpu().numpy(), lp_r.double().cpu().numpy()
                    out["chosen_tokens"][idx], out["rejected_tokens"][idx] = n_tokens[:len(idx)], n_tokens[len(idx):]
        finally:
            model.train(was_training)
        return {key: value.tolist() for key, value in out.items()}

    payload = {"model": fingerprint(model) if cache else "", "triples": triples, "max_length": max_length}
    frame = pd.DataFrame(memo("preference_logps", payload, compute, cache))
    return frame.astype({"chosen_tokens": "int64", "rejected_tokens": "int64"})


def train_dpo_lora(model, tokenizer, pairs, train: TrainConfig, beta: float = 0.1, adapter_name: str = "dpo",
                   r: int = 8, alpha: float = 16, target_modules: Sequence[str] = DEFAULT_TARGET_MODULES,
                   user=None) -> TrainResult:
    """Train a LoRA policy with :func:`dpo_loss`; the reference is the model with adapters off.

    Each step: the batch's chosen and rejected responses go through the policy (the new adapter
    active, with gradients) and through the reference (``model.disable_adapter()``, no
    gradients); the loss is :func:`dpo_loss`. Since the new adapter starts at zero, the policy
    starts equal to the reference (loss ``log 2``).

    Parameters
    ----------
    model
        A transformers model (wrapped in place: pass a private copy) or a peft model (the
        adapter is added beside the others; the reference is then the base with *all* adapters
        disabled).
    tokenizer
    pairs : DataFrame with ``prompt, chosen, rejected`` (or a list of triples)
    train : TrainConfig
        ``batch_size`` counts pairs; fewer than ``train.min_pairs`` pairs raise
        :class:`p13n_utils.training.NotEnoughHistoryError`, no pair ``ValueError``.
    beta : float, default 0.1
    adapter_name, r, alpha, target_modules
        The new LoRA adapter (:func:`p13n_utils.adapters.add_lora`).
    user : optional
        Named in the error messages.

    Returns
    -------
    TrainResult
        ``model`` with the new adapter active; ``losses`` and, per step, ``metrics["margin"]``
        (mean implicit reward margin) and ``metrics["accuracy"]`` (share of the batch's pairs
        with a positive margin).
    """
    triples = _as_triples(pairs)
    check_history(len(triples), train, user, what="preference pairs")
    chosen, rejected = encode_preferences(tokenizer, triples, train.max_length)
    pad = pad_id(tokenizer)
    model = add_lora(model, adapter_name, r, alpha, target_modules, seed=train.seed)

    def step_loss(indices):
        with torch.no_grad(), model.disable_adapter():
            ref_c, ref_r, _, _ = _pair_logps(model, chosen, rejected, indices, pad)
        pol_c, pol_r, _, n_tokens = _pair_logps(model, chosen, rejected, indices, pad)
        loss, reward_c, reward_r = dpo_loss(pol_c, pol_r, ref_c, ref_r, beta)
        margin = reward_c - reward_r
        return loss, n_tokens, {"margin": margin.mean(), "accuracy": (margin > 0).float().mean()}

    result = train_loop(model, adapter_params(model, adapter_name), step_loss, len(chosen), train,
                        desc=f"DPO {adapter_name}")
    result.adapter_name = adapter_name
    return result


def implicit_reward_margin(model, tokenizer, pairs, beta: float = 0.1, adapter_name: str | None = None,
                           batch_size: int = 8, max_length: int | None = None) -> np.ndarray:
    """DPO's implicit reward margin of each pair, ``r(x, y+) - r(x, y-)`` with
    ``r = beta * (log pi - log pi_ref)``: the policy is ``adapter_name`` (default: the active
    adapter), the reference the model with adapters disabled. ``margin > 0`` is a correct
    preference: ``pref_acc = mean(margin > 0)`` (:func:`per_user_accuracy` per user).
    """
    policy_context = use_adapter(model, adapter_name) if adapter_name else contextlib.nullcontext()
    with policy_context:
        policy = preference_logps(model, tokenizer, pairs, batch_size, max_length)
    with use_adapter(model, None):
        reference = preference_logps(model, tokenizer, pairs, batch_size, max_length)
    chosen = policy["chosen_logp"] - reference["chosen_logp"]
    rejected = policy["rejected_logp"] - reference["rejected_logp"]
    return (beta * (chosen - rejected)).to_numpy()


def dpo_margins(policy: pd.DataFrame, reference: pd.DataFrame, beta: float = 0.1) -> np.ndarray:
    """DPO's implicit reward margin from two :func:`preference_logps` frames of the same pairs
    (the policy's and the reference's): ``beta * ((pi+ - ref+) - (pi- - ref-))``. Computing the
    reference once and reusing it for every policy saves a forward pass per policy."""
    if len(policy) != len(reference):
        raise ValueError(f"policy has {len(policy)} pairs, reference {len(reference)}: score the same pairs")
    chosen = policy["chosen_logp"].to_numpy() - reference["chosen_logp"].to_numpy()
    rejected = policy["rejected_logp"].to_numpy() - reference["rejected_logp"].to_numpy()
    return beta * (chosen - rejected)


def record_policy(task: str, level: str, method: str, pref_acc: pd.Series, nll: pd.Series,
                  own_pref_acc: pd.Series | None = None, base_nll: pd.Series | None = None,
                  n_resamples: int = 2000, pref_metric: str = "dpo_pref_acc",
                  own_pref_acc_norm: pd.Series | None = None) -> dict:
    """Record a policy's evaluation (``results`` rows, each with its bootstrap interval over users)
    and return its row of a table (``value [lower, upper]`` strings, keyed by metric name).

    Parameters
    ----------
    pref_acc : Series
        Per-user accuracy recorded as ``pref_metric``: ``"dpo_pref_acc"`` for DPO's implicit
        reward (:func:`dpo_margins`; 0.5 = no change from the reference), or, for an untrained
        model, ``"logp_pref_acc_sum"`` (its summed log-probabilities).
    nll : Series
        Per-user NLL of the gold reply: metric ``ppl``.
    own_pref_acc : Series, optional
        Per-user accuracy of the policy's own summed log-probabilities: metric ``logp_pref_acc_sum``.
    own_pref_acc_norm : Series, optional
        The same with log-probabilities per token (length-normalised): metric ``logp_pref_acc``.
    base_nll : Series, optional
        The untrained model's per-user NLL on the same prompts: metric ``ppl_ratio_vs_base``
        (the fit cost, from :func:`p13n_utils.results.record_paired`).
    """
    from . import results

    fmt = lambda r: results.fmt_ci(r["value"], r["lower"], r["upper"])  # noqa: E731
    a = results.record_ci(task, level, method, pref_metric, pref_acc, n_resamples=n_resamples)
    p = results.record_ppl(task, level, method, nll, n_resamples=n_resamples)
    row = {"method": method, "level": level, pref_metric: fmt(a),
           "ppl": results.fmt_ci(p["value"], p["lower"], p["upper"], digits=1)}
    for metric, values in (("logp_pref_acc_sum", own_pref_acc), ("logp_pref_acc", own_pref_acc_norm)):
        if values is not None and metric != pref_metric:
            row[metric] = fmt(results.record_ci(task, level, method, metric, values, n_resamples=n_resamples))
    if base_nll is not None:
        d = results.record_paired(task, level, method, "ppl", nll, base_nll, "base", ratio=True,
                                  n_resamples=n_resamples)
        row["ppl ratio vs untrained"] = results.fmt_ci(*np.exp([d["mean"], d["lower"], d["upper"]]))
    return row


def train_or_load_dpo_lora(model, tokenizer, pairs, directory, train: TrainConfig, adapter_name: str = "dpo",
                           **dpo) -> TrainResult:
    """:func:`train_dpo_lora`, saved to ``directory`` and loaded from there next time.

    The adapter is saved atomically (:func:`p13n_utils.adapters.save_adapter`) with a key
    (:func:`p13n_utils.cache.payload_key`) of the base model's signature, the pairs and the
    training settings; a later call with the same key loads the adapter (and its training log)
    instead of training again, and any other key retrains and replaces it.

    Parameters
    ----------
    model, tokenizer, pairs, train
        As for :func:`train_dpo_lora`.
    directory : path
        Where this adapter lives (one folder per adapter).
    adapter_name : str
    **dpo
        The other arguments of :func:`train_dpo_lora` (``beta, r, alpha, target_modules, user``).

    Returns
    -------
    TrainResult
        ``model`` with the adapter active; the log of the run that trained it (``seconds`` is
        that run's time); ``loaded`` is True if the adapter came from ``directory``.
    """
    triples = _as_triples(pairs)
    if not triples:
        raise ValueError("no preference pairs: the data set is empty")
    directory = Path(directory)
    settings = {**train.settings(), **{k: v for k, v in dpo.items() if k != "user"}}
    key = payload_key({"base": base_signature(model), "triples": triples, "settings": settings})
    meta_path = directory / ADAPTER_META
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            model = load_adapter(model, directory, adapter_name)
            model.set_adapter(adapter_name)
            return TrainResult.from_log(meta["log"], model=model, adapter_name=adapter_name, loaded=True)
    result = train_dpo_lora(model, tokenizer, triples, train, adapter_name=adapter_name, **dpo)
    save_adapter(result.model, adapter_name, directory, extra={"key": key, "log": result.log()})
    return result


class DPOAdapters:
    """Several DPO adapters of one model, each trained (or loaded) by :func:`train_or_load_dpo_lora`.

    The first adapter wraps a plain transformers model into a peft model; the later ones are added
    beside it. :attr:`model` is always the current (possibly re-wrapped) model: use it, not the
    model passed in, once an adapter has been trained.

    Parameters
    ----------
    model, tokenizer
        As for :func:`train_dpo_lora` (a private copy of the model: it is wrapped in place).
    directory : path
        The adapters' folder: adapter ``name`` lives in ``directory / name``.
    train : TrainConfig
        The settings every adapter shares (``steps`` and ``min_pairs`` are set per adapter).
    **dpo
        The other arguments of :func:`train_dpo_lora` shared by every adapter (``beta, r, ...``).

    Attributes
    ----------
    model
    logs : dict
        ``name -> TrainResult`` of every adapter trained or loaded, in order (``loaded`` says which).
    """

    def __init__(self, model, tokenizer, directory, train: TrainConfig, **dpo):
        self.model, self.tokenizer, self.directory = model, tokenizer, Path(directory)
        self.train_config, self.dpo = train, dpo
        self.logs: dict[str, TrainResult] = {}

    def train(self, name: str, pairs: pd.DataFrame, steps: int, min_pairs: int = 1, user=None) -> TrainResult:
        """Train (or load) adapter ``name`` on ``pairs`` (``prompt, chosen, rejected``) for ``steps``
        steps; fewer than ``min_pairs`` pairs raise :class:`p13n_utils.training.NotEnoughHistoryError`
        (``user`` is named in it). Returns its log; :attr:`model` has the adapter active."""
        log = train_or_load_dpo_lora(self.model, self.tokenizer, pairs[["prompt", "chosen", "rejected"]],
                                     self.directory / name, self.train_config.replace(steps=steps, min_pairs=min_pairs),
                                     name, **self.dpo, user=user)
        self.model, self.logs[name] = log.model, log
        return log


# =========================================================================== merging (Personalized Soups)
def soup_weights(similarities, temperature: float) -> np.ndarray:
    """Per-user mixing weights over adapters: ``softmax(similarities / temperature)`` per row.

    ``temperature = 0`` puts all the weight on the most similar adapter (ties: the first);
    ``temperature = inf`` gives the uniform average. In between, a user close to two personas
    gets a mix of both (Personalized Soups' per-user weights, here derived from how similar the
    user is to each persona instead of asked from the user).

    Parameters
    ----------
    similarities : array (n_users, n_adapters) or (n_adapters,)
    temperature : float >= 0

    Returns
    -------
    ndarray of the same shape, rows summing to 1.
    """
    sims = np.asarray(similarities, dtype=float)
    if sims.ndim not in (1, 2) or sims.shape[-1] == 0:
        raise ValueError(f"similarities must be (n_adapters,) or (n_users, n_adapters), got shape {sims.shape}")
    if not np.all(np.isfinite(sims)):
        raise ValueError("similarities contain NaN or infinite values")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0: the most similar adapter only; inf: uniform), got {temperature}")
    if temperature == 0:
        weights = np.zeros_like(sims)
        np.put_along_axis(weights, np.argmax(sims, axis=-1)[..., None], 1.0, axis=-1)
        return weights
    if np.isinf(temperature):
        return np.full_like(sims, 1.0 / sims.shape[-1])
    z = (sims - sims.max(axis=-1, keepdims=True)) / temperature
    weights = np.exp(z)
    return weights / weights.sum(axis=-1, keepdims=True)


def soup_logps(model, tokenizer, pairs, adapter_names: Sequence[str], weights, name: str = "soup",
               batch_size: int = 8, cache: bool = False) -> pd.DataFrame:
    """:func:`preference_logps` of each pair under its own soup: row ``i`` of ``weights`` mixes
    ``adapter_names`` (:func:`p13n_utils.adapters.merge_adapters`) for pair ``i``, e.g. each
    pair's user's :func:`soup_weights`. When every row is the same, one soup serves all pairs (one
    merge, batched scoring). The soup is left loaded as ``name`` (active)."""
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    if len(weights) != 1 and len(weights) != len(pairs):
        raise ValueError(f"{len(weights)} rows of weights for {len(pairs)} pairs: give one row, or one per pair")
    if np.allclose(weights, weights[0]):
        merge_adapters(model, adapter_names, weights[0], name)
        return preference_logps(model, tokenizer, pairs, batch_size, cache=cache)
    parts = []
    for i in range(len(pairs)):
        merge_adapters(model, adapter_names, weights[i], name)
        parts.append(preference_logps(model, tokenizer, pairs.iloc[[i]], batch_size, cache=cache))
    return pd.concat(parts, ignore_index=True)


def soup_sweep(model, tokenizer, pairs, adapter_names: Sequence[str], similarities, temperatures, score,
               batch_size: int = 8, cache: bool = False) -> dict:
    """Score the pairs under per-pair soups at several merge temperatures.

    For each temperature, pair ``i`` is scored (:func:`soup_logps`) under the merge of
    ``adapter_names`` with weights :func:`soup_weights` ``(similarities[i], temperature)``, and
    ``score`` turns those log-probabilities into the evaluation (e.g. per-user ``pref_acc``).

    Parameters
    ----------
    model, tokenizer, pairs
        As for :func:`soup_logps`.
    adapter_names : sequence of str
    similarities : array (n_pairs, len(adapter_names))
        Each pair's user's similarity to each adapter (e.g. to its persona's centroid).
    temperatures : iterable of float >= 0
        0: the most similar adapter only; ``inf``: the uniform average.
    score : callable
        ``score(logps) -> evaluation``, ``logps`` a :func:`preference_logps` frame of ``pairs``.
    batch_size, cache
        As for :func:`preference_logps`.

    Returns
    -------
    dict
        ``temperature -> score(logps)``, in the order of ``temperatures``.
    """
    return {tau: score(soup_logps(model, tokenizer, pairs, adapter_names, soup_weights(similarities, tau),
                                  batch_size=batch_size, cache=cache)) for tau in temperatures}
