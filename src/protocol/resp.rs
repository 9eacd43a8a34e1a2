//! RESP2, the Redis protocol: the request parser, the reply type with its encoder and parser, and a
//! redis-cli style reply formatter.
//!
//! # Requests
//!
//! A request is either a multibulk array (`*N\r\n$len\r\nbytes\r\n...`) or an inline command (a line
//! ending in CRLF or LF alone, split by [`split_inline_args`] with redis-cli's quoting rules). A buffer
//! whose first byte is `*` is a multibulk; anything else is inline, as in Redis.
//!
//! The parser works on the bytes buffered so far and never allocates from an untrusted length: a bulk
//! length only decides how many buffered bytes to look at, and arguments are copied once present.
//!
//! # Limits and staying in sync
//!
//! Each limit is answered so that the connection is kept whenever the parser can tell where the
//! offending request ends ([`ParseOutcome::LimitError`]: reply `-ERR message`, drop `consumed` bytes,
//! go on), and closed only when it cannot ([`ParseOutcome::Fatal`]). A request is refused as soon as
//! its offending part is seen; a [`RequestParser`] then drops the rest of it as it streams in
//! ([`ParseOutcome::Skipped`]), so nothing oversized is ever buffered:
//!
//! - An inline line over [`MAX_LINE_BYTES`]: `LimitError` as soon as it passes the limit; the rest of
//!   the line, up to and including its newline, is dropped.
//! - A multibulk header line (`*N` or `$len`) over [`MAX_HEADER_BYTES`] (no integer needs more),
//!   not CRLF-terminated, or not an integer: `Fatal` (the array structure is lost).
//! - A negative bulk length, a bulk length over [`MAX_ARG_BYTES`], a multibulk whose declared size
//!   passes [`MAX_REQUEST_BYTES`], or more than [`MAX_ARGS`] arguments (the command name and a `REQ`
//!   prefix count): `LimitError`, then the rest of the request's elements are dropped unread.
//! - More than [`MAX_MULTIBULK_LEN`] elements: `Fatal`.
//! - Unbalanced quotes in an inline line: `LimitError` covering the line.
//!
//! A blank inline line and an empty multibulk (`*0`, `*-1`) are skipped without a reply.
//!
//! Work stays linear in the bytes received: a multibulk still arriving is resumed where the last call
//! stopped (its parsed elements are remembered as ranges of the buffer), a payload still arriving is
//! not looked at again until the buffer can hold it, an inline line still arriving is searched for
//! its newline only in the bytes new since the last call, a header is never longer than
//! [`MAX_HEADER_BYTES`], and arguments are copied once, when the whole request is there.

use std::fmt::Write as _;

use super::command::CommandResult;

/// Longest inline request line, in bytes, not counting CRLF.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Longest multibulk header (`*N` or `$len`) after its type byte, not counting CRLF: room for any
/// 64-bit integer, so a longer one is garbage, found without waiting for 64 KiB of it.
pub const MAX_HEADER_BYTES: usize = 32;
/// Largest single argument (a value, key or name), in bytes.
pub const MAX_ARG_BYTES: usize = 16 * 1024 * 1024;
/// Most arguments in one request, the command name (and any `REQ` prefix) included.
pub const MAX_ARGS: usize = 1024;
/// Most elements of a multibulk the parser will drop, as they arrive, in order to answer with
/// `-ERR` and keep the connection; more closes the connection (Redis's own bound, `INT_MAX`).
pub const MAX_MULTIBULK_LEN: usize = i32::MAX as usize;
/// Largest declared size of one multibulk request, headers included, in bytes; a larger one is
/// refused. Fits [`MAX_ARGS`] keys of 64 KiB.
pub const MAX_REQUEST_BYTES: usize = 80 * 1024 * 1024;
/// Longest status, error or integer line in a reply, in bytes.
pub const MAX_REPLY_LINE_BYTES: usize = 64 * 1024;
/// Largest bulk string in a reply, in bytes.
pub const MAX_REPLY_BULK_BYTES: usize = 512 * 1024 * 1024;
/// Most elements of one reply array.
pub const MAX_REPLY_ARRAY_LEN: usize = 1024 * 1024;
/// Deepest nesting of reply arrays.
pub const MAX_REPLY_DEPTH: usize = 32;

/// What [`parse_request`] or [`RequestParser::parse`] found at the start of the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseOutcome {
    /// No whole request yet: keep the bytes and call again when more arrive.
    Incomplete,
    /// One request: its arguments (never empty) and how many bytes it took.
    Request {
        /// The arguments, command name first.
        args: Vec<Vec<u8>>,
        /// Bytes of the buffer this request took.
        consumed: usize,
    },
    /// Bytes to drop without a reply (blank lines, empty arrays, the rest of a line already refused).
    Skipped {
        /// Bytes of the buffer to drop.
        consumed: usize,
    },
    /// A request broke a limit or was malformed but the stream is still in sync: reply
    /// `-ERR message`, drop `consumed` bytes and go on.
    LimitError {
        /// The error text without the `ERR` code.
        message: String,
        /// Bytes of the buffer to drop (never more than the buffer holds).
        consumed: usize,
    },
    /// Bytes that cannot be parsed: reply `-ERR message` and close the connection.
    Fatal(String),
}

