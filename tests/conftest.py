"""Fixtures shared by the test files: a tiny random Llama and its word-level tokenizer, a few
(prompt, target) pairs, synthetic PersonaChat characters, and one torch thread.

Each fixture hands out a factory (``tiny_lm(seed=1)``) or a value, so that test files never
import from one another."""

import pandas as pd
import pytest

WORDS = ("the a cat cats dog dogs sat on mat i you like likes tea coffee what do are nice yes no ? . , "
         "user assistant : about me hello hi my name is love hate movies music books").split()

PAIRS = [("user : do you like tea ? assistant :", "yes i like tea ."),
         ("user : what do you like ? assistant :", "i love cats ."),
         ("user : hello my name is cat . assistant :", "hi cat , nice ."),
         ("user : are you nice ? assistant :", "yes .")]


@pytest.fixture
def one_thread():
    """Tiny models run ~10x faster on one thread than on two busy cores (less thread overhead).
    Files that train tiny models use it for every test: ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")


def _tiny_lm(seed=0, hidden=32, layers=2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, initializer_range=0.1, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval(), tok


@pytest.fixture
def tiny_tokenizer():
    """``tiny_tokenizer()``: a word-level tokenizer over WORDS (whitespace split), pad/bos/eos/unk ids 0-3."""
    return _tiny_tokenizer


@pytest.fixture
def tiny_lm():
    """``tiny_lm(seed=0, hidden=32, layers=2) -> (model, tokenizer)``: a randomly initialised Llama
    (q/k/v/o projections like SmolLM2); the same seed gives the same weights. Weights are drawn
    wider than Llama's default (0.1 vs 0.02) so that a few steps visibly fit a handful of sentences."""
    return _tiny_lm


@pytest.fixture
def tiny_pairs():
    """Four (prompt, target) pairs in the tiny vocabulary."""
    return list(PAIRS)


@pytest.fixture
def logits_of():
    """``logits_of(model, tok, text=...)``: the model's logits on one sentence, without gradients."""
    def logits(model, tok, text="user : do you like tea ? assistant : yes"):
        import torch

        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            return model(input_ids=ids).logits
    return logits


@pytest.fixture
def characters():
    """``characters(n_users=4, dialogues_per_user=2, n_turns=5)``: synthetic PersonaChat dialogues
    (``dialogue_id, persona, turns``) where every fact and reply names its user."""
    def make(n_users=4, dialogues_per_user=2, n_turns=5):
        rows = []
        for u in range(n_users):
            facts = [f"i am user {u} with hobby {h}." for h in range(4)]
            for d in range(dialogues_per_user):
                turns = [(f"partner {u}-{d}-{t} ?", f"reply of user {u} in {d} turn {t} .") for t in range(n_turns)]
                rows.append({"dialogue_id": len(rows), "persona": facts, "turns": turns})
        return pd.DataFrame(rows)
    return make
