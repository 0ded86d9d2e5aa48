//! The one random-scenario generator of the agent and system sweeps: a run's broker, link,
//! heartbeat period and disk, then its schedule of link faults, agent crashes, disk losses and
//! stops, master crashes, broker restarts and store outages, with tasks and kills in between.
//! What a task or a kill is differs by master (an agent index and a core policy for the
//! scripted master, a target and policy overrides for the real one), so the caller draws and
//! submits those; everything else is drawn here, from the caller's `Rng`, in a fixed order, so
//! a seed replays.

use tether_core::{Duration, Instant};

use super::broker::BrokerConfig;
use super::link::{Fault, LinkConfig};
use super::rng::Rng;
use super::world::{Outage, Step, Who, WorldConfig};

/// Draws the run's broker, link, master heartbeat period (one of `periods_s`) and disk.
pub fn config(rng: &mut Rng, config: &mut WorldConfig, periods_s: &[u64]) {
    config.broker = match rng.below(3) {
        0 => BrokerConfig::rumqttd(),
        1 => BrokerConfig::mosquitto(),
        _ => BrokerConfig::duplicating(),
    };
    config.link = LinkConfig {
        latency: rng.range_ms(1, 40),
        jitter: rng.range_ms(0, 20),
        ..LinkConfig::default()
    };
    let period_s = *rng.pick(periods_s).unwrap_or(&5);
    config.master_period = Duration::from_secs(period_s);
    config.disk_delay = (rng.range_ms(0, 2), rng.range_ms(2, 60));
}

/// What the generator asks of its caller, and where its steps go.
pub trait Script<O> {
    /// A task for `agent` (or the caller's choice of target), submitted at `at`.
    fn task(&mut self, rng: &mut Rng, at: Instant, agent: usize);
    /// A kill of one of the tasks submitted so far, at `at`.
    fn kill(&mut self, rng: &mut Rng, at: Instant);
    fn schedule(&mut self, at: Instant, step: Step<O>);
}

/// Draws events every 0.5-12 s from 1 s to `end`, for `agents` agents: two in five are tasks,
/// the rest faults of every kind, each undone a random while later. Store outages draw their
/// details from a stream of their own (from `seed`), so adding them left every other draw of a
/// seed as it was and the regression tests pinned to seeds still replay their scenarios.
pub fn schedule<O>(
    rng: &mut Rng,
    seed: u64,
    agents: usize,
    end: Instant,
    script: &mut impl Script<O>,
) {
    let mut outages = Rng::new(seed ^ 0x5707_a6e5);
    let mut at = Instant::from_secs(1);
    loop {
        at = at.saturating_add(rng.range_ms(500, 12_000));
        if at >= end {
            return;
        }
        let agent = rng.below(agents as u64) as usize;
        let who = match rng.below(agents as u64 + 2) {
            0 => Who::Master,
            1 => Who::Everyone,
            n => Who::Agent(n as usize - 2),
        };
        match rng.below(20) {
            0..=7 => script.task(rng, at, agent),
            8..=10 => {
                let fault = Fault::random(rng);
                script.schedule(at, Step::Fault(who, fault));
                let heal = at.saturating_add(rng.range_ms(1_000, 120_000));
                script.schedule(heal, Step::Fault(who, Fault::Up));
            }
            11 => script.kill(rng, at),
            12 | 13 => {
                // Rarely the storage dies too: invariants 1 and 2 then exclude that agent.
                let down = if rng.chance(0.05) {
                    Step::LoseAgentDisk(agent)
                } else if rng.chance(0.3) {
                    Step::StopAgent(agent, rng.range_ms(0, 60_000))
                } else {
                    Step::CrashAgent(agent)
                };
                script.schedule(at, down);
                let back = at.saturating_add(rng.range_ms(0, 90_000));
                script.schedule(back, Step::RestartAgent(agent));
            }
            14..=16 => {
                script.schedule(at, Step::MasterDown);
                let back = at.saturating_add(rng.range_ms(0, 150_000));
                script.schedule(back, Step::MasterUp);
            }
            17 => script.schedule(at, Step::RestartBroker),
            18 => {
                // The master's database fails under it (nothing for a scripted master).
                let outage = if outages.chance(0.5) {
                    Outage::Unreachable
                } else {
                    Outage::RefusesWrites
                };
                script.schedule(at, Step::Store(Some(outage)));
                let back = at.saturating_add(outages.range_ms(500, 60_000));
                script.schedule(back, Step::Store(None));
            }
            _ => {}
        }
    }
}
