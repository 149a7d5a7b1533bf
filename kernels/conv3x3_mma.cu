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
//
// Two special shapes follow the main kernels (issue 11, "special shapes"): split-K kernels plus
// their reduce for the small grids of conv4_x / conv5_1 (conv3x3_*_mma_splitk_*,
// conv3x3_splitk_reduce), and a memory-bound FFMA kernel for conv1_1's input gradient (N = 3)
// with the ReLU mask folded in (conv3x3_bwd_input_masked_n4).
#include "common.cuh"
#include "tile_mma_sync.cuh"

// SPLIT: block z computes K slices z * chunk .. (z + 1) * chunk (fewer in the last) into slice z
// of y, which is then the split-K workspace (splits, M, N); else all of K. The main loop counts the
// block's own slices from 0 and the loader adds the range's first k (k_split): at sm_80 a main
// loop over absolute slice numbers cost the tf32 kernel 8-16 bytes of spills at 128 registers.
template <class P, class S, bool VA, bool VB, bool SPLIT>
__device__ __forceinline__ void conv3x3_mma_body(const float* __restrict__ x, const float* __restrict__ wt,
                                                 const float* __restrict__ bias, float* __restrict__ y, int h, int w,
                                                 int c_in, int c_out, bool relu, int chunk, float* smem) {
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
    const int k_split = SPLIT ? blockIdx.z * chunk * TILE_K : 0;  // the first k of this block's range
    auto load = [&](float* As, float* Bs, int kt) {
        const int k0 = kt * TILE_K + (SPLIT ? k_split : 0), k = k0 + a_col;
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
    const int k_tiles = (K + TILE_K - 1) / TILE_K;
    mainloop<P, S, true>(acc, smem, SPLIT ? min(chunk, k_tiles - (int)blockIdx.z * chunk) : k_tiles, load);
    if (SPLIT) y += (size_t)blockIdx.z * M * N;

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

template <class P, class S, bool SPLIT = false>
__device__ __forceinline__ void conv3x3_mma(const float* x, const float* wt, const float* bias, float* y, int h, int w,
                                            int c_in, int c_out, bool relu, int chunk = 0) {
    NS_DYNAMIC_SMEM(float, smem);
    const bool va = c_in % 4 == 0, vb = c_out % 4 == 0;
    if (va && vb) conv3x3_mma_body<P, S, true, true, SPLIT>(x, wt, bias, y, h, w, c_in, c_out, relu, chunk, smem);
    else if (va) conv3x3_mma_body<P, S, true, false, SPLIT>(x, wt, bias, y, h, w, c_in, c_out, relu, chunk, smem);
    else if (vb) conv3x3_mma_body<P, S, false, true, SPLIT>(x, wt, bias, y, h, w, c_in, c_out, relu, chunk, smem);
    else conv3x3_mma_body<P, S, false, false, SPLIT>(x, wt, bias, y, h, w, c_in, c_out, relu, chunk, smem);
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

// ---- Split-K: conv4_x and conv5_1 at 512² and below -----------------------------------------
//
// The same GEMM on the 128 x 128 tile, K cut into `splits` ranges of `chunk` K slices (the host's
// conv_split_k picks them from M, N, K and the SM count): a 64 x 64 grid (conv4_x at 512²:
// M = 4096, N = 512) is only 128 tiles, one per SM of an H100/H200 where two fit, and conv5_1
// (M = 1024) is 32. Block (x, y, z) writes the partial product of its K range, without bias or
// ReLU, to slice z of the workspace; conv3x3_splitk_reduce then adds the slices in z order and
// applies bias + ReLU. No atomics: the same launch gives the same bits.
//
//   fwd:        x (h, w, c_in), w (3, 3, c_in, c_out)     ->  ws (splits, h*w, c_out)
//   bwd_input:  dy (h, w, c_out), w_flip (3, 3, c_out, c_in) ->  ws (splits, h*w, c_in)
//
// Grid: (ceil(M / 128), ceil(N / 128), splits); block: 256 threads; NS_MMA_SMEM_BYTES dynamic.
#define CONV3X3_MMA_SPLITK_KERNELS(SUFFIX, P, MINB)                                                          \
    extern "C" __global__ void __launch_bounds__(NS_MMA_THREADS, MINB) conv3x3_fwd_mma_splitk_##SUFFIX(       \
        const float* x, const float* w, float* ws, int h, int wd, int c_in, int c_out, int chunk) {          \
        conv3x3_mma<P, ns::mma::Wide, true>(x, w, nullptr, ws, h, wd, c_in, c_out, false, chunk);           \
    }                                                                                                      \
    extern "C" __global__ void __launch_bounds__(NS_MMA_THREADS, MINB) conv3x3_bwd_input_mma_splitk_##SUFFIX( \
        const float* dy, const float* w_flip, float* ws, int h, int wd, int c_in, int c_out, int chunk) {    \
        conv3x3_mma<P, ns::mma::Wide, true>(dy, w_flip, nullptr, ws, h, wd, c_out, c_in, false, chunk);     \
    }

CONV3X3_MMA_SPLITK_KERNELS(tf32, ns::mma::Tf32, NS_MMA_MIN_BLOCKS)
CONV3X3_MMA_SPLITK_KERNELS(bf16, ns::mma::Bf16, 1)

// Split-K's second stage, elementwise: y (M, N) = [relu](ws[0] + ws[1] + ... + ws[splits - 1] + b),
// the slices added in z order (deterministic). ws (splits, M, N), bias (N) or null, mn = M * N.
// Grid: ceil(mn / 256); block: 256.
extern "C" __global__ void conv3x3_splitk_reduce(const float* __restrict__ ws, const float* __restrict__ bias,
                                                 float* __restrict__ y, int mn, int n, int splits, int relu) {
    const int i = blockIdx.x * NS_THREADS + threadIdx.x;
    if (i >= mn) return;
    float v = ws[i];
    for (int z = 1; z < splits; z++) v += ws[(size_t)z * mn + i];
    if (bias) v += bias[i % n];
    if (relu) v = fmaxf(v, 0.0f);
    y[i] = v;
}

// ---- conv1_1's input gradient (N = c_in <= 4), memory-bound, with its ReLU mask ----------------
//
//   y, dy (h, w, c_out), w_flip (3, 3, c_out, c_in)  ->  dx (h, w, c_in) = conv3x3(dy ⊙ (y > 0), w_flip)
//
//   dx[oy][ox][ci] = Σ_{ky, kx, co} d[oy+ky-1][ox+kx-1][co] · w_flip[((ky*3 + kx)*c_out + co)*c_in + ci],
//   d = (y <= 0 ? 0 : dy) (relu_bwd in relu.cu, folded in here), 0 outside the image.
//
// As a GEMM this is M = h*w, N = c_in = 3, K = 9*c_out: the narrow 64-wide mma tile spends 21x
// the useful tensor work on it, after a separate relu_bwd pass over dy. Here it is plain fp32
// FFMA, and the cost is reading y and dy once (2 x 67 MB at 512², c_out = 64): each masked dy
// element feeds 27 FMAs.
//
// Grid: (ceil(w / 32), ceil(h / 16)); block: 256 threads. Block (bx, by) owns the 16 x 32 output
// pixels at rows 16 by.., columns 32 bx..; thread t column tx = t % 32, rows 2 ty, 2 ty + 1
// (ty = t / 32). Per pass over NS_N4_CH channels of dy the block stages, in static shared memory:
//   - the masked (16 + 2) x (32 + 2) halo of dy, zero outside the image and past c_out, at
//     NS_N4_PAD floats per pixel (an LDS.128 phase reads 8 consecutive pixels: 8 distinct 4-bank
//     groups, conflict-free);
//   - the pass's weights, one float4 (ci 0..3, zero past c_in) per (tap, channel): every lane
//     of a warp reads the same one (a broadcast).
// A thread then does, per 4 channels and kx, 4 LDS.128 of dy and 12 of weights for 96 FFMA.
#define NS_N4_TX 32
#define NS_N4_TY 16
#define NS_N4_CH 8
#define NS_N4_PAD 12
#define NS_N4_MAX_C_IN 4
// Four blocks per SM (32 warps to hide the global loads): 64 registers, 4 x 30 KB of shared memory.
// (With no minimum ptxas settles at 48 registers and spills 8 bytes.)
#define NS_N4_MIN_BLOCKS 4

__device__ __forceinline__ float ns_lane_of(const float4& v, int j) {
    return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w;
}

template <bool VEC4>
__device__ __forceinline__ void conv3x3_bwd_input_masked_n4_body(const float* __restrict__ y,
                                                                 const float* __restrict__ dy,
                                                                 const float* __restrict__ wf, float* __restrict__ dx,
                                                                 int h, int w, int c_in, int c_out, float* s_d,
                                                                 float4* s_w) {
    constexpr int HX = NS_N4_TX + 2, HALO = HX * (NS_N4_TY + 2);
    const int t = threadIdx.x, tx = t % NS_N4_TX, ty = t / NS_N4_TX;
    const int x0 = blockIdx.x * NS_N4_TX, y0 = blockIdx.y * NS_N4_TY;
    float4 acc[2] = {make_float4(0.0f, 0.0f, 0.0f, 0.0f), make_float4(0.0f, 0.0f, 0.0f, 0.0f)};

    for (int c0 = 0; c0 < c_out; c0 += NS_N4_CH) {
        __syncthreads();  // every thread is done reading the previous pass
        // Masked dy: 4 channels per copy (VEC4: c_out % 4 == 0, so a group is all in or all out) or 1.
        constexpr int STEP = VEC4 ? 4 : 1, PER_PIXEL = NS_N4_CH / STEP;
        for (int i = t; i < HALO * PER_PIXEL; i += NS_THREADS) {
            const int p = i / PER_PIXEL, c = STEP * (i % PER_PIXEL);
            const int iy = y0 + p / HX - 1, ix = x0 + p % HX - 1, co = c0 + c;
            const bool ok = iy >= 0 && iy < h && ix >= 0 && ix < w && co < c_out;
            const size_t at = ok ? ((size_t)iy * w + ix) * c_out + co : 0;
            float* dst = s_d + p * NS_N4_PAD + c;
            if (VEC4) {
                float4 d = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (ok) {
                    const float4 g = *reinterpret_cast<const float4*>(dy + at);
                    const float4 m = *reinterpret_cast<const float4*>(y + at);
                    d = make_float4(m.x <= 0.0f ? 0.0f : g.x, m.y <= 0.0f ? 0.0f : g.y, m.z <= 0.0f ? 0.0f : g.z,
                                    m.w <= 0.0f ? 0.0f : g.w);
                }
                *reinterpret_cast<float4*>(dst) = d;
            } else {
                *dst = !ok || y[at] <= 0.0f ? 0.0f : dy[at];
            }
        }
        for (int i = t; i < 9 * NS_N4_CH; i += NS_THREADS) {
            const int tap = i / NS_N4_CH, co = c0 + i % NS_N4_CH;
            const float* src = wf + ((size_t)tap * c_out + co) * c_in;
            const bool ok = co < c_out;
            s_w[i] = make_float4(ok && c_in > 0 ? src[0] : 0.0f, ok && c_in > 1 ? src[1] : 0.0f,
                                 ok && c_in > 2 ? src[2] : 0.0f, ok && c_in > 3 ? src[3] : 0.0f);
        }
        __syncthreads();

        #pragma unroll
        for (int c = 0; c < NS_N4_CH; c += 4) {
            #pragma unroll
            for (int kx = 0; kx < 3; kx++) {
                float4 d[4];  // halo rows 2 ty .. 2 ty + 3 at column tx + kx, channels c .. c + 3
                #pragma unroll
                for (int r = 0; r < 4; r++)
                    d[r] = *reinterpret_cast<const float4*>(s_d + ((2 * ty + r) * HX + tx + kx) * NS_N4_PAD + c);
                #pragma unroll
                for (int ky = 0; ky < 3; ky++)
                    #pragma unroll
                    for (int j = 0; j < 4; j++) {
                        const float4 wv = s_w[(ky * 3 + kx) * NS_N4_CH + c + j];
                        #pragma unroll
                        for (int o = 0; o < 2; o++) {
                            const float a = ns_lane_of(d[o + ky], j);
                            acc[o].x = fmaf(a, wv.x, acc[o].x);
                            acc[o].y = fmaf(a, wv.y, acc[o].y);
                            acc[o].z = fmaf(a, wv.z, acc[o].z);
                            acc[o].w = fmaf(a, wv.w, acc[o].w);
                        }
                    }
            }
        }
    }

    const int ox = x0 + tx;
    #pragma unroll
    for (int o = 0; o < 2; o++) {
        const int oy = y0 + 2 * ty + o;
        if (oy >= h || ox >= w) continue;
        float* out = dx + ((size_t)oy * w + ox) * c_in;
        #pragma unroll
        for (int ci = 0; ci < NS_N4_MAX_C_IN; ci++)
            if (ci < c_in) out[ci] = ns_lane_of(acc[o], ci);
    }
}

extern "C" __global__ void __launch_bounds__(NS_THREADS, NS_N4_MIN_BLOCKS) conv3x3_bwd_input_masked_n4(
    const float* y, const float* dy, const float* w_flip, float* dx, int h, int wd, int c_in, int c_out) {
    // Declared here, not in the template: each instantiation would have its own copy.
    __shared__ __align__(16) float s_d[(NS_N4_TX + 2) * (NS_N4_TY + 2) * NS_N4_PAD];  // [halo pixel][channel]
    __shared__ float4 s_w[9 * NS_N4_CH];  // [tap][channel of the pass] -> ci 0..3
    if (c_out % 4 == 0) conv3x3_bwd_input_masked_n4_body<true>(y, dy, w_flip, dx, h, wd, c_in, c_out, s_d, s_w);
    else conv3x3_bwd_input_masked_n4_body<false>(y, dy, w_flip, dx, h, wd, c_in, c_out, s_d, s_w);
}
