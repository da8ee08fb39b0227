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

__all__ = ["Metric", "METRICS", "get", "validate", "describe", "base_name", "METHOD_NOTES", "method_note"]


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
    # ------------------------------------------------------------------ evaluation (09)
    Metric("ndcg@k_seed_sd", "lower", "Standard deviation over training seeds of a recommender's mean ndcg@k on "
           "the same users and split (n = the number of seeds; interval: chi-square); compare with "
           "ndcg@k_user_se.", None),
    Metric("ndcg@k_user_se", "lower", "Bootstrap standard error over users of a recommender's mean ndcg@k (one "
           "seed): the spread the usual interval covers, to set beside ndcg@k_seed_sd.", None),
    Metric("ndcg@k_ratio_to_best_published", "higher", "This project's ndcg@k divided by the best published "
           "number under the same protocol; 1.0 = matches it (a single number, no interval).", None),
    # ------------------------------------------------------------------ 09: text-metric families (p13n_utils.text_metrics)
    Metric("rouge1", "higher", "ROUGE-1 F1 between the generated reply and the user's gold reply: shared words "
           "(stemmed, clipped counts); 1.0 = the same bag of words, 0 = no word in common."),
    Metric("rouge2", "higher", "ROUGE-2 F1 between the generated reply and the user's gold reply: shared word "
           "pairs (bigrams); 0 for most short chat replies."),
    Metric("bleu", "higher", "Sentence BLEU (sacrebleu defaults, exp smoothing) of the generated reply against the "
           "user's gold reply, on a 0-1 scale: geometric mean of 1- to 4-gram precisions times a brevity penalty."),
    Metric("chrf", "higher", "chrF (sacrebleu) of the generated reply against the user's gold reply, on a 0-1 scale: "
           "F-score (beta = 2) of character n-grams up to 6; credits shared word pieces that ROUGE misses."),
    Metric("gold_embed_sim", "higher", "Cosine similarity (MiniLM sentence embeddings) between the generated reply "
           "and the user's gold reply; about 1 = same meaning, near 0 = unrelated."),
    Metric("bertscore_f1", "higher", "BERTScore F1 (no idf, no rescaling) between the generated reply and the user's "
           "gold reply: greedy matching of MiniLM token embeddings, F1 of the mean best-match cosines; "
           "unrelated sentences still score well above 0."),
    Metric("kendall_tau", "higher", "Kendall tau-b between two orderings of the same things: two metrics' scores "
           "of the same replies (method '<metric a>~<metric b>', interval over users), or the direct and indirect "
           "rankings of the same signals (method 'direct_vs_indirect'); 1 = alike, 0 = unrelated, -1 = reversed.",
           None),
    # ------------------------------------------------------------------ 09: LLM-as-judge (p13n_utils.judge)
    Metric("judge_acc", "higher", "LLM-as-judge accuracy on known-answer pairs (the user's own gold reply vs "
           "another user's, both orders): share of verdicts that pick the user's own reply; 0.5 = chance."),
    Metric("judge_acc_order_avg", "higher", "LLM-as-judge accuracy after averaging the judge's probability of the "
           "user's own reply over the two orders (removes position bias); 0.5 = chance."),
    Metric("judge_flip_rate", "lower", "Position bias of an LLM judge: share of pairs whose verdict changes when only "
           "the order of the two replies is swapped; 0 = consistent, 1 = always follows the slot."),
    Metric("judge_slot_a_rate", "lower", "Position bias of an LLM judge: share of verdicts that pick slot A (each pair "
           "shown in both orders, so an unbiased judge scores 0.5; lower is better down to 0.5)."),
    Metric("judge_longer_rate", "lower", "Length bias of an LLM judge: share of verdicts that pick the longer reply "
           "(pairs of unequal length in words); compare with longer_is_own_rate, the rate a length-blind right "
           "judge would match."),
    Metric("longer_is_own_rate", "higher", "Share of the judge's pairs (unequal lengths) in which the user's own reply "
           "is the longer one: the accuracy of a judge that always picks the longer reply (a property of the "
           "pairs, not of a method)."),
    # ------------------------------------------------------------------ 09: LaMP-2-style tagging (p13n_utils.tagging)
    Metric("tag_acc", "higher", "Tagging accuracy: share of a user's held-out (movie, tag) assignments whose tag the "
           "method predicts exactly among the fixed candidate tags, averaged over users; 1/15 = a random guess "
           "among 15 candidates."),
    Metric("tag_macro_f1", "higher", "Tagging macro-F1: F1 of each tag (gold or predicted) averaged with equal weight "
           "over tags, so rare tags count as much as frequent ones; interval by resampling users.", None),
    # ------------------------------------------------------------------ open problems (10): gaps and popularity bias
    Metric("mae_gap", "lower", "Fairness gap in rating error: the largest minus the smallest group mean of the "
           "per-user mae over groups of users (activity quartiles, personas); 0 = every group served equally well.",
           None),
    Metric("ndcg@k_gap", "lower", "Fairness gap in ranking quality: the largest minus the smallest group mean of "
           "the per-user ndcg@k over groups of users (activity quartiles); 0 = every group served equally well.", None),
    Metric("pop_share@k", "lower", "Popularity bias: share of all recommended top-k slots that hold one of the 10% "
           "most popular training items (compare with the same share among the users' held-out positives).", None),
    Metric("pop_share_ratio@k", "lower", "pop_share@k divided by the popular items' share of the held-out "
           "positives; 1.0 = the recommender shows the popular head as often as users choose it, above 1 = "
           "popularity bias (below 1 under-exposes the head).", None),
    # ------------------------------------------------------------------ privacy (10)
    Metric("mia_auc_loss", "lower", "Membership-inference AUC of the loss attack: the probability that one of the "
           "user's turns that trained the model gets a lower loss than one of the user's held-out turns, per "
           "user then averaged; 0.5 = the attacker guesses (no leak), 1.0 = every training turn is exposed."),
    Metric("mia_auc_calibrated", "lower", "Membership-inference AUC of the reference-calibrated loss attack (the "
           "loss under the model minus the loss under the base model, per turn), per user then averaged; "
           "0.5 = no leak, 1.0 = every training turn is exposed."),
    Metric("dp_epsilon", "lower", "Privacy budget epsilon of DP-SGD training (at the delta named in the method), "
           "from the RDP accountant; smaller = stronger guarantee (a single number, no interval).", None),
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


# Methods whose row needs a word of warning in the results table.
METHOD_NOTES: dict[str, str] = {
    "torch_mf": "The torch re-implementation of `als` (same hyper-parameters, same random start): it gives "
                "ALS's top-10 lists, so its rows repeat `als`'s; a check of the implementation, not another method.",
    "shuffled_user": "Old name of `contextual_other_user`.",
}


def method_note(method: str) -> str | None:
    """The note of a method for the results legend, or None. ``<method>_other_user`` is the
    matched control of ``<method>``: the same amount of ANOTHER user's data (a seeded
    derangement of the evaluated users, :func:`p13n_utils.user_context.derangement`)."""
    if method in METHOD_NOTES:
        return METHOD_NOTES[method]
    if method.endswith("_other_user"):
        own = method[: -len("_other_user")]
        return (f"Matched control of `{own}`: the same amount of another user's data (a seeded derangement "
                "of the evaluated users); what `" + own + "` gains over it is what this user's own data buys.")
    return None
