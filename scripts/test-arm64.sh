#!/usr/bin/env bash
# Executes Harpia's Arm64 code on this x64 machine: publishes the tests (tests/Harpia.ArmRunner, which runs
# Harpia.Tests without VSTest) self-contained for linux-arm64 and runs them under Debian's qemu-user with an arm64
# glibc. Runs the kernel, quantization, format and model tests (every quant type's dot kernels on the NEON/AdvSimd
# paths with the Dp dot-product instructions, end-to-end greedy generation on the fixtures), then the kernel and
# quantization tests again with Dp turned off (DOTNET_EnableArm64Dp=0), so the AdvSimd-only path runs too.
# Needs: apt-get install qemu-user-static libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross
# Usage: scripts/test-arm64.sh [--no-build] [--quick]   (--quick: the kernel tests only, with and without Dp; CI runs it)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/dist/arm64-tests"
build=yes; quick=no
for a in "$@"; do
  case "$a" in
    --no-build) build=no ;;
    --quick) quick=yes ;;
    *) echo "test-arm64.sh: unknown argument '$a' (--no-build, --quick)" >&2; exit 2 ;;
  esac
done
qemu="$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)"
sysroot=/usr/aarch64-linux-gnu
if [ -z "$qemu" ] || [ ! -e "$sysroot/lib/ld-linux-aarch64.so.1" ] || [ ! -e "$sysroot/lib/libstdc++.so.6" ]; then
  echo "test-arm64.sh: needs qemu-user and an arm64 C/C++ runtime:" >&2
  echo "  apt-get install qemu-user-static libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross" >&2
  exit 1
fi
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
if [ "$build" = yes ]; then
  echo "test-arm64.sh: publishing the tests for linux-arm64…" >&2
  rm -rf "$out"
  dotnet publish "$root/tests/Harpia.ArmRunner/Harpia.ArmRunner.csproj" -c Release -r linux-arm64 --self-contained true \
    -p:DebugType=none -p:ErrorOnDuplicatePublishOutputFiles=false --artifacts-path "$root/dist/.arm64-build" -o "$out" --nologo -v quiet
fi
[ -x "$out/Harpia.ArmRunner" ] || { echo "test-arm64.sh: $out/Harpia.ArmRunner not built (run without --no-build)" >&2; exit 1; }

# QEMU_LD_PREFIX: where the arm64 binary's loader and libc are. W^X off: the JIT's double-mapped code pages cost a
# lot under emulation and add nothing to what is tested here.
run() { QEMU_LD_PREFIX="$sysroot" DOTNET_EnableWriteXorExecute=0 DOTNET_TieredCompilation=0 "$qemu" "$out/Harpia.ArmRunner" "$@"; }
kernels=(--class Harpia.Tests.Tensors. --class Harpia.Tests.Quantization.DotKernelTests --class Harpia.Tests.Quantization.QuantRoundTripTests
         --class Harpia.Tests.Models.KernelTests)
start=$SECONDS
if [ "$quick" = yes ]; then
  run "${kernels[@]}"
else
  run --class Harpia.Tests.Tensors. --class Harpia.Tests.Quantization. --class Harpia.Tests.Formats. --class Harpia.Tests.Models.
fi
echo "test-arm64.sh: the kernels again without the Dp (SDOT) instructions:" >&2
DOTNET_EnableArm64Dp=0 run "${kernels[@]}"
echo "test-arm64.sh: OK in $((SECONDS - start)) s under $(basename "$qemu")" >&2
