//! What the master can hold: the range of every number a request or an agent message carries.
//!
//! Every value is checked against these before the core queues a change, so a batch never
//! fails to commit because of one request's data (the stores keep integers as signed 64-bit;
//! an unchecked `u64` above `i64::MAX` would make the commit fail). The ranges are also what
//! makes sense for a fleet: a 1 ms heartbeat or a start in the year 584,556 is a mistake, and
//! the answer says which field and what its range is.

use tether_core::message::{AgentHeartbeat, Event, EventKind};

use crate::model::Invalid;

/// The largest integer every store keeps (signed 64-bit columns).
pub const MAX_STORED: u64 = i64::MAX as u64;

/// Ids of tasks and attempts are store row ids: 1 to [`MAX_STORED`].
pub const MAX_ID: u64 = MAX_STORED;

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;

/// An inclusive range of one field, with the unit people read in the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub field: &'static str,
    pub min: u64,
    pub max: u64,
}

impl Range {
    /// `value` if it is within the range, else which field and what its range is.
    pub fn check(self, value: u64) -> Result<u64, Invalid> {
        if (self.min..=self.max).contains(&value) {
            Ok(value)
        } else {
            Err(Invalid::new(
                self.field,
                format!(
                    "{} is {value}, outside {}..={}",
                    self.field, self.min, self.max
                ),
            ))
        }
    }
}

/// Heartbeats faster than 10 per second would flood the broker for nothing; the slowest is a
/// day (an agent that is heard from less than daily cannot be told from a lost one).
pub const HEARTBEAT_PERIOD_MS: Range = Range {
    field: "heartbeat_period_ms",
    min: 100,
    max: DAY_MS,
};

/// Up to 30 days of silence before a `kill` task is given up.
pub const HEARTBEAT_TIMEOUT_MS: Range = Range {
    field: "heartbeat_timeout_ms",
    min: 200,
    max: 30 * DAY_MS,
};

/// Between SIGTERM and SIGKILL.
pub const GRACE_MS: Range = Range {
    field: "grace_ms",
    min: 1,
    max: DAY_MS,
};

/// 0 means no limit; otherwise up to a year.
pub const MAX_RUN_MS: Range = Range {
    field: "max_run_ms",
    min: 0,
    max: 366 * DAY_MS,
};

/// Output kept per attempt and stream: up to 1 GiB.
pub const OUTPUT_CAP: Range = Range {
    field: "output_cap",
    min: 0,
    max: 1 << 30,
};

/// Further attempts after a failed one.
pub const RETRIES: Range = Range {
    field: "retries",
    min: 0,
    max: 1_000,
};

/// How late a schedule's occurrence may still start: up to a day.
pub const LATE_MS: Range = Range {
    field: "late_ms",
    min: 0,
    max: DAY_MS,
};

/// The wait before a workflow step's retry: up to a day.
pub const RETRY_DELAY_MS: Range = Range {
    field: "retry_delay_ms",
    min: 0,
    max: DAY_MS,
};

/// Rescheduling a `continue` task after its agent has been unreachable: up to a year (zero is
/// refused by the core's own rule, with its own explanation).
pub const LOST_AFTER_MS: Range = Range {
    field: "lost_after_ms",
    min: 0,
    max: 366 * DAY_MS,
};

/// A start time in Unix milliseconds: up to the end of the year 9999.
pub const START_AT_MS: Range = Range {
    field: "start_at_ms",
    min: 0,
    max: 253_402_300_799_999,
};

/// An id taken from a request (a path segment, a body field): 1 to [`MAX_ID`].
pub fn check_id(field: &'static str, id: u64) -> Result<u64, Invalid> {
    Range {
        field,
        min: 1,
        max: MAX_ID,
    }
    .check(id)
}

/// A number an agent reported (sequence numbers, offsets, byte counts, times): what a store
/// can keep. Agents are authenticated, but a bug in one must not stop the master.
pub fn storable(field: &'static str, value: u64) -> Result<u64, Invalid> {
    Range {
        field,
        min: 0,
        max: MAX_STORED,
    }
    .check(value)
}

/// Every number of an agent's event that the store keeps: sequence, time, ids, offsets and
/// byte counts. The first one out of range is named.
pub fn check_event(event: &Event) -> Result<(), Invalid> {
    storable("seq", event.seq)?;
    storable("at_unix_ms", event.at_unix_ms)?;
    if let Some(task) = event.kind.task() {
        storable("task", task.task)?;
        storable("attempt", task.attempt)?;
    }
    match &event.kind {
        EventKind::Output { offset, data, .. } => {
            let end = offset.checked_add(data.len() as u64).unwrap_or(u64::MAX);
            storable("output offset", end).map(drop)
        }
        EventKind::Finished { output_dropped, .. } => {
            storable("output_dropped", *output_dropped).map(drop)
        }
        EventKind::BadCommand { count, .. } => storable("count", *count).map(drop),
        _ => Ok(()),
    }
}

/// The numbers of an agent heartbeat that reach the store.
pub fn check_heartbeat(hb: &AgentHeartbeat) -> Result<(), Invalid> {
    storable("last_seq", hb.last_seq)?;
    storable("journal_bytes", hb.journal_bytes)?;
    for task in &hb.tasks {
        storable("task", task.task)?;
        storable("attempt", task.attempt)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_names_the_field_and_its_bounds() {
        assert_eq!(HEARTBEAT_PERIOD_MS.check(1_000), Ok(1_000));
        let err = HEARTBEAT_PERIOD_MS.check(1).unwrap_err();
        assert_eq!(err.field, "heartbeat_period_ms");
        assert_eq!(
            err.reason,
            "heartbeat_period_ms is 1, outside 100..=86400000"
        );
        assert!(START_AT_MS.check(u64::MAX).is_err());
        assert!(START_AT_MS.check(1 << 63).is_err());
        assert!(check_id("task", 0).is_err());
        assert!(check_id("task", MAX_ID + 1).is_err());
        assert_eq!(storable("seq", MAX_STORED), Ok(MAX_STORED));
        assert!(storable("seq", MAX_STORED + 1).is_err());
    }
}
