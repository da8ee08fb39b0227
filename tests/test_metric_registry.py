import json
import re

import pytest

from p13n_utils import config, metric_registry, results


def test_every_entry_has_a_direction_and_a_description():
    assert len(metric_registry.METRICS) >= 15
    for name, m in metric_registry.METRICS.items():
        assert m.name == name
        assert m.direction in ("higher", "lower")
        assert len(m.description.split()) >= 8 and m.description.endswith(".")


@pytest.mark.parametrize("name, direction", [
    ("ppl", "lower"), ("mae", "lower"), ("ndcg@10", "higher"), ("recall@5", "higher"),
    ("ndcg@10_cold_users", "higher"), ("ppl_ratio_vs_global", "lower"), ("mae_diff_vs_item_mean", "lower"),
    ("dpo_pref_acc_diff_vs_persona", "higher"), ("reward_pref_acc", "higher"), ("logp_pref_acc_sum", "higher"),
])
def test_names_cut_offs_and_derived_names_resolve(name, direction):
    m = metric_registry.get(name)
    assert m.direction == direction and m.name == name


def test_derived_names_describe_the_pairing_and_their_neutral_value():
    diff, ratio = metric_registry.get("mae_diff_vs_global"), metric_registry.get("ppl_ratio_vs_global")
    assert "0 = no difference" in diff.description and "global" in diff.description
    assert "1.0 = no difference" in ratio.description and ratio.aggregate == "exp_mean"
    assert metric_registry.base_name("ppl_ratio_vs_oppu_other_user") == ("ppl", "ratio", "oppu_other_user")
    assert metric_registry.base_name("ndcg@10") == ("ndcg@10", None, None)


@pytest.mark.parametrize("name, suggestion", [("pref_acc", "dpo_pref_acc"), ("rouge_l", "rougeL"),
                                              ("nDCG@10", "ndcg@k"), ("persona_similarity", "persona_sim")])
def test_unknown_name_raises_naming_close_matches(name, suggestion):
    with pytest.raises(ValueError, match=rf"unknown metric '{re.escape(name)}'.*did you mean.*{re.escape(suggestion)}"):
        metric_registry.validate(name)


def test_unknown_base_of_a_derived_name_is_unknown():
    with pytest.raises(ValueError, match="unknown metric"):
        metric_registry.validate("pref_acc_diff_vs_global")


def test_the_four_ambiguities_have_distinct_names():
    names = set(metric_registry.METRICS)
    assert {"reward_pref_acc", "logp_pref_acc", "logp_pref_acc_sum", "dpo_pref_acc"} <= names
    assert "pref_acc" not in names
    assert "0.5 = no change" in metric_registry.get("dpo_pref_acc").description
    assert "dialogue's persona" in metric_registry.get("persona_sim").description
    assert "ALL the character's" in metric_registry.get("user_facts_sim").description


def test_make_row_rejects_an_unknown_metric():
    with pytest.raises(ValueError, match="unknown metric 'pref_acc'"):
        results.make_row("t", "user", "m", "pref_acc", 0.5, set="t-1u")


def test_committed_results_use_registry_names_and_set_ids():
    """Every row of the committed figures/results.json names a registered metric and its set.
    (Holds once the notebooks are re-executed with the registry; the rows are re-validated.)"""
    summary = json.loads((config.REPO_ROOT / "figures" / "results.json").read_text())
    bad = sorted({(r["notebook"], r["metric"]) for r in summary["rows"]
                  if not r.get("set") or r["metric"] not in _valid(r["metric"])})
    assert not bad, f"rows with an unknown metric name or no set id: {bad[:10]}"
    assert all(n.get("size") for n in summary["notebooks"])


def _valid(name):
    try:
        metric_registry.validate(name)
        return {name}
    except ValueError:
        return set()
