//! RESP2 and RESP3, the Redis serialization protocol: the values a server answers with
//! ([`Value`], encoded for either protocol version), a decoder for every RESP3 type
//! ([`decode`], what a client reads), and the request parser a server runs on its input
//! ([`parse_request`]: arrays of bulk strings, and the inline commands a person types
//! into `telnet`).
//!
//! Decoders never panic: bad input is a [`ProtocolError`] naming what was wrong and the
//! byte offset where; incomplete input is `Ok(None)` (read more and call again). The
//! file uses only `std`, so the fuzz crate includes it as it is.

use std::fmt;
use std::ops::Range;

/// Which protocol a connection speaks (`HELLO 2` / `HELLO 3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2: maps, sets and pushes travel as arrays, doubles as bulk strings,
    /// booleans as integers, null as `$-1` (or `*-1` for a null array).
    #[default]
    Resp2,
    /// RESP3.
    Resp3,
}

/// One RESP value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `+text` (no CR or LF inside).
    Simple(String),
    /// `-CODE text`: an error reply; the text starts with its code (`ERR`,
    /// `WRONGTYPE`, `MOVED`, ...).
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$len` then the bytes.
    Bulk(Vec<u8>),
    /// The null reply: `_` in RESP3, `$-1` (a null bulk string) in RESP2.
    Null,
    /// A null where Redis 2 answered a null array (`*-1`; `_` in RESP3): `EXEC`
    /// aborted by `WATCH`, `BLPOP` timing out.
    NullArray,
    /// `*n` then `n` values.
    Array(Vec<Value>),
    /// `,float` (RESP3); a bulk string in RESP2.
    Double(f64),
    /// `#t` / `#f` (RESP3); `:1` / `:0` in RESP2.
    Boolean(bool),
    /// `%n` then `n` key/value pairs (RESP3); a flat array in RESP2.
    Map(Vec<(Value, Value)>),
    /// `~n` (RESP3); an array in RESP2.
    Set(Vec<Value>),
    /// `>n`: an out-of-band message (pub/sub); an array in RESP2.
    Push(Vec<Value>),
    /// `(digits` (RESP3); a bulk string in RESP2.
    BigNumber(String),
    /// `=len` then a three-letter format, `:` and the text (RESP3); a bulk string of
    /// the text in RESP2.
    Verbatim {
        /// The format: `txt` or `mkd`.
        format: [u8; 3],
        /// The text.
        text: Vec<u8>,
    },
}

impl Value {
    /// `+OK`.
    pub fn ok() -> Value {
        Value::Simple("OK".into())
    }

    /// An error reply with this text (which starts with its code).
    pub fn error(text: impl Into<String>) -> Value {
        Value::Error(text.into())
    }

    /// A bulk string.
    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Value {
        Value::Bulk(bytes.into())
    }

    /// A bulk string, or the null reply.
    pub fn opt_bulk(bytes: Option<Vec<u8>>) -> Value {
        bytes.map_or(Value::Null, Value::Bulk)
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }

