"""Fine-tuning methods (p13n_utils.finetune) on a tiny random Llama: LoRA, full fine-tuning,
soft prompts, one adapter per group, bad input, and the training data of notebook 06."""

import numpy as np
import pandas as pd
import pytest
import torch

from p13n_utils import adapters, cache, finetune, generation, prompts, synthetic, tasks, training
from p13n_utils.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
LORA = TrainConfig(lr=1e-3)                   # the old train_lora defaults: 20 steps of 4 pairs, seed 0


# --------------------------------------------------------------------------- LoRA and full fine-tuning
def test_train_lora_lowers_the_loss_and_changes_only_the_adapter(tiny_lm, tiny_pairs, logits_of):
    model, tok = tiny_lm()
    before = logits_of(model, tok)
    frozen = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = finetune.train_lora(model, tok, tiny_pairs, TrainConfig(lr=3e-2, steps=30, batch_size=4), "global",
                                 r=4, alpha=8)
    peft_model = result.model
    assert result.steps == 30 and result.n_examples == 4 and result.seconds > 0 and result.n_tokens > 0
    assert result.adapter_name == "global" and peft_model.active_adapter == "global"
    assert np.mean(result.losses[-5:]) < 0.6 * np.mean(result.losses[:5])    # it learns the 4 replies
    assert result.trainable_params == adapters.count_parameters(peft_model, "global")
    assert not torch.allclose(logits_of(peft_model, tok), before)
    with adapters.use_adapter(peft_model, None):                         # adapter off: the base model
        torch.testing.assert_close(logits_of(peft_model, tok), before)
    base = peft_model.get_base_model()
    for name, p in base.named_parameters():
        if "lora_" not in name:
            key = name.replace(".base_layer", "")
            assert torch.equal(p, frozen[key]), name
    assert list(result.frame().columns) == ["step", "loss"] and len(result.frame()) == 30


def test_train_lora_is_seeded(tiny_lm, tiny_pairs):
    runs = []
    for _ in range(2):
        model, tok = tiny_lm()
        runs.append(finetune.train_lora(model, tok, tiny_pairs, TrainConfig(lr=1e-2, steps=3, batch_size=2, seed=5),
                                        r=4).losses)
    assert runs[0] == runs[1]


def test_train_full_lowers_the_loss_and_moves_every_layer(tiny_lm, tiny_pairs):
    model, tok = tiny_lm()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = finetune.train_full(model, tok, tiny_pairs, TrainConfig(lr=1e-2, steps=20, batch_size=4))
    assert result.model is model
    assert np.mean(result.losses[-5:]) < 0.6 * np.mean(result.losses[:5])
    assert result.trainable_params == adapters.count_parameters(model)
    assert all(not torch.equal(p, before[name]) for name, p in model.named_parameters() if "norm" not in name)
    peft_model = finetune.train_lora(model, tok, tiny_pairs, LORA.replace(steps=1), r=2).model
    with pytest.raises(TypeError, match="merge_into_base"):
        finetune.train_full(peft_model, tok, tiny_pairs, LORA.replace(steps=1))


# --------------------------------------------------------------------------- bad input
def test_empty_data_and_too_little_history(tiny_lm, tiny_pairs):
    model, tok = tiny_lm()
    one = LORA.replace(steps=1)
    with pytest.raises(ValueError, match="empty") as empty:
        finetune.train_lora(model, tok, [], one, user=7)
    assert not isinstance(empty.value, training.NotEnoughHistoryError)
    with pytest.raises(training.NotEnoughHistoryError, match="user 7 has 2 training pairs") as few:
        finetune.train_lora(model, tok, tiny_pairs[:2], one.replace(min_pairs=3), user=7)
    assert (few.value.user, few.value.n_pairs, few.value.min_pairs) == (7, 2, 3)
    assert not adapters.has_injected_adapters(model)                     # nothing was added on failure
    with pytest.raises(ValueError, match="empty"):
        finetune.train_full(model, tok, pd.DataFrame(columns=["prompt", "target"]), one)
    with pytest.raises(ValueError, match="empty"):
        finetune.train_soft_prompts(model, tok, pd.DataFrame(columns=["user_id", "prompt", "target"]), one)
    with pytest.raises(ValueError, match="steps"):
        finetune.train_lora(model, tok, tiny_pairs, LORA.replace(steps=0))


