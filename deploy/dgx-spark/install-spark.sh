#!/usr/bin/env bash
# DGX Spark: `harpia serve` as a systemd service on this one machine (Arm64 Grace CPU, 128 GB of memory shared by
# the CPU and the GPU). Installs the linux-arm64 bundle, fetches the model into the Hub cache, starts the service.
# Usage: sudo deploy/dgx-spark/install-spark.sh harpia-linux-arm64.tar.gz MODEL_ID [harpia serve flags…]
#   e.g. sudo deploy/dgx-spark/install-spark.sh harpia-linux-arm64.tar.gz tiiuae/falcon-40b --hostname 0.0.0.0 --quantize q4_k_m
# (the API key for a non-loopback --hostname goes in /etc/harpia/harpia.env as HARPIA_API_KEY=…)
set -euo pipefail
die() { echo "install-spark.sh: $*" >&2; exit 1; }
archive="${1:-}"; model="${2:-}"
if [ -z "$archive" ] || [ -z "$model" ]; then die "usage: install-spark.sh harpia-linux-arm64.tar.gz MODEL_ID [harpia serve flags…]"; fi
shift 2
[ -f "$archive" ] || die "$archive: no such file"
[ "$(uname -m)" = aarch64 ] || [ "${HARPIA_INSTALL_ANY_ARCH:-}" = 1 ] || die "this is for the DGX Spark's Arm64 CPU; this machine is $(uname -m)"
home="${HARPIA_HOME:-/var/lib/harpia}"
env_file=/etc/harpia/harpia.env
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tar -C "$work" -xzf "$archive"
installer="$(find "$work" -mindepth 2 -maxdepth 2 -name install.sh | head -n 1)"
[ -n "$installer" ] || die "$archive holds no install.sh"

# Unified memory: weights, KV cache and the OS share one pool, so nothing is "offloaded"; what does not fit is
# simply not there. Say how much there is before a long download.
total_gb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1000000 ))
echo "install-spark.sh: ${total_gb} GB of unified memory (the GPU and the CPU share it; \`harpia plan $model\` says what fits)" >&2

mkdir -p "$(dirname "$env_file")" "$home"
[ -f "$env_file" ] || { umask 077; echo "HARPIA_HOME=$home" > "$env_file"; umask 022; }
HARPIA_HOME="$home" "$(dirname "$installer")/bin/harpia" download "$model"
"$installer" --home "$home" --env-file "$env_file" --systemd -- --model-id "$model" "$@"
