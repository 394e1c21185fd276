#!/usr/bin/env bash
# Runs cpmstore's whole test suite: unit tests, the storage story on SQLite (and on
# PostgreSQL when CPMSTORE_TEST_POSTGRES_URL is set), and the black-box tests that drive
# the real binary over real sockets with real clients (imaplib, curl, openssl, mbsync).
#
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh

if [ -z "${CPMSTORE_TEST_POSTGRES_URL:-}" ]; then
  echo "NOTE: CPMSTORE_TEST_POSTGRES_URL is not set: PostgreSQL tests will be SKIPPED" >&2
  echo "      (e.g. CPMSTORE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test)" >&2
fi

# The black-box tests run the real `cpmstore` binary, so build it first.
cargo build --workspace --bins
cargo test --workspace "$@"
