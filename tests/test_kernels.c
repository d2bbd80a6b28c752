/* test_kernels.c - SIMD kernels against the scalar references, GEMM and attention against plain
   loops, bit-identical results for 1 and 2 threads. Built twice by the Makefile: with the machine's
   SIMD and with FT_NO_SIMD (where both sides are the reference). Tolerances: relative 1e-5 of
   the summed magnitudes for reductions, 2e-6 relative for exp. */
#define FINETUNE_IMPLEMENTATION
#include "../finetune.h"
#include "ft_test.h"

static ft_rng R;
static float *randv(int64_t n, float lo, float hi) {
    float *v = (float *)malloc((size_t)(n ? n : 1) * sizeof(float)); int64_t i;
    for (i = 0; i < n; i++) v[i] = lo + (hi - lo) * ft_rng_uniform(&R);
    return v;
}
static const int64_t LENS[] = {0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 577, 1536, 4099};
#define NLENS ((int)(sizeof LENS / sizeof LENS[0]))

TEST(simd_name) { printf("    simd: %s\n", ft_simd_name()); CHECK(strlen(ft_simd_name()) > 0, "name"); }

TEST(vec_reductions_match_reference) {
    int li;
    for (li = 0; li < NLENS; li++) {
        int64_t n = LENS[li], i; float *x = randv(n, -2, 2), *y = randv(n, -2, 2); double mag = 0, msum = 0;
        for (i = 0; i < n; i++) { mag += fabs(x[i] * y[i]); msum += fabs(x[i]); }
        CHECK(fabs(ft__vec_dot(n, x, y) - ft__vec_dot_ref(n, x, y)) <= 1e-5 * mag + 1e-7, "dot n=%lld", (long long)n);
        CHECK(fabs(ft__vec_sum(n, x) - ft__vec_sum_ref(n, x)) <= 1e-5 * msum + 1e-7, "sum n=%lld", (long long)n);
        CHECK(ft__vec_max(n, x) == ft__vec_max_ref(n, x), "max n=%lld", (long long)n);
        {
            float s1 = ft__vec_expsum(n, x, 0.5f), s2 = ft__vec_expsum_ref(n, x, 0.5f);
            CHECK(fabs(s1 - s2) <= 1e-5 * fabs(s2) + 1e-7, "expsum n=%lld: %g vs %g", (long long)n, s1, s2);
        }
        free(x); free(y);
    }
}

TEST(vec_elementwise_match_reference) {
    int li;
    for (li = 0; li < NLENS; li++) {
        int64_t n = LENS[li]; long worst;
        float *x = randv(n, -8, 8), *a = randv(n, -1, 1), *b = (float *)malloc((size_t)(n + 1) * 4);
        float s1, s2;
        memcpy(b, a, (size_t)n * 4);
        ft__vec_axpy(n, 0.7f, x, a); ft__vec_axpy_ref(n, 0.7f, x, b);
        CHECK(ft_test_close(a, b, (long)n, 1e-6, 1e-6, &worst) <= 1, "axpy n=%lld at %ld", (long long)n, worst);
        ft__vec_scale(n, a, -1.3f, x); ft__vec_scale_ref(n, b, -1.3f, x);
        CHECK(ft_test_close(a, b, (long)n, 0, 1e-7, &worst) <= 1, "scale n=%lld", (long long)n);
        ft__vec_silu(n, a, x); ft__vec_silu_ref(n, b, x);
        CHECK(ft_test_close(a, b, (long)n, 1e-7, 4e-6, &worst) <= 1, "silu n=%lld at %ld: %g vs %g", (long long)n, worst, worst >= 0 ? a[worst] : 0, worst >= 0 ? b[worst] : 0);
        s1 = ft__vec_exp(n, a, x, 1.0f); s2 = ft__vec_exp_ref(n, b, x, 1.0f);
        CHECK(ft_test_close(a, b, (long)n, 0, 2e-6, &worst) <= 1 && fabs(s1 - s2) <= 1e-5 * fabs(s2), "exp n=%lld", (long long)n);
        memset(a, 0, (size_t)n * 4); memset(b, 0, (size_t)n * 4);
        ft__vec_exp_axpy(n, 0.25f, x, 2.0f, a); ft__vec_exp_axpy_ref(n, 0.25f, x, 2.0f, b);
        CHECK(ft_test_close(a, b, (long)n, 0, 2e-6, &worst) <= 1, "exp_axpy n=%lld", (long long)n);
        free(x); free(a); free(b);
    }
}

/* AdamW's update and the finite check of the gradients: the SIMD versions against the scalar
   loops (both make the same operations in the same order; the tolerance is the compiler's freedom
   to fuse a scalar multiply-add), and a NaN or inf anywhere, in the vector body or the tail */
TEST(vec_adamw_and_finite_match_reference) {
    int li;
    for (li = 0; li < NLENS; li++) {
        int64_t n = LENS[li], i; long worst;
        float *p = randv(n, -1, 1), *g = randv(n, -0.1f, 0.1f), *m = randv(n, -0.01f, 0.01f), *v = randv(n, 0, 1e-4f);
        float *p2 = (float *)malloc((size_t)(n + 1) * 4), *m2 = (float *)malloc((size_t)(n + 1) * 4), *v2 = (float *)malloc((size_t)(n + 1) * 4);
        ft__adamw_k k;
        k.a = 1e-3f; k.wd = 0.01f; k.b1 = 0.9f; k.b2 = 0.999f; k.eps = 1e-8f; k.c1 = 1.0f / 0.19f; k.c2 = 1.0f / 0.002f;
        memcpy(p2, p, (size_t)n * 4); memcpy(m2, m, (size_t)n * 4); memcpy(v2, v, (size_t)n * 4);
        ft__vec_adamw(n, p, g, m, v, &k); ft__vec_adamw_ref(n, p2, g, m2, v2, &k);
        CHECK(ft_test_close(p, p2, (long)n, 1e-7, 1e-6, &worst) <= 1, "adamw p n=%lld at %ld", (long long)n, worst);
        CHECK(ft_test_close(m, m2, (long)n, 1e-9, 1e-6, &worst) <= 1, "adamw m n=%lld at %ld", (long long)n, worst);
        CHECK(ft_test_close(v, v2, (long)n, 1e-12, 1e-6, &worst) <= 1, "adamw v n=%lld at %ld", (long long)n, worst);
        CHECK(ft__vec_finite(n, g) == 1, "finite n=%lld", (long long)n);
        for (i = 0; i < n; i += n / 3 + 1) {
            float keep = g[i];
            g[i] = NAN;
            CHECK(ft__vec_finite(n, g) == 0 && ft__vec_finite_ref(n, g) == 0, "NaN at %lld of %lld", (long long)i, (long long)n);
            g[i] = -INFINITY;
            CHECK(ft__vec_finite(n, g) == 0, "-inf at %lld of %lld", (long long)i, (long long)n);
            g[i] = keep;
        }
        free(p); free(g); free(m); free(v); free(p2); free(m2); free(v2);
    }
}

