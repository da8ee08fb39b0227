"""Personas: groups of users who share traits, the survey's middle granularity between one
global model and one model per user.

MovieLens: :func:`movielens_genre_personas` clusters users by their genre taste (which genres
they like more or less than the average user) and describes each cluster by its top genres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["GenrePersonas", "genre_matrix", "genre_share", "genre_taste", "movielens_genre_personas"]

NO_GENRE = "(no genres listed)"


@dataclass
class GenrePersonas:
    """The result of :func:`movielens_genre_personas`.

    Attributes
    ----------
    assignments : Series
        user_id -> persona number (0 .. k-1).
    descriptions : DataFrame
        One row per persona: ``persona``, ``n_users``, ``top_genres`` (list, most
        over-represented first) and ``label`` (a short name such as ``"Horror / Thriller"``).
    taste : DataFrame
        The clustered features: user_id × genre, the user's log-lift of each genre.
    """

    assignments: pd.Series
    descriptions: pd.DataFrame
    taste: pd.DataFrame


def genre_matrix(movies: pd.DataFrame) -> pd.DataFrame:
    """item_id × genre 0/1 indicator table from the pipe-separated ``genres`` column
    (``"(no genres listed)"`` gives an all-zero row)."""
    movies = movies.drop_duplicates("item_id")
    flags = movies["genres"].fillna("").astype(str).str.get_dummies(sep="|")
    flags = flags.drop(columns=[NO_GENRE, ""], errors="ignore")
    flags.index = movies["item_id"].to_numpy()
    flags.index.name = "item_id"
    return flags.astype(np.float64)


def _liked_rows(ratings: pd.DataFrame, genres: pd.DataFrame, min_rating: float) -> pd.DataFrame:
    """The ratings that describe a user's taste: their liked items (rating ≥ ``min_rating``),
    or everything they rated if they liked nothing; only items with known genres."""
    known = ratings[ratings["item_id"].isin(genres.index)]
    if known.empty:
        raise ValueError("no rated item appears in movies; pass the movies table of this data set")
    liked = known[known["rating"] >= min_rating]
    rest = known[~known["user_id"].isin(liked["user_id"].unique())]
    return pd.concat([liked, rest])


def genre_share(ratings: pd.DataFrame, movies: pd.DataFrame, min_rating: float = 4.0) -> pd.Series:
    """Population share of each genre among all users' liked items (genre -> share)."""
    genres = genre_matrix(movies)
    chosen = _liked_rows(ratings, genres, min_rating)
    return genres.loc[chosen["item_id"].to_numpy()].mean(axis=0) + 1e-9


def genre_taste(ratings: pd.DataFrame, movies: pd.DataFrame, min_rating: float = 4.0,
                prior: float = 5.0) -> pd.DataFrame:
    """Each user's taste: the log-lift of each genre among the items they liked.

    ``share_u(g)`` is the share of user ``u``'s liked items (rating ≥ ``min_rating``; all of
    their items if they liked none) that carry genre ``g``, smoothed toward the population's
    share ``share(g)`` with ``prior`` pseudo-items; the feature is
    ``log(share_u(g) / share(g))`` — positive when ``u`` likes ``g`` more than average.

    Returns
    -------
    DataFrame user_id × genre.
    """
    if ratings.empty:
        raise ValueError("ratings is empty: no user to describe")
    if ratings["rating"].isna().any():
        raise ValueError("ratings holds NaN ratings; drop them first (ratings.dropna(subset=['rating']))")
    genres = genre_matrix(movies)
    chosen = _liked_rows(ratings, genres, min_rating)
    flags = genres.loc[chosen["item_id"].to_numpy()].to_numpy()
    per_user = pd.DataFrame(flags, columns=genres.columns).groupby(chosen["user_id"].to_numpy())
    counts, n_items = per_user.sum(), per_user.size()
    population = flags.mean(axis=0) + 1e-9
    share = (counts.to_numpy() + prior * population) / (n_items.to_numpy()[:, None] + prior)
    taste = pd.DataFrame(np.log(share / population), index=counts.index, columns=genres.columns)
    taste.index.name = "user_id"
    return taste


