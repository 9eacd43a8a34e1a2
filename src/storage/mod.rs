//! Bytes at rest: write-ahead log, snapshots, KV engine, state machine.
