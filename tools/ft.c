/* ft - the finetune.h command line: info, generate, train, eval, merge, merge-models, export, logits,
   quantize, synth, sweep.

   Every option is one row of ft_opts: its name (--name, the key of a --config file and of a run's
   config), short alias, type, place in ft_cli, default (as text, or the library's own
   *_opts_default() for the objective and method chosen), range or names, the commands that take it
   and its help. Parsing, validation, the usage texts and the run's config all come from that table.
   Bad input exits 2 with a message naming the option; a failure exits 1 with the library's message
   (file, offset or line). An ADAPTER is a llama.cpp LoRA GGUF, finetune.h's own adapter GGUF or a
   PEFT directory. */
#define _POSIX_C_SOURCE 200809L          /* getline, fork, waitpid, readlink */
#include "../finetune.h"                 /* the implementation: build/finetune.o */
#ifdef FT_WITH_CUDA                      /* build/ft-cuda (make ft-cuda): --device cuda */
#define FT_CUDA_API_ONLY
#include "../finetune_cuda.cu"
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <stdarg.h>
#include <math.h>
#include <errno.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>                    /* ft sweep runs each trial as a child `ft train` */

/* data parallelism: the group when build/ft-mpi runs this under mpirun (tools/ft_mpi.c), else NULL;
   rank 0 writes the run directory, prints and evaluates, the other ranks train */
static const ft_collective *ft_comm;
static int ft_local_rank;               /* among the ranks on this host (tools/ft_mpi.c): its GPU */
static int ft_rank(void) { return ft_comm ? ft_comm->rank : 0; }
/* where the training's notes go: stderr on rank 0, nowhere on the others (errors go to stderr) */
static FILE *ft_note(void) {
    static FILE *null;
    if (ft_rank() == 0) return stderr;
    if (!null) null = fopen("/dev/null", "w");
    return null ? null : stderr;
}

/* ==== the options: one table ==================================================================== */

/* the commands, as the bits of an option's command mask */
enum {
    FT_C_INFO = 1 << 0, FT_C_GENERATE = 1 << 1, FT_C_TRAIN = 1 << 2, FT_C_EVAL = 1 << 3,
    FT_C_MERGE = 1 << 4, FT_C_MERGE_MODELS = 1 << 5, FT_C_EXPORT = 1 << 6, FT_C_LOGITS = 1 << 7,
    FT_C_QUANTIZE = 1 << 8, FT_C_SYNTH = 1 << 9, FT_C_SWEEP = 1 << 10, FT_C_CONVERT = 1 << 11, FT_C_ALL = (1 << 12) - 1
};

#define FT_LIST_MAX 64
typedef struct ft_list { int n, from_file; const char *v[FT_LIST_MAX]; } ft_list;

/* every command's options: the library's option structs, and the command line's own */
typedef struct ft_cli {
    const char *model, *out, *data, *eval, *adapter, *init_adapter, *general, *base, *seed_tasks, *mc;
    const char *base_name, *prompt, *ids, *targets, *reward, *config, *device;
    ft_list mix, task, input, grid;
    int objective, method, merge_method, synth_method;  /* chosen first: the library's defaults follow */
    ft_train_opts train;
    ft_peft_opts peft;
    ft_ctx_opts ctx;
    ft_data_opts data_opts;
    ft_gen_opts gen;
    ft_synth_opts synth;
    ft_merge_opts merge;
    ft_save_opts save;
    int quantize, type, format, output, all, chat, verbose, normalize, resume, grad_checkpoint;
    int64_t log_every, eval_gen, eval_before, random, gen_seed;
    double eval_split, mix_temperature, mix_cap;
    const char *name;                   /* the command ("train") and its FT_C_* bit */
    unsigned bit;
    int help;                           /* --help was given */
    int argc;                           /* its arguments (ft sweep passes them on to the trials) */
    char **argv;
    char *texts[8];                     /* the --config files' text, which values point into */
    int n_texts;
} ft_cli;

/* the C types behind enum and flag rows: an enum value is written as an int */
typedef char ft_enums_are_ints[sizeof(ft_sched_kind) == sizeof(int) && sizeof(ft_type) == sizeof(int) ? 1 : -1];

typedef enum ft_opt_kind {
    FT_OPT_STR, FT_OPT_INT, FT_OPT_REAL, FT_OPT_FLAG, FT_OPT_ENUM, FT_OPT_LIST, FT_OPT_CONFIG
} ft_opt_kind;
typedef struct ft_opt {
    const char *name;                   /* --name; the key of --config files and of a run's config     */
    char alias;                         /* -m, -o, -p, -n, -v; 0: none                                */
    ft_opt_kind kind;
    size_t at, size;                    /* where in ft_cli, and its bytes (int / int64_t, float / double) */
    const char *def;                    /* the default as text; NULL: the library's (or none)         */
    const char *range;                  /* INT, REAL: "[1, 4096]", "(0, 10]"; LIST: "[0, 8]" items     */
    int names;                          /* ENUM: the library's registry of its names (an ft_enum)      */
    const char *extra;                  /* ENUM: names of the command line's own, after the registry's */
    int (*only)(int value);             /* ENUM: which of the registry's values it takes (NULL: all)  */
    const char *(*check)(const char *v);   /* STR, LIST items: NULL when fine, else what it must be   */
    int first;                          /* set before the library's defaults, which depend on it      */
    int commas;                         /* its values hold commas: ft sweep's grid splits them at '/' */
    unsigned cmds;                      /* the FT_C_* bits of the commands that take it                */
    const char *meta, *help;
} ft_opt;

static const char *ft_check_targets(const char *v);
static const char *ft_check_reward(const char *v);
static const char *ft_check_mix(const char *v);
static const char *ft_check_task(const char *v);
static const char *ft_check_input(const char *v);
static const char *ft_check_grid(const char *v);
static const char *ft_check_ids(const char *v);
static const char *ft_check_device(const char *v);
static int ft_only_nf4(int v);
static int ft_only_writable(int v);
static int ft_only_builtin(int v);

#define FT_AT(F) .at = offsetof(ft_cli, F), .size = sizeof(((ft_cli *)0)->F)
#define O_STR(N, A, F, K, C, M, H) \
    {.name = N, .alias = A, .kind = FT_OPT_STR, FT_AT(F), .check = K, .cmds = C, .meta = M, .help = H}
#define O_STRC(N, F, D, K, C, M, H) \
    {.name = N, .kind = FT_OPT_STR, FT_AT(F), .def = D, .check = K, .commas = 1, .cmds = C, .meta = M, .help = H}
#define O_INT(N, A, F, D, R, C, M, H) \
    {.name = N, .alias = A, .kind = FT_OPT_INT, FT_AT(F), .def = D, .range = R, .cmds = C, .meta = M, .help = H}
#define O_REAL(N, F, D, R, C, M, H) \
    {.name = N, .kind = FT_OPT_REAL, FT_AT(F), .def = D, .range = R, .cmds = C, .meta = M, .help = H}
#define O_FLAG(N, A, F, C, H) {.name = N, .alias = A, .kind = FT_OPT_FLAG, FT_AT(F), .cmds = C, .meta = "", .help = H}
#define O_ENUM(N, F, D, E, X, Y, C, H) \
    {.name = N, .kind = FT_OPT_ENUM, FT_AT(F), .def = D, .names = E, .extra = X, .only = Y, .cmds = C, .meta = "NAME", .help = H}
#define O_SEL(N, F, D, E, X, C, H) \
    {.name = N, .kind = FT_OPT_ENUM, FT_AT(F), .def = D, .names = E, .extra = X, .first = 1, .cmds = C, .meta = "NAME", .help = H}
#define O_LIST(N, F, R, K, C, M, H) \
    {.name = N, .kind = FT_OPT_LIST, FT_AT(F), .range = R, .check = K, .cmds = C, .meta = M, .help = H}
#define INF FT_C_INFO
#define GEN FT_C_GENERATE
#define TRN (FT_C_TRAIN | FT_C_SWEEP)
#define EVL FT_C_EVAL
#define MRG FT_C_MERGE
#define MMS FT_C_MERGE_MODELS
#define EXP FT_C_EXPORT
#define LOG FT_C_LOGITS
#define QNT FT_C_QUANTIZE
#define SYN FT_C_SYNTH
#define SWP FT_C_SWEEP
#define CNV FT_C_CONVERT
#define LIB NULL                        /* the default is the library's *_opts_default() */
static const ft_opt ft_opts[] = {
    /* files */
    O_STR("model", 'm', model, NULL, INF | GEN | TRN | EVL | MRG | EXP | LOG | QNT | SYN | CNV, "MODEL.gguf", "the model (a GGUF file or a Hugging Face directory)"),
    O_STR("data", 0, data, NULL, TRN | EVL, "FILE.jsonl", "the examples (train: training data)"),
    O_STR("eval", 0, eval, NULL, TRN, "EVAL.jsonl", "held-out examples, evaluated before and after training"),
    O_STR("out", 'o', out, NULL, TRN, "DIR", "the run's directory (sweep: the sweep's)"),
    O_STR("out", 'o', out, NULL, MRG | MMS | EXP | LOG | QNT | SYN | CNV, "OUT", "the output file (export --format peft|hf, convert to Hugging Face: a directory)"),
    O_STR("lora", 0, adapter, NULL, GEN | EVL, "ADAPTER", "apply this adapter"),
    O_STR("adapter", 0, adapter, NULL, MRG | EXP | LOG, "ADAPTER", "the adapter (merge: without it the base is re-typed)"),
    O_STR("base", 0, base, NULL, MMS, "BASE.gguf", "the model the inputs were fine-tuned from"),
    O_LIST("input", input, "[0, 64]", ft_check_input, MMS, "A.gguf[:W[:D]]", "a model or LoRA adapter, weight, density"),
    O_STR("seed-tasks", 0, seed_tasks, NULL, SYN, "SEEDS.jsonl", "seed tasks: \"instruction\" (and \"input\")"),
    O_STR("prompt", 'p', prompt, NULL, GEN | LOG, "PROMPT", "the prompt"),
    O_STR("ids", 0, ids, ft_check_ids, LOG, "1,2,3", "token ids instead of --prompt"),
    O_FLAG("chat", 0, chat, GEN | LOG, "the prompt as a user message through the model's chat template"),
    /* the method */
    {.name = "method", .kind = FT_OPT_ENUM, FT_AT(method), .def = "lora", .names = FT_ENUM_PEFT_METHOD, .extra = "qlora,dora",
     .only = ft_only_builtin, .first = 1, .cmds = TRN, .meta = "NAME",
     .help = "PEFT method (qlora: LoRA on the quantized base, as loaded or with --quantize nf4; dora: DoRA)"},
    O_INT("rank", 0, peft.lora.r, LIB, "[1, 4096]", TRN, "R", "LoRA rank"),
    O_REAL("alpha", peft.lora.alpha, LIB, "(0, 1e6]", TRN, "A", "LoRA scale alpha / rank"),
    O_FLAG("rslora", 0, peft.lora.rslora, TRN, "rsLoRA: scale alpha / sqrt(rank)"),
    O_FLAG("train-router", 0, peft.lora.train_router, TRN, "MoE: train the routers too (else frozen)"),
    O_REAL("dropout", peft.lora.dropout, LIB, "[0, 1)", TRN, "P", "LoRA dropout"),
    O_STRC("targets", targets, "all", ft_check_targets, TRN, "LAYERS", "all, attn, mlp, all+embed+head or q_proj,v_proj,..."),
    O_INT("bottleneck", 0, peft.bottleneck, LIB, "[1, 65536]", TRN, "K", "adapter: inner size"),
    O_ENUM("placement", peft.placement, LIB, FT_ENUM_ADAPTER_PLACE, NULL, NULL, TRN, "adapter: where"),
    O_ENUM("act", peft.act, LIB, FT_ENUM_ACT, NULL, NULL, TRN, "adapter: nonlinearity"),
    O_INT("virtual-tokens", 0, peft.n_virtual, LIB, "[1, 4096]", TRN, "P", "prefix / prompt tuning: virtual tokens"),
    O_INT("prefix-hidden", 0, peft.prefix_hidden, LIB, "[0, 65536]", TRN, "H", "prefix: reparameterisation MLP size (0: none)"),
    O_ENUM("prompt-init", peft.prompt_init, LIB, FT_ENUM_PROMPT_INIT, NULL, NULL, TRN, "prompt tuning: initialisation"),
    O_STR("prompt-text", 0, peft.prompt_text, NULL, TRN, "TEXT", "prompt tuning: the text of --prompt-init text"),
    O_STRC("freeze", peft.freeze, NULL, NULL, TRN, "PATTERNS", "full: weights kept frozen ('token_embd.*,blk.0.*')"),
    O_STR("init-adapter", 0, init_adapter, NULL, TRN, "ADAPTER", "fold an earlier stage in first (sft, then rm / dpo / ppo)"),
    O_ENUM("quantize", quantize, "none", FT_ENUM_TYPE, "none", ft_only_nf4, TRN | EVL, "nf4: linear weights as NF4 (QLoRA)"),
    O_FLAG("grad-checkpoint", 0, grad_checkpoint, TRN, "recompute each layer in backward: far less activation memory"),
    O_STR("device", 0, device, ft_check_device, TRN | EVL | GEN, "cpu|cuda",
          "where it runs: cuda puts the model and the adapter (and AdamW's state) on the GPU (build/ft-cuda, make ft-cuda)"),
    /* the objective */
    O_SEL("objective", objective, "sft", FT_ENUM_OBJECTIVE, NULL, TRN, "the loss (see below)"),
    O_REAL("beta", train.beta, LIB, "[0, 1000]", TRN, "B", "preference / KTO beta (0: the objective's)"),
    O_REAL("gamma", train.gamma, LIB, "[0, 100]", TRN, "G", "SimPO: target margin"),
    O_REAL("label-smoothing", train.label_smoothing, LIB, "[0, 1)", TRN, "E", "DPO family: label noise (cDPO, robust, exo_pair)"),
    O_REAL("tau", train.tau, LIB, "(0, 100]", TRN, "T", "discopop: modulation temperature"),
    O_REAL("desirable-weight", train.desirable_weight, LIB, "(0, 1000]", TRN, "W", "KTO: weight of desirable completions"),
    O_REAL("undesirable-weight", train.undesirable_weight, LIB, "(0, 1000]", TRN, "W", "KTO: weight of undesirable ones"),
    O_REAL("rm-center", train.rm_center, LIB, "[0, 1000]", TRN, "C", "reward model: center_rewards_coefficient"),
    /* the data */
    O_INT("seq-len", 0, train.seq_len, LIB, "[1, 1048576]", TRN | EVL, "T", "tokens per example (longer ones are cut)"),
    O_FLAG("pack", 0, train.pack, TRN, "pack examples into rows of --seq-len (cpt: on; --pack=0 turns it off)"),
    O_FLAG("train-on-prompt", 0, data_opts.train_on_prompt, TRN, "the loss covers the prompt tokens too"),
    O_FLAG("skip-bad", 0, data_opts.skip_bad, TRN, "skip malformed lines instead of failing"),
    O_REAL("eval-split", eval_split, "0", "[0, 1)", TRN, "F", "hold out this fraction of --data as the eval set"),
    O_LIST("mix", mix, "[0, 4]", ft_check_mix, TRN, "FILE:RATIO", "replay: this share of other data (against forgetting)"),
    O_STR("eval-general", 0, general, NULL, TRN, "FILE.jsonl", "text (its perplexity) or multiple-choice items (acc, acc_norm as lm-eval), before and after: the forgetting check"),
    O_STR("mc", 0, mc, NULL, EVL, "MC.jsonl", "multiple-choice items ({context, choices, gold}, ARC, PIQA) scored as lm-evaluation-harness: acc, acc_norm"),
    O_LIST("task", task, "[0, 8]", ft_check_task, TRN, "FILE[:EVAL]", "tasks mixed at rates min(n, cap)^(1/T) (FLAN / T5)"),
    O_REAL("mix-temperature", mix_temperature, "1", "(0, 1000]", TRN, "T", "--task rates: the temperature"),
    O_REAL("mix-cap", mix_cap, "0", "[0, 1e12]", TRN, "K", "--task rates: examples cap (0: none)"),
    /* the optimization */
    O_INT("steps", 0, train.steps, LIB, "[0, 1e9]", TRN, "N", "optimizer steps (0: --epochs over the data)"),
    O_INT("epochs", 0, train.epochs, LIB, "[1, 1e6]", TRN, "E", "passes over the data when --steps is 0"),
    O_INT("batch", 0, train.batch, LIB, "[1, 65536]", TRN | EVL, "B", "examples per micro-batch"),
    O_INT("grad-accum", 0, train.grad_accum, LIB, "[1, 65536]", TRN, "K", "micro-batches per step"),
    O_REAL("lr", train.lr, LIB, "(0, 10]", TRN, "X", "peak learning rate (default: the objective's)"),
    O_ENUM("schedule", train.sched, LIB, FT_ENUM_SCHED, NULL, NULL, TRN, "learning-rate schedule"),
    O_INT("warmup", 0, train.warmup, LIB, "[0, 1e9]", TRN, "W", "warmup steps"),
    O_REAL("max-grad-norm", train.max_grad_norm, LIB, "[0, 1e6]", TRN, "G", "gradient clipping (0: none)"),
    O_REAL("router-aux-coef", train.router_aux_coef, LIB, "[-1, 100]", TRN, "C", "MoE: load-balancing loss weight (-1: the architecture's, 0: off)"),
    O_REAL("router-z-coef", train.router_z_coef, LIB, "[0, 100]", TRN, "C", "MoE: router z-loss weight (0: off)"),
    O_REAL("weight-decay", train.optim.weight_decay, LIB, "[0, 10]", TRN, "D", "AdamW's decoupled weight decay"),
    O_REAL("lora-plus", train.lr_scale_b, LIB, "[0, 10000]", TRN, "RATIO", "LoRA+: the rate of every B times RATIO (0: off)"),
    O_INT("seed", 0, train.seed, LIB, "[0, 1e18]", TRN, "S", "data order, initialisation, dropout, sampling"),
    O_INT("threads", 0, ctx.n_threads, LIB, "[0, 1024]", GEN | TRN | EVL | LOG | SYN, "N", "threads (0: every CPU)"),
    O_ENUM("compute", ctx.compute, "auto", FT_ENUM_COMPUTE, NULL, NULL, TRN,
           "the matrix products: f32, or bf16 inputs summed in f32 (auto: bf16 where the CPU has AVX512-BF16, 1.5x f32 there)"),
    O_ENUM("compute", ctx.compute, "auto", FT_ENUM_COMPUTE, NULL, NULL, GEN,
           "the prompt's matrix products: f32, or bf16 inputs summed in f32 (auto: bf16 where the CPU has AVX512-BF16)"),
    O_ENUM("compute", ctx.compute, LIB, FT_ENUM_COMPUTE, NULL, NULL, EVL | LOG | SYN,
           "the matrix products: f32, or bf16 inputs summed in f32 (auto: bf16 where the CPU has AVX512-BF16)"),
    O_INT("q8-dot", 0, ctx.q8_dot, "1", "[0, 1]", GEN, "0|1",
          "1: token-by-token products with Q4_0/Q4_1/Q8_0/Q4_K/Q5_K/NF4 weights in 8-bit activations and integers, as llama.cpp (1.5x f32's tokens/s); 0: f32"),
    O_INT("q8-dot", 0, ctx.q8_dot, LIB, "[0, 1]", TRN | EVL, "0|1",
          "1: generation (rollouts, generated evals) with 8-bit activations for Q4_0/Q4_1/Q8_0/Q4_K/Q5_K/NF4 weights, as llama.cpp; 0: f32"),
    O_INT("save-every", 0, train.save_every, LIB, "[0, 1e9]", TRN, "N", "checkpoint every N steps (0: never)"),
    O_FLAG("resume", 0, resume, TRN, "continue from OUT/checkpoints/last.gguf"),
    O_FLAG("zero1", 0, train.zero1, TRN, "ft-mpi: ZeRO-1, each rank keeps the optimizer state of its shard of the parameters"),
    O_INT("log-every", 0, log_every, "10", "[1, 1e9]", TRN, "N", "a progress line every N steps"),
    /* the evaluation */
    O_INT("eval-every", 0, train.eval_every, LIB, "[0, 1e9]", TRN, "N", "eval loss every N steps (0: at the end only)"),
    O_INT("eval-gen", 0, eval_gen, "100", "[0, 1e9]", TRN, "N", "exact match of greedy answers to the first N eval examples"),
    O_INT("eval-gen", 0, eval_gen, "0", "[0, 1e9]", EVL, "N", "exact match of greedy answers to the first N (0: all)"),
    O_INT("eval-before", 0, eval_before, "1", "[0, 1]", TRN, "0|1", "0: no evaluation before training (sweeps)"),
    O_INT("max-new", 0, train.rl.max_new, LIB, "[1, 65536]", TRN | EVL, "N", "tokens of a generated answer (RL: a completion)"),
    /* reinforcement learning */
    O_STRC("reward", reward, NULL, ft_check_reward, TRN, "TERMS", "grpo/ppo: number, length:N, rm:ADAPTER, regex:RE; each *W"),
    O_INT("prompts", 0, train.rl.prompts, LIB, "[1, 65536]", TRN, "P", "RL: prompts per micro-batch"),
    O_INT("group", 0, train.rl.group, LIB, "[1, 1024]", TRN, "G", "grpo: completions per prompt"),
    O_INT("iterations", 0, train.rl.iterations, LIB, "[1, 1000]", TRN, "K", "RL: optimizer steps per rollout batch"),
    O_REAL("temperature", train.rl.sample.temperature, LIB, "(0, 100]", TRN, "T", "RL: sampling temperature"),
    O_REAL("top-p", train.rl.sample.top_p, LIB, "[0, 1]", TRN, "P", "RL: nucleus sampling (0: off)"),
    O_REAL("epsilon", train.rl.grpo.epsilon, LIB, "(0, 10]", TRN, "E", "grpo: ratio clip"),
    O_REAL("epsilon-high", train.rl.grpo.epsilon_high, LIB, "[0, 10]", TRN, "E", "grpo: upper ratio clip (0: --epsilon)"),
    O_REAL("kl-beta", train.rl.grpo.beta, LIB, "[0, 1000]", TRN, "B", "grpo: KL to the reference (0: none)"),
    O_ENUM("loss-type", train.rl.grpo.agg, LIB, FT_ENUM_GRPO_AGG, NULL, NULL, TRN, "grpo: loss aggregation"),
    O_ENUM("scale-rewards", train.rl.scale, LIB, FT_ENUM_ADV_SCALE, NULL, NULL, TRN, "grpo: advantage scaling"),
    O_REAL("kl-coef", train.rl.ppo.kl_coef, LIB, "[0, 1000]", TRN, "C", "ppo: per-token KL penalty"),
    O_REAL("kl-target", train.rl.ppo.kl_target, LIB, "[0, 1000]", TRN, "K", "ppo: adapt kl-coef towards this KL (0: fixed)"),
    /* ft sweep */
    O_LIST("grid", grid, "[0, 8]", ft_check_grid, SWP, "KEY=V1,V2", "a swept ft train option and its values"),
    O_INT("random", 0, random, "0", "[0, 1e6]", SWP, "N", "N random draws from the grid instead of all of it"),
    /* ft generate */
    O_INT("n", 'n', gen.max_new, "64", "[1, 1e6]", GEN, "N", "tokens to generate"),
    O_REAL("temp", gen.sample.temperature, "0", "[0, 100]", GEN, "T", "temperature (0: greedy)"),
    O_INT("top-k", 0, gen.sample.top_k, "0", "[0, 1e6]", GEN, "K", "top-k sampling (0: off)"),
    O_REAL("top-p", gen.sample.top_p, "0", "[0, 1]", GEN, "P", "nucleus sampling (0: off)"),
    O_INT("seed", 0, gen_seed, "1", "[0, 1e18]", GEN, "S", "sampling seed"),
    /* ft merge, ft merge-models, ft export, ft quantize */
    O_ENUM("type", save.type, LIB, FT_ENUM_TYPE, "base", ft_only_writable, MRG | EXP, "weights' type (base: as in the base; export --format hf: f32, f16 or bf16, base the one that loses nothing)"),
    O_ENUM("type", save.type, "base", FT_ENUM_TYPE, "base", ft_only_writable, CNV, "a Hugging Face directory's weights: f32, f16, bf16, or base: the one that loses nothing"),
    O_FLAG("embeddings", 0, save.embeddings, MRG, "token_embd / output as --type too"),
    O_SEL("method", merge_method, "linear", FT_ENUM_MERGE_METHOD, NULL, MMS, "how the inputs are merged (mergekit's)"),
    O_FLAG("normalize", 0, normalize, MMS, "divide by the sum of the weights (--normalize=0: do not)"),
    O_ENUM("type", merge.type, LIB, FT_ENUM_TYPE, NULL, ft_only_writable, MMS, "the merged 2-D weights' type"),
    O_INT("seed", 0, merge.seed, LIB, "[0, 1e18]", MMS, "S", "DARE's random masks"),
    O_ENUM("rescale", merge.rescale, LIB, FT_ENUM_MERGE_RESCALE, NULL, NULL, MMS, "DARE's rescaling of the kept entries"),
    O_ENUM("sign", merge.sign, LIB, FT_ENUM_MERGE_SIGN, NULL, NULL, MMS, "TIES's sign election"),
    O_REAL("lambda", merge.lambda, LIB, "(0, 1000]", MMS, "L", "scale of the merged delta"),
    O_FLAG("lora-deltas", 0, merge.lora_deltas, MMS, "merge LoRA deltas s B A themselves, not the adapted models"),
    O_FLAG("verbose", 'v', verbose, MMS, "a line per tensor"),
    O_ENUM("format", format, NULL, FT_ENUM_ADAPTER_FORMAT, "gguf,hf", NULL, EXP, "gguf: llama.cpp's if it fits, else finetune.h's; hf: the model with the adapter merged, as a Hugging Face directory"),
    O_STR("base-name", 0, base_name, NULL, EXP, "NAME", "PEFT's base_model_name_or_path (default: general.name)"),
    O_ENUM("type", type, "nf4", FT_ENUM_TYPE, NULL, ft_only_nf4, QNT, "linear weights -> NF4 (QLoRA's, bitsandbytes' bytes)"),
    O_FLAG("output", 0, output, QNT, "the untied output head too"),
    /* ft synth */
    O_SEL("method", synth_method, NULL, FT_ENUM_SYNTH_METHOD, NULL, SYN, "Self-Instruct or Evol-Instruct"),
    O_INT("n", 'n', synth.n, LIB, "[1, 1e9]", SYN, "N", "examples wanted in OUT (resumed when it exists)"),
    O_INT("batch", 0, synth.batch, LIB, "[1, 1024]", SYN, "B", "prompts per generate call"),
    O_INT("max-new", 0, synth.max_new_answer, LIB, "[1, 65536]", SYN, "T", "tokens of an answer"),
    O_INT("max-new-inst", 0, synth.max_new, LIB, "[1, 65536]", SYN, "T", "tokens of a proposed instruction"),
    O_REAL("temperature", synth.sample.temperature, LIB, "[0, 100]", SYN, "T", "sampling temperature"),
    O_REAL("top-p", synth.sample.top_p, LIB, "[0, 1]", SYN, "P", "nucleus sampling (0: off)"),
    O_INT("seed", 0, synth.seed, LIB, "[0, 1e18]", SYN, "S", "few-shot picks, evolutions, sampling"),
    O_REAL("rouge", synth.rouge, LIB, "(0, 1]", SYN, "R", "reject at ROUGE-L >= R with the pool"),
    O_REAL("evol-rouge", synth.evol_rouge, LIB, "(0, 1]", SYN, "R", "evol: reject at ROUGE-L >= R with the original"),
    O_INT("few-shot", 0, synth.few_shot, LIB, "[1, 64]", SYN, "K", "self-instruct: examples in the list"),
    O_INT("min-words", 0, synth.min_words, LIB, "[1, 100000]", SYN, "W", "shortest instruction"),
    O_INT("max-words", 0, synth.max_words, LIB, "[1, 100000]", SYN, "W", "longest instruction"),
    /* ft info, and every command */
    O_FLAG("all", 0, all, INF, "every key and tensor"),
    {.name = "config", .kind = FT_OPT_CONFIG, FT_AT(config), .cmds = FT_C_ALL, .meta = "FILE",
     .help = "`name = value` lines (# comments); options after it override it"},
};
#undef O_STR
#undef O_STRC
#undef O_INT
#undef O_REAL
#undef O_FLAG
#undef O_ENUM
#undef O_SEL
#undef O_LIST
#undef INF
#undef GEN
#undef TRN
#undef EVL
#undef MRG
#undef MMS
#undef EXP
#undef LOG
#undef QNT
#undef SYN
#undef SWP
#undef CNV
#undef LIB
#define FT_NOPTS ((int)(sizeof ft_opts / sizeof ft_opts[0]))

