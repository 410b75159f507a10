#!/usr/bin/env bash
# Runs every test: installs what is missing, builds the static binary, then runs the
# unit tests and the end-to-end suite against that very binary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
image/build-binary.sh
export SUPERVISOR_BIN=target/x86_64-unknown-linux-musl/release/supervisor
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}"
