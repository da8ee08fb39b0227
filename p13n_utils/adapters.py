"""The adapter lifecycle: add a LoRA adapter, switch, merge, save, load, store one per user, and
what it costs.

- :func:`add_lora` wraps a model with a fresh LoRA adapter (``W + (alpha / r) B A``, B = 0 at
  first); :func:`use_adapter` switches the active one for a block; :func:`merge_into_base` folds
  one into the weights (the "global" model OPPU trains per-user adapters on);
  :func:`merge_adapters` mixes several (Personalized Soups); :func:`plain_model` removes all.
- :func:`save_adapter` writes an adapter atomically (:func:`p13n_utils.config.atomic_folder`) with the base model's
  :func:`base_signature`; :func:`load_adapter` checks it against the model it is loaded into
  (:class:`AdapterMismatchError`); :class:`AdapterStore` keeps one folder per user and switches
  users without reloading the base model.
- Costs: :func:`count_parameters`, :func:`model_bytes`, :func:`folder_bytes`,
  :func:`adapter_cost` (one row of the cost table) and :func:`extrapolate_cost` (10^3 / 10^6 users).

Bad input: an adapter asked for a user who has none raises ``KeyError`` naming the users that
have one; an adapter saved for another base model (other shapes, or other weights, e.g. a user
adapter trained on top of the global adapter loaded into the plain base model) raises
:class:`AdapterMismatchError` saying what differs; a save that fails half-way leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from . import config
from .cache import fingerprint

__all__ = [
    "DEFAULT_TARGET_MODULES", "ADAPTER_META", "AdapterMismatchError", "is_peft", "has_injected_adapters",
    "add_lora", "adapter_params", "merge_into_base", "use_adapter", "merge_adapters", "plain_model", "base_model",
    "base_signature", "folder_bytes", "save_adapter", "load_adapter", "AdapterStore",
    "count_parameters", "model_bytes", "adapter_cost", "extrapolate_cost",
]

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
"""The attention projections of Llama-style models (SmolLM2, Qwen, Llama), where LoRA goes."""
ADAPTER_META = "p13n_adapter.json"
"""File written next to peft's files by :func:`save_adapter`: the base model's signature."""


class AdapterMismatchError(ValueError):
    """An adapter does not fit the model it is loaded into (other base model or other weights)."""


# =========================================================================== LoRA adapters
def is_peft(model) -> bool:
    """Whether ``model`` is a peft model (holds adapters)."""
    from peft import PeftModel

    return isinstance(model, PeftModel)


def has_injected_adapters(model) -> bool:
    """Whether ``model`` (e.g. the base inside a peft model) carries adapter layers."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(module, BaseTunerLayer) for module in model.modules())


def add_lora(model, adapter_name: str = "default", r: int = 8, alpha: float = 16,
             target_modules: Sequence[str] = DEFAULT_TARGET_MODULES, dropout: float = 0.0, seed: int = 0):
    """Add a fresh LoRA adapter (``W + (alpha / r) B A``, B = 0 at first) and make it the active one.

    Parameters
    ----------
    model
        A transformers model (wrapped into a peft model, **in place**: pass a private copy,
        ``load_lm(fresh=True)``) or a peft model returned by an earlier call (the adapter is
        added next to the existing ones).
    adapter_name : str
        Must be new, e.g. ``"global"``, ``"persona_3"``, ``"user_42"``.
    r, alpha, target_modules, dropout
        The LoRA rank, scale numerator, modules adapted and dropout.
    seed : int
        Seeds torch before the (random) initialisation of A.

    Returns
    -------
    peft.PeftModel
    """
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=dropout,
                      bias="none", task_type="CAUSAL_LM")
    torch.manual_seed(seed)
    if is_peft(model):
        if adapter_name in model.peft_config:
            raise ValueError(f"the model already has an adapter named {adapter_name!r} "
                             f"(adapters: {list(model.peft_config)}); choose another name or delete_adapter it")
        model.add_adapter(adapter_name, lora)
    else:
        if has_injected_adapters(model):
            raise ValueError("this model already carries peft adapters: pass the peft model returned by the "
                             "first train_lora/add_lora call, not the base model it wraps")
        with warnings.catch_warnings():      # a transformers deprecation peft triggers, not ours
            warnings.simplefilter("ignore", FutureWarning)
            model = get_peft_model(model, lora, adapter_name=adapter_name)
    model.set_adapter(adapter_name)
    return model


