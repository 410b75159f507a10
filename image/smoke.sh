#!/usr/bin/env bash
# The E2B template as it ships: builds the image from image/Dockerfile as committed (podman,
# base node:24-bookworm-slim, made locally by image/local-base.sh if this machine has none),
# boots it the way E2B boots a template, and checks it from outside, through the ports the
# container publishes on its own network (slirp4netns: no host routes, no host firewall
# rules). E2B's run, reproduced: passwordless sudo for `user`, the start command of
# image/template.ts run as `user` (su), --cap-add NET_ADMIN, its ready command until exit 0.
# Prints a checklist, one figure or verdict per line; exits 1 naming the first failed step.
# Usage: image/smoke.sh [--keep]   (root; --keep leaves the container running at the end
# instead of stopping it, for a look inside; the stop checks are then skipped)
# Env: SMOKE_IMAGE (default localhost/sandbox-supervisor:smoke), SMOKE_PAUSE_SECS (40),
# SMOKE_NO_CARGO=1 (use the static binary already built instead of image/build-binary.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CONTAINERS_CONF="$root/image/containers.conf"
IMAGE=${SMOKE_IMAGE:-localhost/sandbox-supervisor:smoke}
PAUSE_SECS=${SMOKE_PAUSE_SECS:-40}
NAME=supervisor-smoke-$$
PUBLIC_HOST=3000-smoke$$abcdefgh.e2b.test  # a public-style sandbox host name
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1
T_START=$(date +%s)
step=setup
forwarders=()
work=$(mktemp -d /tmp/supervisor-smoke.XXXXXX)

