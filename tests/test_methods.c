/* test_methods.c - the methods beside LoRA on the tiny model: bottleneck adapters (Houlsby,
   Pfeiffer), prefix tuning (with and without the reparameterisation MLP), prompt tuning (random,
   vocabulary and text init), IA3, full fine-tuning with freeze patterns, and LoRA on the token
   embedding and the output head (PEFT's Embedding LoRA: A = 0, B ~ N(0, 1)). For each: the start
   point (identity where the method defines one), switching off gives the base model exactly,
   gradients of its parameters through the whole model by central differences, the KV-cache
   decode equals the full forward (positions and prefixes line up), and AdamW fits a sequence. */
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"

static const char *P32 = "build/tiny_methods.gguf", *P16 = "build/tiny_methods16.gguf";
static ft_ctx *CTX;

typedef struct { const char *name; ft_peft_opts o; int identity; const char *path; } method;
static method methods(int k) {
    method c; memset(&c, 0, sizeof c); c.path = P32;
    switch (k) {
    case 0: c.name = "adapter houlsby"; c.o.method = FT_PEFT_ADAPTER; c.o.bottleneck = 8; c.o.act = FT_ACT_GELU; c.identity = 1; break;
    case 1: c.name = "adapter pfeiffer"; c.o.method = FT_PEFT_ADAPTER; c.o.bottleneck = 8; c.o.placement = FT_ADAPTER_PFEIFFER; c.o.act = FT_ACT_SILU; c.identity = 1; break;   /* smooth: no kink for the differences */
    case 2: c.name = "prefix"; c.o.method = FT_PEFT_PREFIX; c.o.n_virtual = 3; break;
    case 3: c.name = "prefix mlp"; c.o.method = FT_PEFT_PREFIX; c.o.n_virtual = 3; c.o.prefix_hidden = 16; break;
    case 4: c.name = "prompt random"; c.o.method = FT_PEFT_PROMPT; c.o.n_virtual = 4; break;
    case 5: c.name = "prompt vocab"; c.o.method = FT_PEFT_PROMPT; c.o.n_virtual = 4; c.o.prompt_init = FT_PROMPT_VOCAB; break;
    case 6: c.name = "ia3"; c.o.method = FT_PEFT_IA3; c.identity = 1; break;
    case 7: c.name = "full"; c.o.method = FT_PEFT_FULL; c.identity = 1; break;
    case 9: c.name = "lora embed+head"; c.o.method = FT_PEFT_LORA; c.o.lora.r = 4; c.o.lora.targets = FT_TARGET_ALL_LINEAR | FT_TARGET_EMBED | FT_TARGET_HEAD; c.identity = 1; break;
    case 8: c.name = "full f16 frozen"; c.o.method = FT_PEFT_FULL; c.o.freeze = "token_embd.*,blk.0.attn_*"; c.identity = 0; c.path = P16; break;
    case 10: c.name = "loha"; c.o.method = FT_PEFT_LOHA; c.o.lora.r = 3; c.o.lora.alpha = 6; c.identity = 1; break;
    default: c.name = NULL;
    }
    c.o.seed = 11;
    return c;
}

