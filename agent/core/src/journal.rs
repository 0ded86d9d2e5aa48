//! What the agent keeps on disk: the records of its journal.
//!
//! The runtime frames and checksums records; this module fixes what a record says. Replaying
//! the records in order through [`crate::agent::Agent::restore`] rebuilds everything that must
//! survive a restart: the attempts already seen (exactly-once start), orders still held for
//! their start time or their predecessor's end, attempts that may have been running, the event
//! sequence, which events the master has acknowledged, the schedule hand-overs held with the
//! watermark of each schedule (exactly-once occurrences), and the clock's anchor (a time the
//! agent trusted, below which it trusts no clock after a restart).
//!
//! Records are postcard enums, numbered by position: new variants are appended at the end, so
//! an older journal still decodes.

use serde::{Deserialize, Serialize};

use crate::message::{After, Event, ScheduleSpec, TaskRef, TaskSpec};
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
    /// The chained order of `task` (its `Order` record just before) waits for `after`'s attempt
    /// to end. Its wait ends with the predecessor's `Finished` event, replayed; compaction
    /// writes it again for an order still waiting.
    After { task: TaskRef, after: After },
    /// A schedule hand-over accepted ([`crate::message::CommandBody::Schedule`]): held until
    /// every occurrence has been started or reported missed, or a `Finished` event of its ids
    /// (withdrawn, replaced) ends it. Compaction writes it again while it is held.
    Handover(ScheduleSpec),
    /// The watermark of schedule `schedule`: the time of its latest occurrence started or
    /// reported missed; no occurrence at or before it starts again, whatever the hand-over.
    /// Written by compaction for the watermarks kept ([`crate::agent::WATERMARKS`]); between
    /// compactions the records that decide an occurrence carry it (its `Order`, whose ids name
    /// the occurrence, and the `Missed` event), so no torn tail separates the two.
    Fired { schedule: u64, at_unix_ms: u64 },
    /// A wall-clock time the agent trusted: after a restart a clock reading earlier than the
    /// highest anchor is not trusted (a clock set back). Written when trust is established and
    /// then at most once per hour of trusted time; compaction keeps the highest.
    ClockAnchor { unix_ms: u64 },
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

/// Output is dropped once the journal is filled beyond this share (numerator, denominator).
const DROP_OUTPUT_FILL: (u64, u64) = (3, 4);
/// Results of this many tasks beyond the ones that may run fit in the reserve.
const RESERVE_MARGIN: u64 = 4;
/// Journal bytes one result record takes at most (a `Terminating` or `Finished` event, with the
/// runtime's framing); checked by a test against the largest such record.
pub const RESULT_RECORD: u64 = 128;
/// The journal holds at least this many reserves, so output is dropped (beyond 3/4 full) well
/// before starts are refused.
const MIN_RESERVES: u64 = 4;

/// Rejections a full journal still answers (each a result record); beyond them a start is left
/// unanswered, and the master sends it again later.
const REJECTIONS: u64 = 32;

/// Bytes no rejection may take: two result records (`Terminating`, `Finished`) for every task
/// that may run and a margin, plus one largest record (the order that may be accepted last).
pub const fn results_reserve_bytes(max_tasks: usize) -> u64 {
    (max_tasks as u64 + RESERVE_MARGIN) * 2 * RESULT_RECORD + MAX_RECORD as u64
}

/// Bytes kept free when new starts are refused: the results' reserve and room to answer
/// [`REJECTIONS`] starts with a rejection.
pub const fn reserve_bytes(max_tasks: usize) -> u64 {
    results_reserve_bytes(max_tasks) + REJECTIONS * RESULT_RECORD
}

/// The smallest journal that drops output before it refuses starts, for `max_tasks`.
pub const fn min_journal_bytes(max_tasks: usize) -> u64 {
    MIN_RESERVES * reserve_bytes(max_tasks)
}
/// A compaction pays off once the reclaimable part is at least this share of the journal...
const COMPACT_SHARE: (u64, u64) = (1, 2);
/// ... and at least this large (a rewrite is not free on an SD card).
const COMPACT_MIN_BYTES: u64 = 64 * 1024;
/// Under pressure a compaction pays off for this share of the cap.
const PRESSED_COMPACT_SHARE: u64 = 8;

/// The journal's size as the runtime measured it, after appends, syncs and compactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JournalUsage {
    /// Bytes the journal holds on disk, framing included.
    pub bytes: u64,
    /// The configured cap.
    pub max_bytes: u64,
    /// Bytes (framing included) of the unacknowledged events, which a compaction keeps.
    pub unacked_bytes: u64,
}

impl JournalUsage {
    /// The level for an agent that runs up to `max_tasks` attempts at once: room must stay for
    /// each one's result (and its `Spawning` record), plus a margin.
    pub fn level(&self, max_tasks: usize) -> JournalLevel {
        let reserve = reserve_bytes(max_tasks);
        let free = self.max_bytes.saturating_sub(self.bytes);
        if free < reserve {
            JournalLevel::Full
        } else if self.bytes.saturating_mul(DROP_OUTPUT_FILL.1)
            > self.max_bytes.saturating_mul(DROP_OUTPUT_FILL.0)
        {
            JournalLevel::DropOutput
        } else {
            JournalLevel::Normal
        }
    }

    /// Whether a rejection may still be journaled: never into the results' reserve, so a flood
    /// of starts while the journal is full cannot take the room of a running task's result.
    pub fn rejection_fits(&self, max_tasks: usize) -> bool {
        let free = self.max_bytes.saturating_sub(self.bytes);
        free >= results_reserve_bytes(max_tasks) + RESULT_RECORD
    }

    /// Whether rewriting the journal as a snapshot plus the unacknowledged events pays off at
    /// this level. Under pressure it compacts for less: a journal capped near its minimum never
    /// reaches the normal threshold and would stay full after the master acknowledged it all.
    pub fn worth_compacting(&self, level: JournalLevel) -> bool {
        let reclaimable = self.bytes.saturating_sub(self.unacked_bytes);
        let worth_it = reclaimable.saturating_mul(COMPACT_SHARE.1)
            >= self.bytes.saturating_mul(COMPACT_SHARE.0)
            && reclaimable > COMPACT_MIN_BYTES;
        let pressed =
            level != JournalLevel::Normal && reclaimable >= self.max_bytes / PRESSED_COMPACT_SHARE;
        worth_it || pressed
    }
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
