//! The configured JWT issuers: their algorithm allow-lists and verification keys, loaded from
//! PEM public keys and JWKS documents and parsed once, at load, for each algorithm they verify
//! (a verification then costs the signature check only). Nothing here is ever fetched over
//! the network.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents, VerificationAlgorithm};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use crate::contract::Problem;
use crate::contract::environment::{ClaimMapping, JwtIssuer};

/// One issuer, ready to verify its tokens.
pub(super) struct Issuer {
    /// The expected `iss`.
    pub(super) name: String,
    /// Which claims carry the identity.
    pub(super) claims: ClaimMapping,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub(super) leeway: u64,
    /// The header `typ` required, lower case, without `application/`.
    pub(super) typ: Option<String>,
    /// Whether `jti` is required.
    pub(super) require_jti: bool,
    /// The `aud` values accepted (a token must name one).
    pub(super) audiences: Vec<String>,
    /// The algorithms allowed.
    algorithms: Vec<Algorithm>,
    keys: Vec<VerificationKey>,
}

struct VerificationKey {
    kid: Option<String>,
    /// The key parsed for each algorithm it verifies: those its type supports, the issuer
    /// allows and, for a JWK with `alg`, the one it names.
    parsed: ParsedKey,
}

/// One public key, parsed for each algorithm it verifies.
type ParsedKey = Vec<(Algorithm, ParsedPublicKey)>;

/// A JWT `typ` as compared: lower case, without `application/` (RFC 7515 §4.1.9).
pub(super) fn media_type(typ: &str) -> String {
    let typ = typ.to_ascii_lowercase();
    typ.strip_prefix("application/").map(str::to_owned).unwrap_or(typ)
}

impl Issuer {
    /// Whether the issuer allows tokens signed with `alg`.
    pub(super) fn allows(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }

    /// The keys to try for a token signed with `alg`. A `kid` naming configured keys selects
    /// them; any other `kid` may only use the keys configured without one. A token without
    /// `kid` tries every key that fits `alg`.
    pub(super) fn candidates<'a>(&'a self, alg: Algorithm, kid: Option<&'a str>) -> impl Iterator<Item = &'a ParsedPublicKey> + 'a {
        let named = kid.is_some() && self.keys.iter().any(|key| key.kid.as_deref() == kid);
        self.keys
            .iter()
            .filter(move |key| match kid {
                None => true,
                Some(_) if named => key.kid.as_deref() == kid,
                Some(_) => key.kid.is_none(),
            })
            .filter_map(move |key| key.parsed.iter().find(|(usable, _)| *usable == alg).map(|(_, parsed)| parsed))
    }
}

/// The kinds of public keys accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn algorithms(self) -> &'static [Algorithm] {
        match self {
            KeyKind::Rsa => &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512],
            KeyKind::P256 => &[Algorithm::ES256],
            KeyKind::P384 => &[Algorithm::ES384],
            KeyKind::Ed25519 => &[Algorithm::EdDSA],
        }
    }

    fn name(self) -> &'static str {
        match self {
            KeyKind::Rsa => "RSA",
            KeyKind::P256 => "P-256",
            KeyKind::P384 => "P-384",
            KeyKind::Ed25519 => "Ed25519",
        }
    }

    /// The name with its article, for messages.
    fn describe(self) -> &'static str {
        match self {
            KeyKind::Rsa => "an RSA",
            KeyKind::P256 => "a P-256",
            KeyKind::P384 => "a P-384",
            KeyKind::Ed25519 => "an Ed25519",
        }
    }
}

