//! Writes zeros over the space reserved ahead of the active WAL segment, on a thread of its own,
//! so that the log's appends land on blocks that are already written.
//!
//! Space reserved with `fallocate` is "unwritten" to ext4: the first write to each of its blocks
//! changes the file's extent map, and the fdatasync after it must then write the inode too, a
//! second disk round trip. On this project's VM a 10,000-byte write+fdatasync took 150-200 µs
//! (p50) into such space and about 100 µs into space already written with zeros, with a third
//! less CPU (`SIZE=10000 python3 scripts/fsync_modes.py`); at 64 clients the replicas spent
//! about 2.5 µs less CPU per write. Writing the zeros on the appending thread would stall it
//! for the whole chunk, so they are written here, a step at a time, each step sent to the disk
//! before the next (see [`ZeroFront`] for how the two never write the same bytes).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use super::writeback;

/// Bytes of zeros written (and sent to the disk) at a time.
const STEP_BYTES: u64 = 256 * 1024;

/// Where zeros may still be written in one segment file, shared by the log and the zeroer.
///
/// The log claims the bytes it is about to write before writing them; the zeroer writes only
/// above the highest claim, under the same lock, and never once the log has stopped it (before it
/// cuts the file, closes it or lets it go). So no zero lands on a record, and no zero lands past
/// a length the log set.
#[derive(Debug)]
pub(crate) struct ZeroFront {
    state: Mutex<FrontState>,
}

#[derive(Debug)]
struct FrontState {
    /// Bytes below this are the log's or zeroed already.
    claimed_to: u64,
    /// Set by the log: no more zeros in this file.
    stopped: bool,
}

impl ZeroFront {
    /// A front for a file whose first `claimed_to` bytes are the log's.
    pub(crate) fn new(claimed_to: u64) -> Arc<ZeroFront> {
        Arc::new(ZeroFront { state: Mutex::new(FrontState { claimed_to, stopped: false }) })
    }

    fn lock(&self) -> MutexGuard<'_, FrontState> {
        // The state is two plain fields, valid whatever a panicking holder was doing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The log is about to write bytes up to `end`: no zero is written below it from now on.
    pub(crate) fn claim(&self, end: u64) {
        let mut state = self.lock();
        state.claimed_to = state.claimed_to.max(end);
    }

    /// No zero is written in this file from now on (returns once a step under way is done).
    pub(crate) fn stop(&self) {
        self.lock().stopped = true;
    }

    /// Bytes below this are the log's or zeroed (for tests).
    #[cfg(test)]
    pub(crate) fn claimed_to(&self) -> u64 {
        self.lock().claimed_to
    }
}

/// A range of one segment file to fill with zeros.
struct Job {
    file: File,
    front: Arc<ZeroFront>,
    from: u64,
    to: u64,
}

/// The thread zeroing one log's reserved space; dropping it waits for the thread to end.
#[derive(Debug)]
pub(crate) struct SegmentZeroer {
    /// `None` while dropping (closing the channel ends the thread).
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl SegmentZeroer {
    /// Starts the thread; `None` if none could be started (then appends go into unwritten space).
    pub(crate) fn start() -> Option<SegmentZeroer> {
        let (jobs, queue) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("wal-zeroer".into())
            .spawn(move || run(&queue))
            .map_err(|e| log::warn!("wal: no thread for zeroing reserved space ({e})"))
            .ok()?;
        Some(SegmentZeroer { jobs: Some(jobs), thread: Some(thread) })
    }

    /// Hands over `from..to` of the file at `path` (space already reserved) to be zeroed where
    /// not claimed.
    ///
    /// The zeroer opens the file for itself: waiting on its writeback through the log's own open
    /// file (a `try_clone` shares it) would take a failed writeback's error from the log's
    /// next fsync, which would then report success for records that never reached the disk.
    pub(crate) fn zero(&self, path: &Path, front: &Arc<ZeroFront>, from: u64, to: u64) {
        let Some(jobs) = &self.jobs else { return };
        let file = match OpenOptions::new().write(true).open(path) {
            Ok(file) => file,
            Err(e) => {
                // The space simply stays unwritten.
                log::debug!("wal: cannot open {} to zero its reserved space: {e}", path.display());
                return;
            }
        };
        // A closed channel means the thread is gone: the space simply stays unwritten.
        let _ = jobs.send(Job { file, front: front.clone(), from, to });
    }
}

impl Drop for SegmentZeroer {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("wal: the segment zeroer panicked");
            }
        }
    }
}

/// The zeroer's thread: jobs in order until the log closes the channel.
fn run(queue: &Receiver<Job>) {
    let zeros = vec![0u8; STEP_BYTES as usize];
    for job in queue {
        let mut at = job.from;
        while at < job.to {
            let (start, end) = {
                let mut state = job.front.lock();
                let start = at.max(state.claimed_to);
                if state.stopped || start >= job.to {
                    break;
                }
                let end = job.to.min(start + STEP_BYTES);
                // Written under the lock: the log's claim waits for it, so its own write of
                // these bytes always comes after the zeros.
                if let Err(e) = job.file.write_all_at(&zeros[..(end - start) as usize], start) {
                    log::debug!("wal: zeroing reserved space stopped: {e}");
                    break;
                }
                state.claimed_to = end;
                (start, end)
            };
            // Sent to the disk here, so the log's next fdatasync finds these pages clean. A failed
            // writeback is the log's to report (its fsync sees the error: the file is open twice).
            if let Err(e) = writeback::write_and_wait(&job.file, start, end) {
                log::debug!("wal: zeroing reserved space stopped: {e}");
                break;
            }
            at = end;
        }
    }
}
