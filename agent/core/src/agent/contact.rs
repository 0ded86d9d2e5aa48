//! Contact with the broker and the master: connecting, the heartbeats both ways (our period,
//! the master's, the echo it looks for), presence (ours, the will, the master's) and the quick
//! answers after a gap in contact.

use embassy_time::{Duration, Instant};
use heapless::{String, Vec};

use super::{Action, Agent, Auth, DEFAULT_PERIOD, PUBLISH_MAX};
use crate::auth::Verifier;
use crate::message::{AgentHeartbeat, Echo, HEARTBEAT_TASKS, MasterHeartbeat, Message};
use crate::millis;
use crate::presence::{MAX_PRESENCE, Presence, State};
use crate::topic::QoS;
use crate::wire;

/// The MQTT keepalive is this many heartbeat periods, within these bounds (see
/// [`Agent::keepalive`]).
const KEEPALIVE_PERIODS: u32 = 2;
const KEEPALIVE_MIN: Duration = Duration::from_secs(5);
const KEEPALIVE_MAX: Duration = Duration::from_secs(600);
const MIN_PERIOD: Duration = millis::duration(100);
/// How long after a gap in contact the master's heartbeats are answered early, and how soon.
const REJOIN_WINDOW: Duration = Duration::from_secs(2);
const REJOIN_ANSWER_DELAY: Duration = millis::duration(100);

#[derive(Debug)]
pub(super) struct Contact {
    pub(super) connected: bool,
    pub(super) last_contact: Instant,
    pub(super) master_epoch: Option<u32>,
    pub(super) master_period: Duration,
    pub(super) master_presence: Option<Presence>,
    pub(super) next_heartbeat: Option<Instant>,
    /// Until when master heartbeats are answered early ([`Agent::rejoining`]).
    pub(super) rejoin_until: Option<Instant>,
    /// Our heartbeats so far (this incarnation), and the master heartbeat they echo.
    pub(super) heartbeats: u32,
    pub(super) echo: Option<Echo>,
    /// The master has not seen a fresh echo from this connection (or of its current epoch):
    /// answer its next heartbeat at once, so it counts us as alive without waiting a period.
    pub(super) echo_owed: bool,
}

impl Contact {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            connected: false,
            last_contact: now,
            master_epoch: None,
            master_period: DEFAULT_PERIOD,
            master_presence: None,
            next_heartbeat: None,
            rejoin_until: None,
            heartbeats: 0,
            echo: None,
            echo_owed: true,
        }
    }
}

impl<const TASKS: usize, const SEEN: usize> Agent<TASKS, SEEN> {
    /// The MQTT keepalive to connect with: two heartbeat periods, so heartbeats keep the link
    /// busy and pings are rare (the client's timer wakes the board only every other period),
    /// while the broker still fires the will three periods into a silent link. The agent's own
    /// heartbeat timeouts, not the keepalive, decide what happens to tasks.
    pub fn keepalive(&self) -> Duration {
        (self.heartbeat_period() * KEEPALIVE_PERIODS).clamp(KEEPALIVE_MIN, KEEPALIVE_MAX)
    }

    /// The last will to register at connect: retained `offline <inc> lost <mac>` on our
    /// presence topic.
    pub fn will(&self) -> (&str, String<MAX_PRESENCE>) {
        let will = Presence {
            state: State::Lost,
            incarnation: self.incarnation,
        };
        let topic = &self.topics.presence;
        (topic, will.render_signed(topic, self.signer()))
    }

    /// The heartbeat period in force: the master's, or shorter if a task asks for it.
    pub fn heartbeat_period(&self) -> Duration {
        self.slots
            .iter()
            .map(|s| millis::duration(s.spec.policy.heartbeat_period_ms))
            .fold(self.contact.master_period, Duration::min)
            .max(MIN_PERIOD)
    }

