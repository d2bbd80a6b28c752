/* test_nf4.c - NF4 with double quantization (QLoRA), bit-exact with bitsandbytes 0.50 on the CPU
   (tests/fixtures/nf4.bin from tools/ref/nf4_fixtures.py): the encoder's bytes, codes, scales
   and offset, the decoder's floats (SIMD and scalar reference); the fused matmul (forward and
   input gradient) against the decoded f32 weight; a tiny model quantized at load, trained with
   LoRA, saved as NF4 GGUF and mapped back; and the errors for broken NF4 files. */
#define FINETUNE_IMPLEMENTATION
#include "../finetune.h"
#include "ft_test.h"
#include "tiny_model.h"

typedef struct nf4_entry {
    char name[64]; int ndim; int64_t shape[4], n, nb, nb2;
    const float *x; const uint8_t *packed, *qabsmax; const float *absmax2; float offset;
    const float *code, *absmax, *y;
} nf4_entry;

/* the fixture's entries (pointers into buf); returns the count, 0 on a bad file */
static int nf4_read(const unsigned char *b, size_t size, nf4_entry *e, int cap) {
    size_t off = 8; uint32_t count, i, len, nd; int k;
    if (size < 8 || memcmp(b, "FTN4", 4) != 0) return 0;
    memcpy(&count, b + 4, 4);
    for (i = 0; i < count && (int)i < cap; i++) {
        nf4_entry *t = &e[i]; uint64_t v[3];
        memcpy(&len, b + off, 4); off += 4;
        memcpy(t->name, b + off, len < 63 ? len : 63); t->name[len < 63 ? len : 63] = 0; off += len;
        memcpy(&nd, b + off, 4); off += 4; t->ndim = (int)nd;
        for (k = 0; k < (int)nd; k++) { uint64_t s; memcpy(&s, b + off, 8); off += 8; t->shape[k] = (int64_t)s; }
        memcpy(v, b + off, 24); off += 24;
        t->n = (int64_t)v[0]; t->nb = (int64_t)v[1]; t->nb2 = (int64_t)v[2];
        t->x = (const float *)(b + off); off += (size_t)t->n * 4;
        t->packed = b + off; off += (size_t)(t->n + 1) / 2;
        t->qabsmax = b + off; off += (size_t)t->nb;
        t->absmax2 = (const float *)(b + off); off += (size_t)t->nb2 * 4;
        memcpy(&t->offset, b + off, 4); off += 4;
        t->code = (const float *)(b + off); off += 256 * 4;
        t->absmax = (const float *)(b + off); off += (size_t)t->nb * 4;
        t->y = (const float *)(b + off); off += (size_t)t->n * 4;
        if (off > size) return 0;
    }
    return off == size ? (int)count : 0;
}

/* the float arrays of the fixture are not 4-byte aligned: copy what the code reads as float */
static float *copy_f(const float *p, int64_t n) { float *c = (float *)malloc((size_t)n * 4 + 4); memcpy(c, p, (size_t)n * 4); return c; }

static int bits_equal(const float *a, const float *b, int64_t n, int64_t *first) {
    int64_t i;
    for (i = 0; i < n; i++) if (memcmp(a + i, b + i, 4) != 0) { if (first) *first = i; return 0; }
    return 1;
}

TEST(dynamic_map_equals_bitsandbytes) {
    size_t size; unsigned char *b = ft_test_slurp("tests/fixtures/nf4.bin", &size);
    nf4_entry e[8]; int n, i; float code[256], *want; int64_t first = -1;
    CHECK(b && (n = nf4_read(b, size, e, 8)) == 4, "fixture");
    if (!b || n != 4) { free(b); return; }
    ft_nf4_dynamic_map(code);
    for (i = 0; i < n; i++) {
        want = copy_f(e[i].code, 256);
        CHECK(bits_equal(code, want, 256, &first), "%s: code[%lld] %.9g, bitsandbytes %.9g", e[i].name, (long long)first, code[first], want[first]);
        free(want);
    }
    free(b);
}

TEST(torch_mean_equals_torch) {
    /* offsets in the fixture are torch.mean of the absmax; the absmax are in the fixture too,
       but quantized: recompute them from x and compare the mean with the stored offset */
    size_t size; unsigned char *b = ft_test_slurp("tests/fixtures/nf4.bin", &size);
    nf4_entry e[8]; int n = b ? nf4_read(b, size, e, 8) : 0, i;
    for (i = 0; i < n; i++) {
        float *x = copy_f(e[i].x, e[i].n), *am = (float *)calloc((size_t)e[i].nb, 4), m; int64_t k;
        for (k = 0; k < e[i].n; k++) am[k / 64] = fabsf(x[k]) > am[k / 64] ? fabsf(x[k]) : am[k / 64];
        if (e[i].n % 64 && am[e[i].nb - 1] < (float)1e-38) am[e[i].nb - 1] = (float)1e-38;
        m = ft__torch_mean(am, e[i].nb);
        CHECK(memcmp(&m, &e[i].offset, 4) == 0, "%s: mean %a, torch %a", e[i].name, (double)m, (double)e[i].offset);
        free(x); free(am);
    }
    free(b);
}

