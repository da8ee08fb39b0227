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
  ``pref_acc`` is the share of held-out pairs with a positive margin (:func:`reward_margins`,
  :func:`per_user_accuracy`).
- **DPO** (Rafailov et al. 2023): the policy's implicit reward is
  ``beta * (log pi(y|x) - log pi_ref(y|x))`` and the loss is Bradley–Terry on it
  (:func:`dpo_loss`, checked equal to trl's ``DPOTrainer`` loss in the tests).
  :func:`train_dpo_lora` trains a LoRA policy whose reference is the same model with its
  adapters disabled (no second copy of the weights); :func:`train_or_load_dpo_lora` saves it
  atomically and reloads it on a rerun. :func:`implicit_reward_margin` gives ``pref_acc`` on
  held-out pairs; :func:`preference_logps` (memoised on disk) + :func:`dpo_margins` do the same
  with the reference scored once for several policies.
- **Merging** (Personalized Soups, Jang et al. 2023): :func:`merge_adapters` mixes preference
  adapters (e.g. one per persona) with per-user weights (:func:`soup_weights`: from a user's
  similarity to each persona, sharpened by a temperature), without retraining.

Every trainer shares :func:`p13n_utils.finetune.train_loop`; its loss history comes back as a
:class:`p13n_utils.finetune.TrainLog` for the loss-curve figures.
"""

from __future__ import annotations

import contextlib
import time
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import finetune, prompts
from .generation import chat_prompt

__all__ = [
    "personachat_preference_pairs", "RECOMMEND_SYSTEM", "recommendation_prompt", "movielens_preference_pairs",
    "bt_features", "RewardHead", "bradley_terry_loss", "train_reward_model", "reward_margins",
    "per_user_accuracy", "dpo_loss", "encode_preferences", "preference_logps", "train_dpo_lora",
    "implicit_reward_margin", "dpo_margins", "train_or_load_dpo_lora", "soup_weights", "merge_adapters",
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


RECOMMEND_SYSTEM = "You recommend movies. Answer with the title of one movie this viewer will enjoy."
"""System message of the MovieLens preference prompts."""


def recommendation_prompt(tokenizer, context: Sequence[str] | None = None,
                          header: str = prompts.HEADERS["user_ratings"]) -> str:
    """The prompt whose responses are movies: the context block (the user's ratings, a persona
    description, or none for the global prompt) and the question, in the chat template."""
    block = prompts.context_block(context, header)
    question = "Which movie should this viewer watch next?"
    return chat_prompt(tokenizer, f"{block}\n\n{question}" if block else question, system=RECOMMEND_SYSTEM)


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
    from .tasks import movie_descriptions

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
        prompt = recommendation_prompt(tokenizer, context_fn(user) if context_fn else None, header)
        for combo in combos:
            rows.append((prompt, user, good[combo // bad.size], bad[combo % bad.size]))
    if not rows:
        raise ValueError(f"no user has both a rating >= {liked} and one <= {disliked}: no preference pair")
    out = pd.DataFrame(rows, columns=["prompt", "user_id", "chosen_item", "rejected_item"])
    out.insert(1, "chosen", movie_descriptions(movies, out["chosen_item"].tolist()))
    out.insert(2, "rejected", movie_descriptions(movies, out["rejected_item"].tolist()))
    return out


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
    head : RewardHead
        In eval mode; ``head(torch.as_tensor(features))`` gives rewards.
    log : :class:`p13n_utils.finetune.TrainLog`
        The objective at each L-BFGS evaluation.
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
    log = finetune.TrainLog(n_examples=chosen.shape[0], trainable_params=sum(p.numel() for p in head.parameters()))

    def closure():
        optimizer.zero_grad()
        loss = bradley_terry_loss(head(chosen), head(rejected)) + l2 / 2 * sum((w ** 2).sum() for w in weights)
        loss.backward()
        log.losses.append(float(loss.detach()))
        return loss

    start = time.perf_counter()
    optimizer.step(closure)
    log.seconds = time.perf_counter() - start
    return head.float().eval(), log


def reward_margins(head: RewardHead, chosen_features, rejected_features) -> np.ndarray:
    """``r(chosen) - r(rejected)`` of each pair (positive: the model agrees with the user)."""
    with torch.no_grad():
        chosen = head(torch.as_tensor(np.asarray(chosen_features, dtype=np.float32)))
        rejected = head(torch.as_tensor(np.asarray(rejected_features, dtype=np.float32)))
    return (chosen - rejected).numpy().astype(float)


def per_user_accuracy(margins, users) -> pd.Series:
    """``pref_acc`` per user: the share of the user's pairs with a positive margin (a tie, margin
    0, counts as half). Feed it to ``results.record_ci`` for the interval over users."""
    margins = np.asarray(margins, dtype=float)
    users = np.asarray(users)
    if margins.shape != users.shape:
        raise ValueError(f"{margins.shape} margins for {users.shape} users")
    correct = (margins > 0) + 0.5 * (margins == 0)
    return pd.Series(correct, index=users).groupby(level=0).mean().rename("pref_acc")


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
    :func:`p13n_utils.finetune.encode_pairs` examples: (prompt, chosen) and (prompt, rejected).

    ``pairs``: a DataFrame with ``prompt, chosen, rejected`` or a list of triples.
    ``ValueError`` if there is none."""
    triples = _as_triples(pairs)
    if not triples:
        raise ValueError("no preference pairs: the data set is empty")
    chosen = finetune.encode_pairs(tokenizer, [(p, c) for p, c, _ in triples], max_length=max_length)
    rejected = finetune.encode_pairs(tokenizer, [(p, r) for p, _, r in triples], max_length=max_length)
    return chosen, rejected


