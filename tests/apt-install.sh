#!/usr/bin/env bash
# Installs Debian's package PACKAGE (root only; apt-get update only when the install
# fails without it), keeping the downloaded packages in ~/.cache/CACHE/apt (or
# $CACHE_DIR/apt) for the next install.  usage: apt-install.sh PACKAGE CACHE
set -euo pipefail
PACKAGE=$1
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "$PACKAGE is missing: install Debian's $PACKAGE package" >&2
  exit 1
fi
ARCHIVES=${CACHE_DIR:-$HOME/.cache/$2}/apt
mkdir -p "$ARCHIVES/partial"
install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dir::Cache::archives="$ARCHIVES" "$PACKAGE" >/dev/null
}
if ! install 2>/dev/null; then
  apt-get update -q >/dev/null
  install
fi
