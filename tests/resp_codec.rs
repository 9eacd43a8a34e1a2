//! The RESP2 codec as a front end drives it: limits of PRODUCT.md, staying in sync after a refused
//! request, pipelining, incremental input, inline quoting, garbage, and round trips.

use proptest::collection::vec;
use proptest::prelude::*;
use quorumkv::protocol::request::{parse_client_request, RequestError, MAX_KEY_BYTES};
use quorumkv::protocol::resp::{
    encode_request, parse_reply, parse_request, split_inline_args, ParseOutcome, Reply, RequestParser,
    MAX_ARGS, MAX_ARG_BYTES, MAX_HEADER_BYTES, MAX_LINE_BYTES, MAX_MULTIBULK_LEN,
};

/// What a connection sees, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Request(Vec<Vec<u8>>),
    /// A `-ERR` reply on a kept connection.
    Error(String),
    /// A `-ERR` reply, then close.
    Fatal(String),
}

/// A connection's input side: its buffer, its parser and what it has seen.
#[derive(Default)]
struct Connection {
    parser: RequestParser,
    buffer: Vec<u8>,
    events: Vec<Event>,
    closed: bool,
    /// The largest the buffer has been after parsing.
    peak_buffer_bytes: usize,
}

impl Connection {
    /// Buffers `bytes` and parses every whole request, as the front end does after each read.
    fn receive(&mut self, bytes: &[u8]) {
        if self.closed {
            return;
        }
        self.buffer.extend_from_slice(bytes);
        loop {
            let consumed = match self.parser.parse(&self.buffer) {
                ParseOutcome::Incomplete => break,
                ParseOutcome::Request { args, consumed } => {
                    assert!(!args.is_empty());
                    self.events.push(Event::Request(args));
                    consumed
                }
                ParseOutcome::Skipped { consumed } => consumed,
                ParseOutcome::LimitError { message, consumed } => {
                    self.events.push(Event::Error(message));
                    consumed
                }
                ParseOutcome::Fatal(message) => {
                    self.events.push(Event::Fatal(message));
                    self.closed = true;
                    return;
                }
            };
            assert!(consumed > 0 && consumed <= self.buffer.len(), "consumed {consumed}");
            self.buffer.drain(..consumed);
        }
        self.peak_buffer_bytes = self.peak_buffer_bytes.max(self.buffer.len());
    }
}

fn events_of(stream: &[u8]) -> Vec<Event> {
    let mut connection = Connection::default();
    connection.receive(stream);
    connection.events
}

fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(args, &mut out);
    out
}

fn request(args: &[&[u8]]) -> Event {
    Event::Request(args.iter().map(|arg| arg.to_vec()).collect())
}

fn is_error(event: &Event, needle: &str) -> bool {
    matches!(event, Event::Error(message) if message.contains(needle))
}

fn is_fatal(event: &Event) -> bool {
    matches!(event, Event::Fatal(_))
}

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

// PRODUCT.md limits: "a request line over 64 KiB" — inline, newline already buffered.
#[test]
fn inline_line_over_64_kib_is_refused_and_the_connection_kept() {
    let mut stream = vec![b'a'; MAX_LINE_BYTES + 10];
    stream.extend_from_slice(b"\r\nGET k\r\n");
    let events = events_of(&stream);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(is_error(&events[0], "request line too long"));
    assert_eq!(events[1], request(&[b"GET", b"k"]));
}

// PRODUCT.md limits: a request line over 64 KiB whose newline is far away: refused at once, with the
// buffer bounded while the rest of the line streams in, and the next line served.
#[test]
fn unterminated_inline_line_is_refused_early_with_a_bounded_buffer() {
    let mut connection = Connection::default();
    let chunk = vec![b'a'; 4096];
    for _ in 0..256 {
        connection.receive(&chunk);
    }
    assert_eq!(connection.events.len(), 1);
    assert!(is_error(&connection.events[0], "request line too long"));
    assert!(
        connection.peak_buffer_bytes <= MAX_LINE_BYTES + 2 + chunk.len(),
        "{}",
        connection.peak_buffer_bytes
    );
    connection.receive(b"aaa\nPING\r\n");
    assert_eq!(connection.events[1..], [request(&[b"PING"])]);
    assert!(!connection.closed);
}

