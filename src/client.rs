//! The Rust client: finds the leader, retries across replicas within a deadline, and tags every write
//! with a `REQ client-id seq` session so that a retried write is applied exactly once.
//!
//! The client is synchronous: blocking [`TcpStream`]s with connect, read and write timeouts. That keeps
//! it simple to use from plain threads (the benchmark), the CLI and tests, with no runtime to start.
//! One [`Client`] holds at most one connection and serves one caller at a time; use one per thread.
//!
//! # Leader discovery and retries
//!
//! A call starts on the last server that answered (at first, the first listed) and, until its
//! deadline (`request_timeout_ms`):
//!
//! - on `-NOTLEADER host:port` goes to that server (adding it to the list if it is new);
//! - on `-NOTLEADER ?`, a connection error, a timeout or an unparsable reply, goes to the next server;
//! - on `-TRYAGAIN ...` retries on the next server after a jittered back-off that doubles from
//!   [`RETRY_BACKOFF_MIN_MS`] to [`RETRY_BACKOFF_MAX_MS`] (with forwarding any replica serves, and
//!   the one that answered may be cut off from the leader; with redirects the next one points
//!   back to the leader);
//! - after a whole round of servers without a leader, backs off the same way, so a cluster in the
//!   middle of an election is not hammered.
//!
//! When the deadline passes the call fails with [`ClientError::Unavailable`].
//!
//! # Exactly-once
//!
//! Writes (SET, APPEND, DEL, RAWPUT, RAWDELETE, by command name, case-insensitive) are sent as
//! `REQ client-id seq command args...`. The client id is random per [`Client`] unless configured; the
//! seq grows by one per write, and every retry of a write reuses its seq, so the replicated state
//! machine answers a repeat with the remembered reply instead of applying it again. Reads go untagged:
//! repeating a read is harmless.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::dial::refuse_self_connection;
use crate::protocol::command::{ColumnFamily, Command, SessionTag};
use crate::protocol::request::encode_command;
use crate::protocol::resp::{encode_request, parse_reply, Reply};
use crate::protocol::rng::Rng;

/// The servers tried when none are given: where `quorumkv-server local` and a lone server listen.
pub const DEFAULT_SERVERS: [&str; 3] = ["127.0.0.1:6380", "127.0.0.1:6381", "127.0.0.1:6382"];
/// Default overall deadline of one call, retries included, in milliseconds.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Default longest wait for one TCP connect, in milliseconds.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Default longest wait for one read or write on a connection, in milliseconds.
pub const DEFAULT_IO_TIMEOUT_MS: u64 = 5_000;
/// First back-off after `-TRYAGAIN` or a round without a leader, in milliseconds.
pub const RETRY_BACKOFF_MIN_MS: u64 = 10;
/// Largest back-off between retries, in milliseconds.
pub const RETRY_BACKOFF_MAX_MS: u64 = 500;
/// Most servers the client remembers; a `-NOTLEADER` to a new address past this is treated as `?`, so
/// a confused or hostile server cannot grow the list without bound.
pub const MAX_KNOWN_SERVERS: usize = 64;
/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// A key and its value, as RAWSCAN returns them.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// How a [`Client`] reaches the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Client addresses of the replicas, `HOST:PORT`; the first is tried first.
    pub servers: Vec<String>,
    /// Overall deadline of one call (or one pipeline batch), retries included, in milliseconds.
    pub request_timeout_ms: u64,
    /// Longest wait for one TCP connect, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Longest wait for one read or write on a connection, in milliseconds.
    pub io_timeout_ms: u64,
    /// The session's client id; `None` picks a random one. Two live clients must never share an id.
    pub client_id: Option<u64>,
    /// Talk only to `servers`: a redirect elsewhere counts as `-NOTLEADER ?` (for clients that
    /// must stay on their side of a network partition, as in the fault tests).
    pub only_listed_servers: bool,
}

impl ClientConfig {
    /// The default timeouts and a random client id, for these servers.
    pub fn new<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> ClientConfig {
        ClientConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            io_timeout_ms: DEFAULT_IO_TIMEOUT_MS,
            client_id: None,
            only_listed_servers: false,
        }
    }
}

