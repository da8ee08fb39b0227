"""Paths, run sizes, device choice, seeds and CPU threading.

Every size a notebook uses lives in :data:`SIZES`, one line per knob with its value in each
run size, so that switching ``RUN_SIZE`` between ``smoke`` (CI, seconds), ``default`` (the
tutorial on a 2-core CPU, minutes) and ``full`` (a GPU, every user) changes nothing else.

A notebook starts with::

    RUN_SIZE = None                     # the cell tagged "parameters"; papermill overrides it
    cfg = config.setup(RUN_SIZE)        # resolves the run size, seeds, threads, device
    cfg["rec.factors"]                  # any size from the table
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------- paths
REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
DATA_DIR = Path(os.environ.get("P13N_DATA_DIR", REPO_ROOT / "data"))
BUILD_DIR = Path(os.environ.get("P13N_BUILD_DIR", REPO_ROOT / "build"))
CACHE_DIR = Path(os.environ.get("P13N_CACHE_DIR", BUILD_DIR / "cache"))


def figures_dir() -> Path:
    """Where notebooks write figures: env ``P13N_FIGURES_DIR`` (tests point it at a temp
    folder so a smoke run never overwrites the committed figures), else ``figures/``."""
    path = Path(os.environ.get("P13N_FIGURES_DIR", REPO_ROOT / "figures"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def display_path(path: str | Path) -> str:
    """``path`` relative to the repository (``build/cache/...``) when it lies inside it, else as
    given: for messages and notebook outputs that must not show a machine's absolute paths."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename, so
    that a reader (or a crash) never sees a half-written file. Creates the folder."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode, encoding = ("wb", None) if isinstance(data, bytes) else ("w", "utf-8")
    with tempfile.NamedTemporaryFile(mode, dir=path.parent, suffix=".tmp", delete=False,
                                     encoding=encoding) as f:
        f.write(data)
    os.chmod(f.name, 0o644)  # NamedTemporaryFile creates 0600 files
    os.replace(f.name, path)
    return path


