//! Rate counters shared by a fleet, on Redis (the Traffic Manager's store). Every decision on
//! Redis is one script on Redis's clock ([`super::link`]). Two modes: `exact`, one script per
//! hit, the same answers as local counters; `leased`, units of a counter taken ahead
//! ([`super::leases`]) and spent without a round trip. When Redis does not answer in time, the
//! hit is counted by the gateway's own counters instead, against its share of the limit (the
//! limit divided by the fleet's size), and each change between the two is logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::leases::Leases;
use super::link::{Ask, Link, MAX_EXACT_LIMIT, MAX_WINDOW_MS, Source, redis_key};
use super::{CounterStore, HitResult, LocalCounters};
use crate::contract::counters::{RedisConfig, SharedMode};

impl RedisConfig {
    /// What is wrong with this configuration, as (field under `counters.redis`, reason).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if let Err(problem) = self.source() {
            problems.push(problem);
        }
        if self.timeout.is_zero() || self.timeout.0 > std::time::Duration::from_secs(1) {
            problems.push(("timeout", "must be more than zero and at most 1s: a hit holds a worker while it waits".into()));
        }
        if self.fleet_size == 0 {
            problems.push(("fleet_size", "must be at least 1".into()));
        }
        problems
    }

    /// Where the counters are, without connecting.
    fn source(&self) -> Result<Source, (&'static str, String)> {
        match (&self.url, &self.sentinel) {
            (Some(url), None) => {
                redis::Client::open(url.as_str()).map(Source::Server).map_err(|e| ("url", format!("not a Redis URL: {e}")))
            }
            (None, Some(sentinel)) => {
                if sentinel.nodes.is_empty() {
                    return Err(("sentinel.nodes", "name at least one Sentinel".into()));
                }
                let mut server = redis::RedisConnectionInfo::default().set_db(sentinel.db);
                if let Some(password) = &sentinel.password {
                    server = server.set_password(password);
                }
                let node = redis::sentinel::SentinelNodeConnectionInfo::default().set_redis_connection_info(server);
                redis::sentinel::SentinelClient::build(
                    sentinel.nodes.iter().map(String::as_str).collect(),
                    sentinel.master.clone(),
                    Some(node),
                    redis::sentinel::SentinelServerType::Master,
                )
                .map(|client| Source::Sentinel(Box::new(client)))
                .map_err(|e| ("sentinel.nodes", format!("not Redis URLs: {e}")))
            }
            (Some(_), Some(_)) => Err(("url", "give `url` (one server) or `sentinel`, not both".into())),
            (None, None) => Err(("url", "give `url` (one server) or `sentinel` (its Sentinels)".into())),
        }
    }
}

/// Counters in Redis, with the gateway's local counters as the fallback.
pub struct RedisCounters {
    link: Link,
    leases: Option<Arc<Leases>>,
    fallback: Arc<LocalCounters>,
    /// How many gateways share the counters: each admits its share of a limit alone.
    fleet_size: u64,
    /// Whether the last decision was Redis's (so that only changes are logged).
    stats: Arc<SharedStats>,
    /// Until when (ms on [`super::now_ms`]'s clock) hits go to the local counters without
    /// asking Redis, after it failed to answer: so that a slow or absent Redis costs a worker
    /// one timeout per [`RETRY_AFTER_FAILURE`], not one per hit.
    local_until_ms: AtomicU64,
}

/// How long hits are counted locally after Redis failed to answer one, before it is asked again.
const RETRY_AFTER_FAILURE_MS: u64 = 1_000;

/// What `/metrics` shows of the shared counters.
#[derive(Debug)]
pub struct SharedStats {
    /// Whether Redis decided the last hit.
    pub reachable: AtomicBool,
    /// Changes between Redis and the local counters.
    pub changes: AtomicU64,
    /// Hits counted locally because Redis did not answer.
    pub local_hits: AtomicU64,
}

impl RedisCounters {
    /// Counters in the Redis `config` names, waiting at most its `timeout` for Redis before
    /// counting in `fallback` (its share of each limit). Connects in the background.
    pub fn connect(config: &RedisConfig, fallback: Arc<LocalCounters>) -> Result<Self, String> {
        let source = config.source().map_err(|(field, reason)| format!("counters.redis.{field}: {reason}"))?;
        let leases = (config.mode == SharedMode::Leased).then(|| Arc::new(Leases::new()));
        let swept = leases.clone();
        let tick = swept.map(|leases| Box::new(move || leases.sweep()) as Box<dyn Fn() + Send>);
        let link = Link::start(source, config.timeout.0, tick)?;
        let stats = Arc::new(SharedStats { reachable: AtomicBool::new(true), changes: AtomicU64::new(0), local_hits: AtomicU64::new(0) });
        Ok(Self { link, leases, fallback, fleet_size: config.fleet_size.max(1), stats, local_until_ms: AtomicU64::new(0) })
    }

