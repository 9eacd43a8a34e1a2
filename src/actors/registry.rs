//! Maps every connection actor of a replica shares: the live clients (CLIENT LIST, INFO clients)
//! and SCAN cursors. Not actors: each connection reads and writes them directly.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dashmap::DashMap;

/// Most SCAN cursors a replica remembers; the oldest is forgotten first.
pub const MAX_SCAN_CURSORS: usize = 65_536;

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

    /// Notes that a request arrived now.
    pub fn touch(&self) {
        self.last_active_ms.store(self.created.elapsed().as_millis() as u64, Ordering::Relaxed);
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
    order: Mutex<VecDeque<u64>>,
}

impl Default for ScanCursors {
    fn default() -> Self {
        // Cursors of different replicas (and runs) start far apart, so one is rarely valid on another.
        let start = RandomState::new().hash_one(0u8) >> 1;
        ScanCursors {
            next: AtomicU64::new(start),
            starts: DashMap::new(),
            order: Mutex::new(VecDeque::new()),
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
        self.starts.insert(cursor, start);
        if let Ok(mut order) = self.order.lock() {
            order.push_back(cursor);
            while order.len() > MAX_SCAN_CURSORS {
                if let Some(old) = order.pop_front() {
                    self.starts.remove(&old);
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

#[cfg(test)]
mod tests {
    use super::*;

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