impl Default for ClientConfig {
    /// [`DEFAULT_SERVERS`] with the default timeouts.
    fn default() -> ClientConfig {
        ClientConfig::new(DEFAULT_SERVERS)
    }
}

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No server served the request before the call's deadline. A write may still have been
    /// applied (an attempt may have committed without its answer arriving); retrying it as a new
    /// call tags it anew, so a non-idempotent write (APPEND, INCR) could then apply twice.
    #[error(
        "no server could serve the request within {timeout_ms} ms (last: {last_error}); a write may \
         or may not have taken effect"
    )]
    Unavailable {
        /// The deadline that passed, in milliseconds.
        timeout_ms: u64,
        /// What went wrong on the last attempt.
        last_error: String,
    },
    /// The server answered a typed helper with an error reply (the line, code first: `ERR ...`).
    #[error("{0}")]
    Server(String),
    /// The server answered a typed helper with a reply of the wrong shape.
    #[error("unexpected reply to {command}: {reply:?}")]
    UnexpectedReply {
        /// The command, upper case.
        command: &'static str,
        /// What came back.
        reply: Reply,
    },
    /// A request or configuration that cannot be sent (no servers, an empty command).
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// True for the command names the client tags with `REQ`: the data commands that write (the
/// command table's `write` flag).
pub fn is_write_command(name: &[u8]) -> bool {
    crate::protocol::command_table::lookup(name).is_some_and(|spec| spec.flags.contains(&"write"))
}

/// A random client id from std alone: time, process id and a per-process counter hashed with a
/// randomly keyed hasher, so clients started at once, in one process or many, differ.
fn random_client_id() -> u64 {
    static CLIENTS_CREATED: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::hash::RandomState::new().build_hasher();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_nanos()).unwrap_or(0);
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.write_u64(CLIENTS_CREATED.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// What a reply means for the retry loop.
enum Outcome {
    /// A final reply (an `-ERR` included): hand it to the caller.
    Done,
    /// `-NOTLEADER host:port`.
    Redirect(String),
    /// `-NOTLEADER ?`, or a redirect that cannot be followed.
    NoLeader,
    /// `-TRYAGAIN ...`.
    TryAgain,
}

fn classify(reply: &Reply) -> Outcome {
    let Reply::Error(line) = reply else { return Outcome::Done };
    let (code, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
    match code {
        "NOTLEADER" => match rest.trim() {
            "" | "?" => Outcome::NoLeader,
            addr => Outcome::Redirect(addr.to_string()),
        },
        "TRYAGAIN" => Outcome::TryAgain,
        // A replica removed from the membership serves no one: ask another.
        "ERR" if rest.starts_with("removed from the cluster") => Outcome::NoLeader,
        _ => Outcome::Done,
    }
}

/// One TCP connection and the reply bytes read from it but not yet parsed.
struct Connection {
    /// Index of the server in [`Client::servers`].
    server: usize,
    stream: TcpStream,
    /// Bytes read; `buffer[parsed..]` is not parsed yet.
    buffer: Vec<u8>,
    /// <= `buffer.len()`.
    parsed: usize,
}

/// The time left before `deadline`, or a timeout error if none is.
fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(io::ErrorKind::TimedOut, "call deadline passed"))
    } else {
        Ok(left)
    }
}

