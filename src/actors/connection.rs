//! One client connection: reads RESP requests, starts a waiter for each, writes replies in order.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::byte_budget::ByteBudget;
use super::consensus::{Consensus, ReadInbox};
use super::metrics::command_slot;
use super::registry::{ClientEntry, ClientRegistry, HeldSnapshots, ScanCursors};
use super::status::StatusBoard;
use super::waiter::{DeadlinePassed, Waiter, WaiterTask};
use crate::protocol::command::Command;
use crate::protocol::request::{parse_client_request, ClientCommand, ClientRequest, RequestError};
use crate::protocol::resp::{ParseOutcome, Reply, RequestParser};

/// Commands one MULTI may queue; one more is refused and the transaction aborts at EXEC.
pub const MAX_QUEUED_COMMANDS: usize = 10_000;
/// Bytes of arguments one MULTI may queue (its EXEC is one log entry).
pub const MAX_QUEUED_BYTES: usize = crate::protocol::command::MAX_ENTRY_BYTES;

/// How long a closed connection's last replies may go without any of them written (its client
/// not reading) before they are given up.
pub const CLOSED_WRITE_LIMIT: Duration = Duration::from_secs(60);

/// Keys one connection may WATCH at a time (the EXEC that ends them carries them all).
pub const MAX_WATCHED_KEYS: usize = 10_000;

/// Requests of one connection in flight (read, not yet answered) before reading pauses.
pub const MAX_INFLIGHT_REQUESTS: usize = 1024;
/// A request of this many bytes of arguments or more is large: it also takes its bytes from the
/// replica's [`MAX_LARGE_REQUEST_BYTES`] (the small ones are bounded by the count per connection).
pub const LARGE_REQUEST_BYTES: usize = 64 * 1024;
/// Bytes of large requests a replica holds read and not yet answered, over all its connections;
/// a reader with one more waits until answers free some (one request is at most 80 MiB; the
/// one a waiting reader parsed, and the one still arriving in its buffer, are outside it).
pub const MAX_LARGE_REQUEST_BYTES: usize = 512 * 1024 * 1024;
/// Most bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Read buffer taken when a request starts arriving (a connection with nothing buffered holds
/// none, so an idle connection costs only its actor and socket).
const FIRST_READ_BYTES: usize = 4 * 1024;
/// Bytes of replies one connection may hold unwritten (produced, not yet taken by the socket)
/// before it is closed, as Redis's client-output-buffer-limit does for a client that does not read.
pub const MAX_REPLY_BUFFER_BYTES: usize = 256 * 1024 * 1024;

/// The reply bytes one connection holds unwritten, shared by the connection, its writer and the
/// applier (which reserves a read's reply before copying it out of the state).
#[derive(Debug)]
pub struct ReplyBudget {
    bytes: ByteBudget,
    overflowed: AtomicBool,
}

impl Default for ReplyBudget {
    fn default() -> Self {
        ReplyBudget { bytes: ByteBudget::new(MAX_REPLY_BUFFER_BYTES), overflowed: AtomicBool::new(false) }
    }
}

impl ReplyBudget {
    /// Reserves `bytes` for a reply about to be made; false (and the connection marked to close)
    /// if that would pass [`MAX_REPLY_BUFFER_BYTES`]. A reply to an otherwise empty buffer always fits.
    pub fn try_reserve(&self, bytes: usize) -> bool {
        let fits = self.bytes.try_reserve(bytes);
        if !fits {
            self.overflowed.store(true, Ordering::Relaxed);
        }
        fits
    }

    /// Holds `bytes` more whatever the limit (the framing of a reply already admitted).
    pub fn hold(&self, bytes: usize) {
        self.bytes.hold(bytes);
    }

    /// Gives back bytes reserved or queued.
    pub fn release(&self, bytes: usize) {
        self.bytes.release(bytes);
    }

    /// Bytes reserved or queued now.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.held()
    }

    /// True once a reservation was refused: the connection must close.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }
}

/// Bytes held in a connection's [`ReplyBudget`] for one reply on its way to the connection (a
/// read's value, reserved by the applier before it copied it out of the state): given back if
/// it is dropped on the way (its waiter gone at the deadline, the connection closed), else taken
/// by the connection, which gives them back once the reply is written.
#[derive(Debug, Default)]
pub struct Reserved {
    budget: Option<Arc<ReplyBudget>>,
    bytes: usize,
}

impl Reserved {
    /// `bytes` already reserved in `budget`.
    pub fn new(budget: Arc<ReplyBudget>, bytes: usize) -> Reserved {
        Reserved { budget: Some(budget), bytes }
    }

    /// The bytes reserved, from now on the caller's to give back.
    pub fn take(mut self) -> usize {
        self.budget = None;
        self.bytes
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if let Some(budget) = self.budget.take() {
            budget.release(self.bytes);
        }
    }
}

/// What a connection needs from its replica.
#[derive(Clone)]
pub struct ConnectionEnv {
    /// Where waiters propose and read.
    pub consensus: Addr<Consensus>,
    /// Where waiters hand reads to consensus.
    pub read_inbox: Arc<ReadInbox>,
    /// For INFO and redirects.
    pub status: Arc<StatusBoard>,
    /// How long a waiter may take.
    pub request_timeout: Duration,
    /// Close the connection once it has been idle this long with nothing in flight.
    pub idle_timeout: Option<Duration>,
    /// Every live connection of this replica (CLIENT LIST).
    pub clients: Arc<ClientRegistry>,
    /// SCAN cursors this replica gave out.
    pub cursors: Arc<ScanCursors>,
    /// Images held for `SNAPSHOT CHUNK`.
    pub snapshots: Arc<HeldSnapshots>,
    /// The replica's bytes for large requests in flight ([`MAX_LARGE_REQUEST_BYTES`] permits).
    pub large_requests: Arc<Semaphore>,
}

/// What a request read and not yet answered holds until its reply is written: its slot among
/// its connection's requests in flight and, if it is large, its bytes of the replica's budget.
#[derive(Debug)]
pub struct RequestPermit {
    _slot: OwnedSemaphorePermit,
    bytes: Option<OwnedSemaphorePermit>,
}

impl RequestPermit {
    /// Gives the request's bytes back (it is answered), keeping its slot until its reply is written.
    pub fn release_bytes(&mut self) {
        self.bytes = None;
    }
}

/// Where a connection's reader takes its requests' permits.
#[derive(Clone, Debug)]
pub struct RequestPermits {
    /// The connection's slots ([`MAX_INFLIGHT_REQUESTS`]).
    slots: Arc<Semaphore>,
    /// The replica's bytes for large requests.
    large: Arc<Semaphore>,
}

impl RequestPermits {
    /// A connection's permits, its large requests counted in `large`.
    pub fn new(large: Arc<Semaphore>) -> RequestPermits {
        RequestPermits { slots: Arc::new(Semaphore::new(MAX_INFLIGHT_REQUESTS)), large }
    }

    /// Bytes a request of `bytes` takes from the large budget (none if small).
    fn large_bytes(bytes: usize) -> u32 {
        if bytes < LARGE_REQUEST_BYTES {
            return 0;
        }
        u32::try_from(bytes.min(MAX_LARGE_REQUEST_BYTES)).unwrap_or(u32::MAX)
    }

    /// The permit of a request of `bytes`, if both are free now.
    pub fn try_take(&self, bytes: usize) -> Option<RequestPermit> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        let bytes = match Self::large_bytes(bytes) {
            0 => None,
            n => Some(self.large.clone().try_acquire_many_owned(n).ok()?),
        };
        Some(RequestPermit { _slot: slot, bytes })
    }

    /// The permit of a request of `bytes`, once both are free; none if a semaphore closed.
    pub async fn take(&self, bytes: usize) -> Option<RequestPermit> {
        let slot = self.slots.clone().acquire_owned().await.ok()?;
        let bytes = match Self::large_bytes(bytes) {
            0 => None,
            n => Some(self.large.clone().acquire_many_owned(n).await.ok()?),
        };
        Some(RequestPermit { _slot: slot, bytes })
    }

    /// Whether a request of this connection is in flight.
    fn any_taken(&self) -> bool {
        self.slots.available_permits() < MAX_INFLIGHT_REQUESTS
    }
}

