#!/usr/bin/env bash
# Install what cordon needs on a Debian 12 host (run as root). Idempotent.
# - runsc comes from bookworm-backports: Debian 12's own build breaks `ls -l` in a bookworm rootfs.
# - The backports suite is added on the same mirror the host's apt sources already use.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "setup-host.sh must run as root (it installs packages)" >&2
  exit 1
fi

mirror_for_bookworm() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    # deb822 stanza whose Suites include plain "bookworm": print its first URI.
    awk 'BEGIN{RS=""; FS="\n"} /Suites:[^\n]*bookworm( |$|\n)/ && /Components:[^\n]*main/ {for(i=1;i<=NF;i++) if ($i ~ /^URIs:/) {split($i,a," "); print a[2]; exit}}' "$f"
  done
  if [[ -f /etc/apt/sources.list ]]; then
    awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list
  fi
}

if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  mirror=$(mirror_for_bookworm | head -n1)
  if [[ -z $mirror ]]; then
    echo "no Debian bookworm apt source found; add bookworm-backports by hand" >&2
    exit 1
  fi
  cat > /etc/apt/sources.list.d/cordon-backports.sources <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

export DEBIAN_FRONTEND=noninteractive
# Bounded: an unreachable mirror costs seconds, and packages already in apt's cache still install.
apt_net=(-o Acquire::http::Timeout=20 -o Acquire::https::Timeout=20 -o Acquire::Retries=2)
apt-get "${apt_net[@]}" update -qq || echo "apt-get update failed; installing from what apt already has" >&2
apt-get "${apt_net[@]}" install -y -qq -t bookworm-backports runsc >/dev/null
# Go builds the sandbox agent; without it (no mirror and not in apt's cache) cordon still works through
# the runtime's exec path, so this one may fail (npm run build then says so loudly).
apt-get "${apt_net[@]}" install -y -qq -t bookworm-backports golang-1.23-go >/dev/null \
  || echo "setup-host: WARNING: golang-1.23-go could not be installed; the sandbox agent will not be built" >&2
# The agent's supervisor is a small static C program (scripts/build-agent.sh); without a compiler, no agent.
apt-get "${apt_net[@]}" install -y -qq --no-install-recommends musl-tools >/dev/null \
  || echo "setup-host: WARNING: musl-tools could not be installed; the sandbox agent is built only if a C compiler with a static libc is present" >&2
# The file gate (file rules and events on mounts): a FUSE server built from go-fuse's Debian source package.
apt-get "${apt_net[@]}" install -y -qq --no-install-recommends fuse3 golang-github-hanwen-go-fuse-dev >/dev/null \
  || echo "setup-host: WARNING: fuse3/golang-github-hanwen-go-fuse-dev could not be installed; file rules will be refused" >&2
apt-get "${apt_net[@]}" install -y -qq --no-install-recommends \
  crun runc mmdebstrap busybox-static tini nftables iproute2 e2fsprogs util-linux attr \
  docker-registry skopeo zstd apache2-utils openssl ca-certificates curl nginx-light s3fs fuse3 >/dev/null
echo "host ready: $(runsc --version | head -n1), crun $(crun --version | head -n1 | awk '{print $3}'), runc $(runc --version | head -n1 | awk '{print $3}')"
