//! `tetherctl decode`: `mosquitto_sub -F '%t %x'` lines (topic, hex payload) as JSON lines,
//! through tether-core's own decoders. It shows what is on the wire; it checks no signature.

use std::io::{self, BufRead, Write};

use serde_json::{Value, json};
use tether_core::presence::Presence;
use tether_core::topic::Topic;
use tether_core::wire;

use crate::client::Failure;

/// One `mosquitto_sub -F '%t %x'` line as JSON.
pub(crate) fn decode_line(prefix: &str, line: &str) -> Value {
    let (topic, hex) = line.split_once(' ').unwrap_or((line, ""));
    let hex = hex.trim();
    let payload = match unhex(hex) {
        Some(p) => p,
        None => return json!({ "topic": topic, "error": "payload is not hex (use -F '%t %x')" }),
    };
    match Topic::parse(prefix, topic) {
        Ok(Topic::AgentPresence(_) | Topic::MasterPresence) => {
            let text = String::from_utf8_lossy(&payload).into_owned();
            match Presence::parse(&payload) {
                Ok(p) => json!({
                    "topic": topic,
                    "presence": text,
                    "state": match p.state {
                        tether_core::presence::State::Online => "online",
                        tether_core::presence::State::Lost => "lost",
                        tether_core::presence::State::Stopped => "stopped",
                    },
                    "incarnation": format!("{:08x}", p.incarnation),
                    "tagged": text.split(' ').next_back().is_some_and(|w| w.len() >= 32),
                }),
                Err(e) if payload.is_empty() => {
                    json!({ "topic": topic, "presence": "", "note": format!("cleared ({e})") })
                }
                Err(e) => json!({ "topic": topic, "presence": text, "error": e.to_string() }),
            }
        }
        _ => match wire::decode_envelope(&payload) {
            Ok((msg, scheme)) => match serde_json::to_value(&msg) {
                // The trailer is shown, not checked: decode reads, it does not trust.
                Ok(m) => json!({ "topic": topic, "auth": format!("{scheme:?}"), "message": m }),
                Err(e) => json!({ "topic": topic, "error": e.to_string() }),
            },
            Err(e) => json!({ "topic": topic, "error": e.to_string(), "bytes": payload.len() }),
        },
    }
}

fn unhex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(crate) fn decode(prefix: &str) -> Result<(), Failure> {
    tether_core::topic::validate_prefix(prefix).map_err(|e| Failure(format!("--prefix: {e}")))?;
    let stdin = io::stdin().lock();
    let mut out = io::stdout().lock();
    for line in stdin.lines() {
        let line = line?;
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        writeln!(out, "{}", decode_line(prefix, line))?;
        // One line per message as it arrives: a pipe from mosquitto_sub is read live.
        out.flush()?;
    }
    Ok(())
}
