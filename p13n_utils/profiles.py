"""One user's data in four kinds: :class:`UserProfile`.

This series sorts user data into four kinds (a reading of the survey's discussion of user data,
not a quotation of it):

1. **static attributes** (demographics, declared facts)      -> ``attributes`` (dict)
2. **user-written text** (reviews, tags, messages), with time -> ``texts``
3. **interaction history** (ratings, clicks)                   -> ``interactions``
4. **pairwise preferences** (A preferred over B)               -> ``preferences``

Builders turn either data set into profiles:

- MovieLens (:func:`movielens_profile`, :func:`movielens_profiles`): ratings -> interactions;
  pairs (a liked movie, rated >= ``like``, over a disliked one, rated <= ``dislike``) ->
  preferences; tags -> texts; 100k demographics -> attributes.
- PersonaChat (:func:`personachat_profile`, :func:`personachat_profiles`): a user is a
  *character* (:func:`personachat_user_ids` links the dialogues that play it); its persona
  facts -> attributes and texts; its own turns in all of its dialogues -> texts.

Pass the *training* part of a split (``ratings=train``, or ``split.train`` dialogues) so that a
profile never contains held-out data. A user without history gets a valid, empty (cold-start)
profile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

TEXT_COLUMNS = {"text": "str", "timestamp": "Int64", "source": "str", "item_id": "Int64"}
INTERACTION_COLUMNS = {"item_id": "int64", "rating": "float32", "timestamp": "int64"}
PREFERENCE_COLUMNS = {"preferred": "object", "other": "object", "margin": "float64", "source": "str"}


def _empty(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def empty_texts() -> pd.DataFrame:
    """texts: text (str), timestamp (Int64: unix seconds, or turn index for dialogues, NA if
    timeless), source (str: "tag", "persona", "dialogue", ...), item_id (Int64, NA if none)."""
    return _empty(TEXT_COLUMNS)


def empty_interactions() -> pd.DataFrame:
    """interactions: item_id (int64), rating (float32), timestamp (int64, unix seconds)."""
    return _empty(INTERACTION_COLUMNS)


def empty_preferences() -> pd.DataFrame:
    """preferences: preferred (item id or text), other (the less preferred one), margin
    (float: e.g. the rating difference), source (str: where the pair comes from)."""
    return _empty(PREFERENCE_COLUMNS)


@dataclass
class UserProfile:
    """Everything known about one user, in the four kinds of user data.

    Attributes
    ----------
    user_id : int
        The user's id in its data set (MovieLens user id, PersonaChat character id).
    dataset : str
        Where the profile comes from, e.g. ``"movielens-latest-small"``, ``"personachat"``.
    attributes : dict
        Static attributes (100k: age, gender, occupation, zip; PersonaChat: persona_facts).
    texts : DataFrame
        User-written text; see :func:`empty_texts` for the columns.
    interactions : DataFrame
        Interaction history sorted by time; see :func:`empty_interactions`.
    preferences : DataFrame
        Pairwise preferences; see :func:`empty_preferences`.
    """

    user_id: Any
    dataset: str
    attributes: dict = field(default_factory=dict)
    texts: pd.DataFrame = field(default_factory=empty_texts)
    interactions: pd.DataFrame = field(default_factory=empty_interactions)
    preferences: pd.DataFrame = field(default_factory=empty_preferences)

    @property
    def is_cold_start(self) -> bool:
        """True when the profile has no interactions and no text (only attributes, if any)."""
        return self.interactions.empty and self.texts.empty

    def counts(self) -> dict[str, int]:
        """The size of each of the four kinds."""
        return {"attributes": len(self.attributes), "texts": len(self.texts),
                "interactions": len(self.interactions), "preferences": len(self.preferences)}

    def __repr__(self) -> str:
        c = self.counts()
        cold = ", cold start" if self.is_cold_start else ""
        return (f"UserProfile({self.dataset} user {self.user_id}: {c['attributes']} attributes, "
                f"{c['texts']} texts, {c['interactions']} interactions, "
                f"{c['preferences']} preference pairs{cold})")

    def summary(self, n_examples: int = 3, width: int = 60) -> str:
        """A few lines per kind with examples, short enough to print in a notebook."""

        def cut(text) -> str:
            text = str(text)
            return text if len(text) <= width else text[: width - 3] + "..."

        lines = [repr(self)]
        attrs = ", ".join(f"{k}={cut(v)}" for k, v in list(self.attributes.items())[:n_examples])
        lines.append(f"  attributes  : {attrs or '(none)'}")
        if self.texts.empty:
            lines.append("  texts       : (none)")
        else:
            by_source = self.texts["source"].value_counts().to_dict()
            lines.append(f"  texts       : {by_source}")
            lines += [f"      - {cut(t)}" for t in self.texts["text"].head(n_examples)]
        if self.interactions.empty:
            lines.append("  interactions: (none)")
        else:
            r = self.interactions["rating"]
            lines.append(f"  interactions: {len(r)} ratings, mean {r.mean():.2f}, "
                         f"last items {self.interactions['item_id'].tail(n_examples).tolist()}")
        if self.preferences.empty:
            lines.append("  preferences : (none)")
        else:
            p = self.preferences.head(n_examples)
            shown = ", ".join(f"{cut(a)} > {cut(b)}" for a, b in zip(p["preferred"], p["other"]))
            lines.append(f"  preferences : {len(self.preferences)} pairs, e.g. {shown}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- MovieLens
def _unknown_user(user_id, known, dataset: str, what: str = "users") -> KeyError:
    known = np.sort(np.asarray(list(known)))
    if len(known) == 0:
        return KeyError(f"unknown user id {user_id!r}: {dataset} has no {what}")
    contiguous = known[-1] - known[0] + 1 == len(known)
    span = (f"ids {known[0]}..{known[-1]}" if contiguous else
            f"ids between {known[0]} and {known[-1]}, e.g. {', '.join(map(str, known[:3]))}")
    return KeyError(f"unknown user id {user_id!r}: {dataset} has {len(known):,} {what} ({span})")


def preference_pairs(interactions: pd.DataFrame, like: float = 4.0, dislike: float = 2.0,
                     max_pairs: int | None = 200, seed: int = 0) -> pd.DataFrame:
    """Pairs (liked item, disliked item) from one user's ratings: every item rated >= ``like``
    against every item rated <= ``dislike``, a seeded sample of ``max_pairs`` if there are
    more. Columns as in :func:`empty_preferences` (margin = rating difference)."""
    liked = interactions[interactions["rating"] >= like]
    disliked = interactions[interactions["rating"] <= dislike]
    n = len(liked) * len(disliked)
    if n == 0:
        return empty_preferences()
    index = np.arange(n)
    if max_pairs is not None and n > max_pairs:
        index = np.sort(np.random.default_rng(seed).choice(n, size=max_pairs, replace=False))
    i, j = np.divmod(index, len(disliked))
    margin = liked["rating"].to_numpy(float)[i] - disliked["rating"].to_numpy(float)[j]
    return pd.DataFrame({"preferred": pd.Series(liked["item_id"].to_numpy()[i], dtype="object"),
                         "other": pd.Series(disliked["item_id"].to_numpy()[j], dtype="object"),
                         "margin": margin,
                         "source": pd.Series(["ratings"] * len(index), dtype="str")})


def _movielens_user(ml, user_id, user_ratings: pd.DataFrame, user_tags: pd.DataFrame,
                    attributes: dict, like, dislike, max_pairs, seed) -> UserProfile:
    interactions = (user_ratings[list(INTERACTION_COLUMNS)]
                    .sort_values(["timestamp", "item_id"], kind="mergesort")
                    .astype(INTERACTION_COLUMNS).reset_index(drop=True))
    texts = pd.DataFrame({"text": user_tags["tag"].to_numpy(), "timestamp": user_tags["timestamp"].to_numpy(),
                          "source": "tag", "item_id": user_tags["item_id"].to_numpy()})
    texts = texts.astype(TEXT_COLUMNS).sort_values("timestamp", kind="mergesort").reset_index(drop=True)
    pairs = preference_pairs(interactions, like, dislike, max_pairs,
                             seed=int(np.random.SeedSequence([seed, int(user_id)]).generate_state(1)[0]))
    return UserProfile(user_id, f"movielens-{ml.variant}", attributes, texts, interactions, pairs)


def _known_movielens_users(ml) -> set:
    known = set(ml.ratings["user_id"].unique()) | set(ml.tags["user_id"].unique())
    if ml.users is not None:
        known |= set(ml.users["user_id"])
    return known


def _tags_before(tags: pd.DataFrame, ratings: pd.DataFrame) -> pd.DataFrame:
    """Tags of users present in ``ratings``, written no later than their last rating there
    (a tag written after the training cut-off would leak the future)."""
    cutoff = ratings.groupby("user_id")["timestamp"].max()
    limit = tags["user_id"].map(cutoff)
    return tags[limit.notna() & (tags["timestamp"] <= limit)]


def _attributes(ml, user_id) -> dict:
    if ml.users is None:
        return {}
    row = ml.users[ml.users["user_id"] == user_id]
    if row.empty:
        return {}
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.iloc[0].drop("user_id").items()}


def movielens_profile(ml, user_id: int, ratings: pd.DataFrame | None = None, *,
                      like: float = 4.0, dislike: float = 2.0, max_pairs: int | None = 200,
                      seed: int = 0) -> UserProfile:
    """The :class:`UserProfile` of one MovieLens user.

    Parameters
    ----------
    ml : MovieLens
        From :func:`p13n_utils.data.load_movielens`.
    user_id : int
        A user of ``ml``; an unknown id raises a KeyError saying how many users exist.
    ratings : DataFrame, optional
        The ratings to build from, e.g. the train part of a split (default: all of
        ``ml.ratings``). When given, only tags written up to the user's last rating in it
        are kept; a user with no rows in it gets a cold-start profile.
    like, dislike, max_pairs, seed
        Preference pairs: items rated >= ``like`` over items rated <= ``dislike``, at most
        ``max_pairs`` (seeded sample per user).
    """
    if user_id not in _known_movielens_users(ml):
        raise _unknown_user(user_id, _known_movielens_users(ml), f"MovieLens {ml.variant}")
    tags = ml.tags if ratings is None else _tags_before(ml.tags, ratings)
    ratings = ml.ratings if ratings is None else ratings
    return _movielens_user(ml, user_id, ratings[ratings["user_id"] == user_id],
                           tags[tags["user_id"] == user_id], _attributes(ml, user_id),
                           like, dislike, max_pairs, seed)


def movielens_profiles(ml, ratings: pd.DataFrame | None = None, **kwargs) -> dict[int, UserProfile]:
    """Profiles of every user of ``ml`` (keyed by user id, sorted), built from ``ratings``
    (default: all); users absent from ``ratings`` get cold-start profiles. ``kwargs`` as in
    :func:`movielens_profile`."""
    tags = ml.tags if ratings is None else _tags_before(ml.tags, ratings)
    ratings = ml.ratings if ratings is None else ratings
    by_user = dict(tuple(ratings.groupby("user_id", sort=False)))
    tags_by_user = dict(tuple(tags.groupby("user_id", sort=False)))
    attrs = {} if ml.users is None else {u: _attributes(ml, u) for u in ml.users["user_id"]}
    options = dict(like=4.0, dislike=2.0, max_pairs=200, seed=0) | kwargs
    empty_r, empty_t = ratings.iloc[:0], tags.iloc[:0]
    return {int(u): _movielens_user(ml, int(u), by_user.get(u, empty_r), tags_by_user.get(u, empty_t),
                                    attrs.get(u, {}), **options)
            for u in sorted(_known_movielens_users(ml))}


# --------------------------------------------------------------------------- PersonaChat
def normalize_fact(fact: str) -> str:
    """Lower-case, expand "i'm", drop punctuation and extra spaces: ``"I'm tall."`` ->
    ``"i am tall"`` (used to match the same fact across dialogues)."""
    text = str(fact).lower().replace("i'm", "i am").replace("'", "")
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text).split())


def personachat_user_ids(dialogues: pd.DataFrame, min_shared: int = 2) -> pd.Series:
    """The user (character) of each dialogue: dialogues that share at least ``min_shared``
    normalised persona facts belong to the same user (connected components).

    Parameters
    ----------
    dialogues : DataFrame
        From :func:`p13n_utils.data.load_personachat` (columns ``dialogue_id``, ``persona``).
    min_shared : int, default 2
        Facts two dialogues must share to be linked. On ConvAI2 ``valid`` this gives exactly
        the 100 personas of the file (each in 5–18 dialogues).

    Returns
    -------
    Series
        ``user_id`` (int64, numbered 0, 1, … in order of first appearance), indexed like
        ``dialogues``. A dialogue without facts is a user of its own.
    """
    if "persona" not in dialogues:
        raise KeyError("dialogues needs a 'persona' column; pass data.load_personachat(...)")
    n = len(dialogues)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    by_fact: dict[str, list[int]] = {}
    for i, facts in enumerate(dialogues["persona"]):
        for fact in {normalize_fact(f) for f in facts}:
            by_fact.setdefault(fact, []).append(i)
    shared: dict[tuple[int, int], int] = {}
    for members in by_fact.values():
        for a_pos, a in enumerate(members):
            for b in members[a_pos + 1:]:
                shared[(a, b)] = shared.get((a, b), 0) + 1
    for (a, b), count in shared.items():
        if count >= min_shared:
            parent[find(a)] = find(b)
    roots = [find(i) for i in range(n)]
    numbering: dict[int, int] = {}
    ids = [numbering.setdefault(root, len(numbering)) for root in roots]
    return pd.Series(ids, index=dialogues.index, name="user_id", dtype="int64")


def _personachat_user(user_id: int, rows: pd.DataFrame) -> UserProfile:
    """One character's profile from its dialogues (rows of ``load_personachat``)."""
    facts, seen = [], set()
    for persona in rows["persona"]:
        for fact in persona:
            key = normalize_fact(fact)
            if key not in seen:
                seen.add(key)
                facts.append(fact)
    replies = [(int(d), reply) for d, turns in zip(rows["dialogue_id"], rows["turns"]) for _, reply in turns]
    texts = pd.DataFrame({
        "text": facts + [reply for _, reply in replies],
        "timestamp": [pd.NA] * len(facts) + list(range(len(replies))),
        "source": ["persona"] * len(facts) + ["dialogue"] * len(replies),
        "item_id": [pd.NA] * len(facts) + [d for d, _ in replies],
    }).astype(TEXT_COLUMNS)
    attributes = {"persona_facts": facts, "dialogue_ids": [int(d) for d in rows["dialogue_id"]]}
    return UserProfile(int(user_id), "personachat", attributes, texts)


