#!/usr/bin/env bash
# Builds harpia as a self-contained, single-file program for Linux (no .NET SDK or runtime needed where it runs),
# and packs each target with the bundled tiny model and the installer:
#   dist/harpia-<rid>/{bin/harpia, models/harpia-tiny-falcon/, install.sh, TARGET}  and  dist/harpia-<rid>.tar.gz
# Usage: scripts/build-bundle.sh [--rid linux-x64] [--rid linux-arm64] [--out DIR]   (default: both targets, dist/)
# Not trimmed: the CLI's option parser and the JSON of the HTTP server find types by reflection, which trimming would
# break silently; instead the runtime and assemblies are compressed inside the one file.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/dist"
rids=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rid) rids+=("${2:?--rid needs a runtime identifier}"); shift 2 ;;
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "build-bundle.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#rids[@]} -gt 0 ] || rids=(linux-x64 linux-arm64)
for rid in "${rids[@]}"; do
  case "$rid" in linux-x64|linux-arm64) ;; *) echo "build-bundle.sh: --rid $rid: expected linux-x64 or linux-arm64" >&2; exit 2 ;; esac
done
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
commit="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
if [ "$commit" != unknown ] && [ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]; then commit="$commit-dirty"; fi
mkdir -p "$out"
for rid in "${rids[@]}"; do
  stage="$out/harpia-$rid"
  publish="$out/.publish-$rid"
  echo "build-bundle.sh: publishing $rid ($commit)…" >&2
  rm -rf "$stage" "$publish"
  # --artifacts-path keeps this build's obj/bin away from the developer build's (different runtime identifier).
  dotnet publish "$root/src/Harpia.Cli/Harpia.Cli.csproj" -c Release -r "$rid" --self-contained true \
    -p:PublishSingleFile=true -p:EnableCompressionInSingleFile=true -p:IncludeNativeLibrariesForSelfExtract=true \
    -p:DebugType=none -p:SourceRevisionId="$commit" \
    --artifacts-path "$out/.build" -o "$publish" --nologo -v quiet
  mkdir -p "$stage/bin" "$stage/models"
  cp "$publish/Harpia.Cli" "$stage/bin/harpia"
  chmod 0755 "$stage/bin/harpia"
  cp -r "$root/models/harpia-tiny-falcon" "$stage/models/"
  cp "$root/scripts/install.sh" "$stage/install.sh"
  chmod 0755 "$stage/install.sh"
  echo "$rid" > "$stage/TARGET"
  rm -rf "$publish"
  tar -C "$out" -czf "$out/harpia-$rid.tar.gz" "harpia-$rid"
  echo "build-bundle.sh: $out/harpia-$rid.tar.gz ($(du -h "$out/harpia-$rid.tar.gz" | cut -f1); binary $(du -h "$stage/bin/harpia" | cut -f1))" >&2
done
