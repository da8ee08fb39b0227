"""The survey's families of text metrics, measured against each other on the same replies (09).

Direct evaluation of a personalized reply compares it with the user's own (gold) reply. The
families differ in what they count as "the same":

* **n-gram overlap** — ROUGE-1/2 (:func:`rouge_n`: shared word n-grams) and ROUGE-L
  (:func:`rouge_l`: the longest common subsequence of words), minimal implementations over the
  tokenizer of the ``rouge_score`` package and cross-checked against it; BLEU and chrF from
  ``sacrebleu`` (:func:`bleu_chrf`: word n-gram precision with a brevity penalty; character
  n-gram F-score);
* **embedding similarity** — the cosine of the two replies' sentence embeddings (MiniLM,
  :func:`embedding_similarity`);
* **BERTScore** — greedy matching of contextual token embeddings (:func:`bertscore`):
  ``P = mean over reply tokens of the best cosine with a gold token``, ``R`` the same from the
  gold side, ``F1 = 2PR / (P + R)``; cross-checked against the ``bert-score`` package run with
  the same local MiniLM (:func:`bertscore_package`).

:func:`text_metric_families` is the entry point of notebook 09's section: it generates (or
reads from the memo) the replies of the ladder's rungs for the PersonaChat generation users,
scores every reply with every metric (:func:`reply_metrics`), records per-method means with
intervals, and measures how alike the metrics rank replies (:func:`metric_agreement`, Kendall
tau with an interval over users) and on which kinds of reply they disagree
(:func:`agreement_by_kind`).

Every metric here is "higher is better", in [0, 1] (cosines in [-1, 1]). Empty replies or
references raise ``ValueError``: no metric is defined for them.
"""

from __future__ import annotations

import time
from collections import Counter
from itertools import combinations
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "METRIC_NAMES", "tokenize", "rouge_n", "rouge_l", "rouge_scores", "bleu_chrf", "embedding_similarity",
    "bertscore", "bertscore_package", "reply_metrics", "metric_agreement", "agreement_matrix", "agreement_by_kind",
    "reply_kinds", "ladder_reply_methods", "generate_ladder_replies", "paired_comparisons", "text_metric_families",
]

METRIC_NAMES = ("rouge1", "rouge2", "rougeL", "bleu", "chrf", "gold_embed_sim", "bertscore_f1")
"""The per-reply metrics of :func:`reply_metrics`, in the order of the tables."""

TASK = "personachat-replies"
"""Task name of this section's rows (replies generated for PersonaChat's held-out turns)."""


def _pairs(predictions, references) -> tuple[list[str], list[str]]:
    predictions, references = [str(p) for p in predictions], [str(r) for r in references]
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    for name, texts in (("prediction", predictions), ("reference", references)):
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise ValueError(f"{len(empty)} empty {name}(s) (first at index {empty[0]}): a text metric is "
                             "undefined for an empty reply; drop or regenerate it first")
    return predictions, references


# --------------------------------------------------------------------------- n-gram overlap
def tokenize(text: str) -> list[str]:
    """The words ROUGE compares: ``rouge_score``'s tokenizer (lower case, letters and digits
    only, Porter stemming of words longer than 3 letters), so our counts match the package's."""
    from rouge_score import tokenizers

    return tokenizers.DefaultTokenizer(use_stemmer=True).tokenize(text)


