"""Membership inference (p13n_utils.membership), DP-SGD (p13n_utils.dp) and the privacy lab
(p13n_utils.privacy) on tiny random Llamas and synthetic users."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from p13n_utils import adapters, config, dp, finetune, generation, membership, privacy, training
from p13n_utils.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

NOUNS = "cat cats dog dogs mat tea coffee movies music books".split()
VERBS = "like likes love hate sat".split()
WORDS = NOUNS + VERBS + "the a on nice yes no hello hi my name is about me".split()


def synthetic_rows(n_users=6, n_turns=8, seed=0):
    """PersonaChat-like rows: each turn's reply is a random sentence in the tiny vocabulary, so
    a model can only predict it by having seen it."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for t in range(n_turns):
            reply = " ".join(["i", *rng.choice(WORDS, size=6), "."])
            rows.append({"dialogue_id": u * 100 + t // 4, "user_id": u, "turn": t, "persona": ["i am nice ."],
                         "history": [], "partner": " ".join(["what", *rng.choice(WORDS, size=3), "?"]),
                         "reply": reply})
    return pd.DataFrame(rows)


def tiny_chat_tokenizer(tok):
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}assistant :{% endif %}")
    return tok


# --------------------------------------------------------------------------- membership
def test_auc_by_hand():
    assert membership.auc([3, 2], [1, 0]) == 1.0
    assert membership.auc([0], [1]) == 0.0
    assert membership.auc([1, 1], [1, 1]) == 0.5
    assert membership.auc([2, 0], [1]) == 0.5          # one pair above, one below
    with pytest.raises(ValueError, match="members and non-members"):
        membership.auc([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        membership.auc([float("nan")], [1.0])


def test_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.5, 1, 30), rng.normal(0, 1, 40)
    pos[:5] = neg[:5]                                   # some ties
    expected = roc_auc_score(np.r_[np.ones(30), np.zeros(40)], np.r_[pos, neg])
    assert membership.auc(pos, neg) == pytest.approx(expected)


def test_split_members_is_balanced_per_user_and_rejects_short_histories():
    rows = synthetic_rows(n_users=3, n_turns=6)
    items = membership.split_members(rows, 2, seed=1)
    assert items.groupby("user_id")["member"].agg(["sum", "size"]).values.tolist() == [[2, 4]] * 3
    assert not items.duplicated(["user_id", "turn"]).any()
    with pytest.raises(ValueError, match=r"users \[0, 1, 2\] have fewer"):
        membership.split_members(rows, 4)
    one_short = pd.concat([rows, rows.iloc[:1].assign(user_id=9)])
    with pytest.raises(ValueError, match=r"users \[9\]"):
        membership.split_members(one_short, 2)
    with pytest.raises(ValueError, match="no user has any history"):
        membership.split_members(rows.iloc[:0], 1)
    with pytest.raises(ValueError, match="at least one member"):
        membership.split_members(rows, 0)


def test_attack_inputs_must_match():
    with pytest.raises(ValueError, match="same items"):
        membership.attack_scores([1.0, 2.0], [1.0])
    scores = membership.attack_scores([1.0, 3.0], [2.0, 2.0])
    assert scores["loss"].tolist() == [-1.0, -3.0] and scores["calibrated"].tolist() == [1.0, -1.0]
    frame = pd.DataFrame({"user_id": [0, 0, 1, 1], "member": [True, False, True, True], "loss": [1, 0, 1, 2]})
    with pytest.raises(ValueError, match="user 1 has 2 members and 0 non-members"):
        membership.per_user_auc(frame, "loss")


def _score(model, tok, items):
    pairs = finetune.personachat_pairs(tok, items, n_history=0)
    return generation.score(model, tok, pairs["prompt"].tolist(), pairs["target"].tolist(), progress=False)["nll_mean"]


def test_attack_is_chance_on_an_unseen_model(tiny_lm):
    model, tok = tiny_lm()
    tok = tiny_chat_tokenizer(tok)
    items = membership.split_members(synthetic_rows(n_users=30, n_turns=8), 4, seed=0)
    reference = _score(model, tok, items)
    # a model that never saw the members: fitted hard on *other* sentences of the same kind
    other = membership.split_members(synthetic_rows(n_users=6, n_turns=8, seed=99), 4)
    fitted = finetune.train_full(model, tok, finetune.personachat_pairs(tok, other[other["member"]], n_history=0),
                                 TrainConfig(lr=1e-2, steps=60, batch_size=12)).model
    unseen = items.assign(**membership.attack_scores(_score(fitted, tok, items), reference))
    chance = membership.auc_summary(unseen).set_index("attack")
    for attack in membership.ATTACKS:
        # 30 users of 4 + 4 items: the mean of 30 per-user AUCs has a standard error of about 0.04
        assert abs(chance.loc[attack, "auc"] - 0.5) < 0.12, chance


def test_attack_is_high_on_an_overfitted_model(tiny_lm):
    model, tok = tiny_lm()
    tok = tiny_chat_tokenizer(tok)
    items = membership.split_members(synthetic_rows(n_users=6, n_turns=8), 4, seed=0)
    reference = _score(model, tok, items)
    fitted = finetune.train_full(model, tok, finetune.personachat_pairs(tok, items[items["member"]], n_history=0),
                                 TrainConfig(lr=1e-2, steps=60, batch_size=12)).model       # 30 epochs
    seen = items.assign(**membership.attack_scores(_score(fitted, tok, items), reference))
    high = membership.auc_summary(seen).set_index("attack")
    for attack in membership.ATTACKS:
        assert high.loc[attack, "auc"] > 0.9 and high.loc[attack, "lower"] > 0.8, high
    assert membership.per_user_auc(seen, "loss").size == 6


# --------------------------------------------------------------------------- DP-SGD
def _lora_examples(tiny_lm, tiny_pairs):
    model, tok = tiny_lm()
    model = adapters.add_lora(model, "dp", r=4, alpha=8)
    params = adapters.adapter_params(model, "dp")
    with torch.no_grad():                   # B = 0 at initialisation makes A's gradient 0: move off it
        for p in params:
            p.add_(0.05 * torch.randn_like(p))
    return model, tok, params, training.encode_pairs(tok, tiny_pairs)


def test_per_example_clipping_matches_opacus(tiny_lm, tiny_pairs):
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    model, tok, params, examples = _lora_examples(tiny_lm, tiny_pairs)
    model.train()
    grads, losses = dp.per_example_grads(model, params, examples)
    norms = torch.stack([g.reshape(len(examples), -1).norm(dim=1) for g in grads], 1).norm(dim=1)
    clip = float(norms.median())            # some examples clipped, some not
    ours, our_norms = dp.clip_and_noise(grads, clip, 0.0)

    gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum")
    optimizer = DPOptimizer(torch.optim.SGD(params, lr=0.0), noise_multiplier=0.0, max_grad_norm=clip,
                            expected_batch_size=len(examples))
    batch = training.collate(examples, training.pad_id(tok))
    logits = gsm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 position_ids=batch["position_ids"], use_cache=False).logits
    labels = batch["labels"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=-100,
                                            reduction="none")
    per_example = nll.sum(1) / (labels != -100).sum(1)
    assert torch.allclose(per_example.detach(), losses, atol=1e-5)
    with warnings.catch_warnings():       # opacus's hooks on a model whose inputs need no gradient
        warnings.simplefilter("ignore", UserWarning)
        per_example.sum().backward()
    for p, g in zip(params, grads):         # opacus's per-sample gradients equal ours
        assert torch.allclose(p.grad_sample, g, atol=1e-6, rtol=1e-4)
    assert optimizer.pre_step()             # clip, (no) noise, average: into p.grad
    for p, g in zip(params, ours):
        assert torch.allclose(p.grad, g, atol=1e-6, rtol=1e-4)
    assert (our_norms > clip).any() and (our_norms <= clip).any()
    gsm._close()


