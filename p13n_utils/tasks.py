"""The two direct tasks of the granularity ladder: evaluation sets, scoring, baselines.

Notebooks 02 (global) to 07 all evaluate on the **same held-out users and items**, built here
with a fixed seed, and score them the same way; a rung changes only the context it puts in
the prompt (a function ``context_fn(row) -> list[str] | None``).

PersonaChat (``personachat``: predict the user's own next utterance)
    * Who is a "user"? The ConvAI2 validation file has 1,000 dialogues but only **100
      distinct personas**: the same character appears in about ten dialogues, often with
      rephrased facts. :func:`personachat_user_ids` links dialogues that share at least two
      (normalised) facts, and the user is that character. Confidence intervals are therefore
      bootstrapped over these users, and a persona-level prompt must leave out *every* fact
      of the user, from all of their dialogues (:attr:`PersonaChatEval.user_facts`).
    * :func:`personachat_eval_set` picks the evaluated users and dialogues (seeded) and holds
      out each dialogue's last turn (test) and the one before (validation).
    * :func:`score_personachat` gives the log-likelihood of each gold reply;
      :func:`per_user_nll` pools it per user and :func:`p13n_utils.results.record_ppl` records
      ``ppl = exp(mean over users of the user's per-token NLL)`` with a bootstrap interval.
    * :func:`generate_personachat` writes replies (greedy) for ``rougeL`` and ``persona_sim``.

MovieLens rating (``movielens-rating``, LaMP-3 style)
    * :func:`movielens_rating_eval_set`: per-user temporal holdout of the last ``n_per_user``
      ratings (test) and the ``n_per_user`` before them (validation) for a seeded sample of
      users; everything before a user's test ratings is their history.
    * :func:`rating_prompts` + :func:`predict_ratings`: the expected rating under the LM's
      distribution over the labels ``"1"``…``"5"`` (one forward pass, nothing parsed).
    * Non-LLM references on the same pairs live in :mod:`p13n_utils.baselines`.

:func:`eval_sets` builds both sets from a notebook's run size in one call.

LM outputs are memoised on disk (:func:`p13n_utils.cache.memo`), keyed by a fingerprint of the
model's weights and by the exact prompts, so a notebook that re-scores the global prompts as
the paired baseline of a later rung does not pay for them twice. ``cache=False`` turns it off.

Cold start and bad input (documented fallbacks)
    * :func:`context_with_fallback` serves user data if there is any, else the persona, else
      nothing (global), and returns which level was used.
    * An unknown user raises ``KeyError`` naming the known ones (:meth:`PersonaChatEval.facts_of`,
      :meth:`RatingEval.history`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from . import prompts
from .cache import fingerprint, memo
from .profiles import normalize_fact, personachat_user_ids
from .splits import personachat_split, temporal_split

__all__ = [
    "EvalSets", "eval_sets", "PersonaChatEval", "personachat_eval_set",
    "personachat_prompts", "score_personachat", "per_user_nll",
    "generate_personachat", "context_with_fallback",
    "RatingEval", "movielens_rating_eval_set", "rating_prompts", "predict_ratings", "rating_frame", "per_user_loss",
]

ContextFn = Callable[[pd.Series], "Sequence[str] | None"]


# =========================================================================== PersonaChat
@dataclass
class PersonaChatEval:
    """The PersonaChat evaluation set shared by every rung (see :func:`personachat_eval_set`).

    Attributes
    ----------
    dialogues : DataFrame
        All dialogues with a ``user_id`` column (the loader's columns otherwise).
    train : DataFrame
        The user data a method may use: every dialogue, with the held-out (val and test)
        turns of the evaluated dialogues cut off.
    val, test : DataFrame
        One row per held-out turn: ``dialogue_id, user_id, turn, persona, history, partner,
        reply`` (``reply`` is the target; ``history`` the earlier turns of the dialogue).
    users : ndarray
        The evaluated user ids, sorted.
    user_facts : dict
        user_id -> the user's distinct persona facts over all their dialogues (first
        phrasing kept, by :func:`normalize_fact`).
    """

    dialogues: pd.DataFrame
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    users: np.ndarray
    user_facts: dict

    def facts_of(self, user_id) -> list[str]:
        """The user's distinct facts; ``KeyError`` for an unknown user."""
        if user_id not in self.user_facts:
            raise KeyError(f"unknown PersonaChat user {user_id!r}; known users are 0..{len(self.user_facts) - 1} "
                           "(see PersonaChatEval.user_facts); a new user with no facts is a cold-start "
                           "user: use context_with_fallback([], persona_context)")
        return list(self.user_facts[user_id])

    @property
    def set_id(self) -> str:
        """The evaluation set's id in results rows (:func:`p13n_utils.results.set_id` of the users)."""
        from .results import set_id

        return set_id("personachat", self.users)

    def generation_items(self, n_users: int | None = None) -> pd.DataFrame:
        """The test rows that get a generated reply (``rougeL``, ``persona_sim``): each
        evaluated user's first test turn, for the first ``n_users`` users (None: all)."""
        return self.test.drop_duplicates("user_id").head(n_users).reset_index(drop=True)

    def __repr__(self) -> str:
        return (f"PersonaChatEval({len(self.users)} users, {self.test['dialogue_id'].nunique()} dialogues, "
                f"{len(self.test)} test turns, {len(self.val)} val turns; "
                f"{len(self.user_facts)} users in {len(self.dialogues)} dialogues overall)")