TEST(quantize_bit_exact_with_bitsandbytes) {
    size_t size; unsigned char *b = ft_test_slurp("tests/fixtures/nf4.bin", &size);
    nf4_entry e[8]; int n = b ? nf4_read(b, size, e, 8) : 0, i, exact = 0;
    CHECK(n == 4, "fixture");
    for (i = 0; i < n; i++) {
        nf4_entry *t = &e[i];
        float *x = copy_f(t->x, t->n), *a2 = (float *)malloc((size_t)t->nb2 * 4), *want2 = copy_f(t->absmax2, t->nb2), off = 0;
        uint8_t *pk = (uint8_t *)malloc((size_t)(t->n + 1) / 2), *qa = (uint8_t *)malloc((size_t)t->nb);
        int64_t k, bad = 0;
        CHECK(ft_nf4_blocks(t->n) == t->nb && ft_nf4_blocks2(t->n) == t->nb2, "%s: block counts", t->name);
        CHECK_OK(ft_quantize_nf4(x, t->n, pk, qa, a2, &off));
        for (k = 0; k < (t->n + 1) / 2; k++) bad += pk[k] != t->packed[k];
        CHECK(bad == 0, "%s: %lld of %lld packed bytes differ", t->name, (long long)bad, (long long)(t->n + 1) / 2);
        for (k = 0, bad = 0; k < t->nb; k++) bad += qa[k] != t->qabsmax[k];
        CHECK(bad == 0, "%s: %lld of %lld absmax codes differ", t->name, (long long)bad, (long long)t->nb);
        CHECK(bits_equal(a2, want2, t->nb2, NULL), "%s: absmax2 differs", t->name);
        CHECK(memcmp(&off, &t->offset, 4) == 0, "%s: offset %a, bitsandbytes %a", t->name, (double)off, (double)t->offset);
        exact += !ft_test_cur_failed;
        free(x); free(a2); free(want2); free(pk); free(qa);
    }
    printf("    %d of %d tensors quantized byte for byte as bitsandbytes\n", exact, n);
    free(b);
}

TEST(dequantize_bit_exact_with_bitsandbytes) {
    size_t size; unsigned char *b = ft_test_slurp("tests/fixtures/nf4.bin", &size);
    nf4_entry e[8]; int n = b ? nf4_read(b, size, e, 8) : 0, i;
    for (i = 0; i < n; i++) {
        nf4_entry *t = &e[i];
        float *a2 = copy_f(t->absmax2, t->nb2), *code = copy_f(t->code, 256), *want = copy_f(t->y, t->n);
        float *y = (float *)malloc((size_t)t->n * 4), *yr = (float *)malloc((size_t)t->n * 4);
        ft_nf4 q; int64_t first = -1, i0, k;
        q.qabsmax = t->qabsmax; q.absmax2 = a2; q.code = code; q.offset = t->offset;
        for (k = 0; k < t->nb; k++) {                      /* the dequantized absmax */
            float am = ft__nf4_absmax(&q, k);
            if (memcmp(&am, t->absmax + k, 4) != 0) { CHECK(0, "%s: absmax[%lld]", t->name, (long long)k); break; }
        }
        ft_dequantize_nf4(t->packed, &q, 0, t->n, y);
        CHECK(bits_equal(y, want, t->n, &first), "%s: y[%lld] = %.9g, bitsandbytes %.9g", t->name, (long long)first, y[first], want[first]);
        ft__nf4_decode_ref(t->packed, &q, 0, t->n, yr);
        CHECK(bits_equal(yr, want, t->n, &first), "%s: reference y[%lld]", t->name, (long long)first);
        /* any sub-range (unaligned starts, partial blocks) */
        for (i0 = 0; i0 < t->n; i0 += 37) {
            int64_t len = (t->n - i0) < 150 ? t->n - i0 : 150;
            ft_dequantize_nf4(t->packed, &q, i0, len, y);
            if (!bits_equal(y, want + i0, len, &first)) { CHECK(0, "%s: range at %lld", t->name, (long long)i0); break; }
        }
        free(a2); free(code); free(want); free(y); free(yr);
    }
    printf("    SIMD decoder: %s\n", FT__NF4_SIMD);
    free(b);
}

