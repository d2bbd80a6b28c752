/* tools/bench_cuda.cc - finetune_cuda.cu's GEMM and attention on the GPU: milliseconds and TFLOP/s
   on the shapes of a SmolLM2-135M and a Llama-3.2-1B training step (4,096 tokens), each weight
   in the type a QLoRA or LoRA run uses. Built by `make bench-cuda` (nvcc); run on a machine with
   a GPU (tools/cuda_check.sh runs it with the GPU tests). Random data: speed only. */
#define FINETUNE_IMPLEMENTATION
#include "../finetune.h"
#define FT_CUDA_API_ONLY
#include "../finetune_cuda.cu"
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

static float frand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}
/* a (rows, cols) weight of the given type on the device, from random values */
static ft_tensor *make_weight(const ft_device *d, ft_type type, int64_t rows, int64_t cols, uint64_t *seed) {
    int64_t n = rows * cols, r;
    std::vector<float> x((size_t)n);
    for (float &v : x) v = 0.05f * frand(seed);
    size_t rb = ft_type_row_bytes(type, cols);
    std::vector<uint8_t> bytes(type == FT_TYPE_NF4 ? (size_t)(n + 1) / 2 : rb * (size_t)rows), qa;
    std::vector<float> a2, code(256);
    ft_nf4 q;
    ft_tensor t;
    memset(&t, 0, sizeof t);
    t.type = type; t.ndim = 2; t.shape[0] = rows; t.shape[1] = cols; t.data = bytes.data();
    if (type == FT_TYPE_NF4) {
        qa.resize((size_t)ft_nf4_blocks(n));
        a2.resize((size_t)ft_nf4_blocks2(n));
        ft_nf4_dynamic_map(code.data());
        ft_quantize_nf4(x.data(), n, bytes.data(), qa.data(), a2.data(), &q.offset);
        q.qabsmax = qa.data(); q.absmax2 = a2.data(); q.code = code.data();
        t.nf4 = &q;
    }
    for (r = 0; r < rows && type != FT_TYPE_NF4; r++) {
        uint8_t *row = bytes.data() + (size_t)r * rb;
        const float *xr = x.data() + r * cols;
        if (type == FT_TYPE_Q4_1) ft__quant_q4_1(xr, row, cols);
        else if (type == FT_TYPE_Q8_0) ft__quant_q8_0(xr, row, cols);
        else if (type == FT_TYPE_BF16) for (int64_t j = 0; j < cols; j++) ((uint16_t *)row)[j] = ft_fp32_to_bf16(xr[j]);
        else memcpy(row, xr, (size_t)cols * 4);
    }
    ft_tensor *w = NULL;
    if (ft_device_weight(d, &t, &w) != FT_OK) { fprintf(stderr, "%s\n", ft_last_error()); exit(1); }
    return w;
}
static float *dev_floats(int64_t n, uint64_t *seed) {
    std::vector<float> h((size_t)n);
    for (float &v : h) v = frand(seed);
    void *p = NULL;
    if (ft_cuda_malloc(&p, (size_t)n * 4) != FT_OK || ft_cuda_upload(p, h.data(), (size_t)n * 4) != FT_OK) { fprintf(stderr, "%s\n", ft_last_error()); exit(1); }
    return (float *)p;
}
/* the mean milliseconds of reps runs of fn after two warm-ups */
template <class F> static double time_ms(F fn, int reps) {
    cudaEvent_t a, b;
    float ms = 0;
    fn(); fn();
    cudaEventCreate(&a); cudaEventCreate(&b);
    cudaEventRecord(a);
    for (int i = 0; i < reps; i++) fn();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    cudaEventElapsedTime(&ms, a, b);
    cudaEventDestroy(a); cudaEventDestroy(b);
    if (cudaGetLastError() != cudaSuccess || ft_cuda_sync() != FT_OK) { fprintf(stderr, "cuda error\n"); exit(1); }
    return ms / reps;
}

struct gemm_case { const char *name; int64_t M, N, K; ft_type type; int dx; };

