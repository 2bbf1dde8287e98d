#!/usr/bin/env bash
# Queue messages compared with the reference: the reference Python server with its
# queuing plugin (starfish-queuing's NatsQueue) and `starfish serve --queue-nats`,
# both publishing on one nats-server of our own (Debian's, see ../nats/install.sh),
# receive the same writes; compare.py checks they publish the same subjects and
# payloads. Then the JetStream test (a consumer down through 1,000 writes and a
# NATS restart gets every message once) is run by ../nats/run.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
bash "$HERE/../nats/install.sh" >/dev/null
CACHE=${STARFISH_INTEROP_CACHE:-$HOME/.cache/starfish-interop}
VENV="$CACHE/queue-venv"
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt"
(cd "$ROOT" && cargo build -q -p starfish-cli)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/starfish"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
NATS_PORT=$(free_port); REF_PORT=$(free_port); OUR_PORT=$(free_port)
WORK=$(mktemp -d)
PIDS=()
stop() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap stop EXIT
wait_for() {  # URL PID LOG
  for _ in $(seq 100); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  echo "did not start: $1" >&2; cat "$3" >&2; exit 1
}

nats-server -a 127.0.0.1 -p "$NATS_PORT" > "$WORK/nats.log" 2>&1 &
PIDS+=($!)
NATS="nats://127.0.0.1:$NATS_PORT"
"$VENV/bin/python" "$HERE/ref_server.py" "$HERE/config.json" "$REF_PORT" "$NATS" > "$WORK/ref.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$REF_PORT/health" "${PIDS[-1]}" "$WORK/ref.log"
"$BIN" serve --config "$HERE/config.json" --port "$OUR_PORT" --store memory --queue-nats "$NATS" \
  > "$WORK/ours.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$OUR_PORT/health" "${PIDS[-1]}" "$WORK/ours.log"
"$VENV/bin/python" "$HERE/compare.py" "$NATS" "http://127.0.0.1:$REF_PORT" "http://127.0.0.1:$OUR_PORT"
