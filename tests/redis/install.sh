#!/usr/bin/env bash
# Installs Debian's redis-server if it is missing (root only; apt-get update only
# when the install fails without it). Downloaded packages are kept in
# ~/.cache/starfish-redis/apt for the next install.
set -euo pipefail
if command -v redis-server >/dev/null; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "no redis-server: install Debian's redis-server package" >&2
  exit 1
fi
ARCHIVES=${STARFISH_REDIS_CACHE:-$HOME/.cache/starfish-redis}/apt
mkdir -p "$ARCHIVES/partial"
install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dir::Cache::archives="$ARCHIVES" redis-server >/dev/null
}
if ! install 2>/dev/null; then
  apt-get update -q >/dev/null
  install
fi
redis-server --version
