"""Notebook 12: personalize for yourself. A learner types a few facts about themselves, rates a
few movies and writes a message; every rung of the ladder answers them side by side.

The pieces, in the order a round uses them:

1. Validation of the learner's input (:func:`parse_facts`, :func:`parse_ratings`,
   :func:`parse_message`): every problem raises :class:`InputError` with a sentence the page
   shows as it is (no traceback).
2. :func:`build_world` — what is learned once from other people: PersonaChat fact personas
   (:mod:`p13n_utils.personas`), MovieLens popularity, genre personas and implicit ALS
   (:mod:`p13n_utils.recsys`), the movie embeddings and the LM.
3. The reply ladder (:func:`reply_contexts`, :func:`reply_ladder`): global (no context),
   persona (the central facts of the persona nearest to the learner's facts), user (all own facts
   in the prompt) and user-RAG (the own facts a retriever picks for the message), with the
   log-probability of every reply under every prompt.
4. The recommendation ladder (:func:`recommendation_ladder`): popularity, persona popularity
   (the genre persona nearest to the learner's ratings), ALS with the learner folded in
   (:func:`fold_in_user`: one exact ALS user step against the fitted item factors, no refit),
   content embedding and an LM-written taste profile; each list names the learner's titles that
   drove it.
5. :func:`play_round` runs 3 and 4 and times them; the widgets of
   :mod:`p13n_utils.own_user_app` only call it.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import coldstart, generation, personas, prompts, recsys, retrieval

__all__ = [
    "InputError", "ROUND_TARGET_S", "MIN_STARS", "MAX_STARS", "MAX_FACT_CHARS", "MAX_FACTS", "MAX_MESSAGE_CHARS", "LEVELS",
    "RECOMMENDERS", "movie_labels", "search_titles", "parse_facts", "parse_ratings", "parse_message",
    "fold_in_user", "fold_in_contributions", "genre_persona_of", "World", "build_world", "reply_contexts",
    "reply_ladder", "what_changed", "recommendation_ladder", "RoundResult", "play_round",
]

MIN_STARS, MAX_STARS = 0.5, 5.0  # MovieLens' scale (half stars)
MAX_FACT_CHARS = 300  # a persona fact is one sentence; PersonaChat's are far shorter
MAX_FACTS = 20
MAX_MESSAGE_CHARS = 500
ROUND_TARGET_S = 20  # one round must stay interactive on a 2-core CPU (measured in notebook 12)

LEVELS = ("global", "persona", "user", "user_rag")
"""The reply ladder's prompts: no context; the nearest persona's central facts; all of the
learner's facts; the facts retrieved for the message."""

RECOMMENDERS = ("popularity", "persona_popularity", "als_fold_in", "content_embed", "llm_profile")


class InputError(ValueError):
    """Something the learner typed cannot be used; the message says what to change."""


# =========================================================================== input
def movie_labels(movies: pd.DataFrame) -> pd.Series:
    """``"Title (year)"`` of every movie (the picker's options), indexed by ``item_id``."""
    year = movies["year"].astype("Int64").astype(str).where(movies["year"].notna(), "")
    labels = movies["title"].astype(str) + np.where(year != "", " (" + year + ")", "")
    return pd.Series(labels.to_numpy(), index=movies["item_id"].to_numpy(), name="label")


def search_titles(labels: pd.Series, query: str, n: int = 10) -> list[str]:
    """Up to ``n`` labels containing ``query`` (case-insensitive), then close spellings."""
    query = str(query).strip().lower()
    if not query:
        return []
    hits = [label for label in labels if query in label.lower()]
    if len(hits) < n:
        lower = {label.lower(): label for label in labels}
        hits += [lower[m] for m in difflib.get_close_matches(query, list(lower), n=n, cutoff=0.7)
                 if lower[m] not in hits]
    return hits[:n]