def adapter_params(model, adapter_name: str) -> list:
    """The parameters of one adapter (``KeyError`` if it has none)."""
    params = [p for name, p in model.named_parameters() if f".{adapter_name}." in name]
    if not params:
        raise KeyError(f"no parameters for adapter {adapter_name!r}; adapters: {list(model.peft_config)}")
    return params


def merge_into_base(model, adapter_name: str):
    """Fold one adapter into the weights and drop every adapter: the plain model that results
    is the "global" model on top of which per-user adapters are trained (OPPU).

    Returns
    -------
    transformers.PreTrainedModel
        The base model object, its weights now ``W + (alpha / r) B A``.
    """
    if not is_peft(model) or adapter_name not in model.peft_config:
        known = list(model.peft_config) if is_peft(model) else []
        raise KeyError(f"no adapter {adapter_name!r} to merge; the model's adapters: {known}")
    model.set_adapter(adapter_name)
    return model.merge_and_unload(adapter_names=[adapter_name])


@contextlib.contextmanager
def use_adapter(model, adapter_name: str | None):
    """Within the block, ``adapter_name`` is the active adapter (None: all adapters disabled,
    i.e. the base model); the previously active adapter is restored afterwards.

    Example: ``with use_adapter(model, "user_7"): tasks.score_personachat(model, ..., cache=False)``.
    """
    if adapter_name is None:
        with model.disable_adapter():
            yield model
        return
    if adapter_name not in model.peft_config:
        raise KeyError(f"no adapter {adapter_name!r} is loaded; loaded adapters: {list(model.peft_config)}")
    previous = model.active_adapter
    model.set_adapter(adapter_name)
    try:
        yield model
    finally:
        model.set_adapter(previous)


def merge_adapters(model, adapter_names: Sequence[str], weights: Sequence[float], new_name: str,
                   combination_type: str = "cat"):
    """Mix LoRA adapters into a new one, ``delta W = sum_i w_i * delta W_i``, and activate it.

    Parameters
    ----------
    model : peft.PeftModel
        Holding the adapters (e.g. one DPO adapter per persona).
    adapter_names : list of str
    weights : list of float
        One per adapter (a user's mixture over personas; need not sum to 1).
    new_name : str
        The merged adapter's name; an older adapter of that name is replaced (handy in a sweep
        over weights).
    combination_type : {"cat", "linear", "svd"}, default "cat"
        ``"cat"`` stacks the low-rank factors (rank = sum of ranks) and is *exact*: its update is
        exactly the weighted sum of the adapters' updates. ``"linear"`` averages the A and the B
        matrices separately (same rank), which adds cross terms ``B_i A_j``: exact only when a
        single weight is non-zero. ``"svd"`` truncates the exact sum to the largest rank.

    Returns
    -------
    peft.PeftModel
        With ``new_name`` active.
    """
    if len(adapter_names) != len(weights) or not adapter_names:
        raise ValueError(f"give one weight per adapter: {len(adapter_names)} adapters, {len(weights)} weights")
    missing = [name for name in adapter_names if name not in model.peft_config]
    if missing:
        raise KeyError(f"adapters {missing} are not loaded; loaded adapters: {list(model.peft_config)}")
    if new_name in adapter_names:
        raise ValueError(f"new_name {new_name!r} must differ from the adapters being merged")
    if new_name in model.peft_config:
        if model.active_adapter == new_name:
            model.set_adapter(adapter_names[0])
        model.delete_adapter(new_name)
    model.add_weighted_adapter(list(adapter_names), [float(w) for w in weights], new_name,
                               combination_type=combination_type)
    model.set_adapter(new_name)
    return model
