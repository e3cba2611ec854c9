//! The verifier: structure, algorithm, signature, time claims, LabOrchestrator layout, allow-list.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::claims::{Claims, Identifier, LabInstance, NumericDate};
use crate::console::ConsoleAccess;
use crate::error::{AuthError, ConfigError, MalformedToken, TokenPart};
use crate::keys::{KeyFamily, VerificationKey};
use crate::names::{is_dns1123_label, is_dns1123_subdomain};
use crate::{Algorithm, Grant, TokenVerifier};

/// Tokens longer than this are refused before any decoding. LabOrchestrator tokens are a few hundred
/// bytes (RS256 with a 4096-bit key: about 1 KiB); this leaves room for large `additional_data`.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Verifies LabOrchestrator console tokens against configured keys and algorithms.
///
/// The algorithm is taken from configuration, never trusted from the token: the header's `alg` must be
/// one of the accepted algorithms (so `none` never is), and the signature is checked only with keys of
/// that algorithm's family (so an RSA public key is never used as an HMAC secret). Time claims follow
/// PyJWT with an explicit leeway (default 0): `exp` is required, `nbf` and `iat` are checked when present,
/// `iss` and `aud` as configured.
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<VerificationKey>,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    issuers: Option<Vec<String>>,
    audiences: Option<Vec<String>>,
}

impl Verifier {
    /// A builder: add keys, choose algorithms (default: HS256), leeway (default: 0), issuers and audiences.
    pub fn builder() -> VerifierBuilder {
        VerifierBuilder::default()
    }

    /// HS256 with `secret`'s UTF-8 bytes: what the Python `WebsocketProxy(secret_key=...)` accepts.
    pub fn hs256(secret: &str) -> Result<Verifier, ConfigError> {
        Verifier::builder()
            .key(VerificationKey::hmac_secret(secret.as_bytes())?)
            .build()
    }

    /// A PEM public key accepting the given algorithms, which must all belong to the key's family.
    pub fn from_public_key_pem(
        pem: &[u8],
        algorithms: &[Algorithm],
    ) -> Result<Verifier, ConfigError> {
        Verifier::builder()
            .key(VerificationKey::from_public_key_pem(pem)?)
            .algorithms(algorithms.iter().copied())
            .build()
    }

    /// A PEM public key file accepting the given algorithms, which must all belong to the key's family.
    pub fn from_public_key_file(
        path: impl AsRef<Path>,
        algorithms: &[Algorithm],
    ) -> Result<Verifier, ConfigError> {
        Verifier::builder()
            .key(VerificationKey::from_public_key_file(path)?)
            .algorithms(algorithms.iter().copied())
            .build()
    }

    /// How many keys this verifier holds, and their ids (`None` for a key without one): for a
    /// log line at reload, never key material.
    pub fn key_ids(&self) -> Vec<Option<&str>> {
        self.keys.iter().map(VerificationKey::key_id).collect()
    }

    /// The accepted algorithms.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// The clock-skew allowance applied to `exp`, `nbf` and `iat`.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Verifies `token` now and that it allows `vmi_name` (the [`TokenVerifier`] method, callable without
    /// importing the trait).
    pub fn verify(&self, token: &str, vmi_name: &str) -> Result<Grant, AuthError> {
        self.verify_at(token, vmi_name, SystemTime::now())
    }

    /// Verifies `token` at time `now` and that it allows `vmi_name`.
    pub fn verify_at(
        &self,
        token: &str,
        vmi_name: &str,
        now: SystemTime,
    ) -> Result<Grant, AuthError> {
        let claims = self.decode_at(token, now)?;
        grant_for(claims, vmi_name)
    }

    /// Verifies `token` now and returns its claims, without looking at any VM name.
    pub fn decode(&self, token: &str) -> Result<Claims, AuthError> {
        self.decode_at(token, SystemTime::now())
    }

    /// Verifies `token` at time `now` and returns its claims, without looking at any VM name.
    ///
    /// Checks, in this order: size and structure (`malformed`), the header's algorithm (`algorithm`),
    /// the signature (`bad_signature`), then the payload: `exp` presence, `iat`/`nbf`/`exp` against `now`
    /// with the leeway, `iss`, `aud`, and finally the LabOrchestrator layout with a DNS-1123 namespace.
    pub fn decode_at(&self, token: &str, now: SystemTime) -> Result<Claims, AuthError> {
        let parts = SplitToken::parse(token)?;
        let (algorithm, key_id) = self.accepted_algorithm(&parts.header)?;
        self.check_signature(&parts, algorithm, key_id.as_deref())?;
        let payload: Map<String, Value> = serde_json::from_slice(&parts.payload)
            .map_err(|_| AuthError::Malformed(MalformedToken::PayloadNotJsonObject))?;
        self.check_registered_claims(&payload, now)?;
        lab_orchestrator_claims(payload)
    }

