//! The throttle configuration as written in JSON, and its validated form.

use std::collections::BTreeMap;

use portico_policy_sdk::http::is_token;
use serde::Deserialize;

/// The JSON configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Limits for callers whose tier is not in `tiers`.
    #[serde(default)]
    pub limits: Option<Vec<LimitConfig>>,
    /// Limits per tier name; an empty list means unlimited.
    #[serde(default)]
    pub tiers: Option<BTreeMap<String, Vec<LimitConfig>>>,
    /// Whose requests are counted together (see [`KeyBy`]); `application` by default.
    #[serde(default)]
    pub key_by: Option<String>,
    /// Where counters are shared.
    #[serde(default)]
    pub scope: Scope,
    /// Units each request counts for.
    #[serde(default = "one")]
    pub cost: u32,
    /// Which tier picks the limits.
    #[serde(default)]
    pub tier_source: TierSource,
    /// What to do when the store the fleet shares (Redis) cannot decide.
    #[serde(default)]
    pub on_store_unavailable: OnStoreUnavailable,
    /// The IANA time zone whose midnights start the `day` and `month` limits (UTC by default).
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// What a throttle does when the counters a fleet shares cannot decide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreUnavailable {
    /// Count in this gateway alone, against its share of the limit (fail-open).
    #[default]
    CountLocally,
    /// Refuse with 429 until the store answers again (fail-closed).
    Refuse,
}

/// Which tier of the caller picks the limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TierSource {
    /// The identity's tier: for a subscribed credential, its subscription's tier for the API
    /// being called; otherwise the application's tier.
    #[default]
    Identity,
    /// The application's own tier, whatever the subscription (the gateway keeps it in the
    /// context attribute `application.tier`).
    Application,
}

/// One limit: `requests` per `per`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Units allowed per window.
    pub requests: u64,
    /// A sliding window (`500ms`, `1s`, `10m`, `1h`, `1d`) or a calendar period (`day`,
    /// `month`) that starts over at midnight in `time_zone`.
    pub per: String,
    /// This calendar limit's time zone, instead of the policy's `time_zone`.
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// A period of the calendar a limit starts over with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calendar {
    /// Each day, at midnight.
    Day,
    /// Each month, at midnight of its first day.
    Month,
}

fn one() -> u32 {
    1
}

/// Where counters are shared.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One set of counters per API name and version.
    #[default]
    Api,
    /// One set per operation of an API.
    Operation,
    /// One set for every API the policy is attached to.
    Global,
}

/// Whose requests are counted together. The identity-based ones fall back to the client's
/// IP address for requests without that part of an identity, and so does `header:<name>`
/// when the header is absent, so that anonymous callers never share one counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyBy {
    /// The calling application.
    Application,
    /// The application's subscription.
    Subscription,
    /// The end user.
    User,
    /// The throttling tier: every caller of a tier together.
    Tier,
    /// The client's IP address.
    Ip,
    /// Every caller of the API together.
    Api,
    /// Every caller of the operation together.
    Operation,
    /// The value of a request header (lower-case name).
    Header(String),
}

impl KeyBy {
    fn parse(text: &str) -> Result<KeyBy, String> {
        let key_by = match text {
            "application" => KeyBy::Application,
            "subscription" => KeyBy::Subscription,
            "user" => KeyBy::User,
            "tier" => KeyBy::Tier,
            "ip" => KeyBy::Ip,
            "api" => KeyBy::Api,
            "operation" => KeyBy::Operation,
            _ => match text.strip_prefix("header:") {
                Some(name) if is_token(name) => KeyBy::Header(name.to_ascii_lowercase()),
                Some(name) => {
                    return Err(format!("`key_by`: `{name}` is not a valid header name"));
                }
                None => {
                    return Err(format!(
                        "`key_by`: `{text}` is not one of application, subscription, user, \
                         tier, ip, api, operation or header:<name>"
                    ));
                }
            },
        };
        Ok(key_by)
    }
}

/// A validated limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Units allowed per window.
    pub requests: u64,
    /// The window in milliseconds (a calendar period's longest, for ordering).
    pub window_ms: u64,
    /// The calendar period and its time zone, for a limit that starts over at midnight
    /// instead of sliding.
    pub calendar: Option<(Calendar, String)>,
    /// The window as configured, for messages.
    pub per: String,
    /// This limit's part of its counter keys: `requests/window_msms`, or `requests/per@`
    /// followed by the period's start for a calendar limit.
    pub key: String,
}