/* a command: its name, bit, synopsis and one line about it (the table is at the end) */
typedef struct ft_cmd {
    const char *name;
    unsigned bit;
    int (*run)(ft_cli *c);
    const char *synopsis, *about;
} ft_cmd;

/* ==== values: parse, check, print =============================================================== */

static char *ft_at(const ft_cli *c, const ft_opt *o) {
    return (char *)c + o->at;
}

static int64_t ft_get_int(const ft_cli *c, const ft_opt *o) {
    int x;
    int64_t y;
    if (o->size == sizeof x) {
        memcpy(&x, ft_at(c, o), sizeof x);
        return x;
    }
    memcpy(&y, ft_at(c, o), sizeof y);
    return y;
}

static void ft_put_int(ft_cli *c, const ft_opt *o, int64_t v) {
    int x = (int)v;
    if (o->size == sizeof x) memcpy(ft_at(c, o), &x, sizeof x);
    else memcpy(ft_at(c, o), &v, sizeof v);
}

static double ft_get_real(const ft_cli *c, const ft_opt *o) {
    float x;
    double y;
    if (o->size == sizeof x) {
        memcpy(&x, ft_at(c, o), sizeof x);
        return x;
    }
    memcpy(&y, ft_at(c, o), sizeof y);
    return y;
}

static void ft_put_real(ft_cli *c, const ft_opt *o, double v) {
    float x = (float)v;
    if (o->size == sizeof x) memcpy(ft_at(c, o), &x, sizeof x);
    else memcpy(ft_at(c, o), &v, sizeof v);
}

/* "[1, 4096]", "(0, 10]", "[0, inf)": does v lie in it? */
static int ft_in_range(double v, const char *range) {
    char *e;
    double lo = strtod(range + 1, &e);
    double hi = strtod(e + 1, &e);
    int above = range[0] == '(' ? v > lo : v >= lo;
    int below = *e == ')' ? v < hi : v <= hi;
    return above && below;
}

/* the shortest text that reads back as the same float (or double) */
static const char *ft_real_text(char *buf, size_t cap, double v, int is_float) {
    int p;
    for (p = 6; p < 17; p++) {
        double back;
        snprintf(buf, cap, "%.*g", p, v);
        back = strtod(buf, NULL);
        if (is_float ? (float)back == (float)v : back == v) return buf;
    }
    snprintf(buf, cap, "%.17g", v);
    return buf;
}

/* an enum row's names: the registry's (0 .. count-1), then its extra ones */
static int ft_enum_total(const ft_opt *o) {
    const char *x = o->extra;
    int n = ft_enum_count((ft_enum)o->names);
    while (x) {
        n++;
        x = strchr(x, ',');
        if (x) x++;
    }
    return n;
}

static const char *ft_enum_label(const ft_opt *o, int v, char *buf, size_t cap) {
    int k, n = ft_enum_count((ft_enum)o->names);
    const char *x = o->extra;
    if (v >= 0 && v < n) return ft_enum_name((ft_enum)o->names, v);
    if (v < n || v >= ft_enum_total(o)) return NULL;
    for (k = n; k < v; k++) x = strchr(x, ',') + 1;
    snprintf(buf, cap, "%.*s", (int)strcspn(x, ","), x);
    return buf;
}

static int ft_enum_allowed(const ft_opt *o, int v) {
    return v >= ft_enum_count((ft_enum)o->names) || !o->only || o->only(v);
}

static int ft_enum_value(const ft_opt *o, const char *name, int *out) {
    char buf[64];
    int v, n = ft_enum_total(o);
    ft_objective obj;
    if (o->names == FT_ENUM_OBJECTIVE && ft_objective_parse(name, &obj)) {   /* TRL's aliases too */
        *out = (int)obj;
        return 1;
    }
    for (v = 0; v < n; v++) {
        const char *k = ft_enum_label(o, v, buf, sizeof buf);
        if (k && strcmp(k, name) == 0 && ft_enum_allowed(o, v)) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

/* "a, b, c": the names an enum row takes */
static const char *ft_enum_names(const ft_opt *o, char *out, size_t cap) {
    char buf[64];
    size_t len = 0;
    int v, n = ft_enum_total(o);
    out[0] = 0;
    for (v = 0; v < n && len + 70 < cap; v++) {
        const char *k = ft_enum_label(o, v, buf, sizeof buf);
        if (k && ft_enum_allowed(o, v)) len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? ", " : "", k);
    }
    return out;
}

static char ft_why[2048];                     /* what a refused value must be */

static const char *ft_set_int(ft_cli *c, const ft_opt *o, const char *v) {
    char *end;
    long long x;
    errno = 0;
    x = strtoll(v, &end, 10);
    if (end == v || *end || errno || !ft_in_range((double)x, o->range)) {
        snprintf(ft_why, sizeof ft_why, "must be an integer in %s", o->range);
        return ft_why;
    }
    ft_put_int(c, o, x);
    return NULL;
}

static const char *ft_set_real(ft_cli *c, const ft_opt *o, const char *v) {
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !isfinite(x) || !ft_in_range(x, o->range)) {
        snprintf(ft_why, sizeof ft_why, "must be a finite number in %s", o->range);
        return ft_why;
    }
    ft_put_real(c, o, x);
    return NULL;
}

static const char *ft_set_flag(ft_cli *c, const ft_opt *o, const char *v) {
    if (strcmp(v, "0") && strcmp(v, "1")) return "must be 0 or 1";
    ft_put_int(c, o, v[0] - '0');
    return NULL;
}

static const char *ft_set_enum(ft_cli *c, const ft_opt *o, const char *v) {
    char names[1536];
    int x;
    if (!ft_enum_value(o, v, &x)) {
        snprintf(ft_why, sizeof ft_why, "must be one of %s", ft_enum_names(o, names, sizeof names));
        return ft_why;
    }
    ft_put_int(c, o, x);
    return NULL;
}

static const char *ft_set_str(ft_cli *c, const ft_opt *o, const char *v) {
    const char *why = o->check ? o->check(v) : NULL;
    if (!why) memcpy(ft_at(c, o), &v, sizeof v);
    return why;
}

/* a list takes items from one source: items given on the command line replace a --config file's */
static const char *ft_set_list(ft_cli *c, const ft_opt *o, const char *v, int from_file) {
    ft_list *l = (ft_list *)ft_at(c, o);
    const char *why = o->check ? o->check(v) : NULL;
    if (why) return why;
    if (l->n && l->from_file != from_file) l->n = 0;
    l->from_file = from_file;
    if (!ft_in_range(l->n + 1, o->range)) {
        snprintf(ft_why, sizeof ft_why, "more than %g of them", strtod(strchr(o->range, ',') + 1, NULL));
        return ft_why;
    }
    l->v[l->n++] = v;
    return NULL;
}

/* v into row o; NULL, or what v must be */
static const char *ft_opt_set(ft_cli *c, const ft_opt *o, const char *v, int from_file) {
    switch (o->kind) {
    case FT_OPT_INT: return ft_set_int(c, o, v);
    case FT_OPT_REAL: return ft_set_real(c, o, v);
    case FT_OPT_FLAG: return ft_set_flag(c, o, v);
    case FT_OPT_ENUM: return ft_set_enum(c, o, v);
    case FT_OPT_LIST: return ft_set_list(c, o, v, from_file);
    default: return ft_set_str(c, o, v);
    }
}

/* row o's value as text (in buf), or NULL when it has none */
static const char *ft_opt_text(const ft_cli *c, const ft_opt *o, char *buf, size_t cap) {
    const char *s;
    switch (o->kind) {
    case FT_OPT_STR:
        memcpy(&s, ft_at(c, o), sizeof s);
        return s;
    case FT_OPT_INT:
    case FT_OPT_FLAG:
        snprintf(buf, cap, "%lld", (long long)ft_get_int(c, o));
        return buf;
    case FT_OPT_REAL: return ft_real_text(buf, cap, ft_get_real(c, o), o->size == sizeof(float));
    case FT_OPT_ENUM: return ft_enum_label(o, (int)ft_get_int(c, o), buf, cap);
    default: return NULL;
    }
}

/* the row of --name (or of -alias when name is NULL) for the command; NULL when it has none */
static const ft_opt *ft_opt_find(const char *name, char alias, unsigned bit) {
    int i;
    for (i = 0; i < FT_NOPTS; i++) {
        const ft_opt *o = &ft_opts[i];
        int match = name ? strcmp(o->name, name) == 0 : o->alias == alias;
        if (match && (o->cmds & bit)) return o;
    }
    return NULL;
}

/* the text of the option `name` of c's command (a static buffer) */
static const char *ft_value(const ft_cli *c, const char *name) {
    static char buf[128];
    const ft_opt *o = ft_opt_find(name, 0, c->bit);
    const char *t = o ? ft_opt_text(c, o, buf, sizeof buf) : NULL;
    return t ? t : "";
}

/* ==== errors ===================================================================================== */

static void ft_say(const ft_cli *c, const char *fmt, va_list ap) {
    fprintf(stderr, "ft %s: ", c->name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

/* "ft CMD: what went wrong": 1 */
static int ft_err(const ft_cli *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ft_say(c, fmt, ap);
    va_end(ap);
    return 1;
}

/* the same, for the parser: 0 */
static int ft_bad(const ft_cli *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    ft_say(c, fmt, ap);
    va_end(ap);
    return 0;
}

/* the library's message */
static int ft_fail(const ft_cli *c) {
    return ft_err(c, "%s", ft_last_error());
}

/* a required option is missing: exit status 2 */
static int ft_missing(const ft_cli *c, const char *what) {
    ft_err(c, "needs %s (ft %s --help lists the options)", what, c->name);
    return 2;
}

/* ==== the command line and --config files ======================================================= */

typedef struct ft_set { const ft_opt *o; const char *v, *file; int line; } ft_set;
typedef struct ft_sets { ft_set *s; int n, cap; } ft_sets;

static int ft_sets_add(ft_sets *s, const ft_opt *o, const char *v, const char *file, int line) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        ft_set *t = (ft_set *)realloc(s->s, (size_t)cap * sizeof *t);
        if (!t) return 0;
        s->s = t;
        s->cap = cap;
    }
    s->s[s->n].o = o;
    s->s[s->n].v = v;
    s->s[s->n].file = file;
    s->s[s->n].line = line;
    s->n++;
    return 1;
}

/* argv[*i] as an option of c's command: its row and value (*i moves past them). 1, -1 for --help,
   0 with the reason printed */