// A header line over 64 KiB (far past MAX_HEADER_BYTES) cannot be resynchronised: error, then close.
#[test]
fn header_line_over_64_kib_is_fatal() {
    let mut count = b"*1".to_vec();
    count.extend(vec![b'1'; MAX_LINE_BYTES + 2]);
    assert!(matches!(parse_request(&count), ParseOutcome::Fatal(_)));
    let mut bulk = b"*1\r\n$".to_vec();
    bulk.extend(vec![b'1'; MAX_LINE_BYTES + 2]);
    assert!(matches!(parse_request(&bulk), ParseOutcome::Fatal(_)));
}

// A header longer than any integer is garbage at once, not after 64 KiB of it has been buffered
// (and searched again at every read).
#[test]
fn a_header_longer_than_any_integer_is_fatal_without_waiting_for_its_end() {
    for prefix in [&b"*"[..], b"*1\r\n$"] {
        let mut connection = Connection::default();
        connection.receive(prefix);
        for _ in 0..MAX_HEADER_BYTES + 2 {
            assert!(connection.events.is_empty(), "{:?}", connection.events);
            connection.receive(b"1");
        }
        assert!(
            matches!(&connection.events[..], [Event::Fatal(m)] if m.contains("too big")),
            "{:?}",
            connection.events
        );
    }
    // The longest integer still fits.
    let header = format!("*1\r\n${}\r\n", i64::MIN);
    assert!(header.len() - b"*1\r\n$\r\n".len() <= MAX_HEADER_BYTES);
    assert!(is_error(&events_of(header.as_bytes())[0], "negative"));
}

// An inline line arriving a byte at a time is found whole, at its newline, whatever came before.
#[test]
fn an_inline_line_arriving_a_byte_at_a_time_parses_as_whole() {
    let mut connection = Connection::default();
    for &byte in b"SET k v\r\nGET k\nPING\r\n".iter() {
        connection.receive(&[byte]);
    }
    assert_eq!(
        connection.events,
        [request(&[b"SET", b"k", b"v"]), request(&[b"GET", b"k"]), request(&[b"PING"])]
    );
}

// PRODUCT.md limits: a negative bulk length is an error on a kept connection (a nil has no payload).
#[test]
fn negative_bulk_length_is_refused_and_the_connection_kept() {
    let mut stream = b"*3\r\n$3\r\nSET\r\n$-1\r\n$1\r\nv\r\n".to_vec();
    stream.extend_from_slice(PING);
    let events = events_of(&stream);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(is_error(&events[0], "invalid bulk length"));
    assert_eq!(events[1], request(&[b"PING"]));
    let events = events_of(b"*1\r\n$-5\r\nPING\r\n");
    assert!(is_error(&events[0], "invalid bulk length"));
    assert_eq!(events[1], request(&[b"PING"]));
}

// PRODUCT.md limits: "a bulk length that is negative or over the limit" is a clear error and a kept
// connection, however large the length: the payload is dropped as it streams in, never buffered.
#[test]
fn huge_bulk_length_is_refused_and_the_connection_kept_with_a_bounded_buffer() {
    let declared: u64 = 1 << 40;
    let mut connection = Connection::default();
    connection.receive(format!("*3\r\n$3\r\nSET\r\n${declared}\r\n").as_bytes());
    assert_eq!(connection.events.len(), 1, "answered at the header: {:?}", connection.events);
    assert!(is_error(&connection.events[0], "value too large"), "{:?}", connection.events);
    // 64 MiB of the payload, in 64 KiB reads: dropped as it comes.
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..1024 {
        connection.receive(&chunk);
    }
    assert!(connection.peak_buffer_bytes <= chunk.len(), "{}", connection.peak_buffer_bytes);
    assert!(!connection.closed);
    // A length that is not even a 64-bit integer cannot be skipped: close.
    let events = events_of(b"*1\r\n$99999999999999999999999\r\n");
    assert!(is_fatal(&events[0]));
}

// The rest of a refused request (its payload, then its remaining elements) is dropped exactly, so the
// next request is served, however the stream is cut into reads.
#[test]
fn the_rest_of_a_refused_request_is_dropped_exactly_at_every_split() {
    let big = vec![b'v'; MAX_ARG_BYTES + 3];
    let mut stream = multibulk(&[&b"SET"[..], b"k", &big, b"tail", b""]);
    stream.extend_from_slice(&multibulk(&[&b"GET"[..], b"k"]));
    for read in [1usize, 7, 4096, 65536, 1 << 20, stream.len()] {
        let mut connection = Connection::default();
        for part in stream.chunks(read) {
            connection.receive(part);
        }
        assert_eq!(connection.events.len(), 2, "reads of {read}: {:?}", connection.events);
        assert!(is_error(&connection.events[0], "value too large"));
        assert_eq!(connection.events[1], request(&[b"GET", b"k"]));
        assert!(
            connection.peak_buffer_bytes <= read.max(64),
            "reads of {read}: {}",
            connection.peak_buffer_bytes
        );
    }
}

