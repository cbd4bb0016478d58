//! Just enough of RESP (the Redis protocol) for the persistence comparison: encode a
//! command as an array of bulk strings, and read one reply (simple string, error,
//! integer, bulk string, nil).

use std::io::{self, BufRead};

/// Appends `args` to `out` as one RESP command (`*N\r\n$len\r\narg\r\n...`).
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// One reply from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...` (and `-LOADING ...` while the server loads its dump).
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$len` followed by the bytes; `None` for `$-1`.
    Bulk(Option<Vec<u8>>),
}

/// Reads one reply (arrays are not needed here and are refused).
pub fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("bad reply {line:?}"));
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    match kind {
        "+" => Ok(Reply::Simple(rest.to_string())),
        "-" => Ok(Reply::Error(rest.to_string())),
        ":" => rest.parse().map(Reply::Integer).map_err(|_| bad()),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut buf = vec![0; len as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(len as usize);
            Ok(Reply::Bulk(Some(buf)))
        }
        _ => Err(bad()),
    }
}

/// The value of `field` in an `INFO` reply (`field:value` lines).
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn encodes_a_command() {
        let mut out = Vec::new();
        encode(&mut out, &[b"SET", b"key:1", b"abc"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$5\r\nkey:1\r\n$3\r\nabc\r\n");
    }

    #[test]
    fn reads_each_reply_kind_in_sequence() {
        let mut r = Cursor::new(
            b"+OK\r\n-LOADING Redis is loading\r\n:10\r\n$5\r\nhel\r\n\r\n$-1\r\n".to_vec(),
        );
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Simple("OK".into()));
        assert_eq!(
            read_reply(&mut r).unwrap(),
            Reply::Error("LOADING Redis is loading".into())
        );
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Integer(10));
        assert_eq!(
            read_reply(&mut r).unwrap(),
            Reply::Bulk(Some(b"hel\r\n".to_vec()))
        );
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Bulk(None));
        assert!(read_reply(&mut r).is_err());
    }

    #[test]
    fn finds_info_fields() {
        let info = "# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:3\r\n";
        assert_eq!(info_field(info, "loading"), Some("0"));
        assert_eq!(info_field(info, "rdb_changes_since_last_save"), Some("3"));
        assert_eq!(info_field(info, "rdb"), None);
    }
}
