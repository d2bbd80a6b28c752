/* test_core.c - errors, f16/bf16, RNG, arena, parameter blocks, tape pruning, in-place
   detection, determinism across runs and thread counts. */
#include "../finetune.h"
#include "ft_test.h"
#include <pthread.h>

static ft_ctx *new_ctx(int threads) {
    ft_ctx *c; ft_ctx_opts o; memset(&o, 0, sizeof o);
    o.n_threads = threads; o.arena_bytes = 1 << 12;
    if (ft_ctx_init(&c, &o) != FT_OK) { printf("ctx: %s\n", ft_last_error()); exit(1); }
    return c;
}

TEST(result_strings) {
    CHECK(strcmp(ft_result_string(FT_OK), "ok") == 0, "FT_OK");
    CHECK(strcmp(ft_result_string(FT_ERR_FORMAT), "malformed input") == 0, "FORMAT");
    CHECK(ft_set_error(FT_ERR_IO, "file %s offset %d", "x.gguf", 42) == FT_ERR_IO, "returns r");
    CHECK(strcmp(ft_last_error(), "file x.gguf offset 42") == 0, "message: %s", ft_last_error());
    ft_set_error(FT_ERR_IO, "%s: %s", "adapter.gguf", ft_last_error());      /* a message quoting the last one */
    CHECK(strcmp(ft_last_error(), "adapter.gguf: file x.gguf offset 42") == 0, "prefixed message: %s", ft_last_error());
}

static void *other_thread(void *p) {
    (void)p;
    ft_set_error(FT_ERR_IO, "from the other thread");
    return NULL;
}
TEST(last_error_is_per_thread) {
    pthread_t th;
    ft_set_error(FT_ERR_SHAPE, "main thread message");
    pthread_create(&th, NULL, other_thread, NULL);
    pthread_join(th, NULL);
    CHECK(strcmp(ft_last_error(), "main thread message") == 0, "got '%s'", ft_last_error());
}

TEST(fp16_round_trip_and_rounding) {
    uint32_t h; int bad = 0;
    for (h = 0; h < 65536; h++) {
        float f = ft_fp16_to_fp32((uint16_t)h);
        if (f != f) continue;                                    /* NaN payloads */
        if (ft_fp32_to_fp16(f) != h) bad++;
    }
    CHECK(bad == 0, "%d halves do not round-trip", bad);
    CHECK(ft_fp16_to_fp32(0x3c00) == 1.0f && ft_fp16_to_fp32(0xc000) == -2.0f, "1, -2");
    CHECK(ft_fp16_to_fp32(0x0001) == 5.9604644775390625e-08f, "smallest subnormal");
    CHECK(ft_fp32_to_fp16(65504.0f) == 0x7bff && ft_fp32_to_fp16(65520.0f) == 0x7c00, "max / overflow");
    CHECK(ft_fp32_to_fp16(1.0f + 1.0f / 2048) == 0x3c00, "tie to even (down)");
    CHECK(ft_fp32_to_fp16(1.0f + 3.0f / 2048) == 0x3c02, "tie to even (up)");
    CHECK(ft_fp32_to_fp16(2.98023223876953125e-08f) == 0x0000, "half of the smallest subnormal ties to 0");
    CHECK(ft_fp32_to_fp16(4.4703483581542969e-08f) == 0x0001, "0.75 of the smallest subnormal rounds up");
    /* against double arithmetic on random values */
    {
        ft_rng r; int i; bad = 0;
        ft_rng_seed(&r, 7);
        for (i = 0; i < 100000; i++) {
            float f = (ft_rng_uniform(&r) - 0.5f) * powf(2.0f, (float)(int)(ft_rng_u64(&r) % 40) - 25.0f);
            float g = ft_fp16_to_fp32(ft_fp32_to_fp16(f));
            /* the nearest half: no other half is strictly closer */
            uint16_t hh = ft_fp32_to_fp16(f);
            float up = ft_fp16_to_fp32((uint16_t)(hh + 1)), dn = ft_fp16_to_fp32((uint16_t)(hh - 1));
            if ((hh & 0x7fff) != 0 && (fabsf(up - f) < fabsf(g - f) || fabsf(dn - f) < fabsf(g - f))) bad++;
        }
        CHECK(bad == 0, "%d values not rounded to the nearest half", bad);
    }
}

