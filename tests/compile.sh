#!/bin/sh
# tests/compile.sh NAME: one configuration of the compile matrix. The single header must compile
# without a warning as C99, C11 and C++, with gcc and clang, with FT_STATIC, FT_NO_SIMD,
# FT_NO_THREADS and each part compiled out (FT_NO_RL, FT_NO_SYNTH, FT_NO_MERGE), and the program
# must run. Prints one line, "ok - compile: ...", "FAIL - compile:
# ..." followed by the compiler's messages, or "skip - compile: ... (why)"; tests/run.sh counts
# them. gcc_c99 and gcc_c99_nosimd are the builds make does anyway ($BUILD/finetune.o and
# $BUILD/test_whitebox_ref): their logs are read instead of compiling the same thing again.
B=${BUILD:-build}
W="-std=c99 -Wall -Wextra -Wpedantic"
name=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

say() {   # status, label, log file
    echo "$1 - compile: $2"
    [ "$1" = FAIL ] && [ -s "$3" ] && sed 's/^/    /' "$3" | head -20
    return 0
}
# label, compiler and flags...: compile tests/compile_main.c + tests/compile_impl.c and run the program
check() {
    label=$1; shift
    command -v "$1" >/dev/null 2>&1 || { say skip "$label (no $1 here)"; return; }
    if "$@" -Werror -o "$tmp/a.out" tests/compile_main.c tests/compile_impl.c -lm -lpthread >"$tmp/log" 2>&1 &&
       "$tmp/a.out" >>"$tmp/log" 2>&1; then say ok "$label"
    else say FAIL "$label" "$tmp/log"
    fi
}
# label, the log of a build make did: it exists and holds no warning
built() {
    if [ ! -f "$2" ]; then say FAIL "$1 (no $2: make builds it first)"
    elif [ -s "$2" ]; then say FAIL "$1 (warnings)" "$2"
    else say ok "$1"
    fi
}

case $name in
gcc_c99)                 # the library object, and a program of the declarations alone linking it
    label="${CC:-cc} c99 ($B/finetune.o)"
    if [ ! -f "$B/finetune.o.log" ] || [ -s "$B/finetune.o.log" ]; then built "$label" "$B/finetune.o.log"
    elif ${CC:-cc} $W -Werror -o "$tmp/a.out" tests/compile_main.c "$B/finetune.o" -lm -lpthread >"$tmp/log" 2>&1 &&
         "$tmp/a.out" >>"$tmp/log" 2>&1; then say ok "$label"
    else say FAIL "$label" "$tmp/log"
    fi ;;
gcc_c99_nosimd)          built "${CC:-cc} c99 FT_NO_SIMD ($B/test_whitebox_ref)" "$B/test_whitebox_ref.log" ;;
gcc_c11)                 check "gcc c11"               gcc -std=c11 -Wall -Wextra -Wpedantic -O2 -march=native ;;
gcc_c99_nothreads)       check "gcc c99 FT_NO_THREADS" gcc $W -O2 -DFT_NO_THREADS ;;
gcc_c99_static)          check "gcc c99 FT_STATIC"     gcc $W -O2 -DFT_STATIC -march=native ;;
gcc_c99_no_rl)           check "gcc c99 FT_NO_RL"      gcc $W -O2 -DFT_NO_RL ;;
gcc_c99_no_synth)        check "gcc c99 FT_NO_SYNTH"   gcc $W -O2 -DFT_NO_SYNTH ;;
gcc_c99_no_merge)        check "gcc c99 FT_NO_MERGE"   gcc $W -O2 -DFT_NO_MERGE ;;
clang_c99)               check "clang c99"             clang $W -O2 -march=native ;;
clang_c11_static_nosimd) check "clang c11 FT_STATIC FT_NO_SIMD" clang -std=c11 -Wall -Wextra -Wpedantic -O2 -DFT_STATIC -DFT_NO_SIMD ;;
gxx_cxx11)               check "g++ c++11"             g++ -x c++ -std=c++11 -Wall -Wextra -Wpedantic -O2 -march=native ;;
gxx_cxx17_static)        check "g++ c++17 FT_STATIC"   g++ -x c++ -std=c++17 -Wall -Wextra -Wpedantic -O2 -DFT_STATIC ;;
clangxx_cxx11)           check "clang++ c++11"         clang++ -x c++ -std=c++11 -Wall -Wextra -Wpedantic -O2 -march=native ;;
neon)   # the NEON kernels and NF4 decoder: tests/whitebox.c cross-compiled for aarch64, run under qemu
    label="neon kernels and nf4 (aarch64 under qemu)"
    if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || ! command -v qemu-aarch64 >/dev/null 2>&1; then
        say skip "$label (no aarch64-linux-gnu-gcc or qemu-aarch64 here)"
    elif aarch64-linux-gnu-gcc $W -Werror -O2 -DFT_WHITEBOX_KERNELS -o "$tmp/wb" tests/whitebox.c -lm -lpthread >"$tmp/log" 2>&1 &&
         qemu-aarch64 -L /usr/aarch64-linux-gnu "$tmp/wb" >"$tmp/log" 2>&1 &&
         grep -q "simd: neon" "$tmp/log" && grep -q "SIMD decoder: neon" "$tmp/log"; then say ok "$label"
    else say FAIL "$label" "$tmp/log"
    fi ;;
