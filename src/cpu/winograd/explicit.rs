//! The Winograd tile transforms of winograd.rs written with intrinsics, for the tiles that lie
//! wholly inside the image with whole 16-channel blocks: nearly every tile of the early layers.
//! Same names, same order and the same arithmetic as the portable versions there (the same
//! multiplies and adds in the same order, no FMA), so the results are bit-identical; the
//! portable code kept its 6x6 tiles as arrays of floats and moved them through the stack (`perf
//! annotate`: most of its time on stack stores and reloads).
//!
//! Every function is generic over the register (`Vector`): one 16-channel block per call with
//! AVX-512 (`__m512`), or one half of it per call with AVX2 (`__m256`, called for c0 and c0 + 8).
//! They are `#[inline(always)]`, to be compiled inside winograd.rs's `*_avx512` and `*_avx2`
//! functions, whose target features the intrinsics need. Activations are (h, w, c): a tile's
//! pixel (i, j) is `i * row + j * pix` floats from its top-left one (row = w c, pix = c). A
//! transformed tile's position ξ = (r, s) is at `(r * 6 + s) * xi_stride` (see winograd.rs).

#![allow(clippy::needless_range_loop)] // r, s: positions of the 6x6 tile, as in winograd.rs

use super::{ALPHA, TILE};
use std::arch::x86_64::*;

/// The f32 vector operations the transforms use, on one register of LANES channels. Every
/// method is an intrinsic of the register's instruction set: callable only where it is enabled.
pub trait Vector: Copy {
    /// Channels per register.
    const LANES: usize;
    unsafe fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(p: *mut f32, v: Self);
    unsafe fn add(a: Self, b: Self) -> Self;
    unsafe fn sub(a: Self, b: Self) -> Self;
    unsafe fn mul(a: Self, b: Self) -> Self;
    /// The portable ReLU select, lane by lane: v where v > 0, else +0 (also for NaN and -0).
    unsafe fn relu(v: Self) -> Self;
}

#[cfg(feature = "avx512")]
impl Vector for __m512 {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        _mm512_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        _mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: Self, b: Self) -> Self {
        _mm512_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn relu(v: Self) -> Self {
        _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, _mm512_setzero_ps()), v)
    }
}

impl Vector for __m256 {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        _mm256_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: Self, b: Self) -> Self {
        _mm256_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn relu(v: Self) -> Self {
        // The compare's all-ones lanes keep v, the rest become +0.
        _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(v, _mm256_setzero_ps()), v)
    }
}

/// r = Bᵀ d (winograd::bt6).
#[inline(always)]
unsafe fn bt6<V: Vector>(d: [V; ALPHA]) -> [V; ALPHA] {
    let (add, sub, mul, splat) = (V::add, V::sub, V::mul, V::splat);
    let (two, four, five) = (splat(2.0), splat(4.0), splat(5.0));
    let [d0, d1, d2, d3, d4, d5] = d;
    [
        add(sub(mul(four, d0), mul(five, d2)), d4),
        add(add(mul(splat(-4.0), add(d1, d2)), d3), d4),
        add(sub(mul(four, sub(d1, d2)), d3), d4),
        add(sub(mul(two, sub(d3, d1)), d2), d4),
        add(sub(mul(two, sub(d1, d3)), d2), d4),
        add(sub(mul(four, d1), mul(five, d3)), d5),
    ]
}

/// r = Aᵀ m (winograd::at6).
#[inline(always)]
unsafe fn at6<V: Vector>(m: [V; ALPHA]) -> [V; TILE] {
    let (add, sub, mul, splat) = (V::add, V::sub, V::mul, V::splat);
    let [m0, m1, m2, m3, m4, m5] = m;
    let (p12, n12, p34, n34) = (add(m1, m2), sub(m1, m2), add(m3, m4), sub(m3, m4));
    [add(add(m0, p12), p34), add(n12, mul(splat(2.0), n34)), add(p12, mul(splat(4.0), p34)), add(add(n12, mul(splat(8.0), n34)), m5)]
}

/// r = A g (winograd::a6).
#[inline(always)]
unsafe fn a6<V: Vector>(g: [V; TILE]) -> [V; ALPHA] {
    let (add, sub, mul, splat) = (V::add, V::sub, V::mul, V::splat);
    let [g0, g1, g2, g3] = g;
    let (p02, p13) = (add(g0, g2), add(g1, g3));
    let (q02, q13) = (add(g0, mul(splat(4.0), g2)), add(mul(splat(2.0), g1), mul(splat(8.0), g3)));
    [g0, add(p02, p13), sub(p02, p13), add(q02, q13), sub(q02, q13), g3]
}

