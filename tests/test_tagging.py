"""LaMP-2-style tagging (p13n_utils.tagging) on a toy tags table worked by hand; no model."""

import json

import numpy as np
import pandas as pd
import pytest

from p13n_utils import config, tagging

# (user, item, tag, time)
TOY = pd.DataFrame([
    (1, 10, "funny", 1), (1, 20, "Funny", 2), (1, 30, "dark", 3), (1, 10, "dark", 4),
    (2, 10, "funny", 1), (2, 20, "sad", 2), (2, 30, "sad ", 3),
    (3, 10, "funny", 1), (3, 20, "funny", 2),
    (4, 30, "rare", 1),
], columns=["user_id", "item_id", "tag", "timestamp"])


def toy_eval():
    return tagging.tag_eval_set(TOY, min_tags=3, n_test_per_user=1, n_candidates=4)


def test_eval_set_by_hand():
    ev = toy_eval()
    # users per tag: funny 3, then dark / rare / sad 1 each (alphabetical)
    assert ev.candidates == ["funny", "dark", "rare", "sad"]
    # users 1 (4 candidate-tag assignments) and 2 (3) are evaluated on their latest; 3 has 2, 4 has 1
    assert ev.test[["user_id", "item_id", "tag"]].values.tolist() == [[1, 10, "dark"], [2, 30, "sad"]]
    assert ev.n_labelled == 10 and len(ev.history) == 8
    with pytest.raises(ValueError, match="must exceed"):
        tagging.tag_eval_set(TOY, min_tags=1, n_test_per_user=1)
    with pytest.raises(ValueError, match="no tag assignments"):
        tagging.tag_eval_set(TOY.iloc[:0])


def test_baselines_by_hand():
    ev = toy_eval()
    g = tagging.global_tags(ev)
    # user 1, movie 10: other users tagged it funny (2, 3); user 2, movie 30: dark (1) and rare (4) tie -> dark
    assert g == ["funny", "dark"]
    # persona 0 = users 1, 2, 4; persona 1 = user 3
    persona_of = pd.Series({1: 0, 2: 0, 3: 1, 4: 0})
    assert tagging.persona_tags(ev, persona_of, g) == ["funny", "dark"]
    # user 2 alone in a persona: no mates -> the fallback
    assert tagging.persona_tags(ev, pd.Series({1: 0, 2: 1, 3: 0, 4: 0}), ["x", "y"]) == ["funny", "y"]
    # user 1's history: funny, funny, dark -> funny; user 2's: funny, sad (tie -> the earlier candidate)
    tags, n_fallback = tagging.user_tags(ev, g)
    assert tags == ["funny", "funny"] and n_fallback == 0


def test_user_without_tags_and_empty_candidates():
    with pytest.raises(ValueError, match="no tag among the candidates"):
        tagging.user_top_tag([], ["funny"])
    with pytest.raises(ValueError, match="candidate set is empty"):
        tagging.user_top_tag(["funny"], [])
    with pytest.raises(ValueError, match="empty candidate set"):
        tagging.lm_tags(None, None, ["prompt"], [[]])
    with pytest.raises(ValueError, match="candidate set is empty"):
        tagging.first_tokens(None, [])
    ev = toy_eval()
    ev.history = ev.history[ev.history["user_id"] != 1]  # user 1 loses every tag: falls back to global
    tags, n_fallback = tagging.user_tags(ev, ["G1", "G2"])
    assert tags == ["G1", "funny"] and n_fallback == 1


def test_tag_metrics_by_hand():
    m = tagging.tag_metrics([1, 1, 2], ["a", "a", "b"], ["a", "b", "b"], n_resamples=100)
    assert m["acc"][0] == pytest.approx(0.75)  # user 1: 1 of 2, user 2: 1 of 1
    # a: TP 1, FP 0, FN 1 -> 2/3; b: TP 1, FP 1, FN 0 -> 2/3
    assert m["macro_f1"][0] == pytest.approx(2 / 3) and m["n_users"] == 2
    assert m["macro_f1"][1] <= m["macro_f1"][0] <= m["macro_f1"][2]
    with pytest.raises(ValueError, match="no tagging instances"):
        tagging.tag_metrics([], [], [])
    with pytest.raises(ValueError, match="pair up"):
        tagging.tag_metrics([1], ["a"], ["a", "b"])


def test_macro_f1_matches_scikit_learn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    gold, pred = rng.choice(list("abcde"), 50), rng.choice(list("abcdef"), 50)
    assert tagging.macro_f1(gold, pred) == pytest.approx(f1_score(gold, pred, average="macro", zero_division=0))


def _write_lamp(folder):
    head = "Which tag does this movie relate to among the following tags? Just answer with the tag name. "
    questions = [
        {"id": "q1", "input": head + "tags: [sci-fi, comedy, action] description: A space movie.",
         "profile": [{"tag": "comedy", "description": "a funny film", "id": "p1"},
                     {"tag": "comedy", "description": "another funny film", "id": "p2"},
                     {"tag": "sci-fi", "description": "robots", "id": "p3"}]},
        {"id": "q2", "input": head + "tags: [sci-fi, comedy, action] description: Car chases.",
         "profile": [{"tag": "action", "description": "explosions", "id": "p4"}]},
    ]
    outputs = {"task": "LaMP_2", "golds": [{"id": "q1", "output": "comedy"}, {"id": "q2", "output": "action"}]}
    (folder / "dev_questions.json").write_text(json.dumps(questions))
    (folder / "dev_outputs.json").write_text(json.dumps(outputs))


def test_lamp2_on_a_tiny_lamp_format_file(tmp_path):
    _write_lamp(tmp_path)
    out = tagging.lamp2_tagging(config.get_sizes("smoke"), path=tmp_path, record=False)
    inst = out["instances"]
    assert inst["candidates"].iloc[0] == ["sci-fi", "comedy", "action"]
    assert inst["description"].tolist() == ["A space movie.", "Car chases."]
    # all profiles: comedy 2, sci-fi 1, action 1 -> comedy; own: q1 comedy, q2 action
    assert inst["global_popular_tag"].tolist() == ["comedy", "comedy"]
    assert inst["user_top_tag"].tolist() == ["comedy", "action"]
    table = out["table"].set_index("method")
    assert table.loc["global_popular_tag", "acc"] == 0.5 and table.loc["user_top_tag", "acc"] == 1.0
    assert table.loc["user_top_tag", "n_users"] == 2


def test_lamp2_offline_prints_how_to_get_it(monkeypatch, capsys):
    from p13n_utils import data

    def offline(*args, **kwargs):
        raise data.DataNotFoundError("lamp: cannot get it (offline)")

    monkeypatch.setattr(data, "load_lamp", offline)
    assert tagging.lamp2_tagging(config.get_sizes("smoke")) is None
    printed = capsys.readouterr().out
    assert "LaMP-2" in printed and "dev_questions.json" in printed and "offline" in printed


def test_paired_accuracy_against_the_global_rung(tmp_path):
    _write_lamp(tmp_path)
    table = tagging.lamp2_tagging(config.get_sizes("smoke"), path=tmp_path, record=False)["table"].set_index("method")
    # q1: both right; q2: user right, global wrong -> per-user differences 0 and 1
    assert table.loc["user_top_tag", "vs"] == "global_popular_tag"
    assert table.loc["user_top_tag", "diff"] == pytest.approx(0.5)
    assert np.isnan(table.loc["global_popular_tag", "diff"])
