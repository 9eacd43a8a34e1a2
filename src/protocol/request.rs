//! From the arguments of one RESP request to a typed client request, and back.
//!
//! The front end answers [`ClientRequest::Ping`], [`ClientRequest::Quit`], [`ClientRequest::Info`] and
//! [`ClientRequest::Immediate`] itself, proposes [`ClientRequest::Write`] through the log, and serves
//! [`ClientRequest::Read`] as a linearizable read. Command names are case-insensitive; column family
//! names are not (as in TiKV).
//!
//! `REQ client-id seq` may prefix any data command. On a write it becomes the session tag; on a read
//! it is accepted and dropped, since a read is safe to retry without one. Before a connection command
//! (PING, INFO, CLIENT, ...) or another `REQ` it is an error.

use super::command::{ColumnFamily, Command, SessionTag};
use super::command_table;
use super::dialect::{parse_dialect, DIALECT_COMMANDS};
use super::raft::membership::check_addr;
use super::raft::{ChangeOp, MemberAddrs, NodeId};
use super::resp::{Reply, MAX_ARG_BYTES};

/// Largest key, in bytes.
pub const MAX_KEY_BYTES: usize = 64 * 1024;
/// Largest `limit` a RAWSCAN may ask for, in pairs; a larger one is refused, not cut.
pub const MAX_SCAN_LIMIT_PAIRS: u64 = 10_000;
/// Longest client name, library name or version (`CLIENT SETNAME|SETINFO`), in bytes: each
/// connection keeps them, and `CLIENT LIST` shows every connection's.
pub const MAX_CLIENT_NAME_BYTES: usize = 1024;
/// Longest part of a refused command's name or arguments quoted back in an error, in bytes.
const MAX_QUOTED_BYTES: usize = 128;

/// A parsed client request: what the front end must do with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientRequest {
    /// `PING [msg]`: answer `+PONG`, or the message as a bulk string.
    Ping(Option<Vec<u8>>),
    /// `QUIT`: answer `+OK`, then close the connection.
    Quit,
    /// `INFO [section]`: answer this replica's view as bulk text (section lowercased).
    Info(Option<String>),
    /// A write to propose through the log, with its exactly-once tag if the client sent `REQ`.
    Write {
        /// The `REQ client-id seq` tag, if any.
        session: Option<SessionTag>,
        /// The state-changing command.
        command: Command,
    },
    /// A linearizable read.
    Read {
        /// The read-only command.
        command: Command,
    },
    /// `MEMBER LIST`: the membership this replica has applied.
    MemberList,
    /// A membership change or leader transfer, answered once it took effect.
    Admin(AdminRequest),
    /// A connection command whose answer is known without the replica (ECHO, SELECT, HELLO,
    /// COMMAND, CONFIG GET): write this reply.
    Immediate(Reply),
    /// `MULTI`: start queueing.
    Multi,
    /// `EXEC`: send what was queued as one entry (exactly once with `REQ client-id seq EXEC`).
    Exec(Option<SessionTag>),
    /// `DISCARD`: drop what was queued.
    Discard,
    /// `WATCH key ...`.
    Watch(Vec<Vec<u8>>),
    /// `UNWATCH`.
    Unwatch,
    /// `TIME`: this replica's clock.
    Time,
    /// `SCAN cursor ...`: the connection turns the cursor into where the page starts.
    Scan {
        /// The cursor the client sent (0: from the start).
        cursor: u64,
        /// MATCH.
        pattern: Option<Vec<u8>>,
        /// COUNT, at most [`MAX_SCAN_COUNT`](super::dialect::MAX_SCAN_COUNT).
        count: u64,
        /// TYPE.
        kind: Option<Vec<u8>>,
    },
    /// `CLIENT ID|GETNAME|SETNAME|INFO|LIST|SETINFO`: answered from the connection registry.
    Client(ClientCommand),
    /// `SNAPSHOT CHUNK token offset`: the next bytes of an image held by `SNAPSHOT BEGIN`.
    SnapshotChunk {
        /// The image's token.
        token: u64,
        /// Where the chunk starts.
        offset: u64,
    },
    /// `SNAPSHOT END token`: let the held image go.
    SnapshotEnd(u64),
}

/// The CLIENT subcommands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientCommand {
    /// CLIENT ID.
    Id,
    /// CLIENT GETNAME.
    GetName,
    /// CLIENT SETNAME name.
    SetName(String),
    /// CLIENT INFO.
    Info,
    /// CLIENT LIST.
    List,
    /// CLIENT SETINFO LIB-NAME|LIB-VER value.
    SetInfo {
        /// LIB-NAME (true) or LIB-VER.
        lib_name: bool,
        /// The value.
        value: String,
    },
    /// HELLO [2 [AUTH user pass] [SETNAME name]]: the connection's handshake, naming it if asked.
    Hello {
        /// SETNAME's name.
        name: Option<String>,
    },
}

/// A request that changes who is in the cluster or who leads it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AdminRequest {
    /// `MEMBER ADD|PROMOTE|REMOVE|CHANGE`: the steps of one change.
    Change(Vec<ChangeOp>),
    /// `LEADER TRANSFER id`.
    TransferLeader(NodeId),
}

/// Why a request was refused; `Display` is the Redis error line, code first.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No arguments at all.
    #[error("ERR empty command")]
    Empty,
    /// A command this server does not know.
    #[error("ERR unknown command '{name}', with args beginning with: {args}")]
    UnknownCommand {
        /// The name as sent (truncated).
        name: String,
        /// The first arguments, each quoted and followed by a space (truncated).
        args: String,
    },
    /// A subcommand this server does not know.
    #[error("ERR unknown subcommand '{subcommand}'. Try {command} HELP.")]
    UnknownSubcommand {
        /// The command, upper case.
        command: String,
        /// The subcommand as sent (truncated).
        subcommand: String,
    },
    /// Too few or too many arguments for the command (named in lower case).
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(String),
    /// Arguments the command does not take.
    #[error("ERR syntax error")]
    Syntax,
    /// A key over [`MAX_KEY_BYTES`].
    #[error("ERR key too large (max {} bytes)", MAX_KEY_BYTES)]
    KeyTooLarge,
    /// A value over [`MAX_ARG_BYTES`].
    #[error("ERR value too large (max {} bytes)", MAX_ARG_BYTES)]
    ValueTooLarge,
    /// A column family name that is not `default`, `write` or `lock`.
    #[error("ERR unknown column family '{0}'")]
    UnknownColumnFamily(String),
    /// An argument that should be a non-negative integer in range.
    #[error("ERR value is not an integer or out of range")]
    NotAnInteger,
    /// A RAWSCAN limit over [`MAX_SCAN_LIMIT_PAIRS`].
    #[error("ERR scan limit too large (max {} pairs)", MAX_SCAN_LIMIT_PAIRS)]
    ScanLimitTooLarge,
    /// SELECT of a database other than 0.
    #[error("ERR DB index is out of range")]
    DbIndexOutOfRange,
    /// A malformed `REQ client-id seq` prefix.
    #[error("ERR {0}")]
    Session(String),
    /// A malformed membership request.
    #[error("ERR {0}")]
    Member(String),
    /// Any other refusal: the whole error line, code first.
    #[error("{0}")]
    Other(String),
}

