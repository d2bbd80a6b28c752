/* test_merge_models.c - model merging ([merge]): linear, task arithmetic, TIES and DARE against mergekit's
   own results (tests/fixtures/merge.txt from tools/ref/merge_fixtures.py, DARE with fixed masks),
   the tie rule at TIES's cut, DARE's drawn masks, and ft_merge_models on tiny models and LoRA
   adapters: every method reloads, every tensor equals the kernel applied by hand, linear (1, 0)
   gives input A back bit for bit, an adapter merges as ft_lora_merge folds it, errors name files. */
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"

static const char *FIX = "tests/fixtures/merge.txt";
static const char *PB = "build/tiny_merge_base.gguf", *PA = "build/tiny_merge_a.gguf", *PC = "build/tiny_merge_b.gguf";
static const char *POUT = "build/tiny_merge_out.gguf";

/* ---- the fixture file ------------------------------------------------------------------------ */
typedef struct fx_case {
    char name[64], method[32], rescale[16], sign[16];
    int n, k, normalize, nx, nkeep; double lambda, w[8], d[8];
    float *base, *x[8], *out; unsigned char *keep[8];
} fx_case;

static float *read_floats(char **p, int n) {
    float *v = (float *)malloc((size_t)n * sizeof(float)); int i;
    for (i = 0; i < n; i++) v[i] = (float)strtod(*p, p);
    return v;
}
static void fx_free(fx_case *c) {
    int i;
    free(c->base); free(c->out);
    for (i = 0; i < 8; i++) { free(c->x[i]); free(c->keep[i]); }
    memset(c, 0, sizeof *c);
}

/* the next case after *p (0 at the end) */
static int fx_next(char **p, fx_case *c) {
    char key[32]; int i, len;
    memset(c, 0, sizeof *c);
    c->lambda = 1;
    while (**p) {
        while (**p == ' ' || **p == '\n') (*p)++;
        if (**p == '#') { while (**p && **p != '\n') (*p)++; continue; }
        if (!**p || sscanf(*p, "%31s%n", key, &len) != 1) break;
        *p += len;
        if (!strcmp(key, "case")) { sscanf(*p, "%63s%n", c->name, &len); *p += len; }
        else if (!strcmp(key, "method")) { sscanf(*p, "%31s%n", c->method, &len); *p += len; }
        else if (!strcmp(key, "rescale")) { sscanf(*p, "%15s%n", c->rescale, &len); *p += len; }
        else if (!strcmp(key, "sign")) { sscanf(*p, "%15s%n", c->sign, &len); *p += len; }
        else if (!strcmp(key, "n")) c->n = (int)strtol(*p, p, 10);
        else if (!strcmp(key, "k")) c->k = (int)strtol(*p, p, 10);
        else if (!strcmp(key, "normalize")) c->normalize = (int)strtol(*p, p, 10);
        else if (!strcmp(key, "lambda")) c->lambda = strtod(*p, p);
        else if (!strcmp(key, "weights")) for (i = 0; i < c->k; i++) c->w[i] = strtod(*p, p);
        else if (!strcmp(key, "densities")) for (i = 0; i < c->k; i++) c->d[i] = strtod(*p, p);
        else if (!strcmp(key, "base")) c->base = read_floats(p, c->n);
        else if (!strcmp(key, "x") && c->nx < 8) c->x[c->nx++] = read_floats(p, c->n);
        else if (!strcmp(key, "keep") && c->nkeep < 8) {
            unsigned char *m = (unsigned char *)malloc((size_t)c->n);
            for (i = 0; i < c->n; i++) m[i] = (unsigned char)strtol(*p, p, 10);
            c->keep[c->nkeep++] = m;
        } else if (!strcmp(key, "out")) c->out = read_floats(p, c->n);
        else if (!strcmp(key, "end")) return 1;
        else while (**p && **p != '\n') (*p)++;
    }
    return 0;
}