def parse_facts(facts: str | Sequence[str]) -> list[str]:
    """The learner's facts, one per line (or a list), stripped; blank lines dropped.

    Raises :class:`InputError` for no facts, more than :data:`MAX_FACTS`, or a fact longer than
    :data:`MAX_FACT_CHARS` characters."""
    lines = str(facts).splitlines() if isinstance(facts, str) else [str(f) for f in facts]
    lines = [line.strip().lstrip("-•* ").strip() for line in lines]
    lines = [line for line in lines if line]
    if not lines:
        raise InputError("Add at least one fact about yourself (one per line), e.g. 'I love hiking.'")
    if len(lines) > MAX_FACTS:
        raise InputError(f"{len(lines)} facts: keep at most {MAX_FACTS}, the most telling ones.")
    for line in lines:
        if len(line) > MAX_FACT_CHARS:
            raise InputError(f"A fact has {len(line):,} characters; keep each fact under {MAX_FACT_CHARS} "
                             f"(one sentence). It starts: '{line[:40]}…'")
    return lines


def _stars(value, label: str) -> float:
    try:
        stars = float(value)
    except (TypeError, ValueError):
        raise InputError(f"The rating of '{label}' is {value!r}, not a number of stars "
                         f"({MIN_STARS}–{MAX_STARS}).") from None
    if not np.isfinite(stars) or not MIN_STARS <= stars <= MAX_STARS:
        raise InputError(f"The rating of '{label}' is {value}; ratings go from {MIN_STARS} to {MAX_STARS} stars.")
    return stars


def _rating_pairs(ratings) -> list[tuple[str, object]]:
    if isinstance(ratings, Mapping):
        return [(str(t), r) for t, r in ratings.items()]
    if isinstance(ratings, str):  # "Title (year) = 4.5", one per line
        pairs = []
        for line in ratings.splitlines():
            if not line.strip():
                continue
            title, sep, stars = line.rpartition("=")
            if not sep:
                raise InputError(f"Write each rating as 'Title (year) = stars'; got '{line.strip()[:60]}'.")
            pairs.append((title.strip(), stars.strip()))
        return pairs
    return [(str(t), r) for t, r in ratings]


def parse_ratings(ratings, labels: pd.Series) -> pd.DataFrame:
    """The learner's ratings matched to the catalog: DataFrame ``item_id, label, rating``.

    Parameters
    ----------
    ratings : dict ``{title: stars}``, list of (title, stars) pairs, or text with one
        ``Title (year) = stars`` per line. A title matches a label of :func:`movie_labels`
        exactly (case-insensitive), or its title without the year when only one movie has it.
    labels : from :func:`movie_labels`.

    Raises :class:`InputError` for no ratings, an unknown or ambiguous title (with suggestions)
    or a rating outside :data:`MIN_STARS`–:data:`MAX_STARS`. A title rated twice keeps the last.
    """
    pairs = _rating_pairs(ratings)
    if not pairs:
        raise InputError("Rate at least one movie (search a title, pick its stars, press Add).")
    by_label = {label.lower(): item for item, label in labels.items()}
    bare = pd.Series(labels.index, index=labels.str.replace(r" \(\d{4}\)$", "", regex=True).str.lower())
    rows = []
    for title, value in pairs:
        key = title.strip().lower()
        item = by_label.get(key)
        if item is None and key in bare.index:
            matches = bare.loc[[key]]
            if len(matches) > 1:
                raise InputError(f"'{title}' is several movies: " + "; ".join(labels[m] for m in matches) +
                                 ". Add the year.")
            item = matches.iloc[0]
        if item is None:
            close = search_titles(labels, title, n=3)
            hint = f" Did you mean: {'; '.join(close)}?" if close else " Search the catalog with the picker."
            raise InputError(f"No movie '{title}' in the catalog.{hint}")
        rows.append({"item_id": item, "label": labels[item], "rating": _stars(value, labels[item])})
    return pd.DataFrame(rows).drop_duplicates("item_id", keep="last").reset_index(drop=True)


