"""Speed of the default LM on this machine: scoring, generation and loading, side by side.

Run from the repository root (offline is fine)::

    HF_HUB_OFFLINE=1 P13N_DATA_MIRROR=../shared/data .venv/bin/python benchmarks/bench_lm.py

It measures, in one run, and writes ``benchmarks/results/lm.json`` (atomically) plus a table:

(a) scoring 64 PersonaChat (prompt = persona + last exchange + partner's turn, target = the gold
    reply) pairs: a naive loop (one pair per forward pass, full vocabulary logits), the
    library's :func:`p13n_utils.generation.score` one pair at a time and batched (16), and two
    ways past it: bf16 weights, and dynamic int8 Linear layers (CPU only), each with its effect
    on the numbers (nll difference per pair, perplexity). Speeds in tokens/s (prompt + target
    tokens through the model) and as a fraction of the machine's own fp32 GEMM throughput
    measured in the same run (1024x1024 matmul): ``2 x parameters x tokens/s / GEMM FLOP/s``;
(b) generation tokens/s (greedy, 32 new tokens, 16 prompts) at batch 1 vs batch 16 (and bf16),
    end to end and for the decoding steps alone (minus the time of a 1-new-token run, which
    reads the prompts: that part costs the same at any batch size);
(c) loading the model the first time (GGUF -> safetensors conversion, in a temporary cache)
    vs from the cached folder, each in a fresh process.

``--quick`` runs tiny sizes (seconds) and writes nothing unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results" / "lm.json"
TARGETS = {"scoring_gemm_fraction": 0.5, "batched_over_looped_scoring": 1.0,
           "batched_over_batch1_generation": 4.0, "cached_load_s": 10.0}


# --------------------------------------------------------------------------- helpers (unit-tested)
def gemm_fraction(n_params: float, tokens_per_s: float, gemm_flops: float) -> float:
    """Fraction of the GEMM throughput a forward pass reaches: ``2 x params x tokens/s / FLOP/s``."""
    return 2.0 * n_params * tokens_per_s / gemm_flops


def _synchronize(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def measure_gemm_flops(n: int = 1024, seconds: float = 2.0, device: str = "cpu") -> float:
    """FLOP/s of repeated fp32 ``n x n`` matmuls (2 n^3 FLOPs each) for about ``seconds``."""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):  # warm-up
        a @ b
    _synchronize(device)
    repeats, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        repeats += 1
        if repeats % 8 == 0:
            _synchronize(device)
    _synchronize(device)
    return 2.0 * n**3 * repeats / (time.perf_counter() - start)


def personachat_pairs(dialogues: pd.DataFrame, n_pairs: int = 64, history_turns: int = 1) -> pd.DataFrame:
    """One (prompt, target) pair per dialogue, from the first ``n_pairs`` dialogues.

    The target is the dialogue's last own reply; the prompt has the persona facts as system
    message, the previous ``history_turns`` exchanges and the partner's last utterance.

    Returns
    -------
    DataFrame with columns dialogue_id, system (str), messages (list of chat dicts), target (str).
    """
    if len(dialogues) < n_pairs:
        raise ValueError(f"asked for {n_pairs} pairs but there are only {len(dialogues)} dialogues")
    rows = []
    for dialogue in dialogues.head(n_pairs).itertuples():
        turns = list(dialogue.turns)
        *history, (partner, reply) = turns
        messages = []
        for other, own in history[max(0, len(history) - history_turns):] if history_turns else []:
            messages += [{"role": "user", "content": other}, {"role": "assistant", "content": own}]
        messages.append({"role": "user", "content": partner})
        system = "You are chatting with someone. Your persona: " + " ".join(dialogue.persona)
        rows.append({"dialogue_id": dialogue.dialogue_id, "system": system, "messages": messages, "target": reply})
    return pd.DataFrame(rows)


def _load_dialogues() -> pd.DataFrame:
    from p13n_utils import data

    return data.load_personachat("valid")


def _timed(function, repeats: int = 1):
    """Run ``function`` ``repeats`` times; return (best seconds, last result)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


# --------------------------------------------------------------------------- (a) scoring
def naive_loop_score(model, tokenizer, prompts, targets) -> np.ndarray:
    """What one writes first: one pair per forward pass, log-softmax over every position."""
    import torch

    nll = []
    with torch.inference_mode():
        for prompt, target in zip(prompts, targets):
            prompt_ids = tokenizer(prompt)["input_ids"]
            target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt_ids + target_ids], device=model.device)
            logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
            positions = torch.arange(len(prompt_ids) - 1, ids.shape[1] - 1, device=model.device)
            nll.append(-logprobs[positions, ids[0, len(prompt_ids):]].mean().item())
    return np.array(nll)