static void opts_of(const fx_case *c, ft_merge_opts *o) {
    memset(o, 0, sizeof *o);
    CHECK(ft_merge_method_parse(c->method, &o->method), "method %s", c->method);
    o->normalize = c->normalize ? 1 : -1;
    o->rescale = !strcmp(c->rescale, "l1") ? FT_MERGE_RESCALE_L1 : !strcmp(c->rescale, "density") ? FT_MERGE_RESCALE_DENSITY : FT_MERGE_RESCALE_NONE;
    o->sign = !strcmp(c->sign, "count") ? FT_MERGE_SIGN_COUNT : FT_MERGE_SIGN_SUM;
    o->lambda = (float)c->lambda;
}

TEST(mergekit_fixtures) {
    size_t sz; char *txt = (char *)ft_test_slurp(FIX, &sz), *p; fx_case c; int ncase = 0, seen[5] = {0};
    CHECK(txt != NULL, "cannot read %s", FIX);
    if (!txt) return;
    p = txt;
    while (fx_next(&p, &c)) {
        ft_merge_opts o; float *out = (float *)malloc((size_t)c.n * sizeof(float)); long worst; double e;
        opts_of(&c, &o);
        CHECK(c.nx == c.k && c.base && c.out, "%s: malformed case", c.name);
        CHECK_OK(ft_merge_tensor(out, c.base, (const float *const *)c.x, c.k, c.n, c.w, c.d,
                                 c.nkeep ? (const unsigned char *const *)c.keep : NULL, NULL, &o));
        e = ft_test_close(out, c.out, c.n, 1e-7, 1e-6, &worst);
        CHECK(e <= 1, "%s: element %ld is %.9g, mergekit %.9g (%.3g of the tolerance)", c.name, worst, worst >= 0 ? out[worst] : 0.0,
              worst >= 0 ? c.out[worst] : 0.0, e);
        printf("# %-24s max err / tol %.3g\n", c.name, e);
        seen[o.method]++;
        ncase++;
        free(out); fx_free(&c);
    }
    CHECK(ncase >= 20, "%d cases", ncase);
    CHECK(seen[0] && seen[1] && seen[2] && seen[3] && seen[4], "every method has cases");
    free(txt);
}

/* a tie at TIES's cut: the lowest indices survive (argsort(stable=True)), exactly k are kept */
TEST(ties_cut_keeps_lowest_indices) {
    float base[6] = {0}, x0[6] = {1, -2, 2, 2, 1, -0.5f}, x1[6] = {0}, out[6];
    const float *x[2] = {x0, x1}; double w[2] = {1, 0}, d[2] = {0.4, 1};
    ft_merge_opts o; memset(&o, 0, sizeof o);
    o.method = FT_MERGE_TIES; o.normalize = -1;
    CHECK_OK(ft_merge_tensor(out, base, x, 2, 6, w, d, NULL, NULL, &o));    /* k = int(0.4 * 6) = 2 */
    CHECK(out[0] == 0 && out[1] == -2 && out[2] == 2 && out[3] == 0 && out[4] == 0 && out[5] == 0,
          "%g %g %g %g %g %g", out[0], out[1], out[2], out[3], out[4], out[5]);
    d[0] = 0.01;                                                             /* k = max(1, 0) = 1 */
    CHECK_OK(ft_merge_tensor(out, base, x, 2, 6, w, d, NULL, NULL, &o));
    CHECK(out[1] == -2 && out[2] == 0 && out[3] == 0, "k = 1: %g %g %g", out[1], out[2], out[3]);
}

