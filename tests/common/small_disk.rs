//! A small tmpfs mounted for one test (the tests run as root, as CI does), for a disk that fills.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a given size mounted at a directory, unmounted on drop.
pub struct SmallDisk(PathBuf);

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it: "8m") at `at`.
    pub fn mount(at: &Path, size: &str) -> SmallDisk {
        let status = Command::new("mount")
            // Pages of its own size (no huge pages, whatever the machine's default): a test can
            // then fill it to the page.
            .args(["-t", "tmpfs", "-o", &format!("size={size},huge=never"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root (CI runs as root)");
        SmallDisk(at.to_path_buf())
    }

    /// Enlarges it to `size`, its files kept (a disk that got room again).
    pub fn grow(&self, size: &str) {
        let grown = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).status();
        assert!(grown.expect("run mount").success(), "enlarge {}", self.0.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
