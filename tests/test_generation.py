"""Batched scoring, label probabilities and generation against one-at-a-time references.

The references are written independently of p13n_utils.generation: an unpadded forward pass of
one sequence with the full vocabulary projection."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from p13n_utils import generation, models
from p13n_utils.prompts import chat_prompt

REPO = Path(__file__).resolve().parent.parent

PROMPTS = [
    "The cat",
    "hi , how are you doing today ? i just got back from walking my two dogs in the park .",
    "Question: what is the capital of France?\nAnswer:",
    "i like to work on vintage cars . my favorite music is country . i own two vintage mustangs . "
    "hello ! what do you do for fun on the weekends , when you are not working at the shop ?",
    "Once upon a time",
]
TARGETS = [
    " sat on the mat.",
    " i am good , thanks for asking ! i love dogs , what breeds are they ? i have a cat myself .",
    " Paris",
    " i fix up old cars and listen to country music .",
    ", there was a small village by the sea where everybody knew each other.",
]


@pytest.fixture(scope="module")
def lm():
    return models.load_lm(device="cpu")


def reference_logprobs(model, tokenizer, prompt, target):
    """Per-token log-probs of target given prompt: one unpadded sequence, full logits."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + target_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
    start = len(prompt_ids) - 1
    return np.array([logprobs[start + j, token].item() for j, token in enumerate(target_ids)])


# --------------------------------------------------------------------------- chat_prompt (p13n_utils.prompts)
def test_chat_prompt_uses_the_template(lm):
    _, tokenizer = lm
    prompt = chat_prompt(tokenizer, "what do you like?", system="You are Bob.")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "You are Bob." in prompt and "what do you like?" in prompt and "SmolLM" not in prompt
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"},
                    {"role": "user", "content": "how are you?"}]
    multi = chat_prompt(tokenizer, conversation)
    assert multi.index("hi") < multi.index("hello!") < multi.index("how are you?")
    with pytest.raises(ValueError, match="role"):
        chat_prompt(tokenizer, [{"text": "hi"}])


# --------------------------------------------------------------------------- score
def test_batched_scoring_equals_one_at_a_time_and_the_reference(lm):
    model, tokenizer = lm
    batched = generation.score(model, tokenizer, PROMPTS, TARGETS, batch_size=3, progress=False, return_tokens=True)
    looped = generation.score(model, tokenizer, PROMPTS, TARGETS, batch_size=1, progress=False)
    assert list(batched.columns[:4]) == ["logprob_sum", "n_tokens", "nll_mean", "n_prompt_tokens"]
    assert batched["n_tokens"].nunique() > 2 and batched["n_prompt_tokens"].nunique() > 2  # real padding
    np.testing.assert_array_equal(batched["n_tokens"], looped["n_tokens"])
    np.testing.assert_allclose(batched["nll_mean"], looped["nll_mean"], atol=1e-4)
    for i, (prompt, target) in enumerate(zip(PROMPTS, TARGETS)):
        reference = reference_logprobs(model, tokenizer, prompt, target)
        assert batched.loc[i, "n_tokens"] == len(reference)
        np.testing.assert_allclose(batched.loc[i, "token_logprobs"], reference, atol=1e-4)
        assert batched.loc[i, "nll_mean"] == pytest.approx(-reference.mean(), abs=1e-4)
    assert (batched["logprob_sum"] < 0).all()


def test_score_returns_input_order(lm):
    model, tokenizer = lm
    forward = generation.score(model, tokenizer, PROMPTS[:3], TARGETS[:3], batch_size=2, progress=False)
    backward = generation.score(model, tokenizer, PROMPTS[:3][::-1], TARGETS[:3][::-1], batch_size=2, progress=False)
    np.testing.assert_allclose(forward["logprob_sum"], backward["logprob_sum"][::-1], atol=1e-4)


def test_score_max_length_cuts_the_prompt_from_the_left(lm):
    model, tokenizer = lm
    cut = generation.score(model, tokenizer, PROMPTS[1:2], TARGETS[1:2], max_length=30, progress=False)
    assert cut.loc[0, "n_prompt_tokens"] + cut.loc[0, "n_tokens"] == 30
    with pytest.raises(ValueError, match="max_length"):
        generation.score(model, tokenizer, PROMPTS[1:2], TARGETS[1:2], max_length=5, progress=False)


def test_score_restores_training_mode(lm):
    model, tokenizer = lm
    model.train()
    try:
        generation.score(model, tokenizer, PROMPTS[:1], TARGETS[:1], progress=False)
        assert model.training
    finally:
        model.eval()


def test_score_rejects_bad_input(lm):
    model, tokenizer = lm
    with pytest.raises(ValueError, match="2 prompts but 1 targets"):
        generation.score(model, tokenizer, PROMPTS[:2], TARGETS[:1])
    with pytest.raises(ValueError, match=r"targets\[0\] is empty"):
        generation.score(model, tokenizer, ["hello"], [""])
    with pytest.raises(TypeError, match="list of strings"):
        generation.score(model, tokenizer, "hello", " world")
    with pytest.raises(ValueError, match="batch_size"):
        generation.score(model, tokenizer, ["hello"], [" world"], batch_size=0)


