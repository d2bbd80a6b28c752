/* ft - the finetune.h command line: info, generate, train, eval, merge, export, logits, quantize, sweep (usage()
   lists every option). Every failure prints the library's message (file, offset or line) and
   exits non-zero. An ADAPTER is a llama.cpp LoRA GGUF, finetune.h's own adapter GGUF or a PEFT
   directory. */
#define _POSIX_C_SOURCE 200809L          /* clock_gettime: wall-clock progress and ETA */
#include "../finetune.h"               /* the implementation: build/finetune.o */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>                    /* ft sweep runs each trial as a child `ft train` */
#include <fcntl.h>
#include <errno.h>

static int usage(void) {
    fprintf(stderr,
        "usage: ft <command> [options]\n"
        "  info     MODEL.gguf [--all]                 metadata, tensor types, parameter count\n"
        "  generate -m MODEL.gguf -p PROMPT [-n N] [--temp T] [--top-k K] [--top-p P] [--seed S]\n"
        "           [--chat] [--lora ADAPTER] [--threads N]   sample a continuation (greedy when T = 0)\n"
        "  train    -m MODEL.gguf --data TRAIN.jsonl --out DIR\n"
        "           --method lora|qlora|dora|adapter|prefix|prompt|ia3|full [--rank R] [--alpha A] [--rslora]\n"
        "           [--bottleneck K] [--placement houlsby|pfeiffer] [--act relu|gelu|silu|tanh]\n"
        "           [--virtual-tokens P] [--prefix-hidden H] [--prompt-init random|vocab|text] [--prompt-text S]\n"
        "           [--freeze PATTERNS] (full: e.g. 'token_embd.*,blk.0.*')\n"
        "           --objective sft|cpt|dpo|ipo|hinge|robust|simpo|orpo|kto|rm|grpo|ppo [--beta B] [--gamma G]\n"
        "           [--label-smoothing E] [--desirable-weight W] [--undesirable-weight W] [--rm-center C]\n"
        "           [--eval EVAL.jsonl] [--steps N | --epochs E] [--lr X] [--batch B] [--grad-accum K]\n"
        "           [--seq-len T] [--rank R] [--alpha A] [--dropout P] [--targets all|attn|mlp|q_proj,v_proj,..]\n"
        "           [--schedule cosine|linear|constant] [--warmup W] [--max-grad-norm G] [--weight-decay D]\n"
        "           [--lora-plus RATIO] [--pack] [--seed S] [--threads N] [--config FILE] [--resume]\n"
        "           [--grad-checkpoint] (recompute each layer in backward: far less activation memory)\n"
        "           [--eval-split F] [--mix OTHER.jsonl:RATIO ...] (e.g. 0.1 of general text, against forgetting)\n"
        "           [--eval-general TEXT.jsonl] (its perplexity before and after: the forgetting check)\n"
        "           [--init-adapter ADAPTER] (fold an earlier stage in first: sft, then rm / dpo / ppo on top)\n"
        "           [--task FILE[:EVAL] ...] [--mix-temperature T] [--mix-cap K] several tasks mixed at rates\n"
        "           min(n_i, K)^(1/T) (FLAN / T5), each task's EVAL reported separately; [--eval-before 0]\n"
        "           grpo/ppo: --reward number,length:N,rm:ADAPTER,regex:PATTERN [--group G] [--prompts P]\n"
        "           [--iterations K] [--temperature T] [--top-p P] [--epsilon E] [--epsilon-high E] [--kl-beta B]\n"
        "           [--kl-coef C] [--kl-target K (adaptive kl-coef)] [--loss-type grpo|bnpo|dr_grpo|dapo] [--scale-rewards group|batch|none] [--max-new N]\n"
        "           [--quantize nf4] (the linear weights as NF4 at load: QLoRA's base; also for eval)\n"
        );
    fprintf(stderr,                                   /* two strings: C99 promises only 4095 characters each */
        "  eval     -m MODEL.gguf [--lora ADAPTER] --data EVAL.jsonl [--eval-gen N] [--max-new N] [--quantize nf4]\n"
        "  merge    -m MODEL.gguf [--adapter ADAPTER] [--type f16|f32|bf16|q8_0|q4_0|q4_1|base] [--embeddings]\n"
        "           -o OUT.gguf   a whole model with the adapter merged into its linear weights (default\n"
        "           f16; base: the base's own types; --embeddings: token_embd/output as --type too, else\n"
        "           unchanged); without --adapter it re-types the base\n"
        "  export   --format peft|gguf -m MODEL.gguf --adapter ADAPTER -o OUT_DIR|OUT.gguf [--base-name NAME]\n"
        "           an adapter in the other format (PEFT directory <-> llama.cpp LoRA GGUF; PEFT also holds\n"
        "           IA3, prompt and prefix tuning, which gguf writes as finetune.h's own adapter GGUF)\n"
        "  logits   -m MODEL.gguf [--adapter ADAPTER] (-p PROMPT [--chat] | --ids 1,2,3) -o OUT.f32 [--threads N]\n"
        "           raw f32 logits (tokens x vocab, row-major) of every position; the ids go to stdout\n"
        "  merge    --base BASE.gguf --method linear|task|ties|dare_linear|dare_ties --input A:W[:D] --input B:W[:D]\n"
        "           [--type f16|...] -o OUT.gguf   several models or adapters into one (ft merge-models --help)\n"
        "  quantize --type nf4 -m IN.gguf -o OUT.gguf [--output]   linear weights -> NF4 (QLoRA's, bitsandbytes'\n"
        "           bytes); --output: the untied head too; everything else copied\n"
        "  synth    --method self-instruct|evol-instruct -m MODEL.gguf --seed-tasks SEEDS.jsonl -n N -o OUT.jsonl\n"
        "           [--batch B] [--max-new T] [--max-new-inst T] [--temperature T] [--top-p P] [--seed S]\n"
        "           [--rouge 0.7] [--evol-rouge 0.9] [--few-shot K] [--min-words W] [--max-words W] [--threads N]\n"
        "           synthetic instruction data from the model itself; OUT.jsonl is resumed when it exists\n"
        "  sweep    -m MODEL.gguf --data TRAIN.jsonl --eval EVAL.jsonl --out DIR --grid lr=1e-4,3e-4 --grid rank=4,16\n"
        "           [--random N --seed S] [ft train options]   a trial per combination (ft sweep --help)\n"
        "  ADAPTER: a llama.cpp LoRA GGUF (adapter.gguf), finetune.h's own adapter GGUF or a PEFT directory\n");
    return 2;
}

static int fail(const char *what) {
    fprintf(stderr, "ft: %s: %s\n", what, ft_last_error());
    return 1;
}

/* ---- ft merge-models -------------------------------------------------------------------------
   (the integrator routes `ft merge --method ...` here) */
static const char *merge_models_usage =
    "usage: ft merge-models --base BASE.gguf --method linear|task|ties|dare_linear|dare_ties\n"
    "           --input A.gguf[:WEIGHT[:DENSITY]] --input B.gguf[:WEIGHT[:DENSITY]] ... -o OUT.gguf\n"
    "           [--normalize 0|1] [--type f32|f16|bf16|q8_0|q4_0|q4_1] [--seed S] [--rescale none|l1|density]\n"
    "           [--sign sum|count] [--lambda L] [--lora-deltas] [--verbose]\n"
    "  An input is a model GGUF of the base's architecture and shapes, or a LoRA adapter GGUF (merged into\n"
    "  the base first; --lora-deltas: merge the deltas s*B*A themselves). WEIGHT defaults to 1, DENSITY\n"
    "  (TIES, DARE: fraction kept) to 1. Defaults as mergekit: normalize on for linear and ties, DARE\n"
    "  rescales to the L1 norm. Merged 2-D weights are written as --type (f32), norms as f32.\n";

static void merge_log(void *user, int level, const char *msg) {
    int verbose = *(int *)user;
    if (level > 0) fprintf(stderr, "ft: warning: %s\n", msg);
    else if (verbose) printf("  %s\n", msg);
}

/* "PATH[:WEIGHT[:DENSITY]]": the numbers are taken from the end, so a path may hold ':' */
static int parse_merge_input(char *spec, ft_merge_input *in) {
    double v[2]; int nv = 0; char *colon, *end;
    in->path = spec; in->weight = 1; in->density = 0;
    while (nv < 2 && (colon = strrchr(spec, ':')) != NULL && colon[1]) {
        double x = strtod(colon + 1, &end);
        if (*end) break;
        v[nv++] = x; *colon = 0;
    }
    if (nv == 1) in->weight = v[0];
    if (nv == 2) { in->weight = v[1]; in->density = v[0]; }
    return spec[0] != 0 && in->density >= 0 && in->density <= 1;
}

static int cmd_merge_models(int argc, char **argv) {
    ft_merge_input in[64]; ft_merge_opts o; ft_merge_stats st; int n = 0, i, verbose = 0;
    const char *base = NULL, *out = NULL;
    memset(&o, 0, sizeof o);
#define NEXT() (i + 1 < argc ? argv[++i] : (fprintf(stderr, "ft merge-models: %s needs a value\n", argv[i]), (char *)NULL))
    for (i = 0; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--lora-deltas")) { o.lora_deltas = 1; continue; }
        if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) { verbose = 1; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(merge_models_usage, stdout); return 0; }
        if (!(v = NEXT())) return 2;
        if (!strcmp(a, "--base")) base = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--method")) {
            if (!ft_merge_method_parse(v, &o.method)) { fprintf(stderr, "ft merge-models: unknown method '%s'\n", v); return 2; }
        } else if (!strcmp(a, "--input")) {
            if (n == 64) { fprintf(stderr, "ft merge-models: at most 64 inputs\n"); return 2; }
            char spec[1024];
            snprintf(spec, sizeof spec, "%s", v);
            if (!parse_merge_input(argv[i], &in[n])) { fprintf(stderr, "ft merge-models: bad --input '%s' (PATH[:WEIGHT[:DENSITY]], density in [0, 1])\n", spec); return 2; }
            n++;
        } else if (!strcmp(a, "--normalize")) o.normalize = atoi(v) ? 1 : -1;
        else if (!strcmp(a, "--seed")) o.seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--lambda")) o.lambda = (float)atof(v);
        else if (!strcmp(a, "--sign")) {
            if (!strcmp(v, "sum")) o.sign = FT_MERGE_SIGN_SUM;
            else if (!strcmp(v, "count")) o.sign = FT_MERGE_SIGN_COUNT;
            else { fprintf(stderr, "ft merge-models: --sign sum|count\n"); return 2; }
        } else if (!strcmp(a, "--rescale")) {
            if (!strcmp(v, "none")) o.rescale = FT_MERGE_RESCALE_NONE;
            else if (!strcmp(v, "l1")) o.rescale = FT_MERGE_RESCALE_L1;
            else if (!strcmp(v, "density")) o.rescale = FT_MERGE_RESCALE_DENSITY;
            else { fprintf(stderr, "ft merge-models: --rescale none|l1|density\n"); return 2; }
        } else if (!strcmp(a, "--type")) {
            if (!strcmp(v, "f32")) o.type = FT_TYPE_F32;
            else if (!strcmp(v, "f16")) o.type = FT_TYPE_F16;
            else if (!strcmp(v, "bf16")) o.type = FT_TYPE_BF16;
            else if (!strcmp(v, "q8_0")) o.type = FT_TYPE_Q8_0;
            else if (!strcmp(v, "q4_0")) o.type = FT_TYPE_Q4_0;
            else if (!strcmp(v, "q4_1")) o.type = FT_TYPE_Q4_1;
            else { fprintf(stderr, "ft merge-models: --type f32|f16|bf16|q8_0|q4_0|q4_1\n"); return 2; }
        } else { fprintf(stderr, "ft merge-models: unknown option '%s'\n%s", a, merge_models_usage); return 2; }
    }
#undef NEXT
    if (!base || !out || n == 0) { fputs(merge_models_usage, stderr); return 2; }
    o.log = merge_log; o.log_user = &verbose;
    if (ft_merge_models(out, base, in, n, &o, &st) != FT_OK) return fail("merge-models");
    printf("%s: %s of %d input%s over %s: %lld tensors merged, %lld copied, %.1f MiB\n", out, ft_merge_method_name(o.method), n,
           n == 1 ? "" : "s", base, (long long)st.merged, (long long)st.copied, (double)st.bytes / (1 << 20));
    return 0;
}

/* ---- ft info --------------------------------------------------------------------------------- */
static void print_value(const ft_gguf_kv *kv) {
    if (kv->type == FT_GGUF_STRING) {
        uint64_t n = kv->strs[0].n, i;
        putchar('"');
        for (i = 0; i < n && i < 120; i++) { char ch = kv->strs[0].s[i]; if (ch == '\n') fputs("\\n", stdout); else putchar(ch); }
        printf(n > 120 ? "...\" (%llu bytes)" : "\"", (unsigned long long)n);
    } else if (kv->type == FT_GGUF_ARRAY) {
        printf("[%llu x %s]", (unsigned long long)kv->n,
               kv->arr_type == FT_GGUF_STRING ? "string" : kv->arr_type == FT_GGUF_FLOAT32 ? "f32" : "int");
    } else if (kv->type == FT_GGUF_FLOAT32 || kv->type == FT_GGUF_FLOAT64) printf("%g", ft_gguf_kv_float(kv, 0));
    else printf("%lld", (long long)ft_gguf_kv_int(kv, 0));
}

static int cmd_info(int argc, char **argv) {
    ft_gguf *g; ft_model *m; int64_t i, counts[FT_TYPE_COUNT] = {0}, bytes[FT_TYPE_COUNT] = {0}, total = 0;
    int all = 0; const char *path = NULL;
    for (i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--all") == 0) all = 1;
        else if (!path) path = argv[i];
        else return usage();
    }
    if (!path) return usage();
    if (ft_gguf_open(&g, path) != FT_OK) return fail("info");
    printf("file: %s (GGUF v%u, %lld tensors, %lld metadata keys)\n", path, ft_gguf_version(g),
           (long long)ft_gguf_n_tensors(g), (long long)ft_gguf_n_kv(g));
    for (i = 0; i < ft_gguf_n_kv(g); i++) {
        const ft_gguf_kv *kv = ft_gguf_kv_at(g, i);
        if (!all && kv->type == FT_GGUF_ARRAY) continue;
        printf("  %-44.*s ", (int)kv->key.n, kv->key.s);
        print_value(kv);
        putchar('\n');
    }
    for (i = 0; i < ft_gguf_n_tensors(g); i++) {
        const ft_gguf_tensor *t = ft_gguf_tensor_at(g, i);
        int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        counts[t->type]++; bytes[t->type] += (int64_t)t->nbytes; total += n;
        if (all) printf("  tensor %-36.*s %-6s [%lld, %lld, %lld, %lld]\n", (int)t->name.n, t->name.s, ft_type_name(t->type),
                        (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3]);
    }
    printf("tensor types:");
    for (i = 0; i < FT_TYPE_COUNT; i++)
        if (counts[i]) printf(" %s x%lld (%.1f MiB)", ft_type_name((ft_type)i), (long long)counts[i], (double)bytes[i] / (1 << 20));
    printf("\ntensor elements: %lld (%.1fM)\n", (long long)total, (double)total / 1e6);
    ft_gguf_close(g);
    if (ft_model_load(&m, path, NULL) == FT_OK) {
        const ft_model_config *c = ft_model_config_get(m);
        printf("model: %s, %lld layers, embd %lld, heads %lld (kv %lld, dim %lld), ffn %lld, vocab %lld, ctx %lld, rope base %g%s\n",
               c->arch_name, (long long)c->n_layer, (long long)c->n_embd, (long long)c->n_head, (long long)c->n_head_kv,
               (long long)c->head_dim, (long long)c->n_ff, (long long)c->n_vocab, (long long)c->n_ctx_train,
               (double)c->rope_base, c->tied_embeddings ? ", tied embeddings" : "");
        {
            int64_t nw, b = ft_model_linear_bytes(m, &nw);
            printf("weights: %lld parameters; linear weights %s, %.4f bytes each (%.1f MiB)\n", (long long)c->n_params,
                   ft_type_name(ft_model_layer(m, 0)->wq->type), (double)b / (double)nw, (double)b / (1 << 20));
        }
        ft_model_free(m);
    } else printf("model: not loadable here: %s\n", ft_last_error());
    return 0;
}


