//! What a subscriber has used of their subscription's tier, read from the store the
//! environment's gateways count in (the Traffic Manager's Redis). The counters are the
//! built-in throttle's: the keys here are those of `counter_key` in
//! `policies/throttle/src/quota.rs` for the subscription tier's attachment that
//! [`crate::environment`] gives every managed API (per API, keyed by application); the
//! pattern-3 test in `tests/tests/fleet.rs` reads what real gateways counted, so the two
//! cannot drift apart unnoticed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use portico_gateway::calendar;
use portico_gateway::contract::units::Duration;
use portico_gateway::counters::{LocalCounters, RedisConfig, RedisCounters};
use serde::Serialize;
use utoipa::ToSchema;

use super::Tier;
use crate::error::{ApiError, ApiResult};

/// One limit of a tier, and what is left of it.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct LimitUsage {
    /// `burst`, `rate` or `quota`.
    pub kind: String,
    /// Requests allowed per window.
    pub limit: u64,
    /// The window: `60000ms`, or `day` / `month` (calendar periods in `time_zone`).
    pub per: String,
    /// The quota's time zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Requests counted in the current window (with, in the leased mode, units that gateways
    /// have taken ahead and may not have spent yet).
    pub used: u64,
    /// Requests left in the current window.
    pub remaining: u64,
    /// Milliseconds until the whole limit is back (a calendar quota: at most until its
    /// period ends).
    pub resets_in_ms: u64,
}

/// Connections to the environments' counter stores, made on first use and remade when an
/// environment's store changes.
#[derive(Default)]
pub struct Readers {
    connected: Mutex<HashMap<String, (RedisConfig, Arc<RedisCounters>)>>,
}

impl Readers {
    /// A reader of `environment`'s counters in the Redis `config` names. It waits for Redis
    /// up to a second, longer than a gateway's hit does: a reader may be connecting still.
    fn reader(&self, environment: &str, config: &RedisConfig) -> ApiResult<Arc<RedisCounters>> {
        let mut connected = self.connected.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((known, reader)) = connected.get(environment)
            && known == config
        {
            return Ok(reader.clone());
        }
        let patient = RedisConfig { timeout: Duration(READ_TIMEOUT), ..config.clone() };
        let reader = Arc::new(
            RedisCounters::connect(&patient, Arc::new(LocalCounters::new()))
                .map_err(|e| ApiError::Internal(format!("the counters of `{environment}`: {e}")))?,
        );
        connected.insert(environment.to_owned(), (config.clone(), reader.clone()));
        Ok(reader)
    }

    /// Drop the reader of `environment` (its counters are no longer shared, or it is gone).
    pub fn forget(&self, environment: &str) {
        self.connected.lock().unwrap_or_else(PoisonError::into_inner).remove(environment);
    }
}

/// How long a read waits for Redis.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Where a subscription counts: its tier, the API it is to and the subscribing application.
pub struct Subscribed<'a> {
    /// The subscription tier.
    pub tier: &'a Tier,
    /// The API's name.
    pub api_name: &'a str,
    /// The API's version.
    pub api_version: &'a str,
    /// The application.
    pub application_id: &'a str,
}

/// What `subscribed` has used of each limit of its tier on `environment`, whose counters
/// are in the Redis `config` names, at `now_ms` (Unix time).
pub async fn usage(
    readers: &Readers,
    environment: &str,
    config: &RedisConfig,
    subscribed: &Subscribed<'_>,
    now_ms: u64,
) -> ApiResult<Vec<LimitUsage>> {
    let reader = readers.reader(environment, config)?;
    let counters = counters(subscribed, now_ms)?;
    let environment = environment.to_owned();
    // Each read waits for Redis at most the store's timeout: off the async workers.
    tokio::task::spawn_blocking(move || {
        counters
            .into_iter()
            .map(|counter| {
                let hit = reader.peek(&counter.key, counter.usage.limit, counter.window_ms).map_err(|reason| {
                    tracing::warn!(environment = %environment, error = %reason, "cannot read the shared rate counters");
                    ApiError::Unavailable("the environment's rate counters did not answer; try again later".into())
                })?;
                let remaining = hit.remaining.min(counter.usage.limit);
                Ok(LimitUsage {
                    used: counter.usage.limit - remaining,
                    remaining,
                    resets_in_ms: hit.reset_ms.min(counter.left_ms.unwrap_or(u64::MAX)),
                    ..counter.usage
                })
            })
            .collect()
    })
    .await
    .map_err(|e| ApiError::Internal(format!("reading counters: {e}")))?
}

