/* finetune_cuda.cu - the GPU companion of finetune.h: its kernels on one NVIDIA GPU (CUDA Runtime
   only: no cuBLAS, no cuDNN). MIT / public domain, as finetune.h.

   BUILD
      make cuda          nvcc -O3 for sm_80 and sm_90 plus PTX, warnings as errors:
                         build/finetune_cuda.o, which a program links with finetune.o (nvcc links
                         the CUDA runtime)
      make test-cuda     tests/test_cuda.cc on the GPU
      make test          includes build/test_cuda_emu: the same tests, every kernel here compiled
                         for the CPU through tests/cuda_emu.h (thread blocks as fibers with
                         barriers, warp shuffles and the mma fragment layouts emulated; device
                         memory unreadable from the host outside copies and launches)
   The header stays libc-only: it neither includes nor needs this file.

   USE
      ft_ctx_opts o = ft_ctx_opts_default();
      o.device = ft_cuda_device();                 // the ops of this context run on the GPU
      ft_ctx_init(&ctx, &o);
      ft_model_to_device(m, o.device);             // every weight as it is stored (NF4, Q4_K, ...)
      ft_params_to_device(ft_peft_params(p), o.device);
      ft_train(ctx, m, ft_peft_params(p), data, &train_opts, NULL);   // any objective on the GPU
      ft_params_to_host(ft_peft_params(p)); ft_model_to_host(m);     // back, to save the adapter
   or, for graphs of your own: ft_device_weight, ft_tensor_to_device, the ops, ft_backward,
   ft_tensor_read. `ft train|generate|eval --device cuda` (build/ft-cuda, make ft-cuda) does the
   first; ft_generate with the model there keeps its KV cache on the GPU.
   finetune.h's "a device" section lists the ops that have device kernels so far.

   WHAT IS HERE: ft_cuda_device() fills finetune.h's kernel table (ft_device) with:
      memory        alloc, release, upload, download, zero, copy (device to device: the KV
                    cache's appends)
      gemm          C (M, N) (+)= alpha A B^T for any two operands, each dense f32 (strided:
                    either transpose) or a frozen weight (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
                    Q8_0, IQ4_NL, Q2_K..Q6_K, NF4 with its double-quantized state) decoded inside
                    the tile, bit for bit as finetune.h decodes it: y = x W^T, dx = dy W,
                    dW = dy^T x, LoRA's products. BF16 tensor cores (mma.sync m16n8k16), f32
                    accumulators.
      rmsnorm, rope (angles with frequency factors and YaRN), swiglu, flash attention (causal,
      GQA, prefix keys/values, documents, sliding window, a KV cache's offsets), the head and
      the loss chunked (lse, log p and the frozen head's gradient with respect to h), the
      embedding, dropout (finetune.h's mask, bit for bit), the pointwise ops (silu, gelu, gelu_tanh, tanh, sigmoid, logsigmoid, exp, log,
      clamp, scale, ... with their derivatives), elementwise ops and reductions (sums, the sum
      of squares in double, finiteness), AdamW (finetune.h's update; ft_optim_step refuses a
      non-finite gradient before it changes anything); and, outside the table so far,
      cross-entropy rows.
   Determinism: no kernel here uses atomics; every sum has a fixed order (a GPU run repeats bit
   for bit). Backward kernels ACCUMULATE (+=) into gradients, as finetune.h's do.

   KERNEL SHAPES
      GEMM tile: 64 x 64 outputs per block of 128 threads (4 warps, each 32 x 32 = 2 x 4 mma
      tiles of 16 x 8), K in steps of 32: both operands decoded to bf16 in shared memory, then
      fragments read in the PTX layout (see tests/cuda_emu.h) and multiplied by mma.sync.
      Row kernels: one block of 256 threads per row, reductions by warp shuffles and one
      shared-memory pass. Column sums (RMSNorm's dw): one thread per column, rows in order.
      Attention: one warp per query (key) row, keys (queries) 16 at a time in shared memory. */
#ifndef FINETUNE_CUDA_CU
#define FINETUNE_CUDA_CU
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "finetune.h"

#ifdef __cplusplus
extern "C" {
#endif

/* the kernel table of this GPU (device 0 unless ft_cuda_init chose another) */
FT_API const ft_device *ft_cuda_device(void);
FT_API ft_result ft_cuda_init(int device);
FT_API int       ft_cuda_device_count(void);                  /* 0 when none can be used     */
FT_API ft_result ft_cuda_malloc(void **p, size_t bytes);
FT_API void      ft_cuda_free(void *p);
FT_API ft_result ft_cuda_upload(void *dst, const void *src, size_t bytes);
FT_API ft_result ft_cuda_download(void *dst, const void *src, size_t bytes);
FT_API ft_result ft_cuda_zero(void *dst, size_t bytes);
FT_API ft_result ft_cuda_copy(void *dst, const void *src, size_t bytes);
FT_API ft_result ft_cuda_sync(void);

/* the table's kernels (ft_device's comments say what each does); device pointers throughout,
   weights made by ft_device_weight */
FT_API ft_result ft_cuda_gemm(float *C, int64_t ldc, ft_device_operand A, ft_device_operand B,
                              int64_t M, int64_t N, int64_t K, float alpha, int accumulate);
FT_API ft_device_operand ft_cuda_dense(const float *p, int64_t si, int64_t sk);
FT_API ft_device_operand ft_cuda_weight_op(const ft_tensor *w, int trans);
FT_API ft_result ft_cuda_binary(int kind, float *y, const float *a, const float *b, int64_t n);
FT_API ft_result ft_cuda_axpy(float *y, float s, const float *x, int64_t n);
FT_API ft_result ft_cuda_sum(float *y, const float *x, int64_t n, float s);
FT_API ft_result ft_cuda_spread(float *y, int64_t n, const float *x, float s);
FT_API ft_result ft_cuda_sum_rows(float *y, const float *x, int64_t N, int64_t C, float s);
FT_API ft_result ft_cuda_spread_rows(float *dx, int64_t N, int64_t C, const float *dy, float s);
FT_API ft_result ft_cuda_rows_axpy(float *y, const float *g, const float *x, int64_t N, int64_t C);
FT_API ft_result ft_cuda_unary(int op, float *y, const float *x, int64_t n, float lo, float hi);
FT_API ft_result ft_cuda_unary_backward(int op, float *dx, const float *dy, const float *x, const float *y, int64_t n,
                                        float lo, float hi);
FT_API ft_result ft_cuda_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w,
                                         int64_t N, int64_t C, float eps);
FT_API ft_result ft_cuda_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x,
                                          const float *w, const float *rstd, int64_t N, int64_t C);
FT_API ft_result ft_cuda_rope_angles(float *cs, const int32_t *pos, int64_t N, const ft_rope_opts *o,
                                     const float *freq_factors);
FT_API ft_result ft_cuda_rope(float *y, const float *x, const float *cs, int64_t N, int n_head,
                              int64_t D, int n_rot, int mode, float sign);
FT_API ft_result ft_cuda_swiglu_forward(float *y, const float *g, const float *u, int64_t n);
FT_API ft_result ft_cuda_dropout(float *y, float *mask, const float *x, int64_t n, float p, uint64_t seed);
FT_API ft_result ft_cuda_swiglu_backward(float *dg, float *du, const float *dy, const float *g,
                                         const float *u, int64_t n);
#define FT_CUDA_ATTN_DMAX 256       /* head dims up to this                                      */
FT_API ft_result ft_cuda_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                                           const float *pk, const float *pv, const ft_device_attn *a);
FT_API ft_result ft_cuda_attention_backward(float *dq, float *dk, float *dv, float *dpk, float *dpv, const float *dout,
                                            const float *q, const float *k, const float *v, const float *pk,
                                            const float *pv, const float *out, const float *lse, const ft_device_attn *a);
FT_API ft_result ft_cuda_linear_xent(float *lse, float *logp, float *U, const float *h, const ft_tensor *W,
                                     const int32_t *tgt, int64_t N, int32_t ignore, float softcap, float *work,
                                     int64_t work_rows);
FT_API ft_result ft_cuda_embedding(float *y, const ft_tensor *W, const int32_t *ids, int64_t n);

/* outside the table so far: logits (N, V), tgt (N) -> lse (N) (0 where tgt == ignore); when dx:
   dx (N, V) += g[i] (onehot - softmax) */
FT_API ft_result ft_cuda_xent_rows(float *lse, float *dx, const float *logits, const int32_t *tgt,
                                   const float *g, int64_t N, int64_t V, int32_t ignore);
FT_API ft_result ft_cuda_finite(const float *x, int64_t n, int *finite);
FT_API ft_result ft_cuda_sumsq(double *out, const float *x, int64_t n);
FT_API ft_result ft_cuda_scale(float *y, float s, int64_t n);
FT_API ft_result ft_cuda_adamw(float *p, const float *g, float *m, float *v, int64_t n, float a, float wd, float b1,
                               float b2, float eps, float c1, float c2);

#ifdef __cplusplus
}
#endif

#ifndef FT_CUDA_API_ONLY
/* =============================================================================================
   IMPLEMENTATION
   ============================================================================================= */
#ifndef FT_CUDA_EMU
#include <cuda_runtime.h>
#define FT_CU_LAUNCH(kernel, grid, block, ...) kernel<<<grid, block>>>(__VA_ARGS__)
#define FT_CU_UNROLL _Pragma("unroll")   /* fixed-count loops over register arrays: kept in registers */
#else
#define FT_CU_UNROLL
#define FT_CU_LAUNCH(kernel, grid, block, ...) ft_emu_launch(grid, block, [&] { kernel(__VA_ARGS__); })
#endif
#include <math.h>

#define FT_CU_ROW_THREADS 256
#define FT_CU_EW_THREADS  256
#define FT_CU_BM 64                 /* GEMM block tile: rows of C                                */
#define FT_CU_BN 64                 /*                  columns of C                             */
#define FT_CU_BK 32                 /*                  K per step                               */
#define FT_CU_PAD 8                 /* shared rows padded against bank conflicts                 */

static ft_result ft__cu_check(const char *what) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return ft_set_error(FT_ERR_UNSUPPORTED, "cuda: %s: %s", what, cudaGetErrorString(e));
    return FT_OK;
}
static unsigned ft__cu_blocks(int64_t n, int per) { return (unsigned)((n + per - 1) / per); }

