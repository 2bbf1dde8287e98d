#!/usr/bin/env bash
# Browser test: the official TypeScript client, bundled with esbuild (pinned in
# package.json / package-lock.json), in a page served from a second loopback origin,
# run in Debian's Chromium through playwright-core against `starfish serve
# --cors-origin <that origin>`. A page from a third origin must be refused.
# Servers run on free loopback ports and are stopped by PID.
#
# npm's cache is shared with the interop harness ($STARFISH_INTEROP_CACHE, default
# ~/.cache/starfish-interop). Chromium: /usr/bin/chromium, or $STARFISH_CHROMIUM
# (install-chromium.sh installs Debian's package when it is missing and we are root).
# Prints "browser: N passed, M failed" and exits non-zero if any scenario failed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${STARFISH_INTEROP_CACHE:-$HOME/.cache/starfish-interop}
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PLAYWRIGHT_BROWSERS_PATH=0
mkdir -p "$CACHE"

# --- the browser, the client, the bundle -------------------------------------
bash "$HERE/install-chromium.sh"
(cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error --cache "$CACHE/npm" >/dev/null)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/starfish-browser.XXXXXX")
mkdir -p "$WORK/site"
cp "$HERE/page/index.html" "$WORK/site/"
"$HERE/node_modules/.bin/esbuild" "$HERE/page/app.mjs" --bundle --format=esm --platform=browser \
  --target=es2022 --outfile="$WORK/site/app.js" --log-level=warning

# --- the servers -------------------------------------------------------------
(cd "$ROOT" && cargo build --release -q -p starfish-cli)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
API_PORT=$(free_port); PAGE_PORT=$(free_port); OTHER_PORT=$(free_port)
API="http://127.0.0.1:$API_PORT"
PAGE="http://127.0.0.1:$PAGE_PORT"
OTHER="http://127.0.0.1:$OTHER_PORT"
PIDS=()
stop() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop; rm -rf "$WORK"' EXIT

wait_up() {  # url pid log
  for _ in $(seq 100); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  echo "did not start: $1" >&2; cat "$3" >&2; exit 1
}

"${CARGO_TARGET_DIR:-$ROOT/target}/release/starfish" serve --config "$HERE/starfish.json" \
  --port "$API_PORT" --data "$WORK/data" --cors-origin "$PAGE" > "$WORK/server.log" 2>&1 &
PIDS+=($!); wait_up "$API/health" "$!" "$WORK/server.log"
for port in "$PAGE_PORT" "$OTHER_PORT"; do
  python3 -m http.server "$port" --bind 127.0.0.1 --directory "$WORK/site" > "$WORK/page-$port.log" 2>&1 &
  PIDS+=($!); wait_up "http://127.0.0.1:$port/index.html" "$!" "$WORK/page-$port.log"
done

echo "browser: server $API (--cors-origin $PAGE), page $PAGE, refused page $OTHER"
status=0
node "$HERE/driver.mjs" "$API" "$PAGE" "$OTHER" || status=$?
if [ "$status" -ne 0 ]; then echo "--- server log"; cat "$WORK/server.log"; fi
exit "$status"
