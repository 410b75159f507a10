#!/usr/bin/env bash
# The startup.sh reconstruction (startup-sleeps.sh) gated on readiness polls instead of
# sleeps, with what depends on nothing started first, as the supervisor does (Vite, the
# ACP agent and the proxy at once; Chromium after Xvfb's socket; MCP after CDP answers).
. "$(dirname "$0")/startup-services.sh"
vite; acp; proxy; xvfb
until [ -S /tmp/.X11-unix/X99 ]; do sleep 0.01; done
chromium_
until curl -sf -o /dev/null http://127.0.0.1:9222/json/version; do sleep 0.01; done
mcp
wait
