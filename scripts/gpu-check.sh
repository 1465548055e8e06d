#!/usr/bin/env bash
# The one command to run on a lent NVIDIA machine (no .NET SDK, no internet; Python + PyTorch + transformers):
#   bash scripts/gpu-check.sh [FOLDER]        (FOLDER: what scripts/prepare-gpu-check.sh made; default gpu-check/)
# It prints, step by step (a failing step is reported and the next one still runs):
#   1. the machine: nvidia-smi, harpia version;
#   2. harpia gpu-selftest: every backend op on the GPU against the CPU backend, and greedy generation of the tiny
#      Falcon fixtures on both (PASS/FAIL per line);
#   3. a synthesized Falcon-40B-shape checkpoint (bf16, --layers N: enough to dwarf the GPU's caches);
#   4. harpia bench on the GPU: prefill (512-token prompt), decode, and 16 concurrent streams, bf16 and Q4_K_M;
#   5. the peer: Hugging Face transformers on PyTorch, same checkpoint, same prompt length, greedy;
#   6. the GPU's measured copy bandwidth and the decode roofline (weight bytes per token ÷ bandwidth).
# Whole run: under 10 minutes on an A100/H100/H200. Environment: LAYERS (default 4), GEN (decode tokens, default 64).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kit="${1:-$root/gpu-check}"
harpia="$kit/bin/harpia"
if [ ! -x "$harpia" ] && [ -f "$harpia.xz" ]; then   # prepare-gpu-check.sh ships the CLI xz-compressed to fit the carry
  if command -v xz > /dev/null; then xz -dc "$harpia.xz" > "$harpia"
  else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$harpia.xz" "$harpia"
  fi
  chmod 0755 "$harpia"
fi
layers="${LAYERS:-4}"
gen="${GEN:-64}"
work="${TMPDIR:-/tmp}/harpia-gpu-check"
failures=0
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }
run() {   # run CMD…: prints the command, runs it with a time limit, counts a failure without stopping
  local limit="$1"; shift
  echo "\$ $*"
  timeout "$limit" "$@"
  local rc=$?
  if [ $rc -ne 0 ]; then echo "gpu-check: step failed (rc $rc): $*"; failures=$((failures + 1)); fi
  return 0
}

[ -x "$harpia" ] || { echo "gpu-check: $harpia not found; run scripts/prepare-gpu-check.sh on the build machine and carry $kit" >&2; exit 2; }
export DOTNET_BUNDLE_EXTRACT_BASE_DIR="${DOTNET_BUNDLE_EXTRACT_BASE_DIR:-$work/.bundle}"
mkdir -p "$work" "$DOTNET_BUNDLE_EXTRACT_BASE_DIR"

step "1. machine"
run 30 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
run 30 "$harpia" version
date -u

step "2. conformance on the GPU (harpia gpu-selftest)"
models=(--model "$root/models/harpia-tiny-falcon")
for m in "$kit"/fixtures/*/; do if [ -f "$m/config.json" ]; then models+=(--model "${m%/}"); fi; done
run 240 "$harpia" gpu-selftest --device cuda:0 "${models[@]}" --new-tokens 8

step "3. synthesized Falcon-40B-shape checkpoint, $layers layers (bf16)"
rm -rf "$work/f40"
run 180 "$harpia" synth --shape falcon-40b --layers "$layers" --out "$work/f40" --seed 1
du -sh "$work/f40" 2>/dev/null

step "4a. harpia bench on the GPU, bf16"
run 240 "$harpia" bench "$work/f40" --device cuda:0 --prompt-tokens 512 --gen-tokens "$gen" --reps 2 --warmup 1 --concurrency 1,16 --concurrency-prompt-tokens 32

step "4b. harpia bench on the GPU, Q4_K_M (quantized on load)"
run 300 "$harpia" bench "$work/f40" --device cuda:0 --quantize q4_k_m --prompt-tokens 512 --gen-tokens "$gen" --reps 2 --warmup 1

step "5. peer: transformers on PyTorch, same checkpoint, greedy"
run 240 python3 "$root/scripts/gpu-peer.py" "$work/f40" --prompt-tokens 512 --gen-tokens "$gen"

step "summary"
echo "gpu-check: $failures step(s) failed"
rm -rf "$work/f40"
[ "$failures" -eq 0 ]
