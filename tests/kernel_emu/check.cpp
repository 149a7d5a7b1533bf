// Runs every kernel of kernels/*.cu under the CPU emulation in include/ and compares it with a
// plain double-precision reference: indexing, tiling, padding, tails, barriers, the split-K
// Gram and the two-stage reductions, for fp32, tf32 and bf16. Build and run with
// tests/kernel_emu/run.sh (g++ >= 11, C++20). Exit status 0 when everything matches.
#include "../../kernels/conv3x3.cu"
#include "../../kernels/conv3x3_mma.cu"
#include "../../kernels/gram.cu"
#include "../../kernels/gram_mma.cu"
#include "../../kernels/loss.cu"
#include "../../kernels/pool.cu"
#include "../../kernels/relu.cu"
#include "../../kernels/vector.cu"

#include <cstdio>
#include <functional>
#include <random>
#include <string>

static int failures = 0;
static std::mt19937_64 rng(42);

static std::vector<float> randn(size_t n, float s = 1.0f) {
    std::normal_distribution<float> d(0.0f, s);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

static void check(const std::string& what, const std::vector<float>& got, const std::vector<double>& want, double tol) {
    double worst = 0, scale = 0;
    bool bad = got.size() != want.size();
    for (size_t i = 0; !bad && i < got.size(); i++) {
        if (!std::isfinite(got[i])) bad = true;
        worst = std::max(worst, std::fabs(got[i] - want[i]));
        scale = std::max(scale, std::fabs(want[i]));
    }
    const double e = bad ? INFINITY : worst / std::max(scale, 1e-30);
    const bool ok = e <= tol;
    failures += !ok;
    std::printf("%-4s %-58s rel err %.2e (tol %.0e)\n", ok ? "ok" : "FAIL", what.c_str(), e, tol);
}

static void check_scalar(const std::string& what, double got, double want, double tol) {
    const double e = std::fabs(got - want) / std::max(std::fabs(want), 1e-30);
    const bool ok = std::isfinite(got) && e <= tol;
    failures += !ok;
    std::printf("%-4s %-58s %.10g vs %.10g (rel %.1e)\n", ok ? "ok" : "FAIL", what.c_str(), got, want, e);
}

static std::vector<float> nans(size_t n) { return std::vector<float>(n, NAN); }

// ---- references ------------------------------------------------------------------------------
static std::vector<double> conv_ref(int h, int w, int ci, int co, const std::vector<float>& x, const std::vector<float>& wt,
                                    const float* b, bool relu) {
    std::vector<double> y((size_t)h * w * co);
    for (int oy = 0; oy < h; oy++)
        for (int ox = 0; ox < w; ox++)
            for (int o = 0; o < co; o++) {
                double acc = b ? b[o] : 0.0;
                for (int ky = 0; ky < 3; ky++)
                    for (int kx = 0; kx < 3; kx++) {
                        int iy = oy + ky - 1, ix = ox + kx - 1;
                        if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                        for (int c = 0; c < ci; c++)
                            acc += (double)x[((size_t)iy * w + ix) * ci + c] * wt[((size_t)(ky * 3 + kx) * ci + c) * co + o];
                    }
                y[((size_t)oy * w + ox) * co + o] = relu ? std::max(acc, 0.0) : acc;
            }
    return y;
}

static std::pair<int, int> gram_split(int hw, int c, int tile = 64) {  // mirrors src/cuda/launch.rs (gram_split, gram_split_mma)
    auto cdiv = [](long a, long b) { return (a + b - 1) / b; };
    long nt = std::max(1L, cdiv(c, tile));
    long pairs = nt * (nt + 1) / 2;
    long target = std::clamp(cdiv(264, pairs), 1L, 128L);
    long splits = std::max(1L, std::min(target, cdiv(hw, 256)));
    long chunk = std::max(32L, cdiv(cdiv(hw, splits), 32) * 32);
    return {(int)std::max(1L, cdiv(hw, chunk)), (int)chunk};
}

template <class K>
static void launch_tiles(int m, int n, int z, K k) {
    emu_launch({(unsigned)((m + 63) / 64), (unsigned)((n + 63) / 64), (unsigned)z}, 128, k);
}
static void launch_1d(size_t n, std::function<void()> k) { emu_launch({(unsigned)std::max<size_t>(1, (n + 255) / 256), 1, 1}, 256, k); }
static unsigned reduce_blocks(size_t n) { return (unsigned)std::clamp<size_t>((n + 255) / 256, 1, 1024); }

template <class K>
static void launch_mma_tiles(int m, int n, int z, K k, bool narrow = false) {
    const int bn = narrow ? NS_MMA_BN_NARROW : NS_MMA_BN;
    emu_launch({(unsigned)((m + NS_MMA_BM - 1) / NS_MMA_BM), (unsigned)((n + bn - 1) / bn), (unsigned)z},
               NS_MMA_THREADS, k, narrow ? NS_MMA_SMEM_BYTES_NARROW : NS_MMA_SMEM_BYTES);
}

// ---- the warp primitives of kernels/mma_sync.cuh, one warp, against scalar products ----------
static float tf32_trunc(float f) { return __uint_as_float(__float_as_uint(f) & 0xFFFFE000u); }
static uint16_t bf16_bits(float f) { return __float2bfloat16_rn(f).bits; }

static void check_primitives() {
    // tf32: D (16 x 8) = A (16 x 8, k-contiguous, via ldmatrix.x4) B (8 x 8, n-contiguous, via
    // LDS) + C, twice over k (two k8 steps, accumulating), against the truncated-operand product.
    {
        auto a = randn(16 * 16), b = randn(16 * 8), c = randn(16 * 8);
        std::vector<float> d = nans(16 * 8);
        emu_launch({1, 1, 1}, 32, [&] {
            NS_DYNAMIC_SMEM(float, sm);
            float* As = sm;            // [16][16]
            float* Bs = sm + 16 * 16;  // [16][8]
            const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
            for (int i = lane; i < 16 * 16; i += 32) As[i] = a[i];
            for (int i = lane; i < 16 * 8; i += 32) Bs[i] = b[i];
            __syncthreads();
            float acc[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1]};
            for (int kk = 0; kk < 16; kk += 8) {
                unsigned af[4], bf[2];
                ns::ldmatrix_x4(af, As + (lane % 8 + 8 * ((lane / 8) % 2)) * 16 + kk + 4 * (lane / 16));
                bf[0] = ns::lds_u32(Bs + (kk + t) * 8 + g);
                bf[1] = ns::lds_u32(Bs + (kk + t + 4) * 8 + g);
                ns::mma_tf32_16x8x8(acc, af, bf);
            }
            d[g * 8 + 2 * t] = acc[0], d[g * 8 + 2 * t + 1] = acc[1], d[(g + 8) * 8 + 2 * t] = acc[2], d[(g + 8) * 8 + 2 * t + 1] = acc[3];
        }, 4096);
        std::vector<double> ref(16 * 8), ref_raw(16 * 8);
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 8; j++) {
                double s = c[i * 8 + j], r = c[i * 8 + j];
                for (int k = 0; k < 16; k++) {
                    s += (double)tf32_trunc(a[i * 16 + k]) * tf32_trunc(b[k * 8 + j]);
                    r += (double)a[i * 16 + k] * b[k * 8 + j];
                }
                ref[i * 8 + j] = s, ref_raw[i * 8 + j] = r;
            }
        check("primitive: ldmatrix.x4 + LDS + mma m16n8k8 tf32 (truncated operands)", d, ref, 1e-6);
        check("primitive: the same against unrounded fp32 operands", d, ref_raw, 3e-3);
    }
    // bf16: D (16 x 16) = A (16 x 16, k-contiguous, ldmatrix.x4) B (16 x 16, n-contiguous,
    // ldmatrix.x4.trans: both n8 halves at once), exact in double.
    {
        auto a = randn(16 * 16), b = randn(16 * 16);
        std::vector<float> d = nans(16 * 16);
        emu_launch({1, 1, 1}, 32, [&] {
            NS_DYNAMIC_SMEM(uint16_t, sm);
            uint16_t* As = sm;            // [16][16] bf16
            uint16_t* Bs = sm + 16 * 16;  // [16][16] bf16
            const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
            for (int i = lane; i < 256; i += 32) As[i] = bf16_bits(a[i]), Bs[i] = bf16_bits(b[i]);
            __syncthreads();
            unsigned af[4], bf[4];
            ns::ldmatrix_x4(af, As + (lane % 8 + 8 * ((lane / 8) % 2)) * 16 + 8 * (lane / 16));
            ns::ldmatrix_x4_trans(bf, Bs + (lane % 8 + 8 * ((lane / 8) % 2)) * 16 + 8 * (lane / 16));
            for (int half = 0; half < 2; half++) {
                float acc[4] = {0, 0, 0, 0};
                const unsigned bb[2] = {bf[2 * half], bf[2 * half + 1]};
                ns::mma_bf16_16x8x16(acc, af, bb);
                const int n = 8 * half + 2 * t;
                d[g * 16 + n] = acc[0], d[g * 16 + n + 1] = acc[1], d[(g + 8) * 16 + n] = acc[2], d[(g + 8) * 16 + n + 1] = acc[3];
            }
        }, 1024);
        std::vector<double> ref(256);
        auto bf = [](float f) { return (double)emu_to_float(__float2bfloat16_rn(f)); };
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 16; j++) {
                double s = 0;
                for (int k = 0; k < 16; k++) s += bf(a[i * 16 + k]) * bf(b[k * 16 + j]);
                ref[i * 16 + j] = s;
            }
        check("primitive: ldmatrix.x4 + ldmatrix.x4.trans + mma m16n8k16 bf16", d, ref, 1e-6);
    }
    // cp.async: 16-byte copies with src-size 16, 8 and 0, 4-byte copies with 4 and 0, in two
    // groups; nothing lands before its wait_group, wait<1> retires only the older group.
    {
        std::vector<float> src(16);
        for (int i = 0; i < 16; i++) src[i] = (float)(i + 1);
        std::vector<float> before(16), middle(16), after(16);
        emu_launch({1, 1, 1}, 32, [&] {
            NS_DYNAMIC_SMEM(float, sm);
            if (threadIdx.x == 0) {
                ns::cp_async_16(sm + 0, src.data(), 16);     // sm[0..4)  = 1 2 3 4
                ns::cp_async_16(sm + 4, src.data() + 4, 8);  // sm[4..8)  = 5 6 0 0
                ns::cp_async_commit();
                ns::cp_async_16(sm + 8, src.data() + 8, 0);  // sm[8..12) = 0 0 0 0
                ns::cp_async_4(sm + 12, src.data() + 12, 4); // sm[12]    = 13
                ns::cp_async_4(sm + 13, src.data() + 13, 0); // sm[13]    = 0; sm[14..16) untouched
                ns::cp_async_commit();
                for (int i = 0; i < 16; i++) before[i] = sm[i];
                ns::cp_async_wait<1>();
                for (int i = 0; i < 16; i++) middle[i] = sm[i];
                ns::cp_async_wait<0>();
                for (int i = 0; i < 16; i++) after[i] = sm[i];
            }
        }, 256);
        bool stale = true;
        for (float v : before) stale &= std::isnan(v);  // still the 0xFF poison
        const double N_ = NAN;
        const std::vector<double> want_mid = {1, 2, 3, 4, 5, 6, 0, 0, N_, N_, N_, N_, N_, N_, N_, N_};
        const std::vector<double> want_after = {1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 0, 13, 0, N_, N_};
        auto same = [](const std::vector<float>& got, const std::vector<double>& want) {
            bool ok = true;
            for (size_t i = 0; i < got.size(); i++) ok &= std::isnan(want[i]) ? std::isnan(got[i]) : got[i] == want[i];
            return ok;
        };
        const bool mid_ok = same(middle, want_mid), after_ok = same(after, want_after);
        failures += !(stale && mid_ok && after_ok);
        std::printf("%-4s %-58s\n", stale && mid_ok && after_ok ? "ok" : "FAIL", "primitive: cp.async zero-fill, groups, nothing lands before its wait");
    }
}

