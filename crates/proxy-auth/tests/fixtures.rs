//! Every PyJWT fixture and every vector of the reference Python library gives its listed decision; what
//! this crate mints decodes to exactly the given claims and matches the reference library byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proxy_auth::{
    Algorithm, AuthError, Claims, Expiry, Grant, LabInstance, SigningKey, TokenVerifier,
    VerificationKey, Verifier, encode, issue,
};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Case {
    name: String,
    token: String,
    key: String,
    algorithms: Vec<String>,
    vmi: String,
    expect: String,
}

#[derive(Deserialize)]
struct PyJwtFixtures {
    cases: Vec<Case>,
    generation: Generation,
}

#[derive(Deserialize)]
struct Generation {
    secret: String,
    algorithm: String,
    claims: Value,
    pyjwt_token: String,
}

#[derive(Deserialize)]
struct ReferenceVectors {
    secret: String,
    cases: Vec<Case>,
}

fn fixture_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

fn read_json<T: serde::de::DeserializeOwned>(relative: &str) -> T {
    serde_json::from_slice(&std::fs::read(fixture_path(relative)).unwrap()).unwrap()
}

/// The verifier a case describes. `key` is a file under `key_dir`, or `secret` for the vectors' secret.
fn verifier_for(case: &Case, key_dir: &str, named_secret: Option<&str>) -> Verifier {
    let key = match (case.key.as_str(), named_secret) {
        ("secret", Some(secret)) => VerificationKey::hmac_secret(secret.as_bytes()).unwrap(),
        (file, _) if file.ends_with(".secret") => VerificationKey::hmac_secret(
            &std::fs::read(fixture_path(&format!("{key_dir}/{file}"))).unwrap(),
        )
        .unwrap(),
        (file, _) => {
            VerificationKey::from_public_key_file(fixture_path(&format!("{key_dir}/{file}")))
                .unwrap()
        }
    };
    let algorithms = case
        .algorithms
        .iter()
        .map(|name| name.parse::<Algorithm>().unwrap());
    Verifier::builder()
        .key(key)
        .algorithms(algorithms)
        .build()
        .unwrap()
}

fn decision(result: &Result<Grant, AuthError>) -> String {
    match result {
        Ok(_) => "allow".to_owned(),
        Err(error) => format!("deny:{}", error.label()),
    }
}

fn payload_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// An allowed case's grant carries exactly what the token says.
fn assert_grant_matches_payload(case: &Case, grant: &Grant) {
    let payload = payload_of(&case.token);
    let lab_instance = &payload["lab_instance"];
    assert_eq!(
        serde_json::to_value(&grant.user_id).unwrap(),
        payload["id"],
        "{}",
        case.name
    );
    assert_eq!(
        serde_json::to_value(&grant.lab_id).unwrap(),
        lab_instance["lab_id"],
        "{}",
        case.name
    );
    assert_eq!(
        serde_json::to_value(&grant.lab_instance_id).unwrap(),
        lab_instance["lab_instance_id"],
        "{}",
        case.name
    );
    assert_eq!(
        grant.namespace, lab_instance["namespace_name"],
        "{}",
        case.name
    );
    assert_eq!(grant.vmi_name, case.vmi, "{}", case.name);
    let exp_seconds = payload["exp"].as_f64().unwrap().trunc() as u64;
    assert_eq!(
        grant.expires_at,
        UNIX_EPOCH + Duration::from_secs(exp_seconds),
        "{}",
        case.name
    );
    let additional_data = lab_instance
        .get("additional_data")
        .filter(|data| !data.is_null());
    assert_eq!(
        grant.additional_data.as_ref(),
        additional_data,
        "{}",
        case.name
    );
}

/// A refusal never echoes the token: neither its payload nor its signature appears in Display or Debug.
fn assert_error_hides_token(case: &Case, error: &AuthError) {
    let shown = format!("{error} {error:?}");
    for part in case.token.split('.').skip(1).filter(|part| part.len() >= 8) {
        assert!(!shown.contains(part), "{}: {shown}", case.name);
    }
}

