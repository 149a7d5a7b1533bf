// The block-level GEMM core shared by conv3x3.cu and gram.cu.
//
// One thread block (NS_TILE_THREADS = 128 threads, 4 warps) computes a BM x BN = 64 x 64 tile of
// C = A B, stepping through K in slices of BK = 32.  The caller's loader fills, for each slice,
//
//     a[k][m]  (BK x BM, "k-major": A's slice stored transposed)  and  b[k][n]  (BK x BN),
//
// already converted to the precision's element type (zeros outside the matrix), calls mma(),
// and at the end store() writes the fp32 tile to c[m][n] (BM x BN) for the caller's epilogue.
// Storing both operands k-major lets the conv (A = im2col rows) and the Gram (A = Fᵀ) use one
// core: WMMA reads a[][] as a col_major matrix_a, the fp32 path reads 8 contiguous m per k.
//
// Precisions (the Rust enum `Precision`):
//   Fp32  plain FFMA, 4 x 8 outputs per thread;
//   Tf32  WMMA m16n16k8, tf32 inputs (rounded once when stored to shared memory), fp32 accumulate;
//   Bf16  WMMA m16n16k16, bf16 inputs, fp32 accumulate.
// Each warp owns a 32 x 32 sub-tile = 2 x 2 WMMA fragments.
#pragma once
#include <mma.h>
#include <cuda_bf16.h>

#define BM 64
#define BN 64
#define BK 32
#define NS_TILE_THREADS 128

namespace ns {
using namespace nvcuda;

struct Fp32 {
    typedef float T;
    static const int PAD = 4;  // row stride 68 floats: keeps 16-byte vector loads aligned
    static __device__ __forceinline__ T cvt(float v) { return v; }
};
struct Tf32 {
    typedef float T;
    static const int PAD = 4;  // ld = 68, a multiple of 4 floats as WMMA needs; rows stay 32B aligned per 8
    static const int WK = 8;
    typedef wmma::precision::tf32 FragT;
    static __device__ __forceinline__ T cvt(float v) { return wmma::__float_to_tf32(v); }
};
struct Bf16 {
    typedef __nv_bfloat16 T;
    static const int PAD = 8;  // ld = 72, a multiple of 8 bf16 as WMMA needs
    static const int WK = 16;
    typedef __nv_bfloat16 FragT;
    static __device__ __forceinline__ T cvt(float v) { return __float2bfloat16_rn(v); }
};

// Shared memory of one tile: the operand slices and the fp32 output tile alias each other.
template <class P>
struct Smem {
    static const int LDA = BM + P::PAD;
    static const int LDB = BN + P::PAD;
    static const int LDC = BN + 4;
    union {
        struct {
            typename P::T a[BK][LDA];
            typename P::T b[BK][LDB];
        } ab;
        float c[BM][LDC];
    };
};

// Tensor-core accumulator: warp w owns rows 32*(w/2).., columns 32*(w%2)..
template <class P>
struct AccWmma {
    wmma::fragment<wmma::accumulator, 16, 16, P::WK, float> acc[2][2];

    __device__ __forceinline__ void zero() {
        #pragma unroll
        for (int i = 0; i < 2; i++)
            #pragma unroll
            for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[i][j], 0.0f);
    }

    __device__ __forceinline__ void mma(const Smem<P>& s) {
        const int warp = threadIdx.x / 32;
        const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
        #pragma unroll
        for (int kk = 0; kk < BK; kk += P::WK) {
            wmma::fragment<wmma::matrix_a, 16, 16, P::WK, typename P::FragT, wmma::col_major> fa[2];
            wmma::fragment<wmma::matrix_b, 16, 16, P::WK, typename P::FragT, wmma::row_major> fb[2];
            #pragma unroll
            for (int i = 0; i < 2; i++) wmma::load_matrix_sync(fa[i], &s.ab.a[kk][wm + 16 * i], Smem<P>::LDA);
            #pragma unroll
            for (int j = 0; j < 2; j++) wmma::load_matrix_sync(fb[j], &s.ab.b[kk][wn + 16 * j], Smem<P>::LDB);
            #pragma unroll
            for (int i = 0; i < 2; i++)
                #pragma unroll
                for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
        }
    }

