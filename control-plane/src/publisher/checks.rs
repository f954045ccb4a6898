//! The checks every way of defining an API shares (the API endpoints, OpenAPI import):
//! name, version, context, texts, tags, endpoints, operations and policy attachments, each
//! failure naming its field. What the gateway must accept is checked with its own code.

use portico_gateway::check::{self, RouteProblem};
use portico_gateway::contract::environment::Attachment;

use super::definition::{EndpointClientCertificate, Operation, Scope};
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::{AppState, traffic};

/// The methods an operation may name; `ANY` matches every method.
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY"];

/// Longest description, in characters.
const MAX_DESCRIPTION: usize = 10_000;

/// Longest documentation, in characters.
const MAX_DOCUMENTATION: usize = 500_000;

/// Check an API name: 1 to 100 characters without control characters or surrounding spaces.
pub(super) fn check_name(field: &str, name: &str) -> ApiResult<()> {
    let length = name.chars().count();
    if (1..=100).contains(&length) && name.trim() == name && !name.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(ApiError::invalid(field, "1 to 100 characters, without control characters or surrounding spaces"))
    }
}

/// Check a version label: it becomes a path segment, so 1 to 32 letters, digits, `.`, `-`,
/// `_`, starting with a letter or digit.
pub(super) fn check_version(field: &str, version: &str) -> ApiResult<()> {
    let ok = (1..=32).contains(&version.len())
        && version.starts_with(|c: char| c.is_ascii_alphanumeric())
        && version.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok { Ok(()) } else { Err(ApiError::invalid(field, "1 to 32 letters, digits, `.`, `-`, `_`, starting with a letter or digit")) }
}

/// Check a context: a normalised path of at least one segment, without a trailing slash
/// (the gateway appends `/{version}`).
pub(super) fn check_context(field: &str, context: &str) -> ApiResult<()> {
    if !context.starts_with('/') {
        return Err(ApiError::invalid(field, "must start with `/`, as in `/pets`"));
    }
    if context == "/" || context.ends_with('/') {
        return Err(ApiError::invalid(field, "a path such as `/pets`, without a trailing `/`"));
    }
    if context.len() > 200 {
        return Err(ApiError::invalid(field, "at most 200 characters"));
    }
    if context.contains(['{', '}', '*']) {
        return Err(ApiError::invalid(field, "a context has no parameters or wildcards"));
    }
    if check::is_normalised(context) {
        Ok(())
    } else {
        Err(ApiError::invalid(field, "not a normalised path: no empty, `.` or `..` segments, no spaces, percent-escapes in upper case"))
    }
}

/// Check the free-text fields.
pub(super) fn check_texts(description_field: &str, description: &str, documentation: &str) -> ApiResult<()> {
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::invalid(description_field, format!("at most {MAX_DESCRIPTION} characters")));
    }
    if documentation.chars().count() > MAX_DOCUMENTATION {
        return Err(ApiError::invalid("documentation", format!("at most {MAX_DOCUMENTATION} characters")));
    }
    Ok(())
}

/// Check tags: 1 to 50 characters each, no duplicates.
pub(super) fn check_tags(field: &str, tags: &[String]) -> ApiResult<()> {
    for (i, tag) in tags.iter().enumerate() {
        let length = tag.chars().count();
        if !(1..=50).contains(&length) || tag.trim() != tag || tag.chars().any(char::is_control) {
            return Err(ApiError::invalid(format!("{field}[{i}]"), "1 to 50 characters, without control characters or surrounding spaces"));
        }
        if tags[..i].contains(tag) {
            return Err(ApiError::invalid(format!("{field}[{i}]"), format!("`{tag}` is given twice")));
        }
    }
    Ok(())
}

/// Check endpoints: at least one, each an `http://` or `https://` URL the gateway accepts.
pub(super) fn check_endpoints(field: &str, endpoints: &[String]) -> ApiResult<()> {
    if endpoints.is_empty() {
        return Err(ApiError::invalid(field, "at least one endpoint, such as `http://backend:8080/base`"));
    }
    for (i, endpoint) in endpoints.iter().enumerate() {
        check::endpoint(endpoint).map_err(|reason| ApiError::invalid(format!("{field}[{i}]"), reason))?;
    }
    Ok(())
}

/// Check the subscription tiers an API offers: each a subscription tier, once; none
/// given is the most restrictive one.
pub(super) async fn check_tiers(db: &Db, field: &str, tiers: &mut Vec<String>) -> ApiResult<()> {
    if tiers.is_empty() {
        tiers.extend(traffic::most_restrictive(db, None).await?);
        return Ok(());
    }
    if tiers.len() > 20 {
        return Err(ApiError::invalid(field, "at most 20 tiers"));
    }
    for (i, tier) in tiers.iter().enumerate() {
        traffic::require(db, "subscription", tier, &format!("{field}[{i}]")).await?;
        if tiers[..i].contains(tier) {
            return Err(ApiError::invalid(format!("{field}[{i}]"), format!("`{tier}` is given twice")));
        }
    }
    Ok(())
}

