// 2x2, stride 2 pooling (max or average), channels-last.  Mirrors src/cpu/pool.rs.
//
//   x (h, w, c)  ->  y (h/2, w/2, c)   (floor: an odd last row/column is dropped, as PyTorch)
//
// The backward kernels run one thread per INPUT element, so dx (h, w, c) is fully overwritten,
// including the dropped rows/columns (zeros), with no atomics and no separate zero fill.
#include "common.cuh"

// Grid: ceil(oh*ow*c / 256); block: 256.  max_pool != 0: max, else average.
extern "C" __global__ void pool_fwd(const float* __restrict__ x, float* __restrict__ y, int h, int w, int c,
                                    int max_pool) {
    const int oh = h / 2, ow = w / 2;
    const int idx = blockIdx.x * NS_THREADS + threadIdx.x;
    if (idx >= oh * ow * c) return;
    const int ch = idx % c, ox = (idx / c) % ow, oy = idx / (c * ow);
    const float* p = x + ((size_t)(2 * oy) * w + 2 * ox) * c + ch;
    const float a = p[0], b = p[c], cc = p[(size_t)w * c], d = p[(size_t)w * c + c];
    y[idx] = max_pool ? fmaxf(fmaxf(fmaxf(a, b), cc), d) : 0.25f * (a + b + cc + d);
}

// Grid: ceil(h*w*c / 256); block: 256.  dx (h, w, c) from dy (h/2, w/2, c).
// Max: the first maximum in row-major window order (0,0), (0,1), (1,0), (1,1) takes the gradient.
extern "C" __global__ void pool_bwd(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx,
                                    int h, int w, int c, int max_pool) {
    const int oh = h / 2, ow = w / 2;
    const int idx = blockIdx.x * NS_THREADS + threadIdx.x;
    if (idx >= h * w * c) return;
    const int ch = idx % c, ix = (idx / c) % w, iy = idx / (c * w);
    const int oy = iy / 2, ox = ix / 2;
    float out = 0.0f;
    if (oy < oh && ox < ow) {
        const float g = dy[((size_t)oy * ow + ox) * c + ch];
        if (max_pool) {
            const float* p = x + ((size_t)(2 * oy) * w + 2 * ox) * c + ch;
            const float v[4] = {p[0], p[c], p[(size_t)w * c], p[(size_t)w * c + c]};
            int best = 0;
            float best_v = v[0];
            for (int k = 1; k < 4; k++)
                if (v[k] > best_v) { best_v = v[k]; best = k; }
            if (best == (iy - 2 * oy) * 2 + (ix - 2 * ox)) out = g;
        } else {
            out = 0.25f * g;
        }
    }
    dx[idx] = out;
}
