#!/usr/bin/env bash
# Harpia's startup script for a Google Compute Engine VM (written by `harpia deploy gce`, run as root at every boot).
# Everything it needs is in the instance's metadata (attributes harpia-*), so the same script serves every VM:
#   harpia-bundle-url    gs:// or https:// URL of harpia-linux-x64.tar.gz (made by scripts/build-bundle.sh)
#   harpia-model-id      Hugging Face repository id (or a path) of the model to serve or run
#   harpia-mode          serve (default) or batch
#   harpia-serve-args    extra `harpia serve` flags (TGI's: --max-concurrent-requests 128 --max-total-tokens 4096 …)
#   harpia-api-key       the bearer token clients must send (serve on 0.0.0.0 requires one)
#   harpia-batch-input   batch mode: gs:// URL or local path of the JSONL requests
#   harpia-batch-output  batch mode: gs:// URL or path of the results; copied down at start (resume), up when done/stopped
# A spot VM's preemption is an ACPI shutdown: systemd stops the units with SIGTERM; `harpia serve` stops taking
# requests and finishes those in flight, `harpia batch` stops admitting and drains (exit 75), and the batch unit's
# ExecStopPost copies the results up, so the next VM running this script resumes where this one stopped.
# For tests: HARPIA_METADATA_URL (default http://metadata.google.internal), HARPIA_ROOT (a folder that stands in for
# / when writing files) and HARPIA_LOCAL_SSD (a device, or "none").
set -euo pipefail
metadata="${HARPIA_METADATA_URL:-http://metadata.google.internal}"
root="${HARPIA_ROOT:-}"
log() { echo "harpia-startup: $*" >&2; }
attr() { # attr NAME [DEFAULT]: an instance metadata attribute, or DEFAULT when it is not set
  local value
  if value="$(curl -fsS -H 'Metadata-Flavor: Google' "$metadata/computeMetadata/v1/instance/attributes/$1" 2>/dev/null)"; then
    printf '%s' "$value"
  else
    printf '%s' "${2-}"
  fi
}
fetch() { # fetch URL DEST: gs:// through gcloud, http(s) through curl, else a local copy
  case "$1" in
    gs://*) gcloud storage cp "$1" "$2" ;;
    http://*|https://*) curl -fsSL --retry 5 -o "$2" "$1" ;;
    *) cp "$1" "$2" ;;
  esac
}

bundle_url="$(attr harpia-bundle-url)"
model_id="$(attr harpia-model-id)"
mode="$(attr harpia-mode serve)"
serve_args="$(attr harpia-serve-args)"
[ -n "$bundle_url" ] || { log "metadata attribute harpia-bundle-url is not set"; exit 1; }
[ -n "$model_id" ] || { log "metadata attribute harpia-model-id is not set"; exit 1; }
case "$mode" in serve|batch) ;; *) log "harpia-mode '$mode': expected serve or batch"; exit 1 ;; esac

# 1. The GPUs: the image's NVIDIA driver must be loaded (Deep Learning VM images install it on first boot).
if command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$root/tmp/harpia-gpus.txt" 2>&1; then
  log "GPUs: $(tr '\n' ';' < "$root/tmp/harpia-gpus.txt")"
else
  log "warning: no working NVIDIA driver (nvidia-smi failed); Harpia runs on the CPUs. Use a Deep Learning VM image or install the driver."
fi

# 2. Local SSD for the model cache (fast loads; lost on stop, which is fine: the Hub cache refills it).
data="$root/mnt/disks/harpia"
ssd="${HARPIA_LOCAL_SSD:-/dev/disk/by-id/google-local-nvme-ssd-0}"
mkdir -p "$data"
if [ "$ssd" != none ] && [ -b "$ssd" ]; then
  if ! mountpoint -q "$data"; then
    blkid "$ssd" > /dev/null 2>&1 || mkfs.ext4 -F -q "$ssd"
    mount -o discard,defaults "$ssd" "$data"
  fi
  log "model cache on local SSD $ssd → $data"
