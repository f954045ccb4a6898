//! Does nothing in either phase: what a policy call costs by itself.

use portico_policy_sdk::{Needs, Policy};

struct Noop;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {}

impl Policy for Noop {
    type Config = Config;

    fn new(_: Config) -> Result<Self, String> {
        Ok(Noop)
    }

    fn needs(&self) -> Needs {
        Needs::empty()
    }
}

portico_policy_sdk::export_policy!(Noop);
