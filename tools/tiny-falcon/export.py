"""Export a training checkpoint to a Hugging Face Falcon directory (bf16 safetensors) and verify it.

    /usr/bin/python3 tools/tiny-falcon/export.py /tmp/tinyfalcon/run/best.pt models/harpia-tiny-falcon

Writes config.json, model.safetensors (bf16, HF tensor names, tied head: no lm_head.weight) and
generation_config.json into OUT_DIR (tokenizer.json / tokenizer_config.json come from
make_tokenizer.py). Then reloads model.safetensors through falcon.load_hf_dir and checks: the exact
set of tensor names and shapes HF FalconForCausalLM expects, bf16 dtype, and that the reloaded
model's logits equal the checkpoint's weights rounded to bf16 (max-abs <= 1e-4, float32 compute),
and reports the difference to the unrounded float32 weights. Fails if the folder is over 20 MB.
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from falcon import FalconConfig, FalconForCausalLM, load_hf_dir, read_safetensors, write_safetensors  # noqa: E402

torch.set_num_threads(1)

GENERATION_CONFIG = {
    "_from_model_config": True,
    "bos_token_id": 11,
    "eos_token_id": 11,
    "do_sample": True,
    "temperature": 0.7,
    "top_k": 40,
    "top_p": 0.9,
    "repetition_penalty": 1.1,
    "max_new_tokens": 64,
}


def expected_names(cfg: FalconConfig) -> dict:
    H, hd = cfg.hidden_size, cfg.head_dim
    qkv = (cfg.num_attention_heads + 2 * cfg.num_kv_heads) * hd
    names = {"transformer.word_embeddings.weight": [cfg.vocab_size, H],
             "transformer.ln_f.weight": [H], "transformer.ln_f.bias": [H]}
    for i in range(cfg.num_hidden_layers):
        p = f"transformer.h.{i}."
        names.update({p + "ln_attn.weight": [H], p + "ln_attn.bias": [H], p + "ln_mlp.weight": [H], p + "ln_mlp.bias": [H],
                      p + "self_attention.query_key_value.weight": [qkv, H], p + "self_attention.dense.weight": [H, H],
                      p + "mlp.dense_h_to_4h.weight": [4 * H, H], p + "mlp.dense_4h_to_h.weight": [H, 4 * H]})
    return names


def main():
    ckpt_path, out_dir = sys.argv[1], sys.argv[2]
    ck = torch.load(ckpt_path)
    c = dict(ck["cfg"])
    c["hidden_dropout"] = 0.0
    cfg = FalconConfig(**c)
    model = FalconForCausalLM(cfg)
    model.load_state_dict(ck["model"])
    model.eval()

    os.makedirs(out_dir, exist_ok=True)
    tensors = {k: v.detach().to(torch.bfloat16) for k, v in model.state_dict().items()}
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors, {"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg.to_hf(), f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump(GENERATION_CONFIG, f, indent=2)
        f.write("\n")

    # --- verify the export -------------------------------------------------------------------
    stored = read_safetensors(os.path.join(out_dir, "model.safetensors"))
    want = expected_names(cfg)
    got = {k: list(v.shape) for k, v in stored.items()}
    if got != want:
        raise SystemExit(f"tensor names/shapes differ from HF Falcon: extra {set(got) - set(want)}, missing {set(want) - set(got)}")
    if any(v.dtype != torch.bfloat16 for v in stored.values()):
        raise SystemExit("not all tensors are bf16")
    reloaded = load_hf_dir(out_dir, dtype=torch.float32).eval()
    rounded = FalconForCausalLM(cfg).eval()
    rounded.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()})
    ids = torch.randint(12, cfg.vocab_size, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b, full = reloaded(ids), rounded(ids), model(ids)
    d_round = (a - b).abs().max().item()
    d_full = (a - full).abs().max().item()
    if d_round > 1e-4:
        raise SystemExit(f"reloaded logits differ from the bf16-rounded checkpoint by {d_round}")
    size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    if size > 20 * 1000 * 1000:
        raise SystemExit(f"{out_dir} is {size:,} bytes, over 20 MB")
    print(f"exported {model.num_parameters():,} parameters from {ckpt_path} (step {ck['step']}, val loss {ck['val_loss']:.4f})")
    print(f"{len(stored)} tensors, names/shapes = HF Falcon; reload vs bf16-rounded max|dlogit| = {d_round:.2e}; "
          f"vs float32 training weights = {d_full:.3f}; folder {size:,} bytes")


if __name__ == "__main__":
    main()
