//! The [`Policy`] trait and the glue that runs one instance of it behind the component's
//! `portico:policy/policy` exports.

use std::cell::RefCell;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::bindings::exports::portico::policy::policy::Guest;
use crate::{Context, Decision, Needs, Request, Response, parse_config, problem};

/// A gateway policy: its configuration, and what it does in each phase of a request.
///
/// The gateway creates an instance per component instance with [`Policy::new`] and reuses
/// it for many requests, one at a time; state in `self` survives from request to request
/// but may be dropped whenever the gateway recreates the instance. Export the type with
/// [`export_policy!`](crate::export_policy).
pub trait Policy: Sized + 'static {
    /// The JSON configuration of one attachment, parsed with [`parse_config`]. Mark it
    /// `#[serde(deny_unknown_fields)]` so that typos are refused.
    type Config: DeserializeOwned;

    /// Validates the configuration and builds the policy. An error refuses the gateway's
    /// whole configuration snapshot, so it should name the field that is wrong.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// What this policy needs from the gateway, asked once, right after [`Policy::new`]:
    /// the bodies it reads or replaces (the gateway streams the others), and whether it
    /// has a response phase. The default asks for the response phase and no body; a
    /// policy with nothing to do in [`Policy::on_response`] should return
    /// `Needs::empty()` and spare the gateway that call.
    fn needs(&self) -> Needs {
        Needs::RESPONSE_PHASE
    }

    /// The request phase: inspect or change the request, then continue or answer.
    fn on_request(&mut self, request: &Request, context: &Context) -> Decision {
        let _ = (request, context);
        Decision::Continue
    }

    /// The response phase, for every response of a request whose request phase ran in this
    /// policy, including immediate responses.
    fn on_response(&mut self, request: &Request, response: &Response, context: &Context) {
        let _ = (request, response, context);
    }
}

/// The object-safe part of [`Policy`], so that one static can hold any policy.
trait Phases {
    fn on_request(&mut self, request: &Request, context: &Context) -> Decision;
    fn on_response(&mut self, request: &Request, response: &Response, context: &Context);
}

impl<P: Policy> Phases for P {
    fn on_request(&mut self, request: &Request, context: &Context) -> Decision {
        Policy::on_request(self, request, context)
    }

    fn on_response(&mut self, request: &Request, response: &Response, context: &Context) {
        Policy::on_response(self, request, response, context)
    }
}

thread_local! {
    // A component instance is single-threaded and the host never re-enters it, so one
    // slot per instance is all the state there is.
    static INSTANCE: RefCell<Option<Box<dyn Phases>>> = const { RefCell::new(None) };
}

/// Implements the generated `Guest` trait for `P`; named by [`export_policy!`]'s expansion.
///
/// [`export_policy!`]: crate::export_policy
#[doc(hidden)]
pub struct Export<P>(PhantomData<P>);

impl<P: Policy> Guest for Export<P> {
    fn init(config: String) -> Result<Needs, String> {
        let policy = P::new(parse_config(&config)?)?;
        let access = policy.needs();
        INSTANCE.with(|slot| match slot.try_borrow_mut() {
            Ok(mut slot) => {
                *slot = Some(Box::new(policy));
                Ok(access)
            }
            Err(_) => Err("the policy is busy and cannot be initialised".to_owned()),
        })
    }

    fn on_request(request: &Request, context: &Context) -> Decision {
        with_instance(|policy| policy.on_request(request, context))
            .unwrap_or_else(|| problem(500, "Internal Server Error", "A policy was called before it was initialised.").into())
    }

    fn on_response(request: &Request, response: &Response, context: &Context) {
        // Without an instance there is nothing to add to the response.
        let _ = with_instance(|policy| policy.on_response(request, response, context));
    }
}

/// Runs `phase` on the initialised instance, or returns `None` when there is none.
fn with_instance<T>(phase: impl FnOnce(&mut dyn Phases) -> T) -> Option<T> {
    INSTANCE.with(|slot| {
        let mut slot = slot.try_borrow_mut().ok()?;
        let policy = slot.as_mut()?;
        Some(phase(policy.as_mut()))
    })
}

#[cfg(test)]
mod tests {
    use super::{Export, Guest, Phases, with_instance};
    use crate::{Needs, Policy};
    use serde::Deserialize;

    struct Sample;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        limit: u32,
    }

    impl Policy for Sample {
        type Config = Config;

        fn new(config: Config) -> Result<Self, String> {
            if config.limit == 0 {
                return Err("`limit` must be at least 1".to_owned());
            }
            Ok(Sample)
        }

        fn needs(&self) -> Needs {
            Needs::REQUEST_BODY
        }
    }

    fn installed() -> bool {
        with_instance(|_: &mut dyn Phases| ()).is_some()
    }

    #[test]
    fn init_parses_validates_and_installs() {
        assert!(!installed());
        let error = <Export<Sample> as Guest>::init(r#"{"limit": "x"}"#.to_owned()).unwrap_err();
        assert!(error.starts_with("config field `limit`"), "{error}");
        let error = <Export<Sample> as Guest>::init(r#"{"limit": 0}"#.to_owned()).unwrap_err();
        assert_eq!(error, "`limit` must be at least 1");
        assert!(!installed());
        let access = <Export<Sample> as Guest>::init(r#"{"limit": 3}"#.to_owned()).unwrap();
        assert_eq!(access, Needs::REQUEST_BODY);
        assert!(installed());
    }
}