    // Call after the last mma() and a __syncthreads() (c aliases a and b).
    __device__ __forceinline__ void store(Smem<P>& s) {
        const int warp = threadIdx.x / 32;
        const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
        #pragma unroll
        for (int i = 0; i < 2; i++)
            #pragma unroll
            for (int j = 0; j < 2; j++)
                wmma::store_matrix_sync(&s.c[wm + 16 * i][wn + 16 * j], acc[i][j], Smem<P>::LDC, wmma::mem_row_major);
    }
};

// Plain fp32 accumulator: thread t owns rows 8*(t/16)..+8 and columns 4*(t%16)..+4.
struct AccFp32 {
    float acc[8][4];

    __device__ __forceinline__ void zero() {
        #pragma unroll
        for (int i = 0; i < 8; i++)
            #pragma unroll
            for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    }

    __device__ __forceinline__ void mma(const Smem<Fp32>& s) {
        const int tm = (threadIdx.x / 16) * 8, tn = (threadIdx.x % 16) * 4;
        #pragma unroll 8
        for (int k = 0; k < BK; k++) {
            const float4 a0 = *reinterpret_cast<const float4*>(&s.ab.a[k][tm]);
            const float4 a1 = *reinterpret_cast<const float4*>(&s.ab.a[k][tm + 4]);
            const float4 b = *reinterpret_cast<const float4*>(&s.ab.b[k][tn]);
            const float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
            const float bv[4] = {b.x, b.y, b.z, b.w};
            #pragma unroll
            for (int i = 0; i < 8; i++)
                #pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
    }

    __device__ __forceinline__ void store(Smem<Fp32>& s) {
        const int tm = (threadIdx.x / 16) * 8, tn = (threadIdx.x % 16) * 4;
        #pragma unroll
        for (int i = 0; i < 8; i++)
            *reinterpret_cast<float4*>(&s.c[tm + i][tn]) = make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
    }
};

// Loader helpers: four consecutive k of one row m (a float4 of x or f) into the k-major a[][],
// and four consecutive n of one k row into b[][] (or into a[][] for the Gram's Fᵀ tile).
template <class P>
__device__ __forceinline__ void store4_kmajor(Smem<P>& s, int k, int m, float4 v) {
    s.ab.a[k + 0][m] = P::cvt(v.x);
    s.ab.a[k + 1][m] = P::cvt(v.y);
    s.ab.a[k + 2][m] = P::cvt(v.z);
    s.ab.a[k + 3][m] = P::cvt(v.w);
}
template <class P, class T>
__device__ __forceinline__ void store4_row(T* row, float4 v) {
    row[0] = P::cvt(v.x);
    row[1] = P::cvt(v.y);
    row[2] = P::cvt(v.z);
    row[3] = P::cvt(v.w);
}

// The B slice b[k][n] (BK x BN) of a row-major (K, N) matrix src, from rows k0.. and columns
// n0.., zero outside it. VEC4: 16 threads per row load float4s (N % 4 == 0, aligned); else 64
// threads along n, both coalesced. Shared by the conv (weights) and the Gram backward (dG+dGᵀ);
// called inside each caller's own vec4 branch, so the A and B loads stay in one basic block.
template <class P, bool VEC4>
__device__ __forceinline__ void load_b_tile(Smem<P>& s, const float* __restrict__ src, int K, int N, int k0, int n0,
                                            int t) {
    if (VEC4) {
        const int b4_n = 4 * (t % 16), b4_row = t / 16;
        #pragma unroll 2
        for (int i = 0; i < BK / 8; i++) {
            const int kr = b4_row + 8 * i, k = k0 + kr, n = n0 + b4_n;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (k < K && n < N) v = *reinterpret_cast<const float4*>(src + (size_t)k * N + n);
            store4_row<P>(&s.ab.b[kr][b4_n], v);
        }
    } else {
        const int b_n = t % BN, b_row = t / BN;
        #pragma unroll 4
        for (int i = 0; i < BK / 2; i++) {
            const int kr = b_row + 2 * i, k = k0 + kr, n = n0 + b_n;
            const float v = (k < K && n < N) ? src[(size_t)k * N + n] : 0.0f;
            s.ab.b[kr][b_n] = P::cvt(v);
        }
    }
}

template <class P> struct AccFor { typedef AccWmma<P> type; };
template <> struct AccFor<Fp32> { typedef AccFp32 type; };

}  // namespace ns