TEST(vector_exp_accuracy) {
    /* over the whole useful range, against expf */
    int64_t n = 200001, i; float *x = (float *)malloc((size_t)n * 4), *y = (float *)malloc((size_t)n * 4);
    double worst = 0;
    for (i = 0; i < n; i++) x[i] = -87.0f + 175.0f * (float)i / (float)(n - 1);
    ft__vec_exp(n, y, x, 0.0f);
    for (i = 0; i < n; i++) { double r = fabs(y[i] - exp((double)x[i])) / exp((double)x[i]); if (r > worst) worst = r; }
    printf("    exp: worst relative error %.3g on [-87, 88]\n", worst);
    CHECK(worst < 2e-6, "worst %.3g", worst);
    x[0] = NAN; ft__vec_exp(1 + 16, y, x, 0.0f);
    CHECK(y[0] != y[0], "exp(NaN) is NaN");
    free(x); free(y);
}

static void gemm_case(ft_ctx *c1, ft_ctx *c2, int ta, int tb, int64_t M, int64_t N, int64_t K, int acc, int pad) {
    int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    float *A = randv((ta ? K : M) * lda, -1, 1), *B = randv((tb ? N : K) * ldb, -1, 1);
    float *C0 = randv(M * ldc, -1, 1), *C1 = (float *)malloc((size_t)(M * ldc + 1) * 4), *C2 = (float *)malloc((size_t)(M * ldc + 1) * 4);
    int64_t i, j; double worst = 0;
    memcpy(C1, C0, (size_t)(M * ldc) * 4); memcpy(C2, C0, (size_t)(M * ldc) * 4);
    ft_gemm(c1, ta, tb, M, N, K, A, lda, B, ldb, C1, ldc, acc);
    ft_gemm(c2, ta, tb, M, N, K, A, lda, B, ldb, C2, ldc, acc);
    ft_gemm_ref(ta, tb, M, N, K, A, lda, B, ldb, C0, ldc, acc);
    for (i = 0; i < M; i++) for (j = 0; j < N; j++) {
        double d = fabs(C1[i * ldc + j] - C0[i * ldc + j]) / (1e-5 * (double)(K + 1));
        if (d > worst) worst = d;
    }
    CHECK(worst <= 1, "gemm ta=%d tb=%d %lldx%lldx%lld acc=%d: error %g x tolerance", ta, tb, (long long)M, (long long)N, (long long)K, acc, worst);
    CHECK(memcmp(C1, C2, (size_t)(M * ldc) * 4) == 0, "gemm 1 vs 2 threads differ ta=%d tb=%d %lldx%lldx%lld", ta, tb, (long long)M, (long long)N, (long long)K);
    free(A); free(B); free(C0); free(C1); free(C2);
}

TEST(gemm_matches_reference_any_shape) {
    ft_ctx *c1, *c2; ft_ctx_opts o; int ta, tb, acc, si;
    static const int64_t shapes[][3] = {{1, 1, 1}, {1, 7, 3}, {5, 1, 9}, {7, 13, 1}, {17, 33, 65}, {31, 64, 577},
                                        {64, 48, 256}, {129, 95, 300}, {6, 16, 1000}, {3, 200, 17}, {0, 5, 5}, {4, 4, 0}};
    memset(&o, 0, sizeof o); o.n_threads = 1; ft_ctx_init(&c1, &o);
    o.n_threads = 2; ft_ctx_init(&c2, &o);
    for (si = 0; si < (int)(sizeof shapes / sizeof shapes[0]); si++)
        for (ta = 0; ta < 2; ta++) for (tb = 0; tb < 2; tb++) for (acc = 0; acc < 2; acc++)
            gemm_case(c1, c2, ta, tb, shapes[si][0], shapes[si][1], shapes[si][2], acc, si % 3);
    gemm_case(c1, c2, 0, 1, 300, 576, 576, 0, 0);          /* a model-sized tile */
    /* M splits that pack B together (the shared panels, a barrier per block): one tile row, so one
       of the two threads has no rows but packs, over 7 K blocks; 2 N blocks x 3 K blocks */
    for (tb = 0; tb < 2; tb++) {
        gemm_case(c1, c2, 0, tb, 14, 32, 5000, 1, 0);
        gemm_case(c1, c2, 0, tb, 28, 2080, 1600, 0, 1);
    }
    ft_ctx_free(c1); ft_ctx_free(c2);
}

/* bf16 compute (ft_ctx_opts.compute): the GEMM of A and B rounded to bf16, summed in f32, is the
   triple loop in double over the rounded inputs within the f32 tolerance, and 1 and 2 threads
   give the same bits; the unrounded inputs' product is further off (the rounding happened).
   Shapes with odd K (the last k-pair half empty) and edge tiles, every transpose */
