"""Checks of notebook 06's exercises (p13n_utils.exercises.nb06) on a tiny random Llama: a right
answer passes, a wrong one raises ExerciseFailed with its hint, None is "not attempted"."""

import pytest
import torch

from p13n_utils import adapters, lesson, training
from p13n_utils.exercises import nb06


def test_lora_param_count_matches_what_peft_trains(tiny_lm):
    model, _ = tiny_lm()                     # 4 heads, 2 key/value heads: k and v are narrower than q
    for r, modules in ((4, ("q_proj", "k_proj", "v_proj", "o_proj")), (2, ("q_proj", "v_proj", "down_proj"))):
        peft_model = adapters.add_lora(tiny_lm()[0], "x", r=r, alpha=2 * r, target_modules=modules)
        assert nb06.lora_param_count(model.config, r, modules) == adapters.count_parameters(peft_model, "x")


def test_check_1_right_wrong_and_not_attempted(tiny_lm, capsys):
    config = tiny_lm()[0].config
    modules = ("q_proj", "k_proj", "v_proj", "o_proj")
    right = adapters.count_parameters(adapters.add_lora(tiny_lm()[0], "x", r=4, target_modules=modules), "x")
    assert nb06.check_1(right, config, 4, modules) is True
    naive = 4 * 2 * config.hidden_size * len(modules) * config.num_hidden_layers  # every layer hidden -> hidden
    assert naive != right
    with pytest.raises(lesson.ExerciseFailed, match="num_key_value_heads"):
        nb06.check_1(naive, config, 4, modules)
    assert nb06.check_1(None, config, 4, modules) is None
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(KeyError, match="unknown target"):
        nb06.lora_param_count(config, 4, ("qkv",))


def _batch(tiny_lm, pairs):
    model, tok = tiny_lm()
    examples = training.encode_pairs(tok, pairs[:3])
    return model, training.collate(examples, tok.pad_token_id)


def test_check_2_the_loss_on_target_tokens_only(tiny_lm, tiny_pairs):
    model, batch = _batch(tiny_lm, tiny_pairs)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"]).logits
    labels = batch["labels"][:, 1:]
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    mask = labels != training.IGNORE_INDEX
    token_logp = logp.gather(2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    right = float(-(token_logp * mask).sum() / mask.sum())
    assert nb06.check_2(right, model, batch) is True
    every_position = float(-(token_logp * mask).sum() / labels.numel())   # divides by the prompt too
    with pytest.raises(lesson.ExerciseFailed, match="-100"):
        nb06.check_2(every_position, model, batch)
    assert nb06.check_2(None, model, batch) is None


def test_check_3_merging_by_hand_and_the_layer_it_gives(tiny_lm):
    model = adapters.add_lora(tiny_lm()[0], "u", r=4, alpha=8)
    layer = nb06.lora_layer(model)
    torch.nn.init.normal_(layer.lora_B["u"].weight, std=0.1)       # as if trained (B starts at zero)
    a, b = layer.lora_A["u"].weight, layer.lora_B["u"].weight
    merged = (layer.base_layer.weight + 2.0 * b @ a).detach()      # alpha / r = 8 / 4
    assert nb06.check_3(merged, layer, "u") is True
    x = torch.randn(3, merged.shape[1])
    torch.testing.assert_close(x @ merged.T, layer(x).detach(), rtol=1e-4, atol=1e-5)  # what the check means
    with pytest.raises(lesson.ExerciseFailed, match="scaling"):
        nb06.check_3((layer.base_layer.weight + b @ a).detach(), layer, "u")   # the scale forgotten
    with pytest.raises(lesson.ExerciseFailed):
        nb06.check_3(layer.base_layer.weight.detach().T, layer, "u")           # wrong shape
    assert nb06.check_3(None, layer, "u") is None
    with pytest.raises(KeyError, match="add an adapter"):
        nb06.lora_layer(tiny_lm()[0])