/// How long `SNAPSHOT BEGIN` may take (the image of the whole state is encoded meanwhile).
pub const SNAPSHOT_BEGIN_TIMEOUT: Duration = Duration::from_secs(600);

/// The answer to a chunk or end of an image not held here.
const NO_SUCH_SNAPSHOT: &str =
    "no such snapshot on this replica (let go after SNAPSHOT END, or unused for 60 s; BEGIN again)";

/// Slots for requests in flight a connection keeps once they are answered (more is given back).
const KEPT_SLOTS: usize = 32;

/// A waiter's result, for the connection that started it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WaiterDone {
    /// The request's position on its connection.
    pub seq: u64,
    /// The reply to write.
    pub reply: Reply,
    /// What the applier reserved for it in the connection's [`ReplyBudget`].
    pub reserved: Reserved,
}

/// A request the reader parsed (or the error that stands for it), with the permit that
/// bounds requests in flight.
type Parsed = (Result<Vec<Vec<u8>>, String>, RequestPermit);

/// The requests the reader parsed from one read, in order: one message per read rather than
/// one per request.
#[derive(Message)]
#[rtype(result = "()")]
struct Incoming {
    first: Parsed,
    /// The ones after it (none, so no allocation, when the read brought one).
    rest: Vec<Parsed>,
    /// When the read that brought them returned: one clock read per read, not per request.
    arrived: Instant,
}

/// The reader hit unparseable input (reply with the error, then close), the end of input (the
/// client sent all it will), or a failed read (the client is gone).
#[derive(Message)]
#[rtype(result = "()")]
enum ReaderEnded {
    Garbage(String, RequestPermit),
    Eof,
    Gone,
}

/// Close this connection now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseConnection;

/// Bytes to write, and the permits of the replies they hold (released once written).
type WriteJob = (Vec<u8>, Vec<RequestPermit>);

/// A finished reply waiting for its turn, with the bytes the applier reserved for it.
struct ReadyReply {
    reply: Reply,
    reserved: usize,
}

/// A connection's place in the registry (`CLIENT LIST`, `--max-clients`), given up once the
/// last of its replies is written or given up, not when its actor stops: a client that stopped
/// reading after `QUIT` or a half-close still holds its socket and unwritten replies.
struct RegistryLease {
    clients: Arc<ClientRegistry>,
    status: Arc<StatusBoard>,
    id: u64,
}

impl Drop for RegistryLease {
    fn drop(&mut self) {
        self.clients.remove(self.id);
        self.status.set_connected_clients(self.clients.len());
    }
}

/// The actor serving one client connection.
pub struct Connection {
    env: ConnectionEnv,
    /// Consensus's address, handed to every waiter: shared, since each clone of an actix
    /// address costs two allocations.
    consensus: Rc<Addr<Consensus>>,
    /// This connection's own address for its waiters' replies, shared likewise (made with the
    /// first waiter).
    waiter_reply_to: Option<Rc<Recipient<WaiterDone>>>,
    reader: Option<OwnedReadHalf>,
    writer: Option<mpsc::UnboundedSender<WriteJob>>,
    /// The socket's write half, shared with the writer task (both on this thread): a burst of
    /// replies goes straight to the socket when the task holds nothing, saving a task wake-up.
    socket: Option<Rc<OwnedWriteHalf>>,
    /// Jobs handed to the writer task and not yet written.
    queued_jobs: Rc<Cell<usize>>,
    /// Bytes the writer task has written so far (its progress, once the connection closed).
    written_bytes: Rc<Cell<u64>>,
    /// Next sequence number to give a request.
    next_seq: u64,
    /// Next sequence number whose reply must be written.
    next_to_write: u64,
    /// Replies ready but waiting for an earlier one.
    ready: BTreeMap<u64, ReadyReply>,
    /// Reply bytes held unwritten, bounded by [`MAX_REPLY_BUFFER_BYTES`].
    budget: Arc<ReplyBudget>,
    /// The task writing to the socket, aborted (dropping what it holds) if the budget overflows.
    write_task: Option<tokio::task::JoinHandle<()>>,
    /// Permits of the requests not yet written, one per sequence number from `next_to_write`
    /// on, in order (a deque keeps its room, where a map allocated a node per request).
    permits: VecDeque<RequestPermit>,
    /// Close once the reply with this sequence number is written.
    close_after: Option<u64>,
    /// This connection in the registry.
    client: Arc<ClientEntry>,
    /// Its place there, handed to the writer task when it starts.
    lease: Option<RegistryLease>,
    /// Between MULTI and EXEC/DISCARD: what is queued.
    transaction: Option<Transaction>,
    /// WATCHed keys, and the applied index when the first was watched.
    watched: Vec<Vec<u8>>,
    watch_point: u64,
    /// A WATCH that arrived behind writes of this connection not yet answered: its position and
    /// keys. Its point must be past those writes (a pipelined `SET k 1`, `WATCH k` must not see
    /// its own SET as a change) and below whatever reads after it see, so it and every request
    /// after it wait, in `behind_watch`, until those writes are answered.
    watch_barrier: Option<(u64, Vec<Vec<u8>>)>,
    /// Requests that arrived behind `watch_barrier`, in order, with their arrival times.
    behind_watch: VecDeque<(u64, Vec<Vec<u8>>, Instant)>,
    /// EXECs in flight, by request position: the replies to splice into their answer.
    exec_splices: BTreeMap<u64, Vec<(usize, Reply)>>,
    /// EXECs in flight, by request position: the connection commands to carry out if it ran.
    exec_effects: BTreeMap<u64, Vec<ClientCommand>>,
    /// Requests in flight, in order of position: mostly answered in order, so removal is from
    /// the front.
    started: VecDeque<(u64, InFlight)>,
    /// How many waiters of each kind are in flight.
    waiting: Waiting,
    /// Requests held until waiters before them are answered (see [`Waiting::may_start`]), in
    /// order.
    deferred: VecDeque<(u64, WaiterTask)>,
    /// When the sweep for waiters past their deadline runs, if one is scheduled.
    sweep: Option<(Instant, SpawnHandle)>,
    /// Replies encoded in order during this turn of the actor, written together once its
    /// mailbox is drained: a burst of replies costs one send, not one per reply.
    burst: Burst,
}

/// What a waiter does, for keeping a connection's reads and writes in request order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WaiterKind {
    Read,
    Write,
    /// A membership or leadership command (consensus may hold it before it is in the log).
    Admin,
}

impl WaiterKind {
    fn of(task: &WaiterTask) -> WaiterKind {
        match task {
            WaiterTask::Read(..) => WaiterKind::Read,
            WaiterTask::Write { .. } => WaiterKind::Write,
            WaiterTask::Admin(_) => WaiterKind::Admin,
        }
    }
}

/// A connection's waiters in flight, by kind.
#[derive(Clone, Copy, Default, Debug)]
struct Waiting {
    reads: usize,
    writes: usize,
    admins: usize,
}

/// Whether a request may start now, and how.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Start {
    Now,
    /// A read behind writes in flight: it starts now but is served only once the writes ahead
    /// of it are applied. On a leader, every entry appended before it; on a follower, the
    /// entries the leader appended for the writes forwarded before it.
    AfterWrites,
    /// A write behind reads in flight: it starts now but is applied only once the reads ahead
    /// of it are served. On a leader, every read waiting there; on a follower, every read it
    /// holds for the leader's answer or for its own apply.
    AfterReads,
    Hold,
}

