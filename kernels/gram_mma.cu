// Gram matrix and its backward pass on the mma.sync main loop (tile_mma_sync.cuh): the same
// algorithm, arguments and determinism as gram.cu's WMMA kernels (the reference), with 128 x 128
// tiles. NEURAL_STYLE_CUDA_GEMM=wmma|mma selects.
//
//   f (hw, c)  ->  partials (splits, c, c), z-th = Σ_{p in chunk z} f[p][i] f[p][j]  (i-tile <= j-tile)
//   gram_reduce_mma: g (c, c) = (Σ_z partials[z]) * scale, in double, z in order (the lower
//   tiles read their mirror). The split (splits, chunk) comes from gram_split_mma in
//   src/cuda/launch.rs: a function of (hw, c) only, so the sums are deterministic.
//
//   df (hw, c) += f (hw, c) sym (c, c),  sym = (dg + dgᵀ) / (c hw) from gram.cu's gram_bwd_sym.
//
// Operands: the Gram's A = Fᵀ is read m-contiguous (row p of f holds a run of channels i), so its
// fragments come from LDS; the backward's A = f is k-contiguous (ldmatrix), B = sym n-contiguous.
// VEC4 (c % 4 == 0, every VGG layer): 16-byte cp.async; else 4-byte copies.
// __launch_bounds__ without NS_MMA_MIN_BLOCKS: held to 128 registers, gram_partial spills ~440
// bytes (its 16 LDS per k8 step for Fᵀ keep many addresses live) and gram_bwd_acc 8-24 bytes at
// sm_80. Unforced, gram_bwd_acc still lands on 128 (two blocks per SM) and gram_partial on ~225
// (one). The Gram is ~5% of an evaluation's FLOPs; see docs/GPU.md.
#include "common.cuh"
#include "tile_mma_sync.cuh"

// Grid: (ceil(c/128), ceil(c/128), splits); block: 256; dynamic smem NS_MMA_SMEM_BYTES.
template <class P, bool VEC4>
__device__ __forceinline__ void gram_partial_mma_body(const float* __restrict__ f, float* __restrict__ partials, int hw,
                                                      int c, int chunk, float* smem) {
    using namespace ns::mma;
    typedef Wide S;
    constexpr int TILE_N = S::N_TILE;
    const int ti = blockIdx.x, tj = blockIdx.y, z = blockIdx.z;
    const int i0 = ti * TILE_M, j0 = tj * TILE_N;
    const int p_begin = z * chunk, p_end = min(p_begin + chunk, hw);
    auto load = [&](float* As, float* Bs, int kt) {
        const int p0 = p_begin + kt * TILE_K;
        load_kn<TILE_N, VEC4>(As, f, c, p0, p_end, i0, c);  // a[p][i] = f[p][i]: Fᵀ, m-contiguous
        load_kn<TILE_N, VEC4>(Bs, f, c, p0, p_end, j0, c);  // b[p][j] = f[p][j]
    };
    Acc<S> acc;
    zero(acc);
    mainloop<P, S, false>(acc, smem, (p_end - p_begin + TILE_K - 1) / TILE_K, load);
    float* out = partials + (size_t)z * c * c;
    const bool pairs = c % 2 == 0;
    for_each_pair(acc, i0, j0, [&](int i, int j, float v0, float v1) {
        if (i >= c || j >= c) return;
        float* o = out + (size_t)i * c + j;
        if (pairs) {
            *reinterpret_cast<float2*>(o) = make_float2(v0, v1);
        } else {
            o[0] = v0;
            if (j + 1 < c) o[1] = v1;
        }
    });
}

// Grid: ceil(c*c / 256); block: 256. gram.cu's gram_reduce with the 128-wide tiles' mirror rule.
extern "C" __global__ void gram_reduce_mma(const float* __restrict__ partials, float* __restrict__ g, int c, int splits,
                                           double scale) {
    const int idx = blockIdx.x * NS_THREADS + threadIdx.x;
    if (idx >= c * c) return;
    int i = idx / c, j = idx % c;
    if (i / NS_MMA_BM > j / NS_MMA_BN) { const int tmp = i; i = j; j = tmp; }  // lower tiles: read the mirror
    double acc = 0.0;
    for (int z = 0; z < splits; z++) acc += (double)partials[((size_t)z * c + i) * c + j];
    g[idx] = (float)(acc * scale);
}

// Grid: (ceil(hw/128), ceil(c/128)); block: 256; dynamic smem NS_MMA_SMEM_BYTES.
template <class P, bool VEC4>
__device__ __forceinline__ void gram_bwd_acc_mma_body(const float* __restrict__ f, const float* __restrict__ sym,
                                                      float* __restrict__ df, int hw, int c, float* smem) {
    using namespace ns::mma;
    typedef Wide S;
    constexpr int TILE_N = S::N_TILE;
    const int m0 = blockIdx.x * TILE_M, n0 = blockIdx.y * TILE_N;
    auto load = [&](float* As, float* Bs, int kt) {
        const int k0 = kt * TILE_K;
        load_mk<VEC4>(As, f, c, m0, hw, k0, c);    // a[p][k] = f[p][k]
        load_kn<TILE_N, VEC4>(Bs, sym, c, k0, c, n0, c);   // b[k][n] = sym[k][n]
    };
    Acc<S> acc;
    zero(acc);
    mainloop<P, S, true>(acc, smem, (c + TILE_K - 1) / TILE_K, load);
    const bool pairs = c % 2 == 0;
    for_each_pair(acc, m0, n0, [&](int p, int n, float v0, float v1) {
        if (p >= hw || n >= c) return;
        float* o = df + (size_t)p * c + n;
        if (pairs) {
            const float2 old = *reinterpret_cast<const float2*>(o);
            *reinterpret_cast<float2*>(o) = make_float2(old.x + v0, old.y + v1);
        } else {
            o[0] += v0;
            if (n + 1 < c) o[1] += v1;
        }
    });
}

#define GRAM_MMA_KERNELS(SUFFIX, P)                                                                     \
    extern "C" __global__ void __launch_bounds__(NS_MMA_THREADS) gram_partial_mma_##SUFFIX(               \
        const float* f, float* partials, int hw, int c, int chunk) {                                      \
        if (blockIdx.x > blockIdx.y) return; /* the mirror tile is computed by block (tj, ti) */           \
        NS_DYNAMIC_SMEM(float, smem);                                                                     \
        if (c % 4 == 0) gram_partial_mma_body<P, true>(f, partials, hw, c, chunk, smem);                  \
        else gram_partial_mma_body<P, false>(f, partials, hw, c, chunk, smem);                            \
    }                                                                                                     \
    extern "C" __global__ void __launch_bounds__(NS_MMA_THREADS) gram_bwd_acc_mma_##SUFFIX(               \
        const float* f, const float* sym, float* df, int hw, int c) {                                     \
        NS_DYNAMIC_SMEM(float, smem);                                                                     \
        if (c % 4 == 0) gram_bwd_acc_mma_body<P, true>(f, sym, df, hw, c, smem);                          \
        else gram_bwd_acc_mma_body<P, false>(f, sym, df, hw, c, smem);                                    \
    }

GRAM_MMA_KERNELS(tf32, ns::mma::Tf32)
GRAM_MMA_KERNELS(bf16, ns::mma::Bf16)
