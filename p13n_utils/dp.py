"""Differentially private fine-tuning of an adapter: DP-SGD's clip-and-noise step, written out.

DP-SGD (Abadi et al. 2016, https://arxiv.org/abs/1607.00133) makes one training step
(ε, δ)-differentially private with respect to each training *example*: the step can hardly
depend on whether any single turn was in the data. Per step, for a batch ``B``:

.. math::

    \\bar g_i = g_i \\cdot \\min\\!\\left(1, \\frac{C}{\\lVert g_i \\rVert_2}\\right), \\qquad
    \\tilde g = \\frac{1}{|B|}\\Big(\\sum_{i \\in B} \\bar g_i + \\mathcal N(0, \\sigma^2 C^2 I)\\Big)

``g_i`` is example ``i``'s gradient over *all* trained parameters (one norm for the whole
adapter), ``C`` the clipping norm and ``σ`` the noise multiplier. Clipping bounds what one
example can change; the noise hides it. The privacy accountant (Rényi DP, Mironov 2017,
https://arxiv.org/abs/1702.07476, as implemented by opacus, Yousefpour et al. 2021,
https://arxiv.org/abs/2109.12298) turns ``σ``, the sampling rate and the number of steps into ε
for a chosen δ; :func:`noise_for_epsilon` inverts it.

Here :func:`per_example_grads` and :func:`clip_and_noise` are the whole method (a loop over the
batch's examples: slower than opacus's hooks, but readable); the tests check them against
opacus's ``GradSampleModule`` + ``DPOptimizer`` with zero noise. :func:`train_lora_dp` trains a
LoRA adapter with them on the project's training loop.

Accounting caveat: the accountant assumes each example enters a batch independently with
probability ``sample_rate`` (Poisson sampling). :func:`train_lora_dp` uses the training loop's
shuffled fixed-size batches; with ``batch_size >= len(pairs)`` (full batch, ``sample_rate = 1``,
the privacy lab's setting) every step sees every example and the accounting is exact.

Bad input: ε <= 0, δ not in (0, 1), a clipping norm <= 0 or a negative noise multiplier:
``ValueError``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .adapters import DEFAULT_TARGET_MODULES, add_lora, adapter_params
from .training import (IGNORE_INDEX, TrainConfig, TrainResult, collate, encode_training_pairs, model_device,
                       to_device, train_loop)

__all__ = ["example_loss", "per_example_grads", "clip_and_noise", "check_budget", "noise_for_epsilon",
           "epsilon_spent", "dp_step_loss", "train_lora_dp"]


def example_loss(model, example: dict) -> torch.Tensor:
    """Mean NLL per target token of one encoded example (:func:`p13n_utils.training.encode_pairs`)."""
    batch = to_device(collate([example], 0), model_device(model))      # one example: no padding
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], use_cache=False).logits
    return F.cross_entropy(logits[0, :-1].float(), batch["labels"][0, 1:], ignore_index=IGNORE_INDEX)


def per_example_grads(model, params: list, examples: list[dict]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The gradient of each example's loss, one example at a time.

    Returns
    -------
    grads : list of torch.Tensor
        One tensor per parameter, shape ``(len(examples), *param.shape)``.
    losses : torch.Tensor (len(examples),)
        Each example's loss (detached).
    """
    per_param = [[] for _ in params]
    losses = []
    for example in examples:
        loss = example_loss(model, example)
        for slot, grad in zip(per_param, torch.autograd.grad(loss, params)):
            slot.append(grad)
        losses.append(loss.detach())
    return [torch.stack(slot) for slot in per_param], torch.stack(losses)


def clip_and_noise(grads: list[torch.Tensor], max_grad_norm: float, noise_multiplier: float,
                   generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """DP-SGD's step: clip each example's gradient to norm ``C``, sum, add Gaussian noise, average.

    Parameters
    ----------
    grads : list of torch.Tensor
        Per-example gradients, one tensor ``(batch, *shape)`` per parameter (:func:`per_example_grads`).
    max_grad_norm : float > 0
        ``C``: the largest L2 norm one example's gradient (all parameters together) may keep.
    noise_multiplier : float >= 0
        ``σ``: the noise's standard deviation is ``σ C`` (0: clipping only).
    generator : torch.Generator, optional
        Seeds the noise.

    Returns
    -------
    noisy : list of torch.Tensor
        The private gradient of each parameter (its shape).
    norms : torch.Tensor (batch,)
        Each example's gradient norm before clipping.
    """
    if max_grad_norm <= 0 or noise_multiplier < 0:
        raise ValueError(f"need max_grad_norm > 0 and noise_multiplier >= 0, got {max_grad_norm}, {noise_multiplier}")
    batch = grads[0].shape[0]
    norms = torch.stack([g.reshape(batch, -1).norm(dim=1) for g in grads], dim=1).norm(dim=1)
    factor = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)           # min(1, C / ||g_i||)
    noisy = []
    for g in grads:
        clipped_sum = torch.einsum("b,b...->...", factor, g)
        noise = torch.randn(clipped_sum.shape, generator=generator, device=g.device, dtype=g.dtype)
        noisy.append((clipped_sum + noise_multiplier * max_grad_norm * noise) / batch)
    return noisy, norms


