#!/usr/bin/env bash
# Runs every fuzz target (func FuzzX in a *_fuzz_test.go file) for SECONDS
# each, one at a time, and stops at the first failure. Targets are found with
# grep, so new ones are picked up without editing this script.
#   scripts/fuzz.sh [SECONDS]   (default 10)
set -euo pipefail

secs=${1:-10}
if ! [[ $secs =~ ^[1-9][0-9]*$ ]]; then echo "usage: scripts/fuzz.sh [SECONDS]" >&2; exit 2; fi
cd "$(dirname "$0")/.."

stray=$(grep -rl --include='*_test.go' --exclude='*_fuzz_test.go' '^func Fuzz' . || true)
if [ -n "$stray" ]; then echo "fuzz.sh: move these fuzz targets into *_fuzz_test.go files: $stray" >&2; exit 1; fi
targets=$(grep -rHo --include='*_fuzz_test.go' '^func Fuzz[A-Za-z0-9_]*' . | sort -u)
if [ -z "$targets" ]; then echo "fuzz.sh: no fuzz targets found" >&2; exit 1; fi

while IFS=: read -r file decl; do
  name=${decl#func }
  pkg=./$(dirname "${file#./}")
  echo "fuzz.sh: $name in $pkg for ${secs}s" >&2
  # Minimising a new crasher or interesting input can run far past
  # -fuzztime; 100 executions keep it bounded.
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "${secs}s" -fuzzminimizetime=100x "$pkg" ||
    { echo "fuzz.sh: $name in $pkg failed (a crasher is kept under $pkg/testdata/fuzz/$name)" >&2; exit 1; }
done <<<"$targets"
echo "fuzz.sh: every target ran ${secs}s without a failure" >&2
