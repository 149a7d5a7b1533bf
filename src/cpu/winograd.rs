//! Winograd F(4x4, 3x3) for the 3x3, stride 1, pad 1 convolutions, channels-last (h, w, c) like
//! the rest of src/cpu. Same results as conv.rs's direct path up to fp32 rounding (the bound is
//! in tests/it/winograd.rs and PERFORMANCE.md), with 4x fewer multiplies: 36 per 4x4 output tile
//! and (c_in, c_out) pair instead of 16 * 9 = 144.
//!
//! For one channel pair, a 6x6 input tile d (the 4x4 output tile grown by the 3x3 kernel's halo:
//! rows 4ty-1 .. 4ty+4, columns 4tx-1 .. 4tx+4, zero outside the image) and the 3x3 kernel g
//! give the 4x4 output tile (Lavin & Gray 2015; a correlation, as conv.rs computes)
//!
//!   Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//!
//! with
//!
//! ```text
//!      | 4  0 -5  0  1  0 |         | 1/4     0     0  |        | 1  1  1  1  1  0 |
//!      | 0 -4 -4  1  1  0 |         | -1/6 -1/6  -1/6  |   Aᵀ = | 0  1 -1  2 -2  0 |
//! Bᵀ = | 0  4 -4 -1  1  0 |    G =  | -1/6  1/6  -1/6  |        | 0  1  1  4  4  0 |
//!      | 0 -2 -1  2  1  0 |         | 1/24 1/12   1/6  |        | 0  1 -1  8 -8  1 |
//!      | 0  2 -1 -2  1  0 |         | 1/24 -1/12  1/6  |
//!      | 0  4  0 -5  0  1 |         |  0     0     1   |
//! ```
//!
//! Summed over input channels, the elementwise product becomes, for each of the 36 positions
//! ξ = (i, j) of the 6x6 transformed tile, one GEMM over all tiles:
//! M[ξ] (tiles, c_out) = V[ξ] (tiles, c_in) · U[ξ] (c_in, c_out), where V = Bᵀ d B per tile and
//! channel, U = G g Gᵀ per channel pair (the frozen weights: transformed once, at load, in f64).
//!
//! The backward-input conv is this algorithm transposed, on the same U (so the weights are kept
//! once, not once per direction): with dY the output gradient of a tile,
//!
//!   dM = A dY Aᵀ,   dV[ξ] (tiles, c_in) = dM[ξ] (tiles, c_out) · U[ξ]ᵀ,   dd = B dV Bᵀ,
//!
//! and dx is the sum of every tile's 6x6 dd over the input pixels it covers (neighbouring
//! tiles' patches overlap by 2 pixels).
//!
//! Layouts: U (36, c_in, c_out), row-major per ξ with rows of u_row_stride(c_out) floats (see
//! there), from the forward layout (3, 3, c_in, c_out). With more than one band, the
//! backward-input transposes it to (36, c_out, c_in) once per call (see xi_gemms for why).
//! Per band of whole tile rows, V (36, tiles, c_in) and M (36, tiles, c_out): each ξ's GEMM
//! operands are contiguous row-major matrices; a tile's transform writes (reads) 36 vectors of
//! 16 channels, one per ξ, tiles * c apart.
//! A band is (1) input transform, parallel over tiles; (2) the 36 GEMMs on `gemm`, parallel over
//! ξ, so each thread reads only its ξ's weights; (3) output transform, parallel over tiles, with
//! the bias and ReLU fused for the forward. Band sizes depend only on the shape, and each output
//! is summed in one fixed order: the result does not depend on the thread count.

#[cfg(target_arch = "x86_64")]
mod explicit;

use super::bf16;
use super::matmul::{self, Strided};
use crate::backend::ConvShape;
use rayon::prelude::*;
use super::with_reused;
use std::cell::RefCell;

/// Output tile side (m of F(m, r)).
pub const TILE: usize = 4;
/// Input tile side, m + r - 1.
const ALPHA: usize = 6;
/// Positions per transformed tile.
const NXI: usize = ALPHA * ALPHA;
/// Channels per transform step: one AVX-512 vector.
const CH: usize = 16;
/// Target bytes of one band's V and M together (the L2 of both cores).
const BAND_BYTES: usize = 4 << 20;
/// Fewer tiles per band than this and gemm's per-call packing of U[ξ] dominates.
const MIN_BAND_TILES: usize = 64;

/// The filter transform G (6 x 3), in f64 for the one-off weight transform.
const G: [[f64; 3]; ALPHA] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// Floats of the transformed weights of a (c_in, c_out) conv: (36, c_in, c_out), padded rows.
pub fn transformed_len(c_in: usize, c_out: usize) -> usize {
    NXI * c_in * u_row_stride(c_out)
}

/// Floats from one row of U[ξ] (one input channel) to the next: c_out and 16 of padding.
/// The backward-input's GEMMs read U down its columns (c_in the vector dimension), and gemm
/// packs such an operand float by float: with rows a power-of-two size apart (2 KiB at
/// c_out = 512) every read falls in the same two L1 sets and misses; 64 more bytes spread them
/// over all sets (twice as fast, measured on gemm alone).
fn u_row_stride(c_out: usize) -> usize {
    c_out + 16
}

/// U (36, c_in, c_out) = G g Gᵀ per channel pair, from w in the forward layout (3, 3, c_in, c_out).
/// For the backward-input conv pass the flipped layout (3, 3, c_out, c_in) with c_in and c_out
/// swapped. Computed in f64, rounded once.
pub fn transform_weights(c_in: usize, c_out: usize, w: &[f32]) -> Vec<f32> {
    let (n, ld) = (c_in * c_out, u_row_stride(c_out));
    assert!(w.len() >= 9 * n);
    let mut u = vec![0.0f32; transformed_len(c_in, c_out)];
    u.par_chunks_mut(c_in * ld).enumerate().for_each(|(xi, u_xi)| {
        let (i, j) = (xi / ALPHA, xi % ALPHA);
        let mut acc = vec![0.0f64; n];
        for ky in 0..3 {
            for kx in 0..3 {
                let coef = G[i][ky] * G[j][kx];
                if coef == 0.0 {
                    continue;
                }
                for (a, &v) in acc.iter_mut().zip(&w[(ky * 3 + kx) * n..][..n]) {
                    *a += coef * v as f64;
                }
            }
        }
        for (row, acc_row) in u_xi.chunks_mut(ld).zip(acc.chunks(c_out)) {
            for (o, a) in row.iter_mut().zip(acc_row) {
                *o = *a as f32;
            }
        }
    });
    u
}

/// Whether Winograd beats the direct path for this shape: it needs c_in >= 64 (conv1_1's 3 input
/// channels make K too small for the tile GEMMs) and enough output per tile, since partial tiles
/// at the right and bottom edges cost as much as full ones (36 multiplies per tile against 9 per
/// output pixel directly: demand 1.5x of margin for the transforms).
pub fn pays(s: ConvShape) -> bool {
    let tiles = s.h.div_ceil(TILE) * s.w.div_ceil(TILE);
    s.c_in >= 64 && s.c_out >= 16 && 6 * tiles < s.h * s.w
}

