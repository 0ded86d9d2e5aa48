//! A minimal HTTP/1.1 client for the master's local JSON API (used by `tetherctl` and tests).
//!
//! Hand-rolled over `TcpStream` on purpose: the API is plain HTTP on a LAN or loopback, one
//! request per connection (`Connection: close`), so a full client (TLS, pools, redirects)
//! would only add build time and binary size to a CLI meant for small machines.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response body accepted.
const MAX_RESPONSE: u64 = 64 << 20;

#[derive(Debug)]
pub enum HttpError {
    /// Not `http://host:port[/...]`.
    BadUrl(String),
    Connect(String, io::Error),
    Io(io::Error),
    BadResponse(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadUrl(u) => write!(f, "master URL '{u}' must look like http://host:port"),
            Self::Connect(addr, e) => write!(f, "cannot reach the master at {addr}: {e}"),
            Self::Io(e) => write!(f, "talking to the master: {e}"),
            Self::BadResponse(why) => write!(f, "unexpected answer from the master: {why}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// `host:port` of an `http://` URL.
pub fn authority(url: &str) -> Result<String, HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::BadUrl(url.to_owned()))?;
    let auth = rest.split('/').next().unwrap_or("");
    if auth.is_empty() || !auth.contains(':') {
        return Err(HttpError::BadUrl(url.to_owned()));
    }
    Ok(auth.to_owned())
}

/// One request with the bearer `token` (if any); returns the status and the body.
pub fn request(
    authority: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), HttpError> {
    let mut stream = connect(authority)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(HttpError::Io)?;
    let body = body.unwrap_or("");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n{auth}\
         Accept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).map_err(HttpError::Io)?;
    stream.write_all(body.as_bytes()).map_err(HttpError::Io)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .map_err(HttpError::Io)?;
    parse_response(&raw)
}

/// Tries every address the name resolves to (`localhost` may be `::1` first while the master
/// listens on `127.0.0.1`).
fn connect(authority: &str) -> Result<TcpStream, HttpError> {
    let addrs = authority
        .to_socket_addrs()
        .map_err(|e| HttpError::Connect(authority.to_owned(), e))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => HttpError::Connect(authority.to_owned(), e),
        None => HttpError::BadUrl(authority.to_owned()),
    })
}

fn parse_response(raw: &[u8]) -> Result<(u16, String), HttpError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| HttpError::BadResponse("no end of headers".into()))?;
    let head = std::str::from_utf8(&raw[..split])
        .map_err(|_| HttpError::BadResponse("headers are not text".into()))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| HttpError::BadResponse("no status line".into()))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    let body =
        String::from_utf8(body).map_err(|_| HttpError::BadResponse("body is not UTF-8".into()))?;
    Ok((status, body))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, HttpError> {
    let bad = || HttpError::BadResponse("broken chunked body".into());
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size_text = std::str::from_utf8(&body[..line_end]).map_err(|_| bad())?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad())?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            return Err(bad());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let plain = b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (404, "{}".into()));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, "abcde".into()));
        assert!(parse_response(b"garbage").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            authority("http://127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(authority("http://h:1/x").unwrap(), "h:1");
        assert!(authority("https://h:1").is_err());
        assert!(authority("http://h").is_err());
    }
}
