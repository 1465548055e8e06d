#!/usr/bin/env bash
# Same-run A/B benchmark of two Harpia builds on the same model files: runs `harpia bench MODEL --json` of the OLD
# and the NEW CLI alternately (the order flips every rep: AB BA AB …), each run a fresh process so its peak RSS is
# its own, and prints per-file medians of prefill tok/s, decode tok/s and peak RSS with the new/old ratios.
# On a shared, noisy machine only such interleaved same-run ratios mean anything.
#
# usage: scripts/bench-compare.sh OLD_CLI_DLL NEW_CLI_DLL MODEL.gguf [MODEL.gguf …]
#        scripts/bench-compare.sh --summarize RUNS.jsonl [RUNS.jsonl …]   (the table again, runs of several sessions pooled)
#   env: REPS (5), THREADS (2), PROMPT_TOKENS (512), GEN_TOKENS (128), BENCH_REPS (1, timed reps inside each
#        process), WARMUP (1.5 s), OUT (folder for the raw JSON lines; default a new folder under /tmp)
# Build each CLI with `dotnet publish src/Harpia.Cli/Harpia.Cli.csproj -c Release -o DIR` (or ./harpia, which
# publishes to artifacts/cli) and pass DIR/Harpia.Cli.dll.
set -euo pipefail

# Medians per file and build, the ratio of the medians, and the median of the per-rep ratios (each rep's new run
# over its old run, taken back to back, so slow drift of the machine cancels). The issue-11 bar: prefill and decode
# ≥ 0.97, peak RSS ≤ 1.00. Reads the run lines on stdin.
summarize() {
  jq -rs '
    def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def r2: . * 100 | round / 100;
    def r3: . * 1000 | round / 1000;
    "| file | build | runs | prefill tok/s (median) | decode tok/s (median) | peak RSS MiB (median) | load avg (1 min, range) |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    (group_by(.model)[] as $runs
     | ($runs[0].model | split("/") | last) as $file
     | [ "old", "new" ] | map(. as $l | $runs | map(select(.label == $l))
         | { label: $l, n: length, prefill: (map(.prefill) | median), decode: (map(.decode) | median),
             rss: (map(.peak_rss) | median), lmin: (map(.load1) | min), lmax: (map(.load1) | max) }) as [$o, $n]
     | ( [$o, $n][] | "| \($file) | \(.label) | \(.n) | \(.prefill | r2) | \(.decode | r2) | \(.rss / 1048576 | round) | \(.lmin)–\(.lmax) |" ),
       "| \($file) | **new / old (of medians)** | | **\($n.prefill / $o.prefill | r3)×** | **\($n.decode / $o.decode | r3)×** | **\($n.rss / $o.rss | r3)×** | |",
       ( $runs | group_by(.rep) | map(select(length == 2) | (map(select(.label == "old"))[0]) as $a | (map(select(.label == "new"))[0]) as $b
           | { prefill: ($b.prefill / $a.prefill), decode: ($b.decode / $a.decode), rss: ($b.peak_rss / $a.peak_rss) })
         | "| \($file) | new / old (median of \(length) per-rep ratios) | | \(map(.prefill) | median | r3)× | \(map(.decode) | median | r3)× | \(map(.rss) | median | r3)× | |" ))'
}

if [ "${1:-}" = --summarize ]; then
  shift
  # Pooled files: reps renumbered apart (file index × 1000 + rep) so each run stays paired with its own partner.
  i=0
  for f in "$@"; do jq -c --argjson i "$i" '.rep += $i * 1000' "$f"; i=$((i + 1)); done | summarize
  exit 0
fi
if [ $# -lt 3 ]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi

old_dll=$1 new_dll=$2
shift 2
for f in "$old_dll" "$new_dll" "$@"; do
  [ -f "$f" ] || { echo "bench-compare: $f: no such file" >&2; exit 2; }
done
command -v jq >/dev/null || { echo "bench-compare: needs jq" >&2; exit 2; }
reps=${REPS:-5} threads=${THREADS:-2} pp=${PROMPT_TOKENS:-512} tg=${GEN_TOKENS:-128}
bench_reps=${BENCH_REPS:-1} warmup=${WARMUP:-1.5}
out=${OUT:-$(mktemp -d /tmp/bench-compare.XXXXXX)}
mkdir -p "$out"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

echo "bench-compare: old=$old_dll new=$new_dll reps=$reps threads=$threads pp$pp tg$tg, raw results in $out" >&2
echo "bench-compare: load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

run_one() { # label dll model rep
  local label=$1 dll=$2 model=$3 rep=$4 line
  line=$(dotnet "$dll" bench "$model" --json --reps "$bench_reps" --threads "$threads" \
    --prompt-tokens "$pp" --gen-tokens "$tg" --warmup "$warmup" 2>>"$out/stderr.log" | tail -n 1)
  jq -c --arg build "$label" --argjson rep "$rep" --arg load "$(cut -d' ' -f1 /proc/loadavg)" \
    '{"label": $build, "rep": $rep, "model": .model, "prefill": .prefill_tokens_per_s, "decode": .decode_tokens_per_s,
      "peak_rss": .peak_rss_bytes, "load1": ($load | tonumber)}' <<<"$line" | tee -a "$out/runs.jsonl" >&2
}

for model in "$@"; do
  for ((rep = 0; rep < reps; rep++)); do
    if ((rep % 2 == 0)); then order=(old new); else order=(new old); fi
    for label in "${order[@]}"; do
      if [ "$label" = old ]; then dll=$old_dll; else dll=$new_dll; fi
      echo "bench-compare: $(basename "$model") rep $((rep + 1))/$reps: $label" >&2
      run_one "$label" "$dll" "$model" "$rep"
    done
  done
done
echo "bench-compare: load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

summarize < "$out/runs.jsonl"
