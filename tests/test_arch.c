/* test_arch.c - every architecture's forward against the references, on tiny random models.
   tests/fixtures/arch/<name>.gguf is a randomly initialised transformers model (saved by
   save_pretrained) converted by llama.cpp's own convert_hf_to_gguf.py; <name>.txt holds, for 24
   fixed token ids, transformers' logits (float32, eager attention), its greedy continuation of
   the first 8 ids, and, where llama-cpp-python was there when the fixture was written, llama.cpp's
   logits and greedy continuation on the same GGUF (tools/ref/arch_fixtures.py writes them).
   Asserted:
     - logits within 1e-4 of the logit range of transformers' (both f32 on the same weights: the
       differences are summation order only) and of llama.cpp's when present (2e-3: its F16
       KV cache and GELU table);
     - the greedy continuation (through ft_generate and the KV cache) identical to transformers';
     - for mixture-of-experts models, the experts chosen per layer and token identical too. */
#include "../finetune.h"
#include "ft_test.h"

enum { MAXT = 64, MAXV = 512 };
typedef struct fixture {
    char name[32], arch[32]; int V, n, k, prompt;
    int32_t ids[MAXT], greedy[MAXT], lgreedy[MAXT]; int lk, lprompt;
    float *hf, *lcpp;                            /* (n, V) each, lcpp NULL when absent */
    int n_layer, n_tok, topk; int32_t *experts;  /* MoE: (n_layer, n_tok, topk) */
} fixture;

static ft_ctx *C;