impl Waiting {
    /// How a request of `kind` may start. A read behind writes starts at once, to be served
    /// after them, and a write behind reads, to be applied after they are served. Anything
    /// behind a membership command, and a membership command behind reads, waits for their
    /// answers (consensus may hold the command before it is in the log).
    fn may_start(&self, kind: WaiterKind) -> Start {
        match kind {
            _ if self.admins > 0 => Start::Hold,
            WaiterKind::Read if self.writes == 0 => Start::Now,
            WaiterKind::Read => Start::AfterWrites,
            WaiterKind::Write if self.reads == 0 => Start::Now,
            WaiterKind::Write => Start::AfterReads,
            WaiterKind::Admin if self.reads == 0 => Start::Now,
            WaiterKind::Admin => Start::Hold,
        }
    }

    fn count(&mut self, kind: WaiterKind) -> &mut usize {
        match kind {
            WaiterKind::Read => &mut self.reads,
            WaiterKind::Write => &mut self.writes,
            WaiterKind::Admin => &mut self.admins,
        }
    }
}

/// A request that has not been answered yet.
struct InFlight {
    /// Its command's metrics slot.
    slot: usize,
    arrived: Instant,
    /// Its waiter, until it is told the deadline passed; none for what is answered here.
    waiter: Option<(Instant, Addr<Waiter>)>,
    /// What its waiter does, once one started (counted in [`Waiting`] until it answers).
    kind: Option<WaiterKind>,
}

impl InFlight {
    /// Tells its waiter, if it still has one, that its deadline passed (it answers TRYAGAIN
    /// through the usual WaiterDone).
    fn end_waiter(&mut self) {
        if let Some((_, waiter)) = self.waiter.take() {
            waiter.do_send(DeadlinePassed);
        }
    }
}

/// Replies encoded and not yet handed to the socket.
#[derive(Default)]
struct Burst {
    bytes: Vec<u8>,
    /// Permits of the requests these replies answer, released once written.
    permits: Vec<RequestPermit>,
    /// What the applier reserved in the budget for these replies, released when they are written.
    reserved: usize,
    /// A flush is spawned on this connection's context (it runs after the mailbox is drained).
    flush_spawned: bool,
}

/// A MULTI's queue.
#[derive(Default)]
struct Transaction {
    commands: Vec<Command>,
    /// Replies known while queueing (PING, ECHO, a command whose arguments were refused), by
    /// their position in EXEC's answer: spliced into it.
    local: Vec<(usize, Reply)>,
    bytes: usize,
    /// A command was refused while queueing: EXEC answers -EXECABORT.
    failed: bool,
    /// Connection commands that name the connection (CLIENT SETNAME/SETINFO, HELLO SETNAME),
    /// carried out only if EXEC runs the transaction, as Redis runs them there.
    effects: Vec<ClientCommand>,
}

impl Transaction {
    /// Counts a queued command of `bytes` (its arguments, or the reply kept for it) against the
    /// transaction's limits, or refuses it and dooms the transaction.
    fn admit(&mut self, bytes: usize) -> Result<(), Reply> {
        if self.commands.len() + self.local.len() >= MAX_QUEUED_COMMANDS
            || self.bytes + bytes > MAX_QUEUED_BYTES
        {
            self.failed = true;
            return Err(Reply::err(format!(
                "transaction too large (max {MAX_QUEUED_COMMANDS} commands, {MAX_QUEUED_BYTES} bytes)"
            )));
        }
        self.bytes += bytes;
        Ok(())
    }

    /// Queues a command answered here (its reply spliced into EXEC's answer); `+QUEUED`.
    fn queue_local(&mut self, reply: Reply) -> Reply {
        let position = self.commands.len() + self.local.len();
        self.local.push((position, reply));
        Reply::Simple("QUEUED".into())
    }
}

impl Connection {
    /// A connection over `stream` for a replica described by `env`.
    pub fn new(stream: TcpStream, env: ConnectionEnv) -> Connection {
        let _ = stream.set_nodelay(true);
        // A client whose host vanished is found gone and its slot freed (Redis's tcp-keepalive).
        let _ = crate::dial::keep_alive(&stream);
        let addr_of = |a: std::io::Result<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        let client = env.clients.register(addr_of(stream.peer_addr()), addr_of(stream.local_addr()));
        let lease = RegistryLease { clients: env.clients.clone(), status: env.status.clone(), id: client.id };
        let (reader, writer_half) = stream.into_split();
        Connection {
            consensus: Rc::new(env.consensus.clone()),
            waiter_reply_to: None,
            env,
            reader: Some(reader),
            writer: None,
            socket: Some(Rc::new(writer_half)),
            queued_jobs: Rc::new(Cell::new(0)),
            written_bytes: Rc::new(Cell::new(0)),
            next_seq: 0,
            next_to_write: 0,
            ready: BTreeMap::new(),
            budget: Arc::new(ReplyBudget::default()),
            write_task: None,
            permits: VecDeque::new(),
            close_after: None,
            lease: Some(lease),
            client,
            transaction: None,
            watched: Vec::new(),
            watch_point: 0,
            watch_barrier: None,
            behind_watch: VecDeque::new(),
            exec_splices: BTreeMap::new(),
            exec_effects: BTreeMap::new(),
            started: VecDeque::new(),
            waiting: Waiting::default(),
            deferred: VecDeque::new(),
            sweep: None,
            burst: Burst::default(),
        }
    }

    /// Removes the request at `seq` from those in flight.
    fn take_started(&mut self, seq: u64) -> Option<InFlight> {
        let at = self.started.binary_search_by_key(&seq, |(at, _)| *at).ok()?;
        self.started.remove(at).map(|(_, request)| request)
    }

    fn complete(&mut self, ctx: &mut Context<Self>, seq: u64, reply: Reply) {
        self.complete_reserved(ctx, seq, reply, 0);
    }

    fn complete_reserved(&mut self, ctx: &mut Context<Self>, seq: u64, mut reply: Reply, reserved: usize) {
        // The request's arguments are gone once it is answered: its bytes of the replica's
        // budget go back now, not once its reply is written (a client that does not read would
        // otherwise hold them; the reply is bounded by the reply budget).
        let at = seq.checked_sub(self.next_to_write).and_then(|at| usize::try_from(at).ok());
        if let Some(permit) = at.and_then(|at| self.permits.get_mut(at)) {
            permit.release_bytes();
        }
        if let Some(request) = self.take_started(seq) {
            let metrics = &self.env.status.metrics;
            metrics.request_seconds.observe(request.arrived.elapsed().as_secs_f64());
            if matches!(reply, Reply::Error(_)) {
                metrics.error(request.slot);
            }
        }
        if let Some(effects) = self.exec_effects.remove(&seq) {
            // Only a transaction that ran (not aborted by a WATCH, not refused) names the client.
            if matches!(reply, Reply::Array(Some(_))) {
                for effect in effects {
                    self.client_command(effect);
                }
            }
        }
        if let Some(local) = self.exec_splices.remove(&seq) {
            if let Reply::Array(Some(items)) = &mut reply {
                for (position, local_reply) in local {
                    items.insert(position.min(items.len()), local_reply);
                }
            }
        }
        // Replies leave in request order; the usual case, the reply next in line, skips the map.
        let mut next = if seq == self.next_to_write {
            Some(ReadyReply { reply, reserved })
        } else {
            // Held until the ones before it go: counted in the budget from now.
            let reserved = reserved + self.reserve_rest(reply.encoded_len(), reserved);
            self.ready.insert(seq, ReadyReply { reply, reserved });
            None
        };
        while let Some(ready) = next.take().or_else(|| self.ready.remove(&self.next_to_write)) {
            if self.budget.overflowed() {
                break;
            }
            let before = self.burst.bytes.len();
            ready.reply.encode_into(&mut self.burst.bytes);
            // Every reply counts, not only a read's value the applier reserved: one made here
            // (CLIENT LIST, INFO, COMMAND) can be as large, and a pipeline of them would
            // otherwise all be encoded before the first is written.
            let encoded = self.burst.bytes.len() - before;
            self.burst.reserved += ready.reserved + self.reserve_rest(encoded, ready.reserved);
            self.burst.permits.extend(self.permits.pop_front());
            self.next_to_write += 1;
        }
        // A refused reservation by the applier for a read of this connection.
        if self.budget.overflowed() {
            return self.close_overflowed(ctx);
        }
        if !self.burst.bytes.is_empty() && !self.burst.flush_spawned {
            // The context polls spawned futures only after its mailbox is empty, so the other
            // replies that finished in this turn (a pipelined batch applied together) join it.
            self.burst.flush_spawned = true;
            ctx.spawn(fut::ready(()).map(|(), act: &mut Self, ctx| act.flush(ctx)));
        }
    }

