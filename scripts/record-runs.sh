#!/usr/bin/env bash
# Records the runs the golden tests diagnose
# (crates/leakscope-profile/tests/recorded/NAME/): heap profiles and gzipped
# snapshots of the lab's Rust-pattern scenarios and of two services that are
# not the lab (axum-service and hyper-service in lab/src/bin), in full and
# sampled mode, with run.json saying what each reproduces. Then writes each
# run's expected findings (expected.json) from the current rules: review the
# diff before committing. Usage: scripts/record-runs.sh [NAME-FILTER]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p leakscope-cli -p leakscope-lab --bins
OUT=crates/leakscope-profile/tests/recorded
FILTER=${1:-}
mkdir -p "$OUT"

# record NAME MODE SCENARIO COMMAND...: runs COMMAND with periodic output.
record() {
    local name=$1 mode=$2 scenario=$3; shift 3
    local dir="$OUT/$name-$mode"
    [[ -z "$FILTER" || "$name-$mode" == *"$FILTER"* ]] || return 0
    echo "record: $name-$mode"
    rm -rf "$dir"
    mkdir -p "$dir"
    LEAKSCOPE_MODE=$mode LEAKSCOPE_RATE=65536 LEAKSCOPE_INTERVAL=0.5 LEAKSCOPE_DIR="$dir" \
        "$@" > /dev/null
    rm -f "$dir"/memory-*.json
    gzip -9n "$dir"/snapshot-*.json 2>/dev/null || true
    printf '{\n  "command": "%s",\n  "mode": "%s",\n  "scenario": %s\n}\n' \
        "$*" "$mode" "$scenario" > "$dir/run.json"
    # Sampled mode's snapshots are walks of glibc's heap: the run keeps them
    # as NAME-sampled-walk, and NAME-sampled is the same run's profiles
    # alone (what a service without the walk, e.g. on jemalloc, leaves).
    if [[ $mode == sampled ]] && compgen -G "$dir/snapshot-*" > /dev/null; then
        rm -rf "$dir-walk"
        cp -r "$dir" "$dir-walk"
        rm -f "$dir"/snapshot-*
    fi
}

for mode in full sampled; do
    for scenario in task-leak unbounded-channel cache-without-bound; do
        record "lab-$scenario" $mode "\"$scenario\"" \
            target/release/leakscope lab-run --scenario $scenario --duration 4
    done
    record lab-steady-state $mode null \
        target/release/leakscope lab-run --scenario steady-state --duration 4
    record axum-body-slice $mode '"request-field-held"' target/release/axum-service --leak body-slice
    record axum-channel $mode '"unbounded-channel"' target/release/axum-service --leak channel
    record axum-oversized $mode '"oversized-request"' target/release/axum-service --leak oversized
    record axum-none $mode null target/release/axum-service --leak none
    record hyper-body-slice $mode '"request-field-held"' target/release/hyper-service --leak body-slice
    record hyper-task $mode '"task-leak"' target/release/hyper-service --leak task
    record hyper-none $mode null target/release/hyper-service --leak none
done

LEAKSCOPE_BLESS=1 cargo test --release -q -p leakscope-profile --test recorded_runs
du -sh "$OUT"
