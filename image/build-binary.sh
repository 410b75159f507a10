#!/usr/bin/env bash
# Builds the static supervisor binary for the E2B image:
#   target/x86_64-unknown-linux-musl/release/supervisor (stripped, statically linked).
# Usage: image/build-binary.sh [--out PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
cargo build --release --locked -p supervisor --bin supervisor --target "$target"
bin="target/$target/release/supervisor"
if [ "${1:-}" = "--out" ] && [ -n "${2:-}" ]; then
  install -m 0755 "$bin" "$2"
  bin="$2"
fi
file "$bin" 2>/dev/null || true
ls -l "$bin"
