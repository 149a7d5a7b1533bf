// CPU emulation of kernels/mma_sync.cuh, for tests/kernel_emu only: the same wrappers, with the
// per-lane semantics of the PTX ISA (see the layout table at the top of mma_sync.cuh).
//
// Warp-collective instructions (mma.sync, ldmatrix) are emulated as on the hardware: every lane
// deposits its own registers (or row address) in its warp's exchange slot, the warp meets at a
// barrier, and every lane computes its own output registers from the documented layouts by
// reading the other lanes' deposits. Slots are double-buffered, so one barrier per instruction
// suffices (a lane can refill a slot only after the next barrier, which every lane reaches after
// it has finished reading). A lane that calls a different instruction than its warp aborts.
//
// tf32: the tensor core uses the top 19 bits of each fp32 operand (truncation of the low 13
// mantissa bits); products are exact in double and the sum is rounded to fp32 once, which is at
// least as accurate as the hardware's fp32 accumulation. bf16: exact.
// cp.async: queued per thread and applied when cp_async_wait retires its group (cuda_emu.h).
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include "cuda_bf16.h"

inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

#define NS_DYNAMIC_SMEM(T, name) T* name = reinterpret_cast<T*>(emu_dynamic_smem_buf)

namespace ns {

enum EmuWarpOp { EMU_MMA_TF32 = 1, EMU_MMA_BF16, EMU_LDMATRIX, EMU_LDMATRIX_TRANS };

struct EmuWarpSlot {
    int op[32];
    unsigned a[32][4], b[32][2];
    const unsigned char* addr[32];
};
inline thread_local EmuWarpSlot emu_warp_slots[32][2];  // [warp][phase % 2], per block in flight

[[noreturn]] inline void emu_fail(const char* what, const void* p) {
    char addr[40];
    std::snprintf(addr, sizeof addr, " (address %p)", p);
    emu_kernel_fault(emu_where() + ": " + what + addr);
}

// Whether [p, p + bytes) lies in the block's dynamic shared memory (where the mma kernels keep
// every operand tile), and is aligned to `align`.
inline void emu_check_smem(const void* p, size_t bytes, size_t align, const char* what) {
    const unsigned char* c = static_cast<const unsigned char*>(p);
    if (c < emu_dynamic_smem_buf || c + bytes > emu_dynamic_smem_buf + emu_dynamic_smem_bytes)
        emu_fail(what, p);  // outside the shared memory the launch gave the block
    if ((uintptr_t)p % align != 0) emu_fail(what, p);
}

// Deposits this lane's operands, meets the warp, and returns the slot every lane reads.
inline EmuWarpSlot& emu_exchange(int op, const unsigned* a, int na, const unsigned* b, int nb, const void* addr) {
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    EmuWarpSlot& s = emu_warp_slots[warp][emu_lane->warp_phase++ % 2];
    s.op[lane] = op;
    for (int i = 0; i < na; i++) s.a[lane][i] = a[i];
    for (int i = 0; i < nb; i++) s.b[lane][i] = b[i];
    s.addr[lane] = static_cast<const unsigned char*>(addr);
    emu_warp_sync();
    for (int l = 0; l < 32; l++)
        if (s.op[l] != op) emu_fail("lanes of one warp called different warp-collective instructions", nullptr);
    return s;
}

// cvt.rna.tf32.f32: round to nearest, ties away from zero (adding half an ulp of tf32 to the
// magnitude carries into the kept bits); Inf and NaN unchanged.
inline unsigned tf32_rna(unsigned x) {
    if ((x & 0x7F800000u) == 0x7F800000u) return x;
    return (x + 0x1000u) & 0xFFFFE000u;
}

inline double emu_tf32(unsigned bits) { return (double)__uint_as_float(bits & 0xFFFFE000u); }
inline double emu_bf16(unsigned bits, int half) { return (double)__uint_as_float(half ? (bits & 0xFFFF0000u) : (bits << 16)); }

inline void mma_tf32_16x8x8(float d[4], const unsigned a[4], const unsigned b[2]) {
    EmuWarpSlot& s = emu_exchange(EMU_MMA_TF32, a, 4, b, 2, nullptr);
    const int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    auto A = [&](int r, int k) { return emu_tf32(s.a[(r % 8) * 4 + k % 4][(r >= 8) + 2 * (k >= 4)]); };
    auto B = [&](int k, int n) { return emu_tf32(s.b[n * 4 + k % 4][k >= 4]); };
    for (int i = 0; i < 4; i++) {
        const int r = g + 8 * (i / 2), n = 2 * t + i % 2;
        double acc = 0;
        for (int k = 0; k < 8; k++) acc += A(r, k) * B(k, n);
        d[i] = (float)((double)d[i] + acc);
    }
}

inline void mma_bf16_16x8x16(float d[4], const unsigned a[4], const unsigned b[2]) {
    EmuWarpSlot& s = emu_exchange(EMU_MMA_BF16, a, 4, b, 2, nullptr);
    const int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    auto A = [&](int r, int k) { return emu_bf16(s.a[(r % 8) * 4 + (k % 8) / 2][(r >= 8) + 2 * (k >= 8)], k % 2); };
    auto B = [&](int k, int n) { return emu_bf16(s.b[n * 4 + (k % 8) / 2][k >= 8], k % 2); };
    for (int i = 0; i < 4; i++) {
        const int r = g + 8 * (i / 2), n = 2 * t + i % 2;
        double acc = 0;
        for (int k = 0; k < 16; k++) acc += A(r, k) * B(k, n);
        d[i] = (float)((double)d[i] + acc);
    }
}

inline void ldmatrix_x4_impl(unsigned r[4], const void* row, bool trans) {
    emu_check_smem(row, 16, 16, "ldmatrix row address not 16-byte aligned or outside shared memory");
    EmuWarpSlot& s = emu_exchange(trans ? EMU_LDMATRIX_TRANS : EMU_LDMATRIX, nullptr, 0, nullptr, 0, row);
    const int lane = threadIdx.x % 32;
    for (int j = 0; j < 4; j++) {
        if (!trans) {
            std::memcpy(&r[j], s.addr[8 * j + lane / 4] + 4 * (lane % 4), 4);
        } else {
            uint16_t lo, hi;
            std::memcpy(&lo, s.addr[8 * j + 2 * (lane % 4)] + 2 * (lane / 4), 2);
            std::memcpy(&hi, s.addr[8 * j + 2 * (lane % 4) + 1] + 2 * (lane / 4), 2);
            r[j] = (unsigned)lo | ((unsigned)hi << 16);
        }
    }
}
inline void ldmatrix_x4(unsigned r[4], const void* row) { ldmatrix_x4_impl(r, row, false); }
inline void ldmatrix_x4_trans(unsigned r[4], const void* row) { ldmatrix_x4_impl(r, row, true); }

inline unsigned lds_u32(const void* p) {
    emu_check_smem(p, 4, 4, "ld.shared.b32 not 4-byte aligned or outside shared memory");
    unsigned v;
    std::memcpy(&v, p, 4);
    return v;
}

inline float2 lds_f32x2(const void* p) {
    emu_check_smem(p, 8, 8, "ld.shared.v2.f32 not 8-byte aligned or outside shared memory");
    float2 v;
    std::memcpy(&v, p, 8);
    return v;
}

inline unsigned pack_bf16x2(float lo, float hi) {
    return (unsigned)__float2bfloat16_rn(lo).bits | ((unsigned)__float2bfloat16_rn(hi).bits << 16);
}

inline void emu_cp_async_issue(void* smem, const void* gmem, int bytes, int src_bytes) {
    emu_check_smem(smem, (size_t)bytes, (size_t)bytes, "cp.async destination misaligned or outside shared memory");
    if (src_bytes < 0 || src_bytes > bytes) emu_fail("cp.async src-size out of range", gmem);
    if (gmem == nullptr || (src_bytes > 0 && (uintptr_t)gmem % (uintptr_t)bytes != 0))
        emu_fail("cp.async source null or misaligned", gmem);
    emu_cp_async.open.push_back({smem, gmem, bytes, src_bytes});
}
inline void cp_async_16(void* smem, const void* gmem, int src_bytes) { emu_cp_async_issue(smem, gmem, 16, src_bytes); }
inline void cp_async_4(void* smem, const void* gmem, int src_bytes) { emu_cp_async_issue(smem, gmem, 4, src_bytes); }
inline void cp_async_commit() {
    emu_cp_async.groups.push_back(std::move(emu_cp_async.open));
    emu_cp_async.open.clear();
}
template <int N>
inline void cp_async_wait() {
    while (emu_cp_async.groups.size() > (size_t)N) {
        emu_cp_async_apply(emu_cp_async.groups.front());
        emu_cp_async.groups.pop_front();
    }
}

}  // namespace ns
