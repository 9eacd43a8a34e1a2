//! Deletes the WAL segments a compaction released, on a thread of its own, a few MiB at a time.
//!
//! Unlinking a 64 MiB segment frees its blocks in one go: about 15 ms on this project's ext4 VM
//! when idle and 40-115 ms under load, measured. Done by the log's writer, that time stalled
//! every append queued behind it; done at once on another thread, it still held up the writer's
//! fdatasync, whose small write queues at the disk behind the freed blocks' discards (the test
//! machine's file system is mounted with `discard`, so they are sent during the unlink; remounted
//! without it, an unlink in one go cost the fsyncs nothing: README, stop 41). An idle test: a
//! 200-byte write+fdatasync loop saw up to 10-13 ms during the unlink, 2-3 ms while the same
//! file was cut 4 MiB at a time. So a segment is renamed out of the log's way, cut down in steps
//! with a pause between them, then unlinked.
//!
//! Order is kept: segments go oldest first, batch after batch, so the segments left on disk are
//! always a run of consecutive ones. A segment left behind (a crash, a failed rename) is
//! harmless: replay reads it and the snapshot marker after it supersedes its entries. After a
//! failed rename, that segment and every newer one handed over wait, and each later batch tries
//! them again first, so a passing failure (a full directory, a permission set right) costs
//! disk space only until the next compaction. A renamed one left half cut is no longer a
//! segment; the log's next open hands it back here.

use super::wal::sync_dir;
use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Appended to a released segment's name: the log no longer reads it as a segment.
pub(crate) const REMOVING_SUFFIX: &str = ".removing";

/// Bytes freed per step when cutting a released segment down.
const CUT_STEP_BYTES: u64 = 4 << 20;

/// Pause between steps, so the log's writes get the disk in between.
const CUT_PAUSE: Duration = Duration::from_millis(5);

/// What the remover's thread is asked to do.
enum Job {
    /// Delete these segments, oldest first.
    Remove(Vec<PathBuf>),
    /// Answer once every earlier batch is done.
    Flush(Sender<()>),
}

/// The thread deleting one log's released segments; dropping it waits for what was handed over.
#[derive(Debug)]
pub(crate) struct SegmentRemover {
    /// The log's directory (fsynced after each batch if `sync`).
    dir: PathBuf,
    sync: bool,
    /// `None` while dropping (closing the channel ends the thread), or if no thread started:
    /// then segments are deleted by the caller.
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// Set when the log closes: what is still queued goes without pauses.
    hurry: Arc<AtomicBool>,
}

impl SegmentRemover {
    /// Starts the thread for the log in `dir`; `sync` makes each batch's deletions durable
    /// (directory fsync). Without a thread, [`remove`](Self::remove) deletes on the caller's.
    pub(crate) fn start(dir: &Path, sync: bool) -> SegmentRemover {
        let (jobs, queue) = mpsc::channel();
        let hurry = Arc::new(AtomicBool::new(false));
        let (thread_dir, in_hurry) = (dir.to_path_buf(), hurry.clone());
        let thread = thread::Builder::new()
            .name("wal-remover".into())
            .spawn(move || run(&thread_dir, sync, &in_hurry, &queue))
            .map_err(|e| log::warn!("wal: no thread for deleting segments ({e}); deleting inline"))
            .ok();
        let jobs = thread.as_ref().map(|_| jobs);
        SegmentRemover { dir: dir.to_path_buf(), sync, jobs, thread, hurry }
    }

    /// Hands `paths` (oldest first) over for deletion; if there is no thread, deletes them here.
    pub(crate) fn remove(&self, paths: Vec<PathBuf>) {
        let inline = |paths: &[PathBuf]| remove_batch(&self.dir, self.sync, &AtomicBool::new(true), paths);
        match &self.jobs {
            Some(jobs) => {
                if let Err(mpsc::SendError(Job::Remove(paths))) = jobs.send(Job::Remove(paths)) {
                    inline(&paths);
                }
            }
            None => {
                inline(&paths);
            }
        }
    }

