#!/usr/bin/env bash
# The whole test suite: restores, builds (warnings are errors) and runs every xUnit test in Release.
# Fixtures are read from ../shared/fixtures beside the checkout.
set -euo pipefail
cd "$(dirname "$0")"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
# Debian packages the tests use (shellcheck for the deploy scripts, curl for the bundle check), installed when missing
# so this command works on a fresh machine as the README says. Not root: through sudo, if there is one.
if ! command -v shellcheck > /dev/null || ! command -v curl > /dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq shellcheck curl > /dev/null \
    || echo "test.sh: could not install shellcheck/curl; the deploy-script tests will fail until they are installed" >&2
fi
dotnet build Harpia.slnx -c Release --nologo -v quiet
# --- safety: TRX results for the skip summary, and the SIMD matrix --------------------------------------------------
# Every run writes TRX files under TestResults/run; the summary at the end lists each skipped test with its reason.
# Without arguments, the tests of Category=Simd (kernels, quantization, golden models) then run once more per other
# instruction-set path: HARPIA_SIMD=Vector256/Vector128/Scalar, HARPIA_VNNI=emulate (the tiled kernels on the exact
# AVX2 emulation of AVX-VNNI) and HARPIA_VNNI=none (what a CPU without AVX-VNNI runs). HARPIA_SIMD_MATRIX=0 skips them.
results="$PWD/TestResults/run"
rm -rf "$results"
status=0
dotnet test Harpia.slnx -c Release --no-build --nologo --logger "console;verbosity=normal" \
  --logger "trx;LogFileName=all.trx" --results-directory "$results" "$@" || status=$?
if [ $# -eq 0 ] && [ "${HARPIA_SIMD_MATRIX:-1}" != 0 ]; then
  for leg in HARPIA_SIMD=Vector256 HARPIA_SIMD=Vector128 HARPIA_SIMD=Scalar HARPIA_VNNI=emulate HARPIA_VNNI=none; do
    echo "== SIMD matrix: $leg, Category=Simd =="
    env "$leg" dotnet test tests/Harpia.Tests -c Release --no-build --nologo --filter "Category=Simd" \
      --logger "console;verbosity=minimal" --logger "trx;LogFileName=simd-${leg#*=}.trx" --results-directory "$results" || status=$?
  done
fi
echo "== Test summary (skips and their reasons) =="
tools/test-summary.sh "$results"/*.trx
exit $status
# --- end safety ------------------------------------------------------------------------------------------------------
