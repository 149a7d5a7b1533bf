// Vector ops for the optimisers.  Mirrors src/cpu/vector.rs.
//
// Reductions (dot, asum, amax) are two-stage and deterministic: *_partial writes one double per
// block into partials (grid min(ceil(n / 256), 1024): a function of n only), then
// reduce_partials_f64 / reduce_partials_max sums / maxes them with one block in index order.
// Elementwise ops: grid ceil(n / 256); block 256.
#include "common.cuh"

extern "C" __global__ void fill(float* __restrict__ x, int n, float value) {
    const int i = blockIdx.x * NS_THREADS + threadIdx.x;
    if (i < n) x[i] = value;
}

// Σ a_i b_i, products in double as the CPU.
extern "C" __global__ void dot_partial(const float* __restrict__ a, const float* __restrict__ b, int n,
                                       double* __restrict__ partials) {
    double acc = 0.0;
    for (int i = blockIdx.x * NS_THREADS + threadIdx.x; i < n; i += gridDim.x * NS_THREADS)
        acc += (double)a[i] * (double)b[i];
    const double s = block_sum_f64(acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// Σ |x_i|.
extern "C" __global__ void asum_partial(const float* __restrict__ x, int n, double* __restrict__ partials) {
    double acc = 0.0;
    for (int i = blockIdx.x * NS_THREADS + threadIdx.x; i < n; i += gridDim.x * NS_THREADS)
        acc += (double)fabsf(x[i]);
    const double s = block_sum_f64(acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// max |x_i| (0 for an empty vector, as the CPU's fold).
extern "C" __global__ void amax_partial(const float* __restrict__ x, int n, double* __restrict__ partials) {
    float m = 0.0f;
    for (int i = blockIdx.x * NS_THREADS + threadIdx.x; i < n; i += gridDim.x * NS_THREADS)
        m = fmaxf(m, fabsf(x[i]));
    const float s = block_max_f32(m);
    if (threadIdx.x == 0) partials[blockIdx.x] = (double)s;
}

// Second stage of every sum (here and in loss.cu): out[0] = Σ partials, one block, fixed order
// (thread t takes partials t, t + 256, ... in turn, then the tree).
extern "C" __global__ void reduce_partials_f64(const double* __restrict__ partials, int n_partials,
                                               double* __restrict__ out) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < n_partials; i += NS_THREADS) acc += partials[i];
    const double total = block_sum_f64(acc);
    if (threadIdx.x == 0) out[0] = total;
}

// out[0] = max partials (all >= 0), one block.
extern "C" __global__ void reduce_partials_max(const double* __restrict__ partials, int n_partials,
                                               double* __restrict__ out) {
    float m = 0.0f;
    for (int i = threadIdx.x; i < n_partials; i += NS_THREADS) m = fmaxf(m, (float)partials[i]);
    const float total = block_max_f32(m);
    if (threadIdx.x == 0) out[0] = (double)total;
}

// y += alpha x.
extern "C" __global__ void axpy(float alpha, const float* __restrict__ x, float* __restrict__ y, int n) {
    const int i = blockIdx.x * NS_THREADS + threadIdx.x;
    if (i < n) y[i] += alpha * x[i];
}

// x *= alpha.
extern "C" __global__ void scale(float alpha, float* __restrict__ x, int n) {
    const int i = blockIdx.x * NS_THREADS + threadIdx.x;
    if (i < n) x[i] *= alpha;
}

// torch.optim.Adam: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²;
// p -= step * m / (sqrt(v) / bc2_sqrt + eps), step = lr / (1 - b1^t), bc2_sqrt = sqrt(1 - b2^t)
// (both computed on the host in f32, as the CPU does).
extern "C" __global__ void adam_step(float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ m,
                                     float* __restrict__ v, int n, float beta1, float beta2, float eps, float step,
                                     float bc2_sqrt) {
    const int i = blockIdx.x * NS_THREADS + threadIdx.x;
    if (i >= n) return;
    const float g = grad[i];
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] -= step * mi / (sqrtf(vi) / bc2_sqrt + eps);
}

// The pixel box of bounded optimisation: x is (h, w, 3) channels-last, so value i is channel
// i % 3, bounded by [lo_c, hi_c] (the model convention's image of 0..255).
__device__ __forceinline__ float per_channel(int c, float v0, float v1, float v2) { return c == 0 ? v0 : (c == 1 ? v1 : v2); }

// x (h, w, 3) = clamp(x, lo, hi) per channel: fmaxf then fminf (a NaN becomes lo, as the CPU's
// f32::max then min).
extern "C" __global__ void project_to_box(float* __restrict__ x, int n, float lo0, float lo1, float lo2, float hi0,
                                          float hi1, float hi2) {
    const int i = blockIdx.x * NS_THREADS + threadIdx.x;
    if (i >= n) return;
    const int c = i % 3;
    x[i] = fminf(fmaxf(x[i], per_channel(c, lo0, lo1, lo2)), per_channel(c, hi0, hi1, hi2));
}

// v (h, w, 3): v_i = 0 where it points out of the box at x_i (x_i <= lo and v_i < 0, or
// x_i >= hi and v_i > 0).
extern "C" __global__ void zero_outward(const float* __restrict__ x, float* __restrict__ v, int n, float lo0, float lo1,
                                        float lo2, float hi0, float hi1, float hi2) {
    const int i = blockIdx.x * NS_THREADS + threadIdx.x;
    if (i >= n) return;
    const int c = i % 3;
    const float xi = x[i], vi = v[i];
    if ((xi <= per_channel(c, lo0, lo1, lo2) && vi < 0.0f) || (xi >= per_channel(c, hi0, hi1, hi2) && vi > 0.0f)) v[i] = 0.0f;
}

// v (h, w, 3): v_i = 0 where the gradient g holds x_i at its bound (x_i <= lo and g_i > 0, or
// x_i >= hi and g_i < 0).
extern "C" __global__ void hold_at_bounds(const float* __restrict__ x, const float* __restrict__ g, float* __restrict__ v,
                                          int n, float lo0, float lo1, float lo2, float hi0, float hi1, float hi2) {
    const int i = blockIdx.x * NS_THREADS + threadIdx.x;
    if (i >= n) return;
    const int c = i % 3;
    const float xi = x[i], gi = g[i];
    if ((xi <= per_channel(c, lo0, lo1, lo2) && gi > 0.0f) || (xi >= per_channel(c, hi0, hi1, hi2) && gi < 0.0f)) v[i] = 0.0f;
}
