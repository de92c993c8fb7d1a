#!/usr/bin/env bash
# System packages the tests start for real: redis-server (cache tests) and Debian's
# chromium (browser tests of the workbench page, driven by Playwright; Playwright's own
# browser download needs the internet) with a CJK font so Chinese product titles render.
# Idempotent and quiet: installs only what is missing.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ! fc-list 2>/dev/null | grep -qi "wenquanyi\|noto sans cjk"; then missing+=(fonts-wqy-microhei); fi
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  echo "installing ${missing[*]} from Debian packages"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
