"""A third direct task, LaMP-2 style: which tag does this user give this movie? (notebook 09)

LaMP-2 (Salemi et al. 2023, arXiv 2304.11406) asks a model for the tag a user gives a movie,
from a fixed list of candidate tags, with the user's earlier (movie, tag) pairs as their profile.
MovieLens latest-small ships its own tag assignments (``tags.csv``: user, movie, free-text tag,
time), so the same task can be built from data the series already has:

* :func:`tag_eval_set` — a fixed **candidate set**, as LaMP-2 fixes 15 tags: the ``n_candidates``
  tags (lower-cased) used by the most distinct users in ``tags.csv`` (ties: alphabetical). Only
  assignments of a candidate tag are a labelled example (``n_labelled`` of all assignments); users
  with at least ``min_tags`` of them are evaluated, on their **latest** ``n_test_per_user``
  (by time). Everything else, other tags included, is history.
* the ladder of methods, each returning one candidate per held-out assignment:
  **global** (:func:`global_tags`: the movie's most frequent candidate tag among *other* users,
  else the overall most frequent), **persona** (:func:`persona_tags`: the same within the user's
  genre persona, :func:`p13n_utils.personas.movielens_genre_personas`, else global), **user**
  (:func:`user_tags`: the user's own most frequent candidate tag, else global; and
  :func:`lm_tags`: the LM picks among the candidates listed in its prompt, by the probability of
  each candidate's first token, with the user's own tag history in the prompt, next to the same
  LM without history);
* :func:`tag_metrics` — accuracy (per user, then over users) and macro-F1 over the candidate
  tags, each with a 95% bootstrap interval over users.

:func:`movielens_tagging` is the notebook's entry point; :func:`lamp2_tagging` runs the same
methods on LaMP-2's dev set when its files are available (LaMP is online only) and otherwise
prints how to get them and returns None.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["normalize_tag", "TagEval", "tag_eval_set", "most_frequent", "global_tags", "persona_tags",
           "user_top_tag", "user_tags", "tag_prompt", "first_tokens", "lm_tags", "macro_f1", "tag_metrics", "movielens_tagging",
           "parse_lamp2", "lamp2_tagging", "LAMP_HOWTO"]

TASK = "movielens-tagging"
TAG_SYSTEM = "You guess which tag a movie fan gives a movie. Answer with the tag only."


def normalize_tag(tag) -> str:
    """Lower case, single spaces: ``" Dark  Comedy"`` -> ``"dark comedy"``."""
    return " ".join(str(tag).lower().split())


@dataclass
class TagEval:
    """The tagging evaluation set (:func:`tag_eval_set`).

    Attributes
    ----------
    history : DataFrame
        Every tag assignment that is not held out (``user_id, item_id, tag, timestamp``), all users.
    test : DataFrame
        The held-out assignments (their tag is a candidate), one row each.
    candidates : list of str
        The candidate tags, most used first.
    n_labelled : int
        Assignments (all users) whose tag is a candidate: the pool the test rows come from.
    """

    history: pd.DataFrame
    test: pd.DataFrame
    candidates: list
    n_labelled: int

    def __repr__(self) -> str:
        return (f"TagEval({self.test['user_id'].nunique()} users, {len(self.test)} held-out assignments; "
                f"{len(self.candidates)} candidate tags, {self.n_labelled} assignments of them in all; "
                f"{len(self.history):,} history assignments)")


def tag_eval_set(tags: pd.DataFrame, min_tags: int = 3, n_test_per_user: int = 2,
                 n_candidates: int = 15) -> TagEval:
    """Hold out each tagging user's latest assignments and fix the candidate tags.

    Parameters
    ----------
    tags : DataFrame ``user_id, item_id, tag, timestamp`` (``data.load_movielens().tags``).
    min_tags : a user needs at least this many assignments of candidate tags to be evaluated.
    n_test_per_user : the user's latest assignments held out (ties in time: by item, then tag).
    n_candidates : size of the candidate set (LaMP-2 uses 15 tags).
    """
    if tags.empty:
        raise ValueError("no tag assignments: the tagging task needs MovieLens latest-small's tags.csv")
    if min_tags <= n_test_per_user:
        raise ValueError(f"min_tags ({min_tags}) must exceed n_test_per_user ({n_test_per_user}): "
                         "an evaluated user needs some history")
    frame = tags.assign(tag=tags["tag"].map(normalize_tag)).drop_duplicates(["user_id", "item_id", "tag"])
    users_per_tag = frame.groupby("tag")["user_id"].nunique()
    candidates = sorted(users_per_tag.index, key=lambda t: (-users_per_tag[t], t))[:n_candidates]
    frame = frame.sort_values(["user_id", "timestamp", "item_id", "tag"], kind="mergesort")
    labelled = frame["tag"].isin(candidates)
    on_candidates = frame[labelled]
    counts = on_candidates.groupby("user_id")["tag"].transform("size")
    rank_from_end = on_candidates.groupby("user_id").cumcount(ascending=False)
    held_index = on_candidates.index[(counts >= min_tags) & (rank_from_end < n_test_per_user)]
    history = frame.drop(index=held_index).reset_index(drop=True)
    test = frame.loc[held_index].reset_index(drop=True)
    return TagEval(history, test, candidates, int(labelled.sum()))


def most_frequent(tags: Sequence[str], candidates: Sequence[str]) -> str | None:
    """The candidate that occurs most often in ``tags`` (ties: the earlier candidate), or None."""
    counts = Counter(t for t in tags if t in set(candidates))
    if not counts:
        return None
    return max(candidates, key=lambda c: (counts.get(c, 0), -list(candidates).index(c)))


def global_tags(ev: TagEval) -> list[str]:
    """Global: the movie's most frequent candidate tag among the *other* users' history, else the
    overall most frequent candidate (the first candidate)."""
    out = []
    for _, row in ev.test.iterrows():
        others = ev.history[(ev.history["item_id"] == row["item_id"]) & (ev.history["user_id"] != row["user_id"])]
        out.append(most_frequent(others["tag"], ev.candidates) or ev.candidates[0])
    return out


def persona_tags(ev: TagEval, persona_of: pd.Series, fallback: Sequence[str]) -> list[str]:
    """Persona: the movie's most frequent candidate tag among the other users of the user's persona,
    else the candidate used by most of them (one vote per user), else ``fallback`` (the global tag).
    ``persona_of`` maps user_id -> persona; a user without a persona gets the fallback."""
    out = []
    for (_, row), back in zip(ev.test.iterrows(), fallback):
        persona = persona_of.get(row["user_id"])
        mates = set(persona_of.index[persona_of == persona]) - {row["user_id"]} if persona is not None else set()
        pool = ev.history[ev.history["user_id"].isin(mates)]
        on_movie = pool[pool["item_id"] == row["item_id"]]
        votes = pool.drop_duplicates(["user_id", "tag"])["tag"]  # one vote per mate and tag: no heavy tagger dominates
        out.append(most_frequent(on_movie["tag"], ev.candidates) or most_frequent(votes, ev.candidates) or back)
    return out


def user_top_tag(history_tags: Sequence[str], candidates: Sequence[str]) -> str:
    """The user's own most frequent candidate tag; ``ValueError`` if none of their tags is a candidate."""
    if not candidates:
        raise ValueError("the candidate set is empty")
    tag = most_frequent(history_tags, candidates)
    if tag is None:
        raise ValueError("the user has no tag among the candidates (no usable history): "
                         "fall back to the persona or global tag")
    return tag