def _user_facts(dialogues: pd.DataFrame) -> dict:
    facts: dict = {}
    for user, persona in zip(dialogues["user_id"], dialogues["persona"]):
        seen = facts.setdefault(int(user), {})
        for fact in persona:
            seen.setdefault(normalize_fact(fact), fact)
    return {user: list(by_norm.values()) for user, by_norm in facts.items()}


def personachat_eval_set(dialogues: pd.DataFrame, n_users: int | None = None, dialogues_per_user: int | None = 2,
                         n_test_turns: int = 1, n_val_turns: int = 1, seed: int = 0) -> PersonaChatEval:
    """Choose the held-out users, dialogues and turns (the same at every rung for one seed).

    Parameters
    ----------
    dialogues : DataFrame
        From :func:`p13n_utils.data.load_personachat`.
    n_users : int, optional
        Users to evaluate (a seeded sample); None = every user.
    dialogues_per_user : int or None, default 2
        Dialogues evaluated per user (a seeded sample of the user's dialogues; fewer if the user
        has fewer long-enough dialogues); None = all of them.
    n_test_turns, n_val_turns : int
        Each evaluated dialogue's last ``n_test_turns`` turns are test targets and the
        ``n_val_turns`` before them validation targets (see
        :func:`p13n_utils.splits.personachat_split`).
    seed : int

    Returns
    -------
    PersonaChatEval
    """
    if dialogues_per_user is not None and dialogues_per_user < 1:
        raise ValueError(f"dialogues_per_user must be >= 1, got {dialogues_per_user}")
    dialogues = dialogues.reset_index(drop=True).copy()
    dialogues["user_id"] = personachat_user_ids(dialogues)
    long_enough = dialogues[dialogues["turns"].map(len) > n_test_turns + n_val_turns]
    candidates = np.sort(long_enough["user_id"].unique())
    if candidates.size == 0:
        raise ValueError(f"no dialogue has more than {n_test_turns + n_val_turns} turns to hold out")
    rng = np.random.default_rng(seed)
    if n_users is not None:
        if n_users < 1:
            raise ValueError(f"n_users must be >= 1 (or None for all), got {n_users}")
        if n_users > candidates.size:
            raise ValueError(f"n_users={n_users} but only {candidates.size} users have dialogues long "
                             "enough; use n_users=None for all of them")
        candidates = np.sort(rng.choice(candidates, size=n_users, replace=False))
    chosen = []
    for user in candidates:
        ids = long_enough.loc[long_enough["user_id"] == user, "dialogue_id"].to_numpy()
        size = ids.size if dialogues_per_user is None else min(dialogues_per_user, ids.size)
        chosen += sorted(rng.choice(ids, size=size, replace=False).tolist())
    evaluated = dialogues[dialogues["dialogue_id"].isin(chosen)]
    split = personachat_split(evaluated.drop(columns="user_id"), n_test_turns, n_val_turns)
    user_of = dialogues.set_index("dialogue_id")["user_id"]
    val, test = (frame.assign(user_id=frame["dialogue_id"].map(user_of).astype("int64"))
                 for frame in (split.val, split.test))
    order = ["dialogue_id", "user_id", "turn", "persona", "history", "partner", "reply"]
    cut = split.train.set_index("dialogue_id")["turns"]
    train = dialogues.copy()
    train["turns"] = [cut.get(d, turns) for d, turns in zip(train["dialogue_id"], train["turns"])]
    return PersonaChatEval(dialogues, train, val[order], test[order], candidates,
                           _user_facts(dialogues))


