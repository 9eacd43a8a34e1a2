//! Maps every connection actor of a replica shares: the live clients (CLIENT LIST, INFO clients),
//! SCAN cursors and the images held for `SNAPSHOT` downloads. Not actors: each connection reads
//! and writes them directly.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Most SCAN cursors a replica remembers; the oldest is forgotten first.
pub const MAX_SCAN_CURSORS: usize = 65_536;
/// Most bytes of keys the remembered SCAN cursors hold (a key may be 64 KiB); past it the oldest
/// are forgotten first.
pub const MAX_SCAN_CURSOR_BYTES: usize = 64 * 1024 * 1024;

/// What CLIENT LIST shows of one connection.
#[derive(Debug)]
pub struct ClientEntry {
    /// CLIENT ID.
    pub id: u64,
    /// The client's address.
    pub addr: String,
    /// The replica's address of the connection.
    pub laddr: String,
    /// When the connection was accepted.
    pub created: Instant,
    /// CLIENT SETNAME, and the library CLIENT SETINFO named.
    pub names: Mutex<ClientNames>,
    /// Milliseconds after `created` of the last request.
    pub last_active_ms: AtomicU64,
    /// Commands queued in MULTI (-1: not in a transaction).
    pub multi: AtomicI64,
    /// Keys watched.
    pub watching: AtomicUsize,
}

/// The names a client gave itself.
#[derive(Clone, Debug, Default)]
pub struct ClientNames {
    /// CLIENT SETNAME.
    pub name: String,
    /// CLIENT SETINFO LIB-NAME.
    pub lib_name: String,
    /// CLIENT SETINFO LIB-VER.
    pub lib_ver: String,
}

impl ClientEntry {
    /// One line of CLIENT LIST (and CLIENT INFO), in Redis's `field=value` form.
    pub fn info_line(&self) -> String {
        let names = self.names.lock().map(|n| n.clone()).unwrap_or_default();
        let age = self.created.elapsed();
        let idle_ms = (age.as_millis() as u64).saturating_sub(self.last_active_ms.load(Ordering::Relaxed));
        let multi = self.multi.load(Ordering::Relaxed);
        let flags = if multi >= 0 { "x" } else { "N" };
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags={flags} db=0 sub=0 psub=0 \
             ssub=0 multi={multi} watch={} resp=2 lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            names.name,
            age.as_secs(),
            idle_ms / 1000,
            self.watching.load(Ordering::Relaxed),
            names.lib_name,
            names.lib_ver,
        )
    }

    /// Notes that a request arrived at `at`.
    pub fn touch(&self, at: Instant) {
        let since_created = at.saturating_duration_since(self.created);
        self.last_active_ms.store(since_created.as_millis() as u64, Ordering::Relaxed);
    }
}

/// The live client connections of a replica, by CLIENT ID.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    clients: DashMap<u64, Arc<ClientEntry>>,
    next_id: AtomicU64,
}

impl ClientRegistry {
    /// Registers a new connection; it stays listed until [`remove`](Self::remove).
    pub fn register(&self, addr: String, laddr: String) -> Arc<ClientEntry> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(ClientEntry {
            id,
            addr,
            laddr,
            created: Instant::now(),
            names: Mutex::new(ClientNames::default()),
            last_active_ms: AtomicU64::new(0),
            multi: AtomicI64::new(-1),
            watching: AtomicUsize::new(0),
        });
        self.clients.insert(id, entry.clone());
        entry
    }

    /// Forgets a closed connection.
    pub fn remove(&self, id: u64) {
        self.clients.remove(&id);
    }

    /// Number of live connections.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// True with no live connection.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// CLIENT LIST: one line per connection, by id.
    pub fn list(&self) -> String {
        let mut entries: Vec<Arc<ClientEntry>> = self.clients.iter().map(|e| e.value().clone()).collect();
        entries.sort_by_key(|e| e.id);
        entries.iter().map(|e| e.info_line() + "\n").collect()
    }
}

/// SCAN cursors: where each page that goes on continues, by the number the client was given.
///
/// Cursors belong to the replica that gave them (a scan goes on where it began); one that is
/// unknown — forgotten, or from another replica — is refused, never restarted silently.
#[derive(Debug)]
pub struct ScanCursors {
    next: AtomicU64,
    starts: DashMap<u64, Vec<u8>>,
    /// The cursors in the order given, and the bytes of their keys.
    order: Mutex<(VecDeque<u64>, usize)>,
}

