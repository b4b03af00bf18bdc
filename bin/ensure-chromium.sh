#!/usr/bin/env bash
# The operations map is tested in a real browser (Debian's Chromium driven by
# playwright-core). Installs it when missing; `npm test` runs this first.
set -u
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
  echo "ensure-chromium: /usr/bin/chromium is missing and this user cannot install it (apt-get install chromium)" >&2
  exit 0
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
echo "ensure-chromium: installing Debian's chromium for the operations map test" >&2
$SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
  || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q chromium >/dev/null 2>&1; } \
  || echo "ensure-chromium: could not install chromium; the operations map test will fail" >&2
exit 0
