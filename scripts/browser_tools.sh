#!/usr/bin/env bash
# Debian's chromium and chromium-driver, for the UI's browser tests (tests/ui), installed
# with apt when either is missing. Needs root (CI and the Cloud Build test steps run as
# root); elsewhere it says what to run instead. Without them the browser tests skip
# locally and fail under CI=true.
set -euo pipefail

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "chromium or chromium-driver is missing; install them with:" >&2
    echo "  sudo apt-get install chromium chromium-driver" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium chromium-driver
chromium --version
chromedriver --version
