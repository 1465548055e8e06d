"""Train the tiny Falcon on the tokenized corpus (CPU, one thread).

    /usr/bin/python3 tools/tiny-falcon/train.py --data /tmp/tinyfalcon/data --out /tmp/tinyfalcon/run \
        --minutes 42

Reads DATA/train.bin and DATA/val.bin (uint16 ids from tokenize_corpus.mjs). Samples random windows of
`--context + 1` tokens, AdamW, linear warm-up then cosine decay to 10 % of the peak learning rate. The
schedule's progress is max(step / --max-steps, elapsed / --minutes), so the run ends on its wall-clock
budget with a fully decayed learning rate however fast the (shared) machine is. Evaluates on the whole
validation stream every --eval-every steps; writes OUT/last.pt at every evaluation and OUT/best.pt
whenever validation loss improves (resume with --resume OUT/last.pt). Log: OUT/train.log.
"""

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from falcon import FalconConfig, FalconForCausalLM  # noqa: E402


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--max-steps", type=int, default=100000)
    ap.add_argument("--minutes", type=float, default=42.0)
    ap.add_argument("--eval-every", type=int, default=150)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", default=None)
    return ap.parse_args()


def load_ids(path: str) -> torch.Tensor:
    return torch.from_numpy(np.fromfile(path, dtype="<u2").astype(np.int64))


@torch.no_grad()
def evaluate(model, val: torch.Tensor, context: int, batch: int) -> float:
    model.eval()
    n = (len(val) - 1) // context
    xs = val[: n * context].view(n, context)
    ys = val[1 : n * context + 1].view(n, context)
    total, count = 0.0, 0
    for i in range(0, n, batch):
        logits = model(xs[i : i + batch])
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ys[i : i + batch].reshape(-1), reduction="sum").item()
        count += ys[i : i + batch].numel()
    model.train()
    return total / count


def main():
    args = parse()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    log = open(os.path.join(args.out, "train.log"), "a")

    def say(msg: str):
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    train = load_ids(os.path.join(args.data, "train.bin"))
    val = load_ids(os.path.join(args.data, "val.bin"))
    if int(train.max()) >= args.vocab or int(val.max()) >= args.vocab:
        raise SystemExit(f"token id >= vocab {args.vocab} in {args.data}")

    cfg = FalconConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                       num_attention_heads=args.heads, num_kv_heads=args.kv_heads, hidden_dropout=args.dropout)
    model = FalconForCausalLM(cfg)
    model.init_weights()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    step, best_val, elapsed_before = 0, float("inf"), 0.0
    if args.resume:
        ck = torch.load(args.resume)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, best_val, elapsed_before = ck["step"], ck["best_val"], ck["elapsed"]
        torch.set_rng_state(ck["rng"])
        say(f"resumed from {args.resume} at step {step}")
    say(f"config {vars(args)}")
    say(f"parameters {model.num_parameters():,}; train {len(train):,} tokens, val {len(val):,} tokens")

    budget = args.minutes * 60.0
    start = time.time() - elapsed_before
    tokens_per_step = args.batch * args.context
    smooth = None
    t_last = time.time()

    def save(path, val_loss):
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best_val": best_val,
                    "val_loss": val_loss, "elapsed": time.time() - start, "rng": torch.get_rng_state(),
                    "cfg": cfg.__dict__, "args": vars(args)}, path + ".tmp")
        os.replace(path + ".tmp", path)

    model.train()
    while True:
        elapsed = time.time() - start
        progress = max(step / args.max_steps, elapsed / budget)
        if progress >= 1.0:
            break
        if step < args.warmup:
            lr = args.lr * (step + 1) / args.warmup
        else:
            lr = args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(train) - args.context - 1, (args.batch,))
        chunk = torch.stack([train[s : s + args.context + 1] for s in starts.tolist()])
        logits = model(chunk[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, args.vocab), chunk[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
        if step % 25 == 0:
            now = time.time()
            say(f"step {step} loss {loss.item():.4f} (ema {smooth:.4f}) lr {lr:.2e} "
                f"{25 * tokens_per_step / (now - t_last):.0f} tok/s elapsed {(now - start) / 60:.1f} min")
            t_last = now
        if step % args.eval_every == 0:
            v = evaluate(model, val, args.context, 16)
            if v < best_val:
                best_val = v
                save(os.path.join(args.out, "best.pt"), v)
            save(os.path.join(args.out, "last.pt"), v)
            say(f"eval step {step}: val loss {v:.4f} (ppl {math.exp(v):.1f}), best {best_val:.4f}")
            t_last = time.time()

    v = evaluate(model, val, args.context, 16)
    if v < best_val:
        best_val = v
        save(os.path.join(args.out, "best.pt"), v)
    save(os.path.join(args.out, "last.pt"), v)
    say(f"done: step {step}, {step * tokens_per_step:,} tokens seen, final train loss (ema) {smooth:.4f}, "
        f"final val loss {v:.4f}, best val {best_val:.4f}, {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