TEST(start_point_and_switch_off) {
    int k;
    for (k = 0; methods(k).name; k++) {
        method c = methods(k); ft_model *m; ft_peft *p; static float base[12 * TINY_V], got[12 * TINY_V]; double d0, d1, d2;
        CHECK_OK(ft_model_load(&m, c.path, NULL));
        tiny_logits(CTX, m, base);
        CHECK_OK(ft_peft_attach(&p, m, &c.o));
        if (!p) { ft_model_free(m); continue; }
        CHECK(ft_peft_kind(p) == c.o.method, "%s: kind", c.name);
        tiny_logits(CTX, m, got); d0 = tiny_maxdiff(base, got, 12 * TINY_V);
        if (c.identity) CHECK(d0 == 0, "%s: the model starts unchanged (%.3g)", c.name, d0);
        else if (c.o.method != FT_PEFT_FULL) CHECK(d0 > 1e-4, "%s: the method changes the output from the start (%.3g)", c.name, d0);
        else CHECK(d0 < 1e-6, "%s: f32 master copies of f16 weights: %.3g", c.name, d0);
        tiny_nudge(ft_peft_params(p), 0.05f);
        tiny_logits(CTX, m, got); d1 = tiny_maxdiff(base, got, 12 * TINY_V);
        CHECK(d1 > 1e-3, "%s: moved parameters change the output (%.3g)", c.name, d1);
        ft_peft_set_enabled(p, 0);
        tiny_logits(CTX, m, got); d2 = tiny_maxdiff(base, got, 12 * TINY_V);
        CHECK(d2 == 0, "%s: switched off, exactly the base model (%.3g)", c.name, d2);
        ft_peft_set_enabled(p, 1);
        tiny_logits(CTX, m, got);
        CHECK(tiny_maxdiff(base, got, 12 * TINY_V) == d1, "%s: switched back on", c.name);
        printf("    %-17s %6lld trainable, start diff %.2g\n", c.name, (long long)ft_params_numel(ft_peft_params(p)), d0);
        ft_peft_free(p);
        tiny_logits(CTX, m, got);
        CHECK(tiny_maxdiff(base, got, 12 * TINY_V) == 0, "%s: freed, the base model is back", c.name);
        ft_model_free(m);
    }
}

TEST(parameter_counts_and_freezing) {
    ft_model *m; ft_peft *p; method c;
    CHECK_OK(ft_model_load(&m, P32, NULL));
    c = methods(0); CHECK_OK(ft_peft_attach(&p, m, &c.o));
    CHECK(ft_params_numel(ft_peft_params(p)) == TINY_L * 2 * (8 * TINY_C + 8 + TINY_C * 8 + TINY_C), "houlsby count %lld", (long long)ft_params_numel(ft_peft_params(p)));
    ft_peft_free(p);
    c = methods(2); CHECK_OK(ft_peft_attach(&p, m, &c.o));
    CHECK(ft_params_numel(ft_peft_params(p)) == 3 * TINY_L * 2 * TINY_HKV * TINY_D, "prefix table count");
    CHECK(ft_peft_virtual_tokens(p) == 3, "virtual tokens");
    ft_peft_free(p);
    c = methods(6); CHECK_OK(ft_peft_attach(&p, m, &c.o));
    CHECK(ft_params_numel(ft_peft_params(p)) == TINY_L * (2 * TINY_HKV * TINY_D + TINY_F), "ia3: k, v outputs and down's input");
    ft_peft_free(p);
    c = methods(8); c.o.freeze = "token_embd.*,blk.0.*,*norm*";
    CHECK_OK(ft_peft_attach(&p, m, &c.o));
    CHECK(ft_params_find(ft_peft_params(p), "token_embd.weight") == NULL && ft_params_find(ft_peft_params(p), "blk.0.attn_q.weight") == NULL,
          "frozen by pattern");
    CHECK(ft_params_find(ft_peft_params(p), "blk.1.attn_q.weight") != NULL && ft_params_find(ft_peft_params(p), "blk.1.ffn_norm.weight") == NULL,
          "the rest trains, norms frozen by '*norm*'");
    ft_peft_free(p);
    {
        uint64_t mask = 2;                              /* layer 1 only */
        c = methods(7); c.o.layer_mask = &mask;
        CHECK_OK(ft_peft_attach(&p, m, &c.o));
        CHECK(ft_params_find(ft_peft_params(p), "blk.0.ffn_up.weight") == NULL && ft_params_find(ft_peft_params(p), "blk.1.ffn_up.weight") != NULL, "layer mask");
        ft_peft_free(p);
        c = methods(7); c.o.freeze = "*";
        CHECK(ft_peft_attach(&p, m, &c.o) == FT_ERR_INVALID, "everything frozen is an error");
        CHECK(strstr(ft_last_error(), "nothing to train") != NULL, "message: %s", ft_last_error());
    }
    ft_model_free(m);
}