/// y = relu(conv3x3(x, w) + b) with u = transform_weights(c_in, c_out, w).
/// x (h, w, c_in), u (36, c_in, c_out), b (c_out), y (h, w, c_out).
pub fn conv3x3_fwd(s: ConvShape, x: &[f32], u: &[f32], b: &[f32], y: &mut [f32]) {
    assert!(b.len() >= s.c_out);
    conv3x3_winograd(s, x, u, None, Some(b), y);
}

/// conv3x3_fwd with the 36 tile GEMMs in bf16 (bf16::gemm, f32 accumulation): V rounded per
/// band, U taken from `packed` = pack_weights_bf16(c_in, c_out, u). The transforms stay f32.
/// Needs bf16::available().
pub fn conv3x3_fwd_bf16(s: ConvShape, x: &[f32], u: &[f32], packed: &[u32], b: &[f32], y: &mut [f32]) {
    assert!(b.len() >= s.c_out && packed.len() >= bf16_weight_words(s.c_in, s.c_out));
    conv3x3_winograd(s, x, u, Some(packed), Some(b), y);
}

/// conv3x3_bwd_input with the tile GEMMs in bf16 (see conv3x3_fwd_bf16).
pub fn conv3x3_bwd_input_bf16(s: ConvShape, dy: &[f32], u: &[f32], packed: &[u32], dx: &mut [f32]) {
    assert!(packed.len() >= bf16_weight_words(s.c_in, s.c_out));
    conv3x3_winograd_transposed(s, dy, u, Some(packed), dx);
}

/// 32-bit words of pack_weights_bf16(c_in, c_out, ·): both directions' U in bf16 pairs.
pub fn bf16_weight_words(c_in: usize, c_out: usize) -> usize {
    NXI * (bf16::panel_words(c_in, c_out) + bf16::panel_words(c_out, c_in))
}

/// U (36, c_in, c_out) = transform_weights(..) packed once for the bf16 tile GEMMs (see bf16.rs),
/// panel-major (bf16::pack_panels: each 32-column panel a contiguous run that the microkernel
/// streams; row-major panels 2 KB apart crossed a page every second pair, where the prefetchers
/// stop): per ξ, the forward's B (k = c_in, n = c_out), then, after all 36, the
/// backward-input's B = U[ξ]ᵀ (k = c_out, n = c_in).
pub fn pack_weights_bf16(c_in: usize, c_out: usize, u: &[f32]) -> Vec<u32> {
    let ld = u_row_stride(c_out);
    assert!(u.len() >= transformed_len(c_in, c_out));
    let (fwd_xi, bwd_xi) = (bf16::panel_words(c_in, c_out), bf16::panel_words(c_out, c_in));
    let mut out = vec![0u32; bf16_weight_words(c_in, c_out)];
    let (fwd, bwd) = out.split_at_mut(NXI * fwd_xi);
    fwd.par_chunks_mut(fwd_xi.max(1)).zip(u.par_chunks(c_in * ld)).for_each(|(dst, u_xi)| bf16::pack_panels(c_in, c_out, u_xi, ld, 1, dst));
    bwd.par_chunks_mut(bwd_xi.max(1)).zip(u.par_chunks(c_in * ld)).for_each(|(dst, u_xi)| bf16::pack_panels(c_out, c_in, u_xi, 1, ld, dst));
    out
}

/// dx = conv3x3(dy, w_flip), the input gradient of the conv whose forward weights give
/// u = transform_weights(c_in, c_out, w): the forward's transpose, see the module comment.
/// dy (h, w, c_out), u (36, c_in, c_out), dx (h, w, c_in).
pub fn conv3x3_bwd_input(s: ConvShape, dy: &[f32], u: &[f32], dx: &mut [f32]) {
    conv3x3_winograd_transposed(s, dy, u, None, dx);
}

/// The direct-layout weights (3, 3, c_in, c_out) back from u = transform_weights(c_in, c_out, w):
/// g = Ĝ U Ĝᵀ with Ĝ a left inverse of G (rows 0 and 5 of G pick g0 / 4 and g2; rows 1 and 2
/// differ by g1 / 3). Equal to w up to the rounding of U (an f32 ulp or two). For the shapes
/// where the direct path runs although the weights are kept only in the Winograd form.
pub fn recover_weights(c_in: usize, c_out: usize, u: &[f32]) -> Vec<f32> {
    const G_INV: [[(usize, f64); 2]; 3] = [[(0, 4.0), (0, 0.0)], [(1, -3.0), (2, 3.0)], [(5, 1.0), (5, 0.0)]];
    let (n, ld) = (c_in * c_out, u_row_stride(c_out));
    assert!(u.len() >= transformed_len(c_in, c_out));
    let mut w = vec![0.0f32; 9 * n];
    w.par_chunks_mut(n).enumerate().for_each(|(tap, w_tap)| {
        let (ky, kx) = (tap / 3, tap % 3);
        for (e, o) in w_tap.iter_mut().enumerate() {
            let mut acc = 0.0f64;
            for &(i, a) in &G_INV[ky] {
                for &(j, b) in &G_INV[kx] {
                    acc += a * b * u[((i * ALPHA + j) * c_in + e / c_out) * ld + e % c_out] as f64;
                }
            }
            *o = acc as f32;
        }
    });
    w
}

thread_local! {
    /// Per-thread V and M band buffers, reused across calls (no page faults in the hot loop).
    static BANDS: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
    /// Per-thread U[ξ]ᵀ for the backward-input, reused across calls (see with_transposed_weights).
    static TRANSPOSED_U: RefCell<[Vec<f32>; 1]> = const { RefCell::new([Vec::new()]) };
}

