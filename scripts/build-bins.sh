#!/usr/bin/env bash
# Builds the binaries the test scripts run: target/debug/opswire,
# target/debug/opswire-bench and target/debug/examples/raw_writer.
#
# Built exactly as `cargo test --lib --tests` (the stage before them in
# scripts/test.sh) builds the binaries, so after it this costs seconds: naming
# an example makes cargo enable the dev-dependencies' features, as a test
# build does. A plain `cargo build --bin opswire` resolves fewer features and
# would rebuild ~40 crates (and replace target/debug/opswire) for nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
# --workspace: opswire-bench is a crate of its own (bench/opswire-bench).
exec cargo build --locked --workspace --bins --example raw_writer "$@"