/// Check an endpoints' client certificate as a gateway loads it: both PEM, at most 64 KiB
/// each, the key the certificate's. A failure names `{field}.certificate` or `{field}.key`.
pub(super) fn check_endpoint_client_certificate(field: &str, certificate: Option<&EndpointClientCertificate>) -> ApiResult<()> {
    let Some(given) = certificate else { return Ok(()) };
    for (part, text) in [("certificate", &given.certificate), ("key", &given.key)] {
        if text.len() > 64 * 1024 {
            return Err(ApiError::invalid(format!("{field}.{part}"), "at most 64 KiB of PEM"));
        }
    }
    check::upstream_client_certificate(&given.to_contract()).map_err(|reason| match reason.split_once(": ") {
        Some((part @ ("certificate" | "key"), why)) => ApiError::invalid(format!("{field}.{part}"), why),
        _ => ApiError::invalid(field, reason),
    })
}

/// Check an endpoints' CA: at most 64 KiB of PEM certificates a gateway can trust.
pub(super) fn check_endpoint_ca(field: &str, ca: Option<&str>) -> ApiResult<()> {
    let Some(ca) = ca else { return Ok(()) };
    if ca.len() > 64 * 1024 {
        return Err(ApiError::invalid(field, "at most 64 KiB of PEM certificates"));
    }
    check::upstream_ca(ca).map_err(|reason| ApiError::invalid(field, reason))
}

/// Check policy attachments' shape: a built-in policy or a registry reference
/// (`name@version`), each configured by a JSON object. Whether the policy exists and what
/// its configuration says is checked in [`check_policy_configs`].
pub(super) fn check_attachments(field: &str, attachments: &[Attachment]) -> ApiResult<()> {
    if attachments.len() > MAX_ATTACHMENTS {
        return Err(ApiError::invalid(field, format!("at most {MAX_ATTACHMENTS} policies")));
    }
    for (i, attachment) in attachments.iter().enumerate() {
        if check::builtin::find(&attachment.policy).is_none() && crate::registry::parse_reference(&attachment.policy).is_none() {
            let known: Vec<&str> = check::builtin::ALL.iter().map(|b| b.name).collect();
            return Err(ApiError::invalid(
                format!("{field}[{i}].policy"),
                format!(
                    "`{}` is not a policy: name a built-in ({}) or an uploaded policy as `name@version`",
                    attachment.policy,
                    known.join(", ")
                ),
            ));
        }
        if !attachment.config.is_object() {
            return Err(ApiError::invalid(format!("{field}[{i}].config"), "must be a JSON object"));
        }
    }
    Ok(())
}

/// Most policies attached in one place (an API, an operation): each runs its `init` on
/// every gateway, and keeps an instance there.
const MAX_ATTACHMENTS: usize = 16;

/// Most scopes one API defines.
const MAX_SCOPES: usize = 50;

/// The scope that asks the key manager for an ID token (OpenID Connect). No API may define
/// it: granted to whoever signs in, it must not open any operation.
pub const OPENID_SCOPE: &str = "openid";

/// Whether `name` is a scope as RFC 6749 §3.3 writes one (printable ASCII without space,
/// `"` or `\`), of 1 to 100 characters.
pub fn is_scope_name(name: &str) -> bool {
    (1..=100).contains(&name.len()) && name.chars().all(|c| c == '!' || ('#'..='[').contains(&c) || (']'..='~').contains(&c))
}