TEST(bf16) {
    CHECK(ft_bf16_to_fp32(ft_fp32_to_bf16(1.5f)) == 1.5f, "exact");
    CHECK(ft_fp32_to_bf16(1.0f + 1.0f / 256) == 0x3f80, "tie to even");
    CHECK(ft_fp32_to_bf16(1.0f + 3.0f / 256) == 0x3f82, "tie to even up");
    CHECK(ft_bf16_to_fp32(ft_fp32_to_bf16(NAN)) != ft_bf16_to_fp32(ft_fp32_to_bf16(NAN)), "nan stays nan");
}

TEST(rng_is_deterministic_and_uniform) {
    ft_rng a, b; int i; double s = 0, s2 = 0;
    ft_rng_seed(&a, 42); ft_rng_seed(&b, 42);
    for (i = 0; i < 1000; i++) CHECK(ft_rng_u64(&a) == ft_rng_u64(&b), "stream differs at %d", i);
    ft_rng_seed(&a, 1);
    for (i = 0; i < 100000; i++) { float u = ft_rng_uniform(&a); CHECK(u >= 0 && u < 1, "u=%g", u); s += u; }
    CHECK(fabs(s / 100000 - 0.5) < 0.01, "mean %g", s / 100000);
    for (s = 0, i = 0; i < 100000; i++) { double z = ft_rng_normal(&a); s += z; s2 += z * z; }
    CHECK(fabs(s / 100000) < 0.02 && fabs(s2 / 100000 - 1) < 0.03, "normal mean %g var %g", s / 1e5, s2 / 1e5);
}

/* one small training-like step */
static float step(ft_ctx *c, ft_tensor *W, ft_tensor *b, int dropout) {
    ft_tensor *x = ft_tensor_2d(c, 33, 17), *y, *loss; int i;
    for (i = 0; i < 33 * 17; i++) ((float *)x->data)[i] = sinf((float)i * 0.37f);
    y = ft_add(c, ft_matmul(c, x, W, 0, 1), b);
    if (dropout) y = ft_dropout(c, y, 0.25f);
    loss = ft_mean(c, ft_mul(c, ft_silu(c, y), y));
    if (ft_backward(c, loss) != FT_OK) return NAN;
    return ((float *)loss->data)[0];
}

static ft_params *make_params(ft_ctx *c, ft_tensor **W, ft_tensor **b) {
    ft_params *P; int64_t sw[2] = {9, 17}, sb[1] = {9};
    ft_params_init(&P);
    *W = ft_params_add(P, "w", 2, sw); *b = ft_params_add(P, "b", 1, sb);
    ft_params_alloc(P);
    ft_rng_seed(ft_ctx_rng(c), 3);
    ft_params_init_normal(P, *W, 0, 0.3f, c);
    ft_params_init_uniform(P, *b, -0.1f, 0.1f, c);
    return P;
}

TEST(params_in_one_block) {
    ft_ctx *c = new_ctx(1); ft_tensor *W, *b; ft_params *P = make_params(c, &W, &b);
    CHECK(ft_params_count(P) == 2 && ft_params_numel(P) == 9 * 17 + 9, "count/numel");
    CHECK(ft_params_find(P, "b") == b && ft_params_find(P, "nope") == NULL, "find");
    CHECK((uintptr_t)W->data % 64 == 0 && (uintptr_t)b->data % 64 == 0, "aligned");
    CHECK((float *)b->data - (float *)W->data == 160, "one block: b right after W, 64-byte padded (%ld)", (long)((float *)b->data - (float *)W->data));
    CHECK(ft_params_add(P, "late", 1, (int64_t[1]){3}) == NULL, "no add after alloc");
    ft_params_free(P); ft_ctx_free(c);
}