    /// Appends this value's encoding in `proto` to `out`.
    pub fn encode(&self, proto: Protocol, out: &mut Vec<u8>) {
        let r3 = proto == Protocol::Resp3;
        match self {
            Value::Simple(s) => line(out, b'+', &one_line(s)),
            // An error text with a line break (a RESP3 blob error decoded) travels as a
            // blob error in RESP3; RESP2 has none, and gets the breaks as spaces.
            Value::Error(s) if r3 && s.contains(['\r', '\n']) => bulk(out, b'!', s.as_bytes()),
            Value::Error(s) => line(out, b'-', &one_line(s)),
            Value::Integer(n) => int_line(out, b':', *n),
            Value::Bulk(b) => bulk(out, b'$', b),
            Value::Null if r3 => out.extend_from_slice(b"_\r\n"),
            Value::Null => out.extend_from_slice(b"$-1\r\n"),
            Value::NullArray if r3 => out.extend_from_slice(b"_\r\n"),
            Value::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Value::Array(items) => seq(out, b'*', items, proto),
            Value::Double(d) => {
                let text = format_double(*d);
                if r3 {
                    line(out, b',', text.as_bytes());
                } else {
                    bulk(out, b'$', text.as_bytes());
                }
            }
            Value::Boolean(b) if r3 => {
                out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" })
            }
            Value::Boolean(b) => int_line(out, b':', i64::from(*b)),
            Value::Map(pairs) => {
                let n = if r3 { pairs.len() } else { pairs.len() * 2 };
                int_line(out, if r3 { b'%' } else { b'*' }, n as i64);
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Value::Set(items) => seq(out, if r3 { b'~' } else { b'*' }, items, proto),
            Value::Push(items) => seq(out, if r3 { b'>' } else { b'*' }, items, proto),
            Value::BigNumber(s) if r3 => line(out, b'(', s.as_bytes()),
            Value::BigNumber(s) => bulk(out, b'$', s.as_bytes()),
            Value::Verbatim { format, text } if r3 => {
                int_line(out, b'=', (text.len() + 4) as i64);
                out.extend_from_slice(format);
                out.push(b':');
                out.extend_from_slice(text);
                out.extend_from_slice(b"\r\n");
            }
            Value::Verbatim { text, .. } => bulk(out, b'$', text),
        }
    }

    /// This value's encoding in `proto`.
    pub fn to_bytes(&self, proto: Protocol) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(proto, &mut out);
        out
    }
}

/// Redis's text for a double: `inf`, `-inf`, `nan`, else the shortest form that reads
/// back as the same number (`1.5`, `10`, `1e+300`).
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        "nan".into()
    } else if d.is_infinite() {
        if d > 0.0 { "inf" } else { "-inf" }.into()
    } else if d == d.trunc() && d.abs() < 1e17 {
        format!("{}", d as i64)
    } else {
        let s = format!("{d}");
        if s.len() > 24 {
            format!("{d:e}")
        } else {
            s
        }
    }
}

/// `s` with CR and LF as spaces: what may go on a `+` or `-` line.
fn one_line(s: &str) -> std::borrow::Cow<'_, [u8]> {
    if s.contains(['\r', '\n']) {
        s.replace(['\r', '\n'], " ").into_bytes().into()
    } else {
        s.as_bytes().into()
    }
}