/* central differences through the whole model for a few entries of every parameter tensor */
TEST(gradients_through_the_model) {
    int k;
    for (k = 0; methods(k).name; k++) {
        method c = methods(k); ft_model *m; ft_peft *p; ft_params *P; int i, checked = 0; double worst = 0;
        if (c.o.method == FT_PEFT_FULL && k == 8) continue;          /* f16 storage: same path as 7 */
        CHECK_OK(ft_model_load(&m, c.path, NULL));
        CHECK_OK(ft_peft_attach(&p, m, &c.o));
        P = ft_peft_params(p);
        tiny_nudge(P, c.o.method == FT_PEFT_FULL ? 0.01f : 0.1f);
        ft_params_zero_grad(P);
        tiny_loss(CTX, m, 1);
        for (i = 0; i < ft_params_count(P); i += c.o.method == FT_PEFT_FULL ? 2 : 1) {
            ft_tensor *t = ft_params_get(P, i); int64_t j, n = ft_numel(t);
            for (j = 0; j < n; j += n / (n > 200 ? 2 : 6) + 1) {
                float *x = (float *)t->data + j, x0 = *x, eps = 1e-2f; double lp, lm, fd, an = t->grad[j], d;
                *x = x0 + eps; lp = tiny_loss(CTX, m, 0);
                *x = x0 - eps; lm = tiny_loss(CTX, m, 0);
                *x = x0;
                fd = (lp - lm) / (2 * eps);
                d = fabs(an - fd) / (5e-4 + 5e-3 * fabs(fd));
                worst = fmax(worst, d); checked++;
                CHECK(d <= 1, "%s %s[%lld]: analytic %.6g numeric %.6g", c.name, t->name, (long long)j, an, fd);
            }
        }
        printf("    %-17s %3d gradients checked, worst error / tolerance %.3f\n", c.name, checked, worst);
        ft_peft_free(p); ft_model_free(m);
    }
}

/* token-by-token decoding with the KV cache gives the logits of the full forward */
TEST(cached_decode_matches_forward) {
    int k;
    for (k = 0; methods(k).name; k++) {
        method c = methods(k); ft_model *m; ft_peft *p; ft_kv_cache *kv; static float full[12 * TINY_V]; double worst = 0; int t;
        CHECK_OK(ft_model_load(&m, c.path, NULL));
        CHECK_OK(ft_peft_attach(&p, m, &c.o));
        tiny_nudge(ft_peft_params(p), 0.05f);
        tiny_logits(CTX, m, full);
        CHECK_OK(ft_kv_cache_init(&kv, m, 1, 12));
        for (t = 0; t < 12; t += (t < 4 ? 4 : 1)) {          /* a 4-token prompt, then single tokens */
            int n = t < 4 ? 4 : 1, i; ft_tensor *y;
            ft_ctx_reset(CTX);
            y = ft_model_decode(CTX, m, kv, 0, TINY_IDS + t, 1, n, 0);
            CHECK(y != NULL, "%s: decode at %d: %s", c.name, t, ft_last_error());
            if (!y) break;
            for (i = 0; i < n * TINY_V; i++) worst = fmax(worst, fabs(((float *)y->data)[i] - full[t * TINY_V + i]));
        }
        CHECK(worst < 2e-5, "%s: cached decode vs forward %.3g", c.name, worst);
        ft_kv_cache_free(kv); ft_peft_free(p); ft_model_free(m);
    }
}

