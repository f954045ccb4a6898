//! Host bindings generated from `wit/`, quarantined here. The three request-scoped
//! resources map to marker types: an instance serves one request at a time, so the
//! host finds the request in the store's data rather than in a resource table.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "portico:policy/policy-world",
    imports: { default: trappable },
    with: {
        "portico:policy/types.request": crate::policy::bindings::RequestHandle,
        "portico:policy/types.response": crate::policy::bindings::ResponseHandle,
        "portico:policy/types.context": crate::policy::bindings::ContextHandle,
    },
});

/// Marker for the `request` resource: the exchange's request.
pub struct RequestHandle;
/// Marker for the `response` resource: the exchange's response.
pub struct ResponseHandle;
/// Marker for the `context` resource: the exchange's route, identity and attributes.
pub struct ContextHandle;

pub use portico::policy::types::{Decision, ImmediateResponse, Needs};
pub use portico::policy::{clock, counters, keys, log, types};
