/* test_llamacpp_ref.c - SmolLM2-135M-Instruct (Q4_1) against llama.cpp on the same file
   (tests/fixtures/llamacpp_reference.txt from tools/ref/llamacpp_reference.py): our tokenizer
   gives llama.cpp's ids; the logits agree within 5% of the logit range and in argmax except at
   near-ties of llama.cpp's top two (llama.cpp rounds activations to 8 bits inside its quantized
   dot products, we compute in f32: that is most of the difference, 1.7% of the range already at
   position 0); greedy continuations are identical up to llama.cpp's first near-tie (top-2 gap
   < 0.1), where 8-bit rounding can flip the choice; perplexity within 0.5%. */
#define FINETUNE_IMPLEMENTATION
#include "../finetune.h"
#include "ft_test.h"

static ft_model *M; static ft_ctx *C;
static char *FIX; static size_t FIXN;

/* the numbers after "KIND NAME" on the first matching line (n, then n values), or NULL */
static const char *line_of(const char *kind, const char *name, int pos) {
    const char *p = FIX; char head[96];
    if (pos >= 0) snprintf(head, sizeof head, "%s %s %d ", kind, name, pos); else snprintf(head, sizeof head, "%s %s ", kind, name);
    while (p && *p) {
        if (strncmp(p, head, strlen(head)) == 0) return p + strlen(head);
        p = strchr(p, '\n'); if (p) p++;
    }
    return NULL;
}
static int read_ints(const char *s, int32_t *out, int cap) {
    char *e; long n = strtol(s, &e, 10); int i;
    for (i = 0; i < n && i < cap; i++) out[i] = (int32_t)strtol(e, &e, 10);
    return (int)n;
}

static const char *PROMPTS[4] = {"plain", "chat", "code", "numbers"};

TEST(tokenizer_matches) {
    static const char *texts[4] = {"The quick brown fox jumps over the lazy dog. In 1969, humans first walked on the Moon.",
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
        "Order #4521: 3 items at $19.99, shipped 2024-07-15 to 221B Baker Street."};
    int k;
    for (k = 0; k < 4; k++) {
        int32_t want[256], got[256]; int n = read_ints(line_of("ids", PROMPTS[k], -1), want, 256);
        int64_t m = ft_tokenize(ft_model_tokenizer(M), texts[k], -1, got, 256, 1, 1);
        CHECK(m == n && memcmp(got, want, (size_t)n * 4) == 0, "%s: ids differ", PROMPTS[k]);
    }
}

TEST(logits_match) {
    int32_t vocab[600]; int nv = read_ints(line_of("vocab", "", -1) ? line_of("vocab", "", -1) : "0", vocab, 600), k;
    double worst_rel = 0, worst_abs = 0; int agree = 0, total = 0, near_ties = 0;
    { const char *v = strstr(FIX, "vocab "); nv = read_ints(v + 6, vocab, 600); }
    for (k = 0; k < 4; k++) {
        int32_t ids[256]; int n = read_ints(line_of("ids", PROMPTS[k], -1), ids, 256), t, i; ft_batch b; ft_tensor *y;
        memset(&b, 0, sizeof b); b.B = 1; b.T = n; b.ids = ids;
        ft_ctx_reset(C);
        y = ft_model_forward(C, M, &b);
        for (t = 0; t < n; t++) {
            const char *s = line_of("logits", PROMPTS[k], t); char *e; long am = strtol(s, &e, 10); double range = strtod(e, &e); long cnt = strtol(e, &e, 10);
            const float *row = (const float *)y->data + (size_t)t * 49152; int best = 0;
            for (i = 1; i < 49152; i++) if (row[i] > row[best]) best = i;
            if (best != am) {                           /* allowed only at a near-tie of llama.cpp's own */
                const char *tp = line_of("top", PROMPTS[k], t); char *te; double l1 = 0, lj; int j, tie = 0;
                for (j = 0; j < 5; j++) {                   /* ours among llama.cpp's top 5, within 0.3 of its best */
                    long id = strtol(j ? te : tp, &te, 10); lj = strtod(te, &te);
                    if (j == 0) l1 = lj;
                    if (id == best && l1 - lj < 0.3) tie = 1;
                }
                if (tie) near_ties++;
                else printf("    %s position %d: ours %d, llama.cpp %ld\n", PROMPTS[k], t, best, am);
            }
            agree += best == am; total++;
            for (i = 0; i < cnt && i < nv; i++) {
                double want = strtod(e, &e), d = fabs(row[vocab[i]] - want);
                if (d > worst_abs) worst_abs = d;
                if (d / range > worst_rel) worst_rel = d / range;
            }
        }
    }
    printf("    %d positions: argmax agrees at %d, the others are near-ties of llama.cpp's top 5 (%d); max |logit diff| %.3f = %.4f of the logit range\n",
           total, agree, near_ties, worst_abs, worst_rel);
    CHECK(agree + near_ties == total, "argmax differs at %d positions that are not near-ties", total - agree - near_ties);
    CHECK(worst_rel < 0.05, "max diff %.4f of the range", worst_rel);
}

