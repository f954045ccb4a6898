//! A policy that misbehaves on purpose, as its configuration says: panics on requests
//! carrying `x-panic` (after changing the request and the response headers), loops forever, grows its memory without end, recurses without
//! end, floods the host with headers (`flood-headers`) or attributes (`flood-attributes`), or
//! counts requests under a fixed key (`count-shared`).
//! The gateway must contain every one of these.

use portico_policy_sdk::{Context, Decision, Policy, Request};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
enum Mode {
    PanicOnHeader,
    Loop,
    Grow,
    Recurse,
    FloodHeaders,
    FloodAttributes,
    /// Count requests under the counter key `shared`, one a minute; 429 past it.
    CountShared,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    mode: Mode,
}

struct Misbehave {
    mode: Mode,
    hoard: Vec<Vec<u8>>,
}

impl Policy for Misbehave {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Misbehave { mode: config.mode, hoard: Vec::new() })
    }

    fn on_request(&mut self, request: &Request, context: &Context) -> Decision {
        match self.mode {
            Mode::PanicOnHeader => {
                // What a passing call leaves, a panicking one leaves too before it dies:
                // the gateway must discard it.
                let _ = request.set_header("x-misbehave", "passed");
                let _ = context.set_response_header("x-misbehave", "passed");
                if request.header("x-panic").is_some() {
                    let _ = request.set_header("x-misbehave", "panicked");
                    let _ = context.set_response_header("x-misbehave", "panicked");
                    panic!("asked to panic");
                }
            }
            Mode::Loop => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Mode::Grow => loop {
                self.hoard.push(vec![1u8; 16 * 1024 * 1024]);
            },
            Mode::Recurse => {
                std::hint::black_box(recurse(1));
            }
            Mode::FloodHeaders => {
                // Far more names than a request holds: the host refuses past its cap (a HeaderMap
                // would panic past 32k).
                let refused = (0..5_000).filter(|i| request.set_header(&format!("x-flood-{i}"), "v").is_err()).count();
                for i in 0..5_000 {
                    let _ = request.remove_header(&format!("x-flood-{i}"));
                }
                let _ = request.set_header("x-flood-refused", &refused.to_string());
            }
            Mode::CountShared => {
                if !portico_policy_sdk::counters::hit("shared", 1, 60_000, 1).allowed {
                    return portico_policy_sdk::ImmediateResponse::new(429).into();
                }
            }
            Mode::FloodAttributes => {
                for i in 0..1_000 {
                    context.set(&format!("flood-{i}"), "value");
                }
            }
        }
        Decision::Continue
    }
}

#[allow(unconditional_recursion)] // the point: a stack overflow
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    recurse(depth + 1) + frame[0]
}

portico_policy_sdk::export_policy!(Misbehave);
