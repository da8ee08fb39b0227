"""The training engine (p13n_utils.training) on a tiny random Llama: collation, sequence
log-probabilities, the loop, its one config and result type, and the memory check."""

import inspect

import numpy as np
import pandas as pd
import pytest
import torch

from p13n_utils import alignment, finetune, generation, training
from p13n_utils.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- collation
def test_encode_masks_the_prompt_and_appends_eos(tiny_tokenizer, tiny_pairs):
    tok = tiny_tokenizer()
    (example,) = training.encode_pairs(tok, [tiny_pairs[0]])
    prompt_ids = tok(tiny_pairs[0][0])["input_ids"]
    target_ids = tok(tiny_pairs[0][1], add_special_tokens=False)["input_ids"]
    assert example["input_ids"] == prompt_ids + target_ids + [tok.eos_token_id]
    assert example["labels"] == [-100] * len(prompt_ids) + target_ids + [tok.eos_token_id]
    (cut,) = training.encode_pairs(tok, [tiny_pairs[0]], max_length=8, append_eos=False)
    assert cut["input_ids"] == prompt_ids[-(8 - len(target_ids)):] + target_ids     # prompt cut on the left
    frame = pd.DataFrame(tiny_pairs, columns=["prompt", "target"])
    assert training.encode_pairs(tok, frame) == training.encode_pairs(tok, tiny_pairs)
    with pytest.raises(ValueError, match="empty target"):
        training.encode_pairs(tok, [("user : hi", "")])
    with pytest.raises(TypeError, match="tuple of strings"):
        training.encode_pairs(tok, [("only a prompt",)])


def test_collate_pads_right_or_left_with_the_labels_masked(tiny_tokenizer, tiny_pairs):
    tok = tiny_tokenizer()
    examples = training.encode_pairs(tok, tiny_pairs[:2])
    right = training.collate(examples, tok.pad_token_id, "right")
    left = training.collate(examples, tok.pad_token_id, "left")
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
        training.collate(examples, 0, "middle")


def test_pad_id_falls_back_to_eos_and_fails_without_either(tiny_tokenizer):
    tok = tiny_tokenizer()
    assert training.pad_id(tok) == tok.pad_token_id == 0
    tok.pad_token = None
    assert training.pad_id(tok) == tok.eos_token_id == 2
    tok.eos_token = None
    with pytest.raises(ValueError, match="neither a pad nor an eos"):
        training.pad_id(tok)


def test_right_and_left_padding_give_the_logps_of_each_sequence_alone(tiny_lm, tiny_pairs):
    model, tok = tiny_lm()
    examples = training.encode_pairs(tok, tiny_pairs)
    with torch.no_grad():
        alone = torch.stack([training.sequence_logps(model, training.collate([e], 0))[0][0] for e in examples])
        right, n_right = training.sequence_logps(model, training.collate(examples, 0, "right"))
        left, _ = training.sequence_logps(model, training.collate(examples, 0, "left"))
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=0)
    assert n_right.tolist() == [len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for _, t in tiny_pairs]


def test_sequence_logps_agree_with_generation_score(tiny_lm, tiny_pairs):
    """The training objective is the likelihood that the evaluation measures."""
    model, tok = tiny_lm()
    examples = training.encode_pairs(tok, tiny_pairs, append_eos=False)
    with torch.no_grad():
        ours, _ = training.sequence_logps(model, training.collate(examples, 0))
    theirs = generation.score(model, tok, [p for p, _ in tiny_pairs], [t for _, t in tiny_pairs], progress=False)
    np.testing.assert_allclose(ours.numpy(), theirs["logprob_sum"].to_numpy(), atol=1e-4)


# --------------------------------------------------------------------------- the loop, its config and result
def test_batches_are_seeded_shuffles_that_never_mix_two_epochs():
    batches = list(training.batch_indices(5, 2, 6, seed=3))
    assert batches == list(training.batch_indices(5, 2, 6, seed=3))
    assert sorted(batches[0] + batches[1]) != list(range(5))          # 4 of 5: the fifth waits
    assert len(set(batches[0] + batches[1])) == 4                     # no repeat within an epoch
    assert list(training.batch_indices(3, 8, 2, seed=0))[0] in ([0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0],
                                                                  [2, 0, 1], [2, 1, 0])   # all of them
    with pytest.raises(ValueError, match="batch_size"):
        list(training.batch_indices(5, 0, 1, seed=0))