    /// One exact hit on a given clock instead of Redis's (for tests that compare with
    /// [`LocalCounters::hit_at`]); `Err` when Redis did not answer in time.
    pub fn hit_at(&self, key: &str, limit: u64, window_ms: u64, cost: u32, now_ms: u64) -> Result<HitResult, String> {
        self.exact(key, limit, window_ms, cost, Some(now_ms))
    }

    /// What `key`'s counter of `limit` per `window_ms` has counted, without counting: the
    /// units left and when all are back (for a control plane showing a subscriber's usage).
    /// In the leased mode, units leased to gateways count as used, spent or not. `Err` when
    /// Redis did not answer in time.
    pub fn peek(&self, key: &str, limit: u64, window_ms: u64) -> Result<HitResult, String> {
        let window_ms = window_ms.clamp(1, MAX_WINDOW_MS);
        match &self.leases {
            None => self.exact(key, limit, window_ms, 0, None),
            Some(_) => super::leases::peek(&self.link, key, limit, window_ms).map(|(hit, _)| HitResult { limit, ..hit }),
        }
    }

    /// Wait until the connection to Redis is made, at most `limit`; whether it is.
    pub fn wait_connected(&self, limit: std::time::Duration) -> bool {
        self.link.wait_connected(limit)
    }

    /// What `/metrics` shows of these counters.
    pub fn stats(&self) -> Arc<SharedStats> {
        self.stats.clone()
    }

    fn note(&self, reachable: bool, why: Option<&str>) {
        if self.stats.reachable.swap(reachable, Ordering::Relaxed) != reachable {
            self.stats.changes.fetch_add(1, Ordering::Relaxed);
            match why {
                Some(why) => tracing::warn!(error = why, "shared rate counters unreachable; counting locally until Redis answers"),
                None => tracing::info!("shared rate counters reachable again; counting on Redis"),
            }
        }
    }
}

impl CounterStore for RedisCounters {
    fn hit(&self, key: &str, limit: u64, window_ms: u64, cost: u32) -> HitResult {
        self.try_hit(key, limit, window_ms, cost).unwrap_or_else(|| {
            self.stats.local_hits.fetch_add(1, Ordering::Relaxed);
            if let Some(leases) = &self.leases {
                // The key's use by the fleet, as Redis last told it, charged as this gateway's
                // share once (rounded up): what Redis admitted in the window is not admitted
                // again.
                let used = leases.hand_over(key, limit, window_ms).div_ceil(self.fleet_size);
                if used > 0 {
                    self.fallback.hit(key, u64::MAX, window_ms, u32::try_from(used).unwrap_or(u32::MAX));
                }
            }
            // Each gateway its share, rounded down: the fleet stays within the limit.
            self.fallback.hit(key, limit / self.fleet_size, window_ms, cost)
        })
    }

    fn try_hit(&self, key: &str, limit: u64, window_ms: u64, cost: u32) -> Option<HitResult> {
        let now = super::now_ms();
        let decided = if now < self.local_until_ms.load(Ordering::Relaxed) {
            Err("Redis failed to answer lately".to_owned())
        } else {
            self.decide(key, limit, window_ms, cost)
        };
        match decided {
            Ok(hit) => {
                self.note(true, None);
                Some(hit)
            }
            Err(why) => {
                if now >= self.local_until_ms.load(Ordering::Relaxed) {
                    self.local_until_ms.store(now + RETRY_AFTER_FAILURE_MS, Ordering::Relaxed);
                }
                self.note(false, Some(&why));
                None
            }
        }
    }
}

impl RedisCounters {
    /// One hit decided by one script call (on Redis's clock, or `now_ms`). The limit
    /// answered is the one asked, even above what the script counts exactly.
    fn exact(&self, key: &str, limit: u64, window_ms: u64, cost: u32, now_ms: Option<u64>) -> Result<HitResult, String> {
        let window_ms = window_ms.clamp(1, MAX_WINDOW_MS);
        let ask = Ask {
            key: redis_key(key, window_ms),
            limit: limit.min(MAX_EXACT_LIMIT),
            window_ms,
            cost: u64::from(cost),
            now_ms,
            shift_ms: 0,
            least: 0,
        };
        self.link.ask(ask).map(|(hit, _)| HitResult { limit, ..hit })
    }

    fn decide(&self, key: &str, limit: u64, window_ms: u64, cost: u32) -> Result<HitResult, String> {
        match &self.leases {
            None => self.exact(key, limit, window_ms, cost, None),
            Some(leases) => leases.hit(&self.link, key, limit, window_ms, cost),
        }
    }
}
