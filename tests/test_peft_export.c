/* test_peft_export.c - PEFT's files for the methods beside LoRA, on the tiny model (GQA: 4 heads,
   2 KV heads, head dim 8): IA3, prompt tuning and prefix tuning (with and without the MLP) are
   saved with ft_peft_save_peft and attached again from the directory (ft_lora_attach_file): the
   logits are identical. The file holds PEFT's keys and shapes, the config PEFT's fields (prefix:
   token_dim = kv_dim, num_attention_heads = n_head_kv), and what lives in k's output space (IA3's
   q/k vectors, the prefix keys) in Hugging Face's order, checked index by index here: GGUF row 2j
   of a head is HF row j, row 2j+1 is HF row j + D/2. Methods PEFT lacks: FT_ERR_UNSUPPORTED (and
   the LoRA-only writers, llama.cpp's GGUF and the merged model, refuse the other methods). */
#define FINETUNE_IMPLEMENTATION
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"

static const char *PX_P32 = "build/tiny_peft_export.gguf", *DIR_ = "build/tiny_peft_export_dir";
static ft_ctx *CTX;

/* HF index of our index k in a head-permuted vector (heads of D) */
static int64_t hf_of(int64_t k) { int64_t h = k / TINY_D, j = k % TINY_D; return h * TINY_D + (j % 2 ? TINY_D / 2 + j / 2 : j / 2); }
static char *config_text(void) {
    char path[256]; size_t n; snprintf(path, sizeof path, "%s/adapter_config.json", DIR_);
    return (char *)ft_test_slurp(path, &n);
}
static int has(const char *text, const char *s) { return text && strstr(text, s) != NULL; }

/* save, attach from the directory, compare the logits; returns the new adapter (model keeps it) */
static ft_peft *round_trip(ft_model *m, ft_peft *p, const char *what) {
    static float before[12 * TINY_V], after[12 * TINY_V]; ft_peft *q = NULL; double d;
    tiny_logits(CTX, m, before);
    CHECK_OK(ft_peft_save(p, DIR_, FT_FORMAT_PEFT, "tiny-test-llama"));
    ft_peft_free(p);
    CHECK_OK(ft_peft_load(&q, m, DIR_));
    if (!q) return NULL;
    tiny_logits(CTX, m, after);
    d = tiny_maxdiff(before, after, 12 * TINY_V);
    CHECK(d == 0, "%s: logits after save + attach differ by %.3g", what, d);
    printf("    %-20s saved and attached again: max |diff| %.3g over %d logits\n", what, d, 12 * TINY_V);
    return q;
}