def _pair_logps(model, chosen: list[dict], rejected: list[dict], indices, pad_id: int):
    """Summed log-probabilities of the chosen and rejected responses of the pairs ``indices``,
    in one forward pass over a batch of [chosen ..., rejected ...] (as trl does).

    Returns ``(logp_chosen, logp_rejected, response_tokens, batch_tokens)``: the two tensors of
    log-probabilities, the response tokens per sequence (chosen first, then rejected) and the
    number of tokens in the batch."""
    batch = finetune.collate([chosen[i] for i in indices] + [rejected[i] for i in indices], pad_id)
    logps, response_tokens = finetune.sequence_logps(model, batch)
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
        See :func:`p13n_utils.finetune.encode_pairs`.
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
    from .cache import fingerprint as model_fingerprint, memo

    triples = _as_triples(pairs)

    def compute():
        chosen, rejected = encode_preferences(tokenizer, triples, max_length)
        pad_id = finetune._pad_id(tokenizer)
        out = {key: np.zeros(len(chosen)) for key in ("chosen_logp", "rejected_logp", "chosen_tokens",
                                                       "rejected_tokens")}
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(chosen), batch_size):
                    idx = list(range(start, min(start + batch_size, len(chosen))))
                    lp_c, lp_r, n_tokens, _ = _pair_logps(model, chosen, rejected, idx, pad_id)
                    n_tokens = n_tokens.cpu().numpy()
                    out["chosen_logp"][idx], out["rejected_logp"][idx] = lp_c.double().cpu().numpy(), lp_r.double().cpu().numpy()
                    out["chosen_tokens"][idx], out["rejected_tokens"][idx] = n_tokens[:len(idx)], n_tokens[len(idx):]
        finally:
            model.train(was_training)
        return {key: value.tolist() for key, value in out.items()}

    payload = {"model": model_fingerprint(model) if cache else "", "triples": triples, "max_length": max_length}
    frame = pd.DataFrame(memo("preference_logps", payload, compute, cache))
    return frame.astype({"chosen_tokens": "int64", "rejected_tokens": "int64"})


