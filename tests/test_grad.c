/* test_grad.c - a central finite-difference check of every differentiable op.
   For each case: inputs are parameters (so they survive ft_ctx_reset); the output y gets a
   fixed random cotangent w; the analytic gradient of L = sum(w * y) from ft_backward_from is
   compared with (L(x + eps) - L(x - eps)) / (2 eps), where each L is an f32 forward summed in
   double. A last test fails if some op of ft_op has no case here (coverage read off the tape). */
#define FINETUNE_IMPLEMENTATION
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"

static ft_ctx *C;
static int seen[FT_OP_COUNT];

typedef ft_tensor *(*build_fn)(ft_ctx *ctx, ft_tensor **in);

/* evaluate L = sum(w * y) in double with grad mode off */
static double eval_loss(build_fn f, ft_tensor **in, const float *w) {
    double L = 0; int64_t i, n; ft_tensor *y; int old;
    ft_ctx_reset(C);
    old = ft_ctx_set_grad(C, 0);
    y = f(C, in);
    ft_ctx_set_grad(C, old);
    if (!y) return NAN;
    n = ft_numel(y);
    for (i = 0; i < n; i++) L += (double)w[i] * (double)((float *)y->data)[i];
    return L;
}

/* check d L / d in[k] for the inputs; n_in inputs, shapes given; up to 48 probed elements each */
static void gradcheck(const char *name, build_fn f, int n_in, const int *ndims, int64_t (*shapes)[4],
                      float lo, float hi, double eps, double atol, double rtol) {
    ft_params *P; ft_tensor *in[8], *y; float *w; int k; int64_t i, n; char nm[16];
    double worst = 0;
    ft_params_init(&P);
    for (k = 0; k < n_in; k++) { snprintf(nm, sizeof nm, "in%d", k); in[k] = ft_params_add(P, nm, ndims[k], shapes[k]); }
    ft_params_alloc(P);
    ft_rng_seed(ft_ctx_rng(C), 1234);
    for (k = 0; k < n_in; k++) ft_params_init_uniform(P, in[k], lo, hi, C);
    /* analytic */
    ft_ctx_reset(C);
    y = f(C, in);
    CHECK(y != NULL, "%s: forward failed: %s", name, ft_last_error());
    if (!y) { ft_params_free(P); return; }
    for (i = 0; i < ft_tape_length(C); i++) seen[ft_tape_op(C, (int)i)] = 1;
    n = ft_numel(y);
    w = (float *)malloc((size_t)n * sizeof(float));
    for (i = 0; i < n; i++) w[i] = ft_rng_uniform(ft_ctx_rng(C)) * 2.0f - 1.0f;
    CHECK_OK(ft_backward_from(C, y, w));
    for (k = 0; k < n_in; k++) {
        int64_t ne = ft_numel(in[k]), stride = ne > 48 ? ne / 48 + 1 : 1;
        float *x = (float *)in[k]->data;
        for (i = 0; i < ne; i += stride) {
            float x0 = x[i]; double Lp, Lm, fd, an = in[k]->grad[i], d;
            x[i] = x0 + (float)eps; Lp = eval_loss(f, in, w);
            x[i] = x0 - (float)eps; Lm = eval_loss(f, in, w);
            x[i] = x0;
            fd = (Lp - Lm) / (((double)(x0 + (float)eps)) - ((double)(x0 - (float)eps)));
            d = fabs(an - fd) / (atol + rtol * fabs(fd));
            if (d > worst) worst = d;
            CHECK(d <= 1.0, "%s: d/d in%d[%lld]: analytic %.6g vs numeric %.6g", name, k, (long long)i, an, fd);
            if (d > 1.0) { free(w); ft_params_free(P); return; }
        }
    }
    printf("    %-34s worst error / tolerance = %.3f\n", name, worst);
    free(w);
    ft_params_free(P);
}

#define S(...) {__VA_ARGS__}