def user_tags(ev: TagEval, fallback: Sequence[str]) -> tuple[list[str], int]:
    """User: :func:`user_top_tag` of each user's history, else ``fallback``; returns the tags and
    how many instances fell back."""
    out, n_fallback = [], 0
    for (_, row), back in zip(ev.test.iterrows(), fallback):
        mine = ev.history.loc[ev.history["user_id"] == row["user_id"], "tag"]
        try:
            out.append(user_top_tag(mine, ev.candidates))
        except ValueError:
            out.append(back)
            n_fallback += 1
    return out, n_fallback


def tag_prompt(tokenizer, movie: str, candidates: Sequence[str], history: Sequence[tuple[str, str]] = (),
               n_history: int = 8) -> str:
    """The LM's prompt, LaMP-2 style: the candidate tags, the user's latest ``n_history``
    (movie, tag) pairs if any, then the movie; it ends where the tag starts (``"Tag: "``)."""
    from . import prompts

    lines = [f"{m}: {t}" for m, t in list(history)[-n_history:]]
    context = ("Tags this user gave before:\n" + "\n".join(lines) + "\n\n") if lines else ""
    message = (f"Possible tags: {', '.join(candidates)}.\n\n{context}Movie: {movie}\n"
               "Which of the possible tags does this user give it?")
    return prompts.chat_prompt(tokenizer, message, system=TAG_SYSTEM) + "Tag: "


