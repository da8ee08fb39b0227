"""The privacy lab of notebook 10: membership inference against personalized models, and DP-SGD.

One entry point, :func:`privacy_lab`. For a few PersonaChat users it splits each user's own
training turns into *members* (they personalize the model) and *non-members* (held out, same
user, same distribution), then asks how well an attacker who sees the model's loss on a turn
can tell the two apart (:mod:`p13n_utils.membership`), for

* the **base LM** (it never saw any member: the control, AUC about 0.5 by construction);
* a **shared adapter**: one LoRA trained on every user's members pooled (global level);
* a **per-user adapter** (OPPU's personal LoRA, one per user, trained on that user's members
  only; :func:`p13n_utils.finetune.train_adapters`);
* **RAG**: no training at all, the members sit in the user's retrieval index (BM25 on the
  partner's message, :func:`p13n_utils.retrieval.retrieve`) and the attacker sees the loss of
  the retrieval-augmented prompt;
* the per-user adapter trained with **DP-SGD** (:mod:`p13n_utils.dp`) at each privacy budget
  ε (δ fixed), the defence.

Utility is each user's perplexity on their held-out (non-member) turns. The AUCs, the
per-user AUCs and the utility/privacy trade-off come back as tidy DataFrames, and the rows are
recorded through :mod:`p13n_utils.results` (``task="personachat"``, methods ``"privacy lab:
<setting>"``, set: the lab's users; metrics ``mia_auc_loss``, ``mia_auc_calibrated``, ``ppl``
(held-out turns), ``dp_epsilon``).

Sizes: :data:`LAB_SIZES` by run size (``cfg.name``); keyword overrides win. The cost is
training (per-user adapters, once without and once per ε with DP) and scoring every item once
per setting: ``n_users * 2 * n_members`` turns, short prompts (``n_history=0``: the partner's
message only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import adapters, dp, finetune, membership, results, retrieval, tasks
from .training import TrainConfig

__all__ = ["LAB_SIZES", "PrivacyLab", "lab_settings", "lab_rows", "rag_context", "score_items",
           "score_per_user", "setting_frame", "privacy_lab", "plot_tradeoff"]

LAB_SIZES = {
    #            users  members/user  shared steps  user steps  budgets ε
    "smoke": dict(n_users=2, n_members=2, shared_steps=1, user_steps=1, epsilons=(8.0,)),
    "default": dict(n_users=6, n_members=4, shared_steps=6, user_steps=4, epsilons=(1.0, 8.0)),
    "full": dict(n_users=24, n_members=8, shared_steps=40, user_steps=15, epsilons=(0.5, 1.0, 2.0, 8.0, 32.0)),
}
"""Sizes of the lab by run size. Common settings: :data:`COMMON`."""

COMMON = dict(lr=3e-3, batch_size=4, lora_r=8, rag_k=2, n_history=0, delta=1e-3, max_grad_norm=1.0, seed=0)
"""Settings shared by every size: LoRA learning rate and rank, the shared adapter's batch, the
RAG ``k``, turns of dialogue history in the prompt, DP's δ and clipping norm ``C``, the seed."""

TASK = "personachat"


@dataclass
class PrivacyLab:
    """What :func:`privacy_lab` returns.

    Attributes
    ----------
    items : DataFrame
        One row per (setting, scored turn): ``setting, user_id, member, nll, nll_ref, loss,
        calibrated`` (``loss`` and ``calibrated`` are the attacker's scores).
    auc : DataFrame
        ``setting, level, epsilon, attack, auc, lower, upper, n_users``: mean per-user AUC and
        its 95% bootstrap interval over users.
    per_user : DataFrame
        ``setting, user_id, attack, auc``.
    tradeoff : DataFrame
        The figure's data, one row per model of the DP sweep (base LM, each ε, no DP):
        ``setting, epsilon, delta, noise_multiplier, ppl, ppl_lower, ppl_upper, auc_loss,
        auc_loss_lower, auc_loss_upper, auc_calibrated, auc_calibrated_lower,
        auc_calibrated_upper``.
    settings : dict
        The sizes and settings used.
    seconds : dict
        Wall-clock seconds per stage and ``total``; ``cpu_total``: CPU seconds of this process (all
        threads), the cost on a machine that other work does not share (wall ~ cpu_total / threads).
    """

    items: pd.DataFrame
    auc: pd.DataFrame
    per_user: pd.DataFrame
    tradeoff: pd.DataFrame
    settings: dict
    seconds: dict = field(default_factory=dict)