/* ---- cases ---------------------------------------------------------------------------------- */
static ft_tensor *b_mm00(ft_ctx *c, ft_tensor **x) { return ft_matmul(c, x[0], x[1], 0, 0); }
static ft_tensor *b_mm01(ft_ctx *c, ft_tensor **x) { return ft_matmul(c, x[0], x[1], 0, 1); }
static ft_tensor *b_mm10(ft_ctx *c, ft_tensor **x) { return ft_matmul(c, x[0], x[1], 1, 0); }
static ft_tensor *b_mm11(ft_ctx *c, ft_tensor **x) { return ft_matmul(c, x[0], x[1], 1, 1); }
TEST(grad_matmul) {
    int nd[2] = {2, 2};
    int64_t s00[2][4] = {S(3, 5), S(5, 7)}, s01[2][4] = {S(3, 5), S(7, 5)}, s10[2][4] = {S(5, 3), S(5, 7)}, s11[2][4] = {S(5, 3), S(7, 5)};
    int nd3[2] = {3, 2}, nd33[2] = {3, 3};
    int64_t sb[2][4] = {S(2, 3, 5), S(7, 5)}, sbb[2][4] = {S(2, 3, 5), S(2, 5, 4)}, sbt[2][4] = {S(2, 5, 3), S(2, 4, 5)};
    gradcheck("matmul00", b_mm00, 2, nd, s00, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("matmul01", b_mm01, 2, nd, s01, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("matmul10", b_mm10, 2, nd, s10, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("matmul11", b_mm11, 2, nd, s11, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("matmul batched x shared", b_mm01, 2, nd3, sb, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("matmul batched x batched", b_mm00, 2, nd33, sbb, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("matmul batched, both transposed", b_mm11, 2, nd33, sbt, -1, 1, 1e-2, 2e-4, 2e-3);
}

/* x (2, 3, 5), W (4, 5), A (2, 5), B (4, 2); with a separate branch input xd (x after dropout) */
static ft_tensor *b_lora(ft_ctx *c, ft_tensor **x) { return ft_lora_linear(c, x[0], x[1], x[2], x[3], 0.7f, NULL); }
static ft_tensor *b_lora_xd(ft_ctx *c, ft_tensor **x) { return ft_lora_linear(c, x[0], x[1], x[2], x[3], -1.3f, x[4]); }
/* the same inside a graph: the rows come from an op, so their gradients start empty */
static ft_tensor *b_lora_inner(ft_ctx *c, ft_tensor **x) { return ft_lora_linear(c, ft_scale(c, x[0], 1.5f), x[1], x[2], x[3], 0.5f, NULL); }
TEST(grad_lora_linear) {
    int nd[5] = {3, 2, 2, 2, 3};
    int64_t s[5][4] = {S(2, 3, 5), S(4, 5), S(2, 5), S(4, 2), S(2, 3, 5)};
    gradcheck("lora_linear", b_lora, 4, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("lora_linear, dropout input", b_lora_xd, 5, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("lora_linear inside a graph", b_lora_inner, 4, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
}

static ft_tensor *b_add(ft_ctx *c, ft_tensor **x) { return ft_add(c, x[0], x[1]); }
static ft_tensor *b_sub(ft_ctx *c, ft_tensor **x) { return ft_sub(c, x[0], x[1]); }
static ft_tensor *b_mul(ft_ctx *c, ft_tensor **x) { return ft_mul(c, x[0], x[1]); }
static ft_tensor *b_min(ft_ctx *c, ft_tensor **x) { return ft_minimum(c, x[0], x[1]); }
static ft_tensor *b_max(ft_ctx *c, ft_tensor **x) { return ft_maximum(c, x[0], x[1]); }
TEST(grad_binary_broadcast) {
    int nd[2] = {3, 1}, nd2[2] = {3, 2}, ndf[2] = {2, 2}, nds[2] = {2, 3};
    int64_t s1[2][4] = {S(2, 3, 5), S(5)}, s2[2][4] = {S(2, 3, 5), S(3, 1)}, sf[2][4] = {S(4, 7), S(4, 7)}, ss[2][4] = {S(3, 1), S(2, 1, 4)};
    build_fn fs[5] = {b_add, b_sub, b_mul, b_min, b_max};
    const char *names[5] = {"add", "sub", "mul", "minimum", "maximum"};
    int i;
    for (i = 0; i < 5; i++) {
        gradcheck(names[i], fs[i], 2, ndf, sf, -1, 1, 1e-3, 2e-4, 2e-3);   /* small eps: no ties crossed */
        if (i < 3) {
            gradcheck(names[i], fs[i], 2, nd, s1, -1, 1, 1e-2, 2e-4, 2e-3);
            gradcheck(names[i], fs[i], 2, nd2, s2, -1, 1, 1e-2, 2e-4, 2e-3);
            gradcheck(names[i], fs[i], 2, nds, ss, -1, 1, 1e-2, 2e-4, 2e-3);   /* both broadcast */
        }
    }
}

static ft_tensor *b_scale(ft_ctx *c, ft_tensor **x) { return ft_scale(c, x[0], -1.7f); }
static ft_tensor *b_sum(ft_ctx *c, ft_tensor **x) { return ft_sum(c, x[0]); }
static ft_tensor *b_mean(ft_ctx *c, ft_tensor **x) { return ft_mean(c, x[0]); }
static ft_tensor *b_sumr(ft_ctx *c, ft_tensor **x) { return ft_sum_rows(c, x[0]); }
static ft_tensor *b_meanr(ft_ctx *c, ft_tensor **x) { return ft_mean_rows(c, x[0]); }
TEST(grad_scale_sum_mean) {
    int nd[1] = {3}; int64_t s[1][4] = {S(2, 3, 5)};
    gradcheck("scale", b_scale, 1, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("sum", b_sum, 1, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("mean", b_mean, 1, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("sum_rows", b_sumr, 1, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("mean_rows", b_meanr, 1, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
}

static ft_tensor *b_rms(ft_ctx *c, ft_tensor **x) { return ft_rmsnorm(c, x[0], x[1], 1e-5f); }
static ft_tensor *b_rms0(ft_ctx *c, ft_tensor **x) { return ft_rmsnorm(c, x[0], NULL, 1e-5f); }
static ft_tensor *b_ln(ft_ctx *c, ft_tensor **x) { return ft_layernorm(c, x[0], x[1], x[2], 1e-5f); }
static ft_tensor *b_ln0(ft_ctx *c, ft_tensor **x) { return ft_layernorm(c, x[0], NULL, NULL, 1e-5f); }
TEST(grad_norms) {
    int nd[3] = {3, 1, 1}; int64_t s[3][4] = {S(2, 3, 7), S(7), S(7)};
    gradcheck("rmsnorm", b_rms, 2, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("rmsnorm (no weight)", b_rms0, 1, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("layernorm", b_ln, 3, nd, s, -1, 1, 1e-2, 3e-4, 3e-3);
    gradcheck("layernorm (no affine)", b_ln0, 1, nd, s, -1, 1, 1e-2, 3e-4, 3e-3);
}

static const int32_t POS[12] = {0, 1, 2, 3, 7, 11, 19, 2, 5, 40, 41, 3};
static ft_tensor *b_rope_norm(ft_ctx *c, ft_tensor **x) { return ft_rope(c, x[0], POS, 2, 6, 10000.0f, FT_ROPE_NORM); }
static ft_tensor *b_rope_neox(ft_ctx *c, ft_tensor **x) { return ft_rope(c, x[0], POS, 2, 4, 500.0f, FT_ROPE_NEOX); }
/* the scaling schemes: llama3-style frequency factors with linear scaling, and YaRN */
static const float FF[3] = {1.0f, 2.5f, 8.0f};
static ft_tensor *b_rope_factors(ft_ctx *c, ft_tensor **x) {
    ft_rope_opts o; memset(&o, 0, sizeof o);
    o.n_rot = 6; o.mode = FT_ROPE_NEOX; o.base = 10000.0f; o.freq_factors = FF; o.freq_scale = 0.5f;
    return ft_rope_ext(c, x[0], POS, 2, &o);
}
static ft_tensor *b_rope_yarn(ft_ctx *c, ft_tensor **x) {
    ft_rope_opts o; memset(&o, 0, sizeof o);
    o.n_rot = 6; o.mode = FT_ROPE_NORM; o.base = 10000.0f; o.freq_scale = 0.25f; o.ext_factor = 1.0f; o.n_ctx_orig = 16; o.attn_factor = 1.1f;
    return ft_rope_ext(c, x[0], POS, 2, &o);
}
TEST(grad_rope) {
    int nd[1] = {3}; int64_t s[1][4] = {S(2, 5, 12)};
    gradcheck("rope norm", b_rope_norm, 1, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("rope neox (partial)", b_rope_neox, 1, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("rope freq factors + linear", b_rope_factors, 1, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("rope yarn", b_rope_yarn, 1, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
}

static const int32_t SEG[10] = {0, 0, 1, 1, 1, 0, 1, 1, 2, 2};
static ft_tensor *attn(ft_ctx *c, ft_tensor **x, int causal, int prefix, const int32_t *seg, int64_t qoff) {
    ft_attn_opts o; memset(&o, 0, sizeof o);
    o.n_head = 4; o.n_head_kv = 2; o.causal = causal; o.seg = seg; o.q_offset = qoff;
    if (prefix) { o.prefix_k = x[3]; o.prefix_v = x[4]; }
    return ft_attention(c, x[0], x[1], x[2], &o);
}
static ft_tensor *b_attn_c(ft_ctx *c, ft_tensor **x) { return attn(c, x, 1, 0, NULL, 0); }
static ft_tensor *b_attn_cp(ft_ctx *c, ft_tensor **x) { return attn(c, x, 1, 1, NULL, 0); }
static ft_tensor *b_attn_full(ft_ctx *c, ft_tensor **x) { return attn(c, x, 0, 1, NULL, 0); }
static ft_tensor *b_attn_seg(ft_ctx *c, ft_tensor **x) { return attn(c, x, 1, 0, SEG, 0); }
static ft_tensor *b_attn_kv(ft_ctx *c, ft_tensor **x) { return attn(c, x, 1, 1, NULL, 4); }
static ft_tensor *b_attn_window(ft_ctx *c, ft_tensor **x) {        /* sliding window of 2, a cache offset */
    ft_attn_opts o; memset(&o, 0, sizeof o);
    o.n_head = 4; o.n_head_kv = 2; o.causal = 1; o.q_offset = 4; o.window = 2; o.prefix_k = x[3]; o.prefix_v = x[4];
    return ft_attention(c, x[0], x[1], x[2], &o);
}
static ft_tensor *b_attn_window_seg(ft_ctx *c, ft_tensor **x) {
    ft_attn_opts o; memset(&o, 0, sizeof o);
    o.n_head = 4; o.n_head_kv = 2; o.causal = 1; o.window = 3; o.seg = SEG;
    return ft_attention(c, x[0], x[1], x[2], &o);
}
TEST(grad_attention) {
    int nd[5] = {3, 3, 3, 2, 2};
    int64_t s[5][4] = {S(2, 5, 24), S(2, 5, 12), S(2, 5, 12), S(3, 12), S(3, 12)};
    int64_t skv[5][4] = {S(2, 3, 24), S(2, 7, 12), S(2, 7, 12), S(2, 12), S(2, 12)};
    gradcheck("attention causal", b_attn_c, 3, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("attention causal + prefix", b_attn_cp, 5, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("attention full + prefix", b_attn_full, 5, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("attention segments", b_attn_seg, 3, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("attention kv offset + prefix", b_attn_kv, 5, nd, skv, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("attention sliding window + kv offset + prefix", b_attn_window, 5, nd, skv, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("attention sliding window + segments", b_attn_window_seg, 3, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
}

static ft_tensor *b_softmax(ft_ctx *c, ft_tensor **x) { return ft_softmax(c, x[0]); }
static ft_tensor *b_lsm(ft_ctx *c, ft_tensor **x) { return ft_log_softmax(c, x[0]); }
TEST(grad_softmax) {
    int nd[1] = {2}; int64_t s[1][4] = {S(3, 37)};
    gradcheck("softmax", b_softmax, 1, nd, s, -3, 3, 1e-2, 2e-4, 2e-3);
    gradcheck("log_softmax", b_lsm, 1, nd, s, -3, 3, 1e-2, 2e-4, 2e-3);
}

static ft_tensor *b_silu(ft_ctx *c, ft_tensor **x) { return ft_silu(c, x[0]); }
static ft_tensor *b_gelu(ft_ctx *c, ft_tensor **x) { return ft_gelu(c, x[0]); }
static ft_tensor *b_gelu_tanh(ft_ctx *c, ft_tensor **x) { return ft_gelu_tanh(c, x[0]); }
static ft_tensor *b_tanh(ft_ctx *c, ft_tensor **x) { return ft_tanh(c, x[0]); }
static ft_tensor *b_relu(ft_ctx *c, ft_tensor **x) { return ft_relu(c, x[0]); }
static ft_tensor *b_sigm(ft_ctx *c, ft_tensor **x) { return ft_sigmoid(c, x[0]); }
static ft_tensor *b_lsig(ft_ctx *c, ft_tensor **x) { return ft_logsigmoid(c, x[0]); }
static ft_tensor *b_exp(ft_ctx *c, ft_tensor **x) { return ft_exp(c, x[0]); }
static ft_tensor *b_log(ft_ctx *c, ft_tensor **x) { return ft_log(c, x[0]); }
static ft_tensor *b_clamp(ft_ctx *c, ft_tensor **x) { return ft_clamp(c, x[0], -0.5f, 0.6f); }
static ft_tensor *b_log1mexp(ft_ctx *c, ft_tensor **x) { return ft_log1mexp(c, x[0]); }
TEST(grad_unary) {
    int nd[1] = {2}; int64_t s[1][4] = {S(3, 29)};
    gradcheck("silu", b_silu, 1, nd, s, -4, 4, 1e-2, 2e-4, 2e-3);
    gradcheck("gelu", b_gelu, 1, nd, s, -4, 4, 1e-2, 2e-4, 2e-3);
    gradcheck("gelu_tanh", b_gelu_tanh, 1, nd, s, -4, 4, 1e-2, 2e-4, 2e-3);
    gradcheck("tanh", b_tanh, 1, nd, s, -3, 3, 1e-2, 2e-4, 2e-3);
    gradcheck("relu", b_relu, 1, nd, s, -3, 3, 1e-3, 2e-4, 2e-3);
    gradcheck("sigmoid", b_sigm, 1, nd, s, -6, 6, 1e-2, 2e-4, 2e-3);
    gradcheck("logsigmoid", b_lsig, 1, nd, s, -20, 20, 1e-2, 2e-4, 2e-3);
    gradcheck("exp", b_exp, 1, nd, s, -3, 2, 1e-2, 2e-4, 2e-3);
    gradcheck("log", b_log, 1, nd, s, 0.3f, 5, 1e-3, 2e-4, 2e-3);
    gradcheck("clamp", b_clamp, 1, nd, s, -2, 2, 1e-3, 2e-4, 2e-3);
    gradcheck("log1mexp", b_log1mexp, 1, nd, s, -4, -0.05f, 1e-3, 2e-4, 2e-3);
}

static ft_tensor *b_swiglu(ft_ctx *c, ft_tensor **x) { return ft_swiglu(c, x[0], x[1]); }
static const int32_t GRAD_IDS[7] = {3, 0, 4, 3, 1, 4, 4};
static ft_tensor *b_emb(ft_ctx *c, ft_tensor **x) { return ft_embedding(c, x[0], GRAD_IDS, 7); }
static const int32_t TGT[6] = {3, -100, 0, 10, 10, 7};
static ft_tensor *b_xent(ft_ctx *c, ft_tensor **x) { return ft_cross_entropy(c, x[0], TGT, -100); }
static ft_tensor *b_logprob(ft_ctx *c, ft_tensor **x) { return ft_logprob(c, x[0], TGT, -100); }
TEST(grad_swiglu_embedding_losses) {
    int nd[2] = {2, 2}; int64_t s[2][4] = {S(3, 11), S(3, 11)}, se[1][4] = {S(5, 6)}, sx[1][4] = {S(6, 11)};
    gradcheck("swiglu", b_swiglu, 2, nd, s, -3, 3, 1e-2, 2e-4, 2e-3);
    gradcheck("embedding", b_emb, 1, nd, se, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("cross_entropy", b_xent, 1, nd, sx, -3, 3, 1e-2, 2e-4, 2e-3);
    gradcheck("logprob", b_logprob, 1, nd, sx, -3, 3, 1e-2, 2e-4, 2e-3);
}

static ft_tensor *b_where(ft_ctx *c, ft_tensor **x) {
    ft_tensor *cond = ft_tensor_2d(c, 3, 9); int64_t i;
    for (i = 0; i < 27; i++) ((float *)cond->data)[i] = (float)(i % 3 == 0);
    return ft_where(c, cond, x[0], x[1]);
}
static ft_tensor *b_dropout(ft_ctx *c, ft_tensor **x) { ft_rng_seed(ft_ctx_rng(c), 99); return ft_dropout(c, x[0], 0.3f); }
static ft_tensor *b_concat0(ft_ctx *c, ft_tensor **x) { return ft_concat(c, x[0], x[1], 0); }
static ft_tensor *b_concat1(ft_ctx *c, ft_tensor **x) { return ft_concat(c, x[0], x[1], 1); }
static ft_tensor *b_slice(ft_ctx *c, ft_tensor **x) { return ft_slice(c, x[0], 1, 2, 5); }
static ft_tensor *b_reshape(ft_ctx *c, ft_tensor **x) {
    int64_t s[2] = {9, 3};
    ft_tensor *r = ft_reshape(c, ft_tanh(c, x[0]), 2, s);
    ft_tensor *v = ft_view_rows(c, x[0], 1, 2);
    return ft_add(c, ft_mul(c, r, r), ft_sum(c, ft_exp(c, v)));
}
/* three experts, three tokens, two slots each: expert 0 has tokens 0, 1; expert 1 tokens 0, 2;
   expert 2 tokens 1, 2 */
static ft_tensor *b_moe(ft_ctx *c, ft_tensor **x) {
    static const int32_t sel[6] = {0, 1, 0, 2, 1, 2}, row[6] = {0, 0, 1, 0, 1, 1};
    ft_tensor *ys[3];
    ys[0] = x[0]; ys[1] = ft_tanh(c, x[1]); ys[2] = x[2];
    return ft_moe_combine(c, ys, 3, sel, row, ft_softmax(c, x[3]));
}
/* the head + cross-entropy in chunks: the mean loss, soft-capped, and per-token log-probs */
static const int32_t LXT[5] = {2, -100, 4, 0, 1};
static ft_tensor *b_lxent(ft_ctx *c, ft_tensor **x) { return ft_linear_cross_entropy(c, x[0], x[1], LXT, -100, 0.0f, 0); }
static ft_tensor *b_lxent_cap(ft_ctx *c, ft_tensor **x) { return ft_linear_cross_entropy(c, x[0], x[1], LXT, -100, 1.5f, 0); }
static ft_tensor *b_lxent_tok(ft_ctx *c, ft_tensor **x) { return ft_mul(c, ft_linear_cross_entropy(c, x[0], x[1], LXT, -100, 0.0f, 1), x[2]); }
/* a frozen head (7, 6), as every PEFT method has: the forward makes h's gradient, backward scales it */
static ft_tensor *frozen_head(ft_ctx *c) {
    ft_tensor *W = ft_tensor_2d(c, 7, 6); int i;
    if (W) for (i = 0; i < 42; i++) ((float *)W->data)[i] = (float)((i * 29) % 17) / 8.0f - 1.0f;
    return W;
}
static ft_tensor *b_lxent_fz(ft_ctx *c, ft_tensor **x) { return ft_linear_cross_entropy(c, x[0], frozen_head(c), LXT, -100, 0.0f, 0); }
static ft_tensor *b_lxent_fz_cap(ft_ctx *c, ft_tensor **x) { return ft_linear_cross_entropy(c, x[0], frozen_head(c), LXT, -100, 1.5f, 0); }
static ft_tensor *b_lxent_fz_tok(ft_ctx *c, ft_tensor **x) { return ft_mul(c, ft_linear_cross_entropy(c, x[0], frozen_head(c), LXT, -100, 0.0f, 1), x[1]); }
TEST(grad_linear_cross_entropy) {
    int nd[3] = {2, 2, 1}; int64_t s[3][4] = {S(5, 6), S(7, 6), S(5)};
    int ndf[2] = {2, 1}; int64_t sf[2][4] = {S(5, 6), S(5)};
    gradcheck("linear_xent", b_lxent, 2, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("linear_xent soft-capped", b_lxent_cap, 2, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("linear_xent per token", b_lxent_tok, 3, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("linear_xent frozen head", b_lxent_fz, 1, ndf, sf, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("linear_xent frozen head, capped", b_lxent_fz_cap, 1, ndf, sf, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("linear_xent frozen head, per token", b_lxent_fz_tok, 2, ndf, sf, -1, 1, 1e-2, 2e-4, 2e-3);
}
TEST(grad_moe_combine) {
    int nd[4] = {2, 2, 2, 2}; int64_t s[4][4] = {S(2, 5), S(2, 5), S(2, 5), S(3, 2)};
    gradcheck("moe_combine", b_moe, 4, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
}
TEST(grad_select_and_shape) {
    int nd[2] = {2, 2};
    int64_t sw[2][4] = {S(3, 9), S(3, 9)}, sc0[2][4] = {S(3, 9), S(2, 9)}, sc1[2][4] = {S(3, 4), S(3, 9)};
    gradcheck("where", b_where, 2, nd, sw, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("dropout", b_dropout, 1, nd, sw, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("concat axis 0", b_concat0, 2, nd, sc0, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("concat axis 1", b_concat1, 2, nd, sc1, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("slice", b_slice, 1, nd, sw, -1, 1, 1e-2, 2e-4, 2e-3);
    gradcheck("reshape + row view", b_reshape, 1, nd, sw, -1, 1, 1e-2, 2e-4, 2e-3);
}

/* a whole llama-style block: every op together, as the model will use them */
static ft_tensor *b_block(ft_ctx *c, ft_tensor **x) {
    static const int32_t pos[8] = {0, 1, 2, 3, 0, 1, 2, 3}, ids[8] = {1, 2, 3, 0, 2, 2, 1, 0};
    static const int32_t tgt[8] = {2, 3, 0, -100, 2, 1, 0, 3};
    int64_t s3[3] = {2, 4, 8};
    ft_attn_opts o; ft_tensor *h, *n, *q, *k, *v, *a, *g, *u, *logits;
    memset(&o, 0, sizeof o); o.n_head = 2; o.n_head_kv = 1; o.causal = 1;
    h = ft_embedding(c, x[0], ids, 8);                           /* (8, 8) */
    n = ft_reshape(c, ft_rmsnorm(c, h, x[1], 1e-5f), 3, s3);       /* (2, 4, 8) */
    q = ft_rope(c, ft_matmul(c, n, x[2], 0, 1), pos, 2, 4, 10000.0f, FT_ROPE_NORM);
    k = ft_rope(c, ft_matmul(c, n, x[3], 0, 1), pos, 1, 4, 10000.0f, FT_ROPE_NORM);
    v = ft_matmul(c, n, x[4], 0, 1);
    a = ft_add(c, ft_reshape(c, h, 3, s3), ft_attention(c, q, k, v, &o));
    g = ft_matmul(c, a, x[5], 0, 1); u = ft_matmul(c, a, x[6], 0, 1);
    a = ft_add(c, a, ft_matmul(c, ft_swiglu(c, g, u), x[7], 0, 1));
    {
        int64_t s2[2] = {8, 8};
        logits = ft_matmul(c, ft_reshape(c, a, 2, s2), x[0], 0, 1);   /* tied head (8, 4) */
    }
    return ft_cross_entropy(c, logits, tgt, -100);
}
TEST(grad_llama_block) {
    int nd[8] = {2, 1, 2, 2, 2, 2, 2, 2};
    int64_t s[8][4] = {S(4, 8), S(8), S(8, 8), S(4, 8), S(4, 8), S(12, 8), S(12, 8), S(8, 12)};
    gradcheck("llama block", b_block, 8, nd, s, -0.8f, 0.8f, 1e-2, 3e-4, 3e-3);
}

/* checkpointed segments, one nested in another: x + tanh(x W^T) * dropout(e), where e = exp(in2)
   comes from outside the segments and needs a gradient (it is no parameter) */
static ft_tensor *seg_inner(ft_ctx *c, void *user, ft_tensor *x) {
    ft_tensor **p = (ft_tensor **)user;
    return ft_add(c, x, ft_mul(c, ft_tanh(c, ft_matmul(c, x, p[0], 0, 1)), ft_dropout(c, p[1], 0.3f)));
}
static ft_tensor *seg_outer(ft_ctx *c, void *user, ft_tensor *x) {
    ft_tensor *h = ft_checkpoint(c, seg_inner, user, 2 * sizeof(ft_tensor *), x);
    return ft_checkpoint(c, seg_inner, user, 2 * sizeof(ft_tensor *), ft_silu(c, h));
}
static ft_tensor *b_ckpt(ft_ctx *c, ft_tensor **x) {
    ft_tensor *p[2];
    ft_rng_seed(ft_ctx_rng(c), 7);
    p[0] = x[1]; p[1] = ft_exp(c, x[2]);
    return ft_mul(c, ft_checkpoint(c, seg_outer, p, sizeof p, ft_scale(c, x[0], 1.5f)), x[0]);
}
TEST(grad_checkpoint) {
    int nd[3] = {2, 2, 2}; int64_t s[3][4] = {S(3, 5), S(5, 5), S(3, 5)};
    gradcheck("checkpoint (nested, outside input)", b_ckpt, 3, nd, s, -1, 1, 1e-2, 2e-4, 2e-3);
}

/* ft__done gives a forward output back only when no recorded backward reads it; a given-back
   buffer serves the next tensor of its size; the gradients do not change; backward refuses a
   node that reads a given-back tensor */
TEST(forward_outputs_given_back) {
    ft_params *P; ft_tensor *x, *W, *a, *b, *t, *z, *loss; float *g0; int run;
    int64_t sx[2] = {8, 6}, sw[2] = {5, 6};
    ft_params_init(&P);
    x = ft_params_add(P, "x", 2, sx); W = ft_params_add(P, "W", 2, sw);
    ft_params_alloc(P);
    ft_rng_seed(ft_ctx_rng(C), 7);
    ft_params_init_uniform(P, x, -1, 1, C); ft_params_init_uniform(P, W, -1, 1, C);
    g0 = (float *)malloc(48 * sizeof(float));
    for (run = 0; run < 2; run++) {
        ft_params_zero_grad(P);
        ft_ctx_reset(C);
        a = ft_matmul(C, x, W, 0, 1);                    /* (8, 5): matmul's backward reads x, W only */
        b = ft_scale(C, a, 2.0f);                        /* scale reads nothing */
        t = ft_tanh(C, b);                               /* tanh's backward reads its output */
        if (run) {
            ft__done(C, a);
            ft__done(C, t);
            CHECK((a->flags & FT__DATA_GONE) && !(t->flags & FT__DATA_GONE), "a given back, tanh's output kept");
            z = ft_tensor_2d(C, 8, 5);
            CHECK(z && z->data == a->data, "the next (8, 5) tensor takes a's buffer");
            ft__done(C, x);                               /* a parameter: never */
            CHECK(!(x->flags & FT__DATA_GONE), "a parameter was given back");
        }
        loss = ft_sum(C, ft_mul(C, t, t));
        CHECK_OK(ft_backward(C, loss));
        if (!run) memcpy(g0, x->grad, 48 * sizeof(float));
        else CHECK(memcmp(g0, x->grad, 48 * sizeof(float)) == 0, "giving a back changed the gradient");
    }
    ft_ctx_reset(C);                                     /* a given-back input that backward reads */
    a = ft_matmul(C, x, W, 0, 1);
    t = ft_tanh(C, a);
    loss = ft_sum(C, t);
    t->flags |= FT__DATA_GONE;
    CHECK(ft_backward(C, loss) == FT_ERR_STATE, "backward read a given-back tensor: %s", ft_last_error());
    free(g0); ft_params_free(P);
}

/* SwiGLU's and RMSNorm's outputs given back in the forward and made again for the backward of
   the projections that read them (ft__done_remat): a LoRA step of a tiny model (every LoRA
   weight random, dropout 0.1) gives the loss and gradients of keeping them, bit for bit, with
   and without checkpointing, and the arena peaks lower by more than two layers' SwiGLU outputs */
TEST(outputs_made_again_in_backward) {
    ft_model *m = NULL; ft_peft *p = NULL; ft_params *P; ft_lora_opts lo; ft_batch b;
    int32_t ids[2 * 16], tgt[2 * 16]; int run, i, k; float loss[3]; size_t peak[3]; float *g[3]; int64_t n;
    tiny_layers = 4;                         /* the last layer's output is made again while others are gone */
    CHECK(tiny_model_write("build/remat_tiny.gguf", FT_TYPE_F32, 3), "tiny model");
    tiny_layers = TINY_L;
    CHECK_OK(ft_model_load(&m, "build/remat_tiny.gguf", NULL));
    if (!m) return;
    memset(&lo, 0, sizeof lo); lo.r = 4; lo.alpha = 8; lo.dropout = 0.1f; lo.targets = FT_TARGET_ALL_LINEAR; lo.seed = 1;
    CHECK_OK(ft_lora_attach(&p, m, &lo));
    if (!p) { ft_model_free(m); return; }
    P = ft_peft_params(p);
    ft_rng_seed(ft_ctx_rng(C), 3);
    for (k = 0; k < ft_params_count(P); k++) ft_params_init_uniform(P, ft_params_get(P, k), -0.2f, 0.2f, C);
    for (i = 0; i < 32; i++) { ids[i] = (i * 7 + 3) % TINY_V; tgt[i] = (i * 5 + 1) % TINY_V; }
    memset(&b, 0, sizeof b); b.B = 2; b.T = 16; b.ids = ids;
    n = 0;
    for (k = 0; k < ft_params_count(P); k++) n += ft_numel(ft_params_get(P, k));
    for (run = 0; run < 3; run++) {
        ft_tensor *l; int64_t o = 0;
        C->no_remat = run == 0;
        ft_ctx_set_checkpointing(C, run == 2);
        ft_params_zero_grad(P);
        ft_rng_seed(ft_ctx_rng(C), 5);                      /* the same dropout masks */
        ft_ctx_reset(C);
        l = ft_model_loss(C, m, ft_model_hidden(C, m, &b), tgt, 0);
        CHECK(l != NULL, "run %d: forward: %s", run, ft_last_error());
        if (!l) break;
        CHECK_OK(ft_backward(C, l));
        loss[run] = ((float *)l->data)[0];
        peak[run] = ft_ctx_arena_peak(C);
        g[run] = (float *)malloc((size_t)n * 4);
        for (k = 0; k < ft_params_count(P); k++) {
            ft_tensor *t = ft_params_get(P, k);
            memcpy(g[run] + o, t->grad, (size_t)ft_numel(t) * 4);
            o += ft_numel(t);
        }
    }
    C->no_remat = 0;
    ft_ctx_set_checkpointing(C, 0);
    if (run == 3) {
        printf("    loss %.6f; arena peak %zu bytes keeping the outputs, %zu making them again (%zu with checkpointing)\n",
               loss[0], peak[0], peak[1], peak[2]);
        CHECK(loss[1] == loss[0] && loss[2] == loss[0], "loss %.9g / %.9g / %.9g", loss[0], loss[1], loss[2]);
        CHECK(memcmp(g[0], g[1], (size_t)n * 4) == 0, "the gradients differ when the outputs are made again");
        CHECK(memcmp(g[0], g[2], (size_t)n * 4) == 0, "... and with checkpointing");
        CHECK(peak[1] + (size_t)(2 * 2 * 16 * TINY_F * 4) <= peak[0], "arena peak %zu, keeping %zu: not 2 of the 4 outputs less", peak[1], peak[0]);
    }
    for (i = 0; i < run; i++) free(g[i]);
    ft_peft_free(p); ft_model_free(m);
    remove("build/remat_tiny.gguf");
}

TEST(every_op_has_a_gradient_check) {
    int op;
    for (op = 1; op < FT_OP_COUNT; op++)
        CHECK(seen[op], "op %s has no finite-difference gradient check", ft_op_name((ft_op)op));
}

FT_TEST_MAIN(test_grad) {
    ft_ctx_opts o; memset(&o, 0, sizeof o); o.n_threads = 2;
    if (ft_ctx_init(&C, &o) != FT_OK) { printf("ctx: %s\n", ft_last_error()); return 1; }
    RUN(grad_matmul);
    RUN(grad_lora_linear);
    RUN(grad_binary_broadcast);
    RUN(grad_scale_sum_mean);
    RUN(grad_norms);
    RUN(grad_rope);
    RUN(grad_attention);
    RUN(grad_softmax);
    RUN(grad_unary);
    RUN(grad_swiglu_embedding_losses);
    RUN(grad_select_and_shape);
    RUN(grad_moe_combine);
    RUN(grad_linear_cross_entropy);
    RUN(grad_llama_block);
    RUN(grad_checkpoint);
    RUN(forward_outputs_given_back);
    RUN(outputs_made_again_in_backward);
    RUN(every_op_has_a_gradient_check);
    ft_ctx_free(C);
    return ft_test_summary("test_grad");
}
