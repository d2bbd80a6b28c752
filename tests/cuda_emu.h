/* tests/cuda_emu.h - run finetune_cuda.cu's kernels on the CPU, to test their indexing and tiling
   without a GPU. Include it, define FT_CUDA_EMU, then include finetune_cuda.cu, in one C++17 file
   (g++ -std=c++17): what is CUDA C++ in the kernels is plain C++ here.

   The execution model, as the CUDA programming guide states it:
   - a launch runs its thread blocks one after another; a block's threads are fibers on the
     calling thread, resumed round-robin by a scheduler. A fiber gets its stack once (makecontext)
     and runs block after block; switches are _setjmp/_longjmp, which save no signal mask (no
     system call: swapcontext's made the emulation slower by half);
   - a fiber runs until it reaches a barrier: __syncthreads waits for every thread of its block,
     warp collectives (__shfl_*_sync, __syncwarp, the mma) for the 32 lanes of its warp. A round
     in which no fiber arrives at a barrier, passes one or ends is a deadlock: it is reported and
     the program aborts (a __syncthreads that some threads skip, say);
   - __shared__ variables are `static`: blocks run one at a time, so one copy serves each block
     in turn, shared by its threads, as on the device;
   - the warp-level matrix multiply mma.sync.m16n8k16 (bf16 inputs, f32 accumulators) takes each
     lane's fragments in the layout the PTX ISA specifies (see ft_emu_mma_bf16), gathers the
     16x16 A and 16x8 B tiles from all 32 lanes and gives each lane its four outputs;
   - the CUDA Runtime calls the file makes are on host memory: device pointers are host pointers,
     copies are memcpy, launches finish before they return. But device memory is as unreadable
     from the host as a GPU's: cudaMalloc maps pages that stay PROT_NONE except while a kernel
     runs or a copy or memset is made, so host code that touches device memory (an op that
     forgot its device path) dies with SIGSEGV here as it would on a GPU.
   Numerics: the products of bf16 values are exact in f32; the emulated mma sums them in k order
   (a GPU's order is unspecified), so tests compare with tolerances, never bit for bit. */
#ifndef FT_CUDA_EMU_H
#define FT_CUDA_EMU_H
#ifdef _FORTIFY_SOURCE              /* its longjmp check refuses the jumps between fiber stacks */
#undef _FORTIFY_SOURCE
#endif
#include <setjmp.h>
#include <ucontext.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <functional>
#include <vector>

/* ---- the language: qualifiers, built-in variables ------------------------------------------- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __constant__ static
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

enum { FT_EMU_STACK = 256 * 1024, FT_EMU_MAX_THREADS = 1024 };

struct ft_emu_fiber {
    ucontext_t uc;                  /* its first start only                                      */
    jmp_buf env;                    /* where it waits                                            */
    dim3 tid;
    int done, started;
    char *stack;
};
struct ft_emu_barrier {             /* a count of arrivals and a generation, bumped on release   */
    unsigned count, gen;
};
struct ft_emu_warp {                /* one warp's barrier and the lanes' slots for collectives   */
    ft_emu_barrier bar;
    uint64_t slot[32];
    uint32_t a[32][4], b[32][2];
};
struct ft_emu_block {
    std::vector<ft_emu_fiber> th;
    jmp_buf sched;
    int cur, n;
    dim3 bid, bdim, gdim;
    ft_emu_barrier bar;
    ft_emu_warp warp[FT_EMU_MAX_THREADS / 32];
    unsigned long events;           /* arrivals, releases and finished threads: the progress     */
    const std::function<void()> *kernel;
};
static ft_emu_block ft_emu_b;

#define threadIdx (ft_emu_b.th[ft_emu_b.cur].tid)
#define blockIdx  (ft_emu_b.bid)
#define blockDim  (ft_emu_b.bdim)
#define gridDim   (ft_emu_b.gdim)