/// Parses the first request in `buf` with a fresh [`RequestParser`].
///
/// Meant for a buffer that starts at a request boundary and is looked at once. A stream needs one
/// `RequestParser` for its whole life: the rest of a refused request (an over-long line, an oversized
/// bulk) is dropped by the parser as it arrives, which a fresh parser cannot know.
pub fn parse_request(buf: &[u8]) -> ParseOutcome {
    RequestParser::new().parse(buf)
}

/// An incremental request parser: resumes a multibulk where the last call stopped, and drops the rest
/// of a refused request as it streams in, so the work per byte and the bytes buffered stay bounded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestParser {
    state: ParserState,
    /// Bytes at the start of the buffer known to hold no newline, while an inline line arrives
    /// (the buffer's front does not change until something is consumed).
    inline_scanned: usize,
}

/// What the parser knows about the bytes at the start of the next call's buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum ParserState {
    /// At a request boundary.
    #[default]
    Start,
    /// A multibulk is arriving; its elements before `pos` are parsed.
    Multibulk(Partial),
    /// An over-long line was refused before its newline arrived: bytes up to and including the next
    /// newline belong to it and are dropped.
    DiscardingLine,
    /// A multibulk was refused before its end: `payload_left` bytes (a payload and its CRLF), then
    /// `elements_left` more elements, belong to it and are dropped.
    Skipping {
        /// Bytes of the current element still to drop.
        payload_left: u64,
        /// Whole elements after it still to drop.
        elements_left: usize,
    },
}

/// A multibulk request parsed up to `pos` (the caller's buffer only grows between calls).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Partial {
    /// Elements the header declared.
    count: usize,
    /// Where the next element's `$` header starts.
    pos: usize,
    /// The payloads parsed so far, as ranges of the buffer.
    args: Vec<std::ops::Range<usize>>,
    /// The buffer cannot hold the next element before it is this long.
    wait_for_bytes: usize,
}

impl RequestParser {
    /// A parser at the start of a stream.
    pub fn new() -> RequestParser {
        RequestParser::default()
    }

    /// Parses the first request in `buf`, the bytes buffered after everything consumed so far.
    ///
    /// Between calls the caller may only append to the buffer or drop the bytes an outcome consumed.
    pub fn parse(&mut self, buf: &[u8]) -> ParseOutcome {
        match std::mem::take(&mut self.state) {
            ParserState::Start => self.parse_start(buf),
            ParserState::Multibulk(partial) => self.parse_multibulk(buf, partial),
            ParserState::DiscardingLine => match buf.iter().position(|&b| b == b'\n') {
                Some(newline) => ParseOutcome::Skipped { consumed: newline + 1 },
                None if buf.is_empty() => {
                    self.state = ParserState::DiscardingLine;
                    ParseOutcome::Incomplete
                }
                None => {
                    self.state = ParserState::DiscardingLine;
                    ParseOutcome::Skipped { consumed: buf.len() }
                }
            },
            ParserState::Skipping { payload_left, elements_left } => {
                self.skip(buf, payload_left, elements_left)
            }
        }
    }

    fn parse_start(&mut self, buf: &[u8]) -> ParseOutcome {
        match buf.first() {
            None => ParseOutcome::Incomplete,
            Some(b'*') => {
                let (count, pos) = match read_header(buf, 1, "multibulk") {
                    Ok(Some(header)) => header,
                    Ok(None) => return ParseOutcome::Incomplete,
                    Err(message) => return ParseOutcome::Fatal(message),
                };
                if count <= 0 {
                    return ParseOutcome::Skipped { consumed: pos };
                }
                let count = match usize::try_from(count) {
                    Ok(count) if count <= MAX_MULTIBULK_LEN => count,
                    _ => return ParseOutcome::Fatal("Protocol error: invalid multibulk length".to_string()),
                };
                if count > MAX_ARGS {
                    return self.refuse(too_many_args_message(), pos, 0, count);
                }
                let partial = Partial { count, pos, args: Vec::with_capacity(count), wait_for_bytes: 0 };
                self.parse_multibulk(buf, partial)
            }
            Some(_) => self.parse_inline(buf),
        }
    }

    /// Answers `-ERR message` for the request whose first `consumed` bytes are buffered, and drops
    /// the rest of it (`payload_left` bytes, then `elements_left` elements) as it arrives.
    fn refuse(
        &mut self,
        message: String,
        consumed: usize,
        payload_left: u64,
        elements_left: usize,
    ) -> ParseOutcome {
        self.skip_rest(payload_left, elements_left);
        ParseOutcome::LimitError { message, consumed }
    }

    /// Drops `payload_left` bytes, then `elements_left` elements, from the next calls on (if any).
    fn skip_rest(&mut self, payload_left: u64, elements_left: usize) {
        if payload_left > 0 || elements_left > 0 {
            self.state = ParserState::Skipping { payload_left, elements_left };
        }
    }

