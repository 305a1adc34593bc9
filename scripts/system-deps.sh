#!/usr/bin/env bash
# Make sure Debian packages a command needs are there: install the missing ones when
# this machine can (root or passwordless sudo, with apt-get), else say the one
# command that would, and fail.
#
#   scripts/system-deps.sh BINARY:PACKAGE [BINARY:PACKAGE ...]
#   scripts/system-deps.sh redis-server:redis-server chromium:chromium jq:jq
set -euo pipefail

missing=()
for pair in "$@"; do
    binary="${pair%%:*}"
    package="${pair#*:}"
    command -v "$binary" >/dev/null 2>&1 || missing+=("$package")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

install=()
if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ]; then
        install=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        install=(sudo -n)
    else
        install=(none)
    fi
else
    install=(none)
fi

if [ "${install[*]-}" = "none" ]; then
    echo "missing: ${missing[*]}. Install with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "installing Debian packages: ${missing[*]}"
"${install[@]}" apt-get update -qq
"${install[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