/* ---- memory ------------------------------------------------------------------------------------ */
FT_API ft_result ft_cuda_init(int device) {
    if (cudaSetDevice(device) != cudaSuccess) return ft_set_error(FT_ERR_UNSUPPORTED, "cuda: no device %d", device);
    return FT_OK;
}
FT_API int ft_cuda_device_count(void) {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}
FT_API ft_result ft_cuda_malloc(void **p, size_t bytes) {
    if (cudaMalloc(p, bytes ? bytes : 1) != cudaSuccess) {
        *p = NULL;
        return ft_set_error(FT_ERR_NOMEM, "cuda: could not allocate %zu bytes of device memory", bytes);
    }
    return FT_OK;
}
FT_API void ft_cuda_free(void *p) { if (p) cudaFree(p); }
FT_API ft_result ft_cuda_upload(void *dst, const void *src, size_t bytes) {
    if (cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice) != cudaSuccess) return ft__cu_check("upload");
    return FT_OK;
}
FT_API ft_result ft_cuda_download(void *dst, const void *src, size_t bytes) {
    if (cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost) != cudaSuccess) return ft__cu_check("download");
    return FT_OK;
}
FT_API ft_result ft_cuda_zero(void *dst, size_t bytes) {
    if (cudaMemset(dst, 0, bytes) != cudaSuccess) return ft__cu_check("memset");
    return FT_OK;
}
FT_API ft_result ft_cuda_copy(void *dst, const void *src, size_t bytes) {
    if (cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice) != cudaSuccess) return ft__cu_check("copy");
    return FT_OK;
}
FT_API ft_result ft_cuda_sync(void) {
    if (cudaDeviceSynchronize() != cudaSuccess) return ft__cu_check("synchronize");
    return FT_OK;
}

/* ---- frozen weights: the kernels' by-value form of a device weight (ft_device_weight) -------------- */
typedef struct ft__cu_weight {
    ft_type type;
    int64_t rows, cols;
    const void *data;
    const uint8_t *qabsmax;         /* NF4 only: the state, on the device                        */
    const float *absmax2, *code;
    float offset;
} ft__cu_weight;
static ft_result ft__cu_weight_of(const ft_tensor *t, ft__cu_weight *w) {
    ft_type ty = t->type;
    memset(w, 0, sizeof *w);
    if (t->ndim != 2 || !(t->flags & FT_TENSOR_DEVICE))
        return ft_set_error(FT_ERR_INVALID, "cuda: weight %s is not a 2-D device weight (ft_device_weight)", t->name ? t->name : "?");
    if (ty != FT_TYPE_F32 && ty != FT_TYPE_F16 && ty != FT_TYPE_BF16 && ty != FT_TYPE_Q4_0 && ty != FT_TYPE_Q4_1 &&
        ty != FT_TYPE_Q5_0 && ty != FT_TYPE_Q5_1 && ty != FT_TYPE_Q8_0 && ty != FT_TYPE_IQ4_NL && ty != FT_TYPE_Q2_K &&
        ty != FT_TYPE_Q3_K && ty != FT_TYPE_Q4_K && ty != FT_TYPE_Q5_K && ty != FT_TYPE_Q6_K && (ty != FT_TYPE_NF4 || !t->nf4))
        return ft_set_error(FT_ERR_UNSUPPORTED, "cuda: weight %s: type %s has no GPU decoder yet", t->name ? t->name : "?", ft_type_name(ty));
    w->type = ty;
    w->rows = t->shape[0];
    w->cols = t->shape[1];
    w->data = t->data;
    if (ty == FT_TYPE_NF4) {
        w->qabsmax = t->nf4->qabsmax;
        w->absmax2 = t->nf4->absmax2;
        w->code = t->nf4->code;
        w->offset = t->nf4->offset;
    }
    return FT_OK;
}

/* ---- decoding one element of a compact weight (the layouts of REFERENCE.md / finetune.h) ----------- */
__constant__ float ft__cu_nf4[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

__device__ __forceinline__ float ft__cu_f16(const uint8_t *p) {       /* IEEE half, little-endian */
    uint32_t h = (uint32_t)p[0] | ((uint32_t)p[1] << 8), e = (h >> 10) & 31, m = h & 1023;
    float f = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 1024), (int)e - 25);
    return (h & 0x8000) ? -f : f;
}
__device__ __forceinline__ float ft__cu_bf16(uint32_t bits) {
    union { uint32_t u; float f; } c;
    c.u = bits << 16;
    return c.f;
}
/* f32 -> bf16, round to nearest even (NaN stays NaN) */
__device__ __forceinline__ uint32_t ft__cu_to_bf16(float f) {
    union { uint32_t u; float f; } c;
    c.f = f;
    if ((c.u & 0x7fffffffu) > 0x7f800000u) return (c.u >> 16) | 0x40;
    return (c.u + 0x7fffu + ((c.u >> 16) & 1)) >> 16;
}
/* nibble j (0..31) of a 32-weight block of 16 bytes: the low nibbles are weights 0..15 */
__device__ __forceinline__ int ft__cu_nib32(const uint8_t *qs, int j) { return j < 16 ? qs[j] & 15 : qs[j - 16] >> 4; }

__device__ __forceinline__ float ft__cu_nf4_at(const ft__cu_weight &w, int64_t e) {
    int64_t b = e / 64;
    uint8_t byte = ((const uint8_t *)w.data)[e / 2];
    float absmax = __fadd_rn(__fmul_rn(w.code[w.qabsmax[b]], w.absmax2[b / 256]), w.offset);
    return __fmul_rn(ft__cu_nf4[(e & 1) ? byte & 15 : byte >> 4], absmax);
}
/* The GGML blocks, one element e of a block b at a time, as finetune.h's [quant] references
   decode them (the same f32 products; every product is exact, so the order of the final add is
   the only rounding). K formats: 256 elements in 16 or 8 sub-blocks. */
__constant__ int8_t ft__cu_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
__device__ __forceinline__ uint32_t ft__cu_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
/* Q5_0 / Q5_1: the fifth bit of element e is bit e of qh (a little-endian u32) */
__device__ __forceinline__ int ft__cu_q5(const uint8_t *qh, const uint8_t *qs, int e) {
    return ft__cu_nib32(qs, e) | (int)((ft__cu_le32(qh) >> e) & 1) << 4;
}
/* Q2_K (84 B: scales, qs, d, dmin) and Q3_K (110 B: hmask, qs, scales, d): sub-block k = 8 h + s
   of 16, two low bits from qs[32 h + 16 (s & 1) + l] >> 2 (s >> 1) */
__device__ float ft__cu_q2_k(const uint8_t *b, int e) {
    int h = e / 128, s = e % 128 / 16, l = e % 16, k = 8 * h + s;
    int q = b[16 + 32 * h + 16 * (s & 1) + l] >> (2 * (s >> 1)) & 3;
    float dl = __fmul_rn(ft__cu_f16(b + 80), (float)(b[k] & 15)), ml = __fmul_rn(ft__cu_f16(b + 82), (float)(b[k] >> 4));
    return __fsub_rn(__fmul_rn(dl, (float)q), ml);
}
__device__ float ft__cu_q3_k(const uint8_t *b, int e) {
    const uint8_t *sc = b + 96;
    int h = e / 128, s = e % 128 / 16, l = e % 16, k = 8 * h + s;
    int q = b[32 + 32 * h + 16 * (s & 1) + l] >> (2 * (s >> 1)) & 3, hm = b[16 * (s & 1) + l] >> (4 * h + (s >> 1)) & 1;
    int lo = k < 8 ? sc[k] & 15 : sc[k - 8] >> 4, hi = sc[8 + (k & 3)] >> (2 * (k >> 2)) & 3;
    float dl = __fmul_rn(ft__cu_f16(b + 108), (float)((lo | hi << 4) - 32));
    return __fmul_rn(dl, (float)(q - (hm ? 0 : 4)));
}
/* Q4_K (144 B: d, dmin, scales, qs) and Q5_K (176 B: ..., qh, qs): sub-block j of 32 */
__device__ float ft__cu_q45_k(const uint8_t *b, int e, int five) {
    const uint8_t *sc = b + 4, *qs = b + (five ? 48 : 16);
    int j = e / 32, l = e % 32, mn, scl;
    int q = qs[32 * (j >> 1) + l] >> (4 * (j & 1)) & 15;
    if (five) q |= (b[16 + l] >> j & 1) << 4;
    if (j < 4) { scl = sc[j] & 63; mn = sc[j + 4] & 63; }
    else { scl = (sc[j + 4] & 15) | (sc[j - 4] >> 6) << 4; mn = (sc[j + 4] >> 4) | (sc[j] >> 6) << 4; }
    return __fsub_rn(__fmul_rn(__fmul_rn(ft__cu_f16(b), (float)scl), (float)q), __fmul_rn(ft__cu_f16(b + 2), (float)mn));
}
/* Q6_K (210 B: ql, qh, int8 scales, d): half h, group g of 32 */
__device__ float ft__cu_q6_k(const uint8_t *b, int e) {
    int h = e / 128, g = e % 128 / 32, l = e % 32;
    int q = ((b[64 * h + 32 * (g & 1) + l] >> (4 * (g >> 1)) & 15) | (b[128 + 32 * h + l] >> (2 * g) & 3) << 4) - 32;
    return __fmul_rn(__fmul_rn(ft__cu_f16(b + 208), (float)(int8_t)b[192 + 8 * h + 2 * g + (l >> 4)]), (float)q);
}
/* elements and bytes of a block of type t (1 and the element's bytes for F32 / F16 / BF16) */
__device__ __forceinline__ void ft__cu_block_geom(ft_type t, int *elems, int *bytes) {
    switch (t) {
    case FT_TYPE_Q4_0: case FT_TYPE_IQ4_NL: *elems = 32; *bytes = 18; return;
    case FT_TYPE_Q4_1: *elems = 32; *bytes = 20; return;
    case FT_TYPE_Q5_0: *elems = 32; *bytes = 22; return;
    case FT_TYPE_Q5_1: *elems = 32; *bytes = 24; return;
    case FT_TYPE_Q8_0: *elems = 32; *bytes = 34; return;
    case FT_TYPE_Q2_K: *elems = 256; *bytes = 84; return;
    case FT_TYPE_Q3_K: *elems = 256; *bytes = 110; return;
    case FT_TYPE_Q4_K: *elems = 256; *bytes = 144; return;
    case FT_TYPE_Q5_K: *elems = 256; *bytes = 176; return;
    case FT_TYPE_Q6_K: *elems = 256; *bytes = 210; return;
    case FT_TYPE_F32: *elems = 1; *bytes = 4; return;
    default: *elems = 1; *bytes = 2; return;
    }
}
/* element (r, c) of a weight, decoded to f32 */
__device__ float ft__cu_weight_at(const ft__cu_weight &w, int64_t r, int64_t c) {
    int elems, bytes, e;
    const uint8_t *b;
    if (w.type == FT_TYPE_NF4) return ft__cu_nf4_at(w, r * w.cols + c);
    ft__cu_block_geom(w.type, &elems, &bytes);
    b = (const uint8_t *)w.data + (r * (w.cols / elems) + c / elems) * bytes;
    e = (int)(c % elems);
    switch (w.type) {
    case FT_TYPE_F32: return *(const float *)b;
    case FT_TYPE_F16: return ft__cu_f16(b);
    case FT_TYPE_BF16: return ft__cu_bf16((uint32_t)b[0] | (uint32_t)b[1] << 8);
    case FT_TYPE_Q8_0: return __fmul_rn((float)(int8_t)b[2 + e], ft__cu_f16(b));
    case FT_TYPE_Q4_0: return __fmul_rn((float)(ft__cu_nib32(b + 2, e) - 8), ft__cu_f16(b));
    case FT_TYPE_Q4_1: return __fadd_rn(__fmul_rn((float)ft__cu_nib32(b + 4, e), ft__cu_f16(b)), ft__cu_f16(b + 2));
    case FT_TYPE_Q5_0: return __fmul_rn((float)(ft__cu_q5(b + 2, b + 6, e) - 16), ft__cu_f16(b));
    case FT_TYPE_Q5_1: return __fadd_rn(__fmul_rn((float)ft__cu_q5(b + 4, b + 8, e), ft__cu_f16(b)), ft__cu_f16(b + 2));
    case FT_TYPE_IQ4_NL: return __fmul_rn(ft__cu_f16(b), (float)ft__cu_iq4nl[ft__cu_nib32(b + 2, e)]);
    case FT_TYPE_Q2_K: return ft__cu_q2_k(b, e);
    case FT_TYPE_Q3_K: return ft__cu_q3_k(b, e);
    case FT_TYPE_Q4_K: return ft__cu_q45_k(b, e, 0);
    case FT_TYPE_Q5_K: return ft__cu_q45_k(b, e, 1);
    case FT_TYPE_Q6_K: return ft__cu_q6_k(b, e);
    default: return 0.0f;
    }
}