    fn parse_multibulk(&mut self, buf: &[u8], mut partial: Partial) -> ParseOutcome {
        if buf.len() < partial.wait_for_bytes {
            self.state = ParserState::Multibulk(partial);
            return ParseOutcome::Incomplete;
        }
        while partial.args.len() < partial.count {
            let elements_after = partial.count - partial.args.len() - 1;
            let (len, data_start) = match read_bulk_header(buf, partial.pos) {
                Ok(Some(header)) => header,
                Ok(None) => {
                    self.state = ParserState::Multibulk(partial);
                    return ParseOutcome::Incomplete;
                }
                Err(message) => return ParseOutcome::Fatal(message),
            };
            let Ok(len) = u64::try_from(len) else {
                // A nil carries no payload, so the request's end stays known.
                let message = "Protocol error: invalid bulk length (negative)".to_string();
                return self.refuse(message, data_start, 0, elements_after);
            };
            if len > MAX_ARG_BYTES as u64 {
                let message = format!("value too large (max {MAX_ARG_BYTES} bytes)");
                return self.refuse(message, data_start, len + 2, elements_after);
            }
            let data_end = data_start + len as usize;
            if data_end + 2 > MAX_REQUEST_BYTES {
                let message = format!("request too large (max {MAX_REQUEST_BYTES} bytes)");
                return self.refuse(message, data_start, len + 2, elements_after);
            }
            if buf.len() < data_end + 2 {
                partial.wait_for_bytes = data_end + 2;
                self.state = ParserState::Multibulk(partial);
                return ParseOutcome::Incomplete;
            }
            if &buf[data_end..data_end + 2] != b"\r\n" {
                return ParseOutcome::Fatal("Protocol error: bulk string not terminated by CRLF".to_string());
            }
            partial.args.push(data_start..data_end);
            partial.pos = data_end + 2;
        }
        // Copied only now that the whole request is here, so each byte is copied once.
        let args = partial.args.iter().map(|range| buf[range.clone()].to_vec()).collect();
        ParseOutcome::Request { args, consumed: partial.pos }
    }

    /// Drops the rest of a refused multibulk: its current payload, then whole elements.
    fn skip(&mut self, buf: &[u8], payload_left: u64, elements_left: usize) -> ParseOutcome {
        if buf.is_empty() {
            self.state = ParserState::Skipping { payload_left, elements_left };
            return ParseOutcome::Incomplete;
        }
        if payload_left > 0 {
            let dropped = usize::try_from(payload_left).map_or(buf.len(), |left| left.min(buf.len()));
            self.skip_rest(payload_left - dropped as u64, elements_left);
            return ParseOutcome::Skipped { consumed: dropped };
        }
        match read_bulk_header(buf, 0) {
            Ok(None) => {
                self.state = ParserState::Skipping { payload_left, elements_left };
                ParseOutcome::Incomplete
            }
            Err(message) => ParseOutcome::Fatal(message),
            Ok(Some((len, end))) => {
                let payload_left = u64::try_from(len).map_or(0, |len| len + 2);
                self.skip_rest(payload_left, elements_left.saturating_sub(1));
                ParseOutcome::Skipped { consumed: end }
            }
        }
    }

    fn parse_inline(&mut self, buf: &[u8]) -> ParseOutcome {
        let newline = match find_line_end(buf, 0, MAX_LINE_BYTES, std::mem::take(&mut self.inline_scanned)) {
            LineEnd::Found(newline) => newline,
            LineEnd::Incomplete => {
                self.inline_scanned = buf.len();
                return ParseOutcome::Incomplete;
            }
            LineEnd::TooLong => {
                // The line is refused either way; if its end is already buffered, only it is dropped.
                let consumed = match buf.iter().position(|&b| b == b'\n') {
                    Some(newline) => newline + 1,
                    None => {
                        self.state = ParserState::DiscardingLine;
                        buf.len()
                    }
                };
                return ParseOutcome::LimitError { message: line_too_long_message(), consumed };
            }
        };
        let consumed = newline + 1;
        let mut line = &buf[..newline];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        if line.len() > MAX_LINE_BYTES {
            return ParseOutcome::LimitError { message: line_too_long_message(), consumed };
        }
        match split_inline_args(line) {
            Err(message) => {
                ParseOutcome::LimitError { message: format!("Protocol error: {message}"), consumed }
            }
            Ok(args) if args.is_empty() => ParseOutcome::Skipped { consumed },
            Ok(args) if args.len() > MAX_ARGS => {
                ParseOutcome::LimitError { message: too_many_args_message(), consumed }
            }
            Ok(args) => ParseOutcome::Request { args, consumed },
        }
    }
}

fn line_too_long_message() -> String {
    format!("Protocol error: request line too long (max {MAX_LINE_BYTES} bytes)")
}

fn too_many_args_message() -> String {
    format!("too many arguments (max {MAX_ARGS})")
}

/// Where a line ends, looking at most `max_line_bytes` + CRLF bytes ahead of `start`.
enum LineEnd {
    /// The index of the line's `\n`.
    Found(usize),
    /// No newline yet, and the line is still within the limit.
    Incomplete,
    /// No newline within the limit.
    TooLong,
}

