#!/usr/bin/env bash
# Prepares what scripts/gpu-check.sh needs on a GPU machine without a .NET SDK, in the ignored folder gpu-check/:
#   gpu-check/bin/harpia.xz           the self-contained linux-x64 single-file CLI, xz-compressed (unpacked there)
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
# The device tool carries the tracked tree plus this folder, 64 MiB in all, and the tree alone is ~18 MiB: the bundle's
# own single-file build (deflate, ~59 MiB) does not fit. So the CLI is published as an uncompressed single file and
# xz-compressed (~37 MiB); gpu-check.sh unpacks it on the GPU machine (xz, or Python's lzma where xz is missing).
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
raw="$root/dist/gpu-check-publish"
rm -rf "$raw"
dotnet publish "$root/src/Harpia.Cli/Harpia.Cli.csproj" -c Release -r linux-x64 --self-contained true \
  -p:PublishSingleFile=true -p:EnableCompressionInSingleFile=false -p:IncludeNativeLibrariesForSelfExtract=true \
  -p:DebugType=none -p:SourceRevisionId="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)" -o "$raw" --nologo -v quiet
xz -9 -T2 -c "$raw/Harpia.Cli" > "$kit/bin/harpia.xz"
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
kit_bytes=$(du -sb "$kit" | cut -f1)
tree_bytes=$(git -C "$root" ls-files -z | (cd "$root" && xargs -0 du -cb 2>/dev/null) | tail -1 | cut -f1)
bytes=$((kit_bytes + tree_bytes))
echo "prepare-gpu-check.sh: $kit is $((kit_bytes / 1024 / 1024)) MiB, the tracked tree $((tree_bytes / 1024 / 1024)) MiB:" \
  "$((bytes / 1024 / 1024)) MiB carried ($bytes bytes; the limit is 64 MiB)"
if [ "$bytes" -ge "$limit" ]; then
  echo "prepare-gpu-check.sh: too big to carry: drop a fixture from $kit/fixtures" >&2
  exit 1
fi
cat <<RUN
On the GPU machine (the device tool's run, from the repository root):
  run(command="bash scripts/gpu-check.sh gpu-check 2>&1 | tee \$OUT/gpu-check.log", carry=["gpu-check"], timeout_s=600)
RUN