static float *bf16_copy(const float *x, int64_t n) {
    float *y = (float *)malloc((size_t)(n + 1) * 4); int64_t i;
    for (i = 0; i < n; i++) y[i] = ft_bf16_to_fp32(ft_fp32_to_bf16(x[i]));
    return y;
}
TEST(gemm_in_bf16_matches_the_rounded_reference) {
    ft_ctx *c[2]; ft_ctx_opts o; int ta, tb, si, t;
    static const int64_t shapes[][3] = {{1, 1, 1}, {5, 33, 7}, {17, 40, 65}, {31, 64, 577}, {129, 95, 300}, {300, 576, 576},
                                        {14, 32, 5001}, {28, 2080, 1600}};    /* B packed together (as above) */
    double worst = 0, off = 0;
    memset(&o, 0, sizeof o); o.compute = FT_COMPUTE_BF16;
    for (t = 0; t < 2; t++) { o.n_threads = t + 1; ft_ctx_init(&c[t], &o); }
    for (si = 0; si < (int)(sizeof shapes / sizeof shapes[0]); si++)
        for (ta = 0; ta < 2; ta++) for (tb = 0; tb < 2; tb++) {
            int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2], i, na = M * K, nb = K * N;
            int64_t lda = ta ? M : K, ldb = tb ? K : N;
            float *A = randv(na, -1, 1), *B = randv(nb, -1, 1), *Ar = bf16_copy(A, na), *Br = bf16_copy(B, nb);
            float *C1 = (float *)malloc((size_t)(M * N) * 4), *C2 = (float *)malloc((size_t)(M * N) * 4);
            float *R = (float *)malloc((size_t)(M * N) * 4), *F = (float *)malloc((size_t)(M * N) * 4);
            double w = 0, f = 0;
            ft_gemm(c[0], ta, tb, M, N, K, A, lda, B, ldb, C1, N, 0);
            ft_gemm(c[1], ta, tb, M, N, K, A, lda, B, ldb, C2, N, 0);
            ft_gemm_ref(ta, tb, M, N, K, Ar, lda, Br, ldb, R, N, 0);
            ft_gemm_ref(ta, tb, M, N, K, A, lda, B, ldb, F, N, 0);
            for (i = 0; i < M * N; i++) {
                w = fmax(w, fabs(C1[i] - R[i]) / (1e-5 * (double)(K + 1)));
                f = fmax(f, fabs(C1[i] - F[i]) / (1e-5 * (double)(K + 1)));
            }
            CHECK(w <= 1, "bf16 gemm ta=%d tb=%d %lldx%lldx%lld: %g x the tolerance from the rounded reference", ta, tb, (long long)M, (long long)N, (long long)K, w);
            CHECK(memcmp(C1, C2, (size_t)(M * N) * 4) == 0, "bf16 gemm ta=%d tb=%d %lldx%lldx%lld: 1 vs 2 threads differ", ta, tb, (long long)M, (long long)N, (long long)K);
            worst = fmax(worst, w);
            if (K >= 65) off = fmax(off, f);
            free(A); free(B); free(Ar); free(Br); free(C1); free(C2); free(R); free(F);
        }
    printf("    bf16 gemm (%s): within %.2f of the f32 tolerance from the rounded inputs' product; the unrounded one is %.0f tolerances away\n",
           ft_compute_bf16_native() ? "AVX512-BF16 dot products" : "rounded inputs, f32 kernel", worst, off);
    CHECK(off > 10, "bf16 inputs are rounded: %g tolerances from the f32 product", off);
    ft_ctx_free(c[0]); ft_ctx_free(c[1]);
}

/* the skinny products of LoRA's low-rank side against the triple loop, 1 vs 2 threads identical:
   Y (r, N) = s A X^T, then C (r, K) += V X stored both ways (C and C^T) */
TEST(skinny_match_reference) {
    ft_ctx *c[2]; ft_ctx_opts o; int si, t;
    static const int64_t shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {8, 33, 65}, {11, 64, 577}, {16, 129, 100}, {5, 2, 1536}, {24, 300, 33}};
    memset(&o, 0, sizeof o); o.n_threads = 1; ft_ctx_init(&c[0], &o);
    o.n_threads = 2; ft_ctx_init(&c[1], &o);
    for (si = 0; si < (int)(sizeof shapes / sizeof shapes[0]); si++) {
        int64_t r = shapes[si][0], N = shapes[si][1], K = shapes[si][2], ldx = K + si % 3, i, j;
        float *A = randv(r * K, -1, 1), *X = randv(N * ldx, -1, 1), *V = randv(r * N, -1, 1), *C0 = randv(r * K, -1, 1);
        float *Y[2], *C[2], *CT[2], *Yr = (float *)malloc((size_t)(r * N) * 4), *Cr = (float *)malloc((size_t)(r * K) * 4);
        double wy = 0, wc = 0, wt = 0;
        for (t = 0; t < 2; t++) {
            Y[t] = (float *)malloc((size_t)(r * N) * 4); C[t] = (float *)malloc((size_t)(r * K) * 4); CT[t] = (float *)malloc((size_t)(r * K) * 4);
            memcpy(C[t], C0, (size_t)(r * K) * 4);
            for (i = 0; i < r; i++) for (j = 0; j < K; j++) CT[t][j * r + i] = C0[i * K + j];
            ft__skinny_dot(c[t], r, N, K, 0.5f, A, X, ldx, Y[t]);
            ft__skinny_acc(c[t], r, N, K, V, X, ldx, C[t], K, 1);
            ft__skinny_acc(c[t], r, N, K, V, X, ldx, CT[t], 1, r);
        }
        ft_gemm_ref(0, 1, r, N, K, A, K, X, ldx, Yr, N, 0);
        memcpy(Cr, C0, (size_t)(r * K) * 4);
        ft_gemm_ref(0, 0, r, K, N, V, N, X, ldx, Cr, K, 1);
        for (i = 0; i < r * N; i++) wy = fmax(wy, fabs(Y[0][i] - 0.5 * Yr[i]) / (1e-5 * (double)(K + 1)));
        for (i = 0; i < r; i++) for (j = 0; j < K; j++) {
            wc = fmax(wc, fabs(C[0][i * K + j] - Cr[i * K + j]) / (1e-5 * (double)(N + 1)));
            wt = fmax(wt, fabs(CT[0][j * r + i] - Cr[i * K + j]) / (1e-5 * (double)(N + 1)));
        }
        CHECK(wy <= 1 && wc <= 1 && wt <= 1, "skinny r=%lld N=%lld K=%lld: errors %g %g %g x tolerance", (long long)r, (long long)N, (long long)K, wy, wc, wt);
        CHECK(memcmp(Y[0], Y[1], (size_t)(r * N) * 4) == 0 && memcmp(C[0], C[1], (size_t)(r * K) * 4) == 0 &&
              memcmp(CT[0], CT[1], (size_t)(r * K) * 4) == 0, "skinny r=%lld N=%lld K=%lld: 1 vs 2 threads differ", (long long)r, (long long)N, (long long)K);
        for (t = 0; t < 2; t++) { free(Y[t]); free(C[t]); free(CT[t]); }
        free(A); free(X); free(V); free(C0); free(Yr); free(Cr);
    }
    ft_ctx_free(c[0]); ft_ctx_free(c[1]);
}