/* ---- GEMM: C (M, N) (+)= alpha A B^T on bf16 tensor cores ---------------------------------------- */
struct ft__cu_op {                  /* an operand as the kernel reads it                         */
    const float *p;
    int64_t si, sk;
    ft__cu_weight w;
    int is_w, trans;
};
__device__ __forceinline__ float ft__cu_op_at(const ft__cu_op &o, int64_t i, int64_t k) {
    if (!o.is_w) return o.p[i * o.si + k * o.sk];
    return o.trans ? ft__cu_weight_at(o.w, k, i) : ft__cu_weight_at(o.w, i, k);
}
__device__ __forceinline__ void ft__cu_mma(float d[4], const uint32_t a[4], const uint32_t b[2]) {
#ifdef FT_CUDA_EMU
    ft_emu_mma_bf16(d, a, b);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
/* rows [i0, i0 + rows) x K [k0, k0 + 32) of an operand -> tile (rows, BK + PAD) bf16, zeros outside */
__device__ void ft__cu_load_tile(uint16_t (*tile)[FT_CU_BK + FT_CU_PAD], int rows, const ft__cu_op &o,
                                 int64_t i0, int64_t n_i, int64_t k0, int64_t K) {
    int e;
    for (e = threadIdx.x; e < rows * FT_CU_BK; e += blockDim.x) {
        int i = e / FT_CU_BK, k = e % FT_CU_BK;
        float v = (i0 + i < n_i && k0 + k < K) ? ft__cu_op_at(o, i0 + i, k0 + k) : 0.0f;
        tile[i][k] = (uint16_t)ft__cu_to_bf16(v);
    }
}
__device__ __forceinline__ uint32_t ft__cu_pair(const uint16_t *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 16); }

__global__ void __launch_bounds__(128) ft__cu_gemm_kernel(float *C, int64_t ldc, ft__cu_op A, ft__cu_op B, int64_t M,
                                                          int64_t N, int64_t K, float alpha, int accumulate) {
    __shared__ uint16_t As[FT_CU_BM][FT_CU_BK + FT_CU_PAD];
    __shared__ uint16_t Bs[FT_CU_BN][FT_CU_BK + FT_CU_PAD];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    int wm = warp / 2 * 32, wn = warp % 2 * 32, mi, ni, kk, i;
    int64_t m0 = (int64_t)blockIdx.y * FT_CU_BM, n0 = (int64_t)blockIdx.x * FT_CU_BN, k0;
    float d[2][4][4];
    FT_CU_UNROLL for (mi = 0; mi < 2; mi++) FT_CU_UNROLL for (ni = 0; ni < 4; ni++) FT_CU_UNROLL for (i = 0; i < 4; i++) d[mi][ni][i] = 0.0f;
    for (k0 = 0; k0 < K; k0 += FT_CU_BK) {
        ft__cu_load_tile(As, FT_CU_BM, A, m0, M, k0, K);
        ft__cu_load_tile(Bs, FT_CU_BN, B, n0, N, k0, K);
        __syncthreads();
        FT_CU_UNROLL for (kk = 0; kk < FT_CU_BK; kk += 16) {
            uint32_t a[2][4], b[4][2];
            int c = kk + 2 * t;
            FT_CU_UNROLL for (mi = 0; mi < 2; mi++) {
                int r = wm + mi * 16 + g;
                a[mi][0] = ft__cu_pair(&As[r][c]);
                a[mi][1] = ft__cu_pair(&As[r + 8][c]);
                a[mi][2] = ft__cu_pair(&As[r][c + 8]);
                a[mi][3] = ft__cu_pair(&As[r + 8][c + 8]);
            }
            FT_CU_UNROLL for (ni = 0; ni < 4; ni++) {
                int n = wn + ni * 8 + g;
                b[ni][0] = ft__cu_pair(&Bs[n][c]);
                b[ni][1] = ft__cu_pair(&Bs[n][c + 8]);
            }
            FT_CU_UNROLL for (mi = 0; mi < 2; mi++)
                FT_CU_UNROLL for (ni = 0; ni < 4; ni++) ft__cu_mma(d[mi][ni], a[mi], b[ni]);
        }
        __syncthreads();
    }
    FT_CU_UNROLL for (mi = 0; mi < 2; mi++)
        FT_CU_UNROLL for (ni = 0; ni < 4; ni++)
            FT_CU_UNROLL for (i = 0; i < 4; i++) {
                int64_t r = m0 + wm + mi * 16 + g + 8 * (i / 2), c = n0 + wn + ni * 8 + 2 * t + i % 2;
                if (r < M && c < N) C[r * ldc + c] = alpha * d[mi][ni][i] + (accumulate ? C[r * ldc + c] : 0.0f);
            }
}
FT_API ft_device_operand ft_cuda_dense(const float *p, int64_t si, int64_t sk) {
    ft_device_operand o;
    memset(&o, 0, sizeof o);
    o.p = p;
    o.si = si;
    o.sk = sk;
    return o;
}
FT_API ft_device_operand ft_cuda_weight_op(const ft_tensor *w, int trans) {
    ft_device_operand o;
    memset(&o, 0, sizeof o);
    o.w = w;
    o.trans = trans;
    return o;
}
/* the operand as the kernel takes it (by value), checking that a weight has the extent asked for */
static ft_result ft__cu_op_make(ft__cu_op *k, const ft_device_operand *o, int64_t n_i, int64_t K, const char *name) {
    ft_result r;
    memset(k, 0, sizeof *k);
    if (!o->w) {
        if (!o->p) return ft_set_error(FT_ERR_INVALID, "cuda gemm: operand %s has no data", name);
        k->p = o->p;
        k->si = o->si;
        k->sk = o->sk;
        return FT_OK;
    }
    if ((r = ft__cu_weight_of(o->w, &k->w)) != FT_OK) return r;
    if ((o->trans ? k->w.cols : k->w.rows) != n_i || (o->trans ? k->w.rows : k->w.cols) != K)
        return ft_set_error(FT_ERR_SHAPE, "cuda gemm: weight %s is (%lld, %lld), the product needs %lld x %lld%s", name,
                            (long long)k->w.rows, (long long)k->w.cols, (long long)n_i, (long long)K, o->trans ? " transposed" : "");
    k->is_w = 1;
    k->trans = o->trans;
    return FT_OK;
}
FT_API ft_result ft_cuda_gemm(float *C, int64_t ldc, ft_device_operand A, ft_device_operand B, int64_t M, int64_t N,
                              int64_t K, float alpha, int accumulate) {
    ft__cu_op a, b;
    ft_result r;
    if (M <= 0 || N <= 0 || K < 0 || ldc < N) return ft_set_error(FT_ERR_SHAPE, "cuda gemm: M %lld, N %lld, K %lld, ldc %lld", (long long)M, (long long)N, (long long)K, (long long)ldc);
    if ((r = ft__cu_op_make(&a, &A, M, K, "A")) != FT_OK || (r = ft__cu_op_make(&b, &B, N, K, "B")) != FT_OK) return r;
    dim3 grid(ft__cu_blocks(N, FT_CU_BN), ft__cu_blocks(M, FT_CU_BM)), block(128);
    FT_CU_LAUNCH(ft__cu_gemm_kernel, grid, block, C, ldc, a, b, M, N, K, alpha, accumulate);
    return ft__cu_check("gemm");
}

/* ---- block reductions ------------------------------------------------------------------------------- */
/* the sum (max = 0) or maximum (max = 1) of v over the block; sh: 33 floats of shared memory */
__device__ float ft__cu_block_reduce(float v, int max, float *sh) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = (blockDim.x + 31) / 32, o;
    for (o = 16; o > 0; o /= 2) {
        float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = max ? fmaxf(v, w) : v + w;
    }
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nw ? sh[lane] : (max ? -INFINITY : 0.0f);
        for (o = 16; o > 0; o /= 2) {
            float w = __shfl_xor_sync(0xffffffffu, v, o);
            v = max ? fmaxf(v, w) : v + w;
        }
        if (lane == 0) sh[32] = v;
    }
    __syncthreads();
    v = sh[32];
    __syncthreads();
    return v;
}