impl RequestError {
    /// The error reply to send for this refusal.
    pub fn to_reply(&self) -> Reply {
        Reply::Error(self.to_string())
    }
}

/// A command's name as errors show it: lower case, as Redis does.
pub(crate) fn lower_name(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_lowercase()
}

/// Parses the arguments of one request (command name first) into a typed request.
pub fn parse_client_request(args: Vec<Vec<u8>>) -> Result<ClientRequest, RequestError> {
    let mut args = args;
    if args.is_empty() {
        return Err(RequestError::Empty);
    }
    // Shifting the arguments down keeps their vector: no second one is allocated per request.
    let name = args.remove(0);
    if name.eq_ignore_ascii_case(b"REQ") {
        parse_session(args)
    } else {
        parse_command(name, args)
    }
}

/// `REQ client-id seq command args...`.
fn parse_session(args: Vec<Vec<u8>>) -> Result<ClientRequest, RequestError> {
    let mut args = args.into_iter();
    let (Some(client_id), Some(seq), Some(name)) = (args.next(), args.next(), args.next()) else {
        return Err(RequestError::Session("REQ must be followed by client-id, seq and a command".into()));
    };
    let client_id = parse_u64(&client_id)
        .ok_or_else(|| RequestError::Session("REQ client-id is not an unsigned 64-bit integer".into()))?;
    let seq = parse_u64(&seq)
        .ok_or_else(|| RequestError::Session("REQ seq is not an unsigned 64-bit integer".into()))?;
    if name.eq_ignore_ascii_case(b"REQ") {
        return Err(RequestError::Session("REQ cannot be nested".into()));
    }
    let shown_name = lower_name(&name);
    match parse_command(name, args.collect())? {
        ClientRequest::Write { command, .. } => {
            Ok(ClientRequest::Write { session: Some(SessionTag { client_id, seq }), command })
        }
        read @ ClientRequest::Read { .. } => Ok(read),
        ClientRequest::Exec(_) => Ok(ClientRequest::Exec(Some(SessionTag { client_id, seq }))),
        _ => Err(RequestError::Session(format!("REQ can only prefix a data command, not '{shown_name}'"))),
    }
}

fn parse_command(name: Vec<u8>, args: Vec<Vec<u8>>) -> Result<ClientRequest, RequestError> {
    // Upper-cased on the stack: command names are short, and this runs for every request.
    let mut short = [0u8; 16];
    let long;
    let upper: &[u8] = match short.get_mut(..name.len()) {
        Some(room) => {
            room.copy_from_slice(&name);
            room.make_ascii_uppercase();
            room
        }
        None => {
            long = name.to_ascii_uppercase();
            &long
        }
    };
    // Made only for an error.
    let lower = || lower_name(&name);
    let arity = |min: usize, max: Option<usize>| {
        if args.len() < min || max.is_some_and(|max| args.len() > max) {
            Err(RequestError::WrongArity(lower()))
        } else {
            Ok(())
        }
    };
    match upper {
        b"PING" => {
            arity(0, Some(1))?;
            Ok(ClientRequest::Ping(args.into_iter().next()))
        }
        b"QUIT" => Ok(ClientRequest::Quit),
        b"INFO" => {
            arity(0, Some(1))?;
            Ok(ClientRequest::Info(
                args.into_iter().next().map(|section| String::from_utf8_lossy(&section).to_ascii_lowercase()),
            ))
        }
        b"ECHO" => {
            arity(1, Some(1))?;
            let [message]: [Vec<u8>; 1] = take(args)?;
            Ok(ClientRequest::Immediate(Reply::Bulk(Some(message))))
        }
        b"GET" => {
            arity(1, Some(1))?;
            let [key] = take(args)?;
            Ok(read(Command::Get { cf: ColumnFamily::Default, key: check_key(key)? }))
        }
        name if DIALECT_COMMANDS.contains(&name) => parse_dialect(name, args),
        b"APPEND" => {
            arity(2, Some(2))?;
            let [key, value] = take(args)?;
            Ok(write(Command::Append { key: check_key(key)?, value: check_value(value)? }))
        }
        b"DEL" => {
            arity(1, None)?;
            Ok(write(Command::Delete { cf: ColumnFamily::Default, keys: check_keys(args)? }))
        }
        b"EXISTS" => {
            arity(1, None)?;
            Ok(read(Command::Exists { keys: check_keys(args)? }))
        }
        b"RAWGET" => {
            arity(2, Some(2))?;
            let [cf, key] = take(args)?;
            Ok(read(Command::Get { cf: column_family(&cf)?, key: check_key(key)? }))
        }
        b"RAWPUT" => {
            arity(3, Some(3))?;
            let [cf, key, value] = take(args)?;
            Ok(write(Command::Put {
                cf: column_family(&cf)?,
                key: check_key(key)?,
                value: check_value(value)?,
            }))
        }
        b"RAWDELETE" => {
            arity(2, Some(2))?;
            let [cf, key] = take(args)?;
            Ok(write(Command::Delete { cf: column_family(&cf)?, keys: vec![check_key(key)?] }))
        }
        b"RAWSCAN" => {
            arity(3, Some(3))?;
            let [cf, start, limit] = take(args)?;
            let cf = column_family(&cf)?;
            let start = check_key(start)?;
            let limit = parse_u64(&limit).ok_or(RequestError::NotAnInteger)?;
            if limit > MAX_SCAN_LIMIT_PAIRS {
                return Err(RequestError::ScanLimitTooLarge);
            }
            Ok(read(Command::Scan { cf, start, limit }))
        }
        b"SELECT" => {
            arity(1, Some(1))?;
            let [db] = take(args)?;
            match super::dialect::parse_i64_strict(&db) {
                Some(0) => Ok(ClientRequest::Immediate(Reply::ok())),
                Some(_) => Err(RequestError::DbIndexOutOfRange),
                None => Err(RequestError::NotAnInteger),
            }
        }
        b"CLIENT" => parse_client_subcommand(args),
        b"HELLO" => parse_hello(args),
        b"COMMAND" => Ok(ClientRequest::Immediate(command_table::command_reply(&args))),
        b"CONFIG" => parse_config(args),
        b"MEMBER" => parse_member(args),
        b"SNAPSHOT" => parse_snapshot(args),
        b"LEADER" => match args.as_slice() {
            [sub] if sub.eq_ignore_ascii_case(b"HELP") => Ok(help(&[
                "LEADER <subcommand> [<arg> ...]. Subcommands are:",
                "TRANSFER <id>",
                "    Hand leadership to voter <id>, once it has the leader's whole log.",
                "HELP",
                "    Print this help.",
            ])),
            [sub, id] if sub.eq_ignore_ascii_case(b"TRANSFER") => {
                Ok(ClientRequest::Admin(AdminRequest::TransferLeader(member_id(id)?)))
            }
            [sub, ..] if sub.eq_ignore_ascii_case(b"TRANSFER") => {
                Err(RequestError::WrongArity("leader|transfer".into()))
            }
            [sub, ..] => {
                Err(RequestError::UnknownSubcommand { command: "LEADER".into(), subcommand: quote(sub) })
            }
            [] => Err(RequestError::WrongArity("leader".into())),
        },
        _ => Err(unknown_command(&name, &args)),
    }
}