def check_budget(epsilon: float, delta: float) -> None:
    """``ValueError`` unless ``epsilon > 0`` and ``0 < delta < 1`` (ε = ∞ means no privacy: train
    without DP instead)."""
    if not (isinstance(epsilon, (int, float)) and epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}: epsilon <= 0 would be perfect "
                         "privacy, which no training can give (use the base model); epsilon = inf is no privacy "
                         "(train without DP)")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r} (take it below 1 / number of examples)")


def noise_for_epsilon(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier σ whose ``steps`` DP-SGD steps at ``sample_rate`` spend at
    most ``epsilon`` (opacus's RDP accountant, searched by opacus)."""
    from opacus.accountants.utils import get_noise_multiplier

    check_budget(epsilon, delta)
    if not 0 < sample_rate <= 1 or steps < 1:
        raise ValueError(f"need 0 < sample_rate <= 1 and steps >= 1, got {sample_rate}, {steps}")
    return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=steps, accountant="rdp"))


def epsilon_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε after ``steps`` steps with noise ``σ`` at ``sample_rate`` (opacus's RDP accountant)."""
    from opacus.accountants import RDPAccountant

    if noise_multiplier <= 0:
        return math.inf
    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    return float(accountant.get_epsilon(delta=delta))


def dp_step_loss(model, params: list, examples: list[dict], max_grad_norm: float, noise_multiplier: float,
                 seed: int = 0):
    """The ``step_loss`` of DP training for :func:`p13n_utils.training.train_loop`.

    The returned loss has the batch's mean loss as its value and the private gradient
    :func:`clip_and_noise` as its gradient (``loss.backward()`` puts exactly that gradient into
    ``p.grad``), so the shared loop's AdamW steps on private gradients only (post-processing:
    no extra privacy cost). Extra metric per step: the share of examples that were clipped.
    """
    generator = torch.Generator(device=model_device(model)).manual_seed(seed)

    def step_loss(indices):
        grads, losses = per_example_grads(model, params, [examples[i] for i in indices])
        noisy, norms = clip_and_noise(grads, max_grad_norm, noise_multiplier, generator)
        surrogate = sum((p * g).sum() for p, g in zip(params, noisy))       # d surrogate / d p = g
        loss = losses.mean() + surrogate - surrogate.detach()
        n_tokens = sum(len(examples[i]["input_ids"]) for i in indices)
        return loss, n_tokens, {"clipped": float((norms > max_grad_norm).float().mean())}
    return step_loss


def train_lora_dp(model, tokenizer, pairs, train: TrainConfig, adapter_name: str, epsilon: float, delta: float,
                  max_grad_norm: float = 1.0, r: int = 8, alpha: float = 16,
                  target_modules=DEFAULT_TARGET_MODULES, user=None) -> TrainResult:
    """Train a LoRA adapter with DP-SGD at the budget (ε, δ) (example-level privacy).

    Like :func:`p13n_utils.finetune.train_lora`, with every step private: the noise
    multiplier is chosen by :func:`noise_for_epsilon` for ``train.steps`` steps at sampling rate
    ``min(1, batch_size / n_pairs)``; the loop's own gradient clipping is switched off (the
    per-example clipping replaces it).

    Returns
    -------
    TrainResult
        As ``train_lora``'s, with ``metrics["clipped"]`` per step and the privacy settings in
        ``result.privacy``: ``epsilon`` (as spent, <= the target), ``delta``,
        ``noise_multiplier``, ``sample_rate``, ``max_grad_norm``.
    """
    check_budget(epsilon, delta)
    examples = encode_training_pairs(tokenizer, pairs, train, user)
    sample_rate = min(1.0, train.batch_size / len(examples))
    sigma = noise_for_epsilon(epsilon, delta, sample_rate, train.steps)
    model = add_lora(model, adapter_name, r, alpha, target_modules, 0.0, train.seed)
    params = adapter_params(model, adapter_name)
    step = dp_step_loss(model, params, examples, max_grad_norm, sigma, seed=train.seed)
    result = train_loop(model, params, step, len(examples), train.replace(max_grad_norm=None), desc=f"DP LoRA {adapter_name}")
    result.adapter_name = adapter_name
    result.privacy = {"epsilon": epsilon_spent(sigma, sample_rate, train.steps, delta), "delta": delta,
                      "noise_multiplier": sigma, "sample_rate": sample_rate, "max_grad_norm": max_grad_norm}
    return result
