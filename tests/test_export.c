/* test_export.c - ft_model_save_merged and the adapter converters, without Python:
   - merge -> write GGUF (F32, F16, Q8_0, the base's own type) -> reload -> logits equal those
     of base + adapter (LoRA and DoRA) within the storage type's rounding; every metadata key
     and every non-linear tensor is copied byte for byte;
   - adapters: GGUF -> PEFT -> GGUF and PEFT -> GGUF -> PEFT give the same model (a subset of
     layers and sites, rsLoRA); ft_lora_attach_file tells the two apart;
   - bad input (missing file, an adapter for other shapes or layers or architecture, an
     unwritable output, a type that cannot be written) fails with a message naming the file;
   - with $FT_MODEL (SmolLM2-135M-Instruct Q4_1): the same merge round trip on the real model
     (skipped without it).
   Tolerances are relative to each position's logit range (max - min over the vocabulary):
   F32 storage 1e-5 (the merge is W + sBA in f32 either way; only the summation order differs),
   F16 2e-3 (weights rounded to 11 bits: measured ~5e-4), Q8_0 2e-2 and Q4_1 re-quantized 0.2
   (coarse 4-bit steps of the merged weights, on a tiny random model). */
#define FINETUNE_IMPLEMENTATION
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"

static const char *EX_TINY = "build/tiny_merge.gguf", *EX_TINYQ = "build/tiny_merge_q41.gguf", *EX_OUT = "build/tiny_merged.gguf";
static ft_ctx *CTX;
static const int32_t EX_IDS[12] = {1, 5, 63, 7, 7, 0, 22, 41, 9, 3, 3, 17};

static int64_t logits_of(ft_model *m, const int32_t *ids, int64_t T, float *out) {
    ft_batch b; ft_tensor *y; int old; int64_t V = ft_model_config_get(m)->n_vocab;
    memset(&b, 0, sizeof b); b.B = 1; b.T = T; b.ids = ids;
    ft_ctx_reset(CTX);
    old = ft_ctx_set_grad(CTX, 0);
    y = ft_model_forward(CTX, m, &b);
    ft_ctx_set_grad(CTX, old);
    if (!y) { printf("    forward: %s\n", ft_last_error()); return 0; }
    memcpy(out, y->data, (size_t)(T * V) * sizeof(float));
    return T * V;
}
/* the worst max|a - b| / range(b) over positions; *argmax_same: positions with the same argmax */
static double rel_range(const float *a, const float *b, int64_t T, int64_t V, int64_t *argmax_same) {
    double w = 0; int64_t t, v;
    if (argmax_same) *argmax_same = 0;
    for (t = 0; t < T; t++) {
        const float *x = a + t * V, *y = b + t * V; float mn = y[0], mx = y[0]; double d = 0; int64_t ax = 0, ay = 0;
        for (v = 0; v < V; v++) {
            mn = fminf(mn, y[v]); mx = fmaxf(mx, y[v]); d = fmax(d, fabs(x[v] - y[v]));
            if (x[v] > x[ax]) ax = v;
            if (y[v] > y[ay]) ay = v;
        }
        w = fmax(w, d / (mx - mn));
        if (argmax_same) *argmax_same += ax == ay;
    }
    return w;
}
/* a trained-looking adapter: every parameter moved off its init, deterministically */
static void perturb(ft_peft *p, float amp) {
    int i;
    for (i = 0; i < ft_params_count(ft_peft_params(p)); i++) {
        ft_tensor *t = ft_params_get(ft_peft_params(p), i); int64_t j;
        for (j = 0; j < ft_numel(t); j++) ((float *)t->data)[j] += amp * sinf((float)(j * 7 + 3 * i + 1));
    }
}
static int err_names(const char *what) { return strstr(ft_last_error(), what) != NULL; }

/* the merged file has every key of the base (general.file_type aside) with the same value, and
   every tensor that is not a merged linear weight with the same bytes */