def first_tokens(tokenizer, candidates: Sequence[str]) -> list[str]:
    """The first token of each candidate tag, as text; ``ValueError`` if two candidates start
    with the same token (the LM's choice between them would be undefined)."""
    if not candidates:
        raise ValueError("the candidate set is empty")
    ids = [tokenizer.encode(c, add_special_tokens=False)[0] for c in candidates]
    clash = [c for c, i in zip(candidates, ids) if ids.count(i) > 1]
    if clash:
        raise ValueError(f"candidates {clash} start with the same token; make them distinct")
    return [tokenizer.decode([i]) for i in ids]


def lm_tags(model, tokenizer, prompts_: Sequence[str], candidates_per_prompt: Sequence[Sequence[str]],
            batch_size: int = 16) -> list[str]:
    """For each prompt, the candidate whose **first token** the LM finds most likely next (one
    forward pass per prompt, :func:`p13n_utils.generation.next_token_distribution`; the prompt
    lists the candidates, so their first tokens identify them). Memoised."""
    from .cache import fingerprint, memo
    from .generation import next_token_distribution

    out: list = [None] * len(prompts_)
    groups: dict = {}
    for i, candidates in enumerate(candidates_per_prompt):
        if not candidates:
            raise ValueError(f"prompt {i} has an empty candidate set")
        groups.setdefault(tuple(candidates), []).append(i)
    for candidates, index in groups.items():
        labels = first_tokens(tokenizer, candidates)
        texts = [prompts_[i] for i in index]
        payload = {"model": fingerprint(model), "prompts": texts, "labels": labels}
        probs = np.asarray(memo("labels", payload, lambda: next_token_distribution(
            model, tokenizer, texts, labels, batch_size=batch_size).tolist()), dtype=float)
        for i, row in zip(index, probs.reshape(len(texts), len(labels))):
            out[i] = candidates[int(np.argmax(row))]
    return out


def macro_f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """Macro-F1 over the labels that occur in ``gold`` or ``predicted``: per label
    ``F1 = 2 TP / (2 TP + FP + FN)``, then the plain mean over labels (a rare tag counts as much as
    a frequent one; a label never predicted correctly scores 0). Matches scikit-learn's
    ``f1_score(average="macro", zero_division=0)``."""
    gold, predicted = np.asarray(gold, dtype=object), np.asarray(predicted, dtype=object)
    scores = []
    for label in set(gold) | set(predicted):
        tp = np.sum((gold == label) & (predicted == label))
        fp = np.sum((gold != label) & (predicted == label))
        fn = np.sum((gold == label) & (predicted != label))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def tag_metrics(users: Sequence, gold: Sequence[str], predicted: Sequence[str], n_resamples: int = 2000,
                seed: int = 0) -> dict:
    """Accuracy (mean over users of the user's accuracy) and macro-F1 (over the gold and predicted
    tags: a tag never predicted scores F1 = 0) with 95% bootstrap intervals over users.

    Returns
    -------
    dict: ``acc`` and ``macro_f1``, each ``(value, lower, upper)``; ``per_user_acc`` (Series by
    user) and ``n_users``.
    """
    from .results import bootstrap_ci

    users, gold, predicted = list(users), list(gold), list(predicted)
    if not len(users) == len(gold) == len(predicted):
        raise ValueError(f"{len(users)} users, {len(gold)} gold and {len(predicted)} predicted tags: "
                         "they must pair up")
    if not users:
        raise ValueError("no tagging instances to evaluate")
    frame = pd.DataFrame({"user_id": users, "gold": gold, "pred": predicted})
    per_user = (frame["gold"] == frame["pred"]).groupby(frame["user_id"]).mean().astype(float)
    macro = lambda f: macro_f1(f["gold"], f["pred"])  # noqa: E731
    by_user = {u: g for u, g in frame.groupby("user_id")}
    ids = np.array(list(by_user))
    rng = np.random.default_rng(seed)
    boot = [macro(pd.concat([by_user[u] for u in rng.choice(ids, size=ids.size)])) for _ in range(n_resamples)]
    lower, upper = np.quantile(boot, [0.025, 0.975])
    return {"acc": bootstrap_ci(per_user.to_numpy(), n_resamples=n_resamples, seed=seed),
            "macro_f1": (float(macro(frame)), float(lower), float(upper)),
            "per_user_acc": per_user.rename_axis("user_id"), "n_users": int(ids.size)}


