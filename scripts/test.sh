#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh machine, checks
# formatting and lints, then runs every test in one release build.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# `go tool pprof` reads our profiles in the interoperability tests.
if ! command -v go >/dev/null 2>&1; then
    echo "test.sh: installing golang-go (for go tool pprof)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --release -- -D warnings
cargo test --workspace --release
