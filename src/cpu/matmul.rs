//! The one way src/cpu calls gemm: a product whose destination is row-major.
//!
//! gemm's microkernels run down the destination's columns (its m is their vector dimension), so a
//! row-major destination (column stride 1) is written back one float at a time: on Zen 5 ~40%
//! of the microkernel's time went to those scalar stores, and gemm ran at 68-98 GFLOPS per core
//! against 154-207 for the same products handed over transposed (PERFORMANCE.md, issue 24 round
//! two). So every call computes dstᵀ (n, m) = rhsᵀ · lhsᵀ, whose columns are dst's rows.

/// A matrix operand in memory: element (r, c) at `ptr[r * row_stride + c * col_stride]`.
#[derive(Clone, Copy)]
pub struct Strided {
    pub ptr: *const f32,
    pub row_stride: isize,
    pub col_stride: isize,
}

impl Strided {
    /// A row-major matrix with rows `ld` floats apart.
    pub fn rows(ptr: *const f32, ld: usize) -> Self {
        Strided { ptr, row_stride: ld as isize, col_stride: 1 }
    }

    /// The transpose of `self`, as an operand (no copy).
    pub fn t(self) -> Self {
        Strided { ptr: self.ptr, row_stride: self.col_stride, col_stride: self.row_stride }
    }
}

/// dst (m, n) = (dst if `accumulate`) + scale · lhs (m, k) · rhs (k, n) on the calling thread;
/// dst row-major with rows `dst_ld` floats apart.
///
/// # Safety
/// Every element the strides address (rows < m or k, columns < k or n) must lie inside live
/// allocations, dst's writable and not aliased by lhs or rhs.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(m: usize, n: usize, k: usize, dst: *mut f32, dst_ld: usize, accumulate: bool, lhs: Strided, rhs: Strided, scale: f32) {
    if m == 0 || n == 0 {
        return;
    }
    // dstᵀ (n, m): element (j, i) at dst[i * dst_ld + j], i.e. column stride dst_ld, row stride 1.
    // lhs' = rhsᵀ (n, k) and rhs' = lhsᵀ (k, m). gemm's argument order: (m, n, k, dst, dst_cs,
    // dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs, alpha, beta, conj x3, parallelism).
    let (lhs_t, rhs_t) = (rhs.t(), lhs.t());
    gemm_f32::gemm::f32::get_gemm_fn()(
        n,
        m,
        k,
        dst,
        dst_ld as isize,
        1,
        accumulate,
        lhs_t.ptr,
        lhs_t.col_stride,
        lhs_t.row_stride,
        rhs_t.ptr,
        rhs_t.col_stride,
        rhs_t.row_stride,
        1.0,
        scale,
        false,
        false,
        false,
        gemm_common::Parallelism::None,
    );
}
