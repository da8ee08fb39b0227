"""The notebooks, executed once each.

Every notebook of the series runs once per test session, in the smoke size, through the runner
(:func:`smoke_run` memoises the run, so the tests below share it). On that executed copy the
tests check:

* the rows it recorded are valid and complete (:data:`EXPECTED`);
* the cells marked ``# NBVAL_CHECK_OUTPUT`` print what the committed notebook shows (their
  stdout and ``text/plain`` outputs, normalised by :func:`comparable_output`): these cells
  print things that do not depend on the run size (data statistics, the taxonomy), so a change
  that alters them is caught;
* values that would expose a wrong result (torch ALS = implicit ALS, a trained adapter moves
  the score, every recommender beats a seeded random ranking), and that 08 is deterministic.

Also: the committed notebooks are clean, the committed default-size rows show the personalized
prompt below the global one in perplexity, and every reference solution in
``notebooks/solutions/`` runs in the smoke size with its checks passing.
"""

import math
import re
import warnings

import nbformat
import pytest

from p13n_utils import config, results, run

NOTEBOOKS = run.available_notebooks()
SOLUTIONS_DIR = config.NOTEBOOKS_DIR / "solutions"
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"

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
        *_rows("personachat", "persona", ["persona_prompt"], ["ppl_ratio_vs_no_persona", "rougeL_diff_vs_no_persona",
                                                              "persona_sim_diff_vs_no_persona"]),
        *_rows("movielens-rating", "persona", ["persona_prompt", "persona_item_mean"],
               ["mae", "rmse"]),
        *_rows("movielens-topk", "persona", ["persona_popularity"], ["ndcg@10", "recall@10"]),
    ],
    "04_user_prompting": [
        *_rows("personachat", "user", ["contextual", "profile_augmented", "refined_prompt",
                                       "contextual_other_user"], ["ppl", "rougeL", "persona_sim", "user_facts_sim"]),
        ("personachat", "user", "contextual", "ppl_ratio_vs_contextual_other_user"),
        ("movielens-rating", "user", "contextual", "mae_diff_vs_contextual_other_user"),
        *_rows("movielens-rating", "user", ["contextual", "profile_augmented", "refined_prompt",
                                            "contextual_other_user"], ["mae", "rmse"]),
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
        *_rows("personachat", "global", ["bt_global", "embed_sim"], ["reward_pref_acc"]),
        *_rows("personachat", "persona", ["bt_persona"], ["reward_pref_acc"]),
        *_rows("personachat", "user", ["bt_user"], ["reward_pref_acc"]),
        *_rows("personachat", "global", ["zero_shot"], ["logp_pref_acc", "logp_pref_acc_sum"]),
        *_rows("personachat", "user", ["contextual_prompt"], ["logp_pref_acc", "logp_pref_acc_sum"]),
        *_rows("personachat", "global", ["dpo_global"], ["dpo_pref_acc", "logp_pref_acc", "logp_pref_acc_sum"]),
        *_rows("personachat", "persona", ["dpo_persona"], ["dpo_pref_acc", "logp_pref_acc", "logp_pref_acc_sum"]),
        *_rows("personachat", "user", ["dpo_user", "soups"], ["dpo_pref_acc", "logp_pref_acc", "logp_pref_acc_sum"]),
        *_rows("personachat", "global", ["zero_shot", "dpo_global"], ["ppl"]),
        *_rows("personachat", "persona", ["dpo_persona"], ["ppl"]),
        *_rows("personachat", "user", ["dpo_user", "soups"], ["ppl"]),
        *_rows("personachat", "user", ["bt_user"], ["reward_pref_acc_diff_vs_bt_global"]),
        *_rows("personachat", "user", ["dpo_user"], ["dpo_pref_acc_diff_vs_dpo_global"]),
        *_rows("personachat", "user", ["soups"], ["dpo_pref_acc_diff_vs_dpo_persona"]),
        *_rows("movielens-pref", "global", ["bt_global", "item_mean"], ["reward_pref_acc"]),
        *_rows("movielens-pref", "persona", ["bt_persona"], ["reward_pref_acc"]),
        *_rows("movielens-pref", "user", ["bt_user"], ["reward_pref_acc"]),
    ],
    "08_recommendation": [
        *_rows("movielens-topk", "global", ["popularity"], ["ndcg@10", "recall@10", "map@10"]),
        ("movielens-topk", "global", "random", "ndcg@10"),
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
    "09_evaluation": [
        ("movielens", "user", "direct_vs_indirect", "kendall_tau"),
        *_rows("movielens-topk", "user", ["als", "torch_mf", "bpr"], ["ndcg@10_seed_sd", "ndcg@10_user_se"]),
        *_rows("personachat-replies", "user", ["contextual", "contextual_other_user"],
               ["rougeL", "bertscore_f1", "chrf", "gold_embed_sim"]),
        *_rows("personachat-judge", "user", ["lm_judge"], ["judge_acc", "judge_flip_rate", "judge_longer_rate"]),
        *_rows("movielens-tagging", "global", ["movie_popular_tag"], ["tag_acc", "tag_macro_f1"]),
        *_rows("movielens-tagging", "user", ["user_top_tag"], ["tag_acc", "tag_macro_f1"]),
    ],
    "10_open_problems": [  # the smoke size: history lengths 0, 1, 4 (LM: 0, 1)
        *[("movielens-rating", lv, f"cold_{m}_n{n}", "mae") for n in (0, 1, 4)
          for lv, m in (("global", "item_mean"), ("persona", "persona_item_mean"), ("user", "user_item_bias"))],
        *[("movielens-topk-new-users", lv, f"cold_{m}_n{n}", "ndcg@10") for n in (0, 1, 4)
          for lv, m in (("global", "popularity"), ("persona", "persona_popularity"), ("user", "als_fold_in"))],
        ("movielens-rating", "global", "cold_llm_zero_shot_n0", "mae"),
        *[("movielens-rating", lv, f"cold_{m}_n1", "mae")
          for lv, m in (("persona", "persona_prompt"), ("user", "contextual"), ("user", "rag_bm25"))],
        ("movielens-rating", "user", "user_item_bias_by_activity", "mae_gap"),
        ("movielens-topk", "user", "als_by_activity", "ndcg@10_gap"),
        ("movielens-topk", "global", "popularity_by_activity", "ndcg@10_gap"),
        *_rows("movielens-topk", "user", ["als"], ["pop_share@10", "pop_share_ratio@10"]),
        *_rows("movielens-topk", "user", ["als_cap0", "als_cap5"], ["ndcg@10", "pop_share@10"]),
        ("movielens-rating", "user", "drift_user_item_bias_w0", "mae"),
        ("movielens-topk-drift", "user", "drift_als_w0", "ndcg@10"),
        *_rows("movielens-rating", "user", ["user_bias_half_life_30d"], ["mae", "mae_diff_vs_user_bias_all_history"]),
        *[("personachat", lv, f"privacy lab: {s}", m) for lv, s in (("global", "base LM"), ("global", "shared adapter"),
                                                                     ("user", "per-user adapter"), ("user", "RAG (members in the index)"),
                                                                     ("user", "per-user adapter, DP eps=8"))
          for m in ("mia_auc_loss", "mia_auc_calibrated")],
        ("personachat", "user", "privacy lab: per-user adapter, DP eps=8", "dp_epsilon"),
    ],
}
# Notebooks that analyse the rows of the notebooks before them (in the same build folder).
READS_EARLIER = {"09_evaluation"}


