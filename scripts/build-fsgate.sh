#!/usr/bin/env bash
# Build the file gate (fsgate/: cordon-fsgate, a FUSE server on go-fuse) into dist/fsgate/cordon-fsgate:
# static (no cgo), reproducible (-trimpath), with no network. go-fuse and x/sys come from Debian's
# golang-github-hanwen-go-fuse-dev (and its dependency golang-golang-x-sys-dev) under /usr/share/gocode,
# laid out as a private GOPATH (Debian installs go-fuse/v2 without the /v2 directory).
# Without them the build says so and leaves no gate: the daemon then refuses file rules and file events
# with a message naming the packages. CORDON_REQUIRE_FSGATE=1 makes that an error.
set -euo pipefail
cd "$(dirname "$0")/.."
out=dist/fsgate/cordon-fsgate
src=${CORDON_GOCODE:-/usr/share/gocode}/src

go=""
for candidate in "${CORDON_GO:-}" /usr/lib/go-1.23/bin/go "$(command -v go 2>/dev/null || true)"; do
  if [[ -n $candidate && -x $candidate ]]; then go=$candidate; break; fi
done
if [[ -z $go || ! -f $src/github.com/hanwen/go-fuse/fs/api.go || ! -d $src/golang.org/x/sys/unix ]]; then
  rm -f "$out"
  cat >&2 <<'MSG'
build-fsgate: WARNING: Go or go-fuse missing, so the file gate (cordon-fsgate) was NOT built; file rules
build-fsgate: and file events will be refused. Install golang-github-hanwen-go-fuse-dev and fuse3
build-fsgate: (bash scripts/setup-host.sh), then run npm run build again.
MSG
  [[ ${CORDON_REQUIRE_FSGATE:-0} == 1 ]] && exit 1
  exit 0
fi
gopath="$PWD/node_modules/.cache/cordon-go/fsgate-path"
mkdir -p "$gopath/src/github.com/hanwen/go-fuse" "$gopath/src/golang.org/x"
ln -sfn "$src/github.com/hanwen/go-fuse" "$gopath/src/github.com/hanwen/go-fuse/v2"
ln -sfn "$src/golang.org/x/sys" "$gopath/src/golang.org/x/sys"
mkdir -p dist/fsgate
export CGO_ENABLED=0 GOPROXY=off GOTOOLCHAIN=local GO111MODULE=off GOPATH="$gopath" GOFLAGS=
export GOCACHE="${GOCACHE:-$PWD/node_modules/.cache/cordon-go/build}"
cd fsgate
"$go" build -trimpath -ldflags "-s -w -buildid=" -o "../$out.tmp" .
mv "../$out.tmp" "../$out"
