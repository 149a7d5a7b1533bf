// A CPU emulation of the slice of CUDA that kernels/*.cu use, so that the kernels' indexing,
// tiling, barriers and reductions can be executed and checked on a machine without a GPU.
// One std::thread per CUDA thread of a block, blocks one after another, __syncthreads() a
// std::barrier, __shared__ = static. WMMA (mma.h here) keeps a whole fragment per thread.
// The warp-level instructions of kernels/mma_sync.cuh (mma.sync, ldmatrix, cp.async) are
// emulated in mma_sync_emu.h on top of the per-warp barriers, dynamic shared memory and the
// per-thread cp.async queues defined here.
// Not a performance model, and not a substitute for the parity tests on a real GPU.
#pragma once
// Kernel headers test this to pick the emulated warp primitives instead of inline PTX.
#define NS_KERNEL_EMU 1
#include <math.h>
#include <algorithm>
#include <barrier>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

struct emu_dim3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local emu_dim3 threadIdx, blockIdx;
inline emu_dim3 gridDim, blockDim;
inline std::barrier<>* emu_barrier = nullptr;

inline void __syncthreads() { emu_barrier->arrive_and_wait(); }

// One barrier per warp (32 threads, fewer in a last partial warp): the synchronisation point of
// every emulated warp-collective instruction (mma.sync, ldmatrix).
inline std::vector<std::unique_ptr<std::barrier<>>> emu_warp_barriers;
inline void emu_warp_sync() { emu_warp_barriers[threadIdx.x / 32]->arrive_and_wait(); }

// Dynamic shared memory (extern __shared__), up to the 227 KiB an H100/H200 block may have.
// Filled with 0xFF bytes (NaN as floats) before every block, so a read of a slot that nothing
// wrote shows up as NaN in the output.
alignas(128) inline unsigned char emu_dynamic_smem_buf[232448];
inline size_t emu_dynamic_smem_bytes = 0;

// cp.async, per thread: copies issued since the last commit (`open`) and committed groups not
// yet waited for (`groups`, oldest first). A copy lands in shared memory only when a
// cp.async.wait_group retires its group, so a kernel that reads a stage before waiting for it
// reads stale bytes (or the 0xFF poison), as it could on a GPU.
struct EmuCopy { void* dst; const void* src; int bytes, src_bytes; };
struct EmuCpAsync { std::vector<EmuCopy> open; std::deque<std::vector<EmuCopy>> groups; };
inline thread_local EmuCpAsync emu_cp_async;
inline void emu_cp_async_apply(const std::vector<EmuCopy>& g) {
    for (const EmuCopy& c : g) {
        if (c.src_bytes > 0) std::memcpy(c.dst, c.src, (size_t)c.src_bytes);
        std::memset((char*)c.dst + c.src_bytes, 0, (size_t)(c.bytes - c.src_bytes));  // the zero-fill
    }
}

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct alignas(16) float4 { float x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
struct alignas(8) float2 { float x, y; };
inline float2 make_float2(float a, float b) { return {a, b}; }
using std::max;
using std::min;

// Runs kernel() on every block of grid, block.x threads each (1-D blocks only), with
// dynamic_smem bytes of dynamic shared memory.
template <class F>
void emu_launch(emu_dim3 grid, unsigned threads, F kernel, size_t dynamic_smem = 0) {
    if (dynamic_smem > sizeof emu_dynamic_smem_buf) {
        std::fprintf(stderr, "emu_launch: %zu bytes of dynamic shared memory, more than a GPU block can have\n", dynamic_smem);
        std::abort();
    }
    gridDim = grid;
    blockDim = {threads, 1, 1};
    emu_dynamic_smem_bytes = dynamic_smem;
    std::barrier<> bar(threads);
    emu_barrier = &bar;
    emu_warp_barriers.clear();
    for (unsigned w = 0; w < (threads + 31) / 32; w++)
        emu_warp_barriers.push_back(std::make_unique<std::barrier<>>(std::min(32u, threads - 32 * w)));
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < threads; t++) {
        ts.emplace_back([&, t] {
            threadIdx = {t, 0, 0};
            for (unsigned z = 0; z < grid.z; z++)
                for (unsigned y = 0; y < grid.y; y++)
                    for (unsigned x = 0; x < grid.x; x++) {
                        blockIdx = {x, y, z};
                        if (t == 0) std::memset(emu_dynamic_smem_buf, 0xFF, dynamic_smem);
                        bar.arrive_and_wait();
                        kernel();
                        bool pending = !emu_cp_async.open.empty();
                        for (auto& g : emu_cp_async.groups) pending |= !g.empty();
                        if (pending) {
                            std::fprintf(stderr, "block (%u, %u, %u) thread %u ended with cp.async copies never waited for\n", x, y, z, t);
                            std::abort();
                        }
                        emu_cp_async.groups.clear();
                        bar.arrive_and_wait();  // the block ends: its shared memory may be reused
                    }
        });
    }
    for (auto& th : ts) th.join();
}
