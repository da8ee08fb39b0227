"""Data sets: a committed manifest, checksummed files, a local cache, and the loaders.

Every file the notebooks read is listed in ``data/MANIFEST.json`` with its official URL, its
sha256, its license and citation. :func:`fetch` finds a file in this order:

1. an explicit ``path`` given by the caller;
2. ``$P13N_DATA_MIRROR/<relative path>``: a folder laid out like the manifest's ``path``
   fields, e.g. ``mirror/movielens/ml-latest-small.zip`` (CI points it at a local copy);
3. the cache ``data/<relative path>`` (``config.DATA_DIR``);
4. a download from the official URL (timeout, retries with backoff, progress bar, written to a
   temporary file and moved into place only after its sha256 matched). A file that lives inside
   an archive (PersonaChat inside ConvAI2) is extracted from the archive, which is itself
   fetched through the same four steps.

A file whose sha256 differs from the manifest is never used: :class:`IntegrityError` names the
file, both hashes and the URL, and a bad file is never left in the cache. With nothing local
and no network, :class:`DataNotFoundError` says within seconds which URL and sha256 to get and
in which folder to put the file. Set ``P13N_OFFLINE=1`` to skip the download attempt.

Loaders (parsed results are cached in memory, so notebooks can call them freely):

- :func:`load_movielens` -> :class:`MovieLens` (ratings, movies, tags, links, users)
- :func:`load_personachat` -> one row per dialogue (persona facts, ordered turns)
- :func:`load_lamp` -> one row per LaMP question (input, profile, gold output); online only
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import tarfile
import time
import uuid
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from . import config

MANIFEST_PATH = config.REPO_ROOT / "data" / "MANIFEST.json"
MIRROR_ENV = "P13N_DATA_MIRROR"
OFFLINE_ENV = "P13N_OFFLINE"
DEFAULT_TIMEOUT = 10.0  # seconds per connect / read
DEFAULT_RETRIES = 2  # extra attempts after the first
BACKOFF = 0.5  # seconds; doubles after each failed attempt


# --------------------------------------------------------------------------- errors
class DataError(RuntimeError):
    """Base class of the data errors below."""


class IntegrityError(DataError):
    """A file's sha256 differs from the manifest's."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A file is neither local nor downloadable (offline, or the server failed)."""


# --------------------------------------------------------------------------- manifest
@dataclass(frozen=True)
class FileSpec:
    """One file of the manifest.

    ``path`` is relative to the mirror / cache folder. ``archive`` is set when the file is a
    member of a bigger archive (then ``member`` is its name inside it); ``sha256`` is None
    where no checksum is published (LaMP) or known (members of a verified archive)."""

    dataset: str
    path: str
    url: str
    sha256: str | None
    size: int | None = None
    archive: "FileSpec | None" = None
    member: str | None = None


@functools.lru_cache(maxsize=1)
def manifest() -> dict:
    """The parsed ``data/MANIFEST.json`` (``{"datasets": {name: entry}}``)."""
    with open(MANIFEST_PATH, encoding="utf-8") as f:
        return json.load(f)


def dataset_info(name: str) -> dict:
    """The manifest entry of data set ``name`` (title, license, citation, files)."""
    datasets = manifest()["datasets"]
    if name not in datasets:
        raise KeyError(f"unknown data set {name!r}; the manifest lists: {', '.join(datasets)}")
    return datasets[name]


def file_spec(dataset: str, file: str | None = None) -> FileSpec:
    """The :class:`FileSpec` of an archive (``file=None``) or of one extracted ``file``."""
    info = dataset_info(dataset)
    a = info["archive"]
    archive = FileSpec(dataset, a["path"], a["url"], a["sha256"], a.get("size"))
    if file is None:
        return archive
    files = info.get("files", {})
    if file not in files:
        raise KeyError(f"data set {dataset!r} has no file {file!r}; known: {', '.join(files)}")
    f = files[file]
    return FileSpec(dataset, f["path"], a["url"], f["sha256"], f.get("size"), archive, f["member"])


def cache_dir() -> Path:
    """The download cache (``config.DATA_DIR``, env ``P13N_DATA_DIR``), read at call time."""
    return Path(config.DATA_DIR)