    /// The header's algorithm, if accepted, and its `kid`.
    fn accepted_algorithm(&self, header: &[u8]) -> Result<(Algorithm, Option<String>), AuthError> {
        #[derive(Deserialize)]
        struct JoseHeader {
            alg: String,
            crit: Option<Value>,
            b64: Option<Value>,
            kid: Option<Value>,
        }
        let header: JoseHeader = serde_json::from_slice(header)
            .map_err(|_| AuthError::Malformed(MalformedToken::BadHeader))?;
        let offered = header.alg.parse::<Algorithm>().ok();
        let algorithm = offered
            .filter(|algorithm| self.algorithms.contains(algorithm))
            .ok_or(AuthError::DisallowedAlgorithm { offered })?;
        if header.crit.is_some() || header.b64.is_some_and(|b64| b64 != Value::Bool(true)) {
            return Err(AuthError::Malformed(MalformedToken::UnsupportedHeader));
        }
        let key_id = match header.kid {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid),
            Some(_) => return Err(AuthError::Malformed(MalformedToken::BadHeader)),
        };
        Ok((algorithm, key_id))
    }

    /// Checks the signature with the keys of the algorithm's family: for a token without a
    /// `kid`, every one of them (as before key ids existed); with a `kid` that a configured key
    /// has, only the keys of that id; with an unknown `kid`, only the keys without an id (a bare
    /// secret keeps working; a key with another id is never tried), and a failure is
    /// [`AuthError::UnknownKeyId`].
    fn check_signature(
        &self,
        parts: &SplitToken<'_>,
        algorithm: Algorithm,
        key_id: Option<&str>,
    ) -> Result<(), AuthError> {
        let family = KeyFamily::of(algorithm);
        let known_id = key_id.filter(|id| self.keys.iter().any(|key| key.key_id() == Some(id)));
        let verified = self
            .keys
            .iter()
            .filter(|key| key.family() == family)
            .filter(|key| key_id.is_none() || key.key_id() == known_id)
            .any(|key| {
                jsonwebtoken::crypto::verify(
                    parts.signature,
                    parts.signing_input.as_bytes(),
                    key.decoding_key(),
                    algorithm,
                )
                .unwrap_or(false)
            });
        match (verified, key_id) {
            (true, _) => Ok(()),
            (false, Some(_)) if known_id.is_none() => Err(AuthError::UnknownKeyId),
            (false, _) => Err(AuthError::BadSignature),
        }
    }

    /// Checks `exp` (required), `iat`, `nbf`, `iss` and `aud` as PyJWT does.
    fn check_registered_claims(
        &self,
        payload: &Map<String, Value>,
        now: SystemTime,
    ) -> Result<(), AuthError> {
        let exp_value = payload
            .get("exp")
            .ok_or(AuthError::MissingClaim { claim: "exp" })?;
        let exp = time_claim(exp_value, "exp")?;
        if exp.to_system_time().is_none() {
            return Err(AuthError::MalformedClaims { claim: "exp" });
        }
        let now = nanos_since_epoch(now);
        let leeway = i128::try_from(self.leeway.as_nanos()).unwrap_or(i128::MAX);

        for claim in ["iat", "nbf"] {
            if let Some(value) = payload.get(claim) {
                let not_before = time_claim(value, claim)?;
                if seconds_to_nanos(not_before) > now.saturating_add(leeway) {
                    return Err(AuthError::NotYetValid);
                }
            }
        }
        if seconds_to_nanos(exp) <= now.saturating_sub(leeway) {
            return Err(AuthError::Expired);
        }
        self.check_issuer(payload.get("iss"))?;
        self.check_audience(payload.get("aud"))
    }

    fn check_issuer(&self, iss: Option<&Value>) -> Result<(), AuthError> {
        let Some(accepted) = &self.issuers else {
            return Ok(());
        };
        match iss {
            None => Err(AuthError::MissingClaim { claim: "iss" }),
            Some(Value::String(issuer)) if accepted.contains(issuer) => Ok(()),
            Some(Value::String(_)) => Err(AuthError::InvalidIssuer),
            Some(_) => Err(AuthError::MalformedClaims { claim: "iss" }),
        }
    }

    fn check_audience(&self, aud: Option<&Value>) -> Result<(), AuthError> {
        let Some(accepted) = &self.audiences else {
            // PyJWT refuses a token that names an audience when the verifier expects none.
            let names_audience = match aud {
                None | Some(Value::Null) => false,
                Some(Value::String(audience)) => !audience.is_empty(),
                Some(Value::Array(audiences)) => !audiences.is_empty(),
                Some(_) => true,
            };
            return if names_audience {
                Err(AuthError::InvalidAudience)
            } else {
                Ok(())
            };
        };
        let named: Vec<&str> = match aud {
            None => return Err(AuthError::MissingClaim { claim: "aud" }),
            Some(Value::String(audience)) => vec![audience.as_str()],
            Some(Value::Array(audiences)) => audiences
                .iter()
                .map(Value::as_str)
                .collect::<Option<_>>()
                .ok_or(AuthError::MalformedClaims { claim: "aud" })?,
            Some(_) => return Err(AuthError::MalformedClaims { claim: "aud" }),
        };
        if named
            .iter()
            .any(|audience| accepted.iter().any(|accepted| accepted == audience))
        {
            Ok(())
        } else {
            Err(AuthError::InvalidAudience)
        }
    }
}