def parse_message(message: str) -> str:
    """The learner's message to the chatbot, stripped; :class:`InputError` if blank or too long."""
    message = str(message or "").strip()
    if not message:
        raise InputError("Write a message to the chatbot, e.g. 'What do you do on weekends?'")
    if len(message) > MAX_MESSAGE_CHARS:
        raise InputError(f"The message has {len(message):,} characters; keep it under {MAX_MESSAGE_CHARS}.")
    return message


# =========================================================================== ALS fold-in
def fold_in_user(item_factors: np.ndarray, items: Sequence[int], regularization: float,
                 alpha: float) -> np.ndarray:
    """A new user's ALS factors from the items they interacted with, the item factors fixed:
    :func:`p13n_utils.coldstart.als_fold_in` (one exact user step of implicit ALS), for a
    learner who must have rated something (no items: ValueError instead of the zero vector).

    Returns
    -------
    ndarray (f,)
    """
    if len(np.unique(np.asarray(items, dtype=np.int64))) == 0:
        raise ValueError("the user has no items: fold-in needs at least one interaction")
    return coldstart.als_fold_in(item_factors, items, regularization, alpha)


def fold_in_contributions(item_factors: np.ndarray, items: Sequence[int], targets: Sequence[int],
                          regularization: float, alpha: float) -> np.ndarray:
    """How much each of the user's items adds to the folded-in score of each target item.

    The fold-in is linear in its right-hand side, so the score ``y_t · x_u`` splits exactly
    into one term per interacted item ``i``: ``alpha · y_tᵀ A⁻¹ y_i`` (A as in
    :func:`fold_in_user`). Returns ndarray (len(targets), len(unique items)), the items in
    sorted order; each row sums to the target's score."""
    Y = np.asarray(item_factors, dtype=np.float64)
    items = np.unique(np.asarray(items, dtype=np.int64))
    Yu = Y[items]
    A = Y.T @ Y + regularization * np.eye(Y.shape[1]) + (alpha - 1.0) * Yu.T @ Yu
    return alpha * Y[np.asarray(targets, dtype=np.int64)] @ np.linalg.solve(A, Yu.T)


# =========================================================================== personas of a new user
def genre_persona_of(found: personas.GenrePersonas, population: pd.DataFrame, movies: pd.DataFrame,
                     learner: pd.DataFrame) -> int:
    """The genre persona nearest to a new user's ratings (``item_id, rating``): their genre
    taste computed with the population's shares (:func:`p13n_utils.personas.genre_taste` on the
    population plus the learner), then the nearest persona centroid of the clustered tastes."""
    new_id = -1 if population["user_id"].min() > -1 else population["user_id"].min() - 1
    both = pd.concat([population[["user_id", "item_id", "rating"]],
                      learner[["item_id", "rating"]].assign(user_id=new_id)], ignore_index=True)
    taste = personas.genre_taste(both, movies)
    centroids = found.taste.groupby(found.assignments.reindex(found.taste.index)).mean()
    mine = taste.loc[new_id, centroids.columns].to_numpy(dtype=np.float64)
    return int(centroids.index[np.argmin(((centroids.to_numpy() - mine) ** 2).sum(axis=1))])


