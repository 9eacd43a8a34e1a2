//! Parsing the Redis string, keyspace, expiry, transaction and version commands into typed
//! requests: every argument checked here, so what reaches the log is well formed and a queued
//! command with a syntax error aborts its transaction, as in Redis.

use super::command::{Command, ExpireCondition, ExpireTime, Expiry, SetCondition, SetReply};
use super::request::{
    check_key, check_keys, check_value, lower_name, parse_u64, read, take, write, ClientRequest, RequestError,
};

/// The largest time to live, in milliseconds: with it, an entry's clock plus any accepted time
/// stays within a signed 64-bit millisecond count until the year 10000.
pub const MAX_TTL_MS: i64 = i64::MAX - 253_402_300_800_000;
/// COUNT larger than this is taken as this: at most this many keys are examined per SCAN reply.
pub const MAX_SCAN_COUNT: u64 = 10_000;
/// SCAN's COUNT when none is given (Redis's default).
pub const DEFAULT_SCAN_COUNT: u64 = 10;

/// Parses a whole byte string as a signed 64-bit decimal, as Redis does (no sign `+`, no spaces,
/// no leading zeros).
pub fn parse_i64_strict(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let canonical = match digits {
        [] => false,
        [b'0'] => bytes.len() == 1,
        [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
    };
    if !canonical || bytes.len() > 20 {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Parses a decimal float as Redis does for INCRBYFLOAT (no spaces, no NaN).
pub fn parse_f64_strict(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let plain = text.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    let spelled = matches!(text.to_ascii_lowercase().trim_start_matches(['+', '-']), "inf" | "infinity");
    if text.is_empty() || !(plain || spelled) {
        return None;
    }
    text.parse::<f64>().ok().filter(|f| !f.is_nan())
}

/// INCRBYFLOAT's answer: the shortest decimal that reads back as the same float, never in
/// exponent form, as Redis prints it.
pub fn format_float(value: f64) -> String {
    // Redis adds in long double and prints 17 decimals, trimmed: representation noise of a
    // double (0.1 + 0.2 = 0.30000000000000004) does not show. Rounding to 15 significant digits
    // does the same for a double; the shortest form of that is printed.
    let rounded: f64 = format!("{value:.14e}").parse().unwrap_or(value);
    let text = format!("{rounded}");
    if text == "-0" {
        "0".to_string()
    } else {
        text
    }
}

fn invalid_expire(command: &str) -> RequestError {
    RequestError::Other(format!("ERR invalid expire time in '{command}' command"))
}

fn integer(arg: &[u8]) -> Result<i64, RequestError> {
    parse_i64_strict(arg).ok_or(RequestError::NotAnInteger)
}

/// A positive time argument in `unit_ms` milliseconds, as SET EX/PX/EXAT/PXAT and SETEX take it.
fn positive_time_ms(arg: &[u8], unit_ms: i64, command: &str) -> Result<u64, RequestError> {
    let n = integer(arg)?;
    match n.checked_mul(unit_ms) {
        Some(ms) if n > 0 && ms <= MAX_TTL_MS => Ok(ms as u64),
        _ => Err(invalid_expire(command)),
    }
}

/// EXPIRE's time argument (any sign) in `unit_ms` milliseconds; a time far in the past is
/// taken as the earliest representable one (the key expires at once, as in Redis). One whose
/// milliseconds do not fit 64 bits is refused, of either sign, as Redis refuses it.
fn any_time_ms(arg: &[u8], unit_ms: i64, command: &str) -> Result<i64, RequestError> {
    let n = integer(arg)?;
    match n.checked_mul(unit_ms) {
        Some(ms) if ms <= MAX_TTL_MS => Ok(ms.max(-MAX_TTL_MS)),
        _ => Err(invalid_expire(command)),
    }
}

/// An expiry option word and its argument (EX, PX, EXAT, PXAT); none if `word` is not one.
fn expiry_option(word: &[u8], arg: Option<&Vec<u8>>, command: &str) -> Option<Result<Expiry, RequestError>> {
    let (unit_ms, absolute) = match word {
        b"EX" => (1000, false),
        b"PX" => (1, false),
        b"EXAT" => (1000, true),
        b"PXAT" => (1, true),
        _ => return None,
    };
    let Some(arg) = arg else { return Some(Err(RequestError::Syntax)) };
    Some(positive_time_ms(arg, unit_ms, command).map(|ms| {
        if absolute {
            Expiry::AtMs(ms)
        } else {
            Expiry::AfterMs(ms)
        }
    }))
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT ts|PXAT ms-ts|KEEPTTL]`.
fn parse_set(args: Vec<Vec<u8>>) -> Result<ClientRequest, RequestError> {
    let mut args = args.into_iter();
    let (Some(key), Some(value)) = (args.next(), args.next()) else {
        return Err(RequestError::WrongArity("set".into()));
    };
    let options: Vec<Vec<u8>> = args.collect();
    let mut condition = SetCondition::Always;
    // The expiry option as given (a repeat of the same option: the last one counts, as in Redis);
    // its value is checked once every option has been read.
    let mut expiry_word: Option<(Vec<u8>, Option<&Vec<u8>>)> = None;
    let mut get = false;
    let mut i = 0;
    while i < options.len() {
        let word = options[i].to_ascii_uppercase();
        match word.as_slice() {
            b"NX" if condition != SetCondition::IfPresent => condition = SetCondition::IfAbsent,
            b"XX" if condition != SetCondition::IfAbsent => condition = SetCondition::IfPresent,
            b"GET" => get = true,
            b"KEEPTTL" | b"EX" | b"PX" | b"EXAT" | b"PXAT"
                if expiry_word.as_ref().is_none_or(|(given, _)| *given == word) =>
            {
                if word == b"KEEPTTL" {
                    expiry_word = Some((word, None));
                } else {
                    let Some(arg) = options.get(i + 1) else { return Err(RequestError::Syntax) };
                    expiry_word = Some((word, Some(arg)));
                    i += 1;
                }
            }
            _ => return Err(RequestError::Syntax),
        }
        i += 1;
    }
    let expiry = match expiry_word {
        None => None,
        Some((_, None)) => Some(Expiry::Keep),
        Some((word, arg)) => match expiry_option(&word, arg, "set") {
            Some(parsed) => Some(parsed?),
            None => return Err(RequestError::Syntax),
        },
    };
    let (key, value) = (check_key(key)?, check_value(value)?);
    let expiry = expiry.unwrap_or(Expiry::Clear);
    if condition == SetCondition::Always && expiry == Expiry::Clear && !get {
        return Ok(write(Command::Put { cf: super::command::ColumnFamily::Default, key, value }));
    }
    let reply = if get { SetReply::OldValue } else { SetReply::Status };
    Ok(write(Command::Set { key, value, condition, expiry, reply }))
}

/// SETNX, SETEX, PSETEX, GETSET: a SET with fixed options.
fn set_family(
    key: Vec<u8>,
    value: Vec<u8>,
    condition: SetCondition,
    expiry: Expiry,
    reply: SetReply,
) -> Result<ClientRequest, RequestError> {
    Ok(write(Command::Set { key: check_key(key)?, value: check_value(value)?, condition, expiry, reply }))
}

/// `GETEX key [EX s|PX ms|EXAT ts|PXAT ms-ts|PERSIST]`.
fn parse_getex(args: Vec<Vec<u8>>) -> Result<ClientRequest, RequestError> {
    let mut args = args.into_iter();
    let Some(key) = args.next() else { return Err(RequestError::WrongArity("getex".into())) };
    // One kind of option, repeatable: the last counts, and only its value is checked (as Redis
    // reads them); two kinds together are a syntax error.
    let mut last: Option<(Vec<u8>, Option<Vec<u8>>)> = None;
    while let Some(word) = args.next() {
        let word = word.to_ascii_uppercase();
        if last.as_ref().is_some_and(|(kind, _)| *kind != word) {
            return Err(RequestError::Syntax);
        }
        let arg = match word.as_slice() {
            b"PERSIST" => None,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" => Some(args.next().ok_or(RequestError::Syntax)?),
            _ => return Err(RequestError::Syntax),
        };
        last = Some((word, arg));
    }
    let expiry = match &last {
        None => Expiry::Keep,
        Some((_, None)) => Expiry::Clear,
        Some((word, arg)) => expiry_option(word, arg.as_ref(), "getex").ok_or(RequestError::Syntax)??,
    };
    Ok(write(Command::GetEx { key: check_key(key)?, expiry }))
}

/// `EXPIRE key time [NX|XX|GT|LT]` and its three siblings.
fn parse_expire(
    lower: &str,
    args: Vec<Vec<u8>>,
    unit_ms: i64,
    absolute: bool,
) -> Result<ClientRequest, RequestError> {
    let mut args = args.into_iter();
    let (Some(key), Some(time)) = (args.next(), args.next()) else {
        return Err(RequestError::WrongArity(lower.into()));
    };
    let mut condition = ExpireCondition::Always;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in args {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                let quoted = String::from_utf8_lossy(&option).into_owned();
                return Err(RequestError::Other(format!("ERR Unsupported option {quoted}")));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(RequestError::Other(
            "ERR NX and XX, GT or LT options at the same time are not compatible".into(),
        ));
    }
    if gt && lt {
        return Err(RequestError::Other("ERR GT and LT options at the same time are not compatible".into()));
    }
    // GT already needs a time to live (none counts as infinite); LT does not, unless with XX.
    if nx {
        condition = ExpireCondition::NoTtl;
    } else if gt {
        condition = ExpireCondition::Later;
    } else if lt && !xx {
        condition = ExpireCondition::Earlier;
    } else if lt {
        condition = ExpireCondition::EarlierWithTtl;
    } else if xx {
        condition = ExpireCondition::HasTtl;
    }
    let ms = any_time_ms(&time, unit_ms, lower)?;
    let when = if absolute { ExpireTime::AtMs(ms) } else { ExpireTime::AfterMs(ms) };
    Ok(write(Command::Expire { key: check_key(key)?, when, condition }))
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`.
fn parse_scan(args: Vec<Vec<u8>>) -> Result<ClientRequest, RequestError> {
    let mut args = args.into_iter();
    let Some(cursor) = args.next() else { return Err(RequestError::WrongArity("scan".into())) };
    let cursor = parse_u64(&cursor).ok_or_else(|| RequestError::Other("ERR invalid cursor".into()))?;
    let options: Vec<Vec<u8>> = args.collect();
    let (mut pattern, mut count, mut kind) = (None, DEFAULT_SCAN_COUNT, None);
    let mut pairs = options.chunks(2);
    for pair in pairs.by_ref() {
        let [word, value] = pair else { return Err(RequestError::Syntax) };
        match word.to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(check_key(value.clone())?),
            b"COUNT" => {
                let n = integer(value)?;
                if n < 1 {
                    return Err(RequestError::Syntax);
                }
                count = (n as u64).min(MAX_SCAN_COUNT);
            }
            b"TYPE" => kind = Some(value.clone()),
            _ => return Err(RequestError::Syntax),
        }
    }
    // A pattern of `*` matches everything: no need to test each key.
    let pattern = pattern.filter(|p| p.as_slice() != b"*");
    Ok(ClientRequest::Scan { cursor, pattern, count, kind })
}

/// Every command [`parse_dialect`] parses, upper case.
pub(crate) const DIALECT_COMMANDS: &[&[u8]] = &[
    b"SET",
    b"SETNX",
    b"SETEX",
    b"PSETEX",
    b"GETSET",
    b"GETDEL",
    b"GETEX",
    b"MGET",
    b"MSET",
    b"MSETNX",
    b"STRLEN",
    b"GETRANGE",
    b"SUBSTR",
    b"SETRANGE",
    b"INCR",
    b"DECR",
    b"INCRBY",
    b"DECRBY",
    b"INCRBYFLOAT",
    b"UNLINK",
    b"TOUCH",
    b"TYPE",
    b"RENAME",
    b"RENAMENX",
    b"KEYS",
    b"SCAN",
    b"DBSIZE",
    b"RANDOMKEY",
    b"FLUSHDB",
    b"FLUSHALL",
    b"EXPIRE",
    b"PEXPIRE",
    b"EXPIREAT",
    b"PEXPIREAT",
    b"TTL",
    b"PTTL",
    b"EXPIRETIME",
    b"PEXPIRETIME",
    b"PERSIST",
    b"GETVER",
    b"SETVER",
    b"MULTI",
    b"EXEC",
    b"DISCARD",
    b"UNWATCH",
    b"WATCH",
    b"TIME",
];

/// Parses one of [`DIALECT_COMMANDS`] (`upper` is its name upper case).
pub(crate) fn parse_dialect(upper: &[u8], args: Vec<Vec<u8>>) -> Result<ClientRequest, RequestError> {
    // Made only for an error.
    let lower = || lower_name(upper);
    let arity = |min: usize, max: Option<usize>| {
        if args.len() < min || max.is_some_and(|max| args.len() > max) {
            Err(RequestError::WrongArity(lower()))
        } else {
            Ok(())
        }
    };
    {
        match upper {
            b"SET" => {
                arity(2, None)?;
                parse_set(args)
            }
            b"SETNX" => {
                arity(2, Some(2))?;
                let [key, value] = take(args)?;
                set_family(key, value, SetCondition::IfAbsent, Expiry::Clear, SetReply::Flag)
            }
            b"SETEX" | b"PSETEX" => {
                arity(3, Some(3))?;
                let [key, time, value] = take(args)?;
                let unit_ms = if upper == b"SETEX" { 1000 } else { 1 };
                let ms = positive_time_ms(&time, unit_ms, &lower())?;
                set_family(key, value, SetCondition::Always, Expiry::AfterMs(ms), SetReply::Status)
            }
            b"GETSET" => {
                arity(2, Some(2))?;
                let [key, value] = take(args)?;
                set_family(key, value, SetCondition::Always, Expiry::Clear, SetReply::OldValue)
            }
            b"GETDEL" => {
                arity(1, Some(1))?;
                let [key] = take(args)?;
                Ok(write(Command::GetDel { key: check_key(key)? }))
            }
            b"GETEX" => {
                arity(1, None)?;
                parse_getex(args)
            }
            b"MGET" => {
                arity(1, None)?;
                Ok(read(Command::MGet { keys: check_keys(args)? }))
            }
            b"MSET" | b"MSETNX" => {
                if args.is_empty() || !args.len().is_multiple_of(2) {
                    return Err(RequestError::WrongArity(lower()));
                }
                let mut pairs = Vec::with_capacity(args.len() / 2);
                let mut args = args.into_iter();
                while let (Some(key), Some(value)) = (args.next(), args.next()) {
                    pairs.push((check_key(key)?, check_value(value)?));
                }
                Ok(write(Command::MSet { pairs, only_if_none_exist: upper == b"MSETNX" }))
            }
            b"STRLEN" => {
                arity(1, Some(1))?;
                let [key] = take(args)?;
                Ok(read(Command::Strlen { key: check_key(key)? }))
            }
            b"GETRANGE" | b"SUBSTR" => {
                arity(3, Some(3))?;
                let [key, start, end] = take(args)?;
                Ok(read(Command::GetRange {
                    key: check_key(key)?,
                    start: integer(&start)?,
                    end: integer(&end)?,
                }))
            }
            b"SETRANGE" => {
                arity(3, Some(3))?;
                let [key, offset, value] = take(args)?;
                let offset = integer(&offset)?;
                if offset < 0 {
                    return Err(RequestError::Other("ERR offset is out of range".into()));
                }
                Ok(write(Command::SetRange {
                    key: check_key(key)?,
                    offset: offset as u64,
                    value: check_value(value)?,
                }))
            }
            b"INCR" | b"DECR" => {
                arity(1, Some(1))?;
                let [key] = take(args)?;
                let delta = if upper == b"INCR" { 1 } else { -1 };
                Ok(write(Command::IncrBy { key: check_key(key)?, delta }))
            }
            b"INCRBY" | b"DECRBY" => {
                arity(2, Some(2))?;
                let [key, delta] = take(args)?;
                let delta = integer(&delta)?;
                let delta = if upper == b"INCRBY" {
                    delta
                } else {
                    delta
                        .checked_neg()
                        .ok_or_else(|| RequestError::Other("ERR decrement would overflow".into()))?
                };
                Ok(write(Command::IncrBy { key: check_key(key)?, delta }))
            }
            b"INCRBYFLOAT" => {
                arity(2, Some(2))?;
                let [key, delta] = take(args)?;
                if parse_f64_strict(&delta).is_none() {
                    return Err(RequestError::Other("ERR value is not a valid float".into()));
                }
                Ok(write(Command::IncrByFloat { key: check_key(key)?, delta }))
            }
            b"UNLINK" => {
                arity(1, None)?;
                Ok(write(Command::Delete {
                    cf: super::command::ColumnFamily::Default,
                    keys: check_keys(args)?,
                }))
            }
            b"TOUCH" => {
                arity(1, None)?;
                Ok(read(Command::Touch { keys: check_keys(args)? }))
            }
            b"TYPE" => {
                arity(1, Some(1))?;
                let [key] = take(args)?;
                Ok(read(Command::Type { key: check_key(key)? }))
            }
            b"RENAME" | b"RENAMENX" => {
                arity(2, Some(2))?;
                let [from, to] = take(args)?;
                Ok(write(Command::Rename {
                    from: check_key(from)?,
                    to: check_key(to)?,
                    only_if_absent: upper == b"RENAMENX",
                }))
            }
            b"KEYS" => {
                arity(1, Some(1))?;
                let [pattern] = take(args)?;
                Ok(read(Command::Keys { pattern: check_key(pattern)? }))
            }
            b"SCAN" => parse_scan(args),
            b"DBSIZE" => {
                arity(0, Some(0))?;
                Ok(read(Command::DbSize))
            }
            b"RANDOMKEY" => {
                arity(0, Some(0))?;
                Ok(read(Command::RandomKey { from: Vec::new() }))
            }
            b"FLUSHDB" | b"FLUSHALL" => {
                // Redis answers more than one mode as a syntax error, not an arity one.
                if args.len() > 1 {
                    return Err(RequestError::Syntax);
                }
                if let Some(mode) = args.first() {
                    if !mode.eq_ignore_ascii_case(b"ASYNC") && !mode.eq_ignore_ascii_case(b"SYNC") {
                        return Err(RequestError::Syntax);
                    }
                }
                Ok(write(Command::Flush { all: upper == b"FLUSHALL" }))
            }
            b"EXPIRE" => parse_expire(&lower(), args, 1000, false),
            b"PEXPIRE" => parse_expire(&lower(), args, 1, false),
            b"EXPIREAT" => parse_expire(&lower(), args, 1000, true),
            b"PEXPIREAT" => parse_expire(&lower(), args, 1, true),
            b"TTL" | b"PTTL" | b"EXPIRETIME" | b"PEXPIRETIME" => {
                arity(1, Some(1))?;
                let [key] = take(args)?;
                let millis = upper.starts_with(b"P");
                let absolute = upper.ends_with(b"EXPIRETIME");
                Ok(read(Command::Ttl { key: check_key(key)?, millis, absolute }))
            }
            b"PERSIST" => {
                arity(1, Some(1))?;
                let [key] = take(args)?;
                Ok(write(Command::Persist { key: check_key(key)? }))
            }
            b"GETVER" => {
                arity(1, Some(1))?;
                let [key] = take(args)?;
                Ok(read(Command::GetVer { key: check_key(key)? }))
            }
            b"SETVER" => {
                arity(3, Some(3))?;
                let [key, version, value] = take(args)?;
                let version = parse_u64(&version).ok_or(RequestError::NotAnInteger)?;
                Ok(write(Command::SetVer { key: check_key(key)?, version, value: check_value(value)? }))
            }
            b"MULTI" => arity(0, Some(0)).map(|()| ClientRequest::Multi),
            b"EXEC" => arity(0, Some(0)).map(|()| ClientRequest::Exec(None)),
            b"DISCARD" => arity(0, Some(0)).map(|()| ClientRequest::Discard),
            b"UNWATCH" => arity(0, Some(0)).map(|()| ClientRequest::Unwatch),
            b"WATCH" => {
                arity(1, None)?;
                Ok(ClientRequest::Watch(check_keys(args)?))
            }
            b"TIME" => arity(0, Some(0)).map(|()| ClientRequest::Time),
            _ => Err(RequestError::Empty),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_as_redis_does() {
        for (text, want) in [
            ("0", Some(0)),
            ("-1", Some(-1)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("007", None),
            ("-0", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("", None),
            ("-", None),
            ("1.0", None),
        ] {
            assert_eq!(parse_i64_strict(text.as_bytes()), want, "{text:?}");
        }
    }

    #[test]
    fn an_expire_time_whose_milliseconds_overflow_is_refused_of_either_sign() {
        assert!(any_time_ms(b"-9223372036854775808", 1000, "expire").is_err());
        assert!(any_time_ms(b"9223372036854775807", 1000, "expire").is_err());
        assert_eq!(any_time_ms(b"-9223372036854775", 1000, "expire"), Ok(-MAX_TTL_MS), "long past: at once");
        assert_eq!(any_time_ms(b"-9223372036854775808", 1, "pexpire"), Ok(-MAX_TTL_MS));
        assert_eq!(any_time_ms(b"-5", 1000, "expire"), Ok(-5000));
    }

    #[test]
    fn getex_takes_one_kind_of_option_repeated_the_last_counting() {
        let getex = |options: &[&str]| {
            let args = std::iter::once("g").chain(options.iter().copied()).map(|a| a.as_bytes().to_vec());
            match parse_dialect(b"GETEX", args.collect()) {
                Ok(ClientRequest::Write { command: Command::GetEx { expiry, .. }, .. }) => Ok(expiry),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e),
            }
        };
        assert_eq!(getex(&[]), Ok(Expiry::Keep));
        assert_eq!(getex(&["ex", "10", "EX", "20"]), Ok(Expiry::AfterMs(20_000)));
        assert_eq!(
            getex(&["EX", "0", "EX", "1"]),
            Ok(Expiry::AfterMs(1_000)),
            "only the last value is checked"
        );
        assert_eq!(getex(&["PERSIST", "persist"]), Ok(Expiry::Clear));
        assert_eq!(getex(&["PXAT", "5"]), Ok(Expiry::AtMs(5)));
        for bad in [&["EX", "10", "PX", "5"][..], &["PERSIST", "EX", "1"], &["EX"], &["KEEPTTL"], &["FOO"]] {
            assert_eq!(getex(bad), Err(RequestError::Syntax), "{bad:?}");
        }
        assert!(
            matches!(getex(&["EX", "0"]), Err(RequestError::Other(e)) if e.contains("invalid expire time"))
        );
    }

    #[test]
    fn floats_parse_and_print_as_redis_does() {
        assert_eq!(parse_f64_strict(b"10.50"), Some(10.5));
        assert_eq!(parse_f64_strict(b"5.0e3"), Some(5000.0));
        assert_eq!(parse_f64_strict(b"nan"), None);
        assert_eq!(parse_f64_strict(b" 1"), None);
        assert_eq!(parse_f64_strict(b""), None);
        assert_eq!(parse_f64_strict(b"abc"), None);
        assert_eq!(parse_f64_strict(b"inf"), Some(f64::INFINITY));
        // Redis's documented example: 10.50 + 0.1 = 10.6, then -5 = 5.6; 5.0e3 + 2.0e2 = 5200.
        assert_eq!(format_float(10.5 + 0.1), "10.6");
        assert_eq!(format_float(10.6 - 5.0), "5.6");
        assert_eq!(format_float(5000.0 + 200.0), "5200");
        assert_eq!(format_float(1e20), "100000000000000000000");
        assert_eq!(format_float(-0.0), "0");
        assert_eq!(format_float(0.1 + 0.2), "0.3", "no double representation noise, as Redis's long double");
    }
}