def test_clip_and_noise_by_hand():
    g = [torch.tensor([[3.0, 4.0], [0.3, 0.4]]), torch.zeros(2, 1)]          # norms 5 and 0.5
    noisy, norms = dp.clip_and_noise(g, 1.0, 0.0)
    assert norms.tolist() == pytest.approx([5.0, 0.5])
    assert noisy[0].tolist() == pytest.approx([(0.6 + 0.3) / 2, (0.8 + 0.4) / 2], rel=1e-5)
    big = [torch.zeros(4, 20000)]
    noisy, _ = dp.clip_and_noise(big, 2.0, 1.5, torch.Generator().manual_seed(0))
    assert noisy[0].std().item() == pytest.approx(1.5 * 2.0 / 4, rel=0.03)     # sigma C / B
    with pytest.raises(ValueError, match="max_grad_norm > 0"):
        dp.clip_and_noise(g, 0.0, 1.0)


@pytest.mark.parametrize("epsilon", [0, -1.0, math.inf, float("nan")])
def test_bad_budgets_are_refused(epsilon, tiny_lm, tiny_pairs):
    with pytest.raises(ValueError, match="epsilon must be a finite number > 0"):
        dp.noise_for_epsilon(epsilon, 1e-3, 1.0, 10)
    model, tok = tiny_lm()
    with pytest.raises(ValueError, match="epsilon"):
        dp.train_lora_dp(model, tok, tiny_pairs, TrainConfig(lr=1e-2, steps=2), "x", epsilon, 1e-3)
    assert not adapters.is_peft(model)      # refused before touching the model
    with pytest.raises(ValueError, match="delta"):
        dp.check_budget(1.0, 0.0)
    with pytest.raises(ValueError, match="epsilon"):
        privacy.lab_settings(config.get_sizes("smoke"), epsilons=(epsilon,))