/* ---- RMSNorm ------------------------------------------------------------------------------------------ */
__global__ void ft__cu_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, int64_t C, float eps) {
    __shared__ float sh[33];
    const float *xr = x + blockIdx.x * C;
    float *yr = y + blockIdx.x * C, ss = 0.0f, r;
    int64_t j;
    for (j = threadIdx.x; j < C; j += blockDim.x) ss += xr[j] * xr[j];
    ss = ft__cu_block_reduce(ss, 0, sh);
    r = 1.0f / sqrtf(ss / (float)C + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
    for (j = threadIdx.x; j < C; j += blockDim.x) yr[j] = w ? xr[j] * r * w[j] : r * xr[j];
}
__global__ void ft__cu_rmsnorm_bwd_dx(float *dx, const float *dy, const float *x, const float *w, const float *rstd, int64_t C) {
    __shared__ float sh[33];
    const float *xr = x + blockIdx.x * C, *dyr = dy + blockIdx.x * C;
    float *dxr = dx + blockIdx.x * C, r = rstd[blockIdx.x], c = 0.0f;
    int64_t j;
    for (j = threadIdx.x; j < C; j += blockDim.x) c += dyr[j] * (w ? w[j] : 1.0f) * xr[j];
    c = ft__cu_block_reduce(c, 0, sh) * (r * r / (float)C);
    for (j = threadIdx.x; j < C; j += blockDim.x) dxr[j] += r * (dyr[j] * (w ? w[j] : 1.0f) - xr[j] * c);
}
/* dw (C) += sum over rows in order of dy x rstd: one thread per column */
__global__ void ft__cu_rmsnorm_bwd_dw(float *dw, const float *dy, const float *x, const float *rstd, int64_t N, int64_t C) {
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, i;
    float s = 0.0f;
    if (j >= C) return;
    for (i = 0; i < N; i++) s += dy[i * C + j] * x[i * C + j] * rstd[i];
    dw[j] += s;
}
FT_API ft_result ft_cuda_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int64_t N, int64_t C, float eps) {
    if (N <= 0 || C <= 0) return ft_set_error(FT_ERR_SHAPE, "cuda rmsnorm: %lld rows of %lld", (long long)N, (long long)C);
    FT_CU_LAUNCH(ft__cu_rmsnorm_fwd, dim3((unsigned)N), dim3(FT_CU_ROW_THREADS), y, rstd, x, w, C, eps);
    return ft__cu_check("rmsnorm forward");
}
FT_API ft_result ft_cuda_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                                          const float *rstd, int64_t N, int64_t C) {
    if (N <= 0 || C <= 0) return ft_set_error(FT_ERR_SHAPE, "cuda rmsnorm: %lld rows of %lld", (long long)N, (long long)C);
    if (dx) FT_CU_LAUNCH(ft__cu_rmsnorm_bwd_dx, dim3((unsigned)N), dim3(FT_CU_ROW_THREADS), dx, dy, x, w, rstd, C);
    if (dw) FT_CU_LAUNCH(ft__cu_rmsnorm_bwd_dw, dim3(ft__cu_blocks(C, FT_CU_EW_THREADS)), dim3(FT_CU_EW_THREADS), dw, dy, x, rstd, N, C);
    return ft__cu_check("rmsnorm backward");
}

/* ---- RoPE --------------------------------------------------------------------------------------------- */
struct ft__cu_rope {                /* ft_rope_opts with its defaults and YaRN's range resolved  */
    int n_rot;
    float base, freq_scale, ext_factor, mscale, lo, hi;
    const float *ff;
};
/* cs (N, n2, 2): one thread per (row, pair) */
__global__ void ft__cu_rope_angles(float *cs, const int32_t *pos, int64_t N, ft__cu_rope o) {
    int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, n2 = o.n_rot / 2, r = e / n2, i = e % n2;
    float te, theta;
    if (r >= N) return;
    te = (float)pos[r] * powf(o.base, -2.0f * (float)i / (float)o.n_rot);
    if (o.ff) te /= o.ff[i];
    theta = o.freq_scale * te;
    if (o.ext_factor != 0.0f) {
        float y = ((float)i - o.lo) / fmaxf(0.001f, o.hi - o.lo);
        float mix = (1.0f - fminf(1.0f, fmaxf(0.0f, y))) * o.ext_factor;
        theta = theta * (1.0f - mix) + te * mix;
    }
    cs[e * 2] = cosf(theta) * o.mscale;
    cs[e * 2 + 1] = sinf(theta) * o.mscale;
}
FT_API ft_result ft_cuda_rope_angles(float *cs, const int32_t *pos, int64_t N, const ft_rope_opts *in, const float *freq_factors) {
    ft__cu_rope o;
    const float two_pi = 6.28318530718f;
    if (N <= 0 || in->n_rot <= 0 || in->n_rot % 2) return ft_set_error(FT_ERR_SHAPE, "cuda rope: %lld rows, n_rot %d", (long long)N, in->n_rot);
    o.n_rot = in->n_rot;
    o.base = in->base;
    o.freq_scale = in->freq_scale == 0.0f ? 1.0f : in->freq_scale;
    o.ext_factor = in->ext_factor;
    o.mscale = in->attn_factor == 0.0f ? 1.0f : in->attn_factor;
    o.ff = freq_factors;
    o.lo = o.hi = 0.0f;
    if (o.ext_factor != 0.0f) {     /* YaRN's correction range, as finetune.h's ft__rope_yarn_range */
        float bf = in->beta_fast == 0.0f ? 32.0f : in->beta_fast, bs = in->beta_slow == 0.0f ? 1.0f : in->beta_slow;
        float lo = (float)o.n_rot * logf((float)in->n_ctx_orig / (bf * two_pi)) / (2.0f * logf(o.base));
        float hi = (float)o.n_rot * logf((float)in->n_ctx_orig / (bs * two_pi)) / (2.0f * logf(o.base));
        o.lo = fmaxf(0.0f, floorf(lo));
        o.hi = fminf((float)(o.n_rot - 1), ceilf(hi));
        o.mscale *= 1.0f + 0.1f * logf(1.0f / o.freq_scale);
    }
    FT_CU_LAUNCH(ft__cu_rope_angles, dim3(ft__cu_blocks(N * (o.n_rot / 2), FT_CU_EW_THREADS)), dim3(FT_CU_EW_THREADS), cs, pos, N, o);
    return ft__cu_check("rope angles");
}
/* one thread per (row, head, pair); the dims past n_rot are copied (when y != x) */
__global__ void ft__cu_rope_rows(float *y, const float *x, const float *cs, int64_t N, int n_head, int64_t D, int n_rot,
                                 int mode, float sign) {
    int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, per = D - n_rot / 2, r = e / (n_head * per);
    int64_t h = e / per % n_head, i = e % per, base = r * n_head * D + h * D;
    if (r >= N) return;
    if (i >= n_rot / 2) {           /* an unrotated dim: n_rot + (i - n_rot/2) */
        int64_t k = n_rot + i - n_rot / 2;
        y[base + k] = x[base + k];
        return;
    }
    float c = cs[(r * (n_rot / 2) + i) * 2], s = sign * cs[(r * (n_rot / 2) + i) * 2 + 1];
    int64_t i0 = mode == FT_ROPE_NEOX ? i : 2 * i, i1 = mode == FT_ROPE_NEOX ? i + n_rot / 2 : 2 * i + 1;
    float x0 = x[base + i0], x1 = x[base + i1];
    y[base + i0] = x0 * c - x1 * s;
    y[base + i1] = x0 * s + x1 * c;
}
FT_API ft_result ft_cuda_rope(float *y, const float *x, const float *cs, int64_t N, int n_head, int64_t D, int n_rot,
                              int mode, float sign) {
    int64_t n;
    if (N <= 0 || n_head <= 0 || n_rot <= 0 || n_rot % 2 || n_rot > D)
        return ft_set_error(FT_ERR_SHAPE, "cuda rope: %lld rows of %d heads of %lld dims, n_rot %d", (long long)N, n_head, (long long)D, n_rot);
    n = N * n_head * (D - n_rot / 2);
    FT_CU_LAUNCH(ft__cu_rope_rows, dim3(ft__cu_blocks(n, FT_CU_EW_THREADS)), dim3(FT_CU_EW_THREADS), y, x, cs, N, n_head, D, n_rot, mode, sign);
    return ft__cu_check("rope");
}