def lab_settings(cfg, **overrides) -> dict:
    """The lab's settings for run size ``cfg.name`` (:data:`LAB_SIZES` + :data:`COMMON`), with
    ``overrides`` (unknown names raise ``TypeError``)."""
    settings = {**COMMON, **LAB_SIZES.get(getattr(cfg, "name", "default"), LAB_SIZES["default"])}
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise TypeError(f"unknown privacy-lab settings {unknown}; known: {sorted(settings)}")
    settings.update(overrides)
    for eps in settings["epsilons"]:
        dp.check_budget(eps, settings["delta"])
    return settings


def lab_rows(cfg, n_users: int, n_members: int, seed: int = 0) -> pd.DataFrame:
    """PersonaChat training turns of ``n_users`` users with at least ``2 * n_members`` turns
    (a seeded sample; the held-out turns of notebooks 02-06 are never among them)."""
    ev = tasks.eval_sets(cfg, movielens=False).pc
    rows = finetune.personachat_rows(ev)
    counts = rows["user_id"].value_counts()
    eligible = np.sort(counts[counts >= 2 * n_members].index.to_numpy())
    if eligible.size < n_users:
        raise ValueError(f"only {eligible.size} users have {2 * n_members} training turns; lower n_users or n_members")
    chosen = np.random.default_rng(seed).choice(eligible, size=n_users, replace=False)
    return rows[rows["user_id"].isin(chosen)].reset_index(drop=True)


def rag_context(items: pd.DataFrame, k: int):
    """``context_fn(row)`` of the RAG setting: the ``k`` member replies of the row's user that
    BM25 ranks highest for the partner's message. The index holds the user's members only,
    so a member's own reply can be retrieved into its prompt; a non-member's cannot."""
    index = {user: mine.loc[mine["member"], "reply"].tolist() for user, mine in items.groupby("user_id")}

    def context_fn(row):
        corpus = index[row["user_id"]]
        return [corpus[i] for i in retrieval.retrieve("bm25", row["partner"], corpus, k)]
    return context_fn


def score_items(model, tokenizer, items: pd.DataFrame, n_history: int, context_fn=None, cache: bool = False) -> np.ndarray:
    """NLL per token of each item's reply under ``model`` (:func:`p13n_utils.tasks.score_personachat`)."""
    frame = tasks.score_personachat(model, tokenizer, items, context_fn, n_history=n_history, cache=cache)
    return frame["nll_mean"].to_numpy(dtype=float)


def score_per_user(model, tokenizer, items: pd.DataFrame, n_history: int, adapter_of) -> np.ndarray:
    """NLL of each item under its own user's adapter ``adapter_of(user)`` (item order kept)."""
    nll = np.full(len(items), np.nan)
    for user, mine in items.groupby("user_id"):
        with adapters.use_adapter(model, adapter_of(user)):
            nll[items.index.get_indexer(mine.index)] = score_items(model, tokenizer, mine, n_history)
    return nll


def setting_frame(items: pd.DataFrame, setting: str, nll, nll_ref) -> pd.DataFrame:
    """The scored items of one setting with the attacker's scores (:func:`membership.attack_scores`)."""
    scores = membership.attack_scores(nll, nll_ref)
    return pd.DataFrame({"setting": setting, "user_id": items["user_id"].to_numpy(),
                         "member": items["member"].to_numpy(), "nll": np.asarray(nll, dtype=float),
                         "nll_ref": np.asarray(nll_ref, dtype=float), **{c: scores[c].to_numpy() for c in scores}})


def _pairs(tokenizer, items: pd.DataFrame, n_history: int) -> pd.DataFrame:
    return finetune.personachat_pairs(tokenizer, items[items["member"]], n_history=n_history)


