#!/usr/bin/env bash
# The tests, in one command on a fresh machine: installs what they need and is missing, then
# runs `cargo test --locked`, then the Python client's tests (`python3 -m pytest
# clients/python/tests`, against real coordinator and worker processes). Arguments go to cargo
# alone (`scripts/test.sh --test flow`, say), and then the Python tests are not run.
#
# What it installs, once (the Debian packages need root):
# - a C compiler, for the bundled SQLite and ring;
# - Debian's Chromium and its WebDriver, for the dashboard test in a real browser;
# - iproute2 and nftables, for the chaos suite's network hosts and link faults;
# - s3s-fs, a real S3-compatible server for the S3 tests (a pinned release build, about
#   4 minutes);
# - s3rver, a second S3 implementation (Node.js, from npm, a few seconds), on which the tests
#   check that workers work with stores that take no aws-chunked uploads; and Node.js itself
#   from Debian where it is missing;
# - Debian's PostgreSQL server (`postgresql`), which the HA tests start themselves (temporary
#   clusters on free loopback ports, run as the `postgres` user); the package's own cluster is
#   not started on install;
# - pytest, from PyPI (`python3 -m pip install pytest`), for the Python client's tests;
# - moto's server, from PyPI (`python3 -m pip install 'moto[server]'`, pinned), which the EC2
#   tests start on loopback in place of EC2.
#
# `scripts/test.sh --install-only` installs and runs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  echo "== installing $*"
  if [ "$(id -u)" -ne 0 ]; then
    echo "installing Debian packages needs root: run as root, or: sudo apt-get install -y $*" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || missing+=(chromium chromium-driver)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
{ command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; } || missing+=(nodejs npm)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  # The postgresql package starts its default cluster on install through invoke-rc.d, and fails
  # to install where that fails (no init system, a container). The tests start their own
  # servers: a policy-rc.d that forbids starting services (exit 101) lets the install finish
  # without one. Left alone where the machine has its own.
  policy=/usr/sbin/policy-rc.d
  if [ "$(id -u)" -eq 0 ] && [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# drover scripts/test.sh: no services started while it installs.\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt_install "${missing[@]}"
  if [ -n "${policy:-}" ] && grep -q 'drover scripts/test.sh' "$policy" 2>/dev/null; then
    rm -f "$policy"
    trap - EXIT
  fi
fi

if ! command -v s3s-fs >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
  echo "== installing s3s-fs"
  cargo install --locked s3s-fs --version 0.14.1 --features binary
fi

if ! command -v s3rver >/dev/null 2>&1; then
  echo "== installing s3rver"
  npm install --global --no-audit --no-fund s3rver@3.7.1
fi

if ! python3 -m pytest --version >/dev/null 2>&1; then
  echo "== installing pytest"
  python3 -m pip install --quiet pytest
fi

if ! python3 -c 'import moto.server' >/dev/null 2>&1; then
  echo "== installing moto (server)"
  python3 -m pip install --quiet 'moto[server]==5.2.1'
fi

if [ "${1:-}" = "--install-only" ]; then
  exit 0
fi
if [ $# -gt 0 ]; then
  exec cargo test --locked "$@"
fi
# Both suites run whatever the first gives, and either failing fails the script.
status=0
cargo test --locked || status=$?
echo "== Python client tests (clients/python)"
# The binaries cargo just built: the tests start them.
DROVER_BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/debug" python3 -m pytest clients/python/tests \
  || status=$?
exit "$status"