/* DARE's own masks: keep fraction ~ density, L1 rescale restores |d|_1, the seed repeats them */
TEST(dare_drawn_masks) {
    enum { N = 100000 };
    float *base = (float *)calloc(N, 4), *x = (float *)malloc(N * 4), *o1 = (float *)malloc(N * 4), *o2 = (float *)malloc(N * 4);
    const float *xs[1]; double w[1] = {1}, d[1] = {0.3}, l1x = 0, l1o = 0; int64_t i, kept = 0; ft_rng r;
    ft_merge_opts o; memset(&o, 0, sizeof o);
    ft_rng_seed(&r, 7);
    for (i = 0; i < N; i++) x[i] = ft_rng_normal(&r);
    xs[0] = x;
    o.method = FT_MERGE_DARE_LINEAR; o.seed = 99;
    CHECK_OK(ft_merge_tensor(o1, base, xs, 1, N, w, d, NULL, NULL, &o));
    CHECK_OK(ft_merge_tensor(o2, base, xs, 1, N, w, d, NULL, NULL, &o));
    for (i = 0; i < N; i++) { kept += o1[i] != 0; l1x += fabs(x[i]); l1o += fabs(o1[i]); }
    CHECK(fabs((double)kept / N - 0.3) < 0.01, "kept %.4f", (double)kept / N);
    CHECK(fabs(l1o / l1x - 1) < 1e-5, "L1 ratio %.7f", l1o / l1x);
    CHECK(memcmp(o1, o2, N * 4) == 0, "same seed, same masks");
    o.rescale = FT_MERGE_RESCALE_DENSITY;
    CHECK_OK(ft_merge_tensor(o2, base, xs, 1, N, w, d, NULL, NULL, &o));
    for (i = 0; i < N; i++) if (o2[i] != 0) { CHECK(o2[i] == x[i] / 0.3f, "1/density at %lld", (long long)i); break; }
    free(base); free(x); free(o1); free(o2);
}

/* ---- ft_merge_models on tiny models ------------------------------------------------------------- */
static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    while (*s) { h ^= (unsigned char)*s++; h *= 0x100000001b3ull; }
    return h;
}
static float *tensor_f32(ft_gguf *g, const char *name, int64_t *n) {
    const ft_gguf_tensor *t = ft_gguf_find_tensor(g, name); float *v; int64_t i;
    if (!t) return NULL;
    *n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    v = (float *)malloc((size_t)*n * 4);
    if (t->type == FT_TYPE_F32) memcpy(v, t->data, (size_t)*n * 4);
    else if (t->type == FT_TYPE_F16) for (i = 0; i < *n; i++) v[i] = ft_fp16_to_fp32(((const uint16_t *)t->data)[i]);
    else { free(v); return NULL; }
    return v;
}

TEST(models_every_method) {
    static const ft_merge_method methods[5] = {FT_MERGE_LINEAR, FT_MERGE_TASK, FT_MERGE_TIES, FT_MERGE_DARE_LINEAR, FT_MERGE_DARE_TIES};
    ft_merge_input in[2]; int mi;
    in[0].path = PA; in[0].weight = 0.6; in[0].density = 0.5;
    in[1].path = PC; in[1].weight = 0.4; in[1].density = 0.7;
    for (mi = 0; mi < 5; mi++) {
        ft_merge_opts o; ft_merge_stats st; ft_model *m = NULL; ft_gguf *gb, *ga, *gc, *go; int64_t t, bad = 0;
        memset(&o, 0, sizeof o); o.method = methods[mi]; o.seed = 1234;
        CHECK_OK(ft_merge_models(POUT, PB, in, 2, &o, &st));
        CHECK(st.merged == 2 + 9 * TINY_L && st.copied == 0, "%s: %lld merged, %lld copied", ft_merge_method_name(o.method), (long long)st.merged, (long long)st.copied);
        CHECK_OK(ft_model_load(&m, POUT, NULL));
        if (m) CHECK(ft_model_config_get(m)->n_layer == TINY_L, "reloads");
        ft_model_free(m);
        if (ft_gguf_open(&gb, PB) != FT_OK || ft_gguf_open(&ga, PA) != FT_OK || ft_gguf_open(&gc, PC) != FT_OK || ft_gguf_open(&go, POUT) != FT_OK) { CHECK(0, "open"); return; }
        {   ft_gguf_str s;
            CHECK(ft_gguf_get_str(go, "general.name", &s) && s.n == 15 && !memcmp(s.s, "tiny-test-llama", 15), "metadata copied");
            CHECK(ft_gguf_get_str(go, "finetune.merge.method", &s) && s.n == strlen(ft_merge_method_name(o.method)), "method recorded"); }
        for (t = 0; t < ft_gguf_n_tensors(gb); t++) {
            char name[96]; const ft_gguf_tensor *bt = ft_gguf_tensor_at(gb, t); int64_t n, n2, n3, n4;
            float *b, *a, *c, *out, *ref; const float *xs[2]; double w[2] = {0.6, 0.4}, d[2] = {0.5, 0.7}; ft_rng r;
            memcpy(name, bt->name.s, bt->name.n); name[bt->name.n] = 0;
            b = tensor_f32(gb, name, &n); a = tensor_f32(ga, name, &n2); c = tensor_f32(gc, name, &n3); out = tensor_f32(go, name, &n4);
            if (!b || !a || !c || !out) { CHECK(0, "%s missing", name); bad++; continue; }
            ref = (float *)malloc((size_t)n * 4);
            xs[0] = a; xs[1] = c;
            ft_rng_seed(&r, o.seed ^ fnv1a(name));
            CHECK_OK(ft_merge_tensor(ref, b, xs, 2, n, w, d, NULL, &r, &o));
            if (memcmp(ref, out, (size_t)n * 4) != 0) bad++;
            free(b); free(a); free(c); free(out); free(ref);
        }
        CHECK(bad == 0, "%s: %lld tensors differ from the kernel by hand", ft_merge_method_name(o.method), (long long)bad);
        ft_gguf_close(gb); ft_gguf_close(ga); ft_gguf_close(gc); ft_gguf_close(go);
    }
}