# --------------------------------------------------------------------------- one run each
_RUNS: dict[str, dict | BaseException] = {}


@pytest.fixture(scope="session")
def smoke_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("smoke")


def smoke_run(name: str, build_dir) -> dict:
    """The runner's record of ``name`` executed in the smoke size; executed on first use only
    (a failure is remembered too, so a broken notebook fails each of its tests without
    re-running). A notebook of :data:`READS_EARLIER` first runs the notebooks before it."""
    if name not in _RUNS:
        if name in READS_EARLIER:
            for earlier in NOTEBOOKS[:NOTEBOOKS.index(name)]:
                smoke_run(earlier, build_dir)
        try:
            _RUNS[name] = run.execute_notebook(name, "smoke", build_dir=build_dir)
        except run.NotebookFailed as err:
            _RUNS[name] = err
    if isinstance(_RUNS[name], BaseException):
        pytest.fail(str(_RUNS[name]), pytrace=False)
    return _RUNS[name]


def _row_values(record: dict, task: str, metric: str) -> dict[str, float]:
    """``{method: value}`` of one task and metric in a runner record."""
    return {r["method"]: r["value"] for r in record["rows"]
            if r["task"] == task and r["metric"] == metric}


# --------------------------------------------------------------------------- output checks
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def comparable_output(cell) -> str:
    """What of a cell's outputs must match between two runs: stdout and ``text/plain``
    results, with what legitimately differs removed (ANSI colour codes, object addresses,
    trailing spaces, trailing blank lines). stderr (library warnings), images and HTML are not
    compared."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream" and out["name"] == "stdout":
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data") and "text/plain" in out["data"]:
            parts.append(out["data"]["text/plain"] + "\n")
    text = _ADDRESS.sub(" at 0x…", _ANSI.sub("", "".join(parts)))
    return "\n".join(line.rstrip() for line in text.splitlines()).strip("\n")


def marked_cells(nb) -> list:
    """The code cells whose output is compared (their source holds ``# NBVAL_CHECK_OUTPUT``)."""
    return [c for c in nb.cells if c.cell_type == "code" and CHECK_MARK in c.source]


def _committed(name: str):
    return nbformat.read(config.NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)


MARKED = [n for n in NOTEBOOKS if marked_cells(_committed(n))]


def test_comparable_output_ignores_what_legitimately_differs():
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="\x1b[1mn = 3\x1b[0m  \n"),
                    nbformat.v4.new_output("stream", name="stderr", text="a warning\n"),
                    nbformat.v4.new_output("execute_result", data={"text/plain": "<X at 0x7f3a>"},
                                           execution_count=1)]
    assert comparable_output(cell) == "n = 3\n<X at 0x…>"
    cell.outputs[0]["text"] = "n = 4\n"
    assert comparable_output(cell) != "n = 3\n<X at 0x…>"


