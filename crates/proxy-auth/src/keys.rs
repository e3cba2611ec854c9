//! Keys for verifying and for minting. Their `Debug` output never shows key material.

use std::fmt;
use std::path::Path;

use jsonwebtoken::{AlgorithmFamily, DecodingKey, EncodingKey};

use crate::Algorithm;
use crate::error::KeyError;

/// The family of a key, which decides the algorithms it can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyFamily {
    /// A shared secret for HS256/HS384/HS512.
    Hmac,
    /// An RSA key for RS256/RS384/RS512 and PS256/PS384/PS512.
    Rsa,
    /// An elliptic-curve key for ES256 (P-256) and ES384 (P-384).
    Ec,
    /// An Ed25519 key for EdDSA.
    Ed,
}

impl KeyFamily {
    /// The family of keys `algorithm` works with.
    pub fn of(algorithm: Algorithm) -> KeyFamily {
        match algorithm.family() {
            AlgorithmFamily::Hmac => KeyFamily::Hmac,
            AlgorithmFamily::Rsa => KeyFamily::Rsa,
            AlgorithmFamily::Ec => KeyFamily::Ec,
            AlgorithmFamily::Ed => KeyFamily::Ed,
        }
    }
}

impl fmt::Display for KeyFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyFamily::Hmac => "HMAC",
            KeyFamily::Rsa => "RSA",
            KeyFamily::Ec => "EC",
            KeyFamily::Ed => "Ed25519",
        })
    }
}

/// A key that checks signatures: an HMAC secret or a public key.
#[derive(Clone)]
pub struct VerificationKey {
    family: KeyFamily,
    key: DecodingKey,
    key_id: Option<String>,
}

impl VerificationKey {
    /// An HMAC secret, used as the bytes given. The Python library uses the `SECRET_KEY` string's UTF-8
    /// bytes: pass `secret.as_bytes()`. Refuses an empty secret and a PEM/SSH public key (the HS/RS
    /// confusion PyJWT also refuses).
    pub fn hmac_secret(secret: &[u8]) -> Result<Self, KeyError> {
        check_hmac_secret(secret)?;
        let key = DecodingKey::from_secret(secret).map_err(|_| KeyError::EmptySecret)?;
        Ok(VerificationKey {
            family: KeyFamily::Hmac,
            key,
            key_id: None,
        })
    }