fn line(out: &mut Vec<u8>, tag: u8, text: &[u8]) {
    out.push(tag);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

fn int_line(out: &mut Vec<u8>, tag: u8, n: i64) {
    out.push(tag);
    push_int(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends the decimal digits of `n`.
pub fn push_int(out: &mut Vec<u8>, n: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

fn bulk(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    int_line(out, tag, bytes.len() as i64);
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

fn seq(out: &mut Vec<u8>, tag: u8, items: &[Value], proto: Protocol) {
    int_line(out, tag, items.len() as i64);
    for v in items {
        v.encode(proto, out);
    }
}

/// What was wrong with the input, and at which byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    /// What was wrong.
    pub kind: ProtocolErrorKind,
    /// Offset of the offending byte in the buffer given to the decoder.
    pub offset: usize,
}

/// The kinds of [`ProtocolError`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolErrorKind {
    /// A type byte no RESP version defines.
    UnknownType(u8),
    /// An array's element count is not a number, or is out of range.
    InvalidMultibulkLength,
    /// A bulk string's length is not a number, or is out of range.
    InvalidBulkLength,
    /// Inside a request array, something other than a bulk string.
    ExpectedBulk(u8),
    /// A line not ended by CR LF, or a bulk string not followed by CR LF.
    MissingCrlf,
    /// An integer line that is not an integer.
    InvalidInteger,
    /// A double line that is not a number.
    InvalidDouble,
    /// A boolean other than `#t` or `#f`.
    InvalidBoolean,
    /// A simple string, error or number line with bytes that are not UTF-8.
    InvalidUtf8,
    /// A verbatim string shorter than its `fmt:` prefix, or without the colon.
    InvalidVerbatim,
    /// An inline request longer than the limit without a newline.
    TooBigInlineRequest,
    /// An array's count line longer than the limit without a newline.
    TooBigMultibulkCount,
    /// A bulk string's length line longer than the limit without a newline.
    TooBigBulkCount,
    /// An inline request with a quote that is not closed.
    UnbalancedQuotes,
    /// Aggregates nested deeper than the decoder allows.
    TooDeep,
}

impl ProtocolError {
    fn at(kind: ProtocolErrorKind, offset: usize) -> ProtocolError {
        ProtocolError { kind, offset }
    }

    /// The text Redis answers for this error (after `-ERR `), then closes the
    /// connection.
    pub fn redis_text(&self) -> String {
        use ProtocolErrorKind::*;
        let what = match &self.kind {
            UnknownType(b) => format!("unknown type byte '{}'", char::from(*b).escape_default()),
            InvalidMultibulkLength => "invalid multibulk length".into(),
            InvalidBulkLength => "invalid bulk length".into(),
            ExpectedBulk(b) => format!("expected '$', got '{}'", char::from(*b).escape_default()),
            MissingCrlf => "expected CRLF".into(),
            InvalidInteger => "invalid integer".into(),
            InvalidDouble => "invalid double".into(),
            InvalidBoolean => "invalid boolean".into(),
            InvalidUtf8 => "invalid UTF-8 in a line".into(),
            InvalidVerbatim => "invalid verbatim string".into(),
            TooBigInlineRequest => "too big inline request".into(),
            TooBigMultibulkCount => "too big mbulk count string".into(),
            TooBigBulkCount => "too big bulk count string".into(),
            UnbalancedQuotes => "unbalanced quotes in request".into(),
            TooDeep => "nesting too deep".into(),
        };
        format!("Protocol error: {what}")
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.redis_text(), self.offset)
    }
}

impl std::error::Error for ProtocolError {}

/// Redis's limit for an inline request, or an unterminated count line (64 KiB).
pub const INLINE_MAX: usize = 64 * 1024;
/// How deep [`decode`] follows nested aggregates.
pub const MAX_DEPTH: usize = 64;
/// The largest element count [`parse_request`] accepts (Redis's `1024*1024`).
pub const MAX_MULTIBULK: i64 = 1024 * 1024;

/// The end of the line that starts at `start` (the index of its CR), `None` if the
/// buffer has no LF yet, or an error if it is longer than `limit`.
fn find_line(
    buf: &[u8],
    start: usize,
    limit: usize,
    too_long: ProtocolErrorKind,
) -> Result<Option<usize>, ProtocolError> {
    let rest = &buf[start.min(buf.len())..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(i) => {
            if i == 0 || rest[i - 1] != b'\r' {
                return Err(ProtocolError::at(ProtocolErrorKind::MissingCrlf, start + i));
            }
            Ok(Some(start + i - 1))
        }
        None if rest.len() > limit => Err(ProtocolError::at(too_long, start)),
        None => Ok(None),
    }
}

fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let (neg, digits) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(i64::from(d - b'0'))?
        } else {
            v.checked_add(i64::from(d - b'0'))?
        };
    }
    Some(v)
}

/// A parsed request's arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Args {
    /// Ranges of the input buffer (arrays of bulk strings, unquoted inline words).
    Ranges(Vec<Range<usize>>),
    /// Unescaped copies (an inline request with quoted words).
    Unescaped(Vec<Vec<u8>>),
}

impl Args {
    /// The arguments as slices (of `buf` for [`Args::Ranges`]).
    pub fn slices<'a>(&'a self, buf: &'a [u8]) -> Vec<&'a [u8]> {
        match self {
            Args::Ranges(r) => r.iter().map(|r| &buf[r.clone()]).collect(),
            Args::Unescaped(v) => v.iter().map(Vec::as_slice).collect(),
        }
    }

    /// How many arguments.
    pub fn len(&self) -> usize {
        match self {
            Args::Ranges(r) => r.len(),
            Args::Unescaped(v) => v.len(),
        }
    }

