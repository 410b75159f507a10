#!/usr/bin/env bash
# Installs everything the stack and the tests need on a fresh Debian machine with Rust:
# Debian packages (Xvfb, Chromium, tools) and the npm packages of app-template/, opt/ and
# tests/js/ (image/build-binary.sh adds the musl target itself). Safe to run again: it
# skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in Xvfb:xvfb chromium:chromium file:file curl:curl ps:procps ip:iproute2 nft:nftables socat:socat node:nodejs npm:npm python3:python3; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The unprivileged account the tests drop services to (as E2B's `user` in production),
# with a home for Chromium's profile.
if [ "$(id -u)" = 0 ] && ! id -u supervisor-test >/dev/null 2>&1; then
  echo "setup: useradd supervisor-test"
  useradd --create-home --shell /bin/sh supervisor-test
fi

# Vite 8 needs Node ^20.19 or >= 22.12 (Debian 13's nodejs; Debian 12's is 18).
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 22 || (a === 22 && b >= 12) || (a === 20 && b >= 19) ? 0 : 1)' ||
  { echo "setup: Node $(node --version) is too old: Vite 8 needs ^20.19 or >= 22.12 (Debian 13, or NodeSource on Debian 12)" >&2; exit 1; }

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
for dir in app-template opt tests/js; do
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo "setup: npm ci in $dir"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  fi
done
