"""The adapter lifecycle (p13n_utils.adapters) on a tiny random Llama: switching, the store,
atomic saves, mismatched bases, OPPU's merge, merging adapters (Personalized Soups), costs."""

from pathlib import Path

import numpy as np
import pytest
import torch

from p13n_utils import adapters, config, finetune, generation
from p13n_utils.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = TrainConfig(lr=3e-2, steps=5)


def test_a_trained_adapter_changes_the_scored_log_probabilities(tiny_lm, tiny_pairs):
    """What the notebooks measure moves: generation.score (the scorer of every task) gives the
    trained targets a higher log-probability with the adapter on, and the base's again with it off."""
    model, tok = tiny_lm()
    prompts, targets = [p for p, _ in tiny_pairs], [t for _, t in tiny_pairs]
    before = generation.score(model, tok, prompts, targets, progress=False)["logprob_sum"].to_numpy()
    model = finetune.train_lora(model, tok, tiny_pairs, FAST.replace(steps=10), "global", r=4).model
    after = generation.score(model, tok, prompts, targets, progress=False)["logprob_sum"].to_numpy()
    assert (after > before + 0.5).all()
    with adapters.use_adapter(model, None):
        off = generation.score(model, tok, prompts, targets, progress=False)["logprob_sum"].to_numpy()
    np.testing.assert_allclose(off, before, atol=1e-5)


def test_several_adapters_switch_without_reloading_the_base(tiny_lm, tiny_pairs, logits_of):
    model, tok = tiny_lm()
    model = finetune.train_lora(model, tok, tiny_pairs[:2], FAST, "user_1", r=4).model
    model = finetune.train_lora(model, tok, tiny_pairs[2:], FAST, "user_2", r=4).model
    assert model.active_adapter == "user_2"
    with adapters.use_adapter(model, "user_1"):
        one = logits_of(model, tok)
    assert model.active_adapter == "user_2"                              # restored
    two = logits_of(model, tok)
    assert not torch.allclose(one, two)
    with pytest.raises(ValueError, match="already has an adapter"):
        finetune.train_lora(model, tok, tiny_pairs, FAST.replace(steps=1), "user_1")
    with pytest.raises(KeyError, match="user_1"):
        with adapters.use_adapter(model, "user_3"):
            pass
    base = model.get_base_model()
    with pytest.raises(ValueError, match="pass the peft model"):
        finetune.train_lora(base, tok, tiny_pairs, FAST.replace(steps=1), "other")


def test_adapter_store_round_trip_and_unknown_user(tmp_path, tiny_lm, tiny_pairs, logits_of):
    model, tok = tiny_lm()
    model = finetune.train_lora(model, tok, tiny_pairs[:2], FAST.replace(steps=4), "user_1", r=4).model
    model = finetune.train_lora(model, tok, tiny_pairs[2:], FAST.replace(steps=4), "user_2", r=4).model
    expected = {}
    for user in (1, 2):
        with adapters.use_adapter(model, f"user_{user}"):
            expected[user] = logits_of(model, tok)
    store = adapters.AdapterStore(tmp_path / "adapters")
    assert store.users() == []
    for user in (1, 2):
        store.save(model, user)
    assert store.users() == [1, 2]
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == ["user-1", "user-2"]   # no temp leftovers
    assert store.bytes_on_disk(1) > 4 * adapters.count_parameters(model, "user_1")

    fresh, _ = tiny_lm()                                   # the same base weights, no adapter
    fresh = store.activate(fresh, 1)
    torch.testing.assert_close(logits_of(fresh, tok), expected[1])
    fresh = store.activate(fresh, 2)                        # switch: the base is not reloaded
    torch.testing.assert_close(logits_of(fresh, tok), expected[2])
    fresh = store.activate(fresh, 1)                        # already loaded: only set_adapter
    torch.testing.assert_close(logits_of(fresh, tok), expected[1])
    with pytest.raises(KeyError, match=r"user 3 .*users with an adapter: \[1, 2\]"):
        store.activate(fresh, 3)