impl Default for ScanCursors {
    fn default() -> Self {
        // Cursors of different replicas (and runs) start far apart, so one is rarely valid on
        // another; below 2^52, so they stay exact where a client holds numbers as doubles
        // (JavaScript's, whose integers are exact below 2^53).
        let start = RandomState::new().hash_one(0u8) >> 12;
        ScanCursors {
            next: AtomicU64::new(start),
            starts: DashMap::new(),
            order: Mutex::new((VecDeque::new(), 0)),
        }
    }
}

impl ScanCursors {
    /// A new cursor (never 0) for a scan that goes on from `start`.
    pub fn register(&self, start: Vec<u8>) -> u64 {
        let mut cursor = self.next.fetch_add(1, Ordering::Relaxed);
        if cursor == 0 {
            cursor = self.next.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut guard) = self.order.lock() {
            let (order, bytes) = &mut *guard;
            *bytes += start.len();
            self.starts.insert(cursor, start);
            order.push_back(cursor);
            while order.len() > MAX_SCAN_CURSORS || (*bytes > MAX_SCAN_CURSOR_BYTES && order.len() > 1) {
                if let Some((_, key)) = order.pop_front().and_then(|old| self.starts.remove(&old)) {
                    *bytes -= key.len();
                }
            }
        }
        cursor
    }

    /// Where the scan of `cursor` goes on (0: from the first key); none if it is unknown.
    pub fn start_of(&self, cursor: u64) -> Option<Vec<u8>> {
        if cursor == 0 {
            return Some(Vec::new());
        }
        self.starts.get(&cursor).map(|s| s.value().clone())
    }
}

/// Most snapshot images a replica holds for download at once (each is a copy of the whole state).
pub const MAX_HELD_SNAPSHOTS: usize = 2;

/// A held image no chunk was read from for this long is let go.
pub const HELD_SNAPSHOT_IDLE: Duration = Duration::from_secs(60);

/// Largest piece of an image one `SNAPSHOT CHUNK` answers.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

struct HeldSlot {
    /// The encoded image; None while it is being taken.
    image: Option<Arc<Vec<u8>>>,
    last_used: Instant,
}

/// Images held for download: at most [`MAX_HELD_SNAPSHOTS`], each let go by `SNAPSHOT END` or
/// after [`HELD_SNAPSHOT_IDLE`] unused.
#[derive(Default)]
pub struct HeldSnapshots {
    slots: Mutex<(u64, BTreeMap<u64, HeldSlot>)>,
}

impl std::fmt::Debug for HeldSnapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldSnapshots").finish_non_exhaustive()
    }
}

impl HeldSnapshots {
    /// A token for an image about to be taken, or None when as many are held as allowed.
    pub fn reserve(&self) -> Option<u64> {
        let mut guard = self.slots.lock().ok()?;
        let (next, slots) = &mut *guard;
        let_go_idle(slots, Instant::now());
        if slots.len() >= MAX_HELD_SNAPSHOTS {
            return None;
        }
        *next += 1;
        slots.insert(*next, HeldSlot { image: None, last_used: Instant::now() });
        Some(*next)
    }

    /// Holds `image` under the `token` [`reserve`](Self::reserve) gave.
    pub fn fill(&self, token: u64, image: Arc<Vec<u8>>) {
        if let Ok(mut guard) = self.slots.lock() {
            if let Some(slot) = guard.1.get_mut(&token) {
                slot.image = Some(image);
                slot.last_used = Instant::now();
            }
        }
    }

    /// Lets the image of `token` go (taken or not); false if it was not held.
    pub fn release(&self, token: u64) -> bool {
        self.slots.lock().is_ok_and(|mut guard| guard.1.remove(&token).is_some())
    }

    /// Lets go the images unused for [`HELD_SNAPSHOT_IDLE`] at `now` (the front end calls it
    /// every second: a client that downloads part of one and leaves must not keep a copy of
    /// the state in memory).
    pub fn let_go_idle(&self, now: Instant) {
        if let Ok(mut guard) = self.slots.lock() {
            let_go_idle(&mut guard.1, now);
        }
    }

    /// At most [`SNAPSHOT_CHUNK_BYTES`] of the image of `token` from `offset`; None if it is not
    /// held (never taken, let go, or still being taken).
    pub fn chunk(&self, token: u64, offset: u64) -> Option<Vec<u8>> {
        let mut guard = self.slots.lock().ok()?;
        let slot = guard.1.get_mut(&token)?;
        let image = slot.image.as_ref()?;
        slot.last_used = Instant::now();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(image.len());
        let end = start.saturating_add(SNAPSHOT_CHUNK_BYTES).min(image.len());
        Some(image[start..end].to_vec())
    }
}

