#!/usr/bin/env bash
# Build the in-sandbox agent (agent/, Go standard library only) into dist/agent/cordon-agent: a static
# binary (no cgo), reproducible (-trimpath), with no module downloads. Go comes from Debian
# (golang-1.23-go from bookworm-backports, installed by scripts/setup-host.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
go=""
for candidate in "${CORDON_GO:-}" /usr/lib/go-1.23/bin/go "$(command -v go 2>/dev/null || true)"; do
  if [[ -n $candidate && -x $candidate ]]; then go=$candidate; break; fi
done
if [[ -z $go ]]; then
  echo "build-agent: no Go toolchain found; install golang-1.23-go (bash scripts/setup-host.sh) or set CORDON_GO" >&2
  exit 1
fi
mkdir -p dist/agent
export CGO_ENABLED=0 GOPROXY=off GOTOOLCHAIN=local GOFLAGS= GOWORK=off
export GOCACHE="${GOCACHE:-$PWD/node_modules/.cache/cordon-go}"
cd agent
"$go" build -trimpath -ldflags "-s -w -buildid=" -o ../dist/agent/cordon-agent.tmp .
mv ../dist/agent/cordon-agent.tmp ../dist/agent/cordon-agent