/// A raw pointer that rayon tasks may share: every use writes a range no other task touches.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: only used for disjoint writes, documented at each use.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so that closures capture the whole Sync wrapper, not the field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// y = conv3x3(x, w) (+ b, relu if given) through the Winograd domain.
/// x (h, w, c_in), u (36, c_in, c_out), b (c_out), y (h, w, c_out).
/// With `packed` (pack_weights_bf16), the tile GEMMs run in bf16.
fn conv3x3_winograd(s: ConvShape, x: &[f32], u: &[f32], packed: Option<&[u32]>, b: Option<&[f32]>, y: &mut [f32]) {
    let ConvShape { h, w: wd, c_in, c_out } = s;
    assert!(x.len() >= h * wd * c_in && u.len() >= transformed_len(c_in, c_out) && y.len() >= h * wd * c_out);
    if h * wd == 0 || c_out == 0 {
        return;
    }
    let g = TileGrid::new(s);
    let kind = Simd::detect();
    with_band_buffers(NXI * plane(g.band_tiles(), c_in), NXI * plane(g.band_tiles(), c_out), |v, m| {
        let y_ptr = SharedMut(y.as_mut_ptr());
        for (t0, nt) in g.bands() {
            // (1) V[t] (36, c_in) = Bᵀ d B for each tile of the band.
            let v_ptr = SharedMut(v.as_mut_ptr());
            (0..nt).into_par_iter().for_each(|k| {
                let t = t0 + k;
                // SAFETY: tile k writes V[ξ][k][..c_in] for every ξ: its own rows, inside v.
                unsafe { kind.input_tile(x, h, wd, c_in, t / g.tiles_x, t % g.tiles_x, v_ptr.get().add(k * c_in), plane(nt, c_in)) };
            });
            // (2) M[ξ] (nt, c_out) = V[ξ] (nt, c_in) · U[ξ] (c_in, c_out).
            match packed {
                Some(p) => xi_gemms_bf16(nt, c_in, c_out, v, &p[..NXI * bf16::panel_words(c_in, c_out)], m),
                None => xi_gemms(nt, c_in, c_out, v, Rhs { data: u, ld: u_row_stride(c_out), layout: RhsLayout::RowMajor }, m),
            }
            // (3) y tile = Aᵀ M[t] A (+ b, relu), cropped at the image's edges.
            let m_ref = &m[..];
            (0..nt).into_par_iter().for_each(|k| {
                let t = t0 + k;
                let m_t = &m_ref[k * c_out..];
                // SAFETY: each tile writes only its own 4x4 output pixels, inside y (asserted).
                unsafe { kind.output_tile(m_t, plane(nt, c_out), b, h, wd, c_out, t / g.tiles_x, t % g.tiles_x, y_ptr.get()) };
            });
        }
    });
}

/// dx = the input gradient of conv3x3_winograd(s, ·, u) at output gradient dy (no ReLU: the
/// caller masked dy). dy (h, w, c_out), u (36, c_in, c_out), dx (h, w, c_in). Same bands as the
/// forward, with the roles of c_in and c_out exchanged.
fn conv3x3_winograd_transposed(s: ConvShape, dy: &[f32], u: &[f32], packed: Option<&[u32]>, dx: &mut [f32]) {
    let ConvShape { h, w: wd, c_in, c_out } = s;
    assert!(dy.len() >= h * wd * c_out && u.len() >= transformed_len(c_in, c_out) && dx.len() >= h * wd * c_in);
    if c_out == 0 {
        dx[..h * wd * c_in].fill(0.0);
    }
    if h * wd == 0 || c_out == 0 || c_in == 0 {
        return;
    }
    let g = TileGrid::new(s);
    let kind = Simd::detect();
    // With more than one band, transposing U once costs less than gemm's gather in every band.
    let transpose_u = packed.is_none() && g.bands().nth(1).is_some();
    with_transposed_weights(c_in, c_out, transpose_u.then_some(u), |u_t| with_band_buffers(NXI * plane(g.band_tiles(), c_out), NXI * plane(g.band_tiles(), c_in), |dm, dv| {
        let dx_ptr = SharedMut(dx.as_mut_ptr());
        for (t0, nt) in g.bands() {
            // (1) dM[t] (36, c_out) = A dY Aᵀ for each tile of the band.
            let dm_ptr = SharedMut(dm.as_mut_ptr());
            (0..nt).into_par_iter().for_each(|k| {
                let t = t0 + k;
                // SAFETY: tile k writes dM[ξ][k][..c_out] for every ξ: its own rows, inside dm.
                unsafe { kind.output_grad_tile(dy, h, wd, c_out, t / g.tiles_x, t % g.tiles_x, dm_ptr.get().add(k * c_out), plane(nt, c_out)) };
            });
            // (2) dV[ξ] (nt, c_in) = dM[ξ] (nt, c_out) · U[ξ]ᵀ.
            match (packed, u_t) {
                (Some(p), _) => xi_gemms_bf16(nt, c_out, c_in, dm, &p[NXI * bf16::panel_words(c_in, c_out)..], dv),
                (None, Some(u_t)) => xi_gemms(nt, c_out, c_in, dm, Rhs { data: u_t, ld: c_in, layout: RhsLayout::RowMajor }, dv),
                (None, None) => xi_gemms(nt, c_out, c_in, dm, Rhs { data: u, ld: u_row_stride(c_out), layout: RhsLayout::ColMajor }, dv),
            }
            // (3) dx += B dV[t] Bᵀ over each tile's 6x6 input patch. Patches of neighbouring tiles
            // overlap, so a task owns one tile row and one block of channels and adds its tiles
            // left to right; even tile rows go before odd ones (rows of one parity do not touch).
            // Each pixel is summed in one fixed order, whatever the thread count, and the first
            // tile to reach it stores instead of adding (dx is not zeroed first): see first_rows.
            let dv_ref = &dv[..];
            let blocks = c_in.div_ceil(CH);
            let (ty0, rows) = (t0 / g.tiles_x, nt / g.tiles_x);
            for parity in 0..2 {
                let first = ty0 + (ty0 + parity) % 2;
                let row_count = (ty0 + rows).saturating_sub(first).div_ceil(2);
                (0..row_count * blocks).into_par_iter().for_each(|job| {
                    let (ty, c0) = (first + 2 * (job / blocks), (job % blocks) * CH);
                    let first_rows = first_rows(ty, ty0, ty0 + rows, g.tiles_y);
                    for tx in 0..g.tiles_x {
                        let k = (ty - ty0) * g.tiles_x + tx;
                        // SAFETY: this task alone writes channels c0.. c0 + CH of the pixels that
                        // tile row ty's patches cover, during this parity.
                        unsafe { kind.input_grad_tile(&dv_ref[k * c_in..], plane(nt, c_in), h, wd, c_in, c0, ty, tx, first_rows, dx_ptr.get()) };
                    }
                });
            }
        }
    }));
}

/// Which of the 6 rows of tile row ty's input patches (bit i: image row 4 ty - 1 + i) no other
/// tile row has written yet when ty's turn comes, in the order of conv3x3_winograd_transposed
/// (bands top to bottom; in a band, even tile rows before odd ones), for a band of tile rows
/// [band_start, band_end) of tiles_y. Rows 0-1 are shared with tile row ty - 1 and rows 4-5
/// with ty + 1; rows 2-3 belong to ty alone. Within a tile row, the tiles go left to right, so
/// a tile's first two columns are always added to (its left neighbour wrote them) unless tx = 0.
fn first_rows(ty: usize, band_start: usize, band_end: usize, tiles_y: usize) -> u8 {
    let even = ty % 2 == 0;
    // ty - 1 comes first if it is in an earlier band, or odd in this one.
    let top_first = ty == 0 || (ty != band_start && even);
    // ty + 1 comes later if it is in a later band (or there is none), or odd in this one.
    let bottom_first = ty + 1 >= tiles_y || ty + 1 >= band_end || even;
    0b001100 | if top_first { 0b000011 } else { 0 } | if bottom_first { 0b110000 } else { 0 }
}

/// Floats from one ξ's matrix (nt, c) to the next in a band buffer: one cache line more than
/// the matrix, because nt c is often a large power of two, and the 36 vectors that one tile's
/// transform writes (reads), one per ξ, would all fall in the same L1 and L2 sets.
fn plane(nt: usize, c: usize) -> usize {
    nt * c + CH
}