// PRODUCT.md limits: a value over 16 MiB: refused at its header, the rest dropped, the connection kept.
#[test]
fn value_over_16_mib_is_refused_and_the_connection_kept() {
    let value = vec![b'v'; MAX_ARG_BYTES + 1];
    let mut stream = multibulk(&[b"SET", b"k", &value]);
    stream.extend_from_slice(PING);
    let mut connection = Connection::default();
    let (head, tail) = stream.split_at(1024 * 1024);
    connection.receive(head);
    assert_eq!(connection.events.len(), 1, "refused at the header");
    assert!(is_error(&connection.events[0], "value too large"));
    connection.receive(tail);
    assert_eq!(connection.events.len(), 2);
    assert_eq!(connection.events[1], request(&[b"PING"]));
    assert!(connection.peak_buffer_bytes <= 1024 * 1024, "{}", connection.peak_buffer_bytes);
    // Exactly 16 MiB is accepted.
    let fits = vec![b'v'; MAX_ARG_BYTES];
    let events = events_of(&multibulk(&[b"SET", b"k", &fits]));
    assert!(matches!(&events[..], [Event::Request(args)] if args[2].len() == MAX_ARG_BYTES));
}

/// Counts the bytes this thread allocates, so a test can measure a parser's work without a clock.
struct CountingAllocator;

