//! The waiter's success rule: when a proposal's watcher may report its own result.
//!
//! A waiter proposes at (index, term) with a request id unique on its replica. Whatever is applied at
//! that index decides it: the waiter's own entry (same term and request id) gives its result; any
//! other entry there, a snapshot covering it, or an entry past it seen first, means the proposal was
//! replaced by a new leader and its outcome is unknown to this replica (`-TRYAGAIN`, retry with the
//! same `REQ`). It can never be reported as done when it was not.

/// What a waiter watches: where its proposal went into the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchKey {
    /// The proposal's log index.
    pub index: u64,
    /// The term it was proposed in.
    pub term: u64,
    /// The proposal's request id.
    pub request_id: u64,
}

/// What was just applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The log index applied (for a snapshot, the index it covers).
    pub index: u64,
    /// The entry's term and request id, if it is a proposal; `None` for a no-op, an undecodable
    /// entry or a snapshot.
    pub proposal: Option<(u64, u64)>,
}

/// The fate of a watch once `applied` has been applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchVerdict {
    /// Not decided yet: the watched index lies past what was applied.
    Pending,
    /// The watcher's own entry was applied: report its result.
    Own,
    /// Something else took the index (or the log moved past it): the outcome is unknown.
    Superseded,
}

/// Decides a watch against one applied entry (entries are applied in index order).
pub fn watch_verdict(watch: WatchKey, applied: Applied) -> WatchVerdict {
    if watch.index > applied.index {
        return WatchVerdict::Pending;
    }
    match applied.proposal {
        Some((term, request_id))
            if watch.index == applied.index && watch.term == term && watch.request_id == request_id =>
        {
            WatchVerdict::Own
        }
        _ => WatchVerdict::Superseded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_index_term_and_request_id_succeed() {
        let watch = WatchKey { index: 10, term: 3, request_id: 77 };
        let cases = [
            (Applied { index: 9, proposal: Some((3, 77)) }, WatchVerdict::Pending),
            (Applied { index: 10, proposal: Some((3, 77)) }, WatchVerdict::Own),
            (Applied { index: 10, proposal: Some((4, 77)) }, WatchVerdict::Superseded),
            (Applied { index: 10, proposal: Some((3, 78)) }, WatchVerdict::Superseded),
            (Applied { index: 10, proposal: None }, WatchVerdict::Superseded),
            (Applied { index: 11, proposal: Some((3, 77)) }, WatchVerdict::Superseded),
            (Applied { index: 12, proposal: None }, WatchVerdict::Superseded),
        ];
        for (applied, verdict) in cases {
            assert_eq!(watch_verdict(watch, applied), verdict, "{applied:?}");
        }
    }
}
