"""The RL step (p13n_utils.rl): advantages, the policy-gradient loss checked against trl's
GRPOTrainer on a fixed batch, a toy reward that the policy learns to raise, and bad input."""

import numpy as np
import pandas as pd
import pytest
import torch

from p13n_utils import adapters, rl
from p13n_utils.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

# prompts of the same length in tokens: trl scores left-padded prompts with default position ids,
# so equal lengths (no prompt padding) make its positions and ours the same
PROMPTS = ["user : do you like tea ? assistant :", "user : do you like cats ? assistant :"]
REPLIES = ["yes i like tea .", "no .", "i love cats and dogs .", ""]          # 2 per prompt, one empty
TOLERANCE = 1e-5


# --------------------------------------------------------------------------- advantages
def test_rloo_advantage_is_each_reward_minus_the_mean_of_the_others():
    rewards = np.array([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    expected = [1 - 4, 2 - 3.5, 6 - 1.5, 0 - 1.5, 0 - 1.5, 3 - 0]
    torch.testing.assert_close(rl.group_advantages(rewards, "rloo"), torch.tensor(expected))
    # equal rewards in a group: no signal
    assert rl.group_advantages(np.ones((2, 4)), "rloo").abs().max() == 0


def test_grpo_advantage_is_the_group_z_score():
    rewards = np.array([[1.0, 2.0, 6.0], [5.0, 5.0, 5.0]])
    out = rl.group_advantages(rewards, "grpo")
    first = (rewards[0] - rewards[0].mean()) / (rewards[0].std(ddof=1) + rl.GRPO_EPS)
    torch.testing.assert_close(out[:3], torch.tensor(first, dtype=torch.float32))
    assert out[3:].abs().max() == 0
    # RLOO is k / (k - 1) times the centred reward; GRPO divides the centred reward by the std
    k = 3
    torch.testing.assert_close(rl.group_advantages(rewards, "rloo")[:3],
                               torch.tensor(k / (k - 1) * (rewards[0] - rewards[0].mean()), dtype=torch.float32))


# --------------------------------------------------------------------------- the loss vs trl
def _trl_inputs(tok, prompts, replies, k):
    """trl's inputs for GRPOTrainer._compute_loss: prompt ids (left padded), completion ids (right
    padded, with eos), masks."""
    prompt_ids = [tok(p)["input_ids"] for p in prompts for _ in range(k)]
    completion_ids = [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in replies]
    assert len({len(p) for p in prompt_ids}) == 1
    width = max(len(c) for c in completion_ids)
    completion = torch.full((len(replies), width), tok.pad_token_id)
    completion_mask = torch.zeros((len(replies), width), dtype=torch.long)
    for i, ids in enumerate(completion_ids):
        completion[i, :len(ids)] = torch.tensor(ids)
        completion_mask[i, :len(ids)] = 1
    prompt = torch.tensor(prompt_ids)
    return {"prompt_ids": prompt, "prompt_mask": torch.ones_like(prompt), "completion_ids": completion,
            "completion_mask": completion_mask}


@pytest.mark.filterwarnings("ignore::FutureWarning")   # transformers deprecations trl triggers
@pytest.mark.parametrize("advantage", rl.ADVANTAGES)
def test_policy_gradient_loss_equals_trl_grpo_trainer_on_the_same_batch(tmp_path, tiny_lm, advantage):
    """trl 1.16 computes the GRPO loss inside GRPOTrainer._compute_loss (no standalone function):
    build a trainer on a tiny LoRA policy (loss_type="grpo", one on-policy iteration, beta = the
    KL coefficient) and give it the same sampled batch, advantages and reference log-probs."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    model, tok = tiny_lm()
    kl_coef, k = 0.3, 2
    args = GRPOConfig(output_dir=str(tmp_path), beta=kl_coef, loss_type="grpo", num_generations=k, use_cpu=True,
                      bf16=False, gradient_checkpointing=False, report_to=[], per_device_train_batch_size=4,
                      max_completion_length=8, disable_tqdm=True)
    # init_lora_weights=False: a random (non-zero) adapter, so policy and reference differ (KL > 0)
    lora = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    trainer = GRPOTrainer(model=model, reward_funcs=lambda completions, **_: [0.0] * len(completions), args=args,
                          train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tok,
                          peft_config=lora)
    policy = trainer.model
    rewards = np.array([[1.0, -0.5], [0.2, 2.0]])
    advantages = rl.group_advantages(rewards, advantage)

    # ours: the batch, the reference (adapter off) and the policy's per-token log-probabilities
    batch = rl.completion_batch(tok, [p for p in PROMPTS for _ in range(k)], REPLIES)
    with torch.no_grad(), policy.disable_adapter():
        ref_logps, mask = rl.token_logps(policy, batch)
    logps, _ = rl.token_logps(policy, batch)
    loss, kl = rl.policy_gradient_loss(logps, ref_logps, mask, advantages, kl_coef)

    # trl: the same tokens, the reference log-probs aligned to its completion positions
    inputs = _trl_inputs(tok, PROMPTS, REPLIES, k)
    n_prompt = inputs["prompt_ids"].shape[1]
    ref_completion = ref_logps[:, n_prompt - 1:][:, :inputs["completion_ids"].shape[1]]
    inputs.update(advantages=advantages, ref_per_token_logps=ref_completion)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1          # what trl's training_step sets before the loss
    trl_loss = trainer._compute_loss(policy, inputs)

    assert kl.mean() > 0.1                                       # a batch where the KL term matters
    assert abs(loss.item() - trl_loss.item()) < TOLERANCE
    # and the gradients agree: the same objective, not only the same number
    grads = torch.autograd.grad(loss, adapters.adapter_params(policy, "default"), retain_graph=True)
    trl_grads = torch.autograd.grad(trl_loss, adapters.adapter_params(policy, "default"))
    for ours, theirs in zip(grads, trl_grads):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_left_padded_reply_positions_give_the_same_logps(tiny_lm):
    """The RL step scores a left-padded batch on the reply positions only: the same per-reply sums."""
    model, tok = tiny_lm()
    prompts = ["user : hi assistant :", "user : do you like tea ? assistant :"]
    replies = ["yes i like tea .", "no"]
    with torch.no_grad():
        full, full_mask = rl.token_logps(model, rl.completion_batch(tok, prompts, replies))
        left = rl.completion_batch(tok, prompts, replies, padding_side="left")
        kept, kept_mask = rl.token_logps(model, left, keep=6)
    assert kept.shape == (2, 6) and kept_mask.sum() == full_mask.sum() == 5 + 1 + 1 + 1
    torch.testing.assert_close((kept * kept_mask).sum(1), (full * full_mask).sum(1), atol=1e-5, rtol=1e-5)


def test_loss_is_zero_at_the_reference_with_zero_advantages():
    logps = torch.log(torch.tensor([[0.5, 0.25], [0.1, 1.0]]))
    loss, kl = rl.policy_gradient_loss(logps, logps, torch.ones(2, 2), torch.zeros(2), kl_coef=1.0)
    assert loss.item() == 0 and kl.abs().max() == 0
    kl_far = rl.per_token_kl(logps, logps - 1.0)
    assert (kl_far > 0).all()                                   # k3 estimator: >= 0, 0 only where equal


# --------------------------------------------------------------------------- learning a toy reward
def test_mean_reward_rises_on_a_toy_reward_within_a_few_steps(tiny_lm):
    """reward = the share of 'tea' in the reply: a few RLOO steps raise it well above its start."""
    model, tok = tiny_lm()
    rows = pd.DataFrame({"prompt": ["user : do you like tea ? assistant :", "user : what do you like ? assistant :",
                                    "user : are you nice ? assistant :", "user : hello my name is cat . assistant :"]})
    reward = lambda rows, replies: [r.split().count("tea") / max(1, len(r.split())) for r in replies]  # noqa: E731
    log = rl.train_rl_lora(model, tok, rows, reward, TrainConfig(lr=5e-2, steps=12, batch_size=4, seed=0), k=4,
                           kl_coef=0.0, max_new_tokens=6, r=4)
    rewards = log.metrics["reward"]
    assert len(rewards) == 12 and log.metrics["kl"][0] == pytest.approx(0, abs=1e-6)    # starts at the reference
    assert np.mean(rewards[-3:]) > np.mean(rewards[:3]) + 0.15
    assert len(log.samples) == 12 and len(log.samples[0]) == 16


# --------------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors(tiny_lm):
    model, tok = tiny_lm()
    rows = pd.DataFrame({"prompt": ["user : hello assistant :"]})
    reward = lambda rows, replies: np.zeros(len(replies))  # noqa: E731
    cfg = TrainConfig(lr=1e-3, steps=1, batch_size=1)
    with pytest.raises(ValueError, match="k must be an integer >= 2"):
        rl.train_rl_lora(model, tok, rows, reward, cfg, k=1)
    with pytest.raises(ValueError, match="kl_coef must be >= 0"):
        rl.train_rl_lora(model, tok, rows, reward, cfg, kl_coef=-0.1)
    with pytest.raises(ValueError, match="advantage must be one of"):
        rl.train_rl_lora(model, tok, rows, reward, cfg, advantage="ppo")
    with pytest.raises(ValueError, match="non-empty DataFrame"):
        rl.train_rl_lora(model, tok, rows.iloc[:0], reward, cfg)
    with pytest.raises(ValueError, match="empty"):
        rl.sample_replies(model, tok, ["user : hi", "  "], k=2)
    with pytest.raises(ValueError, match="k must be an integer >= 2"):
        rl.group_advantages(np.ones((3, 1)))
    assert not adapters.is_peft(model)                         # nothing was added by the failed calls


# --------------------------------------------------------------------------- reward heads and evaluation
def test_fit_reward_head_scores_pairs_as_fit_reward_margins_does():
    from p13n_utils import alignment

    rng = np.random.default_rng(0)
    rejected = rng.normal(size=(40, 6))
    chosen = rejected + rng.normal(0.5, 1.0, size=(40, 6)) * np.array([3, 0, 0, 1, 0, 0])
    head = rl.fit_reward_head(chosen, rejected, l2=1.0)
    margins, _ = alignment.fit_reward_margins(chosen, rejected, chosen, rejected, l2=1.0)
    np.testing.assert_allclose(head(chosen) - head(rejected), margins, rtol=1e-4, atol=1e-5)
    assert (margins > 0).mean() > 0.7                          # it learned the direction
    # a subset (one persona's pairs) keeps the scale of all pairs
    half = np.arange(40) < 20
    sub = rl.fit_reward_head(chosen, rejected, l2=1.0, mask=half)
    sub_margins, _ = alignment.fit_reward_margins(chosen, rejected, chosen, rejected, l2=1.0,
                                                  train_groups=np.where(half, 0, 1), eval_groups=np.zeros(40),
                                                  min_pairs=1)
    np.testing.assert_allclose(sub(chosen) - sub(rejected), sub_margins, rtol=1e-4, atol=1e-5)


def test_embedding_reward_builds_the_features_of_the_training_pairs():
    from p13n_utils import alignment

    vectors = {"hi": np.array([1.0, 0.0]), "tea ?": np.array([0.0, 1.0]), "yes": np.array([0.6, 0.8])}
    users = {7: np.array([0.5, 0.5])}
    pairs = pd.DataFrame({"chosen": ["yes"], "rejected": ["hi"], "partner": ["tea ?"], "user_id": [7]})
    expected, _ = alignment.preference_features(pairs, vectors, context="partner", user_vectors=users)
    seen = []
    reward = rl.embedding_reward(lambda f: seen.append(f) or f.sum(axis=1), lambda texts: np.stack([vectors[t] for t in texts]),
                                 vectors, user_vectors=users)
    out = reward(pairs[["partner", "user_id"]], ["yes"])
    np.testing.assert_allclose(seen[0], expected)
    assert out.shape == (1,)


def test_evaluate_policy_reference_has_zero_kl_and_the_policy_moves(tiny_lm):
    model, tok = tiny_lm()
    rows = pd.DataFrame({"prompt": PROMPTS, "user_id": [1, 2]})
    reward = lambda rows, replies: [r.split().count("tea") for r in replies]  # noqa: E731
    log = rl.train_rl_lora(model, tok, rows, reward, TrainConfig(lr=5e-2, steps=3, batch_size=2), k=2, kl_coef=0.1,
                           max_new_tokens=4, r=4, adapter_name="pol")
    policy = log.model
    ref = rl.evaluate_policy(policy, tok, rows, reward, None, k=3, max_new_tokens=4)
    pol = rl.evaluate_policy(policy, tok, rows, reward, "pol", k=3, max_new_tokens=4)
    assert len(ref) == len(pol) == 6 and list(pol["user_id"]) == [1, 1, 1, 2, 2, 2]
    assert (ref["kl"] == 0).all() and pol["kl"].abs().sum() > 0
    assert {"prompt", "reply", "reward", "kl"} <= set(pol.columns)
    with pytest.raises(ValueError, match="k must be >= 1"):
        rl.evaluate_policy(policy, tok, rows, reward, "pol", k=0)