    /// A PEM public key (`PUBLIC KEY` SubjectPublicKeyInfo or `RSA PUBLIC KEY` PKCS#1): RSA, EC P-256/P-384
    /// or Ed25519, recognised from its content.
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Self, KeyError> {
        if pem_label_names_private_key(pem) {
            return Err(KeyError::PrivateKeyForVerification);
        }
        let (family, key) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (KeyFamily::Rsa, key)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (KeyFamily::Ec, key)
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (KeyFamily::Ed, key)
        } else {
            return Err(KeyError::UnsupportedPublicKey);
        };
        Ok(VerificationKey {
            family,
            key,
            key_id: None,
        })
    }

    /// One JWK (RFC 7517): `kty` `RSA`, `EC`, `OKP` (Ed25519) or `oct` (an HMAC secret), its
    /// `kid` kept as the key id.
    pub fn from_jwk(jwk: &jsonwebtoken::jwk::Jwk) -> Result<Self, KeyError> {
        use jsonwebtoken::jwk::AlgorithmParameters;
        let unusable = || KeyError::Jwk {
            index: 0,
            kid: jwk.common.key_id.clone(),
        };
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
            AlgorithmParameters::EllipticCurve(_) => KeyFamily::Ec,
            AlgorithmParameters::OctetKeyPair(_) => KeyFamily::Ed,
            AlgorithmParameters::OctetKey(_) => KeyFamily::Hmac,
            _ => return Err(unusable()),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|_| unusable())?;
        Ok(VerificationKey {
            family,
            key,
            key_id: jwk.common.key_id.clone(),
        })
    }

    /// Every key of a JWK Set document (`{"keys": [...]}`); one unusable key refuses the set,
    /// so a half-broken set never silently drops a key.
    pub fn from_jwk_set(json: &[u8]) -> Result<Vec<Self>, KeyError> {
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_slice(json).map_err(KeyError::JwkSet)?;
        if set.keys.is_empty() {
            return Err(KeyError::EmptyJwkSet);
        }
        set.keys
            .iter()
            .enumerate()
            .map(|(index, jwk)| {
                Self::from_jwk(jwk).map_err(|_| KeyError::Jwk {
                    index,
                    kid: jwk.common.key_id.clone(),
                })
            })
            .collect()
    }

    /// [`from_jwk_set`](Self::from_jwk_set) with the contents of a file.
    pub fn from_jwk_set_file(path: impl AsRef<Path>) -> Result<Vec<Self>, KeyError> {
        Self::from_jwk_set(&read_key_file(path.as_ref())?)
    }

    /// The same key under the id `key_id`: a token whose header names a `kid` is checked only
    /// with the keys of that id.
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }

    /// The key's id (a JWK's `kid`), if it has one.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// [`from_public_key_pem`](Self::from_public_key_pem) with the contents of a file.
    pub fn from_public_key_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        Self::from_public_key_pem(&read_key_file(path.as_ref())?)
    }

    /// The key's family.
    pub fn family(&self) -> KeyFamily {
        self.family
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("family", &self.family)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A key that signs tokens, bound to one algorithm: an HMAC secret or a private key.
#[derive(Clone)]
pub struct SigningKey {
    algorithm: Algorithm,
    key: EncodingKey,
}

impl SigningKey {
    /// HS256 with the secret's UTF-8 bytes, as the Python `generate_auth_token` signs.
    pub fn hs256(secret: &str) -> Result<Self, KeyError> {
        Self::hmac(Algorithm::HS256, secret.as_bytes())
    }

    /// An HMAC algorithm (HS256/HS384/HS512) with a secret.
    pub fn hmac(algorithm: Algorithm, secret: &[u8]) -> Result<Self, KeyError> {
        let family = KeyFamily::of(algorithm);
        if family != KeyFamily::Hmac {
            return Err(KeyError::AlgorithmMismatch {
                algorithm,
                family: KeyFamily::Hmac,
            });
        }
        check_hmac_secret(secret)?;
        let key = EncodingKey::from_secret(secret).map_err(|_| KeyError::EmptySecret)?;
        Ok(SigningKey { algorithm, key })
    }

    /// An asymmetric algorithm with a PEM private key of its family (PKCS#8 `PRIVATE KEY`, or PKCS#1
    /// `RSA PRIVATE KEY` for RSA).
    pub fn from_private_key_pem(algorithm: Algorithm, pem: &[u8]) -> Result<Self, KeyError> {
        let key = match KeyFamily::of(algorithm) {
            KeyFamily::Hmac => {
                return Err(KeyError::AlgorithmMismatch {
                    algorithm,
                    family: KeyFamily::Hmac,
                });
            }
            KeyFamily::Rsa => EncodingKey::from_rsa_pem(pem),
            KeyFamily::Ec => EncodingKey::from_ec_pem(pem),
            KeyFamily::Ed => EncodingKey::from_ed_pem(pem),
        }
        .map_err(|_| KeyError::InvalidPrivateKey { algorithm })?;
        Ok(SigningKey { algorithm, key })
    }

    /// [`from_private_key_pem`](Self::from_private_key_pem) with the contents of a file.
    pub fn from_private_key_file(
        algorithm: Algorithm,
        path: impl AsRef<Path>,
    ) -> Result<Self, KeyError> {
        Self::from_private_key_pem(algorithm, &read_key_file(path.as_ref())?)
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.key
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::ReadFile {
        path: path.to_owned(),
        source,
    })
}

fn check_hmac_secret(secret: &[u8]) -> Result<(), KeyError> {
    if secret.is_empty() {
        return Err(KeyError::EmptySecret);
    }
    const ASYMMETRIC_MARKERS: [&[u8]; 5] = [
        b"-----BEGIN ",
        b"ssh-rsa ",
        b"ssh-ed25519 ",
        b"ecdsa-sha2-",
        b"ssh-dss ",
    ];
    let trimmed = secret.trim_ascii_start();
    if ASYMMETRIC_MARKERS
        .iter()
        .any(|marker| trimmed.starts_with(marker))
    {
        return Err(KeyError::AsymmetricKeyAsSecret);
    }
    Ok(())
}

fn pem_label_names_private_key(pem: &[u8]) -> bool {
    pem.windows(b"PRIVATE KEY-----".len())
        .any(|window| window == b"PRIVATE KEY-----")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_PUBLIC: &[u8] = include_bytes!("../tests/fixtures/keys/rsa.pub.pem");
    const RSA_PRIVATE: &[u8] = include_bytes!("../tests/fixtures/keys/rsa.key");
    const EC_PUBLIC: &[u8] = include_bytes!("../tests/fixtures/keys/ec-p256.pub.pem");
    const ED_PUBLIC: &[u8] = include_bytes!("../tests/fixtures/keys/ed25519.pub.pem");

    #[test]
    fn public_keys_are_recognised_by_family() {
        assert_eq!(
            VerificationKey::from_public_key_pem(RSA_PUBLIC)
                .unwrap()
                .family(),
            KeyFamily::Rsa
        );
        assert_eq!(
            VerificationKey::from_public_key_pem(EC_PUBLIC)
                .unwrap()
                .family(),
            KeyFamily::Ec
        );
        assert_eq!(
            VerificationKey::from_public_key_pem(ED_PUBLIC)
                .unwrap()
                .family(),
            KeyFamily::Ed
        );
    }

    #[test]
    fn bad_public_keys_are_refused() {
        assert!(matches!(
            VerificationKey::from_public_key_pem(RSA_PRIVATE),
            Err(KeyError::PrivateKeyForVerification)
        ));
        assert!(matches!(
            VerificationKey::from_public_key_pem(b"not a key"),
            Err(KeyError::UnsupportedPublicKey)
        ));
        let missing = VerificationKey::from_public_key_file("/nonexistent/key.pem").unwrap_err();
        assert!(matches!(missing, KeyError::ReadFile { .. }));
        assert!(missing.to_string().contains("/nonexistent/key.pem"));
    }

    #[test]
    fn hmac_secrets_must_be_secrets() {
        assert!(matches!(
            VerificationKey::hmac_secret(b""),
            Err(KeyError::EmptySecret)
        ));
        assert!(matches!(
            VerificationKey::hmac_secret(RSA_PUBLIC),
            Err(KeyError::AsymmetricKeyAsSecret)
        ));
        assert!(matches!(
            SigningKey::hmac(Algorithm::HS256, RSA_PUBLIC),
            Err(KeyError::AsymmetricKeyAsSecret)
        ));
        assert!(matches!(
            SigningKey::hmac(Algorithm::RS256, b"secret"),
            Err(KeyError::AlgorithmMismatch { .. })
        ));
        assert!(matches!(
            SigningKey::from_private_key_pem(Algorithm::HS256, RSA_PRIVATE),
            Err(KeyError::AlgorithmMismatch { .. })
        ));
        assert!(matches!(
            SigningKey::from_private_key_pem(Algorithm::ES256, RSA_PRIVATE),
            Err(KeyError::InvalidPrivateKey { .. })
        ));
    }

    #[test]
    fn debug_never_shows_key_material() {
        let secret = "do-not-print-this-secret";
        let shown = format!(
            "{:?} {:?} {:?}",
            VerificationKey::hmac_secret(secret.as_bytes()).unwrap(),
            SigningKey::hs256(secret).unwrap(),
            SigningKey::from_private_key_pem(Algorithm::RS256, RSA_PRIVATE).unwrap(),
        );
        assert!(!shown.contains(secret), "{shown}");
        assert!(!shown.contains("MII"), "{shown}");
        assert!(shown.contains("Hmac") && shown.contains("RS256"), "{shown}");
    }
}