/* ---- SwiGLU -------------------------------------------------------------------------------------------- */
__global__ void ft__cu_swiglu_fwd(float *y, const float *g, const float *u, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
__global__ void ft__cu_swiglu_bwd(float *dg, float *du, const float *dy, const float *g, const float *u, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    float sg;
    if (i >= n) return;
    sg = 1.0f / (1.0f + expf(-g[i]));
    if (dg) dg[i] += dy[i] * u[i] * (sg * (g[i] * (1.0f - sg) + 1.0f));
    if (du) du[i] += dy[i] * (g[i] * sg);
}
FT_API ft_result ft_cuda_swiglu_forward(float *y, const float *g, const float *u, int64_t n) {
    if (n <= 0) return FT_OK;
    FT_CU_LAUNCH(ft__cu_swiglu_fwd, dim3(ft__cu_blocks(n, FT_CU_EW_THREADS)), dim3(FT_CU_EW_THREADS), y, g, u, n);
    return ft__cu_check("swiglu forward");
}
FT_API ft_result ft_cuda_swiglu_backward(float *dg, float *du, const float *dy, const float *g, const float *u, int64_t n) {
    if (n <= 0) return FT_OK;
    FT_CU_LAUNCH(ft__cu_swiglu_bwd, dim3(ft__cu_blocks(n, FT_CU_EW_THREADS)), dim3(FT_CU_EW_THREADS), dg, du, dy, g, u, n);
    return ft__cu_check("swiglu backward");
}

/* ---- dropout: finetune.h's counter draw (ft__dropout_u), the same bits ------------------------------------ */
__global__ void ft__cu_dropout(float *y, float *mask, const float *x, int64_t n, float p, float keep, uint64_t seed) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    uint64_t z;
    if (i >= n) return;
    z = seed + (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ull;        /* splitmix64 of the counter */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    mask[i] = (float)(z >> 40) * (1.0f / 16777216.0f) < p ? 0.0f : keep;
    y[i] = x[i] * mask[i];
}
FT_API ft_result ft_cuda_dropout(float *y, float *mask, const float *x, int64_t n, float p, uint64_t seed) {
    if (n <= 0) return FT_OK;
    FT_CU_LAUNCH(ft__cu_dropout, dim3(ft__cu_blocks(n, FT_CU_EW_THREADS)), dim3(FT_CU_EW_THREADS), y, mask, x, n, p, 1.0f / (1.0f - p), seed);
    return ft__cu_check("dropout");
}

/* ---- cross-entropy rows ---------------------------------------------------------------------------------- */
/* log sum_j e^(x_j) of a row of V, by the whole block */
__device__ float ft__cu_row_lse(const float *xr, int64_t V, float *sh) {
    float m = -INFINITY, s = 0.0f;
    int64_t j;
    for (j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, xr[j]);
    m = ft__cu_block_reduce(m, 1, sh);
    for (j = threadIdx.x; j < V; j += blockDim.x) s += expf(xr[j] - m);
    return m + logf(ft__cu_block_reduce(s, 0, sh));
}
__global__ void ft__cu_xent(float *lse, float *dx, const float *x, const int32_t *tgt, const float *g, int64_t V, int32_t ignore) {
    __shared__ float sh[33];
    const float *xr = x + blockIdx.x * V;
    float l, gi;
    int64_t j;
    if (tgt[blockIdx.x] == ignore) {            /* the whole block leaves: no barrier is skipped */
        if (threadIdx.x == 0) lse[blockIdx.x] = 0.0f;
        return;
    }
    l = ft__cu_row_lse(xr, V, sh);
    if (threadIdx.x == 0) lse[blockIdx.x] = l;
    if (!dx || (gi = g[blockIdx.x]) == 0.0f) return;
    for (j = threadIdx.x; j < V; j += blockDim.x)
        dx[blockIdx.x * V + j] += -gi * expf(xr[j] - l) + (j == tgt[blockIdx.x] ? gi : 0.0f);
}
/* a chunk's logits z (n, V), soft-capped first when cap > 0, in place -> (onehot - softmax) dz/dx;
   lse, logp of its rows (0 and a zero row where the target is ignore) */
__global__ void ft__cu_xent_dz(float *z, float *lse, float *logp, const int32_t *tgt, int64_t V, int32_t ignore, float cap) {
    __shared__ float sh[33];
    float *zr = z + blockIdx.x * V, l;
    int32_t t = tgt[blockIdx.x];
    int64_t j;
    if (t == ignore) {
        for (j = threadIdx.x; j < V; j += blockDim.x) zr[j] = 0.0f;
        if (threadIdx.x == 0) lse[blockIdx.x] = logp[blockIdx.x] = 0.0f;
        return;
    }
    if (cap > 0.0f) for (j = threadIdx.x; j < V; j += blockDim.x) zr[j] = cap * tanhf(zr[j] / cap);
    __syncthreads();
    l = ft__cu_row_lse(zr, V, sh);
    if (threadIdx.x == 0) {
        lse[blockIdx.x] = l;
        logp[blockIdx.x] = zr[t] - l;
    }
    __syncthreads();                            /* zr[t] read before it is overwritten */
    for (j = threadIdx.x; j < V; j += blockDim.x) {
        float d = (j == t ? 1.0f : 0.0f) - expf(zr[j] - l);
        zr[j] = cap > 0.0f ? d * (1.0f - (zr[j] / cap) * (zr[j] / cap)) : d;
    }
}
FT_API ft_result ft_cuda_xent_rows(float *lse, float *dx, const float *logits, const int32_t *tgt, const float *g,
                                   int64_t N, int64_t V, int32_t ignore) {
    if (N <= 0 || V <= 0) return ft_set_error(FT_ERR_SHAPE, "cuda cross-entropy: %lld rows of %lld", (long long)N, (long long)V);
    if (dx && !g) return ft_set_error(FT_ERR_INVALID, "cuda cross-entropy: a gradient needs the upstream g");
    FT_CU_LAUNCH(ft__cu_xent, dim3((unsigned)N), dim3(FT_CU_ROW_THREADS), lse, dx, logits, tgt, g, V, ignore);
    return ft__cu_check("cross-entropy");
}

/* ---- the head and the loss, chunked ------------------------------------------------------------------- */
FT_API ft_result ft_cuda_linear_xent(float *lse, float *logp, float *U, const float *h, const ft_tensor *W,
                                     const int32_t *tgt, int64_t N, int32_t ignore, float softcap, float *work,
                                     int64_t work_rows) {
    int64_t i0, C = W->shape[1], V = W->shape[0];
    ft_result r = FT_OK;
    if (N <= 0 || work_rows <= 0) return ft_set_error(FT_ERR_SHAPE, "cuda linear cross-entropy: %lld rows, chunks of %lld", (long long)N, (long long)work_rows);
    for (i0 = 0; i0 < N && r == FT_OK; i0 += work_rows) {
        int64_t n = N - i0 < work_rows ? N - i0 : work_rows;
        r = ft_cuda_gemm(work, V, ft_cuda_dense(h + i0 * C, C, 1), ft_cuda_weight_op(W, 0), n, V, C, 1.0f, 0);
        if (r != FT_OK) break;
        FT_CU_LAUNCH(ft__cu_xent_dz, dim3((unsigned)n), dim3(FT_CU_ROW_THREADS), work, lse + i0, logp + i0, tgt + i0, V, ignore, softcap);
        if ((r = ft__cu_check("linear cross-entropy")) != FT_OK || !U) continue;
        r = ft_cuda_gemm(U + i0 * C, C, ft_cuda_dense(work, V, 1), ft_cuda_weight_op(W, 1), n, C, V, 1.0f, 0);
    }
    return r;
}

/* ---- elementwise, reductions, rows, embedding -------------------------------------------------------- */
enum { FT__CU_ADD, FT__CU_MUL, FT__CU_MUL_ADD, FT__CU_AXPY, FT__CU_SCALE };
__global__ void ft__cu_ew(int kind, float *y, const float *a, const float *b, float s, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    if (kind == FT__CU_ADD) y[i] = a[i] + b[i];
    else if (kind == FT__CU_MUL) y[i] = a[i] * b[i];
    else if (kind == FT__CU_MUL_ADD) y[i] += a[i] * b[i];
    else if (kind == FT__CU_AXPY) y[i] += s * a[i];
    else y[i] *= s;
}
static ft_result ft__cu_ew_run(int kind, float *y, const float *a, const float *b, float s, int64_t n) {
    if (n <= 0) return FT_OK;
    FT_CU_LAUNCH(ft__cu_ew, dim3(ft__cu_blocks(n, FT_CU_EW_THREADS)), dim3(FT_CU_EW_THREADS), kind, y, a, b, s, n);
    return ft__cu_check("elementwise");
}
/* kind 0: y = a + b, 1: y = a * b, 2: y += a * b (ft_device's binary) */
FT_API ft_result ft_cuda_binary(int kind, float *y, const float *a, const float *b, int64_t n) {
    if (kind < 0 || kind > 2) return ft_set_error(FT_ERR_INVALID, "cuda binary: kind %d", kind);
    return ft__cu_ew_run(kind, y, a, b, 0.0f, n);
}
FT_API ft_result ft_cuda_axpy(float *y, float s, const float *x, int64_t n) { return ft__cu_ew_run(FT__CU_AXPY, y, x, NULL, s, n); }
FT_API ft_result ft_cuda_scale(float *y, float s, int64_t n) { return ft__cu_ew_run(FT__CU_SCALE, y, NULL, NULL, s, n); }
/* y[0] = s * sum x: one block, each thread a strided partial sum, then the block's reduction */
__global__ void ft__cu_sum(float *y, const float *x, int64_t n, float s) {
    __shared__ float sh[33];
    float acc = 0.0f;
    int64_t i;
    for (i = threadIdx.x; i < n; i += blockDim.x) acc += x[i];
    acc = ft__cu_block_reduce(acc, 0, sh);
    if (threadIdx.x == 0) y[0] = s * acc;
}
FT_API ft_result ft_cuda_sum(float *y, const float *x, int64_t n, float s) {
    FT_CU_LAUNCH(ft__cu_sum, dim3(1), dim3(FT_CU_ROW_THREADS), y, x, n, s);
    return ft__cu_check("sum");
}
/* out[0] = sum x^2 in double: one block, strided partial sums, shuffles and one shared pass */
__global__ void ft__cu_sumsq(double *out, const float *x, int64_t n) {
    __shared__ double sh[32];
    double acc = 0.0;
    int64_t i;
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, o;
    for (i = threadIdx.x; i < n; i += blockDim.x) acc += (double)x[i] * (double)x[i];
    for (o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) sh[warp] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0.0;
        for (o = 0; o < (int)(blockDim.x / 32); o++) s += sh[o];
        out[0] = s;
    }
}
FT_API ft_result ft_cuda_sumsq(double *out, const float *x, int64_t n) {
    double *d = NULL;
    ft_result r;
    *out = 0.0;
    if (n <= 0) return FT_OK;
    if ((r = ft_cuda_malloc((void **)&d, sizeof *d)) != FT_OK) return r;
    FT_CU_LAUNCH(ft__cu_sumsq, dim3(1), dim3(FT_CU_ROW_THREADS), d, x, n);
    r = ft__cu_check("sum of squares");
    if (r == FT_OK) r = ft_cuda_download(out, d, sizeof *d);
    ft_cuda_free(d);
    return r;
}
__global__ void ft__cu_spread(float *y, int64_t n, const float *x, float s) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += s * x[0];
}
FT_API ft_result ft_cuda_spread(float *y, int64_t n, const float *x, float s) {
    if (n <= 0) return FT_OK;
    FT_CU_LAUNCH(ft__cu_spread, dim3(ft__cu_blocks(n, FT_CU_EW_THREADS)), dim3(FT_CU_EW_THREADS), y, n, x, s);
    return ft__cu_check("spread");
}