/* ---- ft generate ------------------------------------------------------------------------------ */
static int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *lora = NULL; int n = 64, chat = 0, threads = 0, i;
    ft_gen_opts go; ft_ctx_opts co; uint64_t seed = 1;
    ft_model *m; ft_ctx *ctx; ft_kv_cache *kv; ft_rng rng; const ft_tokenizer *tok;
    int32_t *ids, *out; int64_t n_ids, out_len; char *text; const int32_t *prompts[1]; double t0, t1, t2;
    memset(&go, 0, sizeof go);
    for (i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--chat") == 0) { chat = 1; continue; }
        if (!v) { fprintf(stderr, "ft generate: %s needs a value\n", a); return 2; }
        if (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0) model = v;
        else if (strcmp(a, "-p") == 0 || strcmp(a, "--prompt") == 0) prompt = v;
        else if (strcmp(a, "-n") == 0) n = atoi(v);
        else if (strcmp(a, "--temp") == 0) go.sample.temperature = (float)atof(v);
        else if (strcmp(a, "--top-k") == 0) go.sample.top_k = atoi(v);
        else if (strcmp(a, "--top-p") == 0) go.sample.top_p = (float)atof(v);
        else if (strcmp(a, "--seed") == 0) seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--threads") == 0) threads = atoi(v);
        else if (strcmp(a, "--lora") == 0) lora = v;
        else { fprintf(stderr, "ft generate: unknown option %s\n", a); return usage(); }
        i++;
    }
    if (!model || !prompt || n < 1) return usage();
    if (ft_model_load(&m, model, NULL) != FT_OK) return fail("generate");
    if (!(tok = ft_model_tokenizer(m))) { fprintf(stderr, "ft generate: %s has no tokenizer\n", model); return 1; }
    if (lora) { ft_peft *p; if (ft_peft_load(&p, m, lora) != FT_OK) return fail("generate --lora"); }
    memset(&co, 0, sizeof co); co.n_threads = threads;
    if (ft_ctx_init(&ctx, &co) != FT_OK) return fail("generate");
    text = (char *)malloc(strlen(prompt) + 65536);
    if (chat) {
        ft_chat_msg msg; int64_t len;
        msg.role = "user"; msg.content = prompt;
        len = ft_chat_apply(ft_model_chat_template(m), &msg, 1, 1, text, (int64_t)strlen(prompt) + 65536);
        if (len < 0) return fail("generate --chat");
    } else strcpy(text, prompt);
    n_ids = ft_tokenize(tok, text, -1, NULL, 0, 1, 1);
    ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)(n_ids > 0 ? n_ids : 1));
    out = (int32_t *)malloc(sizeof(int32_t) * (size_t)n);
    ft_tokenize(tok, text, -1, ids, n_ids, 1, 1);
    if (n_ids < 1) { fprintf(stderr, "ft generate: the prompt has no tokens\n"); return 1; }
    if (ft_kv_cache_init(&kv, m, 1, n_ids + n) != FT_OK) return fail("generate");
    go.max_new = n;
    {
        int32_t stop[2]; int ns = 0;
        if (ft_tokenizer_eos(tok) >= 0) stop[ns++] = ft_tokenizer_eos(tok);
        if (ft_tokenizer_find(tok, "<|im_end|>") >= 0 && ft_tokenizer_find(tok, "<|im_end|>") != stop[0]) stop[ns++] = ft_tokenizer_find(tok, "<|im_end|>");
        go.stop = stop; go.n_stop = ns;
        ft_rng_seed(&rng, seed);
        prompts[0] = ids;
        t0 = ft_time_seconds();
        if (ft_generate(ctx, m, kv, 1, prompts, &n_ids, &go, &rng, out, &out_len, NULL) != FT_OK) return fail("generate");
        t2 = ft_time_seconds();
    }
    {
        int64_t len = ft_detokenize(tok, out, out_len, text, (int64_t)strlen(prompt) + 65536, 0);
        if (len >= 0) fwrite(text, 1, (size_t)len, stdout);
        printf("\n");
    }
    t1 = t2 - t0;
    fprintf(stderr, "ft: %lld prompt tokens, %lld generated in %.2f s (%.1f tokens/s overall)\n",
            (long long)n_ids, (long long)out_len, t1, (double)out_len / t1);
    free(text); free(ids); free(out);
    ft_kv_cache_free(kv); ft_ctx_free(ctx); ft_model_free(m);
    return 0;
}


/* ---- options shared by train and eval: --flags, or key = value lines of a --config file ------------- */
typedef struct opts {
    const char *model, *method, *objective, *data, *eval, *out, *lora, *schedule, *targets, *config, *quantize;
    const char *placement, *act, *prompt_init, *prompt_text, *freeze, *general, *reward, *loss_type, *scale_rewards, *init_adapter;
    double temperature, top_p, epsilon, epsilon_high, kl_beta, kl_coef, kl_target;
    int64_t group, prompts, iterations;
    int bottleneck, virtual_tokens, prefix_hidden, rslora;
    int64_t steps, batch, seq_len, warmup, eval_every, save_every, log_every, eval_gen, max_new;
    int epochs, rank, grad_accum, threads, resume, pack, train_on_prompt, skip_bad, grad_checkpoint;
    double lr, alpha, dropout, max_grad_norm, weight_decay, lr_ratio_b, eval_split, beta, gamma, label_smoothing;
    double desirable_weight, undesirable_weight, rm_center;
    const char *mix[4]; double mix_ratio[4]; int n_mix;    /* --mix FILE:RATIO (replay)          */
    const char *task[8], *task_eval[8]; int n_task;        /* --task FILE[:EVAL] (multi-task)     */
    double mix_temperature, mix_cap;                       /* their rates: min(n, cap)^(1/T)      */
    int eval_before;                                       /* 0: no "before" evaluation (sweeps)  */
    uint64_t seed;
    char *cfg_text;                                   /* storage behind values read from --config */
} opts;

static void opts_default(opts *o) {
    memset(o, 0, sizeof *o);
    o->method = "lora"; o->objective = "sft"; o->schedule = "cosine"; o->targets = "all";
    o->placement = "houlsby"; o->act = "relu"; o->prompt_init = "random"; o->bottleneck = 64; o->virtual_tokens = 20;
    o->temperature = 1.0; o->epsilon = 0.2; o->loss_type = "dapo"; o->scale_rewards = "group"; o->kl_coef = 0.05;
    o->steps = 0; o->epochs = 1; o->batch = 8; o->seq_len = 256; o->rank = 16; o->alpha = 32; o->lr = 2e-4;
    o->grad_accum = 1; o->warmup = 0; o->max_grad_norm = 1.0; o->seed = 1; o->eval_every = 0; o->save_every = 50;
    o->log_every = 10; o->eval_gen = 100; o->max_new = 32; o->skip_bad = 0;
    o->mix_temperature = 1; o->eval_before = 1;
}

/* one key/value; returns 0 when the key is unknown or the value is missing */
static int opts_set(opts *o, const char *k, const char *v) {
#define S(name, field) if (strcmp(k, name) == 0) { o->field = v; return v != NULL; }
#define I(name, field) if (strcmp(k, name) == 0) { if (!v) return 0; o->field = strtoll(v, NULL, 10); return 1; }
#define D(name, field) if (strcmp(k, name) == 0) { if (!v) return 0; o->field = strtod(v, NULL); return 1; }
    S("model", model) S("m", model) S("method", method) S("objective", objective) S("data", data) S("eval", eval)
    S("out", out) S("o", out) S("lora", lora) S("schedule", schedule) S("targets", targets) S("quantize", quantize)
    S("placement", placement) S("act", act) S("prompt-init", prompt_init) S("prompt-text", prompt_text) S("freeze", freeze) S("eval-general", general)
    S("reward", reward) S("loss-type", loss_type) S("scale-rewards", scale_rewards) S("init-adapter", init_adapter)
    D("temperature", temperature) D("top-p", top_p) D("epsilon", epsilon) D("epsilon-high", epsilon_high) D("kl-beta", kl_beta) D("kl-coef", kl_coef) D("kl-target", kl_target)
    I("group", group) I("prompts", prompts) I("iterations", iterations)
    I("bottleneck", bottleneck) I("virtual-tokens", virtual_tokens) I("prefix-hidden", prefix_hidden) I("rslora", rslora)
    I("steps", steps) I("batch", batch) I("seq-len", seq_len) I("warmup", warmup) I("eval-every", eval_every)
    I("save-every", save_every) I("log-every", log_every) I("eval-gen", eval_gen) I("max-new", max_new)
    I("epochs", epochs) I("rank", rank) I("grad-accum", grad_accum) I("threads", threads) I("pack", pack)
    I("train-on-prompt", train_on_prompt) I("skip-bad", skip_bad) I("grad-checkpoint", grad_checkpoint)
    D("lr", lr) D("alpha", alpha) D("dropout", dropout) D("max-grad-norm", max_grad_norm) D("weight-decay", weight_decay)
    D("lora-plus", lr_ratio_b) D("eval-split", eval_split) D("beta", beta) D("gamma", gamma) D("label-smoothing", label_smoothing)
    D("desirable-weight", desirable_weight) D("undesirable-weight", undesirable_weight) D("rm-center", rm_center)
    D("mix-temperature", mix_temperature) D("mix-cap", mix_cap) I("eval-before", eval_before)
    if (strcmp(k, "task") == 0) {                     /* FILE[:EVAL_FILE], up to 8 */
        char *c = v ? strrchr(v, ':') : NULL;
        if (!v || !*v || o->n_task == 8) return 0;
        o->task_eval[o->n_task] = c && c[1] ? c + 1 : NULL;
        if (c) *c = 0;                                /* the training file ends at the colon */
        o->task[o->n_task++] = v;
        return 1;
    }
    if (strcmp(k, "mix") == 0) {                      /* FILE:RATIO, up to 4 */
        const char *c = v ? strrchr(v, ':') : NULL;
        if (!c || o->n_mix == 4) return 0;
        o->mix_ratio[o->n_mix] = strtod(c + 1, NULL);
        o->mix[o->n_mix] = v;
        ((char *)c)[0] = 0;                           /* the file name ends at the colon */
        o->n_mix++;
        return 1;
    }
    if (strcmp(k, "seed") == 0) { if (!v) return 0; o->seed = strtoull(v, NULL, 10); return 1; }
    if (strcmp(k, "resume") == 0) { o->resume = !v || strcmp(v, "0") != 0; return 1; }
#undef S
#undef I
#undef D
    return 0;
}

static int opts_config_file(opts *o, const char *path) {
    FILE *f = fopen(path, "rb"); long n; char *p, *line; int lineno = 0;
    if (!f) { fprintf(stderr, "ft: %s: cannot open\n", path); return 0; }
    fseek(f, 0, SEEK_END); n = ftell(f); fseek(f, 0, SEEK_SET);
    o->cfg_text = (char *)malloc((size_t)n + 1);
    if (fread(o->cfg_text, 1, (size_t)n, f) != (size_t)n) { fclose(f); return 0; }
    fclose(f); o->cfg_text[n] = 0;
    for (p = o->cfg_text; p && *p; ) {
        char *nl = strchr(p, '\n'), *eq, *k, *v, *e;
        line = p; if (nl) *nl = 0; p = nl ? nl + 1 : NULL; lineno++;
        while (*line == ' ' || *line == '\t') line++;
        if (!*line || *line == '#') continue;
        eq = strchr(line, '=');
        if (!eq) { fprintf(stderr, "ft: %s:%d: expected key = value\n", path, lineno); return 0; }
        *eq = 0; k = line; v = eq + 1;
        for (e = eq - 1; e >= k && (*e == ' ' || *e == '\t'); e--) *e = 0;
        while (*v == ' ' || *v == '\t') v++;
        for (e = v + strlen(v) - 1; e >= v && (*e == ' ' || *e == '\t' || *e == '\r'); e--) *e = 0;
        if (!opts_set(o, k, v)) { fprintf(stderr, "ft: %s:%d: unknown key '%s'\n", path, lineno, k); return 0; }
    }
    return 1;
}

/* --config first (flags after it override), then the flags */
static int opts_parse(opts *o, int argc, char **argv) {
    int i;
    for (i = 0; i + 1 < argc; i++) if (strcmp(argv[i], "--config") == 0 && !opts_config_file(o, argv[i + 1])) return 0;
    for (i = 0; i < argc; i++) {
        const char *a = argv[i], *k = a[0] == '-' ? a + (a[1] == '-' ? 2 : 1) : NULL;
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!k) { fprintf(stderr, "ft: unexpected argument '%s'\n", a); return 0; }
        if (strcmp(k, "config") == 0) { i++; continue; }
        if (strcmp(k, "resume") == 0 || strcmp(k, "pack") == 0 || strcmp(k, "train-on-prompt") == 0 || strcmp(k, "skip-bad") == 0 ||
            strcmp(k, "rslora") == 0 || strcmp(k, "grad-checkpoint") == 0) {
            opts_set(o, k, "1"); continue;
        }
        if (!opts_set(o, k, v)) { fprintf(stderr, "ft: unknown option or missing value: %s\n", a); return 0; }
        i++;
    }
    return 1;
}

