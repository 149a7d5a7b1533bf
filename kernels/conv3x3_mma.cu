// 3x3 convolution, stride 1, zero padding 1, channels-last, on the mma.sync main loop
// (tile_mma_sync.cuh). The same GEMM, arguments and results as conv3x3.cu's WMMA kernels, which
// stay the reference (NEURAL_STYLE_CUDA_GEMM=wmma|mma selects):
//
//   x (h, w, c_in), w (3, 3, c_in, c_out), b (c_out)  ->  y (h, w, c_out) = relu(conv(x, w) + b)
//
//   M = h*w (m = oy*w + ox), N = c_out, K = 9*c_in (k = (ky*3 + kx)*c_in + ci),
//   A[m][k] = x[oy+ky-1][ox+kx-1][ci] (0 outside the image), B[k][n] = w[k*c_out + n].
//
// conv3x3_bwd_input_mma_* is the same GEMM with c_in and c_out swapped (dy, w_flip -> dx), no
// bias, no ReLU. Suffix tf32: m16n8k8 on raw fp32; bf16: m16n8k16, operands rounded to bf16 in
// the fragment path (tile_mma_sync.cuh).
//
// Grid: (ceil(M / 128), ceil(N / BN)); block: 256 threads; dynamic shared memory
// NS_MMA_SMEM_BYTES for BN = 128 (*_mma_tf32, *_mma_bf16), NS_MMA_SMEM_BYTES_NARROW for BN = 64
// (*_mma_n64_tf32, *_mma_n64_bf16); both above the 48 KiB default, so the host raises each
// kernel's limit once.
//
// The im2col loader: each thread copies the same 4 (VEC4) or 16 rows of every A slice, so their
// output pixels (oy, ox) are computed once, before the K loop; per slice a thread only turns its
// k into (tap, ci) and checks the 3x3 window against the image. An out-of-image tap, a row past M
// or a k past K is a zero-filled cp.async (src-size 0), so no thread ever branches around a copy.
// VEC4 (c_in % 4 == 0: 4 consecutive k share one tap and are one aligned 16-byte chunk of x) holds
// for every VGG layer but conv1_1's 3-channel input; the B side is VEC4 when c_out % 4 == 0.
#include "common.cuh"
#include "tile_mma_sync.cuh"

template <class P, class S, bool VA, bool VB>
__device__ __forceinline__ void conv3x3_mma_body(const float* __restrict__ x, const float* __restrict__ wt,
                                                 const float* __restrict__ bias, float* __restrict__ y, int h, int w,
                                                 int c_in, int c_out, bool relu, float* smem) {
    using namespace ns::mma;
    const int M = h * w, N = c_out, K = 9 * c_in;
    const int m0 = blockIdx.x * TILE_M, n0 = blockIdx.y * S::N_TILE;
    const int t = threadIdx.x;
    // This thread's A rows: VA: chunk column t % 8, rows t/8 + 32i; else column t % 32, rows t/32 + 8i.
    constexpr int ROWS = VA ? 4 : 16, ROW_STEP = VA ? 32 : 8;
    const int a_col = VA ? 4 * (t % 8) : t % 32, a_row = VA ? t / 8 : t / 32;
    // The precomputed im2col rows (VA only: the scalar path serves conv1_1's single K slice, where
    // 16 rows x 2 registers held through the loop would cost more than recomputing them).
    // oy = -4 marks a row past M: never inside the image.
    int oy[VA ? ROWS : 1], ox[VA ? ROWS : 1];
    auto pixel = [&](int i, int& py, int& px) {
        const int m = m0 + a_row + ROW_STEP * i;
        py = m < M ? m / w : -4;
        px = m < M ? m - (m / w) * w : -4;
    };
    if (VA) {
        #pragma unroll
        for (int i = 0; i < ROWS; i++) pixel(i, oy[VA ? i : 0], ox[VA ? i : 0]);
    }
    auto load = [&](float* As, float* Bs, int kt) {
        const int k0 = kt * TILE_K, k = k0 + a_col;
        const int tap = k / c_in, ci = k - tap * c_in;
        const int ky = tap / 3, kx = tap - 3 * (tap / 3);
        const bool k_ok = k < K;
        #pragma unroll(VA ? 4 : 2)
        for (int i = 0; i < ROWS; i++) {
            int py, px;
            if (VA) py = oy[VA ? i : 0], px = ox[VA ? i : 0];
            else pixel(i, py, px);
            const int iy = py + ky - 1, ix = px + kx - 1;
            const bool ok = k_ok && iy >= 0 && iy < h && ix >= 0 && ix < w;
            const float* src = ok ? x + ((size_t)iy * w + ix) * c_in + ci : x;
            float* dst = As + swz_mk(a_row + ROW_STEP * i, a_col);
            if (VA) ns::cp_async_16(dst, src, ok ? 16 : 0);
            else ns::cp_async_4(dst, src, ok ? 4 : 0);
        }
        load_kn<S::N_TILE, VB>(Bs, wt, N, k0, K, n0, N);  // weights (K, N), row-major
    };
    Acc<S> acc;
    zero(acc);
    mainloop<P, S, true>(acc, smem, (K + TILE_K - 1) / TILE_K, load);

    // Epilogue straight from the accumulators: y = relu(acc + b), two adjacent channels per store.
    const bool pairs = N % 2 == 0;
    for_each_pair(acc, m0, n0, [&](int m, int n, float v0, float v1) {
        if (m >= M || n >= N) return;
        if (bias) {
            v0 += bias[n];
            if (n + 1 < N) v1 += bias[n + 1];
        }
        if (relu) {
            v0 = fmaxf(v0, 0.0f);
            v1 = fmaxf(v1, 0.0f);
        }
        float* out = y + (size_t)m * N + n;
        if (pairs) {
            *reinterpret_cast<float2*>(out) = make_float2(v0, v1);
        } else {
            out[0] = v0;
            if (n + 1 < N) out[1] = v1;
        }
    });
}

