//! Several keys at once: a JWK Set (RFC 7517) as the key format, and the token header's `kid`
//! choosing the key (a rotation keeps the old and the new key side by side).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proxy_auth::{AuthError, KeyError, VerificationKey, Verifier};
use serde_json::json;

const OLD: &str = "the-old-secret-of-november-2026!";
const NEW: &str = "the-new-secret-of-december-2026!";

fn jwks() -> String {
    json!({"keys": [
        {"kty": "oct", "kid": "2026-11", "k": URL_SAFE_NO_PAD.encode(OLD)},
        {"kty": "oct", "kid": "2026-12", "k": URL_SAFE_NO_PAD.encode(NEW)},
    ]})
    .to_string()
}

/// A console token signed with `secret`, with `kid` in its header when given.
fn token(secret: &str, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    let claims = json!({
        "id": 5,
        "exp": 4_102_444_800u64,
        "lab_instance": {
            "lab_id": 1, "lab_instance_id": 9, "namespace_name": "lab-1",
            "allowed_vmi_names": ["ubuntu"], "additional_data": null
        }
    });
    let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn verifier(keys: Vec<VerificationKey>) -> Verifier {
    keys.into_iter()
        .fold(Verifier::builder(), |builder, key| builder.key(key))
        .algorithms([proxy_auth::Algorithm::HS256])
        .build()
        .unwrap()
}

#[test]
fn a_jwk_set_loads_its_keys_with_their_ids() {
    let keys = VerificationKey::from_jwk_set(jwks().as_bytes()).unwrap();
    let ids: Vec<Option<&str>> = keys.iter().map(VerificationKey::key_id).collect();
    assert_eq!(ids, [Some("2026-11"), Some("2026-12")]);
    assert!(!format!("{keys:?}").contains("secret"));
}

#[test]
fn the_kid_picks_the_key_and_no_kid_tries_every_key() {
    let verifier = verifier(VerificationKey::from_jwk_set(jwks().as_bytes()).unwrap());
    let check = |token: &str| {
        verifier
            .verify(token, "ubuntu")
            .map(|grant| grant.namespace)
    };
    assert!(check(&token(OLD, Some("2026-11"))).is_ok());
    assert!(check(&token(NEW, Some("2026-12"))).is_ok());
    // Only the named key is tried: the old secret under the new id fails.
    assert!(matches!(
        check(&token(OLD, Some("2026-12"))),
        Err(AuthError::BadSignature)
    ));
    // Without a kid every key of the family is tried, as before key ids.
    assert!(check(&token(OLD, None)).is_ok());
    assert!(check(&token(NEW, None)).is_ok());
    // An id nobody has: only keys without an id would be tried, and there are none.
    assert!(matches!(
        check(&token(OLD, Some("2025-01"))),
        Err(AuthError::UnknownKeyId)
    ));
}

#[test]
fn a_bare_secret_still_accepts_tokens_that_name_an_unknown_kid() {
    let verifier = verifier(vec![
        VerificationKey::hmac_secret(OLD.as_bytes()).unwrap(),
        VerificationKey::hmac_secret(NEW.as_bytes())
            .unwrap()
            .with_key_id("2026-12"),
    ]);
    assert!(
        verifier
            .verify(&token(OLD, Some("lab-backend-1")), "ubuntu")
            .is_ok()
    );
    assert!(matches!(
        verifier.verify(&token(NEW, Some("lab-backend-1")), "ubuntu"),
        Err(AuthError::UnknownKeyId)
    ));
    assert!(
        verifier
            .verify(&token(NEW, Some("2026-12")), "ubuntu")
            .is_ok()
    );
}

#[test]
fn broken_jwk_sets_are_refused_whole() {
    assert!(matches!(
        VerificationKey::from_jwk_set(b"not json"),
        Err(KeyError::JwkSet(_))
    ));
    assert!(matches!(
        VerificationKey::from_jwk_set(br#"{"keys": []}"#),
        Err(KeyError::EmptyJwkSet)
    ));
    let one_bad = json!({"keys": [
        {"kty": "oct", "kid": "good", "k": URL_SAFE_NO_PAD.encode(OLD)},
        {"kty": "oct", "kid": "empty", "k": ""},
    ]})
    .to_string();
    match VerificationKey::from_jwk_set(one_bad.as_bytes()) {
        Err(KeyError::Jwk { index: 1, kid }) => assert_eq!(kid.as_deref(), Some("empty")),
        other => panic!("expected the second key refused, got {other:?}"),
    }
}
