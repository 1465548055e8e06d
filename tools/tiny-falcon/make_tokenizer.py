"""Truncate the real Falcon tokenizer to the first K ids (default 8192).

    /usr/bin/python3 tools/tiny-falcon/make_tokenizer.py SRC_TOKENIZER_JSON OUT_DIR [K]

Keeps: the 12 special tokens (ids 0-11), every vocabulary entry with id < K (the byte-level base
symbols - Falcon has 228 of the 256 bytes, the UTF-8 bytes that never occur are absent in the original
too - and the merge results), and every merge whose two parts AND result all have id < K, in the
original merge order (= priority). Normalizer, pre-tokenizer, post-processor and decoder are copied
unchanged, so the truncated tokenizer segments text exactly like Falcon's, only stopping earlier in
the merge sequence. Checks that every non-special, multi-symbol token < K is produced by a kept merge,
so no id is unreachable.

Writes OUT_DIR/tokenizer.json and OUT_DIR/tokenizer_config.json.
"""

import json
import os
import sys


def main():
    src, out_dir = sys.argv[1], sys.argv[2]
    K = int(sys.argv[3]) if len(sys.argv) > 3 else 8192
    with open(src, encoding="utf-8") as f:
        tok = json.load(f)
    model = tok["model"]
    if model["type"] != "BPE":
        raise SystemExit(f"{src}: expected a BPE model, got {model['type']}")
    vocab = model["vocab"]
    specials = [t for t in tok["added_tokens"] if t["special"]]
    if len(specials) != 12 or any(t["id"] >= 12 for t in specials):
        raise SystemExit(f"{src}: expected the 12 Falcon special tokens at ids 0-11")

    new_vocab = {s: i for s, i in vocab.items() if i < K}
    if sorted(new_vocab.values()) != list(range(K)):
        raise SystemExit(f"{src}: ids below {K} are not contiguous")

    kept, results = [], set()
    for m in model["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        ids = (vocab.get(a, K), vocab.get(b, K), vocab.get(a + b, K))
        if max(ids) < K:
            kept.append(m)
            results.add(a + b)
    # every kept merge's parts and result are < K (checked above); every multi-symbol token is reachable
    unreachable = [s for s, i in new_vocab.items() if i >= 12 and len(s) > 1 and s not in results]
    if unreachable:
        raise SystemExit(f"{len(unreachable)} tokens below {K} are produced by no kept merge, e.g. {unreachable[:5]}")
    base = sum(1 for s, i in new_vocab.items() if i >= 12 and len(s) == 1)

    model["vocab"] = new_vocab
    model["merges"] = kept
    tok["added_tokens"] = specials
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=None, separators=(",", ":"))
    tok_cfg = {
        "add_prefix_space": False,
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 2048,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tok_cfg, f, indent=2)
        f.write("\n")
    print(f"vocab {len(new_vocab)} = 12 special + {base} byte symbols + {len(kept)} merges; wrote {out_dir}")


if __name__ == "__main__":
    main()
