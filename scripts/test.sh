#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian 12 machine and runs every test:
# Debian packages (MariaDB, the MySQL client library, Chromium, iproute2, openssl), the real MariaDB
# and Apache Kafka broker (scripts/services.sh), a virtualenv with evnet and its test extra, then
# pytest. The Kafka cluster test starts the three-broker cluster itself (services.sh up
# kafka-cluster), the multi-host test its own namespaces and services; both stop what they started.
# Extra arguments go to pytest (e.g. bash scripts/test.sh -m "not slow" -x).
# The services are stopped at the end unless EVNET_KEEP_SERVICES=1.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[test] %s\n' "$*"; }

if ! command -v chromium >/dev/null 2>&1; then
    say "installing Debian's chromium (for the browser test)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi

# The multi-host test (network namespaces, certificates it makes) needs ip and openssl.
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (for the multi-host test)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

say "starting MariaDB and Kafka (scripts/services.sh up)"
bash scripts/services.sh up
if [ "${EVNET_KEEP_SERVICES:-0}" != 1 ]; then
    trap 'say "stopping the services"; bash scripts/services.sh down' EXIT
fi
eval "$(bash scripts/services.sh env)"
export EVNET_TEST_MYSQL EVNET_TEST_KAFKA

if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
fi
say "installing evnet and its test extra into .venv"
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]' --config-settings editable_mode=compat
.venv/bin/twistd --help >/dev/null # lists the plugins and refreshes dropin.cache

# Tests that need MariaDB, Kafka or the browser fail instead of skipping.
export EVNET_REQUIRE_SERVICES=1
say "running every test"
.venv/bin/python -m pytest -p no:cacheprovider "$@"