static void check_copied(const char *base, const char *merged, int expect_type) {
    ft_gguf *a, *b; int64_t i;
    CHECK_OK(ft_gguf_open(&a, base));
    CHECK_OK(ft_gguf_open(&b, merged));
    CHECK(ft_gguf_n_kv(a) == ft_gguf_n_kv(b) || (ft_gguf_n_kv(a) + 1 == ft_gguf_n_kv(b) && ft_gguf_find(b, "general.file_type")), "keys: %lld vs %lld", (long long)ft_gguf_n_kv(a), (long long)ft_gguf_n_kv(b));
    for (i = 0; i < ft_gguf_n_kv(a); i++) {
        const ft_gguf_kv *ka = ft_gguf_kv_at(a, i), *kb; char key[128];
        snprintf(key, sizeof key, "%.*s", (int)ka->key.n, ka->key.s);
        kb = ft_gguf_find(b, key);
        CHECK(kb && kb->type == ka->type && kb->n == ka->n, "key %s copied", key);
        if (kb && strcmp(key, "general.file_type") && ka->type != FT_GGUF_STRING && ka->type != FT_GGUF_ARRAY)
            CHECK(ft_gguf_kv_int(ka, 0) == ft_gguf_kv_int(kb, 0) && ft_gguf_kv_float(ka, 0) == ft_gguf_kv_float(kb, 0), "key %s value", key);
        if (kb && ka->type == FT_GGUF_STRING)
            CHECK(kb->strs[0].n == ka->strs[0].n && memcmp(kb->strs[0].s, ka->strs[0].s, (size_t)ka->strs[0].n) == 0, "key %s value", key);
    }
    if (expect_type >= 0) { int64_t ft; CHECK(ft_gguf_get_int(b, "general.file_type", &ft) && ft == expect_type, "general.file_type %d", expect_type); }
    CHECK(ft_gguf_n_tensors(a) == ft_gguf_n_tensors(b), "tensor count");
    for (i = 0; i < ft_gguf_n_tensors(a) && i < ft_gguf_n_tensors(b); i++) {
        const ft_gguf_tensor *ta = ft_gguf_tensor_at(a, i), *tb = ft_gguf_tensor_at(b, i);
        int linear = ta->name.n > 4 && memcmp(ta->name.s, "blk.", 4) == 0 && ta->n_dims == 2;
        CHECK(ta->name.n == tb->name.n && memcmp(ta->name.s, tb->name.s, (size_t)ta->name.n) == 0, "tensor %lld: same name, same order", (long long)i);
        CHECK(ta->ne[0] == tb->ne[0] && ta->ne[1] == tb->ne[1] && ta->n_dims == tb->n_dims, "tensor %.*s: shape", (int)ta->name.n, ta->name.s);
        if (!linear)
            CHECK(ta->type == tb->type && ta->nbytes == tb->nbytes && memcmp(ta->data, tb->data, ta->nbytes) == 0, "tensor %.*s copied unchanged", (int)ta->name.n, ta->name.s);
    }
    ft_gguf_close(a); ft_gguf_close(b);
}

/* attach (LoRA or DoRA), perturb, logits; save merged as `type`, reload, logits; compare */
static double merge_round_trip(const char *base, int dora, ft_type type, int keep, double tol, ft_type want_type) {
    static float a[12 * TINY_V], b[12 * TINY_V];
    ft_model *m, *mm; ft_peft *p; ft_lora_opts o; ft_save_opts mo; double d = 1e9; int64_t same;
    CHECK_OK(ft_model_load(&m, base, NULL));
    memset(&o, 0, sizeof o); o.r = 4; o.alpha = 8; o.dora = dora;
    CHECK_OK(ft_lora_attach(&p, m, &o));
    perturb(p, 0.1f);
    logits_of(m, EX_IDS, 12, a);
    memset(&mo, 0, sizeof mo); mo.type = type; mo.keep_type = keep;
    CHECK_OK(ft_model_save_merged(m, EX_OUT, &mo));
    CHECK_OK(ft_model_load(&mm, EX_OUT, NULL));
    if (mm) {
        const ft_layer *L = ft_model_layer(mm, 1);
        /* ffn_down's rows of 48: F32 in the Q4_1 model, F16 when a 32-block type is asked for */
        ft_type down = keep && want_type == FT_TYPE_Q4_1 ? FT_TYPE_F32 : ft_type_block(want_type) == 32 ? FT_TYPE_F16 : want_type;
        CHECK(L->wq->type == want_type && L->w_down->type == down, "merged weights are %s, got %s", ft_type_name(want_type), ft_type_name(L->wq->type));
        logits_of(mm, EX_IDS, 12, b);
        d = rel_range(b, a, 12, TINY_V, &same);
        CHECK(d <= tol, "%s %s: merged vs adapter: %.3g of the range (tolerance %g)", dora ? "DoRA" : "LoRA", keep ? "base type" : ft_type_name(type), d, tol);
        CHECK(same == 12 || tol > 1e-3, "argmax agrees at %lld/12", (long long)same);
        ft_model_free(mm);
    }
    ft_peft_free(p); ft_model_free(m);
    check_copied(base, EX_OUT, keep ? -1 : type == FT_TYPE_F32 ? 0 : type == FT_TYPE_F16 ? 1 : type == FT_TYPE_Q8_0 ? 7 : type == FT_TYPE_Q4_1 ? 3 : -1);
    return d;
}

