#!/usr/bin/env bash
# Installs Debian's Chromium if it is missing (root only; apt-get update only when
# the install fails without it). Downloaded packages are kept in
# ~/.cache/starfish-browser/apt for the next install.
set -euo pipefail
CHROMIUM=${STARFISH_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "no Chromium at $CHROMIUM: install Debian's chromium package (or set STARFISH_CHROMIUM)" >&2
  exit 1
fi
ARCHIVES=${STARFISH_BROWSER_CACHE:-$HOME/.cache/starfish-browser}/apt
mkdir -p "$ARCHIVES/partial"
install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dir::Cache::archives="$ARCHIVES" chromium >/dev/null
}
if ! install 2>/dev/null; then
  apt-get update -q >/dev/null
  install
fi
"$CHROMIUM" --version 2>/dev/null