static void opts_write(const opts *o, FILE *f) {
    fprintf(f, "# resolved configuration of this run (ft train --config FILE reads it back)\n");
    fprintf(f, "model = %s\nmethod = %s\nobjective = %s\n", o->model, o->method, o->objective);
    if (o->data) fprintf(f, "data = %s\n", o->data);
    if (o->eval) fprintf(f, "eval = %s\n", o->eval);
    { int i; for (i = 0; i < o->n_mix; i++) fprintf(f, "mix = %s:%g\n", o->mix[i], o->mix_ratio[i]); }
    if (o->eval_split > 0) fprintf(f, "eval-split = %g\n", o->eval_split);
    { int i; for (i = 0; i < o->n_task; i++) fprintf(f, "task = %s%s%s\n", o->task[i], o->task_eval[i] ? ":" : "", o->task_eval[i] ? o->task_eval[i] : ""); }
    if (o->n_task) fprintf(f, "mix-temperature = %g\nmix-cap = %g\n", o->mix_temperature, o->mix_cap);
    fprintf(f, "out = %s\nsteps = %lld\nepochs = %d\nbatch = %lld\ngrad-accum = %d\nseq-len = %lld\npack = %d\n", o->out,
            (long long)o->steps, o->epochs, (long long)o->batch, o->grad_accum, (long long)o->seq_len, o->pack);
    fprintf(f, "lr = %g\nschedule = %s\nwarmup = %lld\nmax-grad-norm = %g\nweight-decay = %g\nlora-plus = %g\n", o->lr, o->schedule,
            (long long)o->warmup, o->max_grad_norm, o->weight_decay, o->lr_ratio_b);
    fprintf(f, "rank = %d\nalpha = %g\ndropout = %g\ntargets = %s\nseed = %llu\nthreads = %d\n", o->rank, o->alpha, o->dropout,
            o->targets, (unsigned long long)o->seed, o->threads);
    fprintf(f, "rslora = %d\nbottleneck = %d\nplacement = %s\nact = %s\nvirtual-tokens = %d\nprefix-hidden = %d\nprompt-init = %s\n",
            o->rslora, o->bottleneck, o->placement, o->act, o->virtual_tokens, o->prefix_hidden, o->prompt_init);
    if (o->reward) fprintf(f, "reward = %s\ngroup = %lld\nprompts = %lld\niterations = %lld\ntemperature = %g\ntop-p = %g\nepsilon = %g\nepsilon-high = %g\n"
                              "kl-beta = %g\nkl-coef = %g\nloss-type = %s\nscale-rewards = %s\n", o->reward, (long long)o->group, (long long)o->prompts,
                              (long long)o->iterations, o->temperature, o->top_p, o->epsilon, o->epsilon_high, o->kl_beta, o->kl_coef, o->loss_type, o->scale_rewards);
    if (o->prompt_text) fprintf(f, "prompt-text = %s\n", o->prompt_text);
    if (o->general) fprintf(f, "eval-general = %s\n", o->general);
    if (o->init_adapter) fprintf(f, "init-adapter = %s\n", o->init_adapter);
    if (o->freeze) fprintf(f, "freeze = %s\n", o->freeze);
    fprintf(f, "beta = %g\ngamma = %g\nlabel-smoothing = %g\ndesirable-weight = %g\nundesirable-weight = %g\nrm-center = %g\n",
            o->beta, o->gamma, o->label_smoothing, o->desirable_weight, o->undesirable_weight, o->rm_center);
    fprintf(f, "eval-every = %lld\nsave-every = %lld\neval-gen = %lld\nmax-new = %lld\ntrain-on-prompt = %d\nskip-bad = %d\n",
            (long long)o->eval_every, (long long)o->save_every, (long long)o->eval_gen, (long long)o->max_new, o->train_on_prompt, o->skip_bad);
    fprintf(f, "grad-checkpoint = %d\n", o->grad_checkpoint);
}

static unsigned parse_targets(const char *t) {
    unsigned m = 0; const char *p = t;
    if (strcmp(t, "all") == 0) return FT_TARGET_ALL_LINEAR;
    if (strcmp(t, "attn") == 0) return FT_TARGET_ATTN;
    if (strcmp(t, "mlp") == 0) return FT_TARGET_MLP;
    if (strcmp(t, "all+embed+head") == 0) return FT_TARGET_ALL_LINEAR | FT_TARGET_EMBED | FT_TARGET_HEAD;
    if (strstr(t, "embed_tokens")) m |= FT_TARGET_EMBED;
    if (strstr(t, "lm_head")) m |= FT_TARGET_HEAD;
    while (*p) {
        int w;
        for (w = 0; w < FT_SITE_COUNT; w++) {
            size_t n = strlen(ft_site_name(w));
            if (strncmp(p, ft_site_name(w), n) == 0 || (strncmp(p, ft_site_name(w), 1) == 0 && (p[1] == ',' || !p[1]) && w != FT_SITE_GATE))
                { m |= 1u << w; break; }
        }
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    return m;
}

/* PEFT's base_model_name_or_path: the GGUF's general.name, else its architecture */
/* the methods PEFT has (ft_peft_save_peft writes them): LoRA/DoRA, IA3, prompt and prefix tuning */
static int has_peft_format(ft_peft_method k) { return k == FT_PEFT_LORA || k == FT_PEFT_IA3 || k == FT_PEFT_PROMPT || k == FT_PEFT_PREFIX; }

static const char *model_name(ft_model *m, char *buf, size_t cap) {
    ft_gguf_str name;
    if (ft_gguf_get_str(ft_model_gguf(m), "general.name", &name)) snprintf(buf, cap, "%.*s", (int)(name.n < cap - 1 ? name.n : cap - 1), name.s);
    else snprintf(buf, cap, "%s", ft_model_config_get(m)->arch_name);
    return buf;
}

/* ---- progress, metrics, plots -------------------------------------------------------------------- */
typedef struct run { opts *o; FILE *metrics; int tty; double *xs, *ys, *ex, *ey; int64_t n, ne, cap; double t_first, t_last; int64_t s_first, s_last; } run;

static int on_step(void *user, const ft_step_info *s) {
    run *r = (run *)user;
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 256;
        r->xs = (double *)realloc(r->xs, (size_t)r->cap * sizeof(double)); r->ys = (double *)realloc(r->ys, (size_t)r->cap * sizeof(double));
        r->ex = (double *)realloc(r->ex, (size_t)r->cap * sizeof(double)); r->ey = (double *)realloc(r->ey, (size_t)r->cap * sizeof(double));
    }
    r->xs[r->n] = (double)s->step; r->ys[r->n++] = s->loss;
    if (r->n == 1) { r->t_first = s->elapsed_s; r->s_first = s->step; }      /* step time after the first step */
    r->t_last = s->elapsed_s; r->s_last = s->step;
    if (s->eval_loss == s->eval_loss) { r->ex[r->ne] = (double)s->step; r->ey[r->ne++] = s->eval_loss; }
    fprintf(r->metrics, "{\"step\": %lld, \"epoch\": %lld, \"loss\": %.6f, \"learning_rate\": %.6g, \"grad_norm\": %.6f, \"tokens_per_s\": %.1f, \"tokens\": %.0f",
            (long long)s->step, (long long)s->epoch, s->loss, s->lr, s->grad_norm, s->tokens_per_s, s->tokens);
    if (s->eval_loss == s->eval_loss) fprintf(r->metrics, ", \"eval_loss\": %.6f, \"eval_perplexity\": %.4f", s->eval_loss, exp(s->eval_loss));
    if (s->pref.rewards_accuracies > 0 || s->pref.rewards_margins != 0)
        fprintf(r->metrics, ", \"rewards/chosen\": %.6f, \"rewards/rejected\": %.6f, \"rewards/margins\": %.6f, \"rewards/accuracies\": %.4f, \"logps/chosen\": %.4f, \"logps/rejected\": %.4f",
                s->pref.rewards_chosen, s->pref.rewards_rejected, s->pref.rewards_margins, s->pref.rewards_accuracies, s->pref.logps_chosen, s->pref.logps_rejected);
    if (s->pref.kl != 0) fprintf(r->metrics, ", \"kl\": %.6f", s->pref.kl);
    fprintf(r->metrics, "}\n");
    fflush(r->metrics);
    if (r->tty || s->step % r->o->log_every == 0 || s->step == s->steps || s->eval_loss == s->eval_loss) {
        fprintf(stderr, "%sstep %lld/%lld  loss %.4f  lr %.2e  grad %.2f  %.0f tok/s  ETA %dm%02ds", r->tty ? "\r" : "",
                (long long)s->step, (long long)s->steps, s->loss, s->lr, s->grad_norm, s->tokens_per_s, (int)(s->eta_s / 60), (int)s->eta_s % 60);
        if (s->eval_loss == s->eval_loss) fprintf(stderr, "  eval %.4f (ppl %.2f)", s->eval_loss, exp(s->eval_loss));
        fprintf(stderr, r->tty && s->eval_loss != s->eval_loss && s->step != s->steps ? "   " : "\n");
    }
    return 0;
}

/* what the run reports before and after */
typedef struct evres {
    double loss; ft_eval_gen gen;                  /* SFT data: eval loss, generation accuracy    */
    double lik_acc;                                /* preference data: the likelihood prefers chosen */
    double general;                                /* loss on --eval-general text (forgetting)    */
    double rew_acc, rew_margin;                    /* the objective's reward: implicit (vs the
                                                      reference), length-averaged likelihood
                                                      (SimPO, ORPO), or the reward head (rm)      */
    const char *rew_name;
} evres;

static int is_obj(const opts *o, const char *a, const char *b, const char *c) {
    return strcmp(o->objective, a) == 0 || (b && strcmp(o->objective, b) == 0) || (c && strcmp(o->objective, c) == 0);
}

/* the model as it is now (adapter on or off) on the eval data (and the general text) */
static int evaluate(ft_ctx *ctx, ft_model *m, const ft_dataset *d, const ft_dataset *gen, const opts *o, evres *e) {
    memset(e, 0, sizeof *e);
    if (gen && ft_eval_loss(ctx, m, gen, o->batch, o->seq_len, &e->general, NULL) != FT_OK) return fail("eval --eval-general");
    if (ft_dataset_format(d) == FT_DATA_PREFERENCE) {
        double mg; float beta = o->beta > 0 ? (float)o->beta : is_obj(o, "simpo", NULL, NULL) ? 2.0f : 0.1f;
        if (ft_eval_preference(ctx, m, d, o->batch, o->seq_len, 1.0f, 0, &e->lik_acc, &mg) != FT_OK) return fail("eval");
        if (is_obj(o, "rm", NULL, NULL)) {
            e->rew_name = "reward model accuracy";
            if (ft_eval_reward(ctx, m, d, o->batch, o->seq_len, &e->rew_acc, &e->rew_margin) != FT_OK) return fail("eval");
        } else if (is_obj(o, "simpo", "orpo", NULL)) {
            e->rew_name = "avg log-prob reward acc";
            if (ft_eval_preference(ctx, m, d, o->batch, o->seq_len, beta, 2, &e->rew_acc, &e->rew_margin) != FT_OK) return fail("eval");
        } else {
            e->rew_name = "implicit reward accuracy";
            if (ft_eval_preference(ctx, m, d, o->batch, o->seq_len, beta, 1, &e->rew_acc, &e->rew_margin) != FT_OK) return fail("eval");
        }
        return 0;
    }
    if (ft_eval_loss(ctx, m, d, o->batch, o->seq_len, &e->loss, NULL) != FT_OK) return fail("eval");
    if (o->eval_gen > 0 && ft_dataset_format(d) != FT_DATA_TEXT && ft_eval_generate(ctx, m, d, (int)o->max_new, o->eval_gen, &e->gen, NULL, NULL) != FT_OK) return fail("eval");
    return 0;
}

/* ---- ft train --objective grpo|ppo: prompts in, rewards from verifiable checks or a reward model --- */
typedef struct rl_run { const opts *o; FILE *metrics; int tty; double *xs, *ys; int64_t n, cap; } rl_run;
static int rl_on_step(void *user, const ft_step_info *s) {
    rl_run *r = (rl_run *)user;
    const ft_rl_stats *q = &s->rl;
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 256;
        r->xs = (double *)realloc(r->xs, (size_t)r->cap * sizeof(double)); r->ys = (double *)realloc(r->ys, (size_t)r->cap * sizeof(double));
    }
    r->xs[r->n] = (double)s->step; r->ys[r->n++] = q->reward;
    fprintf(r->metrics, "{\"step\": %lld, \"loss\": %.6f, \"learning_rate\": %.6g, \"grad_norm\": %.6f, \"reward\": %.6f, \"reward_std\": %.6f, "
            "\"kl\": %.6f, \"completion_length\": %.3f, \"clip_ratio/region_mean\": %.5f, \"frac_reward_zero_std\": %.4f, "
            "\"pg_loss\": %.6f, \"vf_loss\": %.6f, \"pg_clipfrac\": %.5f, \"objective/entropy\": %.4f, \"objective/rlhf_reward\": %.6f}\n",
            (long long)s->step, s->loss, s->lr, s->grad_norm, q->reward, q->reward_std, q->kl, q->completion_len, q->clip_region,
            q->frac_reward_zero_std, q->pg_loss, q->vf_loss, q->pg_clipfrac, q->entropy, q->rlhf_reward);
    fflush(r->metrics);
    if (r->tty || s->step % r->o->log_every == 0 || s->step == s->steps)
        fprintf(stderr, "%sstep %lld/%lld  reward %.3f (std %.3f)  kl %.4f  len %.1f  loss %.4f  ETA %dm%02ds%s", r->tty ? "\r" : "", (long long)s->step,
                (long long)s->steps, q->reward, q->reward_std, q->kl, q->completion_len, s->loss, (int)(s->eta_s / 60), (int)s->eta_s % 60,
                r->tty && s->step != s->steps ? "   " : "\n");
    return 0;
}

/* --reward number,length:N,rm:ADAPTER.gguf,regex:PATTERN: terms, each optionally *WEIGHT (e.g.
   number*1,length:200*0.1); a regex takes the rest of the list (it may hold commas and stars) */
static int parse_rewards(const char *spec, const char *model_path, int threads, ft_reward_term *t, int cap, ft_rm_scorer *rm, int *len_target) {
    char item[1024]; const char *p = spec; int n = 0;
    while (*p && n < cap) {
        const char *e = strncmp(p, "regex:", 6) == 0 ? p + strlen(p) : strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p); char *star; float w = 1;
        if (len >= sizeof item) { fprintf(stderr, "ft: --reward item too long\n"); return -1; }
        memcpy(item, p, len); item[len] = 0;
        p += len; if (*p == ',') p++;
        t[n].weight = 1; t[n].user = NULL;
        if (strncmp(item, "regex:", 6) == 0) { t[n].fn = ft_reward_regex; t[n].user = (void *)(spec + (p - spec) - len + 6); n++; continue; }
        if ((star = strrchr(item, '*'))) { w = (float)strtod(star + 1, NULL); *star = 0; }
        t[n].weight = w;
        if (strcmp(item, "number") == 0) t[n].fn = ft_reward_number;
        else if (strncmp(item, "length:", 7) == 0) { *len_target = atoi(item + 7); t[n].fn = ft_reward_length; t[n].user = len_target; }
        else if (strncmp(item, "rm:", 3) == 0) {
            ft_peft *rp; ft_ctx_opts co;
            if (ft_model_load(&rm->model, model_path, NULL) != FT_OK || ft_peft_load(&rp, rm->model, item + 3) != FT_OK) return -fail("train --reward rm:");
            if (!ft_peft_reward_head(rp)) { fprintf(stderr, "ft: %s has no reward head (train it with --objective rm)\n", item + 3); return -1; }
            memset(&co, 0, sizeof co); co.n_threads = threads;
            if (ft_ctx_init(&rm->ctx, &co) != FT_OK) return -fail("train");
            t[n].fn = ft_reward_model; t[n].user = rm;
        } else { fprintf(stderr, "ft: unknown reward '%s' (number, length:N, rm:ADAPTER.gguf, regex:PATTERN)\n", item); return -1; }
        n++;
    }
    return n;
}