/// Looks for the newline of the line at `start`, past its first `scanned` bytes (known to hold none).
fn find_line_end(buf: &[u8], start: usize, max_line_bytes: usize, scanned: usize) -> LineEnd {
    let rest = buf.get(start..).unwrap_or_default();
    let window = rest.len().min(max_line_bytes + 2);
    let from = scanned.min(window);
    match rest[from..window].iter().position(|&b| b == b'\n') {
        Some(offset) => LineEnd::Found(start + from + offset),
        None if rest.len() >= max_line_bytes + 2 => LineEnd::TooLong,
        None => LineEnd::Incomplete,
    }
}

/// Reads a CRLF-terminated integer header at `start`: `Ok(None)` if incomplete, `Err` if malformed.
fn read_header(buf: &[u8], start: usize, what: &str) -> Result<Option<(i64, usize)>, String> {
    let newline = match find_line_end(buf, start, MAX_HEADER_BYTES, 0) {
        LineEnd::Found(newline) => newline,
        LineEnd::Incomplete => return Ok(None),
        LineEnd::TooLong => return Err(format!("Protocol error: too big {what} header")),
    };
    let line = match buf[start..newline].strip_suffix(b"\r") {
        Some(line) => line,
        None => return Err(format!("Protocol error: {what} header not terminated by CRLF")),
    };
    match parse_i64(line) {
        Some(value) => Ok(Some((value, newline + 1))),
        None => Err(format!("Protocol error: invalid {what} length")),
    }
}

/// Reads a bulk header (`$len` CRLF) at `pos`: `Ok(None)` if incomplete, `Err` if malformed.
fn read_bulk_header(buf: &[u8], pos: usize) -> Result<Option<(i64, usize)>, String> {
    match buf.get(pos) {
        None => Ok(None),
        Some(b'$') => read_header(buf, pos + 1, "bulk"),
        Some(&other) => Err(format!("Protocol error: expected '$', got '{}'", escape_bytes(&[other]))),
    }
}

/// Parses a decimal i64: an optional `-` then digits, nothing else.
fn parse_i64(digits: &[u8]) -> Option<i64> {
    let (negative, unsigned) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if unsigned.is_empty() {
        return None;
    }
    // Summed below zero, where i64 reaches one further than above it (i64::MIN has no positive).
    let mut below = 0i64;
    for &byte in unsigned {
        if !byte.is_ascii_digit() {
            return None;
        }
        below = below.checked_mul(10)?.checked_sub(i64::from(byte - b'0'))?;
    }
    if negative {
        Some(below)
    } else {
        below.checked_neg()
    }
}

/// Splits an inline command line into arguments with redis-cli's quoting rules (Redis
/// `sdssplitargs`), or says why it cannot.
///
/// Unquoted words end at space, tab, CR or LF. In double quotes: `\n \r \t \b \a \\ \"` and `\xHH`
/// escapes, any other `\c` is `c`. In single quotes only `\'` is an escape. A closing quote must be
/// followed by whitespace or the end of the line.
pub fn split_inline_args(line: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    const UNBALANCED: &str = "unbalanced quotes in request";
    let mut args = Vec::new();
    let mut pos = 0;
    loop {
        while line.get(pos).is_some_and(|b| is_space(*b)) {
            pos += 1;
        }
        if pos >= line.len() {
            return Ok(args);
        }
        let mut current = Vec::new();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            let byte = line.get(pos).copied();
            let next = line.get(pos + 1).copied();
            if in_double {
                match byte {
                    None => return Err(UNBALANCED.to_string()),
                    Some(b'\\') if next == Some(b'x') => {
                        match (
                            line.get(pos + 2).copied().and_then(hex),
                            line.get(pos + 3).copied().and_then(hex),
                        ) {
                            (Some(high), Some(low)) => {
                                current.push(high * 16 + low);
                                pos += 3;
                            }
                            _ => {
                                current.push(b'x');
                                pos += 1;
                            }
                        }
                    }
                    Some(b'\\') if next.is_some() => {
                        pos += 1;
                        current.push(match next {
                            Some(b'n') => b'\n',
                            Some(b'r') => b'\r',
                            Some(b't') => b'\t',
                            Some(b'b') => 0x08,
                            Some(b'a') => 0x07,
                            Some(other) => other,
                            None => b'\\',
                        });
                    }
                    Some(b'"') => {
                        if next.is_some_and(|b| !is_space(b)) {
                            return Err(UNBALANCED.to_string());
                        }
                        pos += 1;
                        break;
                    }
                    Some(other) => current.push(other),
                }
            } else if in_single {
                match byte {
                    None => return Err(UNBALANCED.to_string()),
                    Some(b'\\') if next == Some(b'\'') => {
                        pos += 1;
                        current.push(b'\'');
                    }
                    Some(b'\'') => {
                        if next.is_some_and(|b| !is_space(b)) {
                            return Err(UNBALANCED.to_string());
                        }
                        pos += 1;
                        break;
                    }
                    Some(other) => current.push(other),
                }
            } else {
                match byte {
                    None | Some(b' ' | b'\n' | b'\r' | b'\t') => break,
                    Some(b'"') => in_double = true,
                    Some(b'\'') => in_single = true,
                    Some(other) => current.push(other),
                }
            }
            pos += 1;
        }
        args.push(current);
    }
}