/* the SIMD block decoder against the scalar reference on every byte value and odd scales */
TEST(simd_block_equals_reference) {
    uint8_t qs[32 * 8]; float y[64], yr[64]; int i, k, bad = 0;
    float scales[6] = {1.0f, -0.0f, 3.0e-39f, 1e30f, -7.25f, 0.0123f};
    for (i = 0; i < (int)sizeof qs; i++) qs[i] = (uint8_t)(i * 37 + 11);
    for (k = 0; k < 6; k++)
        for (i = 0; i < 8; i++) {
            int j;
            ft__nf4_block(qs + 32 * i, scales[k], y);
            for (j = 0; j < 32; j++) { yr[2 * j] = ft__nf4_values[qs[32 * i + j] >> 4] * scales[k]; yr[2 * j + 1] = ft__nf4_values[qs[32 * i + j] & 15] * scales[k]; }
            bad += !bits_equal(y, yr, 64, NULL);
        }
    CHECK(bad == 0, "%d blocks differ", bad);
}

/* the fused matmul against the decoded f32 weight: y = x W^T and dx = dy W. Through the GEMM
   (M = 37) the decoded rows are packed exactly as f32 rows are: bit for bit. Through the GEMV
   (M = 3) the f32 path sums differently: within 1e-5 (absolute + relative). */
TEST(matmul_equals_decoded) {
    size_t size; unsigned char *b = ft_test_slurp("tests/fixtures/nf4.bin", &size);
    nf4_entry e[8]; int n = b ? nf4_read(b, size, e, 8) : 0, i, m;
    ft_ctx *ctx; ft_ctx_opts o;
    memset(&o, 0, sizeof o); o.n_threads = 2; ft_ctx_init(&ctx, &o);
    for (i = 0; i < n; i++) {
        nf4_entry *t = &e[i]; int64_t N, K; ft_nf4 q; float *a2, *code, *want;
        if (t->ndim != 2) continue;                          /* the 2-D ones: 32x576, 5x63, 8x64 */
        N = t->shape[0]; K = t->shape[1];
        a2 = copy_f(t->absmax2, t->nb2); code = copy_f(t->code, 256); want = copy_f(t->y, t->n);
        q.qabsmax = t->qabsmax; q.absmax2 = a2; q.code = code; q.offset = t->offset;
        for (m = 0; m < 2; m++) {
            int64_t M = m ? 37 : 3, sx[2], k; ft_tensor *Wq, *Wf, *x, *yq, *yf; ft_params *P; float *dxq;
            ft_ctx_reset(ctx);
            sx[0] = M; sx[1] = K;
            Wq = ft_tensor_nf4(ctx, N, K, t->packed, &q);
            Wf = ft_tensor_2d(ctx, N, K); memcpy(Wf->data, want, (size_t)t->n * 4);
            ft_params_init(&P); x = ft_params_add(P, "x", 2, sx); ft_params_alloc(P);
            for (k = 0; k < M * K; k++) ((float *)x->data)[k] = sinf((float)k * 0.37f);
            yq = ft_matmul(ctx, x, Wq, 0, 1);
            yf = ft_matmul(ctx, x, Wf, 0, 1);
            CHECK(yq && yf && (m ? memcmp(yq->data, yf->data, (size_t)(M * N) * 4) == 0
                                 : ft_test_close((float *)yq->data, (float *)yf->data, (long)(M * N), 1e-5, 1e-5, NULL) <= 1),
                  "%s M=%lld: forward differs", t->name, (long long)M);
            ft_backward(ctx, ft_sum(ctx, ft_mul(ctx, yq, yq)));
            dxq = (float *)malloc((size_t)(M * K) * 4); memcpy(dxq, x->grad, (size_t)(M * K) * 4);
            ft_params_zero_grad(P); ft_ctx_reset(ctx);
            Wf = ft_tensor_2d(ctx, N, K); memcpy(Wf->data, want, (size_t)t->n * 4);
            yf = ft_matmul(ctx, x, Wf, 0, 1);
            ft_backward(ctx, ft_sum(ctx, ft_mul(ctx, yf, yf)));
            CHECK(m ? memcmp(dxq, x->grad, (size_t)(M * K) * 4) == 0 : ft_test_close(dxq, x->grad, (long)(M * K), 1e-5, 1e-5, NULL) <= 1,
                  "%s M=%lld: input gradient differs", t->name, (long long)M);
            free(dxq); ft_params_free(P);
        }
        /* the embedding reads NF4 rows too */
        {
            int32_t ids[3]; ft_tensor *E; int64_t r;
            ids[0] = 0; ids[1] = (int32_t)(N - 1); ids[2] = (int32_t)(N / 2);
            ft_ctx_reset(ctx);
            E = ft_embedding(ctx, ft_tensor_nf4(ctx, N, K, t->packed, &q), ids, 3);
            for (r = 0; E && r < 3; r++) CHECK(memcmp((float *)E->data + r * K, want + ids[r] * K, (size_t)K * 4) == 0, "%s: embedding row %d", t->name, (int)ids[r]);
            CHECK(E != NULL, "%s: embedding", t->name);
        }
        free(a2); free(code); free(want);
    }
    ft_ctx_free(ctx); free(b);
}