def personachat_prompts(tokenizer, items: pd.DataFrame, context_fn: ContextFn | None = None,
                        header: str = prompts.HEADERS["user"], n_history: int = 2) -> list[str]:
    """One prompt per row of ``items`` (``val`` or ``test`` of a :class:`PersonaChatEval`).

    ``context_fn(row)`` returns the context lines for that row (a persona description, the
    user's facts, retrieved turns) or None; without it every prompt is the global one."""
    out = []
    for _, row in items.iterrows():
        context = None if context_fn is None else context_fn(row)
        out.append(prompts.personachat_prompt(tokenizer, row["partner"], row["history"], context,
                                              header=header, n_history=n_history))
    return out


def score_personachat(model, tokenizer, items: pd.DataFrame, context_fn: ContextFn | None = None,
                      header: str = prompts.HEADERS["user"], n_history: int = 2, batch_size: int = 16,
                      cache: bool = True, progress: bool = False) -> pd.DataFrame:
    """Log-likelihood of each gold reply given its prompt.

    Returns
    -------
    DataFrame
        One row per item, in order: ``dialogue_id, user_id, turn, logprob_sum, n_tokens,
        nll_mean, n_prompt_tokens``.
    """
    from .generation import score

    texts = personachat_prompts(tokenizer, items, context_fn, header, n_history)
    targets = [str(r) for r in items["reply"]]
    payload = {"model": fingerprint(model) if cache else "", "prompts": texts, "targets": targets}

    def compute():
        frame = score(model, tokenizer, texts, targets, batch_size=batch_size, progress=progress)
        return frame.to_dict(orient="list")

    frame = pd.DataFrame(memo("score", payload, compute, cache))
    ids = items[["dialogue_id", "user_id", "turn"]].reset_index(drop=True)
    return pd.concat([ids, frame], axis=1)


def per_user_nll(scores: pd.DataFrame) -> pd.Series:
    """Per-user mean negative log-likelihood per token (the user's tokens pooled), indexed by
    ``user_id``; ``exp`` of it is the user's perplexity."""
    for column in ("user_id", "logprob_sum", "n_tokens"):
        if column not in scores:
            raise KeyError(f"scores has no column {column!r}; pass the output of score_personachat")
    sums = scores.groupby("user_id")[["logprob_sum", "n_tokens"]].sum()
    return (-sums["logprob_sum"] / sums["n_tokens"]).rename("nll")


def generate_personachat(model, tokenizer, items: pd.DataFrame, context_fn: ContextFn | None = None,
                         header: str = prompts.HEADERS["user"], n_history: int = 2,
                         max_new_tokens: int = 24, batch_size: int = 16, seed: int = 0,
                         cache: bool = True) -> list[str]:
    """Greedy replies for each row of ``items`` (same prompts as :func:`score_personachat`)."""
    from .generation import generate

    texts = personachat_prompts(tokenizer, items, context_fn, header, n_history)
    payload = {"model": fingerprint(model) if cache else "", "prompts": texts,
               "max_new_tokens": max_new_tokens, "seed": seed}
    return list(memo("generate", payload,
                     lambda: generate(model, tokenizer, texts, max_new_tokens=max_new_tokens,
                                      batch_size=batch_size, seed=seed, progress=False), cache))


def context_with_fallback(user_context: Sequence[str] | None,
                          persona_context: Sequence[str] | None = None) -> tuple[list[str] | None, str]:
    """Cold-start fallback: the user's own context if there is any, else the persona's, else
    none (the global prompt). Returns ``(context, level)`` with level ``user``, ``persona``
    or ``global`` so the caller can report how many users fell back."""
    if user_context:
        return list(user_context), "user"
    if persona_context:
        return list(persona_context), "persona"
    return None, "global"


