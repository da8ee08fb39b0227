"""LLM-enhanced recommendation (notebook 08): an LM reranks a recommender's candidates.

* :func:`llm_rerank` — each user's candidates reordered by the LM's probability of "Yes" to
  "would this user enjoy X?" (the prompts: :func:`p13n_utils.prompts.rerank_prompts`);
* :func:`next_token_shared_prefix` — the same next-token probabilities for prompts that share a
  long prefix (the user's profile), encoding that prefix once.

The other LLM-enhanced recommenders of 08 are content-based ones over sentence embeddings
(:class:`p13n_utils.recsys.ContentRecommender` on :func:`p13n_utils.cache.embed` vectors of
:func:`p13n_utils.recsys.item_texts`, or of LM-written profiles from
:func:`p13n_utils.prompts.profile_prompts`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .generation import pad_id
from .prompts import rerank_prompts

__all__ = ["llm_rerank", "next_token_shared_prefix"]


def _single_token_ids(tokenizer, answers: Sequence[str]) -> list[int]:
    ids = []
    for answer in answers:
        encoded = tokenizer.encode(answer, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"answer {answer!r} is {len(encoded)} tokens; use single-token answers")
        ids.append(encoded[0])
    return ids


def _split_at_shared_line(prompts: Sequence[str]) -> tuple[str, list[str]]:
    """The longest common prefix of ``prompts`` cut after its last line break (a safe token
    boundary), and the rest of each prompt."""
    common = prompts[0]
    for prompt in prompts[1:]:
        n = 0
        for a, b in zip(common, prompt):
            if a != b:
                break
            n += 1
        common = common[:n]
    cut = common.rfind("\n") + 1
    return prompts[0][:cut], [p[cut:] for p in prompts]


def next_token_shared_prefix(model, tokenizer, prompts: Sequence[str], answers: Sequence[str],
                             batch_size: int = 16) -> np.ndarray:
    """Like :func:`p13n_utils.generation.next_token_distribution` (renormalised over
    ``answers``), for prompts that share a long prefix: the prefix is encoded once and its
    key/value cache reused for every continuation, so each prompt costs only its own tokens.

    Returns ndarray (len(prompts), len(answers)).
    """
    import copy

    import torch

    answer_ids = _single_token_ids(tokenizer, answers)
    prefix, rests = _split_at_shared_line(list(prompts))
    device = next(model.parameters()).device
    pad = pad_id(tokenizer)
    prefix_ids = tokenizer(prefix, add_special_tokens=True, return_tensors="pt")["input_ids"].to(device)
    n_prefix = prefix_ids.shape[1]
    out = np.zeros((len(rests), len(answer_ids)))
    with torch.inference_mode():
        prefix_cache = model(input_ids=prefix_ids, use_cache=True).cache  # transformers >= 5
        for start in range(0, len(rests), batch_size):
            encoded = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in rests[start:start + batch_size]]
            width = max(len(e) for e in encoded)
            # left padding between the prefix and each continuation: every row ends at the last
            # position, so only that position's logits are computed (logits_to_keep=1)
            ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=device)
            pads = torch.tensor([width - len(e) for e in encoded], device=device)
            column = torch.arange(width, device=device)[None, :]
            attention = torch.cat([torch.ones(len(encoded), n_prefix, dtype=torch.long, device=device),
                                   (column >= pads[:, None]).long()], dim=1)
            positions = n_prefix + (column - pads[:, None]).clamp(min=0)
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(encoded))
            logits = model(input_ids=ids, attention_mask=attention, position_ids=positions,
                           cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
            probs = torch.softmax(logits[:, answer_ids].double(), dim=-1)
            out[start:start + len(encoded)] = probs.cpu().numpy()
    return out


def llm_rerank(model, tokenizer, liked: Sequence[Sequence[str]], candidates: np.ndarray,
               candidate_texts: Sequence[Sequence[str]], answers: Sequence[str] = ("Yes", "No"),
               batch_size: int = 16, shared_prefix: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Rerank each user's candidates by the LM's probability of answering "Yes".

    Parameters
    ----------
    liked : per user, the titles shown as their profile.
    candidates : ndarray (n_users, n) item columns in the base model's order.
    candidate_texts : per user, the n texts of the candidates (same order).
    answers : the two answer strings, one token each; the probability is renormalised over
        them. SmolLM2 puts far more mass on "Yes"/"No" than on "yes"/"no" here.
    batch_size : prompts per forward pass.
    shared_prefix : encode each user's profile once (:func:`next_token_shared_prefix`);
        False scores every full prompt with
        :func:`p13n_utils.generation.next_token_distribution` (same numbers, ~3× the tokens).

    Returns
    -------
    (reranked, p_yes): both (n_users, n); ties keep the base order.
    """
    from . import generation

    candidates = np.asarray(candidates)
    if len(liked) != candidates.shape[0] or len(candidate_texts) != candidates.shape[0]:
        raise ValueError("liked, candidates and candidate_texts need one entry per user")
    if (candidates < 0).any():
        raise ValueError("candidates hold empty slots (-1): ask the base model for fewer candidates")
    p_yes = np.zeros(candidates.shape)
    for user, (titles, texts) in enumerate(zip(liked, candidate_texts)):
        prompts = rerank_prompts(tokenizer, titles, texts)
        if shared_prefix and len(prompts) > 1:
            probs = next_token_shared_prefix(model, tokenizer, prompts, answers, batch_size)
        else:
            probs = generation.next_token_distribution(model, tokenizer, prompts, list(answers),
                                                       batch_size=batch_size)
        p_yes[user] = np.asarray(probs)[:, 0]
    order = np.argsort(-p_yes, axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1), p_yes
