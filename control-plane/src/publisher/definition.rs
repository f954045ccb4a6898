//! What defines an API, as the publisher's endpoints take and show it: the API, its
//! operations, a new API and the replacement of one, and the summary in lists.

use portico_gateway::contract::environment::{Attachment, ClientCertificate};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::status::ApiStatus;

/// An API as its publisher sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Api {
    /// Id.
    pub id: String,
    /// Name, unique with `version`.
    pub name: String,
    /// Version label, e.g. `v1`.
    pub version: String,
    /// Path prefix such as `/pets`; gateways serve the API at `{context}/{version}`.
    pub context: String,
    /// What it is for.
    pub description: String,
    /// Labels for searching.
    pub tags: Vec<String>,
    /// Markdown documentation.
    pub documentation: String,
    /// Upstream base URLs (`http://host:port/base` or `https://…`).
    pub endpoints: Vec<String>,
    /// PEM CA certificates that `https://` endpoints' certificates must chain to (or an
    /// endpoint's own certificate, pinned), instead of the gateways' system roots.
    pub endpoint_ca: Option<String>,
    /// The client certificate (PEM) gateways present to `https://` endpoints that ask for
    /// one; its key is never shown.
    pub endpoint_client_certificate: Option<String>,
    /// The operations, by path then method.
    pub operations: Vec<Operation>,
    /// Policies for every operation, in order.
    #[schema(value_type = Vec<Object>)]
    pub policies: Vec<Attachment>,
    /// The scopes it defines; operations name those they require.
    pub scopes: Vec<Scope>,
    /// The subscription tiers subscribers may choose (WSO2's business plans).
    pub tiers: Vec<String>,
    /// Lifecycle status.
    pub status: ApiStatus,
    /// User name of the owner.
    pub owner: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
}

/// An API in a list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiSummary {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Version label.
    pub version: String,
    /// Path prefix.
    pub context: String,
    /// What it is for.
    pub description: String,
    /// Labels.
    pub tags: Vec<String>,
    /// Lifecycle status.
    pub status: ApiStatus,
    /// User name of the owner.
    pub owner: String,
    /// Milliseconds since the Unix epoch.
    pub updated_at: i64,
}

/// One operation of an API: a method and a path template below the API's context, the
/// shape of the gateway's `OperationConfig`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD`, `OPTIONS` or `ANY` (any case on input).
    pub method: String,
    /// Path template: `/pets`, `/pets/{id}`, `/files/*`.
    pub path: String,
    /// Policies for this operation, after the API's: `{"policy": "key-auth"|"throttle"|"headers", "config": {...}}`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub policies: Vec<Attachment>,
    /// Scopes of the API a caller's token must all carry to call this operation.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A scope an API defines, as WSO2 does: a permission an OAuth2 access token may carry,
/// bound to operations.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// 1 to 100 characters RFC 6749 allows in a scope (printable ASCII without space, `"`
    /// or `\\`), such as `pets:write`.
    #[schema(min_length = 1, max_length = 100, pattern = r#"^[!#-\[\]-~]+$"#)]
    pub name: String,
    /// What it allows.
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: String,
    /// The roles (`admin`, `publisher`, `subscriber`) an application's owner needs to be
    /// granted it; any role when empty.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A new API, for `POST /api/v1/apis`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApi {
    /// Name, unique with `version`.
    pub name: String,
    /// Version label: letters, digits, `.`, `-`, `_`.
    pub version: String,
    /// Path prefix such as `/pets`, unique with `version`.
    pub context: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Labels for searching.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Markdown documentation.
    #[serde(default)]
    pub documentation: String,
    /// Upstream base URLs (`http://…` or `https://…`), at least one.
    pub endpoints: Vec<String>,
    /// PEM CA certificates that `https://` endpoints' certificates must chain to (or an
    /// endpoint's own certificate, pinned), instead of the gateways' system roots.
    #[serde(default)]
    #[schema(max_length = 65536)]
    pub endpoint_ca: Option<String>,
    /// A client certificate gateways present to `https://` endpoints that ask for one
    /// (mutual TLS).
    #[serde(default)]
    pub endpoint_client_certificate: Option<EndpointClientCertificate>,
    /// The operations.
    #[serde(default)]
    pub operations: Vec<Operation>,
    /// Policies for every operation: `{"policy": "key-auth"|"throttle"|"headers", "config": {...}}`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub policies: Vec<Attachment>,
    /// The scopes it defines: a token gets one only when its application is subscribed
    /// to the API and its owner has one of the scope's roles.
    #[serde(default)]
    pub scopes: Vec<Scope>,
    /// The subscription tiers subscribers may choose (WSO2's business plans); the most
    /// restrictive subscription tier when none is given.
    #[serde(default)]
    pub tiers: Vec<String>,
}

/// The new state of an API, for `PUT /api/v1/apis/{id}`: every updatable field is replaced
/// (the operations as a set). Name, version and context are fixed at creation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiUpdate {
    /// May be sent, but must be the current name.
    pub name: Option<String>,
    /// May be sent, but must be the current version.
    pub version: Option<String>,
    /// May be sent, but must be the current context.
    pub context: Option<String>,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Labels for searching.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Markdown documentation.
    #[serde(default)]
    pub documentation: String,
    /// Upstream base URLs (`http://…` or `https://…`), at least one.
    pub endpoints: Vec<String>,
    /// PEM CA certificates that `https://` endpoints' certificates must chain to (or an
    /// endpoint's own certificate, pinned), instead of the gateways' system roots.
    #[serde(default)]
    #[schema(max_length = 65536)]
    pub endpoint_ca: Option<String>,
    /// A client certificate gateways present to `https://` endpoints that ask for one.
    /// Left out: kept as it is (its key is never shown, so a client cannot send it back);
    /// `null`: removed.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<EndpointClientCertificate>)]
    pub endpoint_client_certificate: Option<Option<EndpointClientCertificate>>,
    /// The operations.
    #[serde(default)]
    pub operations: Vec<Operation>,
    /// Policies for every operation.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub policies: Vec<Attachment>,
    /// The scopes it defines: a token gets one only when its application is subscribed
    /// to the API and its owner has one of the scope's roles.
    #[serde(default)]
    pub scopes: Vec<Scope>,
    /// The subscription tiers subscribers may choose (WSO2's business plans); the most
    /// restrictive subscription tier when none is given.
    #[serde(default)]
    pub tiers: Vec<String>,
}

/// A client certificate and its key, as a publisher gives them.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointClientCertificate {
    /// PEM: the certificate, then any intermediates.
    #[schema(max_length = 65536)]
    pub certificate: String,
    /// PEM: its private key. Stored sealed with the operator's key, never shown again.
    #[schema(max_length = 65536)]
    pub key: String,
}

impl EndpointClientCertificate {
    /// As a gateway takes it.
    pub fn to_contract(&self) -> ClientCertificate {
        ClientCertificate { certificate: self.certificate.clone(), key: self.key.clone() }
    }
}

/// A field that was given, `null` included (a field left out stays `None`).
fn given<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}