/* logits (B*T, V) of model m on fixed ids; caller frees */
static float *model_logits(ft_model *m, ft_ctx *ctx, int64_t B, int64_t T) {
    int32_t ids[64]; ft_batch bt; ft_tensor *y; float *out; int64_t i, V = ft_model_config_get(m)->n_vocab;
    for (i = 0; i < B * T; i++) ids[i] = (int32_t)((i * 7 + 3) % V);
    memset(&bt, 0, sizeof bt); bt.B = B; bt.T = T; bt.ids = ids;
    ft_ctx_reset(ctx);
    y = ft_model_forward(ctx, m, &bt);
    if (!y) return NULL;
    out = (float *)malloc((size_t)(B * T * V) * 4);
    memcpy(out, y->data, (size_t)(B * T * V) * 4);
    return out;
}

static float *model_logits_of(ft_model *m, ft_ctx *ctx, const ft_batch *bt, int64_t V) {
    ft_tensor *y; float *out;
    ft_ctx_reset(ctx);
    y = ft_model_forward(ctx, m, bt);
    if (!y) return NULL;
    out = (float *)malloc((size_t)(bt->B * bt->T * V) * 4);
    memcpy(out, y->data, (size_t)(bt->B * bt->T * V) * 4);
    return out;
}

/* a GGUF like src's model but with every NF4 weight decoded to F32 */
static int write_decoded(ft_model *m, const char *path) {
    ft_gguf *g = ft_model_gguf(m); ft_gguf_writer *w; int64_t i, l; int k, ok; float *bufs[7 * TINY_L];
    ft_gguf_writer_init(&w);
    for (i = 0; i < ft_gguf_n_kv(g); i++) ft_gguf_copy_kv(w, ft_gguf_kv_at(g, i));
    for (i = 0; i < ft_gguf_n_tensors(g); i++) {
        const ft_gguf_tensor *gt = ft_gguf_tensor_at(g, i); char nm[128]; int lin = 0;
        snprintf(nm, sizeof nm, "%.*s", (int)gt->name.n, gt->name.s);
        for (l = 0; l < TINY_L; l++)
            for (k = 0; k < 7; k++) {
                ft_layer *L = ft_model_layer(m, (int)l);
                ft_tensor *W = k == 0 ? L->wq : k == 1 ? L->wk : k == 2 ? L->wv : k == 3 ? L->wo : k == 4 ? L->w_gate : k == 5 ? L->w_up : L->w_down;
                if (strcmp(W->name, nm) == 0) {
                    int64_t ne[2]; float *f = bufs[l * 7 + k] = (float *)malloc((size_t)ft_numel(W) * 4);
                    ne[0] = W->shape[1]; ne[1] = W->shape[0];
                    ft_dequantize_nf4((const uint8_t *)W->data, W->nf4, 0, ft_numel(W), f);
                    ft_gguf_add_tensor(w, nm, FT_TYPE_F32, 2, ne, f); lin = 1;
                }
            }
        if (!lin) ft_gguf_add_tensor(w, nm, gt->type, gt->n_dims, gt->ne, gt->data);
    }
    ok = ft_gguf_write(w, path) == FT_OK;
    ft_gguf_writer_free(w);
    for (i = 0; i < 7 * TINY_L; i++) free(bufs[i]);
    return ok;
}

/* a tiny model quantized at load: every linear weight NF4 (~0.52 bytes per weight), logits
   equal to the f32 model of the same (decoded) weights and close to the original f32 model;
   LoRA gradients equal to those through the decoded model */