static int ft_emu_linear_tid(void) {
    const dim3 &t = ft_emu_b.th[ft_emu_b.cur].tid;
    return (int)(t.x + ft_emu_b.bdim.x * (t.y + ft_emu_b.bdim.y * t.z));
}
static void ft_emu_yield(void) {
    if (!_setjmp(ft_emu_b.th[ft_emu_b.cur].env)) _longjmp(ft_emu_b.sched, 1);
}
/* wait until `parties` threads have arrived at bar */
static void ft_emu_wait(ft_emu_barrier *bar, unsigned parties) {
    unsigned gen = bar->gen;
    ft_emu_b.events++;
    if (++bar->count == parties) {
        bar->count = 0;
        bar->gen++;
        return;
    }
    while (bar->gen == gen) ft_emu_yield();
}
static ft_emu_warp *ft_emu_my_warp(int *lane) {
    int t = ft_emu_linear_tid();
    *lane = t % 32;
    return &ft_emu_b.warp[t / 32];
}
static unsigned ft_emu_warp_size(void) {
    int t = ft_emu_linear_tid(), w0 = t / 32 * 32;
    return (unsigned)(ft_emu_b.n - w0 < 32 ? ft_emu_b.n - w0 : 32);
}
static inline void __syncthreads(void) { ft_emu_wait(&ft_emu_b.bar, (unsigned)ft_emu_b.n); }
static inline void __syncwarp(unsigned mask = 0xffffffffu) {
    int lane;
    (void)mask;
    ft_emu_wait(&ft_emu_my_warp(&lane)->bar, ft_emu_warp_size());
}

/* ---- warp shuffles: every lane posts its value, then reads its partner's ------------------------ */
template <class T> static T ft_emu_shfl(T v, int src_of_lane(int lane, int arg), int arg) {
    int lane;
    ft_emu_warp *w = ft_emu_my_warp(&lane);
    T r;
    memcpy(&w->slot[lane], &v, sizeof v);
    __syncwarp();
    memcpy(&r, &w->slot[src_of_lane(lane, arg)], sizeof r);
    __syncwarp();
    return r;
}
static inline int ft_emu_src_xor(int lane, int m) { return lane ^ m; }
static inline int ft_emu_src_down(int lane, int d) { return lane + d < 32 ? lane + d : lane; }
static inline int ft_emu_src_idx(int lane, int s) { (void)lane; return s & 31; }
template <class T> static T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32) {
    (void)mask; (void)width;
    return ft_emu_shfl(v, ft_emu_src_xor, m);
}
template <class T> static T __shfl_down_sync(unsigned mask, T v, int d, int width = 32) {
    (void)mask; (void)width;
    return ft_emu_shfl(v, ft_emu_src_down, d);
}
template <class T> static T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    (void)mask; (void)width;
    return ft_emu_shfl(v, ft_emu_src_idx, src);
}

/* ---- mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, d += A B ---------------------------------
   With g = lane / 4 and t = lane % 4 (PTX ISA, "Matrix Fragments for mma.m16n8k16"):
     a[0] = A[g][2t, 2t+1]      a[1] = A[g+8][2t, 2t+1]   a[2] = A[g][2t+8, 2t+9]   a[3] = A[g+8][2t+8, 2t+9]
     b[0] = B[2t, 2t+1][g]      b[1] = B[2t+8, 2t+9][g]
     d[0], d[1] = D[g][2t, 2t+1]                         d[2], d[3] = D[g+8][2t, 2t+1]
   each 32-bit register holding two bf16, the lower index in the lower half. */
