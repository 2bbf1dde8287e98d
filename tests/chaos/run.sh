#!/usr/bin/env bash
# The fault campaign (docs/reliability.md): three `starfish serve` nodes over one
# moto bucket behind a fault proxy, Redis and NATS, all on loopback, started by the
# runner and stopped by PID; concurrent clients; faults on a seeded schedule; the
# history checked. Needs python3 (moto, installed into a cached venv), Debian's
# redis-server and nats-server (tests/redis/install.sh, tests/nats/install.sh).
#
#   tests/chaos/run.sh                      # the short campaign: seed 1, then a random seed
#   tests/chaos/run.sh --seconds 600 --faults store --seed 7   # one campaign, by hand
set -euo pipefail
# Redis and NATS first, when they are missing (as root; tests/*/install.sh).
bash "$(dirname "${BASH_SOURCE[0]}")/../redis/install.sh" >/dev/null
bash "$(dirname "${BASH_SOURCE[0]}")/../nats/install.sh" >/dev/null
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${STARFISH_INTEROP_CACHE:-$HOME/.cache/starfish-interop}
mkdir -p "$CACHE"
if [ ! -x "$CACHE/moto/bin/python" ]; then python3 -m venv "$CACHE/moto"; fi
"$CACHE/moto/bin/pip" install -q --disable-pip-version-check "moto[server]==5.2.5"
(cd "$ROOT" && cargo build --release -q -p starfish-cli -p starfish-chaos)
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
chaos() {
  "$TARGET/starfish-chaos" --bin "$TARGET/starfish" \
    --moto-python "$CACHE/moto/bin/python" --moto-script "$ROOT/tests/s3/moto_serial.py" "$@"
}
if [ "$#" -gt 0 ]; then
  chaos "$@"
else
  chaos --seconds 30 --seed 1 --faults all
  chaos --seconds 30 --seed random --faults all
fi
