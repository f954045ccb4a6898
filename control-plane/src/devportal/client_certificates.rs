//! Client certificates of applications: an application registers the certificate its
//! clients present over mutual TLS, and a gateway listener that verifies client
//! certificates (`client_ca`) then knows the caller as that application, as with an API
//! key. Registering one takes a proof that the registrant holds its private key, since a
//! certificate is public; it belongs to one application, and gateways receive its sha256
//! only, until it expires or is removed.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use portico_gateway::check;
use portico_gateway::contract::hex;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use x509_parser::certificate::X509Certificate;

use super::api_keys::{REVOKED_KEYS_LISTED_FOR_MS, subscriptions_of_holders};
use super::applications::owned;

use crate::AppState;
use crate::auth::Caller;
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult, JsonBody};
use crate::fleet::Change;

/// The longest certificate text taken, in characters: a TLS client cannot send a bigger
/// certificate.
pub const MAX_CERTIFICATE_TEXT: usize = 64 * 1024;

/// What the proof of possession signs, followed by the application's id.
pub const PROOF_PREFIX: &str = "portico-client-certificate:";

/// A registered client certificate.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ApplicationCertificate {
    /// Id.
    pub id: String,
    /// Lower-case hex sha256 of the certificate's DER: what gateways know it by
    /// (`openssl x509 -noout -fingerprint -sha256`, without the colons).
    pub sha256: String,
    /// The certificate's subject, e.g. `CN=partner-client`.
    pub subject: String,
    /// Start of its validity, milliseconds since the Unix epoch.
    pub not_before: i64,
    /// End of its validity, milliseconds since the Unix epoch; gateways refuse it after.
    pub not_after: i64,
    /// The certificate, PEM.
    pub certificate: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// What `POST /api/v1/applications/{id}/client-certificates` takes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApplicationCertificate {
    /// The client's own certificate: one, PEM, no key, no chain. Listeners verify its chain
    /// against their `client_ca`.
    pub certificate: String,
    /// Proof that the registrant holds the certificate's private key: the signature, in
    /// base64, of the text `portico-client-certificate:` followed by the application's id,
    /// made with that key (ECDSA, Ed25519 or RSA; e.g. `printf 'portico-client-certificate:%s'
    /// "$APP" | openssl dgst -sha256 -sign client.key | base64 -w0`).
    pub proof: String,
}

/// A registered certificate as gateways must know it: its sha256, with its application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateOwner {
    /// Lower-case hex sha256 of the DER.
    pub sha256: String,
    /// The application that registered it.
    pub application_id: String,
    /// Its application tier.
    pub application_tier: String,
    /// User name of the application's owner.
    pub owner_username: String,
    /// The application's subscriptions: tier by `name@version` (see
    /// [`super::ApiKeyOwner::subscriptions`]).
    pub subscriptions: BTreeMap<String, String>,
}

const COLUMNS: &str = "id, sha256, subject, not_before, not_after, certificate, created_at";

/// Every registered certificate that has not expired, oldest first, with its application
/// and subscriptions. An expired one is left out, so that gateways refuse it even on a TLS
/// session resumed from before it expired.
pub async fn registered_client_certificates(db: &Db) -> ApiResult<Vec<CertificateOwner>> {
    let now = now_ms();
    let certificates: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT c.sha256, ap.id, ap.tier, u.username FROM client_certificates c \
         JOIN applications ap ON ap.id = c.application_id JOIN users u ON u.id = ap.owner_id \
         WHERE c.not_after > $1 ORDER BY c.created_at, c.id",
    )
    .bind(now)
    .fetch_all(&db.pool)
    .await?;
    if certificates.is_empty() {
        return Ok(Vec::new());
    }
    let by_application = subscriptions_of_holders(db, now - REVOKED_KEYS_LISTED_FOR_MS).await?;
    Ok(certificates
        .into_iter()
        .map(|(sha256, application_id, application_tier, owner_username)| CertificateOwner {
            subscriptions: by_application.get(&application_id).cloned().unwrap_or_default(),
            sha256,
            application_id,
            application_tier,
            owner_username,
        })
        .collect())
}