def _f1(overlap: float, n_pred: int, n_ref: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_pred, overlap / n_ref
    return 2 * precision * recall / (precision + recall)


def rouge_n(prediction: str, reference: str, n: int = 1) -> float:
    """ROUGE-N F1 of one pair: clipped count of shared word n-grams,
    ``P = overlap / #pred n-grams``, ``R = overlap / #ref n-grams``, ``F1 = 2PR/(P+R)``."""
    pred, ref = tokenize(prediction), tokenize(reference)
    grams = lambda toks: Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))  # noqa: E731
    p, r = grams(pred), grams(ref)
    overlap = sum((p & r).values())          # Counter & Counter: the minimum count of each n-gram
    return _f1(overlap, sum(p.values()), sum(r.values()))


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of one pair: the longest common subsequence (LCS) of the two word sequences,
    ``P = LCS / #pred words``, ``R = LCS / #ref words``, by dynamic programming."""
    pred, ref = tokenize(prediction), tokenize(reference)
    lcs = np.zeros((len(pred) + 1, len(ref) + 1), dtype=int)
    for i, a in enumerate(pred, 1):
        for j, b in enumerate(ref, 1):
            lcs[i, j] = lcs[i - 1, j - 1] + 1 if a == b else max(lcs[i - 1, j], lcs[i, j - 1])
    return _f1(lcs[-1, -1], len(pred), len(ref))


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> pd.DataFrame:
    """``rouge1``, ``rouge2`` and ``rougeL`` (F1) of each pair, one row per pair."""
    predictions, references = _pairs(predictions, references)
    return pd.DataFrame({"rouge1": [rouge_n(p, r, 1) for p, r in zip(predictions, references)],
                         "rouge2": [rouge_n(p, r, 2) for p, r in zip(predictions, references)],
                         "rougeL": [rouge_l(p, r) for p, r in zip(predictions, references)]})


def bleu_chrf(predictions: Sequence[str], references: Sequence[str]) -> pd.DataFrame:
    """Sentence BLEU (``sacrebleu`` defaults: 13a tokenizer, n-grams up to 4, brevity penalty,
    ``exp`` smoothing of empty n-gram orders) and chrF (character 6-grams, beta = 2) of each pair,
    rescaled from sacrebleu's 0-100 to [0, 1]."""
    import sacrebleu

    predictions, references = _pairs(predictions, references)
    return pd.DataFrame({
        "bleu": [sacrebleu.sentence_bleu(p, [r]).score / 100 for p, r in zip(predictions, references)],
        "chrf": [sacrebleu.sentence_chrf(p, [r]).score / 100 for p, r in zip(predictions, references)],
    })