impl TokenVerifier for Verifier {
    fn verify(&self, token: &str, vmi_name: &str) -> Result<Grant, AuthError> {
        Verifier::verify(self, token, vmi_name)
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys)
            .field("algorithms", &self.algorithms)
            .field("leeway", &self.leeway)
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .finish()
    }
}

/// Builds a [`Verifier`]; see [`Verifier::builder`].
#[derive(Debug, Clone, Default)]
pub struct VerifierBuilder {
    keys: Vec<VerificationKey>,
    algorithms: Option<Vec<Algorithm>>,
    leeway: Duration,
    issuers: Option<Vec<String>>,
    audiences: Option<Vec<String>>,
}

impl VerifierBuilder {
    /// Adds a key. Several keys of one family are tried in turn (key rotation).
    pub fn key(mut self, key: VerificationKey) -> Self {
        self.keys.push(key);
        self
    }

    /// Sets the accepted algorithms, replacing the default HS256.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        let mut accepted = Vec::new();
        for algorithm in algorithms {
            if !accepted.contains(&algorithm) {
                accepted.push(algorithm);
            }
        }
        self.algorithms = Some(accepted);
        self
    }

    /// Sets the clock-skew allowance for `exp`, `nbf` and `iat` (default: none, as PyJWT).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Requires `iss` to be present and one of the issuers added this way.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers
            .get_or_insert_with(Vec::new)
            .push(issuer.into());
        self
    }

    /// Requires `aud` to be present and to name one of the audiences added this way. Without any,
    /// tokens that name an audience are refused (as PyJWT).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences
            .get_or_insert_with(Vec::new)
            .push(audience.into());
        self
    }

    /// Checks that every accepted algorithm has a key of its family and every key is usable.
    pub fn build(self) -> Result<Verifier, ConfigError> {
        let algorithms = self.algorithms.unwrap_or_else(|| vec![Algorithm::HS256]);
        if algorithms.is_empty() {
            return Err(ConfigError::NoAlgorithms);
        }
        if self.keys.is_empty() {
            return Err(ConfigError::NoKeys);
        }
        for &algorithm in &algorithms {
            let family = KeyFamily::of(algorithm);
            if !self.keys.iter().any(|key| key.family() == family) {
                return Err(ConfigError::NoKeyForAlgorithm { algorithm, family });
            }
        }
        for key in &self.keys {
            if !algorithms
                .iter()
                .any(|&algorithm| KeyFamily::of(algorithm) == key.family())
            {
                return Err(ConfigError::UnusedKey {
                    family: key.family(),
                });
            }
        }
        Ok(Verifier {
            keys: self.keys,
            algorithms,
            leeway: self.leeway,
            issuers: self.issuers,
            audiences: self.audiences,
        })
    }
}

/// A token split into its parts, each part's base64 already checked.
struct SplitToken<'a> {
    header: Vec<u8>,
    payload: Vec<u8>,
    signing_input: &'a str,
    signature: &'a str,
}