    /// Reserves in the budget what a reply of `len` bytes needs beyond the `reserved` it came
    /// with, returning what it took: nothing if that passed the budget (which then closes the
    /// connection). A reply the applier already admitted (its value) takes its framing too, as
    /// one reply always fits an empty budget.
    fn reserve_rest(&self, len: usize, reserved: usize) -> usize {
        let rest = len.saturating_sub(reserved);
        if reserved > 0 {
            self.budget.hold(rest);
        } else if !self.budget.try_reserve(rest) {
            return 0;
        }
        rest
    }

    /// Writes the burst of replies encoded so far, then closes if the last reply before a
    /// close was among them.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.burst.flush_spawned = false;
        self.write_burst();
        // A deep pipeline's room is given back once it has drained: an idle connection stays small.
        if self.started.is_empty() && self.started.capacity() > KEPT_SLOTS {
            self.started.shrink_to(KEPT_SLOTS);
        }
        if self.permits.is_empty() && self.permits.capacity() > KEPT_SLOTS {
            self.permits.shrink_to(KEPT_SLOTS);
        }
        // A refused reservation, by `write` or by the applier.
        if self.budget.overflowed() {
            return self.close_overflowed(ctx);
        }
        if self.close_after.is_some_and(|last| self.next_to_write > last) {
            // Dropping the writer's sender lets it finish writing, then close the socket.
            self.writer = None;
            ctx.stop();
        }
    }

    /// Hands the burst of encoded replies to the socket.
    fn write_burst(&mut self) {
        if !self.burst.bytes.is_empty() {
            let out = std::mem::take(&mut self.burst.bytes);
            let permits = std::mem::take(&mut self.burst.permits);
            // The encoded bytes take the place of what the applier reserved for them.
            self.budget.release(std::mem::take(&mut self.burst.reserved));
            self.write(out, permits);
        }
    }

    /// Writes `out` now if the writer task holds nothing and the socket takes it all; whatever
    /// is left goes to the task, behind what it holds, so replies keep their order.
    fn write(&mut self, mut out: Vec<u8>, permits: Vec<RequestPermit>) {
        let (Some(writer), Some(socket)) = (&self.writer, &self.socket) else { return };
        if self.queued_jobs.get() == 0 {
            match socket.try_write(&out) {
                Ok(n) if n == out.len() => return,
                Ok(n) => {
                    out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // The client is gone: its reader sees that too (or saw its end already), and the
                // connection ends with its last reply or sooner.
                Err(_) => return,
            }
        }
        if self.budget.try_reserve(out.len()) {
            self.queued_jobs.set(self.queued_jobs.get() + 1);
            let _ = writer.send((out, permits));
        }
    }

    /// The client let more than [`MAX_REPLY_BUFFER_BYTES`] of replies pile up: close it now,
    /// dropping what is queued (waiting for it to read would keep the memory).
    fn close_overflowed(&mut self, ctx: &mut Context<Self>) {
        if self.writer.take().is_some() {
            log::warn!(
                "client connection holds more than {MAX_REPLY_BUFFER_BYTES} bytes of unread replies \
                 ({} queued): closing it",
                self.budget.queued_bytes()
            );
        }
        if let Some(task) = self.write_task.take() {
            task.abort();
        }
        ctx.stop();
    }

    /// Starts request `seq`; one `held` (behind a WATCH) gets a full timeout from now, as a
    /// request held behind others does.
    fn start_request(
        &mut self,
        ctx: &mut Context<Self>,
        seq: u64,
        args: Vec<Vec<u8>>,
        arrived: Instant,
        held: bool,
    ) {
        if self.watch_barrier.is_some() {
            // Bounded by the permits of requests in flight, as every request read.
            self.behind_watch.push_back((seq, args, arrived));
            return;
        }
        self.client.touch(arrived);
        let slot = command_slot(args.first().map_or(&[][..], Vec::as_slice));
        self.env.status.metrics.request(slot);
        self.started.push_back((seq, InFlight { slot, arrived, waiter: None, kind: None }));
        let queued_bytes: usize = args.iter().map(Vec::len).sum();
        // EXEC, or EXEC behind a `REQ client-id seq` prefix.
        let named = |at: usize, name: &[u8]| args.get(at).is_some_and(|a| a.eq_ignore_ascii_case(name));
        let is_exec = named(0, b"EXEC") || (named(0, b"REQ") && named(3, b"EXEC"));
        let request = match parse_client_request(args) {
            Ok(r) => r,
            Err(e) if is_exec && self.transaction.is_some() => {
                // As Redis: a refused EXEC ends the transaction, its error inside EXECABORT's.
                self.env.status.metrics.refused_client_input.inc();
                self.discard_transaction();
                let why = match e.to_reply() {
                    Reply::Error(text) => text.strip_prefix("ERR ").unwrap_or(&text).to_string(),
                    other => format!("{other:?}"),
                };
                let reply = Reply::Error(format!("EXECABORT Transaction discarded because of: {why}"));
                return self.complete(ctx, seq, reply);
            }
            Err(e) => {
                self.env.status.metrics.refused_client_input.inc();
                if let Some(transaction) = &mut self.transaction {
                    // As in Redis: an unknown command or a wrong number of arguments dooms the
                    // transaction; any other refusal becomes that command's element of EXEC's answer.
                    if matches!(e, RequestError::UnknownCommand { .. } | RequestError::WrongArity(_)) {
                        transaction.failed = true;
                    } else {
                        let refusal = e.to_reply();
                        let reply = match transaction.admit(queued_bytes + refusal.encoded_len()) {
                            Ok(()) => transaction.queue_local(refusal),
                            Err(too_large) => too_large,
                        };
                        return self.complete(ctx, seq, reply);
                    }
                }
                return self.complete(ctx, seq, e.to_reply());
            }
        };
        let request = match self.transaction_step(request, queued_bytes, seq) {
            Ok(request) => request,
            Err(reply) => return self.complete(ctx, seq, reply),
        };
        let task = match request {
            ClientRequest::Ping(None) => return self.complete(ctx, seq, Reply::Simple("PONG".into())),
            ClientRequest::Ping(Some(msg)) => return self.complete(ctx, seq, Reply::Bulk(Some(msg))),
            ClientRequest::Quit => {
                self.close_after = Some(seq);
                return self.complete(ctx, seq, Reply::ok());
            }
            ClientRequest::Info(section) => {
                let text = self.env.status.info_text(section.as_deref(), self.env.clients.len());
                return self.complete(ctx, seq, Reply::Bulk(Some(text.into_bytes())));
            }
            ClientRequest::Immediate(reply) => return self.complete(ctx, seq, reply),
            ClientRequest::Client(command) => {
                let reply = self.client_command(command);
                return self.complete(ctx, seq, reply);
            }
            ClientRequest::Time => return self.complete(ctx, seq, time_reply()),
            ClientRequest::Multi => {
                self.transaction = Some(Transaction::default());
                self.client.multi.store(0, Ordering::Relaxed);
                return self.complete(ctx, seq, Reply::ok());
            }
            ClientRequest::Watch(keys) if self.writes_unanswered() => {
                self.watch_barrier = Some((seq, keys));
                return;
            }
            ClientRequest::Watch(keys) => return self.watch(ctx, seq, keys),
            ClientRequest::Unwatch => {
                self.unwatch();
                return self.complete(ctx, seq, Reply::ok());
            }
            ClientRequest::Discard => return self.complete(ctx, seq, Reply::err("DISCARD without MULTI")),
            ClientRequest::Exec(_) => return self.complete(ctx, seq, Reply::err("EXEC without MULTI")),
            _ if self.env.status.is_removed() => {
                return self.complete(ctx, seq, Reply::err("removed from the cluster"));
            }
            ClientRequest::MemberList => {
                let reply = member_list(&self.env.status);
                return self.complete(ctx, seq, reply);
            }
            ClientRequest::SnapshotChunk { token, offset } => {
                let Some(chunk) = self.env.snapshots.chunk(token, offset) else {
                    return self.complete(ctx, seq, Reply::err(NO_SUCH_SNAPSHOT));
                };
                // Counted like a read's value: a client that does not read its replies is closed.
                if !self.budget.try_reserve(chunk.len()) {
                    return self.complete(ctx, seq, Reply::err("the connection's reply buffer is full"));
                }
                let reserved = chunk.len();
                return self.complete_reserved(ctx, seq, Reply::Bulk(Some(chunk)), reserved);
            }
            ClientRequest::SnapshotEnd(token) => {
                let reply = if self.env.snapshots.release(token) {
                    Reply::ok()
                } else {
                    Reply::err(NO_SUCH_SNAPSHOT)
                };
                return self.complete(ctx, seq, reply);
            }
            ClientRequest::Admin(request) => WaiterTask::Admin(request),
            ClientRequest::Write { session, command } => WaiterTask::Write { session, command },
            ClientRequest::Read { command } => {
                WaiterTask::Read(with_random_start(command), self.budget.clone())
            }
            ClientRequest::Scan { cursor, pattern, count, kind } => {
                match scan_page(&self.env.cursors, cursor, pattern, count, kind) {
                    Some(command) => WaiterTask::Read(command, self.budget.clone()),
                    None => return self.complete(ctx, seq, Reply::err("invalid cursor")),
                }
            }
        };
        // Requests run in request order, as Redis runs a pipeline: a pipelined `SET k v` then
        // `GET k` answers v, and a `GET k` then `SET k w` does not answer w (see
        // `Waiting::may_start`). Between connections, reads and writes are ordered by
        // linearizability alone.
        let start = self.may_start(&task);
        if !self.deferred.is_empty() || start == Start::Hold {
            self.deferred.push_back((seq, task));
            return;
        }
        self.start_waiter(ctx, seq, task, start, held);
    }

    /// How `task` may start behind the waiters in flight.
    fn may_start(&self, task: &WaiterTask) -> Start {
        self.waiting.may_start(WaiterKind::of(task))
    }

    /// Starts the waiter of request `seq` (in flight, not yet answered) for `task`; its deadline
    /// counts from its arrival, or for one `held` behind others from now (the requests before
    /// it were answered within theirs: it gets as long for its own).
    fn start_waiter(
        &mut self,
        ctx: &mut Context<Self>,
        seq: u64,
        task: WaiterTask,
        start: Start,
        held: bool,
    ) {
        let kind = WaiterKind::of(&task);
        // Taking a backup image encodes the whole state: seconds per GB, not a request's time.
        let timeout = match &task {
            WaiterTask::Read(Command::SnapshotImage, _) => {
                self.env.request_timeout.max(SNAPSHOT_BEGIN_TIMEOUT)
            }
            _ => self.env.request_timeout,
        };
        let reply_to = self.waiter_reply_to.get_or_insert_with(|| Rc::new(ctx.address().recipient())).clone();
        let mut waiter = Waiter::new(seq, task, self.consensus.clone(), reply_to, self.env.cursors.clone());
        waiter = match start {
            // Through consensus's mailbox, behind the proposals of the writes before it: each
            // waiter sends from its `started`, and waiters spawned on this thread are first
            // polled in the order they were spawned (tokio's `LocalSet` queue; the tests of
            // pipelines in tests/replica_resp.rs fail if a read overtakes).
            Start::AfterWrites => waiter.after_writes(),
            Start::AfterReads => waiter.after_reads(),
            _ => waiter.with_read_inbox(self.env.read_inbox.clone()),
        };
        let waiter = waiter.start();
        let Some(request) = self.started.iter_mut().rev().find(|(at, _)| *at == seq).map(|(_, r)| r) else {
            return;
        };
        // Counted only with its request, whose kind its WaiterDone looks up to count it out.
        request.kind = Some(kind);
        *self.waiting.count(kind) += 1;
        let deadline = if held { Instant::now() } else { request.arrived } + timeout;
        request.waiter = Some((deadline, waiter));
        // Deadlines mostly come in arrival order, but a SNAPSHOT BEGIN's is far later than the
        // requests' after it: a sweep scheduled for it is moved earlier.
        match self.sweep {
            Some((at, _)) if at <= deadline => {}
            Some((_, handle)) => {
                ctx.cancel_future(handle);
                self.arm_sweep(ctx, deadline);
            }
            None => self.arm_sweep(ctx, deadline),
        }
    }

    /// Sweeps for waiters past their deadline at `when`: one timer per connection, not per request.
    fn arm_sweep(&mut self, ctx: &mut Context<Self>, when: Instant) {
        let handle = ctx.run_later(when.saturating_duration_since(Instant::now()), |act, ctx| {
            act.sweep = None;
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            for (_, request) in act.started.iter_mut() {
                match request.waiter {
                    Some((deadline, _)) if deadline > now => {
                        next = Some(next.map_or(deadline, |n| n.min(deadline)))
                    }
                    _ => request.end_waiter(),
                }
            }
            if let Some(next) = next {
                act.arm_sweep(ctx, next);
            }
        });
        self.sweep = Some((when, handle));
    }

    /// Inside MULTI, queues a data command (answering `+QUEUED`) and turns EXEC into the one write
    /// that carries the queue; outside, and for what is never queued, hands the request back.
    fn transaction_step(
        &mut self,
        request: ClientRequest,
        bytes: usize,
        seq: u64,
    ) -> Result<ClientRequest, Reply> {
        if self.transaction.is_none() {
            return Ok(request);
        }
        let request = match request {
            ClientRequest::Exec(session) => return self.exec(session, seq),
            ClientRequest::Discard => {
                self.discard_transaction();
                return Err(Reply::ok());
            }
            // Closes the connection, whatever is queued (its reader has stopped reading).
            ClientRequest::Quit => return Ok(ClientRequest::Quit),
            other => other,
        };
        // Connection commands answer as they would at EXEC (taken now: nothing they show is
        // replicated state).
        let local = match &request {
            ClientRequest::Ping(None) => Some(Reply::Simple("PONG".into())),
            ClientRequest::Ping(Some(msg)) => Some(Reply::Bulk(Some(msg.clone()))),
            ClientRequest::Immediate(reply) => Some(reply.clone()),
            ClientRequest::Info(section) => Some(Reply::Bulk(Some(
                self.env.status.info_text(section.as_deref(), self.env.clients.len()).into_bytes(),
            ))),
            ClientRequest::Time => Some(time_reply()),
            // Naming the connection waits for EXEC; the reply is known now (HELLO's does not
            // show the name).
            ClientRequest::Client(ClientCommand::SetName(_) | ClientCommand::SetInfo { .. }) => {
                Some(Reply::ok())
            }
            ClientRequest::Client(ClientCommand::Hello { .. }) => {
                Some(self.client_command(ClientCommand::Hello { name: None }))
            }
            ClientRequest::Client(command) => Some(self.client_command(command.clone())),
            ClientRequest::Unwatch => Some(Reply::ok()),
            _ => None,
        };
        let Some(transaction) = &mut self.transaction else { return Ok(request) };
        transaction.admit(bytes + local.as_ref().map_or(0, Reply::encoded_len))?;
        match &request {
            ClientRequest::Client(effect @ (ClientCommand::SetName(_) | ClientCommand::SetInfo { .. })) => {
                transaction.effects.push(effect.clone());
            }
            ClientRequest::Client(ClientCommand::Hello { name: Some(name) }) => {
                transaction.effects.push(ClientCommand::SetName(name.clone()));
            }
            _ => {}
        }
        if let Some(reply) = local {
            return Err(transaction.queue_local(reply));
        }
        let command = match request {
            ClientRequest::Multi => return Err(Reply::err("MULTI calls can not be nested")),
            ClientRequest::Watch(_) => return Err(Reply::err("WATCH inside MULTI is not allowed")),
            ClientRequest::Write { session: Some(_), .. } => {
                transaction.failed = true;
                return Err(Reply::err("REQ inside MULTI: tag the EXEC instead (REQ client-id seq EXEC)"));
            }
            ClientRequest::Read { command: Command::SnapshotImage }
            | ClientRequest::SnapshotChunk { .. }
            | ClientRequest::SnapshotEnd(_) => {
                transaction.failed = true;
                return Err(Reply::err("SNAPSHOT cannot be queued in a transaction"));
            }
            ClientRequest::Write { command, .. } | ClientRequest::Read { command } => command,
            ClientRequest::Scan { cursor, pattern, count, kind } => {
                match scan_page(&self.env.cursors, cursor, pattern, count, kind) {
                    Some(command) => command,
                    None => {
                        transaction.failed = true;
                        return Err(Reply::err("invalid cursor"));
                    }
                }
            }
            _ => {
                transaction.failed = true;
                return Err(Reply::err("membership commands cannot be queued in a transaction"));
            }
        };
        transaction.commands.push(with_random_start(command));
        self.client.multi.store(transaction.commands.len() as i64, Ordering::Relaxed);
        Err(Reply::Simple("QUEUED".into()))
    }

    /// EXEC: the queue and the watched keys as one write, or why not.
    fn exec(
        &mut self,
        session: Option<crate::protocol::command::SessionTag>,
        seq: u64,
    ) -> Result<ClientRequest, Reply> {
        let transaction = self.transaction.take().unwrap_or_default();
        self.client.multi.store(-1, Ordering::Relaxed);
        let watched = std::mem::take(&mut self.watched);
        self.client.watching.store(0, Ordering::Relaxed);
        if transaction.failed {
            return Err(Reply::Error("EXECABORT Transaction discarded because of previous errors.".into()));
        }
        if transaction.commands.is_empty() && watched.is_empty() {
            for effect in transaction.effects {
                self.client_command(effect);
            }
            return Err(Reply::Array(Some(transaction.local.into_iter().map(|(_, r)| r).collect())));
        }
        if !transaction.local.is_empty() {
            self.exec_splices.insert(seq, transaction.local);
        }
        if !transaction.effects.is_empty() {
            self.exec_effects.insert(seq, transaction.effects);
        }
        let command =
            Command::Exec { watched, watch_point: self.watch_point, commands: transaction.commands };
        Ok(ClientRequest::Write { session, command })
    }

    /// Whether a write (or membership command) of this connection is not yet answered.
    fn writes_unanswered(&self) -> bool {
        self.waiting.writes > 0 || self.waiting.admins > 0 || !self.deferred.is_empty()
    }

    /// WATCH, with every write before it on this connection answered (so applied here).
    fn watch(&mut self, ctx: &mut Context<Self>, seq: u64, keys: Vec<Vec<u8>>) {
        let watched_bytes: usize = self.watched.iter().chain(&keys).map(Vec::len).sum();
        if self.watched.len() + keys.len() > MAX_WATCHED_KEYS || watched_bytes > MAX_QUEUED_BYTES {
            let why = format!(
                "too many watched keys (max {MAX_WATCHED_KEYS} keys, {MAX_QUEUED_BYTES} bytes); \
                 UNWATCH or EXEC first"
            );
            return self.complete(ctx, seq, Reply::err(why));
        }
        if self.watched.is_empty() {
            // Anything written after this index was written after the WATCH (see dialect). It is
            // at or past this connection's writes before it, and at or below the read index of
            // any read after it (those start later).
            self.watch_point = self.env.status.applied_index();
        }
        self.watched.extend(keys);
        self.client.watching.store(self.watched.len(), Ordering::Relaxed);
        self.complete(ctx, seq, Reply::ok());
    }

    /// Once the writes before a held WATCH are answered: carries it out, then the requests
    /// behind it, up to the next WATCH that must wait in its turn.
    fn lift_watch_barrier(&mut self, ctx: &mut Context<Self>) {
        if self.watch_barrier.is_none() || self.writes_unanswered() || ctx.state() != ActorState::Running {
            return;
        }
        if let Some((seq, keys)) = self.watch_barrier.take() {
            self.watch(ctx, seq, keys);
        }
        while self.watch_barrier.is_none() {
            let Some((seq, args, arrived)) = self.behind_watch.pop_front() else { break };
            self.start_request(ctx, seq, args, arrived, true);
        }
    }

    /// Ends the transaction without running it, and the watches with it (DISCARD).
    fn discard_transaction(&mut self) {
        self.transaction = None;
        self.client.multi.store(-1, Ordering::Relaxed);
        self.unwatch();
    }

    fn unwatch(&mut self) {
        self.watched.clear();
        self.client.watching.store(0, Ordering::Relaxed);
    }

    fn client_command(&mut self, command: ClientCommand) -> Reply {
        let mut names = match self.client.names.lock() {
            Ok(names) => names,
            Err(poisoned) => poisoned.into_inner(),
        };
        match command {
            ClientCommand::Id => Reply::Integer(self.client.id as i64),
            ClientCommand::GetName if names.name.is_empty() => Reply::Bulk(None),
            ClientCommand::GetName => Reply::bulk(names.name.clone().into_bytes()),
            ClientCommand::SetName(name) => {
                names.name = name;
                Reply::ok()
            }
            ClientCommand::SetInfo { lib_name: true, value } => {
                names.lib_name = value;
                Reply::ok()
            }
            ClientCommand::SetInfo { lib_name: false, value } => {
                names.lib_ver = value;
                Reply::ok()
            }
            ClientCommand::Info => {
                drop(names);
                Reply::bulk((self.client.info_line() + "\n").into_bytes())
            }
            ClientCommand::List => {
                drop(names);
                Reply::bulk(self.env.clients.list().into_bytes())
            }
            ClientCommand::Hello { name } => {
                if let Some(name) = name {
                    names.name = name;
                }
                let text = |s: &str| Reply::bulk(s.as_bytes().to_vec());
                // Every replica takes writes (a follower forwards them): a master, to a client.
                Reply::Array(Some(vec![
                    text("server"),
                    text("quorumkv"),
                    text("version"),
                    text(env!("CARGO_PKG_VERSION")),
                    text("proto"),
                    Reply::Integer(2),
                    text("id"),
                    Reply::Integer(self.client.id as i64),
                    text("mode"),
                    text("standalone"),
                    text("role"),
                    text("master"),
                    text("modules"),
                    Reply::Array(Some(Vec::new())),
                ]))
            }
        }
    }
}

