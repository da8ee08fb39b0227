"""The disk cache, the embeddings kept through it, and the model fingerprint (p13n_utils.cache)."""

import json

import numpy as np

from p13n_utils import cache, config


def test_memo_computes_once_per_payload_and_writes_json(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)
    calls = []
    compute = lambda: calls.append(1) or [1.5, 2]  # noqa: E731
    assert cache.memo("k", {"a": 1}, compute) == [1.5, 2]
    assert cache.memo("k", {"a": 1}, compute) == [1.5, 2] and len(calls) == 1
    cache.memo("k", {"a": 2}, compute)
    assert len(calls) == 2
    path = tmp_path / "lm" / f"k-{cache.payload_key({'a': 1})}.json"
    assert len(list(tmp_path.glob("lm/k-*.json"))) == 2 and json.loads(path.read_text()) == [1.5, 2]
    cache.memo("k", {"a": 1}, compute, cache=False)
    assert len(calls) == 3


class _FakeEmbedder:
    def __init__(self):
        self.calls = 0

    def encode(self, texts, batch_size, normalize_embeddings, show_progress_bar):
        self.calls += 1
        vectors = np.array([[len(t), 1.0] for t in texts])
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True) if normalize_embeddings else vectors


def test_embed_caches_the_default_embedder_bit_for_bit(tmp_path, monkeypatch):
    from p13n_utils import config, models

    fake = _FakeEmbedder()
    monkeypatch.setattr(models, "load_embedder", lambda: fake)
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)
    first = cache.embed(["a", "bbb"])
    again = cache.embed(["a", "bbb"])
    assert fake.calls == 1 and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-6)
    cache.embed(["a", "bbb", "c"])
    assert fake.calls == 2  # other texts, other cache entry
    cache.embed(["a"], embedder=fake)  # a caller's embedder is never cached
    cache.embed(["a"], embedder=fake)
    assert fake.calls == 4




def test_embed_normalises_a_plain_function_and_stores_exact_float32(tmp_path, monkeypatch):
    from p13n_utils import models

    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)
    vectors = cache.embed(["ab", "c"], embedder=lambda texts: [[3.0, 4.0], [0.0, 2.0]])
    np.testing.assert_allclose(vectors, [[0.6, 0.8], [0.0, 1.0]], rtol=1e-6)
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(3, 5)).astype(np.float32)

    class Exact:
        def encode(self, texts, **kw):
            return raw[: len(texts)]

    monkeypatch.setattr(models, "load_embedder", lambda: Exact())
    first = cache.embed(["x", "y", "z"])
    assert list(tmp_path.glob("embeddings/embed-*.json"))
    monkeypatch.setattr(models, "load_embedder", lambda: None)   # a second call must not encode
    np.testing.assert_array_equal(cache.embed(["x", "y", "z"]), raw)
    np.testing.assert_array_equal(first, raw)