def _record_and_table(task: str, test: pd.DataFrame, predictions: dict, n_resamples: int, seed: int,
                      record: bool, baselines: dict | None = None) -> pd.DataFrame:
    """Accuracy and macro-F1 of each method (recorded), then ``tag_acc_diff_vs_<baseline>`` paired
    over users for each ``{method: baseline}`` of ``baselines`` (columns ``diff``, ``diff_lower``,
    ``diff_upper``, ``vs``)."""
    from . import results

    rows, per_user = [], {}
    for method, (level, tags) in predictions.items():
        m = tag_metrics(test["user_id"], test["tag"], tags, n_resamples=n_resamples, seed=seed)
        per_user[method] = m["per_user_acc"]
        if record:
            results.record_ci(task, level, method, "tag_acc", m["per_user_acc"], n_resamples=n_resamples, seed=seed)
            results.record(task, level, method, "tag_macro_f1", *m["macro_f1"], n=m["n_users"])
        rows.append({"method": method, "level": level, "acc": m["acc"][0], "acc_lower": m["acc"][1],
                     "acc_upper": m["acc"][2], "macro_f1": m["macro_f1"][0], "f1_lower": m["macro_f1"][1],
                     "f1_upper": m["macro_f1"][2], "n_users": m["n_users"], "n_instances": len(test)})
    table = pd.DataFrame(rows).set_index("method")
    for method, base in (baselines or {}).items():
        level = predictions[method][0]
        if record:
            d = results.record_paired(task, level, method, "tag_acc", per_user[method], per_user[base], base,
                                      n_resamples=n_resamples, seed=seed)
        else:
            d = results.paired_difference(per_user[method], per_user[base], n_resamples=n_resamples, seed=seed)
        table.loc[method, ["vs", "diff", "diff_lower", "diff_upper"]] = [base, d["mean"], d["lower"], d["upper"]]
    return table.reset_index()