// ---- shared-memory bank conflicts of the mma main loop's fragment reads ----------------------
// The kernels compute every fragment address with ns::mma::swz_mk / swz_kn; this replays those
// address patterns for every warp position, k step and tile of a stage and counts, per
// shared-memory wavefront, how many distinct 4-byte words share a bank (1 = conflict-free).
// A 32-bit LDS is one wavefront of 32 lanes; an LDS.64 two (16 lanes each); an ldmatrix.x4 one
// per 8 x 16-byte matrix (8 lanes' rows, 32 words).
static int conflict_degree(const std::vector<std::vector<int>>& wavefronts_words) {
    int worst = 1;
    for (const auto& words : wavefronts_words) {
        std::vector<std::vector<int>> bank(32);
        for (int w : words)
            if (std::find(bank[w % 32].begin(), bank[w % 32].end(), w) == bank[w % 32].end()) bank[w % 32].push_back(w);
        for (auto& b : bank) worst = std::max(worst, (int)b.size());
    }
    return worst;
}

template <class S>
static void check_bank_conflicts(const char* tile) {  // tf32 conflict-free; bf16 at most 2-way (tile_mma_sync.cuh)
    using namespace ns::mma;
    int ldsm_a = 1, lds_b = 1, lds_a_mcontig = 1, lds64_a = 1, lds_b_bf16 = 1;
    for (int warp = 0; warp < 8; warp++) {
        const int wm = (warp % S::WARPS_M) * 16 * S::MI, wn = (warp / S::WARPS_M) * 32;
        for (int kk = 0; kk < TILE_K; kk += 8)
            for (int i = 0; i < S::MI; i++) {
                std::vector<std::vector<int>> mats(4), a_m(4);
                for (int lane = 0; lane < 32; lane++) {
                    const int r = wm + 16 * i + (lane % 8) + 8 * ((lane / 8) % 2), k = kk + 4 * (lane / 16);
                    for (int q = 0; q < 4; q++) mats[lane / 8].push_back(swz_mk(r, k) + q);
                    const int g = lane / 4, t = lane % 4, m = wm + 16 * i + g;
                    a_m[0].push_back(swz_kn<TILE_M>(kk + t, m));
                    a_m[1].push_back(swz_kn<TILE_M>(kk + t, m + 8));
                    a_m[2].push_back(swz_kn<TILE_M>(kk + t + 4, m));
                    a_m[3].push_back(swz_kn<TILE_M>(kk + t + 4, m + 8));
                }
                ldsm_a = std::max(ldsm_a, conflict_degree(mats));
                for (auto& w : a_m) lds_a_mcontig = std::max(lds_a_mcontig, conflict_degree({w}));
            }
        for (int kk = 0; kk < TILE_K; kk += 8)
            for (int j = 0; j < 4; j++)
                for (int half = 0; half < 2; half++) {
                    std::vector<int> words;
                    for (int lane = 0; lane < 32; lane++) words.push_back(swz_kn<S::N_TILE>(kk + lane % 4 + 4 * half, wn + 8 * j + lane / 4));
                    lds_b = std::max(lds_b, conflict_degree({words}));
                }
        for (int kk = 0; kk < TILE_K; kk += 16)
            for (int i = 0; i < S::MI; i++)
                for (int reg = 0; reg < 4; reg++) {
                    std::vector<std::vector<int>> halves(2);
                    for (int lane = 0; lane < 32; lane++) {
                        const int m = wm + 16 * i + lane / 4 + 8 * (reg % 2), k = kk + 2 * (lane % 4) + 8 * (reg / 2);
                        halves[lane / 16].push_back(swz_mk(m, k));
                        halves[lane / 16].push_back(swz_mk(m, k) + 1);
                    }
                    lds64_a = std::max(lds64_a, conflict_degree(halves));
                }
        for (int kk = 0; kk < TILE_K; kk += 16)
            for (int j = 0; j < 4; j++)
                for (int dk : {0, 1, 8, 9}) {
                    std::vector<int> words;
                    for (int lane = 0; lane < 32; lane++) words.push_back(swz_kn<S::N_TILE>(kk + 2 * (lane % 4) + dk, wn + 8 * j + lane / 4));
                    lds_b_bf16 = std::max(lds_b_bf16, conflict_degree({words}));
                }
    }
    const bool ok = ldsm_a == 1 && lds_b == 1 && lds_a_mcontig == 1 && lds64_a <= 2 && lds_b_bf16 <= 2;
    failures += !ok;
    std::printf("%-4s bank conflicts, %s tile: ldmatrix A %d-way, LDS B %d-way, LDS Fᵀ %d-way, bf16 LDS.64 A %d-way, bf16 LDS B %d-way\n",
                ok ? "ok" : "FAIL", tile, ldsm_a, lds_b, lds_a_mcontig, lds64_a, lds_b_bf16);
}