/* ---- pointwise ops (finetune.h's unary ops and scale): y = f(x), dx += dy f'(x) ------------------------- */
__device__ __forceinline__ float ft__cu_sigmoid(float x) { return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x)); }
__device__ float ft__cu_unary_f(int op, float x, float lo, float hi) {
    switch (op) {
    case FT_OP_SILU: return x * ft__cu_sigmoid(x);
    case FT_OP_EXP: return expf(x);
    case FT_OP_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case FT_OP_GELU_TANH: return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case FT_OP_TANH: return tanhf(x);
    case FT_OP_RELU: return x > 0 ? x : 0.0f;
    case FT_OP_SIGMOID: return ft__cu_sigmoid(x);
    case FT_OP_LOGSIGMOID: return fminf(x, 0.0f) - log1pf(expf(-fabsf(x)));
    case FT_OP_LOG: return logf(x);
    case FT_OP_LOG1MEXP: return x > -0.6931472f ? logf(-expm1f(x)) : log1pf(-expf(x));
    case FT_OP_CLAMP: return x < lo ? lo : x > hi ? hi : x;
    case FT_OP_SCALE: return lo * x;
    default: return 0.0f;
    }
}
__device__ float ft__cu_unary_d(int op, float x, float y, float lo, float hi) {
    switch (op) {
    case FT_OP_SILU: { float s = ft__cu_sigmoid(x); return s * (1.0f + x * (1.0f - s)); }
    case FT_OP_EXP: return y;
    case FT_OP_GELU: return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) + x * 0.39894228040143268f * expf(-0.5f * x * x);
    case FT_OP_GELU_TANH: {
        float t = tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x));
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * 0.79788456080286536f * (1.0f + 0.134145f * x * x);
    }
    case FT_OP_TANH: return 1.0f - y * y;
    case FT_OP_RELU: return x > 0 ? 1.0f : 0.0f;
    case FT_OP_SIGMOID: return y * (1.0f - y);
    case FT_OP_LOGSIGMOID: return ft__cu_sigmoid(-x);
    case FT_OP_LOG: return 1.0f / x;
    case FT_OP_LOG1MEXP: return -1.0f / expm1f(-x);
    case FT_OP_CLAMP: return x >= lo && x <= hi ? 1.0f : 0.0f;
    case FT_OP_SCALE: return lo;
    default: return 0.0f;
    }
}
__global__ void ft__cu_unary(int op, float *y, const float *x, int64_t n, float lo, float hi) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = ft__cu_unary_f(op, x[i], lo, hi);
}
__global__ void ft__cu_unary_bwd(int op, float *dx, const float *dy, const float *x, const float *y, int64_t n, float lo, float hi) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dx[i] += dy[i] * ft__cu_unary_d(op, x[i], y[i], lo, hi);
}
FT_API ft_result ft_cuda_unary(int op, float *y, const float *x, int64_t n, float lo, float hi) {
    if (n <= 0) return FT_OK;
    FT_CU_LAUNCH(ft__cu_unary, dim3(ft__cu_blocks(n, FT_CU_EW_THREADS)), dim3(FT_CU_EW_THREADS), op, y, x, n, lo, hi);
    return ft__cu_check("unary");
}
FT_API ft_result ft_cuda_unary_backward(int op, float *dx, const float *dy, const float *x, const float *y, int64_t n,
                                        float lo, float hi) {
    if (n <= 0) return FT_OK;
    FT_CU_LAUNCH(ft__cu_unary_bwd, dim3(ft__cu_blocks(n, FT_CU_EW_THREADS)), dim3(FT_CU_EW_THREADS), op, dx, dy, x, y, n, lo, hi);
    return ft__cu_check("unary backward");
}

/* y[i] = s * sum of row i: one block per row */
__global__ void ft__cu_sum_rows(float *y, const float *x, int64_t C, float s) {
    __shared__ float sh[33];
    const float *xr = x + blockIdx.x * C;
    float acc = 0.0f;
    int64_t j;
    for (j = threadIdx.x; j < C; j += blockDim.x) acc += xr[j];
    acc = ft__cu_block_reduce(acc, 0, sh);
    if (threadIdx.x == 0) y[blockIdx.x] = s * acc;
}
FT_API ft_result ft_cuda_sum_rows(float *y, const float *x, int64_t N, int64_t C, float s) {
    if (N <= 0) return FT_OK;
    FT_CU_LAUNCH(ft__cu_sum_rows, dim3((unsigned)N), dim3(FT_CU_ROW_THREADS), y, x, C, s);
    return ft__cu_check("sum of rows");
}
__global__ void ft__cu_spread_rows(float *dx, int64_t N, int64_t C, const float *dy, float s) {
    int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e < N * C) dx[e] += s * dy[e / C];
}
FT_API ft_result ft_cuda_spread_rows(float *dx, int64_t N, int64_t C, const float *dy, float s) {
    if (N <= 0 || C <= 0) return FT_OK;
    FT_CU_LAUNCH(ft__cu_spread_rows, dim3(ft__cu_blocks(N * C, FT_CU_EW_THREADS)), dim3(FT_CU_EW_THREADS), dx, N, C, dy, s);
    return ft__cu_check("spread of rows");
}
__global__ void ft__cu_rows_axpy(float *y, const float *g, const float *x, int64_t N, int64_t C) {
    int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e < N * C) y[e] += g[e / C] * x[e];
}
FT_API ft_result ft_cuda_rows_axpy(float *y, const float *g, const float *x, int64_t N, int64_t C) {
    if (N <= 0 || C <= 0) return FT_OK;
    FT_CU_LAUNCH(ft__cu_rows_axpy, dim3(ft__cu_blocks(N * C, FT_CU_EW_THREADS)), dim3(FT_CU_EW_THREADS), y, g, x, N, C);
    return ft__cu_check("rows axpy");
}
__global__ void ft__cu_embedding(float *y, ft__cu_weight w, const int32_t *ids, int64_t n) {
    int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, i = e / w.cols;
    if (i < n) y[e] = ft__cu_weight_at(w, ids[i], e % w.cols);
}
FT_API ft_result ft_cuda_embedding(float *y, const ft_tensor *W, const int32_t *ids, int64_t n) {
    ft__cu_weight w;
    ft_result r = ft__cu_weight_of(W, &w);
    if (r != FT_OK || n <= 0) return r;
    FT_CU_LAUNCH(ft__cu_embedding, dim3(ft__cu_blocks(n * w.cols, FT_CU_EW_THREADS)), dim3(FT_CU_EW_THREADS), y, w, ids, n);
    return ft__cu_check("embedding");
}

/* ---- attention --------------------------------------------------------------------------------------
   Flash attention in f32, one warp per query row (forward, dQ) or key row (dK, dV), four rows a
   block; keys (or queries) go through shared memory 16 at a time, the prefix keys first, then the
   keys, skipping tiles no row of the block sees. Scores: two lanes per key (even and odd dims),
   added by one shuffle; the row's running max and sum (online softmax) by shuffles within each
   half-warp; lane l owns dims l, l + 32, ... of the row's accumulators. The backward recomputes
   the probabilities from lse, as the CPU's does:
      forward   m, l = running max, sum of e^(s - m);  O = sum_j e^(s_j - m) V_j / l;  lse = m + log l
      backward  p = e^(s - lse);  dp = dO . V_j;  ds = p (dp - delta),  delta = rowsum(dO * O)
                dQ += scale sum_j ds K_j;   dK_j += scale sum_i ds Q_i;   dV_j += sum_i p dO_i
   No atomics: dQ rows belong to one warp; dK, dV rows to one warp, which loops over the queries
   of every head of its group (and, for a prefix key, over the batch). */
