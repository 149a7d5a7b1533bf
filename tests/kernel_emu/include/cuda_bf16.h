// Emulated bf16 (round to nearest even), for tests/kernel_emu only.
#pragma once
#include <cstdint>
#include <cstring>
struct __nv_bfloat16 { uint16_t bits; };
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u += 0x7FFF + ((u >> 16) & 1);
    return __nv_bfloat16{(uint16_t)(u >> 16)};
}
inline float emu_to_float(__nv_bfloat16 b) {
    uint32_t u = (uint32_t)b.bits << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline float emu_to_float(float f) { return f; }