/* the pooled element-wise kernels (residual add, gradient pass-on, swiglu and its backward,
   stored or added) against the scalar formulas in double */
TEST(elementwise_kernels_match_reference) {
    ft_ctx *ctx; ft_ctx_opts o; int li, fresh;
    memset(&o, 0, sizeof o); o.n_threads = 2; ft_ctx_init(&ctx, &o);
    for (li = 0; li < NLENS; li++) for (fresh = 0; fresh < 2; fresh++) {
        int64_t n = LENS[li] * 3, i; ft__ew e;
        float *a = randv(n, -6, 6), *b = randv(n, -2, 2), *g = randv(n, -1, 1), *y = randv(n, -1, 1), *y2 = randv(n, -1, 1);
        float *y0 = (float *)malloc((size_t)(n + 1) * 4), *y20 = (float *)malloc((size_t)(n + 1) * 4);
        double wa = 0, ws = 0, wb = 0;
        memcpy(y0, y, (size_t)n * 4); memcpy(y20, y2, (size_t)n * 4);
        memset(&e, 0, sizeof e); e.kind = FT__EW_ADD; e.n = n; e.a = a; e.b = b; e.s = -1; e.y = y;
        ft__ew_run(ctx, &e, 1);
        for (i = 0; i < n; i++) wa = fmax(wa, fabs(y[i] - ((double)a[i] - b[i])));
        memcpy(y, y0, (size_t)n * 4);
        memset(&e, 0, sizeof e); e.kind = FT__EW_ACC; e.n = n; e.a = a; e.s = 0.5f; e.y = y; e.fresh = fresh;
        ft__ew_run(ctx, &e, 2);
        for (i = 0; i < n; i++) wa = fmax(wa, fabs(y[i] - ((fresh ? 0 : (double)y0[i]) + 0.5 * a[i])) / 1e-6);
        memset(&e, 0, sizeof e); e.kind = FT__EW_SWIGLU; e.n = n; e.a = a; e.b = b; e.y = y;
        ft__ew_run(ctx, &e, 20);
        for (i = 0; i < n; i++) ws = fmax(ws, fabs(y[i] - a[i] / (1 + exp(-(double)a[i])) * b[i]) / (1e-6 * (1 + fabs(y[i]))));
        memcpy(y, y0, (size_t)n * 4);
        memset(&e, 0, sizeof e); e.kind = FT__EW_SWIGLU_BACK; e.n = n; e.a = a; e.b = b; e.c = g; e.y = y; e.y2 = y2; e.fresh = fresh; e.fresh2 = !fresh;
        ft__ew_run(ctx, &e, 30);
        for (i = 0; i < n; i++) {
            double sg = 1 / (1 + exp(-(double)a[i])), dg = g[i] * b[i] * sg * (1 + a[i] * (1 - sg)), du = g[i] * a[i] * sg;
            wb = fmax(wb, fabs(y[i] - ((fresh ? 0 : y0[i]) + dg)) / (2e-6 * (1 + fabs(dg))));
            wb = fmax(wb, fabs(y2[i] - ((!fresh ? 0 : y20[i]) + du)) / (2e-6 * (1 + fabs(du))));
        }
        CHECK(wa <= 1 && ws <= 1 && wb <= 1, "n=%lld fresh=%d: add %g, swiglu %g, swiglu back %g x tolerance", (long long)n, fresh, wa, ws, wb);
        free(a); free(b); free(g); free(y); free(y2); free(y0); free(y20);
    }
    ft_ctx_free(ctx);
}

/* ---- attention against a plain double-precision reference ------------------------------------
   Output, the saved log-sum-exp (from the tape node) and the gradients of L = sum(w * y) for q, k,
   v and the prefix, over shapes that cut the query blocks unevenly, GQA (rep 1, 2, 8), prefix keys,
   segments, no mask, KV-cache offsets per row, queries that see no key at all (a negative offset)
   and a single query per row (decoding: blocks of a few rows skip the GEMMs); 1 and 2 threads must
   agree bit for bit. */
typedef struct attn_case {
    const char *name; int64_t B, T, Tk, P, D; int H, Hkv, causal; const int64_t *qoffs; const int32_t *seg;
} attn_case;

