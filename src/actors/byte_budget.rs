//! A bound on bytes held in a queue, shared by who fills it and who drains it (not an actor).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes held, up to a limit; one item always fits an empty budget, so nothing is too big to pass.
#[derive(Debug)]
pub struct ByteBudget {
    held: AtomicUsize,
    limit: usize,
}

impl ByteBudget {
    /// An empty budget of `limit` bytes.
    pub fn new(limit: usize) -> ByteBudget {
        ByteBudget { held: AtomicUsize::new(0), limit }
    }

    /// Holds `bytes` more, or refuses (holding nothing) if that would pass the limit.
    pub fn try_reserve(&self, bytes: usize) -> bool {
        let before = self.held.fetch_add(bytes, Ordering::Relaxed);
        if before > 0 && before + bytes > self.limit {
            self.held.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Holds `bytes` more whatever the limit (a part of an item already admitted).
    pub fn hold(&self, bytes: usize) {
        self.held.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Gives back bytes held.
    pub fn release(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_item_always_fits_and_the_limit_holds_after_it() {
        let budget = ByteBudget::new(10);
        assert!(budget.try_reserve(25), "an empty budget takes anything");
        assert!(!budget.try_reserve(1));
        budget.release(25);
        assert!(budget.try_reserve(6) && budget.try_reserve(4));
        assert!(!budget.try_reserve(1));
        assert_eq!(budget.held(), 10);
        budget.hold(5);
        assert_eq!(budget.held(), 15, "a part of an admitted item is held past the limit");
        assert!(!budget.try_reserve(1));
    }
}
