#!/usr/bin/env python3
"""The peer of scripts/gpu-check.sh: Hugging Face transformers on PyTorch (the guide's code path) on the same bf16
checkpoint Harpia benchmarks, greedy, with the same prompt length; plus the GPU's measured copy bandwidth and the
decode roofline (weight bytes read per token / bandwidth). Prints one line per figure."""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def copy_bandwidth(gib=1.0, reps=10):
    """Device-to-device copy: bytes read + written per second."""
    n = int(gib * (1 << 30)) // 2
    a = torch.empty(n, dtype=torch.bfloat16, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        b.copy_(a)
    torch.cuda.synchronize()
    return 2 * a.numel() * a.element_size() * reps / (time.perf_counter() - t)


def timed(fn, reps):
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=2)
    a = p.parse_args()
    print(f"peer: torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    bw = copy_bandwidth()
    print(f"peer: copy bandwidth {bw / 1e9:.1f} GB/s (device to device, read + write)")
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.bfloat16).to("cuda").eval()
    cfg = model.config
    vocab = cfg.vocab_size
    embed = model.get_input_embeddings().weight
    weight_bytes = sum(t.numel() * t.element_size() for t in model.parameters() if t is not embed)
    tied = model.get_output_embeddings().weight is embed
    per_token = weight_bytes + (embed.numel() * embed.element_size() if tied else 0) + embed.shape[1] * embed.element_size()
    print(f"peer: weight bytes per decoded token {per_token / 1e9:.2f} GB; roofline {bw / per_token:.1f} tokens/s at the copy bandwidth")
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, vocab, (1, a.prompt_tokens), generator=g).to("cuda")
    short = prompt[:, :16]
    with torch.inference_mode():
        t_prefill = timed(lambda: model(prompt, use_cache=True), a.reps)
        t_short = timed(lambda: model(short, use_cache=True), a.reps)
        gen = dict(do_sample=False, max_new_tokens=a.gen_tokens, min_new_tokens=a.gen_tokens, pad_token_id=0)
        t_gen = timed(lambda: model.generate(short, **gen), a.reps)
    decode = a.gen_tokens / max(t_gen - t_short, 1e-9)
    print(f"peer: prefill {a.prompt_tokens} tokens: {a.prompt_tokens / t_prefill:.1f} tokens/s ({t_prefill * 1e3:.1f} ms)")
    print(f"peer: decode {a.gen_tokens} tokens (greedy, KV cache): {decode:.2f} tokens/s; "
          f"{decode * per_token / bw * 100:.1f} % of the roofline")
    print("peer-json: " + json.dumps({"gpu": torch.cuda.get_device_name(0), "copy_bandwidth_gbs": bw / 1e9,
                                      "weight_bytes_per_token": per_token, "prefill_tps": a.prompt_tokens / t_prefill,
                                      "decode_tps": decode, "prompt_tokens": a.prompt_tokens, "gen_tokens": a.gen_tokens}))


if __name__ == "__main__":
    main()
