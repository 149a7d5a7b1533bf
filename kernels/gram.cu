// Gram matrix and its backward pass, channels-last.  Mirrors src/cpu/gram.rs.
//
//   f (hw, c)  ->  g (c, c) = fᵀ f / (c * hw)
//
// A GEMM with M = N = c and a long K = hw:  g[i][j] = Σ_p f[p][i] f[p][j].  K is split into
// `splits` chunks of `chunk` pixels (a function of hw and c only), one block per (i-tile, j-tile,
// chunk) writes its fp32 partial tile to partials (splits, c, c) without atomics, and gram_reduce
// sums the chunks in index order in double:  deterministic, and the same on every GPU.
// g is symmetric, so only tiles with i-tile <= j-tile are computed; gram_reduce reads the mirror
// entry for the others.
//
//   df (hw, c) += f (dg + dgᵀ) / (c * hw)
//
// gram_bwd_sym forms sym = (dg + dgᵀ) / (c * hw) (c, c) as the CPU does, then gram_bwd_acc_* is
// a GEMM with M = hw, N = c, K = c:  df[p][n] += Σ_k f[p][k] sym[k][n].
#include "common.cuh"
#include "tile_mma.cuh"

// Grid: (ceil(c/64), ceil(c/64), splits); block: 128 threads.
template <class P>
__device__ __forceinline__ void gram_partial_body(const float* __restrict__ f, float* __restrict__ partials,
                                                  int hw, int c, int chunk) {
    const int ti = blockIdx.x, tj = blockIdx.y, z = blockIdx.z;
    if (ti > tj) return;  // the mirror tile is computed by block (tj, ti)
    __shared__ __align__(128) ns::Smem<P> smem;
    const int i0 = ti * BM, j0 = tj * BN;
    const int p_begin = z * chunk, p_end = min(p_begin + chunk, hw);
    const int t = threadIdx.x;
    // Loader: 64 threads along channels (contiguous in f: coalesced), pixel rows t/64 + 2r.
    const int l_c = t % BM, l_row = t / BM;
    typename ns::AccFor<P>::type acc;
    acc.zero();
    // With c a multiple of 4 (every VGG layer), 16 threads per pixel row load float4s.
    const bool vec4 = c % 4 == 0;
    const int q = 4 * (t % 16), q_row = t / 16;
    for (int p0 = p_begin; p0 < p_end; p0 += BK) {
        if (vec4) {
            #pragma unroll 2
            for (int r = 0; r < BK / 8; r++) {
                const int kr = q_row + 8 * r, p = p0 + kr;
                const int i = i0 + q, j = j0 + q;
                const float* row = f + (size_t)p * c;
                const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                const float4 vi = (p < p_end && i < c) ? *reinterpret_cast<const float4*>(row + i) : zero;
                const float4 vj = (p < p_end && j < c) ? *reinterpret_cast<const float4*>(row + j) : zero;
                ns::store4_row<P>(&smem.ab.a[kr][q], vi);
                ns::store4_row<P>(&smem.ab.b[kr][q], vj);
            }
        } else {
            #pragma unroll 4
            for (int r = 0; r < BK / 2; r++) {
                const int kr = l_row + 2 * r, p = p0 + kr;
                const int i = i0 + l_c, j = j0 + l_c;
                const float* row = f + (size_t)p * c;
                const float vi = (p < p_end && i < c) ? row[i] : 0.0f;
                const float vj = (p < p_end && j < c) ? row[j] : 0.0f;
                smem.ab.a[kr][l_c] = P::cvt(vi);  // a[k][i] = f[p][i]: Fᵀ stored k-major
                smem.ab.b[kr][l_c] = P::cvt(vj);  // b[k][j] = f[p][j]
            }
        }
        __syncthreads();
        acc.mma(smem);
        __syncthreads();
    }
    acc.store(smem);
    __syncthreads();
    float* out = partials + (size_t)z * c * c;
    for (int idx = t; idx < BM * BN; idx += NS_TILE_THREADS) {
        const int r = idx / BN, cc = idx % BN;
        const int i = i0 + r, j = j0 + cc;
        if (i < c && j < c) out[(size_t)i * c + j] = smem.c[r][cc];
    }
}

