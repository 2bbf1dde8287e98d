#!/usr/bin/env bash
# The shared replay cache against a real Redis (Debian's redis-server, see
# install.sh) started on loopback without persistence and stopped by PID.
set -euo pipefail
# Installs the server first when it is missing (as root; see install.sh).
bash "$(dirname "${BASH_SOURCE[0]}")/install.sh" >/dev/null
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LOG=$(mktemp)
redis-server --bind 127.0.0.1 --port "$PORT" --save "" --appendonly no > "$LOG" 2>&1 &
PID=$!
trap 'kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 100); do
  if python3 -c "import socket,sys; s=socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1); s.sendall(b'PING\r\n'); sys.exit(0 if s.recv(16).startswith(b'+PONG') else 1)" "$PORT" 2>/dev/null; then break; fi
  kill -0 "$PID" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
export STARFISH_TEST_REDIS_URL="redis://127.0.0.1:$PORT/0"
cd "$ROOT"
# One at a time: one test pauses the server.
cargo test -p starfish-server --features redis --test redis -- --ignored --test-threads=1
