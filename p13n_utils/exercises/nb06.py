"""Checks of the exercises of notebook 06 (fine-tuning, LoRA, OPPU, soft prompts).

Each ``check_<n>(answer, ...)`` recomputes the reference from the arguments it is given (a model
config, a model and a batch, a LoRA layer) and calls :func:`p13n_utils.lesson.check`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .. import adapters, lesson, training

__all__ = ["linear_shapes", "lora_param_count", "lora_layer", "same_tensor", "check_1", "check_2", "check_3"]


def linear_shapes(model_config) -> dict[str, tuple[int, int]]:
    """``{module name: (in_features, out_features)}`` of the linear layers of one decoder block of
    a Llama-style model (SmolLM2, Qwen, Llama), read from its config."""
    hidden = model_config.hidden_size
    head_dim = getattr(model_config, "head_dim", None) or hidden // model_config.num_attention_heads
    q_out = model_config.num_attention_heads * head_dim
    kv_out = getattr(model_config, "num_key_value_heads", None) or model_config.num_attention_heads
    kv_out *= head_dim
    inter = model_config.intermediate_size
    return {"q_proj": (hidden, q_out), "k_proj": (hidden, kv_out), "v_proj": (hidden, kv_out),
            "o_proj": (q_out, hidden), "gate_proj": (hidden, inter), "up_proj": (hidden, inter),
            "down_proj": (inter, hidden)}


def lora_param_count(model_config, r: int, target_modules: Sequence[str]) -> int:
    """Trainable parameters of a rank-``r`` LoRA on ``target_modules`` of every layer:
    A is (r, in) and B is (out, r), so each adapted ``in -> out`` layer adds ``r * (in + out)``."""
    shapes = linear_shapes(model_config)
    unknown = sorted(set(target_modules) - set(shapes))
    if unknown:
        raise KeyError(f"unknown target modules {unknown}; known: {sorted(shapes)}")
    per_layer = sum(r * (shapes[m][0] + shapes[m][1]) for m in target_modules)
    return per_layer * model_config.num_hidden_layers


def lora_layer(model, module: str = "q_proj", layer: int = 0):
    """The peft LoRA layer wrapping ``module`` of decoder block ``layer`` of a peft model."""
    for name, sub in model.named_modules():
        if name.endswith(f"layers.{layer}.self_attn.{module}") or name.endswith(f"layers.{layer}.mlp.{module}"):
            if hasattr(sub, "lora_A"):
                return sub
    raise KeyError(f"no LoRA layer {module!r} in block {layer}: add an adapter on it first (adapters.add_lora)")


def check_1(answer, model_config, r: int, target_modules: Sequence[str]):
    """Exercise 1: LoRA's trainable parameters for rank ``r`` on ``target_modules``."""
    ok = None if answer is None else int(answer) == lora_param_count(model_config, r, target_modules)
    return lesson.check("Exercise 1 (LoRA parameter count)", ok,
                        "each adapted linear layer in -> out gets A (r x in) and B (out x r): r * (in + out) "
                        "parameters; k_proj and v_proj have num_key_value_heads * head_dim outputs (grouped-query "
                        "attention), not hidden_size; multiply by num_hidden_layers")


def check_2(answer, model, batch: dict):
    """Exercise 2: the mean negative log-likelihood per *target* token of ``batch``."""
    ok = None
    if answer is not None:
        with torch.no_grad():
            reference = float(training.lm_loss(model, batch))
        ok = math.isclose(float(answer), reference, rel_tol=1e-4, abs_tol=1e-5)
    return lesson.check("Exercise 2 (the loss on target tokens)", ok,
                        "the logits at position t predict the token at t + 1: compare logits[:, :-1] with "
                        "labels[:, 1:]; skip the positions labelled -100 (prompt and padding) and divide the "
                        "summed negative log-probability by the number of target tokens of the whole batch")


def same_tensor(answer, reference, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """Whether the learner's ``answer`` (anything ``torch.as_tensor`` takes) has ``reference``'s
    shape and values within ``rtol``/``atol``."""
    answer = torch.as_tensor(answer, dtype=reference.dtype, device=reference.device)
    return answer.shape == reference.shape and torch.allclose(answer, reference, rtol=rtol, atol=atol)


def check_3(answer, layer, adapter_name: str):
    """Exercise 3: the merged weight ``W + (alpha / r) B A`` of one LoRA layer."""
    ok = None
    if answer is not None:
        with torch.no_grad():
            ok = same_tensor(answer, layer.base_layer.weight + layer.get_delta_weight(adapter_name))
    return lesson.check("Exercise 3 (merging a LoRA adapter by hand)", ok,
                        "W is layer.base_layer.weight (out x in); A = layer.lora_A[name].weight (r x in), "
                        "B = layer.lora_B[name].weight (out x r), and the scale alpha / r is layer.scaling[name]: "
                        "W + scaling * B @ A")