static double finish_sum(double* partials, unsigned blocks, bool max = false) {
    double out = NAN;
    emu_launch({1, 1, 1}, 256, [&] {
        if (max) reduce_partials_max(partials, (int)blocks, &out);
        else reduce_partials_f64(partials, (int)blocks, &out);
    });
    return out;
}

// The double references of the Gram, G = Fᵀ F / (c hw) with F (hw, c), and of its backward,
// df0 + F (dG + dGᵀ) / (c hw).
static std::vector<double> gram_ref(const std::vector<float>& f, int hw, int c) {
    std::vector<double> g((size_t)c * c);
    for (int i = 0; i < c; i++)
        for (int j = 0; j < c; j++) {
            double acc = 0;
            for (int q = 0; q < hw; q++) acc += (double)f[(size_t)q * c + i] * f[(size_t)q * c + j];
            g[(size_t)i * c + j] = acc / ((double)c * hw);
        }
    return g;
}

static std::vector<double> gram_bwd_acc_ref(const std::vector<float>& f, const std::vector<float>& dg, const std::vector<float>& df0, int hw, int c) {
    std::vector<double> df(df0.begin(), df0.end());
    for (int q = 0; q < hw; q++)
        for (int n = 0; n < c; n++) {
            double acc = 0;
            for (int k = 0; k < c; k++) acc += (double)f[(size_t)q * c + k] * ((double)dg[(size_t)k * c + n] + dg[(size_t)n * c + k]);
            df[(size_t)q * c + n] += acc / ((double)c * hw);
        }
    return df;
}

