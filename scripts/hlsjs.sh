#!/usr/bin/env bash
# The viewer page (ui/) embeds hls.js, pinned in ui/package.json and
# ui/package-lock.json, so that `go build` needs no network. This script
# installs that exact version with `npm ci` (which checks the tarball against
# the lock's integrity hash) in a temp dir and then
#   scripts/hlsjs.sh          copies its dist file and licence into ui/static/
#   scripts/hlsjs.sh --check  fails unless the committed copies equal them
# To move to another version: change it in ui/package.json, run
# `npm install --ignore-scripts --prefix ui` (updates the lock), then this.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp ui/package.json ui/package-lock.json "$tmp/"
(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
pkg="$tmp/node_modules/hls.js"
want=$(node -p 'require("./ui/package.json").dependencies["hls.js"]')
got=$(node -p "require('$pkg/package.json').version")
if [ "$got" != "$want" ]; then echo "hlsjs.sh: npm installed hls.js $got, ui/package.json pins $want" >&2; exit 1; fi

if [ "${1:-}" = "--check" ]; then
  for f in "dist/hls.min.js:hls.min.js" "LICENSE:hls.js.LICENSE"; do
    if ! cmp -s "$pkg/${f%%:*}" "ui/static/${f##*:}"; then
      echo "hlsjs.sh: ui/static/${f##*:} is not hls.js $want's ${f%%:*}; run scripts/hlsjs.sh" >&2
      exit 1
    fi
  done
  echo "hlsjs.sh: ui/static holds hls.js $want as published"
  exit 0
fi
cp "$pkg/dist/hls.min.js" ui/static/hls.min.js
cp "$pkg/LICENSE" ui/static/hls.js.LICENSE
echo "hlsjs.sh: copied hls.js $want into ui/static/"