    /// Whether there are none (an empty line, or `*0`): Redis skips such requests.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parses one request from the start of `buf`: its arguments and how many bytes it
/// took. `Ok(None)`: incomplete, read more. Bulk strings longer than `max_bulk`
/// (`proto-max-bulk-len`) are refused.
pub fn parse_request(buf: &[u8], max_bulk: usize) -> Result<Option<(Args, usize)>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => Ok(parse_multibulk(buf, max_bulk)?.map(|(r, n)| (Args::Ranges(r), n))),
        Some(_) => parse_inline(buf),
    }
}

/// Argument ranges and the bytes the request took.
type Parsed = (Vec<Range<usize>>, usize);

fn parse_multibulk(buf: &[u8], max_bulk: usize) -> Result<Option<Parsed>, ProtocolError> {
    use ProtocolErrorKind::*;
    let Some(end) = find_line(buf, 1, INLINE_MAX, TooBigMultibulkCount)? else {
        return Ok(None);
    };
    let n = match parse_i64(&buf[1..end]) {
        Some(n) if n <= MAX_MULTIBULK => n,
        _ => return Err(ProtocolError::at(InvalidMultibulkLength, 1)),
    };
    let mut pos = end + 2;
    if n <= 0 {
        return Ok(Some((Vec::new(), pos)));
    }
    // Preallocate no more than the bytes present could hold (4 bytes per element at
    // the least), so a huge count costs nothing until its elements arrive.
    let mut args = Vec::with_capacity((n as usize).min(buf.len() / 4 + 1));
    for _ in 0..n {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&b) => return Err(ProtocolError::at(ExpectedBulk(b), pos)),
        }
        let Some(end) = find_line(buf, pos + 1, INLINE_MAX, TooBigBulkCount)? else {
            return Ok(None);
        };
        let len = match parse_i64(&buf[pos + 1..end]) {
            Some(l) if l >= 0 && (l as u64) <= max_bulk as u64 => l as usize,
            _ => return Err(ProtocolError::at(InvalidBulkLength, pos + 1)),
        };
        let start = end + 2;
        let Some(stop) = start.checked_add(len) else {
            return Err(ProtocolError::at(InvalidBulkLength, pos + 1));
        };
        if buf.len() < stop + 2 {
            return Ok(None);
        }
        if &buf[stop..stop + 2] != b"\r\n" {
            return Err(ProtocolError::at(MissingCrlf, stop));
        }
        args.push(start..stop);
        pos = stop + 2;
    }
    Ok(Some((args, pos)))
}

/// The words of an inline request line, with `"..."` (C escapes) and `'...'` quoting
/// as Redis's `sdssplitargs` reads them; `offset` is the line's place in the input
/// (for errors).
pub fn parse_inline_owned(line: &[u8], offset: usize) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Ok(args);
        }
        let mut cur = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => {
                            return Err(ProtocolError::at(
                                ProtocolErrorKind::UnbalancedQuotes,
                                offset + i,
                            ))
                        }
                        Some(b'\\')
                            if i + 3 < n
                                && line[i + 1] == b'x'
                                && line[i + 2].is_ascii_hexdigit()
                                && line[i + 3].is_ascii_hexdigit() =>
                        {
                            let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                            cur.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                            i += 4;
                        }
                        Some(b'\\') if i + 1 < n => {
                            cur.push(match line[i + 1] {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 8,
                                b'a' => 7,
                                c => c,
                            });
                            i += 2;
                        }
                        Some(b'"') => {
                            i += 1;
                            if i < n && !line[i].is_ascii_whitespace() {
                                return Err(ProtocolError::at(
                                    ProtocolErrorKind::UnbalancedQuotes,
                                    offset + i,
                                ));
                            }
                            break;
                        }
                        Some(&c) => {
                            cur.push(c);
                            i += 1;
                        }
                    }
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => {
                            return Err(ProtocolError::at(
                                ProtocolErrorKind::UnbalancedQuotes,
                                offset + i,
                            ))
                        }
                        Some(b'\\') if i + 1 < n && line[i + 1] == b'\'' => {
                            cur.push(b'\'');
                            i += 2;
                        }
                        Some(b'\'') => {
                            i += 1;
                            if i < n && !line[i].is_ascii_whitespace() {
                                return Err(ProtocolError::at(
                                    ProtocolErrorKind::UnbalancedQuotes,
                                    offset + i,
                                ));
                            }
                            break;
                        }
                        Some(&c) => {
                            cur.push(c);
                            i += 1;
                        }
                    }
                }
            }
            _ => {
                while i < n && !line[i].is_ascii_whitespace() {
                    cur.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(cur);
    }
}

