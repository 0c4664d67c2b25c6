#!/usr/bin/env bash
# The README's main job on a fresh Debian 12 machine (root): install, build, start the daemon,
# run a command in a new gVisor sandbox and print its output, then stop the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
npm ci --prefer-offline --no-audit --no-fund
npm run build
log=$(mktemp)
# The CLI's own entry point rather than npx, so the trap below stops the daemon itself, not a wrapper.
node bin/cordon.js serve >"$log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
echo "waiting for the daemon (the first start builds the base template, about a minute)..."
for _ in $(seq 600); do
  if curl -fsS http://127.0.0.1:7070/v1/health >/dev/null 2>&1; then break; fi
  if ! kill -0 $daemon 2>/dev/null; then cat "$log"; exit 1; fi
  sleep 1
done
npx cordon run -- bash -c 'echo "hello from $(hostname), $(uname -sr) under gVisor"; python3 --version; node --version'