else
  log "no local SSD; model cache on the boot disk ($data)"
fi
export HARPIA_HOME="$data"
export SYSTEMD_UNIT_DIR="${SYSTEMD_UNIT_DIR:-$root/etc/systemd/system}"

# 3. Install the bundle (binary, bundled model, systemd unit for serve mode).
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fetch "$bundle_url" "$work/harpia.tar.gz"
tar -C "$work" -xzf "$work/harpia.tar.gz"
installer="$(find "$work" -mindepth 2 -maxdepth 2 -name install.sh | head -n 1)"
[ -n "$installer" ] || { log "$bundle_url holds no install.sh"; exit 1; }

# 4. The model, into the Hub cache on the local SSD (resumed and SHA-256 checked if a previous boot began it).
[ -e "$model_id" ] || "$(dirname "$installer")/bin/harpia" download "$model_id"

env_file="$root/etc/harpia/harpia.env"
mkdir -p "$(dirname "$env_file")"
umask 077
{
  echo "HARPIA_HOME=$data"
  api_key="$(attr harpia-api-key)"
  [ -z "$api_key" ] || echo "HARPIA_API_KEY=$api_key"
} > "$env_file"
umask 022

if [ "$mode" = serve ]; then
  # 5a. `harpia serve` as a systemd service with TGI's flags; restarted on failure, drained by SIGTERM.
  # shellcheck disable=SC2086 # serve_args is a flag list: split on spaces on purpose
  "$installer" --prefix "$root/opt/harpia" --bin-dir "$root/usr/local/bin" --home "$data" --env-file "$env_file" --systemd \
    -- --model-id "$model_id" --hostname 0.0.0.0 --port 8080 $serve_args
  log "serving $model_id on port 8080"
  exit 0
fi

# 5b. Batch: resume from the results a previous VM left, run until done, copy the results back.
"$installer" --prefix "$root/opt/harpia" --bin-dir "$root/usr/local/bin" --home "$data"
input_url="$(attr harpia-batch-input)"
output_url="$(attr harpia-batch-output)"
if [ -z "$input_url" ] || [ -z "$output_url" ]; then log "batch mode needs harpia-batch-input and harpia-batch-output"; exit 1; fi
jobs="$data/batch"
mkdir -p "$jobs"
fetch "$input_url" "$jobs/input.jsonl"
case "$output_url" in
  gs://*) if gcloud storage cp "$output_url" "$jobs/output.jsonl" 2> /dev/null; then log "resuming from $output_url"; else log "starting $output_url afresh"; fi ;;
  *) [ ! -f "$output_url" ] || { cp "$output_url" "$jobs/output.jsonl"; log "resuming from $output_url"; } ;;
esac
case "$output_url" in
  gs://*) upload="gcloud storage cp $jobs/output.jsonl $output_url" ;;
  *) upload="cp $jobs/output.jsonl $output_url" ;;
esac
unit_dir="$SYSTEMD_UNIT_DIR"
mkdir -p "$unit_dir"
cat > "$unit_dir/harpia-batch.service" <<UNIT
# Written by harpia's GCE startup script.
[Unit]
Description=Harpia batch job ($input_url → $output_url)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
EnvironmentFile=$env_file
Environment=DOTNET_BUNDLE_EXTRACT_BASE_DIR=$data/.bundle
ExecStart=$root/opt/harpia/bin/harpia batch $jobs/input.jsonl --output $jobs/output.jsonl --model-id $model_id
# Preemption: SIGTERM stops admitting, the requests in flight finish within GCE's 30 s, then the results go up.
KillSignal=SIGTERM
TimeoutStopSec=28
ExecStopPost=$upload
# 75: stopped early (resume next boot); 0: done.
SuccessExitStatus=75
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
"${SYSTEMCTL:-systemctl}" daemon-reload
"${SYSTEMCTL:-systemctl}" enable --now harpia-batch.service
log "batch $input_url → $output_url started"
