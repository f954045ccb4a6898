//! Counter keys, the quota a request leaves, and the 429 answer: the host-free part of
//! throttle.

use portico_policy_sdk::counters::HitResult;
use portico_policy_sdk::{Identity, ImmediateResponse, problem};

use crate::config::{KeyBy, Limit, Scope};

/// The part of a counter key that says where counters are shared. The API and the
/// operation are asked for only when the scope needs them: each is a host call.
pub fn scope_key(scope: Scope, api: impl FnOnce() -> (String, String), operation: impl FnOnce() -> String) -> String {
    match scope {
        Scope::Api => {
            let (api, version) = api();
            concat(&["api:", &api, "@", &version])
        }
        Scope::Operation => {
            let (api, version) = api();
            concat(&["op:", &api, "@", &version, " ", &operation()])
        }
        Scope::Global => "global".to_owned(),
    }
}

/// The caller part of a counter key for the identity-based `key_by`s, or `None` when the
/// identity lacks it (or `key_by` is not identity-based).
pub fn identity_caller(key_by: &KeyBy, identity: Option<&Identity>) -> Option<String> {
    let identity = identity?;
    let (kind, value) = match key_by {
        KeyBy::Application => ("app", &identity.application),
        KeyBy::Subscription => ("sub", &identity.subscription),
        KeyBy::User => ("user", &identity.user),
        KeyBy::Tier => ("tier", &identity.tier),
        _ => return None,
    };
    value.as_ref().map(|value| concat(&[kind, ":", value]))
}

/// The counter key of one limit; a calendar limit's names the start of its current period
/// (milliseconds since the Unix epoch), so each day or month counts afresh. The caller comes
/// last: everything before it is from the configuration and the route, so a caller-chosen
/// value cannot imitate another key.
pub fn counter_key(scope: &str, limit: &Limit, period_start_ms: Option<u64>, caller: &str) -> String {
    match period_start_ms {
        Some(start) => concat(&["throttle|", scope, "|", &limit.key, itoa::Buffer::new().format(start), "|", caller]),
        None => concat(&["throttle|", scope, "|", &limit.key, "|", caller]),
    }
}

/// The parts, one after the other, in a string allocated once: `format!` costs more in the
/// guest than the rest of a request's work.
pub fn concat(parts: &[&str]) -> String {
    let mut joined = String::with_capacity(parts.iter().map(|part| part.len()).sum());
    for part in parts {
        joined.push_str(part);
    }
    joined
}

/// A hit on a calendar limit's counter, whose window is the whole period: nothing leaves it
/// before the period ends, when the next one starts with a counter of its own, so neither
/// the reset nor the wait of a refusal is later than `left_ms`, the time left in the period.
pub fn within_period(mut hit: HitResult, left_ms: u64) -> HitResult {
    hit.reset_ms = hit.reset_ms.min(left_ms);
    hit.retry_after_ms = hit.retry_after_ms.min(left_ms);
    hit
}

/// Whole seconds, rounded up.
pub fn seconds(ms: u64) -> u64 {
    ms.div_ceil(1_000)
}

/// What a limit leaves of the caller's quota, as reported to the host for the `RateLimit-*`
/// headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Units per window.
    pub limit: u64,
    /// Units left in the window.
    pub remaining: u64,
    /// Milliseconds until the window's whole quota is back.
    pub reset_ms: u64,
}

impl Quota {
    /// The quota left after a hit; none after a refused one.
    pub fn from_hit(hit: &HitResult) -> Quota {
        let remaining = if hit.allowed { hit.remaining } else { 0 };
        Quota { limit: hit.limit, remaining, reset_ms: hit.reset_ms }
    }
}

/// The tighter of two quotas: the one with fewer units left (`candidate` on a tie). The
/// gateway keeps the tightest of a request's reports by the same rule; a throttle applies it
/// to its own limits first so that it reports once, not once per limit.
pub fn tighter(current: Option<Quota>, candidate: Quota) -> Quota {
    match current {
        Some(current) if current.remaining < candidate.remaining => current,
        _ => candidate,
    }
}

/// The 429 answer to a hit that `limit` refused.
pub fn refusal_response(limit: &Limit, hit: &HitResult) -> ImmediateResponse {
    let retry_after = seconds(hit.retry_after_ms).max(1);
    let detail = format!("The rate limit of {} requests per {} is used up; retry in {retry_after} s.", limit.requests, limit.per);
    problem(429, "Too Many Requests", &detail)
        .header("retry-after", retry_after.to_string())
        .header("ratelimit-limit", hit.limit.to_string())
        .header("ratelimit-remaining", "0")
        .header("ratelimit-reset", seconds(hit.reset_ms).to_string())
}

/// The 429 of a throttle that fails closed while the counters a fleet shares cannot decide.
pub fn unavailable_response() -> ImmediateResponse {
    problem(429, "Too Many Requests", "The rate-limit store is unavailable, so requests to this API are refused for now; retry in 1 s.")
        .header("retry-after", "1")
}

#[cfg(test)]
mod tests {
    use super::{Quota, counter_key, identity_caller, refusal_response, scope_key, seconds, tighter, within_period};
    use crate::config::{Calendar, KeyBy, Limit, Scope};
    use portico_policy_sdk::Identity;
    use portico_policy_sdk::counters::HitResult;

