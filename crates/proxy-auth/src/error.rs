//! Error types. None of them carries the token, a secret or key material.

use std::path::PathBuf;

use crate::Algorithm;
use crate::keys::KeyFamily;

/// Why a token was refused. Never contains the token or key material.
///
/// [`is_forbidden`](AuthError::is_forbidden) splits them into "valid token, wrong VM" (HTTP 403) and
/// "invalid token" (HTTP 401); [`label`](AuthError::label) gives a stable reason for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token is not a well-formed JWS compact serialization.
    #[error("malformed token: {0}")]
    Malformed(MalformedToken),
    /// The signature does not verify with any configured key.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// The header names a `kid` that no configured key has, and no key without an id verifies
    /// it (a key set fetched from a URL may not have the new key yet).
    #[error("the token names a key id that no configured key has")]
    UnknownKeyId,
    /// The header names an algorithm this verifier is not configured for (including `none`).
    #[error("the token's algorithm ({}) is not accepted", offered.map_or("unknown or none".to_owned(), |alg| format!("{alg:?}")))]
    DisallowedAlgorithm {
        /// The algorithm of the header, when it is one this crate knows.
        offered: Option<Algorithm>,
    },
    /// `exp` lies in the past (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` or `iat` lies in the future (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// A registered claim the verifier requires is absent (`exp` always; `iss`/`aud` when configured).
    #[error("the token has no `{claim}` claim")]
    MissingClaim {
        /// The claim's name.
        claim: &'static str,
    },
    /// A claim is absent or does not have the LabOrchestrator type or syntax (e.g. a namespace that is
    /// not a DNS-1123 label, an allow-list that is not a list of strings).
    #[error("the token's `{claim}` claim is missing or malformed")]
    MalformedClaims {
        /// The claim's path, e.g. `lab_instance.namespace_name`.
        claim: &'static str,
    },
    /// `iss` is not one of the configured issuers.
    #[error("the token's issuer is not accepted")]
    InvalidIssuer,
    /// `aud` does not name a configured audience, or names one while none is configured (as PyJWT).
    #[error("the token's audience is not accepted")]
    InvalidAudience,
    /// The VM is not in the token's allow-list (HTTP 403).
    #[error("the token does not allow this VM")]
    VmNotAllowed,
    /// The VM is in the allow-list but is not a valid Kubernetes name, so it cannot name an upstream.
    #[error("the token allows a VM name that is not a valid Kubernetes name")]
    InvalidVmName,
}

impl AuthError {
    /// Whether the token itself is fine but does not allow the request (403) rather than invalid (401).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, AuthError::VmNotAllowed)
    }

    /// A stable snake_case label for logs and metrics, e.g. `expired`, `bad_signature`, `vm_not_allowed`.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Malformed(_) => "malformed",
            AuthError::BadSignature => "bad_signature",
            AuthError::UnknownKeyId => "unknown_key_id",
            AuthError::DisallowedAlgorithm { .. } => "algorithm",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::MissingClaim { .. } => "missing_claim",
            AuthError::MalformedClaims { .. } => "malformed_claims",
            AuthError::InvalidIssuer => "issuer",
            AuthError::InvalidAudience => "audience",
            AuthError::VmNotAllowed => "vm_not_allowed",
            AuthError::InvalidVmName => "invalid_vm_name",
        }
    }
}

/// What is structurally wrong with a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedToken {
    /// Longer than any console token this crate accepts.
    #[error("longer than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// Not three dot-separated parts.
    #[error("not three dot-separated parts")]
    NotThreeParts,
    /// A part is not unpadded base64url.
    #[error("the {0} is not base64url")]
    NotBase64(TokenPart),
    /// The header is not a JSON object with a string `alg`.
    #[error("the header is not a JSON object with an `alg` string")]
    BadHeader,
    /// The header asks for extensions (`crit`, `b64`) this crate does not implement.
    #[error("the header uses unsupported extensions")]
    UnsupportedHeader,
    /// The payload is not a JSON object.
    #[error("the payload is not a JSON object")]
    PayloadNotJsonObject,
}

/// One of the three parts of a compact JWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenPart {
    /// The protected header.
    Header,
    /// The claims.
    Payload,
    /// The signature.
    Signature,
}

impl std::fmt::Display for TokenPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenPart::Header => "header",
            TokenPart::Payload => "payload",
            TokenPart::Signature => "signature",
        })
    }
}

/// A key could not be loaded. Never contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read key file {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An HMAC secret must not be empty.
    #[error("the HMAC secret is empty")]
    EmptySecret,
    /// The HMAC secret is a PEM or SSH key: configure it as a public key with an asymmetric algorithm.
    #[error(
        "the HMAC secret is a PEM or SSH key; use it as a public key with an asymmetric algorithm"
    )]
    AsymmetricKeyAsSecret,
    /// Not a PEM-encoded RSA, EC (P-256/P-384) or Ed25519 public key.
    #[error("not a PEM-encoded RSA, EC or Ed25519 public key")]
    UnsupportedPublicKey,
    /// A private key was given where a public key belongs.
    #[error("a private key was given where a public key belongs")]
    PrivateKeyForVerification,
    /// Not a PEM-encoded private key for the algorithm.
    #[error("not a PEM-encoded private key for {algorithm:?}")]
    InvalidPrivateKey {
        /// The algorithm the key was meant for.
        algorithm: Algorithm,
    },
    /// The algorithm belongs to another key family than the key (e.g. an HS algorithm for a PEM key).
    #[error("{algorithm:?} cannot be used with a {family} key")]
    AlgorithmMismatch {
        /// The algorithm.
        algorithm: Algorithm,
        /// The key's family.
        family: KeyFamily,
    },
    /// Not a JWK Set (RFC 7517 section 5: an object with a `keys` array of JWKs).
    #[error("not a JWK Set")]
    JwkSet(#[source] serde_json::Error),
    /// A JWK of the set is not a usable verification key (unsupported `kty` or curve, bad
    /// parameters).
    #[error("JWK number {index} (kid {kid:?}) is not a usable RSA, EC, OKP or oct key")]
    Jwk {
        /// Its position in `keys`, from 0.
        index: usize,
        /// Its `kid`, if any.
        kid: Option<String>,
    },
    /// A JWK Set without any key.
    #[error("the JWK Set has no keys")]
    EmptyJwkSet,
}

/// A [`Verifier`](crate::Verifier) configuration is inconsistent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The list of accepted algorithms is empty.
    #[error("no algorithm is accepted")]
    NoAlgorithms,
    /// No key is configured.
    #[error("no key is configured")]
    NoKeys,
    /// An accepted algorithm has no key of its family.
    #[error("{algorithm:?} is accepted but no {family} key is configured for it")]
    NoKeyForAlgorithm {
        /// The algorithm.
        algorithm: Algorithm,
        /// The family its key must have.
        family: KeyFamily,
    },
    /// A key can never be used because no accepted algorithm belongs to its family.
    #[error("a {family} key is configured but no algorithm of its family is accepted")]
    UnusedKey {
        /// The key's family.
        family: KeyFamily,
    },
}

/// A token could not be minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// `issue` refuses names the verifier would refuse (namespace: DNS-1123 label, VMs: DNS-1123 names).
    #[error("`{claim}` is not a valid Kubernetes name")]
    InvalidName {
        /// The claim's path.
        claim: &'static str,
    },
    /// The expiry is not a finite number of seconds.
    #[error("the expiry is not a finite number of seconds")]
    InvalidExpiry,
    /// Serializing or signing failed.
    #[error("cannot sign the token")]
    Signing(#[source] jsonwebtoken::errors::Error),
}
