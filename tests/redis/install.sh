#!/usr/bin/env bash
# Installs Debian's redis-server if it is missing (see ../apt-install.sh; packages
# kept in ~/.cache/starfish-redis/apt, or $STARFISH_REDIS_CACHE/apt).
set -euo pipefail
if ! command -v redis-server >/dev/null; then
  CACHE_DIR=${STARFISH_REDIS_CACHE:-} bash "$(dirname "${BASH_SOURCE[0]}")/../apt-install.sh" redis-server starfish-redis
fi
redis-server --version
