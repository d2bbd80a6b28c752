/* tools/bench.c - benchmarks of finetune.h (not tests: numbers, never pass/fail).
   1. the machine's peak f32 FMA throughput, measured with independent FMA chains per thread;
   2. ft_gemm on the shapes of a 135M llama (SmolLM2: C = 576, FFN 1536, V = 49152) as GFLOP/s
      and as a fraction of that peak, 1 thread and all threads, beside OpenBLAS's cblas_sgemm
      when libopenblas is installed (loaded with dlopen: a peer here, never a dependency).
   3. `bench train`: LoRA, QLoRA and full fine-tuning steps (forward, backward, AdamW) on
      SmolLM2-135M: tokens/s, step time, peak RSS and the model FLOPs utilisation against the
      measured peak; tools/bench_torch.py runs the same steps in PyTorch + peft and prints the
      comparison.
   usage: build/bench [--quick]
          build/bench train -m MODEL.gguf [--method lora|qlora|full] [--compute f32|bf16] [--quantize none|nf4]
                            [--batch 4] [--seq 256] [--rank 8]
                            [--alpha 16] [--threads N] [--steps 5] [--warmup 2] [--profile]
   Every time here is wall-clock time: under -std=c99 <time.h> declares clock_gettime and
   CLOCK_MONOTONIC only with a POSIX feature macro, and without one ft_time_seconds() falls back to
   clock(), the CPU time of all threads together (which made N-thread rates 1/N of the truth). */
#define _POSIX_C_SOURCE 200809L
#define FINETUNE_IMPLEMENTATION
#include "../finetune.h"
#include <dlfcn.h>
#include <sys/resource.h>
#include <time.h>

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
/* best of 3: pp (one batch of NP) and tg (NG one by one) in tokens/s */
static void bench_decode(ft_ctx *ctx, ft_model *m, ft_kv_cache *kv, const int32_t *ids, int NP, int NG, double *best_pp, double *best_tg) {
    int i, reps;
    double t0, pp, tg;
    *best_pp = *best_tg = 0;
    for (reps = 0; reps < 3; reps++) {
        ft_kv_cache_clear(kv, -1);
        ft_ctx_reset(ctx);
        t0 = ft_time_seconds();
        ft_model_decode(ctx, m, kv, 0, ids, 1, NP, 1);                       /* pp: one batch */
        pp = NP / (ft_time_seconds() - t0);
        t0 = ft_time_seconds();
        for (i = 0; i < NG; i++) { ft_ctx_reset(ctx); ft_model_decode(ctx, m, kv, 0, &ids[i], 1, 1, 1); }   /* tg: one by one */
        tg = NG / (ft_time_seconds() - t0);
        if (pp > *best_pp) *best_pp = pp;
        if (tg > *best_tg) *best_tg = tg;
    }
}
/* all in f32, and as `ft generate` runs by default: the prompt's GEMMs in bf16 where the CPU has
   the dot products (--compute auto) and token by token with 8-bit activations (--q8-dot 1) */