TEST(ia3_round_trip_and_layout) {
    ft_model *m; ft_peft *p, *q; ft_peft_opts o; ft_safetensors *st; char path[256], name[160]; const char *dt; int64_t sh[8], k; int nd, l;
    static float kvec[TINY_L][TINY_HKV * TINY_D], qvec[TINY_L][TINY_H * TINY_D]; char *cfg;
    CHECK_OK(ft_model_load(&m, PX_P32, NULL));
    memset(&o, 0, sizeof o); o.method = FT_PEFT_IA3; o.seed = 5;
    o.ia3_targets = FT_TARGET_Q | FT_TARGET_K | FT_TARGET_V | FT_TARGET_UP | FT_TARGET_DOWN;   /* q: permuted too; up: an output */
    CHECK_OK(ft_peft_attach(&p, m, &o));
    if (!p) { ft_model_free(m); return; }
    tiny_nudge(ft_peft_params(p), 0.3f);
    for (l = 0; l < TINY_L; l++) {
        memcpy(kvec[l], p->ia3[l * FT_SITE_COUNT + FT_SITE_K]->data, sizeof kvec[l]);
        memcpy(qvec[l], p->ia3[l * FT_SITE_COUNT + FT_SITE_Q]->data, sizeof qvec[l]);
    }
    q = round_trip(m, p, "ia3");
    if (q) CHECK(ft_peft_kind(q) == FT_PEFT_IA3 && ft_params_count(ft_peft_params(q)) == TINY_L * 5, "ia3: kind and 5 sites x %d layers", TINY_L);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", DIR_);
    CHECK_OK(ft_safetensors_open(&st, path));
    if (st) {
        const float *f;
        CHECK(ft_safetensors_count(st) == 1 + TINY_L * 5, "ia3: %lld entries", (long long)ft_safetensors_count(st));
        f = (const float *)ft_safetensors_get(st, "base_model.model.model.layers.1.mlp.down_proj.ia3_l", &dt, sh, &nd);
        CHECK(f && !strcmp(dt, "F32") && nd == 2 && sh[0] == 1 && sh[1] == TINY_F, "ia3: down_proj [1, in]");
        f = (const float *)ft_safetensors_get(st, "base_model.model.model.layers.0.mlp.up_proj.ia3_l", &dt, sh, &nd);
        CHECK(f && nd == 2 && sh[0] == TINY_F && sh[1] == 1, "ia3: up_proj [out, 1]");
        for (l = 0; l < TINY_L; l++) {
            int okk = 1, okq = 1;
            snprintf(name, sizeof name, "base_model.model.model.layers.%d.self_attn.k_proj.ia3_l", l);
            f = (const float *)ft_safetensors_get(st, name, &dt, sh, &nd);
            CHECK(f && nd == 2 && sh[0] == TINY_HKV * TINY_D && sh[1] == 1, "ia3: k_proj [out, 1]");
            for (k = 0; f && k < TINY_HKV * TINY_D; k++) okk &= f[hf_of(k)] == kvec[l][k];
            snprintf(name, sizeof name, "base_model.model.model.layers.%d.self_attn.q_proj.ia3_l", l);
            f = (const float *)ft_safetensors_get(st, name, &dt, sh, &nd);
            for (k = 0; f && k < TINY_H * TINY_D; k++) okq &= f[hf_of(k)] == qvec[l][k];
            CHECK(f && okk && okq, "layer %d: the q/k vectors in HF's row order", l);
            /* and ft__permute_rows agrees with the hand-made map */
            { float hf[TINY_HKV * TINY_D]; ft__permute_rows(hf, kvec[l], TINY_HKV, TINY_D, 1, 1);
              snprintf(name, sizeof name, "base_model.model.model.layers.%d.self_attn.k_proj.ia3_l", l);
              f = (const float *)ft_safetensors_get(st, name, &dt, sh, &nd);
              CHECK(f && memcmp(hf, f, sizeof hf) == 0, "ft__permute_rows(to_hf) gives the file's k vector"); }
        }
        ft_safetensors_close(st);
    }
    cfg = config_text();
    CHECK(has(cfg, "\"peft_type\": \"IA3\"") && has(cfg, "\"feedforward_modules\": [\"down_proj\"]") &&
          has(cfg, "\"target_modules\": [\"q_proj\", \"k_proj\", \"v_proj\", \"up_proj\", \"down_proj\"]") && has(cfg, "\"task_type\": \"CAUSAL_LM\""),
          "ia3 config:\n%s", cfg ? cfg : "(none)");
    free(cfg);
    if (q) ft_peft_free(q);
    {   /* one layer only: target_modules becomes a regex (IA3Config has no layers_to_transform) */
        uint64_t mask = 2;
        memset(&o, 0, sizeof o); o.method = FT_PEFT_IA3; o.layer_mask = &mask;
        CHECK_OK(ft_peft_attach(&p, m, &o));
        if (p) {
            tiny_nudge(ft_peft_params(p), 0.3f);
            q = round_trip(m, p, "ia3 layer 1 only");
            if (q) CHECK(ft_params_count(ft_peft_params(q)) == 3 && q->ia3[FT_SITE_K] == NULL && q->ia3[FT_SITE_COUNT + FT_SITE_K] != NULL, "ia3: only layer 1 attached");
            cfg = config_text();
            CHECK(has(cfg, "\"target_modules\": \".*\\\\.layers\\\\.(1)\\\\.(self_attn|mlp)\\\\.(k_proj|v_proj|down_proj)\""), "ia3 regex:\n%s", cfg ? cfg : "(none)");
            free(cfg);
            if (q) ft_peft_free(q);
        }
    }
    ft_model_free(m);
}