/// A member id: a positive integer.
fn member_id(arg: &[u8]) -> Result<NodeId, RequestError> {
    match parse_u64(arg) {
        Some(id) if id > 0 => Ok(id),
        _ => Err(RequestError::Member(format!("member id must be a positive integer, not '{}'", quote(arg)))),
    }
}

/// An address argument: HOST:PORT.
fn member_addr(arg: &[u8]) -> Result<String, RequestError> {
    let addr = String::from_utf8_lossy(arg).into_owned();
    check_addr(&addr).map_err(|e| RequestError::Member(e.to_string()))?;
    Ok(addr)
}

/// The steps of `MEMBER CHANGE`: `ADD id peer client`, `PROMOTE id`, `REMOVE id`, repeated.
fn change_ops(mut args: &[Vec<u8>]) -> Result<Vec<ChangeOp>, RequestError> {
    let mut ops = Vec::new();
    while let Some((op, rest)) = args.split_first() {
        let upper = op.to_ascii_uppercase();
        let (step, used) = match (upper.as_slice(), rest) {
            (b"ADD", [id, peer, client, ..]) => {
                let addrs = MemberAddrs { peer_addr: member_addr(peer)?, client_addr: member_addr(client)? };
                (ChangeOp::Add { id: member_id(id)?, addrs }, 3)
            }
            (b"PROMOTE", [id, ..]) => (ChangeOp::Promote { id: member_id(id)? }, 1),
            (b"REMOVE", [id, ..]) => (ChangeOp::Remove { id: member_id(id)? }, 1),
            (b"ADD" | b"PROMOTE" | b"REMOVE", _) => {
                return Err(RequestError::Member(format!("'{}' is missing arguments", quote(op))))
            }
            _ => {
                return Err(RequestError::Member(format!(
                    "unknown membership step '{}': expected ADD, PROMOTE or REMOVE",
                    quote(op)
                )))
            }
        };
        ops.push(step);
        args = &rest[used..];
    }
    if ops.is_empty() {
        return Err(RequestError::WrongArity("member|change".into()));
    }
    Ok(ops)
}

/// `SNAPSHOT BEGIN | CHUNK token offset | END token`: downloading a backup image.
fn parse_snapshot(args: Vec<Vec<u8>>) -> Result<ClientRequest, RequestError> {
    let Some((sub, rest)) = args.split_first() else {
        return Err(RequestError::WrongArity("snapshot".into()));
    };
    let number = |arg: &[u8]| parse_u64(arg).ok_or(RequestError::NotAnInteger);
    match (sub.to_ascii_uppercase().as_slice(), rest) {
        (b"HELP", []) => Ok(help(&[
            "SNAPSHOT <subcommand> [<arg> ...]. Subcommands are:",
            "BEGIN",
            "    Take an image of the state: token, index, term, length, CRC-32, keys, digest.",
            "CHUNK <token> <offset>",
            "    Return up to 1 MiB of the image from <offset>.",
            "END <token>",
            "    Let the image go.",
            "HELP",
            "    Print this help.",
        ])),
        (b"BEGIN", []) => Ok(ClientRequest::Read { command: Command::SnapshotImage }),
        (b"CHUNK", [token, offset]) => {
            Ok(ClientRequest::SnapshotChunk { token: number(token)?, offset: number(offset)? })
        }
        (b"END", [token]) => Ok(ClientRequest::SnapshotEnd(number(token)?)),
        (b"BEGIN", _) => Err(RequestError::WrongArity("snapshot|begin".into())),
        (b"CHUNK", _) => Err(RequestError::WrongArity("snapshot|chunk".into())),
        (b"END", _) => Err(RequestError::WrongArity("snapshot|end".into())),
        _ => Err(RequestError::UnknownSubcommand { command: "SNAPSHOT".into(), subcommand: quote(sub) }),
    }
}

