#!/usr/bin/env bash
# Side-by-side benchmark of leakscope against the alternatives, in one run:
#   - two multi-threaded workloads (src/lib.rs: `requests`, the request
#     imitation, and `mixed`, bare churn of 16 B-256 KiB blocks) on glibc,
#     jemalloc and mimalloc alone, and leakscope wrapping each in off /
#     sampled (512 KiB) / full mode; jemalloc with its own profiling at the
#     same rate; heaptrack and dhat on the requests workload;
#   - profiler memory per tracked block (1M live blocks, full mode), and
#     leakscope's own memory on a small service with periodic sets;
#   - instruction counts under callgrind (deterministic): the whole workload
#     on one thread, and one alloc+free pair in isolation on each allocator;
#   - criterion micro-benchmarks of one alloc+free pair per mode;
#   - heap snapshots: parent pause and child analysis time for 100 MiB and
#     1 GiB heaps of millions of blocks (full mode, and sampled mode, whose
#     blocks come from walking glibc's heap), and for 1M-node linked lists,
#     a tree and 1M never-completing tokio tasks;
#   - the lab's request throughput (tonic service and client) on the system
#     allocator and with leakscope off / sampled / full;
#   - `leakscope run` (LD_PRELOAD) sampled and full against heaptrack and
#     Valgrind's massif on the same unmodified program;
#   - snapshots from outside: `leakscope attach` (pause, copy, analysis)
#     and gcore + `leakscope core`, against the process's own snapshot.
# Writes bench/RESULTS.md. Usage: bench/run.sh [repeats]. Shorter runs:
# SLOW_REPEATS, LAB_REPEATS, PRELOAD_REPEATS, LONG_REPEATS (rounds of each
# part), SKIP="heaptrack dhat lab preload own-memory snapshots attach criterion" (parts left
# out; RESULTS.md then lacks them).
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-15}
SLOW_REPEATS=${SLOW_REPEATS:-3}
export BENCH_THREADS=${BENCH_THREADS:-4}
export BENCH_REQUESTS=${BENCH_REQUESTS:-50000}
OUT=$(mktemp -d)
RAW="$OUT/raw.jsonl"

cargo build --release -q -p leakscope-bench --bins
B=target/release
SKIP=${SKIP:-}
skip() { [[ " $SKIP " == *" $1 "* ]]; }

# Runs one configuration; records the in-process report plus the whole
# command's wall time (heaptrack's and dhat's costs partly fall outside the
# workload's own clock).
run() {
    local name=$1; shift
    local start end line status=0
    start=$(date +%s%N)
    line=$("$@" 2>"$OUT/last.err" | grep '^{"config"' | tail -1) || status=$?
    end=$(date +%s%N)
    if [ -z "$line" ]; then
        # A configuration that failed is reported and left out; the run goes on.
        echo "bench: $name failed (status $status): $(tail -3 "$OUT/last.err")" | tee -a "$OUT/failures.txt" >&2
        return 0
    fi
    echo "{\"name\":\"$name\",\"process_ms\":$(( (end - start) / 1000000 )),\"report\":$line}" >> "$RAW"
}

# Every allocator alone, then leakscope wrapping it in each mode.
allocators() {
    local prefix
    for alloc in system jemalloc mimalloc; do
        if [ "$alloc" = system ]; then
            run system "$B/workload-system"
            prefix=""
            wrapped="$B/workload-leakscope"
        else
            run "$alloc" "$B/workload-$alloc"
            prefix="$alloc+"
            wrapped="$B/workload-$alloc-leakscope"
        fi
        for mode in off sampled full; do
            run "${prefix}leakscope-$mode" env LEAKSCOPE_MODE=$mode "$wrapped"
        done
    done
    run jemalloc-prof env _RJEM_MALLOC_CONF=prof:true,prof_active:true,lg_prof_sample:19 "$B/workload-jemalloc"
}
MIXED_THREADS=${MIXED_THREADS:-2}
MIXED_STEPS=${MIXED_STEPS:-1000000}
echo "bench: workloads, $REPEATS rounds (requests: threads=$BENCH_THREADS, requests/thread=$BENCH_REQUESTS; mixed: threads=$MIXED_THREADS, steps/thread=$MIXED_STEPS)"
for round in $(seq "$REPEATS"); do
    BENCH_WORKLOAD=requests allocators
    BENCH_WORKLOAD=mixed BENCH_THREADS=$MIXED_THREADS BENCH_REQUESTS=$MIXED_STEPS allocators
    echo "  round $round/$REPEATS done"
done
for round in $(seq "$SLOW_REPEATS"); do
    if ! skip heaptrack && command -v heaptrack >/dev/null 2>&1; then
        run heaptrack heaptrack -o "$OUT/heaptrack.$round" "$B/workload-system"
    fi
    skip dhat || run dhat "$B/workload-dhat"
    echo "  slow round $round/$SLOW_REPEATS done"
done