TEST(arena_no_malloc_in_steady_state) {
    ft_ctx *c = new_ctx(2); ft_tensor *W, *b; ft_params *P = make_params(c, &W, &b);
    size_t m1, m2; int s;
    for (s = 0; s < 2; s++) { ft_ctx_reset(c); step(c, W, b, 1); }
    m1 = ft_ctx_mallocs(c);
    for (s = 0; s < 10; s++) { ft_ctx_reset(c); step(c, W, b, 1); }
    m2 = ft_ctx_mallocs(c);
    CHECK(m1 == m2, "mallocs grew from %zu to %zu in steady state", m1, m2);
    CHECK(ft_ctx_arena_capacity(c) > (1u << 12), "arena grew past its initial 4 KiB (%zu)", ft_ctx_arena_capacity(c));
    ft_params_free(P); ft_ctx_free(c);
}

TEST(frozen_branches_are_pruned) {
    ft_ctx *c = new_ctx(1); ft_tensor *W, *b; ft_params *P = make_params(c, &W, &b);
    ft_tensor *x, *y, *loss;
    W->flags &= ~(uint32_t)FT_TENSOR_REQUIRES_GRAD;            /* freeze W */
    ft_params_zero_grad(P);
    ft_ctx_reset(c);
    x = ft_tensor_2d(c, 4, 17);
    y = ft_matmul(c, x, W, 0, 1);                              /* nothing needs a grad here */
    CHECK(ft_tape_length(c) == 0 && !(y->flags & FT_TENSOR_REQUIRES_GRAD), "frozen matmul recorded");
    loss = ft_sum(c, ft_add(c, y, b));
    CHECK(ft_tape_length(c) == 2, "tape %d", ft_tape_length(c));
    CHECK_OK(ft_backward(c, loss));
    CHECK(x->grad == NULL && y->grad == NULL, "no gradient buffers for frozen branches");
    CHECK(((float *)b->grad)[0] == 4.0f, "db = rows = 4 (%g)", ((float *)b->grad)[0]);
    CHECK(((float *)W->grad)[0] == 0.0f, "frozen W untouched");
    /* no-grad mode records nothing */
    ft_ctx_reset(c);
    W->flags |= FT_TENSOR_REQUIRES_GRAD;
    ft_ctx_set_grad(c, 0);
    step(c, W, b, 0);
    CHECK(ft_tape_length(c) == 0, "no-grad mode recorded %d nodes", ft_tape_length(c));
    ft_ctx_set_grad(c, 1);
    ft_params_free(P); ft_ctx_free(c);
}

/* an op's output gives its gradient back once its own op has run backward: a 64-op chain's
   backward stays within a few gradients of its forward, with the same gradient bits as when
   every intermediate keeps its gradient (FT_TENSOR_RETAIN_GRAD) */
