"""Check falcon.py against the shared golden fixture (HF Falcon forward pass, float64 reference).

    /usr/bin/python3 tools/tiny-falcon/verify_fixture.py [/work/shared/fixtures/models/tiny-falcon-180b]

For every prompt in golden.json: last-position logits must match `last_logits_file` within 1e-3
max-abs (float64 compute; float32 is reported too), argmax per position and greedy_next_8 must be exact.
Exits non-zero on any mismatch.
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from falcon import load_hf_dir  # noqa: E402

torch.set_num_threads(1)
DEFAULT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "fixtures", "models", "tiny-falcon-180b")


def main():
    fixture = sys.argv[1] if len(sys.argv) > 1 else DEFAULT
    with open(os.path.join(fixture, "golden.json")) as f:
        golden = json.load(f)
    ok = True
    for dtype, tol in ((torch.float64, 1e-3), (torch.float32, 2e-3)):
        model = load_hf_dir(fixture, dtype=dtype).eval()
        for i, p in enumerate(golden["prompts"]):
            ids = torch.tensor([p["ids"]])
            with torch.no_grad():
                logits = model(ids)[0]
            ref = torch.frombuffer(bytearray(open(os.path.join(fixture, p["last_logits_file"]), "rb").read()), dtype=torch.float32)
            diff = (logits[-1].double() - ref.double()).abs().max().item()
            argmax_ok = logits.argmax(-1).tolist() == p["argmax_per_position"]
            seq = list(p["ids"])
            with torch.no_grad():
                for _ in range(len(p["greedy_next_8"])):
                    seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
            greedy_ok = seq[len(p["ids"]):] == p["greedy_next_8"]
            good = diff < tol and argmax_ok and greedy_ok
            ok &= good
            print(f"{str(dtype):14s} prompt {i} ({len(p['ids'])} tokens): max|logits - golden| = {diff:.3e} (tol {tol:g}), "
                  f"argmax/pos {'ok' if argmax_ok else 'MISMATCH'}, greedy_next_8 {'ok' if greedy_ok else 'MISMATCH'}")
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
