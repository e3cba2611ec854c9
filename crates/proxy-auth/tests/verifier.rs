//! Verifier behaviour beyond the fixtures: time claims and leeway at fixed clocks, issuer and audience,
//! header tricks, key families, configuration errors, minting with every key family.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::EncodingKey;
use proxy_auth::{
    Algorithm, AuthError, Claims, ConfigError, Expiry, KeyFamily, LabInstance, MAX_TOKEN_BYTES,
    MalformedToken, NumericDate, SigningKey, TokenPart, VerificationKey, Verifier, encode, issue,
};
use serde_json::{Value, json};

const SECRET: &str = "test-secret";
const EXP: i64 = 2_000_000_000;

fn key_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

fn at(seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds.try_into().unwrap())
}

fn payload(extra: Value) -> Value {
    let mut payload = json!({
        "id": 5,
        "exp": EXP,
        "lab_instance": {
            "lab_id": 1, "lab_instance_id": 9, "namespace_name": "lab-1-9",
            "allowed_vmi_names": ["ubuntu", "kali"], "additional_data": null
        }
    });
    for (name, value) in extra.as_object().unwrap() {
        if value.is_null() {
            payload.as_object_mut().unwrap().remove(name);
        } else {
            payload[name] = value.clone();
        }
    }
    payload
}

/// Signs any header and payload JSON with HS256 over `SECRET`, bypassing every check of this crate.
fn raw_hs256(header: &Value, payload: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap())
    );
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    let signature =
        jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::HS256).unwrap();
    format!("{signing_input}.{signature}")
}

fn hs256_token(payload: &Value) -> String {
    raw_hs256(&json!({"typ": "JWT", "alg": "HS256"}), payload)
}

fn verifier() -> Verifier {
    Verifier::hs256(SECRET).unwrap()
}

#[test]
fn exp_is_exclusive_and_leeway_extends_it() {
    let token = hs256_token(&payload(json!({})));
    assert!(verifier().verify_at(&token, "ubuntu", at(EXP - 1)).is_ok());
    assert_eq!(
        verifier().verify_at(&token, "ubuntu", at(EXP)),
        Err(AuthError::Expired)
    );

    let lenient = Verifier::builder()
        .key(VerificationKey::hmac_secret(SECRET.as_bytes()).unwrap())
        .leeway(Duration::from_secs(5))
        .build()
        .unwrap();
    assert_eq!(lenient.leeway(), Duration::from_secs(5));
    assert!(lenient.verify_at(&token, "ubuntu", at(EXP + 4)).is_ok());
    assert_eq!(
        lenient.verify_at(&token, "ubuntu", at(EXP + 5)),
        Err(AuthError::Expired)
    );
}

#[test]
fn float_exp_counts_whole_seconds_like_pyjwt() {
    let token = hs256_token(&payload(json!({"exp": EXP as f64 + 0.75})));
    let just_before = at(EXP) - Duration::from_millis(1);
    let grant = verifier().verify_at(&token, "ubuntu", just_before).unwrap();
    assert_eq!(grant.expires_at, at(EXP));
    assert_eq!(
        verifier().verify_at(&token, "ubuntu", at(EXP) + Duration::from_millis(500)),
        Err(AuthError::Expired)
    );
}

#[test]
fn exp_must_be_present_and_numeric() {
    let now = at(EXP - 100);
    let missing = hs256_token(&payload(json!({"exp": null})));
    assert_eq!(
        verifier().verify_at(&missing, "ubuntu", now),
        Err(AuthError::MissingClaim { claim: "exp" })
    );
    for bad in [json!("2000000000"), json!(true), json!([1]), json!(1e300)] {
        let token = hs256_token(&payload(json!({ "exp": bad })));
        assert_eq!(
            verifier().verify_at(&token, "ubuntu", now),
            Err(AuthError::MalformedClaims { claim: "exp" }),
            "{bad}"
        );
    }
}

#[test]
fn nbf_and_iat_are_checked_when_present() {
    let now = EXP - 100;
    for claim in ["nbf", "iat"] {
        let future = hs256_token(&payload(json!({ claim: now + 10 })));
        assert_eq!(
            verifier().verify_at(&future, "ubuntu", at(now)),
            Err(AuthError::NotYetValid),
            "{claim}"
        );
        assert!(
            verifier()
                .verify_at(&future, "ubuntu", at(now + 10))
                .is_ok(),
            "{claim}"
        );
        let lenient = Verifier::builder()
            .key(VerificationKey::hmac_secret(SECRET.as_bytes()).unwrap())
            .leeway(Duration::from_secs(10))
            .build()
            .unwrap();
        assert!(
            lenient.verify_at(&future, "ubuntu", at(now)).is_ok(),
            "{claim}"
        );

        let malformed = hs256_token(&payload(json!({ claim: "soon" })));
        assert_eq!(
            verifier().verify_at(&malformed, "ubuntu", at(now)),
            Err(AuthError::MalformedClaims { claim }),
            "{claim}"
        );
    }
}

