/* test_kernels.c - SIMD kernels against the scalar references, GEMM against the triple loop,
   bit-identical results for 1 and 2 threads. Built twice by the Makefile: with the machine's
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
    ft_ctx_free(c1); ft_ctx_free(c2);
}

int main(void) {
    ft_rng_seed(&R, 5);
    RUN(simd_name);
    RUN(vec_reductions_match_reference);
    RUN(vec_elementwise_match_reference);
    RUN(vector_exp_accuracy);
    RUN(gemm_matches_reference_any_shape);
    return ft_test_summary("test_kernels");
}
