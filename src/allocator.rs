//! The server's global allocator: mimalloc, called the way a C program would call it.
//!
//! Rust hands every allocation an alignment, and the `mimalloc` crate passes each one to
//! `mi_malloc_aligned`. In mimalloc 3 that call is fast only for a block of at most 1 KiB, no
//! more aligned than it is long, whose size class has an aligned free block at hand; otherwise
//! it takes a generic path that over-allocates by the alignment less one byte (and so may take a
//! block of the next size class) unless the block's size is a power of two of at most 4 KiB.
//! Under 64 reading clients that path ran 142,070 times for 20,000 reads, 6 % of a whole
//! cluster's user-space instructions (`scripts/callgrind_probe.sh BIN 0 64 20000`). A plain
//! `mi_malloc` block is aligned to 16 bytes, or to 8 for the 8-byte class, as a C `malloc` must
//! be (mimalloc rounds its small size classes to 16 bytes where `max_align_t` is 16, and starts
//! every page's blocks 16-aligned); so an alignment of at most 16 and at most the size needs
//! nothing more (the rule of Rust's own `System` allocator for the C library's `malloc`). Larger
//! alignments (tokio's task cells ask for 128) keep the aligned calls. mimalloc's debug
//! "guarded" builds may drop that alignment: `libmimalloc-sys` is used without its features.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Alignment every `mi_malloc` block of at least this many bytes has (C's `max_align_t`).
const PLAIN_ALIGN: usize = 16;

/// mimalloc as the global allocator, without the aligned calls where plain ones align enough.
pub struct Mimalloc;

/// Whether a plain (unaligned) mimalloc call returns memory aligned enough for `align`, for a
/// block of `size` bytes.
fn plain_call_aligns(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

// SAFETY: every method forwards to mimalloc, whose blocks are valid for `size` bytes and
// aligned as the layout asks (checked by `plain_call_aligns`, or by the aligned calls), and
// `mi_free`/`mi_realloc*` accept any pointer any of these calls returned.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI calls; mimalloc returns null when out of memory, as `alloc` may.
        unsafe {
            if plain_call_aligns(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()) as *mut u8
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if plain_call_aligns(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()) as *mut u8
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract), so from mimalloc.
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from mimalloc with `layout`; the new block is aligned as `layout`
        // asks by the same rule as `alloc`, and mimalloc copies the contents over.
        unsafe {
            if plain_call_aligns(new_size, layout.align()) {
                mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: [usize; 22] = [
        1,
        2,
        3,
        7,
        8,
        12,
        15,
        16,
        17,
        24,
        31,
        48,
        100,
        125,
        1000,
        1024,
        1025,
        1500,
        4096,
        5000,
        70_000,
        3 << 20,
    ];
    const ALIGNS: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 4096];

    /// Many blocks at once, so that some come from fresh pages and some from free lists.
    const BLOCKS: usize = 64;

    #[test]
    fn every_block_is_aligned_as_asked_and_holds_its_bytes() {
        for size in SIZES {
            for align in ALIGNS {
                let layout = Layout::from_size_align(size, align).expect("a valid layout");
                let blocks: Vec<*mut u8> = (0..BLOCKS)
                    .map(|i| {
                        // SAFETY: `layout` has a non-zero size.
                        let p = unsafe { Mimalloc.alloc(layout) };
                        assert!(!p.is_null(), "{size} bytes aligned to {align}");
                        assert_eq!(p as usize % align, 0, "{size} bytes aligned to {align}");
                        // SAFETY: the block holds `size` bytes.
                        unsafe { p.write_bytes(i as u8, size) };
                        p
                    })
                    .collect();
                for (i, p) in blocks.into_iter().enumerate() {
                    // SAFETY: written above, freed once, with its own layout.
                    unsafe {
                        assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == i as u8));
                        Mimalloc.dealloc(p, layout);
                    }
                }
            }
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_even_where_freed_ones_were_written() {
        for size in SIZES {
            for align in ALIGNS {
                let layout = Layout::from_size_align(size, align).expect("a valid layout");
                // SAFETY: as above; the dirty block is freed before the zeroed one is taken, so
                // mimalloc may hand the same memory back.
                unsafe {
                    let dirty = Mimalloc.alloc(layout);
                    dirty.write_bytes(0xAB, size);
                    Mimalloc.dealloc(dirty, layout);
                    let p = Mimalloc.alloc_zeroed(layout);
                    assert_eq!(p as usize % align, 0, "{size} bytes aligned to {align}");
                    assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
                    Mimalloc.dealloc(p, layout);
                }
            }
        }
    }

    #[test]
    fn realloc_keeps_the_contents_and_the_alignment_growing_and_shrinking() {
        for align in ALIGNS {
            for (from, to) in
                [(8, 24), (24, 8), (16, 4096), (1000, 1025), (5000, 70_000), (70_000, 3), (3, 2)]
            {
                let layout = Layout::from_size_align(from, align).expect("a valid layout");
                // SAFETY: each block is written within its size and freed once with the layout
                // it has at that point (`realloc` keeps the alignment and takes the new size).
                unsafe {
                    let p = Mimalloc.alloc(layout);
                    for i in 0..from {
                        p.add(i).write(i as u8);
                    }
                    let q = Mimalloc.realloc(p, layout, to);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "{from} -> {to} bytes aligned to {align}");
                    for i in 0..from.min(to) {
                        assert_eq!(q.add(i).read(), i as u8, "{from} -> {to} bytes aligned to {align}");
                    }
                    Mimalloc.dealloc(q, Layout::from_size_align(to, align).expect("a valid layout"));
                }
            }
        }
    }

    #[test]
    fn the_plain_calls_serve_only_alignments_they_guarantee() {
        assert!(plain_call_aligns(8, 8));
        assert!(plain_call_aligns(1500, 8));
        assert!(plain_call_aligns(16, 16));
        assert!(!plain_call_aligns(8, 16), "an 8-byte block is only 8-aligned");
        assert!(!plain_call_aligns(1024, 32));
        assert!(!plain_call_aligns(4096, 128));
    }
}