/* y, lse, and the gradients of sum(w * y), in double, straight from the definition */
static void attn_ref(const attn_case *c, const float *q, const float *k, const float *v, const float *pk, const float *pv,
                     const float *w, double *y, double *lse, double *dq, double *dk, double *dv, double *dpk, double *dpv) {
    int64_t D = c->D, qs = c->H * D, ks = c->Hkv * D, nk = c->P + c->Tk, b, t, j, d;
    double scale = 1.0 / sqrt((double)D), *p = (double *)malloc((size_t)nk * sizeof(double)), *dp = (double *)malloc((size_t)nk * sizeof(double));
    int h;
    for (b = 0; b < c->B; b++) for (h = 0; h < c->H; h++) for (t = 0; t < c->T; t++) {
        int64_t g = h / (c->H / c->Hkv), qo = c->qoffs ? c->qoffs[b] : 0;
        const float *qt = q + (b * c->T + t) * qs + h * D, *wt = w + (b * c->T + t) * qs + h * D;
        double m = -INFINITY, sum = 0, Dt = 0;
        for (j = 0; j < nk; j++) {              /* j < P: prefix key j; else key j - P */
            int64_t kj = j - c->P;
            const float *kr = j < c->P ? pk + j * ks + g * D : k + (b * c->Tk + kj) * ks + g * D;
            int vis = j < c->P || ((!c->causal || kj <= qo + t) && (!c->seg || c->seg[b * c->T + kj] == c->seg[b * c->T + t]));
            p[j] = -INFINITY;
            if (!vis) continue;
            p[j] = 0;
            for (d = 0; d < D; d++) p[j] += (double)qt[d] * kr[d];
            p[j] *= scale;
            if (p[j] > m) m = p[j];
        }
        lse[(b * c->H + h) * c->T + t] = m;
        for (d = 0; d < D; d++) y[(b * c->T + t) * qs + h * D + d] = 0;
        if (m == -INFINITY) continue;           /* sees nothing: y = 0, no gradient */
        for (j = 0; j < nk; j++) { p[j] = exp(p[j] - m); sum += p[j]; }
        lse[(b * c->H + h) * c->T + t] = m + log(sum);
        for (j = 0; j < nk; j++) {
            const float *vr = j < c->P ? pv + j * ks + g * D : v + (b * c->Tk + j - c->P) * ks + g * D;
            p[j] /= sum; dp[j] = 0;
            for (d = 0; d < D; d++) { y[(b * c->T + t) * qs + h * D + d] += p[j] * vr[d]; dp[j] += (double)wt[d] * vr[d]; }
            Dt += p[j] * dp[j];
        }
        for (j = 0; j < nk; j++) {
            int64_t kj = j - c->P;
            const float *kr = j < c->P ? pk + j * ks + g * D : k + (b * c->Tk + kj) * ks + g * D;
            double ds = p[j] * (dp[j] - Dt) * scale;
            double *dkr = j < c->P ? dpk + j * ks + g * D : dk + (b * c->Tk + kj) * ks + g * D;
            double *dvr = j < c->P ? dpv + j * ks + g * D : dv + (b * c->Tk + kj) * ks + g * D;
            for (d = 0; d < D; d++) {
                dq[(b * c->T + t) * qs + h * D + d] += ds * kr[d];
                dkr[d] += ds * qt[d];
                dvr[d] += p[j] * wt[d];
            }
        }
    }
    free(p); free(dp);
}

/* |x - ref| <= 1e-5 (|ref| + max |ref|) everywhere: relative to the element and to the tensor */
static double attn_close(const char *what, const char *name, const float *x, const double *ref, int64_t n) {
    double big = 0, worst = 0; int64_t i, at = 0;
    for (i = 0; i < n; i++) if (fabs(ref[i]) > big) big = fabs(ref[i]);
    for (i = 0; i < n; i++) {
        double e = fabs((double)x[i] - ref[i]) / (1e-5 * (fabs(ref[i]) + big) + 1e-30);
        if (!(e <= worst)) { worst = e; at = i; }
    }
    CHECK(worst <= 1, "%s %s: [%lld] %.8g vs %.8g (%.2f x tolerance)", name, what, (long long)at, x[at], ref[at], worst);
    return worst;
}

