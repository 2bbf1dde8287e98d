#!/usr/bin/env bash
# Property-based API test: schemathesis (from PyPI, pinned) generates requests from the
# OpenAPI document `starfish openapi` prints for tests/openapi/starfish.yaml and sends
# them to a live `starfish serve` (release build, memory store) on a free loopback
# port, stopped by PID. Every check runs but one (see below); any failure fails the run.
#
# Installs are cached in $STARFISH_INTEROP_CACHE (default ~/.cache/starfish-interop).
# Knobs: STARFISH_OPENAPI_EXAMPLES (test cases per operation and phase, default 40),
# STARFISH_OPENAPI_MAX_TIME (seconds, default 120), STARFISH_OPENAPI_SEED.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${STARFISH_INTEROP_CACHE:-$HOME/.cache/starfish-interop}
EXAMPLES=${STARFISH_OPENAPI_EXAMPLES:-40}
MAX_TIME=${STARFISH_OPENAPI_MAX_TIME:-120}
SEED=${STARFISH_OPENAPI_SEED:-20260101}
mkdir -p "$CACHE"
# Python 3.11's ast.parse can raise "AST constructor recursion depth mismatch" inside
# hypothesis on deep schemas: use a newer Python when there is one.
PY=${STARFISH_OPENAPI_PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.13 python3.12 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3 python3; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then PY=$candidate; break; fi
  done
fi
VENV="$CACHE/schemathesis-py$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ ! -x "$VENV/bin/python" ]; then "$PY" -m venv "$VENV"; fi
"$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==4.32.5"

(cd "$ROOT" && cargo build --release -q -p starfish-cli)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/starfish"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/starfish-openapi.XXXXXX")
PID=
stop() { if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=; fi; }
trap 'stop; rm -rf "$WORK"' EXIT

"$BIN" openapi --config "$HERE/starfish.yaml" > "$WORK/openapi.json"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
# Anonymous callers refused: a request without credentials to a collection that is not
# public answers 401, as its security requirement says (allowed, it answers 403).
"$BIN" serve --config "$HERE/starfish.yaml" --port "$PORT" --store memory \
  --config-endpoint public --no-anonymous > "$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$BASE/health" 2>/dev/null; then break; fi
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
  sleep 0.1
done

# `unsupported_method` is left out: it expects 405 for a method a path does not
# document, and the protocol answers 404 there, as the reference does. The live-change
# streams (`events:*`) are left out too: a subscription that succeeds never ends, and
# schemathesis would wait on it (tests/it/live.rs and the interop suite test them).
echo "openapi: schemathesis $("$VENV/bin/schemathesis" --version | awk '{print $NF}') against $BASE"
set +e
(cd "$WORK" && "$VENV/bin/schemathesis" --config-file "$HERE/schemathesis.toml" \
  run "$WORK/openapi.json" --url "$BASE" \
  --checks all --exclude-checks unsupported_method --exclude-operation-id-regex '^events:' \
  --max-examples "$EXAMPLES" --max-time "$MAX_TIME" --seed "$SEED" --workers 2 \
  --suppress-health-check all --no-color) > "$WORK/schemathesis.log" 2>&1
status=$?
set -e
cat "$WORK/schemathesis.log"
if [ "$status" -ne 0 ]; then
  echo "openapi: schemathesis failed (exit $status); server log:" >&2
  tail -n 50 "$WORK/server.log" >&2
fi
exit "$status"