def test_perplexity_pools_tokens_overall_and_per_group():
    scores = pd.DataFrame({"logprob_sum": [-2.0, -4.0, -3.0], "n_tokens": [1, 3, 2], "user": ["a", "a", "b"]})
    assert generation.perplexity(scores) == pytest.approx(np.exp(9 / 6))
    per_user = generation.perplexity(scores, by="user")
    assert per_user["a"] == pytest.approx(np.exp(6 / 4)) and per_user["b"] == pytest.approx(np.exp(3 / 2))
    with pytest.raises(KeyError, match="score()"):
        generation.perplexity(pd.DataFrame({"x": [1]}))


# --------------------------------------------------------------------------- next-token distribution
def test_next_token_distribution_matches_a_direct_forward_pass(lm):
    model, tokenizer = lm
    prompts = ["1, 2, 3,", chat_prompt(tokenizer, "Rate pizza from 1 to 5. Answer with one digit."),
               "On a scale of one to five I give it a"]
    candidates = ["1", "2", "3", "4", "5"]
    probs = generation.next_token_distribution(model, tokenizer, prompts, candidates, batch_size=2)
    assert probs.shape == (3, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-9)
    ids = [tokenizer.encode(c, add_special_tokens=False)[0] for c in candidates]
    for row, prompt in enumerate(prompts):
        with torch.no_grad():
            logits = model(torch.tensor([tokenizer(prompt)["input_ids"]])).logits[0, -1].double()
        np.testing.assert_allclose(probs[row], torch.softmax(logits[ids], dim=0).numpy(), atol=1e-5)
    raw = generation.next_token_distribution(model, tokenizer, prompts, candidates, renormalize=False)
    assert (raw.sum(axis=1) < 1).all()
    np.testing.assert_allclose(raw / raw.sum(axis=1, keepdims=True), probs, atol=1e-5)
    assert probs[0].argmax() == 3  # "1, 2, 3," -> "4"


def test_next_token_distribution_rejects_multi_token_labels(lm):
    model, tokenizer = lm
    with pytest.raises(ValueError, match="not one"):
        generation.next_token_distribution(model, tokenizer, ["hi"], ["yes", "absolutely not"])


# --------------------------------------------------------------------------- generate
def test_greedy_generation_is_deterministic_and_batch_independent(lm):
    model, tokenizer = lm
    prompts = [chat_prompt(tokenizer, text) for text in
               ["What is your favourite food?", "Tell me about dogs in one sentence, please, I am curious.", "Hi!"]]
    batched = generation.generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=3, progress=False)
    again = generation.generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=3, progress=False)
    single = [generation.generate(model, tokenizer, [p], max_new_tokens=6, progress=False)[0] for p in prompts]
    assert batched == again == single
    assert all(text and len(tokenizer.encode(text, add_special_tokens=False)) <= 7 for text in batched)


def test_sampling_is_seeded(lm):
    model, tokenizer = lm
    prompts = ["My favourite hobby is", "The weather today"]
    kwargs = dict(max_new_tokens=6, do_sample=True, temperature=1.0, progress=False)
    first = generation.generate(model, tokenizer, prompts, seed=1, **kwargs)
    assert generation.generate(model, tokenizer, prompts, seed=1, **kwargs) == first
    assert generation.generate(model, tokenizer, prompts, seed=2, **kwargs) != first
    with pytest.raises(ValueError, match="temperature"):
        generation.generate(model, tokenizer, prompts, do_sample=True, temperature=0)


# --------------------------------------------------------------------------- benchmark helpers
def load_bench():
    spec = importlib.util.spec_from_file_location("bench_lm", REPO / "benchmarks" / "bench_lm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_helpers():
    bench = load_bench()
    # 2 x 1e8 parameters x 50 tokens/s = 1e10 FLOP/s, half of a 2e10 FLOP/s GEMM
    assert bench.gemm_fraction(1e8, 50.0, 2e10) == pytest.approx(0.5)
    flops = bench.measure_gemm_flops(n=64, seconds=0.05)
    assert flops > 1e6
    dialogues = pd.DataFrame({"dialogue_id": [0, 1], "persona": [["i like cats.", "i am tall."], ["i swim."]],
                              "turns": [[("hi", "hello"), ("how are you?", "fine, thanks.")], [("yo", "hey there")]]})
    pairs = bench.personachat_pairs(dialogues, n_pairs=2)
    assert len(pairs) == 2
    assert pairs.loc[0, "target"] == "fine, thanks." and "i like cats." in pairs.loc[0, "system"]
    assert [m["content"] for m in pairs.loc[0, "messages"]] == ["hi", "hello", "how are you?"]
    with pytest.raises(ValueError, match="only 2 dialogues"):
        bench.personachat_pairs(dialogues, n_pairs=3)