static void attn_case_run(const attn_case *c) {
    ft_ctx *ctx[2]; ft_ctx_opts o; ft_params *Pa; ft_tensor *in[5], *y; int th, i;
    int64_t sq[3] = {c->B, c->T, c->H * c->D}, sk[3] = {c->B, c->Tk, c->Hkv * c->D}, sp[2] = {c->P, c->Hkv * c->D};
    int64_t nq = c->B * c->T * c->H * c->D, nkv = c->B * c->Tk * c->Hkv * c->D, np = c->P * c->Hkv * c->D, nl = c->B * c->H * c->T;
    int64_t n[5] = {nq, nkv, nkv, np, np};
    float *w = randv(nq, -1, 1), *got[2][7];
    double *ref[7];
    memset(&o, 0, sizeof o);
    ft_params_init(&Pa);
    in[0] = ft_params_add(Pa, "q", 3, sq); in[1] = ft_params_add(Pa, "k", 3, sk); in[2] = ft_params_add(Pa, "v", 3, sk);
    in[3] = c->P ? ft_params_add(Pa, "pk", 2, sp) : NULL; in[4] = c->P ? ft_params_add(Pa, "pv", 2, sp) : NULL;
    ft_params_alloc(Pa);
    for (i = 0; i < 5; i++) if (in[i]) { float *x = (float *)in[i]->data; int64_t j; for (j = 0; j < n[i]; j++) x[j] = -1.0f + 2.0f * ft_rng_uniform(&R); }
    for (th = 0; th < 2; th++) {
        ft_attn_opts ao; const ft__attn *an;
        o.n_threads = th + 1; ft_ctx_init(&ctx[th], &o);
        memset(&ao, 0, sizeof ao);
        ao.n_head = c->H; ao.n_head_kv = c->Hkv; ao.causal = c->causal; ao.q_offsets = c->qoffs; ao.seg = c->seg;
        ao.prefix_k = in[3]; ao.prefix_v = in[4];
        ft_params_zero_grad(Pa);
        y = ft_attention(ctx[th], in[0], in[1], in[2], &ao);
        CHECK(y != NULL, "%s: %s", c->name, ft_last_error());
        if (!y) return;
        an = (const ft__attn *)ctx[th]->tape[ctx[th]->n_tape - 1].extra;
        got[th][0] = (float *)malloc((size_t)nq * 4); memcpy(got[th][0], y->data, (size_t)nq * 4);
        got[th][1] = (float *)malloc((size_t)nl * 4); memcpy(got[th][1], an->lse, (size_t)nl * 4);
        CHECK_OK(ft_backward_from(ctx[th], y, w));
        for (i = 0; i < 5; i++) {
            got[th][2 + i] = (float *)malloc((size_t)(n[i] ? n[i] : 1) * 4);
            if (n[i]) memcpy(got[th][2 + i], in[i]->grad, (size_t)n[i] * 4);
        }
    }
    ref[0] = (double *)calloc((size_t)nq, sizeof(double)); ref[1] = (double *)calloc((size_t)nl, sizeof(double));
    for (i = 0; i < 5; i++) ref[2 + i] = (double *)calloc((size_t)(n[i] ? n[i] : 1), sizeof(double));
    attn_ref(c, (float *)in[0]->data, (float *)in[1]->data, (float *)in[2]->data, c->P ? (float *)in[3]->data : NULL,
             c->P ? (float *)in[4]->data : NULL, w, ref[0], ref[1], ref[2], ref[3], ref[4], ref[5], ref[6]);
    {
        static const char *what[7] = {"y", "lse", "dq", "dk", "dv", "dprefix_k", "dprefix_v"};
        int64_t len[7] = {nq, nl, nq, nkv, nkv, np, np}, j, inf_ok = 1, n_inf = 0;
        double worst = 0;
        for (j = 0; j < nl; j++)                /* lse: -inf exactly where the reference has it */
            if ((ref[1][j] == -INFINITY) != (got[0][1][j] == -INFINITY)) inf_ok = 0;
            else if (ref[1][j] == -INFINITY) { ref[1][j] = got[0][1][j] = 0; n_inf++; }
        CHECK(inf_ok, "%s: lse = -inf where no key is seen", c->name);
        for (i = 0; i < 7; i++) {
            worst = fmax(worst, attn_close(what[i], c->name, got[0][i], ref[i], len[i]));
            if (i == 1) for (j = 0; j < nl; j++) if (got[1][1][j] == -INFINITY) got[1][1][j] = 0;
            CHECK(memcmp(got[0][i], got[1][i], (size_t)len[i] * 4) == 0, "%s %s: 1 and 2 threads differ", c->name, what[i]);
        }
        printf("    attention %-26s worst error / tolerance = %.3f%s\n", c->name, worst, n_inf ? " (some rows see no key)" : "");
    }
    for (th = 0; th < 2; th++) { for (i = 0; i < 7; i++) free(got[th][i]); ft_ctx_free(ctx[th]); }
    for (i = 0; i < 7; i++) free(ref[i]);
    free(w); ft_params_free(Pa);
}

/* 8-bit activations (ft_ctx_set_q8_dot): every activation within half a step of its block's
   scale; each weight type's integer dot product, SIMD and reference, equal to its weights dotted
   in f64 with the decoded activations (relative 1e-5 of the summed magnitudes; NF4's weights
   with their 16 values in 8 bits, round(127 v) / 127); ft_matmul takes that path only in no-grad
   mode and for at most 16 rows (8 per pass). */
static void q8_quant_rows(ft_type t, const float *w, unsigned char *q, int64_t N, int64_t K) {
    size_t rb = ft_type_row_bytes(t, K);
    int64_t n;
    for (n = 0; n < N; n++) {
        if (t == FT_TYPE_Q4_0) ft__quant_q4_0(w + n * K, q + n * rb, K);
        else if (t == FT_TYPE_Q4_1) ft__quant_q4_1(w + n * K, q + n * rb, K);
        else ft__quant_q8_0(w + n * K, q + n * rb, K);
    }
}
/* a weight (N, K) of type t from w: the GGML encoders where there are some; the K formats as
   random bytes with sane d and dmin (every code and scale is valid); NF4 through ft_quantize_nf4.
   wd gets the weights the integer product stands for. */