/// The SCAN page a client's cursor names (none: a cursor this replica did not give, or forgot).
fn scan_page(
    cursors: &ScanCursors,
    cursor: u64,
    pattern: Option<Vec<u8>>,
    count: u64,
    kind: Option<Vec<u8>>,
) -> Option<Command> {
    let start = cursors.start_of(cursor)?;
    Some(Command::ScanKeys { start, pattern, count, kind })
}

/// TIME: this replica's wall clock, seconds and microseconds.
fn time_reply() -> Reply {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Reply::Array(Some(vec![
        Reply::bulk(now.as_secs().to_string().into_bytes()),
        Reply::bulk(now.subsec_micros().to_string().into_bytes()),
    ]))
}

/// RANDOMKEY starts looking at a random key; the replica serving it picks where.
fn with_random_start(command: Command) -> Command {
    match command {
        Command::RandomKey { .. } => {
            use std::hash::BuildHasher;
            let from = std::collections::hash_map::RandomState::new().hash_one(0u8).to_be_bytes().to_vec();
            Command::RandomKey { from }
        }
        other => other,
    }
}

/// `MEMBER LIST`: one line per member of the applied membership.
fn member_list(status: &StatusBoard) -> Reply {
    let membership = status.membership();
    let lines = membership
        .ids()
        .into_iter()
        .map(|id| {
            let addrs = membership.addrs.get(&id).cloned().unwrap_or_default();
            let client = match addrs.client_addr.as_str() {
                "" => status.client_addr(id).unwrap_or_else(|| "?".to_string()),
                known => known.to_string(),
            };
            let peer = if addrs.peer_addr.is_empty() { "?".to_string() } else { addrs.peer_addr };
            let kind = if membership.is_voter(id) { "voter" } else { "learner" };
            Reply::Bulk(Some(format!("{id} {peer} {client} {kind}").into_bytes()))
        })
        .collect();
    Reply::Array(Some(lines))
}

