//! Workers: background tasks. One delivery worker drives every channel's outbound side.

pub mod delivery;