/// The 4x4 output tiles of a conv, cut into bands of whole tile rows whose transformed tiles
/// (36 x (c_in + c_out) floats each) take about BAND_BYTES. Depends only on the shape.
struct TileGrid {
    tiles_y: usize,
    tiles_x: usize,
    band_rows: usize,
}

impl TileGrid {
    fn new(s: ConvShape) -> Self {
        let (tiles_y, tiles_x) = (s.h.div_ceil(TILE), s.w.div_ceil(TILE));
        let band_tiles = (BAND_BYTES / (NXI * (s.c_in + s.c_out) * 4)).max(MIN_BAND_TILES);
        TileGrid { tiles_y, tiles_x, band_rows: band_tiles.div_ceil(tiles_x).clamp(1, tiles_y) }
    }

    /// Tiles in the largest band.
    fn band_tiles(&self) -> usize {
        self.band_rows * self.tiles_x
    }

    /// (first tile, tiles) of each band, top to bottom.
    fn bands(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.tiles_y).step_by(self.band_rows).map(|ty0| (ty0 * self.tiles_x, self.band_rows.min(self.tiles_y - ty0) * self.tiles_x))
    }
}

/// Runs f with the calling thread's two band buffers, at least (len_a, len_b) floats (with_reused).
fn with_band_buffers(len_a: usize, len_b: usize, f: impl FnOnce(&mut [f32], &mut [f32])) {
    with_reused(&BANDS, [len_a, len_b], |[a, b]| f(a, b))
}

/// xi_gemms' right operands: 36 matrices (k, n), each `ld` floats from one stored row to the next.
struct Rhs<'a> {
    data: &'a [f32],
    ld: usize,
    layout: RhsLayout,
}

#[derive(Clone, Copy, PartialEq)]
enum RhsLayout {
    /// Stored (k, ld): rows of n.
    RowMajor,
    /// Stored (n, ld): U (36, c_in, c_out) read as its transpose by the backward-input.
    ColMajor,
}

/// dst[ξ] (nt, n) = lhs[ξ] (nt, k) · rhs[ξ] (k, n) for the 36 ξ, parallel over ξ (so each
/// thread reads only its ξ's weights). lhs and dst hold 36 row-major matrices each, ξ after ξ;
/// rhs is U (36, c_in, c_out) for the forward (row-major), and for the backward-input U read
/// transposed (column-major) or U[ξ]ᵀ (row-major; with_transposed_weights). The layout matters:
/// cpu::matmul hands gemm the transposed product, so rhs[ξ]ᵀ is gemm's left operand, which it
/// reads (or packs) with n as the vector dimension: contiguous when rhs is row-major, a
/// float-by-float gather when it is not.
fn xi_gemms(nt: usize, k: usize, n: usize, lhs: &[f32], rhs: Rhs, dst: &mut [f32]) {
    let rhs_xi_stride = match rhs.layout {
        RhsLayout::RowMajor => k * rhs.ld,
        RhsLayout::ColMajor => n * rhs.ld,
    };
    assert!(lhs.len() >= NXI * plane(nt, k) && dst.len() >= NXI * plane(nt, n) && rhs.data.len() >= NXI * rhs_xi_stride);
    let dst_ptr = SharedMut(dst.as_mut_ptr());
    (0..NXI).into_par_iter().for_each(|xi| {
        // SAFETY: the operands lie inside lhs, rhs.data and dst (asserted above); distinct ξ write
        // disjoint dst matrices, and nothing else touches dst meanwhile (&mut).
        unsafe {
            let rhs_xi = rhs.data.as_ptr().add(xi * rhs_xi_stride);
            let rhs_xi = match rhs.layout {
                RhsLayout::RowMajor => Strided::rows(rhs_xi, rhs.ld),
                RhsLayout::ColMajor => Strided::rows(rhs_xi, rhs.ld).t(),
            };
            matmul::gemm(nt, n, k, dst_ptr.get().add(xi * plane(nt, n)), n, false, Strided::rows(lhs.as_ptr().add(xi * plane(nt, k)), k), rhs_xi, 1.0);
        }
    });
}

/// xi_gemms in bf16: dst[ξ] (nt, n) = lhs[ξ] (nt, k) · B[ξ], B[ξ] the panel-major pairs
/// (pairs(k), n) at rhs[ξ * panel_words(k, n)..] (pack_weights_bf16). Each ξ's task rounds its lhs
/// rows to bf16 pairs first (the packing, counted in the time) into a reused per-thread buffer.
fn xi_gemms_bf16(nt: usize, k: usize, n: usize, lhs: &[f32], rhs: &[u32], dst: &mut [f32]) {
    let k2 = bf16::pairs(k);
    assert!(lhs.len() >= NXI * plane(nt, k) && dst.len() >= NXI * plane(nt, n) && rhs.len() >= NXI * bf16::panel_words(k, n));
    dst[..NXI * plane(nt, n)].par_chunks_mut(plane(nt, n)).enumerate().for_each(|(xi, d)| {
        bf16::with_packed_lhs(nt * k2, |a| {
            bf16::pack_rows(nt, k, &lhs[xi * plane(nt, k)..][..nt * k], k, a);
            let a = bf16::PackedA { data: a, row: k2, pair: 1 };
            let words = bf16::panel_words(k, n);
            bf16::gemm(nt, n, k2, a, bf16::PackedB::panels(&rhs[xi * words..(xi + 1) * words], k2), d, n, false, 1.0);
        })
    });
}

/// Runs f with U[ξ]ᵀ (36, c_out, c_in) of u (36, c_in, c_out) if u is given (else None), in
/// the calling thread's reused buffer (with_reused). The backward-input's GEMMs need U with
/// c_in contiguous; read from u as it is, gemm gathers it one float at a time in every band.
fn with_transposed_weights(c_in: usize, c_out: usize, u: Option<&[f32]>, f: impl FnOnce(Option<&[f32]>)) {
    let Some(u) = u else { return f(None) };
    let (n, ld) = (c_in * c_out, u_row_stride(c_out));
    assert!(u.len() >= transformed_len(c_in, c_out));
    with_reused(&TRANSPOSED_U, [NXI * n], |[u_t]| {
        u_t[..NXI * n].par_chunks_mut(n).zip(u.par_chunks(c_in * ld)).for_each(|(dst, src)| transpose(c_in, c_out, src, ld, dst));
        f(Some(&u_t[..NXI * n]))
    })
}

