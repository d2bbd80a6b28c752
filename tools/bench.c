/* tools/bench.c - benchmarks of finetune.h (not tests: numbers, never pass/fail).
   1. the machine's peak f32 FMA throughput, measured with independent FMA chains per thread;
   2. ft_gemm on the shapes of a 135M llama (SmolLM2: C = 576, FFN 1536, V = 49152) as GFLOP/s
      and as a fraction of that peak, 1 thread and all threads, beside OpenBLAS's cblas_sgemm
      when libopenblas is installed (loaded with dlopen: a peer here, never a dependency).
   usage: build/bench [--quick] */
#define FINETUNE_IMPLEMENTATION
#include "../finetune.h"
#include <dlfcn.h>

/* ---- peak: 12 independent accumulator chains keep both FMA ports busy ---------------------- */
typedef struct { double flops; } peak_job;
static void peak_task(void *p, int ith, int nth) {
    peak_job *j = (peak_job *)p;
    long it, n = 20 * 1000 * 1000;
    (void)ith; (void)nth;
#ifdef FT__W
    {
        ft__vf a0 = ft__vset1(1e-3f), a1 = ft__vset1(2e-3f), a2 = ft__vset1(3e-3f), a3 = ft__vset1(4e-3f);
        ft__vf a4 = ft__vset1(5e-3f), a5 = ft__vset1(6e-3f), a6 = ft__vset1(7e-3f), a7 = ft__vset1(8e-3f);
        ft__vf a8 = ft__vset1(9e-3f), a9 = ft__vset1(1e-2f), a10 = ft__vset1(1.1e-2f), a11 = ft__vset1(1.2e-2f);
        ft__vf m = ft__vset1(0.999999f), c = ft__vset1(1e-7f);
        float out[FT__W];
        for (it = 0; it < n; it++) {
            a0 = ft__vfma(a0, m, c); a1 = ft__vfma(a1, m, c); a2 = ft__vfma(a2, m, c); a3 = ft__vfma(a3, m, c);
            a4 = ft__vfma(a4, m, c); a5 = ft__vfma(a5, m, c); a6 = ft__vfma(a6, m, c); a7 = ft__vfma(a7, m, c);
            a8 = ft__vfma(a8, m, c); a9 = ft__vfma(a9, m, c); a10 = ft__vfma(a10, m, c); a11 = ft__vfma(a11, m, c);
        }
        a0 = ft__vadd(ft__vadd(ft__vadd(a0, a1), ft__vadd(a2, a3)), ft__vadd(ft__vadd(a4, a5), ft__vadd(a6, a7)));
        a0 = ft__vadd(a0, ft__vadd(ft__vadd(a8, a9), ft__vadd(a10, a11)));
        ft__vstore(out, a0);
        j->flops = (double)n * 12 * 2 * FT__W + 0 * (double)out[0];
    }
#else
    {
        volatile float sink; float a[12] = {0}; int k;
        for (it = 0; it < n; it++) for (k = 0; k < 12; k++) a[k] = a[k] * 0.999999f + 1e-7f;
        sink = a[0] + a[11]; (void)sink;
        j->flops = (double)n * 12 * 2;
    }
#endif
}
static double peak_gflops(ft_ctx *ctx) {
    peak_job j; double t0, t, best = 0; int rep;
    for (rep = 0; rep < 3; rep++) {
        t0 = ft_time_seconds();
        ft__pool_run(&ctx->pool, peak_task, &j);
        t = ft_time_seconds() - t0;
        if (j.flops * ft_ctx_threads(ctx) / t / 1e9 > best) best = j.flops * ft_ctx_threads(ctx) / t / 1e9;
    }
    return best;
}

/* ---- OpenBLAS through dlopen ------------------------------------------------------------------ */
typedef void (*sgemm_fn)(int order, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                         const float *B, int ldb, float beta, float *C, int ldc);
typedef void (*setthreads_fn)(int);
static sgemm_fn blas_sgemm;
static setthreads_fn blas_threads;
static void load_openblas(void) {
    const char *names[] = {"libopenblas.so.0", "libopenblas.so", "libopenblasp.so.0"};
    int i;
    for (i = 0; i < 3 && !blas_sgemm; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) continue;
        *(void **)(&blas_sgemm) = dlsym(h, "cblas_sgemm");
        *(void **)(&blas_threads) = dlsym(h, "openblas_set_num_threads");
    }
}