#define FT_CU_ATT_KT 16             /* keys (queries) per shared tile                            */
#define FT_CU_ATT_WARPS 4           /* rows per block                                            */
struct ft__cu_attn {
    ft_device_attn o;
    const float *q, *k, *v, *pk, *pv, *dout, *lse, *delta;
};
__device__ __forceinline__ int64_t ft__cu_qoff(const ft_device_attn &a, int64_t b) { return a.q_offsets ? a.q_offsets[b] : a.q_offset; }
/* 1 when query t of batch b sees key u (u < P: prefix key u; else key u - P) */
__device__ int ft__cu_sees(const ft_device_attn &a, int64_t b, int64_t t, int64_t u) {
    int64_t j = u - a.P, qo = ft__cu_qoff(a, b);
    if (u < a.P) return 1;
    if (j >= a.Tk || (a.causal && j > qo + t) || (a.window > 0 && j < qo + t - a.window + 1)) return 0;
    return !a.seg || a.seg[b * a.T + j] == a.seg[b * a.T + t];
}
__device__ __forceinline__ const float *ft__cu_key_row(const float *pkv, const float *kv, const ft_device_attn &a, int64_t b, int64_t g, int64_t u) {
    return u < a.P ? pkv + (u * a.Hkv + g) * a.D : kv + ((b * a.Tk + u - a.P) * a.Hkv + g) * a.D;
}
/* rows [u0, u0 + 16) of the keys and values of (b, g) -> Ks, Vs (zeros past nu) */
__device__ void ft__cu_load_kv(float (*Ks)[FT_CUDA_ATTN_DMAX], float (*Vs)[FT_CUDA_ATTN_DMAX], const ft__cu_attn &A,
                               int64_t b, int64_t g, int64_t u0, int64_t nu) {
    int e;
    for (e = threadIdx.x; e < FT_CU_ATT_KT * A.o.D; e += blockDim.x) {
        int r = e / (int)A.o.D, d = e % (int)A.o.D;
        int64_t u = u0 + r;
        Ks[r][d] = u < nu ? ft__cu_key_row(A.pk, A.k, A.o, b, g, u)[d] : 0.0f;
        Vs[r][d] = u < nu ? ft__cu_key_row(A.pv, A.v, A.o, b, g, u)[d] : 0.0f;
    }
}
/* the dot product of x and y (D floats) split over the two lanes of each of 16 rows */
__device__ __forceinline__ float ft__cu_half_dot(const float *x, const float *y, int64_t D, int half) {
    float s = 0.0f;
    int64_t d;
    for (d = half; d < D; d += 2) s += x[d] * y[d];
    return s + __shfl_xor_sync(0xffffffffu, s, 16);
}
__device__ __forceinline__ float ft__cu_half_reduce(float v, int max) {
    int o;
    for (o = 8; o > 0; o /= 2) {
        float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = max ? fmaxf(v, w) : v + w;
    }
    return v;
}
/* the keys [0, nu) the block's queries [t0, t1] may see, and the first key tile worth loading */
__device__ void ft__cu_key_range(const ft_device_attn &a, int64_t b, int64_t t0, int64_t t1, int64_t *nu, int64_t *ubeg) {
    int64_t qo = ft__cu_qoff(a, b), kend = a.Tk, kbeg = 0;
    if (a.causal && qo + t1 + 1 < kend) kend = qo + t1 + 1;
    if (a.window > 0 && qo + t0 - a.window + 1 > 0) kbeg = qo + t0 - a.window + 1;
    *nu = a.P + (kend > 0 ? kend : 0);
    *ubeg = a.P + kbeg;
}
/* the query rows of a forward / dQ block: batch b, head h (kv head g), positions [t0, t1] */
struct ft__cu_qblock { int64_t b, h, g, t0, t1; };
__device__ __forceinline__ ft__cu_qblock ft__cu_qblock_of(const ft_device_attn &a) {
    ft__cu_qblock q;
    q.b = blockIdx.z;
    q.h = blockIdx.y;
    q.g = q.h / (a.H / a.Hkv);
    q.t0 = (int64_t)blockIdx.x * FT_CU_ATT_WARPS;
    q.t1 = q.t0 + FT_CU_ATT_WARPS - 1 < a.T ? q.t0 + FT_CU_ATT_WARPS - 1 : a.T - 1;
    return q;
}
__global__ void __launch_bounds__(128) ft__cu_attn_fwd(float *out, float *lse, ft__cu_attn A) {
    __shared__ float Ks[FT_CU_ATT_KT][FT_CUDA_ATTN_DMAX], Vs[FT_CU_ATT_KT][FT_CUDA_ATTN_DMAX];
    __shared__ float Qs[FT_CU_ATT_WARPS][FT_CUDA_ATTN_DMAX], Ps[FT_CU_ATT_WARPS][FT_CU_ATT_KT];
    const ft_device_attn &a = A.o;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane % FT_CU_ATT_KT, half = lane / FT_CU_ATT_KT, i;
    ft__cu_qblock q = ft__cu_qblock_of(a);
    int64_t b = q.b, h = q.h, g = q.g, t = q.t0 + warp, nu, ubeg, u0, d;
    int live = t < a.T;
    float m = -INFINITY, l = 0.0f, acc[FT_CUDA_ATTN_DMAX / 32];
    FT_CU_UNROLL for (i = 0; i < FT_CUDA_ATTN_DMAX / 32; i++) acc[i] = 0.0f;
    for (d = lane; d < a.D; d += 32) Qs[warp][d] = live ? a.scale * A.q[((b * a.T + t) * a.H + h) * a.D + d] : 0.0f;
    ft__cu_key_range(a, b, q.t0, q.t1, &nu, &ubeg);
    for (u0 = 0; u0 < nu; u0 += FT_CU_ATT_KT) {
        if (u0 >= a.P && u0 + FT_CU_ATT_KT <= ubeg) continue;      /* the same for the whole block */
        __syncthreads();
        ft__cu_load_kv(Ks, Vs, A, b, g, u0, nu);
        __syncthreads();
        float s = ft__cu_half_dot(Qs[warp], Ks[r], a.D, half);
        int vis = live && u0 + r < nu && ft__cu_sees(a, b, t, u0 + r);
        float mnew = fmaxf(m, ft__cu_half_reduce(vis ? s : -INFINITY, 1));
        float p = vis ? expf(s - mnew) : 0.0f, corr = m == -INFINITY ? 0.0f : expf(m - mnew);
        l = l * corr + ft__cu_half_reduce(p, 0);
        m = mnew;
        if (half == 0) Ps[warp][r] = p;
        __syncwarp();
        FT_CU_UNROLL for (i = 0; i < FT_CUDA_ATTN_DMAX / 32; i++) if ((d = lane + 32 * i) < a.D) {
            float sum = 0.0f;
            int j;
            for (j = 0; j < FT_CU_ATT_KT; j++) sum += Ps[warp][j] * Vs[j][d];
            acc[i] = acc[i] * corr + sum;
        }
        __syncwarp();
    }
    if (!live) return;
    FT_CU_UNROLL for (i = 0; i < FT_CUDA_ATTN_DMAX / 32; i++) if ((d = lane + 32 * i) < a.D) out[((b * a.T + t) * a.H + h) * a.D + d] = l > 0.0f ? acc[i] / l : 0.0f;
    if (lane == 0) lse[(b * a.H + h) * a.T + t] = l > 0.0f ? m + logf(l) : -INFINITY;
}
/* delta (B, H, T) = rowsum(dout * out): one warp per row */
__global__ void ft__cu_attn_delta(float *delta, const float *dout, const float *out, ft_device_attn a) {
    int64_t row = (int64_t)blockIdx.x * FT_CU_ATT_WARPS + threadIdx.x / 32, d;
    int lane = threadIdx.x % 32, o;
    float s = 0.0f;
    if (row >= a.B * a.T * a.H) return;     /* the whole warp leaves: no shuffle is left waiting */
    for (d = lane; d < a.D; d += 32) s += dout[row * a.D + d] * out[row * a.D + d];
    for (o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) {
        int64_t h = row % a.H, t = row / a.H % a.T, b = row / a.H / a.T;
        delta[(b * a.H + h) * a.T + t] = s;
    }
}
/* dQ: the forward's walk over the keys, with p from lse */
__global__ void __launch_bounds__(128) ft__cu_attn_dq(float *dq, ft__cu_attn A) {
    __shared__ float Ks[FT_CU_ATT_KT][FT_CUDA_ATTN_DMAX], Vs[FT_CU_ATT_KT][FT_CUDA_ATTN_DMAX];
    __shared__ float Qs[FT_CU_ATT_WARPS][FT_CUDA_ATTN_DMAX], Gs[FT_CU_ATT_WARPS][FT_CUDA_ATTN_DMAX];
    __shared__ float Ds[FT_CU_ATT_WARPS][FT_CU_ATT_KT];
    const ft_device_attn &a = A.o;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane % FT_CU_ATT_KT, half = lane / FT_CU_ATT_KT, i;
    ft__cu_qblock q = ft__cu_qblock_of(a);
    int64_t b = q.b, h = q.h, g = q.g, t = q.t0 + warp, nu, ubeg, u0, d;
    int live = t < a.T;
    int64_t row = ((b * a.T + t) * a.H + h) * a.D, st = (b * a.H + h) * a.T + t;
    float lse = live ? A.lse[st] : -INFINITY, delta = live ? A.delta[st] : 0.0f, acc[FT_CUDA_ATTN_DMAX / 32];
    FT_CU_UNROLL for (i = 0; i < FT_CUDA_ATTN_DMAX / 32; i++) acc[i] = 0.0f;
    for (d = lane; d < a.D; d += 32) {
        Qs[warp][d] = live ? a.scale * A.q[row + d] : 0.0f;
        Gs[warp][d] = live ? A.dout[row + d] : 0.0f;
    }
    ft__cu_key_range(a, b, q.t0, q.t1, &nu, &ubeg);
    for (u0 = 0; u0 < nu; u0 += FT_CU_ATT_KT) {
        if (u0 >= a.P && u0 + FT_CU_ATT_KT <= ubeg) continue;
        __syncthreads();
        ft__cu_load_kv(Ks, Vs, A, b, g, u0, nu);
        __syncthreads();
        float s = ft__cu_half_dot(Qs[warp], Ks[r], a.D, half), dp = ft__cu_half_dot(Gs[warp], Vs[r], a.D, half);
        int vis = live && lse != -INFINITY && u0 + r < nu && ft__cu_sees(a, b, t, u0 + r);
        if (half == 0) Ds[warp][r] = vis ? expf(s - lse) * (dp - delta) : 0.0f;
        __syncwarp();
        FT_CU_UNROLL for (i = 0; i < FT_CUDA_ATTN_DMAX / 32; i++) if ((d = lane + 32 * i) < a.D) {
            int j;
            for (j = 0; j < FT_CU_ATT_KT; j++) acc[i] += Ds[warp][j] * Ks[j][d];
        }
        __syncwarp();
    }
    if (!live) return;
    FT_CU_UNROLL for (i = 0; i < FT_CUDA_ATTN_DMAX / 32; i++) if ((d = lane + 32 * i) < a.D) dq[row + d] += a.scale * acc[i];
}
/* dK, dV: one warp per key row u of kv head g (blockIdx.y); keys of batch blockIdx.z, or, for the
   prefix (prefix = 1), prefix keys summed over every batch */