/// dst (cols, rows) = srcᵀ, src (rows, cols) with rows src_ld apart, both row-major: in 8x8
/// blocks, in registers with AVX, 16 rows at a time so that each written cache line (16 floats)
/// is written whole.
fn transpose(rows: usize, cols: usize, src: &[f32], src_ld: usize, dst: &mut [f32]) {
    assert!(src_ld >= cols && src.len() >= rows.saturating_sub(1) * src_ld + cols && dst.len() >= rows * cols);
    let (full_rows, full_cols) = (rows / 16 * 16, cols / 8 * 8);
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx") {
        for r0 in (0..full_rows).step_by(16) {
            for c0 in (0..full_cols).step_by(8) {
                for r in [r0, r0 + 8] {
                    // SAFETY: rows r..r + 8 and columns c0..c0 + 8 lie inside both matrices.
                    unsafe { transpose8x8_avx(src.as_ptr().add(r * src_ld + c0), src_ld, dst.as_mut_ptr().add(c0 * rows + r), rows) };
                }
            }
        }
    } else {
        scalar_transpose(rows, src, src_ld, dst, 0..full_rows, 0..full_cols);
    }
    #[cfg(not(target_arch = "x86_64"))]
    scalar_transpose(rows, src, src_ld, dst, 0..full_rows, 0..full_cols);
    // The edges the blocks left: the last rows % 16 rows, and the last cols % 8 columns.
    scalar_transpose(rows, src, src_ld, dst, full_rows..rows, 0..cols);
    scalar_transpose(rows, src, src_ld, dst, 0..full_rows, full_cols..cols);
}

fn scalar_transpose(rows: usize, src: &[f32], src_ld: usize, dst: &mut [f32], r: std::ops::Range<usize>, c: std::ops::Range<usize>) {
    for i in r {
        for j in c.clone() {
            dst[j * rows + i] = src[i * src_ld + j];
        }
    }
}

/// One 8x8 block: dst[j * dst_stride + i] = src[i * src_stride + j] for i, j < 8.
/// # Safety
/// Both blocks must be inside their allocations; AVX must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose8x8_avx(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    use std::arch::x86_64::*;
    let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * src_stride)));
    // Pairs of rows interleaved, then pairs of pairs, then the 128-bit halves exchanged.
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    let q = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    for j in 0..4 {
        _mm256_storeu_ps(dst.add(j * dst_stride), _mm256_permute2f128_ps::<0x20>(q[j], q[j + 4]));
        _mm256_storeu_ps(dst.add((j + 4) * dst_stride), _mm256_permute2f128_ps::<0x31>(q[j], q[j + 4]));
    }
}

/// Which instruction set the transforms are compiled for (picked at run time, as gemm does).
#[derive(Clone, Copy)]
enum Simd {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Generic,
}

impl Simd {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if cfg!(feature = "avx512") && is_x86_feature_detected!("avx512f") {
                return Simd::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Simd::Avx2;
            }
        }
        Simd::Generic
    }

    #[allow(clippy::too_many_arguments)]
    /// # Safety
    /// v_t + ξ * xi_stride + [0, c) must be writable for every ξ < 36, and not accessed by
    /// anyone else meanwhile. The variants exist only when detect() found their features.
    #[allow(clippy::too_many_arguments)]
    unsafe fn input_tile(self, x: &[f32], h: usize, wd: usize, c: usize, ty: usize, tx: usize, v_t: *mut f32, xi_stride: usize) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => input_tile_avx512(x, h, wd, c, ty, tx, v_t, xi_stride),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => input_tile_avx2(x, h, wd, c, ty, tx, v_t, xi_stride),
            Simd::Generic => input_tile(x, h, wd, c, ty, tx, v_t, xi_stride),
        }
    }

    /// # Safety
    /// y must hold h * wd * c floats, and no one else may access tile (ty, tx)'s pixels meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn output_tile(self, m_t: &[f32], xi_stride: usize, b: Option<&[f32]>, h: usize, wd: usize, c: usize, ty: usize, tx: usize, y: *mut f32) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => output_tile_avx512(m_t, xi_stride, b, h, wd, c, ty, tx, y),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => output_tile_avx2(m_t, xi_stride, b, h, wd, c, ty, tx, y),
            Simd::Generic => output_tile(m_t, xi_stride, b, h, wd, c, ty, tx, y),
        }
    }

    /// # Safety
    /// As input_tile (dm_t for the tile's 36 x c outputs).
    #[allow(clippy::too_many_arguments)]
    unsafe fn output_grad_tile(self, dy: &[f32], h: usize, wd: usize, c: usize, ty: usize, tx: usize, dm_t: *mut f32, xi_stride: usize) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => output_grad_tile_avx512(dy, h, wd, c, ty, tx, dm_t, xi_stride),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => output_grad_tile_avx2(dy, h, wd, c, ty, tx, dm_t, xi_stride),
            Simd::Generic => output_grad_tile(dy, h, wd, c, ty, tx, dm_t, xi_stride),
        }
    }

    /// # Safety
    /// dx must hold h * wd * c floats, and no one else may access channels c0.. c0 + CH of this
    /// tile's 6x6 patch meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn input_grad_tile(self, dv_t: &[f32], xi_stride: usize, h: usize, wd: usize, c: usize, c0: usize, ty: usize, tx: usize, first_rows: u8, dx: *mut f32) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => input_grad_tile_avx512(dv_t, xi_stride, h, wd, c, c0, ty, tx, first_rows, dx),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => input_grad_tile_avx2(dv_t, xi_stride, h, wd, c, c0, ty, tx, first_rows, dx),
            Simd::Generic => input_grad_tile(dv_t, xi_stride, h, wd, c, c0, ty, tx, first_rows, dx),
        }
    }
}

