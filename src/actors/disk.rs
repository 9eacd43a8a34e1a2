//! The disk writer: holds the data dir's lock and writes a leader's WAL on its own thread, so
//! the leader's fsync stalls neither clients nor consensus; and the WAL handle it shares with
//! consensus, which writes a follower's log itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use actix::prelude::*;

use super::metrics::SLOW_FSYNC_WARNING;
use super::status::StatusBoard;

use crate::protocol::raft::{Entry, HardState, SnapshotMeta};
use crate::storage::{DataDir, StorageError, Wal};

/// Append a Ready's hard state and entries to the WAL, durably (one fsync) unless `--no-fsync`.
///
/// With `compact`, first record that the log is compacted up to that snapshot (whose image is
/// already durable) and release the segments it covers.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), PersistError>")]
pub struct Persist {
    /// A snapshot position the log now starts after, if any.
    pub compact: Option<SnapshotMeta>,
    /// Hard state to record, if it changed.
    pub hard_state: Option<HardState>,
    /// Entries to append (replacing any suffix from the first one's index).
    pub entries: Vec<Entry>,
}

/// Why a [`Persist`] did not complete.
#[derive(Debug)]
pub enum PersistError {
    /// The disk is full: nothing of it was kept (the WAL ends at its last good record, as
    /// before); here it is back, to be retried once there is space.
    DiskFull {
        /// The write, unchanged.
        persist: Persist,
        /// What the disk said.
        why: String,
    },
    /// Any other failure: the WAL is unusable from now on.
    Failed(StorageError),
}

/// Close the WAL and release the data dir lock; answered once both are closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseDisk;

/// The WAL with the metrics of its writes, shared by the disk writer and consensus.
///
/// Consensus hands out one write at a time and waits for it to finish before the next, so the
/// lock is never contended and the writes stay in order: it only lets a follower write on its
/// own thread (see `Consensus::start_write`) while a leader's writes go to the disk writer.
#[derive(Clone)]
pub struct WalHandle {
    /// `None` once closed.
    wal: Arc<Mutex<Option<Wal>>>,
    /// Where write-and-fsync times are recorded.
    status: Option<Arc<StatusBoard>>,
    /// Set by [`crash`](WalHandle::crash): no write is carried out from then on.
    crashed: Arc<AtomicBool>,
}

impl WalHandle {
    /// A handle on `wal`, recording each write-and-fsync's time in `status`'s metrics if given.
    pub fn new(wal: Wal, status: Option<Arc<StatusBoard>>) -> WalHandle {
        WalHandle { wal: Arc::new(Mutex::new(Some(wal))), status, crashed: Arc::new(AtomicBool::new(false)) }
    }

    /// Refuses every write from now on, as a crash at this instant would lose them: the writes
    /// handed out and not yet carried out (queued for the disk writer, say) never happen. For
    /// fault tests: a replica stopped after this loses what a crashed one would.
    pub fn crash(&self) {
        // Under the lock: a write under way finishes first, as it would reach the disk or not.
        let _guard = self.wal.lock().unwrap_or_else(PoisonError::into_inner);
        self.crashed.store(true, Ordering::SeqCst);
    }

    /// Carries out `msg` on the calling thread: compaction first, then one append and fsync.
    pub fn persist(&self, msg: Persist) -> Result<(), PersistError> {
        let mut guard = self.wal.lock().map_err(|_| PersistError::Failed(StorageError::Poisoned))?;
        if self.crashed.load(Ordering::SeqCst) {
            return Err(PersistError::Failed(StorageError::Poisoned));
        }
        let wal = guard.as_mut().ok_or(PersistError::Failed(StorageError::Poisoned))?;
        let give_back = |persist: Persist, e: StorageError| match e {
            StorageError::DiskFull { .. } => PersistError::DiskFull { why: e.to_string(), persist },
            other => PersistError::Failed(other),
        };
        if let Some(meta) = msg.compact {
            // Done again on a retry: a marker at or below the current one is ignored.
            if let Err(e) = wal.compact(meta) {
                return Err(give_back(msg, e));
            }
        }
        if msg.hard_state.is_some() || !msg.entries.is_empty() {
            let started = Instant::now();
            if let Err(e) = wal.append(msg.hard_state, &msg.entries) {
                return Err(give_back(msg, e));
            }
            let took = started.elapsed();
            if let Some(status) = &self.status {
                status.metrics.fsync_seconds.observe(took.as_secs_f64());
            }
            if took > SLOW_FSYNC_WARNING {
                log::warn!(
                    "disk: writing and syncing {} log entries took {} ms (over {} ms): the disk is slow",
                    msg.entries.len(),
                    took.as_millis(),
                    SLOW_FSYNC_WARNING.as_millis()
                );
            }
        }
        Ok(())
    }

    /// Closes the WAL: every later write fails.
    fn close(&self) {
        *self.wal.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// A replica's log storage: the disk writer and the WAL handle it writes through.
#[derive(Clone)]
pub struct Disk {
    /// The disk writer, on its own thread.
    pub writer: Addr<DiskWriter>,
    /// The WAL it writes, for writes done on the caller's thread.
    pub wal: WalHandle,
}

/// Runs on a dedicated arbiter: requests are served one at a time, in order.
pub struct DiskWriter {
    wal: WalHandle,
    /// Held for its lock; dropped on close.
    data_dir: Option<DataDir>,
}

impl DiskWriter {
    /// Starts a writer of `wal` inside `data_dir` on `arbiter`, recording fsync times in `status`.
    pub fn start_on(
        arbiter: &ArbiterHandle,
        wal: Wal,
        data_dir: DataDir,
        status: Option<Arc<StatusBoard>>,
    ) -> Disk {
        let wal = WalHandle::new(wal, status);
        let writer_wal = wal.clone();
        let writer = DiskWriter::start_in_arbiter(arbiter, move |_| DiskWriter {
            wal: writer_wal,
            data_dir: Some(data_dir),
        });
        Disk { writer, wal }
    }
}

impl Actor for DiskWriter {
    type Context = Context<Self>;
}

impl Handler<Persist> for DiskWriter {
    type Result = Result<(), PersistError>;

    fn handle(&mut self, msg: Persist, _ctx: &mut Self::Context) -> Self::Result {
        self.wal.persist(msg)
    }
}

impl Handler<CloseDisk> for DiskWriter {
    type Result = ();

    fn handle(&mut self, _msg: CloseDisk, ctx: &mut Self::Context) {
        self.wal.close();
        self.data_dir = None;
        ctx.stop();
    }
}