impl Connection {
    fn open(
        server: usize,
        addr: &str,
        connect_timeout: Duration,
        deadline: Instant,
    ) -> io::Result<Connection> {
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"));
        for socket_addr in addr.to_socket_addrs()? {
            let timeout = connect_timeout.min(remaining(deadline)?);
            match TcpStream::connect_timeout(&socket_addr, timeout) {
                Ok(stream) => {
                    // A dial of a stopped server on this host can meet itself: as if refused.
                    if let Err(error) = refuse_self_connection(&stream) {
                        last_error = error;
                        continue;
                    }
                    // Requests are small and latency-bound; Nagle would hold them back.
                    stream.set_nodelay(true)?;
                    return Ok(Connection { server, stream, buffer: Vec::new(), parsed: 0 });
                }
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    fn send(&mut self, bytes: &[u8], io_timeout: Duration, deadline: Instant) -> io::Result<()> {
        self.stream.set_write_timeout(Some(io_timeout.min(remaining(deadline)?)))?;
        self.stream.write_all(bytes)
    }

    fn read_reply(&mut self, io_timeout: Duration, deadline: Instant) -> io::Result<Reply> {
        loop {
            match parse_reply(&self.buffer[self.parsed..]) {
                Ok(Some((reply, used))) => {
                    self.parsed += used;
                    if self.parsed == self.buffer.len() {
                        self.buffer.clear();
                        self.parsed = 0;
                    }
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error)),
            }
            self.buffer.drain(..self.parsed);
            self.parsed = 0;
            self.stream.set_read_timeout(Some(io_timeout.min(remaining(deadline)?)))?;
            let filled = self.buffer.len();
            self.buffer.resize(filled + READ_CHUNK_BYTES, 0);
            let read = self.stream.read(&mut self.buffer[filled..]);
            self.buffer.truncate(filled + read.as_ref().map_or(0, |&count| count));
            match read {
                Ok(0) => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"))
                }
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }
}

/// Doubling, jittered waits between retries of one call.
struct Backoff {
    /// In [`RETRY_BACKOFF_MIN_MS`, `RETRY_BACKOFF_MAX_MS`].
    next_ms: u64,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next_ms: RETRY_BACKOFF_MIN_MS }
    }

    /// Waits between half and all of the current back-off (never past `deadline`), then doubles it.
    fn wait(&mut self, rng: &mut Rng, deadline: Instant) {
        // Jitter keeps many clients refused at once from retrying in lockstep.
        let wait_ms = rng.range(self.next_ms / 2, self.next_ms + 1);
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(Duration::from_millis(wait_ms).min(left));
        self.next_ms = (self.next_ms * 2).min(RETRY_BACKOFF_MAX_MS);
    }
}

/// Where a transaction lives (see [`Client::call`]).
#[derive(Clone, Copy, Debug)]
struct Transaction {
    /// Index in [`Client::servers`] of the connection's server.
    server: usize,
    /// `MULTI` was answered: commands are queued, not run, until `EXEC`.
    queuing: bool,
}

/// A synchronous quorumkv client: one connection, leader discovery, retries, exactly-once writes.
#[derive(Debug)]
pub struct Client {
    /// Known servers; starts as the configured list, grows by redirects up to [`MAX_KNOWN_SERVERS`].
    servers: Vec<String>,
    request_timeout_ms: u64,
    connect_timeout: Duration,
    io_timeout: Duration,
    client_id: u64,
    /// The seq of the last write tagged; the next write uses one more.
    last_seq: u64,
    /// Index in `servers` where the next call starts: the last server that answered.
    preferred: usize,
    connection: Option<Connection>,
    /// A `WATCH` or `MULTI` was answered on the current connection: until `EXEC`, `DISCARD` (or
    /// `UNWATCH` outside `MULTI`) every call goes to that connection alone, never retried
    /// elsewhere, where the transaction does not exist.
    transaction: Option<Transaction>,
    /// Redirects to servers not in the list are not followed.
    only_listed_servers: bool,
    /// Back-off jitter.
    rng: Rng,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("server", &self.server).finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `config.servers`; it connects lazily, on the first call.
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        if config.servers.is_empty() {
            return Err(ClientError::Invalid("no servers given".to_string()));
        }
        let mut servers = config.servers;
        servers.truncate(MAX_KNOWN_SERVERS);
        let client_id = config.client_id.unwrap_or_else(random_client_id);
        Ok(Client {
            servers,
            request_timeout_ms: config.request_timeout_ms,
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            io_timeout: Duration::from_millis(config.io_timeout_ms),
            client_id,
            last_seq: 0,
            preferred: 0,
            connection: None,
            transaction: None,
            only_listed_servers: config.only_listed_servers,
            rng: Rng::new(client_id),
        })
    }

    /// The session's client id (the first number after `REQ`).
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The seq of the last write tagged so far (0 before the first write).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The servers known: the configured ones, then any learned from redirects.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The server the next call starts with: the last one that answered.
    pub fn current_server(&self) -> &str {
        &self.servers[self.preferred]
    }