# --------------------------------------------------------------------------- committed notebooks
def test_the_series_starts_with_the_overview():
    assert NOTEBOOKS and NOTEBOOKS[0] == "00_overview"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_clean(name):
    nb = _committed(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "RUN_SIZE = None" in params[0].source
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in code)
    assert all(c.execution_count for c in code), "committed without outputs: run with --inplace"
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    assert nb.cells[0].cell_type == "markdown" and "arxiv.org/abs/2411.00027" in nb.cells[0].source


def test_committed_default_rows_personalized_prompt_beats_global():
    """In the committed default-size rows (figures/results.json), the contextual prompt of 04
    has a lower PersonaChat perplexity than 02's global prompt on the same held-out users."""
    import json

    summary = json.loads((config.REPO_ROOT / "figures" / "results.json").read_text())
    sizes = {n["notebook"]: n.get("size", n.get("profile")) for n in summary["notebooks"]}
    assert sizes.get("02_global_preference") == sizes.get("04_user_prompting") == "default"
    rows = {(r["notebook"], r["method"]): r for r in summary["rows"]
            if r["task"] == "personachat" and r["metric"] == "ppl"}
    glob = rows[("02_global_preference", "no_persona")]
    personal = rows[("04_user_prompting", "contextual")]
    assert personal["n"] == glob["n"], "02 and 04 must score the same users"
    assert personal["value"] < glob["value"], (personal, glob)


# --------------------------------------------------------------------------- smoke runs
@pytest.mark.notebooks
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_size(name, smoke_dir):
    record = smoke_run(name, smoke_dir)
    assert record["notebook"] == name and record["size"] == "smoke"
    for row in record["rows"]:
        assert results.make_row(**row) == row  # registry names and a set id
        if row["lower"] is not None:
            assert row["lower"] <= row["value"] <= row["upper"] or math.isclose(
                row["lower"], row["upper"])
    if record["rows"]:  # per-user values kept beside the rows, each block naming a recorded row
        users = results.load_per_user(smoke_dir / "results")
        users = users[users["notebook"] == name]
        blocks = {tuple(b) for b in users[["task", "level", "method", "metric", "set"]].drop_duplicates().values.tolist()}
        assert blocks and blocks <= {(r["task"], r["level"], r["method"], r["metric"], r["set"]) for r in record["rows"]}
    keys = {(r["task"], r["level"], r["method"], r["metric"]) for r in record["rows"]}
    missing = set(EXPECTED.get(name, ())) - keys
    assert not missing, f"{name} did not record {sorted(missing)}"


