#!/bin/sh
# Image build step (image/Dockerfile): warms Node's compile cache for the coding agent, in
# the service user's ~/.cache/node-compile-cache. `supervisor acp` hands that cache to the
# agent only once it is warm (supervisor/src/acp/mod.rs, warm_compile_cache): the agent's
# start is then about a quarter shorter (bench/node-start.py), and the first prompt after
# each resume waits for one (the API key arrives, the agent restarts). Node writes the
# cache only when a process exits cleanly, and the snapshot is taken with the agent
# running, so without this step the VM's agent would never start warm.
# Runs the agent once under `supervisor acp`, without an API key (it answers initialize
# without one), until /health is 200, then stops it with SIGTERM and checks that cache
# files were written. Fails the build, loudly, on anything else.
set -eu
if [ "$(id -u)" = 0 ]; then
  exec runuser -u user -- env HOME=/home/user sh "$0" "$@"
fi
cache="$HOME/.cache/node-compile-cache"
mkdir -p "$cache"
chmod 700 "$HOME/.cache" "$cache"
# Its own throwaway HOME: what the agent writes there on a first start (~/.claude.json, with
# a random user id) must not be baked into every VM. The cache is keyed by file, not HOME.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
HOME="$scratch" NODE_COMPILE_CACHE="$cache" supervisor acp --listen 127.0.0.1:3099 --cwd /app -- \
  /opt/supervisor/node_modules/.bin/claude-agent-acp &
pid=$!
give_up() {
  echo "warm-agent-cache: $1" >&2
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  exit 1
}
deadline=$(($(date +%s) + 60))
until curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:3099/health; do
  kill -0 "$pid" 2>/dev/null || give_up "supervisor acp exited before the agent was healthy (port 3099 taken?)"
  [ "$(date +%s)" -lt "$deadline" ] || give_up "the agent did not answer /health within 60 s"
  sleep 0.1
done
kill -TERM "$pid"
wait "$pid" || true
# Node puts its files one level down (<version>-<arch>-…/); that directory alone is made
# at start, so it says nothing: a regular file with content does.
[ -n "$(find "$cache" -mindepth 2 -maxdepth 2 -type f -size +0 | head -1)" ] ||
  { echo "warm-agent-cache: no compile cache was written (was /health someone else's?)" >&2; exit 1; }
echo "warm-agent-cache: $(find "$cache" -type f | wc -l) files in $cache"
