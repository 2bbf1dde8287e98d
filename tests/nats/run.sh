#!/usr/bin/env bash
# Live changes between nodes through a real NATS server (Debian's nats-server, see
# install.sh) started on loopback and stopped by PID.
set -euo pipefail
# Installs the server first when it is missing (as root; see install.sh).
bash "$(dirname "${BASH_SOURCE[0]}")/install.sh" >/dev/null
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LOG=$(mktemp)
nats-server -a 127.0.0.1 -p "$PORT" > "$LOG" 2>&1 &
PID=$!
trap 'kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 100); do
  if python3 -c "import socket,sys; s=socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1); sys.exit(0 if s.recv(4) == b'INFO' else 1)" "$PORT" 2>/dev/null; then break; fi
  kill -0 "$PID" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
export STARFISH_TEST_NATS_URL="nats://127.0.0.1:$PORT"
cd "$ROOT"
cargo test -p starfish-server --features nats --test nats -- --ignored
