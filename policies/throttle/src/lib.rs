//! throttle: Portico's built-in rate-limiting policy. It counts each request against the
//! caller's limits (its tier's, else the default ones) with the host's shared counters,
//! answers 429 when one is used up, and reports the tightest quota to the gateway, which sends
//! the tightest of all its throttles' in `RateLimit-*` headers. Everything happens in the
//! request phase: the policy needs no response-phase call.

mod config;
mod quota;

use portico_policy_sdk::clock::{self, Period, Span};
use portico_policy_sdk::counters::{CounterError, hit, try_hit};
use portico_policy_sdk::{Context, Decision, Needs, Policy, Request, log, problem};

use crate::config::{Calendar, Config, KeyBy, OnStoreUnavailable, Settings, TierSource};
use crate::quota::{
    Quota, concat, counter_key, identity_caller, refusal_response, scope_key, tighter, unavailable_response, within_period,
};

/// The throttle policy.
struct Throttle {
    settings: Settings,
}

impl Throttle {
    /// The caller part of the counter keys for this request.
    fn caller(&self, request: &Request, context: &Context, identity: Option<&portico_policy_sdk::Identity>) -> String {
        let ip = || concat(&["ip:", &request.client_addr()]);
        match &self.settings.key_by {
            KeyBy::Ip => ip(),
            KeyBy::Api => concat(&["api:", &context.api_name(), "@", &context.api_version()]),
            KeyBy::Operation => concat(&["op:", &context.api_name(), "@", &context.api_version(), " ", &context.operation()]),
            KeyBy::Header(name) => match request.header(name) {
                Some(value) => concat(&["header:", name, "=", &value]),
                None => ip(),
            },
            identity_based => identity_caller(identity_based, identity).unwrap_or_else(ip),
        }
    }
}

impl Policy for Throttle {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let settings = Settings::from_config(config)?;
        for (field, zone) in &settings.time_zones {
            clock::calendar_period(Period::Day, zone).map_err(|error| format!("`{field}`: {error}"))?;
        }
        Ok(Throttle { settings })
    }

    fn on_request(&mut self, request: &Request, context: &Context) -> Decision {
        let identity = context.identity();
        let application_tier;
        let tier = match self.settings.tier_source {
            TierSource::Identity => identity.as_ref().and_then(|identity| identity.tier.as_deref()),
            TierSource::Application => {
                application_tier = context.get("application.tier");
                application_tier.as_deref()
            }
        };
        let limits = self.settings.limits_for(tier);
        if limits.is_empty() {
            return Decision::Continue;
        }
        let scope = scope_key(self.settings.scope, || (context.api_name(), context.api_version()), || context.operation());
        let caller = self.caller(request, context, identity.as_ref());
        let mut tightest: Option<Quota> = None;
        let mut periods = Periods::default();
        for limit in limits {
            // A calendar limit counts on a key of its current period, over a window as long
            // as the period.
            let (key, window_ms, ends_ms) = match limit.calendar {
                None => (counter_key(&scope, limit, None, &caller), limit.window_ms, None),
                Some((calendar, ref zone)) => match periods.current(calendar, zone) {
                    Ok(span) => (counter_key(&scope, limit, Some(span.start_ms), &caller), span.end_ms - span.start_ms, Some(span.end_ms)),
                    Err(error) => {
                        log::error("cannot tell the calendar period", &[("time_zone", zone), ("error", &error)]);
                        return problem(500, "Internal Server Error", "The rate limit's calendar period cannot be told.").into();
                    }
                },
            };
            let result = match self.settings.on_store_unavailable {
                OnStoreUnavailable::CountLocally => hit(&key, limit.requests, window_ms, self.settings.cost),
                OnStoreUnavailable::Refuse => match try_hit(&key, limit.requests, window_ms, self.settings.cost) {
                    Ok(result) => result,
                    Err(CounterError::Unavailable) => return unavailable_response().into(),
                },
            };
            let result = match ends_ms {
                Some(end) => within_period(result, end.saturating_sub(periods.now_ms())),
                None => result,
            };
            if !result.allowed {
                report(context, Quota::from_hit(&result));
                return refusal_response(limit, &result).into();
            }
            tightest = Some(tighter(tightest, Quota::from_hit(&result)));
        }
        if let Some(quota) = tightest {
            report(context, quota);
        }
        Decision::Continue
    }

    fn needs(&self) -> Needs {
        Needs::empty()
    }
}

/// The calendar periods a request's limits fall in, asked of the host once each.
#[derive(Default)]
struct Periods<'a> {
    known: Vec<(Calendar, &'a str, Span)>,
    now_ms: Option<u64>,
}

impl<'a> Periods<'a> {
    fn current(&mut self, calendar: Calendar, zone: &'a str) -> Result<Span, String> {
        if let Some((_, _, span)) = self.known.iter().find(|(c, z, _)| *c == calendar && *z == zone) {
            return Ok(*span);
        }
        let period = match calendar {
            Calendar::Day => Period::Day,
            Calendar::Month => Period::Month,
        };
        let span = clock::calendar_period(period, zone)?;
        self.known.push((calendar, zone, span));
        Ok(span)
    }

    fn now_ms(&mut self) -> u64 {
        *self.now_ms.get_or_insert_with(clock::now_ms)
    }
}

/// Hand `quota` to the gateway, which keeps the tightest of a request's for its response's
/// `RateLimit-*` headers.
fn report(context: &Context, quota: Quota) {
    context.report_quota(quota.limit, quota.remaining, quota.reset_ms);
}

portico_policy_sdk::export_policy!(Throttle);