static void bench_model(ft_ctx *ctx, const char *path, int threads) {
    ft_model *m; ft_kv_cache *kv; int32_t ids[512]; int i;
    double pp, tg, pp8, tg8;
    const int NP = 128, NG = 64; FILE *f;
    if (ft_model_load(&m, path, NULL) != FT_OK) { printf("model: %s\n", ft_last_error()); return; }
    ft_ctx_set_threads(ctx, threads);
    ft_kv_cache_init(&kv, m, 1, NP + NG + 8);
    for (i = 0; i < NP; i++) ids[i] = 100 + (i * 37) % 4000;
    bench_decode(ctx, m, kv, ids, NP, NG, &pp, &tg);
    ft_ctx_set_q8_dot(ctx, 1);
    ft_ctx_set_compute(ctx, FT_COMPUTE_AUTO);
    bench_decode(ctx, m, kv, ids, NP, NG, &pp8, &tg8);
    printf("\nmodel %s, %d threads, prompt processing pp%d and generation tg%d in tokens/s:\n", path, threads, NP, NG);
    printf("  f32:                        pp %7.1f  tg %6.1f\n", pp, tg);
    printf("  ft generate's default:      pp %7.1f  tg %6.1f   (GEMMs in %s, 8-bit activations token by token)\n",
           pp8, tg8, ft_ctx_compute(ctx) == FT_COMPUTE_BF16 ? "bf16" : "f32");
    ft_ctx_set_q8_dot(ctx, 0);
    ft_ctx_set_compute(ctx, FT_COMPUTE_F32);
    if ((f = fopen("build/bench_model.txt", "w"))) { fprintf(f, "%d %.3f %.3f %.3f %.3f\n", threads, pp, tg, pp8, tg8); fclose(f); }
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

/* GFLOP/s of every shape, 1 and all threads, with ours (use_blas 0: in the context's compute,
   f32 or bf16) or OpenBLAS */
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

/* ---- training: LoRA / QLoRA / full fine-tuning steps on the real model ---------------------------
   One process measures one configuration (peak memory must not mix): load the model (for
   "lora" every 2-D weight is dequantized here to owned f32 copies, since ft_model_load keeps the
   file's types and has no option for that; "qlora" trains on the Q4_1 base as it is mapped),
   attach LoRA (all linear layers, no dropout) or full fine-tuning (f32 master copies of every
   weight, the tied embedding / head and the norms included, the file's pages given back), then
   warm-up and timed steps of forward, cross-entropy, backward and AdamW on one fixed batch of
   B x T token ids. The ids come from the same
   generator as tools/bench_torch.py's (a 64-bit LCG), so both sides see the same batch.
   FLOPs per step (the useful work, the same count for any implementation):
     matmuls: tokens * (2 N_mm  forward  +  2 (N_mm - N_in0)  input gradients  +  6 N_lora)
       N_mm: elements of every weight used in a matmul (7 per layer and the LM head); the frozen
       weights still need dX = dY W; N_in0: layer 0's q, k, v (nothing below them trains, so no
       dX there); N_lora: trainable LoRA elements (forward 2, dA / dB 2, dX 2 per element)
     full fine-tuning: tokens * 6 N_mm (the embedding trains, so every matmul has dX and dW)
     attention: 3 x forward, forward = 2 L B H D T (T + 1) (QK^T and PV over the causal triangle)
   Norms, softmax, RoPE, SwiGLU and the loss are not counted. MFU = FLOPs / step time / the FMA
   peak measured at the same thread count. */
typedef struct train_cfg {
    const char *model, *method, *compute, *quantize; int64_t B, T; int r, threads, steps, warmup, profile; float alpha, lr;
} train_cfg;

/* peak and current resident memory in MiB (VmHWM / VmRSS; ru_maxrss where /proc is missing) */
static int reset_peak(void) {                   /* VmHWM := VmRSS (Linux >= 4.0) */
    FILE *f = fopen("/proc/self/clear_refs", "w"); int ok;
    if (!f) return 0;
    ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}
static void mem_mib(double *hwm, double *rss) {
    FILE *f = fopen("/proc/self/status", "r"); char line[256]; long kb;
    *hwm = *rss = 0;
    if (f) {
        while (fgets(line, sizeof line, f)) {
            if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) *hwm = kb / 1024.0;
            if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) *rss = kb / 1024.0;
        }
        fclose(f);
    }
    if (*hwm == 0) { struct rusage ru; getrusage(RUSAGE_SELF, &ru); *hwm = ru.ru_maxrss / 1024.0; }
}

/* every 2-D weight to an owned f32 copy (the head too when it is not tied), the file's pages of
   it given back (a model that is f32 in its file would be used where it is mapped); returns the
   block */
static float *dequantize_model(ft_model *m) {
    const ft_model_config *c = ft_model_config_get(m);
    ft_tensor *w[16 * 64 + 2]; int n = 0, i, l; int64_t total = 0; float *blk, *p;
    if (c->n_layer > 64) return NULL;
    for (l = 0; l < c->n_layer; l++) {
        ft_layer *L = ft_model_layer(m, l);
        w[n++] = L->wq; w[n++] = L->wk; w[n++] = L->wv; w[n++] = L->wo; w[n++] = L->w_gate; w[n++] = L->w_up; w[n++] = L->w_down;
    }
    w[n++] = ft_model_tok_embd(m);
    if (ft_model_output(m) != ft_model_tok_embd(m)) w[n++] = ft_model_output(m);
    for (i = 0; i < n; i++) total += ft_numel(w[i]);
    if (!(blk = p = (float *)ft__aligned_alloc((size_t)total * sizeof(float)))) return NULL;
    for (i = 0; i < n; i++) {
        int64_t r, rows = w[i]->shape[0], cols = w[i]->shape[1]; size_t rb = ft_type_row_bytes(w[i]->type, cols);
        if (w[i]->type != FT_TYPE_F32)
            for (r = 0; r < rows; r++) ft__type(w[i]->type)->to_f32((const unsigned char *)w[i]->data + (size_t)r * rb, p + r * cols, cols);
        else memcpy(p, w[i]->data, (size_t)(rows * cols) * sizeof(float));
        ft__gguf_release(ft_model_gguf(m), w[i]->data, (size_t)rows * rb);   /* the file's copy: not used now */
        w[i]->data = p; w[i]->type = FT_TYPE_F32; p += rows * cols;
    }
    return blk;
}

/* the batch: ids from x <- x * 6364136223846793005 + 1442695040888963407 (mod 2^64), id = (x >> 33) % V;
   targets are the next id (the last position of each row has none: -100) */