/// Drops the taken images of `slots` unused for [`HELD_SNAPSHOT_IDLE`] at `now` (one still
/// being taken stays: its taking ends by itself).
fn let_go_idle(slots: &mut BTreeMap<u64, HeldSlot>, now: Instant) {
    slots.retain(|_, s| s.image.is_none() || now.saturating_duration_since(s.last_used) < HELD_SNAPSHOT_IDLE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_snapshots_are_bounded_chunked_and_released() {
        let held = HeldSnapshots::default();
        let first = held.reserve().expect("room for one");
        let second = held.reserve().expect("room for two");
        assert_eq!(held.reserve(), None, "no more than {MAX_HELD_SNAPSHOTS}");
        assert_eq!(held.chunk(first, 0), None, "not taken yet");
        let image = Arc::new((0..SNAPSHOT_CHUNK_BYTES + 10).map(|i| i as u8).collect::<Vec<u8>>());
        held.fill(first, image.clone());
        assert_eq!(held.chunk(first, 0).map(|c| c.len()), Some(SNAPSHOT_CHUNK_BYTES));
        assert_eq!(
            held.chunk(first, SNAPSHOT_CHUNK_BYTES as u64),
            Some(image[SNAPSHOT_CHUNK_BYTES..].to_vec())
        );
        assert_eq!(held.chunk(first, u64::MAX), Some(Vec::new()), "past the end: empty");
        assert!(held.release(first));
        assert!(!held.release(first));
        assert_eq!(held.chunk(first, 0), None);
        assert!(held.reserve().is_some(), "a released slot is free again");
        assert!(held.release(second));
    }

    #[test]
    fn an_unused_held_image_is_let_go_by_the_sweep() {
        let held = HeldSnapshots::default();
        let token = held.reserve().expect("room");
        held.fill(token, Arc::new(vec![1, 2, 3]));
        held.let_go_idle(Instant::now() + HELD_SNAPSHOT_IDLE / 2);
        assert_eq!(held.chunk(token, 0), Some(vec![1, 2, 3]), "still in use");
        held.let_go_idle(Instant::now() + HELD_SNAPSHOT_IDLE + Duration::from_secs(1));
        assert_eq!(held.chunk(token, 0), None, "let go once idle");
    }

    #[test]
    fn cursors_are_exact_as_doubles_and_their_keys_bounded_in_bytes() {
        let cursors = ScanCursors::default();
        let first = cursors.register(b"a".to_vec());
        assert!(first < 1 << 53, "{first}");
        let key = vec![b'k'; 64 * 1024];
        let kept = MAX_SCAN_CURSOR_BYTES / key.len();
        let given: Vec<u64> = (0..kept + 10).map(|_| cursors.register(key.clone())).collect();
        assert_eq!(cursors.start_of(first), None, "the oldest went first");
        assert!(cursors.starts.len() <= kept, "{} cursors of 64 KiB kept", cursors.starts.len());
        assert_eq!(cursors.start_of(given[given.len() - 1]), Some(key.clone()), "the newest kept");
        let bytes: usize = cursors.starts.iter().map(|e| e.value().len()).sum();
        assert_eq!(cursors.order.lock().map(|g| g.1).ok(), Some(bytes), "the count matches what is held");
    }

    #[test]
    fn cursors_resolve_until_forgotten() {
        let cursors = ScanCursors::default();
        assert_eq!(cursors.start_of(0), Some(Vec::new()));
        let first = cursors.register(b"k1".to_vec());
        assert_ne!(first, 0);
        assert_eq!(cursors.start_of(first), Some(b"k1".to_vec()));
        for i in 0..MAX_SCAN_CURSORS {
            cursors.register(i.to_string().into_bytes());
        }
        assert_eq!(cursors.start_of(first), None, "the oldest is forgotten first");
        assert_eq!(cursors.starts.len(), MAX_SCAN_CURSORS);
    }

    #[test]
    fn clients_are_listed_until_removed() {
        let registry = ClientRegistry::default();
        let a = registry.register("1.2.3.4:5".into(), "127.0.0.1:6380".into());
        let b = registry.register("1.2.3.4:6".into(), "127.0.0.1:6380".into());
        if let Ok(mut names) = b.names.lock() {
            names.name = "worker".into();
        }
        let list = registry.list();
        assert!(list.starts_with(&format!("id={} addr=1.2.3.4:5 ", a.id)), "{list}");
        assert!(list.contains("name=worker"), "{list}");
        registry.remove(a.id);
        assert_eq!(registry.len(), 1);
        assert!(!registry.list().contains("1.2.3.4:5"));
    }
}
