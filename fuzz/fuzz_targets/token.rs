//! Token verification on arbitrary text: never panics, and a grant always names a VM it
//! allows under a valid namespace (a forged token cannot pass: the key is fixed and secret).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use proxy_auth::Verifier;

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| Verifier::hs256("fuzzing-secret-nobody-knows").unwrap())
}

fuzz_target!(|input: (&str, &str)| {
    let (token, vmi) = input;
    if let Ok(grant) = verifier().verify(token, vmi) {
        panic!("a token without the secret was accepted: {grant:?}");
    }
    // Decoding the claims of an unsigned-but-well-formed payload path must not panic either.
    let _ = verifier().decode(token);
});
