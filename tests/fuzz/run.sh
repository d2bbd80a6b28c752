#!/bin/sh
# tests/fuzz/run.sh TARGET... - runs each libFuzzer harness $BUILD/fuzz/fuzz_TARGET (make fuzz builds
# them) for $FUZZ_TIME seconds (default 60), one after the other, on its working corpus
# $BUILD/fuzz/corpus/TARGET: the seeds of tests/fuzz/corpus/TARGET (and the inputs of earlier findings,
# fixed since, in tests/fuzz/regress/TARGET) are copied in first and libFuzzer
# adds what it finds there (nothing under tests/ is written). Prints one line per target:
#     fuzz TARGET: N executions, C coverage, F findings
# (N from -print_final_stats, C the last "cov:" libFuzzer reported). A finding (a crash, a sanitizer
# report, a leak, a timeout, running out of memory) leaves its reproducer in
# $BUILD/fuzz/findings/TARGET/ (rerun: $BUILD/fuzz/fuzz_TARGET FILE); the whole output of a run is
# in $BUILD/fuzz/TARGET.log. Exits 1 when a target had a finding or did not run.
# FUZZ_ARGS: more libFuzzer options for every target. The harnesses that go through files write
# them under TMPDIR, set to a directory of this run in /dev/shm where there is one (removed after).
B=${BUILD:-build}
T=${FUZZ_TIME:-60}
status=0
if [ -d /dev/shm ] && [ -w /dev/shm ]; then scratch=$(mktemp -d /dev/shm/ft_fuzz_run.XXXXXX); else scratch=$B/fuzz/tmp; fi
trap 'rm -rf "$scratch"' EXIT
for t in "$@"; do
    bin=$B/fuzz/fuzz_$t
    work=$B/fuzz/corpus/$t
    found=$B/fuzz/findings/$t
    log=$B/fuzz/$t.log
    tmp=$scratch/$t
    if [ ! -x "$bin" ]; then
        echo "fuzz $t: not built ($bin)"
        status=1
        continue
    fi
    mkdir -p "$work" "$found" "$tmp"
    if [ -d "tests/fuzz/corpus/$t" ]; then
        cp tests/fuzz/corpus/"$t"/* "$work"/ 2>/dev/null
    fi
    if [ -d "tests/fuzz/regress/$t" ]; then     # what earlier runs found (fixed): seeds too
        cp tests/fuzz/regress/"$t"/* "$work"/ 2>/dev/null
    fi
    if [ "$t" = model ]; then                   # every architecture's tiny model (tests/test_arch.c)
        cp tests/fixtures/arch/*.gguf "$work"/ 2>/dev/null
    fi
    # the regex engine runs in time linear in the text: an input it takes over 2 s on is a finding
    timeout=10
    [ "$t" = regex ] && timeout=2
    before=$(ls "$found" | wc -l)
    TMPDIR=$tmp UBSAN_OPTIONS=print_stacktrace=1 "$bin" -max_total_time="$T" -print_final_stats=1 \
        -timeout="$timeout" -rss_limit_mb=2048 -artifact_prefix="$found/" ${FUZZ_ARGS:-} "$work" >"$log" 2>&1
    rc=$?
    rm -rf "$tmp"
    after=$(ls "$found" | wc -l)
    n=$((after - before))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | sed 's/cov: //')
    echo "fuzz $t: ${execs:-0} executions, ${cov:-0} coverage, $n findings"
    if [ "$n" -gt 0 ]; then
        for f in $(ls -t "$found" | head -n "$n"); do echo "    $found/$f"; done
        status=1
    elif [ "$rc" -ne 0 ]; then
        echo "    exited with status $rc without a reproducer: see $log"
        tail -n 5 "$log" | sed 's/^/    /'
        status=1
    fi
done
exit $status
