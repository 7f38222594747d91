//! Workers: background tasks. One delivery worker drives every channel's outbound side; the
//! timer worker fires the escalation steps and deadlines policies set.

pub mod delivery;
pub mod timers;
