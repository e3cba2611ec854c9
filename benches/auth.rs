//! Token verification cost: HS256 and RS256 verify + allow-list check, the refusal paths, and minting.
//!
//! `cargo bench -p ws-proxy-benches --bench auth -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use proxy_auth::{Algorithm, Expiry, LabInstance, SigningKey, Verifier, issue};

const RSA_PRIVATE_KEY: &[u8] = include_bytes!("../crates/proxy-auth/tests/fixtures/keys/rsa.key");
const RSA_PUBLIC_KEY: &[u8] =
    include_bytes!("../crates/proxy-auth/tests/fixtures/keys/rsa.pub.pem");
const SECRET: &str = "bench-secret-0a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn lab_instance(vm_count: usize) -> LabInstance {
    let names = (0..vm_count).map(|index| format!("vm-{index}"));
    LabInstance::new(1, 9, "pentest-ubuntu-3-9", names)
}

fn mint(key: &SigningKey, vm_count: usize) -> String {
    match issue(
        5,
        lab_instance(vm_count),
        Expiry::In(Duration::from_secs(3600)),
        key,
    ) {
        Ok(token) => token,
        Err(error) => panic!("cannot mint the bench token: {error}"),
    }
}

fn verification(c: &mut Criterion) {
    let (hs256, hs256_verifier) = match (SigningKey::hs256(SECRET), Verifier::hs256(SECRET)) {
        (Ok(key), Ok(verifier)) => (key, verifier),
        _ => panic!("cannot build the HS256 keys"),
    };
    let (rs256, rs256_verifier) = match (
        SigningKey::from_private_key_pem(Algorithm::RS256, RSA_PRIVATE_KEY),
        Verifier::from_public_key_pem(RSA_PUBLIC_KEY, &[Algorithm::RS256]),
    ) {
        (Ok(key), Ok(verifier)) => (key, verifier),
        _ => panic!("cannot build the RS256 keys"),
    };
    let hs256_token = mint(&hs256, 2);
    let hs256_long_list_token = mint(&hs256, 64);
    let rs256_token = mint(&rs256, 2);
    let mut tampered_token = hs256_token.clone();
    tampered_token.pop();
    tampered_token.push(if hs256_token.ends_with('A') { 'Q' } else { 'A' });

    let mut group = c.benchmark_group("auth");
    group.bench_function("verify_hs256_allow", |b| {
        b.iter(|| {
            hs256_verifier
                .verify(black_box(&hs256_token), black_box("vm-1"))
                .is_ok()
        })
    });
    group.bench_function("verify_hs256_allow_list_64_last", |b| {
        b.iter(|| {
            hs256_verifier
                .verify(black_box(&hs256_long_list_token), black_box("vm-63"))
                .is_ok()
        })
    });
    group.bench_function("verify_hs256_vm_not_allowed", |b| {
        b.iter(|| {
            hs256_verifier
                .verify(black_box(&hs256_token), black_box("manjaro"))
                .is_err()
        })
    });
    group.bench_function("verify_hs256_bad_signature", |b| {
        b.iter(|| {
            hs256_verifier
                .verify(black_box(&tampered_token), black_box("vm-1"))
                .is_err()
        })
    });
    group.bench_function("verify_rs256_allow", |b| {
        b.iter(|| {
            rs256_verifier
                .verify(black_box(&rs256_token), black_box("vm-1"))
                .is_ok()
        })
    });
    group.bench_function("issue_hs256", |b| b.iter(|| mint(black_box(&hs256), 2)));
    group.finish();
}

criterion_group!(benches, verification);
criterion_main!(benches);
