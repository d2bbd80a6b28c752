/* ft - the finetune.h command line.
     ft info     MODEL.gguf [--all]
     ft generate -m MODEL.gguf -p PROMPT [-n 64] [--temp 0] [--top-k K] [--top-p P] [--seed 1] [--chat] [--threads N]
   Every failure prints the library's message (file, offset or line) and exits non-zero. */
#define FINETUNE_IMPLEMENTATION
#include "../finetune.h"
#include <stdio.h>

static int usage(void) {
    fprintf(stderr,
        "usage: ft <command> [options]\n"
        "  info     MODEL.gguf [--all]                 metadata, tensor types, parameter count\n"
        "  generate -m MODEL.gguf -p PROMPT [-n N] [--temp T] [--top-k K] [--top-p P] [--seed S]\n"
        "           [--chat] [--lora ADAPTER.gguf] [--threads N]   sample a continuation (greedy when T = 0)\n");
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
    printf("\nparameters: %lld (%.1fM)\n", (long long)total, (double)total / 1e6);
    ft_gguf_close(g);
    if (ft_model_load(&m, path, NULL) == FT_OK) {
        const ft_model_config *c = ft_model_config_get(m);
        printf("model: %s, %lld layers, embd %lld, heads %lld (kv %lld, dim %lld), ffn %lld, vocab %lld, ctx %lld, rope base %g%s\n",
               c->arch_name, (long long)c->n_layer, (long long)c->n_embd, (long long)c->n_head, (long long)c->n_head_kv,
               (long long)c->head_dim, (long long)c->n_ff, (long long)c->n_vocab, (long long)c->n_ctx_train,
               (double)c->rope_base, c->tied_embeddings ? ", tied embeddings" : "");
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
    if (lora) {
        ft_peft *p; ft_lora_opts lo; ft_gguf *ag; int64_t r = 8;
        memset(&lo, 0, sizeof lo);
        if (ft_gguf_open(&ag, lora) != FT_OK) return fail("generate --lora");
        ft_gguf_get_int(ag, "adapter.lora.r", &r);
        lo.r = (int)r;
        ft_gguf_close(ag);
        if (ft_lora_attach(&p, m, &lo) != FT_OK || ft_lora_load_gguf(p, lora) != FT_OK) return fail("generate --lora");
    }
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

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    if (strcmp(argv[1], "info") == 0) return cmd_info(argc - 2, argv + 2);
    if (strcmp(argv[1], "generate") == 0) return cmd_generate(argc - 2, argv + 2);
    return usage();
}