TEST(model_quantized_at_load) {
    const char *p32 = "build/nf4_tiny.gguf", *pdq = "build/nf4_tiny_dq.gguf";
    ft_model *m32, *mq, *mdq; ft_model_opts mo; ft_ctx *ctx; ft_ctx_opts co; int l, k;
    float *y32, *yq, *ydq; int64_t B = 2, T = 9, V, nw, bytes, i; double num = 0, den = 0;
    CHECK(tiny_model_write(p32, FT_TYPE_F32, 7), "write tiny model");
    memset(&co, 0, sizeof co); co.n_threads = 2; ft_ctx_init(&ctx, &co);
    memset(&mo, 0, sizeof mo); mo.quantize = FT_TYPE_NF4;
    CHECK_OK(ft_model_load(&m32, p32, NULL));
    CHECK_OK(ft_model_load(&mq, p32, &mo));
    for (l = 0; l < TINY_L; l++) {
        ft_layer *L = ft_model_layer(mq, l);
        CHECK(L->wq->type == FT_TYPE_NF4 && L->wk->type == FT_TYPE_NF4 && L->wv->type == FT_TYPE_NF4 && L->wo->type == FT_TYPE_NF4 &&
              L->w_gate->type == FT_TYPE_NF4 && L->w_up->type == FT_TYPE_NF4 && L->w_down->type == FT_TYPE_NF4, "layer %d: linear weights NF4", l);
        CHECK(L->attn_norm->type == FT_TYPE_F32, "norms stay f32");
    }
    CHECK(ft_model_tok_embd(mq)->type == FT_TYPE_F32, "embeddings stay f32");
    bytes = ft_model_linear_bytes(mq, &nw);
    printf("    %lld linear weights, %.4f bytes per weight (f32: %.1f)\n", (long long)nw, (double)bytes / (double)nw,
           (double)ft_model_linear_bytes(m32, NULL) / (double)nw);
    CHECK((double)bytes / (double)nw < 0.53, "bytes per weight");
    CHECK(write_decoded(mq, pdq), "write decoded");
    CHECK_OK(ft_model_load(&mdq, pdq, NULL));
    V = ft_model_config_get(mq)->n_vocab;
    y32 = model_logits(m32, ctx, B, T); yq = model_logits(mq, ctx, B, T); ydq = model_logits(mdq, ctx, B, T);
    CHECK(y32 && yq && ydq, "forward");
    if (y32 && yq && ydq) {
        CHECK(memcmp(yq, ydq, (size_t)(B * T * V) * 4) == 0, "NF4 logits equal the decoded model's bit for bit");
        for (i = 0; i < B * T * V; i++) { num += (yq[i] - y32[i]) * (double)(yq[i] - y32[i]); den += (double)y32[i] * y32[i]; }
        /* the weights are uniform in +-0.3 (NF4's grid is made for normal ones): ~10% RMS
           error per weight, which two layers and the tied head amplify about twice */
        {
            ft_tensor *Wf = ft_model_layer(m32, 0)->w_up, *Wn = ft_model_layer(mq, 0)->w_up;
            int64_t nn = ft_numel(Wf); float *d = (float *)malloc((size_t)nn * 4); double wn = 0, wd = 0;
            ft_dequantize_nf4((const uint8_t *)Wn->data, Wn->nf4, 0, nn, d);
            for (i = 0; i < nn; i++) { double f = ((float *)Wf->data)[i]; wn += (d[i] - f) * (d[i] - f); wd += f * f; }
            printf("    relative RMS error: weights (layer 0 up) %.4f, logits vs the f32 model %.4f\n", sqrt(wn / wd), sqrt(num / den));
            CHECK(sqrt(num / den) < 3 * sqrt(wn / wd), "NF4 logits close to f32 (%.4f)", sqrt(num / den));
            free(d);
        }
    }
    free(y32); free(yq); free(ydq);
    /* QLoRA: LoRA on the NF4 base; B made non-zero so every A gets a gradient through the NF4
       weights of the layers above it; the same on the decoded model */
    {
        ft_lora_opts lo; ft_peft *pq, *pd; ft_model *mm[2]; ft_peft **pp[2]; float *g[2]; int r;
        int32_t ids[18], tg[18]; ft_batch bt;
        memset(&lo, 0, sizeof lo); lo.r = 4; lo.seed = 3;
        mm[0] = mq; mm[1] = mdq; pp[0] = &pq; pp[1] = &pd;
        for (i = 0; i < B * T; i++) { ids[i] = (int32_t)((i * 5 + 1) % V); tg[i] = (int32_t)((i * 3 + 2) % V); }
        memset(&bt, 0, sizeof bt); bt.B = B; bt.T = T; bt.ids = ids;
        for (r = 0; r < 2; r++) {
            ft_params *P; ft_tensor *loss; int64_t np, j, off = 0;
            CHECK_OK(ft_lora_attach(pp[r], mm[r], &lo));
            P = ft_peft_params(*pp[r]);
            for (l = 0; l < TINY_L; l++)
                for (k = 0; k < FT_SITE_COUNT; k++) {
                    ft_tensor *Bm = ft_lora_B(*pp[r], l, k);
                    for (j = 0; Bm && j < ft_numel(Bm); j++) ((float *)Bm->data)[j] = 0.01f * sinf((float)(j + 13 * k + 101 * l));
                }
            ft_ctx_reset(ctx);
            loss = ft_cross_entropy(ctx, ft_model_forward(ctx, mm[r], &bt), tg, -100);
            CHECK_OK(ft_backward(ctx, loss));
            for (j = 0, np = 0; j < ft_params_count(P); j++) np += ft_numel(ft_params_get(P, (int)j));
            g[r] = (float *)malloc((size_t)np * 4);
            for (j = 0; j < ft_params_count(P); j++) {
                ft_tensor *t = ft_params_get(P, (int)j);
                memcpy(g[r] + off, t->grad, (size_t)ft_numel(t) * 4); off += ft_numel(t);
            }
            if (r == 0) {
                ft_tensor *A0 = ft_lora_A(pq, 0, FT_SITE_Q); double s = 0;
                for (j = 0; j < ft_numel(A0); j++) s += fabs(A0->grad[j]);
                CHECK(s > 0 && s == s, "layer 0 q_proj A gets a gradient through the NF4 layers (%g)", s);
            }
            if (r == 1) CHECK(ft_test_close(g[0], g[1], (long)np, 1e-6, 1e-5, NULL) <= 1, "LoRA gradients on NF4 equal those on the decoded model");
            ft_params_zero_grad(P);
        }
        ft_peft_free(pq); ft_peft_free(pd); free(g[0]); free(g[1]);
    }
    ft_model_free(m32); ft_model_free(mq); ft_model_free(mdq); ft_ctx_free(ctx);
    remove(p32); remove(pdq);
}