TEST(merge_writes_a_model_equal_to_base_plus_adapter) {
    int dora;
    for (dora = 0; dora < 2; dora++) {
        double f32 = merge_round_trip(EX_TINY, dora, FT_TYPE_F32, 0, 1e-5, FT_TYPE_F32);
        double f16 = merge_round_trip(EX_TINY, dora, FT_TYPE_F16, 0, 2e-3, FT_TYPE_F16);
        double q8 = merge_round_trip(EX_TINY, dora, FT_TYPE_Q8_0, 0, 2e-2, FT_TYPE_Q8_0);
        double keep = merge_round_trip(EX_TINY, dora, FT_TYPE_F16, 1, 1e-5, FT_TYPE_F32);
        double q41 = merge_round_trip(EX_TINYQ, dora, FT_TYPE_F32, 1, 0.2, FT_TYPE_Q4_1);
        double q41f = merge_round_trip(EX_TINYQ, dora, FT_TYPE_F32, 0, 1e-5, FT_TYPE_F32);
        printf("    %s merged, max |diff| / logit range: f32 %.2e, f16 %.2e, q8_0 %.2e, base type (f32) %.2e; Q4_1 base: q4_1 %.2e, f32 %.2e\n",
               dora ? "DoRA" : "LoRA", f32, f16, q8, keep, q41, q41f);
    }
}

TEST(merge_without_adapter_retypes_and_after_ft_lora_merge_is_the_same) {
    static float a[12 * TINY_V], b[12 * TINY_V];
    ft_model *m, *mm; ft_peft *p; ft_lora_opts o; ft_save_opts mo; ft_gguf *g;
    CHECK_OK(ft_model_load(&m, EX_TINYQ, NULL));
    logits_of(m, EX_IDS, 12, a);
    memset(&mo, 0, sizeof mo); mo.type = FT_TYPE_F32; mo.embeddings = 1;
    CHECK_OK(ft_model_save_merged(m, EX_OUT, &mo));                 /* the Q4_1 base dequantized */
    CHECK_OK(ft_gguf_open(&g, EX_OUT));
    CHECK(ft_gguf_find_tensor(g, "token_embd.weight")->type == FT_TYPE_F32 && ft_gguf_find_tensor(g, "blk.0.attn_q.weight")->type == FT_TYPE_F32, "--embeddings: token_embd f32 too");
    ft_gguf_close(g);
    CHECK_OK(ft_model_load(&mm, EX_OUT, NULL));
    logits_of(mm, EX_IDS, 12, b);
    CHECK(rel_range(b, a, 12, TINY_V, NULL) < 1e-5, "dequantized base: %.3g", rel_range(b, a, 12, TINY_V, NULL));
    ft_model_free(mm);
    /* an adapter already merged in place (ft_lora_merge) is written once, not twice */
    memset(&o, 0, sizeof o); o.r = 4; o.dora = 1;
    CHECK_OK(ft_lora_attach(&p, m, &o));
    perturb(p, 0.1f);
    logits_of(m, EX_IDS, 12, a);
    CHECK_OK(ft_peft_merge(p));
    mo.embeddings = 0;
    CHECK_OK(ft_model_save_merged(m, EX_OUT, &mo));
    CHECK_OK(ft_model_load(&mm, EX_OUT, NULL));
    logits_of(mm, EX_IDS, 12, b);
    CHECK(rel_range(b, a, 12, TINY_V, NULL) < 1e-5, "after ft_lora_merge: %.3g", rel_range(b, a, 12, TINY_V, NULL));
    ft_model_free(mm);
    mo.keep_type = 1;                                            /* and in the file's own type */
    CHECK_OK(ft_model_save_merged(m, EX_OUT, &mo));
    CHECK_OK(ft_gguf_open(&g, EX_OUT));
    CHECK(ft_gguf_find_tensor(g, "blk.1.ffn_up.weight")->type == FT_TYPE_Q4_1, "keep_type after ft_lora_merge: q4_1");
    ft_gguf_close(g);
    ft_peft_free(p); ft_model_free(m);
}

