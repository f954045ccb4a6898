//! `maintenance-window`: an example Portico policy in Rust. During a weekly maintenance
//! window (UTC) it answers `503` with `Retry-After` until the window ends, unless the caller
//! has the bypass scope; in the minutes before a window it announces the window's start in
//! a response header. Time comes from the gateway's `clock` import, so fixtures can fix it.

mod schedule;

use portico_policy_sdk::{Context, Decision, Needs, Policy, Request, clock, problem};
use serde::Deserialize;

use schedule::{Window, rfc3339};

/// The policy, as configured for one attachment.
struct MaintenanceWindow {
    windows: Vec<Window>,
    bypass_scope: Option<String>,
    notice_ms: u64,
    message: String,
}

/// The attachment's configuration; unknown fields are refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The weekly windows.
    windows: Vec<WindowConfig>,
    /// Callers with this scope are let through during a window.
    #[serde(default)]
    bypass_scope: Option<String>,
    /// How long before a window to announce it (`x-maintenance-at`), in minutes.
    #[serde(default)]
    notice_minutes: u32,
    /// The problem's detail during a window.
    #[serde(default = "default_message")]
    message: String,
}

/// One window: the days it starts on and its times of day, UTC.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowConfig {
    /// `mon` … `sun`.
    days: Vec<String>,
    /// `HH:MM`.
    from: String,
    /// `HH:MM`; earlier than `from` means the next day.
    to: String,
}

fn default_message() -> String {
    "The API is down for maintenance.".to_owned()
}

impl Policy for MaintenanceWindow {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.windows.is_empty() {
            return Err("config field `windows`: at least one window".to_owned());
        }
        let mut windows = Vec::new();
        for (i, window) in config.windows.iter().enumerate() {
            windows.extend(
                Window::parse(&window.days, &window.from, &window.to).map_err(|why| format!("config field `windows[{i}]`: {why}"))?,
            );
        }
        Ok(MaintenanceWindow {
            windows,
            bypass_scope: config.bypass_scope,
            notice_ms: u64::from(config.notice_minutes) * 60_000,
            message: config.message,
        })
    }

    fn needs(&self) -> Needs {
        // The announcement is set in the request phase (`set-response-header`).
        Needs::empty()
    }

    fn on_request(&mut self, _request: &Request, context: &Context) -> Decision {
        let now = clock::now_ms();
        if let Some(ends_in) = self.windows.iter().filter_map(|w| w.remaining(now)).max() {
            let bypass = self.bypass_scope.as_ref().is_some_and(|scope| context.identity().is_some_and(|id| id.scopes.contains(scope)));
            if !bypass {
                let retry_after = ends_in.div_ceil(1000).to_string();
                return problem(503, "Service Unavailable", &self.message).header("retry-after", retry_after).into();
            }
        }
        if self.notice_ms > 0
            && let Some(starts_in) = self.windows.iter().map(|w| w.until_start(now)).filter(|&ms| ms <= self.notice_ms).min()
        {
            // A failure here only loses the announcement.
            let _ = context.set_response_header("x-maintenance-at", &rfc3339(now + starts_in));
        }
        Decision::Continue
    }
}

portico_policy_sdk::export_policy!(MaintenanceWindow);
