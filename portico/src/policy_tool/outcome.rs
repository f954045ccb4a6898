//! What came out of one fixture case: the response, the request as the upstream saw it,
//! the identity and attributes the policy left, the counter hits, the time it took.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use portico_gateway::keys;

use super::fixtures::DecisionKind;
use super::mocks::Hit;

/// The request as the upstream saw it.
pub(super) struct Forwarded {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: Option<String>,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// What came out of one case.
pub(super) struct Outcome {
    pub(super) failure: Option<String>,
    pub(super) decision: Option<DecisionKind>,
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    pub(super) upstream: Option<Forwarded>,
    pub(super) identity: Option<keys::Identity>,
    pub(super) attributes: Vec<(String, String)>,
    pub(super) hits: Vec<Hit>,
    /// Both phases through the pipeline.
    pub(super) time: Duration,
}

impl Outcome {
    pub(super) fn failed(failure: String) -> Self {
        Self {
            failure: Some(failure),
            decision: None,
            status: 500,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            upstream: None,
            identity: None,
            attributes: Vec::new(),
            hits: Vec::new(),
            time: Duration::ZERO,
        }
    }
}