    /// Sends any command (name first) and returns its reply; an error reply such as `-ERR` is
    /// `Ok(Reply::Error(..))`. Writes get a fresh `REQ` tag; a command already starting with `REQ` is
    /// sent as it is.
    ///
    /// Transactions work call by call: once `WATCH` or `MULTI` is answered, the calls up to `EXEC`
    /// or `DISCARD` go to the same connection, once each (a retry on another connection would
    /// run a queued command outside the transaction); the writes queued by `MULTI` are not
    /// tagged (the server refuses `REQ` there), the `EXEC` is. If that connection fails meanwhile
    /// the call fails and the transaction is gone: start it again. Meanwhile the typed helpers and
    /// [`pipeline`](Client::pipeline) are refused ([`ClientError::Invalid`]).
    pub fn call(&mut self, args: &[Vec<u8>]) -> Result<Reply, ClientError> {
        let deadline = self.deadline();
        let Some(name) = command_name(args) else {
            return Err(ClientError::Invalid("empty command".to_string()));
        };
        if let Some(transaction) = self.transaction {
            return self.call_in_transaction(transaction, &name, args, deadline);
        }
        let tagged = self.tag(args)?;
        let reply = self.execute(&tagged, deadline)?;
        if matches!(name.as_slice(), b"WATCH" | b"MULTI") && !matches!(reply, Reply::Error(_)) {
            self.transaction = Some(Transaction { server: self.preferred, queuing: name == b"MULTI" });
        }
        Ok(reply)
    }

    /// One call on the connection a transaction lives on, as [`call`](Client::call) describes.
    fn call_in_transaction(
        &mut self,
        transaction: Transaction,
        name: &[u8],
        args: &[Vec<u8>],
        deadline: Instant,
    ) -> Result<Reply, ClientError> {
        // Queued writes go untagged (the server refuses REQ inside MULTI); the EXEC that runs
        // them is tagged instead, as one write.
        let to_send = match (transaction.queuing, name) {
            (true, b"EXEC") if !is_tagged(args) => self.tag_as_write(args),
            (true, _) => args.to_vec(),
            (false, _) => self.tag(args)?,
        };
        let mut request = Vec::new();
        encode_request(&to_send, &mut request);
        let lost = |why: String| ClientError::Unavailable {
            timeout_ms: self.request_timeout_ms,
            last_error: format!("{why}; the transaction (WATCH/MULTI) on it is discarded"),
        };
        let Some(mut connection) = self.connection.take().filter(|c| c.server == transaction.server) else {
            self.transaction = None;
            return Err(lost("the connection to its server was closed".to_string()));
        };
        let exchanged = connection
            .send(&request, self.io_timeout, deadline)
            .and_then(|()| connection.read_reply(self.io_timeout, deadline));
        let reply = match exchanged {
            Ok(reply) => reply,
            Err(error) => {
                self.transaction = None;
                return Err(lost(format!("{}: {error}", self.servers[transaction.server])));
            }
        };
        self.connection = Some(connection);
        let answered = !matches!(reply, Reply::Error(_));
        self.transaction = match name {
            // Outside MULTI they are refused, and the WATCH stays.
            b"EXEC" | b"DISCARD" if transaction.queuing => None,
            b"UNWATCH" if !transaction.queuing && answered => None,
            b"MULTI" if answered => Some(Transaction { queuing: true, ..transaction }),
            _ => Some(transaction),
        };
        Ok(reply)
    }

    /// Sends a typed command (tagged with `REQ` if it is a write) and returns its reply as [`call`]
    /// does.
    ///
    /// [`call`]: Client::call
    pub fn execute_command(&mut self, command: &Command) -> Result<Reply, ClientError> {
        self.outside_transaction()?;
        let deadline = self.deadline();
        let session = command.is_write().then(|| self.next_tag());
        let args =
            encode_command(session, command).map_err(|error| ClientError::Invalid(error.to_string()))?;
        self.execute(&args, deadline)
    }