# --------------------------------------------------------------------------- embeddings
def embedding_similarity(embedder, predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Cosine between each prediction's and its reference's sentence embedding (unit vectors)."""
    predictions, references = _pairs(predictions, references)
    a = embedder.encode(predictions, normalize_embeddings=True)
    b = embedder.encode(references, normalize_embeddings=True)
    return np.sum(np.asarray(a) * np.asarray(b), axis=1).astype(float)


def _token_vectors(embedder, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length contextual vectors of every token of ``text`` (last layer of the embedder's
    transformer, special tokens included) and a mask of the content (non-special) tokens."""
    import torch

    tok, model = embedder.tokenizer, embedder[0].auto_model
    enc = tok(text, truncation=True, return_tensors="pt", return_special_tokens_mask=True)
    special = enc.pop("special_tokens_mask")[0].numpy().astype(bool)
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state[0].double().numpy()
    return hidden / np.linalg.norm(hidden, axis=1, keepdims=True), ~special


def bertscore(embedder, predictions: Sequence[str], references: Sequence[str]) -> pd.DataFrame:
    """Minimal BERTScore (Zhang et al. 2020) with the embedder's own transformer, no idf, no
    baseline rescaling: greedy matching of token vectors.

    ``S = X Y^T`` holds the cosines between the prediction's tokens ``X`` and the reference's
    ``Y``. ``P`` is the mean over the prediction's content tokens of their best match in the
    reference, ``R`` the mean over the reference's content tokens of their best match in the
    prediction, ``F1 = 2PR / (P + R)``. As in the ``bert-score`` package, [CLS]/[SEP] are left out
    of the means but may be the best match of a token.

    Returns
    -------
    DataFrame with ``bertscore_p``, ``bertscore_r``, ``bertscore_f1`` per pair.
    """
    predictions, references = _pairs(predictions, references)
    rows = []
    for pred, ref in zip(predictions, references):
        x, x_content = _token_vectors(embedder, pred)
        y, y_content = _token_vectors(embedder, ref)
        sim = x @ y.T
        p = sim[x_content].max(axis=1).mean()
        r = sim[:, y_content].max(axis=0).mean()
        rows.append({"bertscore_p": p, "bertscore_r": r, "bertscore_f1": 2 * p * r / (p + r)})
    return pd.DataFrame(rows, columns=["bertscore_p", "bertscore_r", "bertscore_f1"])


def bertscore_package(embedder, predictions: Sequence[str], references: Sequence[str]) -> pd.DataFrame:
    """The same scores from the ``bert-score`` package, pointed at the embedder's local model
    folder (no hub access) and its last layer, without idf or rescaling: a cross-check of
    :func:`bertscore`.

    One pair per batch: in a padded batch the package multiplies the cosines by the padding mask,
    so a token whose best cosine is negative gets 0 from a padding slot instead (its scores then
    depend on which sentences share the batch, by up to about 1e-3 on chat replies)."""
    import bert_score

    predictions, references = _pairs(predictions, references)
    model = embedder[0].auto_model
    scorer = bert_score.BERTScorer(model_type=model.name_or_path, num_layers=model.config.num_hidden_layers,
                                   idf=False, rescale_with_baseline=False, device="cpu")
    p, r, f = scorer.score(predictions, references, batch_size=1)
    return pd.DataFrame({"bertscore_p": p.double().numpy(), "bertscore_r": r.double().numpy(),
                         "bertscore_f1": f.double().numpy()})


def reply_metrics(embedder, predictions: Sequence[str], references: Sequence[str]) -> pd.DataFrame:
    """Every metric of :data:`METRIC_NAMES` for each (prediction, reference) pair."""
    frame = pd.concat([rouge_scores(predictions, references), bleu_chrf(predictions, references)], axis=1)
    frame["gold_embed_sim"] = embedding_similarity(embedder, predictions, references)
    frame["bertscore_f1"] = bertscore(embedder, predictions, references)["bertscore_f1"].to_numpy()
    return frame[list(METRIC_NAMES)]


# --------------------------------------------------------------------------- do the metrics agree?
def _tau(a, b) -> float:
    from scipy.stats import kendalltau

    tau = kendalltau(a, b).statistic        # tau-b: corrects for ties (many ROUGE-2 zeros)
    return float(tau) if np.isfinite(tau) else 0.0


def metric_agreement(scores: pd.DataFrame, metrics: Sequence[str] = METRIC_NAMES, n_resamples: int = 2000,
                     seed: int = 0) -> pd.DataFrame:
    """Kendall tau-b between every two metrics over all scored replies (all methods pooled),
    with a 95% bootstrap interval that resamples **users** (all of a user's replies together).

    Parameters
    ----------
    scores : DataFrame with a ``user_id`` column and one column per metric (one row per reply).

    Returns
    -------
    DataFrame: ``metric_a, metric_b, tau, lower, upper, n_users, n_replies``.
    """
    if scores.empty:
        raise ValueError("metric_agreement got no scored replies")
    users = scores["user_id"].unique()
    by_user = {u: i for u, i in scores.groupby("user_id").indices.items()}
    rng = np.random.default_rng(seed)
    draws = [np.concatenate([by_user[u] for u in rng.choice(users, size=users.size)]) for _ in range(n_resamples)]
    rows = []
    for a, b in combinations(metrics, 2):
        x, y = scores[a].to_numpy(), scores[b].to_numpy()
        boot = [_tau(x[idx], y[idx]) for idx in draws]
        lower, upper = np.quantile(boot, [0.025, 0.975])
        rows.append({"metric_a": a, "metric_b": b, "tau": _tau(x, y), "lower": float(lower), "upper": float(upper),
                     "n_users": int(users.size), "n_replies": len(scores)})
    return pd.DataFrame(rows)


def agreement_matrix(agreement: pd.DataFrame) -> pd.DataFrame:
    """:func:`metric_agreement`'s pairs as a symmetric metric x metric table of tau (1 on the
    diagonal), ready for a heatmap."""
    names = list(dict.fromkeys(list(agreement["metric_a"]) + list(agreement["metric_b"])))
    matrix = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for _, row in agreement.iterrows():
        matrix.loc[row["metric_a"], row["metric_b"]] = matrix.loc[row["metric_b"], row["metric_a"]] = row["tau"]
    return matrix


def reply_kinds(predictions: Sequence[str], references: Sequence[str]) -> pd.DataFrame:
    """Simple properties of each reply that the metrics may judge differently: ``short`` (fewer
    words than the median reply of this list), ``no_shared_word`` (no word in common with the gold
    reply after ROUGE's tokenizer) and ``question`` (ends with a question mark)."""
    words = [tokenize(p) for p in predictions]
    median = np.median([len(w) for w in words]) if words else 0
    return pd.DataFrame({
        "short": [len(w) < median for w in words],
        "no_shared_word": [not set(w) & set(tokenize(r)) for w, r in zip(words, references)],
        "question": [str(p).strip().endswith("?") for p in predictions],
    })


def agreement_by_kind(scores: pd.DataFrame, kinds: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """Kendall tau of the given metric pairs within each kind of reply (a kind is true / false).

    Returns
    -------
    DataFrame with one row per kind and value: ``kind, is, n_replies`` and one tau column per pair
    (``"<a> vs <b>"``); NaN where fewer than 5 replies are of that kind.
    """
    rows = []
    for kind in kinds.columns:
        for value in (True, False):
            mask = (kinds[kind] == value).to_numpy()
            row = {"kind": kind, "is": value, "n_replies": int(mask.sum())}
            for a, b in pairs:
                row[f"{a} vs {b}"] = _tau(scores.loc[mask, a], scores.loc[mask, b]) if mask.sum() >= 5 else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the replies of the ladder
def ladder_reply_methods(cfg, pc, embedder) -> tuple[pd.DataFrame, dict]:
    """The items and prompts of the rungs whose replies earlier notebooks generated, rebuilt the
    same way so that the replies come from the memo (:func:`p13n_utils.cache.memo`) when 02-04
    ran before with the same run size.

    Returns
    -------
    items : DataFrame
        04's generation items (02's generation items of the users 04 scores).
    methods : dict
        method -> ``(level, items_to_generate_for, context_fn, header)``: ``no_persona`` (02),
        ``persona_prompt`` (03: the central facts of the user's persona, own facts excluded),
        ``contextual`` (04: the user's own facts), ``contextual_other_user`` (04's control: another user's facts).
    """
    from . import personas, prompts
    from . import user_context as uc

    gen02 = pc.generation_items(cfg["tasks.pc_gen_users"])
    n_facts = cfg["personas.n_facts"]
    fact_vectors = personas.embed_facts(embedder, pc.user_facts)
    val_vectors = embedder.encode(pc.val["reply"].tolist(), normalize_embeddings=True)
    val_targets = {u: val_vectors[(pc.val["user_id"] == u).to_numpy()] for u in pc.users}
    curve = personas.persona_k_curve(pc.user_facts, fact_vectors, cfg["personas.pc_k_grid"], val_targets,
                                     n_facts=n_facts, seed=cfg.seed)
    k = personas.choose_k_min_users(curve, cfg["personas.min_users"])
    pc_personas = personas.personachat_fact_personas(pc.user_facts, fact_vectors, k=k, seed=cfg.seed)
    users04 = uc.evaluated_users(pc.users, cfg["p04.pc_users"], seed=cfg.seed)
    items = gen02[gen02["user_id"].isin(users04)].head(cfg["p04.gen_users"]).reset_index(drop=True)
    swap = uc.derangement(users04, seed=cfg.seed)
    user, persona = prompts.HEADERS["user"], prompts.HEADERS["persona"]
    methods = {
        "no_persona": ("global", gen02, None, user),
        "persona_prompt": ("persona", gen02, lambda row: pc_personas.context_for(row["user_id"], n_facts=n_facts),
                           persona),
        "contextual": ("user", items, lambda row: uc.pc_facts(pc, row["user_id"]), user),
        "contextual_other_user": ("user", items, lambda row: uc.pc_facts(pc, swap[row["user_id"]]), user),
    }
    return items, methods


def generate_ladder_replies(model, tokenizer, items: pd.DataFrame, methods: dict, max_new_tokens: int = 24,
                            batch_size: int = 16) -> pd.DataFrame:
    """One row per (item, method): ``dialogue_id, user_id, method, level, reply (gold), generated``
    (greedy, memoised by :func:`p13n_utils.tasks.generate_personachat`)."""
    from . import tasks

    frames = []
    for method, (level, gen_items, context_fn, header) in methods.items():
        texts = tasks.generate_personachat(model, tokenizer, gen_items, context_fn, header=header,
                                           max_new_tokens=max_new_tokens, batch_size=batch_size)
        by_dialogue = dict(zip(gen_items["dialogue_id"], texts))
        frames.append(items[["dialogue_id", "user_id", "reply"]].assign(
            method=method, level=level, generated=[by_dialogue[d] for d in items["dialogue_id"]]))
    return pd.concat(frames, ignore_index=True)


def paired_comparisons(per_user_of: dict, levels: dict, n_resamples: int = 2000, record: bool = True,
                       baseline: str = "no_persona", controls: dict | None = None) -> pd.DataFrame:
    """Each method against the global ``baseline`` and each user-level method against its matched
    control (default ``contextual`` vs ``contextual_other_user``), metric by metric, paired over the
    same users (:func:`p13n_utils.results.record_paired`: rows ``<metric>_diff_vs_<baseline>``).

    Returns
    -------
    DataFrame: ``method, baseline, metric, diff, lower, upper, n``.
    """
    from . import results

    controls = {"contextual": "contextual_other_user"} if controls is None else controls
    pairs = [(m, baseline) for m in per_user_of if m != baseline and baseline in per_user_of]
    pairs += [(m, c) for m, c in controls.items() if m in per_user_of and c in per_user_of]
    rows = []
    for method, base in pairs:
        for metric in METRIC_NAMES:
            a, b = per_user_of[method][metric], per_user_of[base][metric]
            if record:
                d = results.record_paired(TASK, levels[method], method, metric, a, b, base, n_resamples=n_resamples)
            else:
                d = results.paired_difference(a, b, n_resamples=n_resamples)
            rows.append({"method": method, "baseline": base, "metric": metric, "diff": d["mean"],
                         "lower": d["lower"], "upper": d["upper"], "n": d["n"]})
    return pd.DataFrame(rows)


def text_metric_families(cfg, pc, model, tokenizer, embedder, record: bool = True) -> dict:
    """Notebook 09's text-metric section in one call.

    Parameters
    ----------
    cfg : the run size (``config.setup``).
    pc : :class:`p13n_utils.tasks.PersonaChatEval` (``tasks.eval_sets(cfg).pc``).
    model, tokenizer : the project's LM (``models.load_lm``).
    embedder : the MiniLM sentence embedder (``models.load_embedder``).
    record : bool
        Record the per-method means (task ``personachat-replies``) and the metric agreements.

    Returns
    -------
    dict with
        ``replies`` (one row per generated reply, with every metric and its kinds),
        ``means`` (per method and metric: value, lower, upper, n), ``paired`` (:func:`paired_comparisons`),
        ``agreement`` (:func:`metric_agreement`; ``agreement_matrix`` the same as a square table),
        ``method_ranks`` (each metric's ranking of the
        methods, 1 = best), ``method_tau`` (Kendall tau between the metrics' rankings of methods),
        ``by_kind`` (:func:`agreement_by_kind`), ``crosscheck`` (largest absolute difference of the
        minimal ROUGE / BERTScore from the packages), ``dropped_empty`` and ``seconds``.
    """
    from . import metrics, results

    start = time.perf_counter()
    n_boot = cfg["bootstrap.n_resamples"]
    items, methods = ladder_reply_methods(cfg, pc, embedder)
    replies = generate_ladder_replies(model, tokenizer, items, methods, max_new_tokens=cfg["lm.max_new_tokens"],
                                      batch_size=cfg["lm.batch_size"])
    empty = replies["generated"].str.strip() == ""
    bad_dialogues = set(replies.loc[empty, "dialogue_id"])  # drop the item for every method (stay paired)
    replies = replies[~replies["dialogue_id"].isin(bad_dialogues)].reset_index(drop=True)
    scores = reply_metrics(embedder, replies["generated"], replies["reply"])
    replies = pd.concat([replies, scores, reply_kinds(replies["generated"], replies["reply"])], axis=1)

    rows, per_user_of = [], {}
    for method, group in replies.groupby("method", sort=False):
        per_user = per_user_of[method] = group.groupby("user_id")[list(METRIC_NAMES)].mean()
        for metric in METRIC_NAMES:
            values = per_user[metric]
            if record:
                r = results.record_ci(TASK, group["level"].iloc[0], method, metric, values, n_resamples=n_boot)
                value, lower, upper = r["value"], r["lower"], r["upper"]
            else:
                value, lower, upper = results.bootstrap_ci(values.to_numpy(), n_resamples=n_boot)
            rows.append({"method": method, "level": group["level"].iloc[0], "metric": metric, "value": value,
                         "lower": lower, "upper": upper, "n": len(values)})
    means = pd.DataFrame(rows)
    paired = paired_comparisons(per_user_of, {m: lvl for m, (lvl, *_) in methods.items()}, n_boot, record)

    agreement = metric_agreement(replies, n_resamples=n_boot, seed=cfg.seed)
    if record:
        for _, a in agreement.iterrows():
            results.record(TASK, "global", f"{a['metric_a']}~{a['metric_b']}", "kendall_tau", a["tau"],
                           a["lower"], a["upper"], n=a["n_users"])
    ranks = means.pivot(index="method", columns="metric", values="value")[list(METRIC_NAMES)].rank(ascending=False, method="min")
    method_tau = pd.DataFrame([{"metric_a": a, "metric_b": b, "tau": _tau(ranks[a], ranks[b])}
                               for a, b in combinations(METRIC_NAMES, 2)])
    by_kind = agreement_by_kind(replies, replies[["short", "no_shared_word", "question"]],
                                [("rougeL", "bertscore_f1"), ("rougeL", "gold_embed_sim"), ("bleu", "chrf")])
    sample = replies.head(min(len(replies), 40))
    crosscheck = {
        "rougeL_vs_rouge_score": float(np.abs(sample["rougeL"] - metrics.rouge_l(sample["generated"], sample["reply"])).max()),
        "bertscore_f1_vs_bert_score": float(np.abs(
            sample["bertscore_f1"] - bertscore_package(embedder, sample["generated"], sample["reply"])["bertscore_f1"]).max()),
        "n_pairs": len(sample),
    }
    return {"replies": replies, "means": means, "paired": paired, "agreement": agreement,
            "agreement_matrix": agreement_matrix(agreement), "method_ranks": ranks.astype(int),
            "method_tau": method_tau, "by_kind": by_kind, "crosscheck": crosscheck,
            "dropped_empty": len(bad_dialogues), "seconds": time.perf_counter() - start}
