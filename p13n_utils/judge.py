"""LLM-as-judge for personalization, tested on pairs whose answer is known (notebook 09).

Papers often evaluate a personalized reply by asking an LLM "which reply fits this user?". Here
the project's own LM is that judge, and we check it where the truth is known: for each
evaluated PersonaChat user, the **user's own gold reply** to a turn against **another user's
gold reply** (from another dialogue), with the user's persona facts and the partner's turn in
the prompt. The judge's verdict is read from its next-token probabilities of ``A`` and ``B``
(:func:`p13n_utils.generation.next_token_distribution`: one forward pass, nothing parsed).

Every pair is shown in **both orders** (own reply in slot A, then in slot B), which measures

* **accuracy**: share of verdicts that pick the user's own reply (0.5 = chance), and the
  order-averaged accuracy (``P(own)`` averaged over the two orders, then > 0.5);
* **position bias**: how often the verdict *flips* when only the order changes (a judge
  without position bias never flips), and how often it picks slot A (0.5 = no preference);
* **length bias**: how often it picks the longer of two replies of unequal length, against how
  often the longer reply is in fact the user's own (a judge that only prefers length would
  score exactly that share).

:func:`judge_bias` does the arithmetic on any verdict table, so it is tested with a fake judge;
:func:`llm_judge` is the entry point of the notebook section.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pandas as pd

__all__ = ["JUDGE_SYSTEM", "ANSWER_PREFIX", "judge_pairs", "judge_message", "judge_items", "lm_judge_scorer",
           "judge_verdicts", "judge_bias", "llm_judge", "JUDGE_METRICS"]

TASK = "personachat-judge"
JUDGE_SYSTEM = "You compare two chat replies and say which one this person wrote. Answer with A or B."
ANSWER_PREFIX = "Answer: "
JUDGE_METRICS = {
    "judge_acc": "correct",
    "judge_acc_order_avg": "correct_order_avg",
    "judge_flip_rate": "flipped",
    "judge_slot_a_rate": "picked_a",
    "judge_longer_rate": "picked_longer",
    "longer_is_own_rate": "own_longer",
}
"""Recorded metric -> per-user column of :func:`judge_bias`."""


def judge_pairs(pc, n_users: int | None = None, seed: int = 0) -> pd.DataFrame:
    """One known-answer pair per evaluated user: ``user_id, facts, partner, own, other,
    other_user``. ``own`` is the user's gold reply to their first test turn, ``other`` the gold
    test reply of another user (a seeded derangement: nobody is paired with themselves)."""
    from . import user_context as uc

    items = pc.generation_items(n_users)
    if len(items) < 2:
        raise ValueError(f"a judge needs at least 2 users (own vs another user's reply), got {len(items)}")
    swap = uc.derangement(items["user_id"].tolist(), seed=seed)
    reply_of = dict(zip(items["user_id"], items["reply"]))
    return pd.DataFrame({"user_id": items["user_id"], "facts": [pc.facts_of(u) for u in items["user_id"]],
                         "partner": items["partner"], "own": items["reply"],
                         "other": [reply_of[swap[u]] for u in items["user_id"]],
                         "other_user": [swap[u] for u in items["user_id"]]})


def judge_message(facts, partner: str, reply_a: str, reply_b: str) -> str:
    """The question put to the judge (plain text)."""
    for name, text in (("partner", partner), ("reply A", reply_a), ("reply B", reply_b)):
        if not str(text).strip():
            raise ValueError(f"{name} is empty: the judge needs two non-empty replies to a non-empty turn")
    facts = "\n".join(f"- {f}" for f in facts)
    return (f"About this person:\n{facts}\n\nSomeone said to them: \"{partner}\"\n\n"
            f"Which reply did this person write?\nA: {reply_a}\nB: {reply_b}")


def judge_items(pairs: pd.DataFrame, tokenizer=None) -> pd.DataFrame:
    """Each pair in both orders: ``user_id, order ("own_in_a" / "own_in_b"), a, b, prompt``.
    With a tokenizer the prompt is in its chat template (+ ``"Answer: "``), else plain text."""
    from . import prompts

    rows = []
    for _, p in pairs.iterrows():
        for order, (a, b) in (("own_in_a", (p["own"], p["other"])), ("own_in_b", (p["other"], p["own"]))):
            message = judge_message(p["facts"], p["partner"], a, b)
            prompt = message if tokenizer is None else \
                prompts.chat_prompt(tokenizer, message, system=JUDGE_SYSTEM) + ANSWER_PREFIX
            rows.append({"user_id": p["user_id"], "order": order, "a": a, "b": b, "prompt": prompt})
    return pd.DataFrame(rows)


def lm_judge_scorer(model, tokenizer, batch_size: int = 16, cache: bool = True) -> Callable[[pd.DataFrame], np.ndarray]:
    """A scorer for :func:`judge_verdicts`: ``P(A)`` renormalised over the tokens ``A`` and ``B``
    after each prompt (memoised like every LM output of the series)."""
    from .cache import fingerprint, memo
    from .generation import next_token_distribution

    def scorer(items: pd.DataFrame) -> np.ndarray:
        texts = items["prompt"].tolist()
        payload = {"model": fingerprint(model) if cache else "", "prompts": texts, "labels": ["A", "B"]}
        probs = memo("labels", payload, lambda: next_token_distribution(
            model, tokenizer, texts, ["A", "B"], batch_size=batch_size).tolist(), cache)
        return np.asarray(probs, dtype=float).reshape(len(texts), 2)[:, 0]

    return scorer


def _words(text: str) -> int:
    return len(str(text).split())


def judge_verdicts(items: pd.DataFrame, scorer: Callable[[pd.DataFrame], np.ndarray]) -> pd.DataFrame:
    """Add the judge's verdict to each item of :func:`judge_items`: ``p_a`` (its probability of
    A), ``picked_a``, ``p_own`` (its probability of the user's own reply), ``correct``, and the
    lengths in words: ``own_longer`` and ``picked_longer`` (NaN when both replies are as long)."""
    p_a = np.asarray(scorer(items), dtype=float)
    if p_a.shape != (len(items),) or not np.all((p_a >= 0) & (p_a <= 1)):
        raise ValueError("the scorer must return one probability in [0, 1] per item")
    out = items.copy()
    out["p_a"] = p_a
    out["picked_a"] = p_a > 0.5
    own_in_a = (out["order"] == "own_in_a").to_numpy()
    out["p_own"] = np.where(own_in_a, p_a, 1 - p_a)
    out["correct"] = out["p_own"] > 0.5
    len_a, len_b = out["a"].map(_words).to_numpy(), out["b"].map(_words).to_numpy()
    unequal = len_a != len_b
    a_longer = len_a > len_b
    out["own_longer"] = np.where(unequal, np.where(own_in_a, a_longer, ~a_longer), np.nan)
    out["picked_longer"] = np.where(unequal, out["picked_a"].to_numpy() == a_longer, np.nan)
    return out


def judge_bias(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per-user accuracy and biases from :func:`judge_verdicts` (each user: one pair, two orders).

    Columns: ``correct`` (share of the 2 verdicts right), ``correct_order_avg`` (1 if the mean of
    ``p_own`` over the two orders is > 0.5), ``flipped`` (1 if the two orders pick different
    replies), ``picked_a`` (share of verdicts for slot A), ``picked_longer`` and ``own_longer``
    (NaN for a pair of equal lengths), indexed by ``user_id``.
    """
    rows = {}
    for user, g in verdicts.groupby("user_id", sort=True):
        if sorted(g["order"]) != ["own_in_a", "own_in_b"]:
            raise ValueError(f"user {user!r} needs exactly one verdict in each order, got {sorted(g['order'])}")
        picked_own = g["correct"].to_numpy()
        rows[user] = {"correct": picked_own.mean(), "correct_order_avg": float(g["p_own"].mean() > 0.5),
                      "flipped": float(picked_own[0] != picked_own[1]), "picked_a": g["picked_a"].mean(),
                      "picked_longer": g["picked_longer"].mean(), "own_longer": g["own_longer"].mean()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("user_id")


def llm_judge(cfg, pc, model, tokenizer, n_users: int | None = None, record: bool = True,
              scorer: Callable | None = None) -> dict:
    """Notebook 09's LLM-as-judge section in one call.

    Parameters
    ----------
    cfg : the run size; ``n_users`` defaults to ``cfg["p09.judge_users"]`` (None: every user).
    pc : :class:`p13n_utils.tasks.PersonaChatEval`.
    model, tokenizer : the judge (the project's LM); ``scorer`` replaces them (e.g. a fake judge).
    record : record the rows of :data:`JUDGE_METRICS` (task ``personachat-judge``, level ``user``,
        method ``lm_judge``) with 95% bootstrap intervals over users.

    Returns
    -------
    dict with ``verdicts`` (one row per pair and order), ``per_user`` (:func:`judge_bias`),
    ``summary`` (metric, value, lower, upper, n; chance is 0.5 for the accuracy and slot-A rate,
    0 for the flip rate), ``example`` (one prompt) and ``seconds``.
    """
    from . import results

    start = time.perf_counter()
    n_users = cfg.get("p09.judge_users") if n_users is None else n_users
    pairs = judge_pairs(pc, n_users, seed=cfg.seed)
    items = judge_items(pairs, tokenizer)
    scorer = scorer or lm_judge_scorer(model, tokenizer, batch_size=cfg["lm.batch_size"])
    verdicts = judge_verdicts(items, scorer)
    per_user = judge_bias(verdicts)
    rows = []
    for metric, column in JUDGE_METRICS.items():
        values = per_user[column].dropna()
        if values.empty:
            continue
        if record:
            r = results.record_ci(TASK, "user", "lm_judge", metric, values, n_resamples=cfg["bootstrap.n_resamples"])
            value, lower, upper = r["value"], r["lower"], r["upper"]
        else:
            value, lower, upper = results.bootstrap_ci(values.to_numpy(), n_resamples=cfg["bootstrap.n_resamples"])
        rows.append({"metric": metric, "value": value, "lower": lower, "upper": upper, "n": len(values)})
    return {"verdicts": verdicts, "per_user": per_user, "summary": pd.DataFrame(rows),
            "example": items["prompt"].iloc[0], "seconds": time.perf_counter() - start}
