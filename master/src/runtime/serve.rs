//! The one loop: MQTT inputs, API requests and the core's timers in, batches committed, then
//! published. A batch that cannot be committed stops nothing (see the module documentation
//! of [`crate::runtime`]).

use std::time::Duration as StdDuration;

use log::{error, info, warn};
use rumqttc::{AsyncClient, ConnectionError, Event as MqttEvent, Packet, QoS};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant as TokioInstant;

use super::setup::Ready;
use super::{Bound, Clock, MqttInput, RunError};
use crate::api::{self, ApiError, Asked, Hub, SharedTokens};
use crate::commit::{Committer, Flushed};
use crate::core::{Master, Qos};
use crate::model::ApiToken;
use crate::store::Store;

/// Inputs handled in one batch, at most (bounds the latency a burst adds to its first input).
const BURST: usize = 256;

/// How often a store that refused a commit is tried again when nothing else writes.
const PROBE_EVERY: StdDuration = StdDuration::from_secs(1);

/// An API answer waiting for the commit of its batch; `writes` says whether it depends on it.
struct Pending {
    reply: oneshot::Sender<Result<Value, ApiError>>,
    answer: Result<Value, ApiError>,
    writes: bool,
    /// A token created or revoked: live (or dead) once the batch is committed.
    token: Option<ApiToken>,
}

struct Loop {
    store: Box<dyn Store>,
    client: AsyncClient,
    bound: Bound,
    clock: Clock,
    dropped_publishes: u64,
    /// Commits batches; while the store refuses writes, write requests are refused at once.
    committer: Committer,
    /// The tokens the API accepts; changed here only after the change is committed.
    tokens: SharedTokens,
    /// Told each committed change, for the API's event streams.
    hub: Hub,
    /// Latencies and counts for `/metrics`.
    observed: api::Observed,
    /// When each agent heartbeat of the batch arrived (at most one batch's inputs).
    heartbeats: Vec<TokioInstant>,
}

pub(super) async fn serve(ready: Ready) -> Result<(), RunError> {
    let Ready {
        store,
        mut core,
        client,
        mut mqtt_rx,
        mut api_rx,
        bound,
        clock,
        tokens,
        hub,
        mut retention,
        _broker,
    } = ready;
    let mut lp = Loop {
        store,
        client,
        bound,
        clock,
        dropped_publishes: 0,
        committer: Committer::default(),
        tokens,
        hub,
        observed: api::Observed::default(),
        heartbeats: Vec::new(),
    };
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| RunError::Io("installing the SIGTERM handler".into(), e))?;
    // API answers wait for the commit of the batch that made them true.
    let mut pending = Vec::new();
    // systemd's watchdog is fed from here, so a stuck loop (not only a dead process) restarts.
    let watchdog = crate::notify::watchdog_period();
    let mut ping = watchdog.map(|p| TokioInstant::now() + p);
    loop {
        // The wall clock, for the schedules' planner (a step of it is seen here, next round).
        core.handle_wall_clock(clock.now(), super::unix_ms());
        let wake = core.poll_timeout().map(|t| clock.at(t));
        let probe = lp
            .committer
            .refusing()
            .map(|_| TokioInstant::now() + PROBE_EVERY);
        tokio::select! {
            input = mqtt_rx.recv() => {
                let Some(input) = input else { break };
                lp.mqtt(&mut core, input);
            }
            req = api_rx.recv() => {
                let Some(asked) = req else { break };
                pending.push(lp.api(&mut core, asked));
            }
            () = sleep_until(wake) => core.handle_timeout(clock.now()),
            () = sleep_until(probe) => lp.probe(&mut core)?,
            () = sleep_until(ping) => {
                if let Err(e) = crate::notify::notify("WATCHDOG=1") {
                    warn!("cannot feed systemd's watchdog: {e}");
                }
                ping = watchdog.map(|p| TokioInstant::now() + p);
            }
            () = sleep_until(retention.due()) => {
                let deleted = retention.pass(lp.store.as_ref());
                lp.observed.pruned(deleted);
            }
            _ = tokio::signal::ctrl_c() => { lp.stop(&mut core).await; break }
            _ = sigterm.recv() => { lp.stop(&mut core).await; break }
        }
        // Group commit: what is already waiting joins this batch, so a burst of events or
        // submissions costs one transaction (one fsync), not one each.
        for _ in 0..BURST {
            if let Ok(input) = mqtt_rx.try_recv() {
                lp.mqtt(&mut core, input);
            } else if let Ok(asked) = api_rx.try_recv() {
                pending.push(lp.api(&mut core, asked));
            } else {
                break;
            }
        }
        let failed = lp.flush(&mut core)?;
        for p in pending.drain(..) {
            let answer = match &failed {
                Some(e) if p.writes => Err(e.clone()),
                _ => {
                    if let Some(token) = &p.token {
                        lp.tokens
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(token);
                    }
                    p.answer
                }
            };
            let _ = p.reply.send(answer);
        }
    }
    lp.hub.close();
    Ok(())
}

