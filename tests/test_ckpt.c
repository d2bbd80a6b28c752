/* test_ckpt.c - gradient checkpointing (ft_ctx_set_checkpointing): on a 4-layer tiny model with
   LoRA dropout (so the RNG replay matters), packed documents and DoRA, the loss, every adapter
   gradient and a training curve are bit-identical with and without it, also when every arena
   allocation is an overflow block; the arena's peak falls; in-place writes are still caught.
   With FT_MODEL and FT_CKPT_BENCH set: the peak and the step time on SmolLM2-135M-Instruct at B=4, T=256. */
#define _POSIX_C_SOURCE 200809L     /* CLOCK_MONOTONIC under -std=c99: wall-clock step times */
#include <time.h>
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"

static const char *PATH = "build/tiny_ckpt.gguf";
static ft_ctx *CTX;

/* B rows of T tokens, each row packing three documents (own positions, segment ids); targets
   are the next token of the same document, -100 at a document's end */
typedef struct batch { int64_t B, T; int32_t *ids, *tgt, *pos, *seg; ft_batch b; } batch;
static void batch_make(batch *d, int64_t B, int64_t T, int64_t V, uint64_t seed) {
    ft_rng r; int64_t i, t;
    ft_rng_seed(&r, seed);
    d->B = B; d->T = T;
    d->ids = (int32_t *)malloc((size_t)(B * T) * 4); d->tgt = (int32_t *)malloc((size_t)(B * T) * 4);
    d->pos = (int32_t *)malloc((size_t)(B * T) * 4); d->seg = (int32_t *)malloc((size_t)(B * T) * 4);
    for (i = 0; i < B; i++) {
        int64_t cut1 = T / 3 + i, cut2 = 2 * T / 3 + 2 * i;
        for (t = 0; t < T; t++) {
            int64_t k = i * T + t; int32_t doc = t < cut1 ? 0 : t < cut2 ? 1 : 2;
            d->ids[k] = (int32_t)(ft_rng_u64(&r) % (uint64_t)V);
            d->seg[k] = doc;
            d->pos[k] = (int32_t)(t - (doc == 0 ? 0 : doc == 1 ? cut1 : cut2));
        }
        for (t = 0; t < T; t++) {
            int64_t k = i * T + t;
            d->tgt[k] = t + 1 < T && d->seg[k + 1] == d->seg[k] ? d->ids[k + 1] : -100;
        }
    }
    memset(&d->b, 0, sizeof d->b);
    d->b.B = B; d->b.T = T; d->b.ids = d->ids; d->b.pos = d->pos; d->b.seg = d->seg;
}
static void batch_free(batch *d) { free(d->ids); free(d->tgt); free(d->pos); free(d->seg); }

typedef struct stepres { float loss; size_t peak; double secs, cpu; int n_ckpt; ft_rng rng; ft_result r; } stepres;

/* one forward + backward from a fresh step with the RNG at `seed`; gradients copied into grads */
static stepres step(ft_ctx *ctx, ft_model *m, ft_params *P, const batch *d, int ckpt, uint64_t seed, float *grads) {
    stepres s; ft_tensor *loss; int i; size_t off = 0; double t0; clock_t c0;
    memset(&s, 0, sizeof s);
    ft_ctx_reset(ctx);
    ft_params_zero_grad(P);
    ft_rng_seed(ft_ctx_rng(ctx), seed);
    ft_ctx_set_checkpointing(ctx, ckpt);
    t0 = ft_time_seconds(); c0 = clock();
    loss = ft_cross_entropy(ctx, ft_model_forward(ctx, m, &d->b), d->tgt, -100);
    s.r = loss ? ft_backward(ctx, loss) : ft_ctx_status(ctx);
    s.secs = ft_time_seconds() - t0; s.cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
    ft_ctx_set_checkpointing(ctx, 0);
    s.loss = loss ? ((float *)loss->data)[0] : NAN;
    s.peak = ft_ctx_arena_peak(ctx);
    s.rng = *ft_ctx_rng(ctx);
    for (i = 0; i < ft_tape_length(ctx); i++) s.n_ckpt += ft_tape_op(ctx, i) == FT_OP_CHECKPOINT;
    for (i = 0; grads && i < ft_params_count(P); i++) {
        ft_tensor *t = ft_params_get(P, i);
        memcpy(grads + off, t->grad, (size_t)ft_numel(t) * sizeof(float));
        off += (size_t)ft_numel(t);
    }
    return s;
}

