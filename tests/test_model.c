/* test_model.c - the llama forward on a tiny random GGUF: against a plain double-precision
   re-implementation written here from the architecture's definition, KV-cache decoding against
   the full forward, batched decoding against one sequence at a time, and load errors. */
#define FINETUNE_IMPLEMENTATION
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"

static const char *P32 = "build/tiny_f32.gguf", *P16 = "build/tiny_f16.gguf";
static ft_ctx *CTX;

/* ---- the reference: straight loops in double ------------------------------------------------ */
static double *weight(ft_model *m, ft_tensor *t) {
    int64_t n = ft_numel(t), i; double *d = (double *)malloc((size_t)n * sizeof(double));
    float *f = (float *)malloc((size_t)n * 4);
    (void)m;
    ft__type(t->type)->to_f32(t->data, f, n);
    for (i = 0; i < n; i++) d[i] = f[i];
    free(f);
    return d;
}
static void ref_rmsnorm(double *y, const double *x, const double *w, int C, double eps) {
    double s = 0; int i;
    for (i = 0; i < C; i++) s += x[i] * x[i];
    s = 1.0 / sqrt(s / C + eps);
    for (i = 0; i < C; i++) y[i] = x[i] * s * w[i];
}
static void ref_matvec(double *y, const double *W, const double *x, int out, int in) {   /* W (out, in) */
    int o, i;
    for (o = 0; o < out; o++) { double s = 0; for (i = 0; i < in; i++) s += W[o * in + i] * x[i]; y[o] = s; }
}
static void ref_rope(double *x, int heads, int D, int pos, double base) {             /* adjacent pairs */
    int h, i;
    for (h = 0; h < heads; h++)
        for (i = 0; i < D / 2; i++) {
            double th = pos * pow(base, -2.0 * i / D), c = cos(th), s = sin(th);
            double a = x[h * D + 2 * i], b = x[h * D + 2 * i + 1];
            x[h * D + 2 * i] = a * c - b * s; x[h * D + 2 * i + 1] = a * s + b * c;
        }
}
/* logits (T, V) of one sequence */
static void ref_forward(ft_model *m, const int32_t *ids, int T, double *logits) {
    const int C = TINY_C, H = TINY_H, HKV = TINY_HKV, D = TINY_D, F = TINY_F, V = TINY_V;
    double *E = weight(m, ft_model_tok_embd(m)), *h = (double *)calloc((size_t)T * C, 8);
    double *K = (double *)malloc((size_t)T * HKV * D * 8), *Vv = (double *)malloc((size_t)T * HKV * D * 8);
    double *Q = (double *)malloc((size_t)T * H * D * 8), n[64], a[64], g[64], u[64], o[64];
    int l, t, j, hh, i;
    for (t = 0; t < T; t++) for (i = 0; i < C; i++) h[t * C + i] = E[ids[t] * C + i];
    for (l = 0; l < TINY_L; l++) {
        ft_layer *L = ft_model_layer(m, l);
        double *an = weight(m, L->attn_norm), *wq = weight(m, L->wq), *wk = weight(m, L->wk), *wv = weight(m, L->wv);
        double *wo = weight(m, L->wo), *fn = weight(m, L->ffn_norm), *wg = weight(m, L->w_gate), *wu = weight(m, L->w_up), *wd = weight(m, L->w_down);
        for (t = 0; t < T; t++) {
            ref_rmsnorm(n, h + t * C, an, C, 1e-5);
            ref_matvec(Q + t * H * D, wq, n, H * D, C); ref_matvec(K + t * HKV * D, wk, n, HKV * D, C); ref_matvec(Vv + t * HKV * D, wv, n, HKV * D, C);
            ref_rope(Q + t * H * D, H, D, t, 10000.0); ref_rope(K + t * HKV * D, HKV, D, t, 10000.0);
        }
        for (t = 0; t < T; t++) {
            for (hh = 0; hh < H; hh++) {
                int g_ = hh / (H / HKV); double s[64], mx = -1e300, z = 0;
                for (j = 0; j <= t; j++) {
                    double d = 0; for (i = 0; i < D; i++) d += Q[t * H * D + hh * D + i] * K[j * HKV * D + g_ * D + i];
                    s[j] = d / sqrt((double)D); if (s[j] > mx) mx = s[j];
                }
                for (j = 0; j <= t; j++) { s[j] = exp(s[j] - mx); z += s[j]; }
                for (i = 0; i < D; i++) { double acc = 0; for (j = 0; j <= t; j++) acc += s[j] / z * Vv[j * HKV * D + g_ * D + i]; a[hh * D + i] = acc; }
            }
            ref_matvec(o, wo, a, C, H * D);
            for (i = 0; i < C; i++) h[t * C + i] += o[i];
            ref_rmsnorm(n, h + t * C, fn, C, 1e-5);
            ref_matvec(g, wg, n, F, C); ref_matvec(u, wu, n, F, C);
            for (i = 0; i < F; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            ref_matvec(o, wd, g, C, F);
            for (i = 0; i < C; i++) h[t * C + i] += o[i];
        }
        free(an); free(wq); free(wk); free(wv); free(wo); free(fn); free(wg); free(wu); free(wd);
    }
    {
        double *on = weight(m, m->output_norm);
        for (t = 0; t < T; t++) { ref_rmsnorm(n, h + t * C, on, C, 1e-5); ref_matvec(logits + t * V, E, n, V, C); }
        free(on);
    }
    free(E); free(h); free(K); free(Vv); free(Q);
}

static const int32_t IDS[2][9] = {{1, 5, 63, 7, 7, 0, 22, 41, 9}, {3, 3, 17, 60, 2, 11, 8, 50, 33}};

TEST(tiny_model_loads) {
    ft_model *m; const ft_model_config *c;
    CHECK_OK(ft_model_load(&m, P32, NULL));
    if (!m) return;
    c = ft_model_config_get(m);
    CHECK(c->arch == FT_ARCH_LLAMA && c->n_vocab == TINY_V && c->n_embd == TINY_C && c->n_layer == TINY_L, "config");
    CHECK(c->n_head == TINY_H && c->n_head_kv == TINY_HKV && c->head_dim == TINY_D && c->n_ff == TINY_F, "heads");
    CHECK(c->tied_embeddings && ft_model_output(m) == ft_model_tok_embd(m), "tied");
    CHECK(c->n_params == TINY_V * TINY_C + TINY_C + TINY_L * (2 * TINY_C + TINY_C * TINY_H * TINY_D * 2 + 2 * TINY_C * TINY_HKV * TINY_D + 3 * TINY_C * TINY_F), "params %lld", (long long)c->n_params);
    CHECK(strcmp(ft_model_layer(m, 1)->wq->name, "blk.1.attn_q.weight") == 0, "weight names");
    ft_model_free(m);
}

static void forward_matches_reference(const char *path, double tol) {
    ft_model *m; ft_batch b; ft_tensor *y; double *ref = (double *)malloc(2 * 9 * TINY_V * 8), worst = 0; int s, i;
    CHECK_OK(ft_model_load(&m, path, NULL));
    if (!m) return;
    ft_ctx_reset(CTX);
    memset(&b, 0, sizeof b); b.B = 2; b.T = 9; b.ids = &IDS[0][0];
    y = ft_model_forward(CTX, m, &b);
    CHECK(y && y->shape[0] == 18 && y->shape[1] == TINY_V, "logits shape");
    if (!y) { ft_model_free(m); free(ref); return; }
    for (s = 0; s < 2; s++) {
        ref_forward(m, IDS[s], 9, ref);
        for (i = 0; i < 9 * TINY_V; i++) {
            double d = fabs(((float *)y->data)[s * 9 * TINY_V + i] - ref[i]);
            if (d > worst) worst = d;
        }
    }
    printf("    %s: max |logit - reference| = %.3g\n", path, worst);
    CHECK(worst < tol, "worst %.3g", worst);
    ft_model_free(m); free(ref);
}
TEST(forward_matches_reference_f32) { forward_matches_reference(P32, 2e-4); }
TEST(forward_matches_reference_f16) { forward_matches_reference(P16, 2e-4); }

TEST(kv_cache_decode_matches_full_forward) {
    ft_model *m; ft_kv_cache *kv; ft_batch b; ft_tensor *full, *y; float *fl; int t, i; double worst = 0;
    CHECK_OK(ft_model_load(&m, P32, NULL));
    CHECK_OK(ft_kv_cache_init(&kv, m, 2, 32));
    if (!m || !kv) return;
    ft_ctx_reset(CTX);
    memset(&b, 0, sizeof b); b.B = 1; b.T = 9; b.ids = IDS[0];
    full = ft_model_forward(CTX, m, &b);
    fl = (float *)malloc(9 * TINY_V * 4); memcpy(fl, full->data, 9 * TINY_V * 4);
    ft_ctx_reset(CTX);
    y = ft_model_decode(CTX, m, kv, 1, IDS[0], 1, 5, 0);           /* prefill 5 tokens in row 1 */
    for (i = 0; i < 5 * TINY_V; i++) worst = fmax(worst, fabs(((float *)y->data)[i] - fl[i]));
    for (t = 5; t < 9; t++) {
        ft_ctx_reset(CTX);
        y = ft_model_decode(CTX, m, kv, 1, &IDS[0][t], 1, 1, 1);
        CHECK(y && y->shape[0] == 1 && y->shape[1] == TINY_V, "decode shape");
        for (i = 0; i < TINY_V; i++) worst = fmax(worst, fabs(((float *)y->data)[i] - fl[t * TINY_V + i]));
    }
    CHECK(ft_kv_cache_len(kv, 1) == 9 && ft_kv_cache_len(kv, 0) == 0, "lengths");
    printf("    max |decode - forward| = %.3g\n", worst);
    CHECK(worst < 1e-5, "worst %.3g", worst);
    ft_ctx_reset(CTX);
    CHECK(ft_model_decode(CTX, m, kv, 1, IDS[0], 1, 30, 1) == NULL && ft_ctx_status(CTX) == FT_ERR_INVALID, "overflowing the cache is an error");
    free(fl); ft_kv_cache_free(kv); ft_model_free(m);
}

TEST(batched_decode_with_different_lengths) {
    ft_model *m; ft_kv_cache *kv, *kv1; ft_tensor *y; float one[2][TINY_V]; int i, s; int32_t next[2] = {4, 9};
    double worst = 0;
    CHECK_OK(ft_model_load(&m, P32, NULL));
    CHECK_OK(ft_kv_cache_init(&kv, m, 2, 32));
    CHECK_OK(ft_kv_cache_init(&kv1, m, 1, 32));
    /* one at a time */
    for (s = 0; s < 2; s++) {
        ft_kv_cache_clear(kv1, -1);
        ft_ctx_reset(CTX); ft_model_decode(CTX, m, kv1, 0, IDS[s], 1, 4 + s * 3, 1);
        ft_ctx_reset(CTX); y = ft_model_decode(CTX, m, kv1, 0, &next[s], 1, 1, 1);
        memcpy(one[s], y->data, sizeof one[s]);
    }
    /* prefill each row with its own length, then one batched step */
    ft_ctx_reset(CTX); ft_model_decode(CTX, m, kv, 0, IDS[0], 1, 4, 1);
    ft_ctx_reset(CTX); ft_model_decode(CTX, m, kv, 1, IDS[1], 1, 7, 1);
    ft_ctx_reset(CTX); y = ft_model_decode(CTX, m, kv, 0, next, 2, 1, 1);
    for (s = 0; s < 2; s++) for (i = 0; i < TINY_V; i++) worst = fmax(worst, fabs(((float *)y->data)[s * TINY_V + i] - one[s][i]));
    CHECK(worst < 1e-5, "batched vs single: %.3g", worst);
    ft_kv_cache_free(kv); ft_kv_cache_free(kv1); ft_model_free(m);
}


TEST(sampling) {
    float logits[5] = {1.0f, 2.0f, 0.5f, 2.0f, -1.0f}; ft_sample_opts o; ft_rng r; int cnt[5] = {0}, i;
    double z = 0, p[5];
    memset(&o, 0, sizeof o);
    ft_ctx_reset(CTX);
    CHECK(ft_sample(CTX, logits, 5, &o, &r) == 1, "greedy: first of the tied maxima");
    o.temperature = 0.7f; ft_rng_seed(&r, 3);
    for (i = 0; i < 5; i++) z += exp(logits[i] / 0.7);
    for (i = 0; i < 5; i++) p[i] = exp(logits[i] / 0.7) / z;
    for (i = 0; i < 40000; i++) { ft_ctx_reset(CTX); cnt[ft_sample(CTX, logits, 5, &o, &r)]++; }
    for (i = 0; i < 5; i++) CHECK(fabs(cnt[i] / 40000.0 - p[i]) < 0.01, "token %d: %.4f vs %.4f", i, cnt[i] / 40000.0, p[i]);
    o.top_k = 2; memset(cnt, 0, sizeof cnt);
    for (i = 0; i < 2000; i++) { ft_ctx_reset(CTX); cnt[ft_sample(CTX, logits, 5, &o, &r)]++; }
    CHECK(cnt[0] == 0 && cnt[2] == 0 && cnt[4] == 0 && cnt[1] > 800 && cnt[3] > 800, "top-k 2 keeps the two best");
    o.top_k = 0; o.top_p = 0.5f; memset(cnt, 0, sizeof cnt);
    for (i = 0; i < 2000; i++) { ft_ctx_reset(CTX); cnt[ft_sample(CTX, logits, 5, &o, &r)]++; }
    CHECK(cnt[1] + cnt[3] == 2000, "top-p 0.5: only the tied best two (%d %d %d)", cnt[0], cnt[1], cnt[3]);
}

/* greedy generation equals re-running the full forward and taking the argmax each step */
TEST(generate_greedy_matches_full_forward) {
    ft_model *m; ft_kv_cache *kv; ft_gen_opts go; ft_rng r; int32_t out[3 * 12], seq[64]; int64_t len[3], plen[3] = {3, 5, 3};
    const int32_t *prompts[3]; int s, t, i, ok = 1;
    CHECK_OK(ft_model_load(&m, P32, NULL));
    CHECK_OK(ft_kv_cache_init(&kv, m, 3, 32));
    prompts[0] = IDS[0]; prompts[1] = IDS[1]; prompts[2] = IDS[0];
    memset(&go, 0, sizeof go); go.max_new = 12;
    CHECK_OK(ft_generate(CTX, m, kv, 3, prompts, plen, &go, &r, out, len, NULL));
    CHECK(len[0] == 12 && len[1] == 12 && memcmp(out, out + 24, 12 * 4) == 0, "same prompt, same output");
    for (s = 0; s < 2; s++) {
        int n = (int)plen[s];
        memcpy(seq, prompts[s], (size_t)n * 4);
        for (t = 0; t < 12; t++) {
            ft_batch b; ft_tensor *y; int32_t best = 0; float *l;
            memset(&b, 0, sizeof b); b.B = 1; b.T = n; b.ids = seq;
            ft_ctx_reset(CTX);
            y = ft_model_forward(CTX, m, &b);
            l = (float *)y->data + (n - 1) * TINY_V;
            for (i = 1; i < TINY_V; i++) if (l[i] > l[best]) best = i;
            if (best != out[s * 12 + t]) ok = 0;
            seq[n++] = best;
        }
    }
    CHECK(ok, "greedy generation differs from step-by-step argmax of the full forward");
    /* a stop id ends a sequence and is kept */
    go.stop = &out[3]; go.n_stop = 1;
    CHECK_OK(ft_generate(CTX, m, kv, 1, prompts, plen, &go, &r, out + 12, len, NULL));
    CHECK(len[0] <= 4 && out[12 + len[0] - 1] == out[3], "stopped at the stop id (len %lld)", (long long)len[0]);
    ft_kv_cache_free(kv); ft_model_free(m);
}

TEST(load_errors_are_clear) {
    ft_model *m; ft_gguf_writer *w; ft_result r; float x[4] = {0};
    int64_t ne[2] = {4, 1};
    ft_gguf_writer_init(&w);
    ft_gguf_set_str(w, "general.architecture", "gpt-neox");
    ft_gguf_add_tensor(w, "token_embd.weight", FT_TYPE_F32, 2, ne, x);
    ft_gguf_write(w, "build/bad_arch.gguf");
    r = ft_model_load(&m, "build/bad_arch.gguf", NULL);
    CHECK(r == FT_ERR_UNSUPPORTED && strstr(ft_last_error(), "gpt-neox") && strstr(ft_last_error(), "bad_arch.gguf"), "%s", ft_last_error());
    ft_gguf_set_str(w, "general.architecture", "llama");
    ft_gguf_write(w, "build/bad_arch.gguf");
    r = ft_model_load(&m, "build/bad_arch.gguf", NULL);
    CHECK(r == FT_ERR_FORMAT && strstr(ft_last_error(), "llama.embedding_length"), "%s", ft_last_error());
    ft_gguf_writer_free(w);
    remove("build/bad_arch.gguf");
}

/* a weight converted at load (NF4) gives its file's pages back (ft__gguf_release): the process's
   resident memory drops by them, and the bytes read back from the file unchanged; memory that is
   not a mapping of the file is left alone */
#if defined(__linux__)
static double vm_rss_mib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f)) if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb / 1024.0;
}
#endif
TEST(released_file_pages_read_back) {
#if defined(__linux__)
    const int64_t n = (int64_t)8 << 20;                        /* 32 MiB of f32 */
    float *x = (float *)malloc((size_t)n * 4), *copy = (float *)malloc((size_t)n * 4);
    int64_t ne[1], i;
    ft_gguf_writer *w;
    ft_gguf *g = NULL;
    const ft_gguf_tensor *t;
    double rss0, rss1, sum = 0;
    ne[0] = n;
    for (i = 0; i < n; i++) x[i] = (float)(i % 1000) * 0.5f;
    ft_gguf_writer_init(&w);
    ft_gguf_add_tensor(w, "big", FT_TYPE_F32, 1, ne, x);
    CHECK_OK(ft_gguf_write(w, "build/release_pages.gguf"));
    ft_gguf_writer_free(w);
    CHECK_OK(ft_gguf_open(&g, "build/release_pages.gguf"));
    t = g ? ft_gguf_find_tensor(g, "big") : NULL;
    CHECK(t != NULL, "tensor");
    if (t) {
        const float *d = (const float *)t->data;
        for (i = 0; i < n; i += 1024) sum += d[i];           /* every page resident */
        rss0 = vm_rss_mib();
        ft__gguf_release(g, t->data, (size_t)n * 4);
        rss1 = vm_rss_mib();
        printf("    resident: %.1f MiB -> %.1f MiB after giving back the 32 MiB tensor\n", rss0, rss1);
        CHECK(rss0 - rss1 > 28, "%.1f MiB given back", rss0 - rss1);
        CHECK(memcmp(d, x, (size_t)n * 4) == 0, "the bytes read back from the file differ");
        memcpy(copy, x, (size_t)n * 4);
        ft__gguf_release(g, copy, (size_t)n * 4);             /* not the file's: untouched */
        CHECK(memcmp(copy, x, (size_t)n * 4) == 0 && sum > 0, "malloc'd memory was changed");
    }
    ft_gguf_close(g);
    remove("build/release_pages.gguf");
    free(x); free(copy);
#else
    printf("    skipped: Linux only\n");
#endif
}

FT_TEST_MAIN(test_model) {
    ft_ctx_opts o; memset(&o, 0, sizeof o); o.n_threads = 2;
    if (!tiny_model_write(P32, FT_TYPE_F32, 1) || !tiny_model_write(P16, FT_TYPE_F16, 1)) { printf("cannot write the tiny model: %s\n", ft_last_error()); return 1; }
    ft_ctx_init(&CTX, &o);
    RUN(tiny_model_loads);
    RUN(forward_matches_reference_f32);
    RUN(forward_matches_reference_f16);
    RUN(kv_cache_decode_matches_full_forward);
    RUN(batched_decode_with_different_lengths);
    RUN(sampling);
    RUN(generate_greedy_matches_full_forward);
    RUN(load_errors_are_clear);
    RUN(released_file_pages_read_back);
    ft_ctx_free(CTX);
    return ft_test_summary("test_model");
}
