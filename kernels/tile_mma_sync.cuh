// The mma.sync GEMM main loop shared by conv3x3_mma.cu and gram_mma.cu (the fast path; the WMMA
// core in tile_mma.cuh stays as the readable reference, and NEURAL_STYLE_CUDA_GEMM picks one).
//
// One block of NS_MMA_THREADS = 256 threads (8 warps) computes a TILE_M x TILE_N = 128 x 128 tile of
// C = A B in fp32, stepping through K in slices of TILE_K = 32 with an NS_MMA_STAGES = 3-stage
// cp.async pipeline in dynamic shared memory (NS_MMA_SMEM_BYTES = 3 x 32 KiB):
//
//   stage s:  A slice  TILE_M x TILE_K fp32, k-contiguous rows (conv im2col, Gram backward's f), or
//                      TILE_K x TILE_M, m-contiguous rows     (the Gram's Fᵀ);
//             B slice  TILE_K x TILE_N fp32, n-contiguous rows (weights, dG + dGᵀ, f).
//
// The caller's loader only issues cp.async copies of raw fp32 (zero-filled outside the matrix,
// so the padding halo and the tile tails need no branches in the math); tf32 mma.sync reads the
// top 19 bits of each value, so nothing is converted on the way.
//
// Warp w owns the 64 x 32 sub-tile at rows 64 (w % 2), columns 32 (w / 2): 4 x 4 m16n8k8 tiles,
// 64 fp32 accumulators per thread (layout in mma_sync.cuh). A narrow variant, BN = 64
// (NS_MMA_BN_NARROW), serves GEMMs with N <= 64 (conv1_x, and input gradients with 64 or 3
// channels), which would waste half or more of a 128-wide tile: 72 KiB of shared memory, warps
// 4 x 2 of 32 x 32 (2 x 4 m16n8k8 tiles, 32 accumulators). Per k8 step a warp issues 4
// ldmatrix.x4 (A, k-contiguous) or 16 LDS.32 (A, m-contiguous), 8 LDS.32 (B: ldmatrix moves 16-bit
// elements, so it cannot form a tf32 fragment from an n-contiguous tile), and 16 mma.sync.
//
// Swizzles (16-byte chunks XORed within their row, so cp.async still writes whole chunks):
//   k-contiguous (row m of 32 floats = 8 chunks):  chunk c -> c ^ (m % 8). An ldmatrix phase reads
//     one chunk of 8 consecutive rows: 8 distinct chunks, all 32 banks.
//   n- or m-contiguous (row k of 128 floats = 32 chunks): chunk c -> c ^ 2 (k % 4). A fragment
//     load reads columns n..n+7 (n % 8 == 0: chunks 2q, 2q+1) of rows k..k+3: 8 distinct chunks
//     of one 128-byte line, all 32 banks.
// tests/kernel_emu/check.cpp replays every fragment read of a stage: tf32 has no conflict; bf16's
// LDS.64 A reads and LDS B reads are 2-way (rows m, m+1 resp. k, k+2 share a phase). Swizzles that
// clear bf16 too (A: c ^ (2 (m % 4) + (m / 4) % 2); B: c ^ 2 ((k ^ k/2) % 4)) pass the replay but
// cost the tf32 conv 8-180 bytes of spills at 128 registers; they need a per-precision swizzle.
#pragma once
#include "mma_sync.cuh"

#define NS_MMA_BM 128
#define NS_MMA_BN 128
#define NS_MMA_BN_NARROW 64
#define NS_MMA_BK 32
#define NS_MMA_STAGES 3
#define NS_MMA_THREADS 256
// Blocks per SM the kernels are built for (__launch_bounds__): 2 x 96 KiB of shared memory and
// 2 x 256 threads x 128 registers fill an H100/H200 SM (an A100 holds 1: 164 KiB of shared memory).
#define NS_MMA_MIN_BLOCKS 2
// NS_MMA_STAGES * (NS_MMA_BM * NS_MMA_BK + NS_MMA_BK * BN) * 4 bytes for BN = NS_MMA_BN and
// NS_MMA_BN_NARROW (src/cuda/launch.rs mirrors both).
#define NS_MMA_SMEM_BYTES 98304
#define NS_MMA_SMEM_BYTES_NARROW 73728

