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

# The black-box tests run the real `cpmstore` binary, so build it first, together with
# the test targets: built alone, the binaries would resolve features without the
# dev-dependencies (tokio's test-util) and every crate above tokio would be compiled
# twice, doubling the target directory.
cargo build --workspace --bins --tests

# Run everything, then close with one line that sums all the test binaries' results
# (cargo's own last line is the doc-test run's, which says little).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ {
       for (i = 1; i <= NF; i++) {
         if ($(i) ~ /^passed;?$/) p += $(i - 1)
         if ($(i) ~ /^failed;?$/) f += $(i - 1)
       }
     }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
