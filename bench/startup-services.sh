# The five services of opt/supervisor.toml as a shell script would start them (sourced by
# startup-sleeps.sh and startup-polls.sh): the same commands, flags, ports and env.
# Needs: APP (the app dir), OPT (opt/, with node_modules), SUP (the supervisor binary), HOME.
xvfb() { rm -f /tmp/.X99-lock /tmp/.X11-unix/X99; Xvfb :99 -screen 0 1280x800x24 -nolisten tcp -ac -extension GLX & }
chromium_() {
  local root=(); [ "$(id -u)" = 0 ] && root=(--no-sandbox)
  DISPLAY=:99 chromium "${root[@]}" --remote-debugging-port=9222 --remote-debugging-address=127.0.0.1 \
    --user-data-dir="$HOME/.cache/script-chromium" \
    --no-first-run --no-default-browser-check --disable-dev-shm-usage \
    --disable-background-networking --disable-component-update --disable-sync \
    --disable-features=Translate,MediaRouter,WebUIOmniboxPopup,WebUIOmniboxAimPopup,WebUIOmniboxFullPopup --password-store=basic \
    --window-size=1280,800 $CHROMIUM_EXTRA about:blank &
}
mcp() {
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 NODE_OPTIONS=--max-semi-space-size=2 "$OPT/node_modules/.bin/playwright-mcp" --host 127.0.0.1 --port 3001 \
    --cdp-endpoint http://127.0.0.1:9222 --allowed-hosts '*' --output-dir /tmp/playwright-mcp-output &
}
acp() { (cd "$APP" && exec "$SUP" acp --listen 127.0.0.1:3002 --cwd "$APP" -- "$OPT/node_modules/.bin/claude-agent-acp") & }
vite() { (cd "$APP" && BROWSER=none FORCE_COLOR=0 NODE_OPTIONS=--max-semi-space-size=2 exec "$APP/node_modules/.bin/vite" --host 127.0.0.1 --port 5173 --strictPort) & }
proxy() { node "$(dirname "${BASH_SOURCE[0]}")/node-proxy.mjs" 3000 5173 & }