/// C's `isspace`: space, tab, LF, vertical tab, form feed, CR.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).and_then(|digit| u8::try_from(digit).ok())
}

/// Encodes `args` as one multibulk request (what a client sends).
pub fn encode_request<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    encode_header(b'*', args.len() as i64, out);
    for arg in args {
        encode_bulk(arg.as_ref(), out);
    }
}

fn encode_bulk(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 16);
    encode_header(b'$', bytes.len() as i64, out);
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// `kind`, `n` in decimal and CRLF: a RESP header or integer, without going through `format!`
/// (a reply is encoded per request).
fn encode_header(kind: u8, n: i64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.push(kind);
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+text`: a status line such as `OK` or `PONG`.
    Simple(String),
    /// `-CODE text`: an error line, its code (`ERR`, `NOTLEADER`, `TRYAGAIN`, ...) included.
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$len` and bytes, or `$-1` (nil).
    Bulk(Option<Vec<u8>>),
    /// `*n` and n replies, or `*-1` (nil array).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple("OK".to_string())
    }

    /// `-ERR message`.
    pub fn err(message: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {message}"))
    }

    /// A bulk string holding `bytes`.
    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply::Bulk(Some(bytes.into()))
    }

    /// Appends the reply's RESP2 encoding to `out`.
    ///
    /// CR and LF in a status or error line become spaces, so a line can never split the stream.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(text) => encode_line(b'+', text, out),
            Reply::Error(text) => encode_line(b'-', text, out),
            Reply::Integer(n) => encode_header(b':', *n, out),
            Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(Some(bytes)) => encode_bulk(bytes, out),
            Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(Some(items)) => {
                encode_header(b'*', items.len() as i64, out);
                for item in items {
                    item.encode_into(out);
                }
            }
        }
    }

    /// The length of the reply's RESP2 encoding, without making it.
    pub fn encoded_len(&self) -> usize {
        match self {
            Reply::Simple(text) | Reply::Error(text) => text.len() + 3,
            Reply::Integer(n) => decimal_len(*n) + 3,
            Reply::Bulk(None) | Reply::Array(None) => 5,
            Reply::Bulk(Some(bytes)) => decimal_len(bytes.len() as i64) + 5 + bytes.len(),
            Reply::Array(Some(items)) => {
                decimal_len(items.len() as i64) + 3 + items.iter().map(Reply::encoded_len).sum::<usize>()
            }
        }
    }

    /// The reply's RESP2 encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// Digits of `n` in decimal, its sign included.
fn decimal_len(n: i64) -> usize {
    let mut len = if n < 0 { 2 } else { 1 };
    let mut rest = n.unsigned_abs();
    while rest >= 10 {
        rest /= 10;
        len += 1;
    }
    len
}

fn encode_line(kind: u8, text: &str, out: &mut Vec<u8>) {
    out.push(kind);
    out.extend(text.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.extend_from_slice(b"\r\n");
}

impl From<CommandResult> for Reply {
    fn from(result: CommandResult) -> Reply {
        match result {
            CommandResult::Ok => Reply::ok(),
            CommandResult::Value(value) => Reply::Bulk(value),
            CommandResult::Integer(n) => Reply::Integer(n),
            CommandResult::Pairs(pairs) => Reply::Array(Some(
                pairs
                    .into_iter()
                    .flat_map(|(key, value)| [Reply::Bulk(Some(key)), Reply::Bulk(Some(value))])
                    .collect(),
            )),
            CommandResult::Error(message) => Reply::err(message),
            CommandResult::Status(text) => Reply::Simple(text),
            CommandResult::Array(results) => {
                Reply::Array(Some(results.into_iter().map(Reply::from).collect()))
            }
            CommandResult::NilArray => Reply::Array(None),
            // The cursor of a page that goes on is the serving replica's to give (see the waiter).
            CommandResult::ScanPage { next: Some(_), .. } => Reply::err("scan page without a cursor"),
            CommandResult::ScanPage { next: None, keys } => Reply::Array(Some(vec![
                Reply::bulk(b"0".to_vec()),
                Reply::Array(Some(keys.into_iter().map(|k| Reply::Bulk(Some(k))).collect())),
            ])),
        }
    }
}

/// A reply stream that cannot be parsed (the client should drop the connection).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// Bytes that are not RESP2.
    #[error("protocol error: {0}")]
    Malformed(String),
    /// A reply over one of the reply limits.
    #[error("reply over limit: {0}")]
    TooLarge(String),
}

/// Parses the first reply in `buf`: `Ok(None)` if it is not all there yet, else the reply and the
/// bytes it took.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    parse_reply_at(buf, 0, 0)
}