namespace ns {
namespace mma {

constexpr int TILE_M = NS_MMA_BM, TILE_K = NS_MMA_BK, STAGES = NS_MMA_STAGES, THREADS = NS_MMA_THREADS;
constexpr int A_FLOATS = TILE_M * TILE_K;

// The block tile's shape for a BN-wide N tile (128 or 64): warp grid, per-warp m16 tiles, stage size.
template <int BN_>
struct Shape {
    static constexpr int N_TILE = BN_;
    static constexpr int WARPS_N = N_TILE / 32, WARPS_M = 8 / WARPS_N;  // warp tile: (128 / WARPS_M) x 32
    static constexpr int MI = TILE_M / WARPS_M / 16;                    // m16 tiles per warp (n8 tiles: 4)
    static constexpr int B_FLOATS = TILE_K * N_TILE, STAGE_FLOATS = A_FLOATS + B_FLOATS;
    static constexpr int SMEM_BYTES = STAGES * STAGE_FLOATS * 4;
};
typedef Shape<NS_MMA_BN> Wide;
typedef Shape<NS_MMA_BN_NARROW> Narrow;
static_assert(Wide::SMEM_BYTES == NS_MMA_SMEM_BYTES, "NS_MMA_SMEM_BYTES");
static_assert(Narrow::SMEM_BYTES == NS_MMA_SMEM_BYTES_NARROW, "NS_MMA_SMEM_BYTES_NARROW");
static_assert(TILE_M == NS_MMA_BN, "the Gram's m-contiguous A slice reuses the 128-wide n-contiguous swizzle");

// Offset (in floats) of element (m, k) of a k-contiguous TILE_M x TILE_K slice.
__device__ __forceinline__ int swz_mk(int m, int k) { return m * TILE_K + ((((k >> 2) ^ m) & 7) << 2) + (k & 3); }
// Offset of element (k, n) of an n-contiguous (or m-contiguous) TILE_K x LD slice (LD = 64 or 128:
// XOR by at most 6 stays within a row's 16 or 32 chunks).
template <int LD>
__device__ __forceinline__ int swz_kn(int k, int n) { return k * LD + (((n >> 2) ^ ((k & 3) << 1)) << 2) + (n & 3); }

template <class S>
struct Acc {
    float v[S::MI][4][4];  // [m16 tile][n8 tile][d0..d3]
};

template <class S>
__device__ __forceinline__ void zero(Acc<S>& acc) {
    #pragma unroll
    for (int i = 0; i < S::MI; i++)
        #pragma unroll
        for (int j = 0; j < 4; j++)
            #pragma unroll
            for (int r = 0; r < 4; r++) acc.v[i][j][r] = 0.0f;
}

// The warp's sub-tile origin within the block tile.
template <class S>
__device__ __forceinline__ int warp_m() { return ((threadIdx.x / 32) % S::WARPS_M) * (16 * S::MI); }
template <class S>
__device__ __forceinline__ int warp_n() { return ((threadIdx.x / 32) / S::WARPS_M) * 32; }

// acc += A_slice B_slice for one stage (TILE_K = 4 k8 steps), tf32: each fragment register is
// rounded to tf32 as it is read (the tensor core alone would truncate: mma_sync.cuh).
template <class S, bool A_KCONTIG>
__device__ __forceinline__ void mma_stage(Acc<S>& acc, const float* As, const float* Bs) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int wm = warp_m<S>(), wn = warp_n<S>();
    #pragma unroll
    for (int kk = 0; kk < TILE_K; kk += 8) {
        unsigned a[S::MI][4], b[4][2];
        #pragma unroll
        for (int i = 0; i < S::MI; i++) {
            if (A_KCONTIG) {
                // Lanes 0-7: rows 0-7, k 0-3; 8-15: rows 8-15, k 0-3; 16-23: rows 0-7, k 4-7; 24-31: rows 8-15, k 4-7.
                const int r = wm + 16 * i + (lane % 8) + 8 * ((lane / 8) % 2), k = kk + 4 * (lane / 16);
                ldmatrix_x4(a[i], As + swz_mk(r, k));
                #pragma unroll
                for (int q = 0; q < 4; q++) a[i][q] = tf32_rna(a[i][q]);
            } else {
                const int m = wm + 16 * i + g;
                a[i][0] = tf32_rna(lds_u32(As + swz_kn<TILE_M>(kk + t, m)));
                a[i][1] = tf32_rna(lds_u32(As + swz_kn<TILE_M>(kk + t, m + 8)));
                a[i][2] = tf32_rna(lds_u32(As + swz_kn<TILE_M>(kk + t + 4, m)));
                a[i][3] = tf32_rna(lds_u32(As + swz_kn<TILE_M>(kk + t + 4, m + 8)));
            }
        }
        #pragma unroll
        for (int j = 0; j < 4; j++) {
            const int n = wn + 8 * j + g;
            b[j][0] = tf32_rna(lds_u32(Bs + swz_kn<S::N_TILE>(kk + t, n)));
            b[j][1] = tf32_rna(lds_u32(Bs + swz_kn<S::N_TILE>(kk + t + 4, n)));
        }
        #pragma unroll
        for (int i = 0; i < S::MI; i++)
            #pragma unroll
            for (int j = 0; j < 4; j++) mma_tf32_16x8x8(acc.v[i][j], a[i], b[j]);
    }
}

// The same for bf16 (m16n8k16, 2 k16 steps): the stages hold fp32 as for tf32 (the loaders and
// the pipeline are shared), and each fragment register is packed from two fp32 with
// cvt.rn.bf16x2 on its way to the mma. A k-contiguous: one LDS.64 per register (k, k+1
// adjacent); B and the Gram's Fᵀ: two LDS.32 (k, k+1 are rows apart). ldmatrix cannot serve
// here (it would need bf16 in shared memory, i.e. converting in the loader or bf16 activations).
// The A and B reads have 2-way bank conflicts (see the swizzles above).
template <class S, bool A_KCONTIG>
__device__ __forceinline__ void mma_stage_bf16(Acc<S>& acc, const float* As, const float* Bs) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int wm = warp_m<S>(), wn = warp_n<S>();
    #pragma unroll
    for (int kk = 0; kk < TILE_K; kk += 16) {
        unsigned a[S::MI][4], b[4][2];
        const int k0 = kk + 2 * t, k1 = k0 + 8;
        #pragma unroll
        for (int i = 0; i < S::MI; i++) {
            const int m = wm + 16 * i + g;
            if (A_KCONTIG) {
                const float2 v0 = lds_f32x2(As + swz_mk(m, k0)), v1 = lds_f32x2(As + swz_mk(m + 8, k0));
                const float2 v2 = lds_f32x2(As + swz_mk(m, k1)), v3 = lds_f32x2(As + swz_mk(m + 8, k1));
                a[i][0] = pack_bf16x2(v0.x, v0.y);
                a[i][1] = pack_bf16x2(v1.x, v1.y);
                a[i][2] = pack_bf16x2(v2.x, v2.y);
                a[i][3] = pack_bf16x2(v3.x, v3.y);
            } else {
                auto at = [&](int k, int mm) { return __uint_as_float(lds_u32(As + swz_kn<TILE_M>(k, mm))); };
                a[i][0] = pack_bf16x2(at(k0, m), at(k0 + 1, m));
                a[i][1] = pack_bf16x2(at(k0, m + 8), at(k0 + 1, m + 8));
                a[i][2] = pack_bf16x2(at(k1, m), at(k1 + 1, m));
                a[i][3] = pack_bf16x2(at(k1, m + 8), at(k1 + 1, m + 8));
            }
        }
        #pragma unroll
        for (int j = 0; j < 4; j++) {
            const int n = wn + 8 * j + g;
            auto at = [&](int k) { return __uint_as_float(lds_u32(Bs + swz_kn<S::N_TILE>(k, n))); };
            b[j][0] = pack_bf16x2(at(k0), at(k0 + 1));
            b[j][1] = pack_bf16x2(at(k1), at(k1 + 1));
        }
        #pragma unroll
        for (int i = 0; i < S::MI; i++)
            #pragma unroll
            for (int j = 0; j < 4; j++) mma_bf16_16x8x16(acc.v[i][j], a[i], b[j]);
    }
}

