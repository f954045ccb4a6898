//! Host bindings generated from `wit/`, quarantined here. The three request-scoped
//! resources map to marker types: an instance serves one request at a time, so the
//! host finds the request in the store's data rather than in a resource table.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "portico:policy/policy-world",
    imports: { default: trappable },
    with: {
        "portico:policy/types.request": super::host::RequestHandle,
        "portico:policy/types.response": super::host::ResponseHandle,
        "portico:policy/types.context": super::host::ContextHandle,
    },
});

pub use portico::policy::types::{Decision, ImmediateResponse, Needs};
pub use portico::policy::{clock, counters, keys, log, types};