/// r = B v (winograd::b6).
#[inline(always)]
unsafe fn b6<V: Vector>(v: [V; ALPHA]) -> [V; ALPHA] {
    let (add, sub, mul, splat) = (V::add, V::sub, V::mul, V::splat);
    let (two, four, five) = (splat(2.0), splat(4.0), splat(5.0));
    let [v0, v1, v2, v3, v4, v5] = v;
    [
        mul(four, v0),
        add(mul(four, add(sub(v2, v1), v5)), mul(two, sub(v4, v3))),
        sub(sub(sub(mul(splat(-5.0), v0), mul(four, add(v1, v2))), v3), v4),
        sub(add(sub(v1, v2), mul(two, sub(v3, v4))), mul(five, v5)),
        add(add(add(add(v0, v1), v2), v3), v4),
        v5,
    ]
}

/// v_t[ξ * xi_stride..][..LANES] = (Bᵀ d B)[ξ], d the 6x6 pixels from x (winograd::input_tile).
/// # Safety
/// x + i row + j pix + [0, LANES) readable for i, j < 6; v_t + ξ xi_stride + [0, LANES) writable;
/// V's instructions enabled.
#[inline(always)]
pub unsafe fn input_tile<V: Vector>(x: *const f32, row: usize, pix: usize, v_t: *mut f32, xi_stride: usize) {
    let t: [[V; ALPHA]; ALPHA] = std::array::from_fn(|j| bt6(std::array::from_fn(|i| V::load(x.add(i * row + j * pix)))));
    for r in 0..ALPHA {
        let v = bt6(std::array::from_fn(|j| t[j][r]));
        for (s, v) in v.into_iter().enumerate() {
            V::store(v_t.add((r * ALPHA + s) * xi_stride), v);
        }
    }
}

/// The 4x4 pixels at y = Aᵀ m A + bias, then ReLU if `relu` (winograd::output_tile), m[ξ] at
/// m_t[ξ * xi_stride..][..LANES].
/// # Safety
/// m_t + ξ xi_stride + [0, LANES) readable; y + i row + j pix + [0, LANES) writable for i, j < 4;
/// V's instructions enabled.
#[inline(always)]
pub unsafe fn output_tile<V: Vector>(m_t: *const f32, xi_stride: usize, bias: V, relu: bool, y: *mut f32, row: usize, pix: usize) {
    let t: [[V; TILE]; ALPHA] = std::array::from_fn(|s| at6(std::array::from_fn(|r| V::load(m_t.add((r * ALPHA + s) * xi_stride)))));
    for r in 0..TILE {
        let o = at6(std::array::from_fn(|s| t[s][r]));
        for (q, o) in o.into_iter().enumerate() {
            let out = V::add(o, bias);
            V::store(y.add(r * row + q * pix), if relu { V::relu(out) } else { out });
        }
    }
}

/// dm_t[ξ * xi_stride..][..LANES] = (A dY Aᵀ)[ξ], dY the 4x4 pixels from dy
/// (winograd::output_grad_tile).
/// # Safety
/// dy + i row + j pix + [0, LANES) readable for i, j < 4; dm_t + ξ xi_stride + [0, LANES)
/// writable; V's instructions enabled.
#[inline(always)]
pub unsafe fn output_grad_tile<V: Vector>(dy: *const f32, row: usize, pix: usize, dm_t: *mut f32, xi_stride: usize) {
    let t: [[V; ALPHA]; TILE] = std::array::from_fn(|q| a6(std::array::from_fn(|p| V::load(dy.add(p * row + q * pix)))));
    for r in 0..ALPHA {
        let v = a6(std::array::from_fn(|q| t[q][r]));
        for (s, v) in v.into_iter().enumerate() {
            V::store(dm_t.add((r * ALPHA + s) * xi_stride), v);
        }
    }
}

