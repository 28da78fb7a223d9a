#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh machine, checks
# formatting and lints, then runs every test in one release build.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# What the tests use from outside Rust, installed from Debian's packages when
# missing: `go tool pprof` reads our profiles (interoperability tests),
# headless Chromium opens the HTML report, Valgrind and heaptrack are the
# references `leakscope run` is checked against, gcc/g++ build the C and C++
# test programs (with libc6-dev's libc.a, also a static one), git and python3
# are real programs run under the preload, and libunwind unwinds code built
# without frame pointers.
missing=()
command -v go >/dev/null 2>&1 || missing+=(golang-go)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
command -v heaptrack_print >/dev/null 2>&1 || missing+=(heaptrack)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
[ -f "/usr/lib/$(uname -m)-linux-gnu/libc.a" ] || missing+=(libc6-dev)
command -v git >/dev/null 2>&1 || missing+=(git)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v nm >/dev/null 2>&1 || missing+=(binutils)
ldconfig -p 2>/dev/null | grep -q 'libunwind.so.8 ' || missing+=(libunwind8)
if [ ${#missing[@]} -gt 0 ]; then
    echo "test.sh: installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A Rust program nobody here wrote, for `leakscope run` (cached in target/).
if [ ! -x target/tools/bin/rg ]; then
    echo "test.sh: installing ripgrep into target/tools (cargo install)"
    cargo install --locked --quiet ripgrep --version 14.1.1 --root target/tools
fi
export PATH="$PWD/target/tools/bin:$PATH"

cargo fmt --all --check
cargo clippy --workspace --all-targets --release -- -D warnings
cargo test --workspace --release
