//! A scripted fake quorumkv server for the client and CLI tests, until the real server lands: it
//! listens on 127.0.0.1 port 0, parses requests with the crate's RESP parser, logs them, and answers
//! each with what a test's script says. Other test files include it with `#[path]`; built alone, it
//! checks itself.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use quorumkv::protocol::resp::{parse_request, ParseOutcome, Reply};

/// What the fake does with one request.
pub enum Action {
    /// Write this reply.
    Reply(Reply),
    /// Close the connection without replying (a crash between receiving and answering).
    Close,
}

type Script = Box<dyn FnMut(&[Vec<u8>]) -> Action + Send>;

/// A fake server running on its own threads until the test process ends.
pub struct FakeServer {
    /// `127.0.0.1:port`.
    pub addr: String,
    /// Every request received, in arrival order, `REQ` prefix included.
    requests: Arc<Mutex<Vec<Vec<Vec<u8>>>>>,
}

impl FakeServer {
    /// Starts a server whose script decides every answer (connections share the script).
    pub fn start(script: impl FnMut(&[Vec<u8>]) -> Action + Send + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr").to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Mutex<Script>> = Arc::new(Mutex::new(Box::new(script)));
        let log = Arc::clone(&requests);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (log, script) = (Arc::clone(&log), Arc::clone(&script));
                thread::spawn(move || serve(stream, &log, &script));
            }
        });
        FakeServer { addr, requests }
    }

    /// Starts a server that answers every request with `answer(args)`.
    pub fn replying(mut answer: impl FnMut(&[Vec<u8>]) -> Reply + Send + 'static) -> FakeServer {
        FakeServer::start(move |args| Action::Reply(answer(args)))
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Vec<Vec<u8>>> {
        self.requests.lock().expect("request log").clone()
    }

    /// How many requests arrived so far.
    pub fn request_count(&self) -> usize {
        self.requests.lock().expect("request log").len()
    }
}

/// Serves one connection: each request is logged before it is answered, so a client that has its
/// reply can rely on the log holding the request.
fn serve(mut stream: TcpStream, log: &Mutex<Vec<Vec<Vec<u8>>>>, script: &Mutex<Script>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match parse_request(&buffer) {
            ParseOutcome::Request { args, consumed } => {
                buffer.drain(..consumed);
                log.lock().expect("request log").push(args.clone());
                let action = (script.lock().expect("script"))(&args);
                match action {
                    Action::Reply(reply) => {
                        if stream.write_all(&reply.to_bytes()).is_err() {
                            return;
                        }
                    }
                    Action::Close => return,
                }
            }
            ParseOutcome::Skipped { consumed } | ParseOutcome::LimitError { consumed, .. } => {
                buffer.drain(..consumed);
            }
            ParseOutcome::Fatal(_) => return,
            ParseOutcome::Incomplete => match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            },
        }
    }
}

/// An address with nothing listening: a listener bound to port 0 and dropped.
pub fn dead_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").to_string()
}

/// Arguments from a space-separated line (test shorthand).
pub fn args(line: &str) -> Vec<Vec<u8>> {
    line.split(' ').map(|word| word.as_bytes().to_vec()).collect()
}

/// A request's `REQ client-id seq` tag, if it has one.
pub fn session(request: &[Vec<u8>]) -> Option<(u64, u64)> {
    match request {
        [req, id, seq, ..] if req.eq_ignore_ascii_case(b"REQ") => {
            let number = |bytes: &[u8]| String::from_utf8_lossy(bytes).parse::<u64>().ok();
            Some((number(id)?, number(seq)?))
        }
        _ => None,
    }
}

/// A request without its `REQ` tag.
pub fn command(request: &[Vec<u8>]) -> &[Vec<u8>] {
    if session(request).is_some() {
        &request[3..]
    } else {
        request
    }
}

/// A script that behaves like a one-replica leader for GET, SET, APPEND, DEL, EXISTS and PING,
/// ignoring sessions, and answers anything else with `-ERR unknown command`.
pub fn kv_store() -> impl FnMut(&[Vec<u8>]) -> Reply + Send + 'static {
    let mut data: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    move |request| {
        let command = command(request);
        let name = command[0].to_ascii_uppercase();
        match (name.as_slice(), &command[1..]) {
            (b"PING", []) => Reply::Simple("PONG".into()),
            (b"GET", [key]) => Reply::Bulk(data.get(key).cloned()),
            (b"SET", [key, value]) => {
                data.insert(key.clone(), value.clone());
                Reply::ok()
            }
            (b"APPEND", [key, value]) => {
                let entry = data.entry(key.clone()).or_default();
                entry.extend_from_slice(value);
                Reply::Integer(entry.len() as i64)
            }
            (b"DEL", keys) => {
                Reply::Integer(keys.iter().filter(|key| data.remove(*key).is_some()).count() as i64)
            }
            (b"EXISTS", keys) => {
                Reply::Integer(keys.iter().filter(|key| data.contains_key(*key)).count() as i64)
            }
            _ => Reply::err(format!("unknown command '{}'", String::from_utf8_lossy(&command[0]))),
        }
    }
}

#[test]
fn fake_server_logs_and_answers_in_order() {
    use quorumkv::protocol::resp::{encode_request, parse_reply};
    let server = FakeServer::replying(kv_store());
    let mut stream = TcpStream::connect(&server.addr).expect("connect to the fake");
    let mut request = Vec::new();
    encode_request(&args("REQ 5 1 SET k v"), &mut request);
    encode_request(&args("GET k"), &mut request);
    stream.write_all(&request).expect("send");
    let mut buffer = Vec::new();
    let mut replies = Vec::new();
    let mut chunk = [0u8; 1024];
    while replies.len() < 2 {
        match parse_reply(&buffer).expect("valid replies") {
            Some((reply, used)) => {
                buffer.drain(..used);
                replies.push(reply);
            }
            None => {
                let read = stream.read(&mut chunk).expect("read");
                assert_ne!(read, 0, "the fake closed early");
                buffer.extend_from_slice(&chunk[..read]);
            }
        }
    }
    assert_eq!(replies, vec![Reply::ok(), Reply::bulk(b"v".to_vec())]);
    let requests = server.requests();
    assert_eq!(requests, vec![args("REQ 5 1 SET k v"), args("GET k")]);
    assert_eq!(session(&requests[0]), Some((5, 1)));
    assert_eq!(command(&requests[0]), args("SET k v").as_slice());
}
