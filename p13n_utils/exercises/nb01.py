"""Checks of the exercises of ``01_user_data``: the four kinds of user data, a per-user
temporal split by hand, and the PersonaChat character linking."""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from .. import lesson, profiles, splits

__all__ = ["KINDS", "check_1", "check_2", "check_3"]

KINDS = ("attributes", "texts", "interactions", "preferences")


def users_per_kind(user_profiles: Mapping) -> dict:
    """For each of the four kinds, the number of profiles with at least one entry of it."""
    return {kind: sum(1 for p in user_profiles.values() if p.counts()[kind] > 0) for kind in KINDS}


def check_1(answer: dict | None, user_profiles: Mapping):
    """Exercise 1: ``answer`` maps each kind of :data:`KINDS` to the number of users (profiles
    of ``user_profiles``) that have at least one entry of that kind."""
    if answer is None:
        return lesson.check("exercise 1", None, "")
    expected = users_per_kind(user_profiles)
    if not isinstance(answer, dict) or set(answer) != set(KINDS):
        return lesson.check("exercise 1", False, f"answer with a dict with the keys {list(KINDS)}")
    wrong = [kind for kind in KINDS if answer[kind] != expected[kind]]
    return lesson.check("exercise 1", not wrong,
                        f"recount {', '.join(wrong)}: profile.counts() gives the size of each kind; "
                        "count the profiles where it is above 0",
                        success=", ".join(f"{k}: {v}" for k, v in expected.items()))


def check_2(answer, ratings: pd.DataFrame, n_test: int = 5):
    """Exercise 2: ``answer`` is a test frame (``user_id``, ``item_id`` columns) holding each
    user's last ``n_test`` ratings in time; compared with :func:`splits.temporal_split`."""
    if answer is None:
        return lesson.check("exercise 2", None, "")
    _, reference = splits.temporal_split(ratings, n_test=n_test)
    expected = set(zip(reference["user_id"], reference["item_id"]))
    try:
        given = set(zip(answer["user_id"], answer["item_id"]))
    except (KeyError, TypeError, IndexError):
        return lesson.check("exercise 2", False, "return a DataFrame with user_id and item_id columns")
    hint = (f"{len(given - expected)} of your rows are not among the last {n_test} of their user and "
            f"{len(expected - given)} are missing: sort by user_id, timestamp and then item_id (ties in time "
            f"are broken by item id), take each user's last {n_test} rows with groupby(...).tail, and "
            f"leave out users with {n_test} or fewer ratings (they must keep one for training)")
    return lesson.check("exercise 2", given == expected, hint,
                        success=f"{len(expected):,} test ratings, the same as splits.temporal_split")


def check_3(answer: dict | None, dialogues: pd.DataFrame, min_shared_values: Sequence[int] = (1, 2, 3, 4)):
    """Exercise 3: ``answer`` maps each ``min_shared`` of ``min_shared_values`` to the number of
    characters :func:`profiles.personachat_user_ids` finds in ``dialogues`` with it."""
    if answer is None:
        return lesson.check("exercise 3", None, "")
    expected = {m: int(profiles.personachat_user_ids(dialogues, min_shared=m).nunique())
                for m in min_shared_values}
    if not isinstance(answer, dict) or set(answer) != set(expected):
        return lesson.check("exercise 3", False, f"answer with a dict with the keys {list(expected)}")
    wrong = [m for m in expected if answer[m] != expected[m]]
    return lesson.check("exercise 3", not wrong,
                        f"recount for min_shared = {wrong}: the characters are the distinct values of "
                        "profiles.personachat_user_ids(dialogues, min_shared=m)",
                        success=", ".join(f"min_shared={m}: {n} characters" for m, n in expected.items()))