/* adapter parameters moved off their init (B = 0 would give A no gradient) */
static void perturb(ft_params *P) {
    int i; int64_t j;
    for (i = 0; i < ft_params_count(P); i++) {
        ft_tensor *t = ft_params_get(P, i);
        for (j = 0; j < ft_numel(t); j++) ((float *)t->data)[j] += 0.05f * sinf((float)(j + 7 * i));
    }
}

/* elements that differ bitwise, and the largest difference */
static long ndiff(const float *a, const float *b, long n, double *maxd) {
    long i, k = 0;
    *maxd = 0;
    for (i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], 4) != 0) { k++; *maxd = fmax(*maxd, fabs((double)a[i] - (double)b[i])); }
    return k;
}

static void same_gradients(int dora, ft_type wtype) {
    ft_model *m; ft_peft *p; ft_lora_opts lo; ft_params *P; batch d; stepres s0, s1, s2; ft_ctx *small;
    ft_ctx_opts co; float *g0, *g1, *g2; long n, k; double md; int64_t i, nz = 0;
    tiny_layers = 4;
    CHECK(tiny_model_write(PATH, wtype, 11), "write the tiny model");
    CHECK_OK(ft_model_load(&m, PATH, NULL));
    memset(&lo, 0, sizeof lo); lo.r = 4; lo.alpha = 8; lo.dropout = 0.2f; lo.dora = dora;
    CHECK_OK(ft_lora_attach(&p, m, &lo));
    P = ft_peft_params(p); perturb(P);
    n = (long)ft_params_numel(P);
    g0 = (float *)malloc((size_t)n * 4); g1 = (float *)malloc((size_t)n * 4); g2 = (float *)malloc((size_t)n * 4);
    batch_make(&d, 3, 24, TINY_V, 5);
    s0 = step(CTX, m, P, &d, 0, 42, g0);
    s1 = step(CTX, m, P, &d, 1, 42, g1);
    CHECK(s0.r == FT_OK && s1.r == FT_OK, "backward: %s", ft_last_error());
    /* every arena allocation an overflow block, freed as the segments rewind */
    memset(&co, 0, sizeof co); co.n_threads = ft_ctx_threads(CTX); co.arena_bytes = 4096;
    CHECK_OK(ft_ctx_init(&small, &co));
    s2 = step(small, m, P, &d, 1, 42, g2);
    CHECK(s2.r == FT_OK, "backward (small arena): %s", ft_last_error());
    ft_ctx_free(small);
    for (i = 0; i < n; i++) nz += g0[i] != 0;
    CHECK(nz > n / 2, "most gradients are non-zero (%lld of %ld)", (long long)nz, n);
    CHECK(memcmp(&s0.loss, &s1.loss, 4) == 0 && memcmp(&s0.loss, &s2.loss, 4) == 0, "loss %.9g vs %.9g vs %.9g", s0.loss, s1.loss, s2.loss);
    k = ndiff(g0, g1, n, &md);
    CHECK(k == 0, "%ld of %ld gradients differ, by up to %.3g", k, n, md);
    k = ndiff(g0, g2, n, &md);
    CHECK(k == 0, "small arena: %ld of %ld gradients differ, by up to %.3g", k, n, md);
    CHECK(s1.n_ckpt == tiny_layers && s0.n_ckpt == 0, "one checkpoint node per layer (%d)", s1.n_ckpt);
    CHECK(memcmp(&s0.rng, &s1.rng, sizeof s0.rng) == 0, "the RNG ends where it would without checkpointing");
    CHECK(s1.peak < s0.peak, "peak %zu < %zu", s1.peak, s0.peak);
    printf("    %s, %s weights, %d layers, dropout 0.2, packed: loss %.6f, %ld gradients compared; arena peak %zu -> %zu bytes\n",
           dora ? "DoRA" : "LoRA", ft_type_name(wtype), tiny_layers, s0.loss, n, s0.peak, s1.peak);
    free(g0); free(g1); free(g2); batch_free(&d);
    ft_peft_free(p); ft_model_free(m);
}
TEST(lora_gradients_are_bit_identical) { same_gradients(0, FT_TYPE_F32); }
TEST(dora_gradients_are_bit_identical) { same_gradients(1, FT_TYPE_F16); }

