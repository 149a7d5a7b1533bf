//! bf16 x bf16 -> f32 matrix products for `--precision bf16` on CPUs with AVX512_BF16
//! (`vdpbf16ps`: Zen 4 and later, Cooper Lake and later Xeons), detected at run time.
//!
//! `vdpbf16ps acc, a, b` adds, in each of 16 f32 lanes, a[2l] b[2l] + a[2l+1] b[2l+1]: a dot
//! product over a *pair* of k. So both operands are packed with the two k of a pair side by side
//! in one 32-bit word (low half the even k, high half the odd k; an odd k's last pair padded
//! with zero), every f32 rounded to the nearest bf16, ties to even:
//!
//! - A (m, k): word (i, q) = (a[i][2q], a[i][2q+1]) at `a + i * a_row + q * a_pair`;
//!   the microkernel broadcasts one word per row and pair.
//! - B (k, n): word (q, j) = (b[2q][j], b[2q+1][j]) at `b + (j / NR) * b_panel + q * b_pair +
//!   j % NR`, read 16 at a time: row-major (b_pair = n, b_panel = NR) for the Gram, or
//!   panel-major (b_pair = NR, b_panel = pairs · NR: each NR-column panel's words contiguous) for
//!   the Winograd weights, which the microkernel then streams as one run of pages.
//!
//! The Gram's fᵀf uses one packed f for both (its A is the same words read down a column), the
//! Winograd tile GEMMs pack V per band and keep U packed from the upload on. The accumulation is
//! f32 throughout (the products of two bf16 are exact in f32). The fp32 path is the reference:
//! nothing here runs unless the backend was made with `Precision::Bf16` and the CPU has the
//! instructions.

/// Columns of the microkernel's tile: two AVX-512 vectors.
pub const NR: usize = 32;
/// Rows of the microkernel's tile: 12 x 2 accumulators + 2 B vectors + 1 broadcast of 32 registers.
pub const MR: usize = 12;

/// Set to `0` to run as if the CPU lacked AVX512_BF16 (the fp32 fallback and its note, on any
/// machine).
pub const ENV: &str = "NEURAL_STYLE_CPU_BF16";

/// Whether this process can run the bf16 kernels: an x86-64 build with the `avx512` feature on a
/// CPU with AVX-512F and AVX512_BF16, and `NEURAL_STYLE_CPU_BF16` not `0`. Checked once.
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| std::env::var(ENV).map_or(true, |v| v != "0") && cpu_has_avx512_bf16())
}

/// The CPU's own answer, ignoring the environment.
pub fn cpu_has_avx512_bf16() -> bool {
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "avx512")))]
    {
        false
    }
}

/// Why `available()` is false, for the one-line note of the fp32 fallback.
pub fn unavailable_reason() -> &'static str {
    if std::env::var(ENV).is_ok_and(|v| v == "0") {
        "NEURAL_STYLE_CPU_BF16=0"
    } else if !cfg!(all(target_arch = "x86_64", feature = "avx512")) {
        "this build has no AVX-512 code (built without the avx512 feature, or not x86-64)"
    } else {
        "this CPU lacks AVX512_BF16"
    }
}

/// f32 -> bf16 bits, round to nearest, ties to even (the `half` crate's conversion).
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

/// bf16 bits -> f32 (exact).
#[inline]
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// One packed word: (lo, hi) = (the even k, the odd k).
#[inline]
fn pair(lo: f32, hi: f32) -> u32 {
    to_bf16(lo) as u32 | (to_bf16(hi) as u32) << 16
}

/// Pairs of k for depth k.
pub fn pairs(k: usize) -> usize {
    k.div_ceil(2)
}

/// Packs src (k, n), element (kk, j) at src[kk * rs + j * cs], as B words: dst[q * n + j]
/// (row-major, pair stride n). dst holds pairs(k) * n words.
pub fn pack_pairs(k: usize, n: usize, src: &[f32], rs: usize, cs: usize, dst: &mut [u32]) {
    pack_pairs_strided(k, n, src, rs, cs, dst, n);
}

/// Words of pack_panels(k, n, ..): pairs(k) words per column, n rounded up to whole panels.
pub fn panel_words(k: usize, n: usize) -> usize {
    pairs(k) * n.div_ceil(NR) * NR
}

