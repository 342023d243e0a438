#!/usr/bin/env bash
# Screenshots of the docs site by headless Chromium, with every other host unreachable, so that they
# show what a reader sees offline; prints the pages' console errors. For people, not CI.
# Usage: reper-docs && scripts/screenshots.sh [site] [out]     (Debian: apt-get install -y chromium)
set -euo pipefail
site=$(realpath "${1:-site}")
out=$(mkdir -p "${2:-$site/screenshots}" && realpath "${2:-$site/screenshots}")
results=$(ls "$site"/results/*.html 2>/dev/null | tail -n 1 || true)   # the last stage's page
shoot() {  # page, png, window height (px)
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --host-resolver-rules="MAP * ~NOTFOUND" \
    --user-data-dir="$(mktemp -d)" --virtual-time-budget=8000 --window-size=1280,"$3" \
    --enable-logging=stderr --v=0 --screenshot="$2" "file://$1" 2>&1 | grep -F ":CONSOLE" | sed "s|^|$(basename "$1"): |" || true
}
shoot "$site/index.html" "$out/front.png" 1800
if [ -n "$results" ]; then shoot "$results" "$out/results.png" 2600; fi
shoot "$site/api/config.html" "$out/api.png" 1400
if [ -f "$site/plots/index.html" ]; then shoot "$site/plots/index.html" "$out/plots.png" 900; fi
ls -1 "$out"/*.png