fn parse_member(args: Vec<Vec<u8>>) -> Result<ClientRequest, RequestError> {
    let Some((sub, rest)) = args.split_first() else {
        return Err(RequestError::WrongArity("member".into()));
    };
    let upper = sub.to_ascii_uppercase();
    let arity = |want: usize, name: &str| {
        if rest.len() == want {
            Ok(())
        } else {
            Err(RequestError::WrongArity(format!("member|{name}")))
        }
    };
    let change = |ops| Ok(ClientRequest::Admin(AdminRequest::Change(ops)));
    match upper.as_slice() {
        b"HELP" => arity(0, "help").map(|()| {
            help(&[
                "MEMBER <subcommand> [<arg> ...]. Subcommands are:",
                "LIST",
                "    Return the members: id, role, addresses.",
                "ADD <id> <peer-addr> <client-addr>",
                "    Add a learner.",
                "PROMOTE <id>",
                "    Make learner <id> a voter.",
                "REMOVE <id>",
                "    Remove member <id>.",
                "CHANGE <step> [<step> ...]",
                "    Several steps (ADD, PROMOTE, REMOVE) as one joint change.",
                "HELP",
                "    Print this help.",
            ])
        }),
        b"LIST" => arity(0, "list").map(|()| ClientRequest::MemberList),
        b"ADD" => arity(3, "add").and_then(|()| change(change_ops(&args)?)),
        b"PROMOTE" => arity(1, "promote").and_then(|()| change(change_ops(&args)?)),
        b"REMOVE" => arity(1, "remove").and_then(|()| change(change_ops(&args)?)),
        b"CHANGE" => change(change_ops(rest)?),
        _ => Err(RequestError::UnknownSubcommand { command: "MEMBER".into(), subcommand: quote(sub) }),
    }
}

fn parse_client_subcommand(args: Vec<Vec<u8>>) -> Result<ClientRequest, RequestError> {
    let Some(sub) = args.first() else { return Err(RequestError::WrongArity("client".into())) };
    let upper = sub.to_ascii_uppercase();
    let client = |c| Ok(ClientRequest::Client(c));
    match (upper.as_slice(), &args[1..]) {
        (b"HELP", []) => Ok(help(&[
            "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GETNAME",
            "    Return the name of the current connection.",
            "ID",
            "    Return the ID of the current connection.",
            "INFO",
            "    Return information about the current client connection.",
            "LIST [TYPE normal]",
            "    Return information about client connections.",
            "SETINFO <LIB-NAME|LIB-VER> <value>",
            "    Set client meta attributes.",
            "SETNAME <name>",
            "    Assign the name <name> to the current connection.",
            "HELP",
            "    Print this help.",
        ])),
        (b"ID", []) => client(ClientCommand::Id),
        (b"GETNAME", []) => client(ClientCommand::GetName),
        (b"INFO", []) => client(ClientCommand::Info),
        (b"LIST", []) => client(ClientCommand::List),
        (b"LIST", [word, ..]) if word.eq_ignore_ascii_case(b"TYPE") => client(ClientCommand::List),
        (b"SETNAME", [name]) => client(ClientCommand::SetName(client_name(name)?)),
        (b"SETINFO", [attr, value]) => {
            let lib_name = match attr.to_ascii_uppercase().as_slice() {
                b"LIB-NAME" => true,
                b"LIB-VER" => false,
                _ => return Err(RequestError::Other(format!("ERR Unrecognized option '{}'", quote(attr)))),
            };
            if value.len() > MAX_CLIENT_NAME_BYTES {
                return Err(RequestError::Other(format!(
                    "ERR {} is limited to {MAX_CLIENT_NAME_BYTES} bytes.",
                    quote(attr).to_ascii_lowercase()
                )));
            }
            if value.iter().any(|b| *b <= b' ' || *b > b'~') {
                return Err(RequestError::Other(format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    quote(attr).to_ascii_lowercase()
                )));
            }
            client(ClientCommand::SetInfo { lib_name, value: String::from_utf8_lossy(value).into_owned() })
        }
        (b"ID" | b"GETNAME" | b"INFO" | b"LIST" | b"HELP", _) => Err(RequestError::WrongArity(format!(
            "client|{}",
            String::from_utf8_lossy(&upper).to_lowercase()
        ))),
        (b"SETINFO", _) => Err(RequestError::WrongArity("client|setinfo".into())),
        (b"SETNAME", _) => Err(RequestError::WrongArity("client|setname".into())),
        _ => Err(RequestError::UnknownSubcommand { command: "CLIENT".into(), subcommand: quote(sub) }),
    }
}