# --------------------------------------------------------------------------- checksums
def sha256sum(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _integrity_message(what: str, expected: str, actual: str, url: str) -> str:
    return (
        f"integrity check failed for {what}: expected sha256 {expected}, got {actual} "
        f"(official source: {url}). The file is corrupted, truncated or a different version; "
        "delete it and get the official file."
    )


def verify(path: str | Path, spec: FileSpec) -> Path:
    """Return ``path`` if its sha256 matches ``spec``, else raise :class:`IntegrityError`.

    A file without a known checksum (``spec.sha256`` None) passes unchecked."""
    path = Path(path)
    if spec.sha256 is not None:
        actual = sha256sum(path)
        if actual != spec.sha256:
            raise IntegrityError(_integrity_message(str(path), spec.sha256, actual, spec.url))
    return path


# --------------------------------------------------------------------------- resolution
def fetch(dataset: str, file: str | None = None, path: str | Path | None = None, *,
          timeout: float | None = None, retries: int | None = None) -> Path:
    """Find (or download) a verified file of the manifest and return its local path.

    Parameters
    ----------
    dataset : str
        A data set of the manifest, e.g. ``"movielens-latest-small"``, ``"personachat"``.
    file : str, optional
        A file extracted from the data set's archive (e.g. ``"valid"`` for PersonaChat);
        ``None`` means the archive itself.
    path : str or Path, optional
        Use this file instead of searching (it must still match the manifest's sha256).
    timeout, retries : optional
        Per-request timeout in seconds and extra download attempts (defaults: env
        ``P13N_DOWNLOAD_TIMEOUT`` or 10 s, and 2).

    Raises
    ------
    IntegrityError
        A candidate file has the wrong sha256 (a bad cache file is deleted first).
    DataNotFoundError
        Nothing local and the download failed; the message says what to put where.
    """
    return _resolve(file_spec(dataset, file), path, timeout, retries)


def _resolve(spec: FileSpec, path, timeout, retries) -> Path:
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise DataNotFoundError(f"{path} does not exist (given as the path of {spec.path})")
        return verify(path, spec)
    mirror = os.environ.get(MIRROR_ENV)
    if mirror and (Path(mirror) / spec.path).is_file():
        return verify(Path(mirror) / spec.path, spec)
    cached = cache_dir() / spec.path
    if cached.is_file():
        try:
            return verify(cached, spec)
        except IntegrityError as err:
            cached.unlink()
            raise IntegrityError(f"{err} The bad cache file was deleted; run again to download.") from None
    if spec.archive is not None:
        archive = _resolve(spec.archive, None, timeout, retries)
        return extract_member(archive, spec, cached)
    return download(spec, cached, timeout=timeout, retries=retries)


def _not_found(spec: FileSpec, reason: str) -> DataNotFoundError:
    target = cache_dir() / spec.path
    checksum = f"sha256 {spec.sha256}" if spec.sha256 else "no published sha256"
    return DataNotFoundError(
        f"{spec.dataset}: cannot get {spec.url} ({reason}). Download it yourself ({checksum}) "
        f"and place it at {target} (folder {target.parent}), or set {MIRROR_ENV} to a folder "
        f"that holds {spec.path}."
    )


def download(spec: FileSpec, dest: str | Path, *, timeout: float | None = None,
             retries: int | None = None) -> Path:
    """Download ``spec.url`` to ``dest`` atomically, verifying the sha256 before the move.

    Retries connection errors, timeouts and HTTP 5xx/429 with exponential backoff; a name
    that does not resolve (no network) fails at once."""
    import requests

    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise _not_found(spec, f"{OFFLINE_ENV} is set")
    timeout = float(timeout or os.environ.get("P13N_DOWNLOAD_TIMEOUT", DEFAULT_TIMEOUT))
    retries = DEFAULT_RETRIES if retries is None else retries
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(BACKOFF * 2 ** (attempt - 1))
        try:
            return _download_once(spec, Path(dest), timeout)
        except requests.HTTPError as err:
            last_error = err
            status = err.response.status_code if err.response is not None else 0
            if status < 500 and status != 429:
                break
        except (requests.ConnectionError, requests.Timeout) as err:
            last_error = err
            if "NameResolution" in repr(err) or "Name or service not known" in str(err):
                break
    raise _not_found(spec, f"{type(last_error).__name__}: {last_error}") from last_error


def _download_once(spec: FileSpec, dest: Path, timeout: float) -> Path:
    import requests

    with warnings.catch_warnings():  # tqdm.auto warns when ipywidgets is missing
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
    digest = hashlib.sha256()
    try:
        with requests.get(spec.url, stream=True, timeout=(timeout, timeout)) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length", 0)) or None
            with open(tmp, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, leave=False,
                                            desc=dest.name, disable=None) as bar:
                for chunk in response.iter_content(chunk_size=1 << 16):
                    f.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        _check_digest(spec, digest.hexdigest(), f"the download of {spec.path}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _check_digest(spec: FileSpec, actual: str, what: str) -> None:
    if spec.sha256 is None:
        warnings.warn(f"{spec.path} has no published checksum; its sha256 is {actual} "
                      "(write it down to detect later changes)", stacklevel=3)
    elif actual != spec.sha256:
        raise IntegrityError(_integrity_message(what, spec.sha256, actual, spec.url))


def extract_member(archive: str | Path, spec: FileSpec, dest: str | Path) -> Path:
    """Extract ``spec.member`` (matched by its base name) from a .tgz/.tar/.zip archive to
    ``dest`` atomically, verifying its sha256 before the move."""
    archive, dest = Path(archive), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
    wanted = Path(spec.member).name
    try:
        with _open_member(archive, wanted) as source, open(tmp, "wb") as out:
            digest = hashlib.sha256()
            for chunk in iter(lambda: source.read(1 << 20), b""):
                out.write(chunk)
                digest.update(chunk)
        _check_digest(spec, digest.hexdigest(), f"{wanted} extracted from {archive}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _open_member(archive: Path, name: str):
    if zipfile.is_zipfile(archive):
        zf = zipfile.ZipFile(archive)
        names = [n for n in zf.namelist() if Path(n).name == name]
        if names:
            return zf.open(names[0])
    else:
        tf = tarfile.open(archive)
        for member in tf.getmembers():
            if member.isfile() and Path(member.name).name == name:
                return tf.extractfile(member)
    raise DataNotFoundError(f"{archive} has no member named {name}")


# --------------------------------------------------------------------------- MovieLens
MOVIELENS_VARIANTS = {"latest-small": "movielens-latest-small", "100k": "movielens-100k"}


@dataclass
class MovieLens:
    """A MovieLens data set as DataFrames.

    Attributes
    ----------
    variant : str
        ``"latest-small"`` or ``"100k"``.
    ratings : DataFrame
        user_id (int64), item_id (int64), rating (float32, 0.5-5 stars), timestamp (int64,
        unix seconds).
    movies : DataFrame
        item_id (int64), title (str, without the year), year (Int64, NA if unknown), genres
        (str, pipe-separated as in the file; ``"(no genres listed)"`` if none).
    tags : DataFrame
        user_id (int64), item_id (int64), tag (str), timestamp (int64). Empty for 100k.
    links : DataFrame
        item_id (int64), imdb_id (Int64), tmdb_id (Int64). NA ids for 100k.
    users : DataFrame or None
        100k only: user_id (int64), age (int64), gender (str), occupation (str), zip (str).
    """

    variant: str
    ratings: pd.DataFrame
    movies: pd.DataFrame
    tags: pd.DataFrame
    links: pd.DataFrame
    users: pd.DataFrame | None = None

    @property
    def n_users(self) -> int:
        return int(self.ratings["user_id"].nunique())

    @property
    def n_items(self) -> int:
        return int(len(self.movies))

    def copy(self) -> "MovieLens":
        """A copy whose DataFrames can be modified without touching the in-memory cache."""
        return replace(self, ratings=self.ratings.copy(), movies=self.movies.copy(),
                       tags=self.tags.copy(), links=self.links.copy(),
                       users=None if self.users is None else self.users.copy())

    def __repr__(self) -> str:
        users = "" if self.users is None else f", users with demographics={len(self.users):,}"
        return (f"MovieLens({self.variant}: {len(self.ratings):,} ratings by {self.n_users:,} "
                f"users on {self.n_items:,} movies, {len(self.tags):,} tags{users})")


def load_movielens(variant: str = "latest-small", path: str | Path | None = None) -> MovieLens:
    """Load MovieLens ``"latest-small"`` (redistributable) or ``"100k"`` (download-only).

    Parameters
    ----------
    variant : {"latest-small", "100k"}
    path : str or Path, optional
        The official zip (``ml-latest-small.zip`` / ``ml-100k.zip``); otherwise it is found
        through :func:`fetch` (mirror, cache, download). Always sha256-checked.

    Returns
    -------
    MovieLens
        See :class:`MovieLens` for the columns. latest-small: 100,836 ratings, 610 users,
        9,742 movies, 3,683 tags. A fresh copy each call (parsing is cached in memory).
    """
    if variant not in MOVIELENS_VARIANTS:
        raise ValueError(f"unknown MovieLens variant {variant!r}; use one of {list(MOVIELENS_VARIANTS)}")
    archive = fetch(MOVIELENS_VARIANTS[variant], path=path)
    return _parse_movielens_cached(str(archive), variant).copy()


@functools.lru_cache(maxsize=4)
def _parse_movielens_cached(archive: str, variant: str) -> MovieLens:
    return parse_movielens_zip(archive, variant)


def _member_bytes(zf: zipfile.ZipFile, dataset: str, key: str) -> bytes:
    """Read a member of a MovieLens zip and check it against the manifest's sha256."""
    info = dataset_info(dataset)
    member = info["members"][key]
    raw = zf.read(member["member"])
    if member["sha256"] is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != member["sha256"]:
            raise IntegrityError(_integrity_message(member["member"], member["sha256"], actual,
                                                    info["archive"]["url"]))
    return raw


def parse_movielens_zip(archive: str | Path, variant: str = "latest-small",
                        check_members: bool = True) -> MovieLens:
    """Parse a MovieLens zip laid out like the official one (no download, no archive hash).

    ``check_members=False`` skips the members' sha256 (for synthetic test files)."""
    dataset = MOVIELENS_VARIANTS[variant]
    with zipfile.ZipFile(archive) as zf:
        if check_members:
            read = functools.partial(_member_bytes, zf, dataset)
        else:
            members = dataset_info(dataset)["members"]
            read = lambda key: zf.read(members[key]["member"])  # noqa: E731
        if variant == "latest-small":
            return _parse_latest_small(read)
        return _parse_100k(read)


_YEAR_RE = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-\u2013]\s*\d{0,4})?\)\s*$")