    /// The broker accepted our connection (CONNACK) and subscriptions are being made.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.stopped {
            return;
        }
        self.contact.connected = true;
        self.log.sent_seq = self.log.acked_seq;
        self.log.ack_deadline = None;
        self.contact.echo_owed = true;
        self.publish_presence(State::Online);
        self.publish_heartbeat(now);
        self.maybe_send(now);
    }

    pub fn handle_disconnected(&mut self, _now: Instant) {
        self.contact.connected = false;
        self.contact.next_heartbeat = None;
        self.log.ack_deadline = None;
    }

    /// An authentic, fresh master heartbeat (the inbox checked both): contact, the master's
    /// period, and our answer.
    pub(super) fn handle_master_heartbeat(&mut self, now: Instant, hb: &MasterHeartbeat) {
        let rejoining = self.rejoining(now);
        self.heard_from_master(now);
        let contact = &mut self.contact;
        if contact.master_epoch != Some(hb.epoch) {
            contact.echo_owed = true;
        }
        contact.master_epoch = Some(hb.epoch);
        contact.echo = Some(hb.echo());
        contact.master_period = millis::duration(hb.period_ms).max(MIN_PERIOD);
        self.rearm_heartbeat(now);
        // Answer in the same wake-up when ours is due within half a period: an idle agent then
        // wakes about once per period, not twice.
        let half = self.heartbeat_period() / 2;
        let contact = &mut self.contact;
        if rejoining {
            contact.echo_owed = false;
            let answer = now.saturating_add(REJOIN_ANSWER_DELAY);
            contact.next_heartbeat = Some(contact.next_heartbeat.map_or(answer, |t| t.min(answer)));
        } else if core::mem::take(&mut contact.echo_owed)
            || contact
                .next_heartbeat
                .is_some_and(|t| t <= now.saturating_add(half))
        {
            self.publish_heartbeat(now);
        }
    }

    /// Back from a gap in contact (a freeze, a cut, the master away), the master's heartbeats
    /// are answered shortly, not at our next period, for a little while: the master then sees
    /// within a round trip that we are here. Shortly, not at once: a backlog of heartbeats
    /// queued during a freeze drains first, and the answer echoes the newest (the master
    /// answers a stale echo with an early heartbeat of its own, which we answer too).
    fn rejoining(&mut self, now: Instant) -> bool {
        let expected = self.contact.master_period.max(self.heartbeat_period());
        let gap = self
            .contact
            .last_contact
            .saturating_add(expected + expected / 2);
        if now > gap {
            self.contact.rejoin_until = Some(now.saturating_add(REJOIN_WINDOW));
        }
        self.contact.rejoin_until.is_some_and(|t| now <= t)
    }

    /// An authentic word from the master (a fresh heartbeat or a command).
    pub(super) fn heard_from_master(&mut self, now: Instant) {
        self.contact.last_contact = self.contact.last_contact.max(now);
    }

    /// Our own retained presence, as the broker holds it.
    pub(super) fn check_own_presence(&mut self, payload: &[u8]) {
        let own = match &self.auth {
            Auth::Keys { agent, .. } => Verifier::Agent(agent),
            Auth::Insecure => Verifier::Insecure,
        };
        let ours = Presence::parse_verified(payload, &self.topics.presence, own)
            .is_ok_and(|p| p.state == State::Online && p.incarnation == self.incarnation);
        // The broker may have fired a stale will over our live session (rumqttd quick-reconnect
        // quirk): say again that we are here.
        if !ours && self.contact.connected && self.stopping.is_none() {
            self.stats.presence_repairs += 1;
            self.publish_presence(State::Online);
        }
    }

    pub(super) fn publish_presence(&mut self, state: State) {
        let text = Presence {
            state,
            incarnation: self.incarnation,
        }
        .render_signed(&self.topics.presence, self.signer());
        let mut payload = Vec::new();
        let _ = payload.extend_from_slice(text.as_bytes());
        let topic = self.topics.presence.clone();
        self.push(Action::Publish {
            topic,
            payload,
            qos: QoS::AtLeastOnce,
            retain: true,
        });
    }

    pub(super) fn publish_heartbeat(&mut self, now: Instant) {
        let mut tasks = Vec::new();
        for slot in &self.slots {
            if tasks.push(slot.spec.task).is_err() {
                break;
            }
        }
        self.contact.heartbeats = self.contact.heartbeats.saturating_add(1);
        self.clock.sent_heartbeat(self.contact.heartbeats, now);
        let hb = AgentHeartbeat {
            incarnation: self.incarnation,
            journal: self.journal,
            counter: self.contact.heartbeats,
            echo: self.contact.echo,
            last_seq: self.log.next_seq - 1,
            more_tasks: self.slots.len() > HEARTBEAT_TASKS,
            tasks,
            journal_bytes: self.log.journal_bytes,
        };
        let mut buf = [0u8; PUBLISH_MAX];
        let msg = Message::AgentHeartbeat(hb);
        if let Ok(bytes) = wire::encode_for(&msg, &self.topics.heartbeat, self.signer(), &mut buf)
            && let Ok(payload) = Vec::from_slice(bytes)
        {
            let topic = self.topics.heartbeat.clone();
            self.push(Action::Publish {
                topic,
                payload,
                qos: QoS::AtMostOnce,
                retain: false,
            });
        }
        self.contact.next_heartbeat = Some(now.saturating_add(self.heartbeat_period()));
        self.report_bad_commands(now);
    }

    /// A shorter period (announced by the master or asked by a new task) applies from now, not
    /// from the next heartbeat armed under the old one.
    pub(super) fn rearm_heartbeat(&mut self, now: Instant) {
        let due = now.saturating_add(self.heartbeat_period());
        if self.contact.next_heartbeat.is_some_and(|t| t > due) {
            self.contact.next_heartbeat = Some(due);
        }
    }
}
