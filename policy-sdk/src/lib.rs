//! Write Portico gateway policies in Rust.
//!
//! A policy is a WebAssembly component built for `wasm32-wasip2` from a `cdylib` crate. It
//! implements [`Policy`] and names its type once with [`export_policy!`]; this crate turns
//! that into the component exports of the `portico:policy` WIT world and gives typed access
//! to the host's services ([`keys`], [`counters`], [`log`], [`clock`]).
//!
//! ```rust
//! use portico_policy_sdk::{
//!     Context, Decision, ImmediateResponse, Needs, Policy, Request, Response, log, problem,
//! };
//! use serde::Deserialize;
//!
//! /// Refuses requests without a tenant header and echoes the tenant on the response.
//! struct RequireTenant {
//!     header: String,
//! }
//!
//! /// The JSON configuration; unknown fields are refused with their path.
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     #[serde(default = "default_header")]
//!     header: String,
//! }
//!
//! fn default_header() -> String {
//!     "x-tenant".to_owned()
//! }
//!
//! impl Policy for RequireTenant {
//!     type Config = Config;
//!
//!     fn new(config: Config) -> Result<Self, String> {
//!         if config.header.is_empty() {
//!             return Err("`header` must not be empty".to_owned());
//!         }
//!         Ok(RequireTenant { header: config.header.to_ascii_lowercase() })
//!     }
//!
//!     fn needs(&self) -> Needs {
//!         Needs::RESPONSE_PHASE
//!     }
//!
//!     fn on_request(&mut self, request: &Request, context: &Context) -> Decision {
//!         match request.header(&self.header) {
//!             Some(tenant) => {
//!                 context.set("tenant", &tenant);
//!                 Decision::Continue
//!             }
//!             None => {
//!                 log::info("request without tenant", &[("header", self.header.as_str())]);
//!                 problem(400, "Bad Request", "The request names no tenant.")
//!                     .header("cache-control", "no-store")
//!                     .into()
//!             }
//!         }
//!     }
//!
//!     fn on_response(&mut self, _request: &Request, response: &Response, context: &Context) {
//!         if let Some(tenant) = context.get("tenant") {
//!             if let Err(error) = response.set_header("x-tenant", &tenant) {
//!                 log::warn("cannot set x-tenant", &[("error", error.name())]);
//!             }
//!         }
//!     }
//! }
//!
//! portico_policy_sdk::export_policy!(RequireTenant);
//! # let _ = ImmediateResponse::new(204);
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release`; the `.wasm` file in
//! `target/wasm32-wasip2/release/` is the component the gateway loads.

#![deny(missing_docs)]

mod bindings;
mod config;
mod policy;
mod response;

pub mod http;
pub mod log;

pub use wit_bindgen;

pub use bindings::portico::policy::types::{
    BodyError, Context, Decision, HeaderError, Identity, ImmediateResponse, Needs, Request, Response,
};
pub use config::parse_config;
pub use policy::Policy;
pub use response::problem;

pub mod keys {
    //! Credential checks done by the host: API-key and client-certificate lookup, JWT
    //! verification.
    pub use crate::bindings::portico::policy::keys::{KeyError, VerifiedToken, lookup_api_key, lookup_client_certificate, verify_jwt};
}

pub mod counters {
    //! Rate counters shared by every instance of every policy, kept by the host.
    pub use crate::bindings::portico::policy::counters::{CounterError, HitResult, hit, try_hit};
}

pub mod clock {
    //! The gateway's clocks.
    pub use crate::bindings::portico::policy::clock::{Period, Span, calendar_period, monotonic_ns, now_ms};
}

/// Items used by [`export_policy!`]'s expansion; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::export;
    pub use crate::bindings::exports;
    pub use crate::policy::Export;
}

/// Exports a [`Policy`] implementation as the component's `portico:policy/policy` interface.
///
/// Use it once per policy crate, with the policy's type:
/// `portico_policy_sdk::export_policy!(MyPolicy);`.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        const _: () = {
            type __PorticoPolicyExport = $crate::__private::Export<$policy>;
            $crate::__private::export!(
                __PorticoPolicyExport with_types_in $crate::__private
            );
        };
    };
}