# =========================================================================== the world
@dataclass
class World:
    """What is learned once from other people; a round only reads it.

    Attributes
    ----------
    model, tokenizer : the LM (:func:`p13n_utils.models.load_lm`).
    embed : function texts -> unit-norm vectors (n, d) (:func:`p13n_utils.cache.embed`).
    fact_personas : PersonaChat personas (:func:`p13n_utils.personas.personachat_fact_personas`).
    movies : the catalog (``item_id, title, year, genres``), one row per matrix column.
    labels : ``"Title (year)"`` per item id (:func:`movie_labels`).
    ratings : the population's ratings (``user_id, item_id, rating``).
    interactions : the population's matrix (:class:`p13n_utils.recsys.Interactions`).
    popularity, segment_popularity, als : fitted recommenders.
    genre_personas : :class:`p13n_utils.personas.GenrePersonas` of the population.
    item_vectors : ndarray (n_items, d), embeddings of the item texts.
    settings : knobs of a round (``n_facts``, ``rag_k``, ``max_new_tokens`` of each reply and of the
        taste profile, ``k``).
    """

    model: object
    tokenizer: object
    embed: Callable
    fact_personas: personas.FactPersonas
    movies: pd.DataFrame
    labels: pd.Series
    ratings: pd.DataFrame
    interactions: recsys.Interactions
    popularity: recsys.PopularityRecommender
    genre_personas: personas.GenrePersonas
    segment_popularity: recsys.SegmentPopularityRecommender
    als: recsys.ImplicitALS
    item_vectors: np.ndarray
    settings: dict = field(default_factory=dict)


def build_world(cfg, model=None, tokenizer=None, embed: Callable | None = None, user_facts: dict | None = None,
                ml=None, item_texts: Sequence[str] | None = None, with_lm: bool = True) -> World:
    """Load the data and models of a run size (``cfg`` from ``config.setup``) and fit what the
    ladder needs. Every argument after ``cfg`` replaces a default (tests pass tiny ones):
    ``model``/``tokenizer`` (default ``models.load_lm(dtype=cfg["lm.dtype"])``), ``embed``
    (default :func:`p13n_utils.cache.embed`), ``user_facts`` (PersonaChat users' facts),
    ``ml`` (a :class:`p13n_utils.data.MovieLens`) and ``item_texts`` (one text per movie).
    ``with_lm=False`` loads no LM (the recommenders without ``llm_profile`` need none)."""
    from . import cache, data, models, tasks

    if with_lm and (model is None or tokenizer is None):
        model, tokenizer = models.load_lm(dtype=cfg["lm.dtype"])
    embed = embed or cache.embed
    if user_facts is None:
        user_facts = tasks.personachat_eval_set(data.load_personachat("valid"), n_users=None).user_facts
    fact_vectors = dict(zip(sorted({f for fs in user_facts.values() for f in fs}),
                            np.asarray(embed(sorted({f for fs in user_facts.values() for f in fs})), dtype=np.float64)))
    fact_personas = personas.personachat_fact_personas(user_facts, fact_vectors, k=cfg["p12.pc_k"], seed=cfg.seed)

    ml = ml or data.load_movielens("latest-small")
    ratings = recsys.subsample(ml.ratings, n_items=cfg["p12.n_items"], seed=cfg.seed)
    movies = ml.movies[ml.movies["item_id"].isin(set(ratings["item_id"]))].sort_values("item_id").reset_index(drop=True)
    interactions = recsys.Interactions.from_ratings(ratings, item_ids=movies["item_id"])
    genre_found = personas.movielens_genre_personas(ratings, movies, k=cfg["p12.ml_k"], seed=cfg.seed)
    segments = genre_found.assignments.reindex(interactions.user_ids).fillna(-1).astype(int).to_numpy()
    texts = list(item_texts) if item_texts is not None else recsys.item_texts(movies, movies["item_id"])
    return World(
        model=model, tokenizer=tokenizer, embed=embed, fact_personas=fact_personas, movies=movies,
        labels=movie_labels(movies), ratings=ratings, interactions=interactions,
        popularity=recsys.PopularityRecommender().fit(interactions),
        genre_personas=genre_found,
        segment_popularity=recsys.SegmentPopularityRecommender(segments).fit(interactions),
        als=recsys.ImplicitALS(iterations=cfg["rec.als_iterations"], seed=cfg.seed, use_gpu=False).fit(interactions),
        item_vectors=np.asarray(embed(texts), dtype=np.float32),
        settings={"n_facts": cfg["personas.n_facts"], "rag_k": cfg["p12.rag_k"], "k": cfg["tasks.topk_k"],
                  "max_new_tokens": cfg["p12.max_new_tokens"],
                  "batch_size": cfg["lm.batch_size"], "seed": cfg.seed})