static int same_tensor_bytes(const char *p1, const char *p2, const char *name) {
    ft_gguf *g1, *g2; const ft_gguf_tensor *a, *b; int same;
    if (ft_gguf_open(&g1, p1) != FT_OK) return 0;
    if (ft_gguf_open(&g2, p2) != FT_OK) { ft_gguf_close(g1); return 0; }
    a = ft_gguf_find_tensor(g1, name); b = ft_gguf_find_tensor(g2, name);
    same = a && b && a->type == b->type && a->nbytes == b->nbytes && memcmp(a->data, b->data, a->nbytes) == 0;
    ft_gguf_close(g1); ft_gguf_close(g2);
    return same;
}

TEST(linear_one_zero_is_input_a) {
    ft_merge_input in[2]; ft_merge_opts o; ft_gguf *ga; int64_t t; int ok = 1;
    in[0].path = PA; in[0].weight = 1; in[0].density = 0;
    in[1].path = PC; in[1].weight = 0; in[1].density = 0;
    memset(&o, 0, sizeof o);
    CHECK_OK(ft_merge_models(POUT, PB, in, 2, &o, NULL));
    CHECK_OK(ft_gguf_open(&ga, PA));
    for (t = 0; t < ft_gguf_n_tensors(ga); t++) {
        char name[96]; const ft_gguf_tensor *x = ft_gguf_tensor_at(ga, t);
        memcpy(name, x->name.s, x->name.n); name[x->name.n] = 0;
        if (!same_tensor_bytes(PA, POUT, name)) { ok = 0; printf("    %s differs\n", name); }
    }
    ft_gguf_close(ga);
    CHECK(ok, "linear (1, 0) reproduces input A exactly");
    /* f16 models written as f16: the same */
    CHECK(tiny_model_write("build/tiny_merge_a16.gguf", FT_TYPE_F16, 2) && tiny_model_write("build/tiny_merge_b16.gguf", FT_TYPE_F16, 3), "write f16");
    in[0].path = "build/tiny_merge_a16.gguf"; in[1].path = "build/tiny_merge_b16.gguf"; o.type = FT_TYPE_F16;
    CHECK_OK(ft_merge_models(POUT, PB, in, 2, &o, NULL));
    CHECK(same_tensor_bytes(in[0].path, POUT, "blk.1.ffn_down.weight") && same_tensor_bytes(in[0].path, POUT, "token_embd.weight") &&
          same_tensor_bytes(in[0].path, POUT, "blk.0.attn_norm.weight"), "f16 (1, 0) reproduces A");
}

