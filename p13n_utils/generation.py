"""Batched scoring and generation with a causal LM: the numbers behind every text notebook.

Three functions, all taking the model and tokenizer explicitly (from
:func:`p13n_utils.models.load_lm`) and running on whatever device the model is on:

- :func:`score` — log-likelihood of each ``target`` given its ``prompt`` (only the target tokens
  count), batched. :func:`perplexity` turns its output into a perplexity, overall or per user.
- :func:`next_token_distribution` — the LM's probability over a few candidate next tokens
  (``"1"``…``"5"`` for a rating, ``"yes"``/``"no"`` for reranking), one forward pass per batch.
- :func:`generate` — batched greedy or seeded sampled continuations.

How batching stays exact: sequences are sorted by length (little padding), padded on the LEFT,
and given explicit position ids (0, 1, … from each sequence's first real token), so every
sequence sees exactly the positions and tokens it would see alone; padded positions are masked
out of attention. Scoring computes the vocabulary projection only at the target positions
(``logits_to_keep``), which saves memory and about a fifth of the compute of a small model.
Results always come back in input order.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["pad_id", "score", "perplexity", "next_token_distribution", "generate"]


# --------------------------------------------------------------------------- helpers
def _device(model):
    return next(model.parameters()).device


@contextmanager
def _inference(model):
    """Eval mode (no dropout) and no autograd for the duration; the model's mode is restored."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _as_list(texts, name: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, not one string; wrap it: [{name[:-1]}]")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(text).__name__}")
    return texts


def _batches(order: Sequence[int], batch_size: int):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(order), batch_size):
        yield list(order[start:start + batch_size])


def _left_pad(sequences: list[list[int]], pad_id: int, device):
    """Left-pad token id lists into (input_ids, attention_mask, position_ids) tensors."""
    import torch

    width = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, width - len(seq):] = 1
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return input_ids.to(device), attention_mask.to(device), position_ids.to(device)