def personachat_profile(dialogues: pd.DataFrame, user_id: int) -> UserProfile:
    """The :class:`UserProfile` of one PersonaChat user: a *character*, played in several
    dialogues (see :func:`personachat_user_ids`; ConvAI2 ``valid`` has 100 of them).

    ``attributes["persona_facts"]`` holds the character's distinct facts (first wording seen)
    and ``attributes["dialogue_ids"]`` its dialogues; ``texts`` holds the facts (source
    "persona", no timestamp) and the character's own replies in all its dialogues (source
    "dialogue", ``item_id`` = the dialogue, ``timestamp`` = a running turn index in file order:
    the data has no clock times). PersonaChat has no interactions or preference pairs.

    User ids are computed from the persona facts, which a split leaves intact, so
    ``personachat_profile(personachat_split(...).train, u)`` is the same user without the
    held-out turns."""
    user_ids = personachat_user_ids(dialogues)
    match = dialogues[user_ids == user_id]
    if match.empty:
        raise _unknown_user(user_id, user_ids.unique(), "PersonaChat", "users (characters)")
    return _personachat_user(user_id, match)


def personachat_profiles(dialogues: pd.DataFrame) -> dict[int, UserProfile]:
    """Profiles of every PersonaChat user (character), keyed by user id."""
    user_ids = personachat_user_ids(dialogues)
    return {int(u): _personachat_user(int(u), rows) for u, rows in dialogues.groupby(user_ids, sort=True)}
