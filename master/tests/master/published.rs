//! Reading what the master core published, as the agents it talks to would.

use tether_core::message::{Echo, Message};
use tether_core::wire;
use tether_master::core::Publish;

/// The newest master heartbeat in `out`, as an agent that heard it names it in its own
/// heartbeats (the master counts only those as a sign of life).
pub(crate) fn echo(out: &[Publish], prefix: &str) -> Option<Echo> {
    let topic = format!("{prefix}/master/heartbeat");
    out.iter()
        .rev()
        .find(|p| p.topic == topic)
        .map(|p| match wire::decode(&p.payload) {
            Ok(Message::MasterHeartbeat(hb)) => hb.echo(),
            other => panic!("on {topic}: {other:?}"),
        })
}
