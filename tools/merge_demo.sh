#!/bin/sh
# tools/merge_demo.sh: does merging two adapters keep both skills? Trains two small LoRA adapters
# on SmolLM2-135M-Instruct for two tasks (dates: ISO -> DD.MM.YYYY, examples/data/dates_*.jsonl;
# units: "Convert 37 km to m." -> "37000 m", examples/data/units_*.jsonl from make_units.py), merges
# them with `ft merge-models` (linear, task arithmetic, TIES, DARE-TIES) and measures the held-out
# exact-match accuracy of each task on the base, each adapter and each merge; prints a Markdown table.
#   sh tools/merge_demo.sh                        # defaults below; ~20-30 min on 2 idle cores
#   STEPS=20 EVAL_N=50 OUT=runs/merge_demo THREADS=2 sh tools/merge_demo.sh
# A rerun with the same OUT resumes: trained adapters, merged models and finished evaluations are kept.
set -eu
FT=${FT:-build/ft}
STEPS=${STEPS:-20}
EVAL_N=${EVAL_N:-50}
OUT=${OUT:-runs/merge_demo}
THREADS=${THREADS:-0}
MODEL=${MODEL:-$(tools/fetch-model)}
D=examples/data
[ -x "$FT" ] || make "$FT"
[ -f $D/units_train.jsonl ] || python3 $D/make_units.py
mkdir -p "$OUT"
T=""; [ "$THREADS" -gt 0 ] && T="--threads $THREADS"

train() {   # name, data
    [ -f "$OUT/$1/adapter.gguf" ] && return 0
    echo "== training the $1 adapter ($STEPS steps)" >&2
    $FT train -m "$MODEL" --method qlora --objective sft --data "$2" --steps "$STEPS" --batch 8 --lr 1e-3 \
        --rank 8 --alpha 16 --seed 1 $T --out "$OUT/$1" >"$OUT/$1.log" 2>&1
}
train dates $D/dates_train.jsonl
train units $D/units_train.jsonl
A="$OUT/dates/adapter.gguf"; B="$OUT/units/adapter.gguf"
for task in dates units; do head -n "$EVAL_N" "$D/${task}_eval.jsonl" >"$OUT/${task}_eval.jsonl"; done

merge() {   # name, method, inputs...
    name=$1; method=$2; shift 2
    [ -f "$OUT/$name.gguf" ] && return 0
    echo "== merging: $name" >&2
    $FT merge-models --base "$MODEL" --method "$method" "$@" --type f16 --seed 1 -o "$OUT/$name.gguf" >&2
}
merge linear linear --input "$A:0.5" --input "$B:0.5"
merge task task --input "$A:1" --input "$B:1"
merge ties ties --input "$A:1:0.5" --input "$B:1:0.5"
merge dare_ties dare_ties --input "$A:1:0.5" --input "$B:1:0.5"

acc() {     # key, model, lora or "", task -> "xx.x%"
    log="$OUT/eval_$1_$4.log"
    if grep -q "^accuracy: exact match" "$log" 2>/dev/null; then :      # done in an earlier run
    elif [ -n "$3" ]; then $FT eval -m "$2" --lora "$3" --data "$OUT/$4_eval.jsonl" --max-new 12 $T >"$log" 2>&1
    else $FT eval -m "$2" --data "$OUT/$4_eval.jsonl" --max-new 12 $T >"$log" 2>&1; fi
    sed -n 's/^accuracy: exact match [0-9]*\/[0-9]* (\([0-9.]*%\)).*/\1/p' "$log"
}
row() {     # key, label, model, lora
    echo "== evaluating: $2" >&2
    echo "| $2 | $(acc "$1" "$3" "$4" dates) | $(acc "$1" "$3" "$4" units) |"
}
{
    echo "| model ($STEPS steps per adapter, $EVAL_N held-out examples per task) | dates exact match | units exact match |"
    echo "|---|---|---|"
    row base "base (SmolLM2-135M-Instruct Q4_1)" "$MODEL" ""
    row dates "dates adapter" "$MODEL" "$A"
    row units "units adapter" "$MODEL" "$B"
    row linear "linear merge (0.5, 0.5)" "$OUT/linear.gguf" ""
    row task "task arithmetic (1, 1)" "$OUT/task.gguf" ""
    row ties "TIES (1, 1; density 0.5)" "$OUT/ties.gguf" ""
    row dare_ties "DARE-TIES (1, 1; density 0.5)" "$OUT/dare_ties.gguf" ""
} | tee "$OUT/table.md"
