#!/bin/sh
# tools/bench_mpi.sh MODEL [ROUNDS] - data parallelism on this machine (make bench-mpi).
# The same global batch (8 examples of the demo's data a step, --seq-len 128, LoRA r=8 on every
# linear layer) three ways, interleaved ROUNDS times (default 3): 1 process x 2 threads (2 micro-
# batches of 4), 2 ranks x 1 thread (mpirun -np 2 build/ft-mpi, one micro-batch of 4 each), and the
# same with --zero1. Prints the median seconds per step (the first step left out), the share of a
# step the ranks spent in collectives (comm_s of metrics.jsonl: the sums, and waiting for the slower
# rank), and each run's peak resident memory per process. Then full fine-tuning (f32 masters, AdamW)
# for 3 steps, plain data parallelism vs ZeRO-1: the peak RSS of each rank, where ZeRO-1 keeps half
# of the optimizer's moments.
set -eu
M=${1:?usage: tools/bench_mpi.sh MODEL [ROUNDS]}
ROUNDS=${2:-3}
B=${BUILD:-build}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
MPIRUN="mpirun -np 2 --bind-to core"
COMMON="-m $M --objective sft --data examples/data/dates_train.jsonl --seq-len 128 --eval-before 0 --eval-gen 0 --save-every 0"

# one run: NAME RANKS ARGS...; appends "NAME s_per_step comm_share rss_mb" to $W/rows
run() {
    name=$1; ranks=$2; shift 2
    out=$W/$name.$r
    if [ "$ranks" = 1 ]; then
        /usr/bin/time -f "%M" -o "$out.rss" "$B/ft" train $COMMON --out "$out" "$@" > "$out.log" 2>&1
    else
        $MPIRUN sh -c '/usr/bin/time -f "%M" -o "$0.rss.$OMPI_COMM_WORLD_RANK" "$@"' "$out" "$B/ft-mpi" train $COMMON --out "$out" "$@" > "$out.log" 2>&1
        cat "$out".rss.* | sort -n | tail -n 1 > "$out.rss"
    fi
    sps=$(sed -n 's/.* \([0-9.]*\) s per step.*/\1/p' "$out.log")
    comm=$(awk '{ if (index($0, "comm_s")) { c = $0; sub(/.*"comm_s": /, "", c); sub(/[,}].*/, "", c); if (NR > 1) t += c } } END { printf "%.4f", t / (NR > 1 ? NR - 1 : 1) }' "$out/metrics.jsonl")
    echo "$name $sps $comm $(( $(tail -n 1 "$out.rss") / 1024 ))" >> "$W/rows"
}

r=0
while [ $r -lt "$ROUNDS" ]; do
    r=$((r + 1))
    run 1x2-threads 1 --method lora --steps 6 --batch 4 --grad-accum 2 --threads 2
    run 2x1-ranks 2 --method lora --steps 6 --batch 4 --grad-accum 1 --threads 1
    run 2x1-zero1 2 --method lora --steps 6 --batch 4 --grad-accum 1 --threads 1 --zero1
done
r=full
run full-1x2 1 --method full --steps 3 --batch 4 --grad-accum 2 --threads 2
run full-2x1 2 --method full --steps 3 --batch 4 --grad-accum 1 --threads 1
run full-2x1-zero1 2 --method full --steps 3 --batch 4 --grad-accum 1 --threads 1 --zero1

echo "LoRA SFT, SmolLM2-135M, 8 examples x <=128 tokens a step, $ROUNDS interleaved rounds (median):"
printf "| %-22s | %10s | %16s | %14s |\n|------------------------|------------|------------------|----------------|\n" \
       "configuration" "s / step" "comm share" "peak RSS / rank"
for n in 1x2-threads 2x1-ranks 2x1-zero1; do
    grep "^$n " "$W/rows" | sort -k2 -n | awk -v n="$n" '{ s[NR] = $2; c[NR] = $3; m[NR] = $4 }
        END { k = int((NR + 1) / 2); printf "| %-22s | %10.2f | %15.1f%% | %11d MB |\n", n, s[k], 100 * c[k] / s[k], m[k] }'
done
echo
echo "Full fine-tuning (f32 masters, AdamW), 3 steps: peak RSS of the largest process"
for n in full-1x2 full-2x1 full-2x1-zero1; do
    grep "^$n " "$W/rows" | awk '{ printf "| %-22s | %10.2f s / step | %6d MB |\n", $1, $2, $4 }'
done