/// Packs src (k, n) as pack_pairs does, but panel-major: word (q, j) at
/// dst[(j / NR) * pairs(k) * NR + q * NR + j % NR] (see PackedB::panels); the last panel's
/// columns past n are left as they are (zero in a fresh buffer). dst holds panel_words(k, n).
pub fn pack_panels(k: usize, n: usize, src: &[f32], rs: usize, cs: usize, dst: &mut [u32]) {
    assert!(dst.len() >= panel_words(k, n));
    let panel = pairs(k) * NR;
    for (p, dst) in dst[..panel_words(k, n)].chunks_exact_mut(panel.max(1)).enumerate() {
        let j0 = p * NR;
        pack_pairs_strided(k, NR.min(n - j0), &src[j0 * cs..], rs, cs, dst, NR);
    }
}

/// pack_pairs with pair stride ld >= n: dst[q * ld + j].
fn pack_pairs_strided(k: usize, n: usize, src: &[f32], rs: usize, cs: usize, dst: &mut [u32], ld: usize) {
    // As pack_pairs asked before it took a stride: nothing of dst for k = 0, pairs(k) * n for ld = n.
    assert!(ld >= n && (pairs(k) == 0 || dst.len() >= (pairs(k) - 1) * ld + n));
    if k == 0 || n == 0 {
        return;
    }
    assert!(src.len() > (k - 1) * rs + (n - 1) * cs);
    for q in 0..pairs(k) {
        let (r0, r1) = (2 * q * rs, (2 * q + 1 < k).then_some((2 * q + 1) * rs));
        let row = &mut dst[q * ld..q * ld + n];
        if cs == 1 && available() {
            // SAFETY: available() checked the features; rows 2q (and 2q + 1) hold n floats from r0 (r1).
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            unsafe {
                pack_pair_row_avx512(&src[r0..r0 + n], r1.map(|r1| &src[r1..r1 + n]), row)
            };
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            continue;
        }
        for (j, w) in row.iter_mut().enumerate() {
            *w = pair(src[r0 + j * cs], r1.map_or(0.0, |r1| src[r1 + j * cs]));
        }
    }
}

/// Packs src (m, k) row-major (rows `ld` floats apart) as A words with pair stride 1:
/// dst[i * pairs(k) + q]. dst holds m * pairs(k) words.
pub fn pack_rows(m: usize, k: usize, src: &[f32], ld: usize, dst: &mut [u32]) {
    let k2 = pairs(k);
    assert!(dst.len() >= m * k2);
    if m == 0 || k == 0 {
        return;
    }
    assert!(src.len() >= (m - 1) * ld + k);
    for (i, row) in dst[..m * k2].chunks_exact_mut(k2).enumerate() {
        let s = &src[i * ld..i * ld + k];
        if available() {
            // SAFETY: available() checked the features; s holds k floats, row pairs(k) words.
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            unsafe {
                pack_row_avx512(s, row)
            };
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            continue;
        }
        for (q, w) in row.iter_mut().enumerate() {
            *w = pair(s[2 * q], s.get(2 * q + 1).copied().unwrap_or(0.0));
        }
    }
}

thread_local! {
    /// Per-thread bf16 pairs of one GEMM's left operand (xi_gemms_bf16, the Gram's backward).
    static PACKED_LHS: std::cell::RefCell<[Vec<u32>; 1]> = const { std::cell::RefCell::new([Vec::new()]) };
    /// Per-thread bf16 pairs of a whole feature map (gram_bf16): kept, because at 512² relu1_1's
    /// (33 MB) is past glibc's largest mmap threshold, and a fresh one each call cost ~3% of an
    /// evaluation in page faults and clearing.
    static PACKED_FEATURES: std::cell::RefCell<[Vec<u32>; 1]> = const { std::cell::RefCell::new([Vec::new()]) };
}

/// Runs f with the calling thread's packing buffer of at least `len` words (cpu::with_reused).
pub(crate) fn with_packed_lhs<R>(len: usize, f: impl FnOnce(&mut [u32]) -> R) -> R {
    super::with_reused(&PACKED_LHS, [len], |[buf]| f(&mut buf[..len]))
}

/// with_packed_lhs for gram_bf16's packed feature map.
pub(crate) fn with_packed_features<R>(len: usize, f: impl FnOnce(&mut [u32]) -> R) -> R {
    super::with_reused(&PACKED_FEATURES, [len], |[buf]| f(&mut buf[..len]))
}

