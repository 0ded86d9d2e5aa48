//! What the agent keeps on disk: the records of its journal.
//!
//! The runtime frames and checksums records; this module fixes what a record says. Replaying
//! the records in order through [`crate::agent::Agent::restore`] rebuilds everything that must
//! survive a restart: the attempts already seen (exactly-once start), orders still held for
//! their start time, attempts that may have been running, the event sequence, and which events
//! the master has acknowledged.

use serde::{Deserialize, Serialize};

use crate::message::{Event, TaskRef, TaskSpec};
use crate::wire::{DecodeError, MAX_MESSAGE};

/// Largest encoded record.
pub const MAX_RECORD: usize = MAX_MESSAGE;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalRecord {
    /// An accepted attempt: seen for good, held or started until it finishes.
    Order(TaskSpec),
    /// The attempt's process is about to be spawned. Written (durably) before the spawn, so a
    /// restarted agent knows it may have run and never starts it again.
    Spawning(TaskRef),
    /// An event for the master, kept until acknowledged.
    Event(Event),
    /// The master has every event up to and including this sequence.
    Acked { up_to: u64 },
    /// An attempt id seen earlier (written by compaction, which drops the records that said so).
    Seen { attempt: u64 },
    /// Attempt ids at or below this were forgotten: such starts are refused as stale.
    Forgotten { below: u64 },
    /// The master's highest command counter accepted, in its epoch: after a restart nothing at
    /// or below it is accepted again (replay protection).
    MasterCounter { epoch: u32, counter: u64 },
    /// The journal's identity (random, not 0), written first in a new journal and kept by
    /// compaction; sent with every event and heartbeat, so the master tells a replaced journal
    /// (a re-flashed board, a restored backup) from the one it knew.
    Identity { journal: u32 },
}

/// Whether the journal may take more records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum JournalLevel {
    #[default]
    Normal,
    /// Nearly full: output chunks are dropped (counted) so results still fit.
    DropOutput,
    /// Full: new tasks are refused, since their results could not be kept.
    Full,
}

/// Encodes a record into `buf`, returning the used prefix.
pub fn encode<'b>(record: &JournalRecord, buf: &'b mut [u8]) -> Result<&'b [u8], DecodeError> {
    postcard::to_slice(record, buf)
        .map(|b| &*b)
        .map_err(|_| DecodeError::Oversized {
            len: u32::try_from(MAX_RECORD).unwrap_or(u32::MAX),
        })
}

/// Decodes exactly one record.
pub fn decode(bytes: &[u8]) -> Result<JournalRecord, DecodeError> {
    if bytes.len() > MAX_RECORD {
        return Err(DecodeError::Oversized {
            len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        });
    }
    let (record, rest) = postcard::take_from_bytes(bytes).map_err(|e| match e {
        postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
        _ => DecodeError::Malformed,
    })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            extra: u32::try_from(rest.len()).unwrap_or(u32::MAX),
        });
    }
    Ok(record)
}