def plain_model(model):
    """The transformers model inside ``model`` with every adapter removed (not merged): the
    base again, e.g. after the per-persona adapters were scored. A plain model is returned as is."""
    if not is_peft(model):
        return model
    return model.unload()




# =========================================================================== saving and loading
def base_model(model):
    """The transformers model inside a peft model (the model itself if it is plain)."""
    if not is_peft(model):
        return model
    try:
        return model.get_base_model()
    except KeyError:                      # every adapter was deleted: peft's lookup of the active one fails
        return model.base_model.model


def base_signature(model) -> dict:
    """What an adapter must agree with: the base model's name, architecture and weights.

    Returns
    -------
    dict
        ``name`` (last part of the model's path or id), ``model_type``, ``hidden_size``,
        ``num_hidden_layers``, ``vocab_size`` and ``weights`` (a fingerprint of the base weights,
        adapters excluded).
    """
    config = base_model(model).config
    name = str(getattr(config, "_name_or_path", "") or config.model_type)
    return {"name": Path(name).name or name, "model_type": config.model_type,
            "hidden_size": getattr(config, "hidden_size", None),
            "num_hidden_layers": getattr(config, "num_hidden_layers", None),
            "vocab_size": getattr(config, "vocab_size", None), "weights": fingerprint(model, adapters=False)}