static int ft_arg_next(const ft_cli *c, int argc, char **argv, int *i, const ft_opt **o, const char **v) {
    char name[64];
    const char *a = argv[(*i)++], *eq;
    *v = NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) return -1;
    if (a[0] != '-' || !a[1]) {                         /* ft info MODEL.gguf */
        *o = c->bit == FT_C_INFO ? ft_opt_find("model", 0, c->bit) : NULL;
        *v = a;
        if (!*o) ft_err(c, "unexpected argument '%s' (options start with --)", a);
        return *o != NULL;
    }
    eq = a[1] == '-' ? strchr(a, '=') : NULL;
    snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - a - 2) : (int)strlen(a + 2), a + 2);
    *o = a[1] == '-' ? ft_opt_find(name, 0, c->bit) : a[2] ? NULL : ft_opt_find(NULL, a[1], c->bit);
    if (!*o) return ft_bad(c, "unknown option %s (ft %s --help lists the options)", a, c->name);
    if (eq) *v = eq + 1;
    else if ((*o)->kind == FT_OPT_FLAG) *v = "1";
    else if (*i < argc) *v = argv[(*i)++];
    if (!*v) ft_err(c, "%s needs a value", a);
    return *v != NULL;
}

static char *ft_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) buf = (char *)malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf) buf[n] = 0;
    if (buf && len) *len = (size_t)n;
    fclose(f);
    return buf;
}

static char *ft_trim(char *s) {
    char *e = s + strlen(s);
    while (*s == ' ' || *s == '\t') s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) *--e = 0;
    return s;
}

/* `key = value` lines (# comments) of a --config file, as if given at its place on the command line */
static int ft_config_read(ft_cli *c, ft_sets *s, const char *path) {
    char *text, *p, *next;
    int line = 0;
    if (c->n_texts == 8) return ft_bad(c, "at most 8 --config files");
    if (!(text = ft_read_file(path, NULL))) return ft_bad(c, "%s: cannot read: %s", path, strerror(errno));
    c->texts[c->n_texts++] = text;
    for (p = text; p; p = next) {
        char *eq, *key;
        const ft_opt *o;
        next = strchr(p, '\n');
        if (next) *next++ = 0;
        line++;
        p = ft_trim(p);
        if (!*p || *p == '#') continue;
        if (!(eq = strchr(p, '='))) return ft_bad(c, "%s:%d: expected `name = value`", path, line);
        *eq = 0;
        key = ft_trim(p);
        o = ft_opt_find(key, 0, c->bit);
        if (!o || o->kind == FT_OPT_CONFIG) return ft_bad(c, "%s:%d: unknown key '%s'", path, line, key);
        if (!ft_sets_add(s, o, ft_trim(eq + 1), path, line)) return 0;
    }
    return 1;
}

static int ft_apply(ft_cli *c, const ft_set *s) {
    const char *why = ft_opt_set(c, s->o, s->v, s->file != NULL);
    if (!why) return 1;
    if (s->file) return ft_bad(c, "%s:%d: %s = %s: %s", s->file, s->line, s->o->name, s->v, why);
    return ft_bad(c, "--%s %s: %s", s->o->name, s->v, why);
}

/* the library's defaults for the objective and the methods chosen, then the table's own */
static void ft_cli_defaults(ft_cli *c) {
    int i, n = ft_enum_count(FT_ENUM_PEFT_METHOD);
    c->train = ft_train_opts_default((ft_objective)c->objective);
    c->peft = ft_peft_opts_default((ft_peft_method)(c->method < n ? c->method : FT_PEFT_LORA));
    c->ctx = ft_ctx_opts_default();
    c->synth = ft_synth_opts_default((ft_synth_method)(c->synth_method > 0 ? c->synth_method : 0));
    c->merge = ft_merge_opts_default((ft_merge_method)(c->merge_method > 0 ? c->merge_method : 0));
    c->save = ft_save_opts_default();
    c->normalize = c->merge.normalize > 0;
    c->format = -1;
    for (i = 0; i < FT_NOPTS; i++) {
        const ft_opt *o = &ft_opts[i];
        if ((o->cmds & c->bit) && o->def && !o->first) ft_opt_set(c, o, o->def, 0);
    }
}

/* the rows that choose the library's defaults first, then the defaults, then the rest in order */
static int ft_cli_apply(ft_cli *c, const ft_sets *s) {
    int i;
    for (i = 0; i < FT_NOPTS; i++) {
        const ft_opt *o = &ft_opts[i];
        if (o->first && (o->cmds & c->bit)) ft_put_int(c, o, -1);
        if (o->first && (o->cmds & c->bit) && o->def) ft_opt_set(c, o, o->def, 0);
    }
    for (i = 0; i < s->n; i++) if (s->s[i].o->first && !ft_apply(c, &s->s[i])) return 0;
    ft_cli_defaults(c);
    for (i = 0; i < s->n; i++) if (!s->s[i].o->first && !ft_apply(c, &s->s[i])) return 0;
    return 1;
}

/* argv (after the command's name) into c: 1, or 0 with the reason printed */
static int ft_cli_parse(ft_cli *c, const char *name, unsigned bit, int argc, char **argv) {
    ft_sets s;
    int i = 0, ok = 1;
    memset(c, 0, sizeof *c);
    memset(&s, 0, sizeof s);
    c->name = name;
    c->bit = bit;
    c->argc = argc;
    c->argv = argv;
    while (ok && i < argc) {
        const ft_opt *o;
        const char *v;
        int r = ft_arg_next(c, argc, argv, &i, &o, &v);
        if (r < 0) c->help = 1;
        else if (r == 0) ok = 0;
        else if (o->kind == FT_OPT_CONFIG) ok = ft_config_read(c, &s, v);
        else ok = ft_sets_add(&s, o, v, NULL, 0);
    }
    if (ok) ok = ft_cli_apply(c, &s);
    free(s.s);
    return ok;
}

static void ft_cli_free(ft_cli *c) {
    int i;
    for (i = 0; i < c->n_texts; i++) free(c->texts[i]);
    c->n_texts = 0;
}

/* ==== usage texts, from the tables ============================================================== */

/* words of text after `indent` spaces, wrapped before 110 columns */
static void ft_wrap(FILE *f, const char *text, int indent) {
    int col = indent, first = 1;
    while (*text) {
        size_t n = strcspn(text, " ");
        if (col + (int)n >= 110 && !first) fprintf(f, "\n%*s", indent, "");
        if (col + (int)n >= 110 && !first) col = indent;
        else if (!first) col += fprintf(f, " ");
        col += fprintf(f, "%.*s", (int)n, text);
        first = 0;
        text += n + (text[n] == ' ');
    }
    fputc('\n', f);
}

static void ft_help_row(const ft_cli *c, const ft_opt *o) {
    char flag[96], text[1024], buf[128], names[1536];
    const char *d = ft_opt_text(c, o, buf, sizeof buf);
    size_t len;
    int shown = d && (o->kind == FT_OPT_STR || o->kind == FT_OPT_ENUM || (o->kind == FT_OPT_FLAG && d[0] == '1') ||
                      ((o->kind == FT_OPT_INT || o->kind == FT_OPT_REAL) && ft_in_range(strtod(d, NULL), o->range)));
    if (o->alias) snprintf(flag, sizeof flag, "-%c, --%s %s", o->alias, o->name, o->meta);
    else snprintf(flag, sizeof flag, "    --%s %s", o->name, o->meta);
    len = (size_t)snprintf(text, sizeof text, "%s", o->help);
    if (o->kind == FT_OPT_INT || o->kind == FT_OPT_REAL) len += (size_t)snprintf(text + len, sizeof text - len, "; %s", o->range);
    if (o->kind == FT_OPT_ENUM) len += (size_t)snprintf(text + len, sizeof text - len, ": %s", ft_enum_names(o, names, 1536));
    if (o->kind == FT_OPT_LIST) len += (size_t)snprintf(text + len, sizeof text - len, " (repeatable)");
    if (shown && len < sizeof text) snprintf(text + len, sizeof text - len, "; default %s", d);
    printf("  %-32s ", flag);
    ft_wrap(stdout, text, 37);
}

static void ft_help_objectives(void) {
    int v;
    printf("objectives (--objective; each sets the data it reads and the defaults of lr, beta, gamma):\n");
    for (v = 0; v < FT_OBJ_COUNT; v++) {
        const ft_objective_def *d = ft_objective_get((ft_objective)v);
        printf("  %-14s %s\n", d->name, d->about);
    }
}

static const char *ft_sweep_about =
    "  KEY: any ft train option (lr, rank, alpha, targets, batch, schedule, steps, data, ...); values are\n"
    "  separated by ',' (by '/' for targets, freeze and reward, whose own values hold commas:\n"
    "  targets=all/attn/q_proj,v_proj). Without --random: every combination; --random N: N draws (a\n"
    "  repeated draw runs once); a value LO..HI draws log-uniformly (lr=1e-4..3e-3). Each trial runs\n"
    "  `ft train` with the base options, --out DIR/trial_NNN, --eval-before 0 and its values.\n"
    "  DIR/results.jsonl gets a line as each trial ends (a failure with its last log line); DIR/results.md\n"
    "  (sorted by eval loss) and DIR/sweep.svg (eval loss against each key) are rewritten after each.\n"
    "  Rerun the same command to resume: trials with an \"ok\" line are skipped.\n";

/* ft CMD --help: the command's options with their defaults (for the objective and method given) */
static int ft_help(const ft_cmd *k, const ft_cli *c) {
    int i;
    printf("usage: ft %s %s\n  %s\n", k->name, k->synopsis, k->about);
    printf("options (--name VALUE, --name=VALUE, or `name = VALUE` lines of a --config FILE):\n");
    for (i = 0; i < FT_NOPTS; i++) {
        const ft_opt *o = &ft_opts[i];
        int shown = c->bit == FT_C_SWEEP ? (o->cmds & FT_C_TRAIN) == 0 || !strcmp(o->name, "out") : (o->cmds & c->bit) != 0;
        if (shown) ft_help_row(c, o);
    }
    if (c->bit == FT_C_SWEEP) printf("  and every ft train option (ft train --help): the base of every trial\n");
    if (c->bit == FT_C_SWEEP) printf("%s", ft_sweep_about);
    if (c->bit == FT_C_TRAIN) ft_help_objectives();
    return 0;
}

/* ==== the run's config: every option of the command as it ran =================================== */

static void ft_config_line(FILE *f, const ft_cli *c, const ft_opt *o) {
    char buf[128];
    const char *t;
    int k;
    if (o->kind == FT_OPT_CONFIG) return;
    if (o->kind == FT_OPT_LIST) {
        const ft_list *l = (const ft_list *)ft_at(c, o);
        for (k = 0; k < l->n; k++) fprintf(f, "%s = %s\n", o->name, l->v[k]);
        if (!l->n) fprintf(f, "# %s =\n", o->name);
        return;
    }
    t = ft_opt_text(c, o, buf, sizeof buf);
    if (t) fprintf(f, "%s = %s\n", o->name, t);
    else fprintf(f, "# %s =\n", o->name);
}

static int ft_config_write(const ft_cli *c, const char *path) {
    FILE *f = fopen(path, "w");
    int i;
    if (!f) return ft_err(c, "%s: cannot write: %s", path, strerror(errno));
    fprintf(f, "# ft %s: every option of the run as it ran (ft %s --config %s reads it back)\n", c->name, c->name, path);
    for (i = 0; i < FT_NOPTS; i++) if (ft_opts[i].cmds & c->bit) ft_config_line(f, c, &ft_opts[i]);
    if (fclose(f) != 0) return ft_err(c, "%s: cannot write: %s", path, strerror(errno));
    return 0;
}

/* ==== checks of string values ==================================================================== */

static int ft_only_nf4(int v) {
    return v == FT_TYPE_NF4;
}

/* the PEFT methods the command line can attach (a method of your own needs its hooks in C) */
static int ft_only_builtin(int v) {
    return v != FT_PEFT_CUSTOM;
}

/* the types merged weights can be written as (ft_model_save_merged, ft_merge_models) */
static int ft_only_writable(int v) {
    return ft_save_type_ok((ft_type)v);
}

/* one layer of --targets: q_proj (or q), ..., embed_tokens, lm_head; 0: not one */
static unsigned ft_target_bit(const char *s, size_t n) {
    int w;
    if (n == 12 && !strncmp(s, "embed_tokens", n)) return FT_TARGET_EMBED;
    if (n == 7 && !strncmp(s, "lm_head", n)) return FT_TARGET_HEAD;
    for (w = 0; w < FT_SITE_COUNT; w++) {
        const char *site = ft_site_name(w);
        int whole = strlen(site) == n || strcspn(site, "_") == n || n == 1;
        if (n && whole && !strncmp(s, site, n)) return 1u << w;
    }
    return 0;
}

/* --targets: all, attn, mlp, all+embed+head, or a comma list of layers; 0: not valid */
static unsigned ft_targets_mask(const char *t) {
    unsigned m = 0;
    if (!strcmp(t, "all")) return FT_TARGET_ALL_LINEAR;
    if (!strcmp(t, "attn")) return FT_TARGET_ATTN;
    if (!strcmp(t, "mlp")) return FT_TARGET_MLP;
    if (!strcmp(t, "all+embed+head")) return FT_TARGET_ALL_LINEAR | FT_TARGET_EMBED | FT_TARGET_HEAD;
    while (*t) {
        size_t n = strcspn(t, ",");
        unsigned b = ft_target_bit(t, n);
        if (!b) return 0;
        m |= b;
        t += n + (t[n] == ',');
    }
    return m;
}

static const char *ft_check_targets(const char *v) {
    size_t len;
    int w;
    if (ft_targets_mask(v)) return NULL;
    len = (size_t)snprintf(ft_why, sizeof ft_why, "must be all, attn, mlp, all+embed+head or a comma list of");
    for (w = 0; w < FT_SITE_COUNT; w++) len += (size_t)snprintf(ft_why + len, sizeof ft_why - len, " %s,", ft_site_name(w));
    snprintf(ft_why + len, sizeof ft_why - len, " embed_tokens, lm_head (or q, k, v, ...)");
    return ft_why;
}

/* a reward term: 'n' number, 'l' length:N, 'r' rm:ADAPTER, 'x' regex:PATTERN; each *WEIGHT */
typedef struct ft_term { char kind; float weight; int n; char arg[1024]; } ft_term;

static int ft_term_parse(const char **p, ft_term *t) {
    const char *s = *p, *end = s + strcspn(s, ","), *star = end;
    char *e;
    size_t len;
    t->weight = 1;
    t->n = 0;
    if (!strncmp(s, "regex:", 6)) {                 /* the rest of the list: it may hold commas and stars */
        t->kind = 'x';
        *p = s + strlen(s);
        snprintf(t->arg, sizeof t->arg, "%s", s + 6);
        return t->arg[0] && ft_regex_search(t->arg, "") >= 0;
    }
    *p = *end ? end + 1 : end;
    while (star > s && star[-1] != '*') star--;
    if (star > s) {
        t->weight = (float)strtod(star, &e);
        if (e != end || e == star || !isfinite(t->weight)) return 0;
        star--;
    } else star = end;
    len = (size_t)(star - s);
    t->kind = len == 6 && !strncmp(s, "number", 6) ? 'n' : !strncmp(s, "length:", 7) ? 'l' : !strncmp(s, "rm:", 3) ? 'r' : 0;
    if (t->kind == 'l') t->n = (int)strtol(s + 7, &e, 10);
    if (t->kind == 'l' && (e != star || t->n < 1)) return 0;
    if (t->kind == 'r') snprintf(t->arg, sizeof t->arg, "%.*s", (int)(len - 3), s + 3);
    return t->kind && (t->kind != 'r' || t->arg[0]);
}

/* "number,length:200*0.1,rm:ADAPTER,regex:PATTERN": the count of terms, 0 when malformed */
static int ft_terms_parse(const char *spec, ft_term *t, int cap) {
    int n = 0;
    while (*spec && n < cap)
        if (!ft_term_parse(&spec, &t[n++])) return 0;
    return *spec ? 0 : n;
}

static const char *ft_check_reward(const char *v) {
    static ft_term t[8];
    if (ft_terms_parse(v, t, 8)) return NULL;
    return "must be up to 8 terms number, length:N, rm:ADAPTER, regex:PATTERN (the last), each optionally *WEIGHT";
}

/* "FILE:NUMBER": the number after the last colon; 0 when there is none */
static int ft_split_number(const char *v, size_t *file_len, double *x) {
    const char *c = strrchr(v, ':');
    char *e;
    if (!c || c == v) return 0;
    *x = strtod(c + 1, &e);
    *file_len = (size_t)(c - v);
    return e != c + 1 && !*e && isfinite(*x);
}

static const char *ft_check_mix(const char *v) {
    size_t n;
    double r;
    if (ft_split_number(v, &n, &r) && r > 0 && r < 1) return NULL;
    return "must be FILE:RATIO with RATIO in (0, 1)";
}

static const char *ft_check_task(const char *v) {
    return v[0] && v[0] != ':' ? NULL : "must be FILE or FILE:EVAL_FILE";
}

/* "PATH[:WEIGHT[:DENSITY]]": the numbers are taken from the end, so a path may hold ':' */
static int ft_input_parse(const char *v, char *path, size_t cap, double *weight, double *density) {
    double x[2];
    int n = 0;
    size_t len = strlen(v);
    *weight = 1;
    *density = 0;
    snprintf(path, cap, "%s", v);
    while (n < 2 && ft_split_number(path, &len, &x[n])) {
        path[len] = 0;
        n++;
    }
    if (n == 1) *weight = x[0];
    if (n == 2) *weight = x[1];
    if (n == 2) *density = x[0];
    return path[0] && *density >= 0 && *density <= 1 && strlen(v) < cap;
}

static const char *ft_check_input(const char *v) {
    char path[2048];
    double w, d;
    return ft_input_parse(v, path, sizeof path, &w, &d) ? NULL : "must be PATH[:WEIGHT[:DENSITY]] with DENSITY in [0, 1]";
}

static const char *ft_check_device(const char *v) {
    return strcmp(v, "cpu") == 0 || strcmp(v, "cuda") == 0 ? NULL : "must be cpu or cuda";
}
static const char *ft_check_ids(const char *v) {
    const char *p = v;
    while (*p) {
        char *e;
        long x = strtol(p, &e, 10);
        if (e == p || x < 0 || (*e && *e != ',')) return "must be token ids 1,2,3";
        p = *e ? e + 1 : e;
    }
    return *v ? NULL : "must be token ids 1,2,3";
}

/* KEY=V1,V2,...: KEY an option of ft train (the values are checked by ft sweep) */
static const char *ft_check_grid(const char *v) {
    char key[64];
    const char *eq = strchr(v, '=');
    const ft_opt *o;
    if (!eq || eq == v || !eq[1] || eq - v >= (long)sizeof key) return "must be KEY=V1,V2,...";
    snprintf(key, sizeof key, "%.*s", (int)(eq - v), v);
    o = ft_opt_find(key, 0, FT_C_TRAIN);
    if (!o || o->kind == FT_OPT_CONFIG || !strcmp(key, "out")) return "must be KEY=V1,V2,... with KEY an option of ft train";
    return NULL;
}

/* ==== shared by the commands ===================================================================== */

/* the model of --model (a GGUF file or a Hugging Face directory), checked before it is loaded;
   --quantize nf4: its linear weights as NF4 */
static int ft_model_open(const ft_cli *c, ft_model **m) {
    struct stat st;
    ft_model_opts mo;
    if (stat(c->model, &st) != 0) return ft_err(c, "%s: %s", c->model, strerror(errno));
    memset(&mo, 0, sizeof mo);
    if (c->quantize == FT_TYPE_NF4) mo.quantize = FT_TYPE_NF4;
    if (ft_model_load(m, c->model, &mo) != FT_OK) return ft_fail(c);
    return 0;
}

/* --device: the device's kernel table, or NULL for the CPU (1: an error, reported). With several
   ranks on a host, each takes a GPU in turn (the local rank modulo the GPUs) */
