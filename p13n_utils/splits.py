"""Train/test splits without leakage.

- :func:`temporal_split`: each user's *last* interactions (by time) are held out (warm users).
  The cut is per user: a user's own future is never in train, but other users' ratings made
  after it can be.
- :func:`global_time_split`: one time cut for everybody: train is everything before it, test
  everything after, so a model trained on train never sees the future it is asked to predict.
- :func:`stratified_split`: a random share of each user's (or each item's) rows is held out,
  chronology ignored: the protocol of microsoft/recommenders' benchmark table
  (``python_stratified_split``), for numbers comparable with it.
- :func:`user_split`: whole users are held out (cold-start users: none of their data is in
  train).
- :func:`personachat_split`: each dialogue's last turns are held out; the earlier turns are
  the history a model may learn from.

Every function returns new DataFrames and leaves its input untouched.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd


def _sort_by_time(ratings: pd.DataFrame, user_col: str, time_col: str) -> pd.DataFrame:
    """Sort by user, then time; ties in time are broken by item id (if there is an
    ``item_id`` column), then by the original row order, so the result is deterministic."""
    keys = [user_col, time_col] + (["item_id"] if "item_id" in ratings.columns else [])
    return ratings.sort_values(keys, kind="mergesort")


def temporal_split(ratings: pd.DataFrame, test_frac: float | None = None, n_test: int | None = None,
                   user_col: str = "user_id", time_col: str = "timestamp",
                   min_train: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-user temporal holdout: each user's last ``n_test`` (or last ``test_frac``) rows.

    What it guarantees: for each user, every test row is at or after all of **that user's**
    train rows, and a held-out (user, item) pair is not in train. What it does not: the cut
    falls at a different time for each user, so train holds **other users'** ratings made
    after a user's test rating (on MovieLens, a large share of them): a model trained on it
    knows later trends (popular new releases, for instance) than the user it predicts for.
    When "the model never sees the future" matters, use :func:`global_time_split`.

    Parameters
    ----------
    ratings : DataFrame
        One row per interaction with at least ``user_col`` and ``time_col``.
    test_frac : float in (0, 1), optional
        Hold out ``max(1, floor(test_frac * n_u))`` rows of a user with ``n_u`` rows.
    n_test : int >= 1, optional
        Hold out each user's last ``n_test`` rows. Give ``test_frac`` or ``n_test``, not
        both; with neither, ``n_test=1`` (leave-last-one-out).
    min_train : int, default 1
        Rows a user must keep in train. A user with fewer than ``n_test_u + min_train``
        rows stays **entirely in train** (nothing of theirs is tested).

    Returns
    -------
    train, test : DataFrame
        Same columns as ``ratings``, sorted by user then time, fresh index. Every test row of a
        user is at or after all their train rows in time; a (user, item) pair that is held
        out is removed from train too (if an ``item_id`` column exists), so a repeated
        interaction cannot leak the answer.
    """
    if test_frac is not None and n_test is not None:
        raise ValueError("give test_frac or n_test, not both")
    if test_frac is not None and not 0 < test_frac < 1:
        raise ValueError(f"test_frac must be in (0, 1), got {test_frac}")
    if n_test is None and test_frac is None:
        n_test = 1
    if n_test is not None and (int(n_test) != n_test or n_test < 1):
        raise ValueError(f"n_test must be a positive integer, got {n_test}")
    for col in (user_col, time_col):
        if col not in ratings.columns:
            raise KeyError(f"column {col!r} not in ratings (columns: {list(ratings.columns)})")

    ordered = _sort_by_time(ratings, user_col, time_col).reset_index(drop=True)
    counts = ordered.groupby(user_col, sort=False)[user_col].transform("size").to_numpy()
    rank_from_end = counts - 1 - ordered.groupby(user_col, sort=False).cumcount().to_numpy()
    if n_test is not None:
        n_out = np.full(len(ordered), int(n_test))
    else:
        n_out = np.maximum(1, np.floor(test_frac * counts)).astype(int)
    eligible = counts >= n_out + min_train
    is_test = eligible & (rank_from_end < n_out)

    test = ordered[is_test]
    train = ordered[~is_test]
    if "item_id" in ordered.columns:
        held = pd.MultiIndex.from_frame(test[[user_col, "item_id"]])
        train = train[~pd.MultiIndex.from_frame(train[[user_col, "item_id"]]).isin(held)]
    return train.reset_index(drop=True), test.reset_index(drop=True)