impl Limit {
    /// A limit of `requests` per `window_ms` (as configured: `per`), on `calendar` if given.
    pub fn new(requests: u64, window_ms: u64, calendar: Option<(Calendar, String)>, per: String) -> Limit {
        let key = match calendar {
            Some(_) => format!("{requests}/{per}@"),
            None => format!("{requests}/{window_ms}ms"),
        };
        Limit { requests, window_ms, calendar, per, key }
    }
}

/// The validated settings the policy runs with. Every list of limits is sorted by window,
/// shortest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Limits for callers whose tier is not in `tiers`.
    pub limits: Vec<Limit>,
    /// Limits per tier name.
    pub tiers: BTreeMap<String, Vec<Limit>>,
    /// Whose requests are counted together.
    pub key_by: KeyBy,
    /// Where counters are shared.
    pub scope: Scope,
    /// Units each request counts for.
    pub cost: u32,
    /// Which tier picks the limits.
    pub tier_source: TierSource,
    /// What to do when the shared store cannot decide.
    pub on_store_unavailable: OnStoreUnavailable,
    /// The time zones of the calendar limits, each with the field that set it (`time_zone`,
    /// `tiers.Gold[0].time_zone`): theirs are the host's to know.
    pub time_zones: Vec<(String, String)>,
}

impl Settings {
    /// Validates `config`; the error names the field that is wrong.
    pub fn from_config(config: Config) -> Result<Settings, String> {
        if config.limits.is_none() && config.tiers.is_none() {
            return Err("set `limits`, `tiers` or both".to_owned());
        }
        if config.cost == 0 {
            return Err("`cost` must be at least 1".to_owned());
        }
        let cost = u64::from(config.cost);
        let zone = config.time_zone.as_deref().unwrap_or("UTC");
        let mut time_zones = Vec::new();
        let limits = limit_list("limits", config.limits.unwrap_or_default(), cost, zone, &mut time_zones)?;
        let mut tiers = BTreeMap::new();
        for (tier, list) in config.tiers.unwrap_or_default() {
            let list = limit_list(&format!("tiers.{tier}"), list, cost, zone, &mut time_zones)?;
            tiers.insert(tier, list);
        }
        let key_by = match config.key_by {
            Some(text) => KeyBy::parse(&text)?,
            None => KeyBy::Application,
        };
        Ok(Settings {
            limits,
            tiers,
            key_by,
            scope: config.scope,
            cost: config.cost,
            tier_source: config.tier_source,
            on_store_unavailable: config.on_store_unavailable,
            time_zones,
        })
    }

    /// The limits for a caller of `tier`: the tier's own, else the default ones. Empty means
    /// unlimited.
    pub fn limits_for(&self, tier: Option<&str>) -> &[Limit] {
        tier.and_then(|tier| self.tiers.get(tier)).unwrap_or(&self.limits)
    }
}

/// The validated `list` at `field`; the time zones its calendar limits use go to `zones`.
fn limit_list(field: &str, list: Vec<LimitConfig>, cost: u64, zone: &str, zones: &mut Vec<(String, String)>) -> Result<Vec<Limit>, String> {
    let mut limits = Vec::with_capacity(list.len());
    for (index, limit) in list.into_iter().enumerate() {
        if limit.requests == 0 {
            return Err(format!("`{field}[{index}].requests` must be at least 1"));
        }
        if cost > limit.requests {
            return Err(format!(
                "`cost` ({cost}) is more than `{field}[{index}].requests` ({}): no request \
                 could ever pass",
                limit.requests
            ));
        }
        let zone_of_limit = || limit.time_zone.clone().unwrap_or_else(|| zone.to_owned());
        let (window_ms, calendar) = match limit.per.as_str() {
            "day" => (DAY_MS, Some((Calendar::Day, zone_of_limit()))),
            "month" => (31 * DAY_MS, Some((Calendar::Month, zone_of_limit()))),
            per => (
                parse_window(per).ok_or_else(|| {
                    format!(
                        "`{field}[{index}].per`: `{per}` is not a window like `500ms`, `1s`, \
                         `10m`, `1h` or `1d`, nor `day` or `month`"
                    )
                })?,
                None,
            ),
        };
        match (&calendar, &limit.time_zone) {
            (None, Some(_)) => return Err(format!("`{field}[{index}].time_zone`: only a `day` or `month` limit has one")),
            (Some(_), Some(own)) => zones.push((format!("{field}[{index}].time_zone"), own.clone())),
            (Some(_), None) if !zones.iter().any(|(at, _)| at == "time_zone") => zones.push(("time_zone".to_owned(), zone.to_owned())),
            _ => {}
        }
        limits.push(Limit::new(limit.requests, window_ms, calendar, limit.per));
    }
    limits.sort_by_key(|limit| limit.window_ms);
    Ok(limits)
}

