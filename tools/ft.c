/* ft - the finetune.h command line.
     ft info     MODEL.gguf [--all]
     ft generate -m MODEL.gguf -p PROMPT [-n 64] [--temp 0] [--top-k K] [--top-p P] [--seed 1] [--chat] [--threads N]
     ft quantize --type nf4 -m IN.gguf -o OUT.gguf [--output]
   Every failure prints the library's message (file, offset or line) and exits non-zero. */
#define FINETUNE_IMPLEMENTATION
#include "../finetune.h"
#include <stdio.h>
#include <unistd.h>
#include <sys/stat.h>

static int usage(void) {
    fprintf(stderr,
        "usage: ft <command> [options]\n"
        "  info     MODEL.gguf [--all]                 metadata, tensor types, parameter count\n"
        "  generate -m MODEL.gguf -p PROMPT [-n N] [--temp T] [--top-k K] [--top-p P] [--seed S]\n"
        "           [--chat] [--lora ADAPTER.gguf] [--threads N]   sample a continuation (greedy when T = 0)\n"
        "  train    -m MODEL.gguf --method lora|qlora|dora --objective sft|cpt|dpo|ipo|hinge|simpo|orpo\n"
        "           --data TRAIN.jsonl --out DIR [--beta B] [--gamma G] [--label-smoothing E]\n"
        "           [--eval EVAL.jsonl] [--steps N | --epochs E] [--lr X] [--batch B] [--grad-accum K]\n"
        "           [--seq-len T] [--rank R] [--alpha A] [--dropout P] [--targets all|attn|mlp|q_proj,v_proj,..]\n"
        "           [--schedule cosine|linear|constant] [--warmup W] [--max-grad-norm G] [--weight-decay D]\n"
        "           [--lora-plus RATIO] [--pack] [--seed S] [--threads N] [--config FILE] [--resume]\n"
        "           [--eval-split F] [--mix OTHER.jsonl:RATIO ...] (e.g. 0.1 of general text, against forgetting)\n"
        "           [--quantize nf4] (the linear weights as NF4 at load: QLoRA's base; also for eval)\n"
        "  eval     -m MODEL.gguf [--lora ADAPTER.gguf] --data EVAL.jsonl [--eval-gen N] [--max-new N]\n"
        "  quantize --type nf4 -m IN.gguf -o OUT.gguf [--output]   linear weights -> NF4 (QLoRA's, bitsandbytes'\n"
        "           bytes); --output: the untied head too; everything else copied\n");
    return 2;
}

static int fail(const char *what) {
    fprintf(stderr, "ft: %s: %s\n", what, ft_last_error());
    return 1;
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
    if (lora) { ft_peft *p; if (ft_lora_attach_gguf(&p, m, lora) != FT_OK) return fail("generate --lora"); }
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
    int64_t steps, batch, seq_len, warmup, eval_every, save_every, log_every, eval_gen, max_new;
    int epochs, rank, grad_accum, threads, resume, pack, train_on_prompt, skip_bad;
    double lr, alpha, dropout, max_grad_norm, weight_decay, lr_ratio_b, eval_split, beta, gamma, label_smoothing;
    const char *mix[4]; double mix_ratio[4]; int n_mix;    /* --mix FILE:RATIO (replay)          */
    uint64_t seed;
    char *cfg_text;                                   /* storage behind values read from --config */
} opts;

static void opts_default(opts *o) {
    memset(o, 0, sizeof *o);
    o->method = "lora"; o->objective = "sft"; o->schedule = "cosine"; o->targets = "all";
    o->steps = 0; o->epochs = 1; o->batch = 8; o->seq_len = 256; o->rank = 16; o->alpha = 32; o->lr = 2e-4;
    o->grad_accum = 1; o->warmup = 0; o->max_grad_norm = 1.0; o->seed = 1; o->eval_every = 0; o->save_every = 50;
    o->log_every = 10; o->eval_gen = 100; o->max_new = 32; o->skip_bad = 0;
}