static char *next_tok(char **p) {
    char *s = *p, *e;
    while (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t') s++;
    if (!*s) return NULL;
    e = s;
    while (*e && *e != ' ' && *e != '\n' && *e != '\r' && *e != '\t') e++;
    if (*e) *e++ = 0;
    *p = e;
    return s;
}
static int read_ints(char **p, int32_t *out, int n) {
    int i; char *t;
    for (i = 0; i < n; i++) { if (!(t = next_tok(p))) return 0; out[i] = (int32_t)atoi(t); }
    return 1;
}
static float *read_floats(char **p, int n) {
    float *f = (float *)malloc((size_t)n * sizeof(float)); int i; char *t;
    for (i = 0; f && i < n; i++) { if (!(t = next_tok(p))) { free(f); return NULL; } f[i] = strtof(t, NULL); }
    return f;
}
/* the .txt written by tools/ref/arch_fixtures.py (its docstring has the format) */
static int load_fixture(const char *name, fixture *fx) {
    char path[256], *buf, *p, *t; size_t len;
    memset(fx, 0, sizeof *fx);
    snprintf(fx->name, sizeof fx->name, "%s", name);
    snprintf(path, sizeof path, "tests/fixtures/arch/%s.txt", name);
    if (!(buf = (char *)ft_test_slurp(path, &len))) return 0;
    p = buf;
    while ((t = next_tok(&p)) != NULL) {
        if (!strcmp(t, "arch")) { next_tok(&p); snprintf(fx->arch, sizeof fx->arch, "%s", next_tok(&p)); }
        else if (!strcmp(t, "vocab")) fx->V = atoi(next_tok(&p));
        else if (!strcmp(t, "ids")) { fx->n = atoi(next_tok(&p)); if (fx->n > MAXT || !read_ints(&p, fx->ids, fx->n)) break; }
        else if (!strcmp(t, "hf_logits") || !strcmp(t, "lcpp_logits")) {
            int n = atoi(next_tok(&p)), V = atoi(next_tok(&p));
            float *f = n == fx->n && V == fx->V && V <= MAXV ? read_floats(&p, n * V) : NULL;
            if (!f) break;
            if (t[0] == 'h') fx->hf = f; else fx->lcpp = f;
        } else if (!strcmp(t, "hf_greedy")) {
            fx->k = atoi(next_tok(&p)); fx->prompt = atoi(next_tok(&p));
            if (fx->k > MAXT || !read_ints(&p, fx->greedy, fx->k)) break;
        } else if (!strcmp(t, "lcpp_greedy")) {
            fx->lk = atoi(next_tok(&p)); fx->lprompt = atoi(next_tok(&p));
            if (fx->lk > MAXT || !read_ints(&p, fx->lgreedy, fx->lk)) break;
        } else if (!strcmp(t, "experts")) {
            fx->n_layer = atoi(next_tok(&p)); fx->n_tok = atoi(next_tok(&p)); fx->topk = atoi(next_tok(&p));
            fx->experts = (int32_t *)malloc((size_t)(fx->n_layer * fx->n_tok * fx->topk) * sizeof(int32_t));
            if (!fx->experts || !read_ints(&p, fx->experts, fx->n_layer * fx->n_tok * fx->topk)) break;
        } else if (!strcmp(t, "end")) { free(buf); return fx->hf && fx->n > 0 && fx->k > 0; }
    }
    free(buf);
    return 0;
}
static void free_fixture(fixture *fx) { free(fx->hf); free(fx->lcpp); free(fx->experts); }

/* max |a - b| over the logit range of b */
static double rel_diff(const float *a, const float *b, int64_t n) {
    double d = 0, lo = b[0], hi = b[0]; int64_t i;
    for (i = 0; i < n; i++) { d = fmax(d, fabs((double)a[i] - b[i])); lo = fmin(lo, b[i]); hi = fmax(hi, b[i]); }
    return d / (hi - lo);
}

static void check_arch(const char *name, const char *want_arch) {
    fixture fx; ft_model *m = NULL; ft_batch b; ft_tensor *y; ft_kv_cache *kv = NULL; ft_gen_opts go; ft_rng rng;
    int32_t out[MAXT]; int64_t out_len = 0, plen; const int32_t *prompts[1]; char path[256]; int i;
    if (!load_fixture(name, &fx)) { CHECK(0, "%s: tests/fixtures/arch/%s.txt is missing or malformed", name, name); free_fixture(&fx); return; }
    snprintf(path, sizeof path, "tests/fixtures/arch/%s.gguf", name);
    CHECK_OK(ft_model_load(&m, path, NULL));
    if (!m) { free_fixture(&fx); return; }
    CHECK(!strcmp(ft_model_config_get(m)->arch_name, want_arch), "%s: arch %s", name, ft_model_config_get(m)->arch_name);
    ft_ctx_reset(C);
    memset(&b, 0, sizeof b); b.B = 1; b.T = fx.n; b.ids = fx.ids;
    y = ft_model_forward(C, m, &b);
    CHECK(y != NULL, "%s: forward: %s", name, ft_last_error());
    if (y) {
        double dh = rel_diff((const float *)y->data, fx.hf, (int64_t)fx.n * fx.V);
        printf("    %-13s max |ft - transformers| / range %.2e", name, dh);
        CHECK(dh < 1e-4, "%s: logits differ from transformers' by %.3g of the range", name, dh);
        if (fx.lcpp) {
            double dl = rel_diff((const float *)y->data, fx.lcpp, (int64_t)fx.n * fx.V);
            printf(", |ft - llama.cpp| / range %.2e", dl);
            CHECK(dl < 2e-3, "%s: logits differ from llama.cpp's by %.3g of the range", name, dl);
        }
        printf("\n");
    }
    CHECK_OK(ft_kv_cache_init(&kv, m, 1, fx.prompt + fx.k));
    memset(&go, 0, sizeof go); go.max_new = fx.k;
    ft_rng_seed(&rng, 1);
    prompts[0] = fx.ids; plen = fx.prompt;
    if (kv) CHECK_OK(ft_generate(C, m, kv, 1, prompts, &plen, &go, &rng, out, &out_len, NULL));
    CHECK(out_len == fx.k, "%s: %lld tokens generated", name, (long long)out_len);
    for (i = 0; i < fx.k && i < out_len; i++) CHECK(out[i] == fx.greedy[i], "%s: greedy token %d: %d, transformers %d", name, i, out[i], fx.greedy[i]);
    for (i = 0; fx.lk && i < fx.lk && i < out_len; i++) CHECK(out[i] == fx.lgreedy[i], "%s: greedy token %d: %d, llama.cpp %d", name, i, out[i], fx.lgreedy[i]);
    if (fx.experts) {                       /* the experts of the 24-token forward, per layer */
        int l, same = 0, total = 0; int64_t nt = 0;
        ft_ctx_reset(C);
        CHECK(ft_model_forward(C, m, &b) != NULL, "%s: forward: %s", name, ft_last_error());
        for (l = 0; l < fx.n_layer; l++) {
            const int32_t *ch = ft_model_moe_choices(m, l, &nt);
            CHECK(ch && nt == fx.n_tok, "%s: layer %d: no choices (%lld tokens)", name, l, (long long)nt);
            for (i = 0; ch && nt == fx.n_tok && i < fx.n_tok * fx.topk; i++, total++) same += ch[i] == fx.experts[l * fx.n_tok * fx.topk + i];
        }
        printf("    %-13s experts: %d of %d choices as transformers'\n", name, same, total);
        CHECK(same == total && total == fx.n_layer * fx.n_tok * fx.topk, "%s: %d of %d expert choices equal", name, same, total);
    }
    ft_kv_cache_free(kv);
    ft_model_free(m);
    free_fixture(&fx);
}

TEST(llama3_rope_frequency_factors) { check_arch("llama3", "llama"); }
TEST(llama_linear_rope_scaling) { check_arch("llama_linear", "llama"); }
TEST(llama_yarn_rope_scaling) { check_arch("llama_yarn", "llama"); }
TEST(qwen3_qk_norm_head_dim) { check_arch("qwen3", "qwen3"); }
TEST(gemma3_norms_geglu_sliding_window) { check_arch("gemma3", "gemma3"); }
TEST(phi3_fused_qkv_gate_up) { check_arch("phi3", "phi3"); }
TEST(phi3_longrope_short_factors) { check_arch("phi3_longrope", "phi3"); }
TEST(qwen3moe_experts) { check_arch("qwen3moe", "qwen3moe"); }
TEST(mixtral_experts) { check_arch("mixtral", "llama"); }
TEST(olmoe_experts) { check_arch("olmoe", "olmoe"); }

/* what each architecture reads from the file, as ft info shows it */
TEST(config_particulars) {
    ft_model *m = NULL; const ft_model_config *c;
    CHECK_OK(ft_model_load(&m, "tests/fixtures/arch/gemma3.gguf", NULL));
    if (m) {
        int l, n = 0;
        c = ft_model_config_get(m);
        CHECK(c->qk_norm && c->post_norms && c->ffn_gelu && c->tied_embeddings, "gemma3 row");
        CHECK(fabsf(c->embd_scale - sqrtf((float)c->n_embd)) < 1e-6f, "embedding scale %g", c->embd_scale);
        CHECK(c->swa_window == 4 && c->rope_base_swa == 10000.0f && c->rope_base == 1e6f, "window %lld, bases %g %g", (long long)c->swa_window, c->rope_base_swa, c->rope_base);
        for (l = 0; l < c->n_layer; l++) { n += ft_model_layer_swa(m, l); CHECK(ft_model_layer_swa(m, l) == (l % 6 < 5), "layer %d", l); }
        CHECK(n == c->n_swa_layers, "%d sliding layers", n);
        ft_model_free(m);
    }
    CHECK_OK(ft_model_load(&m, "tests/fixtures/arch/llama3.gguf", NULL));
    if (m) { c = ft_model_config_get(m); CHECK(!strcmp(c->rope_scaling, "llama3") && c->rope.freq_factors, "llama3 scaling: %s", c->rope_scaling); ft_model_free(m); }
    CHECK_OK(ft_model_load(&m, "tests/fixtures/arch/llama_yarn.gguf", NULL));
    if (m) {
        c = ft_model_config_get(m);
        CHECK(!strcmp(c->rope_scaling, "yarn") && c->rope.ext_factor == 1.0f && c->rope.freq_scale == 0.25f && c->rope.n_ctx_orig == 16,
              "yarn: %s ext %g scale %g orig %lld", c->rope_scaling, c->rope.ext_factor, c->rope.freq_scale, (long long)c->rope.n_ctx_orig);
        ft_model_free(m);
    }
    CHECK_OK(ft_model_load(&m, "tests/fixtures/arch/phi3.gguf", NULL));
    if (m) {
        ft_layer *L = ft_model_layer(m, 0);
        c = ft_model_config_get(m);
        CHECK(c->fused && L->wq->shape[0] == c->n_head * c->head_dim && L->wk->shape[0] == c->n_head_kv * c->head_dim &&
              L->w_up->shape[0] == c->n_ff && (const char *)L->w_up->data > (const char *)L->w_gate->data, "phi3 views");
        CHECK(!strcmp(L->wk->name, "blk.0.attn_qkv.weight.k"), "view name %s", L->wk->name);
        ft_model_free(m);
    }
}

/* the router losses and their gradients against transformers' load_balancing_loss_func and
   router_z_loss_func (tests/fixtures/moe_router.txt, tools/ref/moe_fixtures.py): values within
   1e-5 relative, gradients within 1e-6 absolute (float32 here, float64 there) */
TEST(router_losses_equal_transformers) {
    size_t len; char *buf = (char *)ft_test_slurp("tests/fixtures/moe_router.txt", &len), *p = buf, *t;
    int cases = 0;
    CHECK(buf != NULL, "tests/fixtures/moe_router.txt is missing (tools/ref/moe_fixtures.py)");
    while (buf && (t = next_tok(&p)) != NULL && !strcmp(t, "case")) {
        char name[32]; int L, N, E, k, l, which; int64_t sh[2], i, n; ft_params *P = NULL; ft_tensor *lg[8];
        float *x, *ref[2]; double val[2];
        snprintf(name, sizeof name, "%s", next_tok(&p));
        L = atoi(next_tok(&p)); N = atoi(next_tok(&p)); E = atoi(next_tok(&p)); k = atoi(next_tok(&p));
        n = (int64_t)L * N * E;
        next_tok(&p); x = read_floats(&p, (int)n);
        next_tok(&p); val[0] = atof(next_tok(&p)); next_tok(&p); ref[0] = read_floats(&p, (int)n);
        next_tok(&p); val[1] = atof(next_tok(&p)); next_tok(&p); ref[1] = read_floats(&p, (int)n);
        next_tok(&p);                                   /* end */
        if (!x || !ref[0] || !ref[1] || L > 8) { CHECK(0, "%s: malformed", name); free(x); free(ref[0]); free(ref[1]); break; }
        for (which = 0; which < 2; which++) {
            ft_tensor *loss; double gd = 0;
            CHECK_OK(ft_params_init(&P));
            sh[0] = N; sh[1] = E;
            for (l = 0; l < L; l++) { char nm[16]; snprintf(nm, sizeof nm, "l%d", l); lg[l] = ft_params_add(P, nm, 2, sh); }
            CHECK_OK(ft_params_alloc(P));
            for (l = 0; l < L; l++) memcpy(lg[l]->data, x + (int64_t)l * N * E, (size_t)(N * E) * sizeof(float));
            ft_ctx_reset(C);
            loss = which == 0 ? ft_moe_aux_loss(C, lg, L, k) : ft_moe_z_loss(C, lg, L);
            CHECK(loss != NULL, "%s: %s", name, ft_last_error());
            if (loss) {
                CHECK(fabs(((float *)loss->data)[0] - val[which]) <= 1e-5 * fabs(val[which]), "%s %s: %.7f, transformers %.7f", name, which ? "z" : "aux", ((float *)loss->data)[0], val[which]);
                CHECK_OK(ft_backward(C, loss));
                for (l = 0; l < L; l++) for (i = 0; i < N * E; i++) gd = fmax(gd, fabs(lg[l]->grad[i] - ref[which][(int64_t)l * N * E + i]));
                CHECK(gd < 1e-6, "%s %s: gradient differs by %.3g", name, which ? "z" : "aux", gd);
                printf("    %-15s %s %.6f (transformers %.6f), max |grad diff| %.1e\n", name, which ? "z  " : "aux", ((float *)loss->data)[0], val[which], gd);
            }
            ft_params_free(P);
        }
        free(x); free(ref[0]); free(ref[1]);
        cases++;
    }
    CHECK(cases == 3, "%d cases", cases);
    free(buf);
}

/* LoRA on attention and on every expert and trained routers, qwen3moe and olmoe, the loss =
   cross-entropy + 0.01 aux + 0.001 z: the analytic gradients of the first 64 entries of layer 0's
   first attention LoRA B, its first expert LoRA B and its router against central differences (eps 1e-3; no routing flips at
   that size). Then finetune.h's own adapter file keeps it (same loss after save and load), and
   the formats that cannot hold expert LoRA say so. */
static double moe_loss(ft_model *m, const int32_t *ids, const int32_t *tgt, int T, int backward) {
    ft_batch b; ft_tensor *y, *rl; double v;
    memset(&b, 0, sizeof b); b.B = 1; b.T = T; b.ids = ids;
    ft_ctx_reset(C);
    y = ft_cross_entropy(C, ft_model_forward(C, m, &b), tgt, -100);
    rl = y ? ft_model_router_loss(C, m, 0.01f, 0.001f, NULL, NULL, NULL) : NULL;
    if (!y || !rl) return NAN;
    y = ft_add(C, y, rl);
    v = ((float *)y->data)[0];
    if (backward && ft_backward(C, y) != FT_OK) return NAN;
    return v;
}
static void moe_gradcheck(const char *name) {
    fixture fx; ft_model *m = NULL; ft_peft *p = NULL; ft_peft_opts po = ft_peft_opts_default(FT_PEFT_LORA);
    ft_params *P; ft_tensor *Bs[3] = {NULL, NULL, NULL}; int32_t tgt[MAXT]; int i, n = 0, bad = 0, q; double worst = 0, before; char path[256];
    if (!load_fixture(name, &fx)) { CHECK(0, "%s fixture", name); free_fixture(&fx); return; }
    snprintf(path, sizeof path, "tests/fixtures/arch/%s.gguf", name);
    CHECK_OK(ft_model_load(&m, path, NULL));
    po.lora.r = 2; po.lora.alpha = 4; po.seed = 3; po.lora.train_router = 1;
    if (m) CHECK_OK(ft_peft_attach(&p, m, &po));
    if (!p) { ft_model_free(m); free_fixture(&fx); return; }
    P = ft_peft_params(p);
    for (i = 0; i < ft_params_count(P); i++) {
        ft_tensor *t = ft_params_get(P, i); int64_t j;
        int ex = strstr(t->name, ".experts.") != NULL, rt = strstr(t->name, ".router.") != NULL;
        CHECK(ex || (!strstr(t->name, "gate") && !strstr(t->name, "down") && !strstr(t->name, ".up.")), "%s: LoRA on a missing dense FFN: %s", name, t->name);
        if (rt) { if (!Bs[2] && strstr(t->name, "layers.0.")) Bs[2] = t; continue; }   /* the router keeps the model's values */
        for (j = 0; j < ft_numel(t); j++) ((float *)t->data)[j] = 0.05f * (float)((j * 7 + i * 3) % 11 - 5);   /* B nonzero too */
        if (!Bs[ex] && strstr(t->name, "layers.0.") && strstr(t->name, "lora_B")) Bs[ex] = t;
    }
    for (i = 0; i < fx.n; i++) tgt[i] = i + 1 < fx.n ? fx.ids[i + 1] : -100;
    CHECK(Bs[0] && Bs[1] && Bs[2], "%s: no attention or expert LoRA B or router in layer 0", name);
    for (q = 0; q < 3 && Bs[0] && Bs[1] && Bs[2]; q++) {
        ft_tensor *B = Bs[q]; float *g;
        ft_params_zero_grad(P);
        if (isnan(moe_loss(m, fx.ids, tgt, fx.n, 1))) { CHECK(0, "%s: loss: %s", name, ft_last_error()); break; }
        g = (float *)malloc((size_t)ft_numel(B) * sizeof(float));
        memcpy(g, B->grad, (size_t)ft_numel(B) * sizeof(float));
        for (i = 0; i < ft_numel(B) && i < 64; i++, n++) {
            float *w = (float *)B->data + i, keep = *w; double lp, lm, fd;
            *w = keep + 1e-3f; lp = moe_loss(m, fx.ids, tgt, fx.n, 0);
            *w = keep - 1e-3f; lm = moe_loss(m, fx.ids, tgt, fx.n, 0);
            *w = keep;
            fd = (lp - lm) / 2e-3;
            worst = fmax(worst, fabs(fd - g[i]));
            bad += fabs(fd - g[i]) > 2e-3 + 2e-2 * fabs(fd);
        }
        free(g);
    }
    printf("    %-9s layer 0's attention LoRA B, expert LoRA B, router: %d entries, max |analytic - numeric| %.2e\n", name, n, worst);
    CHECK(n == 192 && bad == 0, "%s: %d of %d gradients differ (worst %.3g)", name, bad, n, worst);
    before = moe_loss(m, fx.ids, tgt, fx.n, 0);
    CHECK(ft_peft_save(p, "moe_adapter.gguf", FT_FORMAT_FINETUNE, NULL) == FT_OK, "%s: save: %s", name, ft_last_error());
    CHECK(ft_peft_save(p, "moe_peft", FT_FORMAT_PEFT, NULL) == FT_ERR_UNSUPPORTED && strstr(ft_last_error(), "experts"), "%s: PEFT: %s", name, ft_last_error());
    CHECK(ft_peft_merge(p) == FT_ERR_UNSUPPORTED, "%s: merge", name);
    ft_peft_free(p); p = NULL;
    CHECK_OK(ft_peft_load(&p, m, "moe_adapter.gguf"));
    if (p) CHECK(fabs(moe_loss(m, fx.ids, tgt, fx.n, 0) - before) < 1e-6, "%s: loss after reload %.7f vs %.7f", name, moe_loss(m, fx.ids, tgt, fx.n, 0), before);
    remove("moe_adapter.gguf");
    ft_peft_free(p); ft_model_free(m); free_fixture(&fx);
}
/* the router losses come from the last forward with gradients: a reference forward without them
   (DPO, KTO) after it leaves them be, and a reset context has none */
TEST(router_loss_survives_a_reference_forward) {
    ft_model *m = NULL; ft_peft *p = NULL; ft_peft_opts po = ft_peft_opts_default(FT_PEFT_LORA);
    static const int32_t ids[8] = {5, 9, 33, 70, 2, 41, 8, 200}; ft_batch b; float aux = 0, aux2 = 0; int old;
    CHECK_OK(ft_model_load(&m, "tests/fixtures/arch/qwen3moe.gguf", NULL));
    if (m) CHECK_OK(ft_peft_attach(&p, m, &po));
    if (!p) { ft_model_free(m); return; }
    memset(&b, 0, sizeof b); b.B = 1; b.T = 8; b.ids = ids;
    ft_ctx_reset(C);
    CHECK(ft_model_forward(C, m, &b) != NULL, "forward: %s", ft_last_error());
    CHECK(ft_model_router_loss(C, m, 0.01f, 0.0f, &aux, NULL, NULL) != NULL, "router loss after the forward");
    old = ft_ctx_set_grad(C, 0);
    ft_peft_set_enabled(p, 0);
    CHECK(ft_model_forward(C, m, &b) != NULL, "reference forward: %s", ft_last_error());
    ft_peft_set_enabled(p, 1);
    ft_ctx_set_grad(C, old);
    CHECK(ft_model_router_loss(C, m, 0.01f, 0.0f, &aux2, NULL, NULL) != NULL && aux2 == aux, "after the reference forward: %g vs %g", aux2, aux);
    ft_ctx_reset(C);
    CHECK(ft_model_router_loss(C, m, 0.01f, 0.0f, NULL, NULL, NULL) == NULL && ft_ctx_status(C) == FT_OK, "a reset context has no router logits");
    ft_peft_free(p); ft_model_free(m);
}
TEST(moe_lora_gradient_with_router_losses) { moe_gradcheck("qwen3moe"); moe_gradcheck("olmoe"); }

/* the chat formats gemma and phi3, as llama.cpp's llm_chat_apply_template writes them */
TEST(chat_gemma_phi3) {
    ft_chat_msg msg[4] = {{"system", " Be brief. "}, {"user", " Hi \n"}, {"assistant", "Hello."}, {"user", "Bye"}};
    char out[512];
    int64_t n = ft_chat_apply("gemma", msg, 4, 1, out, sizeof out);
    CHECK(n > 0 && !strcmp(out, "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n"
                               "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"), "gemma: %s", out);
    n = ft_chat_apply("{% for m in messages %}<start_of_turn>{{ m.role }}{% endfor %}", msg + 1, 1, 0, out, sizeof out);
    CHECK(n > 0 && !strcmp(out, "<start_of_turn>user\nHi<end_of_turn>\n"), "gemma detected: %s", out);
    n = ft_chat_apply("phi3", msg, 3, 1, out, sizeof out);
    CHECK(n > 0 && !strcmp(out, "<|system|>\n Be brief. <|end|>\n<|user|>\n Hi \n<|end|>\n<|assistant|>\nHello.<|end|>\n<|assistant|>\n"), "phi3: %s", out);
}

/* ---- Hugging Face directories ([hf]) --------------------------------------------------------------
   tests/fixtures/hf/<name> is the same transformers model as tests/fixtures/arch/<name>.gguf, as
   save_pretrained wrote it (tools/ref/arch_fixtures.py --hf-out). Read as a directory, it must give
   llama.cpp's converter's file: every tensor of the GGUF under the same name, type and shape
   with the same values (the permuted Q/K rows, gemma's 1 + w norms, the stacked experts; the
   RoPE factors computed from the config within 1e-6), and the same logits as the GGUF and as
   transformers. */
static void check_hf(const char *name) {
    char path[256]; ft_gguf *ref = NULL, *hf = NULL; ft_model *m = NULL; fixture fx; int64_t i, same = 0;
    snprintf(path, sizeof path, "tests/fixtures/arch/%s.gguf", name);
    CHECK_OK(ft_gguf_open(&ref, path));
    snprintf(path, sizeof path, "tests/fixtures/hf/%s", name);
    CHECK_OK(ft_gguf_open(&hf, path));
    for (i = 0; ref && hf && i < ft_gguf_n_tensors(ref); i++) {
        const ft_gguf_tensor *a = ft_gguf_tensor_at(ref, i), *b; char nm[128]; int64_t j, n = (int64_t)(a->nbytes / 4); double d = 0;
        snprintf(nm, sizeof nm, "%.*s", (int)a->name.n, a->name.s);
        b = ft_gguf_find_tensor(hf, nm);
        CHECK(b != NULL, "%s: no tensor %s", name, nm);
        if (!b) continue;
        CHECK(b->type == a->type && b->n_dims == a->n_dims && !memcmp(a->ne, b->ne, sizeof a->ne) && a->nbytes == b->nbytes,
              "%s: %s: type %d/%d, ne %lld %lld %lld / %lld %lld %lld", name, nm, (int)b->type, (int)a->type,
              (long long)b->ne[0], (long long)b->ne[1], (long long)b->ne[2], (long long)a->ne[0], (long long)a->ne[1], (long long)a->ne[2]);
        if (b->type != a->type || a->nbytes != b->nbytes || a->type != FT_TYPE_F32) continue;
        for (j = 0; j < n; j++) d = fmax(d, fabs(((const float *)a->data)[j] - ((const float *)b->data)[j]) / fmax(1.0, fabs(((const float *)a->data)[j])));
        CHECK(d <= (strstr(nm, "rope_") ? 1e-6 : 0.0), "%s: %s differs by %.3g", name, nm, d);
        same += d == 0;
    }
    if (ref && hf) CHECK(ft_gguf_n_tensors(hf) == ft_gguf_n_tensors(ref), "%s: %lld tensors, the converter's file %lld", name, (long long)ft_gguf_n_tensors(hf), (long long)ft_gguf_n_tensors(ref));
    ft_gguf_close(ref); ft_gguf_close(hf);
    if (!load_fixture(name, &fx)) { CHECK(0, "%s: fixture", name); free_fixture(&fx); return; }
    CHECK_OK(ft_model_load(&m, path, NULL));
    if (m) {
        ft_model *g = NULL; ft_batch b; ft_tensor *y, *z = NULL;
        CHECK_OK(ft_model_load(&g, (snprintf(path, sizeof path, "tests/fixtures/arch/%s.gguf", name), path), NULL));
        memset(&b, 0, sizeof b); b.B = 1; b.T = fx.n; b.ids = fx.ids;
        ft_ctx_reset(C);
        y = ft_model_forward(C, m, &b);
        if (g) z = ft_model_forward(C, g, &b);
        CHECK(y && z, "%s: forward: %s", name, ft_last_error());
        if (y && z) {
            double dg = rel_diff((const float *)y->data, (const float *)z->data, (int64_t)fx.n * fx.V), dh = rel_diff((const float *)y->data, fx.hf, (int64_t)fx.n * fx.V);
            printf("    %-13s HF directory: %lld tensors identical to the converter's, |ft(dir) - ft(gguf)| / range %.2e, |ft(dir) - transformers| / range %.2e\n", name, (long long)same, dg, dh);
            CHECK(dg < 1e-6, "%s: directory vs GGUF logits %.3g", name, dg);
            CHECK(dh < 1e-4, "%s: directory vs transformers logits %.3g", name, dh);
        }
        ft_model_free(g);
        ft_model_free(m);
    }
    free_fixture(&fx);
}
TEST(hf_directories_read_as_the_converter_writes) {
    static const char *const names[] = {"llama3", "llama_linear", "llama_yarn", "qwen3", "gemma3", "phi3", "phi3_longrope", "qwen3moe", "mixtral", "olmoe"};
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++) check_hf(names[i]);
}