// Grid: ceil(c*c / 256); block: 256.  g[i][j] = (Σ_z partials[z][i][j]) * scale, z in order.
extern "C" __global__ void gram_reduce(const float* __restrict__ partials, float* __restrict__ g, int c,
                                       int splits, double scale) {
    const int idx = blockIdx.x * NS_THREADS + threadIdx.x;
    if (idx >= c * c) return;
    int i = idx / c, j = idx % c;
    if (i / BM > j / BN) { const int tmp = i; i = j; j = tmp; }  // lower tiles: read the mirror
    double acc = 0.0;
    for (int z = 0; z < splits; z++) acc += (double)partials[((size_t)z * c + i) * c + j];
    g[idx] = (float)(acc * scale);
}

// Grid: ceil(c*c / 256); block: 256.  sym (c, c) = (dg + dgᵀ) * scale, scale = 1 / (c * hw).
extern "C" __global__ void gram_bwd_sym(const float* __restrict__ dg, float* __restrict__ sym, int c, float scale) {
    const int k = blockIdx.x * NS_THREADS + threadIdx.x;
    if (k >= c * c) return;
    sym[k] = (dg[k] + dg[(k % c) * c + k / c]) * scale;
}

// Grid: (ceil(hw/64), ceil(c/64)); block: 128.  df (hw, c) += f (hw, c) sym (c, c).
template <class P>
__device__ __forceinline__ void gram_bwd_acc_body(const float* __restrict__ f, const float* __restrict__ sym,
                                                  float* __restrict__ df, int hw, int c) {
    __shared__ __align__(128) ns::Smem<P> smem;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int t = threadIdx.x;
    const int a_k = t % BK, a_row = t / BK;  // A loader: along k (channels of f), rows t/32 + 4i
    typename ns::AccFor<P>::type acc;
    acc.zero();
    const bool vec4 = c % 4 == 0;  // float4 loaders, as in conv3x3.cu
    const int a4_k = 4 * (t % 8), a4_row = t / 8;
    for (int k0 = 0; k0 < c; k0 += BK) {
        if (vec4) {
            const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            #pragma unroll 2
            for (int i = 0; i < BM / 16; i++) {
                const int r = a4_row + 16 * i, p = m0 + r, k = k0 + a4_k;
                const float4 v = (p < hw && k < c) ? *reinterpret_cast<const float4*>(f + (size_t)p * c + k) : zero;
                ns::store4_kmajor<P>(smem, a4_k, r, v);
            }
            ns::load_b_tile<P, true>(smem, sym, c, c, k0, n0, t);  // dG + dGᵀ (c, c), row-major
        } else {
            #pragma unroll 4
            for (int i = 0; i < BM / 4; i++) {
                const int r = a_row + 4 * i, p = m0 + r, k = k0 + a_k;
                const float v = (p < hw && k < c) ? f[(size_t)p * c + k] : 0.0f;
                smem.ab.a[a_k][r] = P::cvt(v);
            }
            ns::load_b_tile<P, false>(smem, sym, c, c, k0, n0, t);
        }
        __syncthreads();
        acc.mma(smem);
        __syncthreads();
    }
    acc.store(smem);
    __syncthreads();
    for (int idx = t; idx < BM * BN; idx += NS_TILE_THREADS) {
        const int r = idx / BN, cc = idx % BN;
        const int p = m0 + r, n = n0 + cc;
        if (p < hw && n < c) df[(size_t)p * c + n] += smem.c[r][cc];
    }
}

#define GRAM_KERNELS(SUFFIX, P)                                                                       \
    extern "C" __global__ void __launch_bounds__(NS_TILE_THREADS) gram_partial_##SUFFIX(              \
        const float* f, float* partials, int hw, int c, int chunk) {                                  \
        gram_partial_body<P>(f, partials, hw, c, chunk);                                              \
    }                                                                                                 \
    extern "C" __global__ void __launch_bounds__(NS_TILE_THREADS) gram_bwd_acc_##SUFFIX(              \
        const float* f, const float* sym, float* df, int hw, int c) {                                 \
        gram_bwd_acc_body<P>(f, sym, df, hw, c);                                                      \
    }

GRAM_KERNELS(fp32, ns::Fp32)
GRAM_KERNELS(tf32, ns::Tf32)
GRAM_KERNELS(bf16, ns::Bf16)