def privacy_lab(cfg, model=None, tokenizer=None, rows: pd.DataFrame | None = None, record: bool = True,
                **overrides) -> PrivacyLab:
    """Run the privacy lab: attack AUC per setting, then the DP-SGD sweep.

    Parameters
    ----------
    cfg
        ``config.setup(RUN_SIZE)``: picks the sizes (:data:`LAB_SIZES`) and the data's users.
    model, tokenizer : optional
        A plain causal LM the lab may modify (adapters are added to it and deleted again).
        Default: a private copy of the default LM (``models.load_lm(fresh=True)``).
    rows : DataFrame, optional
        Users' turns (``user_id, dialogue_id, turn, persona, history, partner, reply``, as
        :func:`p13n_utils.finetune.personachat_rows` gives). Default: :func:`lab_rows`.
    record : bool, default True
        Record the rows through :func:`p13n_utils.results.record`.
    **overrides
        Any setting of :data:`LAB_SIZES` / :data:`COMMON` (e.g. ``epsilons=(1.0,)``).

    Returns
    -------
    PrivacyLab
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    s = lab_settings(cfg, **overrides)
    seconds: dict = {}
    if model is None:
        from .models import load_lm

        model, tokenizer = load_lm(fresh=True)
    if adapters.is_peft(model) or adapters.has_injected_adapters(model):
        raise TypeError("privacy_lab needs a plain model (no adapters): it adds and removes its own")
    if rows is None:
        rows = lab_rows(cfg, s["n_users"], s["n_members"], seed=s["seed"])
    items = membership.split_members(rows, s["n_members"], seed=s["seed"])
    nh = s["n_history"]
    member_pairs = _pairs(tokenizer, items, nh)
    train = TrainConfig(lr=s["lr"], batch_size=s["batch_size"], seed=s["seed"])
    user_train = train.replace(steps=s["user_steps"], batch_size=s["n_members"])      # full batch: DP's q = 1
    frames, tick = [], time.perf_counter()

    nll_base = score_items(model, tokenizer, items, nh, cache=True)     # the reference model
    frames.append(setting_frame(items, "base LM", nll_base, nll_base))
    frames.append(setting_frame(items, "RAG (members in the index)",
                                score_items(model, tokenizer, items, nh, rag_context(items, s["rag_k"]), cache=True),
                                nll_base))
    seconds["base and RAG"], tick = time.perf_counter() - tick, time.perf_counter()

    model = finetune.train_lora(model, tokenizer, member_pairs, train.replace(steps=s["shared_steps"]), "shared",
                                r=s["lora_r"], alpha=2 * s["lora_r"]).model
    frames.append(setting_frame(items, "shared adapter", score_items(model, tokenizer, items, nh), nll_base))
    model.delete_adapter("shared")
    seconds["shared adapter"], tick = time.perf_counter() - tick, time.perf_counter()

    model = finetune.train_adapters(model, tokenizer, member_pairs, user_train, prefix="user",
                                    r=s["lora_r"], alpha=2 * s["lora_r"]).model
    frames.append(setting_frame(items, "per-user adapter", score_per_user(model, tokenizer, items, nh,
                                                                           lambda u: f"user_{u}"), nll_base))
    for user in items["user_id"].unique():
        model.delete_adapter(f"user_{user}")
    seconds["per-user adapter"], tick = time.perf_counter() - tick, time.perf_counter()

    privacy = {"base LM": dict(epsilon=0.0, delta=0.0, noise_multiplier=np.nan),
               "per-user adapter": dict(epsilon=np.inf, delta=0.0, noise_multiplier=0.0)}
    for eps in s["epsilons"]:
        setting = f"per-user adapter, DP eps={eps:g}"
        for user, mine in member_pairs.groupby("user_id"):
            result = dp.train_lora_dp(model, tokenizer, mine, user_train, f"dp_user_{user}", eps, s["delta"],
                                      s["max_grad_norm"], r=s["lora_r"], alpha=2 * s["lora_r"], user=user)
            model = result.model
        privacy[setting] = {k: result.privacy[k] for k in ("epsilon", "delta", "noise_multiplier")}
        frames.append(setting_frame(items, setting, score_per_user(model, tokenizer, items, nh,
                                                                   lambda u: f"dp_user_{u}"), nll_base))
        for user in items["user_id"].unique():
            model.delete_adapter(f"dp_user_{user}")
        seconds[setting], tick = time.perf_counter() - tick, time.perf_counter()

    lab = _summarise(pd.concat(frames, ignore_index=True), privacy, s)
    lab.seconds = {**seconds, "total": time.perf_counter() - start, "cpu_total": time.process_time() - cpu_start}
    if record:
        _record(lab)
    return lab


LEVELS = {"base LM": "global", "shared adapter": "global"}      # every other setting is user-level


def _summarise(scored: pd.DataFrame, privacy: dict, s: dict) -> PrivacyLab:
    auc_rows, per_user, trade = [], [], []
    for setting, frame in scored.groupby("setting", sort=False):
        epsilon = privacy.get(setting, {}).get("epsilon", np.nan)
        summary = membership.auc_summary(frame, seed=s["seed"])
        auc_rows += [{"setting": setting, "level": LEVELS.get(setting, "user"), "epsilon": epsilon, **row}
                     for row in summary.to_dict("records")]
        for attack in membership.ATTACKS:
            per_user.append(membership.per_user_auc(frame, attack).rename("auc").reset_index()
                            .assign(setting=setting, attack=attack))
        if setting in privacy:
            held_out = frame[~frame["member"]].groupby("user_id")["nll"].mean()
            ppl = results.ci_row(TASK, "user", setting, "ppl", held_out, seed=s["seed"], transform=np.exp)
            row = {"setting": setting, **privacy[setting], "ppl": ppl["value"], "ppl_lower": ppl["lower"],
                   "ppl_upper": ppl["upper"]}
            for r in summary.to_dict("records"):
                a = r["attack"]
                row.update({f"auc_{a}": r["auc"], f"auc_{a}_lower": r["lower"], f"auc_{a}_upper": r["upper"]})
            trade.append(row)
    per_user = pd.concat(per_user, ignore_index=True)[["setting", "user_id", "attack", "auc"]]
    trade = pd.DataFrame(trade).sort_values("epsilon", ignore_index=True)
    return PrivacyLab(scored, pd.DataFrame(auc_rows), per_user, trade, dict(s))


def _record(lab: PrivacyLab) -> None:
    """The lab's results rows, each with its per-user values (AUC, held-out NLL) beside it; the
    set is the lab's users (:func:`p13n_utils.results.set_id`)."""
    per_user = lab.per_user.set_index("user_id")
    for row in lab.auc.itertuples():
        mine = per_user[(per_user["setting"] == row.setting) & (per_user["attack"] == row.attack)]["auc"]
        results.record(TASK, row.level, f"privacy lab: {row.setting}", f"mia_auc_{row.attack}", row.auc,
                       row.lower, row.upper, n=row.n_users, per_user=mine)
    held_out = lab.items[~lab.items["member"]].groupby(["setting", "user_id"])["nll"].mean()
    lab_set = results.set_id(TASK, lab.items["user_id"].unique())
    for row in lab.tradeoff.itertuples():
        method = f"privacy lab: {row.setting}"
        results.record(TASK, LEVELS.get(row.setting, "user"), method, "ppl", row.ppl, row.ppl_lower,
                       row.ppl_upper, n=lab.settings["n_users"], per_user=held_out.loc[row.setting])
        if 0 < row.epsilon < np.inf:
            results.record(TASK, "user", method, "dp_epsilon", row.epsilon, set=lab_set)


def plot_tradeoff(lab: PrivacyLab, attack: str = "calibrated", ax=None):
    """The figure: held-out perplexity (utility) against attack AUC (privacy leak), one point
    per model of the DP sweep, with 95% intervals. Returns the matplotlib axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4))
    t = lab.tradeoff
    x, y = t[f"auc_{attack}"], t["ppl"]
    ax.errorbar(x, y, xerr=[x - t[f"auc_{attack}_lower"], t[f"auc_{attack}_upper"] - x],
                yerr=[y - t["ppl_lower"], t["ppl_upper"] - y], fmt="o", capsize=3)
    for xi, yi, name, eps in zip(x, y, t["setting"], t["epsilon"]):
        label = "base LM" if eps == 0 else ("no DP" if np.isinf(eps) else f"ε={eps:.2g}")
        ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"membership-inference AUC ({attack} attack; 0.5 = chance)")
    ax.set_ylabel("held-out perplexity (lower = more useful)")
    ax.set_title(f"Privacy vs utility of per-user adapters (δ={lab.settings['delta']:g})")
    return ax
