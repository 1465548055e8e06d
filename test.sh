#!/usr/bin/env bash
# The whole test suite: restores, builds (warnings are errors) and runs every xUnit test in Release.
# Fixtures are read from ../shared/fixtures beside the checkout.
set -euo pipefail
cd "$(dirname "$0")"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
dotnet build Harpia.slnx -c Release --nologo -v quiet
dotnet test Harpia.slnx -c Release --no-build --nologo --logger "console;verbosity=normal" "$@"