TEST(gradients_are_given_back_once_used) {
    enum { N = 1024, C = 256, DEPTH = 32 };
    ft_ctx *c = new_ctx(2); float *g[2]; size_t fwd = 0, peak = 0; int run, k, i;
    for (run = 0; run < 2; run++) {
        ft_tensor *x, *h, *mid = NULL, *loss;
        ft_ctx_reset(c);
        x = ft_tensor_2d(c, N, C);
        for (i = 0; i < N * C; i++) ((float *)x->data)[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
        x->flags |= FT_TENSOR_REQUIRES_GRAD;
        h = x;
        for (k = 0; k < DEPTH; k++) {
            h = ft_tanh(c, ft_scale(c, h, 1.1f));
            if (run == 1 || k == DEPTH / 2) h->flags |= FT_TENSOR_RETAIN_GRAD;
            if (k == DEPTH / 2) mid = h;
        }
        loss = ft_sum(c, h);
        if (run == 0) fwd = ft_ctx_arena_peak(c);
        CHECK_OK(ft_backward(c, loss));
        if (run == 0) peak = ft_ctx_arena_peak(c);
        CHECK(mid && mid->grad != NULL, "run %d: the retained gradient is gone", run);
        CHECK(run == 1 || h->grad == NULL, "an unretained gradient was kept");
        g[run] = (float *)malloc((size_t)N * C * sizeof(float));
        memcpy(g[run], x->grad, (size_t)N * C * sizeof(float));
    }
    printf("    forward %.1f MiB, backward peak %.1f MiB (+%.1f; all %d gradients would be %.1f)\n", fwd / 1048576.0, peak / 1048576.0,
           (peak - fwd) / 1048576.0, 2 * DEPTH + 1, (2.0 * DEPTH + 1) * N * C * 4 / 1048576.0);
    CHECK(peak - fwd <= (size_t)5 * N * C * sizeof(float), "backward peak %zu bytes above the forward's %zu", peak - fwd, fwd);
    CHECK(memcmp(g[0], g[1], (size_t)N * C * sizeof(float)) == 0, "the input gradient depends on retaining");
    free(g[0]); free(g[1]); ft_ctx_free(c);
}

TEST(inplace_after_save_is_an_error) {
    ft_ctx *c = new_ctx(1); ft_tensor *W, *b; ft_params *P = make_params(c, &W, &b);
    ft_tensor *y, *e, *loss; ft_result r;
    ft_ctx_reset(c);
    y = ft_add(c, ft_tensor_1d(c, 9), b);
    e = ft_exp(c, y);                                          /* saves its output */
    loss = ft_sum(c, e);
    ft_scale_inplace(e, 2.0f);
    r = ft_backward(c, loss);
    CHECK(r == FT_ERR_INPLACE, "got %s", ft_result_string(r));
    CHECK(strstr(ft_last_error(), "modified in place") != NULL, "message: %s", ft_last_error());
    /* and a parameter changed between forward and backward */
    ft_ctx_reset(c);
    loss = ft_sum(c, ft_mul(c, b, b));
    ft_scale_inplace(b, 0.5f);
    r = ft_backward(c, loss);
    CHECK(r == FT_ERR_INPLACE && strstr(ft_last_error(), "b") != NULL, "got %s: %s", ft_result_string(r), ft_last_error());
    /* backward twice */
    ft_ctx_reset(c);
    loss = ft_sum(c, b);
    CHECK_OK(ft_backward(c, loss));
    CHECK(ft_backward(c, loss) == FT_ERR_STATE, "second backward");
    ft_params_free(P); ft_ctx_free(c);
}

TEST(shape_errors_propagate) {
    ft_ctx *c = new_ctx(1); ft_tensor *a, *b2, *y;
    ft_ctx_reset(c);
    a = ft_tensor_2d(c, 3, 4); b2 = ft_tensor_2d(c, 5, 6);
    y = ft_matmul(c, a, b2, 0, 0);
    CHECK(y == NULL && ft_ctx_status(c) == FT_ERR_SHAPE, "matmul shape error");
    CHECK(strstr(ft_last_error(), "matmul") != NULL, "message: %s", ft_last_error());
    y = ft_sum(c, ft_exp(c, y));                                /* NULL flows through */
    CHECK(y == NULL, "NULL propagates");
    CHECK(ft_add(c, a, b2) == NULL, "broadcast mismatch");
    CHECK(ft_backward(c, y) != FT_OK, "backward after a failed forward");
    ft_ctx_reset(c);
    CHECK(ft_ctx_status(c) == FT_OK, "reset clears the status");
    {
        int32_t ids[2] = {0, 9};
        ft_tensor *t = ft_tensor_2d(c, 4, 3);
        CHECK(ft_embedding(c, t, ids, 2) == NULL && ft_ctx_status(c) == FT_ERR_INVALID, "id out of range");
        CHECK(strstr(ft_last_error(), "id 9") != NULL, "message: %s", ft_last_error());
    }
    ft_ctx_free(c);
}

TEST(nonfinite_loss_is_refused) {
    ft_ctx *c = new_ctx(1); ft_tensor *W, *b; ft_params *P = make_params(c, &W, &b);
    ft_tensor *loss;
    ft_ctx_reset(c);
    ((float *)b->data)[0] = -1.0f; ft_tensor_mark_modified(b);
    loss = ft_sum(c, ft_log(c, b));                             /* log of a negative: NaN */
    CHECK(ft_backward(c, loss) == FT_ERR_NUMERIC, "NaN loss refused: %s", ft_last_error());
    ft_params_free(P); ft_ctx_free(c);
}

/* same seed -> same losses and gradients, bit for bit; 1 and 2 threads agree bit for bit */
TEST(deterministic_runs_and_threads) {
    float l[3][5], g[3][5]; int run, s;
    for (run = 0; run < 3; run++) {
        ft_ctx *c = new_ctx(run == 2 ? 1 : 2); ft_tensor *W, *b; ft_params *P = make_params(c, &W, &b);
        ft_rng_seed(ft_ctx_rng(c), 11);
        for (s = 0; s < 5; s++) {
            ft_ctx_reset(c); ft_params_zero_grad(P);
            l[run][s] = step(c, W, b, 1);
            g[run][s] = ((float *)W->grad)[5];
        }
        ft_params_free(P); ft_ctx_free(c);
    }
    for (s = 0; s < 5; s++) {
        CHECK(memcmp(&l[0][s], &l[1][s], 4) == 0 && memcmp(&g[0][s], &g[1][s], 4) == 0, "run 1 vs 2 step %d", s);
        CHECK(memcmp(&l[0][s], &l[2][s], 4) == 0 && memcmp(&g[0][s], &g[2][s], 4) == 0, "2 threads vs 1 step %d: %.9g %.9g", s, l[0][s], l[2][s]);
    }
    CHECK(l[0][0] != l[0][1], "dropout masks differ between steps");
}

TEST(views_share_storage_and_gradient) {
    ft_ctx *c = new_ctx(1); ft_params *P; ft_tensor *x, *v, *loss; int64_t s[2] = {4, 3}, s2[2] = {6, 2};
    ft_params_init(&P); x = ft_params_add(P, "x", 2, s); ft_params_alloc(P);
    ft_ctx_reset(c);
    v = ft_reshape(c, ft_view_rows(c, x, 2, 2), 2, (int64_t[2]){3, 2});
    CHECK(v->data == (float *)x->data + 6, "view points into x");
    CHECK(ft_reshape(c, x, 2, s2) != NULL && ft_reshape(c, x, 2, s) != NULL, "reshape ok");
    loss = ft_sum(c, ft_scale(c, v, 3.0f));
    CHECK_OK(ft_backward(c, loss));
    CHECK(x->grad[5] == 0.0f && x->grad[6] == 3.0f && x->grad[11] == 3.0f, "gradient lands in x's rows 2..3");
    ft_params_free(P); ft_ctx_free(c);
}

int main(void) {
    RUN(result_strings);
    RUN(last_error_is_per_thread);
    RUN(fp16_round_trip_and_rounding);
    RUN(bf16);
    RUN(rng_is_deterministic_and_uniform);
    RUN(params_in_one_block);
    RUN(arena_no_malloc_in_steady_state);
    RUN(frozen_branches_are_pruned);
    RUN(gradients_are_given_back_once_used);
    RUN(inplace_after_save_is_an_error);
    RUN(shape_errors_propagate);
    RUN(nonfinite_loss_is_refused);
    RUN(deterministic_runs_and_threads);
    RUN(views_share_storage_and_gradient);
    return ft_test_summary("test_core");
}