TEST(adamw_fits_a_sequence) {
    int k;
    for (k = 0; methods(k).name; k++) {
        method c = methods(k); ft_model *m; ft_peft *p; ft_optim *opt; ft_optim_opts oo; float l0, l; int s;
        CHECK_OK(ft_model_load(&m, c.path, NULL));
        CHECK_OK(ft_peft_attach(&p, m, &c.o));
        memset(&oo, 0, sizeof oo);
        CHECK_OK(ft_optim_init(&opt, ft_peft_params(p), &oo));
        l0 = tiny_loss(CTX, m, 0);
        for (s = 0; s < 40; s++) {
            ft_params_zero_grad(ft_peft_params(p));
            tiny_loss(CTX, m, 1);
            /* soft prompts and prefixes take large rates (0.3 in Lester et al.) */
            CHECK_OK(ft_optim_step(opt, c.o.method == FT_PEFT_FULL ? 3e-3f : c.o.method == FT_PEFT_PROMPT || c.o.method == FT_PEFT_PREFIX ? 0.1f : 1e-2f));
        }
        l = tiny_loss(CTX, m, 0);
        printf("    %-17s loss %.3f -> %.3f in 40 steps\n", c.name, l0, l);
        CHECK(l < 0.7f * l0, "%s: loss %.3f -> %.3f", c.name, l0, l);
        ft_optim_free(opt); ft_peft_free(p); ft_model_free(m);
    }
}

TEST(prompt_text_init) {
    /* the tiny model has no tokenizer: text init is refused with a message, vocabulary init takes rows of the table */
    ft_model *m; ft_peft *p; ft_peft_opts o; int i; int64_t j;
    CHECK_OK(ft_model_load(&m, P32, NULL));
    memset(&o, 0, sizeof o); o.method = FT_PEFT_PROMPT; o.n_virtual = 5; o.prompt_init = FT_PROMPT_TEXT; o.prompt_text = "hello";
    CHECK(ft_peft_attach(&p, m, &o) == FT_ERR_INVALID && strstr(ft_last_error(), "tokenizer"), "text init without a tokenizer: %s", ft_last_error());
    o.prompt_init = FT_PROMPT_VOCAB; o.seed = 5;
    CHECK_OK(ft_peft_attach(&p, m, &o));
    for (i = 0; i < 5; i++) {                          /* every soft token is some row of the table */
        const float *row = (const float *)ft_params_get(ft_peft_params(p), 0)->data + i * TINY_C; int found = 0;
        for (j = 0; j < TINY_V && !found; j++) found = memcmp(row, (const float *)ft_model_tok_embd(m)->data + j * TINY_C, TINY_C * 4) == 0;
        CHECK(found, "soft token %d is a vocabulary embedding", i);
    }
    ft_peft_free(p); ft_model_free(m);
}

/* every method through its own GGUF file: save, attach to a fresh model, the same logits */
TEST(save_and_attach_gguf) {
    int k;
    for (k = 0; methods(k).name; k++) {
        method c = methods(k); ft_model *m, *m2; ft_peft *p, *q; static float a[12 * TINY_V], b[12 * TINY_V];
        const char *path = "build/tiny_method_adapter.gguf";
        CHECK_OK(ft_model_load(&m, c.path, NULL));
        c.o.reward_head = k == 0;
        CHECK_OK(ft_peft_attach(&p, m, &c.o));
        tiny_nudge(ft_peft_params(p), 0.05f);
        tiny_logits(CTX, m, a);
        CHECK_OK(ft_peft_save(p, path, FT_FORMAT_FINETUNE, NULL));
        CHECK_OK(ft_model_load(&m2, c.path, NULL));
        CHECK_OK(ft_peft_load(&q, m2, path));
        if (q) {
            CHECK(ft_peft_kind(q) == c.o.method && ft_params_numel(ft_peft_params(q)) == ft_params_numel(ft_peft_params(p)), "%s: kind and size", c.name);
            tiny_logits(CTX, m2, b);
            CHECK(tiny_maxdiff(a, b, 12 * TINY_V) == 0, "%s: logits after reload differ by %.3g", c.name, tiny_maxdiff(a, b, 12 * TINY_V));
            CHECK(k != 0 || ft_peft_reward_head(q) != NULL, "the reward head travels too");
            ft_peft_free(q);
        }
        ft_peft_free(p); ft_model_free(m); ft_model_free(m2);
    }
    remove("build/tiny_method_adapter.gguf");
}

/* gradient checkpointing: the same loss and gradients for every method (prefix keys and the soft
   prompt come from outside the checkpointed layers) */
