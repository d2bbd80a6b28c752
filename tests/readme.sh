#!/bin/sh
# tests/readme.sh [README.md]: every ```sh block of the README, run as a reader would copy it, in a
# clean clone of this checkout's HEAD (the working tree's uncommitted changes are not in it), one
# block after the other in the clone's directory, each in its own `sh -e`, with the work cut down:
#   --steps N -> --steps 1, --eval-gen N -> --eval-gen 2, synth's -n N -> -n 1, STEPS=N -> STEPS=1,
#   EVAL_N=N -> EVAL_N=2, and every examples/data/*eval*.jsonl of the clone shortened to 4 lines.
# A block that cannot run here says why in an HTML comment on the line before it (not shown when
# the README is rendered):   <!-- readme-test: skip: the reason -->
# Prints "ok - README block N (line L): first command", "FAIL - ..." with the block's last output
# lines, or "skip - ... (the reason)"; the last line is "readme: N passed, M failed, K skipped".
# FT_README_KEEP=1 keeps the clone (its path is printed).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
# mpirun (the data-parallel block) as root in CI's container, without ptrace-based shared memory
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
readme=${1:-$root/README.md}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/readme.XXXXXX")
[ "${FT_README_KEEP:-0}" = 1 ] && echo "readme: the clone is $tmp/clone" || trap 'rm -rf "$tmp"' EXIT
git clone -q "$root" "$tmp/clone" || { echo "FAIL - git clone of $root"; exit 1; }
cd "$tmp/clone" || exit 1
for f in examples/data/*eval*.jsonl; do head -n 4 "$f" > "$f.cut" && mv "$f.cut" "$f"; done
make -s build/ft > "$tmp/make.log" 2>&1 || { echo "FAIL - make build/ft in the clone"; tail -n 20 "$tmp/make.log"; exit 1; }

# the blocks: $tmp/block_N.sh, with "LINE<TAB>skip reason or empty" in $tmp/block_N.info
awk -v dir="$tmp" '
    /^<!-- readme-test: skip:/ { reason = $0; sub(/^<!-- readme-test: skip: */, "", reason); sub(/ *-->.*$/, "", reason); next }
    /^```sh[ \t]*$/ { n++; inb = 1; f = dir "/block_" n ".sh"; printf "%d\t%s\n", NR, reason > (dir "/block_" n ".info"); reason = ""; printf "" > f; next }
    /^```/ && inb { inb = 0; close(f); next }
    inb { print > f; next }
    { if ($0 !~ /^[ \t]*$/) reason = "" }
' "$readme"

cut_down() {
    sed -E -e 's/--steps [0-9]+/--steps 1/g' -e 's/--eval-gen [0-9]+/--eval-gen 2/g' \
        -e '/ft synth/s/ -n [0-9]+/ -n 1/g' -e 's/(^|[ ;])STEPS=[0-9]+/\1STEPS=1/g' -e 's/(^|[ ;])EVAL_N=[0-9]+/\1EVAL_N=2/g' "$1"
}

pass=0; fail=0; skip=0; i=1
while [ -f "$tmp/block_$i.sh" ]; do
    line=$(cut -f1 "$tmp/block_$i.info"); why=$(cut -f2- "$tmp/block_$i.info")
    first=$(grep -E '(^|[ ;])(build/|sh |make |python)' "$tmp/block_$i.sh" | grep -v '^[ \t]*#' | head -n 1 | cut -c1-90)
    [ -n "$first" ] || first=$(grep -v '^[ \t]*#' "$tmp/block_$i.sh" | head -n 1 | cut -c1-90)
    label="README block $i (line $line): $first"
    if [ -n "$why" ]; then
        echo "skip - $label ($why)"; skip=$((skip + 1))
    else
        cut_down "$tmp/block_$i.sh" > "$tmp/run_$i.sh"
        t0=$(date +%s)
        if sh -e "$tmp/run_$i.sh" > "$tmp/out_$i.txt" 2>&1; then
            echo "ok - $label ($(( $(date +%s) - t0 )) s)"; pass=$((pass + 1))
        else
            echo "FAIL - $label"; sed 's/^/    /' "$tmp/run_$i.sh"; echo "    --- its last output:"
            tail -n 15 "$tmp/out_$i.txt" | sed 's/^/    /'; fail=$((fail + 1))
        fi
    fi
    i=$((i + 1))
done
echo "readme: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