def test_save_is_atomic(tmp_path, monkeypatch, tiny_lm, tiny_pairs):
    model, tok = tiny_lm()
    model = finetune.train_lora(model, tok, tiny_pairs, FAST.replace(steps=2), "user_1", r=4).model
    target = tmp_path / "user-1"
    adapters.save_adapter(model, "user_1", target, extra={"user": 1})
    first = (target / "adapter_model.safetensors").read_bytes()
    assert oct(target.stat().st_mode & 0o777) == "0o755"

    def broken(directory, **kwargs):
        (tmp_path / "marker").write_text("called")
        path = Path(directory) / "user_1"
        path.mkdir(parents=True)
        (path / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(model, "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        adapters.save_adapter(model, "user_1", target)
    assert (tmp_path / "marker").is_file()
    assert (target / "adapter_model.safetensors").read_bytes() == first        # the old version intact
    with pytest.raises(OSError, match="disk full"):
        adapters.save_adapter(model, "user_1", tmp_path / "user-2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker", "user-1"]   # nothing half-written
    with pytest.raises(KeyError, match="user_9"):
        adapters.save_adapter(model, "user_9", tmp_path / "user-9")


def test_atomic_folder_replaces_only_on_success(tmp_path):
    target = tmp_path / "folder"
    with config.atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with config.atomic_folder(target) as tmp:
            (tmp / "a.txt").write_text("two")
            raise RuntimeError("crash")
    assert (target / "a.txt").read_text() == "one"
    with config.atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("three")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]              # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_mismatched_base_model_and_adapter(tmp_path, tiny_lm, tiny_pairs):
    model, tok = tiny_lm(seed=0)
    model = finetune.train_lora(model, tok, tiny_pairs, FAST.replace(steps=2), "mine", r=4).model
    adapters.save_adapter(model, "mine", tmp_path / "a")
    wider, _ = tiny_lm(hidden=48)
    with pytest.raises(adapters.AdapterMismatchError, match="hidden_size=32"):
        adapters.load_adapter(wider, tmp_path / "a", "mine")
    other_weights, _ = tiny_lm(seed=1)
    with pytest.raises(adapters.AdapterMismatchError, match="other weights"):
        adapters.load_adapter(other_weights, tmp_path / "a", "mine")
    loaded = adapters.load_adapter(other_weights, tmp_path / "a", "mine", check_weights=False)
    assert "mine" in loaded.peft_config
    (tmp_path / "a" / adapters.ADAPTER_META).unlink()        # a plain peft folder: shapes still checked
    with pytest.raises(adapters.AdapterMismatchError, match="needs 48 features"):
        adapters.load_adapter(tiny_lm(hidden=48)[0], tmp_path / "a", "mine")
    with pytest.raises(FileNotFoundError, match="not an adapter folder"):
        adapters.load_adapter(tiny_lm()[0], tmp_path, "mine")


def test_oppu_user_adapter_on_top_of_the_merged_global_adapter(tmp_path, tiny_lm, tiny_pairs, logits_of):
    model, tok = tiny_lm()
    model = finetune.train_lora(model, tok, tiny_pairs, FAST, "global", r=4).model
    global_logits = logits_of(model, tok)
    merged = adapters.merge_into_base(model, "global")
    assert not adapters.has_injected_adapters(merged)
    torch.testing.assert_close(logits_of(merged, tok), global_logits, atol=1e-5, rtol=1e-5)
    oppu = finetune.train_lora(merged, tok, tiny_pairs[:2], FAST.replace(min_pairs=2), "user_1", r=4, user=1).model
    with adapters.use_adapter(oppu, None):                   # the user adapter off: the global model
        torch.testing.assert_close(logits_of(oppu, tok), global_logits, atol=1e-5, rtol=1e-5)
    store = adapters.AdapterStore(tmp_path)
    store.save(oppu, 1)
    plain, _ = tiny_lm()                                     # the base WITHOUT the global adapter
    with pytest.raises(adapters.AdapterMismatchError, match="merge_into_base"):
        store.activate(plain, 1)


def test_costs_count_the_adapter_and_extrapolate_linearly(tmp_path, tiny_lm, tiny_pairs):
    model, tok = tiny_lm()
    result = finetune.train_lora(model, tok, tiny_pairs, FAST.replace(steps=2), "u", r=4,
                                 target_modules=("q_proj", "v_proj"))
    model = result.model
    # q: 32 -> 32, v: 32 -> 16 (2 kv heads of 8); LoRA adds r * (in + out) per module and layer
    assert adapters.count_parameters(model, "u") == 2 * (4 * (32 + 32) + 4 * (32 + 16))
    path = adapters.save_adapter(model, "u", tmp_path / "u")
    cost = adapters.adapter_cost(result.trainable_params, result.seconds, adapters.folder_bytes(path),
                                 steps=result.steps)
    assert cost["params"] == 896 and cost["bytes"] > 896 * 4 and cost["seconds_per_step"] == result.seconds / 2
    table = adapters.extrapolate_cost(cost)
    assert table["users"].tolist() == [1, 1_000, 1_000_000]
    assert table["params"].tolist() == [896, 896_000, 896_000_000]
    np.testing.assert_allclose(table["train_hours"], result.seconds * table["users"] / 3600)
    assert adapters.model_bytes(model) == 4 * adapters.count_parameters(model)      # float32


# --------------------------------------------------------------------------- merging (Personalized Soups)
def _two_adapters(tiny_lm, pairs):
    model, tok = tiny_lm()
    model = finetune.train_lora(model, tok, pairs[:2], FAST.replace(steps=3), "persona_0", r=4).model
    model = finetune.train_lora(model, tok, pairs[2:], FAST.replace(steps=3, seed=1), "persona_1", r=4).model
    return model, tok


def _delta(model, adapter):
    layer = model.get_base_model().model.layers[0].self_attn.q_proj
    return layer.get_delta_weight(adapter).detach()


@pytest.mark.parametrize("combination_type", ["cat", "linear"])
def test_merging_with_weights_one_zero_reproduces_the_first_adapter(combination_type, tiny_lm, tiny_pairs,
                                                                     logits_of):
    model, tok = _two_adapters(tiny_lm, tiny_pairs)
    with adapters.use_adapter(model, "persona_0"):
        first = logits_of(model, tok)
    adapters.merge_adapters(model, ["persona_0", "persona_1"], [1.0, 0.0], "soup", combination_type)
    assert model.active_adapter == "soup"
    torch.testing.assert_close(logits_of(model, tok), first, atol=1e-5, rtol=1e-5)


def test_cat_merging_is_the_exact_weighted_sum_and_linear_is_not(tiny_lm, tiny_pairs):
    model, tok = _two_adapters(tiny_lm, tiny_pairs)
    expected = 0.3 * _delta(model, "persona_0") + 0.7 * _delta(model, "persona_1")
    adapters.merge_adapters(model, ["persona_0", "persona_1"], [0.3, 0.7], "soup")
    torch.testing.assert_close(_delta(model, "soup"), expected, atol=1e-6, rtol=1e-5)
    adapters.merge_adapters(model, ["persona_0", "persona_1"], [0.3, 0.7], "soup_linear", "linear")
    assert not torch.allclose(_delta(model, "soup_linear"), expected, atol=1e-4)
    # the same name again replaces the soup (a sweep over weights)
    adapters.merge_adapters(model, ["persona_0", "persona_1"], [1.0, 0.0], "soup")
    torch.testing.assert_close(_delta(model, "soup"), _delta(model, "persona_0"), atol=1e-6, rtol=1e-5)
    with pytest.raises(KeyError, match="persona_7"):
        adapters.merge_adapters(model, ["persona_0", "persona_7"], [0.5, 0.5], "x")
    with pytest.raises(ValueError, match="one weight per adapter"):
        adapters.merge_adapters(model, ["persona_0", "persona_1"], [1.0], "x")