// The Simd variants: the explicit transforms (explicit.rs, one 16-channel block per __m512, or
// two __m256 halves of it) for interior tiles of whole blocks, the portable code, compiled for
// the same features, for the rest.
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::__m256;
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
use std::arch::x86_64::__m512;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn input_tile_avx512(x: &[f32], h: usize, wd: usize, c: usize, ty: usize, tx: usize, v_t: *mut f32, xi_stride: usize) {
    #[cfg(feature = "avx512")]
    if input_tile_explicit::<__m512>(x, h, wd, c, ty, tx, v_t, xi_stride) {
        return;
    }
    input_tile(x, h, wd, c, ty, tx, v_t, xi_stride)
}
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn input_tile_avx2(x: &[f32], h: usize, wd: usize, c: usize, ty: usize, tx: usize, v_t: *mut f32, xi_stride: usize) {
    if !input_tile_explicit::<__m256>(x, h, wd, c, ty, tx, v_t, xi_stride) {
        input_tile(x, h, wd, c, ty, tx, v_t, xi_stride)
    }
}
/// explicit::input_tile over the tile's channel blocks if it is interior (then true).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn input_tile_explicit<V: explicit::Vector>(x: &[f32], h: usize, wd: usize, c: usize, ty: usize, tx: usize, v_t: *mut f32, xi_stride: usize) -> bool {
    let Some(corner) = interior(h, wd, c, (ty * TILE) as isize - 1, (tx * TILE) as isize - 1, ALPHA) else { return false };
    for c0 in (0..c).step_by(CH) {
        prefetch_window(x, h, wd, c, c0, (ty * TILE) as isize - 1, ALPHA, (tx * TILE + TILE + 1) as isize, TILE);
        for l in (c0..c0 + CH).step_by(V::LANES) {
            explicit::input_tile::<V>(x.as_ptr().add(corner + l), wd * c, c, v_t.add(l), xi_stride);
        }
    }
    true
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn output_tile_avx512(m_t: &[f32], xi_stride: usize, b: Option<&[f32]>, h: usize, wd: usize, c: usize, ty: usize, tx: usize, y: *mut f32) {
    #[cfg(feature = "avx512")]
    if output_tile_explicit::<__m512>(m_t, xi_stride, b, h, wd, c, ty, tx, y) {
        return;
    }
    output_tile(m_t, xi_stride, b, h, wd, c, ty, tx, y)
}
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn output_tile_avx2(m_t: &[f32], xi_stride: usize, b: Option<&[f32]>, h: usize, wd: usize, c: usize, ty: usize, tx: usize, y: *mut f32) {
    if !output_tile_explicit::<__m256>(m_t, xi_stride, b, h, wd, c, ty, tx, y) {
        output_tile(m_t, xi_stride, b, h, wd, c, ty, tx, y)
    }
}
/// explicit::output_tile over the tile's channel blocks if it is interior (then true).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn output_tile_explicit<V: explicit::Vector>(m_t: &[f32], xi_stride: usize, b: Option<&[f32]>, h: usize, wd: usize, c: usize, ty: usize, tx: usize, y: *mut f32) -> bool {
    let Some(corner) = interior(h, wd, c, (ty * TILE) as isize, (tx * TILE) as isize, TILE) else { return false };
    assert!(m_t.len() >= (NXI - 1) * xi_stride + c && b.is_none_or(|b| b.len() >= c));
    for l in (0..c).step_by(V::LANES) {
        let bias = b.map_or(V::splat(0.0), |b| V::load(b.as_ptr().add(l)));
        explicit::output_tile::<V>(m_t.as_ptr().add(l), xi_stride, bias, b.is_some(), y.add(corner + l), wd * c, c);
    }
    true
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn output_grad_tile_avx512(dy: &[f32], h: usize, wd: usize, c: usize, ty: usize, tx: usize, dm_t: *mut f32, xi_stride: usize) {
    #[cfg(feature = "avx512")]
    if output_grad_tile_explicit::<__m512>(dy, h, wd, c, ty, tx, dm_t, xi_stride) {
        return;
    }
    output_grad_tile(dy, h, wd, c, ty, tx, dm_t, xi_stride)
}
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn output_grad_tile_avx2(dy: &[f32], h: usize, wd: usize, c: usize, ty: usize, tx: usize, dm_t: *mut f32, xi_stride: usize) {
    if !output_grad_tile_explicit::<__m256>(dy, h, wd, c, ty, tx, dm_t, xi_stride) {
        output_grad_tile(dy, h, wd, c, ty, tx, dm_t, xi_stride)
    }
}
/// explicit::output_grad_tile over the tile's channel blocks if it is interior (then true).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn output_grad_tile_explicit<V: explicit::Vector>(dy: &[f32], h: usize, wd: usize, c: usize, ty: usize, tx: usize, dm_t: *mut f32, xi_stride: usize) -> bool {
    let Some(corner) = interior(h, wd, c, (ty * TILE) as isize, (tx * TILE) as isize, TILE) else { return false };
    for c0 in (0..c).step_by(CH) {
        prefetch_window(dy, h, wd, c, c0, (ty * TILE) as isize, TILE, (tx * TILE + TILE) as isize, TILE);
        for l in (c0..c0 + CH).step_by(V::LANES) {
            explicit::output_grad_tile::<V>(dy.as_ptr().add(corner + l), wd * c, c, dm_t.add(l), xi_stride);
        }
    }
    true
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn input_grad_tile_avx512(dv_t: &[f32], xi_stride: usize, h: usize, wd: usize, c: usize, c0: usize, ty: usize, tx: usize, first_rows: u8, dx: *mut f32) {
    #[cfg(feature = "avx512")]
    if input_grad_tile_explicit::<__m512>(dv_t, xi_stride, h, wd, c, c0, ty, tx, first_rows, dx) {
        return;
    }
    input_grad_tile(dv_t, xi_stride, h, wd, c, c0, ty, tx, first_rows, dx)
}
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn input_grad_tile_avx2(dv_t: &[f32], xi_stride: usize, h: usize, wd: usize, c: usize, c0: usize, ty: usize, tx: usize, first_rows: u8, dx: *mut f32) {
    if !input_grad_tile_explicit::<__m256>(dv_t, xi_stride, h, wd, c, c0, ty, tx, first_rows, dx) {
        input_grad_tile(dv_t, xi_stride, h, wd, c, c0, ty, tx, first_rows, dx)
    }
}
/// explicit::input_grad_tile on channel block c0 if the tile is interior (then true).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn input_grad_tile_explicit<V: explicit::Vector>(dv_t: &[f32], xi_stride: usize, h: usize, wd: usize, c: usize, c0: usize, ty: usize, tx: usize, first_rows: u8, dx: *mut f32) -> bool {
    let Some(corner) = interior(h, wd, c, (ty * TILE) as isize - 1, (tx * TILE) as isize - 1, ALPHA) else { return false };
    assert!(dv_t.len() >= (NXI - 1) * xi_stride + c && c0 + CH <= c);
    for l in (c0..c0 + CH).step_by(V::LANES) {
        explicit::input_grad_tile::<V>(dv_t.as_ptr().add(l), xi_stride, first_rows, tx > 0, dx.add(corner + l), wd * c, c);
    }
    true
}

/// Where the explicit transforms apply: a side x side patch at (y0, x0) of an (h, wd, c) image
/// lies wholly inside it and c is whole 16-channel blocks. Then Some(the offset of its top-left
/// pixel), else None.
#[cfg(target_arch = "x86_64")]
fn interior(h: usize, wd: usize, c: usize, y0: isize, x0: isize, side: usize) -> Option<usize> {
    let inside = c.is_multiple_of(CH) && y0 >= 0 && x0 >= 0 && y0 as usize + side <= h && x0 as usize + side <= wd;
    inside.then(|| (y0 as usize * wd + x0 as usize) * c)
}

type Lanes = [f32; CH];

/// The first n <= CH floats of src as a vector, zero-filled; n == CH is one vector load. The
/// partial case (a channel count that is not a multiple of CH) is a function of its own, never
/// inlined: inlined, LLVM merged the two copies into one memcpy call of variable size, a library
/// call per vector (4-5% of the time on AVX2).
#[inline(always)]
fn load(src: &[f32], n: usize) -> Lanes {
    if n == CH {
        src[..CH].try_into().unwrap()
    } else {
        load_partial(src, n)
    }
}

#[cold]
#[inline(never)]
fn load_partial(src: &[f32], n: usize) -> Lanes {
    let mut l = [0.0; CH];
    l[..n].copy_from_slice(&src[..n]);
    l
}

/// dst[..n] = l[..n]; n == CH is one vector store (the partial case apart, as in load).
#[inline(always)]
fn store(dst: &mut [f32], l: &Lanes, n: usize) {
    if n == CH {
        dst[..CH].copy_from_slice(l);
    } else {
        store_partial(dst, l, n);
    }
}