LAB_REPEATS=${LAB_REPEATS:-5}
skip lab && LAB_REPEATS=0
echo "bench: lab throughput (tonic service + client over loopback, closed loop), $LAB_REPEATS rounds"
LAB="$OUT/lab.jsonl"
: > "$LAB"
for round in $(seq "$LAB_REPEATS"); do
    BENCH_LAB_SECONDS=5 "$B/lab-throughput-system" 2>/dev/null >> "$LAB"
    for mode in off sampled full; do
        LEAKSCOPE_MODE=$mode BENCH_LAB_SECONDS=5 "$B/lab-throughput" 2>/dev/null >> "$LAB"
    done
    echo "  lab round $round/$LAB_REPEATS done"
done

PRELOAD_REPEATS=${PRELOAD_REPEATS:-5}
LONG_REPEATS=${LONG_REPEATS:-3}
if skip preload; then PRELOAD_REPEATS=0; LONG_REPEATS=0; fi
echo "bench: leakscope run (LD_PRELOAD) on an unmodified program, $PRELOAD_REPEATS rounds"
cargo build --release -q -p leakscope-preload -p leakscope-cli
PRELOAD_OUT="$OUT/preload"
PRELOAD="$OUT/preload.jsonl"
: > "$PRELOAD"
# Times a whole command (profile and leak check at exit included).
timed() {
    local name=$1; shift
    local start end
    start=$(date +%s%N)
    "$@" > /dev/null 2>&1
    end=$(date +%s%N)
    echo "{\"name\":\"$name\",\"ms\":$(( (end - start) / 1000000 ))}" >> "$PRELOAD"
}
export BENCH_REQUESTS_SAVED=$BENCH_REQUESTS
export BENCH_REQUESTS=20000
for round in $(seq "$PRELOAD_REPEATS"); do
    timed plain "$B/workload-system"
    timed leakscope-run-sampled "$B/leakscope" run -q --mode sampled --out "$PRELOAD_OUT" -- "$B/workload-system"
    timed leakscope-run-full "$B/leakscope" run -q --mode full --out "$PRELOAD_OUT" -- "$B/workload-system"
    if command -v heaptrack >/dev/null 2>&1; then
        timed heaptrack heaptrack -o "$PRELOAD_OUT/heaptrack.$round" "$B/workload-system"
    fi
    if [ "$round" -le 2 ] && command -v valgrind >/dev/null 2>&1; then
        timed massif valgrind --tool=massif --massif-out-file="$PRELOAD_OUT/massif.$round" "$B/workload-system"
    fi
    echo "  preload round $round/$PRELOAD_REPEATS done"
done
# The same program running about ten times longer: what remains of the
# fixed costs (start-up, writing the profile, the leak check) per unit of work.
export BENCH_REQUESTS=${BENCH_LONG_REQUESTS:-200000}
for round in $(seq "$LONG_REPEATS"); do
    timed plain-long "$B/workload-system"
    timed leakscope-run-sampled-long "$B/leakscope" run -q --mode sampled --out "$PRELOAD_OUT" -- "$B/workload-system"
    timed leakscope-run-full-long "$B/leakscope" run -q --mode full --out "$PRELOAD_OUT" -- "$B/workload-system"
    if command -v heaptrack >/dev/null 2>&1; then
        timed heaptrack-long heaptrack -o "$PRELOAD_OUT/heaptrack-long.$round" "$B/workload-system"
    fi
    if [ "$round" -le 1 ] && command -v valgrind >/dev/null 2>&1; then
        timed massif-long valgrind --tool=massif --massif-out-file="$PRELOAD_OUT/massif-long.$round" "$B/workload-system"
    fi
    echo "  preload long round $round/$LONG_REPEATS done"
done
export BENCH_REQUESTS=$BENCH_REQUESTS_SAVED

echo "bench: profiler memory per tracked block"
LEAKSCOPE_MODE=full BENCH_LIVE_BLOCKS=1000000 BENCH_REQUESTS=1000 "$B/workload-leakscope" > "$OUT/memory.json"

# leakscope's own memory on a small service (a hyper server driving its own
# load): RSS over mode off, sampled without and with periodic sets every
# second, those written by a forked child (the default) or in the service.
OWN_REPEATS=${OWN_REPEATS:-3}
skip own-memory && OWN_REPEATS=0
echo "bench: leakscope's own memory on a small service, $OWN_REPEATS rounds"
OWN="$OUT/own_memory.jsonl"
: > "$OWN"
if [ "$OWN_REPEATS" -gt 0 ]; then
    cargo build --release -q -p leakscope-lab --bin hyper-service
fi
for round in $(seq "$OWN_REPEATS"); do
    svc=("$B/hyper-service" --leak none --duration 10)
    LEAKSCOPE_MODE=off python3 bench/own_memory.py off "${svc[@]}" >> "$OWN"
    LEAKSCOPE_MODE=sampled python3 bench/own_memory.py sampled "${svc[@]}" >> "$OWN"
    for writer in child process; do
        rm -rf "$OUT/own"
        LEAKSCOPE_MODE=sampled LEAKSCOPE_DIR="$OUT/own" LEAKSCOPE_INTERVAL=1 LEAKSCOPE_WRITER=$writer \
            python3 bench/own_memory.py "periodic-$writer" "${svc[@]}" >> "$OWN"
    done
    echo "  own memory round $round/$OWN_REPEATS done"
