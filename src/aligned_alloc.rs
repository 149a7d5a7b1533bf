//! A global allocator that starts every large allocation on a cache line: the system allocator
//! with at least 64-byte alignment from 4 KiB up. The program (src/main.rs) and the benchmarks
//! install it; a library user who wants the same speed adds
//! `#[global_allocator] static ALLOC: neural_style::aligned_alloc::CacheLineAligned = CacheLineAligned;`.
//!
//! Why: the CPU backend keeps activations as `Vec<f32>` with channels innermost and moves them
//! in 16-float (64-byte) vectors. glibc returns large blocks 16 bytes past a page boundary, so
//! every such vector straddled two cache lines: two L1 accesses per load and store. Aligned,
//! the Winograd convolutions took ~10% less time (PERFORMANCE.md, issue 24 round three).
//! Results do not change: only addresses do.

use std::alloc::{GlobalAlloc, Layout, System};

/// Size from which allocations are cache-line aligned (smaller ones keep the system's alignment,
/// so small-object packing is unchanged).
pub const LARGE: usize = 4096;
/// A cache line.
pub const LINE: usize = 64;

/// See the module documentation.
pub struct CacheLineAligned;

/// The layout actually requested from the system for `layout`.
fn widened(layout: Layout) -> Layout {
    if layout.size() >= LARGE && layout.align() < LINE {
        // align_to fails only for a size within 63 bytes of isize::MAX (no allocation gets
        // there); the original layout then.
        layout.align_to(LINE).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every block is allocated and freed by System with the same widened layout (a pure
// function of the caller's layout), and realloc moves the block whenever the widened alignment
// of the old and new sizes differ.
unsafe impl GlobalAlloc for CacheLineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        System.alloc(widened(layout))
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        System.alloc_zeroed(widened(layout))
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, widened(layout))
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = widened(layout);
        let Ok(new) = Layout::from_size_align(new_size, layout.align()).map(widened) else {
            return std::ptr::null_mut();
        };
        if old.align() == new.align() {
            return System.realloc(ptr, old, new_size);
        }
        // Crossing LARGE: a fresh block of the new alignment, then the old one freed.
        let moved = System.alloc(new);
        if !moved.is_null() {
            std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
            System.dealloc(ptr, old);
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large blocks start on a line, small ones keep their own alignment, and realloc keeps the
    /// contents across LARGE in both directions (called directly: the test binary's own global
    /// allocator is the default one).
    #[test]
    fn large_blocks_are_line_aligned_and_realloc_keeps_contents() {
        let a = CacheLineAligned;
        unsafe {
            for size in [LARGE, LARGE + 4, 1 << 20, 3 << 20] {
                let layout = Layout::from_size_align(size, 4).unwrap();
                let p = a.alloc(layout);
                assert!(!p.is_null() && (p as usize).is_multiple_of(LINE), "{size}: {p:?}");
                a.dealloc(p, layout);
                let z = a.alloc_zeroed(layout);
                assert!(!z.is_null() && (z as usize).is_multiple_of(LINE));
                assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                a.dealloc(z, layout);
            }
            let small = Layout::from_size_align(100, 4).unwrap();
            let p = a.alloc(small);
            for i in 0..100 {
                *p.add(i) = i as u8;
            }
            // Grow past LARGE: aligned now, the first 100 bytes kept.
            let q = a.realloc(p, small, 3 * LARGE);
            assert!(!q.is_null() && (q as usize).is_multiple_of(LINE));
            assert!((0..100).all(|i| *q.add(i) == i as u8));
            // Shrink below LARGE again: contents kept.
            let big = Layout::from_size_align(3 * LARGE, 4).unwrap();
            let r = a.realloc(q, big, 50);
            assert!(!r.is_null() && (0..50).all(|i| *r.add(i) == i as u8));
            a.dealloc(r, Layout::from_size_align(50, 4).unwrap());
            // An impossible size fails cleanly (null), without freeing the old block.
            let s = a.alloc(small);
            assert!(a.realloc(s, small, isize::MAX as usize).is_null());
            a.dealloc(s, small);
        }
    }
}