def test_train_loop_fits_a_line_and_logs_every_step():
    torch.manual_seed(0)
    x = torch.randn(32, 1)
    y = 3 * x + 1
    layer = torch.nn.Linear(1, 1)

    def step_loss(indices):
        loss = ((layer(x[indices]) - y[indices]) ** 2).mean()
        return loss, len(indices), {"double": 2 * loss.detach()}

    result = training.train_loop(layer, list(layer.parameters()), step_loss, 32,
                                 TrainConfig(lr=0.1, steps=150, batch_size=8))
    assert result.model is layer and result.steps == 150 and result.n_tokens == 150 * 8
    assert result.trainable_params == 2 and result.seconds > 0
    assert abs(layer.weight.item() - 3) < 0.05 and abs(layer.bias.item() - 1) < 0.05
    np.testing.assert_allclose(result.metrics["double"], 2 * np.array(result.losses), rtol=1e-6)
    assert list(result.frame().columns) == ["step", "loss", "double"]
    again = training.TrainResult.from_log(result.log())
    assert again.losses == result.losses and again.seconds == result.seconds and again.model is None
    with pytest.raises(ValueError, match="steps"):
        training.train_loop(layer, list(layer.parameters()), step_loss, 32, TrainConfig(lr=0.1, steps=0))
    with pytest.raises(ValueError, match="no parameter"):
        training.train_loop(layer, [], step_loss, 32, TrainConfig(lr=0.1))


def test_train_config_is_the_only_config_the_trainers_take():
    """Every trainer takes one TrainConfig (named ``train``) and none of its settings as loose
    keyword arguments, and says it returns a TrainResult."""
    shared = {f.name for f in training.dataclasses.fields(TrainConfig)}
    trainers = [finetune.train_lora, finetune.train_full, finetune.train_soft_prompts, finetune.train_adapters,
                alignment.train_dpo_lora, alignment.train_or_load_dpo_lora]
    for trainer in trainers:
        params = inspect.signature(trainer).parameters
        assert params["train"].annotation in ("TrainConfig", TrainConfig), trainer.__name__
        assert params["train"].default is inspect.Parameter.empty, trainer.__name__
        assert not shared & set(params), (trainer.__name__, shared & set(params))
        assert inspect.signature(trainer).return_annotation in ("TrainResult", training.TrainResult), trainer.__name__
    with pytest.raises(TypeError):
        TrainConfig()                                       # the learning rate has no default
    cfg = TrainConfig(lr=1e-3, steps=5)
    assert cfg.replace(seed=4) == TrainConfig(lr=1e-3, steps=5, seed=4) and cfg.seed == 0
    assert "progress" not in cfg.settings() and cfg.settings()["lr"] == 1e-3


def test_too_little_history_is_its_own_error(tiny_tokenizer, tiny_pairs):
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="empty") as empty:
        training.encode_training_pairs(tok, [], TrainConfig(lr=1e-3), user=7)
    assert not isinstance(empty.value, training.NotEnoughHistoryError)
    with pytest.raises(training.NotEnoughHistoryError, match="user 7 has 2 training pairs") as few:
        training.encode_training_pairs(tok, tiny_pairs[:2], TrainConfig(lr=1e-3, min_pairs=3), user=7)
    assert (few.value.user, few.value.n_pairs, few.value.min_pairs) == (7, 2, 3)
    assert len(training.encode_training_pairs(tok, tiny_pairs, TrainConfig(lr=1e-3, min_pairs=4))) == 4


# --------------------------------------------------------------------------- does it fit in memory?
def test_training_memory_counts_weights_gradients_and_adam_moments():
    layer = torch.nn.Linear(10, 10)                        # 110 float32 parameters: 440 bytes
    assert training.training_memory_bytes(layer) == 4 * 440
    assert training.training_memory_bytes(layer, optimizer="sgd") == 2 * 440
    layer.bias.requires_grad_(False)
    assert training.training_memory_bytes(layer, trainable_only=True) == 440 + 3 * 400
    with pytest.raises(ValueError, match="unknown optimizer"):
        training.training_memory_bytes(layer, optimizer="lion")


def test_available_memory_reads_the_cgroup_limit(tmp_path, monkeypatch):
    monkeypatch.delenv("P13N_MEMORY_LIMIT_GB", raising=False)
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("2000000000\n")
    (v2 / "memory.current").write_text("500000000\n")
    assert training.available_memory_bytes(v2) == 1_500_000_000
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("3000000000\n")
    (v1 / "memory.usage_in_bytes").write_text("1000000000\n")
    assert training.available_memory_bytes(tmp_path / "v1") == 2_000_000_000
    unlimited = tmp_path / "unlimited"
    unlimited.mkdir()
    (unlimited / "memory.max").write_text("max\n")
    import psutil

    free = psutil.virtual_memory().available
    assert abs(training.available_memory_bytes(unlimited) - free) < 0.2 * free     # the machine's
    assert abs(training.available_memory_bytes(tmp_path / "none") - free) < 0.2 * free


def test_memory_limit_override_makes_full_fine_tuning_not_fit(monkeypatch):
    import psutil

    monkeypatch.setenv("P13N_MEMORY_LIMIT_GB", "2")
    rss = psutil.Process().memory_info().rss
    available = training.available_memory_bytes()
    assert 0 <= available <= max(0.0, 2e9 - rss) + 50e6  # the limit minus what this process holds
    model = torch.nn.Linear(1000, 135_000, bias=False, device="meta")   # 135M parameters, as SmolLM2-135M
    assert training.training_memory_bytes(model) > 2e9 > available   # 4 x 540 MB: skipped on Binder
    monkeypatch.setenv("P13N_MEMORY_LIMIT_GB", "1000")
    assert training.training_memory_bytes(model) < training.available_memory_bytes()