#[cold]
#[inline(never)]
fn store_partial(dst: &mut [f32], l: &Lanes, n: usize) {
    dst[..n].copy_from_slice(&l[..n]);
}

/// r = Bᵀ d for 6 lane-vectors (one column of the tile, CH channels).
#[inline(always)]
fn bt6(d: &[Lanes; ALPHA]) -> [Lanes; ALPHA] {
    let mut r = [[0.0; CH]; ALPHA];
    for l in 0..CH {
        let [d0, d1, d2, d3, d4, d5] = [d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]];
        r[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        r[1][l] = -4.0 * (d1 + d2) + d3 + d4;
        r[2][l] = 4.0 * (d1 - d2) - d3 + d4;
        r[3][l] = 2.0 * (d3 - d1) - d2 + d4;
        r[4][l] = 2.0 * (d1 - d3) - d2 + d4;
        r[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    r
}

/// r = Aᵀ m for 6 lane-vectors.
#[inline(always)]
fn at6(m: &[Lanes; ALPHA]) -> [Lanes; TILE] {
    let mut r = [[0.0; CH]; TILE];
    for l in 0..CH {
        let [m0, m1, m2, m3, m4, m5] = [m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]];
        let (p12, n12, p34, n34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        r[0][l] = m0 + p12 + p34;
        r[1][l] = n12 + 2.0 * n34;
        r[2][l] = p12 + 4.0 * p34;
        r[3][l] = n12 + 8.0 * n34 + m5;
    }
    r
}

/// r = A g for 4 lane-vectors (A = (Aᵀ)ᵀ, 6 x 4): the transpose of at6.
#[inline(always)]
fn a6(g: &[Lanes; TILE]) -> [Lanes; ALPHA] {
    let mut r = [[0.0; CH]; ALPHA];
    for l in 0..CH {
        let [g0, g1, g2, g3] = [g[0][l], g[1][l], g[2][l], g[3][l]];
        let (p02, p13) = (g0 + g2, g1 + g3);
        let (q02, q13) = (g0 + 4.0 * g2, 2.0 * g1 + 8.0 * g3);
        r[0][l] = g0;
        r[1][l] = p02 + p13;
        r[2][l] = p02 - p13;
        r[3][l] = q02 + q13;
        r[4][l] = q02 - q13;
        r[5][l] = g3;
    }
    r
}

/// r = B v for 6 lane-vectors (B = (Bᵀ)ᵀ): the transpose of bt6.
#[inline(always)]
fn b6(v: &[Lanes; ALPHA]) -> [Lanes; ALPHA] {
    let mut r = [[0.0; CH]; ALPHA];
    for l in 0..CH {
        let [v0, v1, v2, v3, v4, v5] = [v[0][l], v[1][l], v[2][l], v[3][l], v[4][l], v[5][l]];
        r[0][l] = 4.0 * v0;
        r[1][l] = 4.0 * (v2 - v1 + v5) + 2.0 * (v4 - v3);
        r[2][l] = -5.0 * v0 - 4.0 * (v1 + v2) - v3 - v4;
        r[3][l] = v1 - v2 + 2.0 * (v3 - v4) - 5.0 * v5;
        r[4][l] = v0 + v1 + v2 + v3 + v4;
        r[5][l] = v5;
    }
    r
}

/// v_t[ξ * xi_stride + ..c] = (Bᵀ d B)[ξ] for tile (ty, tx) of x (h, wd, c), channel block by
/// channel block. Plain loops over fixed-size arrays (no closures), so that all of it inlines into the
/// target_feature wrappers and vectorises over the CH channels.
/// # Safety
/// As Simd::input_tile.
#[inline(always)]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
unsafe fn input_tile(x: &[f32], h: usize, wd: usize, c: usize, ty: usize, tx: usize, v_t: *mut f32, xi_stride: usize) {
    let (y0, x0) = ((ty * TILE) as isize - 1, (tx * TILE) as isize - 1);
    for c0 in (0..c).step_by(CH) {
        let n = CH.min(c - c0);
        // t[j] = Bᵀ d[.., j]: column j of the 6x6 input tile (zero outside the image), transformed.
        // Every column is written below: no zeroing first (a memset call per tile).
        let mut t = std::mem::MaybeUninit::<[[Lanes; ALPHA]; ALPHA]>::uninit();
        let t_cols = t.as_mut_ptr() as *mut [Lanes; ALPHA];
        prefetch_window(x, h, wd, c, c0, y0, ALPHA, x0 + ALPHA as isize, TILE);
        for j in 0..ALPHA {
            let ix = x0 + j as isize;
            let mut d = [[0.0f32; CH]; ALPHA];
            if ix >= 0 && ix < wd as isize {
                for i in 0..ALPHA {
                    let iy = y0 + i as isize;
                    if iy >= 0 && iy < h as isize {
                        d[i] = load(&x[(iy as usize * wd + ix as usize) * c + c0..], n);
                    }
                }
            }
            t_cols.add(j).write(bt6(&d));
        }
        // SAFETY: the loop above wrote every column.
        let t = t.assume_init_ref();
        // Row r of Bᵀ d is (t[0][r], ..., t[5][r]); v[r][.] = Bᵀ of it = row r of Bᵀ d B.
        for r in 0..ALPHA {
            let mut row = [[0.0f32; CH]; ALPHA];
            for j in 0..ALPHA {
                row[j] = t[j][r];
            }
            let v = bt6(&row);
            for s in 0..ALPHA {
                store(std::slice::from_raw_parts_mut(v_t.add((r * ALPHA + s) * xi_stride + c0), n), &v[s], n);
            }
        }
    }
}

/// Asks the cache for channels c0.. c0 + 16 of the pixels of src (h, wd, c) in rows y0 ..
/// y0 + rows and columns x_start .. x_start + cols that lie inside the image: the columns that
/// the next tile to the right reads and this one does not. The transforms read their
/// activations from memory, a few scattered lines per step; without this, they wait on each.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn prefetch_window(src: &[f32], h: usize, wd: usize, c: usize, c0: usize, y0: isize, rows: usize, x_start: isize, cols: usize) {
    #[cfg(target_arch = "x86_64")]
    for i in 0..rows as isize {
        let iy = y0 + i;
        if iy < 0 || iy >= h as isize {
            continue;
        }
        for j in 0..cols as isize {
            let ix = x_start + j;
            if ix >= 0 && ix < wd as isize {
                // SAFETY: (iy, ix) is inside the image and c0 < c, so the address is inside src.
                unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(src.as_ptr().add((iy as usize * wd + ix as usize) * c + c0) as *const i8) };
            }
        }
    }
}