# =========================================================================== replies
def _words(text: str) -> set[str]:
    return set(retrieval.tokenize(text))


def reply_contexts(world: World, facts: Sequence[str], message: str) -> dict:
    """The context of each level of :data:`LEVELS`: ``{level: {"context", "header", "note"}}``.

    ``persona``: the central facts of the PersonaChat persona nearest to the mean embedding of
    the learner's facts (:func:`p13n_utils.personas.assign_persona`); ``user_rag``: the facts a
    dense retriever ranks highest for the message (:func:`p13n_utils.retrieval.retrieve`)."""
    fp = world.fact_personas
    vectors = np.asarray(world.embed(list(facts)), dtype=np.float64)
    persona = int(np.argmax(fp.centroids @ personas.unit(vectors.mean(axis=0))))
    central = fp.describe(persona, world.settings["n_facts"])
    members = (fp.facts[fp.facts["persona"] == persona].sort_values(["centrality", "fact"], ascending=[False, True])
               .drop_duplicates("fact")["fact"].head(12).tolist())  # for the explain view
    cache = retrieval.EmbeddingCache(lambda texts: np.asarray(world.embed(texts)))
    picked = retrieval.retrieve("dense", message, list(facts), world.settings["rag_k"], embeddings=cache)
    return {
        "global": {"context": None, "header": prompts.HEADERS["user"], "note": "no context: the same for everyone"},
        "persona": {"context": central, "header": prompts.HEADERS["persona"], "persona": persona,
                    "n_users": int((fp.assignments == persona).sum()), "members": members,
                    "note": f"the {len(central)} central facts of persona {persona} (nearest to your facts)"},
        "user": {"context": list(facts), "header": prompts.HEADERS["user"],
                 "note": f"all {len(facts)} of your facts"},
        "user_rag": {"context": [facts[i] for i in picked], "header": prompts.HEADERS["user"], "retrieved": picked,
                     "note": f"the {len(picked)} of your facts a dense retriever picked for your message"},
    }


def logprob_matrix(model, tokenizer, prompt_texts: Sequence[str], replies: Sequence[str]) -> np.ndarray:
    """``out[i, j] = log p(replies[j] | prompt_texts[i])``, summed over the reply's tokens (nats).

    The same numbers as :func:`p13n_utils.generation.score` on every (prompt, reply) pair (prompt
    tokenized with special tokens, reply without), at a fraction of the cost: each prompt is
    encoded once and its key/value cache reused for all the replies (as
    :func:`p13n_utils.recsys_llm.next_token_shared_prefix` does for one next token)."""
    import copy

    import torch

    pad = generation.pad_id(tokenizer)
    device = next(model.parameters()).device
    reply_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in replies]
    if any(not ids for ids in reply_ids):
        raise ValueError("every reply needs at least one token")
    width = max(len(ids) for ids in reply_ids)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in reply_ids], device=device)  # right padding
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in reply_ids], device=device)
    out = np.zeros((len(prompt_texts), len(replies)))
    with generation._inference(model):
        for i, prompt in enumerate(prompt_texts):
            prompt_ids = tokenizer(prompt, add_special_tokens=True, return_tensors="pt")["input_ids"].to(device)
            n = prompt_ids.shape[1]
            first = model(input_ids=prompt_ids, use_cache=True)
            cache = copy.deepcopy(first.cache)
            cache.batch_repeat_interleave(len(replies))
            logits = model(input_ids=ids, attention_mask=torch.cat([torch.ones(len(replies), n, dtype=mask.dtype,
                                                                                device=device), mask], dim=1),
                           position_ids=n + torch.arange(width, device=device)[None, :].expand(len(replies), -1),
                           cache=cache, use_cache=True).logits
            # the prompt's last position predicts each reply's first token; reply position t the next one
            logits = torch.cat([first.logits[:, -1:].expand(len(replies), -1, -1), logits[:, :-1]], dim=1)
            token_lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
            out[i] = (token_lp.double() * mask).sum(dim=1).cpu().numpy()
    return out


