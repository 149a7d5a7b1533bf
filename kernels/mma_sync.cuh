// The warp-level instructions of the mma.sync GEMM main loop (tile_mma_sync.cuh), each behind a
// small __device__ wrapper: inline PTX here, and a warp-collective CPU emulation of the same
// per-lane semantics in tests/kernel_emu/include/mma_sync_emu.h (picked when the emulator's
// cuda_emu.h has defined NS_KERNEL_EMU). Kernels use only these wrappers, never raw asm, so
// every kernel that runs on a GPU has first run, lane for lane, under the emulator.
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k8" / "mma.m16n8k16"), with
// g = lane / 4 (groupID) and t = lane % 4 (threadID_in_group):
//   tf32 m16n8k8:  A (16 x 8, row)  a0 = A[g][t]   a1 = A[g+8][t]   a2 = A[g][t+4]   a3 = A[g+8][t+4]
//                  B (8 x 8, col)   b0 = B[t][g]   b1 = B[t+4][g]
//   bf16 m16n8k16: A (16 x 16)      a0 = A[g][2t..2t+1]   a1 = A[g+8][2t..]   a2 = A[g][2t+8..]   a3 = A[g+8][2t+8..]
//                  B (16 x 8)       b0 = B[2t..2t+1][g]   b1 = B[2t+8..2t+9][g]   (low half = lower k)
//   f32 C/D (16 x 8, both):         d0 = D[g][2t]  d1 = D[g][2t+1]  d2 = D[g+8][2t]  d3 = D[g+8][2t+1]
// tf32 operands are fp32 bit patterns of which the tensor core reads only the top 19 bits (sign,
// exponent, 10 mantissa bits), i.e. it truncates. Truncation is biased toward zero and the bias
// adds up over K (a style loss 5e-3 off, 50x the rounded WMMA path's error), so the main loop
// rounds every fragment register with tf32_rna (cvt.rna.tf32.f32, as WMMA's __float_to_tf32)
// before the mma; the loaders copy fp32 (cp.async cannot convert).
//
// ldmatrix.m8n8.x4.b16: lanes 8j..8j+7 give the addresses of the 8 rows (16 bytes each, 16-byte
// aligned) of matrix j; lane L receives in r[j] the 32-bit word L % 4 of row L / 4 of matrix j.
// With 32-bit elements that is element (L / 4, L % 4) of an 8 x 4 fp32 matrix: exactly the tf32
// A fragment when the four matrices are (rows 0-7, k 0-3), (8-15, k 0-3), (0-7, k 4-7),
// (8-15, k 4-7) of a k-contiguous A. .trans (b16 only): r[j] holds elements (2(L%4), L/4) and
// (2(L%4)+1, L/4) of matrix j: the bf16 B fragment from an n-contiguous B.
//
// cp.async: 16-byte (or 4-byte) global -> shared copies that bypass the registers; bytes past
// src_bytes are written as zeros (the zero-fill that turns the padding halo and the tile tails
// into plain copies: src_bytes = 0 reads nothing, but the pointer must still be a valid one).
// cp_async_commit() closes a group; cp_async_wait<N>() waits until at most N groups are pending.
#pragma once

#ifdef NS_KERNEL_EMU
#include <mma_sync_emu.h>
#else

namespace ns {

// The 32-bit shared-window address of a pointer into shared memory, for the asm operands.
__device__ __forceinline__ unsigned smem_u32(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// An fp32's bits rounded to tf32: round to nearest, ties away from zero (Inf and NaN kept).
__device__ __forceinline__ unsigned tf32_rna(unsigned x) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(__uint_as_float(x)));
    return r;
}

// d (16 x 8 f32) += a (16 x 8 tf32) b (8 x 8 tf32).
__device__ __forceinline__ void mma_tf32_16x8x8(float d[4], const unsigned a[4], const unsigned b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// d (16 x 8 f32) += a (16 x 16 bf16) b (16 x 8 bf16); each register holds two bf16.
__device__ __forceinline__ void mma_bf16_16x8x16(float d[4], const unsigned a[4], const unsigned b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Four 8 x 8 b16 matrices; this lane gives the address of row lane % 8 of matrix lane / 8.
__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned r[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(row)));
}

// One 32-bit shared load (LDS), for the fragments ldmatrix cannot form (tf32 from an
// n-contiguous tile): explicit, so it never becomes a generic LD.
__device__ __forceinline__ unsigned lds_u32(const void* p) {
    unsigned v;
    asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(smem_u32(p)));
    return v;
}

// Two adjacent fp32 from shared memory (8-byte aligned): one LDS.64.
__device__ __forceinline__ float2 lds_f32x2(const void* p) {
    float2 v;
    asm volatile("ld.shared.v2.f32 {%0, %1}, [%2];\n" : "=f"(v.x), "=f"(v.y) : "r"(smem_u32(p)));
    return v;
}

// Two fp32 rounded to bf16 (nearest even) in one register: lo in bits 0-15, hi in 16-31, the
// order of a bf16 mma operand pair (lower k in the low half).
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// 16 bytes global -> shared (both 16-byte aligned), zeros past src_bytes (0..16). L2 only (.cg).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(src_bytes)
                 : "memory");
}
// 4 bytes global -> shared, zeros when src_bytes = 0: the scalar path (channel counts % 4 != 0).
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

}  // namespace ns

// The kernel's dynamic shared memory (extern __shared__; the launch sets its size).
#define NS_DYNAMIC_SMEM(T, name) extern __shared__ __align__(128) T name[]

#endif
