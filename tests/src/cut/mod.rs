//! Network-cut scenarios with the real binaries: `tether-master` (embedded rumqttd or
//! mosquitto), `tether-agent`s, and a cut chosen per run (`TETHER_CUT=proxy|netns|both`).
//!
//! - [`link`]: an agent's cuttable path to the broker (proxy or network namespace).
//! - [`observe`]: a watcher recording when the master and the agents showed each change.
//! - [`loss`]: the kill-on-loss sequence (cut, fail, restore, report) and its bounds.
//! - [`timeline`]: the measured timeline of a scenario and its bounds.
//! - [`world`]: the runner that starts all of it, and the `cut_scenario!` test macro.

pub mod link;
pub mod loss;
pub mod observe;
pub mod timeline;
pub mod world;
