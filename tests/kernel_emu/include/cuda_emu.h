// A CPU emulation of the slice of CUDA that kernels/*.cu use, so that the kernels' indexing,
// tiling, barriers and reductions can be executed and checked on a machine without a GPU.
// One std::thread per CUDA thread of a block, blocks one after another, __syncthreads() a
// std::barrier, __shared__ = static. WMMA (mma.h here) keeps a whole fragment per thread.
// Not a performance model, and not a substitute for the parity tests on a real GPU.
#pragma once
#include <math.h>
#include <algorithm>
#include <barrier>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

struct emu_dim3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local emu_dim3 threadIdx, blockIdx;
inline emu_dim3 gridDim, blockDim;
inline std::barrier<>* emu_barrier = nullptr;

inline void __syncthreads() { emu_barrier->arrive_and_wait(); }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct alignas(16) float4 { float x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
using std::max;
using std::min;

// Runs kernel() on every block of grid, block.x threads each (1-D blocks only).
template <class F>
void emu_launch(emu_dim3 grid, unsigned threads, F kernel) {
    gridDim = grid;
    blockDim = {threads, 1, 1};
    std::barrier<> bar(threads);
    emu_barrier = &bar;
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < threads; t++) {
        ts.emplace_back([&, t] {
            threadIdx = {t, 0, 0};
            for (unsigned z = 0; z < grid.z; z++)
                for (unsigned y = 0; y < grid.y; y++)
                    for (unsigned x = 0; x < grid.x; x++) {
                        blockIdx = {x, y, z};
                        kernel();
                        bar.arrive_and_wait();  // the block ends: its shared memory may be reused
                    }
        });
    }
    for (auto& th : ts) th.join();
}