def test_accountant_round_trip():
    sigmas = [dp.noise_for_epsilon(eps, 1e-3, 1.0, 6) for eps in (1.0, 8.0)]
    assert sigmas[0] > sigmas[1] > 0
    for eps, sigma in zip((1.0, 8.0), sigmas):
        spent = dp.epsilon_spent(sigma, 1.0, 6, 1e-3)
        assert spent <= eps * 1.01 and spent > 0.9 * eps
    assert dp.epsilon_spent(0.0, 1.0, 6, 1e-3) == math.inf


def test_train_lora_dp_trains_privately(tiny_lm, tiny_pairs):
    model, tok = tiny_lm()
    result = dp.train_lora_dp(model, tok, tiny_pairs, TrainConfig(lr=1e-2, steps=5, batch_size=4), "dp",
                              epsilon=8.0, delta=1e-3, max_grad_norm=0.5)
    assert result.privacy["sample_rate"] == 1.0 and result.privacy["epsilon"] <= 8.0 * 1.01
    assert result.privacy["noise_multiplier"] > 0 and len(result.metrics["clipped"]) == 5
    b = [p for n, p in result.model.named_parameters() if "lora_B.dp" in n]
    assert any(p.abs().sum() > 0 for p in b)         # the adapter moved
    assert all(np.isfinite(result.losses))


# --------------------------------------------------------------------------- the lab
def test_privacy_lab_end_to_end_on_a_tiny_model(tiny_lm, monkeypatch):
    from p13n_utils import results

    monkeypatch.delenv("P13N_RESULTS", raising=False)
    model, tok = tiny_lm()
    tok = tiny_chat_tokenizer(tok)
    cfg = config.get_sizes("smoke")
    lab = privacy.privacy_lab(cfg, model, tok, rows=synthetic_rows(n_users=3, n_turns=6), n_members=3,
                              user_steps=3, shared_steps=3, epsilons=(2.0, 50.0), lr=1e-2, lora_r=4)
    settings = ["base LM", "RAG (members in the index)", "shared adapter", "per-user adapter",
                "per-user adapter, DP eps=2", "per-user adapter, DP eps=50"]
    assert lab.auc["setting"].unique().tolist() == settings
    assert set(lab.auc["attack"]) == set(membership.ATTACKS) and (lab.auc["n_users"] == 3).all()
    base = lab.auc.set_index(["setting", "attack"]).loc[("base LM", "calibrated")]
    assert base["auc"] == 0.5                        # the reference itself: every calibrated score is 0
    assert len(lab.items) == len(settings) * 3 * 6 and lab.items[["nll", "loss"]].notna().all().all()
    t = lab.tradeoff
    assert t["setting"].tolist() == ["base LM", "per-user adapter, DP eps=2", "per-user adapter, DP eps=50",
                                     "per-user adapter"]
    assert t["noise_multiplier"].iloc[1] > t["noise_multiplier"].iloc[2] > 0
    assert (t["epsilon"].iloc[1:3] <= [2.0 * 1.01, 50.0 * 1.01]).all()
    assert (t["ppl_lower"] <= t["ppl"]).all() and (t["ppl"] <= t["ppl_upper"]).all()
    assert not adapters.is_peft(model) or not model.peft_config      # every adapter removed again
    recorded = [r for r in results.rows() if r["metric"].startswith("mia_auc")]
    assert len(recorded) >= 2 * len(settings)
    privacy.plot_tradeoff(lab)


def test_privacy_lab_refuses_bad_settings(tiny_lm):
    model, tok = tiny_lm()
    cfg = config.get_sizes("smoke")
    with pytest.raises(TypeError, match="unknown privacy-lab settings"):
        privacy.privacy_lab(cfg, model, tok, rows=synthetic_rows(), n_usrs=3)
    with pytest.raises(ValueError, match=r"users \[0, 1, 2\] have fewer"):
        privacy.privacy_lab(cfg, model, tiny_chat_tokenizer(tok), rows=synthetic_rows(n_users=3, n_turns=3),
                            n_members=2)
