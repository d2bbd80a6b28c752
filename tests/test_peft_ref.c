/* test_peft_ref.c - one LoRA site against Hugging Face PEFT itself (tests/fixtures/peft_lora.txt,
   written by tools/ref/peft_fixtures.py with peft 0.21 / torch autograd): a Linear(48 -> 32,
   bias) with fixed W, bias, A, B (nonzero) and DoRA magnitude, input x (2, 3, 48) and upstream
   gradient G. Cases: LoRA (s = alpha/r), rsLoRA (alpha/sqrt(r)), DoRA and DoRA + rsLoRA (the
   norm ||W + sBA|| detached, as PEFT does). Compared: y, dA, dB, dx, the DoRA dm, and the
   merged weight of PEFT's merge_and_unload() against ft__lora_merge_row.
   The site is layer 0's down_proj of the tiny model with the fixture's A, B, m set in place;
   ft__peft_linear (the one seam the model's forward goes through) is called with the fixture's
   W and bias. PEFT ran in float64 on the same f32 values, so the difference is our f32
   rounding alone: sums of at most 48 products of O(1) terms, ~1e-6 in practice. Tolerance
   |ours - PEFT| <= 1e-5 + 1e-5 |PEFT| (the measured worst ratio is printed).
   LoHa the same way (tests/fixtures/peft_loha.txt): w1_a, w1_b, w2_a, w2_b (w2_b nonzero) under
   LoHaConfig(r, alpha): y, the four factors' gradients, dx and the merged weight. */
#define FINETUNE_IMPLEMENTATION
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"

#define FIXTURE "tests/fixtures/peft_lora.txt"
#define FIXTURE_LOHA "tests/fixtures/peft_loha.txt"
#define MAXA 16

typedef struct { char name[16]; int n; float *v; } arr;
typedef struct { char name[24]; int rslora, dora; double scale; arr a[MAXA]; int na; } fcase;

static int IN, REF_OUT, REF_R, NB, NT; static double ALPHA;
static arr INPUTS[MAXA]; static int NIN;
static fcase CASES[8]; static int NCASE;
static ft_ctx *CTX;
static const char *REF_TINY = "build/tiny_peft_ref.gguf";

/* "NAME N v1 .. vN" at *p; advances *p */
static int read_arr(char **p, arr *a) {
    int k, n = 0;
    if (sscanf(*p, "%15s %d%n", a->name, &a->n, &n) < 2 || a->n < 1 || a->n > 1 << 20) return 0;
    *p += n;
    a->v = (float *)malloc((size_t)a->n * sizeof(float));
    for (k = 0; k < a->n; k++) { char *e; a->v[k] = (float)strtod(*p, &e); if (e == *p) return 0; *p = e; }
    return 1;
}
/* the arrays of the fixture read last */
static void free_fixture(void) {
    int i, k;
    for (i = 0; i < NIN; i++) { free(INPUTS[i].v); INPUTS[i].v = NULL; }
    for (i = 0; i < NCASE; i++) for (k = 0; k < CASES[i].na; k++) { free(CASES[i].a[k].v); CASES[i].a[k].v = NULL; }
    NIN = 0;
    NCASE = 0;
}
static int load_fixture(const char *path) {
    size_t n; char *buf = (char *)ft_test_slurp(path, &n), *line, *next; fcase *c = NULL; int ok = 1;
    free_fixture();
    if (!buf) return 0;
    for (line = buf; line && *line && ok; line = next) {
        char *p;
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        if (line[0] == '#' || !line[0]) continue;
        if (!strncmp(line, "dims ", 5)) ok = sscanf(line + 5, "%d %d %d %lf %d %d", &IN, &REF_OUT, &REF_R, &ALPHA, &NB, &NT) == 6;
        else if (!strncmp(line, "case ", 5) && NCASE < 8) {
            c = &CASES[NCASE++];
            memset(c, 0, sizeof *c);
            ok = sscanf(line + 5, "%23s %d %d %lf", c->name, &c->rslora, &c->dora, &c->scale) == 4;
        } else if (!strncmp(line, "in ", 3) || !strncmp(line, "out ", 4)) {
            arr *a = c ? (c->na < MAXA ? &c->a[c->na++] : NULL) : (NIN < MAXA ? &INPUTS[NIN++] : NULL);
            p = line + (line[0] == 'i' ? 3 : 4);
            ok = a && read_arr(&p, a);
        } else if (!strcmp(line, "end")) c = NULL;
    }
    free(buf);
    return ok;
}
static const arr *get(const arr *as, int n, const char *name, int want) {
    int i;
    for (i = 0; i < n; i++) if (!strcmp(as[i].name, name)) { CHECK(as[i].n == want, "fixture %s has %d values, expected %d", name, as[i].n, want); return as[i].n == want ? &as[i] : NULL; }
    CHECK(0, "fixture has no %s", name);
    return NULL;
}