static int train_rl(ft_ctx *ctx, ft_model *m, ft_peft *p, const ft_dataset *train, const ft_dataset *ev, const opts *o, const ft_peft_opts *po) {
    ft_reward_term rw[8]; ft_rm_scorer rm; int nr, len_target = 0; ft_train_opts to; rl_run rr; char path[2048]; double r0 = 0, s0 = 0, r1 = 0, s1 = 0;
    int is_ppo = strcmp(o->objective, "ppo") == 0; ft_result r; float full = 1;
    memset(&rm, 0, sizeof rm);
    if ((nr = parse_rewards(o->reward, o->model, o->threads, rw, 8, &rm, &len_target)) <= 0) return 1;
    { char cp[2048]; FILE *f; snprintf(cp, sizeof cp, "%s/config", o->out); if ((f = fopen(cp, "w"))) { opts_write(o, f); fclose(f); } }
    { int k; full = 0; for (k = 0; k < nr; k++) if (rw[k].fn != ft_reward_length) full += rw[k].weight; }
    if (ft_dataset_format(train) != FT_DATA_PROMPT) { fprintf(stderr, "ft: %s: RL needs prompt data ({\"prompt\", \"answer\"})\n", o->data); return 1; }
    if (ev) {
        ft_peft_set_enabled(p, 0);
        if (ft_eval_rl(ctx, m, ev, (int)o->max_new, rw, nr, full, o->eval_gen, &r0, &s0) != FT_OK) return fail("eval");
        ft_peft_set_enabled(p, 1);
        fprintf(stderr, "ft: before: mean reward %.3f, full reward on %.1f%% of %s\n", r0, 100 * s0, o->eval);
    }
    to = ft_train_opts_default(is_ppo ? FT_OBJ_PPO : FT_OBJ_GRPO);
    to.steps = o->steps ? o->steps : 50; to.rl.prompts = o->prompts ? o->prompts : 4;
    to.rl.group = o->group ? o->group : 4; to.rl.max_new = (int)o->max_new; to.rl.iterations = (int)o->iterations;
    to.rl.sample.temperature = (float)o->temperature; to.rl.sample.top_p = (float)o->top_p;
    to.lr = (float)o->lr; to.sched = strcmp(o->schedule, "linear") == 0 ? FT_SCHED_LINEAR : strcmp(o->schedule, "cosine") == 0 ? FT_SCHED_COSINE : FT_SCHED_CONSTANT;
    to.warmup = o->warmup; to.optim.weight_decay = (float)o->weight_decay; to.max_grad_norm = (float)o->max_grad_norm;
    to.grad_accum = o->grad_accum; to.lr_scale_b = (float)o->lr_ratio_b;
    to.rl.grpo.beta = (float)o->kl_beta; to.rl.grpo.epsilon = (float)o->epsilon; to.rl.grpo.epsilon_high = (float)o->epsilon_high;
    to.rl.grpo.agg = strcmp(o->loss_type, "grpo") == 0 ? FT_GRPO_AGG_GRPO : strcmp(o->loss_type, "bnpo") == 0 ? FT_GRPO_AGG_BNPO :
                  strcmp(o->loss_type, "dr_grpo") == 0 ? FT_GRPO_AGG_DR_GRPO : FT_GRPO_AGG_DAPO;
    to.rl.scale = strcmp(o->scale_rewards, "batch") == 0 ? FT_ADV_BATCH : strcmp(o->scale_rewards, "none") == 0 ? FT_ADV_NONE : FT_ADV_GROUP;
    to.rl.ppo.kl_coef = (float)o->kl_coef; to.rl.ppo.kl_target = (float)o->kl_target; to.rl.ppo.kl_horizon = 10000.0f;
    to.rl.rewards = rw; to.rl.n_rewards = nr; to.seed = o->seed;
    memset(&rr, 0, sizeof rr); rr.o = o; rr.tty = isatty(2);
    snprintf(path, sizeof path, "%s/metrics.jsonl", o->out);
    if (!(rr.metrics = fopen(path, "w"))) { fprintf(stderr, "ft: %s: cannot write\n", path); return 1; }
    to.on_step = rl_on_step; to.user = &rr;
    r = ft_train(ctx, m, ft_peft_params(p), train, &to, NULL);
    fclose(rr.metrics);
    if (r != FT_OK) return fail("train");
    snprintf(path, sizeof path, "%s/adapter.gguf", o->out);
    if (po->method == FT_PEFT_LORA && !po->lora.dora && !po->reward_head && !(po->lora.targets & (FT_TARGET_EMBED | FT_TARGET_HEAD))) { if (ft_peft_save(p, path, FT_FORMAT_LLAMACPP, NULL) != FT_OK) return fail("train"); }
    else if (ft_peft_save(p, path, FT_FORMAT_FINETUNE, NULL) != FT_OK) return fail("train");
    if (has_peft_format(po->method) && !(po->lora.targets & (FT_TARGET_EMBED | FT_TARGET_HEAD))) {
        char nm[256];
        snprintf(path, sizeof path, "%s/peft", o->out);
        if (ft_peft_save(p, path, FT_FORMAT_PEFT, model_name(m, nm, sizeof nm)) != FT_OK) return fail("train");
    }
    {
        ft_plot_series ser; ser.name = "reward"; ser.x = rr.xs; ser.y = rr.ys; ser.n = rr.n;
        snprintf(path, sizeof path, "%s/reward.svg", o->out);
        if (rr.n && ft_svg_plot(path, "mean reward of the sampled completions", "step", "reward", &ser, 1) != FT_OK) return fail("train");
    }
    fprintf(stderr, "ft: %lld %s steps; wrote %s/{adapter.gguf,%smetrics.jsonl,reward.svg,config}\n", (long long)to.steps, o->objective, o->out,
            has_peft_format(po->method) ? "peft/," : "");
    if (ev) {
        if (ft_eval_rl(ctx, m, ev, (int)o->max_new, rw, nr, full, o->eval_gen, &r1, &s1) != FT_OK) return fail("eval");
        printf("\n| %-26s | %10s | %10s |\n|%s|%s|%s|\n", o->eval, "before", "after", "----------------------------", "------------", "------------");
        printf("| %-26s | %10.4f | %10.4f |\n| %-26s | %9.1f%% | %9.1f%% |\n", "mean reward (greedy)", r0, r1, "full reward (greedy)", 100 * s0, 100 * s1);
    }
    free(rr.xs); free(rr.ys);
    if (rm.model) { ft_ctx_free(rm.ctx); ft_model_free(rm.model); }
    return 0;
}

static ft_peft_method method_of(const char *s) {
    return strcmp(s, "adapter") == 0 ? FT_PEFT_ADAPTER : strcmp(s, "prefix") == 0 ? FT_PEFT_PREFIX : strcmp(s, "prompt") == 0 ? FT_PEFT_PROMPT :
           strcmp(s, "ia3") == 0 ? FT_PEFT_IA3 : strcmp(s, "full") == 0 ? FT_PEFT_FULL : FT_PEFT_LORA;
}

/* the model of -m, with --quantize nf4: every linear weight converted at load (QLoRA's base) */
static int load_model(ft_model **m, const opts *o) {
    ft_model_opts mo;
    memset(&mo, 0, sizeof mo);
    if (o->quantize && strcmp(o->quantize, "nf4") != 0) { fprintf(stderr, "ft: --quantize %s is not available (nf4 is)\n", o->quantize); return 0; }
    if (o->quantize) mo.quantize = FT_TYPE_NF4;
    if (ft_model_load(m, o->model, &mo) != FT_OK) { fail(o->model); return 0; }
    return 1;
}

/* --task FILE[:EVAL] ...: the tasks' training sets (and --data, as one more task) mixed at FLAN / T5
   temperature-sampling rates, min(n_i, cap)^(1/T) normalised (ft_mix_ratios), one pass over the
   mixture as long as all the tasks together; each task's eval file loaded for its own table rows */
static int load_tasks(ft_dataset **train, ft_dataset **tev, const opts *o, ft_model *m, const ft_data_opts *dopt) {
    ft_dataset *parts[9], *mixed; int64_t sizes[9], total = 0; double rates[9]; int n = 0, i;
    const ft_tokenizer *tok = ft_model_tokenizer(m); const char *tmpl = ft_model_chat_template(m);
    if (*train) parts[n++] = *train;
    for (i = 0; i < o->n_task; i++) {
        if (ft_dataset_load(&parts[n], o->task[i], tok, tmpl, dopt) != FT_OK) return fail("train --task");
        n++;
        if (o->task_eval[i] && ft_dataset_load(&tev[i], o->task_eval[i], tok, tmpl, dopt) != FT_OK) return fail("train --task");
    }
    for (i = 0; i < n; i++) { sizes[i] = ft_dataset_size(parts[i]); total += sizes[i]; }
    if (ft_mix_ratios(sizes, n, o->mix_temperature, o->mix_cap, rates) != FT_OK) return fail("train --mix-temperature");
    for (i = 0; i < n; i++)
        fprintf(stderr, "ft: task %s: %lld %s examples, sampling rate %.3f\n", i < n - o->n_task ? o->data : o->task[i - (n - o->n_task)],
                (long long)sizes[i], ft_data_format_name(ft_dataset_format(parts[i])), rates[i]);
    if (ft_dataset_mix(&mixed, parts, rates, n, total, o->seed) != FT_OK) {
        fail("train --task");
        for (i = 0; i < n; i++) fprintf(stderr, "ft:   part %d: %s\n", i, i < n - o->n_task ? o->data : o->task[i - (n - o->n_task)]);
        return 1;
    }
    for (i = 0; i < n; i++) ft_dataset_free(parts[i]);
    *train = mixed;
    return 0;
}

/* the per-task table: each --task's eval file, before (adapter off) and after */
static void print_tasks(const opts *o, const evres *t0, const evres *t1, int no_before) {
    int i;
    printf("\n| %-32s | %-18s | %-16s | %-14s |\n|%s|%s|%s|%s|\n", "task eval file", "loss", "perplexity", "exact match",
           "----------------------------------", "--------------------", "------------------", "----------------");
    for (i = 0; i < o->n_task; i++) {
        char l[64], pp[64], em[64];
        if (!o->task_eval[i]) continue;
        if (no_before) {
            snprintf(l, sizeof l, "%.4f", t1[i].loss); snprintf(pp, sizeof pp, "%.2f", exp(t1[i].loss));
            snprintf(em, sizeof em, t1[i].gen.n ? "%.1f%%" : "-", 100 * t1[i].gen.exact_rate);
        } else {
            snprintf(l, sizeof l, "%.4f -> %.4f", t0[i].loss, t1[i].loss); snprintf(pp, sizeof pp, "%.2f -> %.2f", exp(t0[i].loss), exp(t1[i].loss));
            snprintf(em, sizeof em, t1[i].gen.n ? "%.0f%% -> %.0f%%" : "-", 100 * t0[i].gen.exact_rate, 100 * t1[i].gen.exact_rate);
        }
        printf("| %-32s | %-18s | %-16s | %-14s |\n", o->task_eval[i], l, pp, em);
    }
}

/* OUT/eval.json: the final evaluation (ft sweep reads it) */
static void write_eval_json(const opts *o, const ft_dataset *ev, const evres *e0, const evres *e1, const evres *t0, const evres *t1, int no_before) {
    char path[2048]; FILE *f; int i, first = 1;
    snprintf(path, sizeof path, "%s/eval.json", o->out);
    if (!(f = fopen(path, "w"))) { fprintf(stderr, "ft: %s: cannot write\n", path); return; }
    fprintf(f, "{");
    if (ev && ft_dataset_format(ev) != FT_DATA_PREFERENCE) {
        fprintf(f, "\"eval_loss\": %.6f, \"eval_perplexity\": %.4f", e1->loss, exp(e1->loss));
        if (e1->gen.n) fprintf(f, ", \"exact_match\": %.4f, \"contains\": %.4f, \"n_gen\": %lld", e1->gen.exact_rate, e1->gen.contains_rate, (long long)e1->gen.n);
        if (!no_before) fprintf(f, ", \"before_eval_loss\": %.6f", e0->loss);
        if (!no_before && e0->gen.n) fprintf(f, ", \"before_exact_match\": %.4f", e0->gen.exact_rate);
        first = 0;
    }
    if (o->n_task) {
        fprintf(f, "%s\"tasks\": [", first ? "" : ", ");
        for (i = 0, first = 1; i < o->n_task; i++) {
            if (!o->task_eval[i]) continue;
            fprintf(f, "%s{\"eval\": \"%s\", \"eval_loss\": %.6f, \"exact_match\": %.4f", first ? "" : ", ", o->task_eval[i], t1[i].loss, t1[i].gen.exact_rate);
            if (!no_before) fprintf(f, ", \"before_eval_loss\": %.6f, \"before_exact_match\": %.4f", t0[i].loss, t0[i].gen.exact_rate);
            fprintf(f, "}");
            first = 0;
        }
        fprintf(f, "]");
    }
    fprintf(f, "}\n");
    fclose(f);
}

