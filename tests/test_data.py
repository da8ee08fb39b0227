"""p13n_utils.data: real counts through the loaders, integrity errors, offline errors, the
download path (against a local HTTP server), archive extraction and the parsers."""

import copy
import hashlib
import http.server
import io
import socket
import tarfile
import threading
import time
from pathlib import Path

import pandas as pd
import pandas.testing as pdt
import pytest

from p13n_utils import config, data, synthetic

ML_SHA = "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436"
PC_SHA = "7e26e8a266583dfe21fd2df4c651a2831dceeb7c87be9c7bb517974d9979c363"


@pytest.fixture(scope="session")
def real_ml_zip() -> Path:
    """The real MovieLens zip through the normal resolution (mirror or cache), found before any
    test isolates the cache; fails loudly (with instructions) if it is absent."""
    return data.fetch("movielens-latest-small")


@pytest.fixture(scope="session")
def real_pc_txt() -> Path:
    return data.fetch("personachat", "valid")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An empty cache, no mirror, a fresh in-memory cache; returns the cache folder."""
    cache = tmp_path / "cache"
    monkeypatch.setattr(config, "DATA_DIR", cache)
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    monkeypatch.delenv(data.OFFLINE_ENV, raising=False)
    monkeypatch.setattr(data, "BACKOFF", 0.05)
    data.clear_memory_cache()
    yield cache
    data.clear_memory_cache()


def patch_manifest(monkeypatch, dataset, **archive_fields):
    patched = copy.deepcopy(data.manifest())
    patched["datasets"][dataset]["archive"].update(archive_fields)
    monkeypatch.setattr(data, "manifest", lambda: patched)
    return patched


def closed_port_url(name="file.zip"):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def files_in(folder: Path):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --------------------------------------------------------------------------- the real files
def test_movielens_latest_small_counts_and_schema():
    ml = data.load_movielens("latest-small")
    assert len(ml.ratings) == 100_836
    assert ml.ratings["user_id"].nunique() == 610
    assert len(ml.movies) == 9_742
    assert len(ml.tags) == 3_683
    assert ml.users is None
    assert dict(ml.ratings.dtypes.astype(str)) == {"user_id": "int64", "item_id": "int64",
                                                   "rating": "float32", "timestamp": "int64"}
    toy = ml.movies.set_index("item_id").loc[1]
    assert (toy["title"], toy["year"]) == ("Toy Story", 1995)
    assert str(ml.movies["year"].dtype) == "Int64" and ml.movies["year"].isna().any()
    assert set(ml.links.columns) == {"item_id", "imdb_id", "tmdb_id"}
    assert ml.ratings["item_id"].isin(ml.movies["item_id"]).all()
    assert ml.ratings["rating"].between(0.5, 5).all()


def test_personachat_valid_counts_and_schema():
    pc = data.load_personachat("valid")
    assert len(pc) == 1_000
    assert pc["turns"].map(len).sum() == 7_801
    assert list(pc.columns) == ["dialogue_id", "persona", "turns"]
    first = pc.iloc[0]
    assert first["persona"][0] == "i read twenty books a year."
    assert first["turns"][0] == ("hello what are doing today ?",
                                 "i am good , i just got off work and tired , i have two jobs .")
    assert pc["persona"].map(len).between(3, 6).all()


def test_parsed_data_is_cached_in_memory_and_returned_as_copies():
    data.load_movielens()
    hits = data._parse_movielens_cached.cache_info().hits
    first = data.load_movielens()
    first.ratings.loc[0, "rating"] = 99.0
    second = data.load_movielens()
    assert data._parse_movielens_cached.cache_info().hits == hits + 2
    assert second.ratings.loc[0, "rating"] != 99.0


# --------------------------------------------------------------------------- integrity
def test_mirror_file_with_one_byte_changed_is_rejected_and_nothing_is_cached(real_ml_zip, isolated, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "movielens").mkdir(parents=True)
    raw = bytearray(real_ml_zip.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (mirror / "movielens" / "ml-latest-small.zip").write_bytes(bytes(raw))
    monkeypatch.setenv(data.MIRROR_ENV, str(mirror))
    with pytest.raises(data.IntegrityError) as err:
        data.load_movielens()
    message = str(err.value)
    assert "ml-latest-small.zip" in message and ML_SHA in message
    assert hashlib.sha256(raw).hexdigest() in message
    assert "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip" in message
    assert files_in(isolated) == []


def test_corrupted_cache_file_is_deleted(isolated):
    bad = isolated / "movielens" / "ml-latest-small.zip"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a zip")
    with pytest.raises(data.IntegrityError, match="deleted"):
        data.load_movielens()
    assert not bad.exists()


def test_explicit_path_is_verified(real_ml_zip, isolated, tmp_path):
    good = real_ml_zip
    assert len(data.load_movielens(path=good).ratings) == 100_836
    wrong = tmp_path / "other.zip"
    wrong.write_bytes(b"something else")
    with pytest.raises(data.IntegrityError, match=str(wrong)):
        data.load_movielens(path=wrong)
    with pytest.raises(data.DataNotFoundError, match="does not exist"):
        data.load_movielens(path=tmp_path / "missing.zip")


def test_unknown_variant_names_the_valid_ones():
    with pytest.raises(ValueError, match="latest-small"):
        data.load_movielens("20m")


# --------------------------------------------------------------------------- offline
@pytest.mark.parametrize("url, timeout", [(None, "2"), ("http://10.255.255.1/ml.zip", "0.3")])
def test_offline_with_nothing_local_fails_fast_with_instructions(isolated, monkeypatch, url, timeout):
    url = url or closed_port_url("ml-latest-small.zip")
    patch_manifest(monkeypatch, "movielens-latest-small", url=url)
    monkeypatch.setenv("P13N_DOWNLOAD_TIMEOUT", timeout)
    start = time.monotonic()
    with pytest.raises(data.DataNotFoundError) as err:
        data.load_movielens()
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert url in message and ML_SHA in message
    assert str(isolated / "movielens") in message and data.MIRROR_ENV in message
    assert files_in(isolated) == []


def test_offline_switch_skips_the_network(isolated, monkeypatch):
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    start = time.monotonic()
    with pytest.raises(data.DataNotFoundError, match="convai2_fix_723.tgz"):
        data.load_personachat()
    assert time.monotonic() - start < 1


# --------------------------------------------------------------------------- download
class Server:
    """A local HTTP server: ``responses[path]`` is a list of (status, body), served in order
    (the last one repeats)."""

    def __init__(self):
        self.responses, self.hits = {}, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits.append(self.path)
                queue = outer.responses.get(self.path, [(404, b"")])
                status, body = queue.pop(0) if len(queue) > 1 else queue[0]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def test_download_retries_verifies_and_moves_into_place(real_ml_zip, isolated, monkeypatch, server):
    body = real_ml_zip.read_bytes()
    server.responses["/ml.zip"] = [(503, b"busy"), (200, body)]
    patch_manifest(monkeypatch, "movielens-latest-small", url=server.url + "/ml.zip")
    ml = data.load_movielens()
    assert len(ml.ratings) == 100_836
    assert server.hits == ["/ml.zip", "/ml.zip"]
    assert files_in(isolated) == ["ml-latest-small.zip"]  # no temporary files left
    assert data.sha256sum(isolated / "movielens" / "ml-latest-small.zip") == ML_SHA


def test_download_with_wrong_hash_leaves_no_file(isolated, monkeypatch, server):
    server.responses["/ml.zip"] = [(200, b"a truncated or tampered file")]
    patch_manifest(monkeypatch, "movielens-latest-small", url=server.url + "/ml.zip")
    with pytest.raises(data.IntegrityError) as err:
        data.load_movielens()
    assert ML_SHA in str(err.value) and server.url in str(err.value)
    assert files_in(isolated) == []


def test_http_404_is_not_retried(isolated, monkeypatch, server):
    patch_manifest(monkeypatch, "movielens-latest-small", url=server.url + "/gone.zip")
    with pytest.raises(data.DataNotFoundError, match="404"):
        data.load_movielens()
    assert server.hits == ["/gone.zip"]


def test_personachat_is_extracted_from_the_archive_and_verified(real_pc_txt, isolated, tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(real_pc_txt,
                arcname="valid_self_original_no_cands.txt")
    mirror = tmp_path / "mirror"
    (mirror / "personachat").mkdir(parents=True)
    (mirror / "personachat" / "convai2_fix_723.tgz").write_bytes(buffer.getvalue())
    patch_manifest(monkeypatch, "personachat", sha256=hashlib.sha256(buffer.getvalue()).hexdigest())
    monkeypatch.setenv(data.MIRROR_ENV, str(mirror))
    pc = data.load_personachat("valid")
    assert len(pc) == 1_000
    extracted = isolated / "personachat" / "valid_self_original_no_cands.txt"
    assert data.sha256sum(extracted) == PC_SHA
    assert files_in(isolated) == ["valid_self_original_no_cands.txt"]


def test_archive_member_with_wrong_hash_is_not_kept(isolated, tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        fake = tmp_path / "valid_self_original_no_cands.txt"
        fake.write_text("1 your persona: i am fake.\n2 hi\thello\n")
        tar.add(fake, arcname="valid_self_original_no_cands.txt")
    mirror = tmp_path / "mirror"
    (mirror / "personachat").mkdir(parents=True)
    (mirror / "personachat" / "convai2_fix_723.tgz").write_bytes(buffer.getvalue())
    patch_manifest(monkeypatch, "personachat", sha256=hashlib.sha256(buffer.getvalue()).hexdigest())
    monkeypatch.setenv(data.MIRROR_ENV, str(mirror))
    with pytest.raises(data.IntegrityError, match=PC_SHA):
        data.load_personachat("valid")
    assert files_in(isolated) == []


# --------------------------------------------------------------------------- parsers
@pytest.mark.parametrize("variant", ["latest-small", "100k"])
def test_movielens_parser_round_trips_synthetic_zip(tmp_path, variant):
    ml = synthetic.movielens(n_users=12, n_items=30, seed=1, variant=variant)
    path = synthetic.write_movielens_zip(ml, tmp_path / "ml.zip")
    parsed = data.parse_movielens_zip(path, variant, check_members=False)
    for name in ("ratings", "movies", "tags", "links", "users"):
        expected, got = getattr(ml, name), getattr(parsed, name)
        if expected is None:
            assert got is None
        else:
            pdt.assert_frame_equal(got, expected.reset_index(drop=True))
    if variant == "100k":
        assert set(parsed.users.columns) == {"user_id", "age", "gender", "occupation", "zip"}


def test_member_hashes_are_checked(tmp_path):
    ml = synthetic.movielens(seed=2)
    path = synthetic.write_movielens_zip(ml, tmp_path / "ml.zip")
    with pytest.raises(data.IntegrityError, match="ratings.csv"):
        data.parse_movielens_zip(path, "latest-small")


def test_split_title_year():
    titles = pd.Series(["Toy Story (1995)", "Babylon 5", "Fawlty Towers (1975-1979)",
                        "Misérables, Les (1995) "])
    title, year = data.split_title_year(titles)
    assert title.tolist() == ["Toy Story", "Babylon 5", "Fawlty Towers", "Misérables, Les"]
    assert year.tolist()[0] == 1995 and pd.isna(year.iloc[1]) and year.iloc[2] == 1975


def test_personachat_parser_round_trips(tmp_path):
    dialogues = synthetic.personachat(n_dialogues=6, seed=3)
    path = synthetic.write_personachat(dialogues, tmp_path / "pc.txt")
    pdt.assert_frame_equal(data.parse_personachat(path), dialogues)


def test_personachat_parser_rejects_a_malformed_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("1 your persona: i like tea.\n2 no tab here\n")
    with pytest.raises(ValueError, match="bad.txt:2"):
        data.parse_personachat(path)


# --------------------------------------------------------------------------- LaMP
def test_lamp_parser_and_loader_on_a_tiny_file(tmp_path, isolated):
    questions, outputs = synthetic.lamp(n_questions=4, task=4, seed=0)
    folder = synthetic.write_lamp(tmp_path / "LaMP_4", "dev", questions, outputs)
    frame = data.load_lamp(4, "dev", path=folder)
    assert list(frame.columns) == ["id", "input", "profile", "output"]
    assert frame["id"].tolist() == [q["id"] for q in questions]
    assert frame["output"].tolist() == [g["output"] for g in outputs["golds"]]
    assert frame["profile"].iloc[0] == questions[0]["profile"]
    synthetic.write_lamp(tmp_path / "test_split", "test", questions, None)
    assert data.load_lamp(4, "test", path=tmp_path / "test_split")["output"].isna().all()


def test_lamp_missing_gold_is_an_error(tmp_path):
    questions, outputs = synthetic.lamp(n_questions=3)
    outputs["golds"] = outputs["golds"][:-1]
    folder = synthetic.write_lamp(tmp_path, "dev", questions, outputs)
    with pytest.raises(ValueError, match="no gold output for 1"):
        data.parse_lamp(folder / "dev_questions.json", folder / "dev_outputs.json")


def test_lamp_offline_is_a_clear_error(isolated, monkeypatch):
    patched = copy.deepcopy(data.manifest())
    base = closed_port_url("LaMP")
    patched["datasets"]["lamp"]["url_template"] = base + "/{task_dir}/{split}/{split}_{kind}.json"
    monkeypatch.setattr(data, "manifest", lambda: patched)
    start = time.monotonic()
    with pytest.raises(data.DataNotFoundError) as err:
        data.load_lamp(2, "dev")
    assert time.monotonic() - start < 5
    assert base + "/LaMP_2/new/dev/dev_questions.json" in str(err.value)
    assert "no published sha256" in str(err.value)
    with pytest.raises(ValueError, match="2, 3, 4, 5, 7"):
        data.lamp_spec(1, "dev", "questions")


def test_manifest_entries_are_complete():
    for name, entry in data.manifest()["datasets"].items():
        assert entry["license"] and entry["citation"], name
        if "archive" in entry:
            assert entry["archive"]["url"].startswith("http") and entry["archive"]["path"]
    assert data.file_spec("movielens-latest-small").sha256 == ML_SHA
    assert data.file_spec("personachat", "valid").sha256 == PC_SHA


def test_source_report_names_mirror_cache_or_download(tmp_path, monkeypatch):
    monkeypatch.setenv("P13N_DATA_MIRROR", str(tmp_path / "empty-mirror"))
    monkeypatch.setattr(data.config, "DATA_DIR", tmp_path / "cache")
    report = data.source_report()
    assert set(report["dataset"]) == set(data.manifest()["datasets"])
    ml = report[report["file"] == "movielens/ml-latest-small.zip"]["source"].item()
    assert ml.startswith("download https://files.grouplens.org")
    (tmp_path / "empty-mirror" / "movielens").mkdir(parents=True)
    (tmp_path / "empty-mirror" / "movielens" / "ml-latest-small.zip").write_bytes(b"x")
    report = data.source_report()
    assert report[report["file"] == "movielens/ml-latest-small.zip"]["source"].item() == \
        "mirror $P13N_DATA_MIRROR"
