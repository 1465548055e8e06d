#!/usr/bin/env bash
# Prints, from the TRX files that `dotnet test --logger trx` wrote, how many tests ran, passed, failed and were
# skipped, and every skipped test with its reason (xUnit dynamic skips: Skip.If / Skip.IfNot). Plain bash + awk, so
# CI needs nothing else. Usage: tools/test-summary.sh results/*.trx
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 FILE.trx..." >&2; exit 2; }
for trx in "$@"; do
  [ -f "$trx" ] || { echo "$trx: no such TRX file" >&2; continue; }
  awk -v file="$(basename "$trx")" '
    function attr(line, name,   m) {
      if (match(line, name "=\"[^\"]*\"")) return substr(line, RSTART + length(name) + 2, RLENGTH - length(name) - 3)
      return ""
    }
    function unxml(s) {
      gsub(/&quot;/, "\"", s); gsub(/&apos;/, "\x27", s); gsub(/&lt;/, "<", s); gsub(/&gt;/, ">", s); gsub(/&amp;/, "\\&", s)
      gsub(/[\r\n]+/, " ", s); sub(/^ +/, "", s); sub(/ +$/, "", s)
      return s
    }
    /<UnitTestResult / {
      outcome = attr($0, "outcome"); name = attr($0, "testName"); counts[outcome]++; total++
      inSkip = (outcome == "NotExecuted"); reason = ""; grab = 0
      if (inSkip && $0 ~ /\/>[ \t]*$/) { skipped[++nskip] = unxml(name) " -- (no reason given)"; inSkip = 0 }
      next
    }
    inSkip && /<Message>/ { grab = 1; reason = "" }
    inSkip && grab { reason = reason "\n" $0 }
    inSkip && /<\/Message>/ { grab = 0 }
    inSkip && /<\/UnitTestResult>/ {
      gsub(/.*<Message>/, "", reason); gsub(/<\/Message>.*/, "", reason)
      skipped[++nskip] = unxml(name) " -- " (reason == "" ? "(no reason given)" : unxml(reason)); inSkip = 0
    }
    END {
      printf "%s: %d tests, %d passed, %d failed, %d skipped\n", file, total, counts["Passed"], counts["Failed"] + counts["Error"], counts["NotExecuted"]
      for (i = 1; i <= nskip; i++) printf "  skipped: %s\n", skipped[i]
    }
  ' "$trx"
done