static void make_batch(int32_t *ids, int32_t *tgt, int64_t B, int64_t T, int64_t V) {
    uint64_t x = 42; int64_t i, t;
    for (i = 0; i < B * T; i++) { x = x * 6364136223846793005ull + 1442695040888963407ull; ids[i] = (int32_t)((x >> 33) % (uint64_t)V); }
    for (i = 0; i < B; i++) for (t = 0; t < T; t++) tgt[i * T + t] = t + 1 < T ? ids[i * T + t + 1] : -100;
}

/* ---- a per-op profile of one step: the backward timed node by node (a copy of the library's
   backward loop), the forward by replaying each op recorded on the tape without gradient --------- */
enum { P_MM_BASE, P_MM_HEAD, P_MM_LORA, P_LORA_LIN, P_ATTN, P_LXENT, P_XENT, P_NORM, P_ROPE, P_SWIGLU, P_ADD, P_SCALE, P_OTHER, P_N };
static const char *PNAME[P_N] = {"matmul frozen base W (q..down)", "matmul LM head", "matmul trained W (LoRA A/B, full)", "linear + LoRA (W, A, B)", "attention",
                                 "LM head + cross-entropy, chunked", "cross-entropy",
                                 "rmsnorm", "rope", "swiglu", "add (residual, lora)", "scale", "other"};
typedef struct prof { double fwd[P_N], bwd[P_N], ffl[P_N], bfl[P_N]; } prof;

static int prof_cat(const ft__node *nd, const ft_tensor *head) {
    switch (nd->op) {
    case FT_OP_MATMUL: return nd->in[1] == head ? P_MM_HEAD : (nd->in[1]->flags & FT_TENSOR_PARAM) ? P_MM_LORA : P_MM_BASE;
    case FT_OP_LORA_LINEAR: return P_LORA_LIN;
    case FT_OP_ATTENTION: return P_ATTN;
    case FT_OP_CROSS_ENTROPY: return P_XENT;
    case FT_OP_LINEAR_XENT: return P_LXENT;
    case FT_OP_RMSNORM: return P_NORM;
    case FT_OP_ROPE: return P_ROPE;
    case FT_OP_SWIGLU: return P_SWIGLU;
    case FT_OP_ADD: return P_ADD;
    case FT_OP_SCALE: return P_SCALE;
    default: return P_OTHER;
    }
}
/* x W^T + s (x A^T) B^T: rows x (in out + in r + r out) multiply-adds */
static double lora_flops(const ft__node *nd) {
    const ft__lora_lin *k = (const ft__lora_lin *)nd->extra; double rows = (double)ft_nrows(nd->in[0]);
    double in = (double)nd->in[1]->shape[1], r = (double)nd->in[1]->shape[0], out = (double)k->W->shape[0];
    return 2.0 * rows * (in * out + in * r + r * out);
}
static double mm_flops(const ft__node *nd) { return 2.0 * (double)(ft_numel(nd->in[0]) / nd->n[3]) * (double)nd->n[3] * (double)nd->out->shape[nd->out->ndim - 1]; }

/* the forward ops again, no gradient; each op's output goes to the same scratch space at the
   arena's end (rolled back after the op), so the replay neither grows the arena nor disturbs
   the backward that follows. Returns the replayed total. */
