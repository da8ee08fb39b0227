"""Fine-tuning helpers (p13n_utils.finetune) on a tiny random Llama: collation, LoRA, full
fine-tuning, soft prompts, adapters per user (save / load / switch), bad input, costs."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from p13n_utils import cache, finetune, generation, prompts, synthetic, tasks

# --------------------------------------------------------------------------- a tiny LM
@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run ~10x faster on one thread than on two busy cores (less thread overhead)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


WORDS = ("the a cat cats dog dogs sat on mat i you like likes tea coffee what do are nice yes no ? . , "
         "user assistant : about me hello hi my name is love hate movies music books").split()


def tiny_tokenizer():
    """A word-level tokenizer over WORDS (whitespace split), with pad/bos/eos/unk ids 0-3."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")


def tiny_lm(seed=0, hidden=32, layers=2):
    """A randomly initialised 2-layer Llama (q/k/v/o projections like SmolLM2) and its tokenizer;
    the same seed gives the same weights. Weights are drawn wider than Llama's default (0.1 vs
    0.02) so that a few steps visibly fit a handful of sentences."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, initializer_range=0.1, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    return model, tok


PAIRS = [("user : do you like tea ? assistant :", "yes i like tea ."),
         ("user : what do you like ? assistant :", "i love cats ."),
         ("user : hello my name is cat . assistant :", "hi cat , nice ."),
         ("user : are you nice ? assistant :", "yes .")]


def logits_of(model, tok, text="user : do you like tea ? assistant : yes"):
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


# --------------------------------------------------------------------------- collation
def test_encode_masks_the_prompt_and_appends_eos():
    tok = tiny_tokenizer()
    (example,) = finetune.encode_pairs(tok, [PAIRS[0]])
    prompt_ids = tok(PAIRS[0][0])["input_ids"]
    target_ids = tok(PAIRS[0][1], add_special_tokens=False)["input_ids"]
    assert example["input_ids"] == prompt_ids + target_ids + [tok.eos_token_id]
    assert example["labels"] == [-100] * len(prompt_ids) + target_ids + [tok.eos_token_id]
    (cut,) = finetune.encode_pairs(tok, [PAIRS[0]], max_length=8, append_eos=False)
    assert cut["input_ids"] == prompt_ids[-(8 - len(target_ids)):] + target_ids     # prompt cut on the left
    frame = pd.DataFrame(PAIRS, columns=["prompt", "target"])
    assert finetune.encode_pairs(tok, frame) == finetune.encode_pairs(tok, PAIRS)
    with pytest.raises(ValueError, match="empty target"):
        finetune.encode_pairs(tok, [("user : hi", "")])
    with pytest.raises(TypeError, match="tuple of strings"):
        finetune.encode_pairs(tok, [("only a prompt",)])


def test_collate_pads_right_or_left_with_the_labels_masked():
    tok = tiny_tokenizer()
    examples = finetune.encode_pairs(tok, PAIRS[:2])
    right = finetune.collate(examples, tok.pad_token_id, "right")
    left = finetune.collate(examples, tok.pad_token_id, "left")
    lengths = [len(e["input_ids"]) for e in examples]
    short = int(np.argmin(lengths))
    gap = max(lengths) - min(lengths)
    assert gap > 0
    assert (right["input_ids"][short, -gap:] == tok.pad_token_id).all()
    assert (left["input_ids"][short, :gap] == tok.pad_token_id).all()
    assert (right["labels"][short, -gap:] == -100).all() and (left["labels"][short, :gap] == -100).all()
    assert left["position_ids"][short, gap].item() == 0 and right["position_ids"][short, 0].item() == 0
    for batch in (right, left):   # labels = the target (and eos) tokens exactly
        n_target = [(row != -100).sum().item() for row in batch["labels"]]
        assert n_target == [sum(label != -100 for label in e["labels"]) for e in examples]
    with pytest.raises(ValueError, match="padding_side"):
        finetune.collate(examples, 0, "middle")


def test_right_and_left_padding_give_the_logps_of_each_sequence_alone():
    model, tok = tiny_lm()
    examples = finetune.encode_pairs(tok, PAIRS)
    with torch.no_grad():
        alone = torch.stack([finetune.sequence_logps(model, finetune.collate([e], 0))[0][0] for e in examples])
        right, n_right = finetune.sequence_logps(model, finetune.collate(examples, 0, "right"))
        left, _ = finetune.sequence_logps(model, finetune.collate(examples, 0, "left"))
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=0)
    assert n_right.tolist() == [len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for _, t in PAIRS]


def test_sequence_logps_agree_with_generation_score():
    """The training objective is the likelihood that the evaluation measures."""
    model, tok = tiny_lm()
    examples = finetune.encode_pairs(tok, PAIRS, append_eos=False)
    with torch.no_grad():
        ours, _ = finetune.sequence_logps(model, finetune.collate(examples, 0))
    theirs = generation.score(model, tok, [p for p, _ in PAIRS], [t for _, t in PAIRS], progress=False)
    np.testing.assert_allclose(ours.numpy(), theirs["logprob_sum"].to_numpy(), atol=1e-4)


# --------------------------------------------------------------------------- LoRA and full fine-tuning
def test_train_lora_lowers_the_loss_and_changes_only_the_adapter():
    model, tok = tiny_lm()
    before = logits_of(model, tok)
    frozen = {name: p.detach().clone() for name, p in model.named_parameters()}
    peft_model, log = finetune.train_lora(model, tok, PAIRS, r=4, alpha=8, steps=30, lr=3e-2, batch_size=4,
                                          adapter_name="global")
    assert log.steps == 30 and log.n_examples == 4 and log.seconds > 0 and log.n_tokens > 0
    assert np.mean(log.losses[-5:]) < 0.6 * np.mean(log.losses[:5])    # it learns the 4 replies
    assert log.trainable_params == finetune.count_parameters(peft_model, "global")
    assert not torch.allclose(logits_of(peft_model, tok), before)
    with finetune.use_adapter(peft_model, None):                         # adapter off: the base model
        torch.testing.assert_close(logits_of(peft_model, tok), before)
    base = peft_model.get_base_model()
    for name, p in base.named_parameters():
        if "lora_" not in name:
            key = name.replace(".base_layer", "")
            assert torch.equal(p, frozen[key]), name
    assert list(log.frame().columns) == ["step", "loss"] and len(log.frame()) == 30


def test_train_lora_is_seeded():
    runs = []
    for _ in range(2):
        model, tok = tiny_lm()
        _, log = finetune.train_lora(model, tok, PAIRS, r=4, steps=3, lr=1e-2, batch_size=2, seed=5)
        runs.append(log.losses)
    assert runs[0] == runs[1]


def test_train_full_lowers_the_loss_and_moves_every_layer():
    model, tok = tiny_lm()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    log = finetune.train_full(model, tok, PAIRS, steps=20, lr=1e-2, batch_size=4)
    assert np.mean(log.losses[-5:]) < 0.6 * np.mean(log.losses[:5])
    assert log.trainable_params == finetune.count_parameters(model)
    assert all(not torch.equal(p, before[name]) for name, p in model.named_parameters() if "norm" not in name)
    peft_model, _ = finetune.train_lora(model, tok, PAIRS, r=2, steps=1)
    with pytest.raises(TypeError, match="merge_into_base"):
        finetune.train_full(peft_model, tok, PAIRS, steps=1)


def test_several_adapters_switch_without_reloading_the_base():
    model, tok = tiny_lm()
    model, _ = finetune.train_lora(model, tok, PAIRS[:2], r=4, steps=5, lr=3e-2, adapter_name="user_1")
    model, _ = finetune.train_lora(model, tok, PAIRS[2:], r=4, steps=5, lr=3e-2, adapter_name="user_2")
    assert model.active_adapter == "user_2"
    with finetune.use_adapter(model, "user_1"):
        one = logits_of(model, tok)
    assert model.active_adapter == "user_2"                              # restored
    two = logits_of(model, tok)
    assert not torch.allclose(one, two)
    with pytest.raises(ValueError, match="already has an adapter"):
        finetune.train_lora(model, tok, PAIRS, steps=1, adapter_name="user_1")
    with pytest.raises(KeyError, match="user_1"):
        with finetune.use_adapter(model, "user_3"):
            pass
    base = model.get_base_model()
    with pytest.raises(ValueError, match="pass the peft model"):
        finetune.train_lora(base, tok, PAIRS, steps=1, adapter_name="other")


# --------------------------------------------------------------------------- bad input
def test_empty_data_and_too_little_history():
    model, tok = tiny_lm()
    with pytest.raises(ValueError, match="empty") as empty:
        finetune.train_lora(model, tok, [], steps=1, user=7)
    assert not isinstance(empty.value, finetune.NotEnoughHistoryError)
    with pytest.raises(finetune.NotEnoughHistoryError, match="user 7 has 2 training pairs") as few:
        finetune.train_lora(model, tok, PAIRS[:2], steps=1, min_pairs=3, user=7)
    assert (few.value.user, few.value.n_pairs, few.value.min_pairs) == (7, 2, 3)
    assert not finetune._has_injected_adapters(model)                     # nothing was added on failure
    with pytest.raises(ValueError, match="empty"):
        finetune.train_full(model, tok, pd.DataFrame(columns=["prompt", "target"]), steps=1)
    with pytest.raises(ValueError, match="empty"):
        finetune.train_soft_prompts(model, tok, pd.DataFrame(columns=["user_id", "prompt", "target"]), steps=1)
    with pytest.raises(ValueError, match="steps"):
        finetune.train_lora(model, tok, PAIRS, steps=0)


def test_adapter_store_round_trip_and_unknown_user(tmp_path):
    model, tok = tiny_lm()
    model, _ = finetune.train_lora(model, tok, PAIRS[:2], r=4, steps=4, lr=3e-2, adapter_name="user_1")
    model, _ = finetune.train_lora(model, tok, PAIRS[2:], r=4, steps=4, lr=3e-2, adapter_name="user_2")
    expected = {}
    for user in (1, 2):
        with finetune.use_adapter(model, f"user_{user}"):
            expected[user] = logits_of(model, tok)
    store = finetune.AdapterStore(tmp_path / "adapters")
    assert store.users() == []
    for user in (1, 2):
        store.save(model, user)
    assert store.users() == [1, 2]
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == ["user-1", "user-2"]   # no temp leftovers
    assert store.bytes_on_disk(1) > 4 * finetune.count_parameters(model, "user_1")

    fresh, _ = tiny_lm()                                   # the same base weights, no adapter
    fresh = store.activate(fresh, 1)
    torch.testing.assert_close(logits_of(fresh, tok), expected[1])
    fresh = store.activate(fresh, 2)                        # switch: the base is not reloaded
    torch.testing.assert_close(logits_of(fresh, tok), expected[2])
    fresh = store.activate(fresh, 1)                        # already loaded: only set_adapter
    torch.testing.assert_close(logits_of(fresh, tok), expected[1])
    with pytest.raises(KeyError, match=r"user 3 .*users with an adapter: \[1, 2\]"):
        store.activate(fresh, 3)


def test_save_is_atomic(tmp_path, monkeypatch):
    model, tok = tiny_lm()
    model, _ = finetune.train_lora(model, tok, PAIRS, r=4, steps=2, adapter_name="user_1")
    target = tmp_path / "user-1"
    finetune.save_adapter(model, "user_1", target, extra={"user": 1})
    first = (target / "adapter_model.safetensors").read_bytes()

    def broken(directory, **kwargs):
        (tmp_path / "marker").write_text("called")
        path = Path(directory) / "user_1"
        path.mkdir(parents=True)
        (path / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(model, "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        finetune.save_adapter(model, "user_1", target)
    assert (tmp_path / "marker").is_file()
    assert (target / "adapter_model.safetensors").read_bytes() == first        # the old version intact
    with pytest.raises(OSError, match="disk full"):
        finetune.save_adapter(model, "user_1", tmp_path / "user-2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker", "user-1"]   # nothing half-written
    with pytest.raises(KeyError, match="user_9"):
        finetune.save_adapter(model, "user_9", tmp_path / "user-9")


def test_mismatched_base_model_and_adapter(tmp_path):
    model, tok = tiny_lm(seed=0)
    model, _ = finetune.train_lora(model, tok, PAIRS, r=4, steps=2, adapter_name="mine")
    finetune.save_adapter(model, "mine", tmp_path / "a")
    wider, _ = tiny_lm(hidden=48)
    with pytest.raises(finetune.AdapterMismatchError, match="hidden_size=32"):
        finetune.load_adapter(wider, tmp_path / "a", "mine")
    other_weights, _ = tiny_lm(seed=1)
    with pytest.raises(finetune.AdapterMismatchError, match="other weights"):
        finetune.load_adapter(other_weights, tmp_path / "a", "mine")
    loaded = finetune.load_adapter(other_weights, tmp_path / "a", "mine", check_weights=False)
    assert "mine" in loaded.peft_config
    (tmp_path / "a" / finetune.ADAPTER_META).unlink()        # a plain peft folder: shapes still checked
    with pytest.raises(finetune.AdapterMismatchError, match="needs 48 features"):
        finetune.load_adapter(tiny_lm(hidden=48)[0], tmp_path / "a", "mine")
    with pytest.raises(FileNotFoundError, match="not an adapter folder"):
        finetune.load_adapter(tiny_lm()[0], tmp_path, "mine")


def test_oppu_user_adapter_on_top_of_the_merged_global_adapter(tmp_path):
    model, tok = tiny_lm()
    model, _ = finetune.train_lora(model, tok, PAIRS, r=4, steps=5, lr=3e-2, adapter_name="global")
    global_logits = logits_of(model, tok)
    merged = finetune.merge_into_base(model, "global")
    assert not finetune._has_injected_adapters(merged)
    torch.testing.assert_close(logits_of(merged, tok), global_logits, atol=1e-5, rtol=1e-5)
    oppu, log = finetune.train_lora(merged, tok, PAIRS[:2], r=4, steps=5, lr=3e-2, adapter_name="user_1",
                                    min_pairs=2, user=1)
    with finetune.use_adapter(oppu, None):                   # the user adapter off: the global model
        torch.testing.assert_close(logits_of(oppu, tok), global_logits, atol=1e-5, rtol=1e-5)
    store = finetune.AdapterStore(tmp_path)
    store.save(oppu, 1)
    plain, _ = tiny_lm()                                     # the base WITHOUT the global adapter
    with pytest.raises(finetune.AdapterMismatchError, match="merge_into_base"):
        store.activate(plain, 1)


# --------------------------------------------------------------------------- soft prompts
def test_soft_prompts_learn_each_users_own_answer():
    """Two users answer the same question differently; one soft prompt each, trained jointly."""
    model, tok = tiny_lm()
    question = "user : what do you like ? assistant :"
    pairs = pd.DataFrame({"user_id": [10, 10, 20, 20], "prompt": [question] * 4,
                          "target": ["i like tea .", "i like tea .", "i love dogs .", "i love dogs ."]})
    frozen = {name: p.detach().clone() for name, p in model.named_parameters()}
    prefixes, log = finetune.train_soft_prompts(model, tok, pairs, n_virtual=8, steps=60, lr=5e-2, batch_size=4)
    assert np.mean(log.losses[-5:]) < np.mean(log.losses[:5]) - 0.5
    assert log.trainable_params == 2 * prefixes.params_per_user == 2 * 8 * 32
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


def test_soft_prompt_model_scores_batches_exactly():
    model, tok = tiny_lm()
    prefixes = finetune.UserPrefixes([1], torch.randn(3, 32) * 0.1)
    lm = prefixes.for_user(model, 1)
    texts, targets = [p for p, _ in PAIRS], [t for _, t in PAIRS]
    batched = generation.score(lm, tok, texts, targets, batch_size=4, progress=False)["logprob_sum"]
    alone = [generation.score(lm, tok, [p], [t], progress=False)["logprob_sum"][0] for p, t in PAIRS]
    np.testing.assert_allclose(batched.to_numpy(), alone, atol=1e-4)
    plain = generation.score(model, tok, texts, targets, progress=False)["logprob_sum"].to_numpy()
    assert not np.allclose(batched.to_numpy(), plain)                           # the prefix matters
    other = finetune.UserPrefixes([1], torch.randn(3, 32) * 0.1).for_user(model, 1)
    assert cache.fingerprint(lm) != cache.fingerprint(other)         # no cache collision


# --------------------------------------------------------------------------- data and costs
def _characters(n_users=4, dialogues_per_user=2, n_turns=5):
    rows = []
    for u in range(n_users):
        facts = [f"i am user {u} with hobby {h}." for h in range(4)]
        for d in range(dialogues_per_user):
            turns = [(f"partner {u}-{d}-{t} ?", f"reply of user {u} in {d} turn {t} .") for t in range(n_turns)]
            rows.append({"dialogue_id": len(rows), "persona": facts, "turns": turns})
    return pd.DataFrame(rows)


def test_personachat_pairs_use_training_turns_and_the_eval_prompt_format():
    tok = tiny_tokenizer()
    ev = tasks.personachat_eval_set(_characters(), n_users=3, dialogues_per_user=1, seed=0)
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


def test_rating_pairs_label_the_history_and_never_the_held_out_ratings():
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


def test_costs_count_the_adapter_and_extrapolate_linearly(tmp_path):
    model, tok = tiny_lm()
    model, log = finetune.train_lora(model, tok, PAIRS, r=4, target_modules=("q_proj", "v_proj"), steps=2,
                                     adapter_name="u")
    # q: 32 -> 32, v: 32 -> 16 (2 kv heads of 8); LoRA adds r * (in + out) per module and layer
    assert finetune.count_parameters(model, "u") == 2 * (4 * (32 + 32) + 4 * (32 + 16))
    path = finetune.save_adapter(model, "u", tmp_path / "u")
    cost = finetune.adapter_cost(log.trainable_params, log.seconds, finetune.folder_bytes(path), steps=log.steps)
    assert cost["params"] == 896 and cost["bytes"] > 896 * 4 and cost["seconds_per_step"] == log.seconds / 2
    table = finetune.extrapolate_cost(cost)
    assert table["users"].tolist() == [1, 1_000, 1_000_000]
    assert table["params"].tolist() == [896, 896_000, 896_000_000]
    np.testing.assert_allclose(table["train_hours"], log.seconds * table["users"] / 3600)
    assert finetune.model_bytes(model) == 4 * finetune.count_parameters(model)      # float32


# --------------------------------------------------------------------------- the real default LM
def test_lora_on_smollm2_moves_the_rating_read_by_predict_ratings():
    """On SmolLM2-135M (chat template, q/k/v/o names, the real rating prompt): two LoRA steps on
    one rating pair raise the probability of its digit exactly where predict_ratings reads it."""
    from p13n_utils import models

    model, tok = models.load_lm(device="cpu", fresh=True)
    movies = pd.DataFrame({"item_id": [1], "title": ["Heat"], "year": [1995], "genres": ["Action|Crime"]})
    rows = pd.DataFrame({"user_id": [1], "item_id": [1], "rating": [5.0], "timestamp": [0]})
    pairs = finetune.rating_pairs(tok, rows, movies)
    (example,) = finetune.encode_pairs(tok, pairs, append_eos=False)
    assert [t for t in example["labels"] if t != -100] == tok.encode("5", add_special_tokens=False)
    _, before = tasks.predict_ratings(model, tok, pairs["prompt"], cache=False)
    model, log = finetune.train_lora(model, tok, pairs, steps=2, lr=1e-3, batch_size=1, append_eos=False)
    assert log.trainable_params == 30 * 8 * ((576 + 576) * 2 + (576 + 192) * 2)      # r=8 on q, k, v, o
    _, after = tasks.predict_ratings(model, tok, pairs["prompt"], cache=False)
    assert after[0, 4] > before[0, 4] + 0.1                                         # p("5") went up


# --------------------------------------------------------------------------- one adapter per group
def test_train_adapters_one_per_user_with_the_fallback_and_a_store(tmp_path):
    model, tok = tiny_lm()
    pairs = pd.DataFrame(PAIRS * 2, columns=["prompt", "target"]).assign(user_id=[1, 1, 1, 1, 2, 2, 2, 3])
    store = finetune.AdapterStore(tmp_path / "oppu")
    groups = np.array([1, 2, 3, 4])                                   # numpy ids, as pandas gives them
    model, logs, skipped = finetune.train_adapters(model, tok, pairs, groups=groups, min_pairs=2, store=store,
                                                   r=4, steps=3, lr=3e-2, batch_size=2)
    assert sorted(logs) == [1, 2] and all(log.steps == 3 for log in logs.values())
    assert logs[1].n_examples == 4 and logs[2].n_examples == 3
    assert sorted(skipped) == [3, 4]                                   # 1 pair and no pair: fallback
    assert isinstance(skipped[3], finetune.NotEnoughHistoryError) and skipped[3].n_pairs == 1
    assert skipped[4].n_pairs == 0
    assert store.users() == [1, 2] and not finetune._has_injected_adapters(model)   # saved, then unloaded
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
    alone, _ = finetune.train_lora(alone, tok, pairs[pairs["user_id"] == 1], r=4, steps=3, lr=3e-2, batch_size=2,
                                   adapter_name="user_1")
    torch.testing.assert_close(logits_of(alone, tok), one)
    with pytest.raises(TypeError, match="user_id"):
        finetune.train_adapters(model, tok, pairs.drop(columns="user_id"), steps=1)


def test_train_adapters_without_a_store_keeps_them_side_by_side_and_plain_model_removes_them():
    model, tok = tiny_lm()
    before = logits_of(model, tok)
    pairs = pd.DataFrame(PAIRS, columns=["prompt", "target"]).assign(persona=[0, 0, 1, 1])
    peft_model, logs, skipped = finetune.train_adapters(model, tok, pairs, by="persona", prefix="persona",
                                                        r=4, steps=2, lr=3e-2)
    assert sorted(peft_model.peft_config) == ["persona_0", "persona_1"] and not skipped and len(logs) == 2
    with finetune.use_adapter(peft_model, "persona_0"):
        assert not torch.allclose(logits_of(peft_model, tok), before)
    plain = finetune.plain_model(peft_model)
    assert not finetune._has_injected_adapters(plain)
    torch.testing.assert_close(logits_of(plain, tok), before)          # removed, not merged
    assert finetune.plain_model(plain) is plain
    with pytest.raises(ValueError, match="no groups"):
        finetune.train_adapters(plain, tok, pairs.iloc[:0], by="persona", steps=1)