def int8_dynamic_copy(model):
    """A copy whose Linear layers (all but the tied output projection) run dynamic int8 matmuls
    (per-channel int8 weights, activations quantized on the fly): CPU only."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not model.get_output_embeddings()}
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8)


def bench_scoring(model, tokenizer, pairs, batch_size, repeats, gemm_flops, device) -> list[dict]:
    """Rows of (a); every variant scores the same pairs, ``nll`` compared with fp32 batched."""
    import torch

    from p13n_utils import generation
    from p13n_utils.prompts import chat_prompt

    prompts = [chat_prompt(tokenizer, m, system=s) for m, s in zip(pairs["messages"], pairs["system"])]
    targets = list(pairs["target"])
    n_params = model.num_parameters()
    n_embedding = model.get_input_embeddings().weight.numel()

    def scorer(lm, size):
        return lambda: generation.score(lm, tokenizer, prompts, targets, batch_size=size, progress=False)["nll_mean"].to_numpy()

    variants = [("naive loop (full logits), fp32", lambda: naive_loop_score(model, tokenizer, prompts, targets), 1),
                ("score(), one at a time, fp32", scorer(model, 1), repeats),
                (f"score(), batch {batch_size}, fp32", scorer(model, batch_size), repeats),
                (f"score(), batch {batch_size}, bf16 weights", scorer(copy.deepcopy(model).to(torch.bfloat16), batch_size), repeats)]
    if str(device) == "cpu":
        variants.append((f"score(), batch {batch_size}, int8 dynamic", scorer(int8_dynamic_copy(model), batch_size), repeats))

    scored = generation.score(model, tokenizer, prompts, targets, progress=False)  # also a warm-up
    n_tokens = int((scored["n_prompt_tokens"] + scored["n_tokens"]).sum())
    weights = scored["n_tokens"].to_numpy()
    reference = scored["nll_mean"].to_numpy()
    rows = []
    for name, function, n_runs in variants:
        seconds, nll = _timed(function, n_runs)
        tokens_per_s = n_tokens / seconds
        rows.append({
            "method": name, "pairs": len(prompts), "tokens": n_tokens, "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens_per_s, 1),
            "gemm_fraction": round(gemm_fraction(n_params, tokens_per_s, gemm_flops), 3),
            "gemm_fraction_non_embedding": round(gemm_fraction(n_params - n_embedding, tokens_per_s, gemm_flops), 3),
            "perplexity": round(float(np.exp(np.sum(nll * weights) / weights.sum())), 3),
            "max_abs_nll_diff": float(np.max(np.abs(nll - reference))),
            "mean_abs_nll_diff": float(np.mean(np.abs(nll - reference))),
        })
    return rows


# --------------------------------------------------------------------------- (b) generation
def bench_generation(model, tokenizer, pairs, n_prompts, batch_size, max_new_tokens) -> list[dict]:
    """Rows of (b): greedy generation at batch 1 and batched, fp32 and bf16 weights."""
    import torch

    from p13n_utils import generation
    from p13n_utils.prompts import chat_prompt

    prompts = [chat_prompt(tokenizer, m, system=s)
               for m, s in zip(pairs["messages"][:n_prompts], pairs["system"][:n_prompts])]
    generation.generate(model, tokenizer, prompts[:1], max_new_tokens=4, progress=False)  # warm-up
    rows = []
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    for name, lm, size in (("fp32", model, 1), ("fp32", model, batch_size), ("bf16 weights", bf16, batch_size)):
        def run(n_new):
            return generation.generate(lm, tokenizer, prompts, max_new_tokens=n_new, batch_size=size, progress=False)

        seconds, texts = _timed(lambda: run(max_new_tokens))
        prefill_s, _ = _timed(lambda: run(1))  # reading the prompts + the first new token
        # new tokens, counted by re-encoding the text (+1 for an eos that ended a reply early)
        counts = [min(len(tokenizer.encode(t, add_special_tokens=False)) + 1, max_new_tokens) for t in texts]
        decode_tokens = sum(counts) - len(prompts)
        rows.append({"method": f"generate(), batch {size}, {name}", "prompts": len(prompts), "new_tokens": sum(counts),
                     "seconds": round(seconds, 3), "tokens_per_s": round(sum(counts) / seconds, 1),
                     "prefill_s": round(prefill_s, 3),
                     "decode_tokens_per_s": round(decode_tokens / max(seconds - prefill_s, 1e-9), 1)})
    return rows


# --------------------------------------------------------------------------- (c) loading
_LOAD_SNIPPET = """
import json, time
start = time.perf_counter()
import torch, transformers
from p13n_utils import models
imported = time.perf_counter()
models.load_lm(device={device!r})
print(json.dumps({{"import_s": imported - start, "load_s": time.perf_counter() - imported}}))
"""


def bench_load(device: str) -> dict:
    """First load (GGUF conversion into an empty temporary cache) vs cached load, each in a new
    process; ``load_s`` excludes importing torch/transformers (``import_s``)."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="p13n-bench-cache-") as cache:
        env = dict(os.environ, P13N_CACHE_DIR=cache)
        for label in ("first (GGUF -> safetensors)", "cached (safetensors)"):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", _LOAD_SNIPPET.format(device=device)], env=env, cwd=REPO,
                                  capture_output=True, text=True, check=True)
            timing = json.loads(proc.stdout.strip().splitlines()[-1])
            timing["process_s"] = time.perf_counter() - start
            out[label] = {k: round(v, 2) for k, v in timing.items()}
    return out