/// A operand: (m, pairs) words, word (i, q) at `data[i * row + q * pair]`.
#[derive(Clone, Copy)]
pub struct PackedA<'a> {
    pub data: &'a [u32],
    pub row: usize,
    pub pair: usize,
}

/// B operand: (pairs, n) words, word (q, j) at `data[(j / NR) * panel + q * pair + j % NR]`.
#[derive(Clone, Copy)]
pub struct PackedB<'a> {
    pub data: &'a [u32],
    pub pair: usize,
    pub panel: usize,
}

impl<'a> PackedB<'a> {
    /// pack_pairs's row-major words, n per pair.
    pub fn rows(data: &'a [u32], n: usize) -> Self {
        PackedB { data, pair: n, panel: NR }
    }

    /// pack_panels's panel-major words of depth k2 pairs.
    pub fn panels(data: &'a [u32], k2: usize) -> Self {
        PackedB { data, pair: NR, panel: k2 * NR }
    }

    /// Index of word (q, j).
    fn at(&self, q: usize, j: usize) -> usize {
        (j / NR) * self.panel + q * self.pair + j % NR
    }
}

/// c (m, n) (rows ldc apart) = alpha · A (m, k2 pairs) · B (k2 pairs, n), plus c if accumulate:
/// single-threaded, f32 accumulation. Panics unless available() (callers check it first).
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(all(target_arch = "x86_64", feature = "avx512")), allow(unused_variables))]
pub fn gemm(m: usize, n: usize, k2: usize, a: PackedA, b: PackedB, c: &mut [f32], ldc: usize, accumulate: bool, alpha: f32) {
    assert!(available(), "bf16 gemm called without AVX512_BF16");
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldc >= n && c.len() >= (m - 1) * ldc + n);
    if k2 > 0 {
        assert!(a.data.len() > (m - 1) * a.row + (k2 - 1) * a.pair, "A too short");
        // Word (k2 - 1, n - 1) is the last that any panel reads (a panel's words precede the next's).
        assert!(b.data.len() > b.at(k2 - 1, n - 1), "B too short");
    }
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    // SAFETY: the asserts bound every read of A, B and every write of c; features checked.
    unsafe {
        gemm_avx512(m, n, k2, a, b, c.as_mut_ptr(), ldc, accumulate, alpha)
    }
}