__global__ void __launch_bounds__(128) ft__cu_attn_dkv(float *dk, float *dv, ft__cu_attn A, int prefix) {
    __shared__ float Qt[FT_CU_ATT_KT][FT_CUDA_ATTN_DMAX], Gt[FT_CU_ATT_KT][FT_CUDA_ATTN_DMAX];
    __shared__ float Kw[FT_CU_ATT_WARPS][FT_CUDA_ATTN_DMAX], Vw[FT_CU_ATT_WARPS][FT_CUDA_ATTN_DMAX];
    __shared__ float Lt[FT_CU_ATT_KT], Dt[FT_CU_ATT_KT], Ps[FT_CU_ATT_WARPS][FT_CU_ATT_KT], Ss[FT_CU_ATT_WARPS][FT_CU_ATT_KT];
    const ft_device_attn &a = A.o;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane % FT_CU_ATT_KT, half = lane / FT_CU_ATT_KT, i, e;
    int64_t g = blockIdx.y, rep = a.H / a.Hkv, n_u = prefix ? a.P : a.Tk, j0 = (int64_t)blockIdx.x * FT_CU_ATT_WARPS;
    int64_t j = j0 + warp, u = prefix ? j : a.P + j, bb, b_end = prefix ? a.B : (int64_t)blockIdx.z + 1, hh, t0, d;
    int live = j < n_u;
    float ak[FT_CUDA_ATTN_DMAX / 32], av[FT_CUDA_ATTN_DMAX / 32];
    FT_CU_UNROLL for (i = 0; i < FT_CUDA_ATTN_DMAX / 32; i++) ak[i] = av[i] = 0.0f;
    for (bb = prefix ? 0 : blockIdx.z; bb < b_end; bb++) {
        int64_t qo = ft__cu_qoff(a, bb);
        __syncthreads();
        for (d = lane; d < a.D; d += 32) {
            Kw[warp][d] = live ? ft__cu_key_row(A.pk, A.k, a, bb, g, u)[d] : 0.0f;
            Vw[warp][d] = live ? ft__cu_key_row(A.pv, A.v, a, bb, g, u)[d] : 0.0f;
        }
        for (hh = g * rep; hh < (g + 1) * rep; hh++)
            for (t0 = 0; t0 < a.T; t0 += FT_CU_ATT_KT) {
                /* no query of the tile sees a key of the block: before them (causal), or past the window */
                if (!prefix && a.causal && qo + t0 + FT_CU_ATT_KT - 1 < j0) continue;
                if (!prefix && a.window > 0 && qo + t0 - a.window + 1 > j0 + FT_CU_ATT_WARPS - 1) continue;
                __syncthreads();
                for (e = threadIdx.x; e < FT_CU_ATT_KT * a.D; e += blockDim.x) {
                    int q = e / (int)a.D, dd = e % (int)a.D;
                    int64_t row = ((bb * a.T + t0 + q) * a.H + hh) * a.D + dd;
                    Qt[q][dd] = t0 + q < a.T ? a.scale * A.q[row] : 0.0f;
                    Gt[q][dd] = t0 + q < a.T ? A.dout[row] : 0.0f;
                }
                if (threadIdx.x < FT_CU_ATT_KT) {
                    int64_t st = (bb * a.H + hh) * a.T + t0 + threadIdx.x;
                    Lt[threadIdx.x] = t0 + threadIdx.x < a.T ? A.lse[st] : -INFINITY;
                    Dt[threadIdx.x] = t0 + threadIdx.x < a.T ? A.delta[st] : 0.0f;
                }
                __syncthreads();
                float s = ft__cu_half_dot(Qt[r], Kw[warp], a.D, half), dp = ft__cu_half_dot(Gt[r], Vw[warp], a.D, half);
                int vis = live && t0 + r < a.T && Lt[r] != -INFINITY && ft__cu_sees(a, bb, t0 + r, u);
                float p = vis ? expf(s - Lt[r]) : 0.0f;
                if (half == 0) {
                    Ps[warp][r] = p;
                    Ss[warp][r] = p * (dp - Dt[r]);
                }
                __syncwarp();
                FT_CU_UNROLL for (i = 0; i < FT_CUDA_ATTN_DMAX / 32; i++) if ((d = lane + 32 * i) < a.D) {
                    int q;
                    for (q = 0; q < FT_CU_ATT_KT; q++) {
                        av[i] += Ps[warp][q] * Gt[q][d];
                        ak[i] += Ss[warp][q] * Qt[q][d];
                    }
                }
                __syncwarp();
            }
    }
    if (!live) return;
    FT_CU_UNROLL for (i = 0; i < FT_CUDA_ATTN_DMAX / 32; i++) if ((d = lane + 32 * i) < a.D) {
        int64_t row = prefix ? (j * a.Hkv + g) * a.D + d : (((int64_t)blockIdx.z * a.Tk + j) * a.Hkv + g) * a.D + d;
        if (dk) dk[row] += ak[i];
        if (dv) dv[row] += av[i];
    }
}
static ft_result ft__cu_attn_check(const ft_device_attn *a, const float *pk, const float *pv, ft__cu_attn *A) {
    if (a->B <= 0 || a->T <= 0 || a->Tk < 0 || a->P < 0 || a->D <= 0 || a->D > FT_CUDA_ATTN_DMAX || a->H <= 0 ||
        a->Hkv <= 0 || a->H % a->Hkv || (a->P > 0 && (!pk || !pv)) || (a->seg && a->Tk != a->T))
        return ft_set_error(FT_ERR_SHAPE, "cuda attention: B %lld, T %lld, Tk %lld, P %lld, D %lld (at most %d), H %d, Hkv %d%s",
                            (long long)a->B, (long long)a->T, (long long)a->Tk, (long long)a->P, (long long)a->D,
                            FT_CUDA_ATTN_DMAX, a->H, a->Hkv, a->seg && a->Tk != a->T ? ", documents need Tk == T" : "");
    memset(A, 0, sizeof *A);
    A->o = *a;
    if (A->o.scale == 0.0f) A->o.scale = 1.0f / sqrtf((float)a->D);
    return FT_OK;
}
FT_API ft_result ft_cuda_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                                           const float *pk, const float *pv, const ft_device_attn *a) {
    ft__cu_attn A;
    ft_result r = ft__cu_attn_check(a, pk, pv, &A);
    if (r != FT_OK) return r;
    A.q = q; A.k = k; A.v = v; A.pk = pk; A.pv = pv;
    dim3 grid(ft__cu_blocks(a->T, FT_CU_ATT_WARPS), (unsigned)a->H, (unsigned)a->B);
    FT_CU_LAUNCH(ft__cu_attn_fwd, grid, dim3(32 * FT_CU_ATT_WARPS), out, lse, A);
    return ft__cu_check("attention forward");
}
FT_API ft_result ft_cuda_attention_backward(float *dq, float *dk, float *dv, float *dpk, float *dpv, const float *dout,
                                            const float *q, const float *k, const float *v, const float *pk,
                                            const float *pv, const float *out, const float *lse, const ft_device_attn *a) {
    ft__cu_attn A;
    float *delta = NULL;
    int64_t rows = a->B * a->T * a->H;
    ft_result r = ft__cu_attn_check(a, pk, pv, &A);
    if (r != FT_OK || (r = ft_cuda_malloc((void **)&delta, (size_t)rows * sizeof(float))) != FT_OK) return r;
    A.q = q; A.k = k; A.v = v; A.pk = pk; A.pv = pv; A.dout = dout; A.lse = lse; A.delta = delta;
    dim3 block(32 * FT_CU_ATT_WARPS), grid_q(ft__cu_blocks(a->T, FT_CU_ATT_WARPS), (unsigned)a->H, (unsigned)a->B);
    FT_CU_LAUNCH(ft__cu_attn_delta, dim3(ft__cu_blocks(rows, FT_CU_ATT_WARPS)), block, delta, dout, out, A.o);
    if (dq) FT_CU_LAUNCH(ft__cu_attn_dq, grid_q, block, dq, A);
    if ((dk || dv) && a->Tk > 0)
        FT_CU_LAUNCH(ft__cu_attn_dkv, dim3(ft__cu_blocks(a->Tk, FT_CU_ATT_WARPS), (unsigned)a->Hkv, (unsigned)a->B), block, dk, dv, A, 0);
    if ((dpk || dpv) && a->P > 0)
        FT_CU_LAUNCH(ft__cu_attn_dkv, dim3(ft__cu_blocks(a->P, FT_CU_ATT_WARPS), (unsigned)a->Hkv, 1), block, dpk, dpv, A, 1);
    r = ft__cu_check("attention backward");
    ft_cuda_free(delta);
    return r;
}

/* ---- AdamW ------------------------------------------------------------------------------------------------ */
__global__ void ft__cu_nonfinite(int *flag, const float *g, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && !isfinite(g[i])) *flag = 1;   /* every writer writes the same value */
}
__global__ void ft__cu_adamw(float *p, const float *g, float *m, float *v, int64_t n, float a, float wd, float b1,
                             float b2, float eps, float c1, float c2) {
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    p[j] -= a * wd * p[j];
    m[j] = b1 * m[j] + (1.0f - b1) * g[j];
    v[j] = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
    p[j] -= a * (m[j] * c1) / (sqrtf(v[j] * c2) + eps);
}
FT_API ft_result ft_cuda_finite(const float *x, int64_t n, int *finite) {
    int *flag = NULL, bad = 0;
    ft_result r;
    *finite = 1;
    if (n <= 0) return FT_OK;
    if ((r = ft_cuda_malloc((void **)&flag, sizeof *flag)) != FT_OK) return r;
    r = ft_cuda_zero(flag, sizeof *flag);
    if (r == FT_OK) FT_CU_LAUNCH(ft__cu_nonfinite, dim3(ft__cu_blocks(n, FT_CU_EW_THREADS)), dim3(FT_CU_EW_THREADS), flag, x, n);
    if (r == FT_OK) r = ft_cuda_download(&bad, flag, sizeof bad);
    ft_cuda_free(flag);
    *finite = !bad;
    return r;
}
FT_API ft_result ft_cuda_adamw(float *p, const float *g, float *m, float *v, int64_t n, float a, float wd, float b1,
                               float b2, float eps, float c1, float c2) {
    if (n <= 0) return FT_OK;
    FT_CU_LAUNCH(ft__cu_adamw, dim3(ft__cu_blocks(n, FT_CU_EW_THREADS)), dim3(FT_CU_EW_THREADS), p, g, m, v, n, a, wd, b1, b2, eps, c1, c2);
    return ft__cu_check("adamw");
}

/* ---- the kernel table --------------------------------------------------------------------------------------- */
FT_API const ft_device *ft_cuda_device(void) {
    static ft_device d;
    if (!d.name) {
        d.alloc = ft_cuda_malloc;
        d.release = ft_cuda_free;
        d.upload = ft_cuda_upload;
        d.download = ft_cuda_download;
        d.zero = ft_cuda_zero;
        d.copy = ft_cuda_copy;
        d.gemm = ft_cuda_gemm;
        d.binary = ft_cuda_binary;
        d.axpy = ft_cuda_axpy;
        d.sum = ft_cuda_sum;
        d.spread = ft_cuda_spread;
        d.sum_rows = ft_cuda_sum_rows;
        d.spread_rows = ft_cuda_spread_rows;
        d.rows_axpy = ft_cuda_rows_axpy;
        d.unary = ft_cuda_unary;
        d.unary_backward = ft_cuda_unary_backward;
        d.rmsnorm_forward = ft_cuda_rmsnorm_forward;
        d.rmsnorm_backward = ft_cuda_rmsnorm_backward;
        d.rope_angles = ft_cuda_rope_angles;
        d.rope = ft_cuda_rope;
        d.swiglu_forward = ft_cuda_swiglu_forward;
        d.dropout = ft_cuda_dropout;
        d.swiglu_backward = ft_cuda_swiglu_backward;
        d.attention_forward = ft_cuda_attention_forward;
        d.attention_backward = ft_cuda_attention_backward;
        d.linear_xent = ft_cuda_linear_xent;
        d.embedding = ft_cuda_embedding;
        d.finite = ft_cuda_finite;
        d.sumsq = ft_cuda_sumsq;
        d.scale = ft_cuda_scale;
        d.adamw = ft_cuda_adamw;
        d.name = "cuda";
    }
    return &d;
}

#endif /* FT_CUDA_API_ONLY */
#endif /* FINETUNE_CUDA_CU */