/// Load every issuer, by `iss`. Problems are added to `problems`, located by their path.
pub(super) fn load(configs: &[JwtIssuer], base_dir: &Path, problems: &mut Vec<Problem>) -> HashMap<String, Issuer> {
    let mut issuers = HashMap::new();
    for (i, config) in configs.iter().enumerate() {
        let at = format!("jwt_issuers[{i}]");
        let problems_before = problems.len();
        let mut problem = |path: String, reason: String| problems.push(Problem { path, reason });

        let algorithms = allowed_algorithms(config, &at, &mut problem);
        let mut keys = Vec::new();
        for (j, key) in config.keys.iter().enumerate() {
            let (path, pem) = match (&key.pem, &key.pem_file) {
                (Some(pem), None) => (format!("{at}.keys[{j}].pem"), pem.clone()),
                (None, Some(file)) => {
                    let path = format!("{at}.keys[{j}].pem_file");
                    match std::fs::read_to_string(base_dir.join(file)) {
                        Ok(pem) => (path, pem),
                        Err(e) => {
                            problem(path, format!("cannot read `{}`: {e}", file.display()));
                            continue;
                        }
                    }
                }
                // Neither or both: reported by `snapshot::validate`.
                _ => continue,
            };
            match decode_pem(&pem) {
                Ok((kind, mut parsed)) => {
                    parsed.retain(|(alg, _)| usable(*alg, &algorithms, None));
                    if parsed.is_empty() {
                        problem(path, format!("{} key, but none of the issuer's algorithms uses it", kind.describe()));
                    } else {
                        keys.push(VerificationKey { kid: key.kid.clone(), parsed });
                    }
                }
                Err(reason) => problem(path, reason),
            }
        }
        if let Some(document) = &config.jwks {
            let path = format!("{at}.jwks");
            match serde_json::from_value::<JwkSet>(document.clone()) {
                Ok(set) => load_jwks(&set, &path, &algorithms, &mut keys, &mut problem),
                Err(e) => problem(path, format!("not a JWKS document: {e}")),
            }
        }
        if let Some(file) = &config.jwks_file {
            let path = format!("{at}.jwks_file");
            match std::fs::read_to_string(base_dir.join(file)) {
                Ok(text) => match serde_json::from_str::<JwkSet>(&text) {
                    Ok(set) => load_jwks(&set, &path, &algorithms, &mut keys, &mut problem),
                    Err(e) => problem(path, format!("`{}` is not a JWKS document: {e}", file.display())),
                },
                Err(e) => problem(path, format!("cannot read `{}`: {e}", file.display())),
            }
        }
        let has_sources = !config.keys.is_empty() || config.jwks.is_some() || config.jwks_file.is_some();
        if keys.is_empty() && has_sources && problems.len() == problems_before {
            problems.push(Problem { path: at.clone(), reason: "no usable verification key for the allowed algorithms".to_owned() });
        }
        if issuers.contains_key(&config.issuer) {
            problems.push(Problem { path: format!("{at}.issuer"), reason: format!("issuer `{}` is configured twice", config.issuer) });
            continue;
        }
        let leeway = config.leeway.0.as_secs();
        issuers.insert(
            config.issuer.clone(),
            Issuer {
                name: config.issuer.clone(),
                claims: config.claims.clone(),
                leeway,
                typ: config.typ.as_deref().map(media_type),
                require_jti: config.require_jti,
                audiences: config.audiences.clone(),
                algorithms,
                keys,
            },
        );
    }
    issuers
}

/// The issuer's algorithm names, parsed; HMAC, `none` and unknown names are problems.
fn allowed_algorithms(config: &JwtIssuer, at: &str, problem: &mut impl FnMut(String, String)) -> Vec<Algorithm> {
    let mut algorithms = Vec::new();
    for (k, name) in config.algorithms.iter().enumerate() {
        let path = format!("{at}.algorithms[{k}]");
        match Algorithm::from_str(name) {
            Ok(alg) if alg.family() == AlgorithmFamily::Hmac => {
                problem(path, format!("`{name}` is never accepted: HMAC needs a shared secret (RFC 8725)"));
            }
            Ok(alg) => {
                if !algorithms.contains(&alg) {
                    algorithms.push(alg);
                }
            }
            Err(_) if name.eq_ignore_ascii_case("none") => {
                problem(path, "`none` is never accepted: tokens must be signed".to_owned());
            }
            Err(_) => {
                problem(path, format!("unknown algorithm `{name}`; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"))
            }
        }
    }
    algorithms
}

/// Whether a key verifies `alg` for this issuer: allowed, and the one a JWK declares if it
/// declares one.
fn usable(alg: Algorithm, allowed: &[Algorithm], declared: Option<Algorithm>) -> bool {
    allowed.contains(&alg) && declared.is_none_or(|declared| declared == alg)
}

/// What a public key is made of, as read from PEM or a JWK.
enum KeyMaterial {
    /// An RSA key's modulus and public exponent (big-endian).
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// An elliptic-curve point (uncompressed: 0x04, then x and y) or an Ed25519 key.
    Public(Vec<u8>),
}