/// The exact f32 product of the bf16-rounded operands, for tests: c (m, n) = alpha · round(a) ·
/// round(b) (+ c), a (m, k) and b (k, n) row-major, summed in f64.
#[allow(clippy::too_many_arguments)]
pub fn gemm_reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], accumulate: bool, alpha: f32) {
    let r = |x: f32| from_bf16(to_bf16(x)) as f64;
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|kk| r(a[i * k + kk]) * r(b[kk * n + j])).sum();
            let v = alpha as f64 * s;
            c[i * n + j] = if accumulate { c[i * n + j] + v as f32 } else { v as f32 };
        }
    }
}

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
use std::arch::x86_64::*;

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
unsafe fn pack_row_avx512(s: &[f32], row: &mut [u32]) {
    let k = s.len();
    let mut q = 0;
    // 32 floats of one row are 16 pairs, already in the order of the words: one conversion.
    while 2 * q + 32 <= k {
        let lo = _mm512_loadu_ps(s.as_ptr().add(2 * q));
        let hi = _mm512_loadu_ps(s.as_ptr().add(2 * q + 16));
        let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(row.as_mut_ptr().add(q) as *mut _, v);
        q += 16;
    }
    for (qq, w) in row.iter_mut().enumerate().skip(q) {
        *w = pair(s[2 * qq], s.get(2 * qq + 1).copied().unwrap_or(0.0));
    }
}

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
#[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
unsafe fn pack_pair_row_avx512(even: &[f32], odd: Option<&[f32]>, row: &mut [u32]) {
    let n = row.len();
    let mut j = 0;
    while j + 16 <= n {
        let e: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(even.as_ptr().add(j))));
        let o: __m256i = match odd {
            Some(odd) => std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(odd.as_ptr().add(j)))),
            None => _mm256_setzero_si256(),
        };
        let w = _mm512_or_si512(_mm512_cvtepu16_epi32(e), _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(o)));
        _mm512_storeu_si512(row.as_mut_ptr().add(j) as *mut _, w);
        j += 16;
    }
    for jj in j..n {
        row[jj] = pair(even[jj], odd.map_or(0.0, |o| o[jj]));
    }
}

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_avx512(m: usize, n: usize, k2: usize, a: PackedA, b: PackedB, c: *mut f32, ldc: usize, accumulate: bool, alpha: f32) {
    // B's panel of NR columns (k2 x 32 words, <= 32 KiB at k = 512) stays in L1 while the
    // A rows stream past it.
    for j0 in (0..n).step_by(NR) {
        let cols = NR.min(n - j0);
        let masks = [lane_mask(cols), lane_mask(cols.saturating_sub(16))];
        let bp = b.data.as_ptr().add(b.at(0, j0));
        let mut i0 = 0;
        while i0 + MR <= m {
            tile::<MR>(k2, a.data.as_ptr().add(i0 * a.row), a.row, a.pair, bp, b.pair, masks, c.add(i0 * ldc + j0), ldc, accumulate, alpha);
            i0 += MR;
        }
        let ap = a.data.as_ptr().add(i0 * a.row);
        let cp = c.add(i0 * ldc + j0);
        match m - i0 {
            0 => {}
            1 => tile::<1>(k2, ap, a.row, a.pair, bp, b.pair, masks, cp, ldc, accumulate, alpha),
            2 => tile::<2>(k2, ap, a.row, a.pair, bp, b.pair, masks, cp, ldc, accumulate, alpha),
            3 => tile::<3>(k2, ap, a.row, a.pair, bp, b.pair, masks, cp, ldc, accumulate, alpha),
            4 => tile::<4>(k2, ap, a.row, a.pair, bp, b.pair, masks, cp, ldc, accumulate, alpha),
            5 => tile::<5>(k2, ap, a.row, a.pair, bp, b.pair, masks, cp, ldc, accumulate, alpha),
            6 => tile::<6>(k2, ap, a.row, a.pair, bp, b.pair, masks, cp, ldc, accumulate, alpha),
            7 => tile::<7>(k2, ap, a.row, a.pair, bp, b.pair, masks, cp, ldc, accumulate, alpha),
            8 => tile::<8>(k2, ap, a.row, a.pair, bp, b.pair, masks, cp, ldc, accumulate, alpha),
            9 => tile::<9>(k2, ap, a.row, a.pair, bp, b.pair, masks, cp, ldc, accumulate, alpha),
            10 => tile::<10>(k2, ap, a.row, a.pair, bp, b.pair, masks, cp, ldc, accumulate, alpha),
            11 => tile::<11>(k2, ap, a.row, a.pair, bp, b.pair, masks, cp, ldc, accumulate, alpha),
            _ => unreachable!(),
        }
    }
}

/// The first `lanes` (<= 16) of 16 set.
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
fn lane_mask(lanes: usize) -> __mmask16 {
    if lanes >= 16 {
        0xFFFF
    } else {
        ((1u32 << lanes) - 1) as __mmask16
    }
}

/// C (R x up to 32, masked) = alpha · A (R rows) · B panel (+ C): R x 2 accumulators, one
/// `vdpbf16ps` per accumulator and pair.
/// # Safety
/// As gemm_avx512's asserts: every row of A reads k2 words; B reads k2 rows of the masked lanes.
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
#[inline]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn tile<const R: usize>(k2: usize, a: *const u32, a_row: usize, a_pair: usize, b: *const u32, b_pair: usize, masks: [__mmask16; 2], c: *mut f32, ldc: usize, accumulate: bool, alpha: f32) {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (a_row_ptrs, full) = (std::array::from_fn::<*const u32, R, _>(|r| a.add(r * a_row)), masks[1] == 0xFFFF);
    for q in 0..k2 {
        let bq = b.add(q * b_pair);
        let (b0, b1): (__m512bh, __m512bh) = if full {
            (std::mem::transmute(_mm512_loadu_si512(bq as *const _)), std::mem::transmute(_mm512_loadu_si512(bq.add(16) as *const _)))
        } else {
            (std::mem::transmute(_mm512_maskz_loadu_epi32(masks[0], bq as *const i32)), std::mem::transmute(_mm512_maskz_loadu_epi32(masks[1], bq.add(16) as *const i32)))
        };
        for r in 0..R {
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*(a_row_ptrs[r].add(q * a_pair) as *const i32)));
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
        }
    }
    let va = _mm512_set1_ps(alpha);
    for r in 0..R {
        for h in 0..2 {
            let (dst, mask) = (c.add(r * ldc + 16 * h), masks[h]);
            if mask == 0 {
                continue;
            }
            let mut v = _mm512_mul_ps(acc[r][h], va);
            if accumulate {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, dst));
            }
            _mm512_mask_storeu_ps(dst, mask, v);
        }
    }
}