/* NF4 GGUF: save, map back (no copy: the weight's data is the file's bytes), same logits */
TEST(save_gguf_and_map_back) {
    const char *p32 = "build/nf4_tiny2.gguf", *pq = "build/nf4_tiny2_nf4.gguf";
    ft_model *mq, *mr; ft_model_opts mo; ft_ctx *ctx; ft_ctx_opts co; float *yq, *yr; int l;
    int64_t V, B = 2, T = 7; ft_gguf_str s;
    CHECK(tiny_model_write(p32, FT_TYPE_F16, 11), "write tiny model");
    memset(&co, 0, sizeof co); co.n_threads = 2; ft_ctx_init(&ctx, &co);
    memset(&mo, 0, sizeof mo); mo.quantize = FT_TYPE_NF4;
    CHECK_OK(ft_model_load(&mq, p32, &mo));
    CHECK_OK(ft_model_save_gguf(mq, pq));
    CHECK_OK(ft_model_load(&mr, pq, NULL));
    CHECK(ft_gguf_get_str(ft_model_gguf(mr), "finetune.quantization", &s) && s.n == 3 && memcmp(s.s, "nf4", 3) == 0, "finetune.quantization");
    CHECK(ft_gguf_find(ft_model_gguf(mr), "general.name") != NULL, "metadata copied");
    for (l = 0; l < TINY_L; l++) {
        ft_layer *L = ft_model_layer(mr, l), *Lq = ft_model_layer(mq, l);
        const ft_gguf_tensor *gt = ft_gguf_find_tensor(ft_model_gguf(mr), L->w_down->name);
        CHECK(L->wq->type == FT_TYPE_NF4 && L->w_down->type == FT_TYPE_NF4, "layer %d: NF4 after reload", l);
        CHECK(gt && L->w_down->data == gt->data, "layer %d: the weight points into the mapped file", l);
        {
            char nm[96]; const ft_gguf_tensor *ct;
            snprintf(nm, sizeof nm, "%s.nf4_code", L->w_down->name);
            ct = ft_gguf_find_tensor(ft_model_gguf(mr), nm);
            CHECK(ct && L->w_down->nf4 && (const void *)L->w_down->nf4->code == ct->data, "layer %d: the code is mapped too", l);
        }
        CHECK(memcmp(L->w_up->data, Lq->w_up->data, (size_t)ft_numel(L->w_up) / 2) == 0 &&
              memcmp(L->w_up->nf4->qabsmax, Lq->w_up->nf4->qabsmax, (size_t)ft_nf4_blocks(ft_numel(L->w_up))) == 0 &&
              L->w_up->nf4->offset == Lq->w_up->nf4->offset, "layer %d: the same bytes", l);
    }
    CHECK(ft_model_tok_embd(mr)->type == FT_TYPE_F16, "the embeddings keep their type");
    V = ft_model_config_get(mq)->n_vocab;
    yq = model_logits(mq, ctx, B, T); yr = model_logits(mr, ctx, B, T);
    CHECK(yq && yr && memcmp(yq, yr, (size_t)(B * T * V) * 4) == 0, "identical logits after the round trip");
    free(yq); free(yr);
    /* loading it with quantize = NF4 keeps the mapped NF4 weights (no requantization) */
    {
        ft_model *m2; CHECK_OK(ft_model_load(&m2, pq, &mo));
        CHECK(ft_model_layer(m2, 1)->wq->data == ft_gguf_find_tensor(ft_model_gguf(m2), "blk.1.attn_q.weight")->data, "still mapped");
        ft_model_free(m2);
    }
    ft_model_free(mq); ft_model_free(mr); ft_ctx_free(ctx);
    remove(p32); remove(pq);
}

/* a copy of the NF4 file at `src` where `victim` is replaced by a tensor of `n` elements of
   `type` (n = 0: dropped) */