fn run_cases(cases: &[Case], key_dir: &str, named_secret: Option<&str>) {
    let mut mismatches = Vec::new();
    for case in cases {
        let verifier: Box<dyn TokenVerifier> = Box::new(verifier_for(case, key_dir, named_secret));
        let result = verifier.verify(&case.token, &case.vmi);
        let got = decision(&result);
        if got != case.expect {
            mismatches.push(format!(
                "{}: expected {}, got {got} ({result:?})",
                case.name, case.expect
            ));
            continue;
        }
        match &result {
            Ok(grant) => assert_grant_matches_payload(case, grant),
            Err(error) => {
                assert_error_hides_token(case, error);
                assert_eq!(
                    error.is_forbidden(),
                    case.expect == "deny:vm_not_allowed",
                    "{}",
                    case.name
                );
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "cases with the wrong decision:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn every_pyjwt_fixture_case_gives_its_listed_decision() {
    let fixtures: PyJwtFixtures = read_json("tokens.json");
    assert_eq!(fixtures.cases.len(), 26);
    run_cases(&fixtures.cases, "keys", None);
}

#[test]
fn every_reference_library_vector_gives_its_listed_decision() {
    let vectors: ReferenceVectors = read_json("laborchestrator-lib-auth/vectors.json");
    assert_eq!(vectors.cases.len(), 5);
    run_cases(
        &vectors.cases,
        "laborchestrator-lib-auth",
        Some(&vectors.secret),
    );
}

#[test]
fn generation_entry_minted_here_decodes_to_exactly_its_claims() {
    let fixtures: PyJwtFixtures = read_json("tokens.json");
    let generation = fixtures.generation;
    assert_eq!(generation.algorithm, "HS256");
    let claims: Claims = serde_json::from_value(generation.claims.clone()).unwrap();
    let token = encode(&claims, &SigningKey::hs256(&generation.secret).unwrap()).unwrap();

    assert_eq!(
        payload_of(&token),
        generation.claims,
        "the signed payload is exactly the claims"
    );
    let verifier = Verifier::hs256(&generation.secret).unwrap();
    let decoded = verifier.decode(&token).unwrap();
    assert_eq!(decoded, claims);
    assert_eq!(serde_json::to_value(&decoded).unwrap(), generation.claims);
    assert!(verifier.verify(&token, "ubuntu").is_ok());
}

#[test]
fn generation_entry_pyjwt_token_verifies_to_the_same_claims() {
    let fixtures: PyJwtFixtures = read_json("tokens.json");
    let generation = fixtures.generation;
    let verifier = Verifier::hs256(&generation.secret).unwrap();
    let decoded = verifier.decode(&generation.pyjwt_token).unwrap();
    assert_eq!(serde_json::to_value(&decoded).unwrap(), generation.claims);
    let grant = verifier.verify(&generation.pyjwt_token, "ubuntu").unwrap();
    assert_eq!(grant.namespace, "pentest-ubuntu-3-9");
    assert_eq!(grant.additional_data, None);
}

#[test]
fn issue_matches_the_reference_library_byte_for_byte() {
    let vectors: ReferenceVectors = read_json("laborchestrator-lib-auth/vectors.json");
    let expected = |name: &str| {
        &vectors
            .cases
            .iter()
            .find(|case| case.name == name)
            .unwrap()
            .token
    };
    let key = SigningKey::hs256(&vectors.secret).unwrap();
    let lab_instance = LabInstance::new(1, 9, "pentest-ubuntu-3-9", ["ubuntu"]);

    let plain = issue(
        5,
        lab_instance.clone(),
        Expiry::At(8_633_272_048.into()),
        &key,
    )
    .unwrap();
    assert_eq!(&plain, expected("libauth_hs256_ubuntu"));

    let with_data = lab_instance.with_additional_data(json!({"hallo": "welt"}));
    let with_data = issue(5, with_data, Expiry::At(8_633_272_048.into()), &key).unwrap();
    assert_eq!(&with_data, expected("libauth_hs256_additional_data"));
}