const DAY_MS: u64 = 86_400_000;

/// Milliseconds in a window written as a positive whole number and a unit: `ms`, `s`, `m`,
/// `h` or `d`.
pub fn parse_window(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => DAY_MS,
        _ => return None,
    };
    number.checked_mul(unit_ms).filter(|&ms| ms > 0)
}

#[cfg(test)]
mod tests {
    use super::{Calendar, KeyBy, Limit, Scope, Settings, parse_window};
    use portico_policy_sdk::parse_config;

    fn settings(json: &str) -> Result<Settings, String> {
        Settings::from_config(parse_config(json)?)
    }

    fn limit(requests: u64, per: &str) -> Limit {
        Limit::new(requests, parse_window(per).unwrap(), None, per.to_owned())
    }

    #[test]
    fn windows() {
        assert_eq!(parse_window("500ms"), Some(500));
        assert_eq!(parse_window("1s"), Some(1_000));
        assert_eq!(parse_window("10s"), Some(10_000));
        assert_eq!(parse_window("1m"), Some(60_000));
        assert_eq!(parse_window("2h"), Some(7_200_000));
        assert_eq!(parse_window("1d"), Some(86_400_000));
        for bad in ["", "1", "s", "0s", "1 s", "-1s", "1.5s", "1S", "1sec", "99999999999999999999d"] {
            assert_eq!(parse_window(bad), None, "{bad}");
        }
    }