    /// Sends a batch of commands on one connection without waiting between them and returns their
    /// replies in batch order.
    ///
    /// Writes get `REQ` tags as in [`call`](Client::call). A command answered with `-NOTLEADER` or
    /// `-TRYAGAIN`, or lost with the connection, is retried alone through the normal path; such a
    /// retried command may be applied after later commands of the batch. A write refused before it
    /// was proposed is retried under a fresh tag, any other under the same one: a server remembers
    /// only a session's 32 most recent writes, so a write whose outcome was lost (the connection
    /// failed) behind more than 32 later writes of the batch can come back `-ERR ... too old`,
    /// its outcome unknown. The whole batch shares one deadline. The batch should fit in the
    /// sockets' buffers (a few hundred small commands), since the replies are read only after all
    /// of it is written.
    pub fn pipeline(&mut self, batch: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>, ClientError> {
        self.outside_transaction()?;
        if let Some(name) = batch
            .iter()
            .filter_map(|args| command_name(args))
            .find(|name| matches!(name.as_slice(), b"WATCH" | b"UNWATCH" | b"MULTI" | b"EXEC" | b"DISCARD"))
        {
            return Err(ClientError::Invalid(format!(
                "{} in a pipeline: transactions go through call(), a command at a time",
                String::from_utf8_lossy(&name)
            )));
        }
        let deadline = self.deadline();
        let mut tagged = batch.iter().map(|args| self.tag(args)).collect::<Result<Vec<_>, _>>()?;
        if tagged.is_empty() {
            return Ok(Vec::new());
        }
        let passed = self.pipeline_pass(&tagged, deadline);
        let mut replies = Vec::with_capacity(passed.len());
        for ((slot, args), asked) in passed.into_iter().zip(&mut tagged).zip(batch) {
            let reply = match slot {
                Slot::Done(reply) => reply,
                Slot::Retry { never_proposed } => {
                    // Only a tag this client made: one the caller wrote is the caller's to keep.
                    let ours = args.len() > asked.len();
                    if never_proposed && ours {
                        // Not applied and never will be: a fresh seq keeps it within the window.
                        args[2] = self.next_tag().seq.to_string().into_bytes();
                    }
                    self.execute(args, deadline)?
                }
            };
            replies.push(reply);
        }
        Ok(replies)
    }

    /// `GET key`: the value, or `None` if there is none.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        self.raw_get(ColumnFamily::Default, key)
    }