/* the way back: each tiny model's GGUF written as a Hugging Face directory (F32) and read again
   gives the converter's tensors unchanged (bit for bit; RoPE factors as the config recomputes
   them, within 1e-6) and the same logits; transformers loads these directories
   (tools/ref/hf_export_check.py) */
TEST(hf_written_and_read_back) {
    static const char *const names[] = {"llama3", "llama_linear", "llama_yarn", "qwen3", "gemma3", "phi3", "phi3_longrope", "qwen3moe", "mixtral", "olmoe"};
    size_t k;
    for (k = 0; k < sizeof names / sizeof names[0]; k++) {
        char path[256], dir[256]; ft_gguf *ref = NULL, *back = NULL; int64_t i, same = 0;
        snprintf(path, sizeof path, "tests/fixtures/arch/%s.gguf", names[k]);
        snprintf(dir, sizeof dir, "build/hf_out/%s", names[k]);
        CHECK_OK(ft_gguf_open(&ref, path));
        if (ref) CHECK_OK(ft_gguf_save_hf(ref, dir, FT_TYPE_F32));
        CHECK_OK(ft_gguf_open(&back, dir));
        for (i = 0; ref && back && i < ft_gguf_n_tensors(ref); i++) {
            const ft_gguf_tensor *a = ft_gguf_tensor_at(ref, i), *b; char nm[128]; int64_t j; double d = 0;
            snprintf(nm, sizeof nm, "%.*s", (int)a->name.n, a->name.s);
            b = ft_gguf_find_tensor(back, nm);
            CHECK(b && b->type == a->type && a->nbytes == b->nbytes && !memcmp(a->ne, b->ne, sizeof a->ne), "%s: %s", names[k], nm);
            if (!b || a->nbytes != b->nbytes) continue;
            for (j = 0; j < (int64_t)(a->nbytes / 4); j++) d = fmax(d, fabs(((const float *)a->data)[j] - ((const float *)b->data)[j]));
            CHECK(d <= (strstr(nm, "rope_") ? 1e-6 : 0.0), "%s: %s differs by %.3g", names[k], nm, d);
            same += d == 0;
        }
        if (ref && back) {
            CHECK(ft_gguf_n_tensors(back) == ft_gguf_n_tensors(ref), "%s: %lld tensors back, %lld", names[k], (long long)ft_gguf_n_tensors(back), (long long)ft_gguf_n_tensors(ref));
            printf("    %-13s GGUF -> Hugging Face -> GGUF: %lld of %lld tensors bit-identical\n", names[k], (long long)same, (long long)ft_gguf_n_tensors(ref));
        }
        ft_gguf_close(ref); ft_gguf_close(back);
    }
}