fn parse_inline(buf: &[u8]) -> Result<Option<(Args, usize)>, ProtocolError> {
    // Inline requests end at LF (a bare LF is accepted, as Redis does).
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > INLINE_MAX {
            return Err(ProtocolError::at(ProtocolErrorKind::TooBigInlineRequest, 0));
        }
        return Ok(None);
    };
    let line_end = if lf > 0 && buf[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    let line = &buf[..line_end];
    if line.iter().any(|&b| b == b'"' || b == b'\'') {
        return Ok(Some((
            Args::Unescaped(parse_inline_owned(line, 0)?),
            lf + 1,
        )));
    }
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < line.len() && !line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i > start {
            args.push(start..i);
        }
    }
    Ok(Some((Args::Ranges(args), lf + 1)))
}

/// Decodes one RESP3 (or RESP2) value from the start of `buf`: the value and how many
/// bytes it took. `Ok(None)`: incomplete, read more.
pub fn decode(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
    match decode_at(buf, 0, 0)? {
        Some((v, end)) => Ok(Some((v, end))),
        None => Ok(None),
    }
}

fn text_line(buf: &[u8], start: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    match find_line(buf, start, usize::MAX, ProtocolErrorKind::MissingCrlf)? {
        Some(end) => Ok(Some((&buf[start..end], end + 2))),
        None => Ok(None),
    }
}

fn utf8(bytes: &[u8], at: usize) -> Result<String, ProtocolError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ProtocolError::at(ProtocolErrorKind::InvalidUtf8, at))
}