@pytest.mark.notebooks
@pytest.mark.parametrize("name", MARKED)
def test_marked_cells_print_the_committed_outputs(name, smoke_dir):
    """The cells marked ``# NBVAL_CHECK_OUTPUT`` print, in the smoke run, what the committed
    notebook (default size) shows."""
    smoke_run(name, smoke_dir)
    executed = nbformat.read(smoke_dir / "notebooks" / f"{name}.ipynb", as_version=4)
    runs = [c for c in executed.cells if c.cell_type == "code"]
    for cell in marked_cells(_committed(name)):
        twins = [c for c in runs if c.source == cell.source]
        assert twins, f"{name}: marked cell not found in the executed copy:\n{cell.source[:200]}"
        runs.remove(twins[0])
        got, want = comparable_output(twins[0]), comparable_output(cell)
        assert got == want, (f"{name}: the cell starting {cell.source.splitlines()[1][:60]!r} "
                             f"printed\n{got}\n--- but the committed notebook shows\n{want}")


@pytest.mark.notebooks
def test_torch_als_matches_implicit_als(smoke_dir):
    """08's torch re-implementation of implicit ALS gives the same ranking metrics as implicit."""
    record = smoke_run("08_recommendation", smoke_dir)
    for metric in ("ndcg@10", "recall@10"):
        values = _row_values(record, "movielens-topk", metric)
        assert abs(values["torch_mf"] - values["als"]) <= 1e-3, (metric, values)


@pytest.mark.notebooks
def test_every_recommender_beats_a_random_ranking(smoke_dir):
    """Every recommender scored on all test users has a higher ndcg@10 than 08's seeded random
    ranking. The LLM rows score only ``rec.llm_users`` users (2 in the smoke size), too few for
    a comparison; they are not checked here."""
    rows = [r for r in smoke_run("08_recommendation", smoke_dir)["rows"]
            if r["task"] == "movielens-topk" and r["metric"] == "ndcg@10"]
    random_row = [r for r in rows if r["method"] == "random"]
    assert random_row, ("08 records no seeded random ranking (method 'random', level global, "
                        "task movielens-topk, metric ndcg@10): nothing to compare against")
    random_row = random_row[0]
    scored = {r["method"]: r["value"] for r in rows
              if r["n"] == random_row["n"] and r["method"] != "random"}
    assert {"popularity", "als", "bpr", "torch_mf", "hybrid"} <= set(scored), scored
    worse = {m: v for m, v in scored.items() if not v > random_row["value"]}
    assert not worse, f"not above the random ranking's ndcg@10 = {random_row['value']:.4f}: {worse}"


@pytest.mark.notebooks
def test_a_trained_adapter_moves_the_score(smoke_dir):
    """06: one LoRA step changes the scored log-probabilities (perplexity differs from the
    untrained model's on the same replies); 07: a DPO policy differs from its reference."""
    ppl = _row_values(smoke_run("06_user_finetuning", smoke_dir), "personachat", "ppl")
    assert not math.isclose(ppl["lora_global"], ppl["no_persona"], rel_tol=1e-6), ppl
    ppl = _row_values(smoke_run("07_preference_alignment", smoke_dir), "personachat", "ppl")
    assert not math.isclose(ppl["dpo_global"], ppl["zero_shot"], rel_tol=1e-6), ppl


@pytest.mark.notebooks
def test_12_shows_every_level_and_list(smoke_dir):
    """12 runs its default learner headless: the replies of the persona and user levels differ
    from the global one, and five lists of ten are shown side by side."""
    smoke_run("12_your_own_user", smoke_dir)
    executed = nbformat.read(smoke_dir / "notebooks" / "12_your_own_user.ipynb", as_version=4)
    shown = "\n".join(comparable_output(c) + "".join(o.get("data", {}).get("text/markdown", "") for o in c.outputs)
                      for c in executed.cells if c.cell_type == "code")
    assert "one round (" in shown and "3 of the 3 personalized replies differ" in shown, shown[-2000:]
    assert all(m in shown for m in ("popularity", "persona_popularity", "als_fold_in", "content_embed", "llm_profile"))