static int cmd_train(int argc, char **argv) {
    opts o; ft_model *m; ft_ctx *ctx; ft_ctx_opts co; ft_peft *p; ft_dataset *train, *ev = NULL;
    ft_data_opts dopt; ft_train_opts to; ft_train_state st; run rn; ft_peft_opts po; ft_dataset *gen = NULL; char path[2048]; FILE *f; ft_result r;
    evres e0, e1, t0[8], t1[8]; int have_ckpt = 0, no_before, i; ft_dataset *tev[8] = {0};
    opts_default(&o);
    if (!opts_parse(&o, argc, argv)) return 2;
    if (!o.model || (!o.data && !o.n_task) || !o.out) { fprintf(stderr, "ft train: needs -m MODEL, --data FILE (or --task FILE[:EVAL]) and --out DIR\n"); return 2; }
    memset(&e0, 0, sizeof e0); memset(t0, 0, sizeof t0);
    {
        static const char *ms[] = {"lora", "qlora", "dora", "adapter", "prefix", "prompt", "ia3", "full"};
        int k, ok = 0;
        for (k = 0; k < 8; k++) ok |= strcmp(o.method, ms[k]) == 0;
        if (!ok) { fprintf(stderr, "ft train: unknown --method %s (lora, qlora, dora, adapter, prefix, prompt, ia3, full)\n", o.method); return 2; }
    }
    {
        ft_objective k;
        if (!ft_objective_parse(o.objective, &k)) { fprintf(stderr, "ft train: unknown --objective %s\n", o.objective); return 2; }
        if (is_obj(&o, "grpo", "ppo", NULL) && !o.reward) { fprintf(stderr, "ft train: --objective %s needs --reward (number, regex:PATTERN, length:N, rm:ADAPTER.gguf)\n", o.objective); return 2; }
    }
    snprintf(path, sizeof path, "%s/checkpoints", o.out);
    if (ft_mkdirs(path) != FT_OK) return fail("train --out");
    if (!load_model(&m, &o)) return 1;
    if (!ft_model_tokenizer(m)) { fprintf(stderr, "ft train: %s has no tokenizer\n", o.model); return 1; }
    memset(&co, 0, sizeof co); co.n_threads = o.threads; co.seed = o.seed;
    if (ft_ctx_init(&ctx, &co) != FT_OK) return fail("train");
    ft_ctx_set_checkpointing(ctx, o.grad_checkpoint);
    memset(&dopt, 0, sizeof dopt);
    dopt.format = strcmp(o.objective, "cpt") == 0 ? FT_DATA_TEXT : FT_DATA_AUTO;
    dopt.max_len = o.seq_len; dopt.train_on_prompt = o.train_on_prompt; dopt.skip_bad = o.skip_bad;
    train = NULL;
    if (o.data && ft_dataset_load(&train, o.data, ft_model_tokenizer(m), ft_model_chat_template(m), &dopt) != FT_OK) return fail("train");
    if (o.n_task && load_tasks(&train, tev, &o, m, &dopt)) return 1;
    if (o.eval && ft_dataset_load(&ev, o.eval, ft_model_tokenizer(m), ft_model_chat_template(m), &dopt) != FT_OK) return fail("train");
    if (!o.eval && o.eval_split > 0 && !o.n_task && ft_dataset_split(train, o.eval_split, o.seed, &ev) != FT_OK) return fail("train --eval-split");
    if (o.general) {                                   /* plain text: the forgetting check */
        ft_data_opts go = dopt; go.format = FT_DATA_TEXT;
        if (ft_dataset_load(&gen, o.general, ft_model_tokenizer(m), ft_model_chat_template(m), &go) != FT_OK) return fail("train --eval-general");
    }
    if (o.n_mix) {                                     /* the main data keeps 1 - sum(ratios) */
        ft_dataset *parts[5], *mixed; double ratios[5], rest = 1; int i;
        ft_data_opts mo = dopt; mo.format = FT_DATA_AUTO;
        parts[0] = train;
        for (i = 0; i < o.n_mix; i++) {
            if (ft_dataset_load(&parts[i + 1], o.mix[i], ft_model_tokenizer(m), ft_model_chat_template(m), &mo) != FT_OK) return fail("train --mix");
            ratios[i + 1] = o.mix_ratio[i]; rest -= o.mix_ratio[i];
        }
        ratios[0] = rest;
        if (ft_dataset_mix(&mixed, parts, ratios, o.n_mix + 1, (int64_t)((double)ft_dataset_size(train) / (rest > 0.05 ? rest : 0.05)), o.seed) != FT_OK) return fail("train --mix");
        for (i = 0; i <= o.n_mix; i++) ft_dataset_free(parts[i]);
        train = mixed;
    }
    fprintf(stderr, "ft: %s: %lld %s examples (%lld tokens%s)", o.n_task ? "task mixture" : o.data, (long long)ft_dataset_size(train), ft_data_format_name(ft_dataset_format(train)),
            (long long)ft_dataset_tokens(train), ft_dataset_skipped(train) ? ", some lines skipped" : "");
    if (ev) fprintf(stderr, "; eval %lld examples", (long long)ft_dataset_size(ev));
    fprintf(stderr, "\n");
    memset(&po, 0, sizeof po);
    po.method = method_of(o.method);
    po.lora.r = o.rank; po.lora.alpha = (float)o.alpha; po.lora.dropout = (float)o.dropout; po.lora.dora = strcmp(o.method, "dora") == 0;
    po.lora.targets = parse_targets(o.targets); po.lora.rslora = o.rslora;
    po.bottleneck = o.bottleneck; po.placement = strcmp(o.placement, "pfeiffer") == 0 ? FT_ADAPTER_PFEIFFER : FT_ADAPTER_HOULSBY;
    po.act = strcmp(o.act, "gelu") == 0 ? FT_ACT_GELU : strcmp(o.act, "silu") == 0 ? FT_ACT_SILU : strcmp(o.act, "tanh") == 0 ? FT_ACT_TANH : FT_ACT_RELU;
    po.n_virtual = o.virtual_tokens; po.prefix_hidden = o.prefix_hidden;
    po.prompt_init = strcmp(o.prompt_init, "vocab") == 0 ? FT_PROMPT_VOCAB : strcmp(o.prompt_init, "text") == 0 ? FT_PROMPT_TEXT : FT_PROMPT_RANDOM;
    po.prompt_text = o.prompt_text; po.freeze = o.freeze; po.seed = o.seed;
    po.reward_head = is_obj(&o, "rm", "ppo", NULL);        /* rm: the reward head; ppo: the value head */
    if (o.init_adapter) {      /* an earlier stage (SFT) folded in: the new base and reference */
        ft_peft *p0;
        if (ft_peft_load(&p0, m, o.init_adapter) != FT_OK || ft_peft_bake(p0) != FT_OK) return fail("train --init-adapter");
        fprintf(stderr, "ft: %s baked into the base\n", o.init_adapter);
    }
    if (ft_peft_attach(&p, m, &po) != FT_OK) return fail("train");
    if (po.method == FT_PEFT_LORA) fprintf(stderr, "ft: %s r=%d alpha=%g on %s", o.method, o.rank, o.alpha, o.targets);
    else fprintf(stderr, "ft: %s", o.method);
    fprintf(stderr, ": %lld trainable parameters (%.2f%% of %lld)\n",
            (long long)ft_params_numel(ft_peft_params(p)), 100.0 * (double)ft_params_numel(ft_peft_params(p)) / (double)ft_model_config_get(m)->n_params,
            (long long)ft_model_config_get(m)->n_params);
    if (is_obj(&o, "grpo", "ppo", NULL)) {
        int rc = train_rl(ctx, m, p, train, ev, &o, &po);
        ft_dataset_free(train); ft_dataset_free(ev); ft_peft_free(p); ft_ctx_free(ctx); ft_model_free(m); free(o.cfg_text);
        return rc;
    }
    snprintf(path, sizeof path, "%s/checkpoints/last.gguf", o.out);
    if (o.resume) { FILE *c = fopen(path, "rb"); have_ckpt = c != NULL; if (c) fclose(c); }
    no_before = have_ckpt || !o.eval_before;
    if (ev && !no_before) {                 /* before: the base model (a reward model: its untrained head) */
        if (!po.reward_head) ft_peft_set_enabled(p, 0);
        if (evaluate(ctx, m, ev, gen, &o, &e0)) return 1;
        ft_peft_set_enabled(p, 1);
        if (ft_dataset_format(ev) == FT_DATA_PREFERENCE) fprintf(stderr, "ft: before: the base model's likelihood prefers the chosen answer in %.1f%% of pairs", 100 * e0.lik_acc);
        else fprintf(stderr, "ft: before: eval loss %.4f (ppl %.2f)", e0.loss, exp(e0.loss));
        if (e0.gen.n) fprintf(stderr, ", exact match %lld/%lld (%.1f%%)", (long long)e0.gen.exact, (long long)e0.gen.n, 100 * e0.gen.exact_rate);
        fprintf(stderr, "\n");
    }
    for (i = 0; i < o.n_task && !no_before; i++) if (tev[i]) {     /* and each task's eval set */
        if (!po.reward_head) ft_peft_set_enabled(p, 0);
        if (evaluate(ctx, m, tev[i], NULL, &o, &t0[i])) return 1;
        ft_peft_set_enabled(p, 1);
        fprintf(stderr, "ft: before: %s: eval loss %.4f (ppl %.2f)", o.task_eval[i], t0[i].loss, exp(t0[i].loss));
        if (t0[i].gen.n) fprintf(stderr, ", exact match %lld/%lld (%.1f%%)", (long long)t0[i].gen.exact, (long long)t0[i].gen.n, 100 * t0[i].gen.exact_rate);
        fprintf(stderr, "\n");
    }
    /* the resolved config, metrics */
    { char cp[2048]; snprintf(cp, sizeof cp, "%s/config", o.out); if ((f = fopen(cp, "w"))) { opts_write(&o, f); fclose(f); } }
    memset(&rn, 0, sizeof rn); rn.o = &o; rn.tty = isatty(2);
    {
        char mp[2048]; snprintf(mp, sizeof mp, "%s/metrics.jsonl", o.out);
        rn.metrics = fopen(mp, have_ckpt ? "a" : "w");
        if (!rn.metrics) { fprintf(stderr, "ft: %s: cannot write\n", mp); return 1; }
    }
    memset(&to, 0, sizeof to);
    to.steps = o.steps; to.epochs = o.epochs; to.batch = o.batch; to.seq_len = o.seq_len; to.grad_accum = o.grad_accum;
    to.pack = o.pack || strcmp(o.objective, "cpt") == 0; to.lr = (float)o.lr; to.warmup = o.warmup;
    to.sched = strcmp(o.schedule, "constant") == 0 ? FT_SCHED_CONSTANT : strcmp(o.schedule, "linear") == 0 ? FT_SCHED_LINEAR : FT_SCHED_COSINE;
    to.optim.weight_decay = (float)o.weight_decay; to.max_grad_norm = (float)o.max_grad_norm; to.lr_scale_b = (float)o.lr_ratio_b;
    to.seed = o.seed; to.eval = ev; to.eval_every = ev ? (o.eval_every ? o.eval_every : 0) : 0;
    to.checkpoint_path = path; to.save_every = o.save_every; to.resume_from = have_ckpt ? path : NULL;
    to.on_step = on_step; to.user = &rn;
    if (!ft_objective_parse(o.objective, &to.objective)) to.objective = FT_OBJ_SFT;
    if (to.objective == FT_OBJ_CPT) to.objective = FT_OBJ_SFT;      /* packing and plain text set above */
    to.beta = (float)o.beta; to.gamma = (float)o.gamma; to.label_smoothing = (float)o.label_smoothing;
    to.desirable_weight = (float)o.desirable_weight; to.undesirable_weight = (float)o.undesirable_weight; to.rm_center = (float)o.rm_center;
    if (have_ckpt) fprintf(stderr, "ft: resuming from %s\n", path);
    r = ft_train(ctx, m, ft_peft_params(p), train, &to, &st);
    fclose(rn.metrics);
    if (r != FT_OK) return fail("train");
    /* the adapter in both formats, the loss curve */
    snprintf(path, sizeof path, "%s/adapter.gguf", o.out);
    /* LoRA: llama.cpp's adapter format and PEFT's; the others (and DoRA, a reward head): finetune.h's own */
    if (po.method == FT_PEFT_LORA && !po.lora.dora && !po.reward_head && !(po.lora.targets & (FT_TARGET_EMBED | FT_TARGET_HEAD))) { if (ft_peft_save(p, path, FT_FORMAT_LLAMACPP, NULL) != FT_OK) return fail("train"); }
    else if (ft_peft_save(p, path, FT_FORMAT_FINETUNE, NULL) != FT_OK) return fail("train");
    snprintf(path, sizeof path, "%s/peft", o.out);
    { char nm[256]; if (has_peft_format(po.method) && !(po.lora.targets & (FT_TARGET_EMBED | FT_TARGET_HEAD)) && ft_peft_save(p, path, FT_FORMAT_PEFT, model_name(m, nm, sizeof nm)) != FT_OK) return fail("train"); }
    {
        ft_plot_series ser[2]; int ns = 1;
        ser[0].name = "train"; ser[0].x = rn.xs; ser[0].y = rn.ys; ser[0].n = rn.n;
        if (rn.ne) { ser[1].name = "eval"; ser[1].x = rn.ex; ser[1].y = rn.ey; ser[1].n = rn.ne; ns = 2; }
        snprintf(path, sizeof path, "%s/loss.svg", o.out);
        if (rn.n && ft_svg_plot(path, "loss", "step", is_obj(&o, "sft", "cpt", NULL) ? "cross-entropy" : o.objective, ser, ns) != FT_OK) return fail("train");
    }
    fprintf(stderr, "ft: %lld steps, %.0f tokens", (long long)st.step, st.tokens);
    if (rn.s_last > rn.s_first) fprintf(stderr, ", %.2f s per step", (rn.t_last - rn.t_first) / (double)(rn.s_last - rn.s_first));
    fprintf(stderr, "; wrote %s/{adapter.gguf,%smetrics.jsonl,loss.svg,config,checkpoints/}\n", o.out, has_peft_format(po.method) ? "peft/," : "");
    if (ev) {
        const char *b = "-";
        if (evaluate(ctx, m, ev, gen, &o, &e1)) return 1;
        if (no_before) memset(&e0, 0, sizeof e0);       /* "before" belongs to the first part of the run */
        printf("\n| %-26s | %10s | %10s |\n|%s|%s|%s|\n", o.eval ? o.eval : "held-out split", "before", "after", "----------------------------", "------------", "------------");
#define ROW(name, fmt, v0, v1) do { if (no_before) printf("| %-26s | %10s | " fmt " |\n", name, b, v1); \
                                    else printf("| %-26s | " fmt " | " fmt " |\n", name, v0, v1); } while (0)
        if (ft_dataset_format(ev) == FT_DATA_PREFERENCE) {
            ROW("likelihood prefers chosen", "%9.1f%%", 100 * e0.lik_acc, 100 * e1.lik_acc);
            ROW(e1.rew_name, "%9.1f%%", 100 * e0.rew_acc, 100 * e1.rew_acc);
            ROW(strcmp(o.objective, "rm") ? "reward margin" : "reward model margin", "%10.4f", e0.rew_margin, e1.rew_margin);
        } else {
            ROW("eval loss", "%10.4f", e0.loss, e1.loss);
            ROW("eval perplexity", "%10.2f", exp(e0.loss), exp(e1.loss));
            if (gen) ROW("general text perplexity", "%10.2f", exp(e0.general), exp(e1.general));
            if (e1.gen.n) {
                ROW("exact match", "%9.1f%%", 100 * e0.gen.exact_rate, 100 * e1.gen.exact_rate);
                ROW("contains the answer", "%9.1f%%", 100 * e0.gen.contains_rate, 100 * e1.gen.contains_rate);
            }
        }
#undef ROW
    }
    for (i = 0; i < o.n_task; i++) if (tev[i] && evaluate(ctx, m, tev[i], NULL, &o, &t1[i])) return 1;
    if (o.n_task) print_tasks(&o, t0, t1, no_before);
    if (ev || o.n_task) write_eval_json(&o, ev, &e0, &e1, t0, t1, no_before);
    for (i = 0; i < o.n_task; i++) ft_dataset_free(tev[i]);
    free(rn.xs); free(rn.ys); free(rn.ex); free(rn.ey); free(o.cfg_text);
    ft_dataset_free(train); ft_dataset_free(ev); ft_dataset_free(gen); ft_peft_free(p); ft_ctx_free(ctx); ft_model_free(m);
    return 0;
}

