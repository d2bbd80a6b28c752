#!/bin/sh
# tests/run.sh BUILD_DIR [--no-compile]
# Runs every test binary in BUILD_DIR and the compile tests (the header as C99, C11, C++, with
# FT_STATIC, FT_NO_SIMD, FT_NO_THREADS, with gcc and clang where present). Prints each binary's
# output and, as its last line, the total: "tests: N passed, M failed".
B=${1:-build}
pass=0; fail=0

for t in "$B"/test_*; do
    [ -x "$t" ] || continue
    out=$("$t" 2>&1); rc=$?
    printf '%s\n' "$out" | grep -v '^# ' 
    line=$(printf '%s\n' "$out" | grep -E '^# .*: [0-9]+ passed, [0-9]+ failed$' | tail -n 1)
    if [ -n "$line" ]; then
        p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\1/')
        f=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\2/')
        [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    else
        p=0; f=1; echo "FAIL - $t exited with status $rc before its summary"
    fi
    echo "# $(basename "$t"): $p passed, $f failed"
    pass=$((pass + p)); fail=$((fail + f))
done

if [ "$2" != "--no-compile" ]; then
    tmp=$(mktemp -d)
    check() {   # name, compiler and flags...
        name=$1; shift
        if command -v "$1" >/dev/null 2>&1; then
            if "$@" -Werror -o "$tmp/a.out" tests/compile_main.c tests/compile_impl.c -lm -lpthread >"$tmp/log" 2>&1 && "$tmp/a.out" >/dev/null; then
                echo "ok - compile: $name"; pass=$((pass + 1))
            else
                echo "FAIL - compile: $name"; sed 's/^/    /' "$tmp/log" | head -20; fail=$((fail + 1))
            fi
        fi
    }
    W="-Wall -Wextra -Wpedantic"
    check "gcc c99"              gcc -std=c99 $W -O2 -march=native
    check "gcc c11"              gcc -std=c11 $W -O2 -march=native
    check "gcc c99 FT_NO_SIMD"   gcc -std=c99 $W -O2 -DFT_NO_SIMD
    check "gcc c99 FT_NO_THREADS" gcc -std=c99 $W -O2 -DFT_NO_THREADS
    check "gcc c99 FT_STATIC"    gcc -std=c99 $W -O2 -DFT_STATIC -march=native
    check "clang c99"            clang -std=c99 $W -O2 -march=native
    check "clang c11 FT_STATIC FT_NO_SIMD" clang -std=c11 $W -O2 -DFT_STATIC -DFT_NO_SIMD
    check "g++ c++11"            g++ -x c++ -std=c++11 $W -O2 -march=native
    check "g++ c++17 FT_STATIC"  g++ -x c++ -std=c++17 $W -O2 -DFT_STATIC
    check "clang++ c++11"        clang++ -x c++ -std=c++11 $W -O2 -march=native
    # the NEON kernels: cross-compiled for aarch64 and run under qemu, where both are installed
    if command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 && command -v qemu-aarch64 >/dev/null 2>&1; then
        if aarch64-linux-gnu-gcc -std=c99 $W -Werror -O2 -o "$tmp/tk" tests/test_kernels.c -lm -lpthread >"$tmp/log" 2>&1 &&
           qemu-aarch64 -L /usr/aarch64-linux-gnu "$tmp/tk" >"$tmp/log" 2>&1 && grep -q "simd: neon" "$tmp/log"; then
            echo "ok - neon kernels (aarch64 under qemu)"; pass=$((pass + 1))
        else
            echo "FAIL - neon kernels (aarch64 under qemu)"; sed 's/^/    /' "$tmp/log" | tail -20; fail=$((fail + 1))
        fi
        if aarch64-linux-gnu-gcc -std=c99 $W -Werror -O2 -o "$tmp/tn" tests/test_nf4.c -lm -lpthread >"$tmp/log" 2>&1 &&
           qemu-aarch64 -L /usr/aarch64-linux-gnu "$tmp/tn" >"$tmp/log" 2>&1 && grep -q "SIMD decoder: neon" "$tmp/log"; then
            echo "ok - neon nf4 (aarch64 under qemu)"; pass=$((pass + 1))
        else
            echo "FAIL - neon nf4 (aarch64 under qemu)"; sed 's/^/    /' "$tmp/log" | tail -20; fail=$((fail + 1))
        fi
    fi
    rm -rf "$tmp"
fi

echo "tests: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
