#!/bin/sh
# tests/run.sh BUILD_DIR [--no-compile]
# Runs every test binary in BUILD_DIR, several at a time (FT_TEST_JOBS, default: the CPU count),
# and prints each one's output in name order; then the compile matrix's results, which make wrote
# to BUILD_DIR/matrix/*.txt (tests/compile.sh), unless --no-compile. The last line is the total:
# "tests: N passed, M failed".
B=${1:-build}
J=${FT_TEST_JOBS:-$(nproc 2>/dev/null || echo 2)}
pass=0; fail=0
root=$(pwd)
case $B in /*) ;; *) B=$root/$B ;; esac
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export FT_BIN="$B/ft"                      # the command line, for tests/test_cli.c
export FT_MPI_BIN="$B/ft-mpi"              # data parallelism over MPI, for tests/test_mpi.c
export FT_CUDA_EMU_BIN="$B/ft-cuda-emu"    # --device cuda with the GPU emulated, for tests/test_cli.c and test_mpi.c
export FT_MPI_CUDA_EMU_BIN="$B/ft-mpi-cuda-emu"   # and over MPI, a rank per emulated GPU, for tests/test_mpi.c

# Each binary runs in a scratch directory of its own, which has tests/ and examples/ (links to
# these) and an empty build/ for the files it writes, so that binaries running side by side (the
# three builds of tests/whitebox.c among them) never share a file. Its output and exit status
# land in $out/NAME.{out,rc}.
for t in "$B"/test_*; do
    [ -x "$t" ] && [ -f "$t" ] && echo "$t"
done | xargs -P "$J" -I{} sh -c '
    n=$(basename "$1"); d="$2/$n.dir"
    mkdir -p "$d/build" && ln -s "$3/tests" "$d/tests" && ln -s "$3/examples" "$d/examples"
    (cd "$d" && "$1") >"$2/$n.out" 2>&1
    echo $? >"$2/$n.rc"' sh {} "$out" "$root"

for t in "$B"/test_*; do
    [ -x "$t" ] && [ -f "$t" ] || continue
    n=$(basename "$t")
    rc=$(cat "$out/$n.rc" 2>/dev/null || echo 127)
    grep -v '^# ' "$out/$n.out"
    line=$(grep -E '^# .*: [0-9]+ passed, [0-9]+ failed$' "$out/$n.out" | tail -n 1)
    if [ -n "$line" ]; then
        p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\1/')
        f=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\2/')
        [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    else
        p=0; f=1; echo "FAIL - $t exited with status $rc before its summary"
    fi
    echo "# $n: $p passed, $f failed"
    pass=$((pass + p)); fail=$((fail + f))
done

if [ "$2" != "--no-compile" ]; then
    for m in "$B"/matrix/*.txt; do
        [ -f "$m" ] || continue
        cat "$m"
        case $(head -n 1 "$m") in
            ok*) pass=$((pass + 1)) ;;
            skip*) ;;
            *) fail=$((fail + 1)) ;;
        esac
    done
fi

echo "tests: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