nvcc)   # the GPU companion: no warning for sm_80, sm_90 and PTX, the tensor-core mma in its PTX, and
        # the GPU test, the benchmark and the command line (build/ft-cuda; build/ft-mpi-cuda where
        # mpicc is) link with it; nothing runs (no GPU here)
    label="nvcc finetune_cuda.cu (sm_80, sm_90, PTX); tests/test_cuda.cc, tools/bench_cuda.cc, build/ft-cuda and build/ft-mpi-cuda linked"
    arch="-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90"
    if ! command -v nvcc >/dev/null 2>&1; then say skip "$label (no nvcc here)"
    elif nvcc -O3 -std=c++17 -Werror all-warnings -Xcompiler -Wall,-Wextra $arch -I. -c -o "$tmp/cu.o" finetune_cuda.cu >"$tmp/log" 2>&1 &&
         nvcc -std=c++17 -arch=compute_80 -I. -ptx -o "$tmp/cu.ptx" finetune_cuda.cu >>"$tmp/log" 2>&1 &&
         grep -q "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" "$tmp/cu.ptx" &&
         nvcc -O1 -std=c++17 -Werror all-warnings -I. -o "$tmp/test_cuda" tests/test_cuda.cc "$tmp/cu.o" -lpthread >>"$tmp/log" 2>&1 &&
         nvcc -O1 -std=c++17 -Werror all-warnings -I. -o "$tmp/bench_cuda" tools/bench_cuda.cc "$tmp/cu.o" -lpthread >>"$tmp/log" 2>&1 &&
         ${CC:-cc} $W -Werror -O1 -DFT_WITH_CUDA -I. -c -o "$tmp/ft.o" tools/ft.c >>"$tmp/log" 2>&1 &&
         nvcc -o "$tmp/ft-cuda" "$tmp/ft.o" "$B/finetune.o" "$tmp/cu.o" -lm -lpthread >>"$tmp/log" 2>&1 &&
         { ! command -v mpicc >/dev/null 2>&1 ||
           { OMPI_CC=${CC:-cc} mpicc $W -Werror -O1 -DFT_WITH_CUDA -I. -c -o "$tmp/ftm.o" tools/ft_mpi.c >>"$tmp/log" 2>&1 &&
             nvcc -o "$tmp/ft-mpi-cuda" "$tmp/ftm.o" "$B/finetune.o" "$tmp/cu.o" -lm -lpthread $(mpicc --showme:link) >>"$tmp/log" 2>&1; }; }; then
        say ok "$label"
    else say FAIL "$label" "$tmp/log"
    fi ;;
*)  echo "FAIL - compile: unknown configuration $name" ;;
esac