thread_local! {
    static ALLOCATED_BYTES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCATED_BYTES.try_with(|n| n.set(n.get() + layout.size() as u64));
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

// Parsing is linear in the bytes received: a 62.5 MiB request of 1,000 keys of 64 KiB, fed in 64 KiB
// reads, copies each argument once. (A parser that re-copied the arguments parsed so far on every read
// allocated ~32 GB here and took tens of seconds of CPU.)
#[test]
fn a_large_request_arriving_in_small_reads_is_copied_once() {
    let key = vec![b'k'; 64 * 1024];
    let mut args: Vec<&[u8]> = vec![b"EXISTS"];
    args.extend(std::iter::repeat_n(&key[..], 1000));
    let stream = multibulk(&args);
    let mut connection = Connection { buffer: Vec::with_capacity(stream.len()), ..Connection::default() };
    let before = ALLOCATED_BYTES.with(|n| n.get());
    for part in stream.chunks(64 * 1024) {
        connection.receive(part);
    }
    let allocated = ALLOCATED_BYTES.with(|n| n.get()) - before;
    assert!(matches!(&connection.events[..], [Event::Request(got)] if got.len() == 1001));
    assert!(
        allocated < 2 * stream.len() as u64,
        "{allocated} bytes allocated for a {}-byte request",
        stream.len()
    );
}

// PRODUCT.md limits: more than 1,024 arguments, counted like Redis's argc (the name included).
#[test]
fn more_than_1024_arguments_are_refused_and_the_connection_kept() {
    let mut args: Vec<&[u8]> = vec![b"DEL"];
    args.extend(std::iter::repeat_n(&b"k"[..], MAX_ARGS - 1));
    let events = events_of(&multibulk(&args));
    assert!(matches!(&events[..], [Event::Request(got)] if got.len() == MAX_ARGS));
    args.push(b"k");
    let mut stream = multibulk(&args);
    stream.extend_from_slice(PING);
    let events = events_of(&stream);
    assert_eq!(events.len(), 2);
    assert!(is_error(&events[0], "too many arguments"));
    assert_eq!(events[1], request(&[b"PING"]));
    // Inline too.
    let mut line = "DEL".to_string();
    line.push_str(&" k".repeat(MAX_ARGS));
    line.push_str("\r\nPING\r\n");
    let events = events_of(line.as_bytes());
    assert!(is_error(&events[0], "too many arguments"));
    assert_eq!(events[1], request(&[b"PING"]));
    // Far more, declared up front: refused the same way, its elements dropped as they come.
    let mut stream = format!("*{}\r\n", 20_000).into_bytes();
    stream.extend(b"$1\r\nk\r\n".repeat(20_000));
    stream.extend_from_slice(PING);
    let events = events_of(&stream);
    assert!(is_error(&events[0], "too many arguments"), "{:?}", events[0]);
    assert_eq!(events.last(), Some(&request(&[b"PING"])));
    // Beyond what the parser will read past (Redis's bound too): close.
    let events = events_of(format!("*{}\r\n", MAX_MULTIBULK_LEN + 1).as_bytes());
    assert!(is_fatal(&events[0]));
}

// PRODUCT.md limits: a key over 64 KiB (request.rs knows which argument is a key).
#[test]
fn key_over_64_kib_is_refused_and_the_connection_kept() {
    let key = vec![b'k'; MAX_KEY_BYTES + 1];
    let mut stream = multibulk(&[b"GET", &key]);
    stream.extend_from_slice(PING);
    let events = events_of(&stream);
    let Event::Request(args) = events[0].clone() else { panic!("{:?}", events[0]) };
    let refusal = parse_client_request(args).expect_err("key too large");
    assert_eq!(refusal, RequestError::KeyTooLarge);
    assert_eq!(refusal.to_reply().to_bytes(), b"-ERR key too large (max 65536 bytes)\r\n".to_vec());
    assert_eq!(events[1], request(&[b"PING"]));
}

#[test]
fn pipelined_requests_parse_in_order() {
    let mut stream = multibulk(&[b"SET", b"a", b"1"]);
    stream.extend_from_slice(b"GET a\r\n\r\nPING\n");
    stream.extend_from_slice(&multibulk(&[b"DEL", b"a", b"b"]));
    stream.extend_from_slice(b"*0\r\nECHO \"x y\"\r\n");
    assert_eq!(
        events_of(&stream),
        [
            request(&[b"SET", b"a", b"1"]),
            request(&[b"GET", b"a"]),
            request(&[b"PING"]),
            request(&[b"DEL", b"a", b"b"]),
            request(&[b"ECHO", b"x y"]),
        ]
    );
}

/// A stream mixing every kind of input, including refusals that keep the connection.
fn mixed_stream() -> Vec<u8> {
    let mut stream = multibulk(&[b"SET", b"k\r\n", b"\x00\xff"]);
    stream.extend_from_slice(b"  GET \"a\\x41\" \r\n\n");
    stream.extend_from_slice(b"*2\r\n$-1\r\n$1\r\nz\r\n");
    stream.extend_from_slice(b"SET 'unbalanced\r\n");
    stream.extend_from_slice(&multibulk(&[b"EXISTS", b"", b"b"]));
    stream.extend_from_slice(b"*0\r\nPING\n");
    stream
}

#[test]
fn a_request_split_at_every_byte_boundary_parses_the_same_as_whole() {
    let stream = mixed_stream();
    let whole = events_of(&stream);
    assert_eq!(whole.len(), 6, "{whole:?}");
    for split in 0..=stream.len() {
        let mut connection = Connection::default();
        connection.receive(&stream[..split]);
        connection.receive(&stream[split..]);
        assert_eq!(connection.events, whole, "split at {split}");
    }
    let mut connection = Connection::default();
    for byte in &stream {
        connection.receive(std::slice::from_ref(byte));
    }
    assert_eq!(connection.events, whole, "one byte at a time");
}

#[test]
fn inline_quoting_follows_redis_cli() {
    let cases: &[(&str, &[&[u8]])] = &[
        (r#"SET "a b" 'c d'"#, &[b"SET", b"a b", b"c d"]),
        (r#"SET k "\x00\xfe\x41""#, &[b"SET", b"k", b"\x00\xfeA"]),
        (r#"SET k "line\nnext\t\"q\"\\""#, &[b"SET", b"k", b"line\nnext\t\"q\"\\"]),
        (r"SET k 'it\'s \n'", &[b"SET", b"k", b"it's \\n"]),
        (r#"SET k """#, &[b"SET", b"k", b""]),
    ];
    for (line, expected) in cases {
        let expected: Vec<Vec<u8>> = expected.iter().map(|arg| arg.to_vec()).collect();
        assert_eq!(split_inline_args(line.as_bytes()), Ok(expected.clone()), "{line}");
        let events = events_of(format!("{line}\r\n").as_bytes());
        assert_eq!(events, [Event::Request(expected)], "{line}");
    }
    for unbalanced in [r#"SET "k v"#, "SET 'k", r#"SET "k"v"#, "SET 'k'v"] {
        assert!(split_inline_args(unbalanced.as_bytes()).is_err(), "{unbalanced}");
        let events = events_of(format!("{unbalanced}\r\nPING\r\n").as_bytes());
        assert!(is_error(&events[0], "unbalanced quotes"), "{events:?}");
        assert_eq!(events[1], request(&[b"PING"]));
    }
}

#[test]
fn garbage_is_fatal() {
    for garbage in [
        &b"*abc\r\n"[..],
        b"*2\r\n+OK\r\n",
        b"*1\r\n$3\r\nabcdef\r\n",
        b"*1\r\n$-\r\n",
        b"*1\n$4\nPING\n",
        b"*1\r\n$4 \r\nPING\r\n",
    ] {
        let events = events_of(garbage);
        assert!(matches!(&events[..], [Event::Fatal(_)]), "{garbage:?}: {events:?}");
    }
}

#[test]
fn replies_round_trip_through_encode_and_parse() {
    let reply = Reply::Array(Some(vec![
        Reply::ok(),
        Reply::Error("NOTLEADER 127.0.0.1:6381".into()),
        Reply::Integer(i64::MIN),
        Reply::Bulk(Some(b"\r\n\x00".to_vec())),
        Reply::Bulk(None),
        Reply::Array(None),
        Reply::Array(Some(vec![])),
    ]));
    let mut bytes = reply.to_bytes();
    let len = bytes.len();
    bytes.extend_from_slice(b"+PONG\r\n");
    assert_eq!(parse_reply(&bytes), Ok(Some((reply, len))));
    for cut in 0..len {
        assert_eq!(parse_reply(&bytes[..cut]), Ok(None), "cut at {cut}");
    }
}

fn reply_strategy() -> impl Strategy<Value = Reply> {
    let leaf = prop_oneof![
        "[a-zA-Z0-9 ]{0,16}".prop_map(Reply::Simple),
        "[A-Z]{1,8} [a-z ]{0,16}".prop_map(Reply::Error),
        any::<i64>().prop_map(Reply::Integer),
        proptest::option::of(vec(any::<u8>(), 0..32)).prop_map(Reply::Bulk),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| proptest::option::of(vec(inner, 0..6)).prop_map(Reply::Array))
}

/// Byte strings built from RESP fragments, so random input reaches deep into the parsers.
fn resp_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        Just(b"*".to_vec()),
        Just(b"$".to_vec()),
        Just(b"+".to_vec()),
        Just(b"-".to_vec()),
        Just(b":".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"2".to_vec()),
        Just(b"3".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"'".to_vec()),
        Just(b"\\x4".to_vec()),
        Just(b" ".to_vec()),
        Just(b"abc".to_vec()),
        vec(any::<u8>(), 0..4),
    ];
    vec(fragment, 0..40).prop_map(|fragments| fragments.concat())
}

proptest! {
    #[test]
    fn multibulk_encoding_of_any_args_parses_back(args in vec(vec(any::<u8>(), 0..64), 1..16)) {
        let mut bytes = Vec::new();
        encode_request(&args, &mut bytes);
        prop_assert_eq!(parse_request(&bytes), ParseOutcome::Request { args: args.clone(), consumed: bytes.len() });
        for cut in 0..bytes.len() {
            prop_assert_eq!(parse_request(&bytes[..cut]), ParseOutcome::Incomplete);
        }
    }

    #[test]
    fn random_bytes_never_panic_the_request_parsers(bytes in prop_oneof![vec(any::<u8>(), 0..256), resp_like_bytes()]) {
        let mut connection = Connection::default();
        connection.receive(&bytes);
        let _ = parse_request(&bytes);
        let _ = split_inline_args(&bytes);
        if let ParseOutcome::Request { args, .. } = parse_request(&bytes) {
            let _ = parse_client_request(args);
        }
    }

    #[test]
    fn random_bytes_never_panic_the_reply_parser(bytes in prop_oneof![vec(any::<u8>(), 0..256), resp_like_bytes()]) {
        if let Ok(Some((_, consumed))) = parse_reply(&bytes) {
            prop_assert!(consumed <= bytes.len());
        }
    }

    #[test]
    fn any_reply_round_trips(reply in reply_strategy()) {
        let bytes = reply.to_bytes();
        prop_assert_eq!(parse_reply(&bytes), Ok(Some((reply, bytes.len()))));
    }

    #[test]
    fn any_args_survive_the_front_end_split_anywhere(
        requests in vec(vec(vec(any::<u8>(), 0..16), 1..4), 1..4),
        split in any::<prop::sample::Index>(),
    ) {
        let mut stream = Vec::new();
        for args in &requests {
            encode_request(args, &mut stream);
        }
        let at = split.index(stream.len() + 1);
        let mut connection = Connection::default();
        connection.receive(&stream[..at]);
        connection.receive(&stream[at..]);
        let expected: Vec<Event> = requests.into_iter().map(Event::Request).collect();
        prop_assert_eq!(connection.events, expected);
    }
}
