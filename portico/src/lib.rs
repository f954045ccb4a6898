//! The `portico` command: one binary whose profiles compose the gateway and the control
//! plane as WSO2's deployment patterns do. `serve` runs a gateway from a file (DB-less);
//! `all-in-one` runs the control plane and a gateway in one process on embedded SQLite.

pub mod all_in_one;
pub mod cli;
pub mod policy_tool;
