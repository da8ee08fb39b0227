"""One registry of metric names: every results row names a metric that means one thing.

Each :class:`Metric` says which direction is better and, in one sentence, what the number is.
:func:`validate` is called by :func:`p13n_utils.results.make_row`, so a notebook that records
an unknown or misspelt name fails at once, with the closest registered names in the message.

Naming rules (so that the registry needs no entry per cut-off or per baseline)

* ``@<k>``: ``ndcg@10`` is the entry ``ndcg@k`` with k = 10 (any positive integer).
* ``<base>_diff_vs_<method>``: the paired difference ``base(this method) - base(<method>)``,
  computed user by user on the users both were evaluated on; same direction as ``base``;
  0 means "no difference".
* ``<base>_ratio_vs_<method>``: the paired ratio ``base(this method) / base(<method>)`` (for
  ``ppl``: exp of the mean per-user difference of NLLs); same direction as ``base``; 1 means
  "no difference".

``aggregate`` says how a row's value comes from its per-user values (the file
``build/results/<notebook>.users.csv.gz``): ``mean`` (the mean over users), ``exp_mean``
(exp of the mean: perplexity from per-user NLLs), ``sqrt_mean`` (the square root of the mean:
RMSE from per-user MSEs), or ``None`` (not a mean over users, e.g. catalog coverage).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

__all__ = ["Metric", "METRICS", "get", "validate", "describe", "base_name"]


@dataclass(frozen=True)
class Metric:
    """A metric of the results table.

    Attributes
    ----------
    name : str
        As recorded (``@k`` for a cut-off, see the module docstring).
    direction : {"higher", "lower"}
        Which way is better.
    description : str
        One sentence a student understands: what is measured, and what 0.5 / 1.0 mean where
        it matters.
    aggregate : {"mean", "exp_mean", "sqrt_mean"} or None
        How the row's value is computed from the per-user values kept beside it.
    """

    name: str
    direction: str
    description: str
    aggregate: str | None = "mean"

    def __post_init__(self):
        if self.direction not in ("higher", "lower"):
            raise ValueError(f"direction must be 'higher' or 'lower', got {self.direction!r}")
        if self.aggregate not in ("mean", "exp_mean", "sqrt_mean", None):
            raise ValueError(f"unknown aggregate {self.aggregate!r}")
        if not self.description.strip():
            raise ValueError(f"metric {self.name!r} needs a description")


_ENTRIES = [
    # ------------------------------------------------------------------ generation (PersonaChat)
    Metric("ppl", "lower", "Perplexity of the user's gold reply under the model: exp of the mean over users of "
           "the user's per-token negative log-likelihood (per-user values: that NLL); 1.0 would be a "
           "model certain of every token.", "exp_mean"),
    Metric("rougeL", "higher", "ROUGE-L F1 between the generated reply and the user's gold reply (longest common "
           "subsequence of words); 1.0 = the same words in the same order, 0 = no word in common."),
    Metric("persona_sim", "higher", "Cosine similarity (MiniLM embeddings) between the generated reply and the "
           "centroid of the facts of the dialogue's persona (the persona the user played in that dialogue); "
           "higher = the reply talks more about that persona."),
    Metric("user_facts_sim", "higher", "Cosine similarity (MiniLM embeddings) between the generated reply and the "
           "centroid of ALL the character's distinct facts over all their dialogues (the facts a user-level "
           "prompt can use); not comparable with persona_sim, which uses one dialogue's persona."),
    # ------------------------------------------------------------------ rating prediction
    Metric("mae", "lower", "Mean absolute error of the predicted star rating (1-5 scale), averaged per user and "
           "then over users; 0 = every rating exact, 1.0 = off by one star on average."),
    Metric("rmse", "lower", "Root mean squared rating error: square root of the mean over users of the user's "
           "mean squared error (per-user values: that MSE); punishes large misses more than mae.", "sqrt_mean"),
    # ------------------------------------------------------------------ preference pairs (07)
    Metric("reward_pref_acc", "higher", "Reward-model accuracy: share of a user's held-out preference pairs on "
           "which a reward function (a Bradley-Terry reward model bt_*, or a fixed score such as embedding "
           "similarity or an item's mean rating) scores the chosen reply above the rejected one; 0.5 = chance, "
           "1.0 = every pair right."),
    Metric("logp_pref_acc", "higher", "The language model's own preference, length-normalised: share of a user's "
           "held-out pairs on which the model gives the chosen reply the higher MEAN log-probability per "
           "token; 0.5 = chance, 1.0 = every pair right."),
    Metric("logp_pref_acc_sum", "higher", "The language model's own preference, summed (for contrast): share of "
           "pairs on which the model gives the chosen reply the higher SUMMED log-probability; a sum is lower "
           "for a longer reply, so this mostly rewards the shorter reply; 0.5 = chance."),
    Metric("dpo_pref_acc", "higher", "DPO's implicit-reward accuracy: share of a user's held-out pairs on which "
           "the trained policy raised the chosen reply's log-probability more than the rejected one's, relative "
           "to the untrained reference model; 0.5 = no change from the reference (NOT chance-level "
           "preference), 1.0 = every pair moved the right way."),
    Metric("rm_reward", "higher", "Reward-model score of a policy's replies: the mean, over replies sampled from "
           "the policy for a user's held-out prompts, of the Bradley-Terry reward model the policy was trained "
           "against (07's RL section); a logit scale with no fixed zero, so compare it with the untrained model's "
           "replies under the same reward model (its _diff_vs_ row)."),
    Metric("kl_ref", "lower", "KL divergence of a policy from its reference (the untrained model), in nats per "
           "reply: the mean over replies sampled from the policy for a user's held-out prompts of "
           "log pi(y|x) - log pi_ref(y|x) summed over the reply's tokens; 0 = the reference's own "
           "distribution, larger = the policy has drifted further."),
    # ------------------------------------------------------------------ top-k recommendation (02, 03, 08)
    Metric("ndcg@k", "higher", "Normalised discounted cumulative gain of the top-k list against the user's held-out "
           "items (hits near the top count more); 1.0 = the held-out items ranked first, 0 = none in the top k."),
    Metric("recall@k", "higher", "Share of the user's held-out items that appear in the top-k list; 1.0 = all of "
           "them (or k of them when the user has more than k)."),
    Metric("precision@k", "higher", "Share of the k recommended items that are among the user's held-out items."),
    Metric("map@k", "higher", "Mean average precision at k: the precision at each hit, averaged over "
           "min(k, held-out items); 1.0 = every slot before the last hit is a hit."),
    Metric("map_all@k", "higher", "Average precision at k divided by ALL the user's held-out items (the published "
           "protocol's normalisation), so it stays below 1 for users with more than k held-out items."),
    Metric("coverage", "higher", "Catalog coverage: share of all items that appear in at least one user's top-k "
           "list (over all users; a single number, no per-user values).", None),
    Metric("cold_item_recall@k", "higher", "recall@k counted only on held-out items that had few training "
           "interactions (cold items); 0 = the method never recommends a cold item the user consumed."),
    Metric("ndcg@k_cold_users", "higher", "ndcg@k on the users with the fewest training interactions only "
           "(a cold-start slice; compare with ndcg@k on the same method)."),
    Metric("ndcg@k_global_time", "higher", "ndcg@k under a global temporal split (train before one date, test "
           "after it for every user) instead of the per-user holdout."),
    Metric("ndcg@k_global_time_new_users", "higher", "ndcg@k under the global temporal split, on users who first "
           "appear after the split date (new users)."),
    Metric("ndcg@k_ratio_to_best_published", "higher", "This project's ndcg@k divided by the best published "
           "number under the same protocol; 1.0 = matches it (a single number, no interval).", None),
]

METRICS: dict[str, Metric] = {m.name: m for m in _ENTRIES}

_DERIVED = re.compile(r"^(?P<base>.+?)_(?P<kind>diff|ratio)_vs_(?P<method>[A-Za-z0-9_.@-]+)$")


def _template(name: str) -> str:
    """``ndcg@10_cold_users`` -> ``ndcg@k_cold_users``."""
    return re.sub(r"@\d+", "@k", name)


def base_name(name: str) -> tuple[str, str | None, str | None]:
    """Split a derived name: ``"ppl_ratio_vs_global"`` -> ``("ppl", "ratio", "global")``;
    a plain name -> ``(name, None, None)``."""
    match = _DERIVED.match(name)
    if match and _template(match["base"]) in METRICS:
        return match["base"], match["kind"], match["method"]
    return name, None, None


def get(name: str) -> Metric:
    """The :class:`Metric` of ``name`` (a registered name, a ``@<k>`` instance of one, or a
    ``_diff_vs_`` / ``_ratio_vs_`` derivative); ``ValueError`` naming close matches otherwise."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a metric name must be a non-empty string, got {name!r}")
    if name in METRICS:
        return METRICS[name]
    template = _template(name)
    if template in METRICS:
        m = METRICS[template]
        return Metric(name, m.direction, m.description, m.aggregate)
    base, kind, method = base_name(name)
    if kind is not None:
        m = get(base)
        if kind == "diff":
            return Metric(name, m.direction, f"Paired difference {base}(this method) - {base}({method}) over the "
                          f"users both were evaluated on (per-user values: the differences); 0 = no "
                          f"difference. {base}: {m.description}", "mean")
        aggregate = "exp_mean" if m.aggregate == "exp_mean" else "mean"
        return Metric(name, m.direction, f"Paired ratio {base}(this method) / {base}({method}) over the users "
                      f"both were evaluated on; 1.0 = no difference. {base}: {m.description}", aggregate)
    close = difflib.get_close_matches(template, list(METRICS), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown metric {name!r}{hint} Registered metrics: {', '.join(METRICS)} "
                     "(plus @<k> cut-offs and <metric>_diff_vs_<method> / <metric>_ratio_vs_<method>; "
                     "see p13n_utils.metric_registry)")


def validate(name: str) -> str:
    """Return ``name`` if it is a registered metric name (see :func:`get`), else raise
    ``ValueError`` naming the closest registered names."""
    get(name)
    return name


def describe(name: str) -> str:
    """``"(higher is better) <description>"`` for a results legend."""
    m = get(name)
    return f"({m.direction} is better) {m.description}"
