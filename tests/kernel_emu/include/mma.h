// Emulated nvcuda::wmma for tests/kernel_emu: every thread of a warp holds a whole fragment, and
// lane 0 alone loads, multiplies and stores it (the other lanes' fragments are never read, so
// they skip the work: 32x less of it). Every lane checks the pointers. Checks WMMA's pointer (32-byte) and
// leading-dimension (16-byte multiple) rules, which a real GPU would punish silently.
#pragma once
#include <cassert>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <type_traits>
#include "cuda_bf16.h"

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision { struct tf32 {}; }

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
    static constexpr int R = std::is_same<Use, matrix_b>::value ? K : M;
    static constexpr int C = std::is_same<Use, matrix_a>::value ? K : N;
    float v[R * C];
};

inline void emu_check(const void* p, unsigned ld, size_t elem) {
    if (((uintptr_t)p) % 32 != 0 || (ld * elem) % 16 != 0) {
        char buf[160];
        std::snprintf(buf, sizeof buf, ": WMMA rule broken: pointer %p (must be 32-byte aligned), ld %u x %zu bytes (must be a multiple of 16)", p, ld, elem);
        emu_kernel_fault(emu_where() + buf);
    }
}

// tf32: 10 explicit mantissa bits, round to nearest, ties away from zero (cvt.rna.tf32.f32).
inline float __float_to_tf32(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u += 0x1000;
    u &= 0xFFFFE000u;
    float r;
    std::memcpy(&r, &u, 4);
    return r;
}

template <class Use, int M, int N, int K, class T, class L, class E>
void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const E* p, unsigned ld) {
    emu_check(p, ld, sizeof(E));
    if (threadIdx.x % 32 != 0) return;
    using F = fragment<Use, M, N, K, T, L>;
    for (int r = 0; r < F::R; r++)
        for (int c = 0; c < F::C; c++) {
            const size_t idx = std::is_same<L, row_major>::value ? (size_t)r * ld + c : (size_t)r + (size_t)c * ld;
            f.v[r * F::C + c] = emu_to_float(p[idx]);
        }
}

template <int M, int N, int K>
void fill_fragment(fragment<accumulator, M, N, K, float>& f, float x) {
    if (threadIdx.x % 32 != 0) return;
    for (auto& e : f.v) e = x;
}

template <int M, int N, int K, class TA, class LA, class TB, class LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
              const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
    if (threadIdx.x % 32 != 0) return;
    float out[M * N];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float acc = c.v[i * N + j];
            for (int k = 0; k < K; k++) acc += a.v[i * K + k] * b.v[k * N + j];
            out[i * N + j] = acc;
        }
    for (int i = 0; i < M * N; i++) d.v[i] = out[i];
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ld, layout_t layout) {
    emu_check(p, ld, sizeof(float));
    if (threadIdx.x % 32 != 0) return;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) p[layout == mem_row_major ? (size_t)i * ld + j : (size_t)i + (size_t)j * ld] = f.v[i * N + j];
}
}  // namespace wmma
}  // namespace nvcuda