/// A name CLIENT SETNAME or HELLO SETNAME may give, checked as Redis checks it.
fn client_name(name: &[u8]) -> Result<String, RequestError> {
    if name.len() > MAX_CLIENT_NAME_BYTES {
        return Err(RequestError::Other(format!(
            "ERR Client names are limited to {MAX_CLIENT_NAME_BYTES} bytes."
        )));
    }
    if name.iter().any(|b| *b <= b' ' || *b > b'~') {
        return Err(RequestError::Other(
            "ERR Client names cannot contain spaces, newlines or special characters.".into(),
        ));
    }
    Ok(String::from_utf8_lossy(name).into_owned())
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`, as Redis reads it. This
/// server speaks RESP2 only, so protocol 3 is refused with `-NOPROTO` as Redis does. There is
/// no password to check (no ACLs): AUTH is taken and ignored, as a server with the default
/// user's `nopass` does.
fn parse_hello(args: Vec<Vec<u8>>) -> Result<ClientRequest, RequestError> {
    let mut args = args.iter();
    if let Some(version) = args.next() {
        match parse_u64(version) {
            Some(2) => {}
            Some(_) => {
                return Ok(ClientRequest::Immediate(Reply::Error(
                    "NOPROTO unsupported protocol version".into(),
                )))
            }
            None => {
                return Err(RequestError::Other(
                    "ERR Protocol version is not an integer or out of range".into(),
                ))
            }
        }
    }
    let mut name = None;
    while let Some(option) = args.next() {
        let upper = option.to_ascii_uppercase();
        match (upper.as_slice(), args.len()) {
            (b"AUTH", 2..) => {
                args.nth(1);
            }
            (b"SETNAME", 1..) => name = args.next().map(|n| client_name(n)).transpose()?,
            _ => {
                return Err(RequestError::Other(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    quote(option)
                )))
            }
        }
    }
    Ok(ClientRequest::Client(ClientCommand::Hello { name }))
}

/// CONFIG GET: the two parameters redis-benchmark asks for, with the values that describe this
/// server (no RDB saves, no AOF); any other parameter matches nothing.
/// A `HELP` subcommand's answer: its lines, as Redis answers them (status strings).
fn help(lines: &[&str]) -> ClientRequest {
    ClientRequest::Immediate(Reply::Array(Some(
        lines.iter().map(|l| Reply::Simple((*l).to_string())).collect(),
    )))
}

fn parse_config(args: Vec<Vec<u8>>) -> Result<ClientRequest, RequestError> {
    let Some(sub) = args.first() else { return Err(RequestError::WrongArity("config".into())) };
    if sub.eq_ignore_ascii_case(b"HELP") && args.len() == 1 {
        return Ok(help(&[
            "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "    Only save, appendonly, maxmemory, maxmemory-policy and databases are known.",
            "HELP",
            "    Print this help.",
        ]));
    }
    if !sub.eq_ignore_ascii_case(b"GET") {
        return Err(RequestError::UnknownSubcommand { command: "CONFIG".into(), subcommand: quote(sub) });
    }
    if args.len() < 2 {
        return Err(RequestError::WrongArity("config|get".into()));
    }
    let mut pairs = Vec::new();
    // Only what tools read; the durability answer is the honest one: every write is on a
    // majority's disk before it is acknowledged, which no RDB/AOF setting describes.
    const PARAMETERS: [(&str, &str); 5] = [
        ("save", ""),
        ("appendonly", "no"),
        ("maxmemory", "0"),
        ("maxmemory-policy", "noeviction"),
        ("databases", "1"),
    ];
    for (name, value) in PARAMETERS {
        // Each parameter once, whichever patterns (Redis 7 globs) match it.
        if args[1..].iter().any(|p| command_table::glob_match(&p.to_ascii_lowercase(), name.as_bytes())) {
            pairs.push(Reply::bulk(name.as_bytes().to_vec()));
            pairs.push(Reply::bulk(value.as_bytes().to_vec()));
        }
    }
    Ok(ClientRequest::Immediate(Reply::Array(Some(pairs))))
}

pub(crate) fn read(command: Command) -> ClientRequest {
    ClientRequest::Read { command }
}

pub(crate) fn write(command: Command) -> ClientRequest {
    ClientRequest::Write { session: None, command }
}

/// Moves exactly N arguments out; callers check arity first, so the error cannot happen.
pub(crate) fn take<const N: usize>(args: Vec<Vec<u8>>) -> Result<[Vec<u8>; N], RequestError> {
    <[Vec<u8>; N]>::try_from(args).map_err(|_| RequestError::Syntax)
}

pub(crate) fn check_key(key: Vec<u8>) -> Result<Vec<u8>, RequestError> {
    if key.len() > MAX_KEY_BYTES {
        Err(RequestError::KeyTooLarge)
    } else {
        Ok(key)
    }
}

pub(crate) fn check_keys(keys: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, RequestError> {
    keys.into_iter().map(check_key).collect()
}

pub(crate) fn check_value(value: Vec<u8>) -> Result<Vec<u8>, RequestError> {
    if value.len() > MAX_ARG_BYTES {
        Err(RequestError::ValueTooLarge)
    } else {
        Ok(value)
    }
}

fn column_family(name: &[u8]) -> Result<ColumnFamily, RequestError> {
    ColumnFamily::from_name(name).ok_or_else(|| RequestError::UnknownColumnFamily(quote(name)))
}

/// Parses an unsigned 64-bit decimal: digits only, no sign, no spaces.
pub(crate) fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Bytes quoted back to the client: at most [`MAX_QUOTED_BYTES`], control bytes as `?`.
fn quote(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_QUOTED_BYTES)];
    String::from_utf8_lossy(cut).chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// Redis's unknown-command error: the name, then the first arguments until about 128 bytes.
fn unknown_command(name: &[u8], args: &[Vec<u8>]) -> RequestError {
    let mut quoted_args = String::new();
    for arg in args {
        if quoted_args.len() >= MAX_QUOTED_BYTES {
            break;
        }
        let room = MAX_QUOTED_BYTES - quoted_args.len();
        quoted_args.push_str(&format!("'{}' ", quote(&arg[..arg.len().min(room)])));
    }
    RequestError::UnknownCommand { name: quote(name), args: quoted_args }
}

/// The multibulk arguments that send `command` (with its `REQ` prefix if `session` is set).
///
/// Fails only for a delete of other than one key outside the default family, which no single
/// command expresses (RAWDELETE takes one key).
pub fn encode_command(session: Option<SessionTag>, command: &Command) -> Result<Vec<Vec<u8>>, RequestError> {
    let mut args: Vec<Vec<u8>> = Vec::new();
    if let Some(tag) = session {
        args.push(b"REQ".to_vec());
        args.push(tag.client_id.to_string().into_bytes());
        args.push(tag.seq.to_string().into_bytes());
    }
    let cf_name = |cf: ColumnFamily| cf.name().as_bytes().to_vec();
    match command {
        Command::Get { cf: ColumnFamily::Default, key } => args.extend([b"GET".to_vec(), key.clone()]),
        Command::Get { cf, key } => args.extend([b"RAWGET".to_vec(), cf_name(*cf), key.clone()]),
        Command::Put { cf: ColumnFamily::Default, key, value } => {
            args.extend([b"SET".to_vec(), key.clone(), value.clone()])
        }
        Command::Put { cf, key, value } => {
            args.extend([b"RAWPUT".to_vec(), cf_name(*cf), key.clone(), value.clone()])
        }
        Command::Append { key, value } => args.extend([b"APPEND".to_vec(), key.clone(), value.clone()]),
        Command::Delete { cf: ColumnFamily::Default, keys } => {
            args.push(b"DEL".to_vec());
            args.extend(keys.iter().cloned());
        }
        Command::Delete { cf, keys } => match keys.as_slice() {
            [key] => args.extend([b"RAWDELETE".to_vec(), cf_name(*cf), key.clone()]),
            _ => return Err(RequestError::WrongArity("rawdelete".into())),
        },
        Command::Exists { keys } => {
            args.push(b"EXISTS".to_vec());
            args.extend(keys.iter().cloned());
        }
        Command::Scan { cf, start, limit } => {
            args.extend([b"RAWSCAN".to_vec(), cf_name(*cf), start.clone(), limit.to_string().into_bytes()])
        }
        Command::MGet { keys } => {
            args.push(b"MGET".to_vec());
            args.extend(keys.iter().cloned());
        }
        Command::IncrBy { key, delta } => {
            args.extend([b"INCRBY".to_vec(), key.clone(), delta.to_string().into_bytes()])
        }
        Command::GetVer { key } => args.extend([b"GETVER".to_vec(), key.clone()]),
        Command::SetVer { key, version, value } => {
            args.extend([b"SETVER".to_vec(), key.clone(), version.to_string().into_bytes(), value.clone()])
        }
        Command::GetDel { key } => args.extend([b"GETDEL".to_vec(), key.clone()]),
        Command::Strlen { key } => args.extend([b"STRLEN".to_vec(), key.clone()]),
        Command::Type { key } => args.extend([b"TYPE".to_vec(), key.clone()]),
        Command::DbSize => args.push(b"DBSIZE".to_vec()),
        other => {
            let _ = other;
            return Err(RequestError::Other("ERR this command has no single-command encoding".into()));
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_whose_unknown_subcommand_says_try_help_has_help() {
        for command in ["CLIENT", "CONFIG", "LEADER", "SNAPSHOT", "MEMBER"] {
            let ask =
                |sub: &str| parse_client_request(vec![command.as_bytes().to_vec(), sub.as_bytes().to_vec()]);
            let Err(unknown) = ask("NOPE") else { panic!("{command} NOPE is refused") };
            assert!(unknown.to_string().contains(&format!("Try {command} HELP.")), "{unknown}");
            match ask("help") {
                Ok(ClientRequest::Immediate(Reply::Array(Some(lines)))) => {
                    assert!(lines.len() > 2, "{command}: {lines:?}");
                    assert!(
                        matches!(&lines[0], Reply::Simple(l) if l.starts_with(command)),
                        "{command}: {lines:?}"
                    );
                }
                other => panic!("{command} HELP: {other:?}"),
            }
        }
    }

    fn parse(line: &str) -> Result<ClientRequest, RequestError> {
        let args = crate::protocol::resp::split_inline_args(line.as_bytes()).expect("test line splits");
        parse_client_request(args)
    }

    fn error_line(line: &str) -> String {
        parse(line).expect_err(line).to_string()
    }

    #[test]
    fn data_commands_map_to_commands() {
        let default = ColumnFamily::Default;
        let cases: Vec<(&str, ClientRequest)> = vec![
            ("get k", read(Command::Get { cf: default, key: b"k".to_vec() })),
            ("SeT k v", write(Command::Put { cf: default, key: b"k".to_vec(), value: b"v".to_vec() })),
            ("APPEND k v", write(Command::Append { key: b"k".to_vec(), value: b"v".to_vec() })),
            ("DEL a b", write(Command::Delete { cf: default, keys: vec![b"a".to_vec(), b"b".to_vec()] })),
            ("EXISTS a a", read(Command::Exists { keys: vec![b"a".to_vec(), b"a".to_vec()] })),
            ("RAWGET lock k", read(Command::Get { cf: ColumnFamily::Lock, key: b"k".to_vec() })),
            (
                "RAWPUT write k v",
                write(Command::Put { cf: ColumnFamily::Write, key: b"k".to_vec(), value: b"v".to_vec() }),
            ),
            ("RAWDELETE default k", write(Command::Delete { cf: default, keys: vec![b"k".to_vec()] })),
            (
                "rawscan write a 10",
                read(Command::Scan { cf: ColumnFamily::Write, start: b"a".to_vec(), limit: 10 }),
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(parse(line), Ok(expected), "{line}");
        }
    }

    #[test]
    fn membership_commands_parse_into_changes() {
        let add = |id| ChangeOp::Add {
            id,
            addrs: MemberAddrs { peer_addr: "h:7".into(), client_addr: "h:6".into() },
        };
        let change = |ops| Ok(ClientRequest::Admin(AdminRequest::Change(ops)));
        assert_eq!(parse("member list"), Ok(ClientRequest::MemberList));
        assert_eq!(parse("MEMBER ADD 4 h:7 h:6"), change(vec![add(4)]));
        assert_eq!(parse("member promote 4"), change(vec![ChangeOp::Promote { id: 4 }]));
        assert_eq!(parse("member remove 2"), change(vec![ChangeOp::Remove { id: 2 }]));
        assert_eq!(
            parse("member change add 4 h:7 h:6 promote 5 remove 1"),
            change(vec![add(4), ChangeOp::Promote { id: 5 }, ChangeOp::Remove { id: 1 }])
        );
        assert_eq!(parse("leader transfer 3"), Ok(ClientRequest::Admin(AdminRequest::TransferLeader(3))));
        for (line, error) in [
            ("member add 0 h:7 h:6", "ERR member id must be a positive integer, not '0'"),
            ("member add x h:7 h:6", "ERR member id must be a positive integer, not 'x'"),
            ("member add 4 nowhere h:6", "ERR invalid address 'nowhere': expected HOST:PORT"),
            ("member add 4 h:7", "ERR wrong number of arguments for 'member|add' command"),
            ("member change", "ERR wrong number of arguments for 'member|change' command"),
            ("member change add 4 h:7", "ERR 'add' is missing arguments"),
            ("member change swap 4", "ERR unknown membership step 'swap': expected ADD, PROMOTE or REMOVE"),
            ("member frob", "ERR unknown subcommand 'frob'. Try MEMBER HELP."),
            ("leader transfer", "ERR wrong number of arguments for 'leader|transfer' command"),
            ("leader transfer 0", "ERR member id must be a positive integer, not '0'"),
        ] {
            assert_eq!(error_line(line), error, "{line}");
        }
    }

    #[test]
    fn local_commands_are_answered_locally() {
        assert_eq!(parse("ping"), Ok(ClientRequest::Ping(None)));
        assert_eq!(parse("PING hi"), Ok(ClientRequest::Ping(Some(b"hi".to_vec()))));
        assert_eq!(parse("quit"), Ok(ClientRequest::Quit));
        assert_eq!(parse("INFO Replication"), Ok(ClientRequest::Info(Some("replication".into()))));
        assert_eq!(parse("ECHO x"), Ok(ClientRequest::Immediate(Reply::bulk(b"x".to_vec()))));
        assert_eq!(parse("SELECT 0"), Ok(ClientRequest::Immediate(Reply::ok())));
        assert_eq!(
            parse("client setinfo lib-name redis-rs"),
            Ok(ClientRequest::Client(ClientCommand::SetInfo { lib_name: true, value: "redis-rs".into() }))
        );
        assert_eq!(
            parse("CLIENT SETNAME me"),
            Ok(ClientRequest::Client(ClientCommand::SetName("me".into())))
        );
        assert_eq!(parse("client id"), Ok(ClientRequest::Client(ClientCommand::Id)));
        assert_eq!(
            error_line("client setname 'a b'"),
            "ERR Client names cannot contain spaces, newlines or special characters."
        );
        let longest = "n".repeat(MAX_CLIENT_NAME_BYTES);
        assert_eq!(
            parse(&format!("client setname {longest}")),
            Ok(ClientRequest::Client(ClientCommand::SetName(longest.clone())))
        );
        assert_eq!(
            error_line(&format!("client setname {longest}x")),
            "ERR Client names are limited to 1024 bytes."
        );
        assert!(parse(&format!("client setinfo lib-ver {longest}")).is_ok());
        assert_eq!(
            error_line(&format!("client setinfo LIB-NAME {longest}x")),
            "ERR lib-name is limited to 1024 bytes."
        );
        assert_eq!(
            parse("HELLO 3"),
            Ok(ClientRequest::Immediate(Reply::Error("NOPROTO unsupported protocol version".into())))
        );
        let hello = |name: Option<&str>| {
            Ok(ClientRequest::Client(ClientCommand::Hello { name: name.map(String::from) }))
        };
        assert_eq!(parse("HELLO 2"), hello(None));
        assert_eq!(parse("HELLO"), hello(None));
        assert_eq!(parse("hello 2 setname me"), hello(Some("me")));
        assert_eq!(parse("HELLO 2 AUTH default secret SETNAME me"), hello(Some("me")));
        assert_eq!(parse("HELLO 2 SETNAME me AUTH default secret"), hello(Some("me")));
        assert_eq!(error_line("HELLO two"), "ERR Protocol version is not an integer or out of range");
        assert_eq!(error_line("HELLO 2 FOO"), "ERR Syntax error in HELLO option 'FOO'");
        assert_eq!(error_line("HELLO 2 AUTH default"), "ERR Syntax error in HELLO option 'AUTH'");
        assert_eq!(error_line("HELLO 2 SETNAME"), "ERR Syntax error in HELLO option 'SETNAME'");
        assert!(error_line("HELLO 2 SETNAME a\u{7f}b").contains("cannot contain spaces"));
        assert_eq!(
            parse("command count"),
            Ok(ClientRequest::Immediate(Reply::Integer(command_table::COMMANDS.len() as i64)))
        );
        assert_eq!(
            parse("CONFIG GET save"),
            Ok(ClientRequest::Immediate(Reply::Array(Some(vec![
                Reply::bulk(b"save".to_vec()),
                Reply::bulk(b"".to_vec())
            ]))))
        );
        assert_eq!(
            parse("CONFIG GET maxmemory"),
            Ok(ClientRequest::Immediate(Reply::Array(Some(vec![
                Reply::bulk(b"maxmemory".to_vec()),
                Reply::bulk(b"0".to_vec())
            ]))))
        );
        assert_eq!(parse("CONFIG GET nothing"), Ok(ClientRequest::Immediate(Reply::Array(Some(vec![])))));
    }

    // A name is matched upper-cased whatever its length (short ones on the stack, long ones not)
    // and shown lower-cased, as typed, in an arity error.
    #[test]
    fn command_names_match_in_any_case_and_length() {
        let get = read(Command::Get { cf: ColumnFamily::Default, key: b"k".to_vec() });
        assert_eq!(parse("gEt k"), Ok(get));
        assert_eq!(error_line("GeT"), "ERR wrong number of arguments for 'get' command");
        assert_eq!(error_line("SeTeX k 10"), "ERR wrong number of arguments for 'setex' command");
        assert_eq!(error_line("pExPiRe k"), "ERR wrong number of arguments for 'pexpire' command");
        assert_eq!(error_line("PSETEX k 0 v"), "ERR invalid expire time in 'psetex' command");
        for name in ["ABCDEFGHIJKLMNOP", "AbcdefghijklmnopQ", &"x".repeat(100)] {
            let expected = format!("ERR unknown command '{name}', with args beginning with: 'a' ");
            assert_eq!(error_line(&format!("{name} a")), expected);
        }
        let Ok(ClientRequest::Write { session, .. }) = parse("REQ 7 1 sEt k v") else { panic!("REQ set") };
        assert_eq!(session, Some(SessionTag { client_id: 7, seq: 1 }));
        assert_eq!(parse_client_request(Vec::new()), Err(RequestError::Empty));
    }

    #[test]
    fn errors_render_like_redis() {
        assert_eq!(error_line("FOO a b"), "ERR unknown command 'FOO', with args beginning with: 'a' 'b' ");
        assert_eq!(error_line("GET"), "ERR wrong number of arguments for 'get' command");
        assert_eq!(error_line("get a b"), "ERR wrong number of arguments for 'get' command");
        assert_eq!(error_line("RAWGET nope k"), "ERR unknown column family 'nope'");
        assert_eq!(error_line("RAWGET Default k"), "ERR unknown column family 'Default'");
        assert_eq!(error_line("RAWSCAN default a -1"), "ERR value is not an integer or out of range");
        assert_eq!(error_line("RAWSCAN default a 10001"), "ERR scan limit too large (max 10000 pairs)");
        assert_eq!(error_line("SELECT 1"), "ERR DB index is out of range");
        assert_eq!(error_line("SET k v EX 10 PX 5"), "ERR syntax error");
        assert_eq!(error_line("SET k v NX XX"), "ERR syntax error");
        assert_eq!(error_line("SET k v EX 0"), "ERR invalid expire time in 'set' command");
        assert_eq!(error_line("SET k v EX x"), "ERR value is not an integer or out of range");
        assert_eq!(error_line("SET k v EX 9223372036854775"), "ERR invalid expire time in 'set' command");
        assert_eq!(error_line("SETEX k -1 v"), "ERR invalid expire time in 'setex' command");
        assert_eq!(
            error_line("EXPIRE k 10 NX XX"),
            "ERR NX and XX, GT or LT options at the same time are not compatible"
        );
        assert_eq!(
            error_line("EXPIRE k 10 GT LT"),
            "ERR GT and LT options at the same time are not compatible"
        );
        assert_eq!(error_line("EXPIRE k 10 FOO"), "ERR Unsupported option FOO");
        assert_eq!(error_line("SETRANGE k -1 v"), "ERR offset is out of range");
        assert_eq!(error_line("INCRBYFLOAT k abc"), "ERR value is not a valid float");
        assert_eq!(error_line("DECRBY k -9223372036854775808"), "ERR decrement would overflow");
        assert_eq!(error_line("MSET a 1 b"), "ERR wrong number of arguments for 'mset' command");
        assert_eq!(error_line("SCAN x"), "ERR invalid cursor");
        assert_eq!(error_line("SCAN 0 COUNT 0"), "ERR syntax error");
        assert_eq!(error_line("GETEX k PERSIST EX 1"), "ERR syntax error");
        assert_eq!(
            error_line("SET k v EX 0 FOO"),
            "ERR syntax error",
            "options are read before values are judged"
        );
        assert_eq!(error_line("SELECT -1"), "ERR DB index is out of range");
        assert!(parse("SET k v EX 10 EX 20").is_ok(), "a repeated option: the last counts");
        assert!(parse("PEXPIRE k -9223372036854775808").is_ok(), "far in the past: expire now");
        assert_eq!(
            parse("CONFIG GET max*"),
            Ok(ClientRequest::Immediate(Reply::Array(Some(vec![
                Reply::bulk(b"maxmemory".to_vec()),
                Reply::bulk(b"0".to_vec()),
                Reply::bulk(b"maxmemory-policy".to_vec()),
                Reply::bulk(b"noeviction".to_vec()),
            ]))))
        );
        assert_eq!(error_line("CLIENT KILL x"), "ERR unknown subcommand 'KILL'. Try CLIENT HELP.");
        assert_eq!(parse_client_request(vec![]), Err(RequestError::Empty));
    }

    #[test]
    fn unknown_command_quotes_at_most_about_128_bytes() {
        let long = "x".repeat(300);
        let message = error_line(&format!("{long} {long} {long}"));
        assert!(message.len() < 400, "{message}");
    }

    #[test]
    fn key_and_value_limits() {
        let key = vec![b'k'; MAX_KEY_BYTES + 1];
        for args in [
            vec![b"GET".to_vec(), key.clone()],
            vec![b"SET".to_vec(), key.clone(), b"v".to_vec()],
            vec![b"DEL".to_vec(), b"ok".to_vec(), key.clone()],
            vec![b"RAWSCAN".to_vec(), b"default".to_vec(), key.clone(), b"1".to_vec()],
        ] {
            assert_eq!(parse_client_request(args), Err(RequestError::KeyTooLarge));
        }
        let fits = vec![b"GET".to_vec(), vec![b'k'; MAX_KEY_BYTES]];
        assert!(parse_client_request(fits).is_ok());
        let value = vec![b'v'; MAX_ARG_BYTES + 1];
        assert_eq!(
            parse_client_request(vec![b"SET".to_vec(), b"k".to_vec(), value]),
            Err(RequestError::ValueTooLarge)
        );
        assert_eq!(RequestError::KeyTooLarge.to_string(), "ERR key too large (max 65536 bytes)");
    }

    #[test]
    fn req_prefix_tags_writes_and_is_dropped_on_reads() {
        let tag = SessionTag { client_id: 8812, seq: 17 };
        assert_eq!(
            parse("REQ 8812 17 SET k v"),
            Ok(ClientRequest::Write {
                session: Some(tag),
                command: Command::Put { cf: ColumnFamily::Default, key: b"k".to_vec(), value: b"v".to_vec() }
            })
        );
        assert_eq!(
            parse("req 1 2 GET k"),
            Ok(read(Command::Get { cf: ColumnFamily::Default, key: b"k".to_vec() }))
        );
        assert_eq!(
            parse("REQ 18446744073709551615 0 DEL k"),
            Ok(ClientRequest::Write {
                session: Some(SessionTag { client_id: u64::MAX, seq: 0 }),
                command: Command::Delete { cf: ColumnFamily::Default, keys: vec![b"k".to_vec()] }
            })
        );
    }

    #[test]
    fn malformed_req_prefixes_are_refused() {
        for line in [
            "REQ",
            "REQ 1 2",
            "REQ x 2 SET k v",
            "REQ 1 -2 SET k v",
            "REQ 18446744073709551616 1 SET k v",
            "REQ 1 2 REQ 1 2 SET k v",
            "REQ 1 2 PING",
        ] {
            assert!(matches!(parse(line), Err(RequestError::Session(_))), "{line}");
        }
        assert_eq!(error_line("REQ 1 2 GET"), "ERR wrong number of arguments for 'get' command");
        assert_eq!(error_line("REQ 1 2 REQ 3 4 GET k"), "ERR REQ cannot be nested");
    }

    #[test]
    fn encoded_commands_parse_back() {
        let tag = Some(SessionTag { client_id: 3, seq: 9 });
        let commands = [
            Command::Get { cf: ColumnFamily::Default, key: b"k".to_vec() },
            Command::Get { cf: ColumnFamily::Lock, key: b"k".to_vec() },
            Command::Put { cf: ColumnFamily::Default, key: b"k".to_vec(), value: b"\x00\r\n".to_vec() },
            Command::Put { cf: ColumnFamily::Write, key: b"k".to_vec(), value: b"v".to_vec() },
            Command::Append { key: b"k".to_vec(), value: b"v".to_vec() },
            Command::Delete { cf: ColumnFamily::Default, keys: vec![b"a".to_vec(), b"b".to_vec()] },
            Command::Delete { cf: ColumnFamily::Lock, keys: vec![b"a".to_vec()] },
            Command::Exists { keys: vec![b"a".to_vec()] },
            Command::Scan { cf: ColumnFamily::Default, start: b"".to_vec(), limit: 5 },
        ];
        for command in commands {
            let args = encode_command(tag, &command).expect("encodable");
            let expected = if command.is_write() {
                ClientRequest::Write { session: tag, command: command.clone() }
            } else {
                ClientRequest::Read { command: command.clone() }
            };
            assert_eq!(parse_client_request(args), Ok(expected), "{command:?}");
        }
        let multi = Command::Delete { cf: ColumnFamily::Lock, keys: vec![b"a".to_vec(), b"b".to_vec()] };
        assert!(encode_command(None, &multi).is_err());
    }
}
