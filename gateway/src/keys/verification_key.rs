//! Verification keys: PEM public keys and JWKS documents parsed once, for each algorithm
//! they verify (a verification then costs the signature check only), and the choice of keys
//! a token's `alg` and `kid` allow.

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents, VerificationAlgorithm};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

pub(super) struct VerificationKey {
    pub(super) kid: Option<String>,
    /// The key parsed for each algorithm it verifies: those its type supports, the issuer
    /// allows and, for a JWK with `alg`, the one it names.
    pub(super) parsed: ParsedKey,
}

/// One public key, parsed for each algorithm it verifies.
pub(super) type ParsedKey = Vec<(Algorithm, ParsedPublicKey)>;

/// The keys to try for a token signed with `alg`. A `kid` naming one of `keys` selects
/// them; any other `kid` may only use the keys without one. A token without `kid` tries every
/// key that fits `alg`.
pub(super) fn candidates<'a>(
    keys: &'a [VerificationKey],
    alg: Algorithm,
    kid: Option<&'a str>,
) -> impl Iterator<Item = &'a ParsedPublicKey> + 'a {
    let named = kid.is_some() && keys.iter().any(|key| key.kid.as_deref() == kid);
    keys.iter()
        .filter(move |key| match kid {
            None => true,
            Some(_) if named => key.kid.as_deref() == kid,
            Some(_) => key.kid.is_none(),
        })
        .filter_map(move |key| key.parsed.iter().find(|(usable, _)| *usable == alg).map(|(_, parsed)| parsed))
}

/// Whether `keys` has one named `kid`.
pub(super) fn knows_kid(keys: &[VerificationKey], kid: &str) -> bool {
    keys.iter().any(|key| key.kid.as_deref() == Some(kid))
}

/// The kinds of public keys accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
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
    pub(super) fn describe(self) -> &'static str {
        match self {
            KeyKind::Rsa => "an RSA",
            KeyKind::P256 => "a P-256",
            KeyKind::P384 => "a P-384",
            KeyKind::Ed25519 => "an Ed25519",
        }
    }
}

/// Whether a key verifies `alg` for this issuer: allowed, and the one a JWK declares if it
/// declares one.
pub(super) fn usable(alg: Algorithm, allowed: &[Algorithm], declared: Option<Algorithm>) -> bool {
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
pub(super) fn decode_pem(pem: &str) -> Result<(KeyKind, ParsedKey), String> {
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

/// The usable keys of a JWKS an OpenID provider serves; the reasons its unusable keys were
/// left out (as [`load_jwks`] skips or refuses them).
pub(super) fn provider_keys(set: &JwkSet, allowed: &[Algorithm]) -> (Vec<VerificationKey>, Vec<String>) {
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    load_jwks(set, "jwks", allowed, &mut keys, &mut |path, reason| problems.push(format!("{path}: {reason}")));
    (keys, problems)
}

/// Add the usable keys of a JWKS. Keys for encryption, for curves or algorithms not supported,
/// or that none of the issuer's algorithms uses are skipped: a JWKS often lists keys for other
/// purposes. Malformed keys and symmetric keys are problems.
pub(super) fn load_jwks(
    set: &JwkSet,
    at: &str,
    allowed: &[Algorithm],
    keys: &mut Vec<VerificationKey>,
    problem: &mut impl FnMut(String, String),
) {
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