static int write_broken(const char *src, const char *dst, const char *victim, ft_type type, int64_t n) {
    ft_gguf *g; ft_gguf_writer *w; int64_t i; int ok; float *junk = (float *)calloc((size_t)(n > 0 ? n : 1), 4);
    if (ft_gguf_open(&g, src) != FT_OK) { free(junk); return 0; }
    ft_gguf_writer_init(&w);
    for (i = 0; i < ft_gguf_n_kv(g); i++) ft_gguf_copy_kv(w, ft_gguf_kv_at(g, i));
    for (i = 0; i < ft_gguf_n_tensors(g); i++) {
        const ft_gguf_tensor *gt = ft_gguf_tensor_at(g, i); char nm[128];
        snprintf(nm, sizeof nm, "%.*s", (int)gt->name.n, gt->name.s);
        if (strcmp(nm, victim) != 0) ft_gguf_add_tensor(w, nm, gt->type, gt->n_dims, gt->ne, gt->data);
        else if (n > 0) ft_gguf_add_tensor(w, nm, type, 1, &n, junk);
    }
    ok = ft_gguf_write(w, dst) == FT_OK;
    ft_gguf_writer_free(w); ft_gguf_close(g); free(junk);
    return ok;
}

TEST(broken_nf4_files_fail_clearly) {
    const char *p32 = "build/nf4_tiny3.gguf", *pq = "build/nf4_tiny3_nf4.gguf", *pb = "build/nf4_broken.gguf";
    struct { const char *victim; ft_type type; int64_t n; const char *expect; } cases[] = {
        {"blk.0.attn_q.weight.nf4_absmax", FT_TYPE_I8, 15, "nf4_absmax' is i8 [15], expected i8 [16]"},
        {"blk.0.attn_q.weight.nf4_absmax", FT_TYPE_F32, 16, "nf4_absmax' is f32 [16], expected i8 [16]"},
        {"blk.1.ffn_down.weight.nf4_absmax2", FT_TYPE_F32, 2, "nf4_absmax2' is f32 [2], expected f32 [1]"},
        {"blk.1.ffn_up.weight.nf4_offset", FT_TYPE_F32, 0, "has no 'blk.1.ffn_up.weight.nf4_offset'"},
        {"blk.0.attn_v.weight.nf4_code", FT_TYPE_F32, 255, "nf4_code' is f32 [255], expected f32 [256]"},
        {"blk.0.attn_k.weight", FT_TYPE_I8, 256, "packed nibbles"},
    };
    ft_model *m; ft_model_opts mo; int c;
    memset(&mo, 0, sizeof mo); mo.quantize = FT_TYPE_NF4;
    CHECK(tiny_model_write(p32, FT_TYPE_F32, 5), "write tiny model");
    CHECK_OK(ft_model_load(&m, p32, &mo));
    CHECK_OK(ft_model_save_gguf(m, pq));
    ft_model_free(m);
    for (c = 0; c < (int)(sizeof cases / sizeof cases[0]); c++) {
        ft_result r;
        CHECK(write_broken(pq, pb, cases[c].victim, cases[c].type, cases[c].n), "write broken %d", c);
        r = ft_model_load(&m, pb, NULL);
        CHECK(r == FT_ERR_FORMAT && strstr(ft_last_error(), cases[c].expect), "%s: got %s: %s", cases[c].victim, ft_result_string(r), ft_last_error());
        if (r == FT_OK) ft_model_free(m);
    }
    printf("    e.g. %s\n", ft_last_error());
    /* a non-finite scale */
    {
        ft_gguf *g; ft_gguf_writer *w; int64_t i, one = 1; float inf = INFINITY;
        ft_gguf_open(&g, pq); ft_gguf_writer_init(&w);
        for (i = 0; i < ft_gguf_n_kv(g); i++) ft_gguf_copy_kv(w, ft_gguf_kv_at(g, i));
        for (i = 0; i < ft_gguf_n_tensors(g); i++) {
            const ft_gguf_tensor *gt = ft_gguf_tensor_at(g, i); char nm[128];
            snprintf(nm, sizeof nm, "%.*s", (int)gt->name.n, gt->name.s);
            if (strcmp(nm, "blk.0.ffn_gate.weight.nf4_offset") == 0) ft_gguf_add_tensor(w, nm, FT_TYPE_F32, 1, &one, &inf);
            else ft_gguf_add_tensor(w, nm, gt->type, gt->n_dims, gt->ne, gt->data);
        }
        ft_gguf_write(w, pb); ft_gguf_writer_free(w); ft_gguf_close(g);
        CHECK(ft_model_load(&m, pb, NULL) == FT_ERR_FORMAT && strstr(ft_last_error(), "not finite"), "inf offset: %s", ft_last_error());
    }
    remove(p32); remove(pq); remove(pb);
}

/* the real model ($FT_MODEL, SmolLM2-135M Q4_1; skipped without it): quantized at load to NF4
   (0.516 bytes per linear weight). Its logits move away from the file's about as far as those
   of the same weights requantized to Q4_0 (4.5 bits): both are a second lossy 4-bit step. */