    fn identity() -> Identity {
        Identity {
            method: "api-key".to_owned(),
            application: Some("shop".to_owned()),
            subscription: None,
            tier: Some("Gold".to_owned()),
            user: Some("ada".to_owned()),
            scopes: Vec::new(),
        }
    }

    fn hit(allowed: bool, remaining: u64, reset_ms: u64, retry_after_ms: u64) -> HitResult {
        HitResult { allowed, limit: 100, remaining, reset_ms, retry_after_ms }
    }

    #[test]
    fn scopes() {
        let api = || ("pets".to_owned(), "v1".to_owned());
        let operation = || "GET /pets".to_owned();
        assert_eq!(scope_key(Scope::Api, api, || unreachable!()), "api:pets@v1");
        assert_eq!(scope_key(Scope::Operation, api, operation), "op:pets@v1 GET /pets");
        assert_eq!(scope_key(Scope::Global, || unreachable!(), || unreachable!()), "global");
    }

    #[test]
    fn identity_callers() {
        let identity = identity();
        let caller = |key_by| identity_caller(&key_by, Some(&identity));
        assert_eq!(caller(KeyBy::Application).as_deref(), Some("app:shop"));
        assert_eq!(caller(KeyBy::Subscription), None);
        assert_eq!(caller(KeyBy::User).as_deref(), Some("user:ada"));
        assert_eq!(caller(KeyBy::Tier).as_deref(), Some("tier:Gold"));
        assert_eq!(caller(KeyBy::Ip), None);
        assert_eq!(identity_caller(&KeyBy::Application, None), None);
    }

    #[test]
    fn keys_differ_per_limit() {
        let second = Limit::new(10, 1_000, None, "1s".to_owned());
        let minute = Limit::new(10, 60_000, None, "1m".to_owned());
        let first = counter_key("api:pets@v1", &second, None, "app:shop");
        assert_eq!(first, "throttle|api:pets@v1|10/1000ms|app:shop");
        assert_ne!(first, counter_key("api:pets@v1", &minute, None, "app:shop"));
        assert_ne!(first, counter_key("api:pets@v1", &second, None, "ip:203.0.113.7"));
    }

    #[test]
    fn calendar_keys_name_their_period() {
        let day = Limit::new(1000, 86_400_000, Some((Calendar::Day, "UTC".to_owned())), "day".to_owned());
        let today = counter_key("api:pets@v1", &day, Some(1_796_252_400_000), "app:shop");
        assert_eq!(today, "throttle|api:pets@v1|1000/day@1796252400000|app:shop");
        assert_ne!(today, counter_key("api:pets@v1", &day, Some(1_796_338_800_000), "app:shop"), "tomorrow counts afresh");
    }

    #[test]
    fn a_calendar_hit_waits_at_most_until_the_period_ends() {
        let refused = within_period(hit(false, 0, 86_000_000, 86_000_000), 30_000);
        assert_eq!((refused.reset_ms, refused.retry_after_ms), (30_000, 30_000));
        let early = within_period(hit(true, 5, 1_000, 0), 30_000);
        assert_eq!((early.reset_ms, early.retry_after_ms), (1_000, 0));
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(seconds(0), 0);
        assert_eq!(seconds(1), 1);
        assert_eq!(seconds(1_000), 1);
        assert_eq!(seconds(1_001), 2);
        assert_eq!(seconds(u64::MAX), u64::MAX / 1_000 + 1);
    }

    #[test]
    fn a_refused_hit_leaves_nothing() {
        assert_eq!(Quota::from_hit(&hit(true, 7, 1_500, 0)), Quota { limit: 100, remaining: 7, reset_ms: 1_500 });
        assert_eq!(Quota::from_hit(&hit(false, 3, 1_500, 900)), Quota { limit: 100, remaining: 0, reset_ms: 1_500 });
    }

    #[test]
    fn the_tightest_quota_wins() {
        let loose = Quota { limit: 100, remaining: 50, reset_ms: 60_000 };
        let tight = Quota { limit: 10, remaining: 2, reset_ms: 1_000 };
        assert_eq!(tighter(None, loose), loose);
        assert_eq!(tighter(Some(loose), tight), tight);
        assert_eq!(tighter(Some(tight), loose), tight);
    }

    #[test]
    fn refusals_are_429_with_rate_limit_headers() {
        let limit = Limit::new(100, 60_000, None, "1m".to_owned());
        let response = refusal_response(&limit, &hit(false, 0, 42_001, 1_200));
        assert_eq!(response.status, 429);
        let header = |name: &str| response.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
        assert_eq!(header("retry-after").as_deref(), Some("2"));
        assert_eq!(header("ratelimit-limit").as_deref(), Some("100"));
        assert_eq!(header("ratelimit-remaining").as_deref(), Some("0"));
        assert_eq!(header("ratelimit-reset").as_deref(), Some("43"));
        assert_eq!(header("content-type").as_deref(), Some("application/problem+json"));
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["detail"], "The rate limit of 100 requests per 1m is used up; retry in 2 s.");
        let response = refusal_response(&limit, &hit(false, 0, 0, 0));
        assert!(response.headers.contains(&("retry-after".to_owned(), "1".to_owned())));
    }
}
