"""Seeded synthetic data in the loaders' schemas, for unit tests only (never for results).

Each generator returns what the matching loader returns; each ``write_*`` function writes it
in the official file layout so the parsers can be tested on it:

- :func:`movielens` / :func:`write_movielens_zip` (latest-small CSVs or 100k's u.* files)
- :func:`personachat` / :func:`write_personachat` (ParlAI FB-dialog text)
- :func:`lamp` / :func:`write_lamp` (LaMP questions and outputs JSON)
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from .data import MovieLens

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller"]
WORDS = ["dogs", "pizza", "hiking", "music", "books", "cars", "paris", "cooking", "yoga", "chess"]


def ratings(n_users: int = 20, n_items: int = 50, seed: int = 0, min_per_user: int = 1,
            max_per_user: int = 30) -> pd.DataFrame:
    """Ratings with the loader's columns and dtypes: each user rates a random number of
    distinct items in [min_per_user, max_per_user]; timestamps repeat on purpose (ties)."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, n_users + 1):
        n = int(rng.integers(min_per_user, min(max_per_user, n_items) + 1))
        items = rng.choice(np.arange(1, n_items + 1), size=n, replace=False)
        times = 1_000_000_000 + rng.integers(0, max(2, n // 2), size=n) * 3600
        stars = rng.integers(1, 11, size=n) / 2.0
        rows += [(user, int(i), float(r), int(t)) for i, r, t in zip(items, stars, times)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return frame.astype({"user_id": "int64", "item_id": "int64", "rating": "float32",
                         "timestamp": "int64"})


def movielens(n_users: int = 20, n_items: int = 50, seed: int = 0,
              variant: str = "latest-small") -> MovieLens:
    """A small :class:`~p13n_utils.data.MovieLens` in the loader's schema (100k: with users
    and whole-star ratings, no tags)."""
    rng = np.random.default_rng(seed)
    r = ratings(n_users, n_items, seed)
    if variant == "100k":
        r["rating"] = np.ceil(r["rating"]).astype("float32")
    items = np.arange(1, n_items + 1, dtype="int64")
    years = pd.array([pd.NA if i % 10 == 0 else 1950 + int(i) for i in items], dtype="Int64")
    genres = ["|".join(sorted(rng.choice(GENRES, size=int(rng.integers(1, 3)), replace=False)))
              for _ in items]
    movies = pd.DataFrame({"item_id": items, "title": [f"Movie {i}, The" for i in items],
                           "year": years, "genres": pd.Series(genres, dtype=str)})
    tag_rows = r.sample(frac=0.2, random_state=seed) if variant == "latest-small" else r.iloc[:0]
    tags = pd.DataFrame({"user_id": tag_rows["user_id"].to_numpy(),
                         "item_id": tag_rows["item_id"].to_numpy(),
                         "tag": pd.Series(rng.choice(WORDS, size=len(tag_rows)), dtype=str),
                         "timestamp": tag_rows["timestamp"].to_numpy() + 60})
    tags = tags.astype({"user_id": "int64", "item_id": "int64", "timestamp": "int64"})
    if variant == "latest-small":
        links = pd.DataFrame({"item_id": items, "imdb_id": pd.array(100000 + items, dtype="Int64"),
                              "tmdb_id": pd.array([pd.NA if i % 7 == 0 else 500 + int(i) for i in items],
                                                  dtype="Int64")})
        users = None
    else:
        na = pd.array([pd.NA] * n_items, dtype="Int64")
        links = pd.DataFrame({"item_id": items, "imdb_id": na, "tmdb_id": na.copy()})
        uid = np.arange(1, n_users + 1, dtype="int64")
        users = pd.DataFrame({"user_id": uid, "age": rng.integers(15, 70, size=n_users).astype("int64"),
                              "gender": pd.Series(rng.choice(["F", "M"], size=n_users), dtype=str),
                              "occupation": pd.Series(rng.choice(["student", "writer", "other"], size=n_users), dtype=str),
                              "zip": pd.Series([f"{10000 + int(u)}" for u in uid], dtype=str)})
    return MovieLens(variant, r, movies, tags, links, users)


def write_movielens_zip(ml: MovieLens, path: str | Path) -> Path:
    """Write ``ml`` as an official-layout zip (``ml-latest-small/*.csv`` with CRLF line ends,
    or ``ml-100k/u.data``, ``u.item`` (latin-1), ``u.user``, ``u.genre``)."""
    path = Path(path)

    def title_with_year(movies):
        return [t if pd.isna(y) else f"{t} ({y})" for t, y in zip(movies["title"], movies["year"])]

    with zipfile.ZipFile(path, "w") as zf:
        if ml.variant == "latest-small":
            d = "ml-latest-small/"
            r = ml.ratings.rename(columns={"user_id": "userId", "item_id": "movieId"})
            zf.writestr(d + "ratings.csv", r.to_csv(index=False, lineterminator="\r\n"))
            m = pd.DataFrame({"movieId": ml.movies["item_id"], "title": title_with_year(ml.movies),
                              "genres": ml.movies["genres"]})
            zf.writestr(d + "movies.csv", m.to_csv(index=False, lineterminator="\r\n"))
            t = ml.tags.rename(columns={"user_id": "userId", "item_id": "movieId"})
            zf.writestr(d + "tags.csv", t.to_csv(index=False, lineterminator="\r\n"))
            links = pd.DataFrame({"movieId": ml.links["item_id"],
                                  "imdbId": [f"{i:07d}" for i in ml.links["imdb_id"]],
                                  "tmdbId": ml.links["tmdb_id"]})
            zf.writestr(d + "links.csv", links.to_csv(index=False, lineterminator="\r\n"))
            zf.writestr(d + "README.txt", "synthetic test data\r\n")
        else:
            d = "ml-100k/"
            r = ml.ratings.astype({"rating": "int64"})
            zf.writestr(d + "u.data", r.to_csv(sep="\t", header=False, index=False))
            names = ["unknown"] + GENRES
            zf.writestr(d + "u.genre", "".join(f"{g}|{i}\n" for i, g in enumerate(names)) + "\n")
            lines = []
            for (_, m), title in zip(ml.movies.iterrows(), title_with_year(ml.movies)):
                flags = ["1" if g in m["genres"].split("|") else "0" for g in names]
                date = "" if pd.isna(m["year"]) else f"01-Jan-{m['year']}"
                lines.append("|".join([str(m["item_id"]), title, date, "", "http://x"] + flags))
            zf.writestr(d + "u.item", ("\n".join(lines) + "\n").encode("latin-1"))
            zf.writestr(d + "u.user", ml.users.to_csv(sep="|", header=False, index=False))
    return path


def personachat(n_dialogues: int = 10, seed: int = 0, min_turns: int = 1,
                max_turns: int = 8, n_characters: int | None = None) -> pd.DataFrame:
    """Dialogues in the loader's schema: 4-5 persona facts, ``min_turns``..``max_turns``
    (partner, self) turns with distinct texts. Dialogue ``d`` plays character
    ``d % n_characters`` (the same facts, as in ConvAI2, where a persona returns in several
    dialogues); ``None``: every dialogue is a character of its own."""
    rng = np.random.default_rng(seed)
    n_characters = n_characters or n_dialogues
    personas = [[f"i like {w} in town {c}." for w in rng.choice(WORDS, size=int(rng.integers(4, 6)), replace=False)]
                for c in range(n_characters)]
    rows = []
    for d in range(n_dialogues):
        n = int(rng.integers(min_turns, max_turns + 1))
        turns = [(f"partner {d}-{t} asks about {rng.choice(WORDS)} ?", f"self {d}-{t} says {rng.choice(WORDS)} .")
                 for t in range(n)]
        rows.append({"dialogue_id": d, "persona": list(personas[d % n_characters]), "turns": turns})
    return pd.DataFrame(rows, columns=["dialogue_id", "persona", "turns"]).astype({"dialogue_id": "int64"})


def write_personachat(dialogues: pd.DataFrame, path: str | Path) -> Path:
    """Write dialogues in ParlAI FB-dialog format (numbered lines, facts first)."""
    lines = []
    for d in dialogues.itertuples(index=False):
        block = [f"your persona: {fact}" for fact in d.persona]
        block += [f"{partner}\t{reply}" for partner, reply in d.turns]
        lines += [f"{number} {text}" for number, text in enumerate(block, 1)]
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return Path(path)


def lamp(n_questions: int = 5, task: int = 4, seed: int = 0) -> tuple[list[dict], dict]:
    """LaMP-style ``(questions, outputs)``: questions are ``{id, input, profile}``, outputs
    ``{"task": "LaMP_<task>", "golds": [{id, output}]}``."""
    rng = np.random.default_rng(seed)
    questions, golds = [], []
    for q in range(n_questions):
        qid = str(task * 1000 + q)
        profile = [{"id": f"{qid}-{k}", "text": f"article about {rng.choice(WORDS)}",
                    "title": f"headline {k}", "date": f"2020-01-{k + 1:02d}"}
                   for k in range(int(rng.integers(1, 5)))]
        questions.append({"id": qid, "input": f"Generate a headline for: news {q}", "profile": profile})
        golds.append({"id": qid, "output": f"gold headline {q}"})
    return questions, {"task": f"LaMP_{task}", "golds": golds}


def write_lamp(folder: str | Path, split: str, questions: list[dict], outputs: dict | None) -> Path:
    """Write ``<split>_questions.json`` (and ``<split>_outputs.json``) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}_questions.json").write_text(json.dumps(questions), encoding="utf-8")
    if outputs is not None:
        (folder / f"{split}_outputs.json").write_text(json.dumps(outputs), encoding="utf-8")
    return folder
