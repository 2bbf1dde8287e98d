#!/usr/bin/env bash
# Installs Debian's nats-server if it is missing (root only; apt-get update only
# when the install fails without it). Downloaded packages are kept in
# ~/.cache/starfish-nats/apt for the next install.
set -euo pipefail
if command -v nats-server >/dev/null; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "no nats-server: install Debian's nats-server package" >&2
  exit 1
fi
ARCHIVES=${STARFISH_NATS_CACHE:-$HOME/.cache/starfish-nats}/apt
mkdir -p "$ARCHIVES/partial"
install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dir::Cache::archives="$ARCHIVES" nats-server >/dev/null
}
if ! install 2>/dev/null; then
  apt-get update -q >/dev/null
  install
fi
nats-server --version
