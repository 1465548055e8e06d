#!/usr/bin/env bash
# The bundle on a machine without .NET: installs dist/harpia-linux-x64.tar.gz with one command in a shell whose PATH
# has no `dotnet` (only the few tools the installer uses), then checks that the installed `harpia` reports its build,
# serves the bundled model (/health, /generate, /v1/chat/completions), runs `harpia batch` with the bundled model,
# and that `install.sh --systemd` writes a unit that runs `harpia serve` (systemctl faked).
# Usage: scripts/test-bundle.sh [ARCHIVE]   (default: dist/harpia-<this machine>.tar.gz; build it first)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "$(uname -m)" in x86_64) rid=linux-x64 ;; aarch64) rid=linux-arm64 ;; *) echo "test-bundle.sh: unsupported machine $(uname -m)" >&2; exit 1 ;; esac
archive="${1:-$root/dist/harpia-$rid.tar.gz}"
[ -f "$archive" ] || { echo "test-bundle.sh: $archive not found; run scripts/build-bundle.sh --rid $rid first" >&2; exit 1; }
work="$(mktemp -d)"
server_pid=""
cleanup() { if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "test-bundle.sh: FAIL: $*" >&2; [ ! -f "$work/serve.log" ] || tail -n 20 "$work/serve.log" >&2; exit 1; }

# A PATH of only these tools: no dotnet, no SDK.
tools="$work/tools"
mkdir -p "$tools"
for t in bash sh tar gzip cat cp mv rm ln mkdir install chmod id uname find head sed dirname mktemp printf env sleep; do
  ln -s "$(command -v "$t")" "$tools/$t"
done
clean_env=(env -i "PATH=$work/home/bin:$tools" "HOME=$work/home" "TMPDIR=$work")
mkdir -p "$work/home"
if "${clean_env[@]}" bash -c 'command -v dotnet' >/dev/null; then fail "dotnet is still on the clean PATH"; fi

# 1. Install: one command, as a user (no root needed).
"${clean_env[@]}" bash "$root/scripts/install.sh" --from "$archive" --prefix "$work/home/harpia" --bin-dir "$work/home/bin" \
  --home "$work/home/cache" > "$work/install.log" 2>&1 || { cat "$work/install.log" >&2; fail "install.sh failed"; }
[ -x "$work/home/bin/harpia" ] || fail "no harpia on the PATH after install"
[ -d "$work/home/cache/models" ] || fail "install.sh did not create the model cache"
"${clean_env[@]}" harpia version > "$work/version.txt" || fail "harpia version failed"
grep -q "^build $rid self-contained single-file" "$work/version.txt" || fail "harpia version: $(cat "$work/version.txt")"
grep -Eq '^commit [0-9a-f]{7,}' "$work/version.txt" || fail "harpia version names no commit: $(cat "$work/version.txt")"

# 2. Serve the bundled model from another folder (found beside the installed binary), and ask it.
port=$(( 20000 + RANDOM % 20000 ))
(cd "$work" && exec "${clean_env[@]}" harpia serve --port "$port" > "$work/serve.log" 2>&1) &
server_pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 120); do
  if curl -fsS "$url/health" > /dev/null 2>&1; then break; fi
  kill -0 "$server_pid" 2>/dev/null || fail "harpia serve exited"
  sleep 0.5
done
curl -fsS "$url/health" > /dev/null || fail "/health did not answer"
curl -fsS "$url/generate" -H 'Content-Type: application/json' \
  -d '{"inputs":"def fib(n):","parameters":{"max_new_tokens":8}}' > "$work/generate.json" || fail "/generate failed"
grep -Eq '"generated_text": ?"[^"]' "$work/generate.json" || fail "/generate answered $(cat "$work/generate.json")"
curl -fsS "$url/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model":"tgi","messages":[{"role":"user","content":"What is a list?"}],"max_tokens":8,"temperature":0}' > "$work/chat.json" || fail "/v1/chat/completions failed"
for want in '"object": ?"chat.completion"' '"model": ?"harpia-tiny-falcon"' '"role": ?"assistant"'; do
  grep -Eq "$want" "$work/chat.json" || fail "/v1/chat/completions answered $(cat "$work/chat.json")"
done
kill -TERM "$server_pid"
wait "$server_pid" || fail "harpia serve did not exit cleanly on SIGTERM"
server_pid=""

# 3. harpia batch with the bundled model, no --model.
printf '%s\n' '{"custom_id":"a","method":"POST","url":"/v1/completions","body":{"prompt":"Hello","max_tokens":4,"temperature":0}}' \
  '{"id":"b","inputs":"import os","parameters":{"max_new_tokens":4}}' > "$work/in.jsonl"
(cd "$work" && "${clean_env[@]}" harpia batch in.jsonl --output out.jsonl --no-progress) 2> "$work/batch.log" || { cat "$work/batch.log" >&2; fail "harpia batch failed"; }
[ "$(wc -l < "$work/out.jsonl")" -eq 2 ] || fail "harpia batch wrote $(wc -l < "$work/out.jsonl") records, expected 2"

# 4. The systemd unit (systemctl faked: this checks what is written and asked, not systemd itself).
mkdir -p "$work/units"
printf '#!/bin/sh\necho "$@" >> "%s/systemctl.log"\n' "$work" > "$tools/fake-systemctl"
chmod +x "$tools/fake-systemctl"
"${clean_env[@]}" SYSTEMD_UNIT_DIR="$work/units" SYSTEMCTL=fake-systemctl bash "$root/scripts/install.sh" --from "$archive" \
  --prefix "$work/home/harpia" --bin-dir "$work/home/bin" --home "$work/home/cache" --systemd -- --hostname 127.0.0.1 --port 8080 \
  > "$work/install2.log" 2>&1 || { cat "$work/install2.log" >&2; fail "install.sh --systemd failed"; }
unit="$work/units/harpia.service"
grep -qx "ExecStart=$work/home/harpia/bin/harpia serve --hostname 127.0.0.1 --port 8080" "$unit" || fail "unit ExecStart: $(grep ExecStart "$unit")"
grep -qx "Restart=on-failure" "$unit" || fail "unit does not restart on failure"
grep -qx "KillSignal=SIGTERM" "$unit" || fail "unit does not stop with SIGTERM"
grep -qx "enable --now harpia.service" "$work/systemctl.log" || fail "install.sh did not enable the service: $(cat "$work/systemctl.log")"
echo "test-bundle.sh: OK ($rid bundle: installed without dotnet, served /health /generate /v1/chat/completions, batch, systemd unit)"