/* a Hugging Face directory that is not right fails naming the file and the key or tensor */
static void put_file(const char *path, const char *text) { FILE *f = fopen(path, "wb"); if (f) { fputs(text, f); fclose(f); } }
static void expect_hf_error(const char *what, const char *want1, const char *want2) {
    ft_gguf *g = NULL; ft_result r = ft_gguf_open(&g, "build/hf_bad");
    CHECK(r != FT_OK && strstr(ft_last_error(), want1) && strstr(ft_last_error(), want2), "%s: %s", what, ft_last_error());
    ft_gguf_close(g);
}
TEST(hf_bad_directories) {
    /* (file, its text, the error names: where, what); config.json's right text comes back after each */
    static const char *const cases[][4] = {
        {"config.json", "{\"architectures\": [\"FalconForCausalLM\"]}", "build/hf_bad/config.json", "FalconForCausalLM"},
        {"config.json", "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64}", "build/hf_bad/config.json", "num_hidden_layers"},
        {"config.json", "{\"architectures\": [\"LlamaForCausalLM\"], \"num_hidden_layers\": -3}", "build/hf_bad/config.json", "num_hidden_layers"},
        {"config.json", "{\"architectures\": [\"LlamaForCausalLM\"], ", "build/hf_bad/config.json", "1:"},
        {"config.json", "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 2, "
                        "\"num_attention_heads\": 4, \"rope_scaling\": {\"rope_type\": \"dynamic\", \"factor\": 2}}", "build/hf_bad/config.json", "dynamic"},
        {"model.safetensors.index.json", "{\"weight_map\": {\"a\": \"../elsewhere.safetensors\"}}", "model.safetensors.index.json", "../elsewhere.safetensors"},
        {"model.safetensors.index.json", "{\"weight_map\": {\"a\": \"missing-00001.safetensors\"}}", "build/hf_bad/missing-00001.safetensors", "cannot open"},
        {"tokenizer.json", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", "build/hf_bad/tokenizer.json", "WordPiece"},
        {"tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Whitespace\"}}", "build/hf_bad/tokenizer.json", "pre_tokenizer"},
        {"tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [3]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}", "build/hf_bad/tokenizer.json", "merges[0]"},
    };
    const char *cfg = "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2}";
    FILE *f; char *st, path[128], *p = NULL; size_t n, k; ft_gguf *g = NULL;
    CHECK_OK(ft_mkdirs("build/hf_bad"));
    remove("build/hf_bad/config.json");
    expect_hf_error("no config.json", "build/hf_bad", "without config.json");
    put_file("build/hf_bad/config.json", cfg);
    remove("build/hf_bad/model.safetensors");
    expect_hf_error("no weights", "build/hf_bad/model.safetensors", "cannot open");
    /* the weights of a real fixture: under a tensor name no architecture has, then as they are */
    st = (char *)ft_test_slurp("tests/fixtures/hf/llama3/model.safetensors", &n);
    for (k = 8; st && k + 17 <= n && !p; k++) if (!memcmp(st + k, "model.norm.weight", 17)) p = st + k;   /* in the JSON header */
    CHECK(p != NULL, "the llama3 fixture's weights");
    if (!p) { free(st); return; }
    memcpy(p, "model.xorm.weight", 17);
    if ((f = fopen("build/hf_bad/model.safetensors", "wb")) != NULL) { fwrite(st, 1, n, f); fclose(f); }
    expect_hf_error("an unknown tensor", "build/hf_bad/model.safetensors", "model.xorm.weight");
    memcpy(p, "model.norm.weight", 17);
    if ((f = fopen("build/hf_bad/model.safetensors", "wb")) != NULL) { fwrite(st, 1, n, f); fclose(f); }
    free(st);
    for (k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        snprintf(path, sizeof path, "build/hf_bad/%s", cases[k][0]);
        put_file(path, cases[k][1]);
        expect_hf_error(cases[k][1], cases[k][2], cases[k][3]);
        remove(path);
        put_file("build/hf_bad/config.json", cfg);
    }
    CHECK_OK(ft_gguf_open(&g, "build/hf_bad"));                 /* with the right files it opens */
    ft_gguf_close(g);
}

/* architectures and layers that are not there yet fail by name */
TEST(unsupported_fails_clearly) {
    ft_model *m = NULL; ft_gguf_writer *w = NULL; ft_result r;
    CHECK_OK(ft_gguf_writer_init(&w));
    if (!w) return;
    CHECK_OK(ft_gguf_set_str(w, "general.architecture", "falcon"));
    CHECK_OK(ft_gguf_write(w, "arch_falcon.gguf"));
    ft_gguf_writer_free(w);
    r = ft_model_load(&m, "arch_falcon.gguf", NULL);
    CHECK(r == FT_ERR_UNSUPPORTED && strstr(ft_last_error(), "'falcon'") && strstr(ft_last_error(), "arch_falcon.gguf") && strstr(ft_last_error(), "gemma3"),
          "falcon: %s", ft_last_error());
    ft_model_free(m);
    remove("arch_falcon.gguf");
}

FT_TEST_MAIN(test_arch) {
    ft_ctx_opts o; memset(&o, 0, sizeof o); o.n_threads = 2;
    if (ft_ctx_init(&C, &o) != FT_OK) { printf("ctx: %s\n", ft_last_error()); return 1; }
    RUN(llama3_rope_frequency_factors);
    RUN(llama_linear_rope_scaling);
    RUN(llama_yarn_rope_scaling);
    RUN(qwen3_qk_norm_head_dim);
    RUN(gemma3_norms_geglu_sliding_window);
    RUN(phi3_fused_qkv_gate_up);
    RUN(phi3_longrope_short_factors);
    RUN(qwen3moe_experts);
    RUN(mixtral_experts);
    RUN(olmoe_experts);
    RUN(config_particulars);
    RUN(router_losses_equal_transformers);
    RUN(moe_lora_gradient_with_router_losses);
    RUN(router_loss_survives_a_reference_forward);
    RUN(chat_gemma_phi3);
    RUN(unsupported_fails_clearly);
    RUN(hf_directories_read_as_the_converter_writes);
    RUN(hf_written_and_read_back);
    RUN(hf_bad_directories);
    ft_ctx_free(C);
    return ft_test_summary("test_arch");
}
