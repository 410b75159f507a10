#!/usr/bin/env bash
# Runs every test: installs what is missing, builds the static binary, then runs the
# unit tests and the end-to-end suite against that very binary, then the image smoke test
# (image/smoke.sh: builds image/Dockerfile and boots it as E2B does; counted as one test).
# Ends with one line "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
image/build-binary.sh
export SUPERVISOR_BIN=target/x86_64-unknown-linux-musl/release/supervisor
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast --lib --bins --tests -- --test-threads="${TEST_THREADS:-4}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# The tests that need the release binary just built (ignored in a plain `cargo test`).
cargo test -p e2e --locked --test cli the_release_binary_is_static -- --ignored 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
if image/smoke.sh; then smoke="1 passed; 0 failed"; else smoke="0 passed; 1 failed"; rc=1; fi
echo "test result: image smoke test. $smoke" >>"$log"
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$rc"