def movielens_genre_personas(ratings: pd.DataFrame, movies: pd.DataFrame, k: int = 8, seed: int = 0,
                             min_rating: float = 4.0, n_top_genres: int = 3) -> GenrePersonas:
    """Cluster MovieLens users into ``k`` genre-taste personas (k-means on :func:`genre_taste`).

    Parameters
    ----------
    ratings : DataFrame with user_id, item_id, rating — pass training ratings only, so that
        personas never see held-out data.
    movies : DataFrame with item_id, genres (pipe-separated).
    k : number of personas, 1 ≤ k ≤ number of users.
    seed : k-means seed.
    min_rating : a rating at or above it counts as "liked".
    n_top_genres : genres listed per persona.

    Returns
    -------
    GenrePersonas — personas are numbered by decreasing size.
    """
    from sklearn.cluster import KMeans

    taste = genre_taste(ratings, movies, min_rating=min_rating)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(taste):
        raise ValueError(f"k must be an integer between 1 and the number of users ({len(taste)}), got {k!r}")
    labels = KMeans(n_clusters=int(k), n_init=10, random_state=seed).fit_predict(taste.to_numpy())
    # renumber by decreasing size (ties: smaller original label first) so persona 0 is the biggest
    sizes = np.bincount(labels, minlength=k)
    order = np.lexsort((np.arange(k), -sizes))
    relabel = np.empty(k, dtype=np.int64)
    relabel[order] = np.arange(k)
    labels = relabel[labels]
    assignments = pd.Series(labels, index=taste.index, name="persona")
    # describe a persona by the genres whose share among its users' liked items exceeds the
    # population's share by the most percentage points (log-lift alone would favour rare genres)
    population = genre_share(ratings, movies, min_rating)
    shares = np.exp(taste) * population.to_numpy()
    rows = []
    for persona in range(k):
        excess = (shares[labels == persona].mean(axis=0) - population)
        top = list(excess.sort_values(ascending=False, kind="stable").index[:n_top_genres])
        rows.append({"persona": persona, "n_users": int((labels == persona).sum()),
                     "top_genres": top, "label": " / ".join(top[:2])})
    return GenrePersonas(assignments, pd.DataFrame(rows), taste)


# =========================================================================== PersonaChat personas
# PersonaChat: :func:`personachat_fact_personas` clusters users by the embeddings of their persona
# facts (MiniLM) and describes each cluster by its most central facts; :func:`persona_k_curve`
# shows the trade-off between users per persona and how specific a persona is.
from typing import Sequence  # noqa: E402


def embed_facts(embedder, user_facts: dict) -> dict:
    """``{fact: unit vector}`` for every distinct fact of ``user_facts`` (user -> list of facts),
    encoded once with ``embedder`` (e.g. :func:`p13n_utils.models.load_embedder`)."""
    facts = sorted({f for facts in user_facts.values() for f in facts})
    if not facts:
        raise ValueError("no persona facts to embed")
    vectors = embedder.encode(facts, normalize_embeddings=True, batch_size=64)
    return dict(zip(facts, np.asarray(vectors, dtype=np.float64)))


def unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to unit length (each row of a matrix; a zero vector stays zero)."""
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(norm, 1e-12)


@dataclass
class FactPersonas:
    """The result of :func:`personachat_fact_personas`.

    Attributes
    ----------
    assignments : Series
        user_id -> persona number (0 .. k-1, persona 0 the biggest).
    centroids : ndarray (k, d)
        Unit-norm mean of the member users' vectors.
    facts : DataFrame
        One row per (user, fact): ``user_id``, ``fact``, ``persona``, ``centrality`` (cosine of
        the fact to its persona's centroid).
    fact_vectors : dict
        fact -> unit vector (from :func:`embed_facts`).
    """

    assignments: pd.Series
    centroids: np.ndarray
    facts: pd.DataFrame
    fact_vectors: dict

    @property
    def k(self) -> int:
        return self.centroids.shape[0]

    def describe(self, persona: int, n_facts: int = 4, exclude_users: Sequence = (),
                 max_similarity: float = 0.85) -> list[str]:
        """The ``n_facts`` most central facts of ``persona``, skipping the facts of
        ``exclude_users`` and near-duplicates (cosine above ``max_similarity`` to a fact
        already chosen)."""
        if not 0 <= persona < self.k:
            raise ValueError(f"persona must be in 0..{self.k - 1}, got {persona}")
        pool = self.facts[(self.facts["persona"] == persona) & ~self.facts["user_id"].isin(list(exclude_users))]
        chosen: list[str] = []
        for fact in pool.sort_values(["centrality", "fact"], ascending=[False, True])["fact"]:
            vec = self.fact_vectors[fact]
            if fact in chosen or any(vec @ self.fact_vectors[c] > max_similarity for c in chosen):
                continue
            chosen.append(fact)
            if len(chosen) == n_facts:
                break
        return chosen

    def context_for(self, user_id, n_facts: int = 4) -> list[str]:
        """The persona-level context of a known user: the central facts of their persona,
        **excluding every fact of the user** (otherwise it would be user-level data)."""
        if user_id not in self.assignments.index:
            raise KeyError(f"user {user_id!r} was not clustered; for a new user call "
                           "assign_persona(personas, facts) and describe(...) the result")
        return self.describe(int(self.assignments[user_id]), n_facts, exclude_users=[user_id])

    def descriptions(self, n_facts: int = 4) -> pd.DataFrame:
        """One row per persona: ``persona``, ``n_users``, ``central_facts``."""
        sizes = self.assignments.value_counts()
        return pd.DataFrame([{"persona": p, "n_users": int(sizes.get(p, 0)),
                              "central_facts": self.describe(p, n_facts)} for p in range(self.k)])


def _user_vectors(user_facts: dict, fact_vectors: dict) -> tuple[list, np.ndarray]:
    users = [u for u in user_facts if len(user_facts[u])]
    if not users:
        raise ValueError("no user has persona facts to cluster")
    missing = {f for u in users for f in user_facts[u]} - set(fact_vectors)
    if missing:
        raise KeyError(f"{len(missing)} facts have no vector (e.g. {sorted(missing)[:2]}); "
                       "build fact_vectors with embed_facts on the same user_facts")
    return users, unit(np.stack([np.mean([fact_vectors[f] for f in user_facts[u]], axis=0) for u in users]))


def personachat_fact_personas(user_facts: dict, fact_vectors: dict, k: int = 10, seed: int = 0) -> FactPersonas:
    """Cluster users into ``k`` personas by their facts (k-means on the unit-norm mean of each
    user's fact embeddings) and rank every fact by its centrality in its persona.

    Parameters
    ----------
    user_facts : dict
        user_id -> list of persona facts (e.g. ``PersonaChatEval.user_facts``). Users without
        facts are left out (cold start: see :func:`assign_persona`).
    fact_vectors : dict
        From :func:`embed_facts`.
    k : int, 1 <= k <= number of users with facts.
    seed : int

    Returns
    -------
    FactPersonas
    """
    from sklearn.cluster import KMeans

    users, vectors = _user_vectors(user_facts, fact_vectors)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(users):
        raise ValueError(f"k must be an integer between 1 and the number of users ({len(users)}), got {k!r}")
    labels = KMeans(n_clusters=int(k), n_init=10, random_state=seed).fit_predict(vectors)
    sizes = np.bincount(labels, minlength=k)
    relabel = np.empty(k, dtype=np.int64)
    relabel[np.lexsort((np.arange(k), -sizes))] = np.arange(k)
    labels = relabel[labels]
    centroids = unit(np.stack([vectors[labels == p].mean(axis=0) for p in range(k)]))
    rows = [(u, f, int(p)) for u, p in zip(users, labels) for f in user_facts[u]]
    facts = pd.DataFrame(rows, columns=["user_id", "fact", "persona"])
    facts["centrality"] = [float(fact_vectors[f] @ centroids[p]) for f, p in zip(facts["fact"], facts["persona"])]
    return FactPersonas(pd.Series(labels, index=users, name="persona"), centroids, facts, fact_vectors)


def assign_persona(personas: FactPersonas, facts: Sequence[str], embedder=None) -> int:
    """The persona of a (possibly new) user from their facts: the nearest centroid; ``-1`` for
    a user without facts (cold start: serve the global prompt). Facts unknown to
    ``personas.fact_vectors`` need ``embedder``."""
    facts = [f for f in facts if str(f).strip()]
    if not facts:
        return -1
    unknown = [f for f in facts if f not in personas.fact_vectors]
    if unknown and embedder is None:
        raise ValueError(f"{len(unknown)} facts are new; pass the embedder to encode them")
    extra = dict(zip(unknown, embedder.encode(unknown, normalize_embeddings=True))) if unknown else {}
    vector = unit(np.mean([personas.fact_vectors.get(f, extra.get(f)) for f in facts], axis=0))
    return int(np.argmax(personas.centroids @ vector))


def persona_k_curve(user_facts: dict, fact_vectors: dict, ks: Sequence[int], user_targets: dict | None = None,
                    n_facts: int = 4, seed: int = 0) -> pd.DataFrame:
    """The persona trade-off over ``k``: fewer users per persona vs more specific personas.

    For each ``k`` users are clustered with :func:`personachat_fact_personas`, and each user's
    persona description is :meth:`FactPersonas.context_for` (their own facts excluded). Columns:

    * ``users_per_persona`` (mean) and ``min_users`` (smallest persona): how many users each
      description pools — the data behind it, and how identifying it is;
    * ``specificity``: mean over users of the cosine between the centroid of their
      description and the centroid of their own facts;
    * ``target_fit`` and ``target_lift`` (with ``user_targets``: user -> 2-d array of unit
      vectors of the user's *validation* texts, never test): the mean cosine of the texts to
      the user's description, and the same minus the mean cosine to the other users'
      descriptions (how much better the user's own persona fits than someone else's);
      ``target_lift_se`` is its standard error over users;
    * ``fallback_users``: users whose description is empty (alone in their persona: they get
      the global prompt);
    * ``silhouette``: cosine silhouette of the clustering (NaN for k=1).

    Returns
    -------
    DataFrame, one row per k.
    """
    from sklearn.metrics import silhouette_score

    users, vectors = _user_vectors(user_facts, fact_vectors)
    rows = []
    for k in ks:
        personas = personachat_fact_personas(user_facts, fact_vectors, k=k, seed=seed)
        descriptions = [personas.context_for(u, n_facts) for u in users]
        centroids = np.stack([unit(np.mean([fact_vectors[f] for f in d], axis=0)) if d
                              else np.zeros(vectors.shape[1]) for d in descriptions])
        has = np.array([bool(d) for d in descriptions])
        spec = (centroids * vectors).sum(axis=1)[has]
        lifts, fits = [], []
        for i, user in enumerate(users):
            texts = None if user_targets is None else user_targets.get(user)
            if not has[i] or texts is None or len(texts) == 0:
                continue
            sims = np.asarray(texts) @ centroids[has].T          # (n_texts, users with a description)
            own = int(np.flatnonzero(np.flatnonzero(has) == i)[0])
            fits.append(sims[:, own].mean())
            lifts.append(sims[:, own].mean() - np.delete(sims, own, axis=1).mean())
        sizes = personas.assignments.value_counts()
        labels = personas.assignments.reindex(users).to_numpy()
        rows.append({
            "k": int(k), "users_per_persona": float(sizes.mean()), "min_users": int(sizes.min()),
            "specificity": float(spec.mean()) if spec.size else np.nan,
            "target_fit": float(np.mean(fits)) if fits else np.nan,
            "target_lift": float(np.mean(lifts)) if lifts else np.nan,
            "target_lift_se": float(np.std(lifts, ddof=1) / np.sqrt(len(lifts))) if len(lifts) > 1 else np.nan,
            "fallback_users": int((~has).sum()),
            "silhouette": float(silhouette_score(vectors, labels, metric="cosine")) if 1 < k < len(users) else np.nan,
        })
    return pd.DataFrame(rows)


def choose_k_min_users(curve: pd.DataFrame, min_users: int) -> int:
    """The finest persona granularity (largest ``k``) whose smallest persona still pools at least
    ``min_users`` users: the largest ``k`` of ``curve`` (from :func:`persona_k_curve` or any
    table with ``k`` and ``min_users``) with ``min_users >= min_users``.

    A persona shared by fewer users is close to a description of individuals — it needs their
    data and can identify them (the k-anonymity argument) — which is the user level's job.
    The largest qualifying ``k`` is not necessarily the most *specific* one: compare the curve's
    specificity or validation lift to pick by measurement."""
    ok = curve[curve["min_users"] >= min_users]
    if ok.empty:
        raise ValueError(f"no k in the curve keeps every persona at >= {min_users} users; "
                         "add smaller k values (k=1 always qualifies) or lower min_users")
    return int(ok["k"].max())


__all__ += ["embed_facts", "FactPersonas", "personachat_fact_personas", "assign_persona",
            "persona_k_curve", "choose_k_min_users"]