static float ft_emu_bf16(uint32_t reg, int hi) {
    uint32_t u = (hi ? reg >> 16 : reg & 0xffffu) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static float ft_emu_mma_a(const ft_emu_warp *w, int row, int k) {
    int g = row % 8, t = (k % 8) / 2, reg = (row >= 8) + 2 * (k >= 8);
    return ft_emu_bf16(w->a[g * 4 + t][reg], k % 2);
}
static float ft_emu_mma_b(const ft_emu_warp *w, int k, int col) {
    int t = (k % 8) / 2, reg = k >= 8;
    return ft_emu_bf16(w->b[col * 4 + t][reg], k % 2);
}
static void ft_emu_mma_bf16(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    int lane, i, k;
    ft_emu_warp *w = ft_emu_my_warp(&lane);
    memcpy(w->a[lane], a, sizeof w->a[lane]);
    memcpy(w->b[lane], b, sizeof w->b[lane]);
    __syncwarp();
    for (i = 0; i < 4; i++) {
        int row = lane / 4 + 8 * (i >= 2), col = 2 * (lane % 4) + i % 2;
        float s = d[i];
        for (k = 0; k < 16; k++) s += ft_emu_mma_a(w, row, k) * ft_emu_mma_b(w, k, col);
        d[i] = s;
    }
    __syncwarp();
}

/* ---- device functions the kernels call -------------------------------------------------------------- */
static inline float atomicAdd(float *p, float v) { float o = *p; *p += v; return o; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
template <class T> static inline T __ldg(const T *p) { return *p; }

/* ---- launch: blocks in order, threads as fibers ---------------------------------------------------------- */
/* a fiber: the kernel for each block it is given, then back to the scheduler */
static void ft_emu_entry(void) {
    for (;;) {
        (*ft_emu_b.kernel)();
        ft_emu_b.th[ft_emu_b.cur].done = 1;
        ft_emu_b.events++;
        ft_emu_yield();
    }
}
static int ft_emu_left(void) {
    int i, left = 0;
    for (i = 0; i < ft_emu_b.n; i++) left += !ft_emu_b.th[i].done;
    return left;
}
/* one round: every unfinished thread runs until its next barrier or its end */
static void ft_emu_resume(ft_emu_fiber *f) {
    ucontext_t here;
    if (_setjmp(ft_emu_b.sched)) return;
    if (f->started) _longjmp(f->env, 1);
    f->started = 1;                     /* its first run: onto its own stack */
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = f->stack;
    f->uc.uc_stack.ss_size = FT_EMU_STACK;
    f->uc.uc_link = NULL;
    makecontext(&f->uc, ft_emu_entry, 0);
    swapcontext(&here, &f->uc);
}
static void ft_emu_round(void) {
    int i;
    for (i = 0; i < ft_emu_b.n; i++) {
        if (ft_emu_b.th[i].done) continue;
        ft_emu_b.cur = i;
        ft_emu_resume(&ft_emu_b.th[i]);
    }
}
static void ft_emu_run_block(void) {
    int i;
    for (i = 0; i < ft_emu_b.n; i++) ft_emu_b.th[i].done = 0;
    while (ft_emu_left() > 0) {
        unsigned long before = ft_emu_b.events;
        ft_emu_round();
        if (ft_emu_left() > 0 && ft_emu_b.events == before) {
            fprintf(stderr, "cuda_emu: deadlock in block (%u,%u,%u): %d threads wait at barriers no one else reaches\n",
                    ft_emu_b.bid.x, ft_emu_b.bid.y, ft_emu_b.bid.z, ft_emu_left());
            abort();
        }
    }
}
/* ---- device memory: pages the host may touch only inside launches, copies and memsets ------------------
   One reserved region (address space only, 64 GiB), bump-allocated in whole pages, so that opening
   and closing it is one mprotect call. A freed allocation's pages go back to the system
   (MADV_DONTNEED); its addresses are not reused (the last one's are). */
struct ft_emu_alloc { void *p; size_t bytes; };
static std::vector<ft_emu_alloc> ft_emu_allocs;
static unsigned char *ft_emu_region;
static size_t ft_emu_used, ft_emu_cap = (size_t)64 << 30;
static int ft_emu_guard = -1;           /* FT_CUDA_EMU_GUARD=0 turns the protection off */
static void ft_emu_protect(int open) {
    if (ft_emu_guard < 0) ft_emu_guard = !getenv("FT_CUDA_EMU_GUARD") || atoi(getenv("FT_CUDA_EMU_GUARD")) != 0;
    if (ft_emu_used && ft_emu_guard) mprotect(ft_emu_region, ft_emu_used, open ? PROT_READ | PROT_WRITE : PROT_NONE);
}
static void ft_emu_launch(dim3 grid, dim3 block, const std::function<void()> &kernel) {
    int n = (int)(block.x * block.y * block.z), i;
    unsigned x, y, z;
    if (n <= 0 || n > FT_EMU_MAX_THREADS) { fprintf(stderr, "cuda_emu: %d threads per block\n", n); abort(); }
    for (i = (int)ft_emu_b.th.size(); i < n; i++) {
        ft_emu_fiber f = ft_emu_fiber();
        f.stack = (char *)malloc(FT_EMU_STACK);
        ft_emu_b.th.push_back(f);
    }
    memset(&ft_emu_b.bar, 0, sizeof ft_emu_b.bar);
    memset(ft_emu_b.warp, 0, sizeof ft_emu_b.warp);
    ft_emu_b.n = n;
    ft_emu_b.bdim = block;
    ft_emu_b.gdim = grid;
    ft_emu_b.kernel = &kernel;
    for (i = 0; i < n; i++) ft_emu_b.th[i].tid = dim3(i % block.x, i / block.x % block.y, i / (block.x * block.y));
    ft_emu_protect(1);
    for (z = 0; z < grid.z; z++)
        for (y = 0; y < grid.y; y++)
            for (x = 0; x < grid.x; x++) {
                ft_emu_b.bid = dim3(x, y, z);
                ft_emu_run_block();
            }
    ft_emu_protect(0);
}

/* ---- the CUDA Runtime calls finetune_cuda.cu makes, on host memory --------------------------------------- */
typedef int cudaError_t;
typedef void *cudaStream_t;
enum { cudaSuccess = 0, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
static inline cudaError_t cudaMalloc(void **p, size_t n) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE), bytes = (n + page - 1) / page * page;
    *p = NULL;
    if (!ft_emu_region) {
        void *m = mmap(NULL, ft_emu_cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        ft_emu_protect(0);              /* reads the switch; nothing is allocated yet */
        if (m == MAP_FAILED) return cudaErrorMemoryAllocation;
        ft_emu_region = (unsigned char *)m;
    }
    if (bytes == 0) bytes = page;
    if (bytes > ft_emu_cap - ft_emu_used) return cudaErrorMemoryAllocation;
    ft_emu_alloc a = {ft_emu_region + ft_emu_used, bytes};
    ft_emu_allocs.push_back(a);
    ft_emu_used += bytes;
    if (ft_emu_guard) mprotect(a.p, bytes, PROT_NONE);
    *p = a.p;
    return cudaSuccess;
}
static inline cudaError_t cudaFree(void *p) {
    for (size_t i = 0; i < ft_emu_allocs.size(); i++)
        if (ft_emu_allocs[i].p == p) {
            unsigned char *e = (unsigned char *)p + ft_emu_allocs[i].bytes;
            madvise(p, ft_emu_allocs[i].bytes, MADV_DONTNEED);
            if (e == ft_emu_region + ft_emu_used) ft_emu_used -= ft_emu_allocs[i].bytes;
            ft_emu_allocs.erase(ft_emu_allocs.begin() + (long)i);
            return cudaSuccess;
        }
    return p ? cudaErrorMemoryAllocation : cudaSuccess;
}
static inline cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind k) {
    (void)k;
    ft_emu_protect(1);
    if (n) memmove(d, s, n);
    ft_emu_protect(0);
    return cudaSuccess;
}
static inline cudaError_t cudaMemset(void *d, int v, size_t n) {
    ft_emu_protect(1);
    memset(d, v, n);
    ft_emu_protect(0);
    return cudaSuccess;
}
static inline cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorMemoryAllocation; }
static inline cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
static inline cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
static inline cudaError_t cudaGetLastError(void) { return cudaSuccess; }
static inline const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "out of memory"; }

#endif
