//! The checks an environment must pass before anything is compiled: each part checked
//! with the parser of the module that will use it, every problem named by its path.

use crate::contract::Problem;
use crate::contract::environment::{Attachment, Environment};
use crate::network::{Network, UpstreamRule};
use crate::policy::{PolicyCeilings, builtin};
use crate::router::normalize_path;
use crate::upstream::{literal_address, parse_endpoint};

/// What is wrong with an environment, before anything is compiled: problems of the whole
/// environment, and each API's own (an API with problems is not loaded; the rest is).
/// Policy configurations are checked later, by each policy's `init`.
pub(crate) struct Validation {
    /// Problems that refuse the environment.
    pub global: Vec<Problem>,
    /// Problems of `apis[i]`, by `i`.
    pub apis: Vec<Vec<Problem>>,
    /// The rule upstream addresses are held to (none denied if it has a problem, which
    /// refuses the environment anyway).
    pub upstream_rule: UpstreamRule,
}

/// Check `config`, with attachments held to `ceilings`.
pub(crate) fn validate(config: &Environment, ceilings: &PolicyCeilings) -> Validation {
    let mut problems = Vec::new();
    let mut problem = |path: String, reason: String| problems.push(Problem { path, reason });
    for (i, ip) in config.blocked.ips.iter().enumerate() {
        if let Err(reason) = Network::parse(ip) {
            problem(format!("blocked.ips[{i}]"), reason);
        }
    }
    for (name, module) in &config.modules {
        if builtin::find(name).is_some() {
            problem(format!("modules.{name}"), "this name is a built-in policy; choose another".into());
        }
        if let Some(digest) = &module.sha256
            && !crate::contract::hex::is_sha256(digest)
        {
            problem(format!("modules.{name}.sha256"), "must be 64 hex digits".into());
        }
        if module.path.is_none() && module.sha256.is_none() {
            problem(format!("modules.{name}"), "needs a `path`, a `sha256` (a module from the store), or both".into());
        }
    }
    check_attachments(config, ceilings, "global_policies", &config.global_policies, &mut problem);
    let upstream_rule = UpstreamRule::new(&config.upstream_networks).unwrap_or_else(|reason| {
        problem("upstream_networks".into(), reason);
        UpstreamRule::default()
    });

    let mut seen_apis = std::collections::HashSet::new();
    let apis = config
        .apis
        .iter()
        .enumerate()
        .map(|(i, api)| {
            let mut problems = Vec::new();
            let mut problem = |path: String, reason: String| problems.push(Problem { path, reason });
            let at = format!("apis[{i}]");
            if api.name.trim().is_empty() {
                problem(format!("{at}.name"), "must not be empty".into());
            }
            if !seen_apis.insert((api.name.as_str(), api.version.as_str())) {
                problem(format!("{at}.name"), format!("API `{}` version `{}` is defined twice", api.name, api.version));
            }
            if !api.context.starts_with('/') {
                problem(format!("{at}.context"), format!("`{}` must start with `/`", api.context));
            } else if normalize_path(&api.context).map(|p| p != api.context.trim_end_matches('/') && api.context != "/").unwrap_or(true) {
                problem(format!("{at}.context"), format!("`{}` is not a normalised path", api.context));
            }
            if api.upstream.endpoints.is_empty() {
                problem(format!("{at}.upstream.endpoints"), "at least one endpoint is needed".into());
            }
            if let Some(certificate) = &api.upstream.client_certificate
                && let Err(reason) = crate::check::upstream_client_certificate(certificate)
            {
                problem(format!("{at}.upstream.client_certificate"), reason);
            }
            for (j, endpoint) in api.upstream.endpoints.iter().enumerate() {
                let checked = parse_endpoint(endpoint).and_then(|_| literal_address(endpoint).map_or(Ok(()), |ip| upstream_rule.check(ip)));
                if let Err(reason) = checked {
                    problem(format!("{at}.upstream.endpoints[{j}]"), reason);
                }
            }
            check_attachments(config, ceilings, &format!("{at}.policies"), &api.policies, &mut problem);
            for (j, operation) in api.operations.iter().enumerate() {
                let op_at = format!("{at}.operations[{j}]");
                if operation.method != "ANY" && http::Method::from_bytes(operation.method.as_bytes()).is_err() {
                    problem(format!("{op_at}.method"), format!("`{}` is not an HTTP method", operation.method));
                }
                if !operation.path.starts_with('/') {
                    problem(format!("{op_at}.path"), format!("`{}` must start with `/`", operation.path));
                }
                check_attachments(config, ceilings, &format!("{op_at}.policies"), &operation.policies, &mut problem);
            }
            problems
        })
        .collect();
    if let Some(secret) = &config.api_key_hmac_secret
        && (secret.len() < 32 || secret.len() % 2 != 0 || !secret.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        problem("api_key_hmac_secret".into(), "must be at least 16 bytes written as hex".into());
    }
    let mut seen_consumers = std::collections::HashSet::new();
    for (i, consumer) in config.consumers.iter().enumerate() {
        if !seen_consumers.insert(consumer.name.as_str()) {
            problem(format!("consumers[{i}].name"), format!("consumer `{}` is defined twice", consumer.name));
        }
        for (j, key) in consumer.api_keys.iter().enumerate() {
            if key.len() < 8 {
                problem(format!("consumers[{i}].api_keys[{j}]"), "an API key must have at least 8 characters".into());
            }
        }
        for (j, hash) in consumer.api_key_hashes.iter().enumerate() {
            if !crate::contract::hex::is_sha256(hash) {
                problem(format!("consumers[{i}].api_key_hashes[{j}]"), "must be 64 hex digits (sha256)".into());
            }
        }
        for (j, hash) in consumer.client_certificates.iter().enumerate() {
            if !crate::contract::hex::is_sha256(hash) {
                problem(
                    format!("consumers[{i}].client_certificates[{j}]"),
                    "must be 64 hex digits (the sha256 of the certificate's DER)".into(),
                );
            }
        }
    }
    for (i, hash) in config.revoked_api_keys.iter().enumerate() {
        if !crate::contract::hex::is_sha256(hash) {
            problem(format!("revoked_api_keys[{i}]"), "must be 64 hex digits (sha256)".into());
        }
    }
    Validation { global: problems, apis, upstream_rule }
}

/// Each attachment names a known policy and stays within the ceilings.
fn check_attachments(
    config: &Environment,
    ceilings: &PolicyCeilings,
    path: &str,
    attachments: &[Attachment],
    problem: &mut dyn FnMut(String, String),
) {
    for (i, attachment) in attachments.iter().enumerate() {
        let known = builtin::find(&attachment.policy).is_some() || config.modules.contains_key(&attachment.policy);
        if !known {
            problem(format!("{path}[{i}].policy"), format!("unknown policy `{}` (not built in, not in `modules`)", attachment.policy));
        }
        if let Err((field, reason)) = ceilings.check(attachment) {
            problem(format!("{path}[{i}].{field}"), reason);
        }
    }
}