static double prof_forward(ft_ctx *ctx, const ft_tensor *head, prof *P) {
    int i, n = ctx->n_tape, old = ft_ctx_set_grad(ctx, 0); double sum = 0; size_t used = ctx->arena.used, peak = ctx->arena.peak;
    for (i = 0; i < n; i++) {
        ft__node *nd = &ctx->tape[i]; int c = prof_cat(nd, head); double t0 = ft_time_seconds(), t;
        ctx->arena.used = used;
        switch (nd->op) {
        case FT_OP_MATMUL: ft_matmul(ctx, nd->in[0], nd->in[1], (int)nd->n[0], (int)nd->n[1]); P->ffl[c] += mm_flops(nd); break;
        case FT_OP_LORA_LINEAR: {
            const ft__lora_lin *k = (const ft__lora_lin *)nd->extra;
            ft_lora_linear(ctx, nd->in[0], k->W, nd->in[1], nd->in[2], nd->f[0], k->xd);
            P->ffl[c] += lora_flops(nd);
            break; }
        case FT_OP_ATTENTION: {
            ft__attn a = *(ft__attn *)nd->extra;
            a.o = (float *)ft_arena_alloc(ctx, (size_t)(a.B * a.T * a.H * a.D) * sizeof(float));
            a.l = (float *)ft_arena_alloc(ctx, (size_t)(a.B * a.H * a.T) * sizeof(float));
            if (!a.o || !a.l) break;
            ft__attn_run(ctx, &a, 0);
            P->ffl[c] += 2.0 * (double)(a.B * a.H * a.D) * (double)a.T * (double)(a.T + 1);
            break; }
        case FT_OP_CROSS_ENTROPY: ft_cross_entropy(ctx, nd->in[0], nd->ids, (int32_t)nd->n[0]); break;
        case FT_OP_LINEAR_XENT: {                          /* with the gradients made in the forward (nd->n[3]) */
            int k = ctx->n_tape, fused = nd->n[3] != 0;
            ft_ctx_set_grad(ctx, fused);
            ft_linear_cross_entropy(ctx, nd->in[0], nd->in[1], nd->ids, (int32_t)nd->n[0], nd->f[0], (int)nd->n[2]);
            ft_ctx_set_grad(ctx, 0);
            ctx->n_tape = k;
            P->ffl[c] += 2.0 * (double)ft_numel(nd->in[0]) * (double)nd->in[1]->shape[0] * (1 + (fused ? ft__wants(nd->in[0]) + ft__wants(nd->in[1]) : 0));
            break; }
        case FT_OP_RMSNORM: ft_rmsnorm(ctx, nd->in[0], nd->in[1], nd->f[0]); break;
        case FT_OP_ROPE: ft_rope_ext(ctx, nd->in[0], nd->ids, (int)nd->n[0], FT__CAST(const ft_rope_opts *, nd->extra)); break;
        case FT_OP_SWIGLU: ft_swiglu(ctx, nd->in[0], nd->in[1]); break;
        case FT_OP_ADD: ft_add(ctx, nd->in[0], nd->in[1]); break;
        case FT_OP_SCALE: ft_scale(ctx, nd->in[0], nd->f[0]); break;
        default: continue;                                   /* views: no work */
        }
        t = ft_time_seconds() - t0;
        P->fwd[c] += t; sum += t;
    }
    ctx->arena.used = used; ctx->arena.peak = peak;
    ft_ctx_set_grad(ctx, old);
    return sum;
}
static ft_result prof_backward(ft_ctx *ctx, ft_tensor *loss, const ft_tensor *head, prof *P) {
    int i; float *g = ft__grad(ctx, loss);
    if (!g) return ctx->status;
    g[0] += 1.0f;
    for (i = ctx->n_tape - 1; i >= 0 && ctx->status == FT_OK; i--) {
        ft__node *nd = &ctx->tape[i]; ft__backward_fn fn = ft__backward_of(nd->op); int c; double t0;
        if (!nd->out->grad || !fn) continue;
        c = prof_cat(nd, head); t0 = ft_time_seconds();
        fn(ctx, nd);
        ft__grad_release(ctx, ctx->tape[i].out);
        P->bwd[c] += ft_time_seconds() - t0;
        if (nd->op == FT_OP_MATMUL) P->bfl[c] += mm_flops(nd) * (ft__wants(nd->in[0]) + ft__wants(nd->in[1]));
        if (nd->op == FT_OP_LORA_LINEAR) {       /* dx through W and the branch, dA, dB */
            const ft__lora_lin *k = (const ft__lora_lin *)nd->extra; double rows = (double)ft_nrows(nd->in[0]);
            double in = (double)nd->in[1]->shape[1], r = (double)nd->in[1]->shape[0], out = (double)k->W->shape[0];
            P->bfl[c] += 2.0 * rows * ((ft__wants(nd->in[0]) ? in * out + r * in : 0) + out * r + r * in + r * out);
        }
        if (nd->op == FT_OP_LINEAR_XENT && !nd->n[3])   /* the logits again, dh, dW */
            P->bfl[c] += 2.0 * (double)ft_numel(nd->in[0]) * (double)nd->in[1]->shape[0] * (1 + ft__wants(nd->in[0]) + ft__wants(nd->in[1]));
        if (nd->op == FT_OP_ATTENTION) { const ft__attn *a = (const ft__attn *)nd->extra; P->bfl[c] += 4.0 * (double)(a->B * a->H * a->D) * (double)a->T * (double)(a->T + 1); }
    }
    ctx->backward_done = 1;
    return ctx->status;
}

