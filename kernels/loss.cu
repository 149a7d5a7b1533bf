// Content, style and total-variation losses with their gradients.  Mirrors src/cpu/loss.rs.
//
// Each kernel writes one double partial sum per block (grid-stride loop, block tree) into
// partials[blockIdx.x]; reduce_partials_f64 (vector.cu) then sums them in index order, and the
// host applies the final weight / n in double, as the CPU does.  No atomics: deterministic.
// Grid: min(ceil(n / 256), 1024) blocks (a function of n only); block: 256.
#include "common.cuh"

// f, p, df (n):  partial Σ (f - p)²;  df += g (f - p), g = 2 weight / n (computed on the host).
extern "C" __global__ void content_loss_acc(const float* __restrict__ f, const float* __restrict__ p,
                                            float* __restrict__ df, int n, float g, double* __restrict__ partials) {
    double acc = 0.0;
    for (int i = blockIdx.x * NS_THREADS + threadIdx.x; i < n; i += gridDim.x * NS_THREADS) {
        const float diff = f[i] - p[i];
        acc += (double)(diff * diff);
        df[i] += g * diff;
    }
    const double s = block_sum_f64(acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// g, a, dg (c*c = n):  partial Σ (g - a)²;  dg = k (g - a), k = 2 weight / n.
extern "C" __global__ void style_loss(const float* __restrict__ g, const float* __restrict__ a,
                                      float* __restrict__ dg, int n, float k, double* __restrict__ partials) {
    double acc = 0.0;
    for (int i = blockIdx.x * NS_THREADS + threadIdx.x; i < n; i += gridDim.x * NS_THREADS) {
        const float diff = g[i] - a[i];
        acc += (double)(diff * diff);
        dg[i] = k * diff;
    }
    const double s = block_sum_f64(acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// x, dx (h, w, c):  partial Σ (x[i+1,j]-x[i,j])² + (x[i,j+1]-x[i,j])²;  dx += k * d/dx, k = 2 weight.
// One thread per element; the gradient at (i, j) collects each difference it takes part in, as
// the later or the earlier term, in the CPU's order.
extern "C" __global__ void tv_loss_acc(const float* __restrict__ x, float* __restrict__ dx, int h, int w, int c,
                                       float k, double* __restrict__ partials) {
    const int n = h * w * c;
    double acc = 0.0;
    for (int idx = blockIdx.x * NS_THREADS + threadIdx.x; idx < n; idx += gridDim.x * NS_THREADS) {
        const int ch = idx % c, j = (idx / c) % w, i = idx / (c * w);
        const float v = x[idx];
        float gsum = 0.0f;
        if (i + 1 < h) {
            const float dv = x[idx + w * c] - v;
            acc += (double)(dv * dv);
            gsum -= dv;
        }
        if (j + 1 < w) {
            const float dh = x[idx + c] - v;
            acc += (double)(dh * dh);
            gsum -= dh;
        }
        if (i > 0) gsum += v - x[idx - w * c];
        if (j > 0) gsum += v - x[idx - c];
        dx[idx] += k * gsum;
        (void)ch;
    }
    const double s = block_sum_f64(acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// d(s^p)/ds: p s^(p-1), with the limit at s = 0 (1 for p = 1, else 0 for p > 1).  As pow_slope in
// src/cpu/loss.rs.
__device__ __forceinline__ float pow_slope(float s, float power) {
    return s > 0.0f ? power * powf(s, power - 1.0f) : (power == 1.0f ? 1.0f : 0.0f);
}

// x, dx (h, w, c):  partial Σ_{i<h-1, j<w-1} s^power, s = (x[i,j]-x[i+1,j])² + (x[i,j]-x[i,j+1])²
// (the Keras example's TV);  dx += weight * d/dx.  One thread per element; the gradient at (i, j)
// gathers its own term (as the anchor), the one above (as the lower neighbour) and the one to the
// left (as the right neighbour), in the CPU's order.
extern "C" __global__ void tv_pow_loss_acc(const float* __restrict__ x, float* __restrict__ dx, int h, int w, int c,
                                           float weight, float power, double* __restrict__ partials) {
    const int n = h * w * c, row = w * c;
    double acc = 0.0;
    for (int idx = blockIdx.x * NS_THREADS + threadIdx.x; idx < n; idx += gridDim.x * NS_THREADS) {
        const int j = (idx / c) % w, i = idx / row;
        float gsum = 0.0f;
        if (i + 1 < h && j + 1 < w) {
            const float u = x[idx] - x[idx + row], v = x[idx] - x[idx + c], s = u * u + v * v;
            acc += pow((double)s, (double)power);
            gsum += pow_slope(s, power) * 2.0f * (u + v);
        }
        if (i > 0 && j + 1 < w) {
            const int a = idx - row;  // anchor above
            const float u = x[a] - x[a + row], v = x[a] - x[a + c], s = u * u + v * v;
            gsum -= pow_slope(s, power) * 2.0f * u;
        }
        if (j > 0 && i + 1 < h) {
            const int a = idx - c;  // anchor to the left
            const float u = x[a] - x[a + row], v = x[a] - x[a + c], s = u * u + v * v;
            gsum -= pow_slope(s, power) * 2.0f * v;
        }
        dx[idx] += weight * gsum;
    }
    const double s = block_sum_f64(acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}