/* GGUF -> PEFT -> GGUF, and PEFT -> GGUF -> PEFT: the same model, the same tensors */
TEST(export_round_trips) {
    static float a[12 * TINY_V], b[12 * TINY_V];
    ft_model *m; ft_peft *p, *q; ft_lora_opts o; uint64_t mask = 2;   /* layer 1 only */
    CHECK_OK(ft_model_load(&m, EX_TINY, NULL));
    memset(&o, 0, sizeof o); o.r = 3; o.alpha = 5; o.rslora = 1; o.targets = FT_TARGET_Q | FT_TARGET_K | FT_TARGET_UP; o.layer_mask = &mask;
    CHECK_OK(ft_lora_attach(&p, m, &o));
    perturb(p, 0.1f);
    logits_of(m, EX_IDS, 12, a);
    CHECK_OK(ft_peft_save(p, "build/tiny_rt.gguf", FT_FORMAT_LLAMACPP, NULL));
    ft_peft_free(p);
    /* GGUF -> PEFT */
    CHECK_OK(ft_peft_load(&q, m, "build/tiny_rt.gguf"));
    if (!q) { ft_model_free(m); return; }
    CHECK(ft_lora_A(q, 0, FT_SITE_Q) == NULL && ft_lora_A(q, 1, FT_SITE_Q) && ft_lora_A(q, 1, FT_SITE_UP) && !ft_lora_A(q, 1, FT_SITE_V), "layers and sites from the file");
    CHECK(ft_lora_options(q)->r == 3 && fabsf(ft_lora_scale(q) - 5.0f / sqrtf(3.0f)) < 1e-6f, "rank 3, the rsLoRA scale: %g", (double)ft_lora_scale(q));
    logits_of(m, EX_IDS, 12, b);
    CHECK(rel_range(b, a, 12, TINY_V, NULL) == 0, "the GGUF adapter gives the same model");
    CHECK_OK(ft_peft_save(q, "build/tiny_rt_peft", FT_FORMAT_PEFT, "tiny-test-llama"));
    ft_peft_free(q);
    {
        size_t n; char *cfg = (char *)ft_test_slurp("build/tiny_rt_peft/adapter_config.json", &n);
        CHECK(cfg && strstr(cfg, "\"layers_to_transform\": [1]") && strstr(cfg, "\"target_modules\": [\"q_proj\", \"k_proj\", \"up_proj\"]"), "config: %s", cfg ? cfg : "(none)");
        free(cfg);
    }
    /* PEFT -> GGUF */
    CHECK_OK(ft_peft_load(&q, m, "build/tiny_rt_peft"));
    if (!q) { ft_model_free(m); return; }
    CHECK(fabsf(ft_lora_scale(q) - 5.0f / sqrtf(3.0f)) < 1e-6f, "scale kept through PEFT: %g", (double)ft_lora_scale(q));
    logits_of(m, EX_IDS, 12, b);
    CHECK(rel_range(b, a, 12, TINY_V, NULL) == 0, "the PEFT export gives the same model");
    CHECK_OK(ft_peft_save(q, "build/tiny_rt2.gguf", FT_FORMAT_LLAMACPP, NULL));
    ft_peft_free(q);
    {
        ft_gguf *g1, *g2; int64_t i;
        CHECK_OK(ft_gguf_open(&g1, "build/tiny_rt.gguf")); CHECK_OK(ft_gguf_open(&g2, "build/tiny_rt2.gguf"));
        CHECK(ft_gguf_n_tensors(g1) == 6 && ft_gguf_n_tensors(g2) == 6, "three sites: six tensors");
        for (i = 0; i < ft_gguf_n_tensors(g1); i++) {
            const ft_gguf_tensor *t1 = ft_gguf_tensor_at(g1, i), *t2 = ft_gguf_tensor_at(g2, i);
            CHECK(t1->nbytes == t2->nbytes && memcmp(t1->data, t2->data, t1->nbytes) == 0, "GGUF -> PEFT -> GGUF: tensor %.*s identical", (int)t1->name.n, t1->name.s);
        }
        {
            double a1, a2;
            CHECK(ft_gguf_get_float(g1, "adapter.lora.alpha", &a1) && ft_gguf_get_float(g2, "adapter.lora.alpha", &a2) && fabs(a1 - a2) < 1e-5, "alpha kept");
        }
        ft_gguf_close(g1); ft_gguf_close(g2);
    }
    /* DoRA: PEFT -> PEFT through attach_peft; no llama.cpp form */
    memset(&o, 0, sizeof o); o.r = 2; o.dora = 1; o.targets = FT_TARGET_V | FT_TARGET_DOWN;
    CHECK_OK(ft_lora_attach(&p, m, &o));
    perturb(p, 0.1f);
    logits_of(m, EX_IDS, 12, a);
    CHECK_OK(ft_peft_save(p, "build/tiny_rt_dora", FT_FORMAT_PEFT, NULL));
    CHECK(ft_peft_save(p, "build/tiny_rt_dora.gguf", FT_FORMAT_LLAMACPP, NULL) == FT_ERR_UNSUPPORTED && err_names("build/tiny_rt_dora.gguf"), "DoRA to GGUF: %s", ft_last_error());
    ft_peft_free(p);
    CHECK_OK(ft_peft_load(&q, m, "build/tiny_rt_dora"));
    if (q) {
        CHECK(ft_lora_options(q)->dora && ft_lora_magnitude(q, 0, FT_SITE_V), "DoRA from adapter_config.json");
        logits_of(m, EX_IDS, 12, b);
        CHECK(rel_range(b, a, 12, TINY_V, NULL) == 0, "the DoRA PEFT directory gives the same model");
        ft_peft_free(q);
    }
    ft_model_free(m);
}