fn parse_reply_at(buf: &[u8], start: usize, depth: usize) -> Result<Option<(Reply, usize)>, RespError> {
    let Some(&kind) = buf.get(start) else { return Ok(None) };
    let newline = match find_line_end(buf, start + 1, MAX_REPLY_LINE_BYTES, 0) {
        LineEnd::Found(newline) => newline,
        LineEnd::Incomplete => return Ok(None),
        LineEnd::TooLong => {
            return Err(RespError::TooLarge(format!("line over {MAX_REPLY_LINE_BYTES} bytes")))
        }
    };
    let Some(line) = buf[start + 1..newline].strip_suffix(b"\r") else {
        return Err(RespError::Malformed("line not terminated by CRLF".to_string()));
    };
    let next = newline + 1;
    let length =
        |what: &str| parse_i64(line).ok_or_else(|| RespError::Malformed(format!("invalid {what} length")));
    match kind {
        b'+' => Ok(Some((Reply::Simple(String::from_utf8_lossy(line).into_owned()), next))),
        b'-' => Ok(Some((Reply::Error(String::from_utf8_lossy(line).into_owned()), next))),
        b':' => match parse_i64(line) {
            Some(n) => Ok(Some((Reply::Integer(n), next))),
            None => Err(RespError::Malformed("invalid integer".to_string())),
        },
        b'$' => {
            let len = length("bulk")?;
            if len == -1 {
                return Ok(Some((Reply::Bulk(None), next)));
            }
            let len =
                usize::try_from(len).map_err(|_| RespError::Malformed("negative bulk length".to_string()))?;
            if len > MAX_REPLY_BULK_BYTES {
                return Err(RespError::TooLarge(format!("bulk over {MAX_REPLY_BULK_BYTES} bytes")));
            }
            let end = next + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(RespError::Malformed("bulk string not terminated by CRLF".to_string()));
            }
            Ok(Some((Reply::Bulk(Some(buf[next..end].to_vec())), end + 2)))
        }
        b'*' => {
            let len = length("array")?;
            if len == -1 {
                return Ok(Some((Reply::Array(None), next)));
            }
            let len = usize::try_from(len)
                .map_err(|_| RespError::Malformed("negative array length".to_string()))?;
            if len > MAX_REPLY_ARRAY_LEN {
                return Err(RespError::TooLarge(format!("array over {MAX_REPLY_ARRAY_LEN} elements")));
            }
            if depth >= MAX_REPLY_DEPTH {
                return Err(RespError::TooLarge(format!("arrays nested over {MAX_REPLY_DEPTH} deep")));
            }
            let mut items = Vec::new();
            let mut pos = next;
            for _ in 0..len {
                match parse_reply_at(buf, pos, depth + 1)? {
                    Some((item, after)) => {
                        items.push(item);
                        pos = after;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), pos)))
        }
        other => Err(RespError::Malformed(format!("unknown reply type '{}'", escape_bytes(&[other])))),
    }
}

/// Formats a reply the way redis-cli prints it on a terminal, without the final newline.
pub fn format_reply(reply: &Reply) -> String {
    let mut out = String::new();
    format_into(reply, "", &mut out);
    if out.ends_with('\n') {
        out.pop();
    }
    out
}

/// redis-cli's `cliFormatReplyTTY`: every leaf ends in a newline; nested arrays are indented by the
/// width of their parent's index.
fn format_into(reply: &Reply, prefix: &str, out: &mut String) {
    match reply {
        Reply::Simple(text) => {
            out.push_str(text);
            out.push('\n');
        }
        Reply::Error(text) => {
            let _ = writeln!(out, "(error) {text}");
        }
        Reply::Integer(n) => {
            let _ = writeln!(out, "(integer) {n}");
        }
        Reply::Bulk(Some(bytes)) => {
            let _ = writeln!(out, "\"{}\"", escape_bytes(bytes));
        }
        Reply::Bulk(None) | Reply::Array(None) => out.push_str("(nil)\n"),
        Reply::Array(Some(items)) if items.is_empty() => out.push_str("(empty array)\n"),
        Reply::Array(Some(items)) => {
            let index_width = items.len().to_string().len();
            let nested_prefix = format!("{prefix}{}", " ".repeat(index_width + 2));
            for (i, item) in items.iter().enumerate() {
                // The first element follows the parent's own index on the same line.
                let _ = write!(out, "{}{:>index_width$}) ", if i == 0 { "" } else { prefix }, i + 1);
                format_into(item, &nested_prefix, out);
            }
        }
    }
}