TEST(q8_0_output) {
    ft_merge_input in[2]; ft_merge_opts o; ft_model *m = NULL; ft_gguf *g; const ft_gguf_tensor *t;
    float *ref, *q; int64_t n, i; double maxerr = 0, maxabs = 0;
    in[0].path = PA; in[0].weight = 0.5; in[0].density = 0;
    in[1].path = PC; in[1].weight = 0.5; in[1].density = 0;
    memset(&o, 0, sizeof o); o.method = FT_MERGE_TASK;
    CHECK_OK(ft_merge_models(POUT, PB, in, 2, &o, NULL));
    CHECK_OK(ft_gguf_open(&g, POUT));
    ref = tensor_f32(g, "blk.0.ffn_up.weight", &n);
    ft_gguf_close(g);
    o.type = FT_TYPE_Q8_0;
    CHECK_OK(ft_merge_models(POUT, PB, in, 2, &o, NULL));
    CHECK_OK(ft_gguf_open(&g, POUT));
    t = ft_gguf_find_tensor(g, "blk.0.ffn_up.weight");
    CHECK(t && t->type == FT_TYPE_Q8_0, "2-D weights in q8_0");
    CHECK(ft_gguf_find_tensor(g, "blk.0.ffn_norm.weight")->type == FT_TYPE_F32, "norms stay f32");
    if (t && ref) {
        q = (float *)malloc((size_t)n * 4);
        for (i = 0; i < n / 32; i++) {   /* decode Q8_0 by hand: f16 d, 32 int8 */
            const unsigned char *blk = (const unsigned char *)t->data + i * 34; uint16_t h; int j;
            memcpy(&h, blk, 2);
            for (j = 0; j < 32; j++) q[i * 32 + j] = ft_fp16_to_fp32(h) * (float)(int8_t)blk[2 + j];
        }
        for (i = 0; i < n; i++) { maxerr = fmax(maxerr, fabs(q[i] - ref[i])); maxabs = fmax(maxabs, fabs(ref[i])); }
        CHECK(maxerr <= maxabs / 127 * 0.51 + 1e-6, "q8_0 error %g (max |x| %g)", maxerr, maxabs);
        free(q);
    }
    free(ref);
    ft_gguf_close(g);
    CHECK_OK(ft_model_load(&m, POUT, NULL));
    ft_model_free(m);
}

/* a LoRA adapter: merged into the base first it equals ft_lora_merge's weights; untouched tensors
   are copied; both adapter files (llama.cpp's and finetune.h's) give the same model */