static void print_item(void *user, int64_t i, const char *gen, const char *ref) {
    int *verbose = (int *)user;
    if (*verbose) printf("%4lld %s  got: %s   want: %s\n", (long long)i, strcmp(gen, ref) == 0 ? "ok  " : "MISS", gen, ref);
}

static int cmd_eval(int argc, char **argv) {
    opts o; ft_model *m; ft_ctx *ctx; ft_ctx_opts co; ft_dataset *d; ft_data_opts dopt; double loss; ft_eval_gen acc; int verbose = 1;
    opts_default(&o); o.eval_gen = 0;
    if (!opts_parse(&o, argc, argv)) return 2;
    if (!o.model || !o.data) { fprintf(stderr, "ft eval: needs -m MODEL and --data FILE\n"); return 2; }
    if (!load_model(&m, &o)) return 1;
    if (o.lora) { ft_peft *p; if (ft_peft_load(&p, m, o.lora) != FT_OK) return fail("eval --lora"); }
    memset(&co, 0, sizeof co); co.n_threads = o.threads;
    if (ft_ctx_init(&ctx, &co) != FT_OK) return fail("eval");
    memset(&dopt, 0, sizeof dopt); dopt.max_len = o.seq_len;
    if (ft_dataset_load(&d, o.data, ft_model_tokenizer(m), ft_model_chat_template(m), &dopt) != FT_OK) return fail("eval");
    if (ft_eval_loss(ctx, m, d, o.batch, o.seq_len, &loss, NULL) != FT_OK) return fail("eval");
    printf("%s: %lld examples, loss %.4f, perplexity %.3f\n", o.data, (long long)ft_dataset_size(d), loss, exp(loss));
    if (ft_dataset_format(d) != FT_DATA_TEXT) {
        if (ft_eval_generate(ctx, m, d, (int)o.max_new, o.eval_gen, &acc, print_item, &verbose) != FT_OK) return fail("eval");
        printf("accuracy: exact match %lld/%lld (%.1f%%), contains %lld/%lld (%.1f%%)\n", (long long)acc.exact, (long long)acc.n,
               100 * acc.exact_rate, (long long)acc.contains, (long long)acc.n, 100 * acc.contains_rate);
    }
    ft_dataset_free(d); ft_ctx_free(ctx); ft_model_free(m);
    return 0;
}

/* ---- merge, export, logits: -m MODEL --adapter ADAPTER -o OUT and a few more ------------------------- */
typedef struct io_opts { const char *model, *adapter, *out, *type, *format, *prompt, *ids, *base_name; int chat, threads, embeddings; } io_opts;
static int io_parse(const char *cmd, io_opts *o, int argc, char **argv) {
    int i;
    memset(o, 0, sizeof *o);
    for (i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--chat") == 0) { o->chat = 1; continue; }
        if (strcmp(a, "--embeddings") == 0) { o->embeddings = 1; continue; }
        if (!v) { fprintf(stderr, "ft %s: %s needs a value\n", cmd, a); return 0; }
        if (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0) o->model = v;
        else if (strcmp(a, "--adapter") == 0 || strcmp(a, "--lora") == 0) o->adapter = v;
        else if (strcmp(a, "-o") == 0 || strcmp(a, "--out") == 0) o->out = v;
        else if (strcmp(a, "--type") == 0) o->type = v;
        else if (strcmp(a, "--format") == 0) o->format = v;
        else if (strcmp(a, "-p") == 0 || strcmp(a, "--prompt") == 0) o->prompt = v;
        else if (strcmp(a, "--ids") == 0) o->ids = v;
        else if (strcmp(a, "--base-name") == 0) o->base_name = v;
        else if (strcmp(a, "--threads") == 0) o->threads = atoi(v);
        else { fprintf(stderr, "ft %s: unknown option %s\n", cmd, a); return 0; }
        i++;
    }
    return 1;
}
static void describe_adapter(ft_peft *p) {
    const ft_lora_opts *lo = ft_lora_options(p);
    if (ft_peft_kind(p) != FT_PEFT_LORA) {
        fprintf(stderr, "%s", ft_peft_method_name(ft_peft_kind(p)));
        if (ft_peft_virtual_tokens(p)) fprintf(stderr, " with %lld virtual tokens", (long long)ft_peft_virtual_tokens(p));
        fprintf(stderr, ", %lld tensors, %lld values", (long long)ft_params_count(ft_peft_params(p)), (long long)ft_params_numel(ft_peft_params(p)));
        return;
    }
    fprintf(stderr, "%s r=%d scale %g%s, %lld tensors", lo->dora ? "DoRA" : "LoRA", lo->r, (double)ft_lora_scale(p),
            lo->rslora ? " (rsLoRA)" : "", (long long)ft_params_count(ft_peft_params(p)));
}

static int cmd_merge(int argc, char **argv) {
    io_opts o; ft_model *m; ft_peft *p = NULL; ft_save_opts mo; const char *t; FILE *f;
    if (!io_parse("merge", &o, argc, argv)) return 2;
    if (!o.model || !o.out) { fprintf(stderr, "ft merge: needs -m MODEL and -o OUT.gguf\n"); return 2; }
    memset(&mo, 0, sizeof mo);
    mo.embeddings = o.embeddings;
    t = o.type ? o.type : "f16";
    if (strcmp(t, "base") == 0) mo.keep_type = 1;
    else if (strcmp(t, "f32") == 0) mo.type = FT_TYPE_F32;
    else if (strcmp(t, "f16") == 0) mo.type = FT_TYPE_F16;
    else if (strcmp(t, "bf16") == 0) mo.type = FT_TYPE_BF16;
    else if (strcmp(t, "q8_0") == 0) mo.type = FT_TYPE_Q8_0;
    else if (strcmp(t, "q4_0") == 0) mo.type = FT_TYPE_Q4_0;
    else if (strcmp(t, "q4_1") == 0) mo.type = FT_TYPE_Q4_1;
    else { fprintf(stderr, "ft merge: --type %s is not one of f16, f32, bf16, q8_0, q4_0, q4_1, base\n", t); return 2; }
    if (ft_model_load(&m, o.model, NULL) != FT_OK) return fail("merge");
    if (o.adapter && ft_peft_load(&p, m, o.adapter) != FT_OK) return fail("merge --adapter");
    if (ft_model_save_merged(m, o.out, &mo) != FT_OK) return fail("merge");
    fprintf(stderr, "ft: wrote %s: %s", o.out, o.model);
    if (p) { fprintf(stderr, " + %s (", o.adapter); describe_adapter(p); fprintf(stderr, ")"); }
    fprintf(stderr, ", linear weights as %s", t);
    if ((f = fopen(o.out, "rb"))) { fseek(f, 0, SEEK_END); fprintf(stderr, ", %.1f MiB", (double)ftell(f) / (1 << 20)); fclose(f); }
    fprintf(stderr, "\n");
    ft_peft_free(p); ft_model_free(m);
    return 0;
}

static int cmd_export(int argc, char **argv) {
    io_opts o; ft_model *m; ft_peft *p; ft_result r;
    if (!io_parse("export", &o, argc, argv)) return 2;
    if (!o.model || !o.adapter || !o.out || !o.format || (strcmp(o.format, "peft") && strcmp(o.format, "gguf"))) {
        fprintf(stderr, "ft export: needs --format peft|gguf, -m MODEL, --adapter ADAPTER and -o OUT\n"); return 2;
    }
    if (ft_model_load(&m, o.model, NULL) != FT_OK) return fail("export");
    if (ft_peft_load(&p, m, o.adapter) != FT_OK) return fail("export --adapter");
    if (strcmp(o.format, "peft") == 0) { char nm[256]; r = ft_peft_save(p, o.out, FT_FORMAT_PEFT, o.base_name ? o.base_name : model_name(m, nm, sizeof nm)); }
    else if (ft_peft_kind(p) == FT_PEFT_LORA) r = ft_peft_save(p, o.out, FT_FORMAT_LLAMACPP, NULL);
    else r = ft_peft_save(p, o.out, FT_FORMAT_FINETUNE, NULL);              /* llama.cpp has LoRA only: finetune.h's own file */
    if (r != FT_OK) return fail("export");
    fprintf(stderr, "ft: wrote %s (%s) from %s: ", o.out, strcmp(o.format, "peft") == 0 ? "PEFT adapter_model.safetensors + adapter_config.json" :
            ft_peft_kind(p) == FT_PEFT_LORA ? "llama.cpp LoRA GGUF" : "finetune.h adapter GGUF", o.adapter);
    describe_adapter(p); fprintf(stderr, "\n");
    ft_peft_free(p); ft_model_free(m);
    return 0;
}

static int cmd_logits(int argc, char **argv) {
    io_opts o; ft_model *m; ft_peft *p = NULL; ft_ctx *ctx; ft_ctx_opts co; ft_batch b; ft_tensor *y;
    int32_t *ids = NULL; int64_t n = 0, i, V; FILE *f;
    if (!io_parse("logits", &o, argc, argv)) return 2;
    if (!o.model || !o.out || !o.prompt == !o.ids) { fprintf(stderr, "ft logits: needs -m MODEL, -o OUT and one of -p PROMPT or --ids LIST\n"); return 2; }
    if (ft_model_load(&m, o.model, NULL) != FT_OK) return fail("logits");
    if (o.adapter && ft_peft_load(&p, m, o.adapter) != FT_OK) return fail("logits --adapter");
    V = ft_model_config_get(m)->n_vocab;
    if (o.ids) {
        const char *c = o.ids; char *e;
        ids = (int32_t *)malloc(strlen(o.ids) * sizeof(int32_t) + 4);
        while (*c) {
            long v = strtol(c, &e, 10);
            if (e == c || v < 0 || v >= V) { fprintf(stderr, "ft logits: --ids: bad id at '%s' (0..%lld)\n", c, (long long)V - 1); return 2; }
            ids[n++] = (int32_t)v;
            c = *e == ',' ? e + 1 : e;
            if (*e && *e != ',') { fprintf(stderr, "ft logits: --ids: expected a comma at '%s'\n", e); return 2; }
        }
    } else {
        const ft_tokenizer *tok = ft_model_tokenizer(m); char *text; size_t cap = strlen(o.prompt) + 65536;
        if (!tok) { fprintf(stderr, "ft logits: %s has no tokenizer: use --ids\n", o.model); return 1; }
        text = (char *)malloc(cap);
        if (o.chat) {
            ft_chat_msg msg; msg.role = "user"; msg.content = o.prompt;
            if (ft_chat_apply(ft_model_chat_template(m), &msg, 1, 1, text, (int64_t)cap) < 0) return fail("logits --chat");
        } else strcpy(text, o.prompt);
        n = ft_tokenize(tok, text, -1, NULL, 0, 1, 1);
        ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
        ft_tokenize(tok, text, -1, ids, n, 1, 1);
        free(text);
    }
    if (n < 1) { fprintf(stderr, "ft logits: no tokens\n"); return 1; }
    memset(&co, 0, sizeof co); co.n_threads = o.threads;
    if (ft_ctx_init(&ctx, &co) != FT_OK) return fail("logits");
    memset(&b, 0, sizeof b); b.B = 1; b.T = n; b.ids = ids;
    ft_ctx_set_grad(ctx, 0);
    if (!(y = ft_model_forward(ctx, m, &b))) return fail("logits");
    if (ft_mkdirs_parent(o.out) != FT_OK) return fail("logits -o");
    if (!(f = fopen(o.out, "wb")) || fwrite(y->data, sizeof(float), (size_t)(n * V), f) != (size_t)(n * V) || fclose(f) != 0) {
        fprintf(stderr, "ft logits: %s: cannot write: %s\n", o.out, strerror(errno)); return 1;
    }
    printf("ids:");
    for (i = 0; i < n; i++) printf(" %d", ids[i]);
    printf("\nlogits: %lld x %lld f32 -> %s\n", (long long)n, (long long)V, o.out);
    free(ids); ft_ctx_free(ctx); ft_peft_free(p); ft_model_free(m);
    return 0;
}

/* ft quantize --type nf4 -m IN -o OUT: load with every linear weight converted, write it back */
static int cmd_quantize(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *type = NULL; ft_model_opts mo; ft_model *m; int i;
    int64_t b0, b1, n; double t0;
    memset(&mo, 0, sizeof mo);
    for (i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--output") == 0) mo.quantize_output = 1;
        else if (i + 1 < argc && (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0)) in = argv[++i];
        else if (i + 1 < argc && (strcmp(a, "-o") == 0 || strcmp(a, "--out") == 0)) out = argv[++i];
        else if (i + 1 < argc && strcmp(a, "--type") == 0) type = argv[++i];
        else { fprintf(stderr, "ft quantize: unknown option %s\n", a); return usage(); }
    }
    if (!in || !out || !type) return usage();
    if (strcmp(type, "nf4") != 0) { fprintf(stderr, "ft quantize: --type %s is not available (nf4 is)\n", type); return 2; }
    if (ft_model_load(&m, in, NULL) != FT_OK) return fail("quantize");
    b0 = ft_model_linear_bytes(m, &n);
    ft_model_free(m);
    mo.quantize = FT_TYPE_NF4;
    t0 = ft_time_seconds();
    if (ft_model_load(&m, in, &mo) != FT_OK) return fail("quantize");
    b1 = ft_model_linear_bytes(m, NULL);
    fprintf(stderr, "ft: %lld linear weights: %.4f -> %.4f bytes per weight (%.1f -> %.1f MiB), quantized in %.2f s\n", (long long)n,
            (double)b0 / (double)n, (double)b1 / (double)n, (double)b0 / 1048576.0, (double)b1 / 1048576.0, ft_time_seconds() - t0);
    if (ft_model_save_gguf(m, out) != FT_OK) { ft_model_free(m); return fail("quantize"); }
    fprintf(stderr, "ft: wrote %s\n", out);
    ft_model_free(m);
    return 0;
}

