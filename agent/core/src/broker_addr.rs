//! Broker addresses: the one parser behind the agent's `brokers`, the master's `--broker` and
//! `tetherctl provision --broker`, so that what one accepts the others accept too.
//!
//! It lives in the core rather than in tether-tls: it is pure string work that needs neither std
//! nor an allocation (the parsed host borrows from the input), every program that reads an
//! address already depends on the core, and whether an address is TLS is decided here, before
//! any TLS code is involved.
//!
//! Accepted forms, with surrounding whitespace ignored:
//!
//! - `host:port`: plain MQTT. Without a scheme the port is required, since only a scheme says
//!   which default port is meant.
//! - `mqtt://host[:port]` (alias `tcp://`): plain MQTT, port 1883 by default.
//! - `mqtts://host[:port]` (alias `ssl://`): MQTT over TLS, port 8883 by default.
//!
//! Schemes are case-insensitive. The host is a name or IPv4 address of `[A-Za-z0-9._-]`
//! starting with a letter or digit (at most 253 bytes), or an IPv6 address in brackets
//! (`[::1]:1883`). The port is decimal digits in 1-65535. One trailing `/` is tolerated (it is
//! what a pasted URL has); paths, queries, fragments and `user:password@` are refused.

use core::fmt;
use core::net::Ipv6Addr;

/// Port of `mqtt://` when none is given.
pub const DEFAULT_PORT: u16 = 1883;
/// Port of `mqtts://` when none is given.
pub const DEFAULT_TLS_PORT: u16 = 8883;

/// Longest host name DNS allows.
const MAX_HOST_LEN: usize = 253;

/// A parsed broker address; its host borrows from the parsed text.
///
/// `Display` writes `mqtt://host:port` or `mqtts://host:port` (IPv6 in brackets), which parses
/// back to the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BrokerAddr<'a> {
    /// `mqtts://`: the connection is TLS and `host` is the name checked in the certificate.
    pub tls: bool,
    /// Host name or IP address, IPv6 without its brackets.
    pub host: &'a str,
    pub port: u16,
}