static double time_gemm(ft_ctx *ctx, int use_blas, int ta, int tb, int64_t M, int64_t N, int64_t K,
                        const float *A, const float *B, float *C, double min_time) {
    double t0 = ft_time_seconds(), t; int reps = 0;
    do {
        if (use_blas) blas_sgemm(101 /* row major */, ta ? 112 : 111, tb ? 112 : 111, (int)M, (int)N, (int)K, 1.0f,
                                 A, ta ? (int)M : (int)K, B, tb ? (int)K : (int)N, 0.0f, C, (int)N);
        else ft_gemm(ctx, ta, tb, M, N, K, A, ta ? M : K, B, tb ? K : N, C, N, 0);
        reps++;
        t = ft_time_seconds() - t0;
    } while (t < min_time || reps < 2);
    return 2.0 * (double)M * (double)N * (double)K * reps / t / 1e9;
}

/* ---- the model: prompt processing and generation speed, as llama-bench measures them ---------- */
static void bench_model(ft_ctx *ctx, const char *path, int threads) {
    ft_model *m; ft_kv_cache *kv; int32_t ids[512]; int i, reps; double t0, pp = 0, tg = 0, best_pp = 0, best_tg = 0;
    const int NP = 128, NG = 64; FILE *f;
    if (ft_model_load(&m, path, NULL) != FT_OK) { printf("model: %s\n", ft_last_error()); return; }
    ft_ctx_set_threads(ctx, threads);
    ft_kv_cache_init(&kv, m, 1, NP + NG + 8);
    for (i = 0; i < NP; i++) ids[i] = 100 + (i * 37) % 4000;
    for (reps = 0; reps < 3; reps++) {
        ft_kv_cache_clear(kv, -1);
        ft_ctx_reset(ctx);
        t0 = ft_time_seconds();
        ft_model_decode(ctx, m, kv, 0, ids, 1, NP, 1);                       /* pp: one batch */
        pp = NP / (ft_time_seconds() - t0);
        t0 = ft_time_seconds();
        for (i = 0; i < NG; i++) { ft_ctx_reset(ctx); ft_model_decode(ctx, m, kv, 0, &ids[i], 1, 1, 1); }   /* tg: one by one */
        tg = NG / (ft_time_seconds() - t0);
        if (pp > best_pp) best_pp = pp;
        if (tg > best_tg) best_tg = tg;
    }
    printf("\nmodel %s, %d threads: prompt processing pp%d %.1f tokens/s, generation tg%d %.1f tokens/s\n", path, threads, NP, best_pp, NG, best_tg);
    if ((f = fopen("build/bench_model.txt", "w"))) { fprintf(f, "%d %.3f %.3f\n", threads, best_pp, best_tg); fclose(f); }
    ft_kv_cache_free(kv); ft_model_free(m);
}

/* ---- matmul shapes of a 135M llama (SmolLM2): forward y = x W^T and the two backward GEMMs ---- */
static const struct { int64_t M, N, K; int ta, tb; const char *what; } SHAPES[] = {
    {512, 576, 576, 0, 1, "q/o proj fwd"}, {2048, 576, 576, 0, 1, "q/o proj fwd"},
    {512, 1536, 576, 0, 1, "gate/up fwd"}, {2048, 1536, 576, 0, 1, "gate/up fwd"},
    {512, 576, 1536, 0, 1, "down fwd"},    {2048, 576, 1536, 0, 1, "down fwd"},
    {512, 49152, 576, 0, 1, "lm head fwd"}, {2048, 49152, 576, 0, 1, "lm head fwd"},
    {2048, 576, 1536, 0, 0, "down dx (dy W)"}, {1536, 576, 2048, 1, 0, "gate dW (dy^T x)"},
};
#define NSHAPES ((int)(sizeof SHAPES / sizeof SHAPES[0]))

