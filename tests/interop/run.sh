#!/usr/bin/env bash
# Interop harness: the official Starfish clients (Python and TypeScript, pinned)
# against `starfish serve` (or, with STARFISH_INTEROP_SERVER=reference, against the
# reference TypeScript server), on a free loopback port, stopped by PID.
#
# Installs are cached in $STARFISH_INTEROP_CACHE (default ~/.cache/starfish-interop).
# Prints "interop: N passed, M failed" and exits non-zero if any scenario failed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${STARFISH_INTEROP_CACHE:-$HOME/.cache/starfish-interop}
SERVER=${STARFISH_INTEROP_SERVER:-starfish}
export STARFISH_INTEROP_SERVER=$SERVER
# The admin API (runtime namespaces): the server reads the first, the clients the second.
export STARFISH_ADMIN_KEY=interop-admin-key-0123456789
export STARFISH_INTEROP_ADMIN_KEY=$STARFISH_ADMIN_KEY
mkdir -p "$CACHE"

# --- the clients -------------------------------------------------------------
if [ ! -x "$CACHE/venv/bin/python" ]; then python3 -m venv "$CACHE/venv"; fi
"$CACHE/venv/bin/pip" install -q --disable-pip-version-check --pre \
  -r "$HERE/py/requirements.txt" -c "$HERE/py/constraints.txt"
(cd "$HERE/ts" && npm ci --no-audit --no-fund --loglevel=error --cache "$CACHE/npm" >/dev/null)

# --- the server --------------------------------------------------------------
case "$SERVER" in
  starfish)
    (cd "$ROOT" && cargo build --release -q -p starfish-cli)
    start_cmd=("${CARGO_TARGET_DIR:-$ROOT/target}/release/starfish" serve --base-path / --base-path /v1)
    ;;
  reference)
    # The client subcommands (cli.sh) are ours, whichever server answers them.
    (cd "$ROOT" && cargo build --release -q -p starfish-cli)
    export STARFISH_REF_DIR="$CACHE/reference"
    mkdir -p "$STARFISH_REF_DIR"
    (cd "$STARFISH_REF_DIR" && { [ -f package.json ] || npm init -y >/dev/null; } &&
      npm install --no-audit --no-fund --loglevel=error --cache "$CACHE/npm" \
        @drakkar.software/starfish-server@3.0.0-alpha.65 @drakkar.software/starfish-sharing@3.0.0-alpha.65 \
        @hono/node-server@1 hono@4 >/dev/null)
    start_cmd=(node "$HERE/ref-server.mjs")
    ;;
  *) echo "STARFISH_INTEROP_SERVER must be starfish or reference" >&2; exit 2 ;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/starfish-interop.XXXXXX")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
export INTEROP_STATE="$WORK/state.json"
PID=
stop() { if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=; fi; }
trap 'stop; rm -rf "$WORK"' EXIT

start() {
  "${start_cmd[@]}" --config "$HERE/starfish.json" --port "$PORT" --data "$WORK/data" "$@" \
    > "$WORK/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$BASE/health" 2>/dev/null; then return 0; fi
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "server did not start:" >&2; cat "$WORK/server.log" >&2; exit 1
}

passed=0; failed=0
run() {  # label command...
  local out
  if out=$("${@:2}" 2>&1); then :; fi
  echo "$out" | sed 's/^/  /'
  local line
  line=$(echo "$out" | grep -E '^[a-z-]+: [0-9]+ passed, [0-9]+ failed$' | tail -n 1)
  if [ -z "$line" ]; then echo "  $1: no result line"; failed=$((failed + 1)); return; fi
  passed=$((passed + $(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')))
  failed=$((failed + $(echo "$line" | sed -E 's/.*, ([0-9]+) failed/\1/')))
}

echo "interop: server=$SERVER at $BASE"
start
run py "$CACHE/venv/bin/python" "$HERE/py/scenarios.py" "$BASE" main
run ts node "$HERE/ts/scenarios.mjs" "$BASE" main
run cli bash "$HERE/cli.sh" "${CARGO_TARGET_DIR:-$ROOT/target}/release/starfish" "$BASE"

# `starfish migrate`: namespace acme moves from shared to prefixed keys while the
# server runs; both clients then read what they wrote in it (an extension).
migrate_acme() {
  "${start_cmd[0]}" migrate acme --config "$HERE/starfish.json" --data "$WORK/data" --grace 2 \
    && [ -d "$WORK/data/_starfish/ns/acme" ] && sleep 1.2 \
    && echo "migrate: 1 passed, 0 failed" || echo "migrate: 0 passed, 1 failed"
}
if [ "$SERVER" = starfish ]; then
  run migrate migrate_acme
  run py "$CACHE/venv/bin/python" "$HERE/py/scenarios.py" "$BASE" migrated
  run ts node "$HERE/ts/scenarios.mjs" "$BASE" migrated
fi
stop

# The revocation scenario: restart with the lists both clients produced.
python3 - "$WORK" <<'PY'
import json, os, sys
work = sys.argv[1]
lists = []
for name in ("state.json", "state.json.ts"):
    path = os.path.join(work, name)
    if os.path.exists(path):
        lists += json.load(open(path))["revocations"]
json.dump(lists, open(os.path.join(work, "revocations.json"), "w"))
PY
start --revocations "$WORK/revocations.json"
run py "$CACHE/venv/bin/python" "$HERE/py/scenarios.py" "$BASE" revoked
run ts node "$HERE/ts/scenarios.mjs" "$BASE" revoked
stop

echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