@contextlib.contextmanager
def atomic_folder(directory):
    """Write a folder atomically: yields a temporary folder next to ``directory``; when the block
    ends without error it replaces ``directory`` (an older version is removed only then), and
    on an error nothing is left behind and the older version stays in place.

    Example: ``with atomic_folder(path) as tmp: (tmp / "weights.bin").write_bytes(data)``.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    old = None
    try:
        yield tmp
        tmp.chmod(0o755)                  # mkdtemp creates 0700 folders
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}-{time.time_ns()}")
            directory.rename(old)
        tmp.rename(directory)
    except BaseException:
        if old is not None and not directory.exists():
            old.rename(directory)         # put the previous version back
            old = None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- run sizes
# The run-size knob is called RUN_SIZE (not "profile": that word means a *user profile* here).
SIZE_NAMES = ("smoke", "default", "full")
DEFAULT_SIZE = "default"

# One line per knob: (smoke, default, full). ``None`` means "all of it".
# Keep the lines grouped by the notebook that reads them.
SIZES: dict[str, tuple[Any, Any, Any]] = {
    # shared
    "seed": (0, 0, 0),
    "bootstrap.n_resamples": (200, 2000, 5000),
    # 00_overview: nothing to size
    # 01_user_data
    "data.example_users": (1, 3, 3),
    # the held-out data every later notebook shares: the same in every run size on purpose
    "data.ml_test_per_user": (5, 5, 5),  # MovieLens: each user's last 5 ratings are test
    "data.cold_users_frac": (0.2, 0.2, 0.2),  # MovieLens: users held out whole (cold start)
    "data.pc_test_turns": (1, 1, 1),  # PersonaChat: last turn of each dialogue is test
    "data.pc_val_turns": (1, 1, 1),  # ... and the turn before it is validation
    # 02_global_preference: the evaluation sets of the ladder (02-07 share them, p13n_utils.tasks)
    "tasks.pc_users": (4, None, None),  # PersonaChat users (characters) evaluated; None: all 100
    "tasks.pc_dialogues_per_user": (1, 2, None),  # held-out dialogues per user; None: all (~10)
    "tasks.pc_gen_users": (3, 100, None),  # users with a generated reply (rougeL, persona_sim)
    "tasks.ml_users": (5, 100, None),  # MovieLens users in the rating task; None: all 610
    "tasks.ml_per_user": (3, 3, 3),  # held-out ratings per user (test; as many for validation)
    "tasks.topk_k": (10, 10, 10),  # cut-off of the movielens-topk metrics
    "lm.batch_size": (8, 16, 64),  # prompts per forward pass
    "lm.dtype": ("auto", "auto", "auto"),  # LM weights in 02-05 (inference): auto = bfloat16 where native
    "lm.max_new_tokens": (24, 24, 32),  # length of a generated PersonaChat reply
    # 03_persona_level
    "personas.pc_k_grid": ((1, 2, 4), (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 50),
                           (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 50)),  # PersonaChat k tried
    "personas.min_users": (2, 5, 5),  # smallest persona allowed (users); picks the PersonaChat k
    "personas.n_facts": (4, 4, 4),  # central facts in a PersonaChat persona description
    "personas.ml_k_grid": ((1, 2, 4), (1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 30),
                           (1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 30, 40)),  # MovieLens k tried on validation
    # 04_user_prompting: 02's evaluation sets (smoke: a nested subset of them)
    "p04.pc_users": (3, None, None),  # PersonaChat users scored here (None: every evaluated user)
    "p04.pc_dialogues_per_user": (1, None, None),  # of each user's evaluated dialogues (None: all)
    "p04.ml_users": (3, None, None),  # MovieLens users scored here (None: every evaluated user)
    "p04.ml_ratings_per_user": (1, None, None),  # of each user's held-out ratings (None: all)
    "p04.ml_context_ratings": (4, 8, 8),  # most recent ratings in the contextual prompt
    "p04.summary_tokens": (12, 40, 48),  # max new tokens of an LM-written profile summary
    "p04.gen_users": (2, 100, None),  # users with generated replies (rougeL, persona_sim)
    # 05_user_rag: the k sweep costs 17 prompts per item and split (4 retrievers x 4 k > 0, + global)
    "p05.pc_users": (2, None, None),  # PersonaChat users in the sweep (None: every evaluated user)
    "p05.pc_dialogues_per_user": (1, 1, None),  # held-out dialogues per user in the sweep
    "p05.ml_users": (2, None, None),  # MovieLens users in the sweep (None: every evaluated user)
    "p05.ml_ratings_per_user": (1, 1, None),  # held-out ratings per user in the sweep
    "p05.k_values": ((0, 1), (0, 1, 2, 4, 8), (0, 1, 2, 4, 8, 16, 32)),  # retrieved items per prompt
    "p05.val_users": (2, 40, None),  # of those users, the ones whose validation items choose k
    # 06_user_finetuning (owned by the 06 notebook; add its knobs here)
    "p06.ml_users": (3, 24, None),  # MovieLens users evaluated (spread over history length; None: all)
    "p06.ml_ratings_per_user": (1, None, None),  # of each user's 3 test ratings (None: all)
    "p06.pc_users": (2, 24, 50),  # PersonaChat users evaluated; the others are the training users
    "p06.pc_dialogues_per_user": (1, 1, None),  # held-out dialogues per evaluated user (None: all)
    "p06.pc_oppu_users": (2, 12, None),  # of those, users with an adapter of their own (None: all)
    "p06.batch_size": (1, 4, 16),  # examples per training step (every trainer)
    "p06.full_steps": (1, 6, 200),  # full fine-tuning steps (one pass over steps x batch examples)
    "p06.global_steps": (1, 10, 200),  # shared LoRA steps
    "p06.persona_steps": (1, 2, 50),  # steps of each persona's LoRA (on top of the shared one)
    "p06.user_steps": (1, 3, 30),  # steps of each user's LoRA (OPPU, on top of the shared one)
    "p06.soft_steps": (1, 12, 300),  # soft-prompt steps (all users jointly)
    "p06.min_pairs": (1, 8, 8),  # fewer training pairs: no adapter of one's own (global fallback)
    "p06.lora_r": (8, 8, 16),  # LoRA rank (alpha = 2 r) on q, k, v, o
    "p06.lora_lr": (1e-3, 1e-3, 5e-4),
    "p06.full_lr": (3e-5, 3e-5, 1e-5),
    "p06.soft_lr": (1e-2, 1e-2, 1e-2),
    "p06.n_virtual": (2, 8, 16),  # virtual tokens per user (soft prompt)
    "p06.ml_persona_k": (4, 10, 10),  # MovieLens genre personas (03's choice in the default size)
    "p06.rag_k": (2, 8, 8),  # retrieved past ratings in the OPPU + RAG prompt (05's best k)
    # 07_preference_alignment (owned by the 07 notebook; add its knobs here)
    "p07.pc_train_turns": (60, 2000, None),  # PersonaChat training turns -> preference pairs (None: all)
    "p07.ml_train_users": (20, 300, None),  # MovieLens users (not evaluated) whose pairs train rewards
    "p07.ml_window": (10, 10, 10),  # MovieLens: held-out ratings per window (test = last, val = before)
    "p07.ml_pairs_per_user": (2, 4, 4),  # (liked, disliked) pairs per user and window
    "p07.pc_personas": (2, 4, 6),  # persona clusters (reward heads, DPO adapters) for PersonaChat
    "p07.ml_personas": (2, 8, 8),  # genre personas (reward heads) for MovieLens
    "p07.max_facts": (5, 5, None),  # user facts in a user-conditioned prompt (None: all)
    "p07.dpo_users": (2, 40, None),  # PersonaChat users whose held-out pair the LM scores (one dialogue each)
    "p07.dpo_steps": (1, 12, 80),  # steps of the global and of the user-conditioned DPO adapter
    "p07.dpo_persona_steps": (1, 3, 20),  # steps of each persona's DPO adapter
    "p07.dpo_batch": (1, 4, 8),  # preference pairs per DPO step
    "p07.rl_steps": (1, 5, 60),  # RL (policy-gradient) steps of the global and the user-conditioned policy
    "p07.rl_persona_steps": (1, 2, 15),  # RL steps of each persona's policy
    "p07.rl_hack_steps": (1, 5, 60),  # RL steps of the reward-hacking demonstration (KL coefficient 0)
    "p07.rl_prompts": (2, 2, 8),  # training prompts per RL step
    "p07.rl_k": (2, 4, 8),  # replies sampled per prompt (the group of RLOO / GRPO)
    "p07.rl_new_tokens": (8, 16, 32),  # longest sampled reply (tokens)
    "p07.rl_eval_samples": (1, 1, 4),  # replies sampled per held-out prompt (reward, KL)
    "p07.soup_temperatures": ((0.05,), (0.02, 0.05, 0.2), (0.01, 0.02, 0.05, 0.1, 0.2)),  # merge sweep
    # 08_recommendation
    "rec.n_items": (400, None, None),  # keep the N most-rated movies (None: the whole catalog)
    "rec.n_users": (60, None, None),  # sample N users (None: every user)
    "rec.als_factors": ((16,), (8, 16, 32, 64), (8, 16, 32, 64, 128)),  # ALS tuning grid
    "rec.bpr_factors": ((16,), (16, 32, 64), (16, 32, 64, 128)),  # BPR tuning grid
    "rec.als_iterations": (3, 15, 15),
    "rec.bpr_iterations": (10, 100, 200),
    "rec.persona_k": ((4,), (4, 8, 16), (4, 8, 16, 32)),  # genre-persona counts tried
    "rec.llm_users": (2, 30, 200),  # test users whose CF candidates the LM reranks / profiles
    "rec.rerank_candidates": (5, 20, 20),  # top-N of the best CF model the LM reranks
    "rec.profile_tokens": (16, 32, 60),  # max new tokens of an LM-written user profile
    # 12_your_own_user (a round must stay interactive: ~20 s on a 2-core CPU)
    "p12.pc_k": (4, 10, 10),  # PersonaChat fact personas the learner's facts are matched to
    "p12.ml_k": (4, 8, 8),  # MovieLens genre personas the learner's ratings are matched to
    "p12.n_items": (400, None, None),  # catalog: the N most-rated movies (None: all of latest-small)
    "p12.rag_k": (2, 2, 2),  # own facts retrieved for the user-RAG reply
    "p12.max_new_tokens": (16, 24, 32),  # length of each reply and of the LM-written taste profile
    # 09_evaluation: text metrics reuse 02-04's generation sizes; judge and tagging (text_metrics, judge, tagging)
    "p09.judge_users": (4, 60, None),  # PersonaChat users whose known-answer pair the LM judges (both orders)
    "p09.tag_min_tags": (3, 3, 3),  # MovieLens tagging: users with at least this many candidate-tag assignments
    "p09.tag_test_per_user": (2, 2, 2),  # ... whose latest assignments are held out
    "p09.tag_candidates": (15, 15, 15),  # candidate tags (LaMP-2 uses 15)
    "p09.tag_persona_k": (4, 10, 10),  # genre personas of the persona rung (03's MovieLens K in the default size)
    "p09.tag_lm_instances": (4, None, None),  # held-out assignments the LM tags (two prompts each: with and without history)
    "p09.lamp_questions": (20, 200, None),  # LaMP-2 dev questions (when the files are there)
    # 10_open_problems
    "p10.history_grid": ((0, 1, 4), (0, 1, 2, 4, 8, 16, 32), (0, 1, 2, 4, 8, 16, 32)),  # items of history kept
    "p10.lm_users": (2, 16, None),  # users whose ratings the LM predicts at each history length (None: all)
    "p10.lm_grid": ((0, 1), (0, 1, 2, 4, 8), (0, 1, 2, 4, 8, 16, 32)),  # history lengths the LM sees
    "p10.rag_k": (1, 2, 4),  # retrieved ratings in the cold-start RAG prompt (from the n kept)
    "p10.persona_k": (4, 10, 10),  # MovieLens genre personas (03's choice in the default size)
    "p10.cold_users": (30, None, None),  # held-out new users in the ALS fold-in curve (None: all)
    "p10.rec_items": (400, None, None),  # keep the N most-rated movies in the recommender labs (None: all)
    "p10.drift_edges": ((0, 30, 365), (0, 1, 30, 180, 365, 730), (0, 1, 30, 180, 365, 730)),  # gap windows (days)
    "p10.half_lives": ((30, 365), (7, 30, 90, 365, 1095), (7, 30, 90, 365, 1095)),  # recency weighting (days)
}


def validate_size(name: str) -> str:
    """Return ``name`` if it is a known run size, else raise a ValueError listing them."""
    if name not in SIZE_NAMES:
        raise ValueError(
            f"unknown run size {name!r}; valid sizes: {', '.join(SIZE_NAMES)} "
            "(set it with papermill -p RUN_SIZE <name>, the runner's --size or the env variable "
            "P13N_RUN_SIZE)"
        )
    return name


def resolve_size(size: str | None = None) -> str:
    """The run size to use: the explicit value (papermill parameter), else env
    ``P13N_RUN_SIZE``, else ``default``."""
    name = size or os.environ.get("P13N_RUN_SIZE") or DEFAULT_SIZE
    return validate_size(name)


@dataclass(frozen=True)
class RunSize:
    """The sizes of one run size; index it like a dict: ``cfg["rec.factors"]``."""

    name: str
    sizes: dict[str, Any] = field(repr=False)
    device: str = "cpu"
    seed: int = 0

    def __getitem__(self, key: str) -> Any:
        try:
            return self.sizes[key]
        except KeyError:
            raise KeyError(f"no size {key!r} in the sizes table (p13n_utils.config.SIZES)") from None

    def get(self, key: str, default: Any = None) -> Any:
        return self.sizes.get(key, default)


def get_sizes(size: str | None = None) -> RunSize:
    """The sizes of run size ``size`` (resolved as in :func:`resolve_size`)."""
    name = resolve_size(size)
    column = SIZE_NAMES.index(name)
    sizes = {key: values[column] for key, values in SIZES.items()}
    return RunSize(name=name, sizes=sizes, device=get_device(), seed=sizes["seed"])


# --------------------------------------------------------------------------- device
def get_device(override: str | None = None) -> str:
    """``cuda`` > ``mps`` > ``cpu``; ``override`` or env ``P13N_DEVICE`` forces one."""
    choice = override or os.environ.get("P13N_DEVICE")
    if choice:
        if choice.split(":")[0] not in ("cuda", "mps", "cpu"):
            raise ValueError(f"unknown device {choice!r}; use cuda, cuda:N, mps or cpu")
        return choice
    try:
        import torch
    except ImportError:  # the data notebooks run without torch
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


# --------------------------------------------------------------------------- seeds, threads
def set_seed(seed: int = 0) -> None:
    """Seed python, numpy and (if installed) torch."""
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    import numpy as np

    np.random.seed(seed)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def limit_threads(n_threads: int | None = None) -> int:
    """Keep libraries from oversubscribing a small CPU.

    torch gets ``n_threads`` (default: every core) for its own kernels; BLAS (numpy, scipy,
    implicit) gets one thread, because implicit parallelises over users itself and warns (and
    slows down) when BLAS threads compete with it. Returns the torch thread count."""
    n_threads = n_threads or os.cpu_count() or 1
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    try:
        import torch
    except ImportError:
        return n_threads
    torch.set_num_threads(n_threads)
    return n_threads


def setup(size: str | None = None) -> RunSize:
    """What every notebook calls first: resolve the run size, seed, limit threads, pick the
    device, quiet noisy libraries. Returns the :class:`RunSize`."""
    cfg = get_sizes(size)
    set_seed(cfg.seed)
    limit_threads()
    quiet_libraries()
    return cfg


def quiet_libraries() -> None:
    """Silence the warnings and progress spam that would clutter committed outputs."""
    import logging
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("transformers", "sentence_transformers", "peft", "trl", "bm25s", "implicit"):
        logging.getLogger(name).setLevel(logging.ERROR)