TEST(lora_adapters) {
    ft_model *m = NULL; ft_peft *p = NULL; ft_lora_opts lo; ft_merge_input in[2]; ft_merge_opts o; ft_merge_stats st;
    ft_rng r; int i; int64_t j, n;
    const char *LA = "build/tiny_merge_lora.gguf", *LF = "build/tiny_merge_lora_ft.gguf", *LB = "build/tiny_merge_lora2.gguf";
    float *merged_q = NULL, *merged_dn = NULL, *d1 = NULL;
    CHECK_OK(ft_model_load(&m, PB, NULL));
    if (!m) return;
    memset(&lo, 0, sizeof lo); lo.r = 4; lo.alpha = 8; lo.targets = FT_TARGET_Q | FT_TARGET_V | FT_TARGET_DOWN;
    CHECK_OK(ft_lora_attach(&p, m, &lo));
    if (!p) { ft_model_free(m); return; }
    ft_rng_seed(&r, 5);
    for (i = 0; i < ft_params_count(ft_peft_params(p)); i++) {
        ft_tensor *t = ft_params_get(ft_peft_params(p), i);
        for (j = 0; j < ft_numel(t); j++) ((float *)t->data)[j] = 0.2f * ft_rng_normal(&r);
    }
    CHECK_OK(ft_peft_save(p, LA, FT_FORMAT_LLAMACPP, NULL));
    CHECK_OK(ft_peft_save(p, LF, FT_FORMAT_FINETUNE, NULL));
    CHECK_OK(ft_peft_merge(p));
    n = ft_numel(ft_model_layer(m, 1)->wq);
    merged_q = (float *)malloc((size_t)n * 4); memcpy(merged_q, ft_model_layer(m, 1)->wq->data, (size_t)n * 4);
    merged_dn = (float *)malloc((size_t)ft_numel(ft_model_layer(m, 0)->w_down) * 4);
    memcpy(merged_dn, ft_model_layer(m, 0)->w_down->data, (size_t)ft_numel(ft_model_layer(m, 0)->w_down) * 4);
    ft_peft_free(p); ft_model_free(m);

    /* linear, weight 1: exactly W + s B A as ft_lora_merge computes it */
    memset(&o, 0, sizeof o);
    in[0].path = LA; in[0].weight = 1; in[0].density = 0;
    CHECK_OK(ft_merge_models(POUT, PB, in, 1, &o, &st));
    CHECK(st.merged == 3 * TINY_L, "%lld merged", (long long)st.merged);
    {   ft_gguf *g; float *q, *dn; int64_t nq, nd;
        CHECK_OK(ft_gguf_open(&g, POUT));
        q = tensor_f32(g, "blk.1.attn_q.weight", &nq); dn = tensor_f32(g, "blk.0.ffn_down.weight", &nd);
        CHECK(q && memcmp(q, merged_q, (size_t)n * 4) == 0, "attn_q == ft_lora_merge");
        CHECK(dn && memcmp(dn, merged_dn, (size_t)nd * 4) == 0, "ffn_down == ft_lora_merge");
        free(q); free(dn); ft_gguf_close(g); }
    CHECK(same_tensor_bytes(PB, POUT, "blk.0.attn_k.weight") && same_tensor_bytes(PB, POUT, "token_embd.weight"), "untouched tensors copied");
    CHECK_OK(ft_merge_models("build/tiny_merge_out2.gguf", PB, (in[0].path = LF, in), 1, &o, NULL));
    CHECK(same_tensor_bytes(POUT, "build/tiny_merge_out2.gguf", "blk.1.attn_q.weight") &&
          same_tensor_bytes(POUT, "build/tiny_merge_out2.gguf", "blk.0.ffn_down.weight"), "finetune.h's adapter file == llama.cpp's");

    /* task arithmetic over the adapter == the same within rounding; on the deltas: base + sum of both */
    {   ft_model *m2 = NULL; ft_peft *p2 = NULL; ft_gguf *g, *gb; float *q, *b, *q1; int64_t nq; double e; long worst;
        CHECK_OK(ft_model_load(&m2, PB, NULL));
        lo.targets = FT_TARGET_Q | FT_TARGET_K; lo.seed = 3;
        CHECK_OK(ft_lora_attach(&p2, m2, &lo));
        for (i = 0; i < ft_params_count(ft_peft_params(p2)); i++) {
            ft_tensor *t = ft_params_get(ft_peft_params(p2), i);
            for (j = 0; j < ft_numel(t); j++) ((float *)t->data)[j] = 0.2f * ft_rng_normal(&r);
        }
        CHECK_OK(ft_peft_save(p2, LB, FT_FORMAT_LLAMACPP, NULL));
        CHECK_OK(ft_peft_merge(p2));
        q1 = (float *)malloc((size_t)n * 4); memcpy(q1, ft_model_layer(m2, 1)->wq->data, (size_t)n * 4);
        ft_peft_free(p2); ft_model_free(m2);
        in[0].path = LA; in[1].path = LB; in[1].weight = 1; in[1].density = 0;
        o.method = FT_MERGE_TASK;
        CHECK_OK(ft_merge_models(POUT, PB, in, 2, &o, &st));
        CHECK(st.merged == 4 * TINY_L, "q, k, v, down: %lld", (long long)st.merged);
        CHECK_OK(ft_gguf_open(&g, POUT)); CHECK_OK(ft_gguf_open(&gb, PB));
        q = tensor_f32(g, "blk.1.attn_q.weight", &nq); b = tensor_f32(gb, "blk.1.attn_q.weight", &nq);
        d1 = (float *)malloc((size_t)n * 4);
        for (j = 0; j < n; j++) d1[j] = b[j] + (merged_q[j] - b[j]) + (q1[j] - b[j]);
        e = ft_test_close(q, d1, (long)n, 1e-6, 1e-6, &worst);
        CHECK(e <= 1, "task: W + d1 + d2 (%.3g)", e);
        ft_gguf_close(g); free(q);
        o.lora_deltas = 1;
        CHECK_OK(ft_merge_models(POUT, PB, in, 2, &o, NULL));
        CHECK_OK(ft_gguf_open(&g, POUT));
        q = tensor_f32(g, "blk.1.attn_q.weight", &nq);
        e = ft_test_close(q, d1, (long)n, 1e-6, 1e-6, &worst);
        CHECK(e <= 1, "task on the deltas (%.3g)", e);
        ft_gguf_close(g); ft_gguf_close(gb); free(q); free(b); free(q1);
        /* TIES on deltas of two adapters and a model together reloads */
        o.method = FT_MERGE_DARE_TIES; in[0].density = 0.5; in[1].density = 0.5;
        {   ft_merge_input in3[3]; ft_model *mm = NULL;
            in3[0] = in[0]; in3[1] = in[1]; in3[2].path = PA; in3[2].weight = 0.3; in3[2].density = 0.5;
            CHECK_OK(ft_merge_models(POUT, PB, in3, 3, &o, NULL));
            CHECK_OK(ft_model_load(&mm, POUT, NULL));
            ft_model_free(mm); }
    }
    free(merged_q); free(merged_dn); free(d1);
}