    /// `SET key value`.
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        self.raw_put(ColumnFamily::Default, key, value)
    }

    /// `APPEND key value`: the value's new length.
    pub fn append(&mut self, key: &[u8], value: &[u8]) -> Result<i64, ClientError> {
        let command = Command::Append { key: key.to_vec(), value: value.to_vec() };
        match self.typed(&command)? {
            Reply::Integer(len) => Ok(len),
            reply => Err(ClientError::UnexpectedReply { command: "APPEND", reply }),
        }
    }

    /// `DEL key...`: how many of the keys existed.
    pub fn del<K: AsRef<[u8]>>(&mut self, keys: &[K]) -> Result<i64, ClientError> {
        let keys = keys.iter().map(|key| key.as_ref().to_vec()).collect();
        match self.typed(&Command::Delete { cf: ColumnFamily::Default, keys })? {
            Reply::Integer(n) => Ok(n),
            reply => Err(ClientError::UnexpectedReply { command: "DEL", reply }),
        }
    }

    /// `EXISTS key...`: how many of the keys exist (a repeated key counts each time).
    pub fn exists<K: AsRef<[u8]>>(&mut self, keys: &[K]) -> Result<i64, ClientError> {
        let keys = keys.iter().map(|key| key.as_ref().to_vec()).collect();
        match self.typed(&Command::Exists { keys })? {
            Reply::Integer(n) => Ok(n),
            reply => Err(ClientError::UnexpectedReply { command: "EXISTS", reply }),
        }
    }

    /// `RAWGET cf key` (GET on the default family): the value, or `None`.
    pub fn raw_get(&mut self, cf: ColumnFamily, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        match self.typed(&Command::Get { cf, key: key.to_vec() })? {
            Reply::Bulk(value) => Ok(value),
            reply => Err(ClientError::UnexpectedReply { command: "GET", reply }),
        }
    }

    /// `RAWPUT cf key value` (SET on the default family).
    pub fn raw_put(&mut self, cf: ColumnFamily, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        match self.typed(&Command::Put { cf, key: key.to_vec(), value: value.to_vec() })? {
            Reply::Simple(status) if status == "OK" => Ok(()),
            reply => Err(ClientError::UnexpectedReply { command: "SET", reply }),
        }
    }

    /// `RAWDELETE cf key`: 1 if the key existed, else 0.
    pub fn raw_delete(&mut self, cf: ColumnFamily, key: &[u8]) -> Result<i64, ClientError> {
        match self.typed(&Command::Delete { cf, keys: vec![key.to_vec()] })? {
            Reply::Integer(n) => Ok(n),
            reply => Err(ClientError::UnexpectedReply { command: "RAWDELETE", reply }),
        }
    }

    /// `RAWSCAN cf start limit`: up to `limit` pairs with key >= `start`, in key order.
    pub fn raw_scan(
        &mut self,
        cf: ColumnFamily,
        start: &[u8],
        limit: u64,
    ) -> Result<Vec<KeyValue>, ClientError> {
        let reply = self.typed(&Command::Scan { cf, start: start.to_vec(), limit })?;
        let Reply::Array(Some(items)) = &reply else {
            return Err(ClientError::UnexpectedReply { command: "RAWSCAN", reply });
        };
        let mut pairs = Vec::with_capacity(items.len() / 2);
        for pair in items.chunks(2) {
            match pair {
                [Reply::Bulk(Some(key)), Reply::Bulk(Some(value))] => {
                    pairs.push((key.clone(), value.clone()))
                }
                _ => return Err(ClientError::UnexpectedReply { command: "RAWSCAN", reply }),
            }
        }
        Ok(pairs)
    }

    /// `INFO`: the server's report, `field:value` lines.
    pub fn info(&mut self) -> Result<String, ClientError> {
        match self.typed_args(&[b"INFO".to_vec()])? {
            Reply::Bulk(Some(text)) => Ok(String::from_utf8_lossy(&text).into_owned()),
            reply => Err(ClientError::UnexpectedReply { command: "INFO", reply }),
        }
    }

    /// `INFO` as a map of its `field:value` lines (section headers and blank lines skipped).
    pub fn info_map(&mut self) -> Result<BTreeMap<String, String>, ClientError> {
        Ok(parse_info(&self.info()?))
    }

    /// `PING`: succeeds on `+PONG`.
    pub fn ping(&mut self) -> Result<(), ClientError> {
        match self.typed_args(&[b"PING".to_vec()])? {
            Reply::Simple(status) if status == "PONG" => Ok(()),
            reply => Err(ClientError::UnexpectedReply { command: "PING", reply }),
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.request_timeout_ms)
    }

    fn next_tag(&mut self) -> SessionTag {
        self.last_seq += 1;
        SessionTag { client_id: self.client_id, seq: self.last_seq }
    }

    /// Refuses a call that would bypass an open transaction (see [`call`](Client::call)): it could
    /// take another connection, where the transaction does not exist.
    fn outside_transaction(&self) -> Result<(), ClientError> {
        match self.transaction {
            Some(_) => Err(ClientError::Invalid(
                "a transaction (WATCH/MULTI) is open: use call() until EXEC or DISCARD".to_string(),
            )),
            None => Ok(()),
        }
    }

    /// The arguments to send for `args`: with a fresh `REQ` tag if it is a write.
    fn tag(&mut self, args: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, ClientError> {
        let Some(name) = args.first() else { return Err(ClientError::Invalid("empty command".to_string())) };
        if !is_write_command(name) {
            return Ok(args.to_vec());
        }
        Ok(self.tag_as_write(args))
    }

    /// `args` behind a fresh `REQ` tag.
    fn tag_as_write(&mut self, args: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let tag = self.next_tag();
        let mut tagged = Vec::with_capacity(args.len() + 3);
        tagged.push(b"REQ".to_vec());
        tagged.push(tag.client_id.to_string().into_bytes());
        tagged.push(tag.seq.to_string().into_bytes());
        tagged.extend_from_slice(args);
        tagged
    }

    /// Sends a typed command; an error reply becomes [`ClientError::Server`].
    fn typed(&mut self, command: &Command) -> Result<Reply, ClientError> {
        match self.execute_command(command)? {
            Reply::Error(line) => Err(ClientError::Server(line)),
            reply => Ok(reply),
        }
    }

    /// Sends an untagged command; an error reply becomes [`ClientError::Server`].
    fn typed_args(&mut self, args: &[Vec<u8>]) -> Result<Reply, ClientError> {
        self.outside_transaction()?;
        match self.call(args)? {
            Reply::Error(line) => Err(ClientError::Server(line)),
            reply => Ok(reply),
        }
    }

    fn next_server(&self, server: usize) -> usize {
        (server + 1) % self.servers.len()
    }

    /// The index of `addr` in the server list, adding it if there is room.
    fn server_index(&mut self, addr: &str) -> Option<usize> {
        if let Some(index) = self.servers.iter().position(|known| known == addr) {
            return Some(index);
        }
        if self.servers.len() >= MAX_KNOWN_SERVERS || self.only_listed_servers {
            return None;
        }
        self.servers.push(addr.to_string());
        Some(self.servers.len() - 1)
    }

    /// The open connection to `server`, or a new one (closing a connection to another server).
    fn take_connection(&mut self, server: usize, deadline: Instant) -> io::Result<Connection> {
        match self.connection.take() {
            Some(connection) if connection.server == server => Ok(connection),
            _ => Connection::open(server, &self.servers[server], self.connect_timeout, deadline),
        }
    }

    /// One request and its reply on `server`; the connection is kept only if the exchange worked.
    fn attempt(&mut self, server: usize, request: &[u8], deadline: Instant) -> io::Result<Reply> {
        let mut connection = self.take_connection(server, deadline)?;
        connection.send(request, self.io_timeout, deadline)?;
        let reply = connection.read_reply(self.io_timeout, deadline)?;
        self.connection = Some(connection);
        Ok(reply)
    }

    /// Sends `args` as they are until a server gives a final reply or `deadline` passes.
    fn execute(&mut self, args: &[Vec<u8>], deadline: Instant) -> Result<Reply, ClientError> {
        let mut request = Vec::new();
        encode_request(args, &mut request);
        let mut server = self.preferred;
        let mut backoff = Backoff::new();
        // Attempts since the last back-off that found no leader; a whole round of them means the
        // cluster has none right now (an election), so waiting beats spinning.
        let mut misses = 0;
        let mut last_error = "no attempt within the deadline".to_string();
        while Instant::now() < deadline {
            match self.attempt(server, request.as_slice(), deadline) {
                Ok(reply) => match classify(&reply) {
                    Outcome::Done => {
                        self.preferred = server;
                        return Ok(reply);
                    }
                    Outcome::Redirect(addr) => {
                        last_error = format!("{}: {reply:?}", self.servers[server]);
                        server = match self.server_index(&addr) {
                            Some(leader) if leader != server => leader,
                            _ => self.next_server(server),
                        };
                        misses += 1;
                    }
                    Outcome::NoLeader => {
                        last_error = format!("{}: {reply:?}", self.servers[server]);
                        server = self.next_server(server);
                        misses += 1;
                    }
                    Outcome::TryAgain => {
                        last_error = format!("{}: {reply:?}", self.servers[server]);
                        backoff.wait(&mut self.rng, deadline);
                        server = self.next_server(server);
                        misses = 0;
                    }
                },
                Err(error) => {
                    last_error = format!("{}: {error}", self.servers[server]);
                    server = self.next_server(server);
                    misses += 1;
                }
            }
            if misses >= self.servers.len() {
                backoff.wait(&mut self.rng, deadline);
                misses = 0;
            }
        }
        Err(ClientError::Unavailable { timeout_ms: self.request_timeout_ms, last_error })
    }

    /// Sends the whole batch to the preferred server and reads its replies; a slot is to be retried
    /// when its command must be retried alone (redirected, refused for now, or lost with the
    /// connection).
    fn pipeline_pass(&mut self, tagged: &[Vec<Vec<u8>>], deadline: Instant) -> Vec<Slot> {
        let mut replies = vec![Slot::Retry { never_proposed: false }; tagged.len()];
        let mut request = Vec::new();
        for args in tagged {
            encode_request(args, &mut request);
        }
        let server = self.preferred;
        let Ok(mut connection) = self.take_connection(server, deadline) else { return replies };
        if connection.send(&request, self.io_timeout, deadline).is_err() {
            return replies;
        }
        for slot in replies.iter_mut() {
            match connection.read_reply(self.io_timeout, deadline) {
                Ok(reply) => match classify(&reply) {
                    Outcome::Done => *slot = Slot::Done(reply),
                    _ if refused_before_proposal(&reply) => {
                        *slot = Slot::Retry { never_proposed: true };
                        match classify(&reply) {
                            Outcome::Redirect(addr) => {
                                if let Some(leader) = self.server_index(&addr) {
                                    self.preferred = leader;
                                }
                            }
                            Outcome::NoLeader => self.preferred = self.next_server(server),
                            Outcome::Done | Outcome::TryAgain => {}
                        }
                    }
                    // Start the retries where the redirect points rather than rediscover it per command.
                    Outcome::Redirect(addr) => {
                        if let Some(leader) = self.server_index(&addr) {
                            self.preferred = leader;
                        }
                    }
                    Outcome::NoLeader => self.preferred = self.next_server(server),
                    Outcome::TryAgain => {}
                },
                // The connection is out of step or gone: the rest are retried on a new one.
                Err(_) => return replies,
            }
        }
        self.connection = Some(connection);
        replies
    }
}

