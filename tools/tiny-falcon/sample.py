"""Generate from an exported Hugging Face Falcon directory with falcon.py (reloads model.safetensors).

    NODE_PATH=/tmp/tinyfalcon-npm/node_modules /usr/bin/python3 tools/tiny-falcon/sample.py \
        models/harpia-tiny-falcon [--max-new 48] [prompt ...]

Prompts are tokenized and outputs decoded by Hugging Face `tokenizers` via tok.mjs (Node). For every
prompt prints a greedy continuation and a sampled one (temperature 0.7, top-k 40, top-p 0.9,
repetition penalty 1.1, torch seed 0 per prompt); generation stops at <|endoftext|>.
"""

import argparse
import json
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from falcon import load_hf_dir  # noqa: E402

torch.set_num_threads(1)
EOS = 11
DEFAULT_PROMPTS = ["The license", "The function returns", "To install the package, run"]


def tok(model_dir: str, request: dict) -> dict:
    out = subprocess.run(["node", os.path.join(HERE, "tok.mjs"), os.path.join(model_dir, "tokenizer.json")],
                         input=json.dumps(request), capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@torch.no_grad()
def generate(model, ids, max_new, sample, temperature=0.7, top_k=40, top_p=0.9, rep_penalty=1.1):
    seq = list(ids)
    gen = torch.Generator().manual_seed(0)
    for _ in range(max_new):
        logits = model(torch.tensor([seq[-256:]]))[0, -1].double()
        if sample:
            for t in set(seq):  # CTRL-style repetition penalty, as HF's RepetitionPenaltyLogitsProcessor
                logits[t] = logits[t] / rep_penalty if logits[t] > 0 else logits[t] * rep_penalty
            logits = logits / temperature
            kth = torch.topk(logits, top_k).values[-1]
            logits[logits < kth] = float("-inf")
            probs = logits.softmax(-1)
            sorted_p, order = probs.sort(descending=True)
            drop = sorted_p.cumsum(0) - sorted_p > top_p
            probs[order[drop]] = 0.0
            nxt = int(torch.multinomial(probs / probs.sum(), 1, generator=gen))
        else:
            nxt = int(logits.argmax())
        seq.append(nxt)
        if nxt == EOS:
            break
    return seq[len(ids):]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("prompts", nargs="*")
    ap.add_argument("--max-new", type=int, default=48)
    args = ap.parse_args()
    prompts = args.prompts or DEFAULT_PROMPTS
    model = load_hf_dir(args.model_dir, dtype=torch.float32).eval()
    enc = tok(args.model_dir, {"encode": prompts})["ids"]
    outs = []
    for ids in enc:
        outs.append(generate(model, ids, args.max_new, sample=False))
        outs.append(generate(model, ids, args.max_new, sample=True))
    texts = tok(args.model_dir, {"decode": outs})["text"]
    for i, p in enumerate(prompts):
        for j, kind in enumerate(("greedy", "sampled")):
            print(f"[{kind}] prompt {json.dumps(p)} -> {json.dumps(p + texts[2 * i + j])}")


if __name__ == "__main__":
    main()