async fn read_loop(
    mut reader: OwnedReadHalf,
    connection: Addr<Connection>,
    permits: RequestPermits,
    idle_timeout: Option<Duration>,
) {
    let mut parser = RequestParser::new();
    // Read straight into the buffer's spare room: none while idle, small while the client sends
    // little, grown for bursts and large values, and let go once drained.
    let mut buf: Vec<u8> = Vec::new();
    let mut arrived = Instant::now();
    // Requests parsed and not yet handed over.
    let mut parsed = Batch::default();
    let hand_over = |parsed: &mut Batch, arrived| {
        if let Some(first) = parsed.first.take() {
            connection.do_send(Incoming { first, rest: std::mem::take(&mut parsed.rest), arrived });
        }
    };
    loop {
        // Parse everything buffered before reading more; consumed bytes are dropped once per read,
        // not once per request, so a burst of small requests costs one move of the buffer.
        let mut start = 0;
        loop {
            let outcome = parser.parse(&buf[start..]);
            let (consumed, request) = match outcome {
                ParseOutcome::Incomplete => break,
                ParseOutcome::Skipped { consumed } => (consumed, None),
                ParseOutcome::Request { args, consumed } => (consumed, Some(Ok(args))),
                ParseOutcome::LimitError { message, consumed } => (consumed, Some(Err(message))),
                ParseOutcome::Fatal(message) => {
                    hand_over(&mut parsed, arrived);
                    if let Some(permit) = permits.take(0).await {
                        connection.do_send(ReaderEnded::Garbage(message, permit));
                    }
                    return;
                }
            };
            start += consumed;
            let Some(request) = request else { continue };
            let quit =
                matches!(&request, Ok(args) if args.first().is_some_and(|a| a.eq_ignore_ascii_case(b"QUIT")));
            let bytes = request.as_ref().map_or(0, |args| args.iter().map(Vec::len).sum());
            let permit = match permits.try_take(bytes) {
                Some(permit) => permit,
                None => {
                    // MAX_INFLIGHT_REQUESTS are unanswered (or the replica's large requests fill
                    // their budget): what was parsed goes now, and the reader waits for a reply
                    // (back-pressure on the client).
                    hand_over(&mut parsed, arrived);
                    let Some(permit) = permits.take(bytes).await else { return };
                    permit
                }
            };
            parsed.push((request, permit));
            if quit {
                return hand_over(&mut parsed, arrived);
            }
        }
        hand_over(&mut parsed, arrived);
        if start > 0 {
            buf.drain(..start);
        }
        if buf.is_empty() {
            // Drained: let the buffer go; `read_some` takes one when bytes arrive.
            buf = Vec::new();
        } else if buf.len() == buf.capacity() {
            // Full of a request still incomplete: room for one more read, doubling up to a chunk.
            buf.reserve(buf.len().clamp(FIRST_READ_BYTES, READ_CHUNK_BYTES));
        }
        let read = match idle_timeout {
            None => read_some(&mut reader, &mut buf).await,
            Some(idle) => loop {
                match tokio::time::timeout(idle, read_some(&mut reader, &mut buf)).await {
                    Ok(read) => break read,
                    // A client waiting for replies is not idle.
                    Err(_) if permits.any_taken() => continue,
                    Err(_) => {
                        log::info!("client connection idle for {} s: closing it", idle.as_secs_f64());
                        connection.do_send(ReaderEnded::Eof);
                        return;
                    }
                }
            },
        };
        match read {
            Ok(0) => return connection.do_send(ReaderEnded::Eof),
            Err(_) => return connection.do_send(ReaderEnded::Gone),
            Ok(_) => arrived = Instant::now(),
        }
    }
}

