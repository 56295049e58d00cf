#!/bin/sh
# Install Debian's headless browser for the end-to-end test (tests/test_browser.py):
# chromium and chromium-driver, with apt, only when they are missing. Idempotent.
# Exits 0 when /usr/bin/chromium and /usr/bin/chromedriver are there afterwards,
# non-zero with a message saying what is missing otherwise.
set -u

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}

if [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; then
    echo "install_browser: chromium and chromedriver already installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: apt-get not found; install chromium and chromium-driver (Debian/Ubuntu packages) by hand" >&2
    exit 2
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install_browser: not root and no password-less sudo; run 'apt-get install chromium chromium-driver' as root" >&2
        exit 3
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# Try the install first (the package lists may be fresh already); update and retry if it fails.
if ! $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver; then
    $SUDO apt-get update -q || { echo "install_browser: apt-get update failed" >&2; exit 4; }
    $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver \
        || { echo "install_browser: apt-get install chromium chromium-driver failed" >&2; exit 5; }
fi

if [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; then
    echo "install_browser: installed $("$CHROMIUM" --version 2>/dev/null)"
    exit 0
fi
echo "install_browser: apt finished but $CHROMIUM or $CHROMEDRIVER is missing" >&2
exit 6