/// Tile (ty, tx) of y (h, wd, c) = Aᵀ m A (+ b, relu), m[ξ] at m_t[ξ * xi_stride..][..c]; writes
/// only inside the image.
/// # Safety
/// y must hold h * wd * c floats, and no one else may access this tile's pixels meanwhile.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn output_tile(m_t: &[f32], xi_stride: usize, b: Option<&[f32]>, h: usize, wd: usize, c: usize, ty: usize, tx: usize, y: *mut f32) {
    let (oy0, ox0) = (ty * TILE, tx * TILE);
    let (ny, nx) = (TILE.min(h - oy0), TILE.min(wd - ox0));
    let relu = b.is_some();
    for c0 in (0..c).step_by(CH) {
        let n = CH.min(c - c0);
        let bias = b.map_or([0.0; CH], |b| load(&b[c0..], n));
        // t[s] = Aᵀ m[.., s]: column s of the 6x6 product tile, transformed.
        // Every column is written below: no zeroing first (a memset call per tile).
        let mut t = std::mem::MaybeUninit::<[[Lanes; TILE]; ALPHA]>::uninit();
        let t_cols = t.as_mut_ptr() as *mut [Lanes; TILE];
        for s in 0..ALPHA {
            let mut col = [[0.0f32; CH]; ALPHA];
            for r in 0..ALPHA {
                col[r] = load(&m_t[(r * ALPHA + s) * xi_stride + c0..], n);
            }
            t_cols.add(s).write(at6(&col));
        }
        // SAFETY: the loop above wrote every column.
        let t = t.assume_init_ref();
        // Row r of Aᵀ m is (t[0][r], ..., t[5][r]); o = Aᵀ of it = row r of Aᵀ m A.
        for r in 0..ny {
            let mut row = [[0.0f32; CH]; ALPHA];
            for s in 0..ALPHA {
                row[s] = t[s][r];
            }
            let o = at6(&row);
            for q in 0..nx {
                // Bias, then ReLU as a select (NaN and -0 give +0, as f32::max(v, 0) would): in
                // this form LLVM keeps the vector in registers; with `.max(0.0)` under the
                // `is_some` test it split it into pieces through the stack, and the store-to-load
                // forwarding stalls took ~40% of this function (perf annotate, Zen 5).
                let mut out = [0.0f32; CH];
                for l in 0..CH {
                    out[l] = o[q][l] + bias[l];
                }
                if relu {
                    for v in &mut out {
                        *v = if *v > 0.0 { *v } else { 0.0 };
                    }
                }
                // SAFETY: pixel (oy0 + r, ox0 + q) is inside the image and c0 + n <= c.
                let dst = std::slice::from_raw_parts_mut(y.add(((oy0 + r) * wd + ox0 + q) * c + c0), n);
                store(dst, &out, n);
            }
        }
    }
}

/// dm_t[ξ * xi_stride + ..c] = (A dY Aᵀ)[ξ] for the 4x4 tile (ty, tx) of dy (h, wd, c), zero
/// outside the image (the forward cropped those outputs): output_tile transposed.
/// # Safety
/// As Simd::output_grad_tile.
#[inline(always)]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
unsafe fn output_grad_tile(dy: &[f32], h: usize, wd: usize, c: usize, ty: usize, tx: usize, dm_t: *mut f32, xi_stride: usize) {
    let (oy0, ox0) = (ty * TILE, tx * TILE);
    let (ny, nx) = (TILE.min(h - oy0), TILE.min(wd - ox0));
    for c0 in (0..c).step_by(CH) {
        let n = CH.min(c - c0);
        // t[q] = A dY[.., q]: column q of the 4x4 gradient tile, transformed.
        // Every column is written below: no zeroing first (a memset call per tile).
        let mut t = std::mem::MaybeUninit::<[[Lanes; ALPHA]; TILE]>::uninit();
        let t_cols = t.as_mut_ptr() as *mut [Lanes; ALPHA];
        prefetch_window(dy, h, wd, c, c0, oy0 as isize, TILE, (ox0 + TILE) as isize, TILE);
        for q in 0..TILE {
            let mut g = [[0.0f32; CH]; TILE];
            if q < nx {
                for p in 0..ny {
                    g[p] = load(&dy[((oy0 + p) * wd + ox0 + q) * c + c0..], n);
                }
            }
            t_cols.add(q).write(a6(&g));
        }
        // SAFETY: the loop above wrote every column.
        let t = t.assume_init_ref();
        // Row r of A dY is (t[0][r], ..., t[3][r]); A of it = row r of A dY Aᵀ.
        for r in 0..ALPHA {
            let mut row = [[0.0f32; CH]; TILE];
            for q in 0..TILE {
                row[q] = t[q][r];
            }
            let v = a6(&row);
            for s in 0..ALPHA {
                store(std::slice::from_raw_parts_mut(dm_t.add((r * ALPHA + s) * xi_stride + c0), n), &v[s], n);
            }
        }
    }
}

/// dx[patch of tile (ty, tx), channels c0..] += (B dV Bᵀ), dV[ξ] at dv_t[ξ * xi_stride + c0..]:
/// input_tile transposed, for one block of CH channels; pixels outside the image are dropped.
/// Stores instead of adding where this tile is the first to write (the rows in first_rows,
/// bit i for patch row i, except the first two columns when tx > 0).
/// # Safety
/// As Simd::input_grad_tile.
#[inline(always)]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
unsafe fn input_grad_tile(dv_t: &[f32], xi_stride: usize, h: usize, wd: usize, c: usize, c0: usize, ty: usize, tx: usize, first_rows: u8, dx: *mut f32) {
    let (y0, x0) = ((ty * TILE) as isize - 1, (tx * TILE) as isize - 1);
    let n = CH.min(c - c0);
    // t[s] = B dV[.., s]: column s, transformed.
    // Every column is written below: no zeroing first (a memset call per tile).
    let mut t = std::mem::MaybeUninit::<[[Lanes; ALPHA]; ALPHA]>::uninit();
    let t_cols = t.as_mut_ptr() as *mut [Lanes; ALPHA];
    for s in 0..ALPHA {
        let mut col = [[0.0f32; CH]; ALPHA];
        for r in 0..ALPHA {
            col[r] = load(&dv_t[(r * ALPHA + s) * xi_stride + c0..], n);
        }
        t_cols.add(s).write(b6(&col));
    }
    // SAFETY: the loop above wrote every column.
    let t = t.assume_init_ref();
    // Row i of B dV is (t[0][i], ..., t[5][i]); B of it = row i of B dV Bᵀ.
    for i in 0..ALPHA {
        let iy = y0 + i as isize;
        if iy < 0 || iy >= h as isize {
            continue;
        }
        let mut row = [[0.0f32; CH]; ALPHA];
        for s in 0..ALPHA {
            row[s] = t[s][i];
        }
        let o = b6(&row);
        for j in 0..ALPHA {
            let ix = x0 + j as isize;
            if ix < 0 || ix >= wd as isize {
                continue;
            }
            // SAFETY: pixel (iy, ix) is inside the image and c0 + n <= c.
            let dst = std::slice::from_raw_parts_mut(dx.add((iy as usize * wd + ix as usize) * c + c0), n);
            if first_rows >> i & 1 == 1 && (tx == 0 || j >= 2) {
                store(dst, &o[j], n);
            } else {
                let mut acc = load(dst, n);
                for l in 0..CH {
                    acc[l] += o[j][l];
                }
                store(dst, &acc, n);
            }
        }
    }
}
