// ReLU backward.  Mirrors CpuBackend::relu_bwd in src/cpu/mod.rs.
//
//   y (n) is the ReLU's output, dy (n) its output gradient:  dy *= (y > 0), in place.
#include "common.cuh"

// Grid: ceil(n / 256); block: 256.
extern "C" __global__ void relu_bwd(const float* __restrict__ y, float* __restrict__ dy, int n) {
    const int i = blockIdx.x * NS_THREADS + threadIdx.x;
    if (i < n && y[i] <= 0.0f) dy[i] = 0.0f;
}
