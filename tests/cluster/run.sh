#!/usr/bin/env bash
# Two `starfish serve` nodes over one S3-compatible bucket (moto), one Redis and one
# NATS, all on loopback, started here and stopped by PID; cluster.mjs drives them
# with the official TypeScript client (installed by the interop harness's npm ci):
# concurrent writers across both nodes, a replay from one node to the other, a
# per-identity limit held by both together, live changes heard on the other node,
# then Redis stopped (signed writes 503, nothing stored) and started again (service
# resumes by itself). Prints "cluster: N passed, M failed".
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
(cd "$ROOT/tests/interop/ts" && npm ci --no-audit --no-fund --loglevel=error --cache "$CACHE/npm" >/dev/null)
(cd "$ROOT" && cargo build --release -q -p starfish-cli)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/starfish"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/starfish-cluster.XXXXXX")
PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap 'stop_all; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# wait_for NAME PID PYTHON-CHECK ARG
wait_for() {
  for _ in $(seq 150); do
    if python3 -c "$3" "$4" 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  echo "$1 did not start:" >&2; cat "$WORK/$1.log" >&2; exit 1
}
HTTP_OK='import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)'
REDIS_UP="import socket,sys; s=socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1); s.sendall(b'PING\r\n'); sys.exit(0 if s.recv(16).startswith(b'+PONG') else 1)"
NATS_UP="import socket,sys; s=socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1); sys.exit(0 if s.recv(4) == b'INFO' else 1)"

S3_PORT=$(free_port)
"$CACHE/moto/bin/python" "$ROOT/tests/s3/moto_serial.py" 127.0.0.1 "$S3_PORT" > "$WORK/moto.log" 2>&1 &
PIDS+=($!)
wait_for moto "$!" "$HTTP_OK" "http://127.0.0.1:$S3_PORT/"
python3 -c "import urllib.request,sys; urllib.request.urlopen(urllib.request.Request(sys.argv[1], method='PUT'))" \
  "http://127.0.0.1:$S3_PORT/starfish-cluster"

REDIS_PORT=$(free_port)
start_redis() {
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no > "$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=($REDIS_PID)
  wait_for redis "$REDIS_PID" "$REDIS_UP" "$REDIS_PORT"
}
start_redis

NATS_PORT=$(free_port)
nats-server -a 127.0.0.1 -p "$NATS_PORT" > "$WORK/nats.log" 2>&1 &
PIDS+=($!)
wait_for nats "$!" "$NATS_UP" "$NATS_PORT"

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 AWS_ALLOW_HTTP=true
BASES=()
for node in a b; do
  port=$(free_port)
  "$BIN" serve --config "$HERE/starfish.json" --port "$port" --base-path / --base-path /v1 \
    --store s3 --s3-bucket starfish-cluster --s3-endpoint "http://127.0.0.1:$S3_PORT" \
    --redis "redis://127.0.0.1:$REDIS_PORT/0" --nats "nats://127.0.0.1:$NATS_PORT" \
    > "$WORK/node-$node.log" 2>&1 &
  PIDS+=($!)
  wait_for "node-$node" "$!" "$HTTP_OK" "http://127.0.0.1:$port/health/ready"
  BASES+=("http://127.0.0.1:$port")
done

# cluster.mjs resolves the official client from the interop harness's install.
ln -sfn "$ROOT/tests/interop/ts/node_modules" "$WORK/node_modules"
cp "$HERE/cluster.mjs" "$WORK/cluster.mjs"
export CLUSTER_STATE="$WORK/state.json"
drive() { echo "== $1"; node "$WORK/cluster.mjs" "$1" "${BASES[0]}" "${BASES[1]}"; }

status=0
drive main || status=1
kill -TERM "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null || true
drive redis-down || status=1
start_redis
drive redis-back || status=1
if [ "$status" -ne 0 ]; then
  for node in a b; do echo "--- node $node"; grep -v ' INFO ' "$WORK/node-$node.log" | tail -n 40; done
fi
exit "$status"
