"""Notebook 09's entry functions end to end in the smoke size, with the real LM and embedder
(marked ``model``): they run, record registry names with set ids, and return what the notebook shows."""

import numpy as np
import pytest

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def setup():
    from p13n_utils import config, models, results, tasks

    cfg = config.setup("smoke")
    results.clear()
    model, tok = models.load_lm(dtype=cfg["lm.dtype"])
    return cfg, tasks.eval_sets(cfg), model, tok, models.load_embedder()


def test_text_metric_families(setup):
    from p13n_utils import results, text_metrics

    cfg, sets, model, tok, embedder = setup
    out = text_metrics.text_metric_families(cfg, sets.pc, model, tok, embedder)
    assert set(out["means"]["method"]) == {"no_persona", "persona_prompt", "contextual", "contextual_other_user"}
    assert out["crosscheck"]["rougeL_vs_rouge_score"] < 1e-9 and out["crosscheck"]["bertscore_f1_vs_bert_score"] < 1e-5
    assert len(out["agreement"]) == 21 and out["agreement"]["tau"].between(-1, 1).all()
    rows = results.table()
    mine = rows[rows["task"] == "personachat-replies"]
    assert {"bertscore_f1", "kendall_tau", "rougeL_diff_vs_no_persona"} <= set(mine["metric"])
    assert mine["set"].str.startswith("personachat-replies-").all()


def test_llm_judge_and_tagging(setup):
    from p13n_utils import judge, results, tagging

    cfg, sets, model, tok, _ = setup
    out = judge.llm_judge(cfg, sets.pc, model, tok)
    summary = out["summary"].set_index("metric")
    assert summary.loc["judge_acc", "n"] == cfg["p09.judge_users"]
    assert np.isclose(out["verdicts"].groupby("user_id")["p_a"].count(), 2).all()
    tag = tagging.movielens_tagging(cfg, sets.ml, model, tok)
    assert tag["lm_instances"] == cfg["p09.tag_lm_instances"]
    assert {"movie_popular_tag", "persona_popular_tag", "user_top_tag", "global_lm", "user_lm"} == set(tag["table"]["method"])
    metrics = set(results.table()["metric"])
    assert {"judge_acc", "judge_flip_rate", "tag_acc", "tag_macro_f1", "tag_acc_diff_vs_movie_popular_tag"} <= metrics


def test_lamp2_with_the_lm_on_a_tiny_file(setup, tmp_path):
    import json

    from p13n_utils import tagging

    cfg, _, model, tok, _ = setup
    question = {"id": "q1", "input": "tags: [sci-fi, comedy, action] description: A space movie.",
                "profile": [{"tag": "sci-fi", "description": "robots", "id": "p1"}]}
    (tmp_path / "dev_questions.json").write_text(json.dumps([question, dict(question, id="q2")]))
    (tmp_path / "dev_outputs.json").write_text(json.dumps(
        {"task": "LaMP_2", "golds": [{"id": "q1", "output": "sci-fi"}, {"id": "q2", "output": "comedy"}]}))
    out = tagging.lamp2_tagging(cfg, model, tok, path=tmp_path, record=False)
    assert set(out["instances"]["user_lm"]) <= {"sci-fi", "comedy", "action"}
    assert {"global_lm", "user_lm"} <= set(out["table"]["method"])