/// redis-cli's `sdscatrepr` without the quotes: `\\`, `\"`, `\n`, `\r`, `\t`, `\a`, `\b`, printable
/// ASCII as is, every other byte as `\xhh`.
fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &byte in bytes {
        match byte {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            0x20..=0x7e => out.push(byte as char),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_i64_takes_an_optional_minus_then_digits_within_i64() {
        let cases: [(&[u8], Option<i64>); 12] = [
            (b"0", Some(0)),
            (b"-0", Some(0)),
            (b"42", Some(42)),
            (b"-17", Some(-17)),
            (b"9223372036854775807", Some(i64::MAX)),
            (b"-9223372036854775808", Some(i64::MIN)),
            (b"9223372036854775808", None),
            (b"-9223372036854775809", None),
            (b"", None),
            (b"-", None),
            (b"+1", None),
            (b"1a", None),
        ];
        for (digits, expected) in cases {
            assert_eq!(parse_i64(digits), expected, "{:?}", String::from_utf8_lossy(digits));
            // The same answer as the standard parser wherever that one agrees on the syntax.
            if !digits.starts_with(b"+") {
                let std = std::str::from_utf8(digits).ok().and_then(|t| t.parse::<i64>().ok());
                assert_eq!(parse_i64(digits), std, "{:?}", String::from_utf8_lossy(digits));
            }
        }
    }

    fn args(items: &[&[u8]]) -> Vec<Vec<u8>> {
        items.iter().map(|item| item.to_vec()).collect()
    }

    #[test]
    fn multibulk_request_parses_with_its_length() {
        let buf = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nextra";
        assert_eq!(
            parse_request(buf),
            ParseOutcome::Request { args: args(&[b"GET", b"k"]), consumed: buf.len() - 5 }
        );
    }

    #[test]
    fn inline_request_accepts_crlf_and_lf() {
        assert_eq!(
            parse_request(b"SET k v\r\n"),
            ParseOutcome::Request { args: args(&[b"SET", b"k", b"v"]), consumed: 9 }
        );
        assert_eq!(parse_request(b"PING\n"), ParseOutcome::Request { args: args(&[b"PING"]), consumed: 5 });
    }

    #[test]
    fn blank_lines_and_empty_arrays_are_skipped() {
        assert_eq!(parse_request(b"\r\nPING\r\n"), ParseOutcome::Skipped { consumed: 2 });
        assert_eq!(parse_request(b"   \n"), ParseOutcome::Skipped { consumed: 4 });
        assert_eq!(parse_request(b"*0\r\n"), ParseOutcome::Skipped { consumed: 4 });
        assert_eq!(parse_request(b"*-1\r\n"), ParseOutcome::Skipped { consumed: 5 });
    }

    #[test]
    fn partial_requests_are_incomplete() {
        for partial in [&b""[..], b"*", b"*2\r", b"*2\r\n$3\r\nGE", b"*2\r\n$3\r\nGET\r\n", b"PIN"] {
            assert_eq!(parse_request(partial), ParseOutcome::Incomplete, "{partial:?}");
        }
    }

    #[test]
    fn malformed_headers_are_fatal() {
        for garbage in [&b"*x\r\n"[..], b"*1\r\n:3\r\n", b"*1\r\n$a\r\n", b"*1\n", b"*1\r\n$1\r\nab\r\n"] {
            assert!(matches!(parse_request(garbage), ParseOutcome::Fatal(_)), "{garbage:?}");
        }
    }

    #[test]
    fn negative_bulk_length_keeps_the_stream_in_sync() {
        let buf = b"*2\r\n$-1\r\n$1\r\nk\r\nPING\r\n";
        let mut parser = RequestParser::new();
        let mut at = 0;
        let mut outcomes = Vec::new();
        loop {
            let outcome = parser.parse(&buf[at..]);
            match &outcome {
                ParseOutcome::LimitError { consumed, .. } | ParseOutcome::Skipped { consumed } => {
                    at += consumed
                }
                ParseOutcome::Request { .. } => {
                    outcomes.push(outcome);
                    break;
                }
                other => panic!("{other:?}"),
            }
            outcomes.push(outcome);
        }
        assert!(
            matches!(&outcomes[0], ParseOutcome::LimitError { message, .. } if message.contains("negative"))
        );
        assert!(outcomes[1..outcomes.len() - 1].iter().all(|o| matches!(o, ParseOutcome::Skipped { .. })));
        assert_eq!(outcomes.last(), Some(&ParseOutcome::Request { args: args(&[b"PING"]), consumed: 6 }));
    }

    #[test]
    fn parser_discards_the_rest_of_an_unterminated_long_line() {
        let mut parser = RequestParser::new();
        let long = vec![b'a'; MAX_LINE_BYTES + 2];
        assert!(
            matches!(parser.parse(&long), ParseOutcome::LimitError { consumed, .. } if consumed == long.len())
        );
        assert_eq!(parser.parse(b"aaaa"), ParseOutcome::Skipped { consumed: 4 });
        assert_eq!(parser.parse(b""), ParseOutcome::Incomplete);
        assert_eq!(parser.parse(b"aa\r\nPING\r\n"), ParseOutcome::Skipped { consumed: 4 });
        assert_eq!(parser.parse(b"PING\r\n"), ParseOutcome::Request { args: args(&[b"PING"]), consumed: 6 });
        assert!(matches!(parse_request(&long), ParseOutcome::LimitError { .. }));
    }

    #[test]
    fn inline_line_at_exactly_the_limit_is_accepted() {
        let mut line = vec![b'a'; MAX_LINE_BYTES];
        line.extend_from_slice(b"\r\n");
        assert!(matches!(parse_request(&line), ParseOutcome::Request { .. }));
        let mut over = vec![b'a'; MAX_LINE_BYTES + 1];
        over.push(b'\n');
        assert!(
            matches!(parse_request(&over), ParseOutcome::LimitError { consumed, .. } if consumed == over.len())
        );
    }

    #[test]
    fn split_follows_sdssplitargs() {
        let cases: &[(&[u8], &[&[u8]])] = &[
            (b"set k v", &[b"set", b"k", b"v"]),
            (b"  a \t b  ", &[b"a", b"b"]),
            (br#""a b" 'c d'"#, &[b"a b", b"c d"]),
            (br#""\n\r\t\b\a\\\"\q""#, &[b"\n\r\t\x08\x07\\\"q"]),
            (br#""\x41\x00\xff\xzz""#, &[b"A\x00\xffxzz"]),
            (br"'it\'s' '\n'", &[b"it's", b"\\n"]),
            (br#"a"b c"d"#, &[]),
            (br#"x"y z""#, &[b"xy z"]),
            (b"\"\"", &[b""]),
            (b"", &[]),
        ];
        for (line, expected) in cases {
            let got = split_inline_args(line);
            if expected.is_empty() && !line.is_empty() {
                assert!(got.is_err(), "{line:?}: {got:?}");
            } else {
                assert_eq!(got, Ok(args(expected)), "{line:?}");
            }
        }
        for unbalanced in [&br#""abc"#[..], b"'abc", br#""abc"x"#, b"'a'b", br#""\"#] {
            assert!(split_inline_args(unbalanced).is_err(), "{unbalanced:?}");
        }
    }

    #[test]
    fn replies_encode_as_resp2() {
        let reply = Reply::Array(Some(vec![
            Reply::ok(),
            Reply::err("bad\r\nthing"),
            Reply::Integer(-3),
            Reply::bulk(b"v".to_vec()),
            Reply::Bulk(None),
            Reply::Array(None),
        ]));
        assert_eq!(
            reply.to_bytes(),
            b"*6\r\n+OK\r\n-ERR bad  thing\r\n:-3\r\n$1\r\nv\r\n$-1\r\n*-1\r\n".to_vec()
        );
    }

    #[test]
    fn a_replys_encoded_length_is_known_without_encoding_it() {
        let long = Reply::bulk(vec![b'x'; 12_345]);
        let many = Reply::Array(Some((0..11).map(|i| Reply::Integer(i * 7)).collect()));
        let replies = [
            Reply::ok(),
            Reply::err("bad\r\nthing"),
            Reply::Integer(0),
            Reply::Integer(-10),
            Reply::Integer(i64::MIN),
            Reply::Integer(i64::MAX),
            Reply::Bulk(None),
            Reply::Array(None),
            Reply::bulk(Vec::new()),
            long.clone(),
            Reply::Array(Some(vec![many, long, Reply::Array(Some(Vec::new()))])),
        ];
        for reply in replies {
            assert_eq!(reply.encoded_len(), reply.to_bytes().len(), "{reply:?}");
        }
    }

    #[test]
    fn command_results_map_to_replies() {
        assert_eq!(Reply::from(CommandResult::Ok), Reply::Simple("OK".into()));
        assert_eq!(Reply::from(CommandResult::Value(None)), Reply::Bulk(None));
        assert_eq!(Reply::from(CommandResult::Integer(2)), Reply::Integer(2));
        assert_eq!(Reply::from(CommandResult::Error("x".into())), Reply::Error("ERR x".into()));
        assert_eq!(
            Reply::from(CommandResult::Pairs(vec![(b"k".to_vec(), b"v".to_vec())])),
            Reply::Array(Some(vec![Reply::bulk(b"k".to_vec()), Reply::bulk(b"v".to_vec())]))
        );
    }

    #[test]
    fn reply_parser_reports_incomplete_and_errors() {
        assert_eq!(parse_reply(b"$3\r\nab"), Ok(None));
        assert_eq!(parse_reply(b"*2\r\n:1\r\n"), Ok(None));
        assert_eq!(parse_reply(b":12\r\n+OK\r\n"), Ok(Some((Reply::Integer(12), 5))));
        assert!(parse_reply(b"?x\r\n").is_err());
        assert!(parse_reply(b"$-2\r\n").is_err());
        let deep = "*1\r\n".repeat(MAX_REPLY_DEPTH + 1);
        assert!(matches!(parse_reply(deep.as_bytes()), Err(RespError::TooLarge(_))));
    }

    #[test]
    fn formats_like_redis_cli() {
        assert_eq!(format_reply(&Reply::ok()), "OK");
        assert_eq!(format_reply(&Reply::bulk(b"a\"b\n\x01\xff".to_vec())), r#""a\"b\n\x01\xff""#);
        assert_eq!(format_reply(&Reply::Bulk(None)), "(nil)");
        assert_eq!(format_reply(&Reply::Integer(5)), "(integer) 5");
        assert_eq!(format_reply(&Reply::err("no")), "(error) ERR no");
        assert_eq!(format_reply(&Reply::Array(Some(vec![]))), "(empty array)");
        assert_eq!(
            format_reply(&Reply::Array(Some(vec![Reply::bulk(b"a".to_vec()), Reply::bulk(b"b".to_vec())]))),
            "1) \"a\"\n2) \"b\""
        );
        let nested = Reply::Array(Some(vec![
            Reply::Array(Some(vec![Reply::Integer(1), Reply::Integer(2)])),
            Reply::bulk(b"c".to_vec()),
        ]));
        assert_eq!(format_reply(&nested), "1) 1) (integer) 1\n   2) (integer) 2\n2) \"c\"");
        let ten = Reply::Array(Some((0..10).map(Reply::Integer).collect()));
        assert!(format_reply(&ten).starts_with(" 1) (integer) 0\n 2)"));
        assert!(format_reply(&ten).ends_with("\n10) (integer) 9"));
    }
}