TEST(checkpointing_gives_the_same_gradients) {
    int k;
    for (k = 0; methods(k).name; k++) {
        method c = methods(k); ft_model *m; ft_peft *p; ft_params *P; float l0, l1; int i, same = 1; static float g0[40000];
        int64_t n = 0;
        CHECK_OK(ft_model_load(&m, c.path, NULL));
        CHECK_OK(ft_peft_attach(&p, m, &c.o));
        P = ft_peft_params(p);
        tiny_nudge(P, 0.05f);
        ft_params_zero_grad(P); l0 = tiny_loss(CTX, m, 1);
        for (i = 0; i < ft_params_count(P); i++) { ft_tensor *t = ft_params_get(P, i); if (n + ft_numel(t) <= 40000) memcpy(g0 + n, t->grad, (size_t)ft_numel(t) * 4); n += ft_numel(t); }
        ft_ctx_set_checkpointing(CTX, 1);
        ft_params_zero_grad(P); l1 = tiny_loss(CTX, m, 1);
        ft_ctx_set_checkpointing(CTX, 0);
        for (n = 0, i = 0; i < ft_params_count(P); i++) { ft_tensor *t = ft_params_get(P, i); if (n + ft_numel(t) <= 40000) same &= memcmp(g0 + n, t->grad, (size_t)ft_numel(t) * 4) == 0; n += ft_numel(t); }
        CHECK(l0 == l1 && same, "%s: checkpointed loss %.9g vs %.9g, gradients %s", c.name, l1, l0, same ? "equal" : "differ");
        ft_peft_free(p); ft_model_free(m);
    }
}

/* a method of the caller's own through the PEFT interface: a learned scale of each layer's MLP
   output (ones at the start), from the `after` hook */
static ft_tensor *VSCALE[8];
static ft_result vscale_add(ft_peft *p, ft_params *P, void *user) {
    int l; int64_t sh[1]; char name[64];
    (void)user;
    sh[0] = TINY_C;
    for (l = 0; l < ft_model_config_get(ft_peft_model(p))->n_layer && l < 8; l++) {
        snprintf(name, sizeof name, "layers.%d.mlp_scale", l);
        if (!(VSCALE[l] = ft_params_add(P, name, 1, sh))) return FT_ERR_NOMEM;
    }
    return FT_OK;
}
static ft_result vscale_init(ft_peft *p, ft_rng *rng, void *user) {
    int l, i;
    (void)rng; (void)user;
    for (l = 0; l < ft_model_config_get(ft_peft_model(p))->n_layer && l < 8; l++)
        for (i = 0; i < TINY_C; i++) ((float *)VSCALE[l]->data)[i] = 1.0f;
    return FT_OK;
}
static ft_tensor *vscale_after(ft_ctx *ctx, ft_peft *p, int layer, int place, ft_tensor *y, void *user) {
    (void)p; (void)user;
    return place == 1 ? ft_mul(ctx, y, VSCALE[layer]) : y;
}
TEST(custom_method_through_the_interface) {
    static float base[12 * TINY_V], a[12 * TINY_V], b[12 * TINY_V];
    ft_peft_method_def def; ft_model *m; ft_peft *p, *q = NULL; double d;
    memset(&def, 0, sizeof def);
    def.name = "vscale"; def.add = vscale_add; def.init = vscale_init; def.after = vscale_after;
    CHECK_OK(ft_model_load(&m, P32, NULL));
    if (!m) return;
    tiny_logits(CTX, m, base);
    CHECK_OK(ft_peft_attach_custom(&p, m, &def, 3));
    if (!p) { ft_model_free(m); return; }
    CHECK(ft_peft_kind(p) == FT_PEFT_CUSTOM && ft_params_count(ft_peft_params(p)) == TINY_L, "custom: %lld parameters", (long long)ft_params_count(ft_peft_params(p)));
    tiny_logits(CTX, m, a);
    CHECK(tiny_maxdiff(base, a, 12 * TINY_V) == 0, "custom: ones at the start leave the model as it was");
    tiny_nudge(ft_peft_params(p), 0.3f);
    tiny_logits(CTX, m, a);
    d = tiny_maxdiff(base, a, 12 * TINY_V);
    CHECK(d > 1e-3, "custom: its parameters change the model (%.3g)", d);
    ft_peft_set_enabled(p, 0);
    tiny_logits(CTX, m, b);
    CHECK(tiny_maxdiff(base, b, 12 * TINY_V) == 0, "custom: switched off, the base model");
    ft_peft_set_enabled(p, 1);
    CHECK_OK(ft_peft_save(p, "build/tiny_custom.gguf", FT_FORMAT_AUTO, NULL));
    CHECK(ft_peft_save(p, "build/tiny_custom_peft", FT_FORMAT_PEFT, NULL) == FT_ERR_UNSUPPORTED, "custom: no PEFT form");
    ft_peft_free(p);
    CHECK(ft_peft_load(&q, m, "build/tiny_custom.gguf") == FT_ERR_UNSUPPORTED && !q && strstr(ft_last_error(), "ft_peft_attach_custom"),
          "custom: loading says how: %s", ft_last_error());
    CHECK_OK(ft_peft_attach_custom(&q, m, &def, 3));
    if (q) {
        CHECK_OK(ft_peft_read(q, "build/tiny_custom.gguf"));
        tiny_logits(CTX, m, b);
        CHECK(tiny_maxdiff(a, b, 12 * TINY_V) == 0, "custom: attached again and read, the same model");
        ft_peft_free(q);
    }
    ft_model_free(m);
}