@pytest.mark.notebooks
def test_09_seed_spread_and_tau_are_sane(smoke_dir):
    """09 refits ALS, torch_mf and BPR over 5 seeds: each has a seed spread > 0 with an interval
    around it; torch_mf, the same algorithm as ALS, spreads within a factor 2 of ALS; Kendall tau
    lies in [-1, 1] with its interval."""
    record = smoke_run("09_evaluation", smoke_dir)
    sd = {r["method"]: r for r in record["rows"] if r["metric"] == "ndcg@10_seed_sd"}
    assert set(sd) == {"als", "torch_mf", "bpr"}
    for row in sd.values():
        assert row["n"] == 5 and row["value"] > 0 and row["lower"] <= row["upper"], row
    assert 0.5 <= sd["torch_mf"]["value"] / sd["als"]["value"] <= 2, sd
    tau = next(r for r in record["rows"] if r["metric"] == "kendall_tau")
    assert -1 <= tau["value"] <= 1 and -1 <= tau["lower"] <= tau["upper"] <= 1, tau


@pytest.mark.notebooks
@pytest.mark.determinism
def test_08_gives_the_same_rows_twice(smoke_dir, tmp_path):
    """Two smoke runs of 08 record identical rows (seeded, single-threaded where it compares)."""
    first = smoke_run("08_recommendation", smoke_dir)["rows"]
    second = run.execute_notebook("08_recommendation", "smoke", build_dir=tmp_path)["rows"]
    assert second == first


# --------------------------------------------------------------------------- solutions
SOLUTIONS = sorted(SOLUTIONS_DIR.glob("*.ipynb")) if SOLUTIONS_DIR.is_dir() else []


@pytest.mark.notebooks
@pytest.mark.parametrize("path", SOLUTIONS or [None], ids=[p.stem for p in SOLUTIONS] or ["none"])
def test_solution_runs_and_its_checks_pass(path, tmp_path):
    """Each reference solution runs in the smoke size (papermill, cwd notebooks/solutions);
    a wrong answer raises lesson.ExerciseFailed in its check and fails the test."""
    if path is None:
        warnings.warn(f"no solution notebooks in {config.display_path(SOLUTIONS_DIR)}: nothing to run")
        return
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    try:
        pm.execute_notebook(str(path), str(tmp_path / path.name), parameters={"RUN_SIZE": "smoke"},
                            kernel_name="python3", progress_bar=False, cwd=str(SOLUTIONS_DIR))
    except PapermillExecutionError as err:
        pytest.fail(f"{path.name} failed in cell {err.cell_index}: {err.ename}: {err.evalue}",
                    pytrace=False)


# --------------------------------------------------------------------------- Binder-sized memory
@pytest.mark.notebooks
def test_06_on_a_binder_sized_machine_skips_full_fine_tuning_and_runs_the_rest(tmp_path, monkeypatch):
    """With 2 GB (mybinder.org), 06 prints why full fine-tuning is skipped and what it needs,
    trains the adapters with the memory fallback of the training loop, and records every other row."""
    monkeypatch.setenv("P13N_MEMORY_LIMIT_GB", "2")
    record = run.execute_notebook("06_user_finetuning", "smoke", build_dir=tmp_path, figures=tmp_path / "figures")
    executed = nbformat.read(tmp_path / "notebooks" / "06_user_finetuning.ipynb", as_version=4)
    printed = "".join(out.get("text", "") for cell in executed.cells if cell.cell_type == "code"
                      for out in cell.get("outputs", []) if out["output_type"] == "stream")
    assert re.search(r"full fine-tuning \(weights, gradients and two AdamW moments\) needs \d+\.\d GB, "
                     r"\d+\.\d GB are available: skipped; every other rung still runs", printed), printed[-2000:]
    methods = {r["method"] for r in record["rows"]}
    assert "full_ft" not in methods
    assert {"lora_global", "lora_persona", "oppu", "soft_prompt"} <= methods, methods


@pytest.mark.notebooks
def test_10_new_user_levels_coincide_without_history(smoke_dir):
    """10: a new user with no history gets popularity from every level (ALS fold-in and persona
    fall back to it), so the n = 0 rows are equal; with history, ALS fold-in moves away from it."""
    values = _row_values(smoke_run("10_open_problems", smoke_dir), "movielens-topk-new-users", "ndcg@10")
    assert values["cold_popularity_n0"] == values["cold_persona_popularity_n0"] == values["cold_als_fold_in_n0"]
    assert values["cold_als_fold_in_n4"] != values["cold_popularity_n4"]