/* the arena's high-water mark on a longer batch */
TEST(peak_falls) {
    ft_model *m; ft_peft *p; ft_lora_opts lo; batch d; stepres s0, s1; double ratio;
    tiny_layers = 4;
    CHECK(tiny_model_write(PATH, FT_TYPE_F32, 11), "write the tiny model");
    CHECK_OK(ft_model_load(&m, PATH, NULL));
    memset(&lo, 0, sizeof lo); lo.r = 8; lo.dropout = 0.1f;
    CHECK_OK(ft_lora_attach(&p, m, &lo));
    batch_make(&d, 4, 128, TINY_V, 9);
    s0 = step(CTX, m, ft_peft_params(p), &d, 0, 1, NULL);
    s1 = step(CTX, m, ft_peft_params(p), &d, 1, 1, NULL);
    CHECK(s0.r == FT_OK && s1.r == FT_OK, "backward: %s", ft_last_error());
    ratio = (double)s1.peak / (double)s0.peak;
    CHECK(ratio < 0.5, "checkpointed peak / plain peak = %.3f", ratio);
    printf("    tiny model, 4 layers, B=4 T=128, LoRA r=8 all linear: arena peak %.2f MiB -> %.2f MiB (%.3f x)\n",
           (double)s0.peak / 1048576.0, (double)s1.peak / 1048576.0, ratio);
    batch_free(&d); ft_peft_free(p); ft_model_free(m);
}

/* a few AdamW steps with dropout: the same loss curve, bit for bit, and no malloc once warm */
static void curve(ft_model *m, int ckpt, float *out, size_t *mallocs) {
    ft_peft *p; ft_lora_opts lo; ft_optim *o; ft_optim_opts oo; batch d; int s;
    memset(&lo, 0, sizeof lo); lo.r = 4; lo.dropout = 0.1f;
    memset(&oo, 0, sizeof oo); oo.weight_decay = 0.01f;
    ft_lora_attach(&p, m, &lo); ft_optim_init(&o, ft_peft_params(p), &oo);
    batch_make(&d, 2, 32, TINY_V, 3);
    ft_rng_seed(ft_ctx_rng(CTX), 5);
    ft_ctx_set_checkpointing(CTX, ckpt);
    for (s = 0; s < 8; s++) {
        ft_tensor *loss;
        if (s == 2) *mallocs = ft_ctx_mallocs(CTX);
        ft_ctx_reset(CTX);
        ft_params_zero_grad(ft_peft_params(p));
        loss = ft_cross_entropy(CTX, ft_model_forward(CTX, m, &d.b), d.tgt, -100);
        CHECK_OK(ft_backward(CTX, loss));
        out[s] = ((float *)loss->data)[0];
        ft_optim_step(o, 1e-2f);
    }
    *mallocs = ft_ctx_mallocs(CTX) - *mallocs;
    ft_ctx_set_checkpointing(CTX, 0);
    batch_free(&d); ft_optim_free(o); ft_peft_free(p);
}
TEST(training_curve_is_the_same) {
    ft_model *m; float a[8], b[8]; size_t ma, mb; int s;
    tiny_layers = 4;
    CHECK(tiny_model_write(PATH, FT_TYPE_F32, 11), "write the tiny model");
    CHECK_OK(ft_model_load(&m, PATH, NULL));
    curve(m, 0, a, &ma);
    curve(m, 1, b, &mb);
    for (s = 0; s < 8; s++) CHECK(memcmp(&a[s], &b[s], 4) == 0, "step %d: %.9g vs %.9g", s, a[s], b[s]);
    CHECK(a[7] < a[0], "it learns: %.3f -> %.3f", a[0], a[7]);
    CHECK(mb == 0, "steps 3..8 with checkpointing: %zu mallocs", mb);
    printf("    loss %.4f -> %.4f in 8 steps, the same bits with and without checkpointing\n", a[0], a[7]);
    ft_model_free(m);
}