# =========================================================================== MovieLens rating
@dataclass
class RatingEval:
    """The MovieLens rating evaluation set shared by every rung.

    Attributes
    ----------
    train : DataFrame
        Every user's ratings before their test ratings (the history any method may use,
        including the evaluated users' validation ratings).
    val, test : DataFrame
        The evaluated users' held-out ratings (``user_id, item_id, rating, timestamp``):
        ``test`` is each user's last ``n_per_user`` ratings, ``val`` the ``n_per_user`` before.
    movies : DataFrame
        The catalog (``item_id, title, year, genres``).
    users : ndarray
        The evaluated user ids, sorted.
    """

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    movies: pd.DataFrame
    users: np.ndarray

    @property
    def set_id(self) -> str:
        """The evaluation set's id in results rows (:func:`p13n_utils.results.set_id` of the users)."""
        from .results import set_id

        return set_id("movielens-rating", self.users)

    def history(self, user_id, before: str = "test") -> pd.DataFrame:
        """The user's ratings known when predicting their ``before`` ("test" or "val") ratings,
        oldest first; an empty frame for a user with no history (cold start). ``KeyError``
        for a user that is not in the data at all."""
        if before not in ("test", "val"):
            raise ValueError(f"before must be 'test' or 'val', got {before!r}")
        mine = self.train[self.train["user_id"] == user_id]
        if mine.empty and user_id not in set(self.test["user_id"]):
            raise KeyError(f"unknown MovieLens user {user_id!r}: not in the ratings "
                           f"(ids {self.train['user_id'].min()}..{self.train['user_id'].max()}); "
                           "a new user is a cold-start user: fall back to the persona or global prompt")
        if before == "val":
            val_keys = set(zip(self.val["user_id"], self.val["item_id"]))
            mine = mine[[(u, i) not in val_keys for u, i in zip(mine["user_id"], mine["item_id"])]]
        return mine.sort_values("timestamp", kind="mergesort").reset_index(drop=True)

    def __repr__(self) -> str:
        return (f"RatingEval({len(self.users)} users, {len(self.test)} test and {len(self.val)} val "
                f"ratings; {len(self.train):,} history ratings)")


def movielens_rating_eval_set(ml, n_users: int | None = 100, n_per_user: int = 3, seed: int = 0) -> RatingEval:
    """Hold out each sampled user's last ``n_per_user`` ratings (test) and the ``n_per_user``
    before them (validation).

    Parameters
    ----------
    ml : :class:`p13n_utils.data.MovieLens`
    n_users : int or None
        Users to evaluate (seeded sample among users with enough ratings); None = all.
    n_per_user : int, default 3
    seed : int

    Returns
    -------
    RatingEval
    """
    train, test = temporal_split(ml.ratings, n_test=n_per_user, min_train=n_per_user + 1)
    inner, val = temporal_split(train, n_test=n_per_user)
    eligible = np.sort(np.intersect1d(test["user_id"].unique(), val["user_id"].unique()))
    if n_users is not None:
        if n_users < 1 or n_users > eligible.size:
            raise ValueError(f"n_users must be between 1 and {eligible.size} (users with at least "
                             f"{2 * n_per_user + 1} ratings), got {n_users}; None takes all")
        eligible = np.sort(np.random.default_rng(seed).choice(eligible, size=n_users, replace=False))
    keep = lambda frame: frame[frame["user_id"].isin(eligible)].reset_index(drop=True)  # noqa: E731
    return RatingEval(train.reset_index(drop=True), keep(val), keep(test), ml.movies, eligible)


def rating_prompts(tokenizer, pairs: pd.DataFrame, movies: pd.DataFrame, context_fn: ContextFn | None = None,
                   header: str = prompts.HEADERS["user_ratings"]) -> list[str]:
    """One rating prompt per (user, item) row of ``pairs`` (``RatingEval.test`` or ``.val``);
    ``context_fn(row)`` gives the context lines (persona description, past ratings) or None."""
    texts = prompts.movie_descriptions(movies, pairs["item_id"].tolist())
    out = []
    for text, (_, row) in zip(texts, pairs.iterrows()):
        context = None if context_fn is None else context_fn(row)
        out.append(prompts.rating_prompt(tokenizer, text, context, header))
    return out