/// The command's name in upper case, behind a `REQ client-id seq` tag if there is one.
fn command_name(args: &[Vec<u8>]) -> Option<Vec<u8>> {
    let name = if is_tagged(args) { args.get(3)? } else { args.first()? };
    Some(name.to_ascii_uppercase())
}

/// Whether `args` start with a `REQ` tag (the caller's own, or one this client made).
fn is_tagged(args: &[Vec<u8>]) -> bool {
    args.first().is_some_and(|w| w.eq_ignore_ascii_case(b"REQ"))
}

/// A pipelined command's outcome after one pass.
#[derive(Clone, Debug)]
enum Slot {
    /// Its final reply.
    Done(Reply),
    /// To be retried alone; `never_proposed` if the refusal says nothing of it was proposed.
    Retry {
        /// It was refused before any proposal, so it never applies.
        never_proposed: bool,
    },
}

/// Whether an error reply says the command was refused before anything of it was proposed.
fn refused_before_proposal(reply: &Reply) -> bool {
    const NEVER_PROPOSED: [&str; 5] = [
        "NOTLEADER",
        "TRYAGAIN no leader",
        "TRYAGAIN leader changed; not proposed",
        "TRYAGAIN leadership transfer in progress",
        "TRYAGAIN replica busy",
    ];
    matches!(reply, Reply::Error(line) if NEVER_PROPOSED.iter().any(|p| line.starts_with(p)))
}

