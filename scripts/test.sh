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
# are real programs run under the preload, libunwind unwinds code built
# without frame pointers, and gdb's gcore writes the core files `leakscope
# core` reads.
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
command -v gcore >/dev/null 2>&1 || missing+=(gdb)
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

# A Rust program nobody here wrote, for `leakscope run` (cached in target/;
# cargo-fuzz, below, is cached the same way).
if [ ! -x target/tools/bin/rg ]; then
    echo "test.sh: installing ripgrep into target/tools (cargo install)"
    cargo install --locked --quiet ripgrep --version 14.1.1 --root target/tools
fi
export PATH="$PWD/target/tools/bin:$PATH"

cargo fmt --all --check
cargo clippy --workspace --all-targets --release -- -D warnings
cargo test --workspace --release

# Hardening, on the nightly toolchain (with its sanitizer runtimes), each
# bounded: a short run of every fuzz target from the saved corpus (the
# corpus itself is replayed by the ordinary tests above), then the
# multi-threaded stress program (snapshots under churn, fork and thread
# exit) under AddressSanitizer.
if ! rustup toolchain list | grep -q '^nightly'; then
    # A machine without nightly cannot fetch one (only package registries
    # are reachable); the fuzz corpus was already replayed above.
    echo "test.sh: SKIPPED fuzzing and AddressSanitizer: no nightly toolchain here" >&2
    exit 0
fi
if [ ! -x target/tools/bin/cargo-fuzz ]; then
    echo "test.sh: installing cargo-fuzz into target/tools (cargo install)"
    cargo install --locked --quiet cargo-fuzz --version 0.13.2 --root target/tools
fi
(
    cd fuzz
    for target in pprof_decode snapshot_json dir_loader http_query; do
        # New inputs go to target/, never into the repository's corpus.
        mkdir -p "../target/fuzz-corpus/$target"
        echo "test.sh: fuzzing $target for 12 s"
        log="../target/fuzz-$target.log"
        if ! cargo +nightly fuzz run --target-dir ../target/fuzz "$target" \
            "../target/fuzz-corpus/$target" "corpus/$target" -- \
            -max_total_time=12 -rss_limit_mb=1024 -close_fd_mask=2 >"$log" 2>&1; then
            tail -n 40 "$log"
            echo "test.sh: fuzz target $target failed (the input is in fuzz/artifacts/$target)" >&2
            exit 1
        fi
        grep -E '^Done [0-9]+ runs' "$log"
    done
)
echo "test.sh: the stress program under AddressSanitizer"
(
    cd sanitize
    RUSTFLAGS="-Zsanitizer=address -Cllvm-args=-asan-globals=0 -Cllvm-args=-asan-stack=0 -Cforce-frame-pointers=yes" \
        cargo +nightly build --locked --quiet --release --target "$(uname -m)-unknown-linux-gnu" --target-dir ../target/sanitize
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 timeout 300 \
        "../target/sanitize/$(uname -m)-unknown-linux-gnu/release/leakscope-sanitize"
)
