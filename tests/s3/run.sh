#!/usr/bin/env bash
# Runs the store suite, then the binary's S3 test, against an S3-compatible server
# (moto, from PyPI) started on loopback and stopped by PID. Prints cargo test's
# result lines.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${STARFISH_INTEROP_CACHE:-$HOME/.cache/starfish-interop}
mkdir -p "$CACHE"
if [ ! -x "$CACHE/moto/bin/python" ]; then python3 -m venv "$CACHE/moto"; fi
"$CACHE/moto/bin/pip" install -q --disable-pip-version-check "moto[server]==5.2.5"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LOG=$(mktemp)
# moto with its conditional PUTs made atomic (see moto_serial.py).
"$CACHE/moto/bin/python" "$ROOT/tests/s3/moto_serial.py" 127.0.0.1 "$PORT" > "$LOG" 2>&1 &
PID=$!
trap 'kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 100); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "http://127.0.0.1:$PORT/" 2>/dev/null; then break; fi
  kill -0 "$PID" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
# Path-style bucket creation: PUT /<bucket>.
python3 -c "import urllib.request,sys; urllib.request.urlopen(urllib.request.Request(sys.argv[1], method='PUT'))" \
  "http://127.0.0.1:$PORT/starfish-test"

export STARFISH_TEST_S3=1 AWS_ENDPOINT="http://127.0.0.1:$PORT" AWS_ALLOW_HTTP=true \
  AWS_BUCKET_NAME=starfish-test AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
cd "$ROOT"
cargo test -p starfish-server --features aws --test s3
# The `starfish` binary from the default build (the S3 store is built in), set up
# only by STARFISH_* and these AWS_* variables: push, then pull from a second process.
cargo test -p starfish-cli --test it -- cli::s3_store_configured_only_by_environment_variables