def movielens_tagging(cfg, ml, model=None, tokenizer=None, record: bool = True) -> dict:
    """Notebook 09's MovieLens tagging section in one call.

    Parameters
    ----------
    cfg : the run size: ``p09.tag_min_tags``, ``p09.tag_test_per_user``, ``p09.tag_candidates``,
        ``p09.tag_persona_k``, ``p09.tag_lm_instances`` (None: every instance), seed, bootstrap.
    ml : :class:`p13n_utils.data.MovieLens` (latest-small: it has tags).
    model, tokenizer : the LM for ``user_lm`` / ``global_lm``; without them only the counting
        methods run.
    record : record ``tag_acc`` and ``tag_macro_f1`` per method (task ``movielens-tagging``).

    Returns
    -------
    dict with ``eval`` (:class:`TagEval`), ``table`` (per method: accuracy and macro-F1 with
    intervals, n; and the paired accuracy difference ``diff`` [``diff_lower``, ``diff_upper``] against
    the method ``vs``: persona and user rungs vs ``movie_popular_tag``, ``user_lm`` vs ``global_lm``), ``predictions`` (the test rows with one column per method), ``n_user_fallback``,
    ``lm_instances`` (how many instances the LM methods scored; they are recorded on those) and
    ``seconds``.
    """
    from . import personas, prompts

    start = time.perf_counter()
    ev = tag_eval_set(ml.tags, min_tags=cfg.get("p09.tag_min_tags", 3),
                      n_test_per_user=cfg.get("p09.tag_test_per_user", 2),
                      n_candidates=cfg.get("p09.tag_candidates", 15))
    if ev.test.empty:
        raise ValueError(f"{ev!r}: no held-out assignment has a candidate tag; raise p09.tag_candidates")
    held = pd.MultiIndex.from_frame(ev.test[["user_id", "item_id"]])
    train_ratings = ml.ratings[~pd.MultiIndex.from_frame(ml.ratings[["user_id", "item_id"]]).isin(held)]
    genre = personas.movielens_genre_personas(train_ratings, ml.movies, k=cfg.get("p09.tag_persona_k", 10), seed=cfg.seed)
    g = global_tags(ev)
    p = persona_tags(ev, genre.assignments, g)
    u, n_fallback = user_tags(ev, g)
    predictions = {"movie_popular_tag": ("global", g), "persona_popular_tag": ("persona", p),
                   "user_top_tag": ("user", u)}
    n_boot = cfg["bootstrap.n_resamples"]
    table = _record_and_table(TASK, ev.test, predictions, n_boot, cfg.seed, record,
                              {"persona_popular_tag": "movie_popular_tag", "user_top_tag": "movie_popular_tag"})
    out = ev.test.assign(**{m: tags for m, (_, tags) in predictions.items()})
    lm_n = 0
    if model is not None:
        n_lm = cfg.get("p09.tag_lm_instances")
        sub = ev.test if n_lm is None else ev.test.head(n_lm)
        lm_n = len(sub)
        title = dict(zip(ml.movies["item_id"], prompts.movie_descriptions(ml.movies, ml.movies["item_id"].tolist())))
        hist = ev.history.sort_values("timestamp", kind="mergesort")
        texts = {"global_lm": [], "user_lm": []}
        for _, row in sub.iterrows():
            mine = hist[hist["user_id"] == row["user_id"]]
            pairs = [(title.get(i, str(i)), t) for i, t in zip(mine["item_id"], mine["tag"])]
            movie = title.get(row["item_id"], str(row["item_id"]))
            texts["user_lm"].append(tag_prompt(tokenizer, movie, ev.candidates, pairs))
            texts["global_lm"].append(tag_prompt(tokenizer, movie, ev.candidates))
        lm_preds = {name: ("global" if name == "global_lm" else "user",
                           lm_tags(model, tokenizer, t, [ev.candidates] * len(t), batch_size=cfg["lm.batch_size"]))
                    for name, t in texts.items()}
        table = pd.concat([table, _record_and_table(TASK, sub, lm_preds, n_boot, cfg.seed, record,
                                                    {"user_lm": "global_lm"})], ignore_index=True)
        for name, (_, tags) in lm_preds.items():
            out[name] = pd.Series(tags, index=sub.index)
    return {"eval": ev, "table": table, "predictions": out, "n_user_fallback": n_fallback, "lm_instances": lm_n,
            "seconds": time.perf_counter() - start}


# =========================================================================== LaMP-2 itself
LAMP_HOWTO = """LaMP-2 (movie tagging) is not available here. LaMP may not be redistributed and is online only:
  * online:  data.load_lamp(2, "dev") downloads it (about 15 MB) from ciir.cs.umass.edu/downloads/LaMP/;
  * or download LaMP_2/new/dev/dev_questions.json and dev_outputs.json from https://lamp-benchmark.github.io/
    into a folder and pass it: tagging.lamp2_tagging(cfg, path="that/folder"),
    or into $P13N_DATA_MIRROR/lamp/LaMP_2/ (the data mirror)."""


DESCRIPTION_CHARS = 160
"""LaMP-2's movie descriptions are cut to this many characters in prompts (cost)."""