TEST(prompt_round_trip) {
    ft_model *m; ft_peft *p, *q; ft_peft_opts o; ft_safetensors *st; char path[256], *cfg; const char *dt; int64_t sh[8]; int nd;
    static float emb[5 * TINY_C];
    CHECK_OK(ft_model_load(&m, PX_P32, NULL));
    memset(&o, 0, sizeof o); o.method = FT_PEFT_PROMPT; o.n_virtual = 5; o.seed = 9;     /* random init, as PEFT's default */
    CHECK_OK(ft_peft_attach(&p, m, &o));
    if (!p) { ft_model_free(m); return; }
    tiny_nudge(ft_peft_params(p), 0.1f);
    memcpy(emb, p->prompt->data, sizeof emb);
    q = round_trip(m, p, "prompt");
    if (q) CHECK(ft_peft_kind(q) == FT_PEFT_PROMPT && ft_peft_virtual_tokens(q) == 5, "prompt: kind and 5 virtual tokens");
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", DIR_);
    CHECK_OK(ft_safetensors_open(&st, path));
    if (st) {
        const float *f = (const float *)ft_safetensors_get(st, "prompt_embeddings", &dt, sh, &nd);
        CHECK(f && nd == 2 && sh[0] == 5 && sh[1] == TINY_C && memcmp(f, emb, sizeof emb) == 0, "prompt_embeddings [5, n_embd], the values as they were");
        ft_safetensors_close(st);
    }
    cfg = config_text();
    CHECK(has(cfg, "\"peft_type\": \"PROMPT_TUNING\"") && has(cfg, "\"num_virtual_tokens\": 5,") && has(cfg, "\"token_dim\": 32,") &&
          has(cfg, "\"num_attention_heads\": 4,") && has(cfg, "\"num_layers\": 2,") && has(cfg, "\"num_transformer_submodules\": 1,") &&
          has(cfg, "\"prompt_tuning_init\": \"RANDOM\""), "prompt config:\n%s", cfg ? cfg : "(none)");
    free(cfg);
    if (q) ft_peft_free(q);
    ft_model_free(m);
}

TEST(prefix_round_trip_and_key_order) {
    int mlp;
    for (mlp = 0; mlp < 2; mlp++) {
        ft_model *m; ft_peft *p, *q; ft_peft_opts o; ft_safetensors *st; char path[256], *cfg; const char *dt; int64_t sh[8], W = TINY_L * 2 * TINY_HKV * TINY_D, i, c; int nd;
        static float tab[3 * TINY_L * 2 * TINY_HKV * TINY_D]; const char *what = mlp ? "prefix mlp" : "prefix";
        CHECK_OK(ft_model_load(&m, PX_P32, NULL));
        memset(&o, 0, sizeof o); o.method = FT_PEFT_PREFIX; o.n_virtual = 3; o.prefix_hidden = mlp ? 12 : 0; o.seed = 4;
        CHECK_OK(ft_peft_attach(&p, m, &o));
        if (!p) { ft_model_free(m); continue; }
        tiny_nudge(ft_peft_params(p), 0.1f);
        ft_ctx_reset(CTX);
        { ft_tensor *t = ft__prefix_table(CTX, p); if (t) memcpy(tab, t->data, sizeof tab); }   /* our table, our key order */
        q = round_trip(m, p, what);
        if (q) CHECK(ft_peft_kind(q) == FT_PEFT_PREFIX && ft_peft_virtual_tokens(q) == 3 && q->pre[1] == NULL, "%s: a plain table of 3 tokens", what);
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", DIR_);
        CHECK_OK(ft_safetensors_open(&st, path));
        if (st) {
            const float *f = (const float *)ft_safetensors_get(st, "prompt_embeddings", &dt, sh, &nd); int ok = f != NULL;
            CHECK(f && nd == 2 && sh[0] == 3 && sh[1] == W, "%s: prompt_embeddings [3, n_layer * 2 * kv_dim]", what);
            for (i = 0; ok && i < 3; i++)
                for (c = 0; c < W; c++) {
                    int64_t l2 = c / (TINY_HKV * TINY_D), k = c % (TINY_HKV * TINY_D);   /* 2l: keys, 2l+1: values */
                    int64_t hf = l2 % 2 == 0 ? l2 * TINY_HKV * TINY_D + hf_of(k) : c;
                    ok &= f[i * W + hf] == tab[i * W + c];
                }
            CHECK(ok, "%s: keys in HF's order within each head, values unchanged", what);
            ft_safetensors_close(st);
        }
        cfg = config_text();
        CHECK(has(cfg, "\"peft_type\": \"PREFIX_TUNING\"") && has(cfg, "\"token_dim\": 16,") && has(cfg, "\"num_attention_heads\": 2,") &&
              has(cfg, "\"num_layers\": 2,") && has(cfg, mlp ? "\"prefix_projection\": true" : "\"prefix_projection\": false") &&
              has(cfg, mlp ? "\"encoder_hidden_size\": 12," : "\"encoder_hidden_size\": 16,"), "%s config (GQA: kv_dim, KV heads):\n%s", what, cfg ? cfg : "(none)");
        free(cfg);
        if (q) ft_peft_free(q);
        ft_model_free(m);
    }
}

