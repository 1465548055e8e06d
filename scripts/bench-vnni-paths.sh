#!/usr/bin/env bash
# Same-run A/B of HARPIA_VNNI=none (the default on CPUs without AVX-VNNI: row kernels, no repacking) against
# HARPIA_VNNI=emulate (the tiled kernels and load-time repacking, on the exact AVX2 emulation of vpdpbusd), each run a
# fresh `harpia bench` process, the order flipped every rep. Prints one JSON line per run.
# usage: scripts/bench-vnni-paths.sh MODEL.gguf [MODEL.gguf …]    env: CLI (default artifacts/cli/Harpia.Cli.dll,
#        which ./harpia builds), REPS (3), PROMPT_TOKENS (32), GEN_TOKENS (8)
set -euo pipefail
cli="${CLI:-$(cd "$(dirname "$0")/.." && pwd)/artifacts/cli/Harpia.Cli.dll}"
[ $# -gt 0 ] || { echo "usage: scripts/bench-vnni-paths.sh MODEL.gguf [MODEL.gguf …]" >&2; exit 2; }
for rep in $(seq 1 "${REPS:-3}"); do
  for v in none emulate; do
    [ $((rep % 2)) = 0 ] && { [ $v = none ] && v=emulate || v=none; }
    for m in "$@"; do
      out=$(HARPIA_VNNI=$v timeout 900 dotnet "$cli" bench "$m" --json --reps 1 --threads 2 --prompt-tokens "${PROMPT_TOKENS:-32}" --gen-tokens "${GEN_TOKENS:-8}" --warmup 0 2>/dev/null | tail -1)
      echo "{\"vnni\":\"$v\",\"rep\":$rep,\"model\":\"$(basename "$m")\",\"load1\":$(cut -d' ' -f1 /proc/loadavg),\"result\":$out}"
    done
  done
done
