#!/usr/bin/env bash
# Regenerates docs/self-check.md from docs/self-check.template.md: runs the
# lab in every scenario and replaces each `<!-- output: NAME -->` line with
# what leakscope printed. Usage: scripts/gen-self-check-docs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p leakscope-cli -p leakscope-lab --bins
L=target/release/leakscope
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# The self-check's text, without the line naming the temporary directory.
check() {
    local name=$1; shift
    echo "docs: $name"
    "$L" lab --out "$OUT/dir-$name" "$@" | grep -v '^profiles and snapshots in ' > "$OUT/$name.txt"
}

for scenario in $("$L" lab --list | awk '{print $1}'); do
    check "$scenario" --scenario "$scenario"
done
check request-field-held-sampled --scenario request-field-held --mode sampled
echo "docs: hyper-body-slice-sampled"
LEAKSCOPE_MODE=sampled LEAKSCOPE_RATE=65536 LEAKSCOPE_INTERVAL=0.5 LEAKSCOPE_DIR="$OUT/dir-hyper" \
    target/release/hyper-service --leak body-slice --duration 4 > /dev/null
"$L" report "$OUT/dir-hyper" > "$OUT/hyper-body-slice-sampled.txt"
"$L" trend "$OUT/dir-request-field-held" -n 4 > "$OUT/trend-request-field-held.txt"

awk -v dir="$OUT" '
    /^<!-- output: .* -->$/ {
        name = $3
        print "```text"
        file = dir "/" name ".txt"
        while ((getline line < file) > 0) print line
        close(file)
        print "```"
        next
    }
    { print }
' docs/self-check.template.md > docs/self-check.md
echo "docs: wrote docs/self-check.md"