/// Requests the reader parsed and has not handed over yet.
#[derive(Default)]
struct Batch {
    first: Option<Parsed>,
    rest: Vec<Parsed>,
}

impl Batch {
    fn push(&mut self, parsed: Parsed) {
        match self.first {
            None => self.first = Some(parsed),
            Some(_) => self.rest.push(parsed),
        }
    }
}

/// Reads what the socket has into `buf`, taking a buffer only once there is something to read.
async fn read_some(reader: &mut OwnedReadHalf, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.capacity() == 0 {
        reader.readable().await?;
        buf.reserve(FIRST_READ_BYTES);
    }
    reader.read_buf(buf).await
}

/// Writes what the connection could not write at once, in order; the socket's write side shuts
/// when the last holder of `writer` (this task or the connection) lets go.
async fn write_loop(
    writer: Rc<OwnedWriteHalf>,
    mut jobs: mpsc::UnboundedReceiver<WriteJob>,
    budget: Arc<ReplyBudget>,
    queued_jobs: Rc<Cell<usize>>,
    written_bytes: Rc<Cell<u64>>,
    _lease: Option<RegistryLease>,
) {
    while let Some((bytes, permits)) = jobs.recv().await {
        let mut written = 0;
        while written < bytes.len() {
            if writer.writable().await.is_err() {
                return;
            }
            match writer.try_write(&bytes[written..]) {
                Ok(n) => {
                    written += n;
                    written_bytes.set(written_bytes.get() + n as u64);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        budget.release(bytes.len());
        queued_jobs.set(queued_jobs.get().saturating_sub(1));
        drop(permits);
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // Replies finished in the turn that stopped us still go, unless the writer was dropped on
        // purpose (a client over its reply budget).
        self.write_burst();
        // Nobody sweeps this connection's waiters any more: they end now instead of at their deadline.
        self.started.iter_mut().for_each(|(_, request)| request.end_waiter());
        // Its registry entry goes with the writer task (or now, if it never had one).
        drop(self.lease.take());
        // A client that stopped reading after QUIT or a half-close would hold its socket, its
        // unwritten replies and its place among the clients for good: they go once none of them
        // has been written for a while (a slow reader is not cut off).
        if let Some(task) = self.write_task.take().filter(|_| self.queued_jobs.get() > 0) {
            let written = self.written_bytes.clone();
            actix::spawn(async move {
                let mut seen = written.get();
                loop {
                    tokio::time::sleep(CLOSED_WRITE_LIMIT).await;
                    if task.is_finished() {
                        return;
                    }
                    if written.get() == seen {
                        log::warn!(
                            "closed client connection wrote none of its last replies for {} s: \
                             giving them up",
                            CLOSED_WRITE_LIMIT.as_secs()
                        );
                        return task.abort();
                    }
                    seen = written.get();
                }
            });
        }
    }

    fn started(&mut self, ctx: &mut Self::Context) {
        self.env.status.set_connected_clients(self.env.clients.len());
        let permits = RequestPermits::new(self.env.large_requests.clone());
        if let Some(reader) = self.reader.take() {
            let idle = self.env.idle_timeout;
            ctx.spawn(read_loop(reader, ctx.address(), permits, idle).into_actor(self));
        }
        if let Some(socket) = &self.socket {
            let (tx, rx) = mpsc::unbounded_channel();
            self.writer = Some(tx);
            // Not tied to the actor: queued replies are still written after it stops.
            let lease = self.lease.take();
            let (queued, written) = (self.queued_jobs.clone(), self.written_bytes.clone());
            let task = write_loop(socket.clone(), rx, self.budget.clone(), queued, written, lease);
            self.write_task = Some(actix::spawn(task));
        }
    }
}

impl Handler<Incoming> for Connection {
    type Result = ();

    fn handle(&mut self, msg: Incoming, ctx: &mut Self::Context) {
        for (request, permit) in std::iter::once(msg.first).chain(msg.rest) {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.permits.push_back(permit);
            match request {
                Ok(args) => self.start_request(ctx, seq, args, msg.arrived, false),
                Err(message) => {
                    self.env.status.metrics.refused_client_input.inc();
                    self.complete(ctx, seq, Reply::err(message))
                }
            }
        }
    }
}

impl Handler<ReaderEnded> for Connection {
    type Result = ();

    fn handle(&mut self, msg: ReaderEnded, ctx: &mut Self::Context) {
        match msg {
            ReaderEnded::Garbage(message, permit) => {
                self.env.status.metrics.refused_client_input.inc();
                let seq = self.next_seq;
                self.next_seq += 1;
                self.permits.push_back(permit);
                self.close_after = Some(seq);
                self.complete(ctx, seq, Reply::err(message));
            }
            // The client sent all it will: a half-close (as `printf ... | nc -N` does) still
            // reads the replies, so what it sent is answered, in order, before the connection
            // closes. (A client that closed entirely looks the same until a write fails; its
            // requests end by their outcome or deadline, as they would have.)
            ReaderEnded::Eof if self.next_to_write >= self.next_seq => ctx.stop(),
            ReaderEnded::Eof => {
                let last = self.next_seq - 1;
                self.close_after = Some(self.close_after.map_or(last, |at| at.min(last)));
            }
            // Reset: nobody will read the replies of what is still in flight.
            ReaderEnded::Gone => ctx.stop(),
        }
    }
}

impl Handler<WaiterDone> for Connection {
    type Result = ();

    fn handle(&mut self, msg: WaiterDone, ctx: &mut Self::Context) {
        let kind = self.started.iter_mut().find(|(at, _)| *at == msg.seq).and_then(|(_, r)| r.kind.take());
        if let Some(kind) = kind {
            let count = self.waiting.count(kind);
            *count = count.saturating_sub(1);
        }
        self.complete_reserved(ctx, msg.seq, msg.reply, msg.reserved.take());
        // The requests held start, in order, up to the first that must still wait (none once
        // the connection is closing: nobody would read their replies).
        while let Some((_, task)) = self.deferred.front().filter(|_| ctx.state() == ActorState::Running) {
            let start = self.may_start(task);
            if start == Start::Hold {
                break;
            }
            let Some((seq, task)) = self.deferred.pop_front() else { break };
            self.start_waiter(ctx, seq, task, start, true);
        }
        self.lift_watch_barrier(ctx);
    }
}

impl Handler<CloseConnection> for Connection {
    type Result = ();

    fn handle(&mut self, _msg: CloseConnection, ctx: &mut Self::Context) {
        // Replies already finished (a write that committed) still go before the close.
        self.write_burst();
        self.writer = None;
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_requests_share_the_replicas_byte_budget_and_small_ones_only_count() {
        let large = Arc::new(Semaphore::new(3 * LARGE_REQUEST_BYTES));
        let (a, b) = (RequestPermits::new(large.clone()), RequestPermits::new(large.clone()));
        let mut first = a.try_take(2 * LARGE_REQUEST_BYTES).expect("fits");
        assert!(
            b.try_take(2 * LARGE_REQUEST_BYTES).is_none(),
            "the budget is the replica's, not the connection's"
        );
        let small: Vec<RequestPermit> =
            (0..10).map(|_| b.try_take(LARGE_REQUEST_BYTES - 1).expect("small: counted only")).collect();
        assert_eq!(large.available_permits(), LARGE_REQUEST_BYTES);
        let refused_slots = b.slots.available_permits();
        assert!(b.try_take(2 * LARGE_REQUEST_BYTES).is_none());
        assert_eq!(b.slots.available_permits(), refused_slots, "a refused take holds no slot");
        let slots = a.slots.available_permits();
        first.release_bytes();
        assert_eq!(a.slots.available_permits(), slots, "answered: the slot stays until the reply is written");
        let second = b.try_take(3 * LARGE_REQUEST_BYTES).expect("the bytes went back once answered");
        drop(first);
        drop((second, small));
        assert_eq!(large.available_permits(), 3 * LARGE_REQUEST_BYTES);
        assert!(!b.any_taken());
        let all: Vec<RequestPermit> =
            (0..MAX_INFLIGHT_REQUESTS).map(|_| a.try_take(0).expect("a slot")).collect();
        assert!(a.try_take(0).is_none(), "{MAX_INFLIGHT_REQUESTS} in flight per connection");
        drop(all);
    }

    #[test]
    fn a_pipelines_requests_start_at_once_except_behind_a_membership_command() {
        use WaiterKind::{Admin, Read, Write};
        let waiting = |reads, writes, admins| Waiting { reads, writes, admins };
        let table = [
            (waiting(0, 0, 0), [Start::Now, Start::Now, Start::Now]),
            (waiting(2, 0, 0), [Start::Now, Start::AfterReads, Start::Hold]),
            (waiting(0, 2, 0), [Start::AfterWrites, Start::Now, Start::Now]),
            (waiting(1, 1, 0), [Start::AfterWrites, Start::AfterReads, Start::Hold]),
            (waiting(0, 0, 1), [Start::Hold, Start::Hold, Start::Hold]),
            (waiting(1, 1, 1), [Start::Hold, Start::Hold, Start::Hold]),
        ];
        for (in_flight, starts) in table {
            for (kind, start) in [Read, Write, Admin].into_iter().zip(starts) {
                assert_eq!(in_flight.may_start(kind), start, "{kind:?} behind {in_flight:?}");
            }
        }
    }

    #[test]
    fn a_reservation_dropped_on_its_way_is_given_back_and_a_taken_one_is_the_takers() {
        let budget = Arc::new(ReplyBudget::default());
        assert!(budget.try_reserve(100) && budget.try_reserve(20));
        // A read's reply whose waiter was gone (its deadline passed) when the value came.
        drop(Reserved::new(budget.clone(), 100));
        assert_eq!(budget.queued_bytes(), 20, "given back");
        let taken = Reserved::new(budget.clone(), 20).take();
        assert_eq!((taken, budget.queued_bytes()), (20, 20), "the connection gives it back once written");
        budget.release(taken);
        assert_eq!(budget.queued_bytes(), 0);
    }
}
