# Shared by the bench scripts (source it from the repo root): the binary under test, a work
# dir removed on exit, free ports, and starting/stopping one `supervisor run`.
# Sets: bin (absolute path), work (temp dir), sup_pid (while a supervisor runs).

# The binary: $1, else $SUPERVISOR_BIN, else the static release binary, (re)built by
# image/build-binary.sh (a no-op when it is current, so a stale binary is never measured).
bench_init() {
  if [ -n "${1:-${SUPERVISOR_BIN:-}}" ]; then
    bin="${1:-$SUPERVISOR_BIN}"
  else
    image/build-binary.sh >&2
    bin=target/x86_64-unknown-linux-musl/release/supervisor
  fi
  [ -x "$bin" ] || { echo "no executable supervisor at $bin" >&2; exit 1; }
  bin=$(realpath "$bin")
  work=$(mktemp -d)
  sup_pid=""
  trap bench_cleanup EXIT
}

bench_cleanup() {
  if [ -n "$sup_pid" ]; then kill "$sup_pid" 2>/dev/null || true; wait "$sup_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_supervisor CONFIG APP_DIR LISTEN TIMEOUT_S: runs it in the background (log in
# $work/log) and waits for `supervisor ready`; shows the log and exits if it never is.
start_supervisor() {
  "$bin" run --config "$1" --runtime-dir "$work/run" --app-dir "$2" --service-user "" --port-guard off \
    --listen "$3" >"$work/log" 2>&1 &
  sup_pid=$!
  "$bin" ready --runtime-dir "$work/run" --timeout "$4" >/dev/null || { echo "stack not ready:" >&2; tail -30 "$work/log" >&2; exit 1; }
}

# prod_setup [SED_ARGS...]: a copy of app-template in $work/app (its node_modules linked)
# and opt/supervisor.toml ($CONFIG, if set) in $work/supervisor.toml with ${CONFIG_DIR}
# expanded and SED_ARGS applied; makes $work/home for the services' HOME.
prod_setup() {
  mkdir -p "$work/app" "$work/home"
  tar -C app-template --exclude=node_modules --exclude=dist --exclude=.env -cf - . | tar -C "$work/app" -xf -
  ln -s "$PWD/app-template/node_modules" "$work/app/node_modules"
  sed -e "s#\${CONFIG_DIR}#$PWD/opt#g" "$@" "${CONFIG:-opt/supervisor.toml}" >"$work/supervisor.toml"
}

stop_supervisor() { kill "$sup_pid"; wait "$sup_pid" 2>/dev/null || true; sup_pid=""; }