/* ---- ft synth: Self-Instruct / Evol-Instruct datasets from the model itself ------------------------ */
static void synth_log(void *user, int level, const char *msg) { (void)user; fprintf(stderr, "%s%s\n", level ? "warning: " : "", msg); }
static int cmd_synth(int argc, char **argv) {
    const char *model = NULL, *method = NULL, *seeds = NULL, *out = NULL; int threads = 0, i, k;
    ft_synth_opts o; ft_synth_stats st; ft_ctx_opts co; ft_model *m; ft_ctx *ctx; ft_result r; int64_t rej = 0;
    memset(&o, 0, sizeof o);
    o.sample.temperature = 0.7f; o.sample.top_p = 0.9f; o.seed = 1; o.max_new_answer = 128;
    for (i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "ft synth: %s needs a value\n", a); return usage(); }
        if (strcmp(a, "--method") == 0) method = v;
        else if (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0) model = v;
        else if (strcmp(a, "--seed-tasks") == 0) seeds = v;
        else if (strcmp(a, "-n") == 0) o.n = strtoll(v, NULL, 10);
        else if (strcmp(a, "-o") == 0 || strcmp(a, "--out") == 0) out = v;
        else if (strcmp(a, "--batch") == 0) o.batch = atoi(v);
        else if (strcmp(a, "--max-new") == 0) o.max_new_answer = atoi(v);
        else if (strcmp(a, "--max-new-inst") == 0) o.max_new = atoi(v);
        else if (strcmp(a, "--temperature") == 0 || strcmp(a, "--temp") == 0) o.sample.temperature = (float)atof(v);
        else if (strcmp(a, "--top-p") == 0) o.sample.top_p = (float)atof(v);
        else if (strcmp(a, "--seed") == 0) o.seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--rouge") == 0) o.rouge = (float)atof(v);
        else if (strcmp(a, "--evol-rouge") == 0) o.evol_rouge = (float)atof(v);
        else if (strcmp(a, "--few-shot") == 0) o.few_shot = atoi(v);
        else if (strcmp(a, "--min-words") == 0) o.min_words = atoi(v);
        else if (strcmp(a, "--max-words") == 0) o.max_words = atoi(v);
        else if (strcmp(a, "--threads") == 0) threads = atoi(v);
        else { fprintf(stderr, "ft synth: unknown option %s\n", a); return usage(); }
        i++;
    }
    if (!model || !method || !seeds || !out || o.n < 1) return usage();
    if (strcmp(method, "self-instruct") == 0) o.method = FT_SYNTH_SELF_INSTRUCT;
    else if (strcmp(method, "evol-instruct") == 0) o.method = FT_SYNTH_EVOL_INSTRUCT;
    else { fprintf(stderr, "ft synth: --method %s (self-instruct or evol-instruct)\n", method); return 2; }
    o.log = synth_log;
    if (ft_model_load(&m, model, NULL) != FT_OK) return fail("synth");
    memset(&co, 0, sizeof co); co.n_threads = threads;
    if (ft_ctx_init(&ctx, &co) != FT_OK) { ft_model_free(m); return fail("synth"); }
    r = o.method == FT_SYNTH_SELF_INSTRUCT ? ft_synth_self_instruct(ctx, m, seeds, out, &o, &st)
                                           : ft_synth_evol_instruct(ctx, m, seeds, out, &o, &st);
    ft_ctx_free(ctx); ft_model_free(m);
    if (r != FT_OK) return fail("synth");
    for (k = 1; k < FT_SYNTH_REASON_COUNT; k++) rej += st.rejected[k];
    printf("%s: %s\n", method, out);
    printf("  %-22s %8lld\n", "already in the file", (long long)st.resumed);
    printf("  %-22s %8lld\n", "generated", (long long)st.generated);
    printf("  %-22s %8lld\n", "kept", (long long)st.kept);
    printf("  %-22s %8lld\n", "rejected", (long long)rej);
    for (k = 1; k < FT_SYNTH_REASON_COUNT; k++)
        if (st.rejected[k]) printf("    %-20s %8lld\n", ft_synth_reason_name((ft_synth_reason)k), (long long)st.rejected[k]);
    if (o.method == FT_SYNTH_EVOL_INSTRUCT)
        for (k = 0; k < 6; k++) if (st.evol_ops[k]) printf("  kept by %-14s %8lld\n", ft_synth_evol_op_name(k), (long long)st.evol_ops[k]);
    printf("  %-22s %8lld\n", "generate calls", (long long)st.calls);
    printf("  %-22s %8.1f s\n", "time", st.seconds);
    if (st.stopped) fprintf(stderr, "ft synth: stopped after %lld proposals in %lld generate calls with %lld of %lld examples; run it again "
                            "to continue (the file is resumed)\n", (long long)st.generated, (long long)st.calls, (long long)(st.resumed + st.kept), (long long)o.n);
    return 0;
}

/* ---- ft sweep: a grid or random search, each trial a short `ft train` in DIR/trial_NNN -------------- */
static const char *sweep_usage =
    "usage: ft sweep -m MODEL --data TRAIN.jsonl --eval EVAL.jsonl --out DIR --grid KEY=V1,V2,.. [--grid ...]\n"
    "           [--random N] [--seed S] [any ft train option: the base of every trial]\n"
    "  KEY: any ft train option without its dashes (lr, rank, alpha, targets, batch, schedule, steps, ...);\n"
    "  values are separated by ',' (by '/' for targets, whose own values hold commas:\n"
    "  targets=all/attn/q_proj,v_proj). Without --random: every combination; --random N: N draws (a repeated draw runs once), a value LO..HI draws\n"
    "  log-uniformly (lr=1e-4..3e-3). Each trial runs `ft train` with the base options, --out\n"
    "  DIR/trial_NNN and its values, without the \"before\" evaluation. DIR/results.jsonl gets a line as\n"
    "  each trial ends (a failure is recorded with its last log line); DIR/results.md (sorted by eval\n"
    "  loss) and DIR/sweep.svg (eval loss against each swept key, one series per combination of the\n"
    "  others) are rewritten after each trial. Rerun the same command to resume: trials with an \"ok\"\n"
    "  line are skipped.\n";

#define SWEEP_KEYS 8
#define SWEEP_VALS 32
typedef struct sweep_key { const char *key; char *val[SWEEP_VALS]; int n, range; } sweep_key;
typedef struct sweep_row { char *line; double loss; } sweep_row;
static const char *self_path = "ft";                  /* argv[0] of main: the binary trials run */

/* "key": value of one results line (a string unquoted); 0 when absent */
static int jget(const char *line, const char *key, char *out, size_t cap) {
    char pat[128]; const char *p; size_t n = 0;
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    if (!(p = strstr(line, pat))) return 0;
    p += strlen(pat);
    if (*p == '"') { p++; while (*p && *p != '"' && n + 1 < cap) { if (*p == '\\' && p[1]) p++; out[n++] = *p++; } }
    else while (*p && *p != ',' && *p != '}' && n + 1 < cap) out[n++] = *p++;
    out[n] = 0;
    return 1;
}
static double jnum(const char *line, const char *key) {
    char b[64];
    return jget(line, key, b, sizeof b) ? strtod(b, NULL) : NAN;
}
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
        else fputc(*s, f);
    }
    fputc('"', f);
}
static int is_number(const char *s) {                /* and written as JSON writes numbers */
    char *e; const char *c;
    if (!*s) return 0;
    strtod(s, &e);
    if (*e || !((s[0] >= '0' && s[0] <= '9') || (s[0] == '-' && s[1] >= '0' && s[1] <= '9'))) return 0;
    for (c = s; *c; c++) if (*c == '.' && !(c[1] >= '0' && c[1] <= '9')) return 0;
    return 1;
}
static int is_flag_key(const char *k) {               /* opts_parse's flags: --KEY without a value */
    return !strcmp(k, "resume") || !strcmp(k, "pack") || !strcmp(k, "train-on-prompt") || !strcmp(k, "skip-bad") ||
           !strcmp(k, "rslora") || !strcmp(k, "grad-checkpoint");
}
static char *dup_str(const char *s) { size_t n = strlen(s) + 1; char *d = (char *)malloc(n); if (d) memcpy(d, s, n); return d; }

/* the lines of results.jsonl, the last one per "params" */
static int sweep_read(const char *path, sweep_row **rows) {
    FILE *f = fopen(path, "r"); char buf[8192], pa[1024], pb[1024]; int n = 0, cap = 0, i;
    *rows = NULL;
    if (!f) return 0;
    while (fgets(buf, sizeof buf, f)) {
        if (!jget(buf, "params", pa, sizeof pa)) continue;
        for (i = 0; i < n; i++) if (jget((*rows)[i].line, "params", pb, sizeof pb) && !strcmp(pa, pb)) break;
        if (i == n) {
            if (n == cap) { cap = cap ? 2 * cap : 64; *rows = (sweep_row *)realloc(*rows, (size_t)cap * sizeof(sweep_row)); }
            n++;
        } else free((*rows)[i].line);
        (*rows)[i].line = dup_str(buf);
        if (jget(buf, "status", pb, sizeof pb) && !strcmp(pb, "ok")) (*rows)[i].loss = jnum(buf, "eval_loss");
        else (*rows)[i].loss = NAN;
        if ((*rows)[i].loss != (*rows)[i].loss) (*rows)[i].loss = INFINITY;
    }
    fclose(f);
    return n;
}
static int row_cmp(const void *a, const void *b) {
    double x = ((const sweep_row *)a)->loss, y = ((const sweep_row *)b)->loss;
    return x < y ? -1 : x > y ? 1 : 0;
}

/* results.md (sorted by eval loss) and sweep.svg (a panel per key) from results.jsonl */
static void sweep_report(const char *dir, const sweep_key *keys, int nk) {
    char path[2048], v[256], st[64]; sweep_row *rows; int n, i, k, j; FILE *f;
    snprintf(path, sizeof path, "%s/results.jsonl", dir);
    n = sweep_read(path, &rows);
    qsort(rows, (size_t)n, sizeof *rows, row_cmp);
    snprintf(path, sizeof path, "%s/results.md", dir);
    if ((f = fopen(path, "w"))) {
        fprintf(f, "| trial |");
        for (k = 0; k < nk; k++) fprintf(f, " %s |", keys[k].key);
        fprintf(f, " eval loss | perplexity | exact match | train loss | seconds |\n|---:|");
        for (k = 0; k < nk; k++) fprintf(f, "---|");
        fprintf(f, "---:|---:|---:|---:|---:|\n");
        for (i = 0; i < n; i++) {
            const char *l = rows[i].line; double em = jnum(l, "exact_match");
            jget(l, "trial", v, sizeof v); fprintf(f, "| %s |", v);
            for (k = 0; k < nk; k++) { if (!jget(l, keys[k].key, v, sizeof v)) strcpy(v, "-"); fprintf(f, " %s |", v); }
            if (!jget(l, "status", st, sizeof st) || strcmp(st, "ok")) { fprintf(f, " failed | | | | %.0f |\n", jnum(l, "seconds")); continue; }
            fprintf(f, " %.4f | %.3f | ", rows[i].loss, exp(rows[i].loss));
            if (em == em) fprintf(f, "%.1f%% (%g) |", 100 * em, jnum(l, "n_gen")); else fprintf(f, "- |");
            fprintf(f, " %.4f | %.0f |\n", jnum(l, "train_loss"), jnum(l, "seconds"));
        }
        fclose(f);
    }
    /* one panel per key: x its value (log10 for lr, or a positive key spanning 30x; the index of the
       value for a word), one series per combination of the other keys' values */
    {
        FILE *out; char panel[2048], line[4096]; int np = 0;
        snprintf(path, sizeof path, "%s/sweep.svg", dir);
        if (!(out = fopen(path, "w"))) { free(rows); return; }
        fprintf(out, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"%d\">\n", 420 * nk);
        for (k = 0; k < nk; k++) {
            ft_plot_series ser[16]; char names[16][256]; double *xs = (double *)calloc(32 * (size_t)n + 1, sizeof(double));
            int ns = 0, numeric = 1, logx; double lo = INFINITY, hi = -INFINITY; char xlabel[512], title[300];
            for (j = 0; j < n; j++) if (jget(rows[j].line, keys[k].key, v, sizeof v)) {
                if (!is_number(v)) numeric = 0; else { lo = fmin(lo, strtod(v, NULL)); hi = fmax(hi, strtod(v, NULL)); }
            }
            logx = numeric && lo > 0 && (!strcmp(keys[k].key, "lr") || hi >= 30 * lo);
            if (logx) snprintf(xlabel, sizeof xlabel, "log10(%s)", keys[k].key);
            else if (numeric) snprintf(xlabel, sizeof xlabel, "%s", keys[k].key);
            else {
                size_t len = (size_t)snprintf(xlabel, sizeof xlabel, "%s:", keys[k].key);
                for (j = 0; j < keys[k].n && len < sizeof xlabel - 40; j++) len += (size_t)snprintf(xlabel + len, sizeof xlabel - len, " %d=%s", j, keys[k].val[j]);
            }
            /* series: the ok rows grouped by the other keys' values, points in x order */
            for (j = 0; j < n; j++) {
                char name[256] = "", *e; double x; int s, q, kk; int64_t p;
                if (!isfinite(rows[j].loss) || !jget(rows[j].line, keys[k].key, v, sizeof v)) continue;
                if (numeric) x = logx ? log10(strtod(v, NULL)) : strtod(v, NULL);
                else { for (q = 0; q < keys[k].n && strcmp(keys[k].val[q], v); q++) {} x = q; }
                for (kk = 0; kk < nk; kk++) if (kk != k) {
                    char w[128]; size_t len = strlen(name);
                    if (!jget(rows[j].line, keys[kk].key, w, sizeof w)) strcpy(w, "-");
                    snprintf(name + len, sizeof name - len, "%s%s=%s", len ? " " : "", keys[kk].key, w);
                }
                if (!name[0]) strcpy(name, "eval loss");
                for (e = name; *e; e++) if (*e == '<' || *e == '&' || *e == '>') *e = '_';
                for (s = 0; s < ns && strcmp(names[s], name); s++) {}
                if (s == 16) continue;
                if (s == ns) { strcpy(names[ns], name); ser[ns].name = names[ns]; ser[ns].x = xs + 2 * (size_t)n * ns; ser[ns].y = xs + 2 * (size_t)n * ns + n; ser[ns].n = 0; ns++; }
                {   /* insert in x order */
                    double *sx = (double *)ser[s].x, *sy = (double *)ser[s].y;
                    for (p = ser[s].n; p > 0 && sx[p - 1] > x; p--) { sx[p] = sx[p - 1]; sy[p] = sy[p - 1]; }
                    sx[p] = x; sy[p] = rows[j].loss; ser[s].n++;
                }
            }
            snprintf(panel, sizeof panel, "%s/sweep_%s.svg", dir, keys[k].key);
            snprintf(title, sizeof title, "eval loss against %s", keys[k].key);
            if (ft_svg_plot(panel, title, xlabel, "eval loss", ser, ns) == FT_OK) {
                FILE *pf = fopen(panel, "r");
                fprintf(out, "<g transform=\"translate(0 %d)\">\n", 420 * np++);
                while (pf && fgets(line, sizeof line, pf)) fputs(line, out);
                if (pf) fclose(pf);
                fprintf(out, "</g>\n");
            }
            free(xs);
        }
        fprintf(out, "</svg>\n");
        fclose(out);
    }
    for (i = 0; i < n; i++) free(rows[i].line);
    free(rows);
}

