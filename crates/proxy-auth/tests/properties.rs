//! Properties: garbage never panics and never allows; a token minted for names A allows exactly A.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::LazyLock;
use std::time::Duration;

use proptest::prelude::*;
use proxy_auth::{Expiry, LabInstance, SigningKey, Verifier, issue};

const SECRET: &str = "property-secret";

static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| Verifier::hs256(SECRET).unwrap());
static SIGNING_KEY: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::hs256(SECRET).unwrap());
static VALID_TOKEN: LazyLock<String> =
    LazyLock::new(|| mint(&["ubuntu".to_owned(), "kali".to_owned()]));

fn mint(vm_names: &[String]) -> String {
    let lab_instance = LabInstance::new(1, 9, "lab-1-9", vm_names.iter().cloned());
    issue(
        5,
        lab_instance,
        Expiry::In(Duration::from_secs(3600)),
        &SIGNING_KEY,
    )
    .unwrap()
}

/// Strings shaped like tokens: three parts of base64url characters.
fn token_shaped() -> impl Strategy<Value = String> {
    let part = "[A-Za-z0-9_-]{0,60}";
    (part, part, part)
        .prop_map(|(header, payload, signature)| format!("{header}.{payload}.{signature}"))
}

/// Valid VM names (DNS-1123 subdomains).
fn vm_name() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z0-9]{1,4}){0,2}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_as_token_and_vm_never_allow(token in proptest::collection::vec(any::<u8>(), 0..400),
                                                   vm in proptest::collection::vec(any::<u8>(), 0..40)) {
        let token = String::from_utf8_lossy(&token);
        let vm = String::from_utf8_lossy(&vm);
        prop_assert!(VERIFIER.verify(&token, &vm).is_err());
    }

    #[test]
    fn token_shaped_garbage_never_allows(token in token_shaped(), vm in vm_name()) {
        prop_assert!(VERIFIER.verify(&token, &vm).is_err());
    }

    #[test]
    fn any_single_character_change_to_a_valid_token_is_refused(position in any::<prop::sample::Index>(),
                                                               replacement in "[A-Za-z0-9_.=-]") {
        let token = &*VALID_TOKEN;
        let position = position.index(token.len());
        let replacement = replacement.chars().next().unwrap();
        prop_assume!(token.as_bytes()[position] != replacement as u8);
        let mut changed = token.clone();
        changed.replace_range(position..=position, &replacement.to_string());
        prop_assert!(VERIFIER.verify(&changed, "ubuntu").is_err());
    }

    #[test]
    fn arbitrary_vm_names_on_a_valid_token_allow_only_listed_ones(vm in any::<String>()) {
        let allowed = VERIFIER.verify(&VALID_TOKEN, &vm).is_ok();
        prop_assert_eq!(allowed, vm == "ubuntu" || vm == "kali");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_token_minted_for_names_allows_exactly_those(
        allowed in proptest::collection::btree_set(vm_name(), 0..6),
        probes in proptest::collection::vec(vm_name(), 0..8),
    ) {
        let allowed: Vec<String> = allowed.into_iter().collect();
        let token = mint(&allowed);
        for name in &allowed {
            let grant = VERIFIER.verify(&token, name);
            prop_assert!(grant.is_ok(), "{} refused: {:?}", name, grant);
            prop_assert_eq!(&grant.unwrap().vmi_name, name);
        }
        for probe in &probes {
            let result = VERIFIER.verify(&token, probe);
            prop_assert_eq!(result.is_ok(), allowed.contains(probe), "{}", probe);
            if let Err(error) = result {
                prop_assert!(error.is_forbidden());
            }
        }
    }
}
