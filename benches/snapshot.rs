//! Snapshot images: encoding a state of many keys (what the snapshotter does at every snapshot)
//! and restoring it, in MB/s and ns per key.
//!
//! Run with `cargo bench --bench snapshot` (KEYS=n for another size; default 800,000 keys of
//! 100-byte values, the size `scripts/snapshot_stall_probe.sh` writes). Keys are encoded into
//! a checksum, as the snapshot file writer does, so no disk is involved.

use quorumkv::protocol::command::{ColumnFamily, Command, Proposal};
use quorumkv::storage::StateMachine;
use std::time::Instant;

/// Value bytes per key.
const VALUE_BYTES: usize = 100;
/// Encodings timed (the best is reported).
const ROUNDS: usize = 5;

fn main() {
    let keys: u64 = std::env::var("KEYS").ok().and_then(|k| k.parse().ok()).unwrap_or(800_000);
    let mut state = StateMachine::new(1024);
    for i in 0..keys {
        let command = Command::Put {
            cf: ColumnFamily::Default,
            key: format!("key:{:012}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % (keys * 16)).into_bytes(),
            value: vec![(i % 251) as u8; VALUE_BYTES],
        };
        state.apply(i + 1, &Proposal { request_id: i, session: None, command });
    }
    let mut best = f64::MAX;
    let mut image_bytes = 0;
    for _ in 0..ROUNDS {
        let mut crc = crc32fast::Hasher::new();
        let mut len = 0usize;
        let started = Instant::now();
        state
            .write_image(&mut |bytes| {
                crc.update(bytes);
                len += bytes.len();
                Ok(())
            })
            .expect("encode");
        best = best.min(started.elapsed().as_secs_f64());
        image_bytes = len;
    }
    println!(
        "encode {} keys: {:.0} ms, {:.0} MB/s, {:.0} ns/key (image {} bytes, best of {ROUNDS})",
        state.engine().len(),
        best * 1e3,
        image_bytes as f64 / best / 1e6,
        best * 1e9 / state.engine().len() as f64,
        image_bytes
    );
    let image = state.snapshot().expect("image");
    let started = Instant::now();
    let restored = StateMachine::restore(&image).expect("restore");
    let took = started.elapsed().as_secs_f64();
    assert_eq!(restored.engine().len(), state.engine().len(), "every key restored");
    println!("restore: {:.0} ms, {:.0} MB/s", took * 1e3, image.len() as f64 / took / 1e6);
}
