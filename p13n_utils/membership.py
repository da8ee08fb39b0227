"""Membership inference: can an attacker tell the data a personalized model was trained on?

The privacy lab of notebook 10 (the survey's open problem of privacy, Zhang et al. 2025,
https://arxiv.org/abs/2411.00027) asks, for each user: given one of the user's turns that
trained the user's model (a *member*) and one of the same user's turns that did not (a
*non-member*), does the model give the member a lower loss? The attacker's score of an item is

* the **loss attack** (Yeom et al. 2018, https://arxiv.org/abs/1709.01604):
  ``score = -NLL_target(x)``, a low loss suggests "member";
* the **reference-calibrated loss** (Carlini et al. 2021, https://arxiv.org/abs/2012.07805;
  Carlini et al. 2022, https://arxiv.org/abs/2112.03570):
  ``score = NLL_reference(x) - NLL_target(x)``, how much *more* likely the trained model finds
  the item than the base model did. It removes what makes an item easy for every model
  (a short "yes !" is cheap for everyone) and keeps what the training added.

The attack's quality is the ROC AUC of these scores, members against non-members (0.5: the
attacker guesses; 1: every member scores above every non-member), computed per user and then
averaged over users with a bootstrap interval.

Bad input (clear errors)
    * A user with fewer turns than ``n_members + n_nonmembers`` (no history at all included):
      ``ValueError`` naming the user.
    * No members or no non-members, scores that are not finite, member and non-member scores
      of a different length than their flags: ``ValueError``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["split_members", "auc", "attack_scores", "per_user_auc", "auc_summary", "ATTACKS"]

ATTACKS = ("loss", "calibrated")
"""The attacks :func:`attack_scores` computes (the score columns it adds)."""


def split_members(rows: pd.DataFrame, n_members: int, n_nonmembers: int | None = None, seed: int = 0,
                  by: str = "user_id") -> pd.DataFrame:
    """Draw, for every user, ``n_members`` rows that will train the user's model and
    ``n_nonmembers`` held-out rows of the same user.

    Members and non-members come from the same pool (the user's own rows, shuffled with a seed),
    so they follow the same distribution: the only difference an attacker can exploit is
    whether the row was trained on.

    Parameters
    ----------
    rows : DataFrame
        One row per item (e.g. :func:`p13n_utils.finetune.personachat_rows`) with a ``by`` column.
    n_members : int >= 1
    n_nonmembers : int, optional
        Default: ``n_members`` (a balanced attack: AUC and accuracy agree at 0.5 for chance).
    seed : int
    by : str, default "user_id"

    Returns
    -------
    DataFrame
        The chosen rows with a boolean column ``member``, users in sorted order.

    Raises
    ------
    ValueError
        ``n_members < 1``, or a user with too few rows (the message names the users).
    """
    n_nonmembers = n_members if n_nonmembers is None else n_nonmembers
    if n_members < 1 or n_nonmembers < 1:
        raise ValueError(f"need at least one member and one non-member per user, got {n_members} and {n_nonmembers}")
    if by not in rows:
        raise KeyError(f"rows has no column {by!r}")
    need = n_members + n_nonmembers
    counts = rows[by].value_counts()
    short = sorted(counts[counts < need].index.tolist())
    if short or rows.empty:
        raise ValueError(f"users {short[:5]} have fewer than n_members + n_nonmembers = {need} rows "
                         "(a user with no history cannot be attacked, nor personalized); drop them or "
                         "lower n_members" if short else "rows is empty: no user has any history")
    parts = []
    for _, mine in rows.groupby(by, sort=True):
        mine = mine.sample(frac=1, random_state=seed).head(need)
        parts.append(mine.assign(member=[True] * n_members + [False] * n_nonmembers))
    return pd.concat(parts, ignore_index=True)


def auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """ROC AUC of an attack: the probability that a random member scores above a random
    non-member (ties count one half), i.e. the Mann-Whitney U statistic over ``m * n``.

    Raises
    ------
    ValueError
        An empty side or a score that is not finite.
    """
    pos = np.asarray(member_scores, dtype=float)
    neg = np.asarray(nonmember_scores, dtype=float)
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"AUC needs members and non-members, got {pos.size} members and {neg.size} non-members")
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))):
        raise ValueError("attack scores must be finite (a NaN loss? check the scored items)")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def attack_scores(target_nll: Sequence[float], reference_nll: Sequence[float] | None = None) -> pd.DataFrame:
    """The attacker's scores of each item (higher = "member").

    Parameters
    ----------
    target_nll : per-item NLL per token under the attacked model
    reference_nll : per-item NLL per token under the reference (base) model, same items

    Returns
    -------
    DataFrame
        ``loss = -target_nll`` and, with a reference, ``calibrated = reference_nll - target_nll``.
    """
    target = np.asarray(target_nll, dtype=float)
    out = pd.DataFrame({"loss": -target})
    if reference_nll is not None:
        reference = np.asarray(reference_nll, dtype=float)
        if reference.shape != target.shape:
            raise ValueError(f"target and reference NLLs must score the same items: {target.shape} vs {reference.shape}")
        out["calibrated"] = reference - target
    return out


def per_user_auc(frame: pd.DataFrame, score: str, by: str = "user_id") -> pd.Series:
    """The attack's AUC for each user, on that user's members against that user's non-members.

    Parameters
    ----------
    frame : DataFrame
        One row per item: ``by``, ``member`` (bool) and the ``score`` column.
    score : str
        The attack's score column (e.g. ``"loss"`` or ``"calibrated"`` from :func:`attack_scores`).

    Returns
    -------
    Series
        AUC indexed by user.

    Raises
    ------
    ValueError
        A user without members or without non-members (named in the message).
    """
    missing = {by, "member", score} - set(frame.columns)
    if missing:
        raise KeyError(f"frame has no column(s) {sorted(missing)}")
    out = {}
    for user, mine in frame.groupby(by, sort=True):
        member = mine["member"].astype(bool).to_numpy()
        if member.all() or not member.any():
            raise ValueError(f"user {user!r} has {int(member.sum())} members and {int((~member).sum())} non-members: "
                             "the attack needs both (build the items with split_members)")
        out[user] = auc(mine.loc[member, score], mine.loc[~member, score])
    return pd.Series(out, name=f"auc_{score}").rename_axis(by)


def auc_summary(frame: pd.DataFrame, attacks: Sequence[str] = ATTACKS, by: str = "user_id", seed: int = 0) -> pd.DataFrame:
    """Mean per-user AUC of each attack with a 95% bootstrap interval over users.

    Returns
    -------
    DataFrame
        One row per attack present in ``frame``: ``attack, auc, lower, upper, n_users``.
    """
    from .results import bootstrap_ci

    out = []
    for attack in attacks:
        if attack not in frame:
            continue
        per_user = per_user_auc(frame, attack, by)
        value, lower, upper = bootstrap_ci(per_user.to_numpy(), seed=seed)
        out.append({"attack": attack, "auc": value, "lower": lower, "upper": upper, "n_users": per_user.size})
    if not out:
        raise KeyError(f"frame has none of the attack columns {list(attacks)}; add them with attack_scores")
    return pd.DataFrame(out)
