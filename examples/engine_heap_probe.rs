//! Heap per key of the KV engine, and what a snapshot's window of writes costs the applier.
//!
//! `cargo run --release --example engine_heap_probe [KEYS]` (default 800,000 distinct keys of
//! the form `key:N`, 100-byte values, filled by twice as many random writes). Prints the heap
//! the engine holds per key, counted by a counting allocator, then times 90,000 writes three
//! ways: with nothing sharing the maps, while a plain clone shares them (B-tree leaves copied),
//! and held aside for a snapshot copy, with the time to move them back.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use quorumkv::protocol::command::ColumnFamily;
use quorumkv::storage::{KvEngine, WriteBatch};

/// The system allocator, counting the bytes it has handed out and not had back.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed straight to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Writes `count` 100-byte values to random keys among `keys`, from the generator state `seed`.
fn write_random(engine: &mut KvEngine, count: usize, keys: u64, seed: &mut u64) {
    for _ in 0..count {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let key = format!("key:{}", (*seed >> 33) % keys);
        let mut batch = WriteBatch::new();
        batch.put(ColumnFamily::Default, key.into_bytes(), vec![b'v'; 100]);
        engine.write(batch);
    }
}

fn main() {
    let keys: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(800_000);
    let mut seed = 1;
    let mut engine = KvEngine::new();
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    write_random(&mut engine, 2 * keys as usize, keys, &mut seed);
    let heap = LIVE_BYTES.load(Ordering::Relaxed) - before;
    println!(
        "{} keys, {} bytes of keys and values: heap {heap} bytes, {} per key",
        engine.len(),
        engine.approximate_size_bytes(),
        heap / engine.len().max(1)
    );
    const WINDOW: usize = 90_000;
    for round in 1..=2 {
        let started = Instant::now();
        write_random(&mut engine, WINDOW, keys, &mut seed);
        let alone = started.elapsed();
        let clone = engine.clone();
        let started = Instant::now();
        write_random(&mut engine, WINDOW, keys, &mut seed);
        let copying = started.elapsed();
        drop(clone);
        let copy = engine.copy_for_snapshot();
        let started = Instant::now();
        write_random(&mut engine, WINDOW, keys, &mut seed);
        let held = started.elapsed();
        drop(copy);
        engine.release_snapshot_copy();
        let started = Instant::now();
        while !engine.drain_deferred(1024) {}
        let moved = started.elapsed();
        println!(
            "round {round}, {WINDOW} writes: alone {alone:?}, copying shared leaves {copying:?}, \
             held aside {held:?} + moved back {moved:?}"
        );
    }
}
