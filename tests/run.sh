#!/usr/bin/env bash
# The whole test suite: the Rust workspace (unit, router, conformance, CLI tests),
# the store suite on an S3-compatible server, the shared replay cache and limits on
# Redis, live changes between nodes on NATS, queue messages compared with the
# reference Python server's queuing plugin (tests/queue),
# schemathesis against the OpenAPI
# document and a live server, the interop harness with the official clients (against
# our server, then against the reference), then
# two nodes over one bucket with Redis and NATS (tests/cluster), the short fault
# campaign (tests/chaos: three nodes, seeded faults, a checked history; seed 1 and a
# random seed it prints), then the official TypeScript client in Chromium from
# another origin.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
bash tests/s3/run.sh
bash tests/redis/run.sh
bash tests/nats/run.sh
bash tests/queue/run.sh
bash tests/openapi/run.sh
bash tests/interop/run.sh
# The same scenarios against the reference TypeScript server (with its sharing
# plugin): what our server answers, the reference answers too.
STARFISH_INTEROP_SERVER=reference bash tests/interop/run.sh
bash tests/cluster/run.sh
bash tests/chaos/run.sh
bash tests/browser/run.sh