/* the worst |got - want| / (1e-5 + 1e-5 |want|), checked <= 1 */
static double compare(const char *cs, const char *what, const float *got, const arr *want) {
    long worst; double w;
    if (!want) return 0;
    w = ft_test_close(got, want->v, want->n, 1e-5, 1e-5, &worst);
    CHECK(w <= 1, "%s %s[%ld]: %.9g vs PEFT %.9g", cs, what, worst, worst >= 0 ? got[worst] : 0.0, worst >= 0 ? want->v[worst] : 0.0);
    return w;
}

TEST(peft_reference_cases) {
    int ci;
    const arr *W = get(INPUTS, NIN, "W", REF_OUT * IN), *bias = get(INPUTS, NIN, "bias", REF_OUT), *A = get(INPUTS, NIN, "A", REF_R * IN),
              *B = get(INPUTS, NIN, "B", REF_OUT * REF_R), *X = get(INPUTS, NIN, "x", NB * NT * IN), *G = get(INPUTS, NIN, "G", NB * NT * REF_OUT);
    if (!W || !bias || !A || !B || !X || !G) return;
    CHECK(IN == TINY_F && REF_OUT == TINY_C, "the fixture's layer is the tiny model's down_proj (%d -> %d)", TINY_F, TINY_C);
    for (ci = 0; ci < NCASE; ci++) {
        const fcase *c = &CASES[ci];
        ft_model *m; ft_peft *p; ft_lora_opts o; ft_params *XP; ft_tensor *x, *Wt, *bt, *y, *ta, *tb, *tm;
        int64_t sx[3], s = 0 * FT_SITE_COUNT + FT_SITE_DOWN, i; double worst = 0; float *merged;
        CHECK_OK(ft_model_load(&m, REF_TINY, NULL));
        memset(&o, 0, sizeof o);
        o.r = REF_R; o.alpha = (float)ALPHA; o.rslora = c->rslora; o.dora = c->dora; o.targets = FT_TARGET_DOWN;
        CHECK_OK(ft_lora_attach(&p, m, &o));
        CHECK(fabs(ft_lora_scale(p) - c->scale) < 1e-6, "%s: scale %g, PEFT's scaling %g", c->name, (double)ft_lora_scale(p), c->scale);
        ta = ft_lora_A(p, 0, FT_SITE_DOWN); tb = ft_lora_B(p, 0, FT_SITE_DOWN); tm = ft_lora_magnitude(p, 0, FT_SITE_DOWN);
        CHECK(ta && tb && ta->shape[0] == REF_R && ta->shape[1] == IN && tb->shape[0] == REF_OUT && tb->shape[1] == REF_R, "%s: A (r, in), B (out, r)", c->name);
        CHECK((tm != NULL) == c->dora, "%s: a magnitude iff DoRA", c->name);
        memcpy(ta->data, A->v, (size_t)A->n * 4);
        memcpy(tb->data, B->v, (size_t)B->n * 4);
        if (tm) { const arr *mv = get(c->a, c->na, "m", REF_OUT); if (mv) memcpy(tm->data, mv->v, (size_t)REF_OUT * 4); }
        ft_params_zero_grad(ft_peft_params(p));
        /* x is a parameter of its own (so it gets a gradient); W and bias are frozen, in the arena */
        ft_params_init(&XP);
        sx[0] = NB; sx[1] = NT; sx[2] = IN;
        x = ft_params_add(XP, "x", 3, sx);
        ft_params_alloc(XP);
        memcpy(x->data, X->v, (size_t)X->n * 4);
        ft_params_zero_grad(XP);
        ft_ctx_reset(CTX);
        Wt = ft_tensor_2d(CTX, REF_OUT, IN); bt = ft_tensor_1d(CTX, REF_OUT);
        memcpy(Wt->data, W->v, (size_t)W->n * 4); memcpy(bt->data, bias->v, (size_t)REF_OUT * 4);
        y = ft__peft_linear(CTX, p, x, Wt, bt, 0, FT_SITE_DOWN);
        CHECK(y && ft_numel(y) == NB * NT * REF_OUT, "%s: forward: %s", c->name, ft_last_error());
        if (y) {
            CHECK_OK(ft_backward_from(CTX, y, G->v));
            worst = fmax(worst, compare(c->name, "y", (const float *)y->data, get(c->a, c->na, "y", NB * NT * REF_OUT)));
            worst = fmax(worst, compare(c->name, "dA", ta->grad, get(c->a, c->na, "dA", REF_R * IN)));
            worst = fmax(worst, compare(c->name, "dB", tb->grad, get(c->a, c->na, "dB", REF_OUT * REF_R)));
            worst = fmax(worst, compare(c->name, "dx", x->grad, get(c->a, c->na, "dx", NB * NT * IN)));
            if (tm) worst = fmax(worst, compare(c->name, "dm", tm->grad, get(c->a, c->na, "dm", REF_OUT)));
        }
        /* the merged weight, row by row from the fixture's W */
        merged = (float *)malloc((size_t)W->n * 4);
        memcpy(merged, W->v, (size_t)W->n * 4);
        for (i = 0; i < REF_OUT; i++) ft__lora_merge_row(p, s, i, merged + i * IN, IN);
        worst = fmax(worst, compare(c->name, "merged W", merged, get(c->a, c->na, "merged", REF_OUT * IN)));
        printf("    %-12s scale %.4g: y, dA, dB, dx%s, merged W: worst error / tolerance %.3f\n", c->name, c->scale, tm ? ", dm" : "", worst);
        free(merged);
        ft_params_free(XP); ft_peft_free(p); ft_model_free(m);
    }
}