fn decode_at(
    buf: &[u8],
    pos: usize,
    depth: usize,
) -> Result<Option<(Value, usize)>, ProtocolError> {
    use ProtocolErrorKind::*;
    if depth > MAX_DEPTH {
        return Err(ProtocolError::at(TooDeep, pos));
    }
    let Some(&tag) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((body, next)) = text_line(buf, pos + 1)? else {
        return Ok(None);
    };
    let at = pos + 1;
    let int = |kind: ProtocolErrorKind| parse_i64(body).ok_or(ProtocolError::at(kind, at));
    Ok(Some(match tag {
        b'+' => (Value::Simple(utf8(body, at)?), next),
        b'-' => (Value::Error(utf8(body, at)?), next),
        b':' => (Value::Integer(int(InvalidInteger)?), next),
        b'_' if body.is_empty() => (Value::Null, next),
        b'_' => return Err(ProtocolError::at(MissingCrlf, at)),
        b'#' => match body {
            b"t" => (Value::Boolean(true), next),
            b"f" => (Value::Boolean(false), next),
            _ => return Err(ProtocolError::at(InvalidBoolean, at)),
        },
        b',' => {
            let s = utf8(body, at)?;
            let d = match s.as_str() {
                "inf" | "+inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                _ => s
                    .parse()
                    .map_err(|_| ProtocolError::at(InvalidDouble, at))?,
            };
            (Value::Double(d), next)
        }
        b'(' => {
            let s = utf8(body, at)?;
            let digits = s.strip_prefix('-').unwrap_or(&s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ProtocolError::at(InvalidInteger, at));
            }
            (Value::BigNumber(s), next)
        }
        b'$' | b'=' | b'!' => {
            let len = int(InvalidBulkLength)?;
            if len == -1 && tag == b'$' {
                return Ok(Some((Value::Null, next)));
            }
            if len < 0 {
                return Err(ProtocolError::at(InvalidBulkLength, at));
            }
            let Some(stop) = next.checked_add(len as usize) else {
                return Err(ProtocolError::at(InvalidBulkLength, at));
            };
            if buf.len() < stop.saturating_add(2) {
                return Ok(None);
            }
            if &buf[stop..stop + 2] != b"\r\n" {
                return Err(ProtocolError::at(MissingCrlf, stop));
            }
            let bytes = buf[next..stop].to_vec();
            let v = match tag {
                b'$' => Value::Bulk(bytes),
                b'!' => Value::Error(utf8(&bytes, next)?),
                _ => {
                    if bytes.len() < 4 || bytes[3] != b':' {
                        return Err(ProtocolError::at(InvalidVerbatim, next));
                    }
                    Value::Verbatim {
                        format: [bytes[0], bytes[1], bytes[2]],
                        text: bytes[4..].to_vec(),
                    }
                }
            };
            (v, stop + 2)
        }
        b'*' | b'~' | b'>' | b'%' => {
            let n = int(InvalidMultibulkLength)?;
            if n == -1 && tag == b'*' {
                return Ok(Some((Value::NullArray, next)));
            }
            if n < 0 {
                return Err(ProtocolError::at(InvalidMultibulkLength, at));
            }
            let count = if tag == b'%' { n.saturating_mul(2) } else { n };
            // Every element takes 3 bytes at the least: a count that the buffer cannot
            // hold yet is incomplete, and nothing is reserved for it.
            let mut items = Vec::with_capacity((count as usize).min((buf.len() - next) / 3));
            let mut p = next;
            for _ in 0..count {
                match decode_at(buf, p, depth + 1)? {
                    Some((v, e)) => {
                        items.push(v);
                        p = e;
                    }
                    None => return Ok(None),
                }
            }
            let v = match tag {
                b'*' => Value::Array(items),
                b'~' => Value::Set(items),
                b'>' => Value::Push(items),
                _ => {
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    Value::Map(pairs)
                }
            };
            (v, p)
        }
        other => return Err(ProtocolError::at(UnknownType(other), pos)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &[u8]) -> Vec<Vec<u8>> {
        let (args, used) = parse_request(s, 512 << 20).unwrap().unwrap();
        assert_eq!(used, s.len());
        args.slices(s).into_iter().map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn requests_multibulk_and_inline() {
        assert_eq!(
            req(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
            vec![b"GET".to_vec(), b"k".to_vec()]
        );
        assert_eq!(req(b"*0\r\n"), Vec::<Vec<u8>>::new());
        assert_eq!(req(b"PING\r\n"), vec![b"PING".to_vec()]);
        assert_eq!(
            req(b"set  a   b\n"),
            vec![b"set".to_vec(), b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(
            req(b"set \"a b\\x41\\n\" 'c\\'d'\r\n"),
            vec![b"set".to_vec(), b"a bA\n".to_vec(), b"c'd".to_vec()]
        );
        assert_eq!(req(b"\r\n"), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn incomplete_requests_ask_for_more() {
        let full = b"*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n";
        for cut in 0..full.len() {
            assert_eq!(
                parse_request(&full[..cut], 1 << 20),
                Ok(None),
                "cut at {cut}"
            );
        }
        assert_eq!(parse_request(b"PIN", 100), Ok(None));
    }

    #[test]
    fn bad_requests_say_what_and_where() {
        let e = |s: &[u8]| parse_request(s, 100).unwrap_err();
        assert_eq!(e(b"*x\r\n").kind, ProtocolErrorKind::InvalidMultibulkLength);
        assert_eq!(
            e(b"*2000000\r\n").kind,
            ProtocolErrorKind::InvalidMultibulkLength
        );
        let err = e(b"*1\r\n+GET\r\n");
        assert_eq!(
            (err.kind.clone(), err.offset),
            (ProtocolErrorKind::ExpectedBulk(b'+'), 4)
        );
        assert_eq!(err.redis_text(), "Protocol error: expected '$', got '+'");
        let err = e(b"*1\r\n$101\r\n");
        assert_eq!(
            (err.kind, err.offset),
            (ProtocolErrorKind::InvalidBulkLength, 5)
        );
        assert_eq!(
            e(b"*1\r\n$-1\r\n").kind,
            ProtocolErrorKind::InvalidBulkLength
        );
        assert_eq!(
            e(b"*1\r\n$1\r\nab\r\n").kind,
            ProtocolErrorKind::MissingCrlf
        );
        assert_eq!(e(b"*1\n").kind, ProtocolErrorKind::MissingCrlf);
        assert_eq!(e(b"get \"a\r\n").kind, ProtocolErrorKind::UnbalancedQuotes);
        assert_eq!(
            e(b"get \"a\"b\r\n").kind,
            ProtocolErrorKind::UnbalancedQuotes
        );
        let long = vec![b'a'; INLINE_MAX + 1];
        assert_eq!(e(&long).kind, ProtocolErrorKind::TooBigInlineRequest);
        let mut long = b"*".to_vec();
        long.extend(vec![b'1'; INLINE_MAX + 1]);
        assert_eq!(e(&long).kind, ProtocolErrorKind::TooBigMultibulkCount);
        let err = e(b"*1\r\n$x\r\n");
        assert!(err.to_string().contains("at byte 5"), "{err}");
    }

    fn roundtrip(v: Value) {
        let bytes = v.to_bytes(Protocol::Resp3);
        let (back, used) = decode(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(back, v, "{:?}", String::from_utf8_lossy(&bytes));
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn resp3_values_roundtrip() {
        roundtrip(Value::Simple("OK".into()));
        roundtrip(Value::Error("ERR x".into()));
        roundtrip(Value::Error("ERR two\r\nlines".into()));
        roundtrip(Value::Integer(-42));
        roundtrip(Value::Integer(i64::MIN));
        roundtrip(Value::Bulk(b"a\r\nb".to_vec()));
        roundtrip(Value::Null);
        roundtrip(Value::Double(1.5));
        roundtrip(Value::Double(f64::INFINITY));
        roundtrip(Value::Boolean(true));
        roundtrip(Value::BigNumber("-123456789012345678901234567890".into()));
        roundtrip(Value::Verbatim {
            format: *b"txt",
            text: b"hello".to_vec(),
        });
        roundtrip(Value::Array(vec![
            Value::Map(vec![(
                Value::bulk("k"),
                Value::Set(vec![Value::Integer(1)]),
            )]),
            Value::Push(vec![]),
        ]));
    }

    #[test]
    fn resp2_downgrades() {
        let enc = |v: Value| String::from_utf8(v.to_bytes(Protocol::Resp2)).unwrap();
        assert_eq!(enc(Value::Null), "$-1\r\n");
        assert_eq!(enc(Value::NullArray), "*-1\r\n");
        assert_eq!(enc(Value::Error("ERR a\nb".into())), "-ERR a b\r\n");
        assert_eq!(enc(Value::Double(3.0)), "$1\r\n3\r\n");
        assert_eq!(enc(Value::Boolean(true)), ":1\r\n");
        assert_eq!(
            enc(Value::Map(vec![(Value::bulk("a"), Value::Integer(1))])),
            "*2\r\n$1\r\na\r\n:1\r\n"
        );
        assert_eq!(format_double(10.5), "10.5");
        assert_eq!(format_double(3.0e3), "3000");
    }

    #[test]
    fn bad_values_say_what_and_where() {
        let e = |s: &[u8]| decode(s).unwrap_err();
        assert_eq!(
            e(b"?x\r\n"),
            ProtocolError::at(ProtocolErrorKind::UnknownType(b'?'), 0)
        );
        assert_eq!(e(b"*1\r\n:x\r\n").offset, 5);
        assert_eq!(e(b"#x\r\n").kind, ProtocolErrorKind::InvalidBoolean);
        assert_eq!(e(b",abc\r\n").kind, ProtocolErrorKind::InvalidDouble);
        assert_eq!(e(b"=2\r\nab\r\n").kind, ProtocolErrorKind::InvalidVerbatim);
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2);
        assert_eq!(e(deep.as_bytes()).kind, ProtocolErrorKind::TooDeep);
        assert_eq!(decode(b"*9999999999\r\n"), Ok(None));
    }
}