typedef struct { ft_tensor *W; ft_nf4 q; uint8_t *packed, *qabs; float *abs2, code[256]; } q8_weight;
static void q8_make(ft_ctx *ctx, q8_weight *o, ft_type t, const float *w, int64_t N, int64_t K, float *wd) {
    int64_t sw[2], n, k, i;
    sw[0] = N; sw[1] = K;
    memset(o, 0, sizeof *o);
    if (t == FT_TYPE_NF4) {
        o->packed = (uint8_t *)malloc((size_t)(N * K / 2)); o->qabs = (uint8_t *)malloc((size_t)ft_nf4_blocks(N * K));
        o->abs2 = (float *)malloc((size_t)ft_nf4_blocks2(N * K) * 4);
        ft_quantize_nf4(w, N * K, o->packed, o->qabs, o->abs2, &o->q.offset);
        ft_nf4_dynamic_map(o->code);
        o->q.qabsmax = o->qabs; o->q.absmax2 = o->abs2; o->q.code = o->code;
        o->W = ft_tensor_nf4(ctx, N, K, o->packed, &o->q);
        for (k = 0; k < N * K; k++) {
            int c = (k & 1) ? o->packed[k / 2] & 15 : o->packed[k / 2] >> 4;
            wd[k] = (float)(ft__nf4_absmax(&o->q, k / 64) * (double)ft__nf4_i8[c] / 127.0);
        }
        return;
    }
    o->W = ft_tensor_new(ctx, t, 2, sw);
    if (t == FT_TYPE_Q4_K || t == FT_TYPE_Q5_K) {
        size_t bb = t == FT_TYPE_Q4_K ? 144 : 176;
        unsigned char *b = (unsigned char *)o->W->data;
        for (i = 0; i < N * K / 256; i++, b += bb) {
            uint16_t h[2];
            for (k = 4; k < (int64_t)bb; k++) b[k] = (unsigned char)(ft_rng_u64(&R) >> 56);
            h[0] = ft_fp32_to_fp16(0.01f + 0.02f * ft_rng_uniform(&R));
            h[1] = ft_fp32_to_fp16(0.005f + 0.01f * ft_rng_uniform(&R));
            memcpy(b, h, 4);
        }
    } else q8_quant_rows(t, w, (unsigned char *)o->W->data, N, K);
    for (n = 0; n < N; n++) ft__weight_row(o->W, n, 0, K, wd + n * K);
}
static void q8_free(q8_weight *o) { free(o->packed); free(o->qabs); free(o->abs2); }
TEST(q8_activations_quantize_within_half_a_step) {
    const int64_t K = 608;
    float *x = randv(K, -3, 3);
    ft__q8_act a;
    int64_t b, j, worst_b = -1;
    double worst = 0;
    x[5] = 40.0f;                                  /* an outlier, and a block of zeros */
    for (j = 64; j < 96; j++) x[j] = 0.0f;
    a.q = (int8_t *)malloc((size_t)K); a.d = (float *)malloc((size_t)K / 32 * 4); a.s = (float *)malloc((size_t)K / 32 * 4);
    ft__q8_act_quant(x, &a, 1, K);
    for (b = 0; b < K / 32; b++) {
        int32_t sum = 0;
        for (j = 0; j < 32; j++) {
            double e = fabs((double)x[b * 32 + j] - (double)a.q[b * 32 + j] * a.d[b]);
            sum += a.q[b * 32 + j];
            if (e > worst * a.d[b] && a.d[b] > 0) { worst = e / a.d[b]; worst_b = b; }
            CHECK(a.q[b * 32 + j] >= -127, "block %lld: q %d", (long long)b, a.q[b * 32 + j]);
        }
        CHECK(a.s[b] == a.d[b] * (float)sum, "block %lld: s %g, d * sum(q) %g", (long long)b, a.s[b], a.d[b] * (float)sum);
    }
    printf("    largest error: %.4f of a step (block %lld)\n", worst, (long long)worst_b);
    CHECK(worst <= 0.5 + 1e-4, "an activation %.4f steps from its code", worst);
    CHECK(a.d[2] == 0.0f && a.q[70] == 0, "the zero block: d %g", a.d[2]);
    x[40] = NAN;
    ft__q8_act_quant(x, &a, 1, K);
    CHECK(a.d[1] != a.d[1] && a.d[0] == a.d[0], "a NaN in block 1 makes its d NaN (d %g), block 0 stays (%g)", a.d[1], a.d[0]);
    free(x); free(a.q); free(a.d); free(a.s);
}
TEST(q8_dot_matches_decoded_product) {
    static const ft_type types[6] = {FT_TYPE_Q4_0, FT_TYPE_Q4_1, FT_TYPE_Q8_0, FT_TYPE_Q4_K, FT_TYPE_Q5_K, FT_TYPE_NF4};
    const int64_t N = 37, K = 768;                 /* 24 blocks of 32, 3 super-blocks, 12 NF4 blocks */
    float *x = randv(8 * K, -3, 3), *w = randv(N * K, -1, 1), *wd = (float *)malloc((size_t)(N * K) * 4);
    ft__q8_act a;
    ft_ctx *ctx;
    int ti;
    ft_ctx_init(&ctx, NULL);
    a.q = (int8_t *)malloc((size_t)(8 * K)); a.d = (float *)malloc((size_t)(8 * K / 32) * 4); a.s = (float *)malloc((size_t)(8 * K / 32) * 4);
    ft__q8_act_quant(x, &a, 8, K);
    for (ti = 0; ti < 6; ti++) {
        ft_type t = types[ti];
        double worst = 0, worst_ref = 0, vs_f32 = 0;
        int64_t n, k;
        int m, same = 1;
        q8_weight o;
        ft_ctx_reset(ctx);
        q8_make(ctx, &o, t, w, N, K, wd);
        CHECK(ft__q8_dot_of(o.W) != NULL, "%s: no integer dot product", ft_type_name(t));
        if (!ft__q8_dot_of(o.W)) { q8_free(&o); continue; }
        for (n = 0; n < N; n++) {
            float got[8], ref[8], one[8];
            int mm;
            ft__q8_dot_of(o.W)(o.W, n, &a, 8, got);
            ft__q8_dot_ref(o.W, n, &a, 8, ref);
            for (mm = 2; mm < 8; mm++) {               /* every row count: the same rows (1 has its own kernel) */
                ft__q8_dot_of(o.W)(o.W, n, &a, mm, one);
                same &= memcmp(got, one, (size_t)mm * sizeof(float)) == 0;
            }
            for (m = 0; m < 8; m++) {
                double want = 0, exact = 0, mag = 0;
                for (k = 0; k < K; k++) {
                    want += (double)wd[n * K + k] * ((double)a.q[m * K + k] * a.d[(m * K + k) / 32]);
                    exact += (double)wd[n * K + k] * x[m * K + k];
                    mag += fabs((double)wd[n * K + k] * x[m * K + k]);
                }
                worst = FT__MAX(worst, fabs(got[m] - want) / mag);
                worst_ref = FT__MAX(worst_ref, fabs(ref[m] - want) / mag);
                vs_f32 = FT__MAX(vs_f32, fabs(got[m] - exact) / mag);
            }
        }
        printf("    %-4s: vs its weights and the decoded activations %.1e (reference %.1e), vs the f32 product %.1e of the magnitudes\n",
               ft_type_name(t), worst, worst_ref, vs_f32);
        CHECK(worst < 1e-5 && worst_ref < 1e-5, "%s: %.2e, reference %.2e", ft_type_name(t), worst, worst_ref);
        CHECK(vs_f32 > 1e-4 && vs_f32 < 1e-2, "%s: 8-bit activations %.2e from the f32 product", ft_type_name(t), vs_f32);
        CHECK(same, "%s: 1 < M < 8 differs from the first M rows of M = 8", ft_type_name(t));
        q8_free(&o);
    }
    ft_ctx_free(ctx);
    free(x); free(w); free(wd); free(a.q); free(a.d); free(a.s);
}
TEST(q8_dot_only_without_gradients_and_few_rows) {
    const int64_t N = 40, K = 96;
    float *w = randv(N * K, -1, 1), *x = randv(17 * K, -2, 2), got[8];
    ft_ctx *ctx;
    ft_ctx_opts o = ft_ctx_opts_default();
    ft_tensor *W, *X, *y8, *yf;
    ft__q8_act a;
    int64_t sw[2], sx[2], n, m;
    int ok = 1;
    o.n_threads = 2; o.q8_dot = 1;
    ft_ctx_init(&ctx, &o);
    sw[0] = N; sw[1] = K;
    W = ft_tensor_new(ctx, FT_TYPE_Q4_1, 2, sw);
    q8_quant_rows(FT_TYPE_Q4_1, w, (unsigned char *)W->data, N, K);
    a.q = (int8_t *)malloc((size_t)(16 * K)); a.d = (float *)malloc((size_t)(16 * K / 32) * 4); a.s = (float *)malloc((size_t)(16 * K / 32) * 4);
    ft__q8_act_quant(x, &a, 16, K);
    sx[0] = 14; sx[1] = K;
    X = ft_tensor_new(ctx, FT_TYPE_F32, 2, sx);
    memcpy(X->data, x, (size_t)(14 * K) * 4);
    ft_ctx_set_grad(ctx, 0);
    y8 = ft_matmul(ctx, X, W, 0, 1);                          /* no-grad, 14 rows: 8, then 6 */
    for (n = 0; n < N; n++) {
        ft__q8_act h;
        ft__q8_dot_of(W)(W, n, &a, 8, got);
        for (m = 0; m < 8; m++) ok &= ((float *)y8->data)[m * N + n] == got[m];
        h.q = a.q + 8 * K; h.d = a.d + 8 * K / 32; h.s = a.s + 8 * K / 32;
        ft__q8_dot_of(W)(W, n, &h, 6, got);
        for (m = 0; m < 6; m++) ok &= ((float *)y8->data)[(8 + m) * N + n] == got[m];
    }
    CHECK(ok, "no-grad, 14 rows: not the integer dot products");
    ft_ctx_set_q8_dot(ctx, 0);
    yf = ft_matmul(ctx, X, W, 0, 1);
    CHECK(memcmp(y8->data, yf->data, (size_t)(14 * N) * 4) != 0, "q8 off gives the same bits as q8 on");
    ft_ctx_set_q8_dot(ctx, 1);
    ft_ctx_set_grad(ctx, 1);
    y8 = ft_matmul(ctx, X, W, 0, 1);                          /* with gradients: f32 */
    CHECK(memcmp(y8->data, yf->data, (size_t)(14 * N) * 4) == 0, "grad mode: not the f32 product");
    ft_ctx_set_grad(ctx, 0);
    sx[0] = 17;
    X = ft_tensor_new(ctx, FT_TYPE_F32, 2, sx);
    memcpy(X->data, x, (size_t)(17 * K) * 4);
    y8 = ft_matmul(ctx, X, W, 0, 1);                          /* 17 rows: the GEMM */
    ft_ctx_set_q8_dot(ctx, 0);
    yf = ft_matmul(ctx, X, W, 0, 1);
    CHECK(memcmp(y8->data, yf->data, (size_t)(17 * N) * 4) == 0, "17 rows: not the f32 GEMM");
    ft_ctx_free(ctx); free(w); free(x); free(a.q); free(a.d); free(a.s);
}

