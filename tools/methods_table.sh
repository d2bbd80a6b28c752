#!/bin/sh
# tools/methods_table.sh [MODEL.gguf] - the README's method table: for each method, the trainable
# parameters, the peak memory (RSS) of a training run and the time per step, on the same fixed
# batch (4 packed rows of 128 tokens of examples/data/islands_train.jsonl, continued pretraining),
# 2 threads, 6 steps (the first is not timed). Needs /usr/bin/time (GNU time) for the peak RSS.
# LoRA runs on the model dequantized to F16 (written once with ft merge), QLoRA on it quantized
# to NF4 at load (the QLoRA paper's base); the other methods on the Q4_1 file itself.
M=${1:-$(tools/fetch-model)}
FT=${FT:-build/ft}
OUT=${OUT:-runs/methods}
mkdir -p "$OUT"
F16="$OUT/base_f16.gguf"
[ -f "$F16" ] || "$FT" merge -m "$M" --type f16 --embeddings -o "$F16" > /dev/null 2>&1
printf '| method | trainable parameters | %% of the model | peak RSS | s / step |\n|---|---|---|---|---|\n'
run() {   # label, model, flags...
    label=$1; shift
    log="$OUT/$(echo "$label" | tr ' /=' '___').log"
    model=$1; shift
    /usr/bin/time -f "rss_kb %M" "$FT" train -m "$model" --objective cpt --data examples/data/islands_train.jsonl --steps 6 --batch 4 \
        --seq-len 128 --lr 1e-4 --threads 2 --save-every 0 --out "$OUT/run" "$@" > "$log" 2>&1
    n=$(sed -n 's/.*: \([0-9]*\) trainable parameters (\([0-9.]*\)% of.*/\1 \2/p' "$log")
    rss=$(sed -n 's/^rss_kb \([0-9]*\)/\1/p' "$log")
    sps=$(sed -n 's/.*, \([0-9.]*\) s per step.*/\1/p' "$log")
    printf '| %s | %s | %s%% | %s MiB | %s |\n' "$label" "${n% *}" "${n#* }" "$((rss / 1024))" "$sps"
}
run "LoRA r=16, all linear (F16 base)"    "$F16" --method lora --rank 16 --alpha 32
run "QLoRA r=16 (NF4 base)"                "$F16" --method qlora --quantize nf4 --rank 16 --alpha 32
run "LoRA r=16 on the Q4_1 GGUF"           "$M" --method lora --rank 16 --alpha 32
run "DoRA r=16 (Q4_1 GGUF)"                "$M" --method dora --rank 16 --alpha 32
run "LoHa r=8 (Q4_1 GGUF)"                "$M" --method loha --rank 8 --alpha 8
run "LoRA r=16 + grad checkpointing"       "$M" --method lora --rank 16 --alpha 32 --grad-checkpoint
run "IA3 (k, v, down)"                     "$M" --method ia3
run "adapters (Houlsby, 64)"               "$M" --method adapter --bottleneck 64
run "adapters (Pfeiffer, 64)"              "$M" --method adapter --bottleneck 64 --placement pfeiffer
run "prefix tuning (20)"                   "$M" --method prefix --virtual-tokens 20
run "prefix tuning (20, MLP 512)"          "$M" --method prefix --virtual-tokens 20 --prefix-hidden 512
# prompt tuning does not take packed rows: SFT on 4 unpacked rows of dates_train.jsonl (later options win)
run "prompt tuning (20)*"                  "$M" --method prompt --virtual-tokens 20 --objective sft --data examples/data/dates_train.jsonl
run "full fine-tuning (f32 masters)"       "$M" --method full