    /// Returns once every segment handed over so far is deleted (or failed to be, for now).
    pub(crate) fn flush(&self) {
        let Some(jobs) = &self.jobs else { return };
        let (done, wait) = mpsc::channel();
        if jobs.send(Job::Flush(done)).is_ok() {
            // An error here means the thread is gone, and with it every pending deletion.
            let _ = wait.recv();
        }
    }
}

impl Drop for SegmentRemover {
    fn drop(&mut self) {
        // Closing the channel lets the thread finish the batches queued and return: whoever
        // opens the directory next (a restarted replica) finds no deletion still under way.
        self.hurry.store(true, Ordering::Relaxed);
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("wal: the segment remover panicked");
            }
        }
    }
}

/// The remover's thread: batches in order until the log closes the channel.
fn run(dir: &Path, sync: bool, hurry: &AtomicBool, queue: &Receiver<Job>) {
    // Released segments not yet deleted, oldest first: after a failed delete nothing newer goes
    // either (replay refuses a gap between segments), and the next batch starts over from here.
    let mut pending: Vec<PathBuf> = Vec::new();
    for job in queue {
        match job {
            Job::Remove(paths) => {
                pending.extend(paths);
                let done = remove_batch(dir, sync, hurry, &pending);
                pending.drain(..done);
                if !pending.is_empty() {
                    log::warn!(
                        "wal: {} released segments left on disk until the next compaction",
                        pending.len()
                    );
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Deletes `paths` in order, stopping at the first that cannot be moved out of the log's way
/// (so no gap opens between the segments left): how many of them are gone.
fn remove_batch(dir: &Path, sync: bool, hurry: &AtomicBool, paths: &[PathBuf]) -> usize {
    let mut deleted = false;
    let mut gone = paths.len();
    for (at, path) in paths.iter().enumerate() {
        let doomed = match set_aside(dir, sync, path) {
            Ok(Some(doomed)) => doomed,
            Ok(None) => continue,
            Err(e) => {
                log::error!("wal: cannot delete released segment {}: {e}; left on disk", path.display());
                gone = at;
                break;
            }
        };
        deleted = true;
        if let Err(e) = cut_and_unlink(&doomed, hurry) {
            // No longer a segment: the log's next open hands it back for deletion.
            log::warn!("wal: cannot delete released segment {}: {e}", doomed.display());
        }
    }
    if deleted && sync {
        if let Err(e) = sync_dir(dir) {
            log::error!("wal: {e}");
        }
    }
    gone
}

/// Files in `dir` set aside for deletion and not yet deleted (a crash came first), by name.
pub(crate) fn set_aside_files(dir: &Path) -> super::error::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for item in fs::read_dir(dir).map_err(super::error::io_err("list", dir))? {
        let item = item.map_err(super::error::io_err("list", dir))?;
        if item.file_name().to_string_lossy().ends_with(REMOVING_SUFFIX) {
            found.push(item.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Renames a released segment so the log no longer reads it (durably if `sync`): where it now
/// is, `None` if it was already gone. A path already set aside is returned as it is.
fn set_aside(dir: &Path, sync: bool, path: &Path) -> std::io::Result<Option<PathBuf>> {
    if path.as_os_str().to_string_lossy().ends_with(REMOVING_SUFFIX) {
        return Ok(Some(path.to_path_buf()));
    }
    let mut doomed = path.as_os_str().to_owned();
    doomed.push(REMOVING_SUFFIX);
    let doomed = PathBuf::from(doomed);
    match fs::rename(path, &doomed) {
        Ok(()) => {}
        // Renamed by an earlier try whose directory fsync failed: cut it now.
        Err(e) if e.kind() == ErrorKind::NotFound && doomed.exists() => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    // Durable before the file is cut: a crash must never leave a cut file under a segment's name.
    if sync {
        sync_dir(dir).map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    Ok(Some(doomed))
}

/// Frees a file's blocks a step at a time, then unlinks it: a set-aside segment here, an older
/// snapshot image in the snapshot store (whose unlink in one go stalled the WAL the same way).
pub(crate) fn cut_and_unlink(doomed: &Path, hurry: &AtomicBool) -> std::io::Result<()> {
    let file = OpenOptions::new().write(true).open(doomed)?;
    let mut len = file.metadata()?.len();
    while len > 0 {
        len = len.saturating_sub(CUT_STEP_BYTES);
        file.set_len(len)?;
        if len > 0 && !hurry.load(Ordering::Relaxed) {
            thread::sleep(CUT_PAUSE);
        }
    }
    drop(file);
    fs::remove_file(doomed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is in `dir`.
    fn left_in(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir).expect("list").map(|e| e.expect("entry").path()).collect()
    }

    fn files(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
        names
            .iter()
            .map(|name| {
                let path = dir.join(name);
                std::fs::write(&path, b"segment").expect("write");
                path
            })
            .collect()
    }

    #[test]
    fn dropping_the_remover_finishes_what_was_handed_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = files(dir.path(), &["1.wal", "2.wal", "3.wal"]);
        let big = dir.path().join("1.wal");
        std::fs::write(&big, vec![7u8; 3 * CUT_STEP_BYTES as usize + 5]).expect("write");
        let remover = SegmentRemover::start(dir.path(), true);
        remover.remove(paths[..2].to_vec());
        remover.remove(paths[2..].to_vec());
        drop(remover);
        let left = left_in(dir.path());
        assert!(left.is_empty(), "every segment handed over is gone, set-aside names too: {left:?}");
    }

    #[test]
    fn a_segment_that_cannot_be_set_aside_holds_every_later_one_until_a_later_batch_retries_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = files(dir.path(), &["1.wal"]);
        let stuck = files(dir.path(), &["2.wal"]).remove(0);
        // Renaming a file onto a non-empty directory fails: the stand-in for a rename that fails.
        let blocker = dir.path().join(format!("2.wal{REMOVING_SUFFIX}"));
        std::fs::create_dir(&blocker).expect("mkdir");
        std::fs::write(blocker.join("x"), b"x").expect("write");
        let later = files(dir.path(), &["3.wal", "4.wal"]);
        let remover = SegmentRemover::start(dir.path(), false);
        // An already missing segment is not a failure.
        remover.remove(vec![dir.path().join("0.wal"), first[0].clone()]);
        remover.remove(vec![stuck.clone(), later[0].clone()]);
        remover.remove(vec![later[1].clone()]);
        remover.flush();
        assert!(!first[0].exists());
        assert!(stuck.exists() && later.iter().all(|p| p.exists()), "nothing after the failure went");
        // Still failing: the next batch waits behind the stuck one too.
        let newest = files(dir.path(), &["5.wal"]);
        remover.remove(newest.clone());
        remover.flush();
        assert!(stuck.exists() && later.iter().all(|p| p.exists()) && newest[0].exists());
        // Once the rename can succeed, the next batch deletes what waited, oldest first, then its own.
        std::fs::remove_dir_all(&blocker).expect("rmdir");
        let last = files(dir.path(), &["6.wal"]);
        remover.remove(last.clone());
        remover.flush();
        let left = left_in(dir.path());
        assert!(left.is_empty(), "what waited went with the next batch: {left:?}");
    }

    #[test]
    fn a_segment_renamed_by_an_earlier_try_is_cut_by_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("1.wal");
        // As an earlier try leaves it when the rename went through and the directory fsync failed.
        std::fs::write(dir.path().join(format!("1.wal{REMOVING_SUFFIX}")), b"segment").expect("write");
        let remover = SegmentRemover::start(dir.path(), true);
        remover.remove(vec![path]);
        remover.flush();
        let left = left_in(dir.path());
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn set_aside_files_are_found_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        files(dir.path(), &["2.wal", "1.wal.removing", "3.wal.removing", "x.snap"]);
        let found = set_aside_files(dir.path()).expect("list");
        assert_eq!(found, vec![dir.path().join("1.wal.removing"), dir.path().join("3.wal.removing")]);
    }
}