static int ft_cli_device(const ft_cli *c, const ft_device **dev) {
    int n;
    *dev = NULL;
    if (!c->device || strcmp(c->device, "cpu") == 0) return 0;
#ifdef FT_WITH_CUDA
    n = ft_cuda_device_count();
    if (ft_cuda_init(n > 0 ? ft_local_rank % n : 0) != FT_OK) return ft_fail(c);
    *dev = ft_cuda_device();
    return 0;
#else
    (void)n;
    (void)ft_local_rank;
    return ft_err(c, "--device %s: this build runs on the CPU only; build/ft-cuda (make ft-cuda) runs on an NVIDIA GPU", c->device);
#endif
}
/* the model and (when given) its adapter moved to the device */
static ft_result ft_to_device(ft_model *m, ft_peft *p, const ft_device *dev) {
    ft_result r = ft_model_to_device(m, dev);
    return r == FT_OK && p ? ft_params_to_device(ft_peft_params(p), dev) : r;
}
/* the model, the adapter (--adapter) and a context; with --device cuda (generate, eval) the
   model and the adapter moved to the GPU and the context's ops run there */
static int ft_open_all(const ft_cli *c, ft_model **m, ft_peft **p, ft_ctx **ctx) {
    const ft_device *dev = NULL;
    ft_ctx_opts co = c->ctx;
    if (ft_model_open(c, m)) return 1;
    if (c->adapter && ft_peft_load(p, *m, c->adapter) != FT_OK) return ft_fail(c);
    if (!ctx) return 0;
    if (ft_cli_device(c, &dev)) return 1;
    co.device = dev;
    if (ft_ctx_init(ctx, &co) != FT_OK) return ft_fail(c);
    if (dev && ft_to_device(*m, p ? *p : NULL, dev) != FT_OK) return ft_fail(c);
    if (dev) fprintf(ft_note(), "ft: running on the %s device\n", dev->name);
    return 0;
}

static void ft_close_all(ft_model *m, ft_peft *p, ft_ctx *ctx) {
    ft_ctx_free(ctx);
    ft_peft_free(p);
    ft_model_free(m);
}

/* --prompt's token ids (through the chat template with --chat); NULL when there are none (said) */
static int32_t *ft_prompt_ids(const ft_cli *c, ft_model *m, int64_t *n) {
    const ft_tokenizer *tok = ft_model_tokenizer(m);
    size_t cap = strlen(c->prompt) + 65536;
    char *text = (char *)malloc(cap);
    int32_t *ids = NULL;
    ft_chat_msg msg;
    msg.role = "user";
    msg.content = c->prompt;
    *n = 0;
    if (!tok) ft_err(c, "%s has no tokenizer (logits: use --ids)", c->model);
    else if (c->chat && ft_chat_apply(ft_model_chat_template(m), &msg, 1, 1, text, (int64_t)cap) < 0) ft_fail(c);
    else {
        if (!c->chat) snprintf(text, cap, "%s", c->prompt);
        *n = ft_tokenize(tok, text, -1, NULL, 0, 1, 1);
        ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)(*n > 0 ? *n : 1));
        ft_tokenize(tok, text, -1, ids, *n, 1, 1);
    }
    free(text);
    if (ids && *n < 1) ft_err(c, "the prompt has no tokens");
    if (*n < 1) free(ids);
    return *n < 1 ? NULL : ids;
}

static void ft_describe_adapter(ft_peft *p) {
    const ft_lora_opts *lo = ft_lora_options(p);
    ft_params *P = ft_peft_params(p);
    if (ft_peft_kind(p) == FT_PEFT_LORA) {
        fprintf(stderr, "%s r=%d scale %g%s, %d tensors", lo->dora ? "DoRA" : "LoRA", lo->r, (double)ft_lora_scale(p),
                lo->rslora ? " (rsLoRA)" : "", ft_params_count(P));
        return;
    }
    fprintf(stderr, "%s", ft_peft_method_name(ft_peft_kind(p)));
    if (ft_peft_virtual_tokens(p)) fprintf(stderr, " with %lld virtual tokens", (long long)ft_peft_virtual_tokens(p));
    fprintf(stderr, ", %d tensors, %lld values", ft_params_count(P), (long long)ft_params_numel(P));
}

/* ==== ft info ==================================================================================== */

static void ft_print_kv(const ft_gguf_kv *kv) {
    uint64_t i, n = kv->type == FT_GGUF_STRING ? kv->strs[0].n : 0;
    if (kv->type == FT_GGUF_ARRAY) {
        const char *t = kv->arr_type == FT_GGUF_STRING ? "string" : kv->arr_type == FT_GGUF_FLOAT32 ? "f32" : "int";
        printf("[%llu x %s]", (unsigned long long)kv->n, t);
    } else if (kv->type == FT_GGUF_FLOAT32 || kv->type == FT_GGUF_FLOAT64) printf("%g", ft_gguf_kv_float(kv, 0));
    else if (kv->type != FT_GGUF_STRING) printf("%lld", (long long)ft_gguf_kv_int(kv, 0));
    if (kv->type != FT_GGUF_STRING) return;
    putchar('"');
    for (i = 0; i < n && i < 120; i++) {
        if (kv->strs[0].s[i] == '\n') fputs("\\n", stdout);
        else putchar(kv->strs[0].s[i]);
    }
    printf(n > 120 ? "...\" (%llu bytes)" : "\"", (unsigned long long)n);
}

static void ft_info_file(ft_gguf *g, int all) {
    int64_t i, counts[FT_TYPE_COUNT] = {0}, bytes[FT_TYPE_COUNT] = {0}, total = 0;
    for (i = 0; i < ft_gguf_n_kv(g); i++) {
        const ft_gguf_kv *kv = ft_gguf_kv_at(g, i);
        if (!all && kv->type == FT_GGUF_ARRAY) continue;
        printf("  %-44.*s ", (int)kv->key.n, kv->key.s);
        ft_print_kv(kv);
        putchar('\n');
    }
    for (i = 0; i < ft_gguf_n_tensors(g); i++) {
        const ft_gguf_tensor *t = ft_gguf_tensor_at(g, i);
        counts[t->type]++;
        bytes[t->type] += (int64_t)t->nbytes;
        total += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        if (all) printf("  tensor %-36.*s %-6s [%lld, %lld, %lld, %lld]\n", (int)t->name.n, t->name.s, ft_type_name(t->type),
                        (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3]);
    }
    printf("tensor types:");
    for (i = 0; i < FT_TYPE_COUNT; i++)
        if (counts[i]) printf(" %s x%lld (%.1f MiB)", ft_type_name((ft_type)i), (long long)counts[i], bytes[i] / 1048576.0);
    printf("\ntensor elements: %lld (%.1fM)\n", (long long)total, (double)total / 1e6);
}

static void ft_info_model(ft_model *m) {
    const ft_model_config *c = ft_model_config_get(m);
    int64_t nw, b = ft_model_linear_bytes(m, &nw);
    printf("model: %s, %lld layers, embd %lld, heads %lld (kv %lld, dim %lld), ffn %lld, vocab %lld, ctx %lld, rope base %g%s\n",
           c->arch_name, (long long)c->n_layer, (long long)c->n_embd, (long long)c->n_head, (long long)c->n_head_kv,
           (long long)c->head_dim, (long long)c->n_ff, (long long)c->n_vocab, (long long)c->n_ctx_train,
           (double)c->rope_base, c->tied_embeddings ? ", tied embeddings" : "");
    printf("weights: %lld parameters; linear weights %s, %.4f bytes each (%.1f MiB)\n", (long long)c->n_params,
           ft_type_name(ft_model_layer(m, 0)->wq->type), (double)b / (double)nw, (double)b / (1 << 20));
    printf("architecture:%s%s%s%s%s%s", c->qkv_bias ? " q/k/v biases," : "", c->qk_norm == 1 ? " q/k RMSNorm per head," : c->qk_norm == 2 ? " q/k RMSNorm," : "",
           c->post_norms ? " post-attention and post-FFN norms," : "", c->ffn_gelu ? " GeGLU (tanh GELU)," : " SwiGLU,",
           c->embd_scale != 1.0f ? " embeddings x sqrt(n_embd)," : "", c->fused ? " fused qkv and gate-up," : "");
    printf(" RoPE %s (%s", c->rope_type == FT_ROPE_NEOX ? "neox" : "norm", c->rope_scaling);
    if (!strcmp(c->rope_scaling, "linear") || !strcmp(c->rope_scaling, "yarn")) printf(", factor %g", 1.0 / c->rope.freq_scale);
    if (!strcmp(c->rope_scaling, "yarn")) printf(", original context %lld", (long long)c->rope.n_ctx_orig);
    printf(")");
    if (c->swa_window) printf(", sliding window %lld on %lld of %lld layers (RoPE base %g there)", (long long)c->swa_window, (long long)c->n_swa_layers, (long long)c->n_layer, (double)c->rope_base_swa);
    if (c->logit_softcap > 0) printf(", logits soft-capped at %g", (double)c->logit_softcap);
    printf("\n");
    if (c->n_expert)
        printf("experts: %lld per MoE layer, %lld used per token%s, expert FFN %lld\n", (long long)c->n_expert, (long long)c->n_expert_used,
               c->moe_norm ? " (weights renormalised)" : "", (long long)c->n_ff_exp);
}

static int ft_cmd_info(ft_cli *c) {
    ft_gguf *g;
    ft_model *m;
    if (!c->model) return ft_missing(c, "MODEL.gguf");
    if (ft_gguf_open(&g, c->model) != FT_OK) return ft_fail(c);
    printf("file: %s (GGUF v%u, %lld tensors, %lld metadata keys)\n", c->model, ft_gguf_version(g),
           (long long)ft_gguf_n_tensors(g), (long long)ft_gguf_n_kv(g));
    ft_info_file(g, c->all);
    ft_gguf_close(g);
    if (ft_model_load(&m, c->model, NULL) != FT_OK) {
        printf("model: not loadable here: %s\n", ft_last_error());
        return 0;
    }
    ft_info_model(m);
    ft_model_free(m);
    return 0;
}

/* ==== ft generate ================================================================================ */

static int ft_generate_print(const ft_cli *c, ft_ctx *ctx, ft_model *m, const int32_t *ids, int64_t n) {
    const ft_tokenizer *tok = ft_model_tokenizer(m);
    int32_t stop[FT_MAX_STOP];
    int32_t *out = (int32_t *)malloc(sizeof(int32_t) * (size_t)c->gen.max_new);
    int64_t out_len = 0, len, cap = c->gen.max_new * 64 + 64;
    char *text = (char *)malloc((size_t)cap);
    ft_gen_opts go = c->gen;
    ft_kv_cache *kv = NULL;
    ft_rng rng;
    double t0 = ft_time_seconds(), t1;
    int rc = 0;
    go.stop = stop;
    go.n_stop = ft_tokenizer_stop_ids(tok, stop);
    ft_rng_seed(&rng, (uint64_t)c->gen_seed);
    if (ft_kv_cache_init(&kv, m, 1, n + go.max_new) != FT_OK) rc = ft_fail(c);
    if (!rc && ft_generate(ctx, m, kv, 1, &ids, &n, &go, &rng, out, &out_len, NULL) != FT_OK) rc = ft_fail(c);
    t1 = ft_time_seconds() - t0;
    len = rc ? -1 : ft_detokenize(tok, out, out_len, text, cap, 0);
    if (len >= 0) printf("%.*s\n", (int)len, text);
    if (!rc) fprintf(stderr, "ft: %lld prompt tokens, %lld generated in %.2f s (%.1f tokens/s overall)\n",
                     (long long)n, (long long)out_len, t1, (double)out_len / t1);
    ft_kv_cache_free(kv);
    free(text);
    free(out);
    return rc;
}

static int ft_cmd_generate(ft_cli *c) {
    ft_model *m = NULL;
    ft_peft *p = NULL;
    ft_ctx *ctx = NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    int rc;
    if (!c->model || !c->prompt) return ft_missing(c, "-m MODEL.gguf and -p PROMPT");
    rc = ft_open_all(c, &m, &p, &ctx);
    if (!rc && !(ids = ft_prompt_ids(c, m, &n))) rc = 1;
    if (!rc) rc = ft_generate_print(c, ctx, m, ids, n);
    free(ids);
    ft_close_all(m, p, ctx);
    return rc;
}

/* ==== ft train =================================================================================== */

/* what a run measures before and after training */
typedef struct ft_evres {
    double loss;                        /* eval loss (token data)                                    */
    ft_eval_gen gen;                    /* exact match of greedy answers                              */
    double general;                     /* loss on --eval-general text (forgetting)                   */
    ft_eval_mc_result mc;               /* ... or its multiple-choice items' acc and acc_norm          */
    double lik_acc;                     /* preference data: the likelihood prefers the chosen answer  */
    double rew_acc, rew_margin;         /* the objective's reward: implicit (vs the reference),
                                           length-averaged likelihood (reference-free), or the head  */
    double reward, solved;              /* RL: mean reward of greedy answers, share with full reward  */
} ft_evres;

typedef struct ft_run {
    ft_cli *c;
    const ft_objective_def *def;
    ft_model *m;
    ft_ctx *ctx;
    ft_peft *p;
    ft_dataset *train, *ev, *general, *tev[8];
    ft_mc_set *general_mc;              /* --eval-general as multiple-choice items                     */
    ft_reward_term rw[8];
    int n_rw, len_target[8];
    float full_reward;                  /* the sum of the weights of the terms other than length      */
    ft_rm_scorer rm;
    ft_peft *rm_peft;
    FILE *metrics;
    int tty, resumed, no_before, wrote_peft;
    double *x, *y, *ex, *ey;            /* the curves: loss (RL: reward) and eval loss by step      */
    int64_t n, ne, cap;
    double t_first, t_last;             /* elapsed seconds at the first and last step of this run   */
    int64_t s_first, s_last;
    ft_train_state st;
    ft_evres e0, e1, t0[8], t1[8];
    char ckpt[2048];
} ft_run;

static void ft_run_free(ft_run *r) {
    int i;
    for (i = 0; i < 8; i++) ft_dataset_free(r->tev[i]);
    ft_dataset_free(r->train);
    ft_dataset_free(r->ev);
    ft_dataset_free(r->general);
    ft_mc_free(r->general_mc);
    ft_close_all(r->m, r->p, r->ctx);
    ft_close_all(r->rm.model, r->rm_peft, r->rm.ctx);
    if (r->metrics) fclose(r->metrics);
    free(r->x);
    free(r->y);
    free(r->ex);
    free(r->ey);
}

static int ft_is_rl(const ft_run *r) {
    return r->def->kind == FT_KIND_ROLLOUTS;
}

/* OUT/NAME */
static const char *ft_out(const ft_run *r, const char *name) {
    static char path[4][2048];
    static int k;
    k = (k + 1) % 4;
    snprintf(path[k], sizeof path[k], "%s/%s", r->c->out, name);
    return path[k];
}

/* ---- the data ---- */

/* how many examples --seq-len cut, and how many of them kept no target token */
static void ft_report_cut(const char *path, const ft_dataset *d, int64_t seq_len) {
    int64_t none;
    if (!ft_dataset_truncated(d)) return;
    none = ft_dataset_without_targets(d, seq_len);
    fprintf(ft_note(), "ft: %s: %lld of %lld examples cut to --seq-len %lld tokens", path, (long long)ft_dataset_truncated(d),
            (long long)ft_dataset_size(d), (long long)seq_len);
    if (none) fprintf(ft_note(), "; %lld keep no target token", (long long)none);
    fprintf(ft_note(), "\n");
}

static int ft_load(ft_run *r, ft_dataset **d, const char *path, const ft_data_opts *o) {
    if (ft_dataset_load(d, path, ft_model_tokenizer(r->m), ft_model_chat_template(r->m), o) != FT_OK) return ft_fail(r->c);
    ft_report_cut(path, *d, o->max_len);
    return 0;
}

/* --mix FILE:RATIO ...: the main data keeps 1 - sum(ratios) */
static int ft_train_mix(ft_run *r, const ft_data_opts *o) {
    ft_dataset *parts[5] = {0}, *mixed;
    double ratios[5], rest = 1;
    int64_t total;
    int i, n = r->c->mix.n, rc = 0;
    ft_data_opts mo = *o;
    mo.format = FT_DATA_AUTO;
    parts[0] = r->train;
    for (i = 0; i < n && !rc; i++) {
        char path[2048];
        size_t len;
        ft_split_number(r->c->mix.v[i], &len, &ratios[i + 1]);
        snprintf(path, sizeof path, "%.*s", (int)len, r->c->mix.v[i]);
        rest -= ratios[i + 1];
        rc = ft_load(r, &parts[i + 1], path, &mo);
    }
    ratios[0] = rest;
    if (!rc && rest <= 0) rc = ft_err(r->c, "--mix: the ratios sum to %g: they must leave a share of --data", 1 - rest);
    total = (int64_t)((double)ft_dataset_size(r->train) / (rest > 0.05 ? rest : 0.05));
    if (!rc && ft_dataset_mix(&mixed, parts, ratios, n + 1, total, r->c->train.seed) != FT_OK) rc = ft_fail(r->c);
    for (i = 1; i <= n; i++) ft_dataset_free(parts[i]);
    if (rc) return rc;
    ft_dataset_free(r->train);
    r->train = mixed;
    return 0;
}

/* --task FILE[:EVAL] ...: the tasks (and --data, one more) mixed at FLAN / T5 rates min(n_i, cap)^(1/T),
   one pass over the mixture as long as all of them; each EVAL file loaded for its own table rows */
static int ft_train_tasks(ft_run *r, const ft_data_opts *o) {
    ft_cli *c = r->c;
    ft_dataset *parts[9] = {0}, *mixed = NULL;
    const char *names[9];
    int64_t sizes[9], total = 0;
    double rates[9];
    int n = 0, i, rc = 0;
    if (r->train) names[n] = c->data;
    if (r->train) parts[n++] = r->train;
    for (i = 0; i < c->task.n && !rc; i++) {
        char path[2048];
        const char *colon = strrchr(c->task.v[i], ':');
        snprintf(path, sizeof path, "%.*s", colon ? (int)(colon - c->task.v[i]) : (int)strlen(c->task.v[i]), c->task.v[i]);
        names[n] = c->task.v[i];
        rc = ft_load(r, &parts[n++], path, o);
        if (!rc && colon && colon[1]) rc = ft_load(r, &r->tev[i], colon + 1, o);
    }
    for (i = 0; i < n && !rc; i++) total += sizes[i] = ft_dataset_size(parts[i]);
    if (!rc && ft_mix_ratios(sizes, n, c->mix_temperature, c->mix_cap, rates) != FT_OK) rc = ft_fail(c);
    for (i = 0; i < n && !rc; i++)
        fprintf(ft_note(), "ft: task %s: %lld %s examples, sampling rate %.3f\n", names[i], (long long)sizes[i],
                ft_data_format_name(ft_dataset_format(parts[i])), rates[i]);
    if (!rc && ft_dataset_mix(&mixed, parts, rates, n, total, c->train.seed) != FT_OK) rc = ft_fail(c);
    for (i = 0; i < n; i++) ft_dataset_free(parts[i]);
    r->train = mixed;
    return rc;
}

/* is the file multiple-choice items (its first line has "choices", or PIQA's "sol1")? */
static int ft_is_mc_file(const char *path) {
    char line[65536]; FILE *f = fopen(path, "rb"); int mc = 0;
    if (f && fgets(line, sizeof line, f)) mc = strstr(line, "\"choices\"") != NULL || strstr(line, "\"sol1\"") != NULL;
    if (f) fclose(f);
    return mc;
}