/// Says, once per process, that the run falls back to fp32 (for a caller that asked for bf16).
pub fn note_fallback_once() {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| eprintln!("note: --precision bf16 on the CPU: {}; computing in fp32", unavailable_reason()));
}

/// The CPU's brand string, family and model (from CPUID), e.g. "AMD EPYC (family 26, model 2)".
pub fn cpu_kind() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID exists on every x86-64 CPU; the extended leaves are checked before being read.
        use std::arch::x86_64::__cpuid;
        let max_ext = __cpuid(0x8000_0000).eax;
        let brand = if max_ext >= 0x8000_0004 {
            let bytes: Vec<u8> = (0x8000_0002..=0x8000_0004u32)
                .flat_map(|leaf| {
                    let r = __cpuid(leaf);
                    [r.eax, r.ebx, r.ecx, r.edx].into_iter().flat_map(|w| w.to_le_bytes())
                })
                .collect();
            String::from_utf8_lossy(&bytes).trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_string()
        } else {
            "unknown x86-64".to_string()
        };
        let eax = __cpuid(1).eax;
        let (base_family, base_model) = ((eax >> 8) & 0xF, (eax >> 4) & 0xF);
        let family = if base_family == 0xF { base_family + ((eax >> 20) & 0xFF) } else { base_family };
        let model = if base_family == 0x6 || base_family == 0xF { base_model | ((eax >> 16) & 0xF) << 4 } else { base_model };
        format!("{brand} (family {family}, model {model})")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_string()
    }
}

