#!/usr/bin/env bash
# A reconstruction of the startup.sh the supervisor replaces: background jobs and fixed
# sleeps, then a Node proxy (http-proxy) on port 3000. For bench/stack.py only.
. "$(dirname "$0")/startup-services.sh"
xvfb; sleep 1
chromium_; sleep 2
mcp; acp; vite; sleep 2
proxy
wait