cleanup() {
  for pid in "${forwarders[@]}"; do kill "$pid" 2>/dev/null; done
  if [ "$KEEP" = 0 ]; then podman rm -f -t 0 "$NAME" >/dev/null 2>&1; fi
  podman image unmount "$IMAGE" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

ok() { printf '[ok]   %-26s %s\n' "$1" "$2"; }
fail() {
  printf '[FAIL] %-26s %s\n' "$step" "$1"
  if podman container exists "$NAME" 2>/dev/null; then
    echo "--- last 40 lines of the container's output ---"
    podman logs --tail 40 "$NAME" 2>&1
  fi
  echo "smoke: FAILED at step '$step' after $(( $(date +%s) - T_START )) s"
  exit 1
}
now_ms() { date +%s%3N; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.0f MiB", b / 1048576 }'; }
in_ctr() { podman exec "$NAME" "$@"; }            # as root, like E2B's envd with user: 'root'
status_json() { in_ctr /usr/local/bin/supervisor ctl --json status; }
# The string constant NAME of image/template.ts (the commands are read, never retyped).
ts_const() { sed -n "s/^export const $1 = '\\(.*\\)'\$/\\1/p" image/template.ts; }

# ---- prerequisites ---------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || fail "run as root (podman, nsenter)"
need=()
for pair in podman:podman runc:runc slirp4netns:slirp4netns debootstrap:debootstrap socat:socat jq:jq nsenter:util-linux openssl:openssl; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "smoke: apt-get install ${need[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"$work/apt.log" 2>&1 ||
    { cat "$work/apt.log"; fail "apt-get install ${need[*]} failed"; }
fi
scripts/setup.sh >"$work/setup.log" 2>&1 || { cat "$work/setup.log"; fail "scripts/setup.sh failed"; }
START_CMD=$(ts_const startCmd)
READY_CMD=$(ts_const readyCmd)
[ -n "$START_CMD" ] && [ -n "$READY_CMD" ] || fail "image/template.ts: no startCmd/readyCmd string constants"
DEADLINE=$(sed -n 's/^shutdown_timeout = "\([0-9]*\)s".*/\1/p' opt/supervisor.toml)
[ -n "$DEADLINE" ] || fail "opt/supervisor.toml: no shutdown_timeout in seconds"
ok prerequisites "podman $(podman version --format '{{.Client.Version}}'), node $(node --version), template.ts start/ready read"

# ---- base image and binary -------------------------------------------------------------------
step=base
t=$(date +%s)
image/local-base.sh >"$work/base.log" 2>&1 || { cat "$work/base.log"; fail "image/local-base.sh failed"; }
ok "base image" "$(tail -1 "$work/base.log" | sed 's/^local-base: //') ($(( $(date +%s) - t )) s)"

step=binary
t=$(date +%s)
if [ "${SMOKE_NO_CARGO:-0}" = 1 ]; then
  [ -x target/x86_64-unknown-linux-musl/release/supervisor ] || fail "SMOKE_NO_CARGO=1 but target/x86_64-unknown-linux-musl/release/supervisor is missing"
else
  image/build-binary.sh >"$work/binary.log" 2>&1 || { tail -30 "$work/binary.log"; fail "image/build-binary.sh failed"; }
fi
ok "static binary" "$(target/x86_64-unknown-linux-musl/release/supervisor --version) ($(( $(date +%s) - t )) s)"

# ---- build -----------------------------------------------------------------------------------
# npm inside the build trusts what this machine's npm trusts (NODE_EXTRA_CA_CERTS): mounted
# for the RUN steps only, through root's npmrc; never copied (checked below).
step=build
mounts=()
CA=${NODE_EXTRA_CA_CERTS:-}
if [ -n "$CA" ] && [ -f "$CA" ]; then
  printf 'cafile=/root/.npm-build-ca.pem\n' >"$work/npmrc"
  mounts=(-v "$CA:/root/.npm-build-ca.pem:ro" -v "$work/npmrc:/root/.npmrc:ro")
fi
t=$(date +%s)
podman build --pull=never --network=host --layers -f image/Dockerfile --ignorefile image/Dockerfile.dockerignore \
  "${mounts[@]}" -t "$IMAGE" . >"$work/build.log" 2>&1 || { tail -40 "$work/build.log"; fail "podman build failed"; }
SIZE=$(podman image inspect --format '{{.Size}}' "$IMAGE")
# The image pre-bundles Vite's dependencies (Dockerfile); checked unchanged after the HMR step.
DEPS=/app/node_modules/.vite/deps/_metadata.json
deps_sum=$(podman run --rm --network=none --entrypoint sha256sum "$IMAGE" "$DEPS" | cut -d' ' -f1) && [ -n "$deps_sum" ] ||
  fail "no pre-bundled Vite dependencies ($DEPS) in the image"
# image/warm-agent-cache.sh ran the agent with a throwaway HOME: nothing of it in user's.
podman run --rm --network=none --entrypoint sh "$IMAGE" -c 'test ! -e /home/user/.claude.json && test ! -e /home/user/.claude' ||
  fail "the agent's warm-up left its first-start state (~/.claude.json, ~/.claude) in /home/user"
ok "image build" "$(( $(date +%s) - t )) s; image $(awk -v b="$SIZE" 'BEGIN { printf "%.2f GB", b / 1e9 }') ($SIZE bytes)"

step="no build CA in image"
if [ ${#mounts[@]} -eq 0 ]; then
  ok "$step" "n/a: no NODE_EXTRA_CA_CERTS on this machine, nothing was mounted"
else
  mnt=$(podman image mount "$IMAGE") || fail "podman image mount"
  for f in root/.npmrc root/.npm-build-ca.pem; do
    [ ! -s "$mnt/$f" ] || fail "/$f in the image is not empty (a build mount leaked)"
  done
  # Any npm config in the image naming a CA file.
  leaked=$(find "$mnt" -xdev \( -name .npmrc -o -name npmrc \) -type f -size +0 -exec grep -l -i cafile {} + 2>/dev/null)
  [ -z "$leaked" ] || fail "npm config with a cafile in the image: ${leaked//$mnt/}"
  # The machine's extra CAs (in its bundle, not among its distribution's ca-certificates
  # roots, e.g. an egress proxy's) appear nowhere in the image.
  for c in /usr/share/ca-certificates/mozilla/*.crt; do openssl x509 -noout -fingerprint -sha256 -in "$c"; done | sort -u >"$work/debian.fp"
  awk -v dir="$work" '/-----BEGIN CERTIFICATE-----/ { n++; f = dir "/host-" n ".pem" } f { print > f } /-----END CERTIFICATE-----/ { close(f); f = "" }' "$CA"
  extras=0
  : >"$work/needles"
  for c in "$work"/host-*.pem; do
    fp=$(openssl x509 -noout -fingerprint -sha256 -in "$c" 2>/dev/null) || continue
    grep -qxF "$fp" "$work/debian.fp" && continue
    extras=$((extras + 1))
    sed -n '6p' "$c" >>"$work/needles"   # one line of the certificate's base64 body
  done
  if [ "$extras" -gt 0 ]; then
    hit=$(grep -rlF -f "$work/needles" "$mnt" 2>/dev/null | head -3)
    [ -z "$hit" ] || fail "the machine's build CA is in the image: ${hit//$mnt/}"
  fi
  podman image unmount "$IMAGE" >/dev/null
  ok "$step" "mount points empty, no npm cafile, none of the $extras extra CA(s) of $CA in the image"
fi

# ---- boot as E2B does ------------------------------------------------------------------------
step=boot
PUB=$(free_port)
declare -A HOSTPORT
publish=(-p "127.0.0.1:$PUB:3000")
for p in 5173 9222 3001 3002; do HOSTPORT[$p]=$(free_port); publish+=(-p "127.0.0.1:${HOSTPORT[$p]}:$p"); done
t0=$(now_ms)
# E2B gives `user` passwordless sudo and runs the start command as `user`.
podman run -d --name "$NAME" --hostname e2b-smoke --cap-add NET_ADMIN \
  --network slirp4netns:port_handler=slirp4netns "${publish[@]}" "$IMAGE" \
  sh -c 'echo "user ALL=(ALL:ALL) NOPASSWD: ALL" > /etc/sudoers.d/e2b-user && chmod 0440 /etc/sudoers.d/e2b-user && exec su - user -c "$0"' \
  "$START_CMD" >/dev/null 2>"$work/run.err" || { cat "$work/run.err"; fail "podman run failed"; }
podman exec -u user -w /home/user "$NAME" bash -lc "$READY_CMD" >"$work/ready.out" 2>&1
rc=$?
BOOT_MS=$(( $(now_ms) - t0 ))
[ "$rc" = 0 ] || { cat "$work/ready.out"; fail "ready command \`$READY_CMD\` exited $rc after $BOOT_MS ms"; }
own=$(podman logs "$NAME" 2>&1 | sed -n 's/.*stack ready.*boot_ms=\([0-9]*\).*/\1/p' | head -1)
ok "ready command" "exit 0; container start -> ready ${BOOT_MS} ms (supervisor's own boot_ms=${own:-?})"

step=services
st=$(status_json) || fail "supervisor ctl --json status failed"
notready=$(jq -r '[.services[] | select(.required and .state != "ready") | "\(.name)=\(.state)"] | join(" ")' <<<"$st")
[ -z "$notready" ] || fail "not ready: $notready"
users=$(in_ctr ps -o user= -p "$(jq -r '[.services[].pid] | map(tostring) | join(",")' <<<"$st")" | sort -u | tr '\n' ' ')
[ "$users" = "user " ] || fail "services run as: $users (expected user)"
[ "$(jq -r .port_guard.active <<<"$st")" = true ] || fail "port guard not active: $(jq -c .port_guard <<<"$st")"
ok services "$(jq -r '[.services[].name] | join(", ")' <<<"$st") ready as user; port guard active, allowing only $(jq -c .port_guard.allow <<<"$st") besides the listen port"

step="agent compile cache"
# image/warm-agent-cache.sh warmed it at build time; `supervisor acp` hands it to the agent.
CACHE=/home/user/.cache/node-compile-cache
agent=$(in_ctr pgrep -o -f '^node .*claude-agent-acp') || fail "no claude-agent-acp process"
# As user: the container's root may not read another uid's /proc/PID/environ.
agent_env=$(podman exec -u user "$NAME" sh -c "tr '\\0' '\\n' < /proc/$agent/environ") || fail "cannot read the agent's environment"
grep -qx "NODE_COMPILE_CACHE=$CACHE" <<<"$agent_env" || fail "the agent (pid $agent) runs without NODE_COMPILE_CACHE=$CACHE"
files=$(in_ctr find "$CACHE" -type f | wc -l)
[ "$files" -gt 0 ] || fail "$CACHE is empty"
mode=$(in_ctr stat -c %U:%a "$CACHE")
[ "$mode" = user:700 ] || fail "$CACHE is $mode, expected user:700"
ok "$step" "the agent (pid $agent) runs with $CACHE: $files files, user:700"

step=memory
# Every process of the container, read with the host's root (a container's root may not read
# smaps of `user`'s processes): its own mount and pid namespace, so its own /proc.
CPID=$(podman inspect --format '{{.State.Pid}}' "$NAME")
pss_kb() { nsenter -t "$CPID" -m -p sh -c 'cat /proc/[0-9]*/smaps_rollup 2>/dev/null' | awk '/^Pss:/ { s += $2 } END { print s + 0 }'; }
nprocs() { nsenter -t "$CPID" -m -p sh -c 'ls -d /proc/[0-9]* | wc -l'; }
PSS_READY=$(pss_kb)
[ "$PSS_READY" -gt 0 ] || fail "could not read /proc/*/smaps_rollup in the container"
ok "PSS at ready (snapshot)" "$(mib $((PSS_READY * 1024))) in $(nprocs) processes (≈ $(awk -v k="$PSS_READY" 'BEGIN { printf "%.1f", k / 1048576 * 4 }') s of E2B pause at 4 s/GiB)"

# ---- through the published port --------------------------------------------------------------
step="public host"
code=$(curl -sS -o "$work/page.html" -w '%{http_code}' --max-time 10 -H "Host: $PUBLIC_HOST" "http://127.0.0.1:$PUB/") || fail "curl failed"
[ "$code" = 200 ] && grep -q '/@vite/client' "$work/page.html" || fail "GET / with Host $PUBLIC_HOST: HTTP $code, no Vite page"
ok "$step" "127.0.0.1:$PUB (container 3000) serves the app for Host $PUBLIC_HOST"

step=HMR
hmr=$(node tests/js/browser.mjs --launch --map "$PUBLIC_HOST" --page "http://$PUBLIC_HOST:$PUB/" \
  --file /app/src/App.tsx --exec "podman exec -i -u user $NAME" 2>"$work/hmr.err") || { cat "$work/hmr.err"; fail "browser.mjs failed"; }
jq -e '(.before == "Hello from the sandbox") and (.after | startswith("Edited ")) and (.reloaded == false)' <<<"$hmr" >/dev/null ||
  fail "no HMR update without reload: $hmr"
ok HMR "host Chromium on http://$PUBLIC_HOST:$PUB/: edit via podman exec shown in $(jq -r .hmr_ms <<<"$hmr") ms, no reload"
# A start or a page load that bundles the dependencies again races the page's first load
# (a smoke run once missed the HMR update while Vite was still bundling them).
[ "$(in_ctr sha256sum "$DEPS" | cut -d' ' -f1)" = "$deps_sum" ] ||
  fail "Vite bundled its dependencies again ($DEPS changed since the image build): the image's pre-bundle is stale"

step="env injection"
TOKEN=$(in_ctr sh -c '/usr/local/bin/supervisor ctl token rotate >/dev/null && cat /run/supervisor/token') || fail "token rotate failed"
acp_pid0=$(jq -r '.services[] | select(.name == "acp") | .pid' <<<"$(status_json)")
# A value every quoting has to work for: $, both quotes, a backtick-free newline, a #.
SECRET="smoke-$RANDOM\$HOME 'single' \"double\" #not-a-comment
second line"
jq -n --arg v "$SECRET" '{set: {SMOKE_SECRET: $v, VITE_SMOKE_PUBLIC: "visible"}}' >"$work/env.json"
resp=$(curl -sS --max-time 30 -H "Host: $PUBLIC_HOST" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  --data-binary @"$work/env.json" -w '\n%{http_code}' "http://127.0.0.1:$PUB/_supervisor/env") || fail "POST /_supervisor/env failed"
[ "$(tail -1 <<<"$resp")" = 200 ] || fail "POST /_supervisor/env: $(tr '\n' ' ' <<<"$resp")"
jq -e '.restarted | index("acp")' <<<"$(head -n -1 <<<"$resp")" >/dev/null || fail "acp not restarted: $resp"
fileinfo=$(in_ctr stat -c '%U %a' /app/.env)
[ "$fileinfo" = "user 600" ] || fail "/app/.env is '$fileinfo', expected 'user 600'"
# Vite's own loadEnv, inside the container, as `user`, in /app.
podman exec -u user -w /app "$NAME" node --input-type=module -e \
  'import { loadEnv } from "vite"; process.stdout.write(JSON.stringify(loadEnv("development", "/app", "")))' >"$work/loadenv.json" 2>"$work/loadenv.err" ||
  { cat "$work/loadenv.err"; fail "loadEnv in the container failed"; }
jq -e --arg v "$SECRET" '.SMOKE_SECRET == $v and .VITE_SMOKE_PUBLIC == "visible"' "$work/loadenv.json" >/dev/null ||
  fail "Vite's loadEnv in the container does not read back the injected values"
# The acp service comes back with the injected env (its pid and its agent child's).
deadline=$(( $(date +%s) + 60 ))
while :; do
  acp=$(jq -c '.services[] | select(.name == "acp")' <<<"$(status_json)")
  [ "$(jq -r .state <<<"$acp")" = ready ] && [ "$(jq -r .pid <<<"$acp")" != "$acp_pid0" ] && break
  [ "$(date +%s)" -lt "$deadline" ] || fail "acp not ready again after the env POST: $acp"
  sleep 0.5
done
acp_pid=$(jq -r .pid <<<"$acp")
agent_pid=$(in_ctr ps -o pid= --ppid "$acp_pid" | head -1 | tr -d ' ')
[ -n "$agent_pid" ] || fail "supervisor acp (pid $acp_pid) has no agent child"
for pid in "$acp_pid" "$agent_pid"; do
  # As the process's owner (`user`): a container's root may not read another user's environ.
  podman exec -u "$(in_ctr ps -o user= -p "$pid" | tr -d ' ')" "$NAME" cat "/proc/$pid/environ" | SECRET="$SECRET" node -e \
    'const e = require("fs").readFileSync(0).toString().split("\0"); process.exit(e.includes("SMOKE_SECRET=" + process.env.SECRET) ? 0 : 1)' ||
    fail "pid $pid's environment lacks the injected SMOKE_SECRET"
done
ok "$step" "200, restarted acp; /app/.env user 0600; Vite loadEnv reads it back exactly; in acp's environ (pids $acp_pid, $agent_pid)"

step=ACP
acpr=$(node tests/js/acp-client.mjs --url "http://127.0.0.1:$PUB/_supervisor/acp" --token "$TOKEN" --mode session --cwd /app --timeout-ms 60000 2>"$work/acp.err") ||
  { cat "$work/acp.err"; fail "acp-client.mjs failed"; }
jq -e '.protocol_version == 1 and (.session | length > 0)' <<<"$acpr" >/dev/null || fail "unexpected answer: $acpr"
ok ACP "$(jq -r '"\(.agent) \(.agent_version): initialize protocol \(.protocol_version), session/new \(.session[0:8])…, models \((.config_options.model.values // .models) | join(","))"' <<<"$acpr")"
jq -c '{agent_capabilities, auth_methods, modes, current_mode, config_options}' <<<"$acpr" >"$work/acp-details.json"
echo "       ACP details: $(cat "$work/acp-details.json")"

step=MCP
mcpr=$(node tests/js/mcp-client.mjs --url "http://127.0.0.1:$PUB/_supervisor/mcp" --token "$TOKEN" --navigate http://localhost:3000/ 2>"$work/mcp.err") ||
  { cat "$work/mcp.err"; fail "mcp-client.mjs failed"; }
jq -e '.snapshot | contains("Hello from the sandbox")' <<<"$mcpr" >/dev/null || fail "the snapshot does not show the app: $(head -c 300 <<<"$mcpr")"
ok MCP "$(jq '.tools | length' <<<"$mcpr") tools; browser_navigate http://localhost:3000/ + browser_snapshot show the app"

# ---- envd: every loopback listener forwarded on the container's address ----------------------
step=envd
CIP=$(nsenter -t "$CPID" -n ip -4 -o addr show scope global | awk '{ sub("/.*", "", $4); print $4; exit }')
[ -n "$CIP" ] || fail "no address in the container's network namespace"
loopback=$(nsenter -t "$CPID" -n ss -ltnH | awk '{ print $4 }' | sed -n 's/^127\.0\.0\.1:\([0-9]*\)$/\1/p' | sort -un)
for p in 5173 9222 3001 3002; do grep -qx "$p" <<<"$loopback" || fail "nothing listens on 127.0.0.1:$p in the container"; done
for p in $loopback; do
  nsenter -t "$CPID" -n socat "TCP-LISTEN:$p,bind=$CIP,fork,reuseaddr" "TCP:127.0.0.1:$p" 2>/dev/null &
  forwarders+=($!)
done
# The forwarders work (from inside, to the container's address, e.g. envd's own checks) ...
deadline=$(( $(date +%s) + 20 ))
until nsenter -t "$CPID" -n curl -s -o /dev/null --max-time 2 -H 'Accept: text/x-vite-ping' "http://$CIP:5173/"; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "the forwarder on $CIP:5173 never answered from inside the container"
  sleep 0.2
done
# ... and from the host only 3000 answers.
curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$PUB/_supervisor/healthz" || fail "3000 does not answer from the host"
for p in 5173 9222 3001 3002; do
  if out=$(curl -sS --max-time 4 -o /dev/null -w '%{http_code}' "http://127.0.0.1:${HOSTPORT[$p]}/" 2>/dev/null); then
    fail "container port $p answers from the host (HTTP $out) through the envd-style forwarder"
  fi
done
for pid in "${forwarders[@]}"; do kill "$pid" 2>/dev/null; done
forwarders=()
ok "$step" "forwarders on $CIP for $(echo $loopback | tr ' ' ','): from the host 3000 answers, 5173/9222/3001/3002 do not"

# ---- pause / unpause -------------------------------------------------------------------------
step=pause
before=$(jq -c '[.services[] | {name, pid, restarts}]' <<<"$(status_json)")
podman pause "$NAME" >/dev/null || fail "podman pause failed"
sleep "$PAUSE_SECS"   # the frozen time under test, past every liveness window (period x threshold <= 30 s)
podman unpause "$NAME" >/dev/null || fail "podman unpause failed"
# Watch one more liveness period of the slowest probe: nothing may restart.
deadline=$(( $(date +%s) + 15 ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  now=$(jq -c '[.services[] | {name, pid, restarts}]' <<<"$(status_json)") || fail "status after unpause failed"
  [ "$now" = "$before" ] || fail "a service restarted after the pause: before $before, now $now"
  sleep 1
done
st=$(status_json)
[ "$(jq -r .ready <<<"$st")" = true ] || fail "not ready after unpause: $(jq -c '[.services[] | {name, state}]' <<<"$st")"
ok "$step" "paused ${PAUSE_SECS} s, unpaused: same pids, 0 restarts, ready"

PSS_END=$(pss_kb)
ok "PSS after the checks" "$(mib $((PSS_END * 1024)))"

# ---- stop ------------------------------------------------------------------------------------
if [ "$KEEP" = 1 ]; then
  echo "smoke: --keep: container $NAME left running (port 3000 at 127.0.0.1:$PUB)"
else
  step=stop
  n=$(nprocs)
  t=$(now_ms)
  podman stop -t $((DEADLINE + 10)) "$NAME" >/dev/null 2>"$work/stop.err" || { cat "$work/stop.err"; fail "podman stop failed"; }
  took=$(( $(now_ms) - t ))
  ! grep -q SIGKILL "$work/stop.err" || fail "podman had to SIGKILL: $(cat "$work/stop.err")"
  [ "$took" -lt $((DEADLINE * 1000)) ] || fail "stop took $took ms, shutdown_timeout is ${DEADLINE}s"
  # Into a variable first: `podman logs | grep -q` fails under pipefail when grep exits early.
  logs=$(podman logs "$NAME" 2>&1)
  grep -q 'all services and terminal sessions stopped' <<<"$logs" || fail "the supervisor never logged 'all services and terminal sessions stopped'"
  ! grep -q 'killing everything' <<<"$logs" || fail "the supervisor had to kill everything"
  [ "$(podman inspect --format '{{.State.Status}}' "$NAME")" = exited ] || fail "container not exited"
  ok "$step" "podman stop -> exited in $took ms (deadline ${DEADLINE} s), its ${n} processes ended without SIGKILL"
fi

echo "smoke: all checks passed in $(( $(date +%s) - T_START )) s"
