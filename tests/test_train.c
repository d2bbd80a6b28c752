/* test_train.c - learning-rate schedules against Hugging Face's formulas, checkpoints that
   resume a run bit for bit, and the SVG plot. */
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"

static const char *P32 = "build/tiny_train.gguf";
static ft_ctx *CTX;
static const int32_t IDS[16] = {1, 5, 63, 7, 7, 0, 22, 41, 9, 3, 3, 17, 60, 2, 11, 8};

TEST(schedules) {
    /* get_linear_schedule_with_warmup / get_cosine_schedule_with_warmup, lr 1, warmup 10, 110 steps */
    CHECK(ft_lr_at(FT_SCHED_LINEAR, 1, 0, 10, 110, 0) == 0.0f, "warmup starts at 0");
    CHECK(fabsf(ft_lr_at(FT_SCHED_LINEAR, 1, 5, 10, 110, 0) - 0.5f) < 1e-7f, "half way up");
    CHECK(fabsf(ft_lr_at(FT_SCHED_LINEAR, 1, 60, 10, 110, 0) - 0.5f) < 1e-7f, "linear half way down");
    CHECK(ft_lr_at(FT_SCHED_LINEAR, 1, 110, 10, 110, 0) == 0.0f, "linear ends at 0");
    CHECK(fabsf(ft_lr_at(FT_SCHED_COSINE, 1, 60, 10, 110, 0) - 0.5f) < 1e-6f, "cosine half way");
    CHECK(fabsf(ft_lr_at(FT_SCHED_COSINE, 1, 35, 10, 110, 0) - (float)(0.5 * (1 + cos(3.14159265358979 * 0.25)))) < 1e-6f, "cosine quarter");
    CHECK(fabsf(ft_lr_at(FT_SCHED_COSINE, 2, 110, 0, 110, 0.1f) - 0.2f) < 1e-6f, "cosine to min_ratio");
    CHECK(ft_lr_at(FT_SCHED_CONSTANT, 3, 1000, 10, 110, 0) == 3.0f, "constant");
}

/* n steps of LoRA + AdamW on the tiny model with dropout (uses the RNG); losses into out */
static void run(ft_model *m, ft_peft *p, ft_optim *o, int from, int to, float *out) {
    int s; int32_t tgt[16];
    for (s = 0; s < 15; s++) tgt[s] = IDS[s + 1];
    tgt[15] = -100;
    for (s = from; s < to; s++) {
        ft_batch b; ft_tensor *loss;
        memset(&b, 0, sizeof b); b.B = 1; b.T = 16; b.ids = IDS;
        ft_ctx_reset(CTX);
        ft_params_zero_grad(ft_peft_params(p));
        loss = ft_cross_entropy(CTX, ft_model_forward(CTX, m, &b), tgt, -100);
        ft_backward(CTX, loss);
        out[s] = ((float *)loss->data)[0];
        ft_optim_step(o, ft_lr_at(FT_SCHED_COSINE, 5e-3f, s, 2, 10, 0));
    }
}