/* full fine-tuning's file (finetune.h's adapter GGUF with some of the weights): those tensors
   replace the base's, the frozen ones stay the base's */
TEST(full_finetune_input) {
    ft_model *m = NULL; ft_peft *p = NULL; ft_peft_opts po; ft_merge_input in[1]; ft_merge_opts o; ft_merge_stats st;
    const char *LFULL = "build/tiny_merge_full.gguf"; float *want = NULL, *got; int64_t n = 0, j; int i;
    CHECK_OK(ft_model_load(&m, PB, NULL));
    if (!m) return;
    memset(&po, 0, sizeof po); po.method = FT_PEFT_FULL; po.freeze = "token_embd.*,blk.0.*";
    CHECK_OK(ft_peft_attach(&p, m, &po));
    if (!p) { ft_model_free(m); return; }
    for (i = 0; i < ft_params_count(ft_peft_params(p)); i++) {
        ft_tensor *t = ft_params_get(ft_peft_params(p), i);
        for (j = 0; j < ft_numel(t); j++) ((float *)t->data)[j] += 0.01f * (float)(j % 7);
        if (!strcmp(t->name, "blk.1.ffn_up.weight")) { n = ft_numel(t); want = (float *)malloc((size_t)n * 4); memcpy(want, t->data, (size_t)n * 4); }
    }
    CHECK_OK(ft_peft_save(p, LFULL, FT_FORMAT_FINETUNE, NULL));
    ft_peft_free(p); ft_model_free(m);
    memset(&o, 0, sizeof o);
    in[0].path = LFULL; in[0].weight = 1; in[0].density = 0;
    CHECK_OK(ft_merge_models(POUT, PB, in, 1, &o, &st));
    CHECK(st.copied == 1 + 9 && st.merged == 1 + 9, "%lld merged (blk.1 and output_norm), %lld copied", (long long)st.merged, (long long)st.copied);
    {   ft_gguf *g; int64_t n2;
        CHECK_OK(ft_gguf_open(&g, POUT));
        got = tensor_f32(g, "blk.1.ffn_up.weight", &n2);
        CHECK(want && got && n2 == n && memcmp(want, got, (size_t)n * 4) == 0, "trained tensor taken");
        free(got); ft_gguf_close(g); }
    CHECK(same_tensor_bytes(PB, POUT, "blk.0.ffn_up.weight") && same_tensor_bytes(PB, POUT, "token_embd.weight"), "frozen ones are the base's");
    free(want);
}

