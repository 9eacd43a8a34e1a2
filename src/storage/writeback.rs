//! Sending a file's dirty pages to the disk ahead of an fsync (`sync_file_range`), so the fsync
//! of a large write, or another file's fsync queued behind it, does not wait for all of them;
//! and asking for pages ahead of a read (`posix_fadvise`).
//!
//! Linux only; elsewhere these do nothing. Starting a writeback or a read-ahead ignores errors:
//! durability comes from the fsync that follows, and a read reads whatever the hint did. Waiting
//! ([`write_and_wait`]) is another matter: it reports the file's writeback error, and Linux then
//! counts that error as seen by this open file, so an fsync through the same open file after it
//! may return success over pages that never reached the disk. Whoever waits must act on the error
//! (or wait through an open file of its own, whose errors the writer's fsync still sees).

use std::fs::File;

/// Starts writing out bytes `from..to` of `file`, without waiting.
pub(crate) fn start(file: &File, from: u64, to: u64) {
    // Without a wait, no error is taken from the file: its fsync still reports it.
    let _ = sync_range(file, from, to, Wait::No);
}

/// Writes out bytes `from..to` of `file` and waits until they are on the disk; an error is the
/// file's writeback error, which the next fsync through `file` will not report again.
pub(crate) fn write_and_wait(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    sync_range(file, from, to, Wait::Yes)
}

/// Starts reading bytes `from..from + len` of `file` into the page cache, without waiting.
pub(crate) fn read_ahead(file: &File, from: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(from), Ok(len)) = (i64::try_from(from), i64::try_from(len)) else { return };
        // SAFETY: posix_fadvise reads no memory of ours; a bad range or descriptor is an error.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), from, len, libc::POSIX_FADV_WILLNEED);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, len);
}

enum Wait {
    No,
    Yes,
}

#[cfg(target_os = "linux")]
fn sync_range(file: &File, from: u64, to: u64, wait: Wait) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(from), Ok(to)) = (i64::try_from(from), i64::try_from(to)) else { return Ok(()) };
    if to <= from {
        return Ok(());
    }
    let flags = match wait {
        Wait::No => libc::SYNC_FILE_RANGE_WRITE,
        Wait::Yes => {
            libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER
        }
    };
    // SAFETY: sync_file_range reads no memory of ours; a bad range or descriptor is an error.
    let done = unsafe { libc::sync_file_range(file.as_raw_fd(), from, to - from, flags) };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn sync_range(_file: &File, _from: u64, _to: u64, _wait: Wait) -> std::io::Result<()> {
    Ok(())
}