TEST(resume_is_bit_identical) {
    ft_model *m; ft_peft *p; ft_optim *o; ft_lora_opts lo; ft_optim_opts oo; float a[10], b[10]; ft_train_state st;
    int s;
    memset(&lo, 0, sizeof lo); lo.r = 4; lo.dropout = 0.1f;
    memset(&oo, 0, sizeof oo); oo.weight_decay = 0.01f;
    /* uninterrupted */
    CHECK_OK(ft_model_load(&m, P32, NULL));
    ft_lora_attach(&p, m, &lo); ft_optim_init(&o, ft_peft_params(p), &oo);
    ft_rng_seed(ft_ctx_rng(CTX), 5);
    run(m, p, o, 0, 10, a);
    ft_optim_free(o); ft_peft_free(p);
    /* 4 steps, checkpoint, a fresh adapter and optimizer, resume */
    ft_lora_attach(&p, m, &lo); ft_optim_init(&o, ft_peft_params(p), &oo);
    ft_rng_seed(ft_ctx_rng(CTX), 5);
    run(m, p, o, 0, 4, b);
    memset(&st, 0, sizeof st); st.step = 4; st.data_seed = 77;
    CHECK_OK(ft_checkpoint_save("build/ckpt.gguf", ft_peft_params(p), o, ft_ctx_rng(CTX), &st));
    ft_optim_free(o); ft_peft_free(p);
    ft_rng_seed(ft_ctx_rng(CTX), 12345);                     /* whatever state: the checkpoint wins */
    lo.seed = 999;                                           /* another init: overwritten */
    ft_lora_attach(&p, m, &lo); ft_optim_init(&o, ft_peft_params(p), &oo);
    CHECK_OK(ft_checkpoint_load("build/ckpt.gguf", ft_peft_params(p), o, ft_ctx_rng(CTX), &st));
    CHECK(st.step == 4 && st.data_seed == 77 && ft_optim_steps(o) == 4, "state restored");
    run(m, p, o, (int)st.step, 10, b);
    for (s = 0; s < 10; s++) CHECK(memcmp(&a[s], &b[s], 4) == 0, "step %d: %.9g vs %.9g", s, a[s], b[s]);
    CHECK(a[9] < a[0], "it learns: %.3f -> %.3f", a[0], a[9]);
    ft_optim_free(o); ft_peft_free(p);
    /* a checkpoint of another shape is refused without touching anything */
    lo.r = 8;
    ft_lora_attach(&p, m, &lo); ft_optim_init(&o, ft_peft_params(p), &oo);
    CHECK(ft_checkpoint_load("build/ckpt.gguf", ft_peft_params(p), o, ft_ctx_rng(CTX), &st) == FT_ERR_SHAPE, "rank mismatch: %s", ft_last_error());
    CHECK(ft_checkpoint_load(P32, ft_peft_params(p), o, ft_ctx_rng(CTX), &st) == FT_ERR_FORMAT, "a model is not a checkpoint");
    ft_optim_free(o); ft_peft_free(p); ft_model_free(m);
    remove("build/ckpt.gguf");
}


/* two documents packed in one row (own positions, attention kept inside each) give the logits
   of each document run alone */
TEST(packing_keeps_documents_apart) {
    ft_model *m; ft_batch b; ft_tensor *y; static float packed[16 * TINY_V]; int32_t pos[16], seg[16]; int i; double worst = 0;
    CHECK_OK(ft_model_load(&m, P32, NULL));
    for (i = 0; i < 16; i++) { pos[i] = i < 7 ? i : i - 7; seg[i] = i < 7 ? 0 : 1; }
    memset(&b, 0, sizeof b); b.B = 1; b.T = 16; b.ids = IDS; b.pos = pos; b.seg = seg;
    ft_ctx_reset(CTX);
    y = ft_model_forward(CTX, m, &b);
    memcpy(packed, y->data, sizeof packed);
    ft_ctx_reset(CTX);
    b.T = 7; b.pos = NULL; b.seg = NULL;
    y = ft_model_forward(CTX, m, &b);
    for (i = 0; i < 7 * TINY_V; i++) worst = fmax(worst, fabs(packed[i] - ((float *)y->data)[i]));
    ft_ctx_reset(CTX);
    b.T = 9; b.ids = IDS + 7;
    y = ft_model_forward(CTX, m, &b);
    for (i = 0; i < 9 * TINY_V; i++) worst = fmax(worst, fabs(packed[7 * TINY_V + i] - ((float *)y->data)[i]));
    CHECK(worst < 1e-5, "packed vs alone: %.3g", worst);
    ft_model_free(m);
}