/// A SubjectPublicKeyInfo (or PKCS#1 RSA) public key in PEM, parsed for every algorithm of
/// its kind.
fn decode_pem(pem: &str) -> Result<(KeyKind, ParsedKey), String> {
    match pem_label(pem) {
        Some("PUBLIC KEY" | "RSA PUBLIC KEY") => {}
        Some(label) if label.contains("PRIVATE") => {
            return Err("this is a private key: give the public key (`BEGIN PUBLIC KEY`)".to_owned());
        }
        Some(label) => return Err(format!("a `{label}` PEM block is not a public key: give `BEGIN PUBLIC KEY`")),
        None => return Err("not a PEM public key (no `-----BEGIN PUBLIC KEY-----` line)".to_owned()),
    }
    let pem = pem.as_bytes();
    let bytes = |key: &DecodingKey| key.try_get_as_bytes().map(<[u8]>::to_vec).ok();
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        let der = key.try_get_as_bytes().map_err(|_| "not a valid RSA public key".to_owned())?;
        let components = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.key_utils.rsa_pub_components_from_public_key;
        let (n, e) = components(der).map_err(|_| "not a valid RSA public key".to_owned())?;
        check_rsa(&n, &e)?;
        return Ok((KeyKind::Rsa, parse(KeyKind::Rsa, &KeyMaterial::Rsa { n, e })?));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        // The key is the uncompressed point: 0x04, then x and y.
        let point = bytes(&key).unwrap_or_default();
        let kind = match point.len() {
            65 => KeyKind::P256,
            97 => KeyKind::P384,
            _ => return Err("unsupported elliptic curve: use P-256 or P-384".to_owned()),
        };
        return Ok((kind, parse(kind, &KeyMaterial::Public(point))?));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return match bytes(&key) {
            Some(x) if x.len() == 32 => Ok((KeyKind::Ed25519, parse(KeyKind::Ed25519, &KeyMaterial::Public(x))?)),
            _ => Err("not an Ed25519 public key".to_owned()),
        };
    }
    Err("not an RSA, EC (P-256, P-384) or Ed25519 public key".to_owned())
}

/// The label of the first PEM block: `PUBLIC KEY` in `-----BEGIN PUBLIC KEY-----`.
fn pem_label(pem: &str) -> Option<&str> {
    let start = pem.find("-----BEGIN ")? + "-----BEGIN ".len();
    let length = pem[start..].find("-----")?;
    Some(pem[start..start + length].trim())
}

/// Add the usable keys of a JWKS. Keys for encryption, for curves or algorithms not supported,
/// or that none of the issuer's algorithms uses are skipped: a JWKS often lists keys for other
/// purposes. Malformed keys and symmetric keys are problems.
fn load_jwks(set: &JwkSet, at: &str, allowed: &[Algorithm], keys: &mut Vec<VerificationKey>, problem: &mut impl FnMut(String, String)) {
    for (k, jwk) in set.keys.iter().enumerate() {
        match decode_jwk(jwk) {
            Ok(Some((mut parsed, declared))) => {
                parsed.retain(|(alg, _)| usable(*alg, allowed, declared));
                if !parsed.is_empty() {
                    keys.push(VerificationKey { kid: jwk.common.key_id.clone(), parsed });
                }
            }
            Ok(None) => {}
            Err(reason) => problem(format!("{at}.keys[{k}]"), reason),
        }
    }
}

