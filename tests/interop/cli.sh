#!/usr/bin/env bash
# The `starfish` client subcommands (identity, pull, push, append; watch against our
# server only: the reference has no /events route) against a running server of the
# interop config (starfish.json), ours or the reference: the proof that the client,
# on starfish-protocol alone, signs as the official clients do.
# usage: cli.sh STARFISH_BINARY BASE_URL
# Prints "cli: N passed, M failed".
set -uo pipefail
BIN=$1
BASE=$2
W=$(mktemp -d "${TMPDIR:-/tmp}/starfish-cli.XXXXXX")
trap 'rm -rf "$W"' EXIT
export STARFISH_URL=$BASE
unset STARFISH_IDENTITY STARFISH_NAMESPACE
passed=0; failed=0
ok() { passed=$((passed + 1)); }
ko() { echo "FAILED: $1"; failed=$((failed + 1)); }
# expect LABEL PATTERN COMMAND...: the command succeeds and its output matches PATTERN.
expect() {
  local label=$1 pattern=$2 out
  shift 2
  if out=$("$@" 2>&1) && grep -Eq "$pattern" <<<"$out"; then ok; else ko "$label: $out"; fi
}
# refuse LABEL PATTERN COMMAND...: the command fails and its error matches PATTERN.
refuse() {
  local label=$1 pattern=$2 out
  shift 2
  if out=$("$@" 2>&1); then ko "$label succeeded: $out"
  elif grep -Eq "$pattern" <<<"$out"; then ok; else ko "$label: $out"; fi
}

ME=$("$BIN" identity new "$W/me.json" 2>/dev/null)
"$BIN" identity new "$W/other.json" >/dev/null 2>&1
me=(--identity "$W/me.json")
other=(--identity "$W/other.json")

expect "push a self document" '"hash"' "$BIN" push 'users/{identity}/settings' '{"theme":"dark"}' "${me[@]}"
expect "pull it back" '"theme": "dark"' "$BIN" pull 'users/{identity}/settings' "${me[@]}"
expect "push again (base read first)" '"hash"' "$BIN" push 'users/{identity}/settings' '{"theme":"light"}' "${me[@]}"
expect "pull the new data" '"theme": "light"' "$BIN" pull "users/$ME/settings" "${me[@]}"
refuse "a stale base is a conflict" '^starfish: error: 409' \
  "$BIN" push 'users/{identity}/settings' '{}' --base-hash 0000 "${me[@]}"
refuse "another user cannot read it" '^starfish: error: 403' "$BIN" pull "users/$ME/settings" "${other[@]}"
refuse "nor an anonymous caller" '^starfish: error: (401|403)' "$BIN" pull "users/$ME/settings"
expect "append a signed element" '"hash"' "$BIN" append 'logs/{identity}/events' '{"n":1}' "${me[@]}"
expect "append another" '"hash"' "$BIN" append 'logs/{identity}/events' '{"n":2}' "${me[@]}"
expect "pull the log" '"n": 2' "$BIN" pull 'logs/{identity}/events?last=10' "${me[@]}"
expect "a bundle member, pushed signed" '"hash"' "$BIN" push 'p/{identity}/profile' '{"name":"me"}' --base-hash null "${me[@]}"
expect "its public member, read anonymously" '"name": "me"' "$BIN" pull "p/$ME"
# Mounted under /v1: the signature covers the prefix.
expect "through /v1" '"theme": "light"' "$BIN" pull 'users/{identity}/settings' --url "$BASE/v1" "${me[@]}"

echo "cli: $passed passed, $failed failed"