/* the training set (--data, --task, --mix), the eval sets (--eval or --eval-split, --eval-general) */
static int ft_train_data(ft_run *r) {
    ft_cli *c = r->c;
    ft_data_opts o = c->data_opts, text;
    int64_t n;
    o.format = r->def->data == FT_DATA_TEXT ? FT_DATA_TEXT : FT_DATA_AUTO;
    o.max_len = c->train.seq_len;
    text = o;
    text.format = FT_DATA_TEXT;
    if (c->data && ft_load(r, &r->train, c->data, &o)) return 1;
    if (c->task.n && ft_train_tasks(r, &o)) return 1;
    if (c->eval && ft_load(r, &r->ev, c->eval, &o)) return 1;
    if (!c->eval && c->eval_split > 0 && !c->task.n && ft_dataset_split(r->train, c->eval_split, c->train.seed, &r->ev) != FT_OK)
        return ft_fail(c);
    if (c->general && ft_is_mc_file(c->general) && ft_mc_load(&r->general_mc, c->general) != FT_OK) return ft_fail(c);
    if (c->general && !r->general_mc && ft_load(r, &r->general, c->general, &text)) return 1;
    if (c->mix.n && ft_train_mix(r, &o)) return 1;
    fprintf(ft_note(), "ft: %s: %lld %s examples (%lld tokens%s)", c->task.n ? "task mixture" : c->data,
            (long long)ft_dataset_size(r->train), ft_data_format_name(ft_dataset_format(r->train)),
            (long long)ft_dataset_tokens(r->train), ft_dataset_skipped(r->train) ? ", some lines skipped" : "");
    if (r->ev) fprintf(ft_note(), "; eval %lld examples", (long long)ft_dataset_size(r->ev));
    fprintf(ft_note(), "\n");
    n = ft_dataset_size(r->train);
    if (n && r->def->kind != FT_KIND_SCORES && ft_dataset_without_targets(r->train, c->train.seq_len) == n)
        return ft_err(c, "no training example keeps a target token within --seq-len %lld: nothing to learn (raise --seq-len)",
                      (long long)c->train.seq_len);
    return 0;
}

/* ---- the adapter and the rewards ---- */

static int ft_train_adapter(ft_run *r) {
    ft_cli *c = r->c;
    ft_peft_opts po = c->peft;
    int extra = c->method - ft_enum_count(FT_ENUM_PEFT_METHOD);
    int64_t n, total = ft_model_config_get(r->m)->n_params;
    po.lora.dora = extra == 1;                             /* the method's extra names: qlora, dora */
    po.lora.targets = ft_targets_mask(c->targets);
    po.seed = c->train.seed;
    po.reward_head = r->def->scalar_head;                  /* rm: the reward; ppo: the value */
    if (c->init_adapter) {             /* an earlier stage folded in: the new base and reference */
        ft_peft *p0;
        if (ft_peft_load(&p0, r->m, c->init_adapter) != FT_OK || ft_peft_bake(p0) != FT_OK) return ft_fail(c);
        fprintf(ft_note(), "ft: %s baked into the base\n", c->init_adapter);
    }
    if (ft_peft_attach(&r->p, r->m, &po) != FT_OK) return ft_fail(c);
    n = ft_params_numel(ft_peft_params(r->p));
    fprintf(ft_note(), "ft: %s", ft_value(c, "method"));
    if (po.method == FT_PEFT_LORA) fprintf(ft_note(), " r=%d alpha=%g on %s", po.lora.r, (double)po.lora.alpha, c->targets);
    fprintf(ft_note(), ": %lld trainable parameters (%.2f%% of %lld)\n", (long long)n, 100.0 * n / (double)total, (long long)total);
    return 0;
}

/* rm:ADAPTER: the base model again with the reward model's adapter, and a context of its own */
static int ft_train_rm(ft_run *r, const ft_term *t, ft_reward_term *w) {
    if (r->rm.model) return ft_err(r->c, "--reward: one rm: term at most");
    if (ft_model_load(&r->rm.model, r->c->model, NULL) != FT_OK) return ft_fail(r->c);
    if (ft_peft_load(&r->rm_peft, r->rm.model, t->arg) != FT_OK) return ft_fail(r->c);
    if (!ft_peft_reward_head(r->rm_peft)) return ft_err(r->c, "%s has no reward head (train it with --objective rm)", t->arg);
    if (ft_ctx_init(&r->rm.ctx, &r->c->ctx) != FT_OK) return ft_fail(r->c);
    w->fn = ft_reward_model;
    w->user = &r->rm;
    return 0;
}

static int ft_train_rewards(ft_run *r) {
    static ft_term t[8];
    int i, n = ft_terms_parse(r->c->reward, t, 8);
    for (i = 0; i < n; i++) {
        ft_reward_term *w = &r->rw[i];
        w->weight = t[i].weight;
        w->user = NULL;
        w->fn = t[i].kind == 'n' ? ft_reward_number : t[i].kind == 'x' ? ft_reward_regex : ft_reward_length;
        if (t[i].kind == 'x') w->user = t[i].arg;
        if (t[i].kind == 'l') w->user = &r->len_target[i];
        r->len_target[i] = t[i].n;
        if (t[i].kind == 'r' && ft_train_rm(r, &t[i], w)) return 1;
        if (t[i].kind != 'l') r->full_reward += w->weight;
    }
    r->n_rw = n;
    return 0;
}

/* the checks that need no model, the model, the context, the data, the adapter, the rewards */
static int ft_train_setup(ft_run *r) {
    ft_cli *c = r->c;
    ft_ctx_opts co = c->ctx;
    if (!c->model || (!c->data && !c->task.n) || !c->out) return ft_missing(c, "-m MODEL.gguf, --data FILE and --out DIR");
    if (ft_is_rl(r) && !c->reward) return ft_missing(c, "--reward (number, length:N, rm:ADAPTER, regex:PATTERN)");
    if (ft_rank() == 0 && ft_mkdirs(ft_out(r, "checkpoints")) != FT_OK) return ft_fail(c);
    if (ft_model_open(c, &r->m)) return 1;
    if (!ft_model_tokenizer(r->m)) return ft_err(c, "%s has no tokenizer", c->model);
    co.seed = c->train.seed;
    if (ft_ctx_init(&r->ctx, &co) != FT_OK) return ft_fail(c);
    if (ft_ctx_compute(r->ctx) == FT_COMPUTE_BF16) fprintf(ft_note(), "ft: matrix products in bf16, summed in f32 (--compute f32: all f32)\n");
    ft_ctx_set_checkpointing(r->ctx, c->grad_checkpoint);
    if (ft_train_data(r) || ft_train_adapter(r)) return 1;
    if (ft_is_rl(r) && ft_train_rewards(r)) return 1;
    return 0;
}

/* ---- evaluation ---- */

static int ft_eval_pairs(ft_run *r, const ft_dataset *d, ft_evres *e) {
    const ft_train_opts *t = &r->c->train;
    float beta = t->beta > 0 ? t->beta : 0.1f;
    int implicit = r->def->reference ? 1 : 2;                 /* reference-free: the length-averaged likelihood */
    int64_t b = t->batch, T = t->seq_len;
    ft_result res = ft_eval_preference(r->ctx, r->m, d, b, T, 1.0f, 0, &e->lik_acc, &e->rew_margin);
    if (res == FT_OK && r->def->kind == FT_KIND_SCORES) res = ft_eval_reward(r->ctx, r->m, d, b, T, &e->rew_acc, &e->rew_margin);
    else if (res == FT_OK) res = ft_eval_preference(r->ctx, r->m, d, b, T, beta, implicit, &e->rew_acc, &e->rew_margin);
    return res == FT_OK ? 0 : ft_fail(r->c);
}

/* the model as it is now (adapter on or off) on an eval set (and the general text) */
static int ft_evaluate(ft_run *r, const ft_dataset *d, int general, ft_evres *e) {
    ft_cli *c = r->c;
    const ft_train_opts *t = &c->train;
    memset(e, 0, sizeof *e);
    if (general && r->general && ft_eval_loss(r->ctx, r->m, r->general, t->batch, t->seq_len, &e->general, NULL) != FT_OK) return ft_fail(c);
    if (general && r->general_mc && ft_eval_mc(r->ctx, r->m, r->general_mc, 0, &e->mc) != FT_OK) return ft_fail(c);
    if (ft_is_rl(r) && ft_eval_rl(r->ctx, r->m, d, t->rl.max_new, r->rw, r->n_rw, r->full_reward, c->eval_gen, &e->reward,
                                  &e->solved) != FT_OK) return ft_fail(c);
    if (ft_is_rl(r)) return 0;
    if (ft_dataset_format(d) == FT_DATA_PREFERENCE) return ft_eval_pairs(r, d, e);
    if (ft_eval_loss(r->ctx, r->m, d, t->batch, t->seq_len, &e->loss, NULL) != FT_OK) return ft_fail(c);
    if (c->eval_gen > 0 && ft_dataset_format(d) != FT_DATA_TEXT &&
        ft_eval_generate(r->ctx, r->m, d, t->rl.max_new, c->eval_gen, &e->gen, NULL, NULL) != FT_OK) return ft_fail(c);
    return 0;
}

/* the base model (a reward model: its untrained head) on an eval set */
static int ft_evaluate_before(ft_run *r, const ft_dataset *d, int general, ft_evres *e) {
    int rc;
    if (r->def->kind != FT_KIND_SCORES) ft_peft_set_enabled(r->p, 0);
    rc = ft_evaluate(r, d, general, e);
    ft_peft_set_enabled(r->p, 1);
    return rc;
}

static void ft_say_before(ft_run *r, const char *name, const ft_dataset *d, const ft_evres *e) {
    if (ft_is_rl(r)) fprintf(stderr, "ft: before: mean reward %.3f, full reward on %.1f%% of %s", e->reward, 100 * e->solved,
                             name);
    else if (ft_dataset_format(d) == FT_DATA_PREFERENCE)
        fprintf(stderr, "ft: before: the base model's likelihood prefers the chosen answer in %.1f%% of pairs", 100 * e->lik_acc);
    else fprintf(stderr, "ft: before: %s: eval loss %.4f (ppl %.2f)", name, e->loss, exp(e->loss));
    if (e->gen.n) fprintf(stderr, ", exact match %lld/%lld (%.1f%%)", (long long)e->gen.exact, (long long)e->gen.n,
                          100 * e->gen.exact_rate);
    fprintf(stderr, "\n");
}

static int ft_train_before(ft_run *r) {
    ft_cli *c = r->c;
    FILE *f;
    int i;
    snprintf(r->ckpt, sizeof r->ckpt, "%s", ft_out(r, "checkpoints/last.gguf"));
    f = c->resume ? fopen(r->ckpt, "rb") : NULL;
    r->resumed = f != NULL;
    if (f) fclose(f);
    r->no_before = r->resumed || !c->eval_before || ft_rank() != 0;
    if (r->ev && !r->no_before && ft_evaluate_before(r, r->ev, 1, &r->e0)) return 1;
    if (r->ev && !r->no_before) ft_say_before(r, c->eval ? c->eval : "the held-out split", r->ev, &r->e0);
    for (i = 0; i < c->task.n && !r->no_before; i++) {
        if (!r->tev[i]) continue;
        if (ft_evaluate_before(r, r->tev[i], 0, &r->t0[i])) return 1;
        ft_say_before(r, strrchr(c->task.v[i], ':') + 1, r->tev[i], &r->t0[i]);
    }
    return 0;
}

/* ---- the training: metrics, progress, the curves ---- */

static void ft_curve_add(ft_run *r, double step, double y, double eval) {
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 256;
        r->x = (double *)realloc(r->x, (size_t)r->cap * sizeof(double));
        r->y = (double *)realloc(r->y, (size_t)r->cap * sizeof(double));
        r->ex = (double *)realloc(r->ex, (size_t)r->cap * sizeof(double));
        r->ey = (double *)realloc(r->ey, (size_t)r->cap * sizeof(double));
    }
    r->x[r->n] = step;
    r->y[r->n++] = y;
    if (eval == eval) r->ex[r->ne] = step;
    if (eval == eval) r->ey[r->ne++] = eval;
}

/* what every metrics line ends with: the data-parallel ranks and the step's seconds in collectives;
   a mixture of experts' router losses and each layer's share of the choices per expert */
static void ft_metrics_tail(FILE *f, const ft_step_info *s) {
    int64_t l, e;
    if (s->ranks > 1) fprintf(f, ", \"ranks\": %d, \"comm_s\": %.4f", s->ranks, s->comm_s);
    if (!s->moe_load) return;
    fprintf(f, ", \"aux_loss\": %.6f, \"z_loss\": %.6f, \"expert_load\": [", s->moe_aux, s->moe_z);
    for (l = 0; l < s->moe_layers; l++) {
        fprintf(f, "%s[", l ? ", " : "");
        for (e = 0; e < s->moe_experts; e++) fprintf(f, "%s%.4f", e ? ", " : "", s->moe_load[l * s->moe_experts + e]);
        fprintf(f, "]");
    }
    fprintf(f, "]");
}

static void ft_metrics_tokens(FILE *f, const ft_step_info *s) {
    const ft_pref_stats *p = &s->pref;
    fprintf(f, "{\"step\": %lld, \"epoch\": %lld, \"loss\": %.6f, \"learning_rate\": %.6g, \"grad_norm\": %.6f, "
            "\"tokens_per_s\": %.1f, \"tokens\": %.0f", (long long)s->step, (long long)s->epoch, s->loss, s->lr, s->grad_norm,
            s->tokens_per_s, s->tokens);
    if (s->eval_loss == s->eval_loss) fprintf(f, ", \"eval_loss\": %.6f, \"eval_perplexity\": %.4f", s->eval_loss,
                                              exp(s->eval_loss));
    if (p->rewards_accuracies > 0 || p->rewards_margins != 0)
        fprintf(f, ", \"rewards/chosen\": %.6f, \"rewards/rejected\": %.6f, \"rewards/margins\": %.6f, "
                "\"rewards/accuracies\": %.4f, \"logps/chosen\": %.4f, \"logps/rejected\": %.4f", p->rewards_chosen,
                p->rewards_rejected, p->rewards_margins, p->rewards_accuracies, p->logps_chosen, p->logps_rejected);
    if (p->kl != 0) fprintf(f, ", \"kl\": %.6f", p->kl);
    ft_metrics_tail(f, s);
    fprintf(f, "}\n");
}

static void ft_metrics_rl(FILE *f, const ft_step_info *s) {
    const ft_rl_stats *q = &s->rl;
    fprintf(f, "{\"step\": %lld, \"loss\": %.6f, \"learning_rate\": %.6g, \"grad_norm\": %.6f, \"reward\": %.6f, "
            "\"reward_std\": %.6f, \"kl\": %.6f, \"completion_length\": %.3f, \"clip_ratio/region_mean\": %.5f, "
            "\"frac_reward_zero_std\": %.4f, \"pg_loss\": %.6f, \"vf_loss\": %.6f, \"pg_clipfrac\": %.5f, "
            "\"objective/entropy\": %.4f, \"objective/rlhf_reward\": %.6f",
            (long long)s->step, s->loss, s->lr, s->grad_norm, q->reward, q->reward_std, q->kl, q->completion_len, q->clip_region,
            q->frac_reward_zero_std, q->pg_loss, q->vf_loss, q->pg_clipfrac, q->entropy, q->rlhf_reward);
    ft_metrics_tail(f, s);
    fprintf(f, "}\n");
}

static void ft_progress(const ft_run *r, const ft_step_info *s) {
    int evaluated = s->eval_loss == s->eval_loss, last = s->step == s->steps;
    if (!r->tty && s->step % r->c->log_every != 0 && !last && !evaluated) return;
    fprintf(stderr, "%sstep %lld/%lld", r->tty ? "\r" : "", (long long)s->step, (long long)s->steps);
    if (ft_is_rl(r)) fprintf(stderr, "  reward %.3f (std %.3f)  kl %.4f  len %.1f  loss %.4f", s->rl.reward, s->rl.reward_std,
                             s->rl.kl, s->rl.completion_len, s->loss);
    else fprintf(stderr, "  loss %.4f  lr %.2e  grad %.2f  %.0f tok/s", s->loss, s->lr, s->grad_norm, s->tokens_per_s);
    fprintf(stderr, "  ETA %dm%02ds", (int)(s->eta_s / 60), (int)s->eta_s % 60);
    if (evaluated) fprintf(stderr, "  eval %.4f (ppl %.2f)", s->eval_loss, exp(s->eval_loss));
    fprintf(stderr, r->tty && !evaluated && !last ? "   " : "\n");
}

static int ft_on_step(void *user, const ft_step_info *s) {
    ft_run *r = (ft_run *)user;
    ft_curve_add(r, (double)s->step, ft_is_rl(r) ? s->rl.reward : s->loss, s->eval_loss);
    if (ft_is_rl(r)) ft_metrics_rl(r->metrics, s);
    else ft_metrics_tokens(r->metrics, s);
    fflush(r->metrics);
    if (!r->s_first) r->t_first = s->elapsed_s;          /* the time per step leaves the first step out */
    if (!r->s_first) r->s_first = s->step;
    r->t_last = s->elapsed_s;
    r->s_last = s->step;
    ft_progress(r, s);
    return 0;
}

static int64_t ft_ckpt_step(const char *path) {
    ft_gguf *g;
    int64_t v = 0;
    if (ft_gguf_open(&g, path) != FT_OK) return 0;
    if (!ft_gguf_get_int(g, "ft.step", &v)) v = 0;
    ft_gguf_close(g);
    return v;
}

/* after --resume: metrics.jsonl without the lines logged after the checkpoint (they run again) */
static int ft_metrics_trim(ft_run *r, const char *path) {
    int64_t step = ft_ckpt_step(r->ckpt);
    char tmp[2100], *line = NULL;
    size_t cap = 0;
    ssize_t len;
    FILE *in = fopen(path, "r"), *out;
    if (!in) return 0;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (!(out = fopen(tmp, "w"))) fclose(in);
    if (!out) return ft_err(r->c, "%s: cannot write: %s", tmp, strerror(errno));
    while ((len = getline(&line, &cap, in)) > 0) {
        ft_json_doc *d;
        const ft_json *s, *y, *e;
        if (ft_json_parse(&d, line, (size_t)len, path, 0) != FT_OK) continue;
        s = ft_json_get(ft_json_root(d), "step");
        y = ft_json_get(ft_json_root(d), ft_is_rl(r) ? "reward" : "loss");
        e = ft_json_get(ft_json_root(d), "eval_loss");
        if (s && s->kind == FT_JSON_NUMBER && s->num <= (double)step && y) fputs(line, out);
        if (s && s->kind == FT_JSON_NUMBER && s->num <= (double)step && y) ft_curve_add(r, s->num, y->num, e ? e->num : NAN);
        ft_json_free(d);
    }
    free(line);
    fclose(in);
    if (fclose(out) != 0 || rename(tmp, path) != 0) return ft_err(r->c, "%s: cannot write: %s", path, strerror(errno));
    return 0;
}

/* ft_train, on the device when --device asks: the model and the adapter moved there for the
   steps (with a context of their own) and back for what follows (saving, evaluation) */
static int ft_train_steps(ft_run *r, const ft_train_opts *to) {
    ft_cli *c = r->c;
    const ft_device *dev;
    ft_ctx *ctx = r->ctx;
    ft_ctx_opts co = c->ctx;
    ft_params *P = ft_peft_params(r->p);
    ft_result res = FT_OK;
    if (ft_cli_device(c, &dev)) return 1;
    co.seed = c->train.seed;
    co.device = dev;
    if (dev && ft_ctx_init(&ctx, &co) != FT_OK) return ft_fail(c);
    if (dev) res = ft_to_device(r->m, r->p, dev);
    if (dev && res == FT_OK) fprintf(ft_note(), "ft: training on the %s device\n", dev->name);
    if (res == FT_OK) res = ft_train(ctx, r->m, P, r->train, to, &r->st);
    if (dev) {
        ft_result back = ft_params_to_host(P);
        ft_model_to_host(r->m);
        ft_ctx_free(ctx);
        if (res == FT_OK) res = back;
    }
    return res == FT_OK ? 0 : ft_fail(c);
}