static double loadavg(void) {                   /* the 1-minute load average (other processes share the cores) */
    FILE *f = fopen("/proc/loadavg", "r"); double l = -1;
    if (f) { if (fscanf(f, "%lf", &l) != 1) l = -1; fclose(f); }
    return l;
}
static double cpu_seconds(void) {              /* this process's CPU time, all threads */
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static int cmp_double(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

static int bench_train(int argc, char **argv) {
    train_cfg o; ft_ctx *ctx; ft_ctx_opts co; ft_model *m; ft_model_opts mo; ft_peft *p; ft_lora_opts lo; ft_optim *opt; ft_optim_opts oo;
    const ft_model_config *c; ft_batch b; int32_t *ids, *tgt; float *owned = NULL; ft_params *P;
    double peak, t_load, hwm0, hwm1, rss0, hwm, rss, *tstep, *tf, *tb, *to, med, mean = 0, loss0 = 0, loss1 = 0;
    double n_mm = 0, n_in0, n_lora, flops, attn, cpu = 0, faults = 0, sys = 0, arena = 0; int i, l, reset; const char *wtype;
    memset(&o, 0, sizeof o);
    o.method = "qlora"; o.compute = "f32"; o.quantize = "none"; o.B = 4; o.T = 256; o.r = 8; o.alpha = 16; o.steps = 5; o.warmup = 2; o.lr = 1e-4f;
    o.model = getenv("FT_MODEL");
    for (i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--profile") == 0) { o.profile = 1; continue; }
        if (!v) { fprintf(stderr, "bench train: %s needs a value\n", a); return 2; }
        if (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0) o.model = v;
        else if (strcmp(a, "--method") == 0) o.method = v;
        else if (strcmp(a, "--compute") == 0) o.compute = v;
        else if (strcmp(a, "--quantize") == 0) o.quantize = v;
        else if (strcmp(a, "--batch") == 0) o.B = atoi(v);
        else if (strcmp(a, "--seq") == 0) o.T = atoi(v);
        else if (strcmp(a, "--rank") == 0) o.r = atoi(v);
        else if (strcmp(a, "--alpha") == 0) o.alpha = (float)atof(v);
        else if (strcmp(a, "--threads") == 0) o.threads = atoi(v);
        else if (strcmp(a, "--steps") == 0) o.steps = atoi(v);
        else if (strcmp(a, "--warmup") == 0) o.warmup = atoi(v);
        else { fprintf(stderr, "bench train: unknown option %s\n", a); return 2; }
        i++;
    }
    if (!o.model || (strcmp(o.method, "lora") && strcmp(o.method, "qlora") && strcmp(o.method, "full")) || (strcmp(o.compute, "f32") && strcmp(o.compute, "bf16")) || (strcmp(o.quantize, "none") && strcmp(o.quantize, "nf4")) || o.B < 1 || o.T < 2 || o.r < 1 || o.steps < 1 || o.warmup < 0) {
        fprintf(stderr, "usage: bench train -m MODEL.gguf [--method lora|qlora|full] [--compute f32|bf16] [--quantize none|nf4] [--batch B] [--seq T] [--rank r] [--alpha A]\n"
                        "                   [--threads N] [--steps S] [--warmup W] [--profile]\n");
        return 2;
    }
    memset(&co, 0, sizeof co); co.n_threads = o.threads; co.compute = strcmp(o.compute, "bf16") == 0 ? FT_COMPUTE_BF16 : FT_COMPUTE_F32;
    if (ft_ctx_init(&ctx, &co) != FT_OK) { fprintf(stderr, "%s\n", ft_last_error()); return 1; }
    o.threads = ft_ctx_threads(ctx);
    peak = peak_gflops(ctx);
    t_load = ft_time_seconds();
    memset(&mo, 0, sizeof mo);
    mo.quantize = strcmp(o.quantize, "nf4") == 0 ? FT_TYPE_NF4 : FT_TYPE_F32;   /* qlora: the linear weights as NF4 at load */
    if (ft_model_load(&m, o.model, &mo) != FT_OK) { fprintf(stderr, "bench train: %s\n", ft_last_error()); return 1; }
    c = ft_model_config_get(m);
    wtype = ft_type_name(ft_model_layer(m, 0)->wq->type);
    if (strcmp(o.method, "lora") == 0) {
        if (!(owned = dequantize_model(m))) { fprintf(stderr, "bench train: out of memory dequantizing\n"); return 1; }
        wtype = "f32";
    }
    memset(&lo, 0, sizeof lo);
    lo.r = o.r; lo.alpha = o.alpha; lo.targets = FT_TARGET_ALL_LINEAR; lo.seed = 1;
    if (strcmp(o.method, "full") == 0) {              /* f32 masters of every weight (the file's pages given back) */
        ft_peft_opts po = ft_peft_opts_default(FT_PEFT_FULL);
        if (ft_peft_attach(&p, m, &po) != FT_OK) { fprintf(stderr, "bench train: %s\n", ft_last_error()); return 1; }
        for (i = 0; i < m->n_w; i++) if (p->full[i]) {
            const ft_tensor *w = &p->full_orig[i]; int64_t in = w->shape[w->ndim - 1];
            ft__gguf_release(ft_model_gguf(m), w->data, ft_type_row_bytes(w->type, in) * (size_t)(ft_numel(w) / in));
        }
        wtype = "f32 masters";
    } else if (ft_lora_attach(&p, m, &lo) != FT_OK) { fprintf(stderr, "bench train: %s\n", ft_last_error()); return 1; }
    P = ft_peft_params(p);
    /* LoRA B starts at zero (PEFT's init): give it small values so every gradient is a real one */
    for (i = 0; i < ft_params_count(P); i++)
        if (strstr(ft_params_get(P, i)->name, "lora_B")) ft_params_init_normal(P, ft_params_get(P, i), 0.0f, 1e-3f, ctx);
    oo = ft_optim_opts_default(); oo.weight_decay = 0;
    if (ft_optim_init(&opt, P, &oo) != FT_OK) { fprintf(stderr, "bench train: %s\n", ft_last_error()); return 1; }
    t_load = ft_time_seconds() - t_load;
    mem_mib(&hwm0, &rss0);                      /* the steps' own peak from here (weights included) */
    reset = reset_peak();
    mem_mib(&hwm1, &rss0);
    /* FLOPs of one step */
    for (l = 0; l < c->n_layer; l++) {
        ft_layer *L = ft_model_layer(m, l);
        n_mm += (double)(ft_numel(L->wq) + ft_numel(L->wk) + ft_numel(L->wv) + ft_numel(L->wo) + ft_numel(L->w_gate) + ft_numel(L->w_up) + ft_numel(L->w_down));
    }
    n_mm += (double)ft_numel(ft_model_output(m));
    n_in0 = (double)(ft_numel(ft_model_layer(m, 0)->wq) + ft_numel(ft_model_layer(m, 0)->wk) + ft_numel(ft_model_layer(m, 0)->wv));
    n_lora = (double)ft_params_numel(P);
    attn = 2.0 * (double)c->n_layer * (double)o.B * (double)(c->n_head * c->head_dim) * (double)o.T * (double)(o.T + 1);
    flops = (double)(o.B * o.T) * (2 * n_mm + 2 * (n_mm - n_in0) + 6 * n_lora) + 3 * attn;
    if (strcmp(o.method, "full") == 0) flops = (double)(o.B * o.T) * 6 * n_mm + 3 * attn;   /* dW and dX of every matmul */

    ids = (int32_t *)malloc((size_t)(o.B * o.T) * sizeof(int32_t)); tgt = (int32_t *)malloc((size_t)(o.B * o.T) * sizeof(int32_t));
    make_batch(ids, tgt, o.B, o.T, c->n_vocab);
    memset(&b, 0, sizeof b); b.B = o.B; b.T = o.T; b.ids = ids;
    tstep = (double *)calloc((size_t)(o.steps * 4), sizeof(double)); tf = tstep + o.steps; tb = tf + o.steps; to = tb + o.steps;
    printf("bench train: %s (%s base weights), B=%lld T=%lld r=%d alpha=%g, %d thread%s, %d warm-up + %d timed steps\n", o.method, wtype,
           (long long)o.B, (long long)o.T, o.r, (double)o.alpha, o.threads, o.threads > 1 ? "s" : "", o.warmup, o.steps);
    for (i = -o.warmup; i < o.steps; i++) {
        double c0 = cpu_seconds(), t0 = ft_time_seconds(), t1, t2, t3; ft_tensor *loss; struct rusage u0, u1;
        getrusage(RUSAGE_SELF, &u0);
        ft_ctx_reset(ctx);
        loss = ft_model_loss(ctx, m, ft_model_hidden(ctx, m, &b), tgt, 0);   /* as ft_train computes it */
        t1 = ft_time_seconds();
        if (!loss || ft_backward(ctx, loss) != FT_OK) { fprintf(stderr, "bench train: %s\n", ft_last_error()); return 1; }
        t2 = ft_time_seconds();
        if (ft_optim_step(opt, o.lr) != FT_OK) { fprintf(stderr, "bench train: %s\n", ft_last_error()); return 1; }
        ft_params_zero_grad(P);
        t3 = ft_time_seconds();
        if (i == -o.warmup) loss0 = FT__F(loss)[0];
        loss1 = FT__F(loss)[0];
        getrusage(RUSAGE_SELF, &u1);
        if (i >= 0) {
            tstep[i] = t3 - t0; tf[i] = t1 - t0; tb[i] = t2 - t1; to[i] = t3 - t2; mean += t3 - t0; cpu += cpu_seconds() - c0;
            faults += (double)(u1.ru_minflt - u0.ru_minflt);
            sys += (double)(u1.ru_stime.tv_sec - u0.ru_stime.tv_sec) + 1e-6 * (double)(u1.ru_stime.tv_usec - u0.ru_stime.tv_usec);
            arena = FT__MAX(arena, (double)ft_ctx_arena_peak(ctx) / 1048576.0);
        }
        fprintf(stderr, "  %s %d: %.3f s (forward %.3f, backward %.3f, AdamW %.4f), loss %.4f\n", i < 0 ? "warm-up" : "step", i < 0 ? i + o.warmup + 1 : i + 1,
                t3 - t0, t1 - t0, t2 - t1, t3 - t2, (double)FT__F(loss)[0]);
    }
    mean /= o.steps; cpu /= o.steps; faults /= o.steps; sys /= o.steps;
    mem_mib(&hwm, &rss);
    {
        double *s = (double *)malloc((size_t)o.steps * sizeof(double)), mf = 0, mb = 0, mo = 0;
        memcpy(s, tstep, (size_t)o.steps * sizeof(double));
        qsort(s, (size_t)o.steps, sizeof(double), cmp_double);
        med = o.steps % 2 ? s[o.steps / 2] : 0.5 * (s[o.steps / 2 - 1] + s[o.steps / 2]);
        for (i = 0; i < o.steps; i++) { mf += tf[i] / o.steps; mb += tb[i] / o.steps; mo += to[i] / o.steps; }
        printf("step time: median %.3f s (min %.3f, max %.3f, mean %.3f); forward %.3f s, backward %.3f s, AdamW %.4f s (means);\n"
               "           CPU time %.3f s per step (all threads: %.2f cores busy)\n", med, s[0], s[o.steps - 1], mean, mf, mb, mo, cpu, cpu / mean);
        printf("tokens/s: %.1f   peak RSS of the steps: %.0f MiB (%.0f MiB before the first step; %.0f MiB peak while loading)%s\n",
               (double)(o.B * o.T) / med, hwm, rss0, hwm0, reset ? "" : " (VmHWM could not be reset: the peak is the whole process's)");
        printf("arena peak %.0f MiB; per step: %.0f minor page faults, %.3f s of system time (%.1f%% of the CPU time)\n",
               arena, faults, sys, 100 * sys / cpu);
        printf("FLOPs/step: %.4g = tokens x (%s) + 3 x attention fwd  (N_mm %.4gM, N_in0 %.4gM, N_lora %.4gM, attention fwd %.4g)\n",
               flops, strcmp(o.method, "full") ? "4 N_mm - 2 N_in0 + 6 N_lora" : "6 N_mm", n_mm / 1e6, n_in0 / 1e6, n_lora / 1e6, attn);
        printf("achieved %.1f GFLOP/s, FMA peak at %d thread%s %.1f GFLOP/s: MFU %.1f%%   (loss %.4f -> %.4f)\n", flops / med / 1e9,
               o.threads, o.threads > 1 ? "s" : "", peak, 100 * flops / med / 1e9 / peak, loss0, loss1);
        printf("RESULT {\"impl\": \"finetune.h\", \"method\": \"%s\", \"compute\": \"%s\", \"weights\": \"%s\", \"B\": %lld, \"T\": %lld, \"r\": %d, \"alpha\": %g, \"threads\": %d, "
               "\"steps\": %d, \"warmup\": %d, \"step_s\": %.5f, \"step_min_s\": %.5f, \"step_mean_s\": %.5f, \"cpu_s\": %.5f, \"fwd_s\": %.5f, \"bwd_s\": %.5f, \"opt_s\": %.5f, "
               "\"tokens_per_s\": %.3f, \"peak_rss_mib\": %.1f, \"rss_loaded_mib\": %.1f, \"load_peak_rss_mib\": %.1f, \"load_s\": %.3f, \"flops_per_step\": %.6g, "
               "\"peak_gflops\": %.3f, \"mfu\": %.5f, \"trainable\": %.0f, \"loss_first\": %.5f, \"loss_last\": %.5f, \"loadavg\": %.2f, "
               "\"arena_peak_mib\": %.1f, \"minor_faults\": %.0f, \"sys_s\": %.4f}\n",
               o.method, o.compute, wtype, (long long)o.B, (long long)o.T, o.r, (double)o.alpha, o.threads, o.steps, o.warmup, med, s[0], mean, cpu, mf, mb, mo,
               (double)(o.B * o.T) / med, hwm, rss0, hwm0, t_load, flops, peak, flops / med / 1e9 / peak, n_lora, loss0, loss1, loadavg(),
               arena, faults, sys);
        free(s);
    }
    fflush(stdout);
    if (o.profile) {                                  /* one more step, op by op */
        prof pr; size_t a_fwd, a_bwd; double t0, tfw, trep, tbw, topt, sf = 0, sb = 0; ft_tensor *loss; const ft_tensor *head = ft_model_output(m);
        memset(&pr, 0, sizeof pr);
        ft_ctx_reset(ctx);
        t0 = ft_time_seconds();
        loss = ft_model_loss(ctx, m, ft_model_hidden(ctx, m, &b), tgt, 0);   /* as ft_train computes it */
        tfw = ft_time_seconds() - t0;
        a_fwd = ft_ctx_arena_used(ctx);
        prof_forward(ctx, head, &pr);                 /* once to touch the scratch pages, then measured */
        memset(&pr, 0, sizeof pr);
        trep = prof_forward(ctx, head, &pr);
        t0 = ft_time_seconds();
        if (!loss || prof_backward(ctx, loss, head, &pr) != FT_OK) { fprintf(stderr, "bench train: %s\n", ft_last_error()); return 1; }
        tbw = ft_time_seconds() - t0;
        a_bwd = ft_ctx_arena_peak(ctx);
        t0 = ft_time_seconds();
        ft_optim_step(opt, o.lr); ft_params_zero_grad(P);
        topt = ft_time_seconds() - t0;
        printf("\nprofile of one step (%s, %d thread%s): forward %.3f s (replayed op by op: %.3f s), backward %.3f s, AdamW %.4f s\n",
               o.method, o.threads, o.threads > 1 ? "s" : "", tfw, trep, tbw, topt);
        printf("%-32s %9s %7s %9s | %9s %7s %9s\n", "op", "fwd ms", "fwd %", "GFLOP/s", "bwd ms", "bwd %", "GFLOP/s");
        for (i = 0; i < P_N; i++) {
            if (pr.fwd[i] == 0 && pr.bwd[i] == 0) continue;
            printf("%-32s %9.1f %6.1f%% ", PNAME[i], 1e3 * pr.fwd[i], 100 * pr.fwd[i] / (tfw + tbw + topt));
            if (pr.ffl[i] > 0) printf("%9.1f | ", pr.ffl[i] / pr.fwd[i] / 1e9); else printf("%9s | ", "-");
            printf("%9.1f %6.1f%% ", 1e3 * pr.bwd[i], 100 * pr.bwd[i] / (tfw + tbw + topt));
            if (pr.bfl[i] > 0) printf("%9.1f\n", pr.bfl[i] / pr.bwd[i] / 1e9); else printf("%9s\n", "-");
            sf += pr.fwd[i]; sb += pr.bwd[i];
        }
        printf("%-32s %9.1f %6.1f%% %9s | %9.1f %6.1f%%\n", "not on the tape / untimed", 1e3 * FT__MAX(tfw - sf, 0), 100 * FT__MAX(tfw - sf, 0) / (tfw + tbw + topt), "",
               1e3 * FT__MAX(tbw - sb, 0), 100 * FT__MAX(tbw - sb, 0) / (tfw + tbw + topt));
        printf("%-32s %9s %7s %9s | %9.1f %6.1f%%\n", "AdamW", "", "", "", 1e3 * topt, 100 * topt / (tfw + tbw + topt));
        printf("arena: %.0f MiB after the forward (activations saved for backward), peak %.0f MiB in the backward "
               "(+ the activation gradients live at once)\n", a_fwd / 1048576.0, a_bwd / 1048576.0);
        printf("(percentages of the whole step; the embedding and the first norm run off the tape (nothing below them\n"
               " trains), so they are in 'not on the tape', as are frozen matmuls of layers without LoRA)\n");
        fflush(stdout);
    }
    free(ids); free(tgt); free(tstep);
    ft_optim_free(opt); ft_peft_free(p); ft_model_free(m); ft__aligned_free(owned); ft_ctx_free(ctx);
    return 0;
}

int main(int argc, char **argv) {
    ft_ctx *ctx; ft_ctx_opts o; int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    int nthr[2], ti, si, maxthr;
    double peak[2], ours[NSHAPES][2], bf16[NSHAPES][2], blas[NSHAPES][2];
    if (argc > 1 && strcmp(argv[1], "train") == 0) return bench_train(argc - 2, argv + 2);
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
    ft_ctx_set_compute(ctx, FT_COMPUTE_BF16);              /* bf16 inputs, f32 sums */
    run_shapes(ctx, 0, nthr, quick, bf16);
    ft_ctx_set_compute(ctx, FT_COMPUTE_F32);
    load_openblas();
    printf("OpenBLAS: %s\n", blas_sgemm ? "found (a peer in this benchmark only)" : "not installed (apt-get install libopenblas0-pthread to compare)");
    if (blas_sgemm) run_shapes(ctx, 1, nthr, quick, blas);
    printf("\nbf16: %s\n", ft_compute_bf16_native() ? "AVX512-BF16 dot products (%peak: of the f32 FMA peak)" : "no AVX512-BF16 here: bf16-rounded inputs on the f32 kernel");
    printf("%-18s %6s %6s %6s %3s | %9s %6s | %9s %6s | %9s %6s | %s\n", "matmul", "M", "N", "K", "thr",
           "ft GF/s", "%peak", "bf16 GF/s", "%peak", "blas GF/s", "%peak", "ft/blas");
    for (si = 0; si < NSHAPES; si++)
        for (ti = 0; ti < 2; ti++) {
            if (ours[si][ti] == 0) continue;
            printf("%-18s %6lld %6lld %6lld %3d | %9.1f %5.0f%% | %9.1f %5.0f%% | ", SHAPES[si].what, (long long)SHAPES[si].M, (long long)SHAPES[si].N,
                   (long long)SHAPES[si].K, nthr[ti], ours[si][ti], 100 * ours[si][ti] / peak[ti], bf16[si][ti], 100 * bf16[si][ti] / peak[ti]);
            if (blas_sgemm) printf("%9.1f %5.0f%% | %.2f\n", blas[si][ti], 100 * blas[si][ti] / peak[ti], ours[si][ti] / blas[si][ti]);
            else printf("%9s %6s | %s\n", "-", "-", "-");
        }
    if (getenv("FT_MODEL") && getenv("FT_MODEL")[0]) bench_model(ctx, getenv("FT_MODEL"), maxthr);
    ft_ctx_free(ctx);
    return 0;
}