/// Check the scopes an API defines (names, descriptions, roles) and those its operations
/// and its own key-auth attachments require (each defined by the API: a scope it does not
/// define could be another API's, granted to that API's subscribers).
pub(super) fn check_scopes(scopes: &[Scope], policies: &[Attachment], operations: &[Operation]) -> ApiResult<()> {
    if scopes.len() > MAX_SCOPES {
        return Err(ApiError::invalid("scopes", format!("at most {MAX_SCOPES} scopes")));
    }
    for (i, scope) in scopes.iter().enumerate() {
        if !is_scope_name(&scope.name) {
            return Err(ApiError::invalid(
                format!("scopes[{i}].name"),
                "1 to 100 printable ASCII characters without spaces, `\"` or `\\`, such as `pets:write`",
            ));
        }
        if scope.name == OPENID_SCOPE {
            return Err(ApiError::invalid(
                format!("scopes[{i}].name"),
                format!("`{OPENID_SCOPE}` is kept for OpenID Connect (the key manager grants it to any user who signs in)"),
            ));
        }
        if scopes[..i].iter().any(|s| s.name == scope.name) {
            return Err(ApiError::invalid(format!("scopes[{i}].name"), format!("`{}` is defined twice", scope.name)));
        }
        if scope.description.chars().count() > 500 {
            return Err(ApiError::invalid(format!("scopes[{i}].description"), "at most 500 characters"));
        }
        for (j, role) in scope.roles.iter().enumerate() {
            if !["admin", "publisher", "subscriber"].contains(&role.as_str()) || scope.roles[..j].contains(role) {
                return Err(ApiError::invalid(format!("scopes[{i}].roles[{j}]"), "one of admin, publisher, subscriber, each once"));
            }
        }
    }
    let defined = |name: &str| scopes.iter().any(|s| s.name == name);
    let mut attached: Vec<(String, &[Attachment])> = vec![("policies".to_owned(), policies)];
    attached.extend(operations.iter().enumerate().map(|(i, op)| (format!("operations[{i}].policies"), &op.policies[..])));
    for (field, attachments) in attached {
        for (i, attachment) in attachments.iter().enumerate().filter(|(_, a)| a.policy == "key-auth") {
            let required = attachment.config.get("required_scopes").and_then(|r| r.as_array()).into_iter().flatten();
            if let Some(name) = required.filter_map(|r| r.as_str()).find(|name| !defined(name)) {
                return Err(ApiError::invalid(
                    format!("{field}[{i}].config.required_scopes"),
                    format!("`{name}` must be one of the API's `scopes`"),
                ));
            }
            if attachment.config.get("operation_scopes").is_some() {
                return Err(ApiError::invalid(
                    format!("{field}[{i}].config.operation_scopes"),
                    "bind scopes to operations with each operation's `scopes`",
                ));
            }
        }
    }
    for (i, operation) in operations.iter().enumerate() {
        for (j, name) in operation.scopes.iter().enumerate() {
            if !defined(name) || operation.scopes[..j].contains(name) {
                return Err(ApiError::invalid(
                    format!("operations[{i}].scopes[{j}]"),
                    format!("`{name}` must be one of the API's `scopes`, named once"),
                ));
            }
        }
    }
    Ok(())
}

/// Run each attached policy's own check of its configuration (see [`crate::registry`]).
pub(super) async fn check_policy_configs(state: &AppState, policies: &[Attachment], operations: &[Operation]) -> ApiResult<()> {
    let mut attachments: Vec<(String, Attachment)> =
        policies.iter().enumerate().map(|(i, a)| (format!("policies[{i}]"), a.clone())).collect();
    for (j, operation) in operations.iter().enumerate() {
        attachments.extend(operation.policies.iter().enumerate().map(|(i, a)| (format!("operations[{j}].policies[{i}]"), a.clone())));
    }
    state.registry.check(&state.db, &attachments, &state.settings.policy_ceilings).await
}

/// Check operations, upper-casing their methods. The templates are compiled by the
/// gateway's own router, so an accepted API always routes. `field_of(i)` names operation `i`.
pub(super) fn check_operations(operations: &mut [Operation], field_of: impl Fn(usize) -> String) -> ApiResult<()> {
    for (i, operation) in operations.iter_mut().enumerate() {
        let field = field_of(i);
        operation.method = operation.method.to_ascii_uppercase();
        if !METHODS.contains(&operation.method.as_str()) {
            return Err(ApiError::invalid(format!("{field}.method"), format!("one of {}", METHODS.join(", "))));
        }
        check_attachments(&format!("{field}.policies"), &operation.policies)?;
    }
    let routes: Vec<(Option<http::Method>, &str)> = operations.iter().map(|o| (route_method(&o.method), o.path.as_str())).collect();
    match check::operations(&routes) {
        Ok(()) => Ok(()),
        Err(RouteProblem::InvalidTemplate { index, reason }) => Err(ApiError::invalid(
            format!("{}.path", field_of(index)),
            format!("`{}` is not a path template: {reason}", operations[index].path),
        )),
        Err(RouteProblem::Repeated { index }) => {
            let operation = &operations[index];
            Err(ApiError::invalid(
                field_of(index),
                format!("`{} {}` is the same route as an earlier operation", operation.method, operation.path),
            ))
        }
    }
}

/// The router's method for a checked method name; `None` for `ANY`.
fn route_method(method: &str) -> Option<http::Method> {
    match method {
        "GET" => Some(http::Method::GET),
        "POST" => Some(http::Method::POST),
        "PUT" => Some(http::Method::PUT),
        "PATCH" => Some(http::Method::PATCH),
        "DELETE" => Some(http::Method::DELETE),
        "HEAD" => Some(http::Method::HEAD),
        "OPTIONS" => Some(http::Method::OPTIONS),
        _ => None,
    }
}
