#!/bin/sh
# tools/cuda_check.sh - the one prepared GPU run (for the device tool: `run` with this command):
# nvidia-smi, make cuda, the GPU tests (make test-cuda: every kernel and the tape on the device
# against finetune.h's CPU ops) and the GEMM/attention benchmark (tools/bench_cuda.cc). Logs go
# to $OUT (the device tool's result folder), else build/gpu. Ends well inside 8 minutes.
OUT=${OUT:-build/gpu}
mkdir -p "$OUT"
rc=0
{ nvidia-smi; nvcc --version; } > "$OUT/gpu.txt" 2>&1
make cuda test-cuda > "$OUT/test_cuda.txt" 2>&1 || rc=1
tail -n 20 "$OUT/test_cuda.txt"
make bench-cuda > "$OUT/bench_cuda.txt" 2>&1 || rc=1
cat "$OUT/bench_cuda.txt"
exit $rc