/* GFLOP/s of every shape, 1 and all threads, with ours (use_blas 0) or OpenBLAS */
static void run_shapes(ft_ctx *ctx, int use_blas, const int *nthr, int quick, double out[][2]) {
    int si, ti;
    for (si = 0; si < NSHAPES; si++) {
        int64_t M = SHAPES[si].M, N = SHAPES[si].N, K = SHAPES[si].K, i;
        float *A, *B, *Cm;
        out[si][0] = out[si][1] = 0;
        if (quick && M > 512) continue;
        A = (float *)ft__aligned_alloc((size_t)(M * K) * 4); B = (float *)ft__aligned_alloc((size_t)(K * N) * 4);
        Cm = (float *)ft__aligned_alloc((size_t)(M * N) * 4);
        for (i = 0; i < M * K; i++) A[i] = (float)((i * 7) % 13) * 0.01f;
        for (i = 0; i < K * N; i++) B[i] = (float)((i * 5) % 11) * 0.01f;
        for (ti = 0; ti < 2; ti++) {
            if (ti == 1 && nthr[1] == 1) break;
            ft_ctx_set_threads(ctx, nthr[ti]);
            if (use_blas && blas_threads) blas_threads(nthr[ti]);
            out[si][ti] = time_gemm(ctx, use_blas, SHAPES[si].ta, SHAPES[si].tb, M, N, K, A, B, Cm, quick ? 0.2 : 0.6);
        }
        ft__aligned_free(A); ft__aligned_free(B); ft__aligned_free(Cm);
    }
}

int main(int argc, char **argv) {
    ft_ctx *ctx; ft_ctx_opts o; int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    int nthr[2], ti, si, maxthr;
    double peak[2], ours[NSHAPES][2], blas[NSHAPES][2];
    memset(&o, 0, sizeof o);
    if (ft_ctx_init(&ctx, &o) != FT_OK) { fprintf(stderr, "%s\n", ft_last_error()); return 1; }
    maxthr = ft_ctx_threads(ctx);
    nthr[0] = 1; nthr[1] = maxthr;
    printf("finetune.h bench: simd %s, %d threads available\n", ft_simd_name(), maxthr);
    /* ours first: OpenBLAS's own threads, once loaded, keep spinning and would share our cores */
    for (ti = 0; ti < 2; ti++) {
        ft_ctx_set_threads(ctx, nthr[ti]);
        peak[ti] = peak_gflops(ctx);
        printf("peak f32 FMA, %d thread%s: %.1f GFLOP/s\n", nthr[ti], nthr[ti] > 1 ? "s" : "", peak[ti]);
    }
    run_shapes(ctx, 0, nthr, quick, ours);
    load_openblas();
    printf("OpenBLAS: %s\n", blas_sgemm ? "found (a peer in this benchmark only)" : "not installed (apt-get install libopenblas0-pthread to compare)");
    if (blas_sgemm) run_shapes(ctx, 1, nthr, quick, blas);
    printf("\n%-18s %6s %6s %6s %3s | %9s %6s | %9s %6s | %s\n", "matmul", "M", "N", "K", "thr",
           "ft GF/s", "%peak", "blas GF/s", "%peak", "ft/blas");
    for (si = 0; si < NSHAPES; si++)
        for (ti = 0; ti < 2; ti++) {
            if (ours[si][ti] == 0) continue;
            printf("%-18s %6lld %6lld %6lld %3d | %9.1f %5.0f%% | ", SHAPES[si].what, (long long)SHAPES[si].M, (long long)SHAPES[si].N,
                   (long long)SHAPES[si].K, nthr[ti], ours[si][ti], 100 * ours[si][ti] / peak[ti]);
            if (blas_sgemm) printf("%9.1f %5.0f%% | %.2f\n", blas[si][ti], 100 * blas[si][ti] / peak[ti], ours[si][ti] / blas[si][ti]);
            else printf("%9s %6s | %s\n", "-", "-", "-");
        }
    if (getenv("FT_MODEL") && getenv("FT_MODEL")[0]) bench_model(ctx, getenv("FT_MODEL"), maxthr);
    ft_ctx_free(ctx);
    return 0;
}
