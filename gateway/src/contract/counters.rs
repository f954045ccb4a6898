//! Where an environment's rate counters live: in each gateway's process (the default), or
//! in a Redis its gateways share (the Traffic Manager's store). What is wrong with a
//! [`RedisConfig`] is [`RedisConfig::problems`], next to the client that reads it.

use serde::{Deserialize, Serialize};

use super::units::Duration;

/// Where rate counters live.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CountersConfig {
    /// A Redis shared by the environment's gateways; in each process when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
}

impl CountersConfig {
    /// Whether counters stay in each process.
    pub fn is_local(&self) -> bool {
        self.redis.is_none()
    }
}

/// A Redis holding the fleet's rate counters (the environment's `counters.redis`): one
/// server (`url`), or the master a set of Sentinels names (`sentinel`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`, or `rediss://` for TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Sentinels to ask which server is the master (high availability).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<SentinelConfig>,
    /// How long a hit waits for Redis before it is counted in this process instead.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// How hits are decided on Redis.
    #[serde(default)]
    pub mode: SharedMode,
    /// How many gateways share these counters: while Redis is away, each counts alone
    /// against its share of a limit (the limit divided by this, rounded down), so that the
    /// fleet stays within it.
    #[serde(default = "one")]
    pub fleet_size: u64,
}

/// Redis Sentinel: the counters are on the master of `master`, found by asking `nodes`,
/// and found again after a connection to it fails (a failover).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// The Sentinels, `redis://host:26379`.
    pub nodes: Vec<String>,
    /// The name the Sentinels monitor the master under.
    pub master: String,
    /// The master's database.
    #[serde(default)]
    pub db: i64,
    /// The master's password, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

fn default_timeout() -> Duration {
    Duration(std::time::Duration::from_millis(20))
}

fn one() -> u64 {
    1
}

/// How hits are decided on Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SharedMode {
    /// Units taken ahead (leases) and spent without a round trip; never more than the limit
    /// across the fleet.
    #[default]
    Leased,
    /// One round trip per hit: the same answers as counters in process.
    Exact,
}