def predict_ratings(model, tokenizer, prompt_texts: Sequence[str], batch_size: int = 16,
                    cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Expected rating under the LM's next-token distribution over ``"1"``…``"5"``.

    Returns
    -------
    expected : ndarray (n,)
        ``sum_r r * p(r)``, in [1, 5].
    probs : ndarray (n, 5)
        The renormalised label probabilities.
    """
    from .generation import next_token_distribution

    prompt_texts = list(prompt_texts)
    payload = {"model": fingerprint(model) if cache else "", "prompts": prompt_texts,
               "labels": prompts.RATING_CANDIDATES}
    probs = np.asarray(memo("labels", payload, lambda: next_token_distribution(
        model, tokenizer, prompt_texts, prompts.RATING_CANDIDATES, batch_size=batch_size).tolist(), cache),
        dtype=float).reshape(len(prompt_texts), len(prompts.RATING_CANDIDATES))
    return probs @ np.arange(1, 6, dtype=float), probs


def rating_frame(model, tokenizer, pairs: pd.DataFrame, movies: pd.DataFrame, context_fn: ContextFn | None = None,
                 batch_size: int = 16) -> pd.DataFrame:
    """``pairs``' ``user_id``, ``item_id`` and ``rating`` with the LM's expected rating as ``pred``
    (:func:`rating_prompts` + :func:`predict_ratings`, memoised)."""
    predicted, _ = predict_ratings(model, tokenizer, rating_prompts(tokenizer, pairs, movies, context_fn),
                                   batch_size=batch_size)
    return pairs[["user_id", "item_id", "rating"]].assign(pred=predicted)


def per_user_loss(frame: pd.DataFrame, task: str) -> pd.Series:
    """Per-user loss of one method's per-item results, indexed by user: the NLL per token for
    ``personachat`` (:func:`per_user_nll` of :func:`score_personachat`'s frame) or the mean absolute
    error for ``movielens-rating`` (a :func:`rating_frame`)."""
    if task == "personachat":
        return per_user_nll(frame)
    if task == "movielens-rating":
        from .metrics import rating_errors

        return rating_errors(frame, frame["pred"]).set_index("user")["mae"]
    raise ValueError(f"unknown task {task!r}: personachat or movielens-rating")


@dataclass
class EvalSets:
    """The held-out users every rung of the ladder shares (built by :func:`eval_sets`).

    Attributes: ``pc`` (:class:`PersonaChatEval`) and ``dialogues`` (the PersonaChat file it
    came from), ``rating`` (:class:`RatingEval`) and ``ml`` (the MovieLens data set); a part
    not asked for is ``None``."""

    pc: PersonaChatEval | None = None
    dialogues: pd.DataFrame | None = None
    rating: RatingEval | None = None
    ml: object | None = None


def eval_sets(cfg, personachat: bool = True, movielens: bool = True) -> EvalSets:
    """Load the data and build the shared evaluation sets from a run size's table.

    ``cfg`` is what ``config.setup(RUN_SIZE)`` returned; the sizes come from its ``tasks.*`` and
    ``data.*`` lines and the seed from ``cfg.seed``, so every notebook evaluates the same users.
    Each set's id becomes its task's current set in :mod:`p13n_utils.results` (rows recorded
    without users of their own name it)."""
    from . import data, results

    sets = EvalSets()
    if personachat:
        sets.dialogues = data.load_personachat("valid")
        sets.pc = personachat_eval_set(
            sets.dialogues, n_users=cfg["tasks.pc_users"], dialogues_per_user=cfg["tasks.pc_dialogues_per_user"],
            n_test_turns=cfg["data.pc_test_turns"], n_val_turns=cfg["data.pc_val_turns"], seed=cfg.seed)
        results.use_set("personachat", sets.pc.set_id)
    if movielens:
        sets.ml = data.load_movielens("latest-small")
        sets.rating = movielens_rating_eval_set(sets.ml, n_users=cfg["tasks.ml_users"],
                                                n_per_user=cfg["tasks.ml_per_user"], seed=cfg.seed)
        results.use_set("movielens-rating", sets.rating.set_id)
    return sets
