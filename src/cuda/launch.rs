//! Launch geometry: the kernels' block and tile constants (each checked against its #define in
//! kernels/common.cuh, tile_mma.cuh, tile_mma_sync.cuh, conv3x3_mma.cu) and the grids and K splits
//! of every launch, as plain functions of the shape that the unit tests below check without a GPU.

use super::Gemm;
use crate::backend::ConvShape;
use cudarc::driver::LaunchConfig;

/// Threads per block of the elementwise and reduction kernels (NS_THREADS in kernels/common.cuh).
pub(super) const THREADS: u32 = 256;
/// Most blocks of a reduction's first stage (NS_MAX_PARTIALS in kernels/common.cuh).
pub(super) const MAX_PARTIALS: usize = 1024;
/// Threads of the tiled GEMM kernels (NS_TILE_THREADS in kernels/tile_mma.cuh) and their tile.
const TILE_THREADS: u32 = 128;
const TILE: usize = 64;
const TILE_K: usize = 32;
/// The mma.sync main loop (kernels/tile_mma_sync.cuh): threads, the square output tile, and the
/// dynamic shared memory of its cp.async pipeline (NS_MMA_THREADS, NS_MMA_BM/BN, NS_MMA_SMEM_BYTES).
const MMA_THREADS: u32 = 256;
const MMA_TILE: usize = 128;
pub(super) const MMA_SMEM_BYTES: u32 = 98304;
/// The narrow conv kernels (`*_mma_n64_*`): 128 x 64 tiles for GEMMs with N <= 64
/// (NS_MMA_BN_NARROW, NS_MMA_SMEM_BYTES_NARROW).
const MMA_TILE_N_NARROW: usize = 64;
pub(super) const MMA_SMEM_BYTES_NARROW: u32 = 73728;
/// Blocks of the 128 x 128 tf32 conv kernel that fit one H100/H200 SM (NS_MMA_MIN_BLOCKS): what
/// conv_split_k fills.
const MMA_BLOCKS_PER_SM: usize = 2;
/// Split-K (conv_split_k): at most this many splits, each at least this many K slices of 32.
const SPLIT_K_MAX: usize = 16;
const SPLIT_K_MIN_SLICES: usize = 8;
/// conv3x3_bwd_input_masked_n4 (conv1_1's input gradient): its output tile (NS_N4_TX x NS_N4_TY
/// pixels per block of THREADS) and the most input channels it computes (NS_N4_MAX_C_IN).
const N4_TILE_W: usize = 32;
const N4_TILE_H: usize = 16;
pub(super) const N4_MAX_C_IN: usize = 4;

/// Blocks of an elementwise kernel over n elements: one thread per element, THREADS per block,
/// at least one block (the kernels return early past n).
pub fn blocks_1d(n: usize) -> u32 {
    n.div_ceil(THREADS as usize).max(1) as u32
}

