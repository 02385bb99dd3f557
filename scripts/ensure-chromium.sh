#!/usr/bin/env bash
# Make sure a headless Chromium exists for the browser tests (Debian's `chromium` package).
# Prints the path used. If none exists and no package manager can install one, says so;
# the browser tests then skip with the same message.
set -euo pipefail
for exe in "${KEXUE_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser /usr/bin/google-chrome; do
  if [[ -n "$exe" && -x "$exe" ]]; then echo "==> chromium: $exe"; exit 0; fi
done
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
      echo "==> chromium not found and apt-get needs root: browser tests will be skipped"; exit 0; fi
  fi
  echo "==> installing Debian's chromium package for the browser tests"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  echo "==> chromium: $(command -v chromium)"
else
  echo "==> chromium not found and no apt-get: browser tests will be skipped"
fi