/// One counter of a subscription: its key and window, and how long its calendar period has
/// left.
struct Counter {
    key: String,
    window_ms: u64,
    left_ms: Option<u64>,
    usage: LimitUsage,
}

/// The counters the subscription tier's throttle keeps for `subscribed`, in the order of
/// [`Tier::limits`].
fn counters(subscribed: &Subscribed<'_>, now_ms: u64) -> ApiResult<Vec<Counter>> {
    let tier = subscribed.tier;
    let scope = format!("api:{}@{}", subscribed.api_name, subscribed.api_version);
    let caller = format!("app:{}", subscribed.application_id);
    let mut counters = Vec::new();
    let mut sliding = |kind: &str, requests: Option<i64>, per_ms: Option<i64>| {
        if let (Some(requests), Some(per_ms)) = (requests, per_ms) {
            let (limit, window_ms) = (requests.max(0) as u64, per_ms.max(1) as u64);
            counters.push(Counter {
                key: format!("throttle|{scope}|{limit}/{window_ms}ms|{caller}"),
                window_ms,
                left_ms: None,
                usage: usage_of(kind, limit, format!("{window_ms}ms"), None),
            });
        }
    };
    sliding("burst", tier.burst_requests, tier.burst_per_ms);
    sliding("rate", tier.requests, tier.per_ms);
    if let (Some(requests), Some(per)) = (tier.quota_requests, &tier.quota_period) {
        let period = match per.as_str() {
            "day" => calendar::Period::Day,
            "month" => calendar::Period::Month,
            other => return Err(ApiError::Internal(format!("tier `{}` has the unknown quota period `{other}`", tier.name))),
        };
        let (start, end) = calendar::period(now_ms, period, &tier.time_zone).map_err(ApiError::Internal)?;
        let limit = requests.max(0) as u64;
        counters.push(Counter {
            key: format!("throttle|{scope}|{limit}/{per}@{start}|{caller}"),
            window_ms: end - start,
            left_ms: Some(end.saturating_sub(now_ms)),
            usage: usage_of("quota", limit, per.clone(), Some(tier.time_zone.clone())),
        });
    }
    Ok(counters)
}

fn usage_of(kind: &str, limit: u64, per: String, time_zone: Option<String>) -> LimitUsage {
    LimitUsage { kind: kind.to_owned(), limit, per, time_zone, used: 0, remaining: limit, resets_in_ms: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier() -> Tier {
        Tier {
            name: "Gold".into(),
            kind: "subscription".into(),
            description: String::new(),
            requests: Some(100),
            per_ms: Some(60_000),
            burst_requests: Some(10),
            burst_per_ms: Some(1_000),
            quota_requests: Some(1_000),
            quota_period: Some("day".into()),
            time_zone: "Asia/Kolkata".into(),
        }
    }

    /// The keys are the throttle's (its own unit test pins the same form).
    #[test]
    fn a_tier_counts_on_the_throttles_keys() {
        let tier = tier();
        let subscribed = Subscribed { tier: &tier, api_name: "pets", api_version: "v1", application_id: "shop" };
        // 2026-12-03T12:00:00Z: 17:30 in Kolkata; its day began at 2026-12-02T18:30:00Z.
        let now = 1_796_299_200_000;
        let counters = counters(&subscribed, now).unwrap();
        let keys: Vec<_> = counters.iter().map(|c| (c.key.as_str(), c.window_ms, c.left_ms)).collect();
        assert_eq!(
            keys,
            [
                ("throttle|api:pets@v1|10/1000ms|app:shop", 1_000, None),
                ("throttle|api:pets@v1|100/60000ms|app:shop", 60_000, None),
                ("throttle|api:pets@v1|1000/day@1796236200000|app:shop", 86_400_000, Some(23_400_000)),
            ]
        );
        assert_eq!(counters.iter().map(|c| c.usage.kind.as_str()).collect::<Vec<_>>(), ["burst", "rate", "quota"]);
    }
}