/* no-grad forward: the same logits, the intermediates given back as it goes */
TEST(no_grad_forward) {
    ft_model *m; ft_peft *p; ft_lora_opts lo; batch d; ft_tensor *y; float *a; size_t pa, pb, n; int old;
    tiny_layers = 4;
    CHECK(tiny_model_write(PATH, FT_TYPE_F32, 11), "write the tiny model");
    CHECK_OK(ft_model_load(&m, PATH, NULL));
    memset(&lo, 0, sizeof lo); lo.r = 4;
    CHECK_OK(ft_lora_attach(&p, m, &lo));
    perturb(ft_peft_params(p));
    batch_make(&d, 2, 64, TINY_V, 4);
    n = (size_t)(2 * 64 * TINY_V);
    a = (float *)malloc(n * 4);
    old = ft_ctx_set_grad(CTX, 0);
    ft_ctx_reset(CTX);
    y = ft_model_forward(CTX, m, &d.b);
    memcpy(a, y->data, n * 4); pa = ft_ctx_arena_peak(CTX);
    ft_ctx_reset(CTX);
    ft_ctx_set_checkpointing(CTX, 1);
    y = ft_model_forward(CTX, m, &d.b);
    pb = ft_ctx_arena_peak(CTX);
    ft_ctx_set_checkpointing(CTX, 0);
    ft_ctx_set_grad(CTX, old);
    CHECK(y && memcmp(a, y->data, n * 4) == 0, "the same logits");
    CHECK(pb < pa, "peak %zu < %zu", pb, pa);
    free(a); batch_free(&d); ft_peft_free(p); ft_model_free(m);
}

/* a weight written in place between forward and backward: caught with and without */
TEST(in_place_write_is_caught) {
    ft_model *m; ft_peft *p; ft_lora_opts lo; batch d; int ckpt;
    tiny_layers = 4;
    CHECK(tiny_model_write(PATH, FT_TYPE_F32, 11), "write the tiny model");
    CHECK_OK(ft_model_load(&m, PATH, NULL));
    memset(&lo, 0, sizeof lo); lo.r = 4;
    CHECK_OK(ft_lora_attach(&p, m, &lo));
    batch_make(&d, 1, 16, TINY_V, 4);
    for (ckpt = 0; ckpt < 2; ckpt++) {
        ft_tensor *loss; ft_result r;
        ft_ctx_reset(CTX);
        ft_ctx_set_checkpointing(CTX, ckpt);
        loss = ft_cross_entropy(CTX, ft_model_forward(CTX, m, &d.b), d.tgt, -100);
        ft_tensor_mark_modified(ft_lora_A(p, 1, FT_SITE_UP));
        r = ft_backward(CTX, loss);
        CHECK(r == FT_ERR_INPLACE, "checkpointing %d: %s (%s)", ckpt, ft_result_string(r), ft_last_error());
    }
    ft_ctx_set_checkpointing(CTX, 0);
    batch_free(&d); ft_peft_free(p); ft_model_free(m);
}

