//! The `portico` command: one binary whose profiles compose the gateway and the control
//! plane as WSO2's deployment patterns do. `serve` runs a gateway from a file (DB-less);
//! `all-in-one` runs the control plane and a gateway in one process; `control-plane` and
//! `gateway` run them apart, the gateways fed over the network (`docs/deployment.md`).

pub mod all_in_one;
pub mod cli;
pub mod control_plane;
pub mod policy_tool;
mod secret;
