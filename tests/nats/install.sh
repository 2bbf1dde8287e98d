#!/usr/bin/env bash
# Installs Debian's nats-server if it is missing (see ../apt-install.sh; packages
# kept in ~/.cache/starfish-nats/apt, or $STARFISH_NATS_CACHE/apt).
set -euo pipefail
if ! command -v nats-server >/dev/null; then
  CACHE_DIR=${STARFISH_NATS_CACHE:-} bash "$(dirname "${BASH_SOURCE[0]}")/../apt-install.sh" nats-server starfish-nats
fi
nats-server --version