#[test]
fn issuer_is_required_when_configured() {
    let now = at(EXP - 100);
    let with_issuer = Verifier::builder()
        .key(VerificationKey::hmac_secret(SECRET.as_bytes()).unwrap())
        .issuer("lab-orchestrator")
        .issuer("lab-orchestrator-staging")
        .build()
        .unwrap();
    let cases = [
        (json!({}), Err(AuthError::MissingClaim { claim: "iss" })),
        (
            json!({"iss": "someone-else"}),
            Err(AuthError::InvalidIssuer),
        ),
        (
            json!({"iss": 7}),
            Err(AuthError::MalformedClaims { claim: "iss" }),
        ),
        (json!({"iss": "lab-orchestrator-staging"}), Ok(())),
    ];
    for (extra, expected) in cases {
        let token = hs256_token(&payload(extra.clone()));
        assert_eq!(
            with_issuer.verify_at(&token, "ubuntu", now).map(|_| ()),
            expected,
            "{extra}"
        );
    }
    let token = hs256_token(&payload(json!({"iss": "anyone"})));
    assert!(
        verifier().verify_at(&token, "ubuntu", now).is_ok(),
        "iss is ignored when not configured"
    );
}

#[test]
fn audience_follows_pyjwt() {
    let now = at(EXP - 100);
    let with_audience = Verifier::builder()
        .key(VerificationKey::hmac_secret(SECRET.as_bytes()).unwrap())
        .audience("ws-proxy")
        .build()
        .unwrap();
    let cases = [
        (json!({}), Err(AuthError::MissingClaim { claim: "aud" })),
        (json!({"aud": "ws-proxy"}), Ok(())),
        (json!({"aud": ["other", "ws-proxy"]}), Ok(())),
        (json!({"aud": ["other"]}), Err(AuthError::InvalidAudience)),
        (
            json!({"aud": ["ws-proxy", 3]}),
            Err(AuthError::MalformedClaims { claim: "aud" }),
        ),
        (
            json!({"aud": 3}),
            Err(AuthError::MalformedClaims { claim: "aud" }),
        ),
    ];
    for (extra, expected) in cases {
        let token = hs256_token(&payload(extra.clone()));
        assert_eq!(
            with_audience.verify_at(&token, "ubuntu", now).map(|_| ()),
            expected,
            "{extra}"
        );
    }
    let unexpected = hs256_token(&payload(json!({"aud": "ws-proxy"})));
    assert_eq!(
        verifier().verify_at(&unexpected, "ubuntu", now),
        Err(AuthError::InvalidAudience)
    );
}

#[test]
fn headers_that_ask_for_more_than_a_plain_jws_are_refused() {
    let now = at(EXP - 100);
    let claims = payload(json!({}));
    let cases = [
        (
            json!({"alg": "HS256", "crit": ["exp"]}),
            Err(AuthError::Malformed(MalformedToken::UnsupportedHeader)),
        ),
        (
            json!({"alg": "HS256", "b64": false}),
            Err(AuthError::Malformed(MalformedToken::UnsupportedHeader)),
        ),
        (
            json!({"typ": "JWT"}),
            Err(AuthError::Malformed(MalformedToken::BadHeader)),
        ),
        (
            json!({"alg": 256}),
            Err(AuthError::Malformed(MalformedToken::BadHeader)),
        ),
        (
            json!({"alg": "none"}),
            Err(AuthError::DisallowedAlgorithm { offered: None }),
        ),
        (
            json!({"alg": "HS512"}),
            Err(AuthError::DisallowedAlgorithm {
                offered: Some(Algorithm::HS512),
            }),
        ),
        (
            json!({"alg": "HS256", "kid": "ignored", "typ": "at+jwt"}),
            Ok(()),
        ),
    ];
    for (header, expected) in cases {
        let token = raw_hs256(&header, &claims);
        assert_eq!(
            verifier().verify_at(&token, "ubuntu", now).map(|_| ()),
            expected,
            "{header}"
        );
    }
}