def global_time_split(ratings: pd.DataFrame, test_frac: float = 0.2, cut_time=None,
                      user_col: str = "user_id", time_col: str = "timestamp",
                      min_train: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Global time cut: every row before one time goes to train, every row at or after it to test.

    Parameters
    ----------
    ratings : DataFrame
        One row per interaction with at least ``user_col`` and ``time_col``.
    test_frac : float in (0, 1), default 0.2
        Without ``cut_time``: the cut is the time of the row at the ``1 - test_frac`` position
        of all rows sorted by time, so about ``test_frac`` of the rows are test (ties at the
        cut all go to test).
    cut_time : optional
        The cut itself (same type as ``time_col``); overrides ``test_frac``.
    min_train : int, default 1
        Test rows are kept only for users with at least ``min_train`` train rows (0 keeps
        users who appear only after the cut: new users).

    Returns
    -------
    train, test : DataFrame
        As :func:`temporal_split` returns them (same columns, sorted by user then time, fresh
        index, a held-out (user, item) pair removed from train). Every train row is before
        every test row, for all users together: nothing in train happened after anything the
        model is asked to predict.
    """
    for col in (user_col, time_col):
        if col not in ratings.columns:
            raise KeyError(f"column {col!r} not in ratings (columns: {list(ratings.columns)})")
    if cut_time is None:
        if not 0 < test_frac < 1:
            raise ValueError(f"test_frac must be in (0, 1), got {test_frac}")
        if len(ratings) < 2:
            raise ValueError("need at least 2 rows to cut")
        times = np.sort(ratings[time_col].to_numpy())
        cut_time = times[min(len(times) - 1, int(np.floor((1 - test_frac) * len(times))))]
    ordered = _sort_by_time(ratings, user_col, time_col).reset_index(drop=True)
    is_test = (ordered[time_col] >= cut_time).to_numpy()
    train, test = ordered[~is_test], ordered[is_test]
    n_train = train.groupby(user_col).size()
    test = test[test[user_col].map(n_train).fillna(0).to_numpy() >= min_train]
    if "item_id" in ordered.columns:
        held = pd.MultiIndex.from_frame(test[[user_col, "item_id"]])
        train = train[~pd.MultiIndex.from_frame(train[[user_col, "item_id"]]).isin(held)]
    return train.reset_index(drop=True), test.reset_index(drop=True)


def stratified_split(ratings: pd.DataFrame, ratio: float = 0.75, by: str = "item", seed: int = 42,
                     user_col: str = "user_id", item_col: str = "item_id") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random per-group split: of each item's (``by="item"``) or user's (``by="user"``) ``n`` rows,
    ``round(ratio * n)`` go to train and the rest to test. Time plays no part.

    This reproduces microsoft/recommenders' ``python_stratified_split(data, ratio, filter_by=by,
    seed=seed)``, the split behind its README's "Algorithm Comparison" table (MovieLens 100k,
    ``ratio=0.75, filter_by="item", seed=42``), row for row on the same frame:

    1. every row gets ``numpy.random.RandomState(seed).rand()`` in the input's row order (the
       reference calls ``np.random.seed(seed); np.random.rand(n)``, the same stream);
    2. rows are ordered by group, then by that number; each row's ``rank`` in its group is 1..n;
    3. a row is in train when ``rank <= round(ratio * n)``. The rounding is numpy's (pandas'
       ``Series.round``): halves go to the **even** integer, so a group of 2 rows at
       ``ratio=0.75`` (1.5 → 2) keeps both in train and a group of 6 (4.5 → 4) holds out 2.

    Parameters
    ----------
    ratings : DataFrame with at least ``user_col`` and ``item_col``.
    ratio : float in (0, 1), the train share of each group.
    by : ``"item"`` or ``"user"``, the column whose groups are split.
    seed : int

    Returns
    -------
    train, test : DataFrame
        The input's columns, each sorted like the reference (by group, then the random number),
        fresh index. Every group keeps at least ``round(ratio * n)`` rows in train.
    """
    if by not in ("item", "user"):
        raise ValueError(f"by must be 'item' or 'user', got {by!r}")
    if not 0 < ratio < 1:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    group = item_col if by == "item" else user_col
    if group not in ratings.columns:
        raise KeyError(f"column {group!r} not in ratings (columns: {list(ratings.columns)})")
    draws = np.random.RandomState(seed).rand(len(ratings))
    order = np.lexsort((draws, ratings[group].to_numpy()))  # by group, then by the draw
    ordered = ratings.iloc[order].reset_index(drop=True)
    counts = ordered.groupby(group, sort=False)[group].transform("size").to_numpy()
    rank = ordered.groupby(group, sort=False).cumcount().to_numpy() + 1
    in_train = rank <= np.round(ratio * counts)
    return ordered[in_train].reset_index(drop=True), ordered[~in_train].reset_index(drop=True)


def later_train_share(train: pd.DataFrame, test: pd.DataFrame, time_col: str = "timestamp") -> float:
    """The mean, over test rows, of the share of train rows made strictly later than the test
    row: 0 for :func:`global_time_split`, and what :func:`temporal_split` lets through."""
    if test.empty or train.empty:
        raise ValueError("train and test must both hold rows")
    times = np.sort(train[time_col].to_numpy())
    later = len(times) - np.searchsorted(times, test[time_col].to_numpy(), side="right")
    return float(np.mean(later / len(times)))


def user_split(ratings: pd.DataFrame, test_users_frac: float = 0.2, seed: int = 0,
               user_col: str = "user_id") -> tuple[pd.DataFrame, pd.DataFrame]:
    """User-disjoint split: a random ``test_users_frac`` of the users (at least one) go to
    test with all their rows (cold-start users); the others go to train.

    The users are sorted before the seeded permutation, so the split depends only on the
    set of users and ``seed``. Returns ``(train, test)`` with fresh indexes."""
    if not 0 < test_users_frac < 1:
        raise ValueError(f"test_users_frac must be in (0, 1), got {test_users_frac}")
    users = np.sort(ratings[user_col].unique())
    if len(users) < 2:
        raise ValueError(f"need at least 2 users to split, got {len(users)}")
    n_test = min(len(users) - 1, max(1, int(round(test_users_frac * len(users)))))
    test_users = np.random.default_rng(seed).permutation(users)[:n_test]
    in_test = ratings[user_col].isin(test_users)
    return ratings[~in_test].reset_index(drop=True), ratings[in_test].reset_index(drop=True)


class PersonaChatSplit(NamedTuple):
    """The three parts of :func:`personachat_split`.

    ``train`` has the loader's schema (one row per dialogue, ``turns`` cut to the earlier
    turns: the history a model may learn from and a profile may be built from); ``val`` and
    ``test`` have one row per held-out turn (see :func:`explode_turns`)."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame


def explode_turns(dialogues: pd.DataFrame) -> pd.DataFrame:
    """One row per turn: dialogue_id, turn (0-based), persona, history (the list of earlier
    (partner, self) turns), partner (what the other speaker said), reply (the self speaker's
    answer: the target text)."""
    rows = []
    for d in dialogues.itertuples(index=False):
        turns = list(d.turns)
        for t, (partner, reply) in enumerate(turns):
            rows.append((d.dialogue_id, t, list(d.persona), turns[:t], partner, reply))
    columns = ["dialogue_id", "turn", "persona", "history", "partner", "reply"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"dialogue_id": "int64", "turn": "int64"})


def personachat_split(dialogues: pd.DataFrame, n_test_turns: int = 1,
                      n_val_turns: int = 1) -> PersonaChatSplit:
    """Hold out each dialogue's last ``n_test_turns`` (test) and the ``n_val_turns`` before
    them (val); the earlier turns stay in train.

    A dialogue with at most ``n_test_turns + n_val_turns`` turns stays entirely in train.
    Val and test rows carry their full history (earlier turns, including val turns for a
    test row: the conversation so far is known when the reply is written); only the replies
    are targets, and no test reply is a train or val target.
    """
    for name, value in (("n_test_turns", n_test_turns), ("n_val_turns", n_val_turns)):
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value}")
    if n_test_turns < 1:
        raise ValueError("n_test_turns must be at least 1")
    held = n_test_turns + n_val_turns
    n_turns = dialogues["turns"].map(len)
    splittable = n_turns > held

    train = dialogues.copy()
    train["turns"] = [list(turns[:-held]) if ok else list(turns)
                      for turns, ok in zip(dialogues["turns"], splittable)]
    long = explode_turns(dialogues[splittable])
    from_end = long["turn"] - long["dialogue_id"].map(n_turns.set_axis(dialogues["dialogue_id"]))
    test = long[from_end >= -n_test_turns].reset_index(drop=True)
    val = long[(from_end < -n_test_turns) & (from_end >= -held)].reset_index(drop=True)
    return PersonaChatSplit(train.reset_index(drop=True), val, test)
