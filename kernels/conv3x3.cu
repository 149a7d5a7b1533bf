// 3x3 convolution, stride 1, zero padding 1, channels-last.  Mirrors src/cpu/conv.rs.
//
//   x (h, w, c_in), w (3, 3, c_in, c_out), b (c_out)  ->  y (h, w, c_out) = relu(conv(x, w) + b)
//
// As an implicit GEMM:  y[m][n] = Σ_k A[m][k] B[k][n]  with
//   M = h*w (output pixels m = oy*w + ox),  N = c_out,  K = 9*c_in (k = (ky*3 + kx)*c_in + ci),
//   A[m][k] = x[oy+ky-1][ox+kx-1][ci] (0 outside the image: the padding),
//   B[k][n] = w[k*c_out + n]             (the weight layout is already K x N, row-major).
// Bias and ReLU are fused into the epilogue.
//
// The backward pass w.r.t. the input (conv3x3_bwd_input_*) is the same GEMM with the shapes
// swapped and no bias/ReLU:  dy (h, w, c_out), w_flip (3, 3, c_out, c_in)  ->  dx (h, w, c_in),
// exactly as conv3x3_bwd_input_naive calls conv3x3_fwd_naive on the CPU.
//
// Grid: (ceil(M / 64), ceil(N / 64)); block: 128 threads; each block one 64 x 64 tile of y.
#include "common.cuh"
#include "tile_mma.cuh"

template <class P>
__device__ __forceinline__ void conv3x3_body(const float* __restrict__ x, const float* __restrict__ wt,
                                             const float* __restrict__ bias, float* __restrict__ y,
                                             int h, int w, int c_in, int c_out, bool relu) {
    __shared__ __align__(128) ns::Smem<P> smem;
    __shared__ int s_oy[BM], s_ox[BM];  // output pixel of each tile row (far outside if m >= M)
    const int M = h * w, N = c_out, K = 9 * c_in;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int t = threadIdx.x;
    if (t < BM) {
        const int m = m0 + t;
        s_oy[t] = m < M ? m / w : -4;
        s_ox[t] = m < M ? m % w : -4;
    }
    typename ns::AccFor<P>::type acc;
    acc.zero();
    __syncthreads();

    // Channel counts that are multiples of 4 (every VGG layer but the 3-channel image side) load
    // float4s: 4 consecutive k share one tap, and 4 consecutive n are one aligned vector.
    const bool vec4 = (c_in % 4 == 0) && (c_out % 4 == 0);
    // Scalar A loader: 32 threads along k (contiguous channels in x: coalesced), rows t/32 + 4i.
    const int a_k = t % BK, a_row = t / BK;
    // float4 A loader: 8 threads per row (k = 4 (t%8) ..), rows t/8 + 16i. B: ns::load_b_tile.
    const int a4_k = 4 * (t % 8), a4_row = t / 8;

    for (int k0 = 0; k0 < K; k0 += BK) {
        if (vec4) {
            const int k = k0 + a4_k;
            const int tap = k / c_in, ci = k - tap * c_in;
            const int ky = tap / 3, kx = tap - 3 * (tap / 3);
            #pragma unroll 2
            for (int i = 0; i < BM / 16; i++) {
                const int r = a4_row + 16 * i;
                const int iy = s_oy[r] + ky - 1, ix = s_ox[r] + kx - 1;
                float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (k < K && iy >= 0 && iy < h && ix >= 0 && ix < w)
                    v = *reinterpret_cast<const float4*>(x + ((size_t)iy * w + ix) * c_in + ci);
                ns::store4_kmajor<P>(smem, a4_k, r, v);
            }
            ns::load_b_tile<P, true>(smem, wt, K, N, k0, n0, t);  // weights (K, N), row-major
        } else {
            const int k = k0 + a_k;
            const int tap = k / c_in, ci = k - tap * c_in;
            const int ky = tap / 3, kx = tap - 3 * (tap / 3);
            #pragma unroll 4
            for (int i = 0; i < BM / 4; i++) {
                const int r = a_row + 4 * i;
                const int iy = s_oy[r] + ky - 1, ix = s_ox[r] + kx - 1;
                float v = 0.0f;
                if (k < K && iy >= 0 && iy < h && ix >= 0 && ix < w) v = x[((size_t)iy * w + ix) * c_in + ci];
                smem.ab.a[a_k][r] = P::cvt(v);
            }
            ns::load_b_tile<P, false>(smem, wt, K, N, k0, n0, t);
        }
        __syncthreads();
        acc.mma(smem);
        __syncthreads();
    }

    // Epilogue: y = relu(acc + b), rows of 64 contiguous channels per 64 threads.
    acc.store(smem);
    __syncthreads();
    for (int idx = t; idx < BM * BN; idx += NS_TILE_THREADS) {
        const int r = idx / BN, c = idx % BN;
        const int m = m0 + r, n = n0 + c;
        if (m < M && n < N) {
            float v = smem.c[r][c];
            if (bias) v += bias[n];
            if (relu) v = fmaxf(v, 0.0f);
            y[(size_t)m * N + n] = v;
        }
    }
}

#define CONV3X3_KERNELS(SUFFIX, P)                                                                  \
    extern "C" __global__ void __launch_bounds__(NS_TILE_THREADS) conv3x3_fwd_##SUFFIX(             \
        const float* x, const float* w, const float* b, float* y, int h, int wd, int c_in, int c_out) { \
        conv3x3_body<P>(x, w, b, y, h, wd, c_in, c_out, true);                                      \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(NS_TILE_THREADS) conv3x3_bwd_input_##SUFFIX(       \
        const float* dy, const float* w_flip, float* dx, int h, int wd, int c_in, int c_out) {      \
        /* the forward GEMM with c_in and c_out swapped, no bias, no ReLU */                        \
        conv3x3_body<P>(dy, w_flip, nullptr, dx, h, wd, c_out, c_in, false);                        \
    }

CONV3X3_KERNELS(fp32, ns::Fp32)
CONV3X3_KERNELS(tf32, ns::Tf32)
CONV3X3_KERNELS(bf16, ns::Bf16)