/// List an application's client certificates, oldest first.
#[utoipa::path(get, path = "/api/v1/applications/{id}/client-certificates", operation_id = "list_client_certificates", tag = "devportal",
    params(("id" = String, Path)),
    responses((status = 200, body = [ApplicationCertificate]), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Vec<ApplicationCertificate>>> {
    owned(&state.db, &caller, &id).await?;
    let certificates = sqlx::query_as::<_, ApplicationCertificate>(&format!(
        "SELECT {COLUMNS} FROM client_certificates WHERE application_id = $1 ORDER BY created_at, id"
    ))
    .bind(&id)
    .fetch_all(&state.db.pool)
    .await?;
    Ok(Json(certificates))
}

/// Register a client certificate for an application: from then on, a client presenting it
/// to a listener that verifies client certificates is this application.
#[utoipa::path(post, path = "/api/v1/applications/{id}/client-certificates", operation_id = "register_client_certificate", tag = "devportal",
    params(("id" = String, Path)), request_body = NewApplicationCertificate,
    responses((status = 201, body = ApplicationCertificate),
        (status = 400, description = "not one usable client certificate (`certificate`), or no proof of holding its key (`proof`)"),
        (status = 401), (status = 403), (status = 404), (status = 409, description = "already registered (for this or another application)")),
    security(("bearer" = [])))]
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(new): JsonBody<NewApplicationCertificate>,
) -> ApiResult<(StatusCode, Json<ApplicationCertificate>)> {
    owned(&state.db, &caller, &id).await?;
    let (der, described) = describe(&new.certificate).map_err(|why| ApiError::invalid("certificate", why))?;
    check_proof(&der, &id, &new.proof)?;
    let certificate = ApplicationCertificate { id: new_id(), created_at: now_ms(), ..described };
    let mut change = Change::begin(&state).await?;
    let inserted =
        sqlx::query(&format!("INSERT INTO client_certificates (application_id, {COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
            .bind(&id)
            .bind(&certificate.id)
            .bind(&certificate.sha256)
            .bind(&certificate.subject)
            .bind(certificate.not_before)
            .bind(certificate.not_after)
            .bind(&certificate.certificate)
            .bind(certificate.created_at)
            .execute(&mut *change)
            .await;
    match inserted {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(ApiError::Conflict("this certificate is already registered; a certificate identifies one application".to_owned()));
        }
        Err(error) => return Err(error.into()),
    }
    tracing::info!(application = %id, certificate = %certificate.id, sha256 = %certificate.sha256, "client certificate registered");
    change.commit().await?;
    Ok((StatusCode::CREATED, Json(certificate)))
}

/// Remove a client certificate: gateways refuse it from their next environment on.
#[utoipa::path(delete, path = "/api/v1/applications/{id}/client-certificates/{certificate_id}", operation_id = "remove_client_certificate",
    tag = "devportal", params(("id" = String, Path), ("certificate_id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, certificate_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    owned(&state.db, &caller, &id).await?;
    let mut change = Change::begin(&state).await?;
    let removed = sqlx::query("DELETE FROM client_certificates WHERE id = $1 AND application_id = $2")
        .bind(&certificate_id)
        .bind(&id)
        .execute(&mut *change)
        .await?;
    if removed.rows_affected() == 0 {
        return Err(ApiError::not_found("client certificate", &certificate_id));
    }
    tracing::info!(application = %id, certificate = %certificate_id, "client certificate removed");
    change.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The DER of the certificate of `pem`, and the certificate as listed (without id and date),
/// when a listener that verifies client certificates could take it from a client: one
/// end-entity certificate, usable for client authentication, valid now.
fn describe(pem: &str) -> Result<(Vec<u8>, ApplicationCertificate), String> {
    if pem.chars().count() > MAX_CERTIFICATE_TEXT {
        return Err(format!("longer than {MAX_CERTIFICATE_TEXT} characters"));
    }
    let der = check::client_certificate(pem)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|error| format!("not an X.509 certificate: {error}"))?;
    check_usable(&parsed)?;
    let subject = parsed.subject().to_string();
    if subject.chars().any(char::is_control) {
        return Err("its subject holds control characters".to_owned());
    }
    let validity = parsed.validity();
    let described = ApplicationCertificate {
        id: String::new(),
        sha256: hex::sha256(&der),
        subject,
        not_before: validity.not_before.timestamp().saturating_mul(1000),
        not_after: validity.not_after.timestamp().saturating_mul(1000),
        certificate: pem_of(&der),
        created_at: 0,
    };
    Ok((der, described))
}

/// What a listener's verifier would refuse in a client's certificate, and an expired one.
fn check_usable(parsed: &X509Certificate<'_>) -> Result<(), String> {
    if parsed.is_ca() {
        return Err("is a CA certificate: register the client's own certificate".to_owned());
    }
    match parsed.extended_key_usage() {
        Ok(Some(usage)) if !usage.value.client_auth && !usage.value.any => {
            return Err("its extended key usage does not allow client authentication (clientAuth)".to_owned());
        }
        Ok(_) => {}
        Err(error) => return Err(format!("its extended key usage cannot be read: {error}")),
    }
    let validity = parsed.validity();
    if validity.not_after <= validity.not_before {
        return Err(format!("its validity ends ({}) before it starts ({})", validity.not_after, validity.not_before));
    }
    if validity.not_after.timestamp() <= now_ms() / 1000 {
        return Err(format!("expired on {}", validity.not_after));
    }
    Ok(())
}

/// That `proof` is a signature of [`PROOF_PREFIX`] and `application` made with the key of
/// certificate `der`.
fn check_proof(der: &[u8], application: &str, proof: &str) -> ApiResult<()> {
    use base64::Engine;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(proof.trim())
        .map_err(|_| ApiError::invalid("proof", "must be base64 (standard alphabet) of a signature"))?;
    let message = format!("{PROOF_PREFIX}{application}");
    if check::signed_with_key_of(der, message.as_bytes(), &signature) {
        return Ok(());
    }
    Err(ApiError::invalid(
        "proof",
        format!("does not verify with the certificate's key: sign the text `{message}` with that key (ECDSA, Ed25519 or RSA)"),
    ))
}

/// `der` as a PEM certificate: what is kept and shown, whatever surrounded it in the upload.
fn pem_of(der: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}
