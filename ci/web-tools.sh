#!/usr/bin/env bash
# Install ESP Web Tools' npm package, whose published types (dist/const.d.ts)
# tests/integration/test_bundle.py checks our manifest.json against; safe to run again.
# Usage: ci/web-tools.sh [prefix]   (default /opt/esp-web-tools; the tests read
# ESP_WEB_TOOLS_DIR, default /opt/esp-web-tools/node_modules/esp-web-tools)
set -euo pipefail

version=10.4.0  # esp32tasks/bundle.py's ChipFamily is this version's Build["chipFamily"]
prefix=${1:-/opt/esp-web-tools}
package=$prefix/node_modules/esp-web-tools/package.json

if [[ -f $package ]] && grep -q "\"version\": \"$version\"" "$package"; then
    echo "ci/web-tools.sh: esp-web-tools $version is installed in $prefix"
    exit 0
fi
if ! command -v npm >/dev/null; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "ci/web-tools.sh: npm is missing; run as root or apt-get install nodejs npm" >&2
        exit 1
    fi
    echo "ci/web-tools.sh: installing nodejs npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
mkdir -p "$prefix"
# --ignore-scripts: we read its files, nothing of it runs
npm install --prefix "$prefix" --save-exact --ignore-scripts --no-audit --no-fund \
    "esp-web-tools@$version"
echo "ci/web-tools.sh: esp-web-tools $version installed in $prefix"
