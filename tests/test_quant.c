/* test_quant.c - every GGML block format decoded bit-exactly as the `gguf` Python package does
   (tests/fixtures/quant.bin from tools/ref/quant_fixtures.py), with the SIMD decoders and the
   scalar references; and a matmul against a quantized weight equal to the matmul against its
   decoded f32 copy. */
#define FINETUNE_IMPLEMENTATION
#include "../finetune.h"
#include "ft_test.h"


TEST(dequantize_bit_exact_with_gguf) {
    size_t n, off = 8; unsigned char *b = ft_test_slurp("tests/fixtures/quant.bin", &n); uint32_t count, e;
    int exact = 0, total = 0;
    CHECK(b && memcmp(b, "FTQF", 4) == 0, "fixture");
    if (!b) return;
    memcpy(&count, b + 4, 4);
    for (e = 0; e < count; e++) {
        uint32_t h[4]; const unsigned char *raw; const float *want; float *got; const ft__type_info *ti; uint32_t r; int ok = 1;
        memcpy(h, b + off, 16); off += 16;
        raw = b + off; off += h[3];
        want = (const float *)(b + off); off += (size_t)h[1] * h[2] * 4;
        ti = ft__type((ft_type)h[0]);
        total++;
        CHECK(ti && ti->to_f32, "type %u (%s) has no decoder", h[0], ti ? ti->name : "?");
        if (!ti || !ti->to_f32) continue;
        got = (float *)malloc((size_t)h[1] * h[2] * 4);
        for (r = 0; r < h[1]; r++) ti->to_f32(raw + r * ft_type_row_bytes((ft_type)h[0], h[2]), got + r * h[2], h[2]);
        ok = memcmp(got, want, (size_t)h[1] * h[2] * 4) == 0;
        CHECK(ok, "%s: decoded values differ from gguf's", ti->name);
        if (ok) exact++;
        /* the scalar references of the SIMD decoders too */
        if (h[0] == FT_TYPE_Q4_0 || h[0] == FT_TYPE_Q4_1 || h[0] == FT_TYPE_Q8_0) {
            for (r = 0; r < h[1]; r++) {
                const unsigned char *rr = raw + r * ft_type_row_bytes((ft_type)h[0], h[2]);
                if (h[0] == FT_TYPE_Q4_0) ft__dequant_q4_0_ref(rr, got + r * h[2], h[2]);
                else if (h[0] == FT_TYPE_Q4_1) ft__dequant_q4_1_ref(rr, got + r * h[2], h[2]);
                else ft__dequant_q8_0_ref(rr, got + r * h[2], h[2]);
            }
            CHECK(memcmp(got, want, (size_t)h[1] * h[2] * 4) == 0, "%s: the scalar reference differs from gguf's", ti->name);
        }
        free(got);
    }
    printf("    %d of %d types bit-exact with gguf.quants.dequantize\n", exact, total);
    CHECK(total == 14, "14 types in the fixture");
    free(b);
}

/* y = x W^T with W quantized equals y with W decoded to f32 (forward and input gradient):
   bit for bit through the GEMM (37 rows), within 1e-5 through the few-row GEMV (3 rows) */
TEST(quantized_matmul_equals_decoded) {
    size_t n, off = 8; unsigned char *b = ft_test_slurp("tests/fixtures/quant.bin", &n); uint32_t count, e;
    ft_ctx *ctx; ft_ctx_opts o;
    memset(&o, 0, sizeof o); o.n_threads = 2; ft_ctx_init(&ctx, &o);
    memcpy(&count, b + 4, 4);
    for (e = 0; e < count; e++) {
        uint32_t h[4]; const unsigned char *raw; const float *want; int m;
        memcpy(h, b + off, 16); off += 16;
        raw = b + off; off += h[3];
        want = (const float *)(b + off); off += (size_t)h[1] * h[2] * 4;
        if (!ft__type((ft_type)h[0])->to_f32 || h[0] == FT_TYPE_F32) continue;
        for (m = 0; m < 2; m++) {                                   /* GEMV (M = 3) and GEMM (M = 37) */
            int64_t M = m ? 37 : 3, sw[2], i; ft_tensor *Wq, *Wf, *x, *yq, *yf; ft_params *P; int64_t sx[2];
            float *dxq;
            ft_ctx_reset(ctx);
            sw[0] = h[1]; sw[1] = h[2]; sx[0] = M; sx[1] = h[2];
            Wq = ft_tensor_new(ctx, (ft_type)h[0], 2, sw); memcpy(Wq->data, raw, h[3]);
            Wf = ft_tensor_2d(ctx, h[1], h[2]); memcpy(Wf->data, want, (size_t)h[1] * h[2] * 4);
            ft_params_init(&P); x = ft_params_add(P, "x", 2, sx); ft_params_alloc(P);
            for (i = 0; i < M * (int64_t)h[2]; i++) ((float *)x->data)[i] = sinf((float)i);
            yq = ft_matmul(ctx, x, Wq, 0, 1);
            yf = ft_matmul(ctx, x, Wf, 0, 1);
            CHECK(yq && yf && (m ? memcmp(yq->data, yf->data, (size_t)(M * h[1]) * 4) == 0 : ft_test_close((float *)yq->data, (float *)yf->data, (long)(M * h[1]), 1e-5, 1e-5, NULL) <= 1), "%s M=%lld: forward differs", ft_type_name((ft_type)h[0]), (long long)M);
            ft_backward(ctx, ft_sum(ctx, ft_mul(ctx, yq, yq)));
            dxq = (float *)malloc((size_t)(M * h[2]) * 4); memcpy(dxq, x->grad, (size_t)(M * h[2]) * 4);
            ft_params_zero_grad(P); ft_ctx_reset(ctx);
            Wf = ft_tensor_2d(ctx, h[1], h[2]); memcpy(Wf->data, want, (size_t)h[1] * h[2] * 4);
            yf = ft_matmul(ctx, x, Wf, 0, 1);
            ft_backward(ctx, ft_sum(ctx, ft_mul(ctx, yf, yf)));
            CHECK(m ? memcmp(dxq, x->grad, (size_t)(M * h[2]) * 4) == 0 : ft_test_close(dxq, x->grad, (long)(M * h[2]), 1e-4, 1e-4, NULL) <= 1, "%s M=%lld: input gradient differs", ft_type_name((ft_type)h[0]), (long long)M);
            free(dxq); ft_params_free(P);
        }
    }
    ft_ctx_free(ctx); free(b);
}

FT_TEST_MAIN(test_quant) {
    RUN(dequantize_bit_exact_with_gguf);
    RUN(quantized_matmul_equals_decoded);
    return ft_test_summary("test_quant");
}