/* one trial: `ft train` with the base options, --out TDIR, --eval-before 0 and the trial's values, its
   output in TDIR/train.log; returns the exit status (or -1 when it could not start) */
static int sweep_spawn(char **base, int nbase, const char *tdir, const sweep_key *keys, char **vals, int nk) {
    char **av = (char **)malloc(sizeof(char *) * (size_t)(nbase + 2 * nk + 8)), flag[SWEEP_KEYS][80], log[2200];
    int n = 0, i, status; pid_t pid;
    av[n++] = (char *)self_path; av[n++] = (char *)"train";
    for (i = 0; i < nbase; i++) av[n++] = base[i];
    av[n++] = (char *)"--out"; av[n++] = (char *)tdir; av[n++] = (char *)"--eval-before"; av[n++] = (char *)"0";
    for (i = 0; i < nk; i++) {
        snprintf(flag[i], sizeof flag[i], "--%s", keys[i].key);
        if (is_flag_key(keys[i].key)) { if (strcmp(vals[i], "0")) av[n++] = flag[i]; continue; }
        av[n++] = flag[i]; av[n++] = vals[i];
    }
    av[n] = NULL;
    snprintf(log, sizeof log, "%s/train.log", tdir);
    fflush(stdout); fflush(stderr);
    pid = fork();
    if (pid < 0) { free(av); return -1; }
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); close(fd); }
        execv(self_path, av);
        fprintf(stderr, "ft sweep: cannot run %s\n", self_path);
        _exit(127);
    }
    free(av);
    while (waitpid(pid, &status, 0) < 0) if (errno != EINTR) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

static int cmd_sweep(int argc, char **argv) {
    sweep_key keys[SWEEP_KEYS]; int nk = 0, i, k, n_random = 0, nbase = 0, n_trials, done = 0, failed = 0, skipped = 0;
    char **base = (char **)malloc(sizeof(char *) * (size_t)(argc + 1)), path[2048]; const char *dir = NULL;
    uint64_t seed = 1; ft_rng rng; opts bo; sweep_row *rows; int nrows;
    for (i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(sweep_usage, stdout); return 0; }
        if ((!strcmp(a, "--grid") || !strcmp(a, "--random") || !strcmp(a, "--out") || !strcmp(a, "-o")) && i + 1 >= argc) {
            fprintf(stderr, "ft sweep: %s needs a value\n", a); return 2;
        }
        if (!strcmp(a, "--out") || !strcmp(a, "-o")) dir = argv[++i];
        else if (!strcmp(a, "--random")) n_random = atoi(argv[++i]);
        else if (!strcmp(a, "--grid")) {
            char *spec = argv[++i], *eq = strchr(spec, '='), *p, *sep;
            if (!eq || eq == spec || !eq[1]) { fprintf(stderr, "ft sweep: --grid %s: expected KEY=V1,V2,...\n", spec); return 2; }
            if (nk == SWEEP_KEYS) { fprintf(stderr, "ft sweep: at most %d swept keys\n", SWEEP_KEYS); return 2; }
            *eq = 0; keys[nk].key = spec; keys[nk].n = 0; keys[nk].range = 0;
            for (k = 0; k < nk; k++) if (!strcmp(keys[k].key, spec)) { fprintf(stderr, "ft sweep: --grid %s given twice\n", spec); return 2; }
            sep = !strcmp(spec, "targets") || !strcmp(spec, "task") || !strcmp(spec, "mix") || !strcmp(spec, "freeze") || !strcmp(spec, "reward") ? "/" : ",";
            for (p = eq + 1; p && *p; ) {
                char *e = strpbrk(p, sep);
                if (e) *e = 0;
                if (keys[nk].n == SWEEP_VALS) { fprintf(stderr, "ft sweep: --grid %s: at most %d values\n", spec, SWEEP_VALS); return 2; }
                keys[nk].val[keys[nk].n++] = p;
                p = e ? e + 1 : NULL;
            }
            if (keys[nk].n == 1 && strstr(keys[nk].val[0], "..")) keys[nk].range = 1;
            nk++;
        } else {
            if (!strcmp(a, "--seed") && i + 1 < argc) seed = strtoull(argv[i + 1], NULL, 10);
            base[nbase++] = argv[i];
        }
    }
    if (!dir || nk == 0) { fputs(sweep_usage, stderr); return 2; }
    /* the base options and every value must be ones ft train takes (checked on copies: opts_set
       cuts FILE:RATIO values in place) */
    opts_default(&bo);
    {
        char **cp = (char **)malloc(sizeof(char *) * (size_t)(nbase + 1)); int ok;
        for (i = 0; i < nbase; i++) cp[i] = dup_str(base[i]);
        ok = opts_parse(&bo, nbase, cp);
        if (!ok) { fprintf(stderr, "ft sweep: bad base options (ft train's)\n"); return 2; }
        int sd = 0, se = 0;
        for (k = 0; k < nk; k++) { sd |= !strcmp(keys[k].key, "data") || !strcmp(keys[k].key, "task"); se |= !strcmp(keys[k].key, "eval"); }
        if (!bo.model || (!bo.data && !bo.n_task && !sd)) { fprintf(stderr, "ft sweep: needs -m MODEL and --data FILE\n"); return 2; }
        if (!bo.eval && !(bo.eval_split > 0) && !se) { fprintf(stderr, "ft sweep: needs --eval FILE (or --eval-split F): trials are compared on eval loss\n"); return 2; }
        for (i = 0; i < nbase; i++) free(cp[i]);
        free(cp); free(bo.cfg_text);
    }
    for (k = 0; k < nk; k++) {
        if (keys[k].range) {
            double lo, hi; char *dots = strstr(keys[k].val[0], "..");
            lo = strtod(keys[k].val[0], NULL); hi = strtod(dots + 2, NULL);
            if (!n_random || !(lo > 0) || !(hi > lo)) { fprintf(stderr, "ft sweep: --grid %s=%s: a range LO..HI (0 < LO < HI) needs --random\n", keys[k].key, keys[k].val[0]); return 2; }
            continue;
        }
        for (i = 0; i < keys[k].n; i++) {
            opts t; char *v = dup_str(keys[k].val[i]);
            opts_default(&t);
            if (!strcmp(keys[k].key, "out") || !strcmp(keys[k].key, "config") || !opts_set(&t, keys[k].key, v)) {
                fprintf(stderr, "ft sweep: --grid %s=%s: not an ft train option and value\n", keys[k].key, keys[k].val[i]); return 2;
            }
            free(v);
        }
    }
    if (!strcmp(self_path, "ft") || access(self_path, X_OK) != 0) {
        static char exe[1024]; ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (len > 0) { exe[len] = 0; self_path = exe; }
    }
    if (ft_mkdirs(dir) != FT_OK) return fail("sweep --out");
    n_trials = 1;
    for (k = 0; k < nk; k++) n_trials *= keys[k].n;
    if (n_random > 0) n_trials = n_random;
    nrows = 0; rows = NULL;
    ft_rng_seed(&rng, seed);
    fprintf(stderr, "ft sweep: %d trials (%s) in %s\n", n_trials, n_random > 0 ? "random" : "grid", dir);
    for (int t = 0; t < n_trials; t++) {
        char *vals[SWEEP_KEYS], rnd[SWEEP_KEYS][32], params[1024] = "", tdir[2100], ep[2200], line[1024], st[16];
        int idx = t, have = 0; size_t len = 0; double t0, secs; int rc; FILE *f;
        for (k = nk - 1; k >= 0; k--) {              /* the grid: the last key varies fastest */
            int q;
            if (n_random > 0 && keys[k].range) {
                double lo = strtod(keys[k].val[0], NULL), hi = strtod(strstr(keys[k].val[0], "..") + 2, NULL);
                double x = exp(log(lo) + ft_rng_uniform(&rng) * (log(hi) - log(lo)));
                const char *dd = strstr(keys[k].val[0], ".."), *c; int whole = !strpbrk(dd + 2, ".eE");
                for (c = keys[k].val[0]; c < dd; c++) if (*c == '.' || *c == 'e' || *c == 'E') whole = 0;
                if (whole) snprintf(rnd[k], sizeof rnd[k], "%.0f", x);             /* rank=4..64: whole numbers */
                else snprintf(rnd[k], sizeof rnd[k], "%.3g", x);
                vals[k] = rnd[k];
                continue;
            }
            q = n_random > 0 ? (int)(ft_rng_uniform(&rng) * keys[k].n) % keys[k].n : idx % keys[k].n;
            idx /= keys[k].n;
            vals[k] = keys[k].val[q];
        }
        for (k = 0; k < nk; k++) len += (size_t)snprintf(params + len, sizeof params - len, "%s%s=%s", k ? " " : "", keys[k].key, vals[k]);
        for (i = 0; i < nrows; i++) free(rows[i].line);
        free(rows);
        snprintf(path, sizeof path, "%s/results.jsonl", dir);
        nrows = sweep_read(path, &rows);              /* again each time: a repeated random draw runs once */
        for (i = 0; i < nrows; i++)
            if (jget(rows[i].line, "params", line, sizeof line) && !strcmp(line, params) && jget(rows[i].line, "status", st, sizeof st) && !strcmp(st, "ok")) have = 1;
        if (have) { fprintf(stderr, "ft sweep: trial %d/%d %s: done before, skipped\n", t + 1, n_trials, params); skipped++; continue; }
        snprintf(tdir, sizeof tdir, "%s/trial_%03d", dir, t);
        if (ft_mkdirs(tdir) != FT_OK) return fail("sweep");
        snprintf(ep, sizeof ep, "%s/eval.json", tdir); remove(ep);
        fprintf(stderr, "ft sweep: trial %d/%d %s ... ", t + 1, n_trials, params);
        t0 = ft_time_seconds();
        rc = sweep_spawn(base, nbase, tdir, keys, vals, nk);
        secs = ft_time_seconds() - t0;
        line[0] = 0;
        if (rc == 0 && (f = fopen(ep, "r"))) { if (!fgets(line, sizeof line, f)) line[0] = 0; fclose(f); }
        snprintf(path, sizeof path, "%s/results.jsonl", dir);
        if (!(f = fopen(path, "a"))) { fprintf(stderr, "ft sweep: %s: cannot write\n", path); return 1; }
        fprintf(f, "{\"trial\": %d, \"params\": ", t); json_str(f, params);
        for (k = 0; k < nk; k++) {
            fprintf(f, ", "); json_str(f, keys[k].key); fprintf(f, ": ");
            if (is_number(vals[k])) fprintf(f, "%s", vals[k]); else json_str(f, vals[k]);
        }
        if (rc == 0 && jnum(line, "eval_loss") == jnum(line, "eval_loss")) {
            char ml[4096], last[4096] = ""; double em = jnum(line, "exact_match"), tl = NAN;
            snprintf(ep, sizeof ep, "%s/metrics.jsonl", tdir);
            FILE *mf;
            if ((mf = fopen(ep, "r")) != NULL) { while (fgets(ml, sizeof ml, mf)) strcpy(last, ml); fclose(mf); tl = jnum(last, "loss"); }
            fprintf(f, ", \"status\": \"ok\", \"eval_loss\": %.6f, \"eval_perplexity\": %.4f", jnum(line, "eval_loss"), exp(jnum(line, "eval_loss")));
            if (em == em) fprintf(f, ", \"exact_match\": %.4f, \"contains\": %.4f, \"n_gen\": %.0f", em, jnum(line, "contains"), jnum(line, "n_gen"));
            if (tl == tl) fprintf(f, ", \"train_loss\": %.6f", tl);
            fprintf(stderr, "eval loss %.4f", jnum(line, "eval_loss"));
            if (em == em) fprintf(stderr, ", exact match %.1f%%", 100 * em);
            done++;
        } else {                                      /* the trial's last log line says why */
            char ll[1024] = "", last[1024] = ""; FILE *lf;
            snprintf(ep, sizeof ep, "%s/train.log", tdir);
            if ((lf = fopen(ep, "r")) != NULL) { while (fgets(ll, sizeof ll, lf)) if (ll[0] != '\n') strcpy(last, ll); fclose(lf); }
            last[strcspn(last, "\r\n")] = 0;
            fprintf(f, ", \"status\": \"failed\", \"exit\": %d, \"error\": ", rc); json_str(f, last);
            fprintf(stderr, "FAILED (exit %d: %s; see %s)", rc, last, ep);
            failed++;
        }
        fprintf(f, ", \"seconds\": %.1f}\n", secs);
        fclose(f);
        fprintf(stderr, " (%.0f s)\n", secs);
        sweep_report(dir, keys, nk);
    }
    sweep_report(dir, keys, nk);
    fprintf(stderr, "ft sweep: %d trials run, %d failed, %d skipped; wrote %s/{results.jsonl,results.md,sweep.svg}\n", done + failed, failed, skipped, dir);
    snprintf(path, sizeof path, "%s/results.md", dir);
    {
        FILE *f = fopen(path, "r"); char l[2048];
        while (f && fgets(l, sizeof l, f)) fputs(l, stdout);
        if (f) fclose(f);
    }
    for (i = 0; i < nrows; i++) free(rows[i].line);
    free(rows); free(base);
    return failed && !done && !skipped ? 1 : 0;      /* a failed trial is recorded, not fatal */
}

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    self_path = argv[0];
    if (strcmp(argv[1], "sweep") == 0) return cmd_sweep(argc - 2, argv + 2);
    if (strcmp(argv[1], "merge-models") == 0) return cmd_merge_models(argc - 2, argv + 2);
    if (strcmp(argv[1], "quantize") == 0) return cmd_quantize(argc - 2, argv + 2);
    if (strcmp(argv[1], "info") == 0) return cmd_info(argc - 2, argv + 2);
    if (strcmp(argv[1], "synth") == 0) return cmd_synth(argc - 2, argv + 2);
    if (strcmp(argv[1], "generate") == 0) return cmd_generate(argc - 2, argv + 2);
    if (strcmp(argv[1], "train") == 0) return cmd_train(argc - 2, argv + 2);
    if (strcmp(argv[1], "eval") == 0) return cmd_eval(argc - 2, argv + 2);
    if (strcmp(argv[1], "merge") == 0) {             /* --base/--method/--input: several models or adapters */
        int i;
        for (i = 2; i < argc; i++) if (strcmp(argv[i], "--base") == 0 || strcmp(argv[i], "--method") == 0 || strcmp(argv[i], "--input") == 0) return cmd_merge_models(argc - 2, argv + 2);
        return cmd_merge(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "export") == 0) return cmd_export(argc - 2, argv + 2);
    if (strcmp(argv[1], "logits") == 0) return cmd_logits(argc - 2, argv + 2);
    return usage();
}