impl<'a> SplitToken<'a> {
    fn parse(token: &'a str) -> Result<Self, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed(MalformedToken::TooLong {
                max: MAX_TOKEN_BYTES,
            }));
        }
        let (signing_input, signature) = token
            .rsplit_once('.')
            .ok_or(AuthError::Malformed(MalformedToken::NotThreeParts))?;
        let (header, payload) = signing_input
            .split_once('.')
            .ok_or(AuthError::Malformed(MalformedToken::NotThreeParts))?;
        if payload.contains('.') {
            return Err(AuthError::Malformed(MalformedToken::NotThreeParts));
        }
        let decode = |part: &str, which: TokenPart| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| AuthError::Malformed(MalformedToken::NotBase64(which)))
        };
        let header = decode(header, TokenPart::Header)?;
        let payload = decode(payload, TokenPart::Payload)?;
        decode(signature, TokenPart::Signature)?;
        Ok(SplitToken {
            header,
            payload,
            signing_input,
            signature,
        })
    }
}

fn time_claim(value: &Value, claim: &'static str) -> Result<NumericDate, AuthError> {
    NumericDate::deserialize(value)
        .ok()
        .filter(|date| date.whole_seconds().is_some())
        .ok_or(AuthError::MalformedClaims { claim })
}

fn seconds_to_nanos(date: NumericDate) -> i128 {
    i128::from(date.whole_seconds().unwrap_or(i64::MAX)) * 1_000_000_000
}

fn nanos_since_epoch(time: SystemTime) -> i128 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).unwrap_or(i128::MAX),
        Err(before) => -i128::try_from(before.duration().as_nanos()).unwrap_or(i128::MAX),
    }
}

/// Takes the LabOrchestrator claims out of a payload whose registered claims were checked.
fn lab_orchestrator_claims(mut payload: Map<String, Value>) -> Result<Claims, AuthError> {
    let id = take::<Identifier>(&mut payload, "id", "id")?;
    let exp = take::<NumericDate>(&mut payload, "exp", "exp")?;
    let lab_instance = match payload.remove("lab_instance") {
        Some(Value::Object(lab_instance)) => lab_instance_claims(lab_instance)?,
        _ => {
            return Err(AuthError::MalformedClaims {
                claim: "lab_instance",
            });
        }
    };
    Ok(Claims {
        id,
        exp,
        lab_instance,
        other: payload,
    })
}

fn lab_instance_claims(mut object: Map<String, Value>) -> Result<LabInstance, AuthError> {
    let lab_id = take(&mut object, "lab_id", "lab_instance.lab_id")?;
    let lab_instance_id = take(
        &mut object,
        "lab_instance_id",
        "lab_instance.lab_instance_id",
    )?;
    let namespace_name: String =
        take(&mut object, "namespace_name", "lab_instance.namespace_name")?;
    if !is_dns1123_label(&namespace_name) {
        return Err(AuthError::MalformedClaims {
            claim: "lab_instance.namespace_name",
        });
    }
    let allowed_vmi_names = take(
        &mut object,
        "allowed_vmi_names",
        "lab_instance.allowed_vmi_names",
    )?;
    let additional_data = object.remove("additional_data");
    Ok(LabInstance {
        lab_id,
        lab_instance_id,
        namespace_name,
        allowed_vmi_names,
        additional_data,
        other: object,
    })
}

fn take<T: DeserializeOwned>(
    object: &mut Map<String, Value>,
    member: &str,
    claim: &'static str,
) -> Result<T, AuthError> {
    let value = object
        .remove(member)
        .ok_or(AuthError::MalformedClaims { claim })?;
    T::deserialize(value).map_err(|_| AuthError::MalformedClaims { claim })
}

/// The allow-list decision: exact match first, then the matched name's Kubernetes syntax.
fn grant_for(claims: Claims, vmi_name: &str) -> Result<Grant, AuthError> {
    let lab_instance = claims.lab_instance;
    if !lab_instance
        .allowed_vmi_names
        .iter()
        .any(|allowed| allowed == vmi_name)
    {
        return Err(AuthError::VmNotAllowed);
    }
    if !is_dns1123_subdomain(vmi_name) {
        return Err(AuthError::InvalidVmName);
    }
    let expires_at = claims
        .exp
        .to_system_time()
        .ok_or(AuthError::MalformedClaims { claim: "exp" })?;
    let console = ConsoleAccess::from_claims(&claims.other)?;
    Ok(Grant {
        console,
        user_id: claims.id,
        lab_id: lab_instance.lab_id,
        lab_instance_id: lab_instance.lab_instance_id,
        namespace: lab_instance.namespace_name,
        vmi_name: vmi_name.to_owned(),
        expires_at,
        additional_data: lab_instance.additional_data.filter(|data| !data.is_null()),
        token_id: claims
            .other
            .get("jti")
            .and_then(|jti| jti.as_str())
            .filter(|jti| !jti.is_empty())
            .map(str::to_owned),
    })
}
