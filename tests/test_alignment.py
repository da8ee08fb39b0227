"""Preference alignment (p13n_utils.alignment): pairs, Bradley–Terry reward models, the DPO loss
against trl's DPOTrainer, DPO with LoRA, and adapter merging (Personalized Soups)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from p13n_utils import adapters, alignment, prompts, tasks, training
from p13n_utils.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TRIPLES = [("user : do you like tea ? assistant :", " yes i like tea .", " no ."),
           ("user : what do you like ? assistant :", " i love cats .", " i hate dogs and cats ."),
           ("user : are you nice ? assistant :", " yes .", " no i am not nice .")]
PREFS = pd.DataFrame(TRIPLES, columns=["prompt", "chosen", "rejected"])


# --------------------------------------------------------------------------- DPO loss vs trl
@pytest.mark.filterwarnings("ignore::FutureWarning")   # transformers deprecations trl triggers
def test_dpo_loss_equals_trl_dpo_trainer_on_the_same_batch(tmp_path, tiny_lm):
    """trl 1.16 computes its DPO loss inside DPOTrainer._compute_loss (no standalone function):
    build a trainer on a tiny LoRA policy, give both sides trl's own collated batch, compare."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    model, tok = tiny_lm()
    beta = 0.3
    args = DPOConfig(output_dir=str(tmp_path), beta=beta, use_cpu=True, bf16=False, gradient_checkpointing=False,
                     report_to=[], per_device_train_batch_size=3, disable_tqdm=True)
    # init_lora_weights=False: a random (non-zero) adapter, so policy and reference differ
    lora = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_pandas(PREFS), processing_class=tok,
                         peft_config=lora)
    examples = [trainer.train_dataset[i] for i in range(len(PREFS))]
    batch = trainer.data_collator(examples)
    trl_loss = trainer._compute_loss(trainer.model, batch, return_outputs=False)
    metrics = {key: values[-1] for key, values in trainer._metrics["train"].items()}

    # the same token ids as our encoding (prompt, then the response and eos)
    chosen, rejected = alignment.encode_preferences(tok, PREFS)
    assert [e["input_ids"] for e in chosen] == [x["prompt_ids"] + x["chosen_ids"] for x in examples]
    assert [e["input_ids"] for e in rejected] == [x["prompt_ids"] + x["rejected_ids"] for x in examples]

    ours_batch = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                  "position_ids": (batch["attention_mask"].cumsum(1) - 1).clamp(min=0),
                  "labels": batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)}
    policy = trainer.model
    with torch.no_grad():
        logps, _ = training.sequence_logps(policy, ours_batch)
        with policy.disable_adapter():                    # our reference: the same model, adapter off
            ref_logps, _ = training.sequence_logps(policy, ours_batch)
    n = len(PREFS)
    loss, chosen_rewards, rejected_rewards = alignment.dpo_loss(logps[:n], logps[n:], ref_logps[:n], ref_logps[n:],
                                                                beta)
    assert abs(trl_loss.item() - math.log(2)) > 1e-3           # a batch where the loss is not trivial
    assert abs(loss.item() - trl_loss.item()) < 1e-5
    assert abs(chosen_rewards.mean().item() - metrics["rewards/chosen"]) < 1e-5
    assert abs(rejected_rewards.mean().item() - metrics["rewards/rejected"]) < 1e-5
    assert abs(logps[:n].mean().item() - metrics["logps/chosen"]) < 1e-4


def test_dpo_loss_is_log2_when_the_policy_is_the_reference_and_falls_with_the_margin():
    logps = torch.tensor([-3.0, -5.0])
    loss, chosen, rejected = alignment.dpo_loss(logps, logps + 1, logps, logps + 1, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2)) and chosen.abs().max() == 0 and rejected.abs().max() == 0
    better, _, _ = alignment.dpo_loss(logps + 1, logps, logps, logps, beta=0.1)   # chosen up: loss down
    worse, _, _ = alignment.dpo_loss(logps - 1, logps, logps, logps, beta=0.1)
    assert better.item() < math.log(2) < worse.item()