/* baking: the attached method becomes part of the model (same logits), and the next method
   attaches on top with the baked model as its reference */
TEST(bake_then_attach_again) {
    int k;
    for (k = 0; k < 2; k++) {
        ft_model *m; ft_peft *p, *q; ft_peft_opts o; static float a[12 * TINY_V], b[12 * TINY_V], c[12 * TINY_V];
        CHECK_OK(ft_model_load(&m, P32, NULL));
        memset(&o, 0, sizeof o);
        o.method = k ? FT_PEFT_FULL : FT_PEFT_LORA; o.lora.r = 4; o.lora.dora = 1; o.seed = 3;
        CHECK_OK(ft_peft_attach(&p, m, &o));
        tiny_nudge(ft_peft_params(p), 0.05f);
        tiny_logits(CTX, m, a);
        CHECK_OK(ft_peft_bake(p));
        tiny_logits(CTX, m, b);
        CHECK(tiny_maxdiff(a, b, 12 * TINY_V) < 2e-5, "%s baked: %.3g", k ? "full" : "DoRA", tiny_maxdiff(a, b, 12 * TINY_V));
        memset(&o, 0, sizeof o); o.method = FT_PEFT_IA3;
        CHECK_OK(ft_peft_attach(&q, m, &o));
        tiny_nudge(ft_peft_params(q), 0.05f);
        ft_peft_set_enabled(q, 0);
        tiny_logits(CTX, m, c);
        CHECK(tiny_maxdiff(b, c, 12 * TINY_V) == 0, "the reference of the next method is the baked model");
        ft_peft_free(q); ft_model_free(m);
    }
}

int main(void) {
    if (!tiny_model_write(P32, FT_TYPE_F32, 3) || !tiny_model_write(P16, FT_TYPE_F16, 3)) { printf("FAIL - cannot write the tiny models\n"); return 1; }
    ft_ctx_init(&CTX, NULL);
    RUN(start_point_and_switch_off);
    RUN(parameter_counts_and_freezing);
    RUN(gradients_through_the_model);
    RUN(cached_decode_matches_forward);
    RUN(adamw_fits_a_sequence);
    RUN(prompt_text_init);
    RUN(save_and_attach_gguf);
    RUN(checkpointing_gives_the_same_gradients);
    RUN(bake_then_attach_again);
    RUN(custom_method_through_the_interface);
    ft_ctx_free(CTX);
    remove(P32); remove(P16);
    return ft_test_summary("test_methods");
}