async fn sleep_until(wake: Option<TokioInstant>) {
    match wake {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Loop {
    fn subscribe(&self, core: &Master) {
        for filter in core.subscriptions() {
            if let Err(e) = self.client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                error!("cannot subscribe to {filter}: {e}");
            }
        }
    }

    /// After the core was rebuilt from the store (see [`Committer::take_rebuilt`]).
    fn resubscribe_if_rebuilt(&mut self, core: &Master) {
        if self.committer.take_rebuilt() && core.is_connected() {
            self.subscribe(core);
        }
    }

    fn mqtt(&mut self, core: &mut Master, input: MqttInput) {
        let now = self.clock.now();
        match input {
            MqttInput::Event(MqttEvent::Incoming(Packet::ConnAck(_)), _) => {
                info!("connected to the broker at {}", self.bound.mqtt);
                self.subscribe(core);
                core.handle_connected(now);
            }
            MqttInput::Event(MqttEvent::Incoming(Packet::Publish(p)), at) => {
                self.observed.received();
                // The master subscribes to agents' topics only: a `heartbeat` leaf is an agent's.
                if p.topic.ends_with("/heartbeat") {
                    self.heartbeats.push(at);
                }
                core.handle_message(now, &p.topic, &p.payload);
            }
            MqttInput::Event(..) => {}
            MqttInput::Down(e) => {
                if core.is_connected() {
                    warn!("broker connection lost: {e}");
                } else if matches!(
                    e,
                    ConnectionError::ConnectionRefused(_) | ConnectionError::Tls(_)
                ) {
                    warn!("the broker at {} refused the master: {e}", self.bound.mqtt);
                }
                core.handle_disconnected(now);
            }
        }
    }

    /// Answers a request (writes through the core); while the store refuses writes, write
    /// requests are refused before they reach the core.
    fn api(&mut self, core: &mut Master, asked: Asked) -> Pending {
        let Asked { req, by, reply } = asked;
        let writes = req.writes();
        let answered = match self.committer.refusing() {
            Some(e) if writes => Err(e.clone()),
            _ => {
                let tokens = self
                    .tokens
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                api::answer(
                    api::Context {
                        core,
                        store: self.store.as_ref(),
                        bound: &self.bound,
                        dropped_publishes: self.dropped_publishes,
                        by: &by,
                        tokens: &tokens,
                        observed: &self.observed,
                        refusing: self.committer.refusing().is_some(),
                    },
                    self.clock.now(),
                    req,
                )
            }
        };
        let (answer, token) = match answered {
            Ok(a) => (Ok(a.value), a.token),
            Err(e) => (Err(e), None),
        };
        Pending {
            reply,
            answer,
            writes,
            token,
        }
    }

    /// Drains the core: commits the batch's changes, then publishes. On a failed commit
    /// nothing of the batch goes out, the core is rebuilt from the store, and the error the
    /// batch's write requests get is returned. Only a store that cannot even be read stops
    /// the master.
    fn flush(&mut self, core: &mut Master) -> Result<Option<ApiError>, RunError> {
        let mut batch = crate::commit::Batch::drain(core);
        let started = TokioInstant::now();
        let flushed = self
            .committer
            .flush(core, &mut batch, self.store.as_ref(), self.clock.now())
            .map_err(RunError::Store)?;
        let done = TokioInstant::now();
        self.resubscribe_if_rebuilt(core);
        let publishes = match flushed {
            // Nothing was tried: no commit to time, no heartbeat answered.
            Flushed::Dropped => return Ok(self.committer.refusing().cloned()),
            Flushed::Refused(refusal) => Err(refusal),
            Flushed::Committed(publishes) => Ok(publishes),
        };
        if !batch.changes().is_empty() {
            self.observed.commit_took(done - started);
        }
        for at in self.heartbeats.drain(..) {
            self.observed.heartbeat_waited(done - at);
        }
        match publishes {
            Ok(publishes) => {
                // Only a committed batch is announced.
                self.hub.publish_committed(batch.changes(), core);
                self.observed.committed(batch.changes());
                for p in publishes {
                    self.publish(p);
                }
                Ok(None)
            }
            Err(refusal) => {
                self.observed.commit_failed();
                Ok(Some(refusal))
            }
        }
    }

    fn publish(&mut self, p: crate::core::Publish) {
        let qos = match p.qos {
            Qos::AtMostOnce => QoS::AtMostOnce,
            Qos::AtLeastOnce => QoS::AtLeastOnce,
        };
        match self
            .client
            .try_publish(p.topic.clone(), qos, p.retain, p.payload)
        {
            Ok(()) => self.observed.sent(),
            Err(e) => {
                // Commands are retransmitted by the core; nothing is lost by dropping here.
                self.dropped_publishes += 1;
                warn!("publish to {} dropped: {e}", p.topic);
            }
        }
    }

    /// Tries a write while the store refuses them, so the master carries on by itself once
    /// space is free even when nothing else writes.
    fn probe(&mut self, core: &mut Master) -> Result<(), RunError> {
        self.committer
            .probe(core, self.store.as_ref(), self.clock.now())
            .map_err(RunError::Store)?;
        self.resubscribe_if_rebuilt(core);
        Ok(())
    }

    /// A normal stop: `offline <epoch> stopped`, then a clean disconnect.
    async fn stop(&mut self, core: &mut Master) {
        info!("stopping");
        core.handle_stop(self.clock.now());
        if let Err(e) = self.flush(core) {
            error!("stopping without a last commit: {e}");
        }
        let _ = self.client.disconnect().await;
        // Give the event loop a moment to send what is queued; bounded.
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
}
