#!/bin/sh
# Install Debian's chromium for the browser tests (tests/browser/) when /usr/bin/chromium is missing.
# Quiet when it is there. Without apt-get or root rights it says why and exits 0: the browser tests
# then skip, naming the missing browser, and the rest of the suite still runs.
set -eu

[ -x /usr/bin/chromium ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: no apt-get here; install chromium at /usr/bin/chromium for the browser tests." >&2
    exit 0
fi

run_as_root=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        run_as_root="sudo -n"
    else
        echo "ensure_chromium: not root and no password-less sudo; the browser tests will be skipped." >&2
        exit 0
    fi
fi

echo "ensure_chromium: installing Debian's chromium for the browser tests..." >&2
export DEBIAN_FRONTEND=noninteractive
if ! { $run_as_root apt-get update -qq && \
       $run_as_root apt-get install -y -qq chromium; } >/tmp/ensure_chromium.log 2>&1; then
    echo "ensure_chromium: installing chromium failed (see /tmp/ensure_chromium.log); browser tests will be skipped." >&2
fi
exit 0