/* LoHa: dW = s (w1_a w1_b) * (w2_a w2_b) on the same layer, against PEFT's LoHa */
TEST(peft_loha_reference) {
    static const char *factor[4] = {"w1a", "w1b", "w2a", "w2b"}, *grad[4] = {"dw1a", "dw1b", "dw2a", "dw2b"};
    const arr *W, *bias, *X, *G; const fcase *c = &CASES[0];
    ft_model *m; ft_peft *p; ft_peft_opts o; ft_params *XP; ft_tensor *x, *Wt, *bt, *y, **h;
    int64_t sx[3], s = FT_SITE_DOWN, i; double worst = 0; float *merged; int k;
    CHECK(load_fixture(FIXTURE_LOHA) && NCASE == 1 && NIN == 8, "%s is missing or malformed (tools/ref/peft_fixtures.py writes it)", FIXTURE_LOHA);
    if (NCASE != 1) return;
    W = get(INPUTS, NIN, "W", REF_OUT * IN); bias = get(INPUTS, NIN, "bias", REF_OUT);
    X = get(INPUTS, NIN, "x", NB * NT * IN); G = get(INPUTS, NIN, "G", NB * NT * REF_OUT);
    if (!W || !bias || !X || !G) return;
    CHECK_OK(ft_model_load(&m, REF_TINY, NULL));
    o = ft_peft_opts_default(FT_PEFT_LOHA);
    o.lora.r = REF_R; o.lora.alpha = (float)ALPHA; o.lora.targets = FT_TARGET_DOWN;
    o.layer_mask = NULL;
    CHECK_OK(ft_peft_attach(&p, m, &o));
    if (!p) return;
    CHECK(fabs(p->scale - c->scale) < 1e-6, "loha: scale %g, PEFT's scaling %g", (double)p->scale, c->scale);
    h = p->hada + s * 4;
    for (k = 0; k < 4; k++) {
        const arr *v = get(INPUTS, NIN, factor[k], (k % 2 ? REF_R * IN : REF_OUT * REF_R));
        CHECK(h[k] && ft_numel(h[k]) == (k % 2 ? REF_R * IN : REF_OUT * REF_R), "loha: %s has PEFT's shape", factor[k]);
        if (v && h[k]) memcpy(h[k]->data, v->v, (size_t)v->n * 4);
    }
    ft_params_zero_grad(ft_peft_params(p));
    ft_params_init(&XP);
    sx[0] = NB; sx[1] = NT; sx[2] = IN;
    x = ft_params_add(XP, "x", 3, sx);
    ft_params_alloc(XP);
    memcpy(x->data, X->v, (size_t)X->n * 4);
    ft_params_zero_grad(XP);
    ft_ctx_reset(CTX);
    Wt = ft_tensor_2d(CTX, REF_OUT, IN); bt = ft_tensor_1d(CTX, REF_OUT);
    memcpy(Wt->data, W->v, (size_t)W->n * 4); memcpy(bt->data, bias->v, (size_t)REF_OUT * 4);
    y = ft__peft_linear(CTX, p, x, Wt, bt, 0, FT_SITE_DOWN);
    CHECK(y && ft_numel(y) == NB * NT * REF_OUT, "loha: forward: %s", ft_last_error());
    if (y) {
        CHECK_OK(ft_backward_from(CTX, y, G->v));
        worst = fmax(worst, compare("loha", "y", (const float *)y->data, get(c->a, c->na, "y", NB * NT * REF_OUT)));
        for (k = 0; k < 4; k++) worst = fmax(worst, compare("loha", grad[k], h[k]->grad, get(c->a, c->na, grad[k], (int)ft_numel(h[k]))));
        worst = fmax(worst, compare("loha", "dx", x->grad, get(c->a, c->na, "dx", NB * NT * IN)));
    }
    merged = (float *)malloc((size_t)W->n * 4);
    memcpy(merged, W->v, (size_t)W->n * 4);
    for (i = 0; i < REF_OUT; i++) p->impl->merge_row(p, s, i, merged + i * IN, IN);
    worst = fmax(worst, compare("loha", "merged W", merged, get(c->a, c->na, "merged", REF_OUT * IN)));
    printf("    %-12s scale %.4g: y, dw1a, dw1b, dw2a, dw2b, dx, merged W: worst error / tolerance %.3f\n", "loha", c->scale, worst);
    free(merged);
    ft_params_free(XP); ft_peft_free(p); ft_model_free(m);
}

FT_TEST_MAIN(test_peft_ref) {
    ft_ctx_opts o; memset(&o, 0, sizeof o); o.n_threads = 2;
    if (!load_fixture(FIXTURE) || NCASE != 4 || NIN != 6) { printf("FAIL - %s is missing or malformed (tools/ref/peft_fixtures.py writes it)\n", FIXTURE); return 1; }
    if (!tiny_model_write(REF_TINY, FT_TYPE_F32, 3)) { printf("cannot write the tiny model: %s\n", ft_last_error()); return 1; }
    ft_ctx_init(&CTX, &o);
    RUN(peft_reference_cases);
    RUN(peft_loha_reference);
    free_fixture();
    ft_ctx_free(CTX);
    remove(REF_TINY);
    return ft_test_summary("test_peft_ref");
}