TEST(greedy_continuations_identical) {
    int k;
    for (k = 0; k < 2; k++) {
        int32_t ids[256], want[64], out[64]; int64_t n = read_ints(line_of("ids", PROMPTS[k], -1), ids, 256), len; int i, same = 0, tie = 64;
        const char *g = line_of("gaps", PROMPTS[k], -1); char *e;
        const int32_t *pr[1]; ft_kv_cache *kv; ft_gen_opts go; ft_rng rng;
        read_ints(line_of("greedy", PROMPTS[k], -1), want, 64);
        ft_kv_cache_init(&kv, M, 1, n + 64);
        memset(&go, 0, sizeof go); go.max_new = 64; pr[0] = ids;
        CHECK_OK(ft_generate(C, M, kv, 1, pr, &n, &go, &rng, out, &len, NULL));
        for (i = 0; i < 64 && out[i] == want[i]; i++) same++;
        strtol(g, &e, 10);
        for (i = 0; i < 64; i++) if (strtod(e, &e) < 0.1) { tie = i; break; }   /* first near-tie of llama.cpp's */
        printf("    %s: %d of 64 greedy tokens identical; llama.cpp's first near-tie (top-2 gap < 0.1) at token %d\n", PROMPTS[k], same, tie);
        CHECK(same >= tie, "%s: differs at token %d, before llama.cpp's first near-tie (%d)", PROMPTS[k], same, tie);
        {   /* teacher-forced on llama.cpp's continuation: our next-token choice at every step is
               llama.cpp's, except where its own top two are within 0.1 */
            int32_t seq[320]; ft_batch b; ft_tensor *y; int agree = 0, ties = 0, bad = 0;
            memcpy(seq, ids, (size_t)n * 4); memcpy(seq + n, want, 64 * 4);
            memset(&b, 0, sizeof b); b.B = 1; b.T = n + 63; b.ids = seq;
            ft_ctx_reset(C);
            y = ft_model_forward(C, M, &b);
            strtol(g, &e, 10);
            for (i = 0; i < 64; i++) {
                const float *row = (const float *)y->data + (size_t)(n - 1 + i) * 49152; int best = 0, j; double gap = strtod(e, &e);
                for (j = 1; j < 49152; j++) if (row[j] > row[best]) best = j;
                if (best == want[i]) agree++; else if (gap < 0.1) ties++; else bad++;
            }
            printf("    %s, teacher-forced: %d of 64 next tokens agree, %d differ at near-ties, %d elsewhere\n", PROMPTS[k], agree, ties, bad);
            CHECK(bad == 0, "%s: %d next-token choices differ away from near-ties", PROMPTS[k], bad);
        }
        ft_kv_cache_free(kv);
    }
}

TEST(perplexity_within_half_a_percent) {
    int32_t ids[1024], tg[1024]; int n = read_ints(line_of("ids", "text", -1), ids, 1024), i; double want = atof(line_of("ppl", "text", -1)), got;
    ft_batch b; ft_tensor *l;
    for (i = 0; i < n; i++) tg[i] = i + 1 < n ? ids[i + 1] : -100;
    memset(&b, 0, sizeof b); b.B = 1; b.T = n; b.ids = ids;
    ft_ctx_reset(C);
    l = ft_cross_entropy(C, ft_model_forward(C, M, &b), tg, -100);
    got = exp(((float *)l->data)[0]);
    printf("    perplexity over %d tokens: %.4f, llama.cpp %.4f (%+.3f%%)\n", n, got, want, 100 * (got - want) / want);
    CHECK(fabs(got - want) / want < 0.005, "ppl %.4f vs %.4f", got, want);
}

int main(void) {
    FILE *f = fopen("tests/fixtures/llamacpp_reference.txt", "rb"); const char *path = getenv("FT_MODEL"); long n;
    if (!f || !path || ft_model_load(&M, path, NULL) != FT_OK) { printf("FAIL - needs FT_MODEL and the fixture: %s\n", ft_last_error()); return 1; }
    fseek(f, 0, SEEK_END); n = ftell(f); fseek(f, 0, SEEK_SET);
    FIX = (char *)malloc((size_t)n + 1); FIXN = fread(FIX, 1, (size_t)n, f); FIX[FIXN] = 0; fclose(f);
    ft_ctx_init(&C, NULL); ft_ctx_set_grad(C, 0);
    RUN(tokenizer_matches);
    RUN(logits_match);
    RUN(greedy_continuations_identical);
    RUN(perplexity_within_half_a_percent);
    ft_ctx_free(C); ft_model_free(M); free(FIX);
    return ft_test_summary("test_llamacpp_ref");
}