// Operand precision of the main loop (the Rust enum `Precision`'s tensor-core members).
struct Tf32 { static const bool BF16 = false; };
struct Bf16 { static const bool BF16 = true; };

// The pipelined main loop over k_tiles slices. load(As, Bs, kt) issues (cp.async only) the copies
// of slice kt into one stage; every thread calls it, and every thread must reach this function.
//
// Invariant: one commit group per slice (empty past the end), so at the top of iteration kt
// kt + STAGES - 1 groups exist and wait<STAGES - 2> leaves at most STAGES - 2 of them pending:
// slice kt has landed (for this thread; the __syncthreads makes it so for the block). The same
// barrier tells every warp that the stage slice kt - 1 occupied, which slice kt + STAGES - 1
// refills, has been read.
template <class P, class S, bool A_KCONTIG, class Load>
__device__ __forceinline__ void mainloop(Acc<S>& acc, float* smem, int k_tiles, Load load) {
    #pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < k_tiles) load(smem + s * S::STAGE_FLOATS, smem + s * S::STAGE_FLOATS + A_FLOATS, s);
        cp_async_commit();
    }
    for (int kt = 0; kt < k_tiles; kt++) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        const int next = kt + STAGES - 1;
        if (next < k_tiles) {
            float* st = smem + (next % STAGES) * S::STAGE_FLOATS;
            load(st, st + A_FLOATS, next);
        }
        cp_async_commit();
        const float* st = smem + (kt % STAGES) * S::STAGE_FLOATS;
        if (P::BF16) mma_stage_bf16<S, A_KCONTIG>(acc, st, st + A_FLOATS);
        else mma_stage<S, A_KCONTIG>(acc, st, st + A_FLOATS);
    }
    cp_async_wait<0>();  // only empty groups remain; keeps the emulator's bookkeeping exact
}

