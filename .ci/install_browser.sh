#!/usr/bin/env bash
# Headless Chromium and its WebDriver for tests/it/browser.rs (`--serve` watched in a real
# browser): Debian's `chromium` and `chromium-driver`, installed with apt when missing (without
# the recommended desktop packages: a headless browser needs none). Prints what it did and how
# long it took on stderr. Exit status 0 when both are on the PATH afterwards, 1 otherwise; it
# never fails the caller by itself (.ci/run goes on, and the test then prints SKIPPED).
set -uo pipefail

have_browser() {
    command -v chromedriver >/dev/null &&
        { command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null; }
}

if have_browser; then
    echo "browser: chromium and chromedriver already installed" >&2
    exit 0
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null && sudo -n true 2>/dev/null || { echo "browser: not root and no password-less sudo: not installing chromium" >&2; exit 1; }
    sudo=(sudo -n)
fi
command -v apt-get >/dev/null || { echo "browser: no apt-get: not installing chromium" >&2; exit 1; }

start=$SECONDS
log=$(mktemp)
install() { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver >>"$log" 2>&1; }
# The package lists are fetched only when the install cannot do without them (a fresh image).
if ! install; then
    "${sudo[@]}" apt-get update -q >>"$log" 2>&1 && install
fi
if have_browser; then
    echo "browser: installed chromium and chromium-driver in $((SECONDS - start)) s" >&2
    rm -f "$log"
    exit 0
fi
echo "browser: installing chromium and chromium-driver failed after $((SECONDS - start)) s; the browser test will be skipped. apt's last lines:" >&2
tail -5 "$log" | sed 's/^/    /' >&2
rm -f "$log"
exit 1