static int ft_train_run(ft_run *r) {
    ft_cli *c = r->c;
    ft_train_opts to = c->train;
    const char *path = ft_out(r, "metrics.jsonl");
    if (ft_rank() == 0) {                               /* the run directory: rank 0's alone */
        if (ft_config_write(c, ft_out(r, "config"))) return 1;
        if (r->resumed && ft_metrics_trim(r, path)) return 1;
        if (!(r->metrics = fopen(path, r->resumed ? "a" : "w"))) return ft_err(c, "%s: cannot write: %s", path, strerror(errno));
    }
    r->tty = isatty(2);
    to.comm = ft_comm;
    to.eval = ft_is_rl(r) ? NULL : r->ev;
    to.checkpoint_path = r->ckpt;
    to.resume_from = r->resumed ? r->ckpt : NULL;
    to.rl.rewards = r->rw;
    to.rl.n_rewards = r->n_rw;
    to.on_step = ft_on_step;
    to.user = r;
    if (r->resumed) fprintf(ft_note(), "ft: resuming from %s\n", r->ckpt);
    if (ft_train_steps(r, &to)) return 1;
    if (r->metrics) fclose(r->metrics);
    r->metrics = NULL;
    return 0;
}

/* ---- the adapter in both formats, the curve, the tables ---- */

static int ft_train_save(ft_run *r) {
    ft_cli *c = r->c;
    ft_plot_series s[2];
    const char *curve = ft_is_rl(r) ? "reward.svg" : "loss.svg", *path = ft_out(r, curve);
    const char *ylabel = r->def->kind == FT_KIND_TOKENS ? "cross-entropy" : r->def->name;
    if (ft_peft_save(r->p, ft_out(r, "adapter.gguf"), FT_FORMAT_AUTO, NULL) != FT_OK) return ft_fail(c);
    r->wrote_peft = ft_peft_can_save(r->p, FT_FORMAT_PEFT) == FT_OK;
    if (r->wrote_peft && ft_peft_save(r->p, ft_out(r, "peft"), FT_FORMAT_PEFT, NULL) != FT_OK) return ft_fail(c);
    s[0].name = ft_is_rl(r) ? "reward" : "train";
    s[0].x = r->x;
    s[0].y = r->y;
    s[0].n = r->n;
    s[1].name = "eval";
    s[1].x = r->ex;
    s[1].y = r->ey;
    s[1].n = r->ne;
    if (ft_is_rl(r) && r->n && ft_svg_plot(path, "mean reward of the sampled completions", "step", "reward", s, 1) != FT_OK)
        return ft_fail(c);
    if (!ft_is_rl(r) && r->n && ft_svg_plot(path, "loss", "step", ylabel, s, r->ne ? 2 : 1) != FT_OK) return ft_fail(c);
    fprintf(stderr, "ft: %lld steps, %.0f tokens", (long long)r->st.step, r->st.tokens);
    if (r->s_last > r->s_first) fprintf(stderr, ", %.2f s per step", (r->t_last - r->t_first) / (double)(r->s_last - r->s_first));
    fprintf(stderr, "; wrote %s/{adapter.gguf,%smetrics.jsonl,%s,config,checkpoints/}\n", c->out, r->wrote_peft ? "peft/," : "",
            curve);
    return 0;
}

/* a row of the before / after table: fmt is one number's format */
static void ft_row(const char *name, const char *fmt, double v0, double v1, int no_before) {
    char a[32] = "-", b[32];
    if (!no_before) snprintf(a, sizeof a, fmt, v0);
    snprintf(b, sizeof b, fmt, v1);
    printf("| %-26s | %10s | %10s |\n", name, a, b);
}

static void ft_table(const ft_run *r) {
    const ft_evres *e0 = &r->e0, *e1 = &r->e1;
    int nb = r->no_before, head = r->def->kind == FT_KIND_SCORES;
    printf("\n| %-26s | %10s | %10s |\n|%s|%s|%s|\n", r->c->eval ? r->c->eval : "held-out split", "before", "after",
           "----------------------------", "------------", "------------");
    if (ft_is_rl(r)) {
        ft_row("mean reward (greedy)", "%.4f", e0->reward, e1->reward, nb);
        ft_row("full reward (greedy)", "%.1f%%", 100 * e0->solved, 100 * e1->solved, nb);
    } else if (ft_dataset_format(r->ev) == FT_DATA_PREFERENCE) {
        const char *acc = r->def->reference ? "implicit reward accuracy" : "avg log-prob reward acc";
        ft_row("likelihood prefers chosen", "%.1f%%", 100 * e0->lik_acc, 100 * e1->lik_acc, nb);
        ft_row(head ? "reward model accuracy" : acc, "%.1f%%", 100 * e0->rew_acc, 100 * e1->rew_acc, nb);
        ft_row(head ? "reward model margin" : "reward margin", "%.4f", e0->rew_margin, e1->rew_margin, nb);
    } else {
        ft_row("eval loss", "%.4f", e0->loss, e1->loss, nb);
        ft_row("eval perplexity", "%.2f", exp(e0->loss), exp(e1->loss), nb);
        if (r->general) ft_row("general text perplexity", "%.2f", exp(e0->general), exp(e1->general), nb);
        if (r->general_mc) ft_row("general acc (multiple choice)", "%.1f%%", 100 * e0->mc.acc, 100 * e1->mc.acc, nb);
        if (r->general_mc) ft_row("general acc_norm", "%.1f%%", 100 * e0->mc.acc_norm, 100 * e1->mc.acc_norm, nb);
        if (e1->gen.n) ft_row("exact match", "%.1f%%", 100 * e0->gen.exact_rate, 100 * e1->gen.exact_rate, nb);
        if (e1->gen.n) ft_row("contains the answer", "%.1f%%", 100 * e0->gen.contains_rate, 100 * e1->gen.contains_rate, nb);
    }
}

/* each --task's eval file, before and after */
static void ft_task_table(const ft_run *r) {
    int i;
    printf("\n| %-32s | %-18s | %-16s | %-14s |\n|%s|%s|%s|%s|\n", "task eval file", "loss", "perplexity", "exact match",
           "----------------------------------", "--------------------", "------------------", "----------------");
    for (i = 0; i < r->c->task.n; i++) {
        const ft_evres *a = &r->t0[i], *b = &r->t1[i];
        char l[64], pp[64], em[64] = "-";
        if (!r->tev[i]) continue;
        if (r->no_before) snprintf(l, sizeof l, "%.4f", b->loss);
        else snprintf(l, sizeof l, "%.4f -> %.4f", a->loss, b->loss);
        if (r->no_before) snprintf(pp, sizeof pp, "%.2f", exp(b->loss));
        else snprintf(pp, sizeof pp, "%.2f -> %.2f", exp(a->loss), exp(b->loss));
        if (b->gen.n && r->no_before) snprintf(em, sizeof em, "%.1f%%", 100 * b->gen.exact_rate);
        if (b->gen.n && !r->no_before) snprintf(em, sizeof em, "%.0f%% -> %.0f%%", 100 * a->gen.exact_rate,
                                                100 * b->gen.exact_rate);
        printf("| %-32s | %-18s | %-16s | %-14s |\n", strrchr(r->c->task.v[i], ':') + 1, l, pp, em);
    }
}

/* OUT/eval.json: the final evaluation (ft sweep reads it) */
static void ft_eval_json(const ft_run *r) {
    const ft_evres *e0 = &r->e0, *e1 = &r->e1;
    FILE *f = fopen(ft_out(r, "eval.json"), "w");
    const char *sep = "";
    int i;
    if (!f) return;
    fprintf(f, "{");
    if (r->ev && ft_is_rl(r)) fprintf(f, "\"mean_reward\": %.6f, \"full_reward\": %.4f", e1->reward, e1->solved);
    if (r->ev && !ft_is_rl(r) && ft_dataset_format(r->ev) == FT_DATA_PREFERENCE)
        fprintf(f, "\"likelihood_accuracy\": %.4f, \"reward_accuracy\": %.4f, \"reward_margin\": %.6f", e1->lik_acc, e1->rew_acc,
                e1->rew_margin);
    if (r->ev && !ft_is_rl(r) && ft_dataset_format(r->ev) != FT_DATA_PREFERENCE) {
        fprintf(f, "\"eval_loss\": %.6f, \"eval_perplexity\": %.4f", e1->loss, exp(e1->loss));
        if (e1->gen.n) fprintf(f, ", \"exact_match\": %.4f, \"contains\": %.4f, \"n_gen\": %lld", e1->gen.exact_rate,
                               e1->gen.contains_rate, (long long)e1->gen.n);
        if (!r->no_before) fprintf(f, ", \"before_eval_loss\": %.6f", e0->loss);
        if (!r->no_before && e0->gen.n) fprintf(f, ", \"before_exact_match\": %.4f", e0->gen.exact_rate);
        if (r->general_mc) fprintf(f, ", \"general_acc\": %.4f, \"general_acc_norm\": %.4f", e1->mc.acc, e1->mc.acc_norm);
        if (r->general_mc && !r->no_before) fprintf(f, ", \"before_general_acc\": %.4f, \"before_general_acc_norm\": %.4f", e0->mc.acc, e0->mc.acc_norm);
    }
    if (r->c->task.n) fprintf(f, "%s\"tasks\": [", r->ev ? ", " : "");
    for (i = 0; i < r->c->task.n; i++) {
        if (!r->tev[i]) continue;
        fprintf(f, "%s{\"eval\": \"%s\", \"eval_loss\": %.6f, \"exact_match\": %.4f", sep, strrchr(r->c->task.v[i], ':') + 1,
                r->t1[i].loss, r->t1[i].gen.exact_rate);
        if (!r->no_before) fprintf(f, ", \"before_eval_loss\": %.6f, \"before_exact_match\": %.4f", r->t0[i].loss,
                                   r->t0[i].gen.exact_rate);
        fprintf(f, "}");
        sep = ", ";
    }
    fprintf(f, "%s}\n", r->c->task.n ? "]" : "");
    fclose(f);
}

static int ft_train_after(ft_run *r) {
    int i;
    if (r->ev && ft_evaluate(r, r->ev, 1, &r->e1)) return 1;
    if (r->no_before) memset(&r->e0, 0, sizeof r->e0);      /* "before" belongs to the first part of the run */
    if (r->ev) ft_table(r);
    for (i = 0; i < r->c->task.n; i++) if (r->tev[i] && ft_evaluate(r, r->tev[i], 0, &r->t1[i])) return 1;
    if (r->c->task.n) ft_task_table(r);
    if (r->ev || r->c->task.n) ft_eval_json(r);
    return 0;
}

static int ft_cmd_train(ft_cli *c) {
    ft_run r;
    int rc;
    memset(&r, 0, sizeof r);
    r.c = c;
    r.def = ft_objective_get((ft_objective)c->objective);
    rc = ft_train_setup(&r);
    if (!rc) rc = ft_train_before(&r);
    if (!rc) rc = ft_train_run(&r);
    if (!rc && ft_rank() == 0) rc = ft_train_save(&r);
    if (!rc && ft_rank() == 0) rc = ft_train_after(&r);
    ft_run_free(&r);
    return rc;
}

/* ==== ft eval ==================================================================================== */

static void ft_print_item(void *user, int64_t i, const char *gen, const char *ref) {
    (void)user;
    printf("%4lld %s  got: %s   want: %s\n", (long long)i, strcmp(gen, ref) == 0 ? "ok  " : "MISS", gen, ref);
}

/* --mc: every item's choices scored, acc and acc_norm */
static int ft_eval_mc_run(ft_cli *c, ft_ctx *ctx, ft_model *m) {
    ft_mc_set *s = NULL;
    ft_eval_mc_result res;
    int rc = 0;
    if (ft_mc_load(&s, c->mc) != FT_OK) return ft_fail(c);
    if (ft_eval_mc(ctx, m, s, 0, &res) != FT_OK) rc = ft_fail(c);          /* the model's context, as lm-eval */
    if (!rc) printf("%s: %lld items, acc %.4f, acc_norm %.4f (log-likelihood of each choice, as lm-evaluation-harness)\n", c->mc,
                    (long long)res.n, res.acc, res.acc_norm);
    ft_mc_free(s);
    return rc;
}

static int ft_eval_run(ft_cli *c, ft_ctx *ctx, ft_model *m) {
    ft_data_opts o = c->data_opts;
    ft_dataset *d = NULL;
    ft_eval_gen acc;
    double loss;
    int rc = 0;
    if (!c->data) return ft_eval_mc_run(c, ctx, m);
    o.max_len = c->train.seq_len;
    if (ft_dataset_load(&d, c->data, ft_model_tokenizer(m), ft_model_chat_template(m), &o) != FT_OK) return ft_fail(c);
    ft_report_cut(c->data, d, o.max_len);
    if (ft_eval_loss(ctx, m, d, c->train.batch, c->train.seq_len, &loss, NULL) != FT_OK) rc = ft_fail(c);
    if (!rc) printf("%s: %lld examples, loss %.4f, perplexity %.3f\n", c->data, (long long)ft_dataset_size(d), loss, exp(loss));
    if (!rc && ft_dataset_format(d) != FT_DATA_TEXT) {
        if (ft_eval_generate(ctx, m, d, c->train.rl.max_new, c->eval_gen, &acc, ft_print_item, NULL) != FT_OK) rc = ft_fail(c);
        if (!rc) printf("accuracy: exact match %lld/%lld (%.1f%%), contains %lld/%lld (%.1f%%)\n", (long long)acc.exact,
                        (long long)acc.n, 100 * acc.exact_rate, (long long)acc.contains, (long long)acc.n,
                        100 * acc.contains_rate);
    }
    ft_dataset_free(d);
    return rc;
}

static int ft_cmd_eval(ft_cli *c) {
    ft_model *m = NULL;
    ft_peft *p = NULL;
    ft_ctx *ctx = NULL;
    int rc;
    if (!c->model || (!c->data && !c->mc)) return ft_missing(c, "-m MODEL.gguf and --data FILE or --mc FILE");
    rc = ft_open_all(c, &m, &p, &ctx);
    if (!rc) rc = ft_eval_run(c, ctx, m);
    if (!rc && c->data && c->mc) rc = ft_eval_mc_run(c, ctx, m);
    ft_close_all(m, p, ctx);
    return rc;
}

/* ==== ft merge: one adapter into a whole model =================================================== */

static void ft_say_written(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f && fseek(f, 0, SEEK_END) == 0) fprintf(stderr, ", %.1f MiB", (double)ftell(f) / (1 << 20));
    if (f) fclose(f);
    fprintf(stderr, "\n");
}

static int ft_cmd_merge(ft_cli *c) {
    ft_model *m = NULL;
    ft_peft *p = NULL;
    ft_save_opts so = c->save;
    int rc;
    if (!c->model || !c->out) return ft_missing(c, "-m MODEL.gguf and -o OUT.gguf");
    so.keep_type = (int)c->save.type >= ft_enum_count(FT_ENUM_TYPE);     /* --type base */
    if (so.keep_type) so.type = ft_save_opts_default().type;
    rc = ft_open_all(c, &m, &p, NULL);
    if (!rc && ft_model_save_merged(m, c->out, &so) != FT_OK) rc = ft_fail(c);
    if (!rc) fprintf(stderr, "ft: wrote %s: %s", c->out, c->model);
    if (!rc && p) fprintf(stderr, " + %s (", c->adapter);
    if (!rc && p) ft_describe_adapter(p);
    if (!rc) fprintf(stderr, "%s, linear weights as %s", p ? ")" : "", ft_value(c, "type"));
    if (!rc) ft_say_written(c->out);
    ft_close_all(m, p, NULL);
    return rc;
}

/* ==== ft merge-models (and ft merge --method ...): several models or adapters into one =========== */

static void ft_merge_log(void *user, int level, const char *msg) {
    if (level > 0) fprintf(stderr, "ft: warning: %s\n", msg);
    else if (*(int *)user) printf("  %s\n", msg);
}

static int ft_cmd_merge_models(ft_cli *c) {
    ft_merge_input in[FT_LIST_MAX];
    char *paths[FT_LIST_MAX];
    ft_merge_opts o = c->merge;
    ft_merge_stats st;
    int i, n = c->input.n, rc = 0;
    if (!c->base || !c->out || !n) return ft_missing(c, "--base BASE.gguf, --input A.gguf[:W[:D]] (one or more) and -o OUT.gguf");
    for (i = 0; i < n; i++) {
        paths[i] = (char *)malloc(strlen(c->input.v[i]) + 1);
        ft_input_parse(c->input.v[i], paths[i], strlen(c->input.v[i]) + 1, &in[i].weight, &in[i].density);
        in[i].path = paths[i];
    }
    o.normalize = c->normalize ? 1 : -1;
    o.log = ft_merge_log;
    o.log_user = &c->verbose;
    if (ft_merge_models(c->out, c->base, in, n, &o, &st) != FT_OK) rc = ft_fail(c);
    if (!rc) printf("%s: %s of %d input%s over %s: %lld tensors merged, %lld copied, %.1f MiB\n", c->out, ft_value(c, "method"),
                    n, n == 1 ? "" : "s", c->base, (long long)st.merged, (long long)st.copied, (double)st.bytes / (1 << 20));
    for (i = 0; i < n; i++) free(paths[i]);
    return rc;
}

/* ==== ft export: an adapter in another format ==================================================== */

/* --format hf: the model, its adapter merged when there is one, as a Hugging Face directory */
static int ft_export_hf(ft_cli *c) {
    ft_model *m = NULL;
    ft_peft *p = NULL;
    ft_save_opts so = c->save;
    int rc;
    if (!c->model || !c->out) return ft_missing(c, "--format hf, -m MODEL and -o OUT_DIR");
    so.keep_type = (int)c->save.type >= ft_enum_count(FT_ENUM_TYPE);        /* --type base */
    rc = ft_open_all(c, &m, &p, NULL);
    if (!rc && ft_model_save_hf(m, c->out, &so) != FT_OK) rc = ft_fail(c);
    if (!rc) fprintf(stderr, "ft: wrote %s (a Hugging Face directory, weights %s) from %s%s%s\n", c->out, ft_value(c, "type"), c->model,
                     p ? " + " : "", p ? c->adapter : "");
    ft_close_all(m, p, NULL);
    return rc;
}

static int ft_cmd_export(ft_cli *c) {
    ft_model *m = NULL;
    ft_peft *p = NULL;
    ft_adapter_format f = (ft_adapter_format)c->format;
    const char *what;
    int rc;
    if (c->format == ft_enum_count(FT_ENUM_ADAPTER_FORMAT) + 1) return ft_export_hf(c);
    if (!c->model || !c->adapter || !c->out || c->format < 0)
        return ft_missing(c, "--format peft|gguf, -m MODEL.gguf, --adapter ADAPTER and -o OUT");
    if (c->format >= ft_enum_count(FT_ENUM_ADAPTER_FORMAT)) f = FT_FORMAT_AUTO;              /* gguf */
    rc = ft_open_all(c, &m, &p, NULL);
    if (!rc && f == FT_FORMAT_AUTO) f = ft_peft_can_save(p, FT_FORMAT_LLAMACPP) == FT_OK ? FT_FORMAT_LLAMACPP
                                                                                          : FT_FORMAT_FINETUNE;
    if (!rc && ft_peft_can_save(p, f) != FT_OK) rc = ft_fail(c);
    if (!rc && ft_peft_save(p, c->out, f, c->base_name) != FT_OK) rc = ft_fail(c);
    what = f == FT_FORMAT_PEFT ? "PEFT adapter_model.safetensors + adapter_config.json" :
           f == FT_FORMAT_LLAMACPP ? "llama.cpp LoRA GGUF" : "finetune.h adapter GGUF";
    if (!rc) fprintf(stderr, "ft: wrote %s (%s) from %s: ", c->out, what, c->adapter);
    if (!rc) ft_describe_adapter(p);
    if (!rc) fprintf(stderr, "\n");
    ft_close_all(m, p, NULL);
    return rc;
}