# --------------------------------------------------------------------------- soft prompts
def test_soft_prompts_learn_each_users_own_answer(tiny_lm):
    """Two users answer the same question differently; one soft prompt each, trained jointly."""
    model, tok = tiny_lm()
    question = "user : what do you like ? assistant :"
    pairs = pd.DataFrame({"user_id": [10, 10, 20, 20], "prompt": [question] * 4,
                          "target": ["i like tea .", "i like tea .", "i love dogs .", "i love dogs ."]})
    frozen = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = finetune.train_soft_prompts(model, tok, pairs, TrainConfig(lr=5e-2, steps=60, batch_size=4), n_virtual=8)
    prefixes = result.prefixes
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5]) - 0.5
    assert result.trainable_params == 2 * prefixes.params_per_user == 2 * 8 * 32
    assert all(torch.equal(p, frozen[name]) for name, p in model.named_parameters())   # LM frozen
    assert all(p.requires_grad for p in model.parameters())                              # flags restored
    scores = {}
    for user in (10, 20):
        lm = prefixes.for_user(model, user)
        scores[user] = generation.score(lm, tok, [question, question], ["i like tea .", "i love dogs ."],
                                        progress=False)["logprob_sum"].to_numpy()
    assert scores[10][0] > scores[20][0] and scores[20][1] > scores[10][1]       # each prefers its own
    with pytest.raises(KeyError, match="no soft prompt for user"):
        prefixes.for_user(model, 30)


def test_soft_prompt_model_scores_batches_exactly(tiny_lm, tiny_pairs):
    model, tok = tiny_lm()
    prefixes = finetune.UserPrefixes([1], torch.randn(3, 32) * 0.1)
    lm = prefixes.for_user(model, 1)
    texts, targets = [p for p, _ in tiny_pairs], [t for _, t in tiny_pairs]
    batched = generation.score(lm, tok, texts, targets, batch_size=4, progress=False)["logprob_sum"]
    alone = [generation.score(lm, tok, [p], [t], progress=False)["logprob_sum"][0] for p, t in tiny_pairs]
    np.testing.assert_allclose(batched.to_numpy(), alone, atol=1e-4)
    plain = generation.score(model, tok, texts, targets, progress=False)["logprob_sum"].to_numpy()
    assert not np.allclose(batched.to_numpy(), plain)                           # the prefix matters
    other = finetune.UserPrefixes([1], torch.randn(3, 32) * 0.1).for_user(model, 1)
    assert cache.fingerprint(lm) != cache.fingerprint(other)         # no cache collision


# --------------------------------------------------------------------------- data
def test_personachat_pairs_use_training_turns_and_the_eval_prompt_format(tiny_tokenizer, characters):
    tok = tiny_tokenizer()
    ev = tasks.personachat_eval_set(characters(), n_users=3, dialogues_per_user=1, seed=0)
    rows = finetune.personachat_rows(ev, users=[int(ev.users[0])])
    assert set(rows["user_id"]) == {int(ev.users[0])}
    held_out = set(ev.test["reply"]) | set(ev.val["reply"])
    pairs = finetune.personachat_pairs(tok, rows, context_fn=lambda row: ev.facts_of(row["user_id"]))
    assert len(pairs) == len(rows) and not held_out & set(pairs["target"])
    first = rows.iloc[0]
    assert pairs["prompt"][0] == prompts.personachat_prompt(tok, first["partner"], first["history"],
                                                            ev.facts_of(first["user_id"]))
    everyone = finetune.personachat_rows(ev)
    assert len(everyone) == sum(len(t) for t in ev.train["turns"])
    with pytest.raises(KeyError, match="no PersonaChat dialogues"):
        finetune.personachat_rows(ev, users=[999])


