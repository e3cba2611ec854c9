//! Keys, certificates and the admin token follow their files: a change that loads is used for
//! what comes next, a change that does not load keeps the last good value, and the key ring
//! reports both to its metrics. Files are looked at again at most once a second, so each check
//! waits (bounded) for the reload rather than for a fixed time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxy_auth::{TokenVerifier as _, Verifier};
use proxy_keys::{AdminToken, KeyMetrics, KeyRing, Reload, ServerTls, TlsError, TlsFiles};
use test_support::{TestPki, mint_console_token};

/// Generous bound for a reload that must happen; never a measured threshold.
const BOUND: Duration = Duration::from_secs(15);

fn token(secret: &str) -> String {
    mint_console_token(secret, "lab-ns", 9, &["ubuntu"], Duration::from_secs(300))
}

/// Replaces `path` the way a Secret volume does: a new file renamed over the old one.
fn replace(path: &Path, contents: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, contents).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// Waits until `done` holds, checking every 100 ms, at most [`BOUND`].
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < BOUND, "{what}: not within {BOUND:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn secret_ring(secret_file: &Path) -> KeyRing {
    let file = secret_file.to_owned();
    KeyRing::from_files(vec![secret_file.to_owned()], move || {
        Verifier::hs256(std::fs::read_to_string(&file).unwrap_or_default().trim())
    })
    .unwrap()
}

#[test]
fn a_rotated_secret_verifies_the_next_tokens_and_a_broken_one_keeps_the_last_good() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret-key");
    std::fs::write(&secret, "first-secret\n").unwrap();
    let keys = secret_ring(&secret);
    let reports: Arc<Mutex<Vec<(Reload, usize)>>> = Arc::default();
    let seen = Arc::clone(&reports);
    keys.attach_metrics(KeyMetrics::new(move |reload, count| {
        seen.lock().unwrap().push((reload, count));
    }));
    assert_eq!(reports.lock().unwrap()[0], (Reload::Unchanged, 1));
    assert!(keys.verify(&token("first-secret"), "ubuntu").is_ok());

    replace(&secret, "second-secret\n");
    eventually("the rotated secret is used", || {
        keys.verify(&token("second-secret"), "ubuntu").is_ok()
    });
    assert!(keys.verify(&token("first-secret"), "ubuntu").is_err());
    assert!(reports.lock().unwrap().contains(&(Reload::Reloaded, 1)));

    // An empty secret does not make a verifier: the second secret stays in use.
    replace(&secret, "");
    eventually("the broken change is reported", || {
        // Files are looked at when a token is checked.
        let _ = keys.current();
        reports
            .lock()
            .unwrap()
            .iter()
            .any(|(reload, _)| *reload == Reload::Failed)
    });
    assert!(keys.verify(&token("second-secret"), "ubuntu").is_ok());
    assert_eq!(keys.files(), [secret]);
}

#[test]
fn the_admin_token_follows_its_file_and_refuses_short_ones() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin-token");
    std::fs::write(&file, "short\n").unwrap();
    assert!(
        AdminToken::from_file(&file).is_err(),
        "shorter than 16 bytes"
    );

    std::fs::write(&file, "0123456789abcdef-first\n").unwrap();
    let admin = AdminToken::from_file(&file).unwrap();
    assert!(admin.allows(b"0123456789abcdef-first"));
    assert!(!admin.allows(b"0123456789abcdef-firs"));
    assert!(!admin.allows(b""));

    replace(&file, "0123456789abcdef-second\n");
    eventually("the new admin token is used", || {
        admin.allows(b"0123456789abcdef-second")
    });
    assert!(!admin.allows(b"0123456789abcdef-first"));
    // Too short now: the second token stays.
    replace(&file, "short\n");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(admin.allows(b"0123456789abcdef-second"));
}

fn write_pair(dir: &Path, pki: &TestPki) -> TlsFiles {
    let (certificate, private_key) = pki.write_server_pair(dir);
    TlsFiles {
        certificate,
        private_key,
        client_ca: None,
    }
}

#[test]
fn the_certificate_reloads_when_its_files_change_and_a_bad_pair_is_an_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_pair(dir.path(), &TestPki::new("first CA"));
    let tls = ServerTls::load(files.clone()).unwrap();
    let (first, reload) = tls.current();
    assert_eq!(reload, Reload::Unchanged);

    let renewed = tempfile::tempdir().unwrap();
    let next = write_pair(renewed.path(), &TestPki::new("second CA"));
    for (from, to) in [
        (&next.certificate, &files.certificate),
        (&next.private_key, &files.private_key),
    ] {
        replace(to, &std::fs::read_to_string(from).unwrap());
    }
    let mut reloaded = None;
    eventually("the renewed pair is loaded", || {
        let (config, reload) = tls.current();
        if reload == Reload::Reloaded {
            reloaded = Some(config);
        }
        reloaded.is_some()
    });
    assert!(!Arc::ptr_eq(&first, &reloaded.unwrap()));

    let missing = TlsFiles {
        certificate: PathBuf::from("/nonexistent/tls.crt"),
        ..files
    };
    assert!(matches!(
        ServerTls::load(missing),
        Err(TlsError::Read { .. })
    ));
}