/// One JWK as a verification key parsed for every algorithm of its kind, with the algorithm
/// it declares; `None` when it is not a signature key this gateway supports.
fn decode_jwk(jwk: &Jwk) -> Result<Option<(ParsedKey, Option<Algorithm>)>, String> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Ok(None);
    }
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => match Algorithm::try_from(alg) {
            Ok(alg) if alg.family() == AlgorithmFamily::Hmac => {
                return Err("HMAC keys are never accepted".to_owned());
            }
            Ok(alg) => Some(alg),
            // An encryption algorithm, or one this gateway does not support.
            Err(_) => return Ok(None),
        },
    };
    let (kind, material) = match &jwk.algorithm {
        AlgorithmParameters::RSA(params) => {
            let n = base64url(&params.n, "n")?;
            let e = base64url(&params.e, "e")?;
            check_rsa(&n, &e)?;
            (KeyKind::Rsa, KeyMaterial::Rsa { n, e })
        }
        AlgorithmParameters::EllipticCurve(params) => {
            let (kind, length) = match params.curve {
                EllipticCurve::P256 => (KeyKind::P256, 32),
                EllipticCurve::P384 => (KeyKind::P384, 48),
                _ => return Ok(None),
            };
            let x = base64url(&params.x, "x")?;
            let y = base64url(&params.y, "y")?;
            if x.len() != length || y.len() != length {
                return Err(format!("`x` and `y` of {} key must be {length} bytes", kind.describe()));
            }
            (kind, KeyMaterial::Public([&[0x04][..], &x, &y].concat()))
        }
        AlgorithmParameters::OctetKeyPair(params) => {
            if params.curve != EllipticCurve::Ed25519 {
                return Ok(None);
            }
            let x = base64url(&params.x, "x")?;
            if x.len() != 32 {
                return Err("`x` of an Ed25519 key must be 32 bytes".to_owned());
            }
            (KeyKind::Ed25519, KeyMaterial::Public(x))
        }
        AlgorithmParameters::OctetKey(_) => return Err("symmetric (`oct`) keys are never accepted".to_owned()),
        // Other key types (and any the library adds later) are not for us.
        _ => return Ok(None),
    };
    if let Some(alg) = declared
        && !kind.algorithms().contains(&alg)
    {
        return Err(format!("`alg` {alg:?} does not fit {} key", kind.describe()));
    }
    Ok(Some((parse(kind, &material)?, declared)))
}

fn base64url(text: &str, field: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD.decode(text).map_err(|_| format!("`{field}` is not base64url"))
}

/// Refuse RSA keys the verifier cannot use or that are too weak: the modulus must have 2048 to
/// 4096 bits and the exponent be odd, at least 3 and below 2^33.
fn check_rsa(n: &[u8], e: &[u8]) -> Result<(), String> {
    let n = trim_leading_zeros(n);
    let bits = match n.first() {
        Some(first) => n.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    };
    if bits < 2048 {
        return Err(format!("RSA key of {bits} bits: at least 2048 are needed"));
    }
    if bits > 4096 {
        return Err(format!("RSA key of {bits} bits: at most 4096 are supported"));
    }
    let e = trim_leading_zeros(e);
    let exponent = if e.len() <= 5 { e.iter().fold(0u64, |value, &byte| value << 8 | u64::from(byte)) } else { 0 };
    if !(3..1 << 33).contains(&exponent) || exponent.is_multiple_of(2) {
        return Err("invalid RSA public exponent".to_owned());
    }
    Ok(())
}

fn trim_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&byte| byte != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// The key parsed for each algorithm of its `kind`, as verification uses it; an invalid key
/// (a point off its curve, inconsistent RSA components) is found here, at load, rather than
/// failing every token.
fn parse(kind: KeyKind, material: &KeyMaterial) -> Result<ParsedKey, String> {
    let invalid = |_| format!("not a valid {} public key", kind.name());
    let mut parsed = Vec::with_capacity(kind.algorithms().len());
    for &alg in kind.algorithms() {
        let key = match (material, verification(alg)) {
            (KeyMaterial::Rsa { n, e }, Some(Verification::Rsa(parameters))) => {
                RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }.to_parsed_public_key(parameters).map_err(invalid)?
            }
            (KeyMaterial::Public(bytes), Some(Verification::Other(algorithm))) => {
                ParsedPublicKey::new(algorithm, bytes).map_err(invalid)?
            }
            _ => return Err(format!("{} key cannot verify {alg:?}", kind.describe())),
        };
        parsed.push((alg, key));
    }
    Ok(parsed)
}

/// How aws-lc-rs verifies a JWS algorithm (RFC 7518 §3.1).
enum Verification {
    Rsa(&'static RsaParameters),
    Other(&'static dyn VerificationAlgorithm),
}

/// `None` for HMAC, which is never accepted (and for any algorithm the library adds later).
fn verification(alg: Algorithm) -> Option<Verification> {
    Some(match alg {
        Algorithm::RS256 => Verification::Rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => Verification::Rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => Verification::Rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => Verification::Rsa(&signature::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => Verification::Rsa(&signature::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => Verification::Rsa(&signature::RSA_PSS_2048_8192_SHA512),
        Algorithm::ES256 => Verification::Other(&signature::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => Verification::Other(&signature::ECDSA_P384_SHA384_FIXED),
        Algorithm::EdDSA => Verification::Other(&signature::ED25519),
        _ => return None,
    })
}
