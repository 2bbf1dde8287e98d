#!/usr/bin/env bash
# The whole test suite: the Rust workspace (unit, router, conformance, CLI tests),
# then the interop harness with the official clients.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
bash tests/interop/run.sh