// B-type slice (and the Gram's m-contiguous A, LD = 128): rows k0 .. k0 + TILE_K of src (row
// stride ld), columns n0 .. n0 + LD, zero outside k < k_end, n < n_end.
//   VEC4 (n_end, ld and n0 multiples of 4, src 16-byte aligned): 16-byte chunks, thread t copies
//     chunk t % (LD/4) of rows t / (LD/4) + (1024/LD) i (a warp: whole rows, coalesced);
//   else: 4-byte copies, thread t column t % LD of rows t / LD + (256/LD) i.
template <int LD, bool VEC4>
__device__ __forceinline__ void load_kn(float* S, const float* __restrict__ src, int ld, int k0, int k_end, int n0,
                                        int n_end) {
    const int t = threadIdx.x;
    if (VEC4) {
        constexpr int CHUNKS = LD / 4, ROW_STEP = THREADS / CHUNKS;
        const int c = 4 * (t % CHUNKS), n = n0 + c;
        #pragma unroll
        for (int i = 0; i < TILE_K / ROW_STEP; i++) {
            const int r = t / CHUNKS + ROW_STEP * i, k = k0 + r;
            const bool ok = k < k_end && n < n_end;
            cp_async_16(S + swz_kn<LD>(r, c), ok ? src + (size_t)k * ld + n : src, ok ? 16 : 0);
        }
    } else {
        constexpr int ROW_STEP = THREADS / LD;
        const int c = t % LD, n = n0 + c;
        #pragma unroll 4
        for (int i = 0; i < TILE_K / ROW_STEP; i++) {
            const int r = t / LD + ROW_STEP * i, k = k0 + r;
            const bool ok = k < k_end && n < n_end;
            cp_async_4(S + swz_kn<LD>(r, c), ok ? src + (size_t)k * ld + n : src, ok ? 4 : 0);
        }
    }
}

// k-contiguous A slice of a plain row-major matrix: rows m0 .. m0 + 128 (m < m_end) of src (row
// stride ld), columns k0 .. k0 + TILE_K (k < k_end). VEC4: thread t chunk t % 8 of rows t / 8 + 32 i;
// else thread t column t % 32 of rows t / 32 + 8 i.
template <bool VEC4>
__device__ __forceinline__ void load_mk(float* S, const float* __restrict__ src, int ld, int m0, int m_end, int k0,
                                        int k_end) {
    const int t = threadIdx.x;
    if (VEC4) {
        const int c = 4 * (t % 8), k = k0 + c;
        #pragma unroll
        for (int i = 0; i < 4; i++) {
            const int r = t / 8 + 32 * i, m = m0 + r;
            const bool ok = m < m_end && k < k_end;
            cp_async_16(S + swz_mk(r, c), ok ? src + (size_t)m * ld + k : src, ok ? 16 : 0);
        }
    } else {
        const int c = t % 32, k = k0 + c;
        #pragma unroll 4
        for (int i = 0; i < 16; i++) {
            const int r = t / 32 + 8 * i, m = m0 + r;
            const bool ok = m < m_end && k < k_end;
            cp_async_4(S + swz_mk(r, c), ok ? src + (size_t)m * ld + k : src, ok ? 4 : 0);
        }
    }
}

// Hands each accumulator pair to f(m, n, v0, v1): rows m = m0 + (tile row), columns n, n + 1
// (n even) of the block tile's origin (m0, n0). Bounds are the caller's.
template <class S, class F>
__device__ __forceinline__ void for_each_pair(const Acc<S>& acc, int m0, int n0, F f) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int wm = warp_m<S>(), wn = warp_n<S>();
    #pragma unroll
    for (int i = 0; i < S::MI; i++)
        #pragma unroll
        for (int h = 0; h < 2; h++)
            #pragma unroll
            for (int j = 0; j < 4; j++)
                f(m0 + wm + 16 * i + g + 8 * h, n0 + wn + 8 * j + 2 * t, acc.v[i][j][2 * h], acc.v[i][j][2 * h + 1]);
}

}  // namespace mma
}  // namespace ns
