#!/usr/bin/env bash
# Figure of issue 3: events/s from one Rust gRPC server stream through `portico` to an HTTP
# watcher, and portico's CPU seconds per 100k events (release builds).
#
#   benches/grpc-stream.sh [SECONDS]     # default 10 s of measurement after a warm-up
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portico/target}"
cargo build -q --release -p portico-cli -p portico-benches --bin portico --bin grpc_stream
"$CARGO_TARGET_DIR/release/grpc_stream" "$CARGO_TARGET_DIR/release/portico" "${1:-10}"
