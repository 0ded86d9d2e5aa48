//! Master down: the agent core alone against a scripted master that goes away for a day
//! (`agent`), and the real master core crashing and restoring from its store (`system`).

mod agent;
mod system;