#[test]
fn structural_garbage_is_malformed() {
    let now = at(EXP - 100);
    let valid = hs256_token(&payload(json!({})));
    let (signing_input, signature) = valid.rsplit_once('.').unwrap();
    let too_long = format!("{signing_input}.{}", "A".repeat(MAX_TOKEN_BYTES));
    let cases = [
        (String::new(), MalformedToken::NotThreeParts),
        ("a.b.c.d".to_owned(), MalformedToken::NotThreeParts),
        (format!("{valid}."), MalformedToken::NotThreeParts),
        (
            format!("{signing_input}.{signature}=="),
            MalformedToken::NotBase64(TokenPart::Signature),
        ),
        (
            format!("e30=.{}", valid.split_once('.').unwrap().1),
            MalformedToken::NotBase64(TokenPart::Header),
        ),
        (
            too_long,
            MalformedToken::TooLong {
                max: MAX_TOKEN_BYTES,
            },
        ),
    ];
    for (token, reason) in cases {
        assert_eq!(
            verifier().verify_at(&token, "ubuntu", now),
            Err(AuthError::Malformed(reason)),
            "{reason}"
        );
    }
    let array_payload = raw_hs256(&json!({"alg": "HS256"}), &json!([1, 2]));
    assert_eq!(
        verifier().verify_at(&array_payload, "ubuntu", now),
        Err(AuthError::Malformed(MalformedToken::PayloadNotJsonObject))
    );
}

#[test]
fn lab_orchestrator_layout_is_enforced_claim_by_claim() {
    let now = at(EXP - 100);
    let lab = |member: &str, value: Value| {
        let mut claims = payload(json!({}));
        if value.is_null() {
            claims["lab_instance"]
                .as_object_mut()
                .unwrap()
                .remove(member);
        } else {
            claims["lab_instance"][member] = value;
        }
        hs256_token(&claims)
    };
    let cases = [
        (hs256_token(&payload(json!({"id": null}))), "id"),
        (hs256_token(&payload(json!({"id": 1.5}))), "id"),
        (
            hs256_token(&payload(json!({"lab_instance": "lab-1-9"}))),
            "lab_instance",
        ),
        (lab("lab_id", json!(null)), "lab_instance.lab_id"),
        (
            lab("lab_instance_id", json!([9])),
            "lab_instance.lab_instance_id",
        ),
        (
            lab("namespace_name", json!("Lab-1")),
            "lab_instance.namespace_name",
        ),
        (
            lab("namespace_name", json!("lab/../kube-system")),
            "lab_instance.namespace_name",
        ),
        (
            lab("namespace_name", json!(7)),
            "lab_instance.namespace_name",
        ),
        (
            lab("allowed_vmi_names", json!("ubuntu")),
            "lab_instance.allowed_vmi_names",
        ),
        (
            lab("allowed_vmi_names", json!(["ubuntu", 7])),
            "lab_instance.allowed_vmi_names",
        ),
    ];
    for (token, claim) in cases {
        assert_eq!(
            verifier().verify_at(&token, "ubuntu", now),
            Err(AuthError::MalformedClaims { claim }),
            "{claim}"
        );
    }
}

#[test]
fn allow_list_is_exact_and_names_must_be_kubernetes_names() {
    let now = at(EXP - 100);
    let mut claims = payload(json!({}));
    claims["lab_instance"]["allowed_vmi_names"] = json!(["ubuntu", "Kali", "../x", ""]);
    let token = hs256_token(&claims);
    assert!(verifier().verify_at(&token, "ubuntu", now).is_ok());
    for refused in ["ubunt", "ubuntu ", "UBUNTU", "kali", "x"] {
        assert_eq!(
            verifier().verify_at(&token, refused, now),
            Err(AuthError::VmNotAllowed),
            "{refused}"
        );
    }
    for allowed_but_invalid in ["Kali", "../x", ""] {
        let error = verifier()
            .verify_at(&token, allowed_but_invalid, now)
            .unwrap_err();
        assert_eq!(error, AuthError::InvalidVmName, "{allowed_but_invalid}");
        assert!(!error.is_forbidden());
    }
}

#[test]
fn additional_data_reaches_the_grant() {
    let now = at(EXP - 100);
    let with = |data: Value| {
        let mut claims = payload(json!({}));
        if data.is_null() {
            claims["lab_instance"]
                .as_object_mut()
                .unwrap()
                .remove("additional_data");
        } else {
            claims["lab_instance"]["additional_data"] = data;
        }
        verifier()
            .verify_at(&hs256_token(&claims), "ubuntu", now)
            .unwrap()
            .additional_data
    };
    assert_eq!(with(Value::Null), None, "absent");
    assert_eq!(
        with(json!({"view_only": true})),
        Some(json!({"view_only": true}))
    );
    assert_eq!(with(json!([1, "two"])), Some(json!([1, "two"])));
    let explicit_null = verifier()
        .verify_at(&hs256_token(&payload(json!({}))), "ubuntu", now)
        .unwrap();
    assert_eq!(explicit_null.additional_data, None, "null");
}

