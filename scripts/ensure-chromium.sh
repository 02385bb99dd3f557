#!/usr/bin/env bash
# Make sure a headless Chromium exists for the browser tests (Debian's `chromium` package), with a
# Chinese font so screenshots of the pages show the original titles instead of empty boxes.
# Prints the path used. If none exists and no package manager can install one, says so;
# the browser tests then skip with the same message.
set -euo pipefail
chromium=""
for exe in "${KEXUE_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser /usr/bin/google-chrome; do
  if [[ -n "$exe" && -x "$exe" ]]; then chromium="$exe"; break; fi
done
missing=()
[[ -z "$chromium" ]] && missing+=(chromium)
if ! command -v fc-list >/dev/null 2>&1 || [[ -z "$(fc-list :lang=zh 2>/dev/null | head -1)" ]]; then
  missing+=(fonts-noto-cjk)
fi
if [[ ${#missing[@]} -eq 0 ]]; then echo "==> chromium: $chromium"; exit 0; fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
      echo "==> ${missing[*]} missing and apt-get needs root: browser tests may be skipped"; exit 0; fi
  fi
  echo "==> installing Debian's ${missing[*]} for the browser tests"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  echo "==> chromium: $(command -v chromium || echo "$chromium")"
else
  echo "==> ${missing[*]} missing and no apt-get: browser tests may be skipped"
fi
