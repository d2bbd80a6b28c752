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
        "           [--chat] [--threads N]             sample a continuation (greedy when T = 0)\n");
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

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    if (strcmp(argv[1], "info") == 0) return cmd_info(argc - 2, argv + 2);
    return usage();
}