__all__ += ["logprob_matrix"]


def reply_ladder(world: World, contexts: dict, message: str, learner: pd.DataFrame | None = None,
                 progress: Callable[[str, float], None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    """One greedy reply per level and the log-probability of every reply under every level.

    With ``learner`` (their ratings), the LM also writes their taste profile
    (:func:`taste_profile_prompt`) in the same batch: decoding on a CPU is memory-bound, so a
    fifth prompt costs almost nothing.

    Returns
    -------
    replies : DataFrame, one row per level: ``level, context, reply``.
    logprobs : DataFrame levels × levels: ``logprobs.loc[prompt, reply]`` is log p(reply of
        level ``reply`` | prompt of level ``prompt``), summed over the reply's tokens (nats).
    profile : the taste profile, or None without ``learner``.

    ``progress(step, fraction)``, if given, is told when the scoring starts (after the generation).
    """
    tok, s = world.tokenizer, world.settings
    prompt_of = {level: prompts.personachat_prompt(tok, message, context=c["context"], header=c["header"])
                 for level, c in contexts.items()}
    levels = list(prompt_of)
    extra = [] if learner is None else [taste_profile_prompt(tok, learner)]
    texts = generation.generate(world.model, tok, [prompt_of[lv] for lv in levels] + extra,
                                max_new_tokens=s["max_new_tokens"], batch_size=s["batch_size"], progress=False)
    texts = [t.strip() or "…" for t in texts]
    profile = texts.pop() if extra else None
    if progress is not None:
        progress("log-probabilities of every reply under every prompt", 0.6)
    logprobs = pd.DataFrame(logprob_matrix(world.model, tok, [prompt_of[lv] for lv in levels], texts),
                            index=pd.Index(levels, name="prompt"), columns=pd.Index(levels, name="reply"))
    replies = pd.DataFrame({"level": levels, "context": [contexts[lv]["note"] for lv in levels], "reply": texts})
    return replies, logprobs, profile


def what_changed(replies: pd.DataFrame, logprobs: pd.DataFrame, contexts: dict) -> dict:
    """One line per level: which words of its context the reply took up, and how much more (or
    less) likely its prompt makes its own reply than the global prompt does."""
    lines = {}
    by_level = replies.set_index("level")["reply"]
    for level in by_level.index:
        if level == "global":
            lines[level] = "No context: the model's most likely reply to anyone who sends this message."
            continue
        context = contexts[level]["context"] or []
        taken = sorted(_words(by_level[level]) & set().union(*[_words(c) for c in context])) if context else []
        gain = logprobs.loc[level, level] - logprobs.loc["global", level]
        same = by_level[level] == by_level["global"]
        lines[level] = ((f"Same reply as global. " if same else "") +
                        (f"Took up from its context: {', '.join(taken[:6])}. " if taken else
                         "Took up no word of its context. ") +
                        f"Its prompt makes this reply {gain:+.1f} nats more likely than the global prompt does.")
    return lines


# =========================================================================== recommendations
def _top(scores: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).copy()
    scores[seen] = -np.inf
    return np.argsort(-scores, kind="stable")[:k]


def _list_frame(world: World, cols: np.ndarray, because: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({"rank": np.arange(1, len(cols) + 1), "title": world.labels.iloc[cols].to_numpy(),
                         "because": list(because)})


def _persona_list(world: World, learner: pd.DataFrame, cols: np.ndarray, k: int) -> tuple[pd.DataFrame, int]:
    """Persona popularity for the genre persona nearest to the learner; each item's driver is
    the learner's best-rated title sharing one of the persona's top genres with it."""
    persona = genre_persona_of(world.genre_personas, world.ratings, world.movies, learner)
    top = _top(world.segment_popularity.segment_scores_[persona], cols, k)
    top_genres = set(world.genre_personas.descriptions.set_index("persona").loc[persona, "top_genres"])
    genres = world.movies["genres"].str.split("|")  # one row per matrix column
    best_first = np.argsort(-learner["rating"].to_numpy(), kind="stable")
    because = []
    for col in top:
        wanted = set(genres.iloc[col]) & top_genres
        match = [i for i in best_first if wanted & set(genres.iloc[cols[i]])]
        because.append(learner["label"].iloc[match[0]] if match else "your persona")
    return _list_frame(world, top, because), persona


def _als_list(world: World, learner: pd.DataFrame, cols: np.ndarray, k: int) -> tuple[pd.DataFrame, list]:
    """ALS with the learner folded in (the movies rated 4 stars or more; all of them if none);
    each item's driver is the liked movie with the largest share of its score."""
    als = world.als
    ratings = learner["rating"].to_numpy()
    liked = np.unique(cols[ratings >= 4.0] if (ratings >= 4.0).any() else cols)
    reg, alpha = als.params["regularization"], als.params["alpha"]
    top = _top(als.item_factors_ @ fold_in_user(als.item_factors_, liked, reg, alpha), cols, k)
    shares = fold_in_contributions(als.item_factors_, liked, top, reg, alpha)  # columns follow `liked`
    label_of = dict(zip(cols, learner["label"]))
    return (_list_frame(world, top, [label_of[liked[j]] for j in shares.argmax(axis=1)]),
            [label_of[liked[j]] for j in np.argsort(-shares.sum(axis=0))])


def _content_list(world: World, learner: pd.DataFrame, cols: np.ndarray, k: int) -> tuple[pd.DataFrame, list]:
    """Content embedding (:class:`p13n_utils.recsys.ContentRecommender` on the learner's one-row
    matrix); each item's driver is the rated movie with the largest term of its score."""
    ratings = learner["rating"].to_numpy(dtype=np.float64)
    row = sp.csr_matrix((ratings.astype(np.float32), (np.zeros(len(cols), dtype=np.int64), cols)),
                        shape=(1, world.interactions.n_items))
    weighting = "liked" if (ratings >= 4.0).any() else "centered" if len(set(ratings)) > 1 else "uniform"
    content = recsys.ContentRecommender(world.item_vectors, weighting=weighting).fit(row)
    top = _top(content.score([0])[0], cols, k)
    weights = {"liked": (ratings >= 4.0).astype(float), "centered": ratings - ratings.mean(),
               "uniform": np.ones_like(ratings)}[weighting]
    emb = content.item_embeddings
    terms = (emb[top] @ emb[cols].T) * weights[None, :]  # the user vector is sum_j w_j e_j
    return (_list_frame(world, top, learner["label"].iloc[terms.argmax(axis=1)].tolist()),
            learner["label"].iloc[np.argsort(-terms.sum(axis=0))].tolist())


def _profile_list(world: World, learner: pd.DataFrame, cols: np.ndarray, k: int,
                  profile: str) -> tuple[pd.DataFrame, list]:
    """The movies closest to the embedded taste profile; each item's driver is the nearest of
    the learner's five best-rated movies (those the profile was written from)."""
    emb = world.item_vectors / np.maximum(np.linalg.norm(world.item_vectors, axis=1, keepdims=True), 1e-12)
    top = _top(emb @ np.asarray(world.embed([profile]), dtype=np.float32)[0], cols, k)
    best = np.argsort(-learner["rating"].to_numpy(), kind="stable")[:5]
    nearest = (emb[top] @ emb[cols[best]].T).argmax(axis=1)
    labels = learner["label"].iloc[best]
    return _list_frame(world, top, labels.iloc[nearest].tolist()), labels.tolist()


def recommendation_ladder(world: World, learner: pd.DataFrame, profile: str | None = None) -> dict:
    """Top-k lists of :data:`RECOMMENDERS` for a learner's ratings (``item_id, label, rating``).

    Each list is a DataFrame ``rank, title, because`` (the learner's title that contributed most
    to that item's score; "everyone" for popularity); the movies the learner rated are never
    recommended. ``llm_profile`` needs ``profile`` (:func:`taste_profile_prompt`). The dict also
    holds ``"persona"`` (the genre persona's number, label and top genres), ``"profile"`` and
    ``"drivers"`` (per method, the learner's titles in order of their total contribution)."""
    k = min(world.settings["k"], world.interactions.n_items - len(learner))
    if k < 1:
        raise InputError("You rated every movie of the catalog: nothing is left to recommend.")
    cols = world.interactions.item_cols(learner["item_id"])
    pop = _top(world.popularity.item_counts_, cols, k)
    out = {"popularity": _list_frame(world, pop, ["everyone (most rated)"] * len(pop))}
    out["persona_popularity"], persona = _persona_list(world, learner, cols, k)
    drivers = {}
    out["als_fold_in"], drivers["als_fold_in"] = _als_list(world, learner, cols, k)
    out["content_embed"], drivers["content_embed"] = _content_list(world, learner, cols, k)
    if profile is not None:
        out["llm_profile"], drivers["llm_profile"] = _profile_list(world, learner, cols, k, profile)
    desc = world.genre_personas.descriptions.set_index("persona").loc[persona]
    out["persona"] = {"number": persona, "label": desc["label"], "top_genres": list(desc["top_genres"])}
    out["profile"], out["drivers"] = profile, drivers
    return out


def taste_profile_prompt(tokenizer, learner: pd.DataFrame) -> str:
    """The prompt asking the LM for a one-sentence description of the learner's taste from their
    best-rated titles (:func:`p13n_utils.prompts.profile_prompts`, as notebook 08's
    ``llm_profile``): those rated 4 stars or more, else their best ones."""
    best = learner.sort_values("rating", ascending=False, kind="stable")
    titles = best.loc[best["rating"] >= 4.0, "label"].head(8).tolist() or best["label"].head(8).tolist()
    return prompts.profile_prompts(tokenizer, [titles])[0]


__all__ += ["taste_profile_prompt"]


# =========================================================================== one round
@dataclass
class RoundResult:
    """Everything a round shows. ``seconds`` holds the time of each step and ``total``."""

    facts: list
    ratings: pd.DataFrame
    message: str
    contexts: dict
    replies: pd.DataFrame
    logprobs: pd.DataFrame
    changes: dict
    recommendations: dict
    seconds: dict


def play_round(world: World, facts, ratings, message, progress: Callable[[str, float], None] | None = None
               ) -> RoundResult:
    """Validate the learner's input, then run the reply and recommendation ladders.

    ``progress(step, fraction)`` is called before each step (the page's progress bar). Raises
    :class:`InputError` (and nothing has been computed) when the input cannot be used."""
    report = progress or (lambda step, fraction: None)
    facts = parse_facts(facts)
    learner = parse_ratings(ratings, world.labels)
    message = parse_message(message)
    seconds, start = {}, time.perf_counter()

    def step(name, fraction, fn):
        report(name, fraction)
        t0 = time.perf_counter()
        value = fn()
        seconds[name] = time.perf_counter() - t0
        return value

    contexts = step("persona and retrieval", 0.05, lambda: reply_contexts(world, facts, message))
    replies, logprobs, profile = step("replies, profile and log-probabilities", 0.15,
                                      lambda: reply_ladder(world, contexts, message, learner, progress=report))
    recs = step("recommendations", 0.9, lambda: recommendation_ladder(world, learner, profile))
    report("done", 1.0)
    seconds["total"] = time.perf_counter() - start
    return RoundResult(facts, learner, message, contexts, replies, logprobs,
                       what_changed(replies, logprobs, contexts), recs, seconds)

