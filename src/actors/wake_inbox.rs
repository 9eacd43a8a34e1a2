//! A queue one thread fills and an actor on another drains, waking it only when it asked to be
//! woken (not an actor).

use std::sync::{Mutex, PoisonError};

/// Items handed to an actor without a message each: the actor drains the inbox whenever it runs
/// anyway, and arms a wake-up only when it knows nothing else will make it run soon.
#[derive(Debug)]
pub struct WakeInbox<T> {
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    items: Vec<T>,
    /// The drainer will not look again by itself: the next push must wake it.
    wake_wanted: bool,
}

impl<T> Default for WakeInbox<T> {
    fn default() -> Self {
        WakeInbox::new()
    }
}

impl<T> WakeInbox<T> {
    /// An empty inbox whose first push wakes the drainer.
    pub fn new() -> WakeInbox<T> {
        WakeInbox { state: Mutex::new(State { items: Vec::new(), wake_wanted: true }) }
    }

    /// Adds `item`; returns whether the caller must wake the drainer (once per armed wake-up).
    pub fn push(&self, item: T) -> bool {
        // Nothing panics while the lock is held, so a poisoned lock still guards whole state.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.items.push(item);
        std::mem::take(&mut state.wake_wanted)
    }

    /// Removes every item. When there are none and `will_not_look` (the drainer has nothing that
    /// makes it run again soon), the next push asks for a wake-up.
    ///
    /// Checked and armed under one lock, so a push either lands before this take (and is taken
    /// by the drainer's next look, which a non-empty take implies) or sees the wake armed.
    pub fn take(&self, will_not_look: bool) -> Vec<T> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let items = std::mem::take(&mut state.items);
        if items.is_empty() && will_not_look {
            state.wake_wanted = true;
        }
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_armed_inbox_asks_for_a_wake() {
        let inbox = WakeInbox::new();
        assert!(inbox.push(1), "a fresh inbox wakes its drainer");
        assert!(!inbox.push(2), "one wake per arming");
        // The drainer looks while it has more coming (a round out): it takes, arms nothing.
        assert_eq!(inbox.take(false), vec![1, 2]);
        assert!(inbox.take(false).is_empty());
        assert!(!inbox.push(3), "the drainer said it would look again");
        // Items waiting are taken, not armed over, even when it will not look again.
        assert_eq!(inbox.take(true), vec![3]);
        assert!(!inbox.push(4), "a non-empty take arms nothing: the drainer looks once more");
        assert_eq!(inbox.take(true), vec![4]);
        // Empty and nothing coming: armed, and the next push wakes, once.
        assert!(inbox.take(true).is_empty());
        assert!(inbox.push(5));
        assert!(!inbox.push(6));
    }
}
