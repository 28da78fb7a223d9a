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

# Other glibc releases, for the heap walker's tests (tests/heap_walk.rs runs
# itself again under each one's loader): Debian 13's (2.41, the layout of
# Ubuntu 24.04's 2.39) and Debian unstable's current one (2.43 today, the
# release of Ubuntu 26.04). Unpacked into target/glibc/<suite>/, not installed.
fetch_glibc() {
    local apt_dir="$PWD/target/glibc/apt"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
    printf 'deb http://deb.debian.org/debian %s main\n' trixie sid > "$apt_dir/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
        -o APT::Sandbox::User=root)
    as_root apt-get "${opts[@]}" update -qq
    for suite in trixie sid; do
        local version
        version=$(apt-cache "${opts[@]}" madison libc6 | awk -v s="$suite/main" '$0 ~ s {print $3; exit}')
        (cd "$apt_dir" && as_root apt-get "${opts[@]}" download -qq "libc6=$version")
        rm -rf "target/glibc/$suite"
        dpkg-deb -x "$apt_dir/libc6_${version#*:}_$(dpkg --print-architecture).deb" "target/glibc/$suite"
    done
}
if [ ! -d target/glibc/trixie ] || [ ! -d target/glibc/sid ]; then
    echo "test.sh: fetching glibc from Debian 13 and unstable into target/glibc"
    fetch_glibc
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