def test_rating_pairs_label_the_history_and_never_the_held_out_ratings(tiny_tokenizer):
    assert [finetune.rating_label(r) for r in (0.5, 1.0, 2.4, 2.5, 3.5, 4.5, 5.0)] == ["1", "1", "2", "3", "4", "5", "5"]
    tok = tiny_tokenizer()
    rv = tasks.movielens_rating_eval_set(synthetic.movielens(n_users=12, n_items=40, seed=2), n_users=4)
    users = rv.users[:2]
    rows = finetune.rating_rows(rv, users)                      # before="val": val ratings left out
    held = set(zip(rv.val["user_id"], rv.val["item_id"])) | set(zip(rv.test["user_id"], rv.test["item_id"]))
    assert not held & set(zip(rows["user_id"], rows["item_id"]))
    pairs = finetune.rating_pairs(tok, rows, rv.movies)
    assert pairs["prompt"].tolist() == tasks.rating_prompts(tok, rows, rv.movies)
    assert pairs["prompt"].str.endswith(prompts.RATING_ANSWER_PREFIX).all()
    assert set(pairs["target"]) <= set(prompts.RATING_CANDIDATES)
    with pytest.raises(KeyError):
        finetune.rating_rows(rv, [10_000])


def test_group_rows_keep_the_groups_of_evaluated_users_only():
    pool = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 3, 4, 9], "x": range(8)})
    assignments = pd.Series({1: 0, 2: 0, 3: 1, 4: 2, 5: 1, 6: 2})          # user 9 has no persona
    rows = finetune.group_rows(pool, assignments, evaluated=[5, 7], n_per_group=2, seed=0)
    assert set(rows["persona"]) == {1} and rows["user_id"].tolist() == [3]   # only persona 1 is needed
    rows = finetune.group_rows(pool, assignments, evaluated=[5, 6, 1], n_per_group=2, seed=0)
    assert rows.groupby("persona").size().to_dict() == {0: 2, 1: 1, 2: 1}
    assert rows["persona"].dtype == np.int64 and 9 not in set(rows["user_id"])
    pd.testing.assert_frame_equal(rows, finetune.group_rows(pool, assignments, [5, 6, 1], 2, seed=0))


# --------------------------------------------------------------------------- the real default LM
def test_lora_on_smollm2_moves_the_rating_read_by_predict_ratings():
    """On SmolLM2-135M (chat template, q/k/v/o names, the real rating prompt): two LoRA steps on
    one rating pair raise the probability of its digit exactly where predict_ratings reads it."""
    from p13n_utils import models

    model, tok = models.load_lm(device="cpu", fresh=True)
    movies = pd.DataFrame({"item_id": [1], "title": ["Heat"], "year": [1995], "genres": ["Action|Crime"]})
    rows = pd.DataFrame({"user_id": [1], "item_id": [1], "rating": [5.0], "timestamp": [0]})
    pairs = finetune.rating_pairs(tok, rows, movies)
    (example,) = training.encode_pairs(tok, pairs, append_eos=False)
    assert [t for t in example["labels"] if t != -100] == tok.encode("5", add_special_tokens=False)
    _, before = tasks.predict_ratings(model, tok, pairs["prompt"], cache=False)
    result = finetune.train_lora(model, tok, pairs, TrainConfig(lr=1e-3, steps=2, batch_size=1, append_eos=False))
    assert result.trainable_params == 30 * 8 * ((576 + 576) * 2 + (576 + 192) * 2)      # r=8 on q, k, v, o
    _, after = tasks.predict_ratings(result.model, tok, pairs["prompt"], cache=False)
    assert after[0, 4] > before[0, 4] + 0.1                                         # p("5") went up


