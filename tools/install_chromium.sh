#!/usr/bin/env bash
# Install Debian's chromium and chromium-driver for tests/test_browser.py (Selenium), as
# root where they are missing (make test, make envs-check). Without root or apt-get it
# only says so: the browser test then skips with the reason.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "!!! chromium/chromium-driver missing and not root with apt-get: tests/test_browser.py will skip !!!" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium chromium-driver >/dev/null