int main(void) {
    cudaDeviceProp p;
    uint64_t seed = 7;
    const ft_device *d = ft_cuda_device();
    if (ft_cuda_init(0) != FT_OK || cudaGetDeviceProperties(&p, 0) != cudaSuccess) { printf("no GPU: %s\n", ft_last_error()); return 1; }
    printf("# %s, %d SMs, compute %d.%d\n", p.name, p.multiProcessorCount, p.major, p.minor);
    const gemm_case cases[] = {
        {"smollm2 q    x W^T", 4096, 576, 576, FT_TYPE_Q4_1, 0},
        {"smollm2 gate x W^T", 4096, 1536, 576, FT_TYPE_NF4, 0},
        {"smollm2 down x W^T", 4096, 576, 1536, FT_TYPE_NF4, 0},
        {"smollm2 down dy W ", 4096, 1536, 576, FT_TYPE_NF4, 1},
        {"smollm2 head x W^T", 4096, 49152, 576, FT_TYPE_Q8_0, 0},
        {"llama1b q    x W^T", 4096, 2048, 2048, FT_TYPE_NF4, 0},
        {"llama1b gate x W^T", 4096, 8192, 2048, FT_TYPE_NF4, 0},
        {"llama1b down x W^T", 4096, 2048, 8192, FT_TYPE_NF4, 0},
        {"llama1b gate dy W ", 4096, 2048, 8192, FT_TYPE_NF4, 1},
        {"llama1b gate bf16 ", 4096, 8192, 2048, FT_TYPE_BF16, 0},
        {"dense   f32 x f32 ", 4096, 4096, 4096, FT_TYPE_F32, 0},
    };
    for (const gemm_case &c : cases) {
        /* x W^T: W (N, K); dy W: W (K, N) read transposed */
        ft_tensor *w = c.dx ? make_weight(d, c.type, c.K, c.N, &seed) : make_weight(d, c.type, c.N, c.K, &seed);
        float *x = dev_floats(c.M * c.K, &seed), *y = dev_floats(c.M * c.N, &seed);
        ft_device_operand B = ft_cuda_weight_op(w, c.dx);
        double ms = time_ms([&] { ft_cuda_gemm(y, c.N, ft_cuda_dense(x, c.K, 1), B, c.M, c.N, c.K, 1.0f, 0); }, 10);
        printf("gemm %s  M %5lld N %5lld K %5lld %-5s %8.3f ms %7.1f TFLOP/s\n", c.name, (long long)c.M, (long long)c.N,
               (long long)c.K, ft_type_name(c.type), ms, 2.0 * c.M * c.N * c.K / (ms * 1e9));
        ft_cuda_free(x); ft_cuda_free(y); ft_device_weight_free(d, w);
    }
    const struct { const char *name; int64_t B, T; int H, Hkv; int64_t D; } att[] = {
        {"smollm2 ", 4, 1024, 9, 3, 64}, {"llama1b ", 2, 2048, 32, 8, 64}};
    for (const auto &c : att) {
        ft_device_attn a;
        memset(&a, 0, sizeof a);
        a.B = c.B; a.T = a.Tk = c.T; a.D = c.D; a.H = c.H; a.Hkv = c.Hkv; a.causal = 1; a.scale = 0.125f;
        int64_t nq = c.B * c.T * c.H * c.D, nk = c.B * c.T * c.Hkv * c.D;
        float *q = dev_floats(nq, &seed), *k = dev_floats(nk, &seed), *v = dev_floats(nk, &seed), *o = dev_floats(nq, &seed);
        float *l = dev_floats(c.B * c.H * c.T, &seed), *dq = dev_floats(nq, &seed), *dk = dev_floats(nk, &seed), *dv = dev_floats(nk, &seed);
        double f = time_ms([&] { ft_cuda_attention_forward(o, l, q, k, v, NULL, NULL, &a); }, 5);
        double b = time_ms([&] { ft_cuda_attention_backward(dq, dk, dv, NULL, NULL, o, q, k, v, NULL, NULL, o, l, &a); }, 5);
        double flops = 4.0 * c.B * c.H * c.T * c.T / 2 * c.D;     /* causal: half the square, QK^T and PV */
        printf("attention %s B %lld T %lld H %d/%d D %lld: forward %8.3f ms %6.1f TFLOP/s, backward %8.3f ms %6.1f TFLOP/s\n", c.name,
               (long long)c.B, (long long)c.T, c.H, c.Hkv, (long long)c.D, f, flops / (f * 1e9), b, 2.5 * flops / (b * 1e9));
        for (float *x : {q, k, v, o, l, dq, dk, dv}) ft_cuda_free(x);
    }
    return 0;
}
