// Shared helpers for every kernel file.  Compiled by NVRTC (or nvcc -ptx) for compute_80+.
//
// Determinism: nothing here uses atomics.  A reduction is always "fixed grid -> one partial per
// block (tree in shared memory) -> one block sums the partials in index order", and the grid size
// is a function of the problem size only (never of the device), so the same inputs give the same
// bits on every run and every GPU.
#pragma once

// Threads per block of every elementwise and reduction kernel.  src/cuda/launch.rs mirrors it.
#define NS_THREADS 256
// Upper bound on the blocks of a reduction's first stage (= the partials buffer's length).
#define NS_MAX_PARTIALS 1024

// Sum of one double per thread over the block, in a fixed tree order.  All NS_THREADS threads
// must call it; the result is valid in thread 0.
__device__ __forceinline__ double block_sum_f64(double v) {
    __shared__ double s[NS_THREADS];
    s[threadIdx.x] = v;
    __syncthreads();
    #pragma unroll
    for (int half = NS_THREADS / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) s[threadIdx.x] += s[threadIdx.x + half];
        __syncthreads();
    }
    return s[0];
}

// Max of one float per thread over the block (order does not matter for max, but keep the tree).
__device__ __forceinline__ float block_max_f32(float v) {
    __shared__ float s[NS_THREADS];
    s[threadIdx.x] = v;
    __syncthreads();
    #pragma unroll
    for (int half = NS_THREADS / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) s[threadIdx.x] = fmaxf(s[threadIdx.x], s[threadIdx.x + half]);
        __syncthreads();
    }
    return s[0];
}
