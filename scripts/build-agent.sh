#!/usr/bin/env bash
# Build the in-sandbox agent (agent/, Go standard library only) into dist/agent/cordon-agent, its
# supervisor (supervisor/, C, static with musl: musl-tools) into dist/agent/cordon-supervise, and the
# daemon's process starter (spawner/, likewise) into dist/spawner/cordon-spawner: static binaries (no
# cgo), reproducible (-trimpath), with no network (GOPROXY=off, GOTOOLCHAIN=local: the modules have no
# dependencies). Go comes from Debian (golang-1.23-go from bookworm-backports, installed by
# scripts/setup-host.sh).
# Without a Go >= 1.23 (or a C compiler that links statically) the build says so and leaves no agent: the daemon then serves every sandbox through
# the runtime's exec path (and records an `agent` event per sandbox), and starts helper programs itself
# (each start then blocks its event loop for a fork of the daemon). CORDON_REQUIRE_AGENT=1 makes that an error.
# With --test it builds nothing and runs the agent's Go unit tests instead (scripts/test.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."

go_ok() { # a Go toolchain of at least 1.23 (agent/go.mod)
  local v
  v=$("$1" env GOVERSION 2>/dev/null) || return 1
  [[ $v =~ ^go1\.([0-9]+) ]] && ((BASH_REMATCH[1] >= 23))
}

go=""
for candidate in "${CORDON_GO:-}" /usr/lib/go-1.23/bin/go "$(command -v go 2>/dev/null || true)"; do
  if [[ -n $candidate && -x $candidate ]] && go_ok "$candidate"; then go=$candidate; break; fi
done
if [[ ${1:-} == --test && -z $go ]]; then
  echo "build-agent: no Go toolchain >= 1.23, so the agent's unit tests (agent/*_test.go) were not run" >&2
  exit 0
fi
if [[ -z $go ]]; then
  rm -f dist/agent/cordon-agent dist/agent/cordon-supervise dist/spawner/cordon-spawner # never leave binaries built from older sources behind
  cat >&2 <<'MSG'
build-agent: WARNING: no Go toolchain >= 1.23 found, so the sandbox agent was NOT built.
build-agent: the daemon will run every command and file operation through the runtime's exec path
build-agent: (slower; an `agent` event on each sandbox says so). To build the agent:
build-agent:   bash scripts/setup-host.sh   (installs golang-1.23-go from bookworm-backports)
build-agent: or set CORDON_GO=/path/to/go, then run npm run build again.
MSG
  [[ ${CORDON_REQUIRE_AGENT:-0} == 1 ]] && exit 1
  exit 0
fi
export CGO_ENABLED=0 GOPROXY=off GOTOOLCHAIN=local GOFLAGS=-mod=mod GOWORK=off GONOSUMDB= GOSUMDB=off
export GOCACHE="${GOCACHE:-$PWD/node_modules/.cache/cordon-go/build}"
export GOPATH="${GOPATH:-$PWD/node_modules/.cache/cordon-go/path}"
if [[ ${1:-} == --test ]]; then # the test command runs the agent's Go unit tests this way
  (cd agent && "$go" test -count=1 -v .)
  exit
fi
for name in agent spawner; do
  out=dist/$name/cordon-$name
  mkdir -p "dist/$name"
  (cd "$name" && "$go" build -trimpath -ldflags "-s -w -buildid=" -o "../$out.tmp" .)
  mv "$out.tmp" "$out"
done

# The supervisor: musl-gcc (musl-tools) makes a ~20 KiB static binary; a C compiler with glibc's static
# library (libc6-dev) will do too. Without either, the agent is removed (it is never started without it).
cc=""
for candidate in musl-gcc cc gcc; do
  if command -v "$candidate" >/dev/null; then cc=$candidate; break; fi
done
sup=dist/agent/cordon-supervise
if [[ -z $cc ]] || ! "$cc" -static -Os -s -Wall -Werror -o "$sup.tmp" supervisor/supervise.c; then
  rm -f "$sup.tmp" "$sup" dist/agent/cordon-agent
  cat >&2 <<'MSG'
build-agent: WARNING: no C compiler could build the agent's supervisor statically, so the sandbox agent was NOT built.
build-agent: the daemon will run every command and file operation through the runtime's exec path.
build-agent: To build it: bash scripts/setup-host.sh (installs musl-tools), then npm run build again.
MSG
  [[ ${CORDON_REQUIRE_AGENT:-0} == 1 ]] && exit 1
  exit 0
fi
mv "$sup.tmp" "$sup"
