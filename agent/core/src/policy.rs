//! What a task does when its agent loses the master, and its time limits. Configured at the
//! master (profiles), carried by every start command; the agent stores no policy of its own.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnDisconnect {
    /// Terminate the task's process group once the master has been silent for the timeout.
    Kill,
    /// Run on; journal events and report them when the master is back.
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub on_disconnect: OnDisconnect,
    pub heartbeat_period_ms: u64,
    pub heartbeat_timeout_ms: u64,
    /// Time between SIGTERM and SIGKILL.
    pub grace_ms: u64,
    /// Terminate the task after this run time; 0 means no limit.
    pub max_run_ms: u64,
    /// Output bytes (stdout + stderr) reported; beyond it output is counted and dropped.
    pub output_cap: u64,
}

/// A policy the agent and master refuse, with the rule it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyError {
    ZeroPeriod,
    /// The timeout must be a whole multiple of the period.
    TimeoutNotMultipleOfPeriod,
    /// The timeout must cover at least two periods.
    TimeoutBelowTwoPeriods,
    ZeroGrace,
}

impl core::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::ZeroPeriod => "heartbeat period must be greater than zero",
            Self::TimeoutNotMultipleOfPeriod => {
                "heartbeat timeout must be a whole multiple of the heartbeat period"
            }
            Self::TimeoutBelowTwoPeriods => {
                "heartbeat timeout must be at least two heartbeat periods"
            }
            Self::ZeroGrace => "grace time must be greater than zero",
        })
    }
}

impl core::error::Error for PolicyError {}

impl Policy {
    /// The defaults: `kill` on loss, period 10 s, timeout 60 s, grace 5 s, no maximum run time,
    /// 1 MiB of output (docs/behaviour.md).
    pub const DEFAULT: Policy = Policy {
        on_disconnect: OnDisconnect::Kill,
        heartbeat_period_ms: 10_000,
        heartbeat_timeout_ms: 60_000,
        grace_ms: 5_000,
        max_run_ms: 0,
        output_cap: 1 << 20,
    };

    pub fn validate(&self) -> Result<(), PolicyError> {
        validate_heartbeat(self.heartbeat_period_ms, self.heartbeat_timeout_ms)?;
        if self.grace_ms == 0 {
            return Err(PolicyError::ZeroGrace);
        }
        Ok(())
    }
}

/// The heartbeat rule: the timeout is a multiple of the period and at least two periods, so a
/// single lost heartbeat never ends a task.
pub fn validate_heartbeat(period_ms: u64, timeout_ms: u64) -> Result<(), PolicyError> {
    if period_ms == 0 {
        return Err(PolicyError::ZeroPeriod);
    }
    if timeout_ms % period_ms != 0 {
        return Err(PolicyError::TimeoutNotMultipleOfPeriod);
    }
    if timeout_ms < period_ms.saturating_mul(2) {
        return Err(PolicyError::TimeoutBelowTwoPeriods);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_values_are_valid() {
        assert_eq!(validate_heartbeat(10_000, 60_000), Ok(()));
        assert_eq!(validate_heartbeat(120_000, 7_200_000), Ok(()));
        assert_eq!(validate_heartbeat(5_000, 10_000), Ok(()));
    }

    #[test]
    fn bad_values_name_the_rule() {
        assert_eq!(validate_heartbeat(0, 10), Err(PolicyError::ZeroPeriod));
        assert_eq!(
            validate_heartbeat(10_000, 25_000),
            Err(PolicyError::TimeoutNotMultipleOfPeriod)
        );
        assert_eq!(
            validate_heartbeat(10_000, 10_000),
            Err(PolicyError::TimeoutBelowTwoPeriods)
        );
        let policy = Policy {
            grace_ms: 0,
            ..Policy::DEFAULT
        };
        assert_eq!(policy.validate(), Err(PolicyError::ZeroGrace));
    }
}