/* every enum's names round-trip, and every row of the objective table is whole */
TEST(names_and_the_objective_table) {
    int e, v, n = 0;
    for (e = 0; e < FT_ENUM_COUNT; e++)
        for (v = 0; v < ft_enum_count((ft_enum)e); v++) {
            const char *name = ft_enum_name((ft_enum)e, v); int back = -1;
            if (!name) continue;
            CHECK(ft_enum_parse((ft_enum)e, name, &back) && back == v, "enum %d value %d (%s) parses back to %d", e, v, name, back);
            n++;
        }
    CHECK(n > 80 && !ft_enum_name(FT_ENUM_SCHED, 3) && !ft_enum_parse(FT_ENUM_SCHED, "Cosine", &v), "%d names; out of range and unknown names refused", n);
    for (v = 0; v < FT_OBJ_COUNT; v++) {
        const ft_objective_def *d = ft_objective_get((ft_objective)v); ft_objective back; ft_train_opts o = ft_train_opts_default((ft_objective)v);
        CHECK(d && d->name && d->about && d->metrics, "row %d is filled", v);
        if (!d) continue;
        CHECK(ft_objective_parse(d->name, &back) && back == (ft_objective)v, "%s parses back", d->name);
        CHECK((d->kind == FT_KIND_PAIRS) == (d->pair_loss != NULL), "%s: a pair loss exactly when it compares pairs", d->name);
        CHECK(d->scalar_head == (v == FT_OBJ_RM || v == FT_OBJ_PPO), "%s: a scalar head for rm's reward and PPO's value only", d->name);
        CHECK(o.objective == (ft_objective)v && o.lr > 0 && o.lr == d->lr && o.beta == d->beta && o.batch > 0 && o.grad_accum == 1,
              "%s: its defaults (lr %g, beta %g)", d->name, (double)o.lr, (double)o.beta);
    }
    CHECK(!ft_objective_get(FT_OBJ_COUNT) && ft_train_opts_default(FT_OBJ_CPT).pack && !ft_train_opts_default(FT_OBJ_SFT).pack, "cpt packs, sft not");
    CHECK(ft_train_opts_default(FT_OBJ_SIMPO).beta == 2.0f && ft_train_opts_default(FT_OBJ_SIMPO).gamma == 0.5f, "SimPO's beta 2, gamma 0.5 (TRL)");
    CHECK(ft_train_opts_default(FT_OBJ_PPO).rl.group == 1 && ft_train_opts_default(FT_OBJ_PPO).rl.iterations == 4, "PPO: 1 completion per prompt, 4 epochs");
}

/* bf16 compute (ft_ctx_opts.compute): the GEMMs' inputs rounded to bf16, sums in f32, the adapter
   and AdamW in f32. A LoRA step on the tiny model (B random, so that every gradient is non-zero):
   the loss within 0.5% of f32's and every gradient within 5% of its largest value (bf16 keeps 8
   bits: 2^-9 relative per input; measured: 0.2% and 3.1%); then 20 AdamW steps from the same
   start on each: the curves agree within 1% of the first loss at every step (7.8 -> 0.02) */