/* LoHa: our PEFT files read back give the same model; keys, shapes, HF's row order of the output
   factors of q/k, and the config PEFT's LoHaConfig reads */
TEST(loha_round_trip_and_layout) {
    ft_model *m; ft_peft *p, *q; ft_peft_opts o; ft_safetensors *st; char path[256]; const char *dt; int64_t sh[8], k; int nd;
    static float w1a[TINY_HKV * TINY_D * 3]; char *cfg;
    CHECK_OK(ft_model_load(&m, PX_P32, NULL));
    o = ft_peft_opts_default(FT_PEFT_LOHA);
    o.lora.r = 3; o.lora.alpha = 5; o.seed = 5; o.lora.targets = FT_TARGET_K | FT_TARGET_V | FT_TARGET_DOWN;
    CHECK_OK(ft_peft_attach(&p, m, &o));
    if (!p) { ft_model_free(m); return; }
    tiny_nudge(ft_peft_params(p), 0.3f);
    memcpy(w1a, p->hada[(1 * FT_SITE_COUNT + FT_SITE_K) * 4]->data, sizeof w1a);
    q = round_trip(m, p, "loha");
    if (q) CHECK(ft_peft_kind(q) == FT_PEFT_LOHA && ft_params_count(ft_peft_params(q)) == TINY_L * 3 * 4 && fabsf(q->scale - 5.0f / 3) < 1e-6f,
                 "loha: kind, 3 sites x %d layers x 4 factors, scale alpha / r", TINY_L);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", DIR_);
    CHECK_OK(ft_safetensors_open(&st, path));
    if (st) {
        const float *f;
        CHECK(ft_safetensors_count(st) == 1 + TINY_L * 3 * 4, "loha: %lld entries", (long long)ft_safetensors_count(st));
        f = (const float *)ft_safetensors_get(st, "base_model.model.model.layers.0.mlp.down_proj.hada_w1_b", &dt, sh, &nd);
        CHECK(f && !strcmp(dt, "F32") && nd == 2 && sh[0] == 3 && sh[1] == TINY_F, "loha: w1_b [r, in]");
        f = (const float *)ft_safetensors_get(st, "base_model.model.model.layers.1.self_attn.k_proj.hada_w1_a", &dt, sh, &nd);
        CHECK(f && nd == 2 && sh[0] == TINY_HKV * TINY_D && sh[1] == 3, "loha: w1_a [out, r]");
        for (k = 0; f && k < TINY_HKV * TINY_D; k++)
            if (memcmp(f + hf_of(k) * 3, w1a + k * 3, 3 * sizeof(float))) break;
        CHECK(f && k == TINY_HKV * TINY_D, "loha: k_proj's w1_a rows in HF's order (row %lld)", (long long)k);
        ft_safetensors_close(st);
    }
    cfg = config_text();
    CHECK(has(cfg, "\"peft_type\": \"LOHA\"") && has(cfg, "\"r\": 3") && has(cfg, "\"alpha\": 5") &&
          has(cfg, "\"target_modules\": [\"k_proj\", \"v_proj\", \"down_proj\"]"), "loha config:\n%s", cfg ? cfg : "(none)");
    free(cfg);
    ft_peft_free(q); ft_model_free(m);
}

