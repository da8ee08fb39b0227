"""Execute every notebook of the series in the smoke size through the runner and check what
it recorded; check the committed notebooks are clean (outputs of the default size, no errors,
a `parameters` cell)."""

import math

import nbformat
import pytest

from p13n_utils import config, results, run

NOTEBOOKS = run.available_notebooks()

# Rows each notebook must record: (task, level, method, metric).
RETRIEVERS = ("bm25", "dense", "recency", "random")
K_SWEEP = (0, 1)  # the smoke size sweeps k in {0, 1}; default and full add 2, 4, 8


def _rows(task, level, methods, metrics):
    return [(task, level, m, metric) for m in methods for metric in metrics]


EXPECTED = {
    "02_global_preference": [
        *_rows("personachat", "global", ["no_persona"], ["ppl", "rougeL", "persona_sim"]),
        *_rows("movielens-rating", "global", ["llm_zero_shot", "item_mean"], ["mae", "rmse"]),
        *_rows("movielens-rating", "user", ["user_item_bias"], ["mae", "rmse"]),
        *_rows("movielens-topk", "global", ["popularity"], ["ndcg@10", "recall@10"]),
    ],
    "03_persona_level": [
        *_rows("personachat", "persona", ["persona_prompt"], ["ppl", "rougeL", "persona_sim"]),
        *_rows("movielens-rating", "persona", ["persona_prompt", "persona_item_mean"],
               ["mae", "rmse"]),
        *_rows("movielens-topk", "persona", ["persona_popularity"], ["ndcg@10", "recall@10"]),
    ],
    "04_user_prompting": [
        *_rows("personachat", "user", ["contextual", "profile_augmented", "refined_prompt",
                                       "shuffled_user"], ["ppl", "rougeL", "persona_sim"]),
        *_rows("movielens-rating", "user", ["contextual", "profile_augmented", "refined_prompt",
                                            "shuffled_user"], ["mae", "rmse"]),
    ],
    "05_user_rag": [
        *_rows("personachat", "user", [f"rag_{r}" for r in RETRIEVERS], ["ppl", "rougeL"]),
        *_rows("personachat", "user", [f"rag_{r}_k{k}" for r in RETRIEVERS for k in K_SWEEP],
               ["ppl"]),
        *_rows("movielens-rating", "user", [f"rag_{r}" for r in RETRIEVERS], ["mae", "rmse"]),
        *_rows("movielens-rating", "user", [f"rag_{r}_k{k}" for r in RETRIEVERS for k in K_SWEEP],
               ["mae"]),
    ],
    "06_user_finetuning": [
        *_rows("movielens-rating", "global", ["llm_zero_shot", "item_mean", "full_ft", "lora_global"],
               ["mae", "rmse"]),
        *_rows("movielens-rating", "persona", ["lora_persona"], ["mae", "rmse"]),
        *_rows("movielens-rating", "user", ["soft_prompt", "oppu", "oppu_other_user", "oppu_rag",
                                            "user_item_bias"], ["mae", "rmse"]),
        *_rows("movielens-rating", "user", ["oppu"], ["mae_diff_vs_lora_global", "mae_diff_vs_oppu_other_user"]),
        *_rows("personachat", "global", ["no_persona", "full_ft", "lora_global"], ["ppl"]),
        *_rows("personachat", "persona", ["lora_persona"], ["ppl"]),
        *_rows("personachat", "user", ["soft_prompt", "oppu", "oppu_other_user"], ["ppl"]),
        *_rows("personachat", "user", ["oppu"], ["ppl_ratio_vs_lora_global"]),
    ],
    "07_preference_alignment": [
        *_rows("personachat", "global", ["bt_global", "embed_sim", "zero_shot", "dpo_global"], ["pref_acc"]),
        *_rows("personachat", "persona", ["bt_persona", "dpo_persona"], ["pref_acc"]),
        *_rows("personachat", "user", ["bt_user", "dpo_user", "soups", "contextual_prompt"], ["pref_acc"]),
        *_rows("personachat", "global", ["zero_shot", "dpo_global"], ["ppl"]),
        *_rows("personachat", "persona", ["dpo_persona"], ["ppl"]),
        *_rows("personachat", "user", ["dpo_user", "soups"], ["ppl"]),
        *_rows("personachat", "user", ["bt_user", "dpo_user"], ["pref_acc_diff_vs_global"]),
        *_rows("personachat", "user", ["soups"], ["pref_acc_diff_vs_persona"]),
        *_rows("movielens-pref", "global", ["bt_global", "item_mean"], ["pref_acc"]),
        *_rows("movielens-pref", "persona", ["bt_persona"], ["pref_acc"]),
        *_rows("movielens-pref", "user", ["bt_user"], ["pref_acc"]),
    ],
    "08_recommendation": [
        *_rows("movielens-topk", "global", ["popularity"], ["ndcg@10", "recall@10", "map@10"]),
        *_rows("movielens-topk", "persona", ["persona_popularity"], ["ndcg@10", "recall@10"]),
        *_rows("movielens-topk", "user", ["als", "bpr", "torch_mf", "content_embed", "hybrid",
                                          "llm_rerank", "llm_rerank_base", "llm_profile",
                                          "llm_profile_base"], ["ndcg@10", "recall@10"]),
        *_rows("movielens-topk", "user", ["ease", "item_knn", "sar", "bpr_torch"], ["ndcg@10", "recall@10"]),
        *_rows("movielens-topk-published-latest-small", "global", ["popularity"],
               ["ndcg@10", "map_all@10", "precision@10", "recall@10"]),
        *_rows("movielens-topk-published-latest-small", "user", ["als", "bpr", "bpr_torch", "ease", "item_knn", "sar"],
               ["ndcg@10", "map_all@10", "precision@10", "recall@10"]),
    ],
}


def test_the_series_starts_with_the_overview():
    assert NOTEBOOKS and NOTEBOOKS[0] == "00_overview"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_clean(name):
    nb = nbformat.read(config.NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "RUN_SIZE = None" in params[0].source
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in code)
    assert all(c.execution_count for c in code), "committed without outputs: run with --inplace"
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    assert nb.cells[0].cell_type == "markdown" and "arxiv.org/abs/2411.00027" in nb.cells[0].source


@pytest.mark.notebooks
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_size(name, tmp_path):
    record = run.execute_notebook(name, "smoke", build_dir=tmp_path)
    assert record["notebook"] == name and record["size"] == "smoke"
    for row in record["rows"]:
        assert results.make_row(**row) == row
        if row["lower"] is not None:
            assert row["lower"] <= row["value"] <= row["upper"] or math.isclose(
                row["lower"], row["upper"])
    keys = {(r["task"], r["level"], r["method"], r["metric"]) for r in record["rows"]}
    missing = set(EXPECTED.get(name, ())) - keys
    assert not missing, f"{name} did not record {sorted(missing)}"
