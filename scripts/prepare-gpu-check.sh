#!/usr/bin/env bash
# Prepares what scripts/gpu-check.sh needs on a GPU machine without a .NET SDK, in the ignored folder gpu-check/:
#   gpu-check/bin/harpia              the self-contained linux-x64 single-file build (scripts/build-bundle.sh)
#   gpu-check/fixtures/<model>/       the tiny Falcon fixture tiny-falcon-180b-h256 (config + safetensors) for the end-to-end
#                                     comparison (the repository's own models/harpia-tiny-falcon travels with the tree)
# Then prints the folder's size (the device tool carries at most 64 MiB) and the exact command to run there.
# Usage: scripts/prepare-gpu-check.sh [--fixtures DIR]   (default ../shared/fixtures beside the checkout)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fixtures="$root/../shared/fixtures"
while [ $# -gt 0 ]; do
  case "$1" in
    --fixtures) fixtures="${2:?--fixtures needs a folder}"; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "prepare-gpu-check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
kit="$root/gpu-check"
limit=$((64 * 1024 * 1024))
rm -rf "$kit"
mkdir -p "$kit/bin" "$kit/fixtures"
"$root/scripts/build-bundle.sh" --rid linux-x64 --out "$root/dist"
cp "$root/dist/harpia-linux-x64/bin/harpia" "$kit/bin/harpia"
chmod 0755 "$kit/bin/harpia"
# GQA (8 heads over 2 KV heads) at hidden 256, Falcon-40B/180B's layout. The binary is ~56 MiB, so only this small
# fixture fits beside it (tiny-falcon-7b's 65,024-token embedding alone is 8 MiB).
m=tiny-falcon-180b-h256
src="$fixtures/models/$m"
if [ -d "$src" ]; then
  mkdir -p "$kit/fixtures/$m"
  cp "$src/config.json" "$src/model.safetensors" "$kit/fixtures/$m/"
else
  echo "prepare-gpu-check.sh: $src not found; the check will use models/harpia-tiny-falcon only" >&2
fi
bytes=$(du -sb "$kit" | cut -f1)
echo "prepare-gpu-check.sh: $kit is $((bytes / 1024 / 1024)) MiB ($bytes bytes; the limit is 64 MiB)"
if [ "$bytes" -ge "$limit" ]; then
  echo "prepare-gpu-check.sh: too big to carry: drop a fixture from $kit/fixtures" >&2
  exit 1
fi
cat <<RUN
On the GPU machine (the device tool's run, from the repository root):
  run(command="bash scripts/gpu-check.sh gpu-check 2>&1 | tee \$OUT/gpu-check.log", carry=["gpu-check"], timeout_s=600)
RUN