#[test]
fn mixed_keys_never_cross_families() {
    let now = SystemTime::now();
    let rsa_public = std::fs::read(key_file("rsa.pub.pem")).unwrap();
    let verifier = Verifier::builder()
        .key(VerificationKey::hmac_secret(SECRET.as_bytes()).unwrap())
        .key(VerificationKey::from_public_key_pem(&rsa_public).unwrap())
        .algorithms([Algorithm::HS256, Algorithm::RS256])
        .build()
        .unwrap();
    let lab_instance = LabInstance::new(1, 9, "lab-1-9", ["ubuntu"]);
    let rs256 = SigningKey::from_private_key_file(Algorithm::RS256, key_file("rsa.key")).unwrap();
    let rs256_token = issue(5, lab_instance.clone(), Expiry::DEFAULT, &rs256).unwrap();
    assert!(verifier.verify_at(&rs256_token, "ubuntu", now).is_ok());
    let hs256_token = issue(
        5,
        lab_instance.clone(),
        Expiry::DEFAULT,
        &SigningKey::hs256(SECRET).unwrap(),
    )
    .unwrap();
    assert!(verifier.verify_at(&hs256_token, "ubuntu", now).is_ok());

    // The classic confusion: HS256 keyed with the RSA public key's PEM bytes.
    let confused_key = EncodingKey::from_secret(&rsa_public).unwrap();
    let claims = serde_json::to_value(verifier.decode(&hs256_token).unwrap()).unwrap();
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
    );
    let signature =
        jsonwebtoken::crypto::sign(signing_input.as_bytes(), &confused_key, Algorithm::HS256)
            .unwrap();
    let confused = format!("{signing_input}.{signature}");
    assert_eq!(
        verifier.verify_at(&confused, "ubuntu", now),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn rotated_hmac_secrets_are_tried_in_turn() {
    let now = SystemTime::now();
    let verifier = Verifier::builder()
        .key(VerificationKey::hmac_secret(b"old-secret").unwrap())
        .key(VerificationKey::hmac_secret(b"new-secret").unwrap())
        .build()
        .unwrap();
    let lab_instance = LabInstance::new(1, 9, "lab-1-9", ["ubuntu"]);
    for secret in ["old-secret", "new-secret"] {
        let token = issue(
            5,
            lab_instance.clone(),
            Expiry::DEFAULT,
            &SigningKey::hs256(secret).unwrap(),
        )
        .unwrap();
        assert!(
            verifier.verify_at(&token, "ubuntu", now).is_ok(),
            "{secret}"
        );
    }
    let other = issue(
        5,
        lab_instance,
        Expiry::DEFAULT,
        &SigningKey::hs256("other").unwrap(),
    )
    .unwrap();
    assert_eq!(
        verifier.verify_at(&other, "ubuntu", now),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn every_key_family_mints_and_verifies() {
    let now = SystemTime::now();
    let families = [
        (Algorithm::RS256, "rsa"),
        (Algorithm::RS384, "rsa"),
        (Algorithm::RS512, "rsa"),
        (Algorithm::PS256, "rsa"),
        (Algorithm::PS512, "rsa"),
        (Algorithm::ES256, "ec-p256"),
        (Algorithm::EdDSA, "ed25519"),
    ];
    for (algorithm, key) in families {
        let signing_key =
            SigningKey::from_private_key_file(algorithm, key_file(&format!("{key}.key"))).unwrap();
        let lab_instance = LabInstance::new("lab-a", "inst-9", "lab-1-9", ["ubuntu"]);
        let token = issue(
            "user-5",
            lab_instance,
            Expiry::In(Duration::from_secs(60)),
            &signing_key,
        )
        .unwrap();
        let verifier =
            Verifier::from_public_key_file(key_file(&format!("{key}.pub.pem")), &[algorithm])
                .unwrap();
        let grant = verifier.verify_at(&token, "ubuntu", now).unwrap();
        assert_eq!(grant.user_id, "user-5".into(), "{algorithm:?}");

        let hs256_only = Verifier::hs256(SECRET).unwrap();
        assert_eq!(
            hs256_only.verify_at(&token, "ubuntu", now),
            Err(AuthError::DisallowedAlgorithm {
                offered: Some(algorithm)
            }),
            "{algorithm:?}"
        );
    }
}

#[test]
fn encode_signs_exactly_the_given_claims() {
    let claims: Claims = serde_json::from_value(json!({
        "id": "user-5", "exp": 4102444800.25, "iss": "lab-orchestrator", "custom": {"a": [1, 2]},
        "lab_instance": {"lab_id": 1, "lab_instance_id": 9, "namespace_name": "lab-1-9",
                         "allowed_vmi_names": ["ubuntu"], "extension": true}
    }))
    .unwrap();
    let token = encode(&claims, &SigningKey::hs256(SECRET).unwrap()).unwrap();
    let decoded = verifier().decode_at(&token, at(EXP)).unwrap();
    assert_eq!(decoded, claims);
    assert_eq!(
        decoded.exp,
        NumericDate::FractionalSeconds(4_102_444_800.25)
    );
    assert_eq!(
        decoded.lab_instance.additional_data, None,
        "absent stays absent"
    );
}

#[test]
fn configuration_mistakes_are_refused_when_building() {
    let rsa_public = std::fs::read(key_file("rsa.pub.pem")).unwrap();
    let hmac = || VerificationKey::hmac_secret(SECRET.as_bytes()).unwrap();
    let rsa = || VerificationKey::from_public_key_pem(&rsa_public).unwrap();

    assert!(matches!(
        Verifier::from_public_key_pem(&rsa_public, &[Algorithm::HS256]),
        Err(ConfigError::NoKeyForAlgorithm {
            algorithm: Algorithm::HS256,
            family: KeyFamily::Hmac
        })
    ));
    assert!(matches!(
        Verifier::builder().key(hmac()).algorithms([]).build(),
        Err(ConfigError::NoAlgorithms)
    ));
    assert!(matches!(
        Verifier::builder().build(),
        Err(ConfigError::NoKeys)
    ));
    assert!(matches!(
        Verifier::builder()
            .key(hmac())
            .algorithms([Algorithm::HS256, Algorithm::ES256])
            .build(),
        Err(ConfigError::NoKeyForAlgorithm {
            algorithm: Algorithm::ES256,
            family: KeyFamily::Ec
        })
    ));
    assert!(matches!(
        Verifier::builder().key(hmac()).key(rsa()).build(),
        Err(ConfigError::UnusedKey {
            family: KeyFamily::Rsa
        })
    ));
    assert!(matches!(Verifier::hs256(""), Err(ConfigError::Key(_))));
    assert!(matches!(
        Verifier::from_public_key_file(key_file("missing.pem"), &[Algorithm::RS256]),
        Err(ConfigError::Key(_))
    ));

    let deduplicated = Verifier::builder()
        .key(rsa())
        .algorithms([Algorithm::RS256, Algorithm::RS256])
        .build()
        .unwrap();
    assert_eq!(deduplicated.algorithms(), &[Algorithm::RS256]);
}

#[test]
fn debug_and_errors_never_show_secrets_or_tokens() {
    let secret = "very-secret-value-1234";
    let verifier = Verifier::hs256(secret).unwrap();
    let shown = format!("{verifier:?}");
    assert!(
        !shown.contains(secret) && shown.contains("HS256"),
        "{shown}"
    );

    let token = issue(
        5,
        LabInstance::new(1, 9, "lab-1-9", ["ubuntu"]),
        Expiry::DEFAULT,
        &SigningKey::hs256("other").unwrap(),
    )
    .unwrap();
    let error = verifier.verify(&token, "ubuntu").unwrap_err();
    let shown = format!("{error} {error:?}");
    for part in token.split('.') {
        assert!(!shown.contains(part), "{shown}");
    }
}

#[test]
fn only_vm_not_allowed_is_forbidden_and_labels_are_stable() {
    let labelled = [
        (
            AuthError::Malformed(MalformedToken::NotThreeParts),
            "malformed",
        ),
        (AuthError::BadSignature, "bad_signature"),
        (AuthError::UnknownKeyId, "unknown_key_id"),
        (
            AuthError::DisallowedAlgorithm { offered: None },
            "algorithm",
        ),
        (AuthError::Expired, "expired"),
        (AuthError::NotYetValid, "not_yet_valid"),
        (AuthError::MissingClaim { claim: "exp" }, "missing_claim"),
        (
            AuthError::MalformedClaims {
                claim: "lab_instance",
            },
            "malformed_claims",
        ),
        (AuthError::InvalidIssuer, "issuer"),
        (AuthError::InvalidAudience, "audience"),
        (AuthError::VmNotAllowed, "vm_not_allowed"),
        (AuthError::InvalidVmName, "invalid_vm_name"),
    ];
    for (error, label) in labelled {
        assert_eq!(error.label(), label);
        assert_eq!(error.is_forbidden(), label == "vm_not_allowed", "{label}");
    }
}