# --------------------------------------------------------------------------- one adapter per group
def test_train_adapters_one_per_user_with_the_fallback_and_a_store(tmp_path, tiny_lm, tiny_pairs, logits_of):
    model, tok = tiny_lm()
    pairs = pd.DataFrame(tiny_pairs * 2, columns=["prompt", "target"]).assign(user_id=[1, 1, 1, 1, 2, 2, 2, 3])
    store = adapters.AdapterStore(tmp_path / "oppu")
    groups = np.array([1, 2, 3, 4])                                   # numpy ids, as pandas gives them
    train = TrainConfig(lr=3e-2, steps=3, batch_size=2, min_pairs=2)
    result = finetune.train_adapters(model, tok, pairs, train, groups=groups, store=store, r=4)
    model, logs, skipped = result.model, result.groups, result.skipped
    assert sorted(logs) == [1, 2] and all(log.steps == 3 for log in logs.values())
    assert logs[1].n_examples == 4 and logs[2].n_examples == 3 and result.n_examples == 7
    assert result.seconds == pytest.approx(logs[1].seconds + logs[2].seconds)
    assert sorted(skipped) == [3, 4]                                   # 1 pair and no pair: fallback
    assert isinstance(skipped[3], training.NotEnoughHistoryError) and skipped[3].n_pairs == 1
    assert skipped[4].n_pairs == 0
    assert store.users() == [1, 2] and not adapters.has_injected_adapters(model)   # saved, then unloaded
    assert all(type(u) is int for u in store.users())                  # ids compare equal to the data's
    base_logits = logits_of(model, tok)
    torch.testing.assert_close(base_logits, logits_of(tiny_lm()[0], tok))
    model = store.activate(model, 1)                                  # wraps the base once
    one = logits_of(model, tok)
    two = logits_of(store.activate(model, 2), tok)                    # then only switches
    model = store.switch(model, 1)                                    # ... and unloads the others
    assert list(model.peft_config) == ["user_1"]
    torch.testing.assert_close(logits_of(model, tok), one)
    model = store.switch(model, 2)
    assert list(model.peft_config) == ["user_2"]
    torch.testing.assert_close(logits_of(model, tok), two)
    model.delete_adapter("user_2")                                    # no adapter left at all
    model = store.switch(model, 1)
    torch.testing.assert_close(logits_of(model, tok), one)
    assert not torch.allclose(one, base_logits) and not torch.allclose(one, two)
    # the same seed and data give the same adapter as train_lora alone
    alone, tok = tiny_lm()
    alone = finetune.train_lora(alone, tok, pairs[pairs["user_id"] == 1], train, "user_1", r=4).model
    torch.testing.assert_close(logits_of(alone, tok), one)
    with pytest.raises(TypeError, match="user_id"):
        finetune.train_adapters(model, tok, pairs.drop(columns="user_id"), train)


def test_train_adapters_without_a_store_keeps_them_side_by_side_and_plain_model_removes_them(tiny_lm, tiny_pairs,
                                                                                            logits_of):
    model, tok = tiny_lm()
    before = logits_of(model, tok)
    pairs = pd.DataFrame(tiny_pairs, columns=["prompt", "target"]).assign(persona=[0, 0, 1, 1])
    result = finetune.train_adapters(model, tok, pairs, TrainConfig(lr=3e-2, steps=2), by="persona",
                                     prefix="persona", r=4)
    peft_model = result.model
    assert sorted(peft_model.peft_config) == ["persona_0", "persona_1"] and not result.skipped
    assert len(result.groups) == 2 and len(result.losses) == 2         # the mean loss curve over groups
    with adapters.use_adapter(peft_model, "persona_0"):
        assert not torch.allclose(logits_of(peft_model, tok), before)
    plain = adapters.plain_model(peft_model)
    assert not adapters.has_injected_adapters(plain)
    torch.testing.assert_close(logits_of(plain, tok), before)          # removed, not merged
    assert adapters.plain_model(plain) is plain
    with pytest.raises(ValueError, match="no groups"):
        finetune.train_adapters(plain, tok, pairs.iloc[:0], LORA.replace(steps=1), by="persona")