/* a hand-made adapter GGUF: one pair of tensors with the given shapes, layer and architecture */
static void write_adapter(const char *path, const char *arch, int layer, int64_t in, int64_t r, int64_t out) {
    ft_gguf_writer *w; static float buf[4096]; int64_t ne[2]; char name[64];
    ft_gguf_writer_init(&w);
    ft_gguf_set_str(w, "general.type", "adapter");
    ft_gguf_set_str(w, "general.architecture", arch);
    ft_gguf_set_str(w, "adapter.type", "lora");
    ft_gguf_set_float(w, "adapter.lora.alpha", FT_GGUF_FLOAT32, 8.0);
    snprintf(name, sizeof name, "blk.%d.attn_q.weight.lora_a", layer); ne[0] = in; ne[1] = r; ft_gguf_add_tensor(w, name, FT_TYPE_F32, 2, ne, buf);
    snprintf(name, sizeof name, "blk.%d.attn_q.weight.lora_b", layer); ne[0] = r; ne[1] = out; ft_gguf_add_tensor(w, name, FT_TYPE_F32, 2, ne, buf);
    ft_gguf_write(w, path);
    ft_gguf_writer_free(w);
}

TEST(bad_inputs_name_the_file) {
    ft_model *m; ft_peft *p = NULL; ft_save_opts mo; ft_result r;
    CHECK_OK(ft_model_load(&m, EX_TINY, NULL));
    r = ft_peft_load(&p, m, "build/no_such_adapter.gguf");
    CHECK(r == FT_ERR_IO && !p && err_names("build/no_such_adapter.gguf"), "missing file: %s", ft_last_error());
    r = ft_peft_load(&p, m, "build/no_such_dir");
    CHECK(r == FT_ERR_IO && !p && err_names("build/no_such_dir"), "missing adapter: %s", ft_last_error());
    if (system("mkdir -p build/empty_dir") == 0) {
        r = ft_peft_load(&p, m, "build/empty_dir");
        CHECK(r == FT_ERR_IO && !p && err_names("build/empty_dir/adapter_config.json"), "a directory without a PEFT config: %s", ft_last_error());
    }
    write_adapter("build/bad_shape.gguf", "llama", 0, 16, 4, 32);           /* in 16, the model's q has 32 */
    r = ft_peft_load(&p, m, "build/bad_shape.gguf");
    CHECK(r == FT_ERR_SHAPE && !p && err_names("build/bad_shape.gguf") && err_names("blk.0.attn_q.weight.lora_a"), "wrong shape: %s", ft_last_error());
    write_adapter("build/bad_layer.gguf", "llama", 7, 32, 4, 32);           /* the model has 2 layers */
    r = ft_peft_load(&p, m, "build/bad_layer.gguf");
    CHECK(r == FT_ERR_SHAPE && !p && err_names("build/bad_layer.gguf") && err_names("layer 7"), "layer out of range: %s", ft_last_error());
    write_adapter("build/bad_arch.gguf", "qwen2", 0, 32, 4, 32);
    r = ft_peft_load(&p, m, "build/bad_arch.gguf");
    CHECK(r == FT_ERR_FORMAT && !p && err_names("build/bad_arch.gguf") && err_names("qwen2"), "other architecture: %s", ft_last_error());
    r = ft_peft_load(&p, m, EX_TINY);                                  /* a model, not an adapter */
    CHECK(r != FT_OK && !p && err_names(EX_TINY), "a model as adapter: %s", ft_last_error());
    {   /* a PEFT directory whose B does not fit the model */
        ft__st_entry e[2]; static float buf[4096];
        FILE *f;
        mkdir("build/bad_peft", 0755);
        e[0].name = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"; e[0].data = buf; e[0].ndim = 2; e[0].shape[0] = 4; e[0].shape[1] = 32;
        e[1].name = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"; e[1].data = buf; e[1].ndim = 2; e[1].shape[0] = 24; e[1].shape[1] = 4;
        CHECK_OK(ft__safetensors_write("build/bad_peft/adapter_model.safetensors", e, 2));
        f = fopen("build/bad_peft/adapter_config.json", "w");
        if (f) { fputs("{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": [\"q_proj\"]}\n", f); fclose(f); }
        r = ft_peft_load(&p, m, "build/bad_peft");
        CHECK(r == FT_ERR_SHAPE && !p && err_names("build/bad_peft/adapter_model.safetensors") && err_names("q_proj.lora_B"), "PEFT shape: %s", ft_last_error());
    }
    memset(&mo, 0, sizeof mo); mo.type = FT_TYPE_F16;
    {   /* a missing directory is made (mkdir -p); a file where a directory should be is named */
        FILE *f = fopen("build/a_file", "w");
        if (f) fclose(f);
        r = ft_model_save_merged(m, "build/a_file/merged.gguf", &mo);
        CHECK(r == FT_ERR_IO && err_names("build/a_file") && err_names("not a directory"), "unwritable output: %s", ft_last_error());
        remove("build/new_dir/sub/merged.gguf");
        CHECK_OK(ft_model_save_merged(m, "build/new_dir/sub/merged.gguf", &mo));
        f = fopen("build/new_dir/sub/merged.gguf", "rb");
        CHECK(f != NULL, "the merged model in a new directory");
        if (f) fclose(f);
    }
    mo.type = FT_TYPE_Q6_K;
    r = ft_model_save_merged(m, EX_OUT, &mo);
    CHECK(r == FT_ERR_UNSUPPORTED && err_names(EX_OUT) && err_names("q6_K"), "a type without an encoder: %s", ft_last_error());
    ft_model_free(m);
}

/* SmolLM2-135M-Instruct (Q4_1): merge a LoRA on every linear layer, write F16, reload */
TEST(real_model_merge_round_trip) {
    const char *path = getenv("FT_MODEL"); ft_model *m, *mm; ft_peft *p; ft_lora_opts o; ft_save_opts mo;
    static int32_t ids[24]; float *a, *b; int64_t V, i, same; double d;
    if (!path) { printf("    skipped: FT_MODEL is not set (tools/fetch-model)\n"); return; }
    CHECK_OK(ft_model_load(&m, path, NULL));
    if (!m) return;
    V = ft_model_config_get(m)->n_vocab;
    for (i = 0; i < 24; i++) ids[i] = (int32_t)((i * 7919 + 13) % V);
    a = (float *)malloc((size_t)(24 * V) * sizeof(float)); b = (float *)malloc((size_t)(24 * V) * sizeof(float));
    memset(&o, 0, sizeof o); o.r = 8; o.alpha = 16;
    CHECK_OK(ft_lora_attach(&p, m, &o));
    perturb(p, 0.02f);
    logits_of(m, ids, 24, a);
    ft_peft_set_enabled(p, 0);
    logits_of(m, ids, 24, b);
    ft_peft_set_enabled(p, 1);
    d = rel_range(a, b, 24, V, NULL);
    CHECK(d > 0.02, "the adapter changes the model: %.3g of the range", d);
    memset(&mo, 0, sizeof mo); mo.type = FT_TYPE_F16;
    CHECK_OK(ft_model_save_merged(m, "build/smollm2_merged_f16.gguf", &mo));
    ft_peft_free(p); ft_model_free(m);
    CHECK_OK(ft_model_load(&mm, "build/smollm2_merged_f16.gguf", NULL));
    if (mm) {
        CHECK(ft_model_layer(mm, 29)->w_gate->type == FT_TYPE_F16 && ft_model_tok_embd(mm)->type == FT_TYPE_Q8_0, "f16 linear weights, token_embd unchanged");
        CHECK(ft_model_tokenizer(mm) && ft_tokenizer_n_vocab(ft_model_tokenizer(mm)) == V && ft_model_chat_template(mm), "tokenizer and chat template copied");
        logits_of(mm, ids, 24, b);
        d = rel_range(b, a, 24, V, &same);
        printf("    SmolLM2 + LoRA r=8 (effect on the logits above), merged as F16: max |diff| / range %.2e, argmax %lld/24\n", d, (long long)same);
        CHECK(d < 5e-3 && same >= 23, "merged F16 vs base + adapter: %.3g of the range, argmax %lld/24", d, (long long)same);
        ft_model_free(mm);
    }
    check_copied(path, "build/smollm2_merged_f16.gguf", 1);
    remove("build/smollm2_merged_f16.gguf");
    free(a); free(b);
}

/* the tiny model with its 2-D weights in Q4_1 where the rows allow (ffn_down's 48 do not: F32) */
static int write_q41(const char *src, const char *dst) {
    ft_gguf *g; ft_gguf_writer *w; int64_t i; void *bufs[64]; int nb = 0, ok;
    if (ft_gguf_open(&g, src) != FT_OK || ft_gguf_writer_init(&w) != FT_OK) return 0;
    for (i = 0; i < ft_gguf_n_kv(g); i++) ft_gguf_copy_kv(w, ft_gguf_kv_at(g, i));
    for (i = 0; i < ft_gguf_n_tensors(g); i++) {
        const ft_gguf_tensor *t = ft_gguf_tensor_at(g, i); char name[96];
        snprintf(name, sizeof name, "%.*s", (int)t->name.n, t->name.s);
        if (t->n_dims == 2 && t->ne[0] % 32 == 0) {
            bufs[nb] = malloc(ft_type_row_bytes(FT_TYPE_Q4_1, t->ne[0]) * (size_t)t->ne[1]);
            ft__quant_q4_1((const float *)t->data, bufs[nb], t->ne[0] * t->ne[1]);
            ft_gguf_add_tensor(w, name, FT_TYPE_Q4_1, 2, t->ne, bufs[nb++]);
        } else ft_gguf_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data);
    }
    ok = ft_gguf_write(w, dst) == FT_OK;
    ft_gguf_writer_free(w); ft_gguf_close(g);
    while (nb > 0) free(bufs[--nb]);
    return ok;
}

FT_TEST_MAIN(test_export) {
    ft_ctx_opts o;
    memset(&o, 0, sizeof o); o.n_threads = 2;
    if (!tiny_model_write(EX_TINY, FT_TYPE_F32, 11)) { printf("cannot write the tiny model: %s\n", ft_last_error()); return 1; }
    ft_ctx_init(&CTX, &o);
    if (!write_q41(EX_TINY, EX_TINYQ)) { printf("cannot write the Q4_1 tiny model: %s\n", ft_last_error()); return 1; }
    RUN(merge_writes_a_model_equal_to_base_plus_adapter);
    RUN(merge_without_adapter_retypes_and_after_ft_lora_merge_is_the_same);
    RUN(export_round_trips);
    RUN(bad_inputs_name_the_file);
    RUN(real_model_merge_round_trip);
    ft_ctx_free(CTX);
    remove(EX_TINY); remove(EX_TINYQ); remove(EX_OUT);
    return ft_test_summary("test_export");
}