def folder_bytes(path) -> int:
    """Total size of the files under ``path`` (bytes)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def save_adapter(model, adapter_name: str, directory, extra: dict | None = None) -> Path:
    """Save one adapter to ``directory`` atomically (:func:`p13n_utils.config.atomic_folder`: nothing half-written
    if it fails, an older version replaced only by a complete new one).

    Besides peft's ``adapter_config.json`` and ``adapter_model.safetensors``,
    ``p13n_adapter.json`` records the base model's :func:`base_signature` and ``extra`` (e.g.
    ``{"user": 42}``), checked by :func:`load_adapter`.

    Returns
    -------
    Path
        ``directory``.
    """
    if not is_peft(model) or adapter_name not in model.peft_config:
        known = list(model.peft_config) if is_peft(model) else []
        raise KeyError(f"no adapter {adapter_name!r} to save; the model's adapters: {known}")
    directory = Path(directory)
    with config.atomic_folder(directory) as tmp, tempfile.TemporaryDirectory(dir=tmp) as scratch:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save_pretrained(scratch, selected_adapters=[adapter_name])
        saved = Path(scratch) if adapter_name == "default" else Path(scratch) / adapter_name   # peft's layout
        (saved / "README.md").unlink(missing_ok=True)
        meta = {"adapter_name": adapter_name, "base": base_signature(model), **(extra or {})}
        (saved / ADAPTER_META).write_text(json.dumps(meta, indent=2, default=str))
        for path in saved.iterdir():
            if path.is_file():
                path.rename(tmp / path.name)
    return directory


def _check_adapter_fits(model, directory: Path, check_weights: bool) -> None:
    """Raise :class:`AdapterMismatchError` if the adapter in ``directory`` does not fit ``model``."""
    from safetensors import safe_open

    meta_path = directory / ADAPTER_META
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    saved = meta.get("base", {})
    here = base_signature(model)
    for key in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size"):
        if key in saved and saved[key] != here[key]:
            raise AdapterMismatchError(
                f"the adapter in {config.display_path(directory)} was trained on {saved.get('name')!r} ({key}={saved[key]}), but this "
                f"model is {here['name']!r} ({key}={here[key]}): load it into the base model it was trained on")
    # the shapes of the LoRA matrices against the modules they adapt
    base = base_model(model)
    weights = directory / "adapter_model.safetensors"
    if weights.is_file():
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():
                if ".lora_A." not in key and ".lora_B." not in key:
                    continue
                module_name = key.split(".lora_")[0].removeprefix("base_model.model.")
                try:
                    module = base.get_submodule(module_name)
                except AttributeError:
                    raise AdapterMismatchError(
                        f"the adapter in {config.display_path(directory)} adapts {module_name!r}, which this model "
                        f"({here['name']!r}) does not have: it was trained on another base model "
                        f"({saved.get('name', 'unknown')!r})") from None
                module = getattr(module, "base_layer", module)
                shape = f.get_slice(key).get_shape()
                expected = module.in_features if ".lora_A." in key else module.out_features
                got = shape[1] if ".lora_A." in key else shape[0]
                if got != expected:
                    raise AdapterMismatchError(
                        f"the adapter in {config.display_path(directory)} has {key} of shape {tuple(shape)}, but {module_name} of this "
                        f"model ({here['name']!r}) needs {expected} features: it was trained on another base model "
                        f"({saved.get('name', 'unknown')!r})")
    if check_weights and "weights" in saved and saved["weights"] != here["weights"]:
        raise AdapterMismatchError(
            f"the adapter in {config.display_path(directory)} was trained on base weights {saved['weights']} ({saved.get('name')!r}) but "
            f"this model's weights are {here['weights']} ({here['name']!r}): same architecture, other weights. "
            "A per-user (OPPU) adapter must be loaded into the base with the global adapter merged "
            "(merge_into_base), a global adapter into the plain base. check_weights=False skips this check.")


def load_adapter(model, directory, adapter_name: str, check_weights: bool = True):
    """Load a saved adapter into ``model`` under ``adapter_name``, after checking that it fits.

    Parameters
    ----------
    model
        A transformers model (wrapped in place) or a peft model (the adapter is added; the base
        model is not reloaded).
    directory : path
        Written by :func:`save_adapter` (or any peft adapter folder: then only shapes are checked).
    adapter_name : str
        Must not be loaded already.
    check_weights : bool, default True
        Also compare the base weights' fingerprint with the one recorded at saving.

    Returns
    -------
    peft.PeftModel
        The adapter is loaded but not activated (use :func:`use_adapter` or ``set_adapter``).

    Raises
    ------
    FileNotFoundError
        Not an adapter folder.
    AdapterMismatchError
        The adapter was trained on another base model or other base weights.
    """
    from peft import PeftModel

    directory = Path(directory)
    if not (directory / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{config.display_path(directory)} is not an adapter folder (no adapter_config.json); "
                                "save adapters with adapters.save_adapter")
    _check_adapter_fits(model, directory, check_weights)
    if is_peft(model):
        if adapter_name in model.peft_config:
            raise ValueError(f"an adapter named {adapter_name!r} is already loaded; adapters: {list(model.peft_config)}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model.load_adapter(str(directory), adapter_name=adapter_name)
        return model
    if has_injected_adapters(model):
        raise ValueError("this model already carries peft adapters: pass the peft model that wraps it")
    with warnings.catch_warnings():          # a transformers deprecation peft triggers, not ours
        warnings.simplefilter("ignore", FutureWarning)
        return PeftModel.from_pretrained(model, str(directory), adapter_name=adapter_name)


class AdapterStore:
    """One adapter folder per user under ``root`` (``root/user-<id>/``), loaded on demand
    into one model so that switching users never reloads the base model.

    Examples
    --------
    >>> store = AdapterStore(config.CACHE_DIR / "adapters" / "oppu")
    >>> store.save(model, user=42, adapter_name="user_42")
    >>> model = store.activate(model, 42)        # loads the adapter once, then set_adapter
    >>> store.users()                              # [42, ...]
    """

    def __init__(self, root):
        self.root = Path(root)

    @staticmethod
    def adapter_name(user) -> str:
        """The adapter name of a user inside the model: ``"user_<id>"``."""
        return f"user_{user}"

    def path(self, user) -> Path:
        return self.root / f"user-{user}"

    def save(self, model, user, adapter_name: str | None = None) -> Path:
        """Save the user's adapter (default name :meth:`adapter_name`) atomically. A numpy id
        (``np.int64(42)``, as pandas hands them out) is stored as the plain number, so that
        :meth:`users` gives ids that compare equal to the data's."""
        user = user.item() if isinstance(user, np.generic) else user
        return save_adapter(model, adapter_name or self.adapter_name(user), self.path(user), extra={"user": user})

    def users(self) -> list:
        """The users that have a saved adapter (sorted)."""
        if not self.root.is_dir():
            return []
        found = []
        for meta in self.root.glob(f"user-*/{ADAPTER_META}"):
            found.append(json.loads(meta.read_text()).get("user"))
        return sorted((u for u in found if u is not None), key=lambda u: (str(type(u)), u))

    def _check_known(self, user) -> None:
        if not (self.path(user) / ADAPTER_META).is_file():
            known = self.users()
            raise KeyError(f"no adapter for user {user!r} in {config.display_path(self.root)}; users with an adapter: {known[:20]}"
                           f"{'...' if len(known) > 20 else ''} ({len(known)} users). Fall back to the global "
                           "adapter for this user, or train one (finetune.train_lora + AdapterStore.save)")

    def load(self, model, user, check_weights: bool = True):
        """Load the user's adapter into ``model`` (if not loaded yet); returns the peft model."""
        self._check_known(user)
        name = self.adapter_name(user)
        if is_peft(model) and name in model.peft_config:
            return model
        return load_adapter(model, self.path(user), name, check_weights=check_weights)

    def activate(self, model, user):
        """Load (once) and make the user's adapter the active one; returns the peft model."""
        model = self.load(model, user)
        model.set_adapter(self.adapter_name(user))
        return model

    def switch(self, model, user):
        """Make ``user``'s adapter the active one and unload the other users' adapters of this
        store, so that one user adapter at a time is in memory however many users are served
        (the base model is never reloaded). Returns the peft model."""
        model = self.activate(model, user)
        keep = self.adapter_name(user)
        for name in list(model.peft_config):
            if name != keep and name.startswith("user_"):
                model.delete_adapter(name)
        return model

    def bytes_on_disk(self, user) -> int:
        self._check_known(user)
        return folder_bytes(self.path(user))