int main() {
    const char* names[3] = {"fp32", "tf32", "bf16"};
    const double tols[3] = {1e-5, 3e-3, 2e-2};

    check_primitives();
    check_bank_conflicts<ns::mma::Wide>("128x128");
    check_bank_conflicts<ns::mma::Narrow>("128x64");

    // ---- conv3x3 on the mma.sync main loop (tf32, bf16): partial tiles, padding, both loader paths --
    struct SM { int h, w, ci, co; };
    for (SM s : {SM{13, 13, 64, 96}, SM{7, 9, 3, 8}, SM{5, 6, 40, 3}, SM{5, 6, 4, 132}, SM{11, 13, 16, 24}}) {
        auto x = randn((size_t)s.h * s.w * s.ci), wt = randn((size_t)9 * s.ci * s.co, std::sqrt(2.0f / (9 * s.ci)));
        auto b = randn(s.co, 0.1f), dy = randn((size_t)s.h * s.w * s.co), wf = randn((size_t)9 * s.ci * s.co, std::sqrt(2.0f / (9 * s.co)));
        auto y_ref = conv_ref(s.h, s.w, s.ci, s.co, x, wt, b.data(), true);
        auto dx_ref = conv_ref(s.h, s.w, s.co, s.ci, dy, wf, nullptr, false);
        // The BN = 64 kernels (n64, which the host picks for N <= 64) on the first three shapes
        // (two partial N tiles of 64, the scalar A loader, N = 3), bf16 on the first only.
        const bool some_narrow = s.h == 13 || s.ci == 3 || s.co == 3;
        for (int p = 1; p < 3; p++)
            for (int narrow = 0; narrow < 2; narrow++) {
                if (narrow && !(some_narrow && (p == 1 || s.h == 13))) continue;
                auto y = nans(y_ref.size()), dx = nans(dx_ref.size());
                launch_mma_tiles(s.h * s.w, s.co, 1, [&] {
                    if (p == 1 && !narrow) conv3x3_fwd_mma_tf32(x.data(), wt.data(), b.data(), y.data(), s.h, s.w, s.ci, s.co);
                    if (p == 2 && !narrow) conv3x3_fwd_mma_bf16(x.data(), wt.data(), b.data(), y.data(), s.h, s.w, s.ci, s.co);
                    if (p == 1 && narrow) conv3x3_fwd_mma_n64_tf32(x.data(), wt.data(), b.data(), y.data(), s.h, s.w, s.ci, s.co);
                    if (p == 2 && narrow) conv3x3_fwd_mma_n64_bf16(x.data(), wt.data(), b.data(), y.data(), s.h, s.w, s.ci, s.co);
                }, narrow);
                launch_mma_tiles(s.h * s.w, s.ci, 1, [&] {
                    if (p == 1 && !narrow) conv3x3_bwd_input_mma_tf32(dy.data(), wf.data(), dx.data(), s.h, s.w, s.ci, s.co);
                    if (p == 2 && !narrow) conv3x3_bwd_input_mma_bf16(dy.data(), wf.data(), dx.data(), s.h, s.w, s.ci, s.co);
                    if (p == 1 && narrow) conv3x3_bwd_input_mma_n64_tf32(dy.data(), wf.data(), dx.data(), s.h, s.w, s.ci, s.co);
                    if (p == 2 && narrow) conv3x3_bwd_input_mma_n64_bf16(dy.data(), wf.data(), dx.data(), s.h, s.w, s.ci, s.co);
                }, narrow);
                const char* v = narrow ? "n64_" : "";
                char buf[128];
                std::snprintf(buf, sizeof buf, "conv3x3_fwd_mma_%s%s %dx%d %d->%d", v, names[p], s.h, s.w, s.ci, s.co);
                check(buf, y, y_ref, tols[p]);
                std::snprintf(buf, sizeof buf, "conv3x3_bwd_input_mma_%s%s %dx%d %d->%d", v, names[p], s.h, s.w, s.ci, s.co);
                check(buf, dx, dx_ref, tols[p]);
            }
    }

    // ---- split-K conv on the mma.sync main loop: partial slices, then the fixed-order reduce -------
    // Shapes: K slices not a multiple of the split (the last split shorter), partial M and N tiles,
    // the scalar A loader (c_in 30: 4-byte copies in a split range), the padding halo, and conv4_x's own shape at 8x8.
    struct SK { int h, w, ci, co, splits; };
    for (SK s : {SK{13, 13, 64, 96, 3}, SK{7, 9, 30, 136, 2}, SK{11, 10, 40, 72, 5}, SK{8, 8, 512, 512, 4}}) {
        auto x = randn((size_t)s.h * s.w * s.ci), wt = randn((size_t)9 * s.ci * s.co, std::sqrt(2.0f / (9 * s.ci)));
        auto b = randn(s.co, 0.1f), dy = randn((size_t)s.h * s.w * s.co), wf = randn((size_t)9 * s.ci * s.co, std::sqrt(2.0f / (9 * s.co)));
        auto y_ref = conv_ref(s.h, s.w, s.ci, s.co, x, wt, b.data(), true);
        auto dx_ref = conv_ref(s.h, s.w, s.co, s.ci, dy, wf, nullptr, false);
        const int m = s.h * s.w;
        // The host's rule (conv_split_k): chunk = ceil(K slices / splits), splits = ceil(K slices / chunk).
        auto split = [](int k, int want) {
            const int tiles = (k + NS_MMA_BK - 1) / NS_MMA_BK, chunk = (tiles + want - 1) / want;
            return std::pair{(tiles + chunk - 1) / chunk, chunk};
        };
        for (int p = 1; p < 3; p++) {
            for (int bwd = 0; bwd < 2; bwd++) {
                const int n = bwd ? s.ci : s.co;
                const auto [splits, chunk] = split(9 * (bwd ? s.co : s.ci), s.splits);
                std::vector<float> ws((size_t)splits * m * n, NAN), out = nans((size_t)m * n);
                launch_mma_tiles(m, n, splits, [&] {
                    if (!bwd && p == 1) conv3x3_fwd_mma_splitk_tf32(x.data(), wt.data(), ws.data(), s.h, s.w, s.ci, s.co, chunk);
                    if (!bwd && p == 2) conv3x3_fwd_mma_splitk_bf16(x.data(), wt.data(), ws.data(), s.h, s.w, s.ci, s.co, chunk);
                    if (bwd && p == 1) conv3x3_bwd_input_mma_splitk_tf32(dy.data(), wf.data(), ws.data(), s.h, s.w, s.ci, s.co, chunk);
                    if (bwd && p == 2) conv3x3_bwd_input_mma_splitk_bf16(dy.data(), wf.data(), ws.data(), s.h, s.w, s.ci, s.co, chunk);
                });
                launch_1d((size_t)m * n, [&] { conv3x3_splitk_reduce(ws.data(), bwd ? nullptr : b.data(), out.data(), m * n, n, splits, !bwd); });
                char buf[128];
                std::snprintf(buf, sizeof buf, "conv3x3_%s_mma_splitk_%s %dx%d %d->%d (%d splits of %d)", bwd ? "bwd_input" : "fwd", names[p],
                              s.h, s.w, s.ci, s.co, splits, chunk);
                check(buf, out, bwd ? dx_ref : y_ref, tols[p]);
            }
        }
    }
    {
        // The reduce alone, exactly: slices added in z order, then bias, then ReLU.
        const int m = 37, n = 5, splits = 3;
        auto ws = randn((size_t)splits * m * n), b = randn(n);
        std::vector<double> ref((size_t)m * n);
        for (int i = 0; i < m * n; i++) {
            float v = ws[i];
            for (int z = 1; z < splits; z++) v += ws[(size_t)z * m * n + i];
            ref[i] = std::max(v + b[i % n], 0.0f);
        }
        auto out = nans((size_t)m * n);
        launch_1d((size_t)m * n, [&] { conv3x3_splitk_reduce(ws.data(), b.data(), out.data(), m * n, n, splits, 1); });
        check("conv3x3_splitk_reduce 37x5, 3 slices, bias + relu (bit-exact)", out, ref, 0.0);
    }

    // ---- conv1_1's input gradient with the ReLU mask folded in (N = c_in <= 4, FFMA) ----------------
    // Against relu_bwd then the plain conv, in double. y has exact zeros and negatives (the mask),
    // shapes cross the 16 x 32 block tile in both directions (the halo between blocks), a channel
    // count that is not a multiple of the 8-channel pass or of 4 (the scalar loader), and c_in 1..4.
    struct SN { int h, w, ci, co; };
    for (SN s : {SN{7, 9, 3, 8}, SN{19, 37, 3, 64}, SN{17, 33, 4, 13}, SN{5, 6, 1, 20}, SN{33, 65, 2, 12}, SN{1, 1, 3, 64}}) {
        auto y = randn((size_t)s.h * s.w * s.co), dy = randn((size_t)s.h * s.w * s.co);
        for (auto& v : y) v = v < 0.2f ? (v < -0.5f ? v : 0.0f) : v;
        auto wf = randn((size_t)9 * s.ci * s.co, std::sqrt(2.0f / (9 * s.co)));
        std::vector<float> masked(dy.size());
        for (size_t i = 0; i < dy.size(); i++) masked[i] = y[i] <= 0.0f ? 0.0f : dy[i];
        auto dx_ref = conv_ref(s.h, s.w, s.co, s.ci, masked, wf, nullptr, false);
        auto dx = nans(dx_ref.size());
        emu_launch({(unsigned)((s.w + NS_N4_TX - 1) / NS_N4_TX), (unsigned)((s.h + NS_N4_TY - 1) / NS_N4_TY), 1}, NS_THREADS,
                   [&] { conv3x3_bwd_input_masked_n4(y.data(), dy.data(), wf.data(), dx.data(), s.h, s.w, s.ci, s.co); });
        char buf[128];
        std::snprintf(buf, sizeof buf, "conv3x3_bwd_input_masked_n4 %dx%d %d->%d", s.h, s.w, s.ci, s.co);
        check(buf, dx, dx_ref, 1e-5);
    }

    // ---- conv3x3 -------------------------------------------------------------------------
    struct S { int h, w, ci, co; };
    for (S s : {S{7, 9, 3, 8}, S{13, 11, 16, 24}, S{9, 70, 64, 72}, S{5, 6, 40, 3}, S{1, 1, 130, 65}, S{7, 5, 12, 20}, S{5, 6, 4, 132}, S{3, 4, 68, 4}}) {
        auto x = randn((size_t)s.h * s.w * s.ci), wt = randn((size_t)9 * s.ci * s.co, std::sqrt(2.0f / (9 * s.ci)));
        auto b = randn(s.co, 0.1f), dy = randn((size_t)s.h * s.w * s.co), wf = randn((size_t)9 * s.ci * s.co, std::sqrt(2.0f / (9 * s.co)));
        auto y_ref = conv_ref(s.h, s.w, s.ci, s.co, x, wt, b.data(), true);
        auto dx_ref = conv_ref(s.h, s.w, s.co, s.ci, dy, wf, nullptr, false);
        for (int p = 0; p < 3; p++) {
            auto y = nans(y_ref.size()), dx = nans(dx_ref.size());
            launch_tiles(s.h * s.w, s.co, 1, [&] {
                if (p == 0) conv3x3_fwd_fp32(x.data(), wt.data(), b.data(), y.data(), s.h, s.w, s.ci, s.co);
                if (p == 1) conv3x3_fwd_tf32(x.data(), wt.data(), b.data(), y.data(), s.h, s.w, s.ci, s.co);
                if (p == 2) conv3x3_fwd_bf16(x.data(), wt.data(), b.data(), y.data(), s.h, s.w, s.ci, s.co);
            });
            launch_tiles(s.h * s.w, s.ci, 1, [&] {
                if (p == 0) conv3x3_bwd_input_fp32(dy.data(), wf.data(), dx.data(), s.h, s.w, s.ci, s.co);
                if (p == 1) conv3x3_bwd_input_tf32(dy.data(), wf.data(), dx.data(), s.h, s.w, s.ci, s.co);
                if (p == 2) conv3x3_bwd_input_bf16(dy.data(), wf.data(), dx.data(), s.h, s.w, s.ci, s.co);
            });
            char buf[128];
            std::snprintf(buf, sizeof buf, "conv3x3_fwd_%s %dx%d %d->%d", names[p], s.h, s.w, s.ci, s.co);
            check(buf, y, y_ref, tols[p]);
            std::snprintf(buf, sizeof buf, "conv3x3_bwd_input_%s %dx%d %d->%d", names[p], s.h, s.w, s.ci, s.co);
            check(buf, dx, dx_ref, tols[p]);
        }
    }

    // ---- Gram and its backward --------------------------------------------------------------
    for (auto [hw, c] : {std::pair{37, 5}, std::pair{5000, 64}, std::pair{300, 130}, std::pair{4096, 8}, std::pair{77, 200}, std::pair{300, 132}, std::pair{999, 68}, std::pair{50, 4}}) {
        auto f = randn((size_t)hw * c);
        for (auto& v : f) v = std::max(v, 0.0f);
        auto g_ref = gram_ref(f, hw, c);
        auto dg = randn((size_t)c * c), df0 = randn((size_t)hw * c, 1e-3f);
        auto df_ref = gram_bwd_acc_ref(f, dg, df0, hw, c);
        auto [splits, chunk] = gram_split(hw, c);
        for (int p = 0; p < 3; p++) {
            std::vector<float> partials((size_t)splits * c * c, NAN), g = nans((size_t)c * c);
            launch_tiles(c, c, splits, [&] {
                if (p == 0) gram_partial_fp32(f.data(), partials.data(), hw, c, chunk);
                if (p == 1) gram_partial_tf32(f.data(), partials.data(), hw, c, chunk);
                if (p == 2) gram_partial_bf16(f.data(), partials.data(), hw, c, chunk);
            });
            launch_1d((size_t)c * c, [&] { gram_reduce(partials.data(), g.data(), c, splits, 1.0 / ((double)c * hw)); });
            char buf[128];
            std::snprintf(buf, sizeof buf, "gram_%s hw %d c %d (%d splits of %d)", names[p], hw, c, splits, chunk);
            check(buf, g, g_ref, tols[p]);

            std::vector<float> sym = nans((size_t)c * c), df = df0;
            launch_1d((size_t)c * c, [&] { gram_bwd_sym(dg.data(), sym.data(), c, 1.0f / (float)(c * hw)); });
            launch_tiles(hw, c, 1, [&] {
                if (p == 0) gram_bwd_acc_fp32(f.data(), sym.data(), df.data(), hw, c);
                if (p == 1) gram_bwd_acc_tf32(f.data(), sym.data(), df.data(), hw, c);
                if (p == 2) gram_bwd_acc_bf16(f.data(), sym.data(), df.data(), hw, c);
            });
            std::snprintf(buf, sizeof buf, "gram_bwd_acc_%s hw %d c %d", names[p], hw, c);
            check(buf, df, df_ref, tols[p]);
        }
    }

    // ---- Gram and its backward on the mma.sync main loop (tf32, bf16) ------------------------------
    for (auto [hw, c] : {std::pair{37, 5}, std::pair{300, 130}, std::pair{999, 68}, std::pair{50, 4}, std::pair{77, 200}}) {
        auto f = randn((size_t)hw * c);
        for (auto& v : f) v = std::max(v, 0.0f);
        auto g_ref = gram_ref(f, hw, c);
        auto dg = randn((size_t)c * c), df0 = randn((size_t)hw * c, 1e-3f);
        auto df_ref = gram_bwd_acc_ref(f, dg, df0, hw, c);
        auto [splits, chunk] = gram_split(hw, c, NS_MMA_BM);
        for (int p = 1; p < 3; p++) {
            std::vector<float> partials((size_t)splits * c * c, NAN), g = nans((size_t)c * c);
            launch_mma_tiles(c, c, splits, [&] {
                if (p == 1) gram_partial_mma_tf32(f.data(), partials.data(), hw, c, chunk);
                if (p == 2) gram_partial_mma_bf16(f.data(), partials.data(), hw, c, chunk);
            });
            launch_1d((size_t)c * c, [&] { gram_reduce_mma(partials.data(), g.data(), c, splits, 1.0 / ((double)c * hw)); });
            char buf[128];
            std::snprintf(buf, sizeof buf, "gram_mma_%s hw %d c %d (%d splits of %d)", names[p], hw, c, splits, chunk);
            check(buf, g, g_ref, tols[p]);
            std::vector<float> sym = nans((size_t)c * c), df = df0;
            launch_1d((size_t)c * c, [&] { gram_bwd_sym(dg.data(), sym.data(), c, 1.0f / (float)(c * hw)); });
            launch_mma_tiles(hw, c, 1, [&] {
                if (p == 1) gram_bwd_acc_mma_tf32(f.data(), sym.data(), df.data(), hw, c);
                if (p == 2) gram_bwd_acc_mma_bf16(f.data(), sym.data(), df.data(), hw, c);
            });
            std::snprintf(buf, sizeof buf, "gram_bwd_acc_mma_%s hw %d c %d", names[p], hw, c);
            check(buf, df, df_ref, tols[p]);
        }
    }

    // ---- pool and relu ----------------------------------------------------------------------
    for (int max_pool = 0; max_pool < 2; max_pool++)
        for (auto [h, w, c] : {std::tuple{8, 6, 5}, std::tuple{7, 9, 3}, std::tuple{33, 17, 64}}) {
            auto x = randn((size_t)h * w * c, 2.0f);
            for (auto& v : x) v = std::round(v);  // ties
            const int oh = h / 2, ow = w / 2;
            auto dy = randn((size_t)oh * ow * c);
            std::vector<double> y_ref((size_t)oh * ow * c), dx_ref((size_t)h * w * c, 0.0);
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++)
                    for (int ch = 0; ch < c; ch++) {
                        float v[4];
                        size_t at[4];
                        for (int k = 0; k < 4; k++) {
                            at[k] = ((size_t)(2 * oy + k / 2) * w + 2 * ox + k % 2) * c + ch;
                            v[k] = x[at[k]];
                        }
                        const size_t o = ((size_t)oy * ow + ox) * c + ch;
                        int best = 0;
                        for (int k = 1; k < 4; k++)
                            if (v[k] > v[best]) best = k;
                        y_ref[o] = max_pool ? v[best] : 0.25 * ((double)v[0] + v[1] + v[2] + v[3]);
                        for (int k = 0; k < 4; k++) dx_ref[at[k]] = max_pool ? (k == best ? dy[o] : 0.0) : 0.25 * dy[o];
                    }
            auto y = nans(y_ref.size()), dx = nans(dx_ref.size());
            launch_1d(y.size(), [&] { pool_fwd(x.data(), y.data(), h, w, c, max_pool); });
            launch_1d(dx.size(), [&] { pool_bwd(x.data(), dy.data(), dx.data(), h, w, c, max_pool); });
            char buf[128];
            std::snprintf(buf, sizeof buf, "pool_fwd %s %dx%dx%d", max_pool ? "max" : "avg", h, w, c);
            check(buf, y, y_ref, 1e-6);
            std::snprintf(buf, sizeof buf, "pool_bwd %s %dx%dx%d", max_pool ? "max" : "avg", h, w, c);
            check(buf, dx, dx_ref, 1e-6);
        }
    {
        auto y = randn(3000), dy = randn(3000);
        for (auto& v : y) v = v < 0.3f ? 0.0f : v;
        std::vector<double> ref(3000);
        for (int i = 0; i < 3000; i++) ref[i] = y[i] <= 0 ? 0.0 : dy[i];
        launch_1d(3000, [&] { relu_bwd(y.data(), dy.data(), 3000); });
        check("relu_bwd", dy, ref, 0.0);
    }

    // ---- losses -----------------------------------------------------------------------------
    std::vector<double> partials(1024, NAN);
    for (int n : {1, 1000, 70001}) {
        auto f = randn(n), p = randn(n), df = randn(n, 0.1f);
        const float weight = 5.0f, g = 2.0f * weight / n;
        double sum = 0;
        std::vector<double> df_ref(n);
        for (int i = 0; i < n; i++) {
            float d = f[i] - p[i];
            sum += (double)d * d;
            df_ref[i] = df[i] + (double)g * d;
        }
        const unsigned blocks = reduce_blocks(n);
        emu_launch({blocks, 1, 1}, 256, [&] { content_loss_acc(f.data(), p.data(), df.data(), n, g, partials.data()); });
        check_scalar("content loss n " + std::to_string(n), finish_sum(partials.data(), blocks), sum, 1e-6);
        check("content loss gradient n " + std::to_string(n), df, df_ref, 1e-6);
    }
    for (int c : {3, 64, 130}) {
        const int n = c * c;
        auto g = randn(n), a = randn(n);
        auto dg = nans(n);
        const float k = 2.0f * 100.0f / n;
        double sum = 0;
        std::vector<double> dg_ref(n);
        for (int i = 0; i < n; i++) {
            float d = g[i] - a[i];
            sum += (double)d * d;
            dg_ref[i] = (double)k * d;
        }
        const unsigned blocks = reduce_blocks(n);
        emu_launch({blocks, 1, 1}, 256, [&] { style_loss(g.data(), a.data(), dg.data(), n, k, partials.data()); });
        check_scalar("style loss c " + std::to_string(c), finish_sum(partials.data(), blocks), sum, 1e-6);
        check("style loss gradient c " + std::to_string(c), dg, dg_ref, 1e-6);
    }
    for (auto [h, w, c] : {std::tuple{1, 1, 3}, std::tuple{13, 17, 3}, std::tuple{64, 48, 3}}) {
        const int n = h * w * c;
        auto x = randn(n), dx = randn(n, 0.1f);
        const float k = 2.0f * 1e-3f;
        double sum = 0;
        std::vector<double> dx_ref(dx.begin(), dx.end());
        auto at = [&](int i, int j, int ch) { return (double)x[((size_t)i * w + j) * c + ch]; };
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++)
                for (int ch = 0; ch < c; ch++) {
                    const size_t o = ((size_t)i * w + j) * c + ch;
                    if (i + 1 < h) { double d = at(i + 1, j, ch) - at(i, j, ch); sum += d * d; dx_ref[o] -= k * d; dx_ref[o + (size_t)w * c] += k * d; }
                    if (j + 1 < w) { double d = at(i, j + 1, ch) - at(i, j, ch); sum += d * d; dx_ref[o] -= k * d; dx_ref[o + c] += k * d; }
                }
        const unsigned blocks = reduce_blocks(n);
        emu_launch({blocks, 1, 1}, 256, [&] { tv_loss_acc(x.data(), dx.data(), h, w, c, k, partials.data()); });
        const double got = finish_sum(partials.data(), blocks);
        if (sum == 0) check_scalar("tv loss 1x1 (zero)", got + 1.0, 1.0, 0.0);
        else check_scalar("tv loss " + std::to_string(h) + "x" + std::to_string(w), got, sum, 1e-6);
        check("tv loss gradient " + std::to_string(h) + "x" + std::to_string(w), dx, dx_ref, 1e-6);
    }

    // The Keras example's powered TV, against a scatter-form double reference.
    for (auto [h, w, c] : {std::tuple{1, 1, 3}, std::tuple{13, 17, 3}, std::tuple{64, 48, 3}}) {
        for (float power : {1.0f, 1.25f}) {
            const int n = h * w * c;
            auto x = randn(n), dx = randn(n, 0.1f);
            const float weight = 0.7f;
            double sum = 0;
            std::vector<double> dx_ref(dx.begin(), dx.end());
            for (int i = 0; i + 1 < h; i++)
                for (int j = 0; j + 1 < w; j++)
                    for (int ch = 0; ch < c; ch++) {
                        const size_t o = ((size_t)i * w + j) * c + ch, below = o + (size_t)w * c, right = o + c;
                        const double u = (double)x[o] - x[below], v = (double)x[o] - x[right], s = u * u + v * v;
                        sum += std::pow(s, (double)power);
                        const double q = s > 0 ? power * std::pow(s, power - 1.0) : (power == 1.0f ? 1.0 : 0.0);
                        dx_ref[o] += weight * q * 2 * (u + v);
                        dx_ref[below] -= weight * q * 2 * u;
                        dx_ref[right] -= weight * q * 2 * v;
                    }
            const unsigned blocks = reduce_blocks(n);
            emu_launch({blocks, 1, 1}, 256, [&] { tv_pow_loss_acc(x.data(), dx.data(), h, w, c, weight, power, partials.data()); });
            const double got = finish_sum(partials.data(), blocks);
            const std::string what = "tv pow " + std::to_string(power) + " " + std::to_string(h) + "x" + std::to_string(w);
            if (sum == 0) check_scalar(what + " (zero)", got + 1.0, 1.0, 0.0);
            else check_scalar(what, got, sum, 1e-6);
            check(what + " gradient", dx, dx_ref, 1e-5);
        }
    }

    // ---- vector ops -------------------------------------------------------------------------
    for (int n : {1, 255, 257, 40000}) {
        auto a = randn(n), b = randn(n);
        double dot = 0, asum = 0, amax = 0;
        for (int i = 0; i < n; i++) { dot += (double)a[i] * b[i]; asum += std::fabs(a[i]); amax = std::max(amax, (double)std::fabs(a[i])); }
        const unsigned blocks = reduce_blocks(n);
        emu_launch({blocks, 1, 1}, 256, [&] { dot_partial(a.data(), b.data(), n, partials.data()); });
        check_scalar("dot n " + std::to_string(n), finish_sum(partials.data(), blocks), dot, 1e-12);
        emu_launch({blocks, 1, 1}, 256, [&] { asum_partial(a.data(), n, partials.data()); });
        check_scalar("asum n " + std::to_string(n), finish_sum(partials.data(), blocks), asum, 1e-12);
        emu_launch({blocks, 1, 1}, 256, [&] { amax_partial(a.data(), n, partials.data()); });
        check_scalar("amax n " + std::to_string(n), finish_sum(partials.data(), blocks, true), amax, 0.0);

        std::vector<double> y_ref(n), s_ref(n);
        for (int i = 0; i < n; i++) { y_ref[i] = b[i] + (double)-0.7f * a[i]; s_ref[i] = (double)(1.5f * a[i]); }
        auto y = b, s = a;
        launch_1d(n, [&] { axpy(-0.7f, a.data(), y.data(), n); });
        check("axpy n " + std::to_string(n), y, y_ref, 1e-7);
        launch_1d(n, [&] { scale(1.5f, s.data(), n); });
        check("scale n " + std::to_string(n), s, s_ref, 0.0);
        auto fl = nans(n);
        launch_1d(n, [&] { fill(fl.data(), n, 0.25f); });
        check("fill n " + std::to_string(n), fl, std::vector<double>(n, 0.25), 0.0);

        std::vector<float> prm = a, m(n, 0.0f), v(n, 0.0f);
        std::vector<double> p_ref(a.begin(), a.end()), m_ref(n, 0.0), v_ref(n, 0.0);
        for (int t = 1; t <= 3; t++) {
            auto g = randn(n);
            const float b1 = 0.9f, b2 = 0.999f, lr = 0.02f, eps = 1e-8f;
            const float bc1 = 1.0f - std::pow(b1, (float)t), bc2 = 1.0f - std::pow(b2, (float)t);
            const float step = lr / bc1, bc2s = std::sqrt(bc2);
            launch_1d(n, [&] { adam_step(prm.data(), g.data(), m.data(), v.data(), n, b1, b2, eps, step, bc2s); });
            for (int i = 0; i < n; i++) {
                m_ref[i] = b1 * m_ref[i] + (1.0 - b1) * g[i];
                v_ref[i] = b2 * v_ref[i] + (1.0 - b2) * (double)g[i] * g[i];
                p_ref[i] -= step * m_ref[i] / (std::sqrt(v_ref[i]) / bc2s + eps);
            }
        }
        check("adam param n " + std::to_string(n), prm, p_ref, 1e-5);

        // The pixel box: a's values projected (some on its faces already, one NaN), then b's
        // components that point out of it at the result zeroed.
        const float lo[3] = {-0.5f, -1.0f, 0.0f}, hi[3] = {0.5f, 0.25f, 1.5f};
        auto bx = a;
        for (int i = 0; i < n; i += 7) bx[i] = (i % 2 == 0) ? lo[i % 3] : hi[i % 3];
        bx[n / 2] = NAN;
        std::vector<double> x_ref(n), out_ref(n);
        for (int i = 0; i < n; i++) {
            const int c = i % 3;
            const float xi = std::isnan(bx[i]) ? lo[c] : std::min(std::max(bx[i], lo[c]), hi[c]);
            x_ref[i] = xi;
            out_ref[i] = ((xi <= lo[c] && b[i] < 0.0f) || (xi >= hi[c] && b[i] > 0.0f)) ? 0.0 : b[i];
        }
        launch_1d(n, [&] { project_to_box(bx.data(), n, lo[0], lo[1], lo[2], hi[0], hi[1], hi[2]); });
        check("project_to_box n " + std::to_string(n), bx, x_ref, 0.0);
        auto vb = b;
        launch_1d(n, [&] { zero_outward(bx.data(), vb.data(), n, lo[0], lo[1], lo[2], hi[0], hi[1], hi[2]); });
        check("zero_outward n " + std::to_string(n), vb, out_ref, 0.0);
        auto held = a;
        for (int i = 0; i < n; i++) {
            const int c = i % 3;
            out_ref[i] = ((x_ref[i] <= lo[c] && b[i] > 0.0f) || (x_ref[i] >= hi[c] && b[i] < 0.0f)) ? 0.0 : a[i];
        }
        launch_1d(n, [&] { hold_at_bounds(bx.data(), b.data(), held.data(), n, lo[0], lo[1], lo[2], hi[0], hi[1], hi[2]); });
        check("hold_at_bounds n " + std::to_string(n), held, out_ref, 0.0);
    }

    std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
    return failures ? 1 : 0;
}