/// The `field:value` lines of an `INFO` report; `#` headers, blank and other lines are skipped.
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .map(|(field, value)| (field.to_string(), value.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_commands_are_recognised_by_name_in_any_case() {
        for name in ["SET", "set", "Append", "del", "RAWPUT", "rawdelete", "incr", "MSET", "setver", "expire"]
        {
            assert!(is_write_command(name.as_bytes()), "{name}");
        }
        for name in
            ["GET", "EXISTS", "RAWGET", "RAWSCAN", "INFO", "PING", "REQ", "SETX", "MEMBER", "EXEC", "MGET"]
        {
            assert!(!is_write_command(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn error_codes_are_classified() {
        let kind = |line: &str| match classify(&Reply::Error(line.to_string())) {
            Outcome::Done => "done".to_string(),
            Outcome::Redirect(addr) => format!("redirect {addr}"),
            Outcome::NoLeader => "no leader".to_string(),
            Outcome::TryAgain => "try again".to_string(),
        };
        assert_eq!(kind("NOTLEADER 10.0.0.1:6380"), "redirect 10.0.0.1:6380");
        assert_eq!(kind("NOTLEADER ?"), "no leader");
        assert_eq!(kind("NOTLEADER"), "no leader");
        assert_eq!(kind("TRYAGAIN no quorum"), "try again");
        assert_eq!(kind("TRYAGAIN"), "try again");
        assert_eq!(kind("ERR NOTLEADER x"), "done");
        assert!(matches!(classify(&Reply::ok()), Outcome::Done));
    }

    #[test]
    fn info_lines_parse_into_a_map() {
        let map = parse_info("# Raft\r\nid:1\r\nrole:leader\r\n\r\nleader_client_addr:127.0.0.1:6380\r\n");
        assert_eq!(map.get("id").map(String::as_str), Some("1"));
        assert_eq!(map.get("role").map(String::as_str), Some("leader"));
        assert_eq!(map.get("leader_client_addr").map(String::as_str), Some("127.0.0.1:6380"));
        assert_eq!(map.len(), 3);
    }

    #[test]
    fn random_client_ids_differ() {
        assert_ne!(random_client_id(), random_client_id());
    }

    #[test]
    fn no_servers_is_refused() {
        assert!(matches!(Client::new(ClientConfig::new(Vec::<String>::new())), Err(ClientError::Invalid(_))));
    }
}
