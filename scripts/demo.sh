#!/usr/bin/env bash
# Installs evnet into .venv and runs the demo of the whole network on the embedded default
# (SQLite, in-band streams): one Central, 10 charging points and 3 drivers as real processes on
# 127.0.0.1. Extra arguments go to `evnet demo` (see: .venv/bin/evnet demo --help), e.g.
#   bash scripts/demo.sh --kafka 127.0.0.1:19092
#   bash scripts/demo.sh --db mysql://evnet:evnet@127.0.0.1:13306/evnet
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[demo] %s\n' "$*"; }

# mysqlclient (a dependency, for the MySQL backend) compiles against the MySQL client library.
missing=()
for pkg in default-libmysqlclient-dev pkg-config python3-venv; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
fi
say "installing evnet into .venv"
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e . --config-settings editable_mode=compat
.venv/bin/twistd --help >/dev/null # lists the plugins and refreshes dropin.cache

exec .venv/bin/evnet demo "$@"