/* SmolLM2-135M-Instruct, B=4, T=256, LoRA r=8 on all linear layers. A context whose arena is
   big enough from the start (8 GiB of address space; pages are touched as used) runs a warm-up
   step, then one step without and one with checkpointing, so neither timed step pays for
   growing the arena or for first-touching its pages. */
TEST(smollm2_memory_and_time) {
    const char *path = getenv("FT_MODEL"); ft_model *m; ft_peft *p; ft_lora_opts lo; batch d; stepres s0, s1;
    ft_params *P; float *g0, *g1; long n, k; double md; ft_ctx *big; ft_ctx_opts co;
    if (!path || !*path || !getenv("FT_CKPT_BENCH")) { printf("    (FT_MODEL and FT_CKPT_BENCH not set: skipped; ~6 GB and 2 minutes)\n"); return; }
    if (ft_model_load(&m, path, NULL) != FT_OK) { CHECK(0, "%s", ft_last_error()); return; }
    memset(&co, 0, sizeof co); co.n_threads = ft_ctx_threads(CTX); co.arena_bytes = (size_t)1 << (sizeof(size_t) >= 8 ? 33 : 30);
    if (ft_ctx_init(&big, &co) != FT_OK) { CHECK(0, "%s", ft_last_error()); ft_model_free(m); return; }
    memset(&lo, 0, sizeof lo); lo.r = 8; lo.alpha = 16;
    CHECK_OK(ft_lora_attach(&p, m, &lo));
    P = ft_peft_params(p); perturb(P);
    n = (long)ft_params_numel(P);
    g0 = (float *)malloc((size_t)n * 4); g1 = (float *)malloc((size_t)n * 4);
    batch_make(&d, 4, 256, ft_model_config_get(m)->n_vocab, 8);
    step(big, m, P, &d, 0, 1, NULL);
    s0 = step(big, m, P, &d, 0, 1, g0);
    s1 = step(big, m, P, &d, 1, 1, g1);
    CHECK(s0.r == FT_OK && s1.r == FT_OK, "backward: %s", ft_last_error());
    k = ndiff(g0, g1, n, &md);
    CHECK(memcmp(&s0.loss, &s1.loss, 4) == 0 && k == 0, "loss %.9g vs %.9g; %ld gradients differ by up to %.3g", s0.loss, s1.loss, k, md);
    CHECK(s1.peak < s0.peak / 2, "peak %zu vs %zu", s1.peak, s0.peak);
    printf("    SmolLM2-135M, B=4 T=256, LoRA r=8 all linear, %d threads: arena peak %.0f MiB -> %.0f MiB (%.3f x), "
           "step %.2f s -> %.2f s (%.2f x), CPU %.2f s -> %.2f s (%.2f x)\n", ft_ctx_threads(big), (double)s0.peak / 1048576.0,
           (double)s1.peak / 1048576.0, (double)s1.peak / (double)s0.peak, s0.secs, s1.secs, s1.secs / s0.secs, s0.cpu, s1.cpu, s1.cpu / s0.cpu);
    free(g0); free(g1); batch_free(&d);
    ft_peft_free(p); ft_ctx_free(big); ft_model_free(m);
}

int main(void) {
    ft_ctx_opts o; memset(&o, 0, sizeof o); o.n_threads = 2;
    if (ft_ctx_init(&CTX, &o) != FT_OK) { printf("ctx: %s\n", ft_last_error()); return 1; }
    RUN(lora_gradients_are_bit_identical);
    RUN(dora_gradients_are_bit_identical);
    RUN(peak_falls);
    RUN(training_curve_is_the_same);
    RUN(no_grad_forward);
    RUN(in_place_write_is_caught);
    RUN(smollm2_memory_and_time);
    ft_ctx_free(CTX);
    remove(PATH);
    return ft_test_summary("test_ckpt");
}