/* one key/value; returns 0 when the key is unknown or the value is missing */
static int opts_set(opts *o, const char *k, const char *v) {
#define S(name, field) if (strcmp(k, name) == 0) { o->field = v; return v != NULL; }
#define I(name, field) if (strcmp(k, name) == 0) { if (!v) return 0; o->field = strtoll(v, NULL, 10); return 1; }
#define D(name, field) if (strcmp(k, name) == 0) { if (!v) return 0; o->field = strtod(v, NULL); return 1; }
    S("model", model) S("m", model) S("method", method) S("objective", objective) S("data", data) S("eval", eval)
    S("out", out) S("o", out) S("lora", lora) S("schedule", schedule) S("targets", targets) S("quantize", quantize)
    I("steps", steps) I("batch", batch) I("seq-len", seq_len) I("warmup", warmup) I("eval-every", eval_every)
    I("save-every", save_every) I("log-every", log_every) I("eval-gen", eval_gen) I("max-new", max_new)
    I("epochs", epochs) I("rank", rank) I("grad-accum", grad_accum) I("threads", threads) I("pack", pack)
    I("train-on-prompt", train_on_prompt) I("skip-bad", skip_bad)
    D("lr", lr) D("alpha", alpha) D("dropout", dropout) D("max-grad-norm", max_grad_norm) D("weight-decay", weight_decay)
    D("lora-plus", lr_ratio_b) D("eval-split", eval_split) D("beta", beta) D("gamma", gamma) D("label-smoothing", label_smoothing)
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
        if (strcmp(k, "resume") == 0 || strcmp(k, "pack") == 0 || strcmp(k, "train-on-prompt") == 0 || strcmp(k, "skip-bad") == 0) {
            opts_set(o, k, "1"); continue;
        }
        if (!opts_set(o, k, v)) { fprintf(stderr, "ft: unknown option or missing value: %s\n", a); return 0; }
        i++;
    }
    return 1;
}

static void opts_write(const opts *o, FILE *f) {
    fprintf(f, "# resolved configuration of this run (ft train --config FILE reads it back)\n");
    fprintf(f, "model = %s\nmethod = %s\nobjective = %s\ndata = %s\n", o->model, o->method, o->objective, o->data);
    if (o->eval) fprintf(f, "eval = %s\n", o->eval);
    { int i; for (i = 0; i < o->n_mix; i++) fprintf(f, "mix = %s:%g\n", o->mix[i], o->mix_ratio[i]); }
    if (o->eval_split > 0) fprintf(f, "eval-split = %g\n", o->eval_split);
    fprintf(f, "out = %s\nsteps = %lld\nepochs = %d\nbatch = %lld\ngrad-accum = %d\nseq-len = %lld\npack = %d\n", o->out,
            (long long)o->steps, o->epochs, (long long)o->batch, o->grad_accum, (long long)o->seq_len, o->pack);
    fprintf(f, "lr = %g\nschedule = %s\nwarmup = %lld\nmax-grad-norm = %g\nweight-decay = %g\nlora-plus = %g\n", o->lr, o->schedule,
            (long long)o->warmup, o->max_grad_norm, o->weight_decay, o->lr_ratio_b);
    fprintf(f, "rank = %d\nalpha = %g\ndropout = %g\ntargets = %s\nseed = %llu\nthreads = %d\n", o->rank, o->alpha, o->dropout,
            o->targets, (unsigned long long)o->seed, o->threads);
    fprintf(f, "eval-every = %lld\nsave-every = %lld\neval-gen = %lld\nmax-new = %lld\ntrain-on-prompt = %d\nskip-bad = %d\n",
            (long long)o->eval_every, (long long)o->save_every, (long long)o->eval_gen, (long long)o->max_new, o->train_on_prompt, o->skip_bad);
}

