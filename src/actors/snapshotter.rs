//! The snapshotter: encodes and writes snapshot images, and reads them back, on its own thread.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use crate::protocol::raft::{Compacted, SnapshotMeta};
use crate::storage::{SnapshotFileWriter, SnapshotSource, SnapshotStore, StateMachine, StorageError};

/// Encode `state` (a copy taken at `meta.index`) straight into a snapshot file, durably.
#[derive(Message)]
#[rtype(result = "Result<(), StorageError>")]
pub struct SaveState {
    /// Its log position.
    pub meta: SnapshotMeta,
    /// The state machine as of `meta.index`.
    pub state: Box<StateMachine>,
}

/// Encode `state` into an image, without saving it (a backup for `SNAPSHOT BEGIN`).
#[derive(Message)]
#[rtype(result = "Result<Vec<u8>, StorageError>")]
pub struct EncodeState(pub Box<StateMachine>);

/// The state decoded from a received image, on its way to the applier.
pub type DecodedState = Result<Box<StateMachine>, StorageError>;

/// Make an image received from the leader (its every byte written and sealed, Raft has taken it)
/// the snapshot at its position, durably (a rename), and say so to `saved`; then decode the
/// state from it here and send it to `decoded` (the applier), so no thread that serves clients
/// spends the decode and the log's write waits only for the save.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SaveImage {
    /// The received image's file.
    pub image: SnapshotFileWriter,
    /// Told once the image is durable under its snapshot name, or why not.
    pub saved: tokio::sync::oneshot::Sender<Result<(), StorageError>>,
    /// Where the decoded state goes (dropped unsent if the save fails).
    pub decoded: tokio::sync::oneshot::Sender<DecodedState>,
}

/// Remove the file of a received image that will not be used (refused, or given up half-way).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DiscardImage(pub SnapshotFileWriter);

/// Open the newest snapshot on disk, checked, for sending it to followers a chunk at a time.
#[derive(Message)]
#[rtype(result = "Result<Option<SnapshotSource>, StorageError>")]
pub struct OpenLatest;

/// An opened image a transfer, consensus or the applier lets go: closed here, where removing an
/// older image set aside for it (its blocks freed a step at a time) holds up no one.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseImage(pub Arc<SnapshotSource>);

/// Free log entries a compaction removed (hundreds of thousands of allocations, milliseconds of
/// work better spent here than on the consensus thread).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Discard(pub Compacted);

/// Runs on a dedicated arbiter, so writing a large image never stalls clients or the WAL.
pub struct Snapshotter {
    store: SnapshotStore,
    id: u64,
}

impl Snapshotter {
    /// A snapshotter for replica `id` writing into `store`.
    pub fn new(store: SnapshotStore, id: u64) -> Snapshotter {
        Snapshotter { store, id }
    }
}

/// How much lower than the serving threads the snapshotter's thread runs (a nice increment).
const SNAPSHOT_THREAD_NICENESS: libc::c_int = 10;

impl Actor for Snapshotter {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        // Encoding an image takes seconds of CPU at large states; on a machine with few cores it
        // would take them from the threads that answer clients. On Linux the nice value is per
        // thread, and `who = 0` is the calling thread: only this one yields.
        // SAFETY: setpriority reads no memory of ours; a failure only leaves the priority as is.
        let lowered = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, SNAPSHOT_THREAD_NICENESS) };
        if lowered != 0 {
            log::debug!("replica {}: snapshot thread keeps its priority", self.id);
        }
    }
}

impl Handler<SaveState> for Snapshotter {
    type Result = Result<(), StorageError>;

    fn handle(&mut self, msg: SaveState, _ctx: &mut Self::Context) -> Self::Result {
        let started = Instant::now();
        // Streamed: an image as big as the state never sits in memory beside the state (it used
        // to, and growing it faulted in fresh memory for hundreds of ms at every snapshot).
        let len = self
            .store
            .save_streaming(msg.meta, |file| msg.state.write_image(&mut |bytes| file.write(bytes)))?;
        log::info!(
            "replica {}: snapshot at index {} term {} taken: {} bytes in {} ms",
            self.id,
            msg.meta.index,
            msg.meta.term,
            len,
            started.elapsed().as_millis()
        );
        Ok(())
    }
}

impl Handler<Discard> for Snapshotter {
    type Result = ();

    fn handle(&mut self, msg: Discard, _ctx: &mut Self::Context) {
        let started = Instant::now();
        let entries = msg.0.len();
        drop(msg);
        log::debug!(
            "replica {}: freed {entries} compacted entries in {} µs",
            self.id,
            started.elapsed().as_micros()
        );
    }
}

impl Handler<SaveImage> for Snapshotter {
    type Result = ();

    fn handle(&mut self, msg: SaveImage, _ctx: &mut Self::Context) {
        let started = Instant::now();
        let (meta, len) = (msg.image.meta(), msg.image.written());
        let image = match self.store.adopt(msg.image) {
            Ok(image) => image,
            // The applier's `decoded` goes unsent: it stops, as consensus does.
            Err(e) => return drop(msg.saved.send(Err(e))),
        };
        log::info!(
            "replica {}: received snapshot at index {} saved: {} bytes in {} ms",
            self.id,
            meta.index,
            len,
            started.elapsed().as_millis()
        );
        // Consensus goes on with the log's write now, while the state is decoded.
        let _ = msg.saved.send(Ok(()));
        if msg.decoded.is_closed() {
            return; // The applier is already past this snapshot, or stopping.
        }
        let started = Instant::now();
        let decoded = StateMachine::restore_from(&mut image.reader(), image.len()).and_then(|state| {
            state.check_taken_at(meta.index).map_err(StorageError::BadImage)?;
            Ok(Box::new(state))
        });
        log::info!(
            "replica {}: received snapshot at index {} decoded: {} bytes in {} ms",
            self.id,
            meta.index,
            len,
            started.elapsed().as_millis()
        );
        // Closed before the state goes. (No newer snapshot can have set it aside: only this
        // thread saves snapshots, and it was busy here.)
        drop(image);
        let _ = msg.decoded.send(decoded);
    }
}

impl Handler<DiscardImage> for Snapshotter {
    type Result = ();

    fn handle(&mut self, msg: DiscardImage, _ctx: &mut Self::Context) {
        msg.0.discard();
    }
}

impl Handler<ReleaseImage> for Snapshotter {
    type Result = ();

    fn handle(&mut self, msg: ReleaseImage, _ctx: &mut Self::Context) {
        drop(msg);
        if let Err(e) = self.store.remove_released() {
            log::warn!("replica {}: an image set aside for a transfer not removed: {e}", self.id);
        }
    }
}

impl Handler<OpenLatest> for Snapshotter {
    type Result = Result<Option<SnapshotSource>, StorageError>;

    fn handle(&mut self, _msg: OpenLatest, _ctx: &mut Self::Context) -> Self::Result {
        self.store.open_latest()
    }
}

impl Handler<EncodeState> for Snapshotter {
    type Result = Result<Vec<u8>, StorageError>;

    fn handle(&mut self, msg: EncodeState, _ctx: &mut Self::Context) -> Self::Result {
        let started = Instant::now();
        let image = msg.0.snapshot()?;
        log::info!(
            "replica {}: image at index {} taken for download: {} bytes in {} ms",
            self.id,
            msg.0.applied_index(),
            image.len(),
            started.elapsed().as_millis()
        );
        Ok(image)
    }
}
