#!/usr/bin/env bash
# Installs Debian's Chromium if it is missing (see ../apt-install.sh; packages kept
# in ~/.cache/starfish-browser/apt, or $STARFISH_BROWSER_CACHE/apt).
set -euo pipefail
CHROMIUM=${STARFISH_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  if [ -n "${STARFISH_CHROMIUM:-}" ]; then
    echo "no Chromium at $CHROMIUM (STARFISH_CHROMIUM)" >&2
    exit 1
  fi
  CACHE_DIR=${STARFISH_BROWSER_CACHE:-} bash "$(dirname "${BASH_SOURCE[0]}")/../apt-install.sh" chromium starfish-browser
fi
"$CHROMIUM" --version 2>/dev/null