/* ==== ft convert: a model between GGUF and a Hugging Face directory ============================== */

/* OUT.gguf: every key and tensor as read (a directory: as llama.cpp's converter would write it);
   otherwise a Hugging Face directory (--type f32|f16|bf16, base: whichever loses nothing) */
static int ft_cmd_convert(ft_cli *c) {
    ft_gguf *g = NULL;
    ft_gguf_writer *w = NULL;
    size_t n = c->out ? strlen(c->out) : 0;
    int64_t i;
    int rc = 0, to_gguf = n > 5 && !strcmp(c->out + n - 5, ".gguf");
    if (!c->model || !c->out) return ft_missing(c, "-m IN (a GGUF file or a Hugging Face directory) and -o OUT (OUT.gguf or a directory)");
    if (ft_gguf_open(&g, c->model) != FT_OK) return ft_fail(c);
    if (!to_gguf && ft_gguf_save_hf(g, c->out, (int)c->save.type >= ft_enum_count(FT_ENUM_TYPE) ? FT_TYPE_COUNT : c->save.type) != FT_OK) rc = ft_fail(c);
    if (to_gguf && ft_gguf_writer_init(&w) != FT_OK) rc = ft_fail(c);
    for (i = 0; to_gguf && !rc && i < ft_gguf_n_kv(g); i++) if (ft_gguf_copy_kv(w, ft_gguf_kv_at(g, i)) != FT_OK) rc = ft_fail(c);
    for (i = 0; to_gguf && !rc && i < ft_gguf_n_tensors(g); i++) {
        const ft_gguf_tensor *t = ft_gguf_tensor_at(g, i);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(t->name.n < 250 ? t->name.n : 250), t->name.s);
        if (ft_gguf_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data) != FT_OK) rc = ft_fail(c);
    }
    if (to_gguf && !rc && ft_gguf_write(w, c->out) != FT_OK) rc = ft_fail(c);
    if (!rc) fprintf(stderr, "ft: wrote %s (%s) from %s\n", c->out, to_gguf ? "GGUF" : "a Hugging Face directory", c->model);
    ft_gguf_writer_free(w);
    ft_gguf_close(g);
    return rc;
}

/* ==== ft logits: raw f32 logits of every position ================================================ */

static int32_t *ft_ids_parse(const ft_cli *c, int64_t V, int64_t *n) {
    int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * (strlen(c->ids) + 1));
    const char *p = c->ids;
    char *e;
    *n = 0;
    while (*p) {
        long v = strtol(p, &e, 10);
        if (v >= V) {
            ft_err(c, "--ids: %ld is not a token id of the model (0..%lld)", v, (long long)V - 1);
            free(ids);
            return NULL;
        }
        ids[(*n)++] = (int32_t)v;
        p = *e ? e + 1 : e;
    }
    return ids;
}

static int ft_logits_write(const ft_cli *c, ft_ctx *ctx, ft_model *m, int32_t *ids, int64_t n) {
    int64_t i, V = ft_model_config_get(m)->n_vocab;
    ft_batch b;
    ft_tensor *y;
    FILE *f;
    memset(&b, 0, sizeof b);
    b.B = 1;
    b.T = n;
    b.ids = ids;
    ft_ctx_set_grad(ctx, 0);
    if (!(y = ft_model_forward(ctx, m, &b))) return ft_fail(c);
    if (ft_mkdirs_parent(c->out) != FT_OK) return ft_fail(c);
    f = fopen(c->out, "wb");
    if (!f || fwrite(y->data, sizeof(float), (size_t)(n * V), f) != (size_t)(n * V) || fclose(f) != 0)
        return ft_err(c, "%s: cannot write: %s", c->out, strerror(errno));
    printf("ids:");
    for (i = 0; i < n; i++) printf(" %d", ids[i]);
    printf("\nlogits: %lld x %lld f32 -> %s\n", (long long)n, (long long)V, c->out);
    return 0;
}

static int ft_cmd_logits(ft_cli *c) {
    ft_model *m = NULL;
    ft_peft *p = NULL;
    ft_ctx *ctx = NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    int rc;
    if (!c->model || !c->out || !c->prompt == !c->ids) return ft_missing(c, "-m MODEL.gguf, -o OUT and -p PROMPT or --ids LIST");
    rc = ft_open_all(c, &m, &p, &ctx);
    if (!rc) ids = c->ids ? ft_ids_parse(c, ft_model_config_get(m)->n_vocab, &n) : ft_prompt_ids(c, m, &n);
    if (!rc && !ids) rc = 1;
    if (!rc) rc = ft_logits_write(c, ctx, m, ids, n);
    free(ids);
    ft_close_all(m, p, ctx);
    return rc;
}

/* ==== ft quantize: linear weights as NF4, written back ========================================== */

static int ft_cmd_quantize(ft_cli *c) {
    ft_model_opts mo;
    ft_model *m;
    int64_t b0, b1, n;
    double t0;
    if (!c->model || !c->out) return ft_missing(c, "-m IN.gguf and -o OUT.gguf");
    if (ft_model_open(c, &m)) return 1;
    b0 = ft_model_linear_bytes(m, &n);
    ft_model_free(m);
    memset(&mo, 0, sizeof mo);
    mo.quantize = FT_TYPE_NF4;
    mo.quantize_output = c->output;
    t0 = ft_time_seconds();
    if (ft_model_load(&m, c->model, &mo) != FT_OK) return ft_fail(c);
    b1 = ft_model_linear_bytes(m, NULL);
    fprintf(stderr, "ft: %lld linear weights: %.4f -> %.4f bytes per weight (%.1f -> %.1f MiB), quantized in %.2f s\n",
            (long long)n, (double)b0 / n, (double)b1 / n, b0 / 1048576.0, b1 / 1048576.0, ft_time_seconds() - t0);
    if (ft_model_save_gguf(m, c->out) != FT_OK) {
        ft_model_free(m);
        return ft_fail(c);
    }
    fprintf(stderr, "ft: wrote %s\n", c->out);
    ft_model_free(m);
    return 0;
}

/* ==== ft synth: Self-Instruct / Evol-Instruct data from the model itself ======================== */

static void ft_synth_log(void *user, int level, const char *msg) {
    (void)user;
    fprintf(stderr, "%s%s\n", level ? "warning: " : "", msg);
}

static void ft_synth_report(const ft_cli *c, const ft_synth_stats *st) {
    int64_t rejected = 0;
    int k;
    for (k = 1; k < FT_SYNTH_REASON_COUNT; k++) rejected += st->rejected[k];
    printf("%s: %s\n", ft_value(c, "method"), c->out);
    printf("  %-22s %8lld\n", "already in the file", (long long)st->resumed);
    printf("  %-22s %8lld\n", "generated", (long long)st->generated);
    printf("  %-22s %8lld\n", "kept", (long long)st->kept);
    printf("  %-22s %8lld\n", "rejected", (long long)rejected);
    for (k = 1; k < FT_SYNTH_REASON_COUNT; k++)
        if (st->rejected[k]) printf("    %-20s %8lld\n", ft_synth_reason_name((ft_synth_reason)k), (long long)st->rejected[k]);
    for (k = 0; k < 6 && c->synth.method == FT_SYNTH_EVOL_INSTRUCT; k++)
        if (st->evol_ops[k]) printf("  kept by %-14s %8lld\n", ft_synth_evol_op_name(k), (long long)st->evol_ops[k]);
    printf("  %-22s %8lld\n", "generate calls", (long long)st->calls);
    printf("  %-22s %8.1f s\n", "time", st->seconds);
    if (st->stopped) fprintf(stderr, "ft synth: stopped after %lld proposals in %lld generate calls with %lld of %lld examples; "
                             "run it again to continue (the file is resumed)\n", (long long)st->generated, (long long)st->calls,
                             (long long)(st->resumed + st->kept), (long long)c->synth.n);
}

static int ft_cmd_synth(ft_cli *c) {
    ft_model *m = NULL;
    ft_ctx *ctx = NULL;
    ft_synth_opts o = c->synth;
    ft_synth_stats st;
    ft_result r = FT_OK;
    int rc;
    if (!c->model || c->synth_method < 0 || !c->seed_tasks || !c->out || o.n < 1)
        return ft_missing(c, "--method NAME, -m MODEL.gguf, --seed-tasks SEEDS.jsonl, -n N and -o OUT.jsonl");
    o.log = ft_synth_log;
    rc = ft_open_all(c, &m, NULL, &ctx);
    if (!rc && o.method == FT_SYNTH_SELF_INSTRUCT) r = ft_synth_self_instruct(ctx, m, c->seed_tasks, c->out, &o, &st);
    if (!rc && o.method == FT_SYNTH_EVOL_INSTRUCT) r = ft_synth_evol_instruct(ctx, m, c->seed_tasks, c->out, &o, &st);
    if (!rc && r != FT_OK) rc = ft_fail(c);
    if (!rc) ft_synth_report(c, &st);
    ft_close_all(m, NULL, ctx);
    return rc;
}

/* ==== ft sweep: a grid or random search, each trial a short `ft train` in DIR/trial_NNN ========== */

#define FT_SWEEP_VALS 32
typedef struct ft_key { const ft_opt *o; char *spec; const char *key; char *val[FT_SWEEP_VALS]; int n, range; } ft_key;
typedef struct ft_trial { ft_json_doc *doc; double loss; } ft_trial;
typedef struct ft_sweep {
    ft_cli *c;
    ft_key k[8];
    int nk, n_trials, done, failed, skipped;
    char **base;                        /* the trials' options: sweep's without --grid, --random, --out */
    int nbase;
    ft_rng rng;
    ft_trial *rows;                       /* results.jsonl: the last line of each "params" */
    int nrows;
} ft_sweep;

static const char *ft_self = "ft";       /* the binary the trials run (main's argv[0]) */

static const char *ft_sweep_path(const ft_sweep *s, const char *name) {
    static char path[2][2048];
    static int k;
    k = !k;
    snprintf(path[k], sizeof path[k], "%s/%s", s->c->out, name);
    return path[k];
}

static const char *ft_jstr(const ft_json_doc *d, const char *key) {
    const ft_json *v = d ? ft_json_get(ft_json_root(d), key) : NULL;
    return v && v->kind == FT_JSON_STRING ? v->s : NULL;
}

static double ft_jnum(const ft_json_doc *d, const char *key) {
    const ft_json *v = d ? ft_json_get(ft_json_root(d), key) : NULL;
    return v && v->kind == FT_JSON_NUMBER ? v->num : NAN;
}

static ft_json_doc *ft_json_text(const char *text, size_t len, const char *name) {
    ft_json_doc *d;
    return ft_json_parse(&d, text, len, name, 1) == FT_OK ? d : NULL;
}

static ft_json_doc *ft_json_file(const char *path) {
    size_t len;
    char *text = ft_read_file(path, &len);
    ft_json_doc *d = text ? ft_json_text(text, len, path) : NULL;
    free(text);
    return d;
}

static int ft_is_json_number(const char *v) {
    ft_json_doc *d = ft_json_text(v, strlen(v), "value");
    int number = d && ft_json_root(d)->kind == FT_JSON_NUMBER;
    ft_json_free(d);
    return number;
}

static void ft_json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

/* --- the keys and the base --- */

static int ft_sweep_value_ok(const ft_sweep *s, const ft_key *k, const char *v) {
    char arg[1100], *argv[1];
    ft_cli t;
    int ok;
    snprintf(arg, sizeof arg, "--%s=%s", k->key, v);
    argv[0] = arg;
    ok = ft_cli_parse(&t, s->c->name, FT_C_TRAIN, 1, argv);
    ft_cli_free(&t);
    return ok;
}

/* --grid KEY=V1,V2,...: values split at ',' (at '/' where they hold commas); a lone LO..HI is a range */
static int ft_sweep_key(ft_sweep *s, const char *spec) {
    ft_key *k = &s->k[s->nk++];
    char *p, lo[64], *dots;
    int i;
    k->spec = strdup(spec);
    p = strchr(k->spec, '=');
    *p++ = 0;
    k->key = k->spec;
    k->o = ft_opt_find(k->key, 0, FT_C_TRAIN);
    for (i = 0; i < s->nk - 1; i++) if (!strcmp(s->k[i].key, k->key)) return ft_err(s->c, "--grid %s given twice", k->key);
    for (; p && k->n < FT_SWEEP_VALS; k->n++) {
        k->val[k->n] = p;
        p = strchr(p, k->o->commas ? '/' : ',');
        if (p) *p++ = 0;
    }
    if (p) return ft_err(s->c, "--grid %s: at most %d values", k->key, FT_SWEEP_VALS);
    dots = strstr(k->val[0], "..");
    k->range = k->n == 1 && dots;
    for (i = 0; i < k->n && !k->range; i++) if (!ft_sweep_value_ok(s, k, k->val[i])) return 1;
    if (!k->range) return 0;
    snprintf(lo, sizeof lo, "%.*s", (int)(dots - k->val[0]), k->val[0]);
    if (!s->c->random || !(strtod(lo, NULL) > 0) || !(strtod(dots + 2, NULL) > strtod(lo, NULL)))
        return ft_err(s->c, "--grid %s=%s: a range LO..HI (0 < LO < HI) needs --random", k->key, k->val[0]);
    return !ft_sweep_value_ok(s, k, lo) || !ft_sweep_value_ok(s, k, dots + 2);
}

static int ft_sweep_has(const ft_sweep *s, const char *key) {
    int k;
    for (k = 0; k < s->nk; k++) if (!strcmp(s->k[k].key, key)) return 1;
    return 0;
}

/* the trials' base: sweep's arguments without its own options (--grid, --random) and --out */
static void ft_sweep_base(ft_sweep *s) {
    ft_cli *c = s->c;
    int i = 0;
    s->base = (char **)malloc(sizeof(char *) * (size_t)(c->argc + 1));
    while (i < c->argc) {
        int start = i;
        const ft_opt *o;
        const char *v;
        ft_arg_next(c, c->argc, c->argv, &i, &o, &v);
        if (!(o->cmds & FT_C_TRAIN) || o->at == offsetof(ft_cli, out)) continue;
        while (start < i) s->base[s->nbase++] = c->argv[start++];
    }
}

/* --- one trial --- */

static const char *ft_sweep_draw(ft_sweep *s, const ft_key *k, char *buf, size_t cap) {
    const char *dots = strstr(k->val[0], "..");
    double lo = strtod(k->val[0], NULL), hi = strtod(dots + 2, NULL);
    double x = exp(log(lo) + ft_rng_uniform(&s->rng) * (log(hi) - log(lo)));
    int whole = strcspn(k->val[0], ".eE") == (size_t)(dots - k->val[0]) && !strpbrk(dots + 2, ".eE");
    if (whole) snprintf(buf, cap, "%.0f", x);               /* rank=4..64: whole numbers */
    else snprintf(buf, cap, "%.3g", x);
    return buf;
}

/* trial t's values: a random draw, or the grid's t-th combination (the last key varies fastest) */
static void ft_sweep_values(ft_sweep *s, int t, const char **vals, char rnd[][32]) {
    int k;
    for (k = s->nk - 1; k >= 0; k--) {
        const ft_key *key = &s->k[k];
        int q = t % key->n;
        if (s->c->random > 0 && key->range) vals[k] = ft_sweep_draw(s, key, rnd[k], 32);
        if (s->c->random > 0 && key->range) continue;
        if (s->c->random > 0) q = (int)(ft_rng_uniform(&s->rng) * (float)key->n) % key->n;
        t /= key->n;
        vals[k] = key->val[q];
    }
}

/* `ft train` with the base, --out TDIR, --eval-before 0 and the values, its output in TDIR/train.log;
   the exit status (-1: it could not start) */
static int ft_sweep_spawn(const ft_sweep *s, const char *tdir, const char **vals) {
    char **av = (char **)malloc(sizeof(char *) * (size_t)(s->nbase + s->nk + 8)), arg[8][1100], log[2200];
    int n = 0, i, status;
    pid_t pid;
    av[n++] = (char *)ft_self;
    av[n++] = (char *)"train";
    for (i = 0; i < s->nbase; i++) av[n++] = s->base[i];
    av[n++] = (char *)"--out";
    av[n++] = (char *)tdir;
    av[n++] = (char *)"--eval-before=0";
    for (i = 0; i < s->nk; i++) snprintf(arg[i], sizeof arg[i], "--%s=%s", s->k[i].key, vals[i]);
    for (i = 0; i < s->nk; i++) av[n++] = arg[i];
    av[n] = NULL;
    snprintf(log, sizeof log, "%s/train.log", tdir);
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0 && (dup2(fd, 1) < 0 || dup2(fd, 2) < 0 || close(fd) < 0)) _exit(127);
        execv(ft_self, av);
        fprintf(stderr, "ft sweep: cannot run %s: %s\n", ft_self, strerror(errno));
        _exit(127);
    }
    free(av);
    if (pid < 0) return -1;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* the last line of a file (not blank), without its newline */
static void ft_last_line(const char *path, char *out, size_t cap) {
    FILE *f = fopen(path, "r");
    char line[4096];
    out[0] = 0;
    while (f && fgets(line, sizeof line, f))
        if (line[0] != '\n') snprintf(out, cap, "%.*s", (int)strcspn(line, "\r\n"), line);
    if (f) fclose(f);
}

static void ft_sweep_ok(ft_sweep *s, FILE *f, const char *tdir, const ft_json_doc *ev) {
    char path[2200], last[4096];
    double loss = ft_jnum(ev, "eval_loss"), em = ft_jnum(ev, "exact_match"), tl;
    ft_json_doc *m;
    snprintf(path, sizeof path, "%s/metrics.jsonl", tdir);
    ft_last_line(path, last, sizeof last);
    m = ft_json_text(last, strlen(last), path);
    tl = ft_jnum(m, "loss");
    ft_json_free(m);
    fprintf(f, ", \"status\": \"ok\", \"eval_loss\": %.6f, \"eval_perplexity\": %.4f", loss, exp(loss));
    if (em == em) fprintf(f, ", \"exact_match\": %.4f, \"contains\": %.4f, \"n_gen\": %.0f", em, ft_jnum(ev, "contains"),
                          ft_jnum(ev, "n_gen"));
    if (tl == tl) fprintf(f, ", \"train_loss\": %.6f", tl);
    fprintf(stderr, "eval loss %.4f", loss);
    if (em == em) fprintf(stderr, ", exact match %.1f%%", 100 * em);
    s->done++;
}

/* a failed trial is recorded with the last line of its log, which says why */
static void ft_sweep_failed(ft_sweep *s, FILE *f, const char *tdir, int rc) {
    char path[2200], last[1024];
    snprintf(path, sizeof path, "%s/train.log", tdir);
    ft_last_line(path, last, sizeof last);
    fprintf(f, ", \"status\": \"failed\", \"exit\": %d, \"error\": ", rc);
    ft_json_str(f, last);
    fprintf(stderr, "FAILED (exit %d: %s; see %s)", rc, last, path);
    s->failed++;
}