TEST(lora_still_goes_through_and_the_rest_is_refused) {
    ft_model *m; ft_peft *p, *q = NULL; ft_peft_opts o; int k; ft_result r;
    CHECK_OK(ft_model_load(&m, PX_P32, NULL));
    memset(&o, 0, sizeof o); o.method = FT_PEFT_LORA; o.lora.r = 4; o.lora.targets = FT_TARGET_Q | FT_TARGET_K;
    CHECK_OK(ft_peft_attach(&p, m, &o));
    if (p) { tiny_nudge(ft_peft_params(p), 0.05f); q = round_trip(m, p, "lora"); if (q) ft_peft_free(q); }
    memset(&o, 0, sizeof o); o.method = FT_PEFT_IA3;    /* LoRA-only writers refuse the others (they crashed) */
    CHECK_OK(ft_peft_attach(&p, m, &o));
    if (p) {
        r = ft_peft_save(p, "build/tiny_peft_export_refused.gguf", FT_FORMAT_LLAMACPP, NULL);
        CHECK(r == FT_ERR_UNSUPPORTED, "ia3 into llama.cpp's LoRA GGUF: %s (%s)", ft_result_string(r), ft_last_error());
        r = ft_model_save_merged(m, "build/tiny_peft_export_refused.gguf", NULL);
        CHECK(r == FT_ERR_UNSUPPORTED, "ia3 merged: %s (%s)", ft_result_string(r), ft_last_error());
        ft_peft_free(p);
    }
    for (k = 0; k < 2; k++) {
        memset(&o, 0, sizeof o); o.method = k ? FT_PEFT_FULL : FT_PEFT_ADAPTER; o.bottleneck = 4;
        CHECK_OK(ft_peft_attach(&p, m, &o));
        if (!p) continue;
        r = ft_peft_save(p, "build/tiny_peft_export_refused", FT_FORMAT_PEFT, NULL);
        CHECK(r == FT_ERR_UNSUPPORTED && strstr(ft_last_error(), "PEFT has no"), "%s: %s (%s)", ft_peft_method_name(o.method), ft_result_string(r), ft_last_error());
        ft_peft_free(p);
    }
    ft_model_free(m);
}

TEST(bad_directories) {
    ft_model *m; ft_peft *p = NULL; FILE *f; char path[256]; ft_result r;
    static const char *cfgs[] = {
        "{\"peft_type\": \"LOHA\"}",
        "{\"peft_type\": \"PREFIX_TUNING\", \"token_dim\": 32, \"num_attention_heads\": 4, \"num_layers\": 2}",
        "{\"peft_type\": \"PROMPT_TUNING\", \"task_type\": \"SEQ_2_SEQ_LM\", \"num_transformer_submodules\": 2}",
    };
    static const ft_result want[] = {FT_ERR_UNSUPPORTED, FT_ERR_SHAPE, FT_ERR_UNSUPPORTED};
    int i;
    CHECK_OK(ft_model_load(&m, PX_P32, NULL));
    for (i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/adapter_config.json", DIR_);
        f = fopen(path, "wb"); if (f) { fputs(cfgs[i], f); fclose(f); }
        r = ft_peft_load(&p, m, DIR_);
        CHECK(r == want[i] && p == NULL, "config %d: %s (%s)", i, ft_result_string(r), ft_last_error());
        printf("    refused: %s\n", ft_last_error());
    }
    ft_model_free(m);
}

FT_TEST_MAIN(test_peft_export) {
    char path[256];
    if (!tiny_model_write(PX_P32, FT_TYPE_F32, 3)) { printf("FAIL - cannot write the tiny model\n"); return 1; }
    ft_ctx_init(&CTX, NULL);
    RUN(ia3_round_trip_and_layout);
    RUN(prompt_round_trip);
    RUN(prefix_round_trip_and_key_order);
    RUN(loha_round_trip_and_layout);
    RUN(lora_still_goes_through_and_the_rest_is_refused);
    RUN(bad_directories);
    ft_ctx_free(CTX);
    snprintf(path, sizeof path, "%s/adapter_config.json", DIR_); remove(path);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", DIR_); remove(path);
    remove(DIR_); remove(PX_P32);
    return ft_test_summary("test_peft_export");
}