# --------------------------------------------------------------------------- main
def machine_info(device: str) -> dict:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),  # > cpu_count: other work competed
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _display_path(path) -> str | None:
    """``path`` relative to the repository when it is inside it (results files stay portable)."""
    if path is None:
        return None
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def write_json_atomic(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes; writes nothing unless --out is given")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--gen-prompts", type=int, default=16)
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="scoring runs per method (best is kept)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.batch_size, args.gen_prompts, args.gen_tokens, args.repeats = 4, 2, 2, 4, 1
    out = args.out or (None if args.quick else DEFAULT_OUT)

    from p13n_utils import config, models

    config.limit_threads(args.threads)
    config.quiet_libraries()
    config.set_seed(0)
    device = config.get_device(args.device)
    load_before = round(os.getloadavg()[0], 2)
    model, tokenizer = models.load_lm(device=device)
    pairs = personachat_pairs(_load_dialogues(), n_pairs=args.pairs)

    gemm_before = measure_gemm_flops(device=device)
    scoring = bench_scoring(model, tokenizer, pairs, args.batch_size, args.repeats, gemm_before, device)
    gemm_after = measure_gemm_flops(device=device)
    gemm = (gemm_before + gemm_after) / 2
    for row in scoring:  # use the mean of the GEMM measured before and after
        row["gemm_fraction"] = round(row["gemm_fraction"] * gemm_before / gemm, 3)
        row["gemm_fraction_non_embedding"] = round(row["gemm_fraction_non_embedding"] * gemm_before / gemm, 3)
    gen = bench_generation(model, tokenizer, pairs, args.gen_prompts, args.batch_size, args.gen_tokens)
    load = {} if args.quick else bench_load(device)

    by_method = {row["method"]: row for row in scoring}
    batched = by_method[f"score(), batch {args.batch_size}, fp32"]
    looped = by_method["score(), one at a time, fp32"]
    achieved = {"scoring_gemm_fraction": batched["gemm_fraction"],
                "batched_over_looped_scoring": round(batched["tokens_per_s"] / looped["tokens_per_s"], 2),
                "batched_over_batch1_generation": round(gen[1]["tokens_per_s"] / gen[0]["tokens_per_s"], 2),
                "batched_over_batch1_decoding_only": round(gen[1]["decode_tokens_per_s"] / gen[0]["decode_tokens_per_s"], 2)}
    if load:
        achieved["cached_load_s"] = load["cached (safetensors)"]["load_s"]
    met = {k: (v <= TARGETS[k] if k == "cached_load_s" else v >= TARGETS[k]) for k, v in achieved.items() if k in TARGETS}
    payload = {
        "benchmark": "bench_lm", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(device) | {"load_average_1min_at_start": load_before},
        "model": {"name": models.DEFAULT_LM, "parameters": model.num_parameters(), "dtype": "float32"},
        "settings": vars(args) | {"out": _display_path(out)},
        "gemm_flops": {"before": round(gemm_before), "after": round(gemm_after), "mean": round(gemm)},
        "scoring": scoring, "generation": gen, "load": load,
        "targets": TARGETS, "achieved": achieved, "met": met,
    }

    pd.set_option("display.width", 200)
    print(f"machine: {payload['machine']['cpu']}, {payload['machine']['torch_threads']} torch threads, device {device}, "
          f"load average {load_before} at start, {payload['machine']['load_average_1min_at_end']} at end")
    print(f"GEMM fp32 1024^2: {gemm / 1e9:.1f} GFLOP/s (before {gemm_before / 1e9:.1f}, after {gemm_after / 1e9:.1f})")
    print(f"(a) scoring {args.pairs} PersonaChat pairs, {scoring[0]['tokens'] / args.pairs:.0f} tokens/pair")
    print(pd.DataFrame(scoring).drop(columns=["pairs", "tokens"]).to_markdown(index=False, floatfmt=".4g"))
    print("(b) generation")
    print(pd.DataFrame(gen).to_markdown(index=False))
    if load:
        print("(c) load (fresh process each)")
        print(pd.DataFrame(load).T.to_markdown())
    print("targets:", json.dumps({k: f"{v} ({'met' if met[k] else 'MISSED'})" if k in met else v for k, v in achieved.items()}))
    if out:
        write_json_atomic(payload, out)
        print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()