static double lora_loss_and_grads(ft_ctx *ctx, ft_model *m, ft_peft *p, float *grads) {
    ft_params *P = ft_peft_params(p); ft_batch b; ft_tensor *loss; int32_t tgt[16]; int s, i; int64_t off = 0;
    for (s = 0; s < 15; s++) tgt[s] = IDS[s + 1];
    tgt[15] = -100;
    memset(&b, 0, sizeof b); b.B = 1; b.T = 16; b.ids = IDS;
    ft_ctx_reset(ctx);
    ft_params_zero_grad(P);
    loss = ft_cross_entropy(ctx, ft_model_forward(ctx, m, &b), tgt, -100);
    ft_backward(ctx, loss);
    for (i = 0; grads && i < ft_params_count(P); i++) {
        ft_tensor *t = ft_params_get(P, i);
        memcpy(grads + off, t->grad, (size_t)ft_numel(t) * 4);
        off += ft_numel(t);
    }
    return ((float *)loss->data)[0];
}
static void params_copy(ft_params *P, float *buf, int to_params) {   /* every tensor's values, in order */
    int k; int64_t off = 0;
    for (k = 0; k < ft_params_count(P); k++) {
        ft_tensor *t = ft_params_get(P, k); size_t bytes = (size_t)ft_numel(t) * 4;
        if (to_params) { memcpy(t->data, buf + off, bytes); t->version++; }
        else memcpy(buf + off, t->data, bytes);
        off += ft_numel(t);
    }
}
TEST(bf16_compute_tracks_f32) {
    ft_model *m; ft_peft *p; ft_lora_opts lo; ft_ctx *c16; ft_ctx_opts o; ft_params *P; ft_optim *opt; ft_rng r;
    float *g32, *g16, *start; double l32, l16, worst = 0, curve = 0; int64_t i, off = 0, n; int k, s;
    memset(&o, 0, sizeof o); o.n_threads = 2; o.compute = FT_COMPUTE_BF16;
    CHECK_OK(ft_ctx_init(&c16, &o));
    CHECK(ft_ctx_compute(c16) == FT_COMPUTE_BF16 && ft_ctx_compute(CTX) == FT_COMPUTE_F32, "the contexts' compute");
    CHECK_OK(ft_model_load(&m, P32, NULL));
    memset(&lo, 0, sizeof lo); lo.r = 4; lo.alpha = 8;
    CHECK_OK(ft_lora_attach(&p, m, &lo));
    P = ft_peft_params(p);
    n = ft_params_numel(P);
    ft_rng_seed(&r, 7);
    for (k = 0; k < ft_params_count(P); k++) {
        ft_tensor *t = ft_params_get(P, k);
        for (i = 0; i < ft_numel(t); i++) ((float *)t->data)[i] = 0.2f * (2 * ft_rng_uniform(&r) - 1);
    }
    g32 = (float *)malloc((size_t)n * 4); g16 = (float *)malloc((size_t)n * 4); start = (float *)malloc((size_t)n * 4);
    params_copy(P, start, 0);
    l32 = lora_loss_and_grads(CTX, m, p, g32);
    l16 = lora_loss_and_grads(c16, m, p, g16);
    for (k = 0; k < ft_params_count(P); k++) {
        int64_t nk = ft_numel(ft_params_get(P, k)); double big = 0, err = 0;
        for (i = 0; i < nk; i++) { big = fmax(big, fabs(g32[off + i])); err = fmax(err, fabs(g16[off + i] - g32[off + i])); }
        worst = fmax(worst, big > 0 ? err / big : 0);
        off += nk;
    }
    CHECK(fabs(l16 - l32) <= 0.005 * fabs(l32), "loss %.6f in bf16, %.6f in f32", l16, l32);
    CHECK(l16 != l32, "bf16 changed the numbers (else the context did not use it)");
    CHECK(worst <= 0.05, "a gradient is off by %.2f%% of its largest value", 100 * worst);
    {
        double c[2][20];
        for (k = 0; k < 2; k++) {
            params_copy(P, start, 1);
            CHECK_OK(ft_optim_init(&opt, P, NULL));
            for (s = 0; s < 20; s++) {
                c[k][s] = lora_loss_and_grads(k ? c16 : CTX, m, p, NULL);
                ft_optim_step(opt, 1e-2f);
            }
            ft_optim_free(opt);
        }
        for (s = 0; s < 20; s++) curve = fmax(curve, fabs(c[1][s] - c[0][s]) / fabs(c[0][0]));
        CHECK(curve <= 0.01, "the bf16 curve is off the f32 one by %.2f%% of the first loss", 100 * curve);
        printf("    bf16 (%s): loss %.5f vs %.5f, gradients within %.2f%% of their largest; 20 AdamW steps %.4f -> %.4f (f32 %.4f -> %.4f), within %.2f%% of the first\n",
               ft_compute_bf16_native() ? "AVX512-BF16" : "rounded inputs", l16, l32, 100 * worst, c[1][0], c[1][19], c[0][0], c[0][19], 100 * curve);
    }
    free(g32); free(g16); free(start);
    ft_peft_free(p); ft_model_free(m); ft_ctx_free(c16);
}

TEST(svg_plot) {
    double x[5] = {0, 1, 2, 3, 4}, y1[5] = {3, 2.5, 2.1, 1.9, 1.8}, y2[3] = {3.1, 2.4, 2.2}, x2[3] = {0, 2, 4};
    ft_plot_series s[2]; FILE *f; static char buf[65536]; size_t n;
    s[0].name = "train"; s[0].x = x; s[0].y = y1; s[0].n = 5;
    s[1].name = "eval"; s[1].x = x2; s[1].y = y2; s[1].n = 3;
    CHECK_OK(ft_svg_plot("build/plot.svg", "loss", "step", "loss", s, 2));
    f = fopen("build/plot.svg", "rb"); n = fread(buf, 1, sizeof buf - 1, f); fclose(f); buf[n] = 0;
    CHECK(strstr(buf, "<svg") && strstr(buf, "</svg>") && strstr(buf, "polyline") && strstr(buf, ">eval<"), "svg content");
    remove("build/plot.svg");
}

int main(void) {
    ft_ctx_opts o; memset(&o, 0, sizeof o); o.n_threads = 2;
    if (!tiny_model_write(P32, FT_TYPE_F32, 3)) { printf("cannot write the tiny model\n"); return 1; }
    ft_ctx_init(&CTX, &o);
    RUN(schedules);
    RUN(resume_is_bit_identical);
    RUN(packing_keeps_documents_apart);
    RUN(names_and_the_objective_table);
    RUN(svg_plot);
    RUN(bf16_compute_tracks_f32);
    ft_ctx_free(CTX);
    return ft_test_summary("test_train");
}