static void logit_diff(const float *a, const float *b, int64_t n, int64_t V, double *rel, int64_t *agree) {
    int64_t i, k; double num = 0, den = 0;
    *agree = 0;
    for (i = 0; i < n; i++) {
        const float *x = a + i * V, *y = b + i * V; int64_t ia = 0, ib = 0;
        for (k = 0; k < V; k++) { if (x[k] > x[ia]) ia = k; if (y[k] > y[ib]) ib = k; num += (x[k] - y[k]) * (double)(x[k] - y[k]); den += (double)x[k] * x[k]; }
        *agree += ia == ib;
    }
    *rel = sqrt(num / den);
}
TEST(real_model_nf4) {
    const char *path = getenv("FT_MODEL"); ft_model *m[3]; ft_model_opts mo; ft_ctx *ctx; ft_ctx_opts co; void *q40[7 * 64];
    int32_t ids[64]; int64_t n, V, nw, bytes, agree[3], l, k, nq = 0; ft_batch bt; float *y[3]; double rel[3], t0; int j;
    if (!path || !path[0]) { printf("    skipped: FT_MODEL is not set\n"); return; }
    memset(&mo, 0, sizeof mo); mo.quantize = FT_TYPE_NF4;
    CHECK_OK(ft_model_load(&m[0], path, NULL));
    CHECK_OK(ft_model_load(&m[2], path, NULL));
    t0 = ft_time_seconds();
    CHECK_OK(ft_model_load(&m[1], path, &mo));
    if (ft_test_cur_failed) return;
    bytes = ft_model_linear_bytes(m[1], &nw);
    printf("    %lld linear weights quantized in %.2f s: %.4f bytes per weight (the file's: %.4f)\n", (long long)nw,
           ft_time_seconds() - t0, (double)bytes / (double)nw, (double)ft_model_linear_bytes(m[0], NULL) / (double)nw);
    CHECK(fabs((double)bytes / (double)nw - 0.516) < 0.001, "bytes per weight");
    for (l = 0; l < ft_model_config_get(m[2])->n_layer && l < 64; l++)      /* m[2]: requantized to Q4_0 */
        for (k = 0; k < 7; k++) {
            ft_tensor *W = *ft__layer_linear(ft_model_layer(m[2], (int)l), (int)k); int64_t o, nn = ft_numel(W);
            float *f = (float *)malloc((size_t)nn * 4);
            for (o = 0; o < W->shape[0]; o++) ft__weight_row(W, o, 0, W->shape[1], f + o * W->shape[1]);
            q40[nq] = malloc(ft_type_row_bytes(FT_TYPE_Q4_0, W->shape[1]) * (size_t)W->shape[0]);
            ft__quant_q4_0(f, q40[nq], nn);
            W->type = FT_TYPE_Q4_0; W->data = q40[nq++]; free(f);
        }
    n = ft_tokenize(ft_model_tokenizer(m[0]), "The quick brown fox jumps over the lazy dog. Paris is the capital of France, and Berlin is", -1, ids, 64, 0, 0);
    memset(&co, 0, sizeof co); co.n_threads = 2; ft_ctx_init(&ctx, &co);
    memset(&bt, 0, sizeof bt); bt.B = 1; bt.T = n; bt.ids = ids;
    V = ft_model_config_get(m[0])->n_vocab;
    for (j = 0; j < 3; j++) y[j] = model_logits_of(m[j], ctx, &bt, V);
    CHECK(y[0] && y[1] && y[2], "forward");
    if (y[0] && y[1] && y[2]) {
        logit_diff(y[0], y[1], n, V, &rel[1], &agree[1]);
        logit_diff(y[0], y[2], n, V, &rel[2], &agree[2]);
        printf("    %lld tokens vs the Q4_1 file: NF4 argmax agrees at %lld, logits relative RMS %.4f; requantized to Q4_0: %lld, %.4f\n",
               (long long)n, (long long)agree[1], rel[1], (long long)agree[2], rel[2]);
        CHECK(rel[1] < 1.5 * rel[2] && agree[1] >= n / 2, "NF4 about as close as Q4_0");
    }
    for (j = 0; j < 3; j++) { free(y[j]); ft_model_free(m[j]); }
    while (nq > 0) free(q40[--nq]);
    ft_ctx_free(ctx);
}

FT_TEST_MAIN(test_nf4) {
    RUN(dynamic_map_equals_bitsandbytes);
    RUN(torch_mean_equals_torch);
    RUN(quantize_bit_exact_with_bitsandbytes);
    RUN(dequantize_bit_exact_with_bitsandbytes);
    RUN(simd_block_equals_reference);
    RUN(matmul_equals_decoded);
    RUN(model_quantized_at_load);
    RUN(save_gguf_and_map_back);
    RUN(broken_nf4_files_fail_clearly);
    RUN(real_model_nf4);
    return ft_test_summary("test_nf4");
}
