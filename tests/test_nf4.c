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

int main(void) {
    RUN(dynamic_map_equals_bitsandbytes);
    RUN(torch_mean_equals_torch);
    RUN(quantize_bit_exact_with_bitsandbytes);
    RUN(dequantize_bit_exact_with_bitsandbytes);
    RUN(simd_block_equals_reference);
    return ft_test_summary("test_nf4");
}