/* the trial's line of results.jsonl */
static int ft_sweep_record(ft_sweep *s, int t, const char *tdir, const char *params, const char **vals, int rc, double secs) {
    char path[2200];
    ft_json_doc *ev = NULL;
    FILE *f;
    int k;
    snprintf(path, sizeof path, "%s/eval.json", tdir);
    if (rc == 0) ev = ft_json_file(path);
    if (!(f = fopen(ft_sweep_path(s, "results.jsonl"), "a")))
        return ft_err(s->c, "%s: cannot write: %s", ft_sweep_path(s, "results.jsonl"), strerror(errno));
    fprintf(f, "{\"trial\": %d, \"params\": ", t);
    ft_json_str(f, params);
    for (k = 0; k < s->nk; k++) {
        fprintf(f, ", ");
        ft_json_str(f, s->k[k].key);
        fprintf(f, ": ");
        if (ft_is_json_number(vals[k])) fputs(vals[k], f);
        else ft_json_str(f, vals[k]);
    }
    if (ft_jnum(ev, "eval_loss") == ft_jnum(ev, "eval_loss")) ft_sweep_ok(s, f, tdir, ev);
    else ft_sweep_failed(s, f, tdir, rc);
    fprintf(f, ", \"seconds\": %.1f}\n", secs);
    ft_json_free(ev);
    if (fclose(f) != 0) return ft_err(s->c, "%s: cannot write: %s", ft_sweep_path(s, "results.jsonl"), strerror(errno));
    return 0;
}

/* --- results.jsonl, results.md, sweep.svg --- */

static void ft_sweep_rows_free(ft_sweep *s) {
    int i;
    for (i = 0; i < s->nrows; i++) ft_json_free(s->rows[i].doc);
    free(s->rows);
    s->rows = NULL;
    s->nrows = 0;
}

static void ft_sweep_read(ft_sweep *s) {
    const char *path = ft_sweep_path(s, "results.jsonl");
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    ft_sweep_rows_free(s);
    while (f && (len = getline(&line, &cap, f)) > 0) {
        ft_json_doc *d = ft_json_text(line, (size_t)len, path);
        const char *params = ft_jstr(d, "params"), *status = ft_jstr(d, "status");
        int i;
        if (!params) ft_json_free(d);
        if (!params) continue;
        for (i = 0; i < s->nrows && strcmp(ft_jstr(s->rows[i].doc, "params"), params); i++) {}
        if (i == s->nrows) s->rows = (ft_trial *)realloc(s->rows, (size_t)(++s->nrows) * sizeof *s->rows);
        else ft_json_free(s->rows[i].doc);
        s->rows[i].doc = d;
        s->rows[i].loss = status && !strcmp(status, "ok") ? ft_jnum(d, "eval_loss") : NAN;
        if (!isfinite(s->rows[i].loss)) s->rows[i].loss = INFINITY;
    }
    free(line);
    if (f) fclose(f);
}

static int ft_row_cmp(const void *a, const void *b) {
    double x = ((const ft_trial *)a)->loss, y = ((const ft_trial *)b)->loss;
    return x < y ? -1 : x > y ? 1 : 0;
}

/* key k's value in a results line as text: a string as it is, a number as %g; "-" when absent */
static const char *ft_jval(const ft_sweep *s, const ft_json_doc *d, int k, char *buf, size_t cap) {
    const ft_json *v = ft_json_get(ft_json_root(d), s->k[k].key);
    if (v && v->kind == FT_JSON_STRING) return v->s;
    if (v && v->kind == FT_JSON_NUMBER) snprintf(buf, cap, "%g", v->num);
    return v && v->kind == FT_JSON_NUMBER ? buf : "-";
}

static void ft_sweep_md(const ft_sweep *s) {
    FILE *f = fopen(ft_sweep_path(s, "results.md"), "w");
    char v[256];
    int i, k;
    if (!f) return;
    fprintf(f, "| trial |");
    for (k = 0; k < s->nk; k++) fprintf(f, " %s |", s->k[k].key);
    fprintf(f, " eval loss | perplexity | exact match | train loss | seconds |\n|---:|");
    for (k = 0; k < s->nk; k++) fprintf(f, "---|");
    fprintf(f, "---:|---:|---:|---:|---:|\n");
    for (i = 0; i < s->nrows; i++) {
        const ft_trial *r = &s->rows[i];
        double em = ft_jnum(r->doc, "exact_match");
        fprintf(f, "| %.0f |", ft_jnum(r->doc, "trial"));
        for (k = 0; k < s->nk; k++) fprintf(f, " %s |", ft_jval(s, r->doc, k, v, sizeof v));
        if (!isfinite(r->loss)) fprintf(f, " failed | | | | %.0f |\n", ft_jnum(r->doc, "seconds"));
        if (!isfinite(r->loss)) continue;
        fprintf(f, " %.4f | %.3f | ", r->loss, exp(r->loss));
        if (em == em) fprintf(f, "%.1f%% (%g) |", 100 * em, ft_jnum(r->doc, "n_gen"));
        else fprintf(f, "- |");
        fprintf(f, " %.4f | %.0f |\n", ft_jnum(r->doc, "train_loss"), ft_jnum(r->doc, "seconds"));
    }
    fclose(f);
}

/* key k's x axis: 2 log10 (lr, or a positive key spanning 30x), 1 its value, 0 a word's index */
static int ft_sweep_axis(const ft_sweep *s, int k, char *xlabel, size_t cap) {
    double lo = INFINITY, hi = -INFINITY;
    int j, numeric = 1, logx;
    size_t len;
    for (j = 0; j < s->nrows; j++) {
        const ft_json *v = ft_json_get(ft_json_root(s->rows[j].doc), s->k[k].key);
        if (v && v->kind != FT_JSON_NUMBER) numeric = 0;
        if (v && v->kind == FT_JSON_NUMBER) lo = fmin(lo, v->num);
        if (v && v->kind == FT_JSON_NUMBER) hi = fmax(hi, v->num);
    }
    logx = numeric && lo > 0 && (!strcmp(s->k[k].key, "lr") || hi >= 30 * lo);
    if (numeric) snprintf(xlabel, cap, logx ? "log10(%s)" : "%s", s->k[k].key);
    if (numeric) return logx ? 2 : 1;
    len = (size_t)snprintf(xlabel, cap, "%s:", s->k[k].key);
    for (j = 0; j < s->k[k].n && len + 40 < cap; j++)
        len += (size_t)snprintf(xlabel + len, cap - len, " %d=%s", j, s->k[k].val[j]);
    return 0;
}

/* the series of row j on key k's panel: the other keys' values (16 series at most; -1 beyond) */
static int ft_sweep_series(const ft_sweep *s, int k, int j, ft_plot_series *ser, char names[][256], int *ns, double *xs) {
    char w[128], name[256] = "", *e;
    int kk, i;
    for (kk = 0; kk < s->nk; kk++) {
        size_t len = strlen(name);
        const char *v = ft_jval(s, s->rows[j].doc, kk, w, sizeof w);
        if (kk != k) snprintf(name + len, sizeof name - len, "%s%s=%s", len ? " " : "", s->k[kk].key, v);
    }
    if (!name[0]) snprintf(name, sizeof name, "eval loss");
    for (e = name; *e; e++) if (*e == '<' || *e == '&' || *e == '>') *e = '_';
    for (i = 0; i < *ns && strcmp(names[i], name); i++) {}
    if (i == 16) return -1;
    if (i < *ns) return i;
    snprintf(names[i], 256, "%s", name);
    ser[i].name = names[i];
    ser[i].x = xs + 2 * (size_t)s->nrows * (size_t)i;
    ser[i].y = ser[i].x + s->nrows;
    ser[i].n = 0;
    (*ns)++;
    return i;
}

/* row j's point on key k's panel, into its series in x order */
static void ft_sweep_point(const ft_sweep *s, int k, int j, int axis, ft_plot_series *ser, char names[][256], int *ns,
                           double *xs) {
    const ft_json *v = ft_json_get(ft_json_root(s->rows[j].doc), s->k[k].key);
    double x = v && v->kind == FT_JSON_NUMBER ? v->num : 0, *sx, *sy;
    int i, q = 0;
    int64_t p;
    if (!isfinite(s->rows[j].loss) || !v) return;
    while (!axis && q < s->k[k].n && v->kind == FT_JSON_STRING && strcmp(s->k[k].val[q], v->s)) q++;
    x = axis == 2 ? log10(x) : axis == 1 ? x : q;
    if ((i = ft_sweep_series(s, k, j, ser, names, ns, xs)) < 0) return;
    sx = (double *)ser[i].x;
    sy = (double *)ser[i].y;
    for (p = ser[i].n; p > 0 && sx[p - 1] > x; p--) {
        sx[p] = sx[p - 1];
        sy[p] = sy[p - 1];
    }
    sx[p] = x;
    sy[p] = s->rows[j].loss;
    ser[i].n++;
}

/* key k's panel: DIR/sweep_KEY.svg, copied into out; 1 when drawn */
static int ft_sweep_panel(const ft_sweep *s, int k, FILE *out, int np) {
    ft_plot_series ser[16];
    char names[16][256], xlabel[512], title[300], panel[2200], line[4096];
    double *xs = (double *)calloc(32 * (size_t)s->nrows + 1, sizeof(double));
    int ns = 0, j, axis = ft_sweep_axis(s, k, xlabel, sizeof xlabel), drawn;
    FILE *pf;
    for (j = 0; j < s->nrows; j++) ft_sweep_point(s, k, j, axis, ser, names, &ns, xs);
    snprintf(panel, sizeof panel, "%s/sweep_%s.svg", s->c->out, s->k[k].key);
    snprintf(title, sizeof title, "eval loss against %s", s->k[k].key);
    drawn = ft_svg_plot(panel, title, xlabel, "eval loss", ser, ns) == FT_OK;
    pf = drawn ? fopen(panel, "r") : NULL;
    if (drawn) fprintf(out, "<g transform=\"translate(0 %d)\">\n", 420 * np);
    while (pf && fgets(line, sizeof line, pf)) fputs(line, out);
    if (pf) fclose(pf);
    if (drawn) fprintf(out, "</g>\n");
    free(xs);
    return drawn;
}

/* results.md (sorted by eval loss) and sweep.svg (a panel per key) from results.jsonl */
static void ft_sweep_report(ft_sweep *s) {
    FILE *out;
    int k, np = 0;
    ft_sweep_read(s);
    qsort(s->rows, (size_t)s->nrows, sizeof *s->rows, ft_row_cmp);
    ft_sweep_md(s);
    if (!(out = fopen(ft_sweep_path(s, "sweep.svg"), "w"))) return;
    fprintf(out, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"%d\">\n", 420 * s->nk);
    for (k = 0; k < s->nk; k++) np += ft_sweep_panel(s, k, out, np);
    fprintf(out, "</svg>\n");
    fclose(out);
}

/* --- the sweep --- */

static int ft_sweep_trial(ft_sweep *s, int t) {
    const char *vals[8];
    char rnd[8][32], params[1024] = "", tdir[2100], path[2200];
    size_t len = 0;
    int i, k, rc;
    double t0, secs;
    ft_sweep_values(s, t, vals, rnd);
    for (k = 0; k < s->nk && len < sizeof params; k++)
        len += (size_t)snprintf(params + len, sizeof params - len, "%s%s=%s", k ? " " : "", s->k[k].key, vals[k]);
    ft_sweep_read(s);                          /* again each time: a repeated random draw runs once */
    for (i = 0; i < s->nrows; i++) {
        const char *status = ft_jstr(s->rows[i].doc, "status");
        if (strcmp(ft_jstr(s->rows[i].doc, "params"), params) || !status || strcmp(status, "ok")) continue;
        fprintf(stderr, "ft sweep: trial %d/%d %s: done before, skipped\n", t + 1, s->n_trials, params);
        s->skipped++;
        return 0;
    }
    snprintf(tdir, sizeof tdir, "%s/trial_%03d", s->c->out, t);
    if (ft_mkdirs(tdir) != FT_OK) return ft_fail(s->c);
    snprintf(path, sizeof path, "%s/eval.json", tdir);
    remove(path);
    fprintf(stderr, "ft sweep: trial %d/%d %s ... ", t + 1, s->n_trials, params);
    t0 = ft_time_seconds();
    rc = ft_sweep_spawn(s, tdir, vals);
    secs = ft_time_seconds() - t0;
    if (ft_sweep_record(s, t, tdir, params, vals, rc, secs)) return 1;
    fprintf(stderr, " (%.0f s)\n", secs);
    ft_sweep_report(s);
    return 0;
}

static int ft_sweep_setup(ft_sweep *s) {
    ft_cli *c = s->c;
    int k;
    static char exe[1024];
    ssize_t len;
    if (!c->model || !c->out || !c->grid.n) return ft_missing(c, "-m MODEL.gguf, --out DIR and --grid KEY=V1,V2,...");
    for (k = 0; k < c->grid.n; k++) if (ft_sweep_key(s, c->grid.v[k])) return 2;
    if (!c->data && !c->task.n && !ft_sweep_has(s, "data") && !ft_sweep_has(s, "task")) return ft_missing(c, "--data FILE");
    if (!c->eval && !(c->eval_split > 0) && !ft_sweep_has(s, "eval"))
        return ft_missing(c, "--eval FILE (or --eval-split F): the trials are compared on eval loss");
    ft_sweep_base(s);
    len = strchr(ft_self, '/') && access(ft_self, X_OK) == 0 ? 0 : readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) exe[len] = 0;
    if (len > 0) ft_self = exe;
    if (ft_mkdirs(c->out) != FT_OK) return ft_fail(c);
    s->n_trials = 1;
    for (k = 0; k < s->nk; k++) s->n_trials *= s->k[k].n;
    if (c->random > 0) s->n_trials = (int)c->random;
    ft_rng_seed(&s->rng, c->train.seed);
    return 0;
}

static int ft_cmd_sweep(ft_cli *c) {
    ft_sweep s;
    char line[2048];
    FILE *f;
    int t, k, rc;
    memset(&s, 0, sizeof s);
    s.c = c;
    rc = ft_sweep_setup(&s);
    if (!rc) fprintf(stderr, "ft sweep: %d trials (%s) in %s\n", s.n_trials, c->random > 0 ? "random" : "grid", c->out);
    for (t = 0; !rc && t < s.n_trials; t++) rc = ft_sweep_trial(&s, t);
    if (!rc) ft_sweep_report(&s);
    if (!rc) fprintf(stderr, "ft sweep: %d trials run, %d failed, %d skipped; wrote %s/{results.jsonl,results.md,sweep.svg}\n",
                     s.done + s.failed, s.failed, s.skipped, c->out);
    f = rc ? NULL : fopen(ft_sweep_path(&s, "results.md"), "r");
    while (f && fgets(line, sizeof line, f)) fputs(line, stdout);
    if (f) fclose(f);
    if (!rc && s.failed && !s.done && !s.skipped) rc = 1;      /* a failed trial is recorded, not fatal */
    ft_sweep_rows_free(&s);
    for (k = 0; k < s.nk; k++) free(s.k[k].spec);
    free(s.base);
    return rc;
}

/* ==== main ======================================================================================= */

static const ft_cmd ft_cmds[] = {
    {"info", FT_C_INFO, ft_cmd_info, "MODEL.gguf [--all]", "metadata, tensor types, parameter count"},
    {"generate", FT_C_GENERATE, ft_cmd_generate, "-m MODEL.gguf -p PROMPT [options]",
     "sample a continuation (greedy at --temp 0)"},
    {"train", FT_C_TRAIN, ft_cmd_train, "-m MODEL.gguf --data TRAIN.jsonl --out DIR [options]",
     "fine-tune with any PEFT method and objective (SFT, CPT, DPO & co, KTO, RM, GRPO, PPO)"},
    {"eval", FT_C_EVAL, ft_cmd_eval, "-m MODEL.gguf [--lora ADAPTER] (--data EVAL.jsonl | --mc MC.jsonl) [options]",
     "loss, perplexity and exact match of greedy answers; multiple choice as lm-evaluation-harness (acc, acc_norm)"},
    {"merge", FT_C_MERGE, ft_cmd_merge, "-m MODEL.gguf [--adapter ADAPTER] [--type TYPE] [--embeddings] -o OUT.gguf",
     "a whole model with the adapter merged into its linear weights (F16 by default)"},
    {"merge-models", FT_C_MERGE_MODELS, ft_cmd_merge_models,
     "--base BASE.gguf --method NAME --input A.gguf[:W[:D]] ... -o OUT.gguf",
     "several models or adapters merged over their base (also: ft merge --method ...)"},
    {"convert", FT_C_CONVERT, ft_cmd_convert, "-m IN.gguf|IN_DIR -o OUT.gguf|OUT_DIR [--type f32|f16|bf16|base]",
     "a model between GGUF and a Hugging Face directory (config.json, safetensors, tokenizer.json)"},
    {"export", FT_C_EXPORT, ft_cmd_export, "--format peft|gguf|hf -m MODEL.gguf --adapter ADAPTER -o OUT_DIR|OUT.gguf",
     "an adapter in another format (PEFT directory, llama.cpp LoRA GGUF or finetune.h's own); hf: merged, a Hugging Face model"},
    {"logits", FT_C_LOGITS, ft_cmd_logits, "-m MODEL.gguf [--adapter ADAPTER] (-p PROMPT [--chat] | --ids 1,2,3) -o OUT.f32",
     "raw f32 logits (tokens x vocab, row-major) of every position; the ids go to stdout"},
    {"quantize", FT_C_QUANTIZE, ft_cmd_quantize, "--type nf4 -m IN.gguf -o OUT.gguf [--output]",
     "linear weights -> NF4 (QLoRA's, bitsandbytes' bytes); everything else copied"},
    {"synth", FT_C_SYNTH, ft_cmd_synth, "--method NAME -m MODEL.gguf --seed-tasks SEEDS.jsonl -n N -o OUT.jsonl [options]",
     "synthetic instruction data from the model itself; OUT.jsonl is resumed when it exists"},
    {"sweep", FT_C_SWEEP, ft_cmd_sweep,
     "-m MODEL.gguf --data TRAIN.jsonl --eval EVAL.jsonl --out DIR --grid KEY=V1,V2 ... [options]",
     "a short ft train per combination of the grid (or --random N draws)"},
};
#define FT_NCMDS ((int)(sizeof ft_cmds / sizeof ft_cmds[0]))

static int ft_usage(FILE *f, int rc) {
    int i;
    fprintf(f, "usage: ft COMMAND [options]        ft COMMAND --help: its options, their defaults and ranges\n");
    for (i = 0; i < FT_NCMDS; i++) fprintf(f, "  %-12s %s\n%17s%s\n", ft_cmds[i].name, ft_cmds[i].synopsis, "", ft_cmds[i].about);
    fprintf(f, "  ADAPTER: a llama.cpp LoRA GGUF (adapter.gguf), finetune.h's own adapter GGUF or a PEFT directory\n");
    fprintf(f, "  --config FILE: options as `name = value` lines (a run's DIR/config reads back)\n");
    return rc;
}

/* the command of argv[1]; ft merge with --base, --method or --input is merge-models */
static const ft_cmd *ft_cmd_find(const char *name, int argc, char **argv) {
    int i;
    for (i = 0; i < argc && !strcmp(name, "merge"); i++) {
        char flag[16];
        snprintf(flag, sizeof flag, "%.*s", (int)strcspn(argv[i], "="), argv[i]);
        if (!strcmp(flag, "--base") || !strcmp(flag, "--method") || !strcmp(flag, "--input")) name = "merge-models";
    }
    for (i = 0; i < FT_NCMDS; i++) if (!strcmp(ft_cmds[i].name, name)) return &ft_cmds[i];
    return NULL;
}

#ifndef FT_CLI_MAIN
#define FT_CLI_MAIN main                 /* tools/ft_mpi.c renames it and brings its own main */
#endif
int FT_CLI_MAIN(int argc, char **argv) {
    const ft_cmd *k;
    ft_cli c;
    int rc = 2;
    if (argc < 2) return ft_usage(stderr, 2);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) return ft_usage(stdout, 0);
    ft_self = argv[0];
    if (!(k = ft_cmd_find(argv[1], argc - 2, argv + 2))) {
        fprintf(stderr, "ft: unknown command '%s'\n", argv[1]);
        return ft_usage(stderr, 2);
    }
    if (ft_cli_parse(&c, k->name, k->bit, argc - 2, argv + 2)) rc = c.help ? ft_help(k, &c) : k->run(&c);
    ft_cli_free(&c);
    return rc;
}
