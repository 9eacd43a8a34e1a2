//! When a replica snapshots its state: once the log since its last snapshot reaches the
//! threshold, with the first snapshot after start brought forward by a third of the threshold
//! per step of the replica's id (modulo 3), so the members of a cluster take theirs at different
//! points of the log instead of all at once.
//!
//! Every member's log grows by the same bytes, so with one threshold they would all cross it
//! together and encode and write their images at the same moment: the quorum's fsyncs would then
//! all wait behind image writes at once. Offset by a third of the threshold, at most one of three
//! consecutive ids is writing an image while the log grows by that third, and a commit needs only
//! the others. Bringing the first one forward (not putting it back) keeps the log in memory under
//! the threshold, as before.

use super::raft::NodeId;

/// Decides when the next snapshot is due, from the bytes of log since the last one.
#[derive(Debug)]
pub struct SnapshotSchedule {
    threshold: u64,
    /// Taken off the threshold until this replica's first snapshot.
    head_start: u64,
}

impl SnapshotSchedule {
    /// The schedule of replica `id` for `threshold` bytes of log between snapshots.
    pub fn new(threshold: u64, id: NodeId) -> SnapshotSchedule {
        SnapshotSchedule { threshold, head_start: threshold / 3 * (id % 3) }
    }

    /// Whether a snapshot is due with `bytes_since_snapshot` bytes of log since the last one.
    pub fn due(&self, bytes_since_snapshot: u64) -> bool {
        bytes_since_snapshot >= self.threshold - self.head_start
    }

    /// A snapshot was taken: from now on one is due at every full threshold.
    pub fn taken(&mut self) {
        self.head_start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_snapshot_comes_a_third_earlier_per_id_step_then_every_threshold() {
        // id -> bytes at which the first snapshot is due (threshold 300).
        for (id, first) in [(3, 300), (1, 200), (2, 100), (4, 200), (5, 100), (6, 300)] {
            let mut schedule = SnapshotSchedule::new(300, id);
            assert!(!schedule.due(first - 1), "id {id}");
            assert!(schedule.due(first), "id {id}");
            schedule.taken();
            assert!(!schedule.due(299), "id {id}");
            assert!(schedule.due(300), "id {id}");
        }
    }

    #[test]
    fn three_consecutive_ids_never_share_a_point_of_the_log() {
        // Log positions (bytes since start) at which each replica snapshots, while all logs grow
        // alike: no two of three consecutive ids snapshot within a third of the threshold.
        let threshold = 3_000;
        let points = |id: NodeId| {
            let mut schedule = SnapshotSchedule::new(threshold, id);
            let (mut last, mut points) = (0, Vec::new());
            for position in 0..=10 * threshold {
                if schedule.due(position - last) {
                    points.push(position);
                    last = position;
                    schedule.taken();
                }
            }
            points
        };
        for base in [1, 7] {
            let all: Vec<Vec<u64>> = (base..base + 3).map(points).collect();
            for (i, a) in all.iter().enumerate() {
                assert!(a.len() >= 10, "{a:?}");
                for b in &all[i + 1..] {
                    for x in a {
                        assert!(b.iter().all(|y| x.abs_diff(*y) >= threshold / 3), "{a:?} {b:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn tiny_thresholds_are_never_due_on_an_empty_log() {
        for threshold in 1..10 {
            for id in 1..4 {
                assert!(!SnapshotSchedule::new(threshold, id).due(0), "threshold {threshold} id {id}");
            }
        }
    }
}