def parse_lamp2(frame: pd.DataFrame) -> pd.DataFrame:
    """LaMP-2 questions as tagging instances: ``user_id`` (the question id: LaMP's user-based split
    has one question per user), ``description``, ``candidates`` (the list in the input's
    ``tags: [...]``), ``tag`` (gold, normalised), ``history`` (the profile's (description, tag) pairs)."""
    rows = []
    for _, q in frame.iterrows():
        match = re.search(r"tags:\s*\[(.*?)\]", q["input"], flags=re.S)
        if match is None:
            raise ValueError(f"LaMP-2 question {q['id']}: no 'tags: [...]' list in its input")
        candidates = [normalize_tag(t) for t in match.group(1).split(",") if t.strip()]
        description = q["input"].split("description:", 1)[-1].strip()
        history = [(str(p.get("description", ""))[:DESCRIPTION_CHARS], normalize_tag(p["tag"])) for p in q["profile"]]
        rows.append({"user_id": q["id"], "description": description[:DESCRIPTION_CHARS], "candidates": candidates,
                     "tag": None if q["output"] is None else normalize_tag(q["output"]), "history": history})
    return pd.DataFrame(rows)


def lamp2_tagging(cfg, model=None, tokenizer=None, path: str | Path | None = None, n_questions: int | None = None,
                  record: bool = True) -> dict | None:
    """The tagging methods on LaMP-2 dev when its files are available, else print
    :data:`LAMP_HOWTO` and return None.

    Methods: ``global`` (the tag most frequent over all users' profiles), ``user_top_tag`` (the
    user's own most frequent tag, else global) and, with a model, ``user_lm`` (candidates scored
    with the user's latest profile pairs in the prompt) and ``global_lm`` (without them). There are
    no personas in LaMP, so no persona rung. ``n_questions``: the first n questions (default
    ``cfg["p09.lamp_questions"]``; None: all). Recorded under task ``lamp2-tagging``.

    Returns
    -------
    dict with ``instances`` and ``table`` (as :func:`movielens_tagging`), or None offline.
    """
    from . import data

    try:
        frame = data.load_lamp(2, "dev", path=path)
    except (data.DataNotFoundError, OSError, ValueError) as err:
        from . import config  # the reason names where the file would go: relative, no machine paths

        print(f"{LAMP_HOWTO}\n(reason: {str(err).replace(str(config.REPO_ROOT) + '/', '')})")
        return None
    n_questions = cfg.get("p09.lamp_questions") if n_questions is None else n_questions
    inst = parse_lamp2(frame.head(n_questions) if n_questions is not None else frame)
    inst = inst[inst["tag"].notna()].reset_index(drop=True)
    all_tags = [t for h in inst["history"] for _, t in h]
    predictions = {}
    glob = [most_frequent(all_tags, c) or c[0] for c in inst["candidates"]]
    predictions["global_popular_tag"] = ("global", glob)
    mine = []
    for h, c, back in zip(inst["history"], inst["candidates"], glob):
        try:
            mine.append(user_top_tag([t for _, t in h], c))
        except ValueError:
            mine.append(back)
    predictions["user_top_tag"] = ("user", mine)
    if model is not None:
        user_prompts = [tag_prompt(tokenizer, d, c, h) for d, c, h in zip(inst["description"], inst["candidates"], inst["history"])]
        global_prompts = [tag_prompt(tokenizer, d, c) for d, c in zip(inst["description"], inst["candidates"])]
        predictions["global_lm"] = ("global", lm_tags(model, tokenizer, global_prompts, inst["candidates"]))
        predictions["user_lm"] = ("user", lm_tags(model, tokenizer, user_prompts, inst["candidates"]))
    baselines = {"user_top_tag": "global_popular_tag"} | ({"user_lm": "global_lm"} if model is not None else {})
    table = _record_and_table("lamp2-tagging", inst, predictions, cfg["bootstrap.n_resamples"], cfg.seed, record,
                              baselines)
    return {"instances": inst.assign(**{m: t for m, (_, t) in predictions.items()}), "table": table}