/// One thread per element, 256 per block.
pub(super) fn grid_1d(n: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (blocks_1d(n), 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// First stage of a reduction: a grid that depends on n only (never on the device), never more
/// blocks than the partials buffer holds (the kernels stride over the rest).
pub fn reduce_blocks(n: usize) -> usize {
    n.div_ceil(THREADS as usize).clamp(1, MAX_PARTIALS)
}

/// Blocks of a tiled GEMM kernel: one per TILE x TILE tile of the (m, n) output, times z.
pub fn tile_blocks(m: usize, n: usize, z: usize) -> (u32, u32, u32) {
    (m.div_ceil(TILE) as u32, n.div_ceil(TILE) as u32, z as u32)
}

/// Blocks of an mma.sync GEMM kernel: one per MMA_TILE x MMA_TILE tile of the (m, n) output, times z.
pub fn mma_tile_blocks(m: usize, n: usize, z: usize) -> (u32, u32, u32) {
    (m.div_ceil(MMA_TILE) as u32, n.div_ceil(MMA_TILE) as u32, z as u32)
}

/// The launch of a GEMM kernel (conv, Gram partial, Gram backward) on an (m, n) output, times z,
/// for the main loop `gemm`: grid, block and dynamic shared memory.
pub fn gemm_launch(gemm: Gemm, m: usize, n: usize, z: usize) -> LaunchConfig {
    match gemm {
        Gemm::Wmma => LaunchConfig { grid_dim: tile_blocks(m, n, z), block_dim: (TILE_THREADS, 1, 1), shared_mem_bytes: 0 },
        Gemm::Mma => LaunchConfig { grid_dim: mma_tile_blocks(m, n, z), block_dim: (MMA_THREADS, 1, 1), shared_mem_bytes: MMA_SMEM_BYTES },
    }
}

/// Whether an mma conv launch with GEMM width n (c_out forward, c_in backward) takes the narrow
/// 128 x 64 kernels: a 128-wide tile would leave half or more of its columns empty.
pub fn mma_conv_narrow(n: usize) -> bool {
    n <= MMA_TILE_N_NARROW
}

/// The launch of a conv kernel on an (m, n) output: `gemm_launch`, except the narrow mma kernels'
/// grid and shared memory when `mma_conv_narrow(n)`.
pub fn conv_launch(gemm: Gemm, m: usize, n: usize) -> LaunchConfig {
    if gemm == Gemm::Mma && mma_conv_narrow(n) {
        let grid = (m.div_ceil(MMA_TILE) as u32, n.div_ceil(MMA_TILE_N_NARROW) as u32, 1);
        LaunchConfig { grid_dim: grid, block_dim: (MMA_THREADS, 1, 1), shared_mem_bytes: MMA_SMEM_BYTES_NARROW }
    } else {
        gemm_launch(gemm, m, n, 1)
    }
}

/// Split-K for an mma conv GEMM with an (m, n) output and K = k, on a GPU of `sms` SMs: (splits,
/// chunk), chunk in K slices of 32, splits = ceil(slices / chunk), so no split is empty. The
/// 128 x 128 grid of conv4_x at 512² (m = 4096, n = 512) is 128 blocks and conv5_1's (m = 1024)
/// 32, where an H100/H200 holds MMA_BLOCKS_PER_SM x 132 = 264: splits = floor(264 / tiles) (the
/// most that still run as one wave), at most SPLIT_K_MAX, each split at least SPLIT_K_MIN_SLICES
/// slices (a shorter one spends more on its pipeline fill and its partial than it saves). 1 for
/// narrow launches (n <= 64: the grids of conv1_x are large) and whenever the grid fills the GPU.
/// splits x m x n (the workspace) stays within MMA_BLOCKS_PER_SM x sms x 128² floats.
/// The split fixes the order of the partial sums, so a GPU's results depend on its SM count
/// (and are the same bits on every run of it).
pub fn conv_split_k(m: usize, n: usize, k: usize, sms: usize) -> (usize, usize) {
    let slices = k.div_ceil(TILE_K).max(1);
    if mma_conv_narrow(n) {
        return (1, slices);
    }
    let tiles = (m.div_ceil(MMA_TILE) * n.div_ceil(MMA_TILE)).max(1);
    let want = (MMA_BLOCKS_PER_SM * sms / tiles).clamp(1, SPLIT_K_MAX).min((slices / SPLIT_K_MIN_SLICES).max(1));
    let chunk = slices.div_ceil(want);
    (slices.div_ceil(chunk), chunk)
}

/// Blocks of conv3x3_bwd_input_masked_n4 on an h x w grid: one per N4_TILE_W x N4_TILE_H pixels.
pub fn masked_n4_blocks(h: usize, w: usize) -> (u32, u32, u32) {
    (w.div_ceil(N4_TILE_W).max(1) as u32, h.div_ceil(N4_TILE_H).max(1) as u32, 1)
}

/// Split of the Gram's K = hw into chunks (a multiple of the K slice), from (hw, c) only:
/// enough blocks to fill a large GPU (~264 = 2 per SM of an H200), each at least 256 pixels.
pub fn gram_split(hw: usize, c: usize) -> (usize, usize) {
    gram_split_tiles(hw, c, TILE)
}

/// gram_split for the mma.sync Gram (128-wide tiles: fewer tile pairs, so more splits).
pub fn gram_split_mma(hw: usize, c: usize) -> (usize, usize) {
    gram_split_tiles(hw, c, MMA_TILE)
}

fn gram_split_tiles(hw: usize, c: usize, tile: usize) -> (usize, usize) {
    let nt = c.div_ceil(tile).max(1);
    let pairs = nt * (nt + 1) / 2;
    let target = 264usize.div_ceil(pairs).clamp(1, 128);
    let splits = target.min(hw.div_ceil(256)).max(1);
    let chunk = (hw.div_ceil(splits).div_ceil(TILE_K) * TILE_K).max(TILE_K);
    (hw.div_ceil(chunk).max(1), chunk)
}

/// The floats the backend's three scratch buffers reach over a run of these convs and Grams
/// (`(pixels, channels)` each), for the memory estimate (memory::RunFloats::scratch): each
/// buffer grows to its largest launch. The conv split-K partials (mma only, as
/// `CudaBackend::conv_split` decides: forward N = c_out, input gradient N = c_in), the Gram's
/// split-K partials, and its symmetrised gradient (c x c).
pub fn scratch_floats(gemm: Gemm, sms: usize, convs: &[ConvShape], grams: &[(usize, usize)]) -> u64 {
    let conv_split = |m: usize, n: usize, k: usize| match conv_split_k(m, n, k, sms) {
        (splits, _) if gemm == Gemm::Mma && splits > 1 => splits * m * n,
        _ => 0,
    };
    let conv = convs.iter().map(|s| conv_split(s.h * s.w, s.c_out, 9 * s.c_in).max(conv_split(s.h * s.w, s.c_in, 9 * s.c_out))).max().unwrap_or(0);
    let gram_splits = |hw, c| match gemm {
        Gemm::Wmma => gram_split(hw, c).0,
        Gemm::Mma => gram_split_mma(hw, c).0,
    };
    let partials = grams.iter().map(|&(hw, c)| gram_splits(hw, c) * c * c).max().unwrap_or(0);
    let sym = grams.iter().map(|&(_, c)| c * c).max().unwrap_or(0);
    (conv + partials + sym) as u64
}

/// The launch arithmetic, checked without a GPU: the constants against the kernels' own
/// #defines, each grid against the elements it must cover, and gram_split's chunks (which fix
/// the GPU Gram's summation order, so its values are pinned).
#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `#define NAME value` in a kernel source.
    fn define(src: &str, name: &str) -> usize {
        src.lines()
            .find_map(|l| l.strip_prefix("#define ")?.strip_prefix(name)?.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no #define {name}"))
    }

    #[test]
    fn constants_match_the_kernels() {
        let common = include_str!("../../kernels/common.cuh");
        let tile = include_str!("../../kernels/tile_mma.cuh");
        assert_eq!(define(common, "NS_THREADS"), THREADS as usize);
        assert_eq!(define(common, "NS_MAX_PARTIALS"), MAX_PARTIALS);
        assert_eq!(define(tile, "NS_TILE_THREADS"), TILE_THREADS as usize);
        assert_eq!((define(tile, "BM"), define(tile, "BN")), (TILE, TILE));
        assert_eq!(define(tile, "BK"), TILE_K);
    }

    #[test]
    fn elementwise_grids_cover_every_element_once() {
        for n in [0, 1, 255, 256, 257, 511, 512, 513, 3 * 512 * 384, 1 << 24, (1 << 24) + 1] {
            let b = blocks_1d(n) as usize;
            assert!(b >= 1 && b * THREADS as usize >= n, "n {n}: {b} blocks");
            assert!(n == 0 || (b - 1) * (THREADS as usize) < n, "n {n}: {b} blocks, one too many");
            let cfg = grid_1d(n);
            assert_eq!((cfg.grid_dim, cfg.block_dim), ((b as u32, 1, 1), (THREADS, 1, 1)));
        }
        assert_eq!(blocks_1d(0), 1);
        assert_eq!(blocks_1d(256 * 3 + 1), 4);
    }

    #[test]
    fn reduction_grids_fit_the_partials_buffer() {
        for n in [0, 1, 256, 257, 256 * 1024 - 1, 256 * 1024, 256 * 1024 + 1, 1 << 30] {
            let b = reduce_blocks(n);
            assert!((1..=MAX_PARTIALS).contains(&b), "n {n}: {b} blocks");
            // One thread per element while that fits; the grid-stride loop covers the rest.
            assert_eq!(b, n.div_ceil(THREADS as usize).clamp(1, MAX_PARTIALS), "n {n}");
        }
        assert_eq!(reduce_blocks(1000), 4);
        assert_eq!(reduce_blocks(1 << 30), 1024);
    }

    #[test]
    fn tile_grids_cover_the_output() {
        for (m, n, z) in [(1, 1, 1), (64, 64, 1), (65, 63, 1), (512 * 384, 64, 1), (4096, 512, 7)] {
            let (x, y, zz) = tile_blocks(m, n, z);
            let (x, y) = (x as usize, y as usize);
            assert!(x * TILE >= m && (x - 1) * TILE < m, "m {m}: {x}");
            assert!(y * TILE >= n && (y - 1) * TILE < n, "n {n}: {y}");
            assert_eq!(zz as usize, z);
            let cfg = gemm_launch(Gemm::Wmma, m, n, z);
            assert_eq!((cfg.grid_dim, cfg.block_dim, cfg.shared_mem_bytes), ((x as u32, y as u32, zz), (TILE_THREADS, 1, 1), 0));
        }
        assert_eq!(tile_blocks(130, 64, 3), (3, 1, 3));
    }

    #[test]
    fn mma_constants_match_the_kernels() {
        let tile = include_str!("../../kernels/tile_mma_sync.cuh");
        assert_eq!(define(tile, "NS_MMA_THREADS"), MMA_THREADS as usize);
        assert_eq!((define(tile, "NS_MMA_BM"), define(tile, "NS_MMA_BN")), (MMA_TILE, MMA_TILE));
        assert_eq!(define(tile, "NS_MMA_BK"), TILE_K, "gram_split_mma's chunks are multiples of the K slice");
        let (stages, bk) = (define(tile, "NS_MMA_STAGES"), define(tile, "NS_MMA_BK"));
        assert_eq!(define(tile, "NS_MMA_SMEM_BYTES"), MMA_SMEM_BYTES as usize);
        assert_eq!(define(tile, "NS_MMA_BN_NARROW"), MMA_TILE_N_NARROW);
        assert_eq!(define(tile, "NS_MMA_SMEM_BYTES_NARROW"), MMA_SMEM_BYTES_NARROW as usize);
        assert_eq!(stages * (MMA_TILE + MMA_TILE_N_NARROW) * bk * 4, MMA_SMEM_BYTES_NARROW as usize);
        assert_eq!(stages * (2 * MMA_TILE * bk) * 4, MMA_SMEM_BYTES as usize, "stages x (A + B slices) x 4 bytes");
        // Above the 48 KiB default (the opt-in in Kernels::load), within the 227 KiB of an H100/H200
        // block and the 163 KiB of an A100's.
        assert!(MMA_SMEM_BYTES > 48 * 1024 && MMA_SMEM_BYTES <= 163 * 1024);
    }

    #[test]
    fn mma_tile_grids_cover_the_output() {
        for (m, n, z) in [(1, 1, 1), (128, 128, 1), (129, 127, 1), (169, 96, 1), (512 * 512, 64, 1), (1024 * 1024, 3, 1), (4096, 512, 7)] {
            let (x, y, zz) = mma_tile_blocks(m, n, z);
            let (x, y) = (x as usize, y as usize);
            assert!(x * MMA_TILE >= m && (x - 1) * MMA_TILE < m, "m {m}: {x}");
            assert!(y * MMA_TILE >= n && (y - 1) * MMA_TILE < n, "n {n}: {y}");
            assert_eq!(zz as usize, z);
            let cfg = gemm_launch(Gemm::Mma, m, n, z);
            assert_eq!((cfg.grid_dim, cfg.block_dim, cfg.shared_mem_bytes), ((x as u32, y as u32, zz), (MMA_THREADS, 1, 1), MMA_SMEM_BYTES));
        }
        assert_eq!(mma_tile_blocks(169, 96, 1), (2, 1, 1));
        assert_eq!(mma_tile_blocks(512 * 512, 512, 1), (2048, 4, 1));
    }

    #[test]
    fn conv_launches_take_the_narrow_mma_tile_for_n_up_to_64() {
        for (m, n) in [(1, 1), (169, 3), (169, 64), (169, 65), (169, 96), (512 * 512, 64), (512 * 512, 3), (4096, 512)] {
            let cfg = conv_launch(Gemm::Mma, m, n);
            let (x, y, z) = cfg.grid_dim;
            let bn = if n <= 64 { 64 } else { 128 };
            assert_eq!(mma_conv_narrow(n), n <= 64);
            assert!(x as usize * MMA_TILE >= m && (x as usize - 1) * MMA_TILE < m, "m {m}: {x}");
            assert!(y as usize * bn >= n && (y as usize - 1) * bn < n, "n {n}: {y}");
            assert_eq!((z, cfg.block_dim), (1, (MMA_THREADS, 1, 1)));
            assert_eq!(cfg.shared_mem_bytes, if n <= 64 { MMA_SMEM_BYTES_NARROW } else { MMA_SMEM_BYTES }, "n {n}");
            // WMMA is untouched by the choice.
            let w = conv_launch(Gemm::Wmma, m, n);
            assert_eq!((w.grid_dim, w.block_dim, w.shared_mem_bytes), (tile_blocks(m, n, 1), (TILE_THREADS, 1, 1), 0));
        }
        assert_eq!(conv_launch(Gemm::Mma, 512 * 512, 64).grid_dim, (2048, 1, 1));
        assert_eq!(conv_launch(Gemm::Mma, 512 * 512, 128).grid_dim, (2048, 1, 1));
    }

    #[test]
    fn special_shape_constants_match_the_kernels() {
        let tile = include_str!("../../kernels/tile_mma_sync.cuh");
        let conv = include_str!("../../kernels/conv3x3_mma.cu");
        assert_eq!(define(tile, "NS_MMA_MIN_BLOCKS"), MMA_BLOCKS_PER_SM, "conv_split_k fills the blocks the tf32 kernel is built to co-host");
        assert_eq!((define(conv, "NS_N4_TX"), define(conv, "NS_N4_TY")), (N4_TILE_W, N4_TILE_H));
        assert_eq!(define(conv, "NS_N4_MAX_C_IN"), N4_MAX_C_IN);
        assert_eq!(define(conv, "NS_N4_TX") * define(conv, "NS_N4_TY") / 2, THREADS as usize, "one thread per two output pixels");
    }

    #[test]
    fn masked_n4_grid_covers_the_image() {
        for (h, w) in [(1, 1), (16, 32), (17, 33), (512, 512), (384, 512), (1024, 768), (7, 1000)] {
            let (x, y, z) = masked_n4_blocks(h, w);
            let (x, y) = (x as usize, y as usize);
            assert!(x * N4_TILE_W >= w && (x - 1) * N4_TILE_W < w, "w {w}: {x}");
            assert!(y * N4_TILE_H >= h && (y - 1) * N4_TILE_H < h, "h {h}: {y}");
            assert_eq!(z, 1);
        }
        assert_eq!(masked_n4_blocks(512, 512), (16, 32, 1));
    }

    #[test]
    fn conv_split_k_fills_the_gpu_and_covers_k_once() {
        for sms in [1, 46, 108, 132, 170] {
            for (m, n) in [(1, 1), (169, 96), (1024, 512), (4096, 256), (4096, 512), (16384, 512), (65536, 64), (262_144, 64)] {
                for k in [27, 288, 576, 2304, 4608] {
                    let (splits, chunk) = conv_split_k(m, n, k, sms);
                    let slices = k.div_ceil(TILE_K);
                    // Every K slice in exactly one split, none empty.
                    assert!(splits >= 1 && splits * chunk >= slices && (splits - 1) * chunk < slices, "{m} {n} {k} {sms}: {splits} x {chunk}");
                    assert!(splits <= SPLIT_K_MAX);
                    if splits > 1 {
                        let tiles = m.div_ceil(MMA_TILE) * n.div_ceil(MMA_TILE);
                        assert!(!mma_conv_narrow(n) && chunk >= SPLIT_K_MIN_SLICES, "{m} {n} {k} {sms}: {splits} x {chunk}");
                        // One wave: never more blocks than the GPU holds at once; and a bounded workspace.
                        assert!(tiles * splits <= MMA_BLOCKS_PER_SM * sms, "{m} {n} {k} {sms}: {tiles} tiles x {splits}");
                        assert!(splits * m * n <= MMA_BLOCKS_PER_SM * sms * MMA_TILE * MMA_TILE, "{m} {n} {k} {sms}: workspace");
                    }
                }
            }
        }
        // Pinned (the split fixes the order of the partial sums): VGG-19 at 512² on an H200 (132 SMs).
        let h200 = |m, n, k| conv_split_k(m, n, k, 132);
        assert_eq!(h200(64 * 64, 512, 9 * 256), (2, 36), "conv4_1 forward");
        assert_eq!(h200(64 * 64, 512, 9 * 512), (2, 72), "conv4_2..4 forward and input gradient");
        assert_eq!(h200(64 * 64, 256, 9 * 512), (4, 36), "conv4_1 input gradient");
        assert_eq!(h200(32 * 32, 512, 9 * 512), (8, 18), "conv5_1 forward and input gradient");
        assert_eq!(h200(128 * 128, 256, 9 * 256), (1, 72), "conv3_x: 256 tiles fill the GPU");
        assert_eq!(h200(512 * 512, 64, 27), (1, 1), "conv1_1: narrow");
        // At 1024² only conv5_1 splits; on an A100 (108 SMs) conv4_x at 512² does not.
        assert_eq!(h200(64 * 64 * 4, 512, 9 * 512), (1, 144));
        assert_eq!(conv_split_k(64 * 64, 512, 9 * 512, 108), (1, 144));
        assert_eq!(conv_split_k(32 * 32, 512, 9 * 512, 108), (6, 24));
        // Small K caps the split: 9 slices make one split of 9.
        assert_eq!(h200(32 * 32, 512, 288), (1, 9));
    }

    #[test]
    fn gram_split_mma_covers_k_and_fits_the_grid() {
        for hw in [1, 31, 32, 33, 1000, 4096, 65536, 262_144, 1_048_576] {
            for c in [3, 64, 128, 256, 512] {
                let (splits, chunk) = gram_split_mma(hw, c);
                assert!(splits >= 1 && chunk % TILE_K == 0, "hw {hw} c {c}");
                assert!(splits * chunk >= hw && (splits - 1) * chunk < hw, "hw {hw} c {c}: {splits} x {chunk}");
                assert!(splits <= 128, "hw {hw} c {c}: {splits} splits");
            }
        }
        // Pinned like gram_split's: the split fixes the order of the mma Gram's partial sums.
        assert_eq!(gram_split_mma(1, 3), (1, 32));
        assert_eq!(gram_split_mma(512 * 512, 64), (128, 2048));
        assert_eq!(gram_split_mma(128 * 128, 512), (27, 608));
        assert_eq!(gram_split_mma(300, 130), (2, 160));
        assert_eq!(gram_split_mma(999, 68), (4, 256));
    }

    #[test]
    fn gram_split_covers_k_and_fits_the_grid() {
        for hw in [1, 31, 32, 33, 1000, 4096, 65536, 262_144, 1_048_576] {
            for c in [3, 64, 128, 256, 512] {
                let (splits, chunk) = gram_split(hw, c);
                assert!(splits >= 1 && chunk % TILE_K == 0, "hw {hw} c {c}");
                assert!(splits * chunk >= hw && (splits - 1) * chunk < hw, "hw {hw} c {c}: {splits} x {chunk}");
                assert!(splits <= 128, "hw {hw} c {c}: {splits} splits, more than the 128 gram_split allows");
            }
        }
        // The split fixes the order of the GPU Gram's f32 partial sums: pinned, so a change to
        // it (which changes the GPU's numbers) is a decision, not an accident.
        assert_eq!(gram_split(1, 3), (1, 32));
        assert_eq!(gram_split(64 * 64, 64), (16, 256));
        assert_eq!(gram_split(128 * 96, 128), (48, 256));
        assert_eq!(gram_split(512 * 384, 64), (128, 1536));
        assert_eq!(gram_split(64 * 48, 512), (8, 384));
    }
}