TEST(attention_matches_reference) {
    static int32_t seg[2 * 100];
    static const int64_t kv_offs[2] = {30, 5}, neg_offs[2] = {-3, 0}, dec_offs[2] = {39, 20};
    int64_t i;
    attn_case cases[] = {
        /* name                      B   T   Tk  P   D   H  Hkv causal qoffs     seg */
        {"causal gqa",               2, 100, 100, 0, 16, 4, 2, 1,      NULL,     NULL},
        {"causal prefix segments",   2, 100, 100, 3, 16, 4, 2, 1,      NULL,     seg},
        {"full prefix, Tk != T",     2,  70,  37, 2,  8, 4, 2, 0,      NULL,     NULL},
        {"kv cache offsets prefix",  2,  60,  90, 2, 16, 4, 2, 1,      kv_offs,  NULL},
        {"rows that see nothing",    2,  50,  50, 0,  8, 4, 2, 1,      neg_offs, NULL},
        {"mha (rep 1)",              1,  77,  77, 1, 24, 3, 3, 1,      NULL,     NULL},
        {"mqa (rep 8) segments",     1,  45,  45, 0, 16, 8, 1, 1,      NULL,     seg},
        {"decoding one token",       2,   1,  40, 2, 16, 4, 2, 1,      dec_offs, NULL},
    };
    for (i = 0; i < 2 * 100; i++) seg[i] = (int32_t)(i / 23 + (i % 7 == 3));      /* documents, and stray tokens */
    for (i = 0; i < (int64_t)(sizeof cases / sizeof cases[0]); i++) attn_case_run(&cases[i]);
}

FT_TEST_MAIN(test_kernels) {
    ft_rng_seed(&R, 5);
    RUN(simd_name);
    RUN(vec_reductions_match_reference);
    RUN(vec_elementwise_match_reference);
    RUN(vec_adamw_and_finite_match_reference);
    RUN(vector_exp_accuracy);
    RUN(gemm_matches_reference_any_shape);
    RUN(gemm_in_bf16_matches_the_rounded_reference);
    RUN(skinny_match_reference);
    RUN(elementwise_kernels_match_reference);
    RUN(q8_activations_quantize_within_half_a_step);
    RUN(q8_dot_matches_decoded_product);
    RUN(q8_dot_only_without_gradients_and_few_rows);
    RUN(attention_matches_reference);
    return ft_test_summary("test_kernels");
}