TEST(errors_name_the_files) {
    ft_merge_input in[2]; ft_merge_opts o; ft_result r; ft_gguf *g; ft_gguf_writer *w; int64_t i;
    memset(&o, 0, sizeof o); o.method = FT_MERGE_TIES;
    in[0].path = PA; in[0].weight = 1; in[0].density = 0.5;
    in[1].path = "build/no_such_model.gguf"; in[1].weight = 1; in[1].density = 0.5;
    r = ft_merge_models(POUT, PB, in, 2, &o, NULL);
    CHECK(r == FT_ERR_IO && strstr(ft_last_error(), "no_such_model.gguf"), "missing file: %s", ft_last_error());
    /* a model with one tensor of another shape */
    CHECK_OK(ft_gguf_open(&g, PC));
    CHECK_OK(ft_gguf_writer_init(&w));
    for (i = 0; i < ft_gguf_n_kv(g); i++) ft_gguf_copy_kv(w, ft_gguf_kv_at(g, i));
    for (i = 0; i < ft_gguf_n_tensors(g); i++) {
        const ft_gguf_tensor *t = ft_gguf_tensor_at(g, i); char name[96]; int64_t ne[2];
        memcpy(name, t->name.s, t->name.n); name[t->name.n] = 0;
        ne[0] = t->ne[0]; ne[1] = t->ne[1];
        if (!strcmp(name, "blk.1.attn_v.weight")) ne[1] = t->ne[1] / 2;
        ft_gguf_add_tensor(w, name, t->type, t->n_dims, ne, t->data);
    }
    CHECK_OK(ft_gguf_write(w, "build/tiny_merge_bad.gguf"));
    ft_gguf_writer_free(w); ft_gguf_close(g);
    in[1].path = "build/tiny_merge_bad.gguf";
    r = ft_merge_models(POUT, PB, in, 2, &o, NULL);
    CHECK(r == FT_ERR_SHAPE && strstr(ft_last_error(), "blk.1.attn_v.weight") && strstr(ft_last_error(), "tiny_merge_bad.gguf") &&
          strstr(ft_last_error(), PB), "shape: %s", ft_last_error());
    /* the base is an adapter; linear normalize over weights summing to 0 */
    in[1].path = PC;
    r = ft_merge_models(POUT, "build/tiny_merge_lora.gguf", in, 2, &o, NULL);
    CHECK(r != FT_OK && strstr(ft_last_error(), "tiny_merge_lora.gguf"), "adapter as base: %s", ft_last_error());
    o.method = FT_MERGE_LINEAR; in[1].weight = -1;
    r = ft_merge_models(POUT, PB, in, 2, &o, NULL);
    CHECK(r == FT_ERR_INVALID, "weights sum to 0: %s", ft_last_error());
}

int main(void) {
    if (!tiny_model_write(PB, FT_TYPE_F32, 1) || !tiny_model_write(PA, FT_TYPE_F32, 2) || !tiny_model_write(PC, FT_TYPE_F32, 3)) {
        printf("cannot write the tiny models: %s\n", ft_last_error()); return 1;
    }
    RUN(mergekit_fixtures);
    RUN(ties_cut_keeps_lowest_indices);
    RUN(dare_drawn_masks);
    RUN(models_every_method);
    RUN(linear_one_zero_is_input_a);
    RUN(q8_0_output);
    RUN(lora_adapters);
    RUN(full_finetune_input);
    RUN(errors_name_the_files);
    return ft_test_summary("test_merge_models");
}