def split_title_year(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Split "Toy Story (1995)" into ("Toy Story", 1995); titles without a year keep their
    text and get a NA year."""
    titles = titles.astype(str).str.strip()
    parts = titles.str.extract(_YEAR_RE)
    title = parts["title"].fillna(titles).astype(str)
    year = pd.to_numeric(parts["year"], errors="coerce").astype("Int64")
    return title, year


def _parse_latest_small(read) -> MovieLens:
    ratings = pd.read_csv(io.BytesIO(read("ratings")))
    ratings = ratings.rename(columns={"userId": "user_id", "movieId": "item_id"}).astype(
        {"user_id": "int64", "item_id": "int64", "rating": "float32", "timestamp": "int64"})
    movies = pd.read_csv(io.BytesIO(read("movies")))
    title, year = split_title_year(movies["title"])
    movies = pd.DataFrame({"item_id": movies["movieId"].astype("int64"), "title": title,
                           "year": year, "genres": movies["genres"].astype(str)})
    tags = pd.read_csv(io.BytesIO(read("tags")))
    tags = tags.rename(columns={"userId": "user_id", "movieId": "item_id"}).astype(
        {"user_id": "int64", "item_id": "int64", "tag": str, "timestamp": "int64"})
    links = pd.read_csv(io.BytesIO(read("links")))
    links = pd.DataFrame({"item_id": links["movieId"].astype("int64"),
                          "imdb_id": links["imdbId"].astype("Int64"),
                          "tmdb_id": links["tmdbId"].astype("Int64")})
    return MovieLens("latest-small", ratings, movies, tags, links, None)


def _parse_100k(read) -> MovieLens:
    ratings = pd.read_csv(io.BytesIO(read("ratings")), sep="\t", header=None,
                          names=["user_id", "item_id", "rating", "timestamp"])
    ratings = ratings.astype({"user_id": "int64", "item_id": "int64", "rating": "float32",
                              "timestamp": "int64"})
    genre_table = pd.read_csv(io.BytesIO(read("genres")), sep="|", header=None,
                              names=["genre", "index"], encoding="latin-1").dropna()
    genre_names = genre_table.sort_values("index")["genre"].tolist()
    item_cols = ["item_id", "title", "release_date", "video_release_date", "imdb_url"] + genre_names
    items = pd.read_csv(io.BytesIO(read("movies")), sep="|", header=None, names=item_cols,
                        encoding="latin-1")
    title, year = split_title_year(items["title"])
    release_year = pd.to_datetime(items["release_date"], format="%d-%b-%Y", errors="coerce").dt.year
    year = year.fillna(release_year.astype("Int64"))
    flags = items[genre_names].to_numpy(dtype=bool)
    genres = ["|".join(g for g, on in zip(genre_names, row) if on and g != "unknown")
              or "(no genres listed)" for row in flags]
    movies = pd.DataFrame({"item_id": items["item_id"].astype("int64"), "title": title,
                           "year": year, "genres": pd.Series(genres, dtype=str)})
    users = pd.read_csv(io.BytesIO(read("users")), sep="|", header=None,
                        names=["user_id", "age", "gender", "occupation", "zip"], dtype={"zip": str})
    users = users.astype({"user_id": "int64", "age": "int64", "gender": str, "occupation": str})
    tags = pd.DataFrame({"user_id": pd.Series(dtype="int64"), "item_id": pd.Series(dtype="int64"),
                         "tag": pd.Series(dtype=str), "timestamp": pd.Series(dtype="int64")})
    na = pd.array([pd.NA] * len(movies), dtype="Int64")
    links = pd.DataFrame({"item_id": movies["item_id"], "imdb_id": na, "tmdb_id": na.copy()})
    return MovieLens("100k", ratings, movies, tags, links, users)


# --------------------------------------------------------------------------- PersonaChat
def load_personachat(split: str = "valid", path: str | Path | None = None) -> pd.DataFrame:
    """Load ConvAI2/PersonaChat (``self_original_no_cands`` view), one row per dialogue.

    Parameters
    ----------
    split : {"valid", "train"}
        ``"valid"`` is in the mirror (1,000 dialogues, 7,801 turns); ``"train"`` needs the
        ConvAI2 archive (downloaded and verified when online).
    path : str or Path, optional
        The ``.txt`` file itself (sha256-checked where the manifest knows it).

    Returns
    -------
    DataFrame
        dialogue_id (int64, 0-based file order), persona (list[str]: the "your persona" facts,
        in order), turns (list of (partner_utterance, self_utterance) tuples, in order).
    """
    txt = fetch("personachat", split, path=path)
    return _parse_personachat_cached(str(txt)).copy()


@functools.lru_cache(maxsize=4)
def _parse_personachat_cached(path: str) -> pd.DataFrame:
    return parse_personachat(path)


def parse_personachat(path: str | Path) -> pd.DataFrame:
    """Parse a ParlAI FB-dialog file: numbered lines, ``1`` starts a dialogue, ``your
    persona: ...`` lines are facts, other lines are ``partner<TAB>self[<TAB>...]``."""
    dialogues: list[dict] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            number, _, text = line.partition(" ")
            if not number.isdigit():
                raise ValueError(f"{path}:{line_no}: expected a line number, got {line[:40]!r}")
            if number == "1" or not dialogues:
                dialogues.append({"dialogue_id": len(dialogues), "persona": [], "turns": []})
            if text.startswith("your persona:"):
                dialogues[-1]["persona"].append(text[len("your persona:"):].strip())
            elif text.startswith("partner's persona:"):
                continue
            else:
                fields = text.split("\t")
                if len(fields) < 2:
                    raise ValueError(f"{path}:{line_no}: expected 'partner<TAB>self', got {text[:60]!r}")
                dialogues[-1]["turns"].append((fields[0], fields[1]))
    frame = pd.DataFrame(dialogues, columns=["dialogue_id", "persona", "turns"])
    return frame.astype({"dialogue_id": "int64"})


# --------------------------------------------------------------------------- LaMP
LAMP_TASKS = (2, 3, 4, 5, 7)


def lamp_spec(task: int, split: str, kind: str) -> FileSpec:
    """The FileSpec of a LaMP file: ``kind`` is ``"questions"`` or ``"outputs"``."""
    info = dataset_info("lamp")
    if int(task) not in LAMP_TASKS:
        raise ValueError(f"LaMP task {task} is not supported; use one of {LAMP_TASKS}")
    if split not in info["splits"]:
        raise ValueError(f"unknown LaMP split {split!r}; use one of {info['splits']}")
    task_dir = info["task_dirs"][str(int(task))]
    url = info["url_template"].format(task_dir=task_dir, split=split, kind=kind)
    path = info["path_template"].format(task=int(task), split=split, kind=kind)
    return FileSpec("lamp", path, url, info["sha256"])


def load_lamp(task: int, split: str = "dev", path: str | Path | None = None) -> pd.DataFrame:
    """Load a LaMP task (user-based split): one row per question with the user's profile.

    Online only (LaMP may not be redistributed and publishes no checksums): files are found
    like every other file (``path`` folder, mirror ``lamp/LaMP_<task>/``, cache, download).

    Parameters
    ----------
    task : {2, 3, 4, 5, 7}
        Movie tagging, product rating, news headline, scholarly title, tweet paraphrasing.
    split : {"train", "dev", "test"}
        ``test`` has no gold outputs (``output`` is None).
    path : str or Path, optional
        A folder holding ``<split>_questions.json`` and ``<split>_outputs.json``.

    Returns
    -------
    DataFrame
        id (str), input (str), profile (list[dict]: the user's documents, fields as in the
        task, e.g. text/title/score/date/id), output (str or None).
    """
    files = {}
    for kind in ("questions", "outputs") if split != "test" else ("questions",):
        spec = lamp_spec(task, split, kind)
        given = None if path is None else Path(path) / Path(spec.path).name
        files[kind] = _resolve(spec, given, None, None)
    return parse_lamp(files["questions"], files.get("outputs")).copy()


def parse_lamp(questions_path: str | Path, outputs_path: str | Path | None = None) -> pd.DataFrame:
    """Parse LaMP's questions JSON (a list of {id, input, profile}) and, if given, its
    outputs JSON ({"task", "golds": [{id, output}]}), matched by id."""
    with open(questions_path, encoding="utf-8") as f:
        questions = json.load(f)
    if not isinstance(questions, list) or not all({"id", "input", "profile"} <= set(q) for q in questions):
        raise ValueError(f"{questions_path}: expected a list of objects with id, input, profile")
    golds: dict[str, str] = {}
    if outputs_path is not None:
        with open(outputs_path, encoding="utf-8") as f:
            outputs = json.load(f)
        golds = {str(g["id"]): g["output"] for g in outputs["golds"]}
        missing = [str(q["id"]) for q in questions if str(q["id"]) not in golds]
        if missing:
            raise ValueError(f"{outputs_path}: no gold output for {len(missing)} question ids, "
                             f"e.g. {missing[:3]}")
    return pd.DataFrame({
        "id": [str(q["id"]) for q in questions],
        "input": [q["input"] for q in questions],
        "profile": [list(q["profile"]) for q in questions],
        "output": [golds.get(str(q["id"])) for q in questions],
    })


def clear_memory_cache() -> None:
    """Forget parsed data sets (e.g. after replacing a file)."""
    _parse_movielens_cached.cache_clear()
    _parse_personachat_cached.cache_clear()


__all__ = [
    "DataError", "IntegrityError", "DataNotFoundError", "FileSpec", "MovieLens",
    "manifest", "dataset_info", "file_spec", "fetch", "download", "extract_member", "verify",
    "sha256sum", "load_movielens", "parse_movielens_zip", "split_title_year", "load_personachat",
    "parse_personachat", "load_lamp", "parse_lamp", "lamp_spec", "clear_memory_cache", "LAMP_TASKS",
]


def source_report():
    """Where each data set of the manifest would come from right now, without downloading:
    a DataFrame with dataset, file, source (explicit mirror / cache / download / online only)
    and license. Used by the overview notebook's environment report."""
    rows = []
    mirror = os.environ.get(MIRROR_ENV)
    for name, info in manifest()["datasets"].items():
        if "archive" not in info:  # LaMP: per-task files, online only
            rows.append(dict(dataset=name, file="(per task)", source="download only (online)",
                             license=info["license"].split(";")[0]))
            continue
        specs = [file_spec(name)] + [file_spec(name, f) for f in info.get("files", {})]
        for spec in specs:
            if mirror and (Path(mirror) / spec.path).is_file():
                source = f"mirror ${MIRROR_ENV}"
            elif (cache_dir() / spec.path).is_file():
                source = "cache data/"
            elif spec.archive is not None:
                continue  # extracted from its archive, listed above
            else:
                source = f"download {spec.url}"
            rows.append(dict(dataset=name, file=spec.path, source=source,
                             license=info["license"].split(";")[0]))
    return pd.DataFrame(rows)