def pad_id(tokenizer) -> int:
    """The id batches are padded with (for scoring, generation and training alike): the
    tokenizer's pad token, else its eos token."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
    return pad


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=not enabled)


# --------------------------------------------------------------------------- scoring
def score(model, tokenizer, prompts, targets, batch_size: int = 16, progress: bool = True,
          return_tokens: bool = False, max_length: int | None = None) -> pd.DataFrame:
    """Log-likelihood of each target given its prompt (teacher forcing, target tokens only).

    The prompt is tokenized with the tokenizer's special tokens (as :func:`generate` does), the
    target without, and the two id lists are concatenated, so each target token is scored
    exactly once whatever the prompt.

    Parameters
    ----------
    model, tokenizer
        From :func:`p13n_utils.models.load_lm` (any causal LM of transformers).
    prompts, targets : list of str
        Same length. Each prompt must give at least one token, each target too.
    batch_size : int, default 16
        Pairs per forward pass (after sorting by length).
    progress : bool, default True
        Show a tqdm bar (``leave=False``).
    return_tokens : bool, default False
        Add a column ``token_logprobs`` (one float array per pair).
    max_length : int, optional
        Cut the prompt from the left so that prompt + target fit in ``max_length`` tokens (the
        target is never cut). Default: no cut.

    Returns
    -------
    pandas.DataFrame
        One row per pair, in input order: ``logprob_sum`` (float, nats, <= 0), ``n_tokens``
        (int, target tokens), ``nll_mean`` (= -logprob_sum / n_tokens, nats per token),
        ``n_prompt_tokens`` (int, after any cut), and ``token_logprobs`` if asked.

    Examples
    --------
    >>> df = score(model, tokenizer, ["The capital of France is"], [" Paris."])
    >>> perplexity(df)
    """
    import torch

    prompts, targets = _as_list(prompts, "prompts"), _as_list(targets, "targets")
    if len(prompts) != len(targets):
        raise ValueError(f"got {len(prompts)} prompts but {len(targets)} targets; they must pair up")
    prompt_ids = tokenizer(prompts, add_special_tokens=True)["input_ids"] if prompts else []
    target_ids = tokenizer(targets, add_special_tokens=False)["input_ids"] if targets else []
    for i, (p_ids, t_ids) in enumerate(zip(prompt_ids, target_ids)):
        if not t_ids:
            raise ValueError(f"targets[{i}] is empty: there is nothing to score")
        if not p_ids:
            raise ValueError(f"prompts[{i}] gives no token; for unconditional scoring use the bos or "
                             "eos token as prompt (e.g. tokenizer.eos_token)")
        if max_length is not None:
            if len(t_ids) >= max_length:
                raise ValueError(f"targets[{i}] has {len(t_ids)} tokens, max_length={max_length} leaves no prompt")
            prompt_ids[i] = p_ids[-(max_length - len(t_ids)):]

    n = len(prompts)
    sums, counts = np.zeros(n), np.zeros(n, dtype=int)
    per_token: list = [None] * n
    order = sorted(range(n), key=lambda i: -(len(prompt_ids[i]) + len(target_ids[i])))
    device, pad = _device(model), pad_id(tokenizer)
    bar = _progress(n, "scoring", progress)
    with _inference(model):
        for batch in _batches(order, batch_size):
            sequences = [prompt_ids[i] + target_ids[i] for i in batch]
            n_target = [len(target_ids[i]) for i in batch]
            keep = max(n_target)
            input_ids, attention_mask, position_ids = _left_pad(sequences, pad, device)
            logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                           use_cache=False, logits_to_keep=keep + 1).logits
            # logits[:, j] predicts the token after kept position j: the last `keep` tokens.
            logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            token_lp = logprobs.gather(-1, input_ids[:, -keep:].unsqueeze(-1)).squeeze(-1).double().cpu().numpy()
            for row, i in enumerate(batch):
                values = token_lp[row, keep - n_target[row]:]
                sums[i], counts[i] = values.sum(), len(values)
                per_token[i] = values
            bar.update(len(batch))
    bar.close()
    frame = pd.DataFrame({"logprob_sum": sums, "n_tokens": counts, "nll_mean": -sums / np.maximum(counts, 1),
                          "n_prompt_tokens": [len(ids) for ids in prompt_ids]})
    if return_tokens:
        frame["token_logprobs"] = per_token
    return frame


def perplexity(scores: pd.DataFrame, by=None):
    """Token-level perplexity ``exp(-sum(logprob_sum) / sum(n_tokens))`` of :func:`score` rows.

    Parameters
    ----------
    scores : pandas.DataFrame
        Output of :func:`score` (columns ``logprob_sum`` and ``n_tokens``), possibly with more
        columns such as a user id.
    by : str or array-like, optional
        Group key (a column name or one label per row). With it, one perplexity per group —
        e.g. ``perplexity(df.assign(user=users), by="user")`` gives per-user perplexities,
        each pooling the tokens of that user's targets (the unit over which the notebooks
        bootstrap confidence intervals).

    Returns
    -------
    float, or pandas.Series indexed by group
    """
    for column in ("logprob_sum", "n_tokens"):
        if column not in scores:
            raise KeyError(f"scores has no column {column!r}; pass the DataFrame returned by score()")
    if by is None:
        total = scores["n_tokens"].sum()
        if total == 0:
            raise ValueError("no tokens to compute a perplexity from")
        return float(np.exp(-scores["logprob_sum"].sum() / total))
    sums = scores.groupby(by)[["logprob_sum", "n_tokens"]].sum()
    return np.exp(-sums["logprob_sum"] / sums["n_tokens"]).rename("perplexity")


# --------------------------------------------------------------------------- label probabilities
def _candidate_ids(tokenizer, candidates) -> list[int]:
    candidates = _as_list(candidates, "candidates")
    if len(candidates) < 2:
        raise ValueError("give at least two candidates, e.g. ['1', '2', '3', '4', '5'] or [' yes', ' no']")
    ids = []
    for candidate in candidates:
        encoded = tokenizer.encode(candidate, add_special_tokens=False)
        if len(encoded) != 1:
            pieces = tokenizer.convert_ids_to_tokens(encoded)
            raise ValueError(f"candidate {candidate!r} is {len(encoded)} tokens {pieces}, not one; "
                             "use single-token labels (mind the leading space: ' yes' vs 'yes')")
        ids.append(encoded[0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"candidates {candidates} do not map to distinct tokens")
    return ids


def next_token_distribution(model, tokenizer, prompts, candidates, batch_size: int = 16,
                            renormalize: bool = True, progress: bool = False) -> np.ndarray:
    """The LM's probability of each candidate label as the very next token of each prompt.

    One forward pass per batch of prompts (left padding), with the vocabulary projection at the
    last position only.

    Parameters
    ----------
    model, tokenizer
        From :func:`p13n_utils.models.load_lm`.
    prompts : list of str
        E.g. :func:`p13n_utils.prompts.chat_prompt` outputs that end where the answer starts.
    candidates : list of str
        Labels that are one token each, e.g. ``["1", "2", "3", "4", "5"]``.
    batch_size : int, default 16
    renormalize : bool, default True
        Renormalise over the candidates (rows sum to 1). With False, the raw probabilities
        under the full vocabulary (the row sum shows how much mass the labels get at all).
    progress : bool, default False

    Returns
    -------
    numpy.ndarray of shape (n_prompts, n_candidates), float64
        For a rating, ``probs @ np.arange(1, 6)`` is the expected rating.
    """
    import torch

    prompts = _as_list(prompts, "prompts")
    candidate_ids = _candidate_ids(tokenizer, candidates)
    prompt_ids = tokenizer(prompts, add_special_tokens=True)["input_ids"] if prompts else []
    for i, ids in enumerate(prompt_ids):
        if not ids:
            raise ValueError(f"prompts[{i}] gives no token")
    out = np.zeros((len(prompts), len(candidate_ids)))
    order = sorted(range(len(prompts)), key=lambda i: -len(prompt_ids[i]))
    device, pad = _device(model), pad_id(tokenizer)
    index = torch.tensor(candidate_ids, device=device)
    bar = _progress(len(prompts), "label probabilities", progress)
    with _inference(model):
        for batch in _batches(order, batch_size):
            input_ids, attention_mask, position_ids = _left_pad([prompt_ids[i] for i in batch], pad, device)
            logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                           use_cache=False, logits_to_keep=1).logits[:, -1].double()
            if renormalize:
                probs = torch.softmax(logits[:, index], dim=-1)
            else:
                probs = torch.softmax(logits, dim=-1)[:, index]
            out[batch] = probs.cpu().numpy()
            bar.update(len(batch))
    bar.close()
    return out


# --------------------------------------------------------------------------- generation
def _eos_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else ([ids] if isinstance(ids, int) else list(ids))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def generate(model, tokenizer, prompts, max_new_tokens: int = 32, batch_size: int = 16, do_sample: bool = False,
             temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, progress: bool = True) -> list[str]:
    """Continue each prompt, batched (left padding), and return only the new text.

    Parameters
    ----------
    model, tokenizer
        From :func:`p13n_utils.models.load_lm`.
    prompts : list of str
        Usually :func:`p13n_utils.prompts.chat_prompt` outputs.
    max_new_tokens : int, default 32
        Upper bound; a sequence stops earlier at the eos token.
    batch_size : int, default 16
        Prompts per call of ``model.generate`` (sorted by length to limit padding).
    do_sample : bool, default False
        False: greedy decoding (deterministic). True: sampling with ``temperature`` and nucleus
        ``top_p`` (defaults 1.0: the model's own distribution), seeded by ``seed``.
    seed : int, default 0
        Seeds torch before generating: the same prompts, seed and batch_size give the same texts.
    progress : bool, default True

    Only these settings apply: the model's own generation defaults (e.g. a Hub model's
    sampling temperature or repetition penalty) are replaced, so results do not depend on them.

    Returns
    -------
    list of str
        The decoded continuations (special tokens removed, surrounding whitespace stripped), in
        input order.
    """
    import torch
    from transformers import GenerationConfig

    prompts = _as_list(prompts, "prompts")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    pad = pad_id(tokenizer)
    settings = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=pad,
                    eos_token_id=_eos_ids(model, tokenizer) or None, bos_token_id=model.generation_config.bos_token_id)
    if do_sample:
        if temperature <= 0:
            raise ValueError("temperature must be > 0 when sampling; use do_sample=False for greedy decoding")
        settings.update(temperature=temperature, top_p=top_p, top_k=0)
    generation_config = GenerationConfig(**settings)

    prompt_ids = tokenizer(prompts, add_special_tokens=True)["input_ids"] if prompts else []
    for i, ids in enumerate(prompt_ids):
        if not ids:
            raise ValueError(f"prompts[{i}] gives no token")
    texts: list[str] = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompt_ids[i]))
    device = _device(model)
    torch.manual_seed(seed)
    bar = _progress(len(prompts), "generating", progress)
    with _inference(model):
        for batch in _batches(order, batch_size):
            input_ids, attention_mask, _ = _left_pad([prompt_ids[i] for i in batch], pad, device)
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                    generation_config=generation_config)
            new_tokens = output[:, input_ids.shape[1]:]
            for row, i in enumerate(batch):
                texts[i] = tokenizer.decode(new_tokens[row], skip_special_tokens=True).strip()
            bar.update(len(batch))
    bar.close()
    return texts