    #[test]
    fn full_config() {
        let settings = settings(
            r#"{"limits": [{"requests": 100, "per": "1m"}],
                "tiers": {"Gold": [{"requests": 5000, "per": "1m"}, {"requests": 50, "per": "1s"}],
                          "Unlimited": []},
                "key_by": "header:X-Client", "scope": "operation", "cost": 2}"#,
        )
        .unwrap();
        assert_eq!(settings.limits, [limit(100, "1m")]);
        assert_eq!(settings.tiers["Gold"], [limit(50, "1s"), limit(5000, "1m")]);
        assert!(settings.tiers["Unlimited"].is_empty());
        assert_eq!(settings.key_by, KeyBy::Header("x-client".to_owned()));
        assert_eq!(settings.scope, Scope::Operation);
        assert_eq!(settings.cost, 2);
    }

    #[test]
    fn calendar_limits_start_over_in_their_time_zone() {
        let settings = settings(
            r#"{"limits": [{"requests": 30000, "per": "month"}, {"requests": 1000, "per": "day"}, {"requests": 10, "per": "1s"}],
                "time_zone": "Europe/Paris"}"#,
        )
        .unwrap();
        let calendars: Vec<_> = settings.limits.iter().map(|limit| (limit.per.as_str(), limit.calendar.clone())).collect();
        let paris = "Europe/Paris".to_owned();
        assert_eq!(calendars, [("1s", None), ("day", Some((Calendar::Day, paris.clone()))), ("month", Some((Calendar::Month, paris)))]);
        assert_eq!(settings.time_zones, [("time_zone".to_owned(), "Europe/Paris".to_owned())]);
        let own = self::settings(
            r#"{"limits": [{"requests": 5, "per": "1m"}], "tiers": {"Gold": [{"requests": 5, "per": "day", "time_zone": "Asia/Colombo"}]}}"#,
        )
        .unwrap();
        assert_eq!(own.tiers["Gold"][0].calendar, Some((Calendar::Day, "Asia/Colombo".to_owned())));
        assert_eq!(own.time_zones, [("tiers.Gold[0].time_zone".to_owned(), "Asia/Colombo".to_owned())]);
        let utc = self::settings(r#"{"limits": [{"requests": 5, "per": "month"}]}"#).unwrap();
        assert_eq!(utc.limits[0].calendar, Some((Calendar::Month, "UTC".to_owned())));
        assert!(
            self::settings(r#"{"limits": [{"requests": 5, "per": "1d"}], "time_zone": "Mars/Olympus"}"#).unwrap().time_zones.is_empty()
        );
        let error = self::settings(r#"{"limits": [{"requests": 5, "per": "week"}]}"#).unwrap_err();
        assert!(error.contains("`limits[0].per`: `week` is not a window") && error.contains("nor `day` or `month`"), "{error}");
        let error = self::settings(r#"{"limits": [{"requests": 5, "per": "1h", "time_zone": "UTC"}]}"#).unwrap_err();
        assert!(error.contains("`limits[0].time_zone`: only a `day` or `month` limit"), "{error}");
    }

    #[test]
    fn defaults() {
        let settings = settings(r#"{"tiers": {"Gold": []}}"#).unwrap();
        assert!(settings.limits.is_empty());
        assert_eq!(settings.key_by, KeyBy::Application);
        assert_eq!(settings.scope, Scope::Api);
        assert_eq!(settings.cost, 1);
    }

    #[test]
    fn tiers_pick_their_limits() {
        let settings = settings(
            r#"{"limits": [{"requests": 1, "per": "1s"}],
                "tiers": {"Gold": [{"requests": 9, "per": "1s"}], "Unlimited": []}}"#,
        )
        .unwrap();
        assert_eq!(settings.limits_for(None), [limit(1, "1s")]);
        assert_eq!(settings.limits_for(Some("Bronze")), [limit(1, "1s")]);
        assert_eq!(settings.limits_for(Some("Gold")), [limit(9, "1s")]);
        assert!(settings.limits_for(Some("Unlimited")).is_empty());
    }

    #[test]
    fn key_by_values() {
        let cases = [
            ("application", KeyBy::Application),
            ("subscription", KeyBy::Subscription),
            ("user", KeyBy::User),
            ("tier", KeyBy::Tier),
            ("ip", KeyBy::Ip),
            ("api", KeyBy::Api),
            ("operation", KeyBy::Operation),
        ];
        for (text, expected) in cases {
            let json = format!(r#"{{"limits": [], "key_by": "{text}"}}"#);
            assert_eq!(settings(&json).unwrap().key_by, expected);
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("{}", "set `limits`, `tiers` or both"),
            (r#"{"limits": [], "cost": 0}"#, "`cost` must be at least 1"),
            (r#"{"limits": [{"requests": 0, "per": "1s"}]}"#, "`limits[0].requests` must be"),
            (r#"{"limits": [{"requests": 1, "per": "1s"}, {"requests": 1, "per": "1y"}]}"#, "`limits[1].per`: `1y` is not"),
            (r#"{"tiers": {"Gold": [{"requests": 1, "per": "x"}]}}"#, "`tiers.Gold[0].per`: `x` is not"),
            (r#"{"limits": [{"requests": 2, "per": "1s"}], "cost": 3}"#, "`cost` (3) is more than `limits[0].requests` (2)"),
            (r#"{"limits": [], "key_by": "app"}"#, "`key_by`: `app` is not one of"),
            (r#"{"limits": [], "key_by": "header:"}"#, "`key_by`: `` is not a valid header name"),
            (r#"{"limits": [], "scope": "world"}"#, "config field `scope`: unknown variant `world`"),
            (r#"{"limits": [], "on_store_unavailable": "panic"}"#, "config field `on_store_unavailable`: unknown variant `panic`"),
            (r#"{"limits": [{"requests": 1}]}"#, "config field `limits[0]`: missing field `per`"),
            (r#"{"limits": [{"requests": 1, "per": "1s", "burst": 2}]}"#, "config field `limits[0].burst`: unknown field"),
            (r#"{"limits": [{"requests": -1, "per": "1s"}]}"#, "config field `limits[0].requests`: invalid value"),
        ];
        for (json, expected) in cases {
            let error = settings(json).unwrap_err();
            assert!(error.starts_with(expected), "{json}: {error}");
        }
    }
}

#[cfg(test)]
mod tier_source_tests {
    use super::{Config, Settings, TierSource};
    use portico_policy_sdk::parse_config;

    #[test]
    fn a_throttle_counts_locally_when_the_shared_store_is_away_unless_told_to_refuse() {
        use super::OnStoreUnavailable;
        let settings = Settings::from_config(parse_config::<Config>(r#"{"limits": []}"#).unwrap()).unwrap();
        assert_eq!(settings.on_store_unavailable, OnStoreUnavailable::CountLocally);
        let settings =
            Settings::from_config(parse_config::<Config>(r#"{"limits": [], "on_store_unavailable": "refuse"}"#).unwrap()).unwrap();
        assert_eq!(settings.on_store_unavailable, OnStoreUnavailable::Refuse);
    }

    #[test]
    fn tier_source_defaults_to_the_identity() {
        let settings = Settings::from_config(parse_config::<Config>(r#"{"limits": []}"#).unwrap()).unwrap();
        assert_eq!(settings.tier_source, TierSource::Identity);
        let settings = Settings::from_config(parse_config::<Config>(r#"{"tiers": {}, "tier_source": "application"}"#).unwrap()).unwrap();
        assert_eq!(settings.tier_source, TierSource::Application);
        let error = parse_config::<Config>(r#"{"limits": [], "tier_source": "moon"}"#).unwrap_err();
        assert!(error.contains("tier_source"), "{error}");
    }
}