template <class P, class S>
__device__ __forceinline__ void conv3x3_mma(const float* x, const float* wt, const float* bias, float* y, int h, int w,
                                            int c_in, int c_out, bool relu) {
    NS_DYNAMIC_SMEM(float, smem);
    const bool va = c_in % 4 == 0, vb = c_out % 4 == 0;
    if (va && vb) conv3x3_mma_body<P, S, true, true>(x, wt, bias, y, h, w, c_in, c_out, relu, smem);
    else if (va) conv3x3_mma_body<P, S, true, false>(x, wt, bias, y, h, w, c_in, c_out, relu, smem);
    else if (vb) conv3x3_mma_body<P, S, false, true>(x, wt, bias, y, h, w, c_in, c_out, relu, smem);
    else conv3x3_mma_body<P, S, false, false>(x, wt, bias, y, h, w, c_in, c_out, relu, smem);
}

// SUFFIX: precision, or n64_ + precision for the BN = 64 tile (the host picks it when N <= 64).
#define CONV3X3_MMA_KERNELS(SUFFIX, P, S, MINB)                                                            \
    extern "C" __global__ void __launch_bounds__(NS_MMA_THREADS, MINB) conv3x3_fwd_mma_##SUFFIX(             \
        const float* x, const float* w, const float* b, float* y, int h, int wd, int c_in, int c_out) {      \
        conv3x3_mma<P, S>(x, w, b, y, h, wd, c_in, c_out, true);                                           \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(NS_MMA_THREADS, MINB)                                      \
        conv3x3_bwd_input_mma_##SUFFIX(const float* dy, const float* w_flip, float* dx, int h, int wd,       \
                                        int c_in, int c_out) {                                             \
        /* the forward GEMM with c_in and c_out swapped, no bias, no ReLU */                               \
        conv3x3_mma<P, S>(dy, w_flip, nullptr, dx, h, wd, c_out, c_in, false);                             \
    }

// tf32: two blocks per SM at 128 registers, no spills. bf16 held to 128 registers spills ~570
// bytes (the fp32 -> bf16x2 packing keeps more values live), so it runs one block per SM. The
// narrow tiles (half the accumulators) fit two blocks per SM in both precisions.
CONV3X3_MMA_KERNELS(tf32, ns::mma::Tf32, ns::mma::Wide, NS_MMA_MIN_BLOCKS)
CONV3X3_MMA_KERNELS(bf16, ns::mma::Bf16, ns::mma::Wide, 1)
CONV3X3_MMA_KERNELS(n64_tf32, ns::mma::Tf32, ns::mma::Narrow, NS_MMA_MIN_BLOCKS)
CONV3X3_MMA_KERNELS(n64_bf16, ns::mma::Bf16, ns::mma::Narrow, NS_MMA_MIN_BLOCKS)