static unsigned parse_targets(const char *t) {
    unsigned m = 0; const char *p = t;
    if (strcmp(t, "all") == 0) return FT_TARGET_ALL_LINEAR;
    if (strcmp(t, "attn") == 0) return FT_TARGET_ATTN;
    if (strcmp(t, "mlp") == 0) return FT_TARGET_MLP;
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

/* ---- progress, metrics, plots -------------------------------------------------------------------- */
typedef struct run { opts *o; FILE *metrics; int tty; double *xs, *ys, *ex, *ey; int64_t n, ne, cap; } run;

static int on_step(void *user, const ft_step_info *s) {
    run *r = (run *)user;
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 256;
        r->xs = (double *)realloc(r->xs, (size_t)r->cap * sizeof(double)); r->ys = (double *)realloc(r->ys, (size_t)r->cap * sizeof(double));
        r->ex = (double *)realloc(r->ex, (size_t)r->cap * sizeof(double)); r->ey = (double *)realloc(r->ey, (size_t)r->cap * sizeof(double));
    }
    r->xs[r->n] = (double)s->step; r->ys[r->n++] = s->loss;
    if (s->eval_loss == s->eval_loss) { r->ex[r->ne] = (double)s->step; r->ey[r->ne++] = s->eval_loss; }
    fprintf(r->metrics, "{\"step\": %lld, \"epoch\": %lld, \"loss\": %.6f, \"learning_rate\": %.6g, \"grad_norm\": %.6f, \"tokens_per_s\": %.1f, \"tokens\": %.0f",
            (long long)s->step, (long long)s->epoch, s->loss, s->lr, s->grad_norm, s->tokens_per_s, s->tokens);
    if (s->eval_loss == s->eval_loss) fprintf(r->metrics, ", \"eval_loss\": %.6f, \"eval_perplexity\": %.4f", s->eval_loss, exp(s->eval_loss));
    if (s->pref.rewards_accuracies > 0 || s->pref.rewards_margins != 0)
        fprintf(r->metrics, ", \"rewards/chosen\": %.6f, \"rewards/rejected\": %.6f, \"rewards/margins\": %.6f, \"rewards/accuracies\": %.4f, \"logps/chosen\": %.4f, \"logps/rejected\": %.4f",
                s->pref.rewards_chosen, s->pref.rewards_rejected, s->pref.rewards_margins, s->pref.rewards_accuracies, s->pref.logps_chosen, s->pref.logps_rejected);
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

/* loss and generation accuracy of the model as it is now (adapter on or off); for preference
   data the implicit-reward accuracy (in acc->exact_rate) instead */
static int evaluate(ft_ctx *ctx, ft_model *m, const ft_dataset *d, const opts *o, double *loss, ft_eval_gen *acc) {
    memset(acc, 0, sizeof *acc);
    if (ft_dataset_format(d) == FT_DATA_PREFERENCE) {
        double a, mg;
        /* exact_rate: likelihood accuracy; contains_rate: implicit-reward accuracy; *loss: its margin */
        if (ft_eval_preference(ctx, m, d, o->batch, o->seq_len, 1.0f, 0, &a, &mg) != FT_OK) return fail("eval");
        acc->n = ft_dataset_size(d); acc->exact_rate = a; acc->exact = (int64_t)(a * (double)acc->n + 0.5);
        if (ft_eval_preference(ctx, m, d, o->batch, o->seq_len, o->beta > 0 ? (float)o->beta : 0.1f, 1, &a, &mg) != FT_OK) return fail("eval");
        acc->contains_rate = a; *loss = mg;
        return 0;
    }
    if (ft_eval_loss(ctx, m, d, o->batch, o->seq_len, loss, NULL) != FT_OK) return fail("eval");
    if (o->eval_gen > 0 && ft_dataset_format(d) != FT_DATA_TEXT && ft_eval_generate(ctx, m, d, (int)o->max_new, o->eval_gen, acc, NULL, NULL) != FT_OK) return fail("eval");
    return 0;
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

static int cmd_train(int argc, char **argv) {
    opts o; ft_model *m; ft_ctx *ctx; ft_ctx_opts co; ft_peft *p; ft_lora_opts lo; ft_dataset *train, *ev = NULL;
    ft_data_opts dopt; ft_train_opts to; ft_train_state st; run rn; char path[2048]; FILE *f; ft_result r;
    double loss0 = 0, loss1 = 0; ft_eval_gen acc0, acc1; int have_ckpt = 0;
    opts_default(&o);
    if (!opts_parse(&o, argc, argv)) return 2;
    if (!o.model || !o.data || !o.out) { fprintf(stderr, "ft train: needs -m MODEL, --data FILE and --out DIR\n"); return 2; }
    if (strcmp(o.method, "lora") && strcmp(o.method, "qlora") && strcmp(o.method, "dora")) {
        fprintf(stderr, "ft train: --method %s is not available yet (lora, qlora, dora are)\n", o.method); return 2;
    }
    {
        static const char *objs[] = {"sft", "cpt", "dpo", "ipo", "hinge", "simpo", "orpo"};
        int k, ok = 0;
        for (k = 0; k < 7; k++) ok |= strcmp(o.objective, objs[k]) == 0;
        if (!ok) { fprintf(stderr, "ft train: --objective %s is not available yet (sft, cpt, dpo, ipo, hinge, simpo, orpo are)\n", o.objective); return 2; }
    }
#if !defined(_WIN32)
    mkdir(o.out, 0755);
    snprintf(path, sizeof path, "%s/checkpoints", o.out); mkdir(path, 0755);
#endif
    if (!load_model(&m, &o)) return 1;
    if (!ft_model_tokenizer(m)) { fprintf(stderr, "ft train: %s has no tokenizer\n", o.model); return 1; }
    memset(&co, 0, sizeof co); co.n_threads = o.threads; co.seed = o.seed;
    if (ft_ctx_init(&ctx, &co) != FT_OK) return fail("train");
    memset(&dopt, 0, sizeof dopt);
    dopt.format = strcmp(o.objective, "cpt") == 0 ? FT_DATA_TEXT : FT_DATA_AUTO;
    dopt.max_len = o.seq_len; dopt.train_on_prompt = o.train_on_prompt; dopt.skip_bad = o.skip_bad;
    if (ft_dataset_load(&train, o.data, ft_model_tokenizer(m), ft_model_chat_template(m), &dopt) != FT_OK) return fail("train");
    if (o.eval && ft_dataset_load(&ev, o.eval, ft_model_tokenizer(m), ft_model_chat_template(m), &dopt) != FT_OK) return fail("train");
    if (!o.eval && o.eval_split > 0 && ft_dataset_split(train, o.eval_split, o.seed, &ev) != FT_OK) return fail("train --eval-split");
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
    fprintf(stderr, "ft: %s: %lld %s examples (%lld tokens%s)", o.data, (long long)ft_dataset_size(train), ft_data_format_name(ft_dataset_format(train)),
            (long long)ft_dataset_tokens(train), ft_dataset_skipped(train) ? ", some lines skipped" : "");
    if (ev) fprintf(stderr, "; eval %lld examples", (long long)ft_dataset_size(ev));
    fprintf(stderr, "\n");
    memset(&lo, 0, sizeof lo);
    lo.r = o.rank; lo.alpha = (float)o.alpha; lo.dropout = (float)o.dropout; lo.dora = strcmp(o.method, "dora") == 0;
    lo.targets = parse_targets(o.targets); lo.seed = o.seed;
    if (ft_lora_attach(&p, m, &lo) != FT_OK) return fail("train");
    fprintf(stderr, "ft: %s r=%d alpha=%g on %s: %lld trainable parameters (%.2f%% of %lld)\n", o.method, o.rank, o.alpha, o.targets,
            (long long)ft_params_numel(ft_peft_params(p)), 100.0 * (double)ft_params_numel(ft_peft_params(p)) / (double)ft_model_config_get(m)->n_params,
            (long long)ft_model_config_get(m)->n_params);
    snprintf(path, sizeof path, "%s/checkpoints/last.gguf", o.out);
    if (o.resume) { FILE *c = fopen(path, "rb"); have_ckpt = c != NULL; if (c) fclose(c); }
    if (ev && !have_ckpt) {                                /* before: the base model */
        ft_peft_set_enabled(p, 0);
        if (evaluate(ctx, m, ev, &o, &loss0, &acc0)) return 1;
        ft_peft_set_enabled(p, 1);
        if (ft_dataset_format(ev) == FT_DATA_PREFERENCE) fprintf(stderr, "ft: before: the base model's likelihood prefers the chosen answer in %.1f%% of pairs", 100 * acc0.exact_rate);
        else fprintf(stderr, "ft: before: eval loss %.4f (ppl %.2f)", loss0, exp(loss0));
        if (acc0.n && ft_dataset_format(ev) != FT_DATA_PREFERENCE) fprintf(stderr, ", exact match %lld/%lld (%.1f%%)", (long long)acc0.exact, (long long)acc0.n, 100 * acc0.exact_rate);
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
    to.objective = strcmp(o.objective, "dpo") == 0 ? FT_OBJ_DPO : strcmp(o.objective, "ipo") == 0 ? FT_OBJ_IPO :
                   strcmp(o.objective, "hinge") == 0 ? FT_OBJ_HINGE : strcmp(o.objective, "simpo") == 0 ? FT_OBJ_SIMPO :
                   strcmp(o.objective, "orpo") == 0 ? FT_OBJ_ORPO : FT_OBJ_SFT;
    to.beta = (float)o.beta; to.gamma = (float)o.gamma; to.label_smoothing = (float)o.label_smoothing;
    if (have_ckpt) fprintf(stderr, "ft: resuming from %s\n", path);
    r = ft_train(ctx, m, ft_peft_params(p), train, &to, &st);
    fclose(rn.metrics);
    if (r != FT_OK) return fail("train");
    /* the adapter in both formats, the loss curve */
    snprintf(path, sizeof path, "%s/adapter.gguf", o.out);
    if (!lo.dora && ft_lora_save_gguf(p, path) != FT_OK) return fail("train");
    snprintf(path, sizeof path, "%s/peft", o.out);
    if (ft_lora_save_peft(p, path, ft_model_config_get(m)->arch_name) != FT_OK) return fail("train");
    {
        ft_plot_series ser[2]; int ns = 1;
        ser[0].name = "train"; ser[0].x = rn.xs; ser[0].y = rn.ys; ser[0].n = rn.n;
        if (rn.ne) { ser[1].name = "eval"; ser[1].x = rn.ex; ser[1].y = rn.ey; ser[1].n = rn.ne; ns = 2; }
        snprintf(path, sizeof path, "%s/loss.svg", o.out);
        if (rn.n && ft_svg_plot(path, "loss", "step", "cross-entropy", ser, ns) != FT_OK) return fail("train");
    }
    fprintf(stderr, "ft: %lld steps, %.0f tokens; wrote %s/{adapter.gguf,peft/,metrics.jsonl,loss.svg,config,checkpoints/}\n",
            (long long)st.step, st.tokens, o.out);
    if (ev) {
        if (evaluate(ctx, m, ev, &o, &loss1, &acc1)) return 1;
        printf("\n| %-22s | %10s | %10s |\n|%s|%s|%s|\n", o.eval ? o.eval : "held-out split", "before", "after", "------------------------", "------------", "------------");
        if (!have_ckpt) {
            if (ft_dataset_format(ev) != FT_DATA_PREFERENCE)
                printf("| %-22s | %10.4f | %10.4f |\n| %-22s | %10.2f | %10.2f |\n", "eval loss", loss0, loss1, "eval perplexity", exp(loss0), exp(loss1));
            if (acc1.n && ft_dataset_format(ev) == FT_DATA_PREFERENCE) {
                printf("| %-22s | %9.1f%% | %9.1f%% |\n", "likelihood prefers chosen", 100 * acc0.exact_rate, 100 * acc1.exact_rate);
                printf("| %-22s | %9.1f%% | %9.1f%% |\n", "implicit reward accuracy", 100 * acc0.contains_rate, 100 * acc1.contains_rate);
                printf("| %-22s | %10.4f | %10.4f |\n", "implicit reward margin", loss0, loss1);
            } else if (acc1.n) {
                printf("| %-22s | %9.1f%% | %9.1f%% |\n", "exact match", 100 * acc0.exact_rate, 100 * acc1.exact_rate);
                printf("| %-22s | %9.1f%% | %9.1f%% |\n", "contains the answer", 100 * acc0.contains_rate, 100 * acc1.contains_rate);
            }
        } else {
            printf("| %-22s | %10s | %10.4f |\n", "eval loss", "-", loss1);
            if (acc1.n) printf("| %-22s | %10s | %9.1f%% |\n", "exact match", "-", 100 * acc1.exact_rate);
        }
    }
    free(rn.xs); free(rn.ys); free(rn.ex); free(rn.ey); free(o.cfg_text);
    ft_dataset_free(train); ft_dataset_free(ev); ft_peft_free(p); ft_ctx_free(ctx); ft_model_free(m);
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
    if (o.lora) { ft_peft *p; if (ft_lora_attach_gguf(&p, m, o.lora) != FT_OK) return fail("eval --lora"); }
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

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    if (strcmp(argv[1], "quantize") == 0) return cmd_quantize(argc - 2, argv + 2);
    if (strcmp(argv[1], "info") == 0) return cmd_info(argc - 2, argv + 2);
    if (strcmp(argv[1], "generate") == 0) return cmd_generate(argc - 2, argv + 2);
    if (strcmp(argv[1], "train") == 0) return cmd_train(argc - 2, argv + 2);
    if (strcmp(argv[1], "eval") == 0) return cmd_eval(argc - 2, argv + 2);
    return usage();
}
