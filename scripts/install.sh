#!/usr/bin/env bash
# Installs a harpia bundle (made by scripts/build-bundle.sh) on this machine: the self-contained binary, the bundled
# tiny model beside it, the model cache folder, and optionally a systemd service running `harpia serve`.
#   sudo ./install.sh                      # /opt/harpia, /usr/local/bin/harpia, cache /var/lib/harpia
#   ./install.sh                           # as a user: ~/.local/share/harpia, ~/.local/bin/harpia, ~/.cache/harpia
#   sudo ./install.sh --systemd -- --model-id tiiuae/falcon-7b --hostname 0.0.0.0 --port 8080
# Options: --prefix DIR  --bin-dir DIR  --home DIR (model cache, $HARPIA_HOME)  --systemd (install and start
#   harpia.service; arguments after -- go to `harpia serve`)  --no-start  --env-file FILE (the unit's
#   EnvironmentFile, e.g. HARPIA_API_KEY=…)  --from ARCHIVE.tar.gz (install from an archive instead of this folder)
# For tests: SYSTEMD_UNIT_DIR (default /etc/systemd/system) and SYSTEMCTL (default systemctl) can be overridden.
set -euo pipefail
die() { echo "install.sh: $*" >&2; exit 1; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "$(id -u)" -eq 0 ]; then
  prefix=/opt/harpia; bin_dir=/usr/local/bin; home=/var/lib/harpia
else
  prefix="${HOME:?HOME is not set}/.local/share/harpia"; bin_dir="$HOME/.local/bin"; home="$HOME/.cache/harpia"
fi
systemd=no; start=yes; env_file=""; archive=""; serve_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a folder}"; shift 2 ;;
    --bin-dir) bin_dir="${2:?--bin-dir needs a folder}"; shift 2 ;;
    --home) home="${2:?--home needs a folder}"; shift 2 ;;
    --systemd) systemd=yes; shift ;;
    --no-start) start=no; shift ;;
    --env-file) env_file="${2:?--env-file needs a file}"; shift 2 ;;
    --from) archive="${2:?--from needs a .tar.gz}"; shift 2 ;;
    --) shift; serve_args=("$@"); break ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

src="$here"
if [ -n "$archive" ]; then
  [ -f "$archive" ] || die "--from $archive: no such file"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  tar -C "$tmp" -xzf "$archive" || die "--from $archive: not a .tar.gz bundle"
  src="$(find "$tmp" -mindepth 2 -maxdepth 2 -name TARGET -printf '%h\n' | head -n 1)"
  [ -n "$src" ] || die "--from $archive: no harpia bundle inside (no TARGET file)"
fi
[ -x "$src/bin/harpia" ] || die "$src/bin/harpia: not found; run install.sh from an unpacked bundle, or pass --from harpia-<target>.tar.gz"
[ -d "$src/models/harpia-tiny-falcon" ] || die "$src/models/harpia-tiny-falcon: the bundled model is missing"

# The bundle runs on one CPU architecture only: say so rather than fail with "Exec format error".
target="$(cat "$src/TARGET" 2>/dev/null || echo unknown)"
case "$(uname -m)" in
  x86_64) machine=linux-x64 ;;
  aarch64|arm64) machine=linux-arm64 ;;
  *) machine="linux-$(uname -m)" ;;
esac
[ "$target" = "$machine" ] || [ "${HARPIA_INSTALL_ANY_ARCH:-}" = 1 ] \
  || die "this bundle is for $target but this machine is $machine; use harpia-$machine.tar.gz"

mkdir -p "$prefix/bin" "$prefix/models" "$bin_dir" "$home/models"
install -m 0755 "$src/bin/harpia" "$prefix/bin/harpia.new"
mv -f "$prefix/bin/harpia.new" "$prefix/bin/harpia" # atomic: a running service keeps its old file
rm -rf "$prefix/models/harpia-tiny-falcon"
cp -r "$src/models/harpia-tiny-falcon" "$prefix/models/"
ln -sfn "$prefix/bin/harpia" "$bin_dir/harpia"
echo "install.sh: installed $target to $prefix; $bin_dir/harpia; model cache $home" >&2

if [ "$systemd" = yes ]; then
  unit_dir="${SYSTEMD_UNIT_DIR:-/etc/systemd/system}"
  systemctl="${SYSTEMCTL:-systemctl}"
  mkdir -p "$unit_dir"
  exec_start="$prefix/bin/harpia serve"
  for a in "${serve_args[@]}"; do exec_start+=" $(printf '%q' "$a")"; done
  {
    echo "# Written by harpia's install.sh."
    echo "[Unit]"
    echo "Description=Harpia text generation server (TGI and OpenAI APIs)"
    echo "After=network-online.target"
    echo "Wants=network-online.target"
    echo ""
    echo "[Service]"
    echo "Type=simple"
    echo "Environment=HARPIA_HOME=$home"
    echo "Environment=DOTNET_BUNDLE_EXTRACT_BASE_DIR=$home/.bundle"
    [ -z "$env_file" ] || echo "EnvironmentFile=$env_file"
    echo "ExecStart=$exec_start"
    echo "# SIGTERM drains: no new requests, those in flight finish (--shutdown-grace-seconds, 30 by default)."
    echo "KillSignal=SIGTERM"
    echo "TimeoutStopSec=45"
    echo "Restart=on-failure"
    echo "RestartSec=5"
    echo "LimitMEMLOCK=infinity"
    echo ""
    echo "[Install]"
    echo "WantedBy=multi-user.target"
  } > "$unit_dir/harpia.service"
  echo "install.sh: wrote $unit_dir/harpia.service" >&2
  "$systemctl" daemon-reload
  if [ "$start" = yes ]; then "$systemctl" enable --now harpia.service; else "$systemctl" enable harpia.service; fi
fi
"$prefix/bin/harpia" version