/// Why a broker address was refused. Payloads are the offending part of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerAddrError<'a> {
    /// Nothing but whitespace.
    Empty,
    /// A scheme other than mqtt, mqtts, tcp, ssl, ws, wss.
    UnknownScheme(&'a str),
    /// `ws://`, `wss://`: MQTT over websockets is not built in.
    UnsupportedScheme(&'a str),
    /// `user:password@host`: credentials come from the configuration, not the address.
    CredentialsInUrl,
    /// A path, query or fragment after the address (or text after `[ipv6]`).
    TrailingPart(&'a str),
    /// An empty host (`:1883`, `mqtt://`).
    MissingHost,
    /// Not a host name, or an unbracketed or invalid IPv6 address.
    InvalidHost(&'a str),
    /// `host` alone, with neither a scheme nor a port.
    MissingPort,
    /// Not decimal digits in 1-65535.
    InvalidPort(&'a str),
}

impl fmt::Display for BrokerAddrError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty: not `host:port` or mqtt://host:port"),
            Self::UnknownScheme(s) => write!(f, "scheme `{s}` is not mqtt or mqtts"),
            Self::UnsupportedScheme(s) => write!(
                f,
                "scheme `{s}` is not mqtt or mqtts (websockets are not built in)"
            ),
            Self::CredentialsInUrl => f.write_str(
                "`user:password@` in the address: broker credentials belong in the \
                 configuration",
            ),
            Self::TrailingPart(t) => write!(
                f,
                "`{t}` after host:port: a broker address has no path, query or fragment"
            ),
            Self::MissingHost => f.write_str("no host: not `host:port` or mqtt://host:port"),
            Self::InvalidHost(h) => write!(
                f,
                "`{h}` is not a host name ([A-Za-z0-9._-]) or an IPv6 address in brackets \
                 ([::1]:1883): not `host:port`"
            ),
            Self::MissingPort => f.write_str(
                "no port: not `host:port` or mqtt://host:port (only a scheme implies a \
                 default port)",
            ),
            Self::InvalidPort(p) => write!(f, "port `{p}` is not in 1-65535"),
        }
    }
}

impl core::error::Error for BrokerAddrError<'_> {}

impl<'a> BrokerAddr<'a> {
    /// Parses one broker address (the forms are in the module documentation).
    pub fn parse(input: &'a str) -> Result<Self, BrokerAddrError<'a>> {
        let s = input.trim();
        if s.is_empty() {
            return Err(BrokerAddrError::Empty);
        }
        let (tls, rest, default_port) = match s.split_once("://") {
            None => (false, s, None),
            Some((scheme, rest)) => {
                let is = |name: &str| scheme.eq_ignore_ascii_case(name);
                if is("mqtt") || is("tcp") {
                    (false, rest, Some(DEFAULT_PORT))
                } else if is("mqtts") || is("ssl") {
                    (true, rest, Some(DEFAULT_TLS_PORT))
                } else if is("ws") || is("wss") {
                    return Err(BrokerAddrError::UnsupportedScheme(scheme));
                } else {
                    return Err(BrokerAddrError::UnknownScheme(scheme));
                }
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if let Some(i) = rest.find(['/', '?', '#']) {
            return Err(BrokerAddrError::TrailingPart(&rest[i..]));
        }
        if rest.contains('@') {
            return Err(BrokerAddrError::CredentialsInUrl);
        }
        let (host, port) = match rest.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed
                    .split_once(']')
                    .ok_or(BrokerAddrError::InvalidHost(rest))?;
                if host.is_empty() {
                    return Err(BrokerAddrError::MissingHost);
                }
                if host.parse::<Ipv6Addr>().is_err() {
                    return Err(BrokerAddrError::InvalidHost(host));
                }
                let port = match after {
                    "" => None,
                    p => Some(
                        p.strip_prefix(':')
                            .ok_or(BrokerAddrError::TrailingPart(p))?,
                    ),
                };
                (host, port)
            }
            None => {
                let (host, port) = match rest.rsplit_once(':') {
                    // IPv6 without brackets: its last group cannot be told from a port.
                    Some((h, _)) if h.contains(':') => {
                        return Err(BrokerAddrError::InvalidHost(rest));
                    }
                    Some((h, p)) => (h, Some(p)),
                    None => (rest, None),
                };
                if host.is_empty() {
                    return Err(BrokerAddrError::MissingHost);
                }
                if !is_host_name(host) {
                    return Err(BrokerAddrError::InvalidHost(host));
                }
                (host, port)
            }
        };
        let port = match (port, default_port) {
            (Some(p), _) => parse_port(p)?,
            (None, Some(default)) => default,
            (None, None) => return Err(BrokerAddrError::MissingPort),
        };
        Ok(Self { tls, host, port })
    }
}

impl fmt::Display for BrokerAddr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// A DNS name or IPv4 address as people write them (`_` included: it occurs in LAN names).
fn is_host_name(host: &str) -> bool {
    host.len() <= MAX_HOST_LEN
        && host.starts_with(|c: char| c.is_ascii_alphanumeric())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Digits only: `u16::from_str` would also take a leading `+`.
fn parse_port(p: &str) -> Result<u16, BrokerAddrError<'_>> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(BrokerAddrError::InvalidPort(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BrokerAddrError as E;

    fn addr(tls: bool, host: &str, port: u16) -> BrokerAddr<'_> {
        BrokerAddr { tls, host, port }
    }

    #[test]
    fn accepted() {
        for (input, want) in [
            ("10.0.0.2:1883", addr(false, "10.0.0.2", 1883)),
            ("backup.lan:8883", addr(false, "backup.lan", 8883)),
            ("[::1]:1883", addr(false, "::1", 1883)),
            ("mqtt://localhost:1884", addr(false, "localhost", 1884)),
            ("mqtt://broker.lan", addr(false, "broker.lan", 1883)),
            ("mqtt://broker.lan/", addr(false, "broker.lan", 1883)),
            ("tcp://10.0.0.2", addr(false, "10.0.0.2", 1883)),
            ("MQTT://h:1", addr(false, "h", 1)),
            ("mqtts://h", addr(true, "h", 8883)),
            ("mqtts://h:8884", addr(true, "h", 8884)),
            ("ssl://h", addr(true, "h", 8883)),
            ("MqTtS://[fe80::1]", addr(true, "fe80::1", 8883)),
            (
                "mqtts://[2001:db8::2]:9000",
                addr(true, "2001:db8::2", 9000),
            ),
            ("  h:65535\n", addr(false, "h", 65535)),
            ("pi_kitchen-2.lan:1", addr(false, "pi_kitchen-2.lan", 1)),
            ("h:01883", addr(false, "h", 1883)),
        ] {
            assert_eq!(BrokerAddr::parse(input), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn refused() {
        for (input, want) in [
            ("", E::Empty),
            ("   ", E::Empty),
            ("http://h", E::UnknownScheme("http")),
            ("://h:1", E::UnknownScheme("")),
            ("ws://h:1", E::UnsupportedScheme("ws")),
            ("wss://h:8883", E::UnsupportedScheme("wss")),
            ("mqtt://u:p@h", E::CredentialsInUrl),
            ("u@h:1", E::CredentialsInUrl),
            ("mqtt://h:1/x", E::TrailingPart("/x")),
            ("mqtt://h?x=1", E::TrailingPart("?x=1")),
            ("h:1#f", E::TrailingPart("#f")),
            ("h:1//", E::TrailingPart("/")),
            ("mqtt://[::1]x", E::TrailingPart("x")),
            (":1883", E::MissingHost),
            ("mqtt://", E::MissingHost),
            ("mqtt://:1883", E::MissingHost),
            ("[]:1", E::MissingHost),
            ("::1:1883", E::InvalidHost("::1:1883")),
            ("mqtt://a b", E::InvalidHost("a b")),
            ("mqtt://[zz]:1", E::InvalidHost("zz")),
            ("[::1:1883", E::InvalidHost("[::1:1883")),
            ("-h:1", E::InvalidHost("-h")),
            ("h\":1", E::InvalidHost("h\"")),
            ("nohost", E::MissingPort),
            ("h:0", E::InvalidPort("0")),
            ("h:65536", E::InvalidPort("65536")),
            ("mqtt://h:+1", E::InvalidPort("+1")),
            ("h:", E::InvalidPort("")),
            ("mqtt://h:x", E::InvalidPort("x")),
        ] {
            assert_eq!(BrokerAddr::parse(input), Err(want), "{input:?}");
        }
        let long = [b'a'; MAX_HOST_LEN + 1];
        let long = core::str::from_utf8(&long).unwrap();
        assert_eq!(BrokerAddr::parse(long), Err(E::InvalidHost(long)));
    }

    /// Formats into a fixed buffer (no alloc in the core, not even in its tests).
    fn format<'b>(a: &BrokerAddr<'_>, buf: &'b mut heapless::String<300>) -> &'b str {
        use core::fmt::Write as _;
        buf.clear();
        write!(buf, "{a}").unwrap();
        buf.as_str()
    }

    #[test]
    fn display_parses_back_to_the_same_address() {
        let mut buf = heapless::String::new();
        for input in [
            "h:1",
            "mqtts://h",
            "[::1]:1883",
            "ssl://[fe80::1]:2",
            "MQTT://x.y/",
        ] {
            let a = BrokerAddr::parse(input).unwrap();
            assert_eq!(BrokerAddr::parse(format(&a, &mut buf)), Ok(a), "{input}");
        }
        assert_eq!(
            format(&addr(true, "::1", 8883), &mut buf),
            "mqtts://[::1]:8883"
        );
    }
}