done

echo "bench: callgrind instruction counts (1 thread)"
CALLGRIND="$OUT/callgrind.txt"
: > "$CALLGRIND"
for cfg in system:workload-system: off:workload-leakscope:off sampled:workload-leakscope:sampled full:workload-leakscope:full; do
    IFS=: read -r name bin mode <<< "$cfg"
    env BENCH_THREADS=1 BENCH_REQUESTS=5000 ${mode:+LEAKSCOPE_MODE=$mode} \
        valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.$name" "$B/$bin" > /dev/null 2> "$OUT/cg.$name.log"
    echo "$name $(grep -o 'Collected : [0-9]*' "$OUT/cg.$name.log" | grep -o '[0-9]*')" >> "$CALLGRIND"
done

# Allocations in that one-thread run, counted exactly in full mode.
BENCH_THREADS=1 BENCH_REQUESTS=5000 LEAKSCOPE_MODE=full "$B/workload-leakscope" > "$OUT/allocations.json"

echo "bench: instructions per alloc+free pair (callgrind)"
PAIRS="$OUT/pairs.txt"
: > "$PAIRS"
for alloc in glibc jemalloc mimalloc; do
    for cfg in alone off sampled full; do
        valgrind --tool=callgrind --toggle-collect='*measured_pairs*' --callgrind-out-file="$OUT/cgp.$alloc.$cfg" \
            "$B/hot-path-pairs" "$alloc" "$cfg" 1000000 > /dev/null 2> "$OUT/cgp.$alloc.$cfg.log"
        echo "$alloc/$cfg $(grep -o 'Collected : [0-9]*' "$OUT/cgp.$alloc.$cfg.log" | grep -o '[0-9]*')" >> "$PAIRS"
    done
done
# leakscope run's own per-call cost: the same pairs through the preload's
# malloc and free (instructions inside the library and glibc), sampled.
cargo build --release -q -p leakscope-preload
for cfg in plain preload; do
    if [ "$cfg" = preload ]; then pre="env LD_PRELOAD=$PWD/$B/libleakscope_preload.so LEAKSCOPE_MODE=sampled"; else pre=env; fi
    $pre valgrind --tool=callgrind --toggle-collect='*measured_pairs*' --callgrind-out-file="$OUT/cgp.c.$cfg" \
        "$B/hot-path-pairs" glibc alone 1000000 > /dev/null 2> "$OUT/cgp.c.$cfg.log"
    echo "c/$cfg $(grep -o 'Collected : [0-9]*' "$OUT/cgp.c.$cfg.log" | grep -o '[0-9]*')" >> "$PAIRS"
done

echo "bench: heap snapshots (pause and analysis)"
SNAPSHOTS="$OUT/snapshots.jsonl"
: > "$SNAPSHOTS"
SHAPES=("100 128" "1024 512" "1024 4096" "64 64 list" "64 64 dlist" "64 64 tree" "64 64 tasks")
skip snapshots && SHAPES=()
# Random pointers (throughput), then 1M-node lists, a tree and 1M tokio
# tasks (linear analysis on the shapes real heaps have).
for shape in "${SHAPES[@]}"; do
    # shellcheck disable=SC2086
    "$B/snapshot-bench" $shape 2>/dev/null >> "$SNAPSHOTS"
    echo >> "$SNAPSHOTS"
done
# The service keeps running: two threads change the heap during each
# snapshot (the pause and the child's extra memory under writes).
if ! skip snapshots; then
    SNAPSHOT_MUTATORS=2 "$B/snapshot-bench" 1024 512 2>/dev/null >> "$SNAPSHOTS"
    echo >> "$SNAPSHOTS"
fi
# Sampled mode: the same heaps, their blocks found by walking glibc's heap.
if ! skip snapshots; then
    for shape in "100 128" "1024 512"; do
        # shellcheck disable=SC2086
        LEAKSCOPE_MODE=sampled "$B/snapshot-bench" $shape 2>/dev/null >> "$SNAPSHOTS"
        echo >> "$SNAPSHOTS"
    done
fi

echo "bench: snapshots from outside (attach, gcore + core) against in-process"
ATTACH="$OUT/attach.jsonl"
: > "$ATTACH"
if ! skip attach; then
    for heap in 256 1024; do
        "$B/attach-bench" "$heap" 512 2>/dev/null >> "$ATTACH" || echo "bench: attach-bench $heap failed" >&2
    done
fi

if ! skip criterion; then
    echo "bench: criterion hot path"
    cargo bench -q -p leakscope-bench --bench hot_path -- --warm-up-time 1 --measurement-time 3 > "$OUT/criterion.txt" 2>&1
fi

python3 bench/report.py "$RAW" "$OUT/memory.json" "$CALLGRIND" target/criterion "$PAIRS" "$OUT/allocations.json" "$SNAPSHOTS" "$LAB" "$PRELOAD" "$ATTACH" "$OWN" > bench/RESULTS.md
echo "bench: wrote bench/RESULTS.md"
