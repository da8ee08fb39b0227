"""One disk cache for everything the series computes more than once, and one model fingerprint.

* :func:`fingerprint` — a short hash of a model's weights (and, for a peft model, which
  adapters are active), so that a fine-tuned copy never reuses the base model's outputs and an
  adapter can check that it is loaded on the base it was trained on (``adapters=False``).
* :func:`memo` — ``compute()`` once, then read it back: JSON files under
  ``config.CACHE_DIR/<folder>/<kind>-<hash of the payload>.json``, written atomically
  (:func:`config.atomic_write`), so that a crash never leaves a half-written entry.

* :func:`embed` — unit-norm sentence embeddings; the default embedder's are kept through
  :func:`memo` (the float32 bytes, base64 in the JSON, so they come back bit for bit).

LM scores, generated replies, LM-written profiles and embeddings all go through :func:`memo`;
``cache=False`` turns it off for one call.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Callable, Sequence

import numpy as np

from . import config

__all__ = ["fingerprint", "memo", "payload_key", "embed"]


def fingerprint(model, adapters: bool = True) -> str:
    """A 16-hex-digit hash of ``model``'s weights.

    Each parameter tensor contributes its name, shape, and the float64 sum and sum of squares
    of about 4,096 evenly strided entries (all of a small tensor such as a LoRA matrix),
    summed on the CPU so the hash does not depend on the device: a fraction of a second for a
    135M model, and any training step changes it.

    adapters : True (for caching outputs): LoRA weights count, and so does which adapter is
        active or whether adapters are disabled. False (for checking an adapter's base): only the
        base weights count, under names with peft's prefixes removed.
    """
    import torch

    digest = hashlib.sha256()
    if adapters:
        name = getattr(getattr(model, "config", None), "_name_or_path", type(model).__name__)
        digest.update(str(name).encode())
        if hasattr(model, "peft_config"):
            # A peft model holds several adapters at once: which one is active (or whether all
            # are turned off) changes the outputs without changing the parameters.
            disabled = any(getattr(m, "disable_adapters", False) for m in model.modules())
            digest.update(f"active={getattr(model, 'active_adapters', None)}:off={disabled}".encode())
    with torch.no_grad():
        for key, param in model.named_parameters():
            if not adapters and "lora_" in key:
                continue
            flat = param.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 4096)].double().cpu()
            label = key if adapters else ""
            digest.update(f"{label}:{tuple(param.shape)}:{sample.sum().item():.12e}:"
                          f"{sample.square().sum().item():.12e}".encode())
    return digest.hexdigest()[:16]


def payload_key(payload) -> str:
    """The 24-hex-digit hash that names a cache entry: sha256 of the payload as sorted JSON."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def memo(kind: str, payload: dict, compute: Callable[[], object], cache: bool = True,
         folder: str = "lm"):
    """Return ``compute()``, stored as JSON under ``CACHE_DIR/<folder>/<kind>-<hash>.json``.

    ``payload`` must hold everything the result depends on (a model :func:`fingerprint`, the
    exact prompts, the settings); ``compute()`` must return something JSON can hold (lists,
    not arrays). ``cache=False`` just calls ``compute()``."""
    if not cache:
        return compute()
    path = config.CACHE_DIR / folder / f"{kind}-{payload_key(payload)}.json"
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    value = compute()
    config.atomic_write(path, json.dumps(value))
    return value


def embed(texts: Sequence[str], embedder=None, batch_size: int = 64, cache: bool = True) -> np.ndarray:
    """Unit-norm sentence embeddings of ``texts``, ``(len(texts), dim)`` float32.

    embedder : None (the default, all-MiniLM-L6-v2 from :func:`p13n_utils.models.load_embedder`),
        a sentence-transformers model (anything with ``encode(texts, normalize_embeddings=True)``),
        or a function ``texts -> (n, d) array`` whose rows are normalised here (tests).
    cache : with the default embedder, the vectors are stored through :func:`memo` under
        ``CACHE_DIR/embeddings``, keyed by the embedder's name and the texts. A caller-supplied
        embedder is never cached (we could not tell two models apart).
    """
    from . import models

    texts = [str(t) for t in texts]
    cache = cache and embedder is None
    if embedder is None:
        embedder = models.load_embedder()

    def compute():
        if hasattr(embedder, "encode"):
            vectors = np.asarray(embedder.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                                 show_progress_bar=False), dtype=np.float32)
        else:
            vectors = np.asarray(embedder(texts), dtype=np.float32)
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        if not cache:
            return vectors
        return {"shape": list(vectors.shape), "float32": base64.b64encode(vectors.tobytes()).decode()}

    stored = memo("embed", {"embedder": models.DEFAULT_EMBEDDER, "texts": texts}, compute, cache=cache,
                  folder="embeddings")
    if not cache:
        return stored
    return np.frombuffer(base64.b64decode(stored["float32"]), dtype=np.float32).reshape(stored["shape"]).copy()
