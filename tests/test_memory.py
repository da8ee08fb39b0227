"""The memory decision every notebook shares (p13n_utils.memory): run a part, shrink it, or skip it
with a printed reason when the memory available is below what it needs."""

import numpy as np
import pytest

from p13n_utils import memory


def test_fits_runs_a_part_that_fits_and_explains_one_that_does_not():
    assert memory.fits(1.0e9, "EASE", "skipped", available=2.0e9) == (True, "")
    assert memory.fits(2.0e9, "EASE", "skipped", available=2.0e9) == (True, "")  # exactly the limit fits
    ok, reason = memory.fits(2.2e9, "full fine-tuning", "skipped; every other rung still runs", available=1.3e9)
    assert not ok
    assert reason == "full fine-tuning needs 2.2 GB, 1.3 GB are available: skipped; every other rung still runs"
    with pytest.raises(ValueError, match="need_bytes"):
        memory.fits(-1, "x", "y", available=1e9)


def test_fits_reads_the_memory_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv("P13N_MEMORY_LIMIT_GB", "2")
    ok, reason = memory.fits(2.5e9, "the LM section", "skipped")
    assert not ok and "needs 2.5 GB" in reason and reason.endswith(": skipped")
    monkeypatch.setenv("P13N_MEMORY_LIMIT_GB", "1000")   # a large machine: the part runs as before
    assert memory.fits(2.5e9, "the LM section", "skipped") == (True, "")


def test_fitting_batch_halves_the_batch_until_it_fits():
    assert memory.fitting_batch(16, 100e6, "scoring", available=2e9) == (16, "")   # 1.6 GB fits
    batch, reason = memory.fitting_batch(16, 300e6, "scoring", available=2e9)        # 4.8 GB does not
    assert batch == 4                                                                 # 1.2 GB; 8 would be 2.4 GB
    assert reason == "scoring at batch size 16 needs 4.8 GB, 2.0 GB are available: batch size 4 instead"
    assert memory.fitting_batch(16, 5e9, "scoring", available=2e9)[0] == 1            # never below one
    with pytest.raises(ValueError, match="batch_size"):
        memory.fitting_batch(0, 1.0, "scoring", available=1e9)


def test_estimates_count_the_bytes_of_the_arrays():
    assert memory.dense_bytes(3, 4) == np.zeros((3, 4), np.float32).nbytes
    assert memory.dense_bytes(10, 10, dtype=np.float64, copies=3) == 3 * np.zeros((10, 10)).nbytes
    assert memory.dense_bytes(9742, 9742) > 379e6          # one float32 item-item matrix of MovieLens latest-small
    assert memory.logits_bytes(2, 5, 7, copies=1) == np.zeros((2, 5, 7), np.float32).nbytes
    assert memory.logits_bytes(2, 5, 7) == 3 * memory.logits_bytes(2, 5, 7, copies=1)


def test_activation_estimate_grows_with_tokens_and_matches_smollm2_scale():
    from types import SimpleNamespace

    smollm2 = SimpleNamespace(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, vocab_size=49152)
    per_token = memory.activation_bytes(smollm2, 1)
    assert 1.5e6 < per_token < 4e6                      # a few MB a token (measured about 2.3 MB)
    assert memory.activation_bytes(smollm2, 660) == 660 * per_token


def test_release_runs_anywhere():
    memory.release()  # glibc: trims the C heap; elsewhere: only a garbage collection


@pytest.mark.usefixtures("one_thread")
def test_training_short_of_memory_checkpoints_with_a_printed_reason_and_the_same_losses(
        tiny_lm, tiny_pairs, monkeypatch, capsys):
    from p13n_utils import alignment, finetune, training
    from p13n_utils.training import TrainConfig

    train = TrainConfig(lr=3e-2, steps=3, batch_size=2, seed=1)
    monkeypatch.setenv("P13N_MEMORY_LIMIT_GB", "1000")
    model, tok = tiny_lm()
    roomy = finetune.train_lora(model, tok, tiny_pairs, train, "u", r=2).losses
    assert "checkpointing" not in capsys.readouterr().out      # enough memory: nothing changes
    monkeypatch.setenv("P13N_MEMORY_LIMIT_GB", "0.001")          # less than this process already holds
    monkeypatch.setattr(training, "_REPORTED", set())            # the reason is printed once per kind of run
    model, tok = tiny_lm()
    result = finetune.train_lora(model, tok, tiny_pairs, train, "u", r=2)
    out = capsys.readouterr().out
    assert "LoRA u: backpropagation through" in out and "GB are available" in out
    assert "gradient checkpointing" in out and "(so are the later LoRA runs short of memory)" in out
    np.testing.assert_allclose(result.losses, roomy, rtol=1e-5)  # the same training
    base = result.model.get_base_model()
    on = (base.is_activation_checkpointing if hasattr(base, "is_activation_checkpointing")
          else base.is_gradient_checkpointing)
    assert not on                                                # switched off again afterwards
    pairs = [("user : do you like tea ?", "yes", "no"), ("user : hi", "yes i like tea", "no")]
    short = alignment.train_dpo_lora(tiny_lm()[0], tok, pairs, train.replace(steps=2), adapter_name="d", r=2)
    assert "DPO d: backpropagation through" in capsys.readouterr().out
    alignment.train_dpo_lora(tiny_lm()[0], tok, pairs, train.replace(steps=1), adapter_name="e", r=2)
    assert capsys.readouterr().out == ""                         # said once
    monkeypatch.setenv("P13N_MEMORY_LIMIT_GB", "1000")
    full = alignment.train_dpo_lora(tiny_lm()[0], tok, pairs, train.replace(steps=2), adapter_name="d", r=2)
    np.testing.assert_allclose(short.losses, full.losses, rtol=1e-5)


def test_target_span_keeps_every_target_position_and_the_one_before():
    import torch

    from p13n_utils.training import _target_span

    labels = torch.tensor([[-100, -100, -100, 5, 6, -100],      # right-padded: targets mid-sequence
                           [-100, -100, -100, -100, 7, 8]])
    assert _target_span(labels) == 4          # positions 2..5: 2 predicts the first target, at 3
    assert _target_span(torch.tensor([[-100, 4, 5]])) == 0     # the whole sequence: keep everything
    assert _target_span(torch.full((2, 3), -100)) == 0


@pytest.mark.usefixtures("one_thread")
def test_preference_scoring_short_of_memory_keeps_only_target_logits(tiny_lm, monkeypatch, capsys):
    from p13n_utils import alignment, training

    pairs = [("user : do you like tea ?", "yes", "no"), ("user : hi", "yes i like tea", "no")]
    model, tok = tiny_lm()
    monkeypatch.setenv("P13N_MEMORY_LIMIT_GB", "1000")
    roomy = alignment.preference_logps(model, tok, pairs, batch_size=2)
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("P13N_MEMORY_LIMIT_GB", "0.001")
    monkeypatch.setattr(training, "_REPORTED", set())
    short = alignment.preference_logps(model, tok, pairs, batch_size=2)
    assert "preference_logps: logits at every position" in capsys.readouterr().out
    np.testing.assert_allclose(short.to_numpy(), roomy.to_numpy(), rtol=1e-5)
