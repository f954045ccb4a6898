//! What a gateway environment runs, built from the database: the revisions deployed to
//! it (as APIs with their policies), the throttling tiers, the applications' API keys with
//! their subscriptions, the key manager's signing keys, the revoked tokens and where rate
//! counters live. The result is the contract's [`Environment`], so a gateway fed from here
//! builds the same snapshot as one fed from a file.

use portico_gateway::contract::defaults;
use portico_gateway::contract::environment::{
    ApiConfig, Attachment, ClaimMapping, ClientCertificate, Consumer, Environment, JwtIssuer, JwtKey, ModuleSource, OperationConfig,
    RevokedToken, UpstreamConfig,
};
use portico_gateway::contract::hex;
use portico_gateway::contract::units::Duration;

use crate::error::ApiResult;
use crate::{AppState, devportal, keymanager, publisher, registry, traffic};

/// What `environment` runs (where and how its gateways listen is theirs to say).
pub async fn for_environment(state: &AppState, environment: &str) -> ApiResult<Environment> {
    let (db, settings) = (&state.db, &state.settings);
    let tiers = |kind| async move {
        ApiResult::Ok(
            traffic::all(db, kind).await?.into_iter().map(|tier| (tier.name.clone(), tier.limits())).collect::<serde_json::Map<_, _>>(),
        )
    };
    let subscription_tiers = tiers("subscription").await?;
    let application_tiers = tiers("application").await?;
    let mut apis = Vec::new();
    for deployed in publisher::deployed(db, environment).await? {
        if deployed.status != "PUBLISHED" && deployed.status != "DEPRECATED" {
            continue;
        }
        let client_key = publisher::client_key(db, &deployed.api_id, &deployed.revision_id).await?;
        let content = deployed.content;
        // Every managed API authenticates, checks the subscription, applies the
        // subscription's tier (per application and API) and the application's tier (per
        // application, across APIs), before the API's own policies.
        let operations: Vec<OperationConfig> = content
            .operations
            .iter()
            .map(|op| OperationConfig { method: op.method.clone(), path: op.path.clone(), policies: op.policies.clone() })
            .collect();
        // Operations bound to scopes: key-auth refuses a token that lacks one (403).
        let operation_scopes: serde_json::Map<String, serde_json::Value> = content
            .operations
            .iter()
            .zip(&operations)
            .filter(|(op, _)| !op.scopes.is_empty())
            .map(|(op, config)| (config.name(), serde_json::json!(op.scopes)))
            .collect();
        // An application's registered client certificate is a credential where a listener
        // verifies client certificates (mutual TLS), after those in the request.
        let mut key_auth = serde_json::json!({"require_subscription": true, "client_certificate": true});
        if !operation_scopes.is_empty() {
            key_auth["operation_scopes"] = serde_json::Value::Object(operation_scopes);
        }
        let mut policies = vec![
            attachment("key-auth", key_auth),
            attachment("throttle", serde_json::json!({"key_by": "application", "scope": "api", "tiers": subscription_tiers, "limits": []})),
            attachment(
                "throttle",
                serde_json::json!({"key_by": "application", "scope": "global", "tier_source": "application", "tiers": application_tiers, "limits": []}),
            ),
        ];
        policies.extend(content.policies.iter().cloned());
        apis.push(ApiConfig {
            name: content.name.clone(),
            version: content.version.clone(),
            context: format!("{}/{}", content.context.trim_end_matches('/'), content.version),
            hosts: Vec::new(),
            upstream: UpstreamConfig {
                endpoints: content.endpoints.clone(),
                connect_timeout: Duration(defaults::UPSTREAM_CONNECT_TIMEOUT),
                timeout: Duration(defaults::UPSTREAM_TIMEOUT),
                ca: content.endpoint_ca.clone(),
                client_certificate: content
                    .endpoint_client_certificate
                    .clone()
                    .zip(client_key)
                    .map(|(certificate, key)| ClientCertificate { certificate, key }),
            },
            policies,
            operations,
        });
    }

    let keys = devportal::listed_api_keys(db).await?;
    let mut revoked_api_keys: Vec<String> = keys.iter().filter(|key| key.revoked).map(|key| key.key_hash.clone()).collect();
    revoked_api_keys.sort();
    let mut consumers = keys
        .into_iter()
        .enumerate()
        .map(|(i, key)| Consumer {
            api_key_hashes: vec![key.key_hash],
            ..holder(
                format!("key-{i}-{}", key.application_id),
                key.application_id,
                key.application_tier,
                key.owner_username,
                key.subscriptions,
            )
        })
        .collect::<Vec<_>>();
    // One consumer per application that registered client certificates, holding them all.
    let mut holding = std::collections::HashMap::new();
    for certificate in devportal::registered_client_certificates(db).await? {
        let at = *holding.entry(certificate.application_id.clone()).or_insert_with(|| {
            let name = format!("certificates-{}", certificate.application_id);
            consumers.push(holder(
                name,
                certificate.application_id,
                certificate.application_tier,
                certificate.owner_username,
                certificate.subscriptions,
            ));
            consumers.len() - 1
        });
        consumers[at].client_certificates.push(certificate.sha256);
    }

    let keys = keymanager::public_keys(state)
        .await?
        .into_iter()
        .map(|(kid, _alg, pem)| JwtKey { kid: Some(kid), pem: Some(pem), pem_file: None })
        .collect::<Vec<_>>();
    let mut jwt_issuers = if keys.is_empty() {
        Vec::new()
    } else {
        vec![JwtIssuer {
            issuer: settings.issuer.clone(),
            audiences: vec![keymanager::AUDIENCE.to_owned()],
            algorithms: vec!["ES256".to_owned(), "RS256".to_owned()],
            keys,
            jwks: None,
            jwks_file: None,
            claims: ClaimMapping { user: "username".to_owned(), ..ClaimMapping::default() },
            leeway: Duration(defaults::JWT_LEEWAY),
            typ: Some("at+jwt".to_owned()),
            require_jti: true,
            discovery: None,
            clients: None,
        }]
    };
    let external = keymanager::issuers_for(db, environment).await?;
    if !external.is_empty() {
        let holders = devportal::external_client_holders(db).await?;
        for (name, mut issuer) in external {
            let clients = holders.iter().filter(|holder| holder.key_manager == name);
            issuer.clients = Some(clients.map(|holder| (holder.client_id.clone(), holder.application.clone())).collect());
            jwt_issuers.push(issuer);
        }
    }
    let mut revoked_tokens: Vec<RevokedToken> = keymanager::revoked_jtis(db)
        .await?
        .into_iter()
        .map(|(jti, exp_ms)| RevokedToken { jti, expires_at: u64::try_from(exp_ms / 1000).unwrap_or(0) })
        .collect();
    revoked_tokens.sort_by(RevokedToken::canonical_order);
    let revoked_before =
        keymanager::cutoffs(db).await?.into_iter().map(|(application, from_s)| (application, u64::try_from(from_s).unwrap_or(0))).collect();
    let secret = devportal::api_key_hmac_secret(db).await?;
    // Uploaded policies travel by digest; each gateway fetches and verifies them.
    let mut attached: Vec<&str> = Vec::new();
    for api in &apis {
        attached.extend(api.policies.iter().map(|a| a.policy.as_str()));
        for operation in &api.operations {
            attached.extend(operation.policies.iter().map(|a| a.policy.as_str()));
        }
    }
    let modules = registry::digests(db, attached)
        .await?
        .into_iter()
        .map(|(reference, digest)| (reference, ModuleSource { path: None, sha256: Some(digest) }))
        .collect();

    Ok(Environment {
        apis,
        consumers,
        jwt_issuers,
        revoked_tokens,
        revoked_before,
        revoked_api_keys,
        api_key_hmac_secret: Some(hex::encode(&secret)),
        modules,
        blocked: traffic::blocking::for_gateways(db).await?,
        upstream_networks: publisher::upstream_networks(&mut *db.pool.acquire().await?, environment).await?.unwrap_or_default(),
        counters: publisher::counters(db, environment).await?.unwrap_or_default(),
        ..Environment::default()
    })
}

/// [`for_environment`] as the fleet's hub calls it.
pub(crate) fn build<'a>(
    state: &'a AppState,
    environment: &'a str,
) -> std::pin::Pin<Box<dyn Future<Output = ApiResult<Environment>> + Send + 'a>> {
    Box::pin(for_environment(state, environment))
}

fn attachment(policy: &str, config: serde_json::Value) -> Attachment {
    serde_json::from_value(serde_json::json!({"policy": policy, "config": config})).expect("a valid attachment")
}

/// The consumer of an application's credentials, without the credentials: it acts for the
/// application's owner, at the application's tier, with its subscriptions.
fn holder(
    name: String,
    application: String,
    tier: String,
    user: String,
    subscriptions: std::collections::BTreeMap<String, String>,
) -> Consumer {
    Consumer {
        name,
        application: Some(application),
        tier: Some(tier),
        user: Some(user),
        scopes: Vec::new(),
        api_keys: Vec::new(),
        api_key_hashes: Vec::new(),
        client_certificates: Vec::new(),
        subscriptions: Some(subscriptions),
    }
}