/// The 6x6 pixels at dx += B dV Bᵀ (winograd::input_grad_tile), dV[ξ] at dv_t[ξ *
/// xi_stride..][..LANES]; stored instead of added in patch row i where bit i of first_rows is
/// set, except its first two columns when `left_written` (the tile to the left wrote them).
/// # Safety
/// dv_t + ξ xi_stride + [0, LANES) readable; dx + i row + j pix + [0, LANES) writable for i, j <
/// 6; V's instructions enabled.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn input_grad_tile<V: Vector>(dv_t: *const f32, xi_stride: usize, first_rows: u8, left_written: bool, dx: *mut f32, row: usize, pix: usize) {
    let t: [[V; ALPHA]; ALPHA] = std::array::from_fn(|s| b6(std::array::from_fn(|r| V::load(dv_t.add((r * ALPHA + s) * xi_stride)))));
    for i in 0..ALPHA {
        let o = b6(std::array::from_fn(|s| t[s][i]));
        for (j, o) in o.into_iter().enumerate() {
            let dst = dx.add(i * row + j * pix);
            if first_rows >> i & 1 == 1 && (!left_written || j >= 2) {
                V::store(dst, o);
            } else {
                V::store(dst, V::add(V::load(dst), o));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{first_rows, input_grad_tile, input_tile, output_grad_tile, output_tile, Simd, CH, NXI, TILE};

    /// Every tile of an image with interior tiles and edge ones (the explicit transforms take the
    /// first, the portable code the rest), through Simd::Avx512 and Simd::Avx2 (each where the
    /// CPU and the build have it) and through the portable functions: the same bits, in all four
    /// transforms, and the explicit path was taken (c a whole number of 16-channel blocks).
    #[test]
    fn explicit_transforms_give_the_portable_bits() {
        let mut tested = 0;
        if cfg!(feature = "avx512") && is_x86_feature_detected!("avx512f") {
            compare_with_portable(Simd::Avx512);
            tested += 1;
        } else {
            eprintln!("SKIPPED cpu::winograd::explicit::explicit_transforms_give_the_portable_bits for AVX-512: no AVX-512F (or built without the avx512 feature)");
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            compare_with_portable(Simd::Avx2);
            tested += 1;
        } else {
            eprintln!("SKIPPED cpu::winograd::explicit::explicit_transforms_give_the_portable_bits for AVX2: no AVX2 and FMA");
        }
        eprintln!("explicit_transforms_give_the_portable_bits: {tested} instruction set(s) compared");
    }

    fn compare_with_portable(simd: Simd) {
        let (h, wd, c): (usize, usize, usize) = (15, 18, 2 * CH);
        let (tiles_y, tiles_x) = (h.div_ceil(TILE), wd.div_ceil(TILE));
        let mut rng = crate::rng::Rng::new(11);
        let x = rng.normal_vec(h * wd * c, 1.0);
        // A bias of -0 on channel 0: with the all -0 tiles below, the output before the ReLU is
        // -0 there, which the select must turn into +0.
        let mut bias = rng.normal_vec(c, 0.5);
        bias[0] = -0.0;
        let xi_stride = c + 3 * CH;
        let random = rng.normal_vec(NXI * xi_stride, 1.0);
        let negative_zeros = vec![-0.0f32; NXI * xi_stride];
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for ty in 0..tiles_y {
            for tx in 0..tiles_x {
                unsafe {
                    let (mut fast, mut portable) = (vec![0.0f32; NXI * xi_stride], vec![0.0f32; NXI * xi_stride]);
                    simd.input_tile(&x, h, wd, c, ty, tx, fast.as_mut_ptr(), xi_stride);
                    input_tile(&x, h, wd, c, ty, tx, portable.as_mut_ptr(), xi_stride);
                    assert_eq!(bits(&fast), bits(&portable), "input_tile ({ty}, {tx})");
                    simd.output_grad_tile(&x, h, wd, c, ty, tx, fast.as_mut_ptr(), xi_stride);
                    output_grad_tile(&x, h, wd, c, ty, tx, portable.as_mut_ptr(), xi_stride);
                    assert_eq!(bits(&fast), bits(&portable), "output_grad_tile ({ty}, {tx})");
                    for (m, b) in [&random, &negative_zeros].into_iter().flat_map(|m| [(m, None), (m, Some(&bias[..]))]) {
                        let (mut fast, mut portable) = (x.clone(), x.clone());
                        simd.output_tile(m, xi_stride, b, h, wd, c, ty, tx, fast.as_mut_ptr());
                        output_tile(m, xi_stride, b, h, wd, c, ty, tx, portable.as_mut_ptr());
                        assert_eq!(bits(&fast), bits(&portable), "output_tile ({ty}, {tx}) bias {}", b.is_some());
                    }
                    for band in [(0, tiles_y), (ty, ty + 1)] {
                        let rows = first_rows(ty, band.0, band.1, tiles_y);
                        for c0 in (0..c).step_by(CH) {
                            let (mut fast, mut portable) = (x.clone(), x.clone());
                            simd.input_grad_tile(&random, xi_stride, h, wd, c, c0, ty, tx, rows, fast.as_mut_ptr());
                            input_grad_tile(&random, xi_stride, h, wd, c, c0, ty, tx, rows, portable.as_mut_ptr());
                            assert_eq!(bits(&fast), bits(&portable), "input_grad_tile ({ty}, {tx}) c0 {c0} rows {rows:06b}");
                        }
                    }
                }
            }
        }
    }
}