# --------------------------------------------------------------------------- DPO with LoRA
def test_train_dpo_lora_starts_at_the_reference_and_learns_the_preferences(tiny_lm, logits_of):
    model, tok = tiny_lm()
    base_logits = logits_of(model, tok)
    log = alignment.train_dpo_lora(model, tok, PREFS, TrainConfig(lr=3e-2, steps=15, batch_size=3), beta=0.5, r=4,
                                   adapter_name="dpo_global")
    policy = log.model
    assert log.adapter_name == "dpo_global" and policy.active_adapter == "dpo_global"
    assert log.losses[0] == pytest.approx(math.log(2), abs=1e-6)          # B = 0: policy == reference
    assert np.mean(log.losses[-3:]) < 0.5 * math.log(2)
    assert log.metrics["accuracy"][-1] == 1.0 and log.metrics["margin"][-1] > 0
    with adapters.use_adapter(policy, None):                              # the reference never moved
        torch.testing.assert_close(logits_of(policy, tok), base_logits)
    margins = alignment.implicit_reward_margin(policy, tok, PREFS, beta=0.5, adapter_name="dpo_global")
    assert margins.shape == (3,) and (margins > 0).all()
    # the margin is beta * the difference of log-ratios computed by hand
    with adapters.use_adapter(policy, None):
        ref = alignment.preference_logps(policy, tok, PREFS)
    pol = alignment.preference_logps(policy, tok, PREFS)
    by_hand = 0.5 * ((pol.chosen_logp - ref.chosen_logp) - (pol.rejected_logp - ref.rejected_logp))
    np.testing.assert_allclose(margins, by_hand, atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        alignment.train_dpo_lora(policy, tok, PREFS.iloc[:0], TrainConfig(lr=1e-3, steps=1), adapter_name="x")
    with pytest.raises(training.NotEnoughHistoryError, match="user 3 has 3"):
        alignment.train_dpo_lora(policy, tok, PREFS, TrainConfig(lr=1e-3, steps=1, min_pairs=5), adapter_name="x",
                                 user=3)


# --------------------------------------------------------------------------- preference pairs
def test_personachat_pairs_reject_another_users_reply_at_the_same_turn(tiny_tokenizer, characters):
    tok = tiny_tokenizer()
    ev = tasks.personachat_eval_set(characters(n_users=4, dialogues_per_user=2), n_users=4, dialogues_per_user=2)
    pairs = alignment.personachat_preference_pairs(tok, ev.test, seed=1)
    again = alignment.personachat_preference_pairs(tok, ev.test, seed=1)
    pd.testing.assert_frame_equal(pairs, again)
    assert pairs["chosen"].tolist() == ev.test["reply"].tolist()
    assert (pairs["rejected_user_id"] != pairs["user_id"]).all()
    reply_turn = {r: t for r, t in zip(ev.test["reply"], ev.test["turn"])}
    assert all(reply_turn[r] == t for r, t in zip(pairs["rejected"], pairs["turn"]))        # same turn index
    assert pairs["prompt"].tolist() == tasks.personachat_prompts(tok, ev.test)
    conditioned = alignment.personachat_preference_pairs(tok, ev.test, context_fn=lambda r: ev.facts_of(r["user_id"]))
    assert prompts.HEADERS["user"] in conditioned["prompt"][0]
    with pytest.raises(ValueError, match="at least two users"):
        alignment.personachat_preference_pairs(tok, ev.test[ev.test["user_id"] == ev.users[0]])


def test_movielens_pairs_liked_against_disliked_movies_of_the_same_user(tiny_tokenizer):
    tok = tiny_tokenizer()
    movies = pd.DataFrame({"item_id": range(1, 7), "title": [f"Movie {i}" for i in range(1, 7)],
                           "year": [2000] * 6, "genres": ["Drama"] * 6})
    ratings = pd.DataFrame({"user_id": [1, 1, 1, 1, 2, 2, 3, 3],
                            "item_id": [1, 2, 3, 4, 1, 2, 5, 6],
                            "rating": [5.0, 4.0, 1.0, 3.0, 5.0, 4.5, 2.0, 4.0]})
    pairs = alignment.movielens_preference_pairs(tok, ratings, movies, n_per_user=5,
                                                 context_fn=lambda u: [f"user {u} likes drama"])
    # user 1: {1, 2} x {3}; user 2 has no disliked movie; user 3: {6} x {5}
    assert sorted(zip(pairs["user_id"], pairs["chosen_item"], pairs["rejected_item"])) == [(1, 1, 3), (1, 2, 3), (3, 6, 5)]
    assert pairs.loc[0, "chosen"].startswith("Movie ") and "user 1 likes drama" in pairs.loc[0, "prompt"]
    capped = alignment.movielens_preference_pairs(tok, ratings, movies, n_per_user=1)
    assert capped.groupby("user_id").size().tolist() == [1, 1]
    assert prompts.HEADERS["user_ratings"] not in capped.loc[0, "prompt"]            # global prompt
    with pytest.raises(ValueError, match="no user has both"):
        alignment.movielens_preference_pairs(tok, ratings[ratings["user_id"] == 2], movies)


def test_rating_history_context_shows_the_latest_ratings_oldest_first():
    movies = pd.DataFrame({"item_id": [1, 2, 3], "title": ["Heat", "Alien", "Up"], "year": [1995, 1979, 2009],
                           "genres": ["Action", "Horror", "Animation"]})
    history = pd.DataFrame({"user_id": [7, 7, 7, 8], "item_id": [1, 2, 3, 1], "rating": [4.0, 2.5, 5.0, 1.0]})
    lines = alignment.rating_history_context(history, movies, m=2)
    assert lines(7) == [prompts.rating_line("Alien (1979)", 2.5), prompts.rating_line("Up (2009)", 5.0)]
    assert lines(8) == [prompts.rating_line("Heat (1995)", 1.0)] and lines(9) == []


# --------------------------------------------------------------------------- reward models
def _preferences(n, d=6, seed=0, conditioned=False):
    """Synthetic pairs: the reward is w . y (global) or (u * w) . y (depends on the user u)."""
    rng = np.random.default_rng(seed)
    w = np.linspace(-1, 1, d) + 0.3
    y1, y2, u = rng.normal(size=(n, d)), rng.normal(size=(n, d)), rng.normal(size=(n, d))
    reward = (lambda y: ((u * w) * y).sum(1)) if conditioned else (lambda y: (w * y).sum(1))
    first_wins = reward(y1) + rng.normal(scale=0.5, size=n) > reward(y2)
    chosen = np.where(first_wins[:, None], y1, y2)
    rejected = np.where(first_wins[:, None], y2, y1)
    return chosen, rejected, u


def test_linear_bradley_terry_is_logistic_regression_on_differences():
    from sklearn.linear_model import LogisticRegression

    chosen, rejected, _ = _preferences(400)
    l2 = 1e-2
    log = alignment.train_reward_model(chosen, rejected, l2=l2, steps=200)
    head = log.model
    assert log.losses[-1] < log.losses[0]
    diff = chosen - rejected                  # sklearn: C * sum(logloss) + ||w||^2 / 2 on [d; -d]
    X, y = np.vstack([diff, -diff]), np.r_[np.ones(len(diff)), np.zeros(len(diff))]
    reference = LogisticRegression(C=1 / (2 * l2 * len(diff)), fit_intercept=False, tol=1e-10, max_iter=10_000).fit(X, y)
    np.testing.assert_allclose(head.net.weight.detach().numpy()[0], reference.coef_[0], rtol=1e-3, atol=1e-4)
    test_c, test_r, _ = _preferences(400, seed=1)
    assert (alignment.reward_margins(head, test_c, test_r) > 0).mean() > 0.85          # held-out pairs


def test_user_conditioned_reward_model_wins_when_users_disagree():
    chosen, rejected, users = _preferences(800, conditioned=True)
    test_c, test_r, test_u = _preferences(800, seed=1, conditioned=True)
    accuracy = {}
    for name, prompt_train, prompt_test in (("global", None, None), ("user", users, test_u)):
        head = alignment.train_reward_model(alignment.bt_features(chosen, prompt_train),
                                            alignment.bt_features(rejected, prompt_train), l2=1e-3).model
        margins = alignment.reward_margins(head, alignment.bt_features(test_c, prompt_test),
                                           alignment.bt_features(test_r, prompt_test))
        accuracy[name] = (margins > 0).mean()
    assert accuracy["user"] > 0.8 and accuracy["global"] < 0.6
    mlp = alignment.train_reward_model(alignment.bt_features(chosen, users), alignment.bt_features(rejected, users),
                                       hidden=16, steps=100).model
    margins = alignment.reward_margins(mlp, alignment.bt_features(test_c, test_u), alignment.bt_features(test_r, test_u))
    assert (margins > 0).mean() > 0.7
    with pytest.raises(ValueError, match="same shape"):
        alignment.train_reward_model(chosen, rejected[:10])


def test_fit_reward_margins_scales_features_and_falls_back_to_the_shared_head():
    chosen, rejected, _ = _preferences(300)
    test_c, test_r, _ = _preferences(60, seed=1)
    margins, heads = alignment.fit_reward_margins(chosen, rejected, test_c, test_r, l2=1e-2)
    scale = (chosen - rejected).std(axis=0) + 1e-8
    by_hand = alignment.train_reward_model(chosen / scale, rejected / scale, l2=1e-2, steps=200).model
    np.testing.assert_allclose(margins, alignment.reward_margins(by_hand, test_c / scale, test_r / scale), atol=1e-6)
    assert len(heads) == 1 and (margins > 0).mean() > 0.85
    # two groups: group 0 has enough pairs for a head of its own, group 1 (10 pairs) keeps the shared head
    groups = np.r_[np.zeros(290), np.ones(10)]
    eval_groups = np.r_[np.zeros(30), np.ones(30)]
    grouped, heads = alignment.fit_reward_margins(chosen, rejected, test_c, test_r, l2=1e-2, train_groups=groups,
                                                  eval_groups=eval_groups, min_pairs=20)
    assert len(heads) == 2 and heads[1].n_examples == 290
    np.testing.assert_allclose(grouped[30:], margins[30:])                    # the fallback: shared head
    assert not np.allclose(grouped[:30], margins[:30])                         # its own head


def test_per_user_accuracy_counts_ties_as_half():
    acc = alignment.per_user_accuracy([1.0, -1.0, 0.0, 2.0], ["a", "a", "b", "b"])
    assert acc.to_dict() == {"a": 0.5, "b": 0.75}


# --------------------------------------------------------------------------- helpers of notebook 07
def test_bt_features_stack_one_product_block_per_condition():
    rng = np.random.default_rng(0)
    r, a, b = rng.normal(size=(3, 5, 4))
    features = alignment.bt_features(r, [a, b])
    np.testing.assert_allclose(features, np.hstack([r, a * r, b * r]), rtol=1e-6)
    np.testing.assert_allclose(alignment.bt_features(r, a), np.hstack([r, a * r]), rtol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        alignment.bt_features(r, [a, b[:, :2]])


def test_preference_logps_count_tokens_and_memoise_by_model(tmp_path, monkeypatch, tiny_lm):
    from p13n_utils import config

    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)
    model, tok = tiny_lm()
    fresh = alignment.preference_logps(model, tok, PREFS, batch_size=2)
    # tokens: the response's words and its eos token
    assert fresh["chosen_tokens"].tolist() == [len(c.split()) + 1 for c in PREFS["chosen"]]
    assert fresh["rejected_tokens"].tolist() == [len(r.split()) + 1 for r in PREFS["rejected"]]
    # the summed logp of one pair, by hand from the logits
    prompt_ids = tok(PREFS["prompt"][0])["input_ids"]
    target = tok(PREFS["chosen"][0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([prompt_ids + target])).logits[0], -1)
    by_hand = sum(logp[len(prompt_ids) - 1 + j, t].item() for j, t in enumerate(target))
    assert fresh["chosen_logp"][0] == pytest.approx(by_hand, abs=1e-4)
    cached = alignment.preference_logps(model, tok, PREFS, cache=True)
    assert list((tmp_path / "lm").glob("preference_logps-*.json"))
    pd.testing.assert_frame_equal(cached, alignment.preference_logps(model, tok, PREFS, cache=True))
    np.testing.assert_allclose(cached["chosen_logp"], fresh["chosen_logp"], atol=1e-5)
    other, _ = tiny_lm(seed=1)                                   # other weights: not the memo's answer
    assert not np.allclose(alignment.preference_logps(other, tok, PREFS, cache=True)["chosen_logp"],
                           cached["chosen_logp"])


def test_dpo_margins_from_logps_equal_the_implicit_reward_margin(tmp_path, tiny_lm):
    model, tok = tiny_lm()
    result = alignment.train_or_load_dpo_lora(model, tok, PREFS, tmp_path / "dpo", TrainConfig(lr=3e-2, steps=4, batch_size=3),
                                              adapter_name="dpo", beta=0.5, r=4)
    policy = result.model
    assert not result.loaded
    with adapters.use_adapter(policy, None):
        reference = alignment.preference_logps(policy, tok, PREFS)
    margins = alignment.dpo_margins(alignment.preference_logps(policy, tok, PREFS), reference, beta=0.5)
    np.testing.assert_allclose(margins, alignment.implicit_reward_margin(policy, tok, PREFS, beta=0.5,
                                                                         adapter_name="dpo"), atol=1e-6)
    with pytest.raises(ValueError, match="same pairs"):
        alignment.dpo_margins(reference.iloc[:2], reference)


def test_train_or_load_dpo_lora_loads_the_saved_adapter_and_retrains_on_new_settings(tmp_path, tiny_lm, logits_of):
    directory = tmp_path / "adapters" / "dpo_global"
    train, settings = TrainConfig(lr=3e-2, steps=3, batch_size=3), dict(beta=0.5, r=4)
    model, tok = tiny_lm()
    log = alignment.train_or_load_dpo_lora(model, tok, PREFS, directory, train, "dpo_global", **settings)
    trained = log.model
    assert not log.loaded and (directory / "adapter_model.safetensors").is_file()
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")]     # no temporary folder left
    expected = logits_of(trained, tok)
    fresh_model, _ = tiny_lm()
    log2 = alignment.train_or_load_dpo_lora(fresh_model, tok, PREFS, directory, train, "dpo_global", **settings)
    again = log2.model
    assert log2.loaded and log2.losses == log.losses and log2.metrics == log.metrics
    assert log2.seconds == log.seconds and log2.trainable_params == log.trainable_params
    assert again.active_adapter == "dpo_global"
    torch.testing.assert_close(logits_of(again, tok), expected)
    other_model, _ = tiny_lm()                                    # other settings: trained again, replaced
    log3 = alignment.train_or_load_dpo_lora(other_model, tok, PREFS, directory, train.replace(steps=2), "dpo_global",
                                            **settings)
    assert not log3.loaded and log3.steps == 2
    log4 = alignment.train_or_load_dpo_lora(tiny_lm()[0], tok, PREFS, directory, train.replace(steps=2), "dpo_global",
                                            beta=0.3, r=4)                     # another beta: retrained too
    assert not log4.loaded
    with pytest.raises(ValueError, match="empty"):
        alignment.train_or_load_dpo_lora(other_model, tok, PREFS.iloc[:0], tmp_path / "x", train, "x")


def test_soup_weights_go_from_the_nearest_adapter_to_the_uniform_average():
    sims = np.array([[0.9, 0.5, 0.1], [0.2, 0.3, 0.25]])
    np.testing.assert_array_equal(alignment.soup_weights(sims, 0), [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_allclose(alignment.soup_weights(sims, np.inf), np.full((2, 3), 1 / 3))
    sharp, soft = alignment.soup_weights(sims, 0.05), alignment.soup_weights(sims, 1.0)
    np.testing.assert_allclose(sharp.sum(axis=1), 1)
    np.testing.assert_allclose(soft.sum(axis=1), 1)
    assert sharp[0, 0] > soft[0, 0] > 1 / 3                       # a lower temperature favours the nearest
    assert alignment.soup_weights(sims[0], 0.1).shape == (3,)
    with pytest.raises(ValueError, match="temperature"):
        alignment.soup_weights(sims, -1)
    with pytest.raises(ValueError, match="NaN"):
        alignment.soup_weights([[np.nan, 1.0]], 0.1)


def test_soup_logps_score_each_pair_under_its_own_merge(tiny_lm):
    model, tok = tiny_lm()
    train = TrainConfig(lr=3e-2, steps=3, batch_size=3)
    model = alignment.train_dpo_lora(model, tok, PREFS, train, adapter_name="p0", r=4).model
    model = alignment.train_dpo_lora(model, tok, PREFS.iloc[::-1], train.replace(seed=1), adapter_name="p1", r=4).model
    weights = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    mixed = alignment.soup_logps(model, tok, PREFS, ["p0", "p1"], weights)
    for i, w in enumerate(weights):
        adapters.merge_adapters(model, ["p0", "p1"], w, "check")
        alone = alignment.preference_logps(model, tok, PREFS.iloc[[i]])
        np.testing.assert_allclose(mixed.iloc[i].to_numpy(dtype=float), alone.iloc[0].to_numpy(dtype=float), atol=1e-5)
    same = alignment.soup_logps(model, tok, PREFS, ["p0", "p1"], weights[2])          # one soup for every pair
    np.testing.assert_allclose(same["chosen_logp"][2], mixed["chosen_logp"][2], atol=1e-5)
    assert not np.allclose(mixed["chosen_logp"][0], alignment.soup_logps(model, tok, PREFS.iloc[[0]], ["p0", "p1"],
                                                                         weights[1])["chosen_logp"][0])
    with pytest.raises(ValueError, match="rows of weights"):
        alignment.soup_logps(model, tok, PREFS, ["p0", "p1"], weights[:2])


def test_record_policy_records_each_metric_once_with_its_interval():
    from p13n_utils import results

    results.clear()
    users = [1, 2, 3, 4]
    acc = pd.Series([1.0, 0.5, 1.0, 0.0], index=users)
    norm = pd.Series([1.0, 1.0, 1.0, 0.0], index=users)
    nll = pd.Series([2.0, 2.2, 1.8, 2.0], index=users)
    row = alignment.record_policy("personachat", "user", "dpo_user", acc, nll, own_pref_acc=acc,
                                  base_nll=nll + 0.1, n_resamples=200, own_pref_acc_norm=norm)
    recorded = {r["metric"]: r for r in results.rows()}
    assert set(recorded) == {"dpo_pref_acc", "ppl", "logp_pref_acc_sum", "logp_pref_acc", "ppl_ratio_vs_base"}
    assert recorded["dpo_pref_acc"]["value"] == pytest.approx(0.625) and recorded["dpo_pref_acc"]["n"] == 4
    assert recorded["logp_pref_acc"]["value"] == pytest.approx(0.75)
    assert recorded["ppl"]["value"] == pytest.approx(np.exp(2.0))
    assert recorded["ppl_ratio_vs_base"]["value"] == pytest.approx(np.exp(-0.1))      # every user 0.1 nats better
    assert len({r["set"] for r in recorded.values()}) == 1                              # the same four users
    r = recorded["dpo_pref_acc"]
    assert row["dpo_pref_acc"] == results.fmt_ci(r["value"], r["lower"], r["upper"])
    assert set(row) == {"method", "level", "dpo_pref_acc", "ppl", "logp_pref_acc_sum", "logp_pref_acc",
                        "ppl ratio vs untrained"}
    results.clear()
    # an untrained model: its summed-logp accuracy is the main row, recorded once
    assert set(alignment.record_policy("personachat", "global", "zero_shot", acc, nll, own_pref_acc=acc,
                                       own_pref_acc_norm=norm, n_resamples=50, pref_metric="logp_pref_acc_sum")) == {
        "method", "level", "logp_pref_acc_sum", "ppl", "logp_pref_acc"}
    assert sorted(r["metric"] for r in results.rows()) == ["logp_pref_acc", "logp_pref_acc_sum", "ppl"]
    results.clear()


# --------------------------------------------------------------------------- notebook 07's level helpers
def _user_preferences(n_users=8, pairs_per_user=60, d=6, seed=0):
    """Pairs of responses (ids into a lookup) where each user rewards ``(u * w) . y``: users disagree."""
    rng = np.random.default_rng(seed)
    w = np.linspace(-1, 1, d) + 0.3
    users = {f"u{k}": rng.normal(size=d) for k in range(n_users)}
    rows, lookup = [], {}
    for user, u in users.items():
        for j in range(pairs_per_user):
            a, b = f"{user}-{j}-a", f"{user}-{j}-b"
            lookup[a], lookup[b] = rng.normal(size=d), rng.normal(size=d)
            first_wins = ((u * w) * (lookup[a] - lookup[b])).sum() + rng.normal(scale=0.3) > 0
            rows.append({"user_id": user, "chosen": a if first_wins else b, "rejected": b if first_wins else a})
    return pd.DataFrame(rows), lookup, users


def test_preference_features_stack_response_context_and_user_blocks():
    rng = np.random.default_rng(0)
    vectors = {key: rng.normal(size=4) for key in ("x", "y", "z", "hi", "yo")}
    users = {1: rng.normal(size=4), 2: rng.normal(size=4)}
    pairs = pd.DataFrame({"user_id": [1, 2], "chosen": ["x", "y"], "rejected": ["z", "x"], "partner": ["hi", "yo"],
                          "chosen_item": ["y", "z"], "rejected_item": ["x", "x"]})
    response = lambda side: np.stack([vectors[k] for k in pairs[side]])  # noqa: E731
    partner = np.stack([vectors[k] for k in pairs["partner"]])
    user = np.stack([users[u] for u in pairs["user_id"]])
    chosen, rejected = alignment.preference_features(pairs, vectors, context="partner", user_vectors=users)
    np.testing.assert_allclose(chosen, np.hstack([response("chosen"), partner * response("chosen"),
                                                  user * response("chosen")]), rtol=1e-6)
    np.testing.assert_allclose(rejected, np.hstack([response("rejected"), partner * response("rejected"),
                                                    user * response("rejected")]), rtol=1e-6)
    chosen, rejected = alignment.preference_features(pairs, vectors, sides=("chosen_item", "rejected_item"))
    np.testing.assert_allclose(chosen, response("chosen_item"), rtol=1e-6)
    assert rejected.shape == (2, 4) and rejected.dtype == np.float32
    chosen, _ = alignment.preference_features(pairs, vectors, user_vectors=users)
    np.testing.assert_allclose(chosen, np.hstack([response("chosen"), user * response("chosen")]), rtol=1e-6)


def test_fit_level_margins_personalizes_only_where_the_level_says():
    frame, lookup, users = _user_preferences()
    pick = lambda part: frame[frame.index % 3 == part].reset_index(drop=True)  # noqa: E731
    pairs = {"train": pd.concat([pick(0), pick(1)], ignore_index=True), "test": pick(2)}
    features = lambda p, kind: alignment.preference_features(  # noqa: E731
        p, lookup, user_vectors=users if kind == "user" else None)
    accuracy = {}
    for level in ("global", "user"):
        margins, heads = alignment.fit_level_margins(pairs, features, level, l2=1e-2)
        assert margins.shape == (len(pairs["test"]),) and len(heads) == 1
        accuracy[level] = alignment.per_user_accuracy(margins, pairs["test"]["user_id"]).mean()
    assert accuracy["user"] > 0.85 and accuracy["user"] > accuracy["global"] + 0.2   # users disagree
    # the global level is fit_reward_margins on the features that do not see the user
    by_hand, _ = alignment.fit_reward_margins(*features(pairs["train"], "global"), *features(pairs["test"], "global"),
                                              l2=1e-2)
    np.testing.assert_allclose(alignment.fit_level_margins(pairs, features, "global", l2=1e-2)[0], by_hand)
    # persona: one head per group with enough training pairs; users u6, u7 (no group) keep the shared head
    persona = pd.Series({f"u{k}": k for k in range(6)})
    margins, heads = alignment.fit_level_margins(pairs, features, "persona", l2=1e-2, groups=persona, min_pairs=20)
    assert len(heads) == 7 and [h.n_examples for h in heads[1:]] == [40] * 6
    ungrouped = pairs["test"]["user_id"].isin(["u6", "u7"]).to_numpy()
    np.testing.assert_allclose(margins[ungrouped], by_hand[ungrouped])
    # a head per user-as-persona learns that user's preference: far better than the global head
    assert alignment.per_user_accuracy(margins[~ungrouped], pairs["test"]["user_id"][~ungrouped]).mean() > 0.85
    assert alignment.fit_level_margins(pairs, features, "global", l2=1e-2, split="train")[0].shape == (
        len(pairs["train"]),)
    with pytest.raises(ValueError, match="groups"):
        alignment.fit_level_margins(pairs, features, "persona", l2=1e-2)
    with pytest.raises(ValueError, match="level"):
        alignment.fit_level_margins(pairs, features, "users", l2=1e-2)


def test_dpo_adapters_rewrap_the_model_once_keep_every_log_and_reload(tmp_path, tiny_lm, logits_of):
    model, tok = tiny_lm()
    train = TrainConfig(lr=3e-2, batch_size=3)
    dpo = alignment.DPOAdapters(model, tok, tmp_path / "adapters", train, beta=0.5, r=4)
    first = dpo.train("first", PREFS.assign(extra=1), steps=2)       # other columns are ignored
    wrapped = dpo.model
    assert wrapped is not model and adapters.is_peft(wrapped) and first.model is wrapped and first.steps == 2
    second = dpo.train("second", PREFS.iloc[::-1], steps=3)
    assert dpo.model is wrapped and second.steps == 3                # added beside the first
    assert list(dpo.logs) == ["first", "second"] and dpo.logs["second"] is second and not first.loaded
    assert sorted(wrapped.peft_config) == ["first", "second"] and wrapped.active_adapter == "second"
    assert (tmp_path / "adapters" / "first" / "adapter_model.safetensors").is_file()
    with pytest.raises(training.NotEnoughHistoryError, match="persona 3"):
        dpo.train("third", PREFS, steps=1, min_pairs=4, user="persona 3")
    expected = logits_of(wrapped, tok)
    again = alignment.DPOAdapters(tiny_lm()[0], tok, tmp_path / "adapters", train, beta=0.5, r=4)
    assert again.train("first", PREFS, steps=2).loaded               # same triples: loaded
    log = again.train("second", PREFS.iloc[::-1], steps=3)
    assert log.loaded and log.losses == second.losses
    torch.testing.assert_close(logits_of(again.model, tok), expected)


def test_soup_sweep_goes_from_the_nearest_adapter_to_the_uniform_merge(tiny_lm):
    model, tok = tiny_lm()
    train = TrainConfig(lr=3e-2, steps=3, batch_size=3)
    model = alignment.train_dpo_lora(model, tok, PREFS, train, adapter_name="p0", r=4).model
    model = alignment.train_dpo_lora(model, tok, PREFS.iloc[::-1], train.replace(seed=1), adapter_name="p1", r=4).model
    sims = np.array([[0.9, 0.1], [0.2, 0.7], [0.6, 0.5]])
    sweep = alignment.soup_sweep(model, tok, PREFS, ["p0", "p1"], sims, [np.inf, 0.0, 0.1],
                                 score=lambda lp: lp["chosen_logp"].to_numpy())
    assert list(sweep) == [np.inf, 0.0, 0.1]
    own = []                                         # temperature 0: each pair under its most similar adapter alone
    for i, name in enumerate(["p0", "p1", "p0"]):
        with adapters.use_adapter(model, name):
            own.append(alignment.preference_logps(model, tok, PREFS.iloc[[i]])["chosen_logp"][0])
    np.testing.assert_allclose(sweep[0.0], own, atol=1e-5)
    adapters.merge_adapters(model, ["p0", "p1"], [0.5, 0.5], "uniform")
    with adapters.use_adapter(model, "uniform"):
        uniform = alignment.preference_logps(model, tok, PREFS)["chosen_logp"].to_numpy()
    np.testing.assert_allclose(sweep[np.inf], uniform, atol=1e-5)
    assert not np.allclose(sweep[0.1], sweep[np.inf]) and not np.allclose(sweep[0.0], uniform)