def train_dpo_lora(model, tokenizer, pairs, beta: float = 0.1, steps: int = 20, lr: float = 5e-4,
                   batch_size: int = 4, seed: int = 0, adapter_name: str = "dpo", r: int = 8, alpha: float = 16,
                   target_modules: Sequence[str] = finetune.DEFAULT_TARGET_MODULES, min_pairs: int = 1, user=None,
                   max_length: int | None = None, progress: bool = False):
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
    beta : float, default 0.1
    steps, lr, batch_size, seed
        See :func:`p13n_utils.finetune.train_loop` (``batch_size`` counts pairs).
    adapter_name, r, alpha, target_modules
        The new LoRA adapter (:func:`p13n_utils.finetune.add_lora`).
    min_pairs, user
        Fewer pairs raise :class:`p13n_utils.finetune.NotEnoughHistoryError`; no pair raises
        ``ValueError``.
    max_length : int, optional
    progress : bool, default False

    Returns
    -------
    model : peft.PeftModel
        With the new adapter active.
    log : :class:`p13n_utils.finetune.TrainLog`
        ``losses`` and, per step, ``metrics["margin"]`` (mean implicit reward margin) and
        ``metrics["accuracy"]`` (share of the batch's pairs with a positive margin).
    """
    triples = _as_triples(pairs)
    if not triples:
        who = "" if user is None else f" for user {user!r}"
        raise ValueError(f"no preference pairs{who}: the data set is empty")
    if len(triples) < min_pairs:
        raise finetune.NotEnoughHistoryError(user, len(triples), min_pairs)
    chosen, rejected = encode_preferences(tokenizer, triples, max_length)
    pad_id = finetune._pad_id(tokenizer)
    model = finetune.add_lora(model, adapter_name, r, alpha, target_modules, seed=seed)

    def step_loss(indices):
        with torch.no_grad(), model.disable_adapter():
            ref_c, ref_r, _, _ = _pair_logps(model, chosen, rejected, indices, pad_id)
        pol_c, pol_r, _, n_tokens = _pair_logps(model, chosen, rejected, indices, pad_id)
        loss, reward_c, reward_r = dpo_loss(pol_c, pol_r, ref_c, ref_r, beta)
        margin = reward_c - reward_r
        return loss, n_tokens, {"margin": margin.mean(), "accuracy": (margin > 0).float().mean()}

    params = [p for name, p in model.named_parameters() if f".{adapter_name}." in name]
    log = finetune.train_loop(model, params, step_loss, len(chosen), steps, lr, batch_size, seed,
                              progress=progress, desc=f"DPO {adapter_name}")
    return model, log


def implicit_reward_margin(model, tokenizer, pairs, beta: float = 0.1, adapter_name: str | None = None,
                           batch_size: int = 8, max_length: int | None = None) -> np.ndarray:
    """DPO's implicit reward margin of each pair, ``r(x, y+) - r(x, y-)`` with
    ``r = beta * (log pi - log pi_ref)``: the policy is ``adapter_name`` (default: the active
    adapter), the reference the model with adapters disabled. ``margin > 0`` is a correct
    preference: ``pref_acc = mean(margin > 0)`` (:func:`per_user_accuracy` per user).
    """
    policy_context = finetune.use_adapter(model, adapter_name) if adapter_name else contextlib.nullcontext()
    with policy_context:
        policy = preference_logps(model, tokenizer, pairs, batch_size, max_length)
    with finetune.use_adapter(model, None):
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


def _training_key(model, triples, settings: dict) -> str:
    import hashlib
    import json

    payload = {"base": finetune.base_signature(model), "triples": triples, "settings": settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def train_or_load_dpo_lora(model, tokenizer, pairs, directory, adapter_name: str = "dpo", **kwargs):
    """:func:`train_dpo_lora`, saved to ``directory`` and loaded from there next time.

    The adapter is saved atomically (:func:`p13n_utils.finetune.save_adapter`: a failed save
    leaves no half-written folder) with a key that hashes the base model's signature, the
    pairs and the training settings; a later call with the same key loads the adapter (and its
    training log) instead of training again, and any other key retrains and replaces it.

    Parameters
    ----------
    model, tokenizer, pairs
        As for :func:`train_dpo_lora`.
    directory : path
        Where this adapter lives (one folder per adapter).
    adapter_name : str
    **kwargs
        The other arguments of :func:`train_dpo_lora` (``beta, steps, lr, batch_size, seed, r,
        alpha, target_modules, min_pairs, user, max_length``).

    Returns
    -------
    model : peft.PeftModel
        With the adapter active.
    log : :class:`p13n_utils.finetune.TrainLog`
        The log of the run that trained it (``seconds`` is that run's time).
    loaded : bool
        True if the adapter came from ``directory``.
    """
    import json
    from pathlib import Path

    triples = _as_triples(pairs)
    if not triples:
        raise ValueError("no preference pairs: the data set is empty")
    directory = Path(directory)
    settings = {key: value for key, value in kwargs.items() if key != "progress"}
    key = _training_key(model, triples, settings)
    meta_path = directory / finetune.ADAPTER_META
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            model = finetune.load_adapter(model, directory, adapter_name)
            model.set_adapter(adapter_name)
            log = finetune.TrainLog(**meta["log"])
            return model, log, True
    model, log = train_dpo_lora(model, tokenizer, triples, adapter_name=adapter_name, **kwargs)
    saved_log = {"losses": log.losses, "seconds": log.seconds, "n_examples": log.n_examples,
                 "n_tokens": log.n_tokens, "trainable_params": log.trainable_params, "metrics": log.metrics}
    finetune.save_adapter(model, adapter_name, directory, extra={"key": key, "log": saved_log})
    return model, log, False


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

def merge_adapters(model, adapter_names: Sequence[str], weights: Sequence[float], new_name: str,
                   combination_type: str = "cat"):
    """Mix LoRA adapters into a new one, ``delta W = sum_i w_i * delta W_i``, and activate it.

    Parameters
    ----------
    model : peft.PeftModel
        Holding the adapters (e.g. one DPO adapter per persona).
    adapter_names : list of str
    weights : list of float
        One per adapter (a user's mixture over personas; need not sum to 1).
    new_name : str
        The merged adapter's name; an older adapter of that name is replaced (handy in a sweep
        over weights).
    combination_type : {"cat", "linear", "svd"}, default "cat"
        ``"cat"`` stacks the low-rank factors (rank = sum of ranks) and is *exact*: its update is
        exactly the weighted sum of the adapters' updates. ``"linear"`` averages the A and the B
        matrices separately (same rank), which adds cross terms ``B_i A_j``: exact only when a
        single weight is non-zero. ``"svd"`` truncates the exact sum to the largest rank.

    Returns
    -------
    peft.PeftModel
        With ``new_name`` active.
    """
    if len(adapter_names) != len(weights) or not adapter_names:
        raise ValueError(f"give one weight per adapter: {len(adapter_names)} adapters, {len(weights)} weights")
    missing = [name for name in adapter_names if name not in model.peft_config]
    if missing:
        raise KeyError(f"adapters {missing} are not loaded; loaded adapters: {list(model.peft_config)}")
    if new_name in adapter_names:
        raise ValueError(f"new_name {new_name!r} must differ from the adapters being merged")
    if new_name in model.peft_config:
        if model.active_adapter == new_name:
            model.set_adapter(adapter_names[0])
        model.delete_adapter(new_name)
    model.add_weighted_adapter(list(adapter_names), [float(w) for w in weights], new_name,
                               combination_type=combination_type)
    model.set_adapter(new_name)
    return model
