"""User-level context: what a prompt may say about one user (notebooks 04 and 05).

The survey (Zhang et al. 2025, its section on personalized prompting) lists, for the user
level, prompts that carry the user's own data:

* **contextual** prompting — the user's raw data in the prompt: their PersonaChat facts
  (:func:`pc_facts`), their most recent MovieLens ratings (:func:`ml_history_lines`);
* **profile-augmented** prompting — an LM-written summary of the user's data (Richardson et
  al. 2023): :func:`p13n_utils.prompts.pc_summary_prompt` / :func:`~p13n_utils.prompts.ml_summary_prompt`
  (with :func:`ml_summary_lines`) build the request and
  :func:`profile_summaries` generates one summary per user **once** and caches it on disk;
* **prompt refinement** — choosing or rewriting the prompt per user with a signal from the
  user's own data (e.g. FERMI, Kim et al. 2024): here each user's prompt template is chosen
  among a few candidates by its loss on that user's **validation** turns
  (:func:`p13n_utils.retrieval.select_per_user`), then evaluated once on test
  (:func:`compose_choice`);
* a control, **shuffled user**: another user's data in the same template (:func:`derangement`),
  which shows whether a gain comes from *this* user's data or from any plausible context.

Notebook 05 (personalized RAG) retrieves from the corpora built here: :func:`pc_corpus` (the
user's facts and earlier replies) and :func:`ml_corpus` (the user's rated movies).

Every function reads the evaluation sets of :mod:`p13n_utils.tasks`, so the held-out users and
items are those of every other rung; nothing here ever reads a validation or test target
except the loss tables handed to the selection step.

Bad input: an unknown user raises ``KeyError`` (from the evaluation sets); a user without
data falls back to a persona, then to the global prompt (:func:`with_fallback`, which says
which level was used).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from . import prompts
from .cache import fingerprint, memo
from .prompts import movie_descriptions
from .retrieval import select_per_user  # re-exported: the selection step of prompt refinement

__all__ = [
    "evaluated_users", "pc_items", "ml_items", "ranked_context", "restrict_to_items", "pc_facts", "pc_replies", "derangement",
    "ml_history_lines", "ml_summary_lines",
    "clean_summary", "profile_summaries", "select_per_user", "compose_choice", "with_fallback",
    "pc_corpus", "ml_corpus",
]

# =========================================================================== which items
def evaluated_users(users: Sequence, n: int | None, seed: int = 0) -> np.ndarray:
    """A seeded subset of ``n`` of the evaluation set's users (all of them for None), sorted.

    The subsets are **nested**: they are prefixes of one seeded permutation, so for the same
    seed the users of a smaller ``n`` (05's sweep) are among those of a larger one (04).
    """
    users = np.sort(np.asarray(users))
    if n is None or n >= users.size:
        return users
    if n < 1:
        raise ValueError(f"n must be >= 1 (or None for every user), got {n}")
    return np.sort(np.random.default_rng(seed).permutation(users)[:n])


def pc_items(ev, users: Sequence, dialogues_per_user: int | None = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The validation and test turns of ``users``' evaluated PersonaChat dialogues.

    Parameters
    ----------
    ev : :class:`p13n_utils.tasks.PersonaChatEval`
    users : user ids (each must be an evaluated user)
    dialogues_per_user : int or None, default 1
        Keep each user's first ``dialogues_per_user`` evaluated dialogues (by id); None keeps
        all. Validation and test turns always come from the same dialogues.

    Returns
    -------
    val, test : DataFrame (rows of ``ev.val`` and ``ev.test``, fresh index)
    """
    unknown = sorted(set(users) - set(ev.users))
    if unknown:
        raise KeyError(f"users {unknown[:5]} are not evaluated users of this PersonaChatEval "
                       f"({len(ev.users)} users: {list(ev.users[:5])}...)")
    test = ev.test[ev.test["user_id"].isin(list(users))]
    dialogues = test.groupby("user_id")["dialogue_id"].apply(lambda d: sorted(d.unique())[:dialogues_per_user])
    keep = {d for ids in dialogues for d in ids}
    pick = lambda frame: frame[frame["dialogue_id"].isin(keep)].reset_index(drop=True)  # noqa: E731
    return pick(ev.val), pick(ev.test)


def ml_items(rv, users: Sequence, ratings_per_user: int | None = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The validation and test ratings of ``users`` in a :class:`p13n_utils.tasks.RatingEval`:
    each user's first ``ratings_per_user`` held-out ratings of each split (in time order; None
    keeps all)."""
    unknown = sorted(set(users) - set(rv.users))
    if unknown:
        raise KeyError(f"users {unknown[:5]} are not evaluated users of this RatingEval")

    def pick(frame):
        mine = frame[frame["user_id"].isin(list(users))].sort_values(["user_id", "timestamp", "item_id"],
                                                                   kind="mergesort")
        if ratings_per_user is not None:
            mine = mine.groupby("user_id").head(ratings_per_user)
        return mine.reset_index(drop=True)

    return pick(rv.val), pick(rv.test)


def ranked_context(items: pd.DataFrame, keys: Sequence[str], ranked_lines: Sequence[Sequence[str]], k: int):
    """A ``context_fn(row)`` that serves, for each row of ``items`` (identified by ``keys``), the
    first ``k`` of its ranked lines (``ranked_lines[i]`` belongs to ``items``' i-th row): the
    top-k retrieved items of a retriever as the prompt's context."""
    keys = list(keys)
    lookup = {tuple(key): list(lines)[:k] for key, lines in zip(items[keys].to_numpy().tolist(), ranked_lines)}
    return lambda row: lookup[tuple(row[keys].tolist())]


def restrict_to_items(frame: pd.DataFrame, items: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The rows of ``frame`` (per-item results) for the rows of ``items``, in their order.

    E.g. notebook 02's global scores of every held-out item, cut down to the items a later
    notebook evaluates, so that its comparisons with the global prompt are paired.

    Parameters
    ----------
    frame : DataFrame
        Results with the ``keys`` columns, at most one row per item.
    items : DataFrame
        The items wanted (``keys`` columns), e.g. the output of :func:`pc_items` or :func:`ml_items`.
    keys : list of str
        Columns that identify an item: ``["dialogue_id", "turn"]`` or ``["user_id", "item_id"]``.

    Raises
    ------
    KeyError
        If an item has no row in ``frame`` (score those items first).
    """
    keys = list(keys)
    out = items[keys].merge(frame, on=keys, how="left", validate="one_to_one", indicator=True)
    missing = int((out["_merge"] == "left_only").sum())
    if missing:
        raise KeyError(f"{missing} of {len(items)} items have no row in frame (matched on {keys}); "
                       "score them first")
    return out.drop(columns="_merge")


# =========================================================================== contextual
def pc_facts(ev, user_id) -> list[str]:
    """The user's own persona facts (all their dialogues, deduplicated); ``KeyError`` for an
    unknown user."""
    return ev.facts_of(user_id)


def pc_replies(ev, user_id) -> list[str]:
    """The user's own replies in all their training turns (``ev.train``: held-out turns cut),
    in file order; ``KeyError`` for an unknown user."""
    ev.facts_of(user_id)  # raises for an unknown user
    mine = ev.train[ev.train["user_id"] == user_id].sort_values("dialogue_id")
    return [reply for turns in mine["turns"] for _, reply in turns]


def derangement(users: Sequence, seed: int = 0) -> dict:
    """A seeded map ``user -> another user`` in which nobody is mapped to themselves.

    Used by the shuffled-user control: each user's prompt gets the data of ``mapping[user]``.
    Built as a random cyclic shift of a seeded permutation, so it is a derangement by
    construction (no rejection loop).
    """
    users = list(dict.fromkeys(users))
    if len(users) < 2:
        raise ValueError(f"a shuffled-user control needs at least 2 users, got {len(users)}")
    rng = np.random.default_rng(seed)
    order = [users[i] for i in rng.permutation(len(users))]
    shift = int(rng.integers(1, len(users)))
    return {order[i]: order[(i + shift) % len(users)] for i in range(len(users))}


def ml_history_lines(rv, user_id, before: str = "test", m: int | None = 8) -> list[str]:
    """The user's ``m`` most recent ratings known before their ``before`` ("test" or "val")
    ratings, oldest first, as context lines ``"Heat (1995): 4"`` (None: all of them; ``[]``
    for a user without history). ``KeyError`` for an unknown user."""
    history = rv.history(user_id, before=before)
    if m is not None:
        history = history.tail(m)
    texts = movie_descriptions(rv.movies, history["item_id"].tolist(), genres=False)
    return [prompts.rating_line(text, rating) for text, rating in zip(texts, history["rating"])]


# =========================================================================== profile summaries
def ml_summary_lines(rv, user_id, before: str = "test", n_best: int = 5, n_worst: int = 5) -> list[str]:
    """What a MovieLens profile summary is written from (:func:`p13n_utils.prompts.ml_summary_prompt`):
    the user's ``n_best`` highest and ``n_worst`` lowest rated movies known before ``before``,
    with genres, as rating lines ``"Heat (1995; Action, Crime): 4"``."""
    history = rv.history(user_id, before=before)
    if history.empty:
        raise ValueError(f"nothing to summarise: user {user_id} has no ratings before {before} (cold start)")
    ranked = history.sort_values(["rating", "timestamp"], ascending=[False, False], kind="mergesort")
    chosen = pd.concat([ranked.head(n_best), ranked.iloc[n_best:].tail(n_worst)])
    texts = movie_descriptions(rv.movies, chosen["item_id"].tolist(), genres=True)
    return [prompts.rating_line(t, r) for t, r in zip(texts, chosen["rating"])]


def _join(prefix: str, continuation: str) -> str:
    """``prefix`` + the generated continuation, with a space unless it starts with punctuation
    (``"I" + "'m a nurse"`` -> ``"I'm a nurse"``)."""
    continuation = str(continuation).strip()
    if not prefix:
        return continuation
    glue = "" if continuation[:1] in ("'", "’", ",", ".", "!", "?", ";", ":") else " "
    return f"{prefix}{glue}{continuation}"


def clean_summary(text: str, max_sentences: int = 2, max_chars: int = 300) -> str:
    """Tidy an LM-written profile: collapse whitespace, drop repeated sentences (small LMs loop),
    keep the first ``max_sentences`` sentences and at most ``max_chars`` characters."""
    import re

    sentences, seen = [], set()
    for sentence in re.split(r"(?<=[.!?])\s+", " ".join(str(text).split())):
        key = sentence.lower().strip(" .!?")
        if key and key not in seen:
            seen.add(key)
            sentences.append(sentence)
    text = " ".join(sentences[:max_sentences])
    return text if len(text) <= max_chars else text[:max_chars].rsplit(" ", 1)[0] + "..."


def profile_summaries(model, tokenizer, requests: dict, name: str, prefix: str = "", max_new_tokens: int = 48,
                      batch_size: int = 16, cache: bool = True,
                      generate_fn: Callable[[list[str]], list[str]] | None = None) -> dict:
    """One LM-written profile summary per user, generated once and cached on disk.

    Parameters
    ----------
    model, tokenizer
        From :func:`p13n_utils.models.load_lm`.
    requests : dict
        user -> prompt text (:func:`p13n_utils.prompts.pc_summary_prompt`, ``ml_summary_prompt``).
    name : str
        A short name for the cache file (e.g. ``"personachat"``).
    prefix : str, default ""
        The words the requests end with (``prompts.PC_SUMMARY_PREFIX``, ``prompts.ML_SUMMARY_PREFIX``);
        they are put back in front of each generated continuation.
    max_new_tokens, batch_size : int
        Greedy decoding settings (:func:`p13n_utils.generation.generate`).
    cache : bool, default True
        Read/write ``config.CACHE_DIR / "profiles" / "<name>-<hash>.json"`` through
        :func:`p13n_utils.cache.memo`; the hash covers the model's weights
        (:func:`p13n_utils.cache.fingerprint`), the requests and ``max_new_tokens``, so a
        changed prompt or model never reuses a stale summary.
    generate_fn : callable, optional
        ``prompts -> texts``; default greedy :func:`p13n_utils.generation.generate` with the
        settings above (tests pass a fake one).

    Returns
    -------
    dict
        user -> summary, tidied by :func:`clean_summary` (the cache keeps the raw generations).
    """
    if not requests:
        raise ValueError("no requests: pass {user: prompt} for at least one user")
    users = list(requests)
    texts = [requests[u] for u in users]
    if generate_fn is None:
        from .generation import generate

        def generate_fn(batch):
            return generate(model, tokenizer, batch, max_new_tokens=max_new_tokens,
                            batch_size=batch_size, progress=False)

    def compute():
        raw = [str(t) for t in generate_fn(texts)]
        if len(raw) != len(texts):
            raise RuntimeError(f"generate_fn returned {len(raw)} texts for {len(texts)} prompts")
        return raw

    payload = {"model": fingerprint(model) if model is not None else "no-model", "prompts": texts,
               "max_new_tokens": max_new_tokens}
    raw = memo(name, payload, compute, cache=cache, folder="profiles")
    return dict(zip(users, (clean_summary(_join(prefix, t)) for t in raw)))


# =========================================================================== refinement
def compose_choice(choice: pd.Series, per_candidate: dict, items: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The per-item results of a per-user choice: each item takes the row of the candidate its
    user chose.

    Parameters
    ----------
    choice : Series
        user -> candidate name (:func:`p13n_utils.retrieval.select_per_user` on validation).
    per_candidate : dict
        candidate -> per-item results (e.g. :func:`p13n_utils.tasks.score_personachat` output)
        with a ``user_id`` column and the ``keys`` columns; a candidate's frame needs the
        items of the users who chose it (it may hold more).
    items : DataFrame
        The test items, in the order the result should have (``user_id`` and ``keys`` columns).
    keys : list of str
        Columns that identify an item, e.g. ``["dialogue_id", "turn"]`` or ``["user_id", "item_id"]``.

    Returns
    -------
    DataFrame
        One row per item of ``items`` (same order) with the chosen candidate's columns and a
        ``choice`` column.
    """
    keys = list(keys)
    missing_users = sorted(set(items["user_id"]) - set(choice.index))
    if missing_users:
        raise KeyError(f"no choice for users {missing_users[:5]}: run the selection on their validation data")
    parts = []
    for candidate in pd.unique(choice.to_numpy()):
        if candidate not in per_candidate:
            raise KeyError(f"candidate {candidate!r} was chosen but has no results; have {sorted(per_candidate)}")
        users = choice.index[choice == candidate]
        frame = per_candidate[candidate]
        parts.append(frame[frame["user_id"].isin(users)].assign(choice=candidate))
    chosen = pd.concat(parts, ignore_index=True).drop_duplicates(keys)
    try:
        out = restrict_to_items(chosen.drop(columns=[c for c in ("user_id",) if c not in keys]), items, keys)
    except KeyError:
        raise KeyError("some items have no result for their chosen candidate; score the chosen candidate on "
                       "those users' test items") from None
    return out.assign(user_id=items["user_id"].to_numpy())


# =========================================================================== cold start
def with_fallback(user_lines: Sequence[str] | None, persona_lines: Sequence[str] | None = None,
                  user_header: str = prompts.HEADERS["user"],
                  persona_header: str = prompts.HEADERS["persona"]) -> tuple[list[str] | None, str, str]:
    """The user's context if they have any, else their persona's, else none (global).

    Wraps :func:`p13n_utils.tasks.context_with_fallback` and also returns the header that
    matches the level, so a cold-start user's persona is never presented as "About you".

    Returns
    -------
    (lines or None, header, level) with level in ``user | persona | global``.
    """
    from .tasks import context_with_fallback

    lines, level = context_with_fallback(user_lines, persona_lines)
    header = {"user": user_header, "persona": persona_header, "global": user_header}[level]
    return lines, header, level


# =========================================================================== RAG corpora (05)
def pc_corpus(ev, row, n_history: int = 2) -> tuple[list[str], np.ndarray]:
    """A PersonaChat user's retrievable data when answering ``row`` (a val or test turn).

    The corpus, oldest first: the user's persona facts (timeless, so counted as oldest), their
    own replies in their other dialogues (training turns of ``ev.train``, in file order: the
    data has no clock), then their earlier replies in this dialogue that the prompt does not
    already show (all but the last ``n_history`` turns of ``row["history"]``). Held-out replies
    are never in it. ``times`` is ``0, 1, 2, ...`` in that order (larger = more recent).

    Returns
    -------
    (texts, times)
    """
    user, dialogue = row["user_id"], row["dialogue_id"]
    texts = list(ev.facts_of(user))
    mine = ev.train[(ev.train["user_id"] == user) & (ev.train["dialogue_id"] != dialogue)]
    for turns in mine.sort_values("dialogue_id")["turns"]:
        texts += [reply for _, reply in turns]
    earlier = list(row["history"])[:-n_history] if n_history else list(row["history"])
    texts += [reply for _, reply in earlier]
    return texts, np.arange(len(texts), dtype=float)


def ml_corpus(rv, user_id, before: str = "test") -> tuple[list[str], list[str], np.ndarray]:
    """A MovieLens user's retrievable ratings before their ``before`` ratings.

    Returns
    -------
    (documents, lines, times)
        ``documents`` are what the retriever matches (title, year and genres), ``lines`` what
        the prompt shows (``"Heat (1995): 4"``, without genres to save tokens), ``times`` the
        rating timestamps. All empty for a user without history (cold start).
    """
    history = rv.history(user_id, before=before)
    items = history["item_id"].tolist()
    documents = movie_descriptions(rv.movies, items, genres=True)
    short = movie_descriptions(rv.movies, items, genres=False)
    lines = [prompts.rating_line(t, r) for t, r in zip(short, history["rating"])]
    return documents, lines, history["timestamp"].to_numpy(dtype=float)