# =========================================================================== costs
def count_parameters(model, adapter_name: str | None = None) -> int:
    """Parameters of one adapter (``adapter_name``), or of the whole model (None)."""
    if adapter_name is None:
        return sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in adapter_params(model, adapter_name))


def model_bytes(model) -> int:
    """Bytes of the model's parameters in memory (what a full copy per user would store)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def adapter_cost(n_params: int, seconds: float, bytes_on_disk: int | None = None, steps: int | None = None,
                 bytes_per_param: int = 4) -> dict:
    """The per-user cost of a personalization method, one row of the cost table.

    Parameters
    ----------
    n_params : int
        Trainable parameters stored per user (an adapter, a soft prompt, or a whole model for
        full fine-tuning): :func:`count_parameters` or ``TrainResult.trainable_params``.
    seconds : float
        Training time per user (``TrainResult.seconds``).
    bytes_on_disk : int, optional
        Measured size of the saved adapter (:func:`folder_bytes`); default ``n_params *
        bytes_per_param``.
    steps : int, optional

    Returns
    -------
    dict
        ``params, bytes, seconds`` (and ``steps``, ``seconds_per_step``).
    """
    out = {"params": int(n_params), "bytes": int(bytes_on_disk if bytes_on_disk is not None else n_params * bytes_per_param),
           "seconds": float(seconds)}
    if steps:
        out.update(steps=int(steps), seconds_per_step=float(seconds) / steps)
    return out


def extrapolate_cost(cost: dict, n_users: Sequence[int] = (1, 1_000, 1_000_000)) -> pd.DataFrame:
    """Scale a per-user cost (:func:`adapter_cost`) to many users (linear: one adapter each).

    Returns
    -------
    DataFrame
        One row per user count: ``users, params, disk_gb, train_hours`` (training hours on the
        machine that measured ``seconds``, one user after another).
    """
    rows = [{"users": int(n), "params": cost["params"] * int(n), "disk_gb": cost["bytes"] * int(n) / 1e9,
             "train_hours": cost["seconds"] * int(n) / 3600} for n in n_users]
    return pd.DataFrame(rows)