/// The instruction set the CPU backend's matrix products use in this process, for `bench`.
pub fn instruction_set(bf16: bool) -> &'static str {
    if bf16 {
        return "AVX512_BF16 (vdpbf16ps: bf16 x bf16 -> f32)";
    }
    #[cfg(target_arch = "x86_64")]
    {
        if cfg!(feature = "avx512") && is_x86_feature_detected!("avx512f") {
            return "AVX-512F (fp32 FMA)";
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return "AVX2 + FMA (fp32)";
        }
    }
    "generic (fp32)"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes "SKIPPED <test>: <why>" where `cargo test` shows it (stderr is not captured).
    fn skipped(test: &str) -> bool {
        if available() {
            return false;
        }
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), "SKIPPED cpu::bf16::{test}: {}", unavailable_reason());
        true
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), to_bf16(1.0));
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): up.
        assert_eq!(from_bf16(to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 1.0 / 64.0);
        assert_eq!(from_bf16(to_bf16(1.0 + 1.5 / 256.0)), 1.0 + 1.0 / 128.0);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    }

    /// The vector packers give the scalar conversion's words (RNE, odd k padded with zero).
    #[test]
    fn vector_and_scalar_packing_agree() {
        if skipped("vector_and_scalar_packing_agree") {
            return;
        }
        let mut rng = crate::rng::Rng::new(5);
        for (k, n) in [(1, 1), (3, 17), (64, 64), (67, 40), (33, 31)] {
            let src = rng.normal_vec(k * n, 3.0);
            let mut rows = vec![0u32; n * pairs(k)];
            // (n, k) rows of k floats.
            pack_rows(n, k, &src, k, &mut rows);
            for i in 0..n {
                for q in 0..pairs(k) {
                    let want = pair(src[i * k + 2 * q], if 2 * q + 1 < k { src[i * k + 2 * q + 1] } else { 0.0 });
                    assert_eq!(rows[i * pairs(k) + q], want, "pack_rows k {k} n {n} ({i}, {q})");
                }
            }
            let mut cols = vec![0u32; pairs(k) * n];
            pack_pairs(k, n, &src, n, 1, &mut cols);
            for q in 0..pairs(k) {
                for j in 0..n {
                    let want = pair(src[2 * q * n + j], if 2 * q + 1 < k { src[(2 * q + 1) * n + j] } else { 0.0 });
                    assert_eq!(cols[q * n + j], want, "pack_pairs k {k} n {n} ({q}, {j})");
                }
            }
        }
    }

    /// The microkernel against the exact product of the rounded operands, over shapes with
    /// every tail (m % 12, n % 32, n % 16, odd k), accumulate and alpha; then against the f32
    /// product, within bf16's rounding; and B panel-major against B row-major, bit for bit.
    #[test]
    fn gemm_matches_the_rounded_product() {
        if skipped("gemm_matches_the_rounded_product") {
            return;
        }
        let mut rng = crate::rng::Rng::new(7);
        for (m, n, k) in [(1, 1, 1), (12, 32, 2), (13, 33, 7), (25, 16, 64), (7, 50, 130), (40, 64, 512), (3, 100, 9)] {
            let a = rng.normal_vec(m * k, 1.0);
            let b = rng.normal_vec(k * n, 1.0);
            let c0 = rng.normal_vec(m * n, 1.0);
            let (mut pa, mut pb) = (vec![0u32; m * pairs(k)], vec![0u32; pairs(k) * n]);
            pack_rows(m, k, &a, k, &mut pa);
            pack_pairs(k, n, &b, n, 1, &mut pb);
            for (accumulate, alpha) in [(false, 1.0), (true, 0.5)] {
                let mut c = if accumulate { c0.clone() } else { vec![f32::NAN; m * n] };
                gemm(m, n, pairs(k), PackedA { data: &pa, row: pairs(k), pair: 1 }, PackedB::rows(&pb, n), &mut c, n, accumulate, alpha);
                // The same B panel-major (pack_panels): the same words, read in the same order.
                let mut pp = vec![0u32; panel_words(k, n)];
                pack_panels(k, n, &b, n, 1, &mut pp);
                for q in 0..pairs(k) {
                    for j in 0..n {
                        assert_eq!(pp[PackedB::panels(&pp, pairs(k)).at(q, j)], pb[q * n + j], "pack_panels k {k} n {n} ({q}, {j})");
                    }
                }
                let mut c_panels = if accumulate { c0.clone() } else { vec![f32::NAN; m * n] };
                gemm(m, n, pairs(k), PackedA { data: &pa, row: pairs(k), pair: 1 }, PackedB::panels(&pp, pairs(k)), &mut c_panels, n, accumulate, alpha);
                assert!(c.iter().zip(&c_panels).all(|(x, y)| x.to_bits() == y.to_bits()), "({m}, {n}, {k}): panel-major B changed the product");
                let mut rounded = c0.clone();
                gemm_reference(m, n, k, &a, &b, &mut rounded, accumulate, alpha);
                // Against the exact product of the rounded operands, only the f32 accumulation's
                // roundings: |Δ| <= alpha k 2^-23 Σ|a||b| (+ the add of c). Against the f32
                // operands, also the rounding to bf16 (8 significant bits, to nearest): <= 2^-8
                // relative per operand, 2^-7 + 2^-16 per product.
                for i in 0..m {
                    for j in 0..n {
                        let products = (0..k).map(|kk| a[i * k + kk] as f64 * b[kk * n + j] as f64);
                        let (exact, magnitude) = products.fold((0.0, 0.0), |(s, mag), p| (s + p, mag + p.abs()));
                        let c_add = if accumulate { c0[i * n + j] as f64 } else { 0.0 };
                        let want = alpha as f64 * exact + c_add;
                        let slack = 1e-6 * (want.abs() + c_add.abs()).max(1.0);
                        let got = c[i * n + j] as f64;
                        let bound = alpha as f64 * k as f64 * 2f64.powi(-23) * magnitude + slack;
                        assert!((got - rounded[i * n + j] as f64).abs() <= bound, "({m}, {n}, {k}) acc {accumulate} [{i}, {j}]: {got} vs the rounded product {}", rounded[i * n + j]);
                        let bound = alpha as f64 * (2f64.powi(-7) + 2f64.powi(-15) + k as f64 * 2f64.powi(-23)) * magnitude + slack;
                        assert!((got - want).abs() <= bound, "({m}, {n}, {k}) [{i}, {j}]: {got} vs the f32 product {want} (bound {bound:e})");
                    }
                }
            }
        }
    }

    #[test]
    fn cpu_kind_names_a_cpu() {
        let kind = cpu_kind();
        assert!(kind.contains("family") || !cfg!(target_arch = "x86_64"), "{kind}");
    }
}
