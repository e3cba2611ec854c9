//! The `ws-proxy` binary: configuration errors, SIGTERM drain, and logs that never show a
//! token or the secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;

#[tokio::test]
async fn sigterm_drains_live_sessions_and_exits_0() {
    let upstream = KubevirtUpstream::start().await;
    let mut proxy = ProxyProcess::start(&upstream, &[("WS_PROXY_DRAIN_TIMEOUT", "20s")]);
    let path = format!("/{}/ubuntu", mint(&["ubuntu"]));
    let (mut client, _) = connect(proxy.addr, &path, "binary").await.unwrap();
    assert_eq!(next_data(&mut client).await, GREETING);
    echo_round_trip(&mut client, &pattern(10_000, 1)).await;

    proxy.send_sigterm();
    proxy.wait_for_line("SIGTERM received");
    proxy.wait_for_line("draining live sessions");
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "still accepting after SIGTERM"
    );
    echo_round_trip(&mut client, &pattern(10_000, 2)).await;
    client.close(None).await.unwrap();
    read_to_end(&mut client).await;

    let status = tokio::task::spawn_blocking(move || {
        let status = proxy.wait();
        (status, proxy.output())
    })
    .await
    .unwrap();
    assert!(
        status.0.success(),
        "exit {:?}; log:\n{}",
        status.0,
        status.1.join("\n")
    );
    assert!(status.1.iter().any(|line| line.contains("session ended")));
}

#[tokio::test]
async fn sessions_beyond_the_drain_timeout_get_1001_and_the_process_still_exits_0() {
    let upstream = KubevirtUpstream::start().await;
    let mut proxy = ProxyProcess::start(&upstream, &[("WS_PROXY_DRAIN_TIMEOUT", "200ms")]);
    let path = format!("/{}/ubuntu", mint(&["ubuntu"]));
    let (mut client, _) = connect(proxy.addr, &path, "").await.unwrap();
    assert_eq!(next_data(&mut client).await, GREETING);
    proxy.send_sigterm();
    assert_eq!(
        next_close(&mut client).await.map(|(code, _)| code),
        Some(1001)
    );
    read_to_end(&mut client).await;
    let status = tokio::task::spawn_blocking(move || proxy.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// Runs the binary with `env` only and returns its exit code and output.
fn run_with_env(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(BINARY)
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    (output.status.code(), text)
}

#[test]
fn bad_configuration_exits_2_with_one_clear_line_before_listening() {
    let dev = [
        ("LOCAL_DEV_MODE", "1"),
        ("PORT", "0"),
        ("HOST", "127.0.0.1"),
    ];
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            dev.to_vec(),
            "SECRET_KEY (or SECRET_KEY_FILE, public key files, a JWKS file or URL) is required",
        ),
        (
            vec![("SECRET_KEY", "s"), ("PORT", "0")],
            "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are required",
        ),
        (
            [dev.as_slice(), &[("SECRET_KEY", "s"), ("LOGLEVEL", "LOUD")]].concat(),
            "LOGLEVEL \"LOUD\" is not a Python level",
        ),
        (
            [
                dev.as_slice(),
                &[("SECRET_KEY_FILE", "/nonexistent/secret")],
            ]
            .concat(),
            "cannot read SECRET_KEY_FILE /nonexistent/secret",
        ),
        (
            [
                dev.as_slice(),
                &[("SECRET_KEY", "s"), ("WS_PROXY_ALGORITHMS", "HS999")],
            ]
            .concat(),
            "unknown JWT algorithm",
        ),
        (
            [
                dev.as_slice(),
                &[("SECRET_KEY", "s"), ("WS_REMOTE_URL", "ftp://x")],
            ]
            .concat(),
            "invalid WS_REMOTE_URL \"ftp://x\" (dev mode dials e.g. ws://localhost:8001",
        ),
        (
            [
                dev.as_slice(),
                &[("SECRET_KEY", "s"), ("WS_REMOTE_URL", "localhost:8001")],
            ]
            .concat(),
            "invalid WS_REMOTE_URL \"localhost:8001\"",
        ),
        (
            [dev.as_slice(), &[("SECRET_KEY", "")]].concat(),
            "SECRET_KEY is empty",
        ),
        (
            [
                dev.as_slice(),
                &[
                    ("SECRET_KEY", "s"),
                    ("WS_PROXY_TLS_CERT_FILE", "/nonexistent/tls.crt"),
                ],
            ]
            .concat(),
            "WS_PROXY_TLS_CERT_FILE and WS_PROXY_TLS_KEY_FILE go together",
        ),
        (
            [
                dev.as_slice(),
                &[
                    ("SECRET_KEY", "s"),
                    ("WS_PROXY_TLS_CERT_FILE", "/nonexistent/tls.crt"),
                    ("WS_PROXY_TLS_KEY_FILE", "/nonexistent/tls.key"),
                ],
            ]
            .concat(),
            "cannot serve TLS: cannot read the TLS certificate file /nonexistent/tls.crt",
        ),
    ];
    for (env, expected) in cases {
        let (code, output) = run_with_env(&env, &[]);
        assert_eq!(code, Some(2), "{env:?}: {output}");
        assert_eq!(output.lines().count(), 1, "{env:?}: {output}");
        assert!(output.starts_with("ws-proxy: error: "), "{output}");
        assert!(output.contains(expected), "{env:?}: {output}");
        assert!(!output.contains("listening"), "{output}");
    }

    // Values clap rejects (strtobool words, ports) are exit 2 too, naming the setting.
    // A value from the environment names the variable; one from a flag does not.
    let (code, output) = run_with_env(&[("LOCAL_DEV_MODE", "maybe"), ("SECRET_KEY", "s")], &[]);
    assert_eq!(code, Some(2), "{output}");
    let first = output.lines().next().unwrap();
    assert!(first.contains("local-dev-mode"), "{output}");
    assert!(
        first.contains("from the environment variable LOCAL_DEV_MODE"),
        "{output}"
    );
    let (code, output) = run_with_env(&[("PORT", "http"), ("SECRET_KEY", "s")], &[]);
    assert_eq!(code, Some(2));
    assert!(
        output.contains("from the environment variable PORT"),
        "{output}"
    );
    let (code, output) = run_with_env(&[("SECRET_KEY", "s")], &["--local-dev-mode=maybe"]);
    assert_eq!(code, Some(2));
    assert!(!output.contains("environment variable"), "{output}");
}

#[test]
fn a_port_in_use_is_a_setting_to_change_said_once_with_exit_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, output) = run_with_env(
        &[
            ("LOCAL_DEV_MODE", "1"),
            ("HOST", "127.0.0.1"),
            ("PORT", &port),
            ("SECRET_KEY", "s"),
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{output}");
    assert_eq!(output.lines().count(), 1, "{output}");
    assert!(
        output.starts_with(&format!(
            "ws-proxy: error: cannot listen on 127.0.0.1:{port}: "
        )),
        "{output}"
    );
    assert!(output.contains("change HOST and PORT"), "{output}");
}

#[test]
fn help_groups_the_settings_by_topic() {
    let (code, help) = run_with_env(&[], &["--help"]);
    assert_eq!(code, Some(0));
    let headings = [
        "Listener and refusals:",
        "Console tokens:",
        "Upstream (KubeVirt API server):",
        "Limits, timers and drain:",
        "Logging:",
    ];
    let positions: Vec<usize> = headings
        .iter()
        .map(|heading| help.find(heading).unwrap_or_else(|| panic!("no {heading}")))
        .collect();
    assert!(positions.is_sorted(), "{positions:?}");
    // What must be set comes first, with an example.
    assert!(help.starts_with("Set a token key: SECRET_KEY"), "{help}");
    assert!(help.find("Example: SECRET_KEY=").unwrap() < positions[0]);
    // Each setting sits under its topic.
    let under = |flag: &str| {
        let at = help.find(&format!("{flag} <")).unwrap();
        headings
            .iter()
            .zip(&positions)
            .rev()
            .find(|(_, start)| **start < at)
            .map(|(heading, _)| *heading)
    };
    assert_eq!(under("--secret-key-file"), Some("Console tokens:"));
    assert_eq!(under("--ca-file"), Some("Upstream (KubeVirt API server):"));
    assert_eq!(under("--drain-timeout"), Some("Limits, timers and drain:"));
    assert_eq!(under("--log-format"), Some("Logging:"));
}

#[test]
fn help_documents_every_environment_variable() {
    let (code, help) = run_with_env(&[], &["--help"]);
    assert_eq!(code, Some(0));
    for name in [
        "SECRET_KEY",
        "SECRET_KEY_FILE",
        "LOCAL_DEV_MODE",
        "HOST",
        "PORT",
        "HOST_PATH_PREFIX",
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
        "WS_REMOTE_URL",
        "LOGLEVEL",
        "WS_PROXY_PUBLIC_KEY_FILES",
        "WS_PROXY_ALGORITHMS",
        "WS_PROXY_REJECT_STYLE",
        "WS_PROXY_ADMIN_ADDR",
        "WS_PROXY_MAX_SESSIONS",
        "WS_PROXY_DRAIN_TIMEOUT",
        "WS_PROXY_CLOSE_ON_TOKEN_EXPIRY",
        "WS_PROXY_LOG_FORMAT",
        "WS_PROXY_TLS_CERT_FILE",
        "WS_PROXY_TLS_KEY_FILE",
        "WS_PROXY_TLS_CLIENT_CA_FILE",
        "WS_PROXY_TOKEN_SOURCES",
        "WS_PROXY_TOKEN_COOKIE",
        "WS_PROXY_TOKEN_QUERY_PARAM",
        "WS_PROXY_ALLOWED_ORIGINS",
        "WS_PROXY_SINGLE_USE_TOKENS",
        "WS_PROXY_JWKS_FILE",
        "WS_PROXY_JWKS_URL",
        "WS_PROXY_JWKS_CA_FILE",
        "WS_PROXY_JWKS_REFRESH_INTERVAL",
        "WS_PROXY_JWKS_MIN_REFETCH_INTERVAL",
        "WS_PROXY_RECORD_DIR",
        "WS_PROXY_RECORD",
        "WS_PROXY_RECORD_MAX_BYTES",
        "WS_PROXY_RECORD_MIN_FREE_BYTES",
        "WS_PROXY_RECORD_STRICT",
        "WS_PROXY_RECORD_CLIENT_INPUT",
    ] {
        assert!(
            help.contains(&format!("[env: {name}")),
            "--help lacks {name}"
        );
    }
}

/// Drives one happy session and several refusals whose URLs carry tokens, then stops the
/// process and returns everything it logged.
async fn logged_lines_of_a_busy_proxy(extra: &[(&str, &str)]) -> (Vec<String>, Vec<String>) {
    let upstream = KubevirtUpstream::start().await;
    let mut proxy = ProxyProcess::start(&upstream, extra);
    let good = mint(&["ubuntu"]);
    let wrong_secret = fixture_token("hs256_wrong_secret");
    let not_allowed = fixture_token("hs256_vm_not_allowed");

    let (mut client, _) = connect(
        proxy.addr,
        &format!("/{good}/ubuntu?token={good}"),
        "binary",
    )
    .await
    .unwrap();
    assert_eq!(next_data(&mut client).await, GREETING);
    echo_round_trip(&mut client, b"hello").await;
    client.close(None).await.unwrap();
    read_to_end(&mut client).await;

    // The same token out of the URL: the bearer subprotocol and the Authorization header.
    let encoded = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&good)
    };
    for (name, value) in [
        (
            "sec-websocket-protocol",
            format!("binary, base64url.bearer.authorization.k8s.io.{encoded}"),
        ),
        ("authorization", format!("Bearer {good}")),
    ] {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = format!("ws://{}/ubuntu", proxy.addr)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            name,
            tokio_tungstenite::tungstenite::http::HeaderValue::from_str(&value).unwrap(),
        );
        let (mut client, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(next_data(&mut client).await, GREETING);
        client.close(None).await.unwrap();
        read_to_end(&mut client).await;
    }

    for path in [
        format!("/{wrong_secret}/ubuntu"),
        format!("/{not_allowed}/manjaro"),
        format!("/{good}"),
        format!("/x/{good}/ubuntu/extra"),
        format!("/{good}/{VM_MISSING}"),
    ] {
        let (status, _) = upgrade_request(proxy.addr, &path).await;
        assert!(status >= 400, "{path} was not refused");
    }
    let (status, _) = get(proxy.addr, &format!("/{good}/ubuntu")).await;
    assert_eq!(status, 400);

    proxy.send_sigterm();
    let lines = tokio::task::spawn_blocking(move || {
        assert!(proxy.wait().success());
        proxy.output()
    })
    .await
    .unwrap();
    (lines, vec![good, wrong_secret, not_allowed, encoded])
}

/// Asserts that no line holds the secret, a token or any token's payload or signature part.
fn assert_nothing_secret(lines: &[String], tokens: &[String]) {
    let mut forbidden = vec![SECRET.to_owned()];
    for token in tokens {
        forbidden.push(token.clone());
        forbidden.extend(token.split('.').skip(1).map(str::to_owned));
    }
    for line in lines {
        for secret in &forbidden {
            assert!(
                !line.contains(secret.as_str()),
                "secret material logged: {line}"
            );
        }
    }
}

#[tokio::test]
async fn debug_logs_never_contain_a_token_or_the_secret() {
    let (lines, tokens) = logged_lines_of_a_busy_proxy(&[("LOGLEVEL", "DEBUG")]).await;
    assert_nothing_secret(&lines, &tokens);
    let all = lines.join("\n");
    for expected in [
        "DEBUG",
        "session started",
        "session ended",
        "request refused",
        "/<redacted>/ubuntu",
        "token_source=\"subprotocol\"",
        "token_source=\"header\"",
        // The refused tokens' problems, named on the refusal line (never the token).
        "detail=\"bad_signature\"",
        "detail=\"vm_not_allowed\"",
    ] {
        assert!(all.contains(expected), "no {expected:?} in the log:\n{all}");
    }
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_session_fields() {
    let (lines, tokens) =
        logged_lines_of_a_busy_proxy(&[("LOGLEVEL", "10"), ("WS_PROXY_LOG_FORMAT", "json")]).await;
    assert_nothing_secret(&lines, &tokens);
    let records: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let ended = records
        .iter()
        .find(|r| r["fields"]["message"] == "session ended")
        .expect("no session ended record");
    assert_eq!(ended["span"]["user_id"], "5");
    assert_eq!(ended["span"]["lab_instance"], "9");
    assert_eq!(ended["span"]["namespace"], NAMESPACE);
    assert_eq!(ended["span"]["vmi"], "ubuntu");
    assert_eq!(ended["fields"]["client_to_upstream_bytes"], 5);
    assert_eq!(
        ended["fields"]["upstream_to_client_bytes"],
        GREETING.len() + 5
    );
}

#[tokio::test]
async fn a_secret_file_and_pem_public_keys_verify_their_tokens() {
    let directory = tempfile::tempdir().unwrap();
    let secret_file = directory.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let public_key = directory.path().join("rsa.pub.pem");
    std::fs::write(&public_key, include_str!("fixtures/rsa.pub.pem")).unwrap();

    let upstream = KubevirtUpstream::start().await;
    let proxy = ProxyProcess::start_with(
        &upstream,
        &[
            ("SECRET_KEY_FILE", secret_file.to_str().unwrap()),
            ("WS_PROXY_PUBLIC_KEY_FILES", public_key.to_str().unwrap()),
            ("WS_PROXY_ALGORITHMS", "HS256,RS256"),
        ],
    );
    for fixture in ["hs256_valid", "rs256_valid"] {
        let path = format!("/{}/ubuntu", fixture_token(fixture));
        let (mut client, _) = connect(proxy.addr, &path, "").await.unwrap();
        assert_eq!(next_data(&mut client).await, GREETING, "{fixture}");
        client.close(None).await.unwrap();
        read_to_end(&mut client).await;
    }
    let forged = format!("/{}/ubuntu", fixture_token("hs256_wrong_secret"));
    assert_eq!(upgrade_request(proxy.addr, &forged).await.0, 401);
    proxy.stop_with_sigterm().await;
}

#[tokio::test]
async fn a_jwks_file_verifies_tokens_by_their_kid() {
    use base64::Engine as _;
    let encode = |secret: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let (old, new) = (
        "november-secret-of-the-lab-jwks",
        "december-secret-of-the-lab-jwks",
    );
    let directory = tempfile::tempdir().unwrap();
    let jwks_file = directory.path().join("jwks.json");
    let jwks = serde_json::json!({"keys": [
        {"kty": "oct", "kid": "2026-11", "k": encode(old)},
        {"kty": "oct", "kid": "2026-12", "k": encode(new)},
    ]});
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    let upstream = KubevirtUpstream::start().await;
    let proxy = ProxyProcess::start_with(
        &upstream,
        &[("WS_PROXY_JWKS_FILE", jwks_file.to_str().unwrap())],
    );
    for (secret, kid) in [(old, "2026-11"), (new, "2026-12")] {
        let path = format!("/{}/ubuntu", token_with_kid(secret, kid));
        let (mut client, _) = connect(proxy.addr, &path, "").await.unwrap();
        assert_eq!(next_data(&mut client).await, GREETING, "{kid}");
        client.close(None).await.unwrap();
        read_to_end(&mut client).await;
    }
    let wrong_key = format!("/{}/ubuntu", token_with_kid(old, "2026-12"));
    assert_eq!(upgrade_request(proxy.addr, &wrong_key).await.0, 401);
    proxy.stop_with_sigterm().await;
}

/// A console token for `ubuntu` signed HS256 with `secret`, naming `kid` in its header (none
/// when empty).
fn token_with_kid(secret: &str, kid: &str) -> String {
    let lab = proxy_auth::LabInstance::new(1, 9, NAMESPACE, ["ubuntu"]);
    let claims = proxy_auth::Claims {
        id: 5.into(),
        exp: proxy_auth::NumericDate::from_system_time(
            std::time::SystemTime::now() + Duration::from_secs(600),
        ),
        lab_instance: lab,
        other: serde_json::Map::new(),
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = (!kid.is_empty()).then(|| kid.to_owned());
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// A JWK Set of HS secrets by `kid`.
fn hs_jwks(keys: &[(&str, &str)]) -> String {
    use base64::Engine as _;
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|(kid, secret)| {
            serde_json::json!({
                "kty": "oct",
                "kid": kid,
                "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
            })
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

/// 101 (a console for `ubuntu` opened with a token signed by `secret` under `kid`, then closed
/// again) or the refusal's status.
async fn console_status(addr: SocketAddr, secret: &str, kid: &str) -> u16 {
    let path = format!("/{}/ubuntu", token_with_kid(secret, kid));
    match connect(addr, &path, "").await {
        Ok((mut client, _)) => {
            client.close(None).await.unwrap();
            read_to_end(&mut client).await;
            101
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected {other}"),
    }
}

/// Polls (bounded) until `check` gives `wanted`.
async fn until<F, Fut>(wanted: u16, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    tokio::time::timeout(Duration::from_secs(15), async {
        while check().await != wanted {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the new keys were not picked up in time");
}

/// Polls (bounded) `/metrics` until it contains `wanted`, and returns it.
async fn metrics_with(addr: SocketAddr, wanted: &str) -> String {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let (_, text) = get(addr, "/metrics").await;
            if text.contains(wanted) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {wanted:?} in the metrics in time"))
}

#[tokio::test]
async fn a_rewritten_jwks_file_rotates_keys_without_a_restart() {
    let (old, new) = (
        "november-secret-of-the-lab-jwks",
        "december-secret-of-the-lab-jwks",
    );
    let directory = tempfile::tempdir().unwrap();
    let jwks_file = directory.path().join("jwks.json");
    std::fs::write(&jwks_file, hs_jwks(&[("2026-11", old)])).unwrap();
    let upstream = KubevirtUpstream::start().await;
    let proxy = ProxyProcess::start_with(
        &upstream,
        &[("WS_PROXY_JWKS_FILE", jwks_file.to_str().unwrap())],
    );
    let addr = proxy.addr;
    let status_of = |secret, kid| console_status(addr, secret, kid);
    assert_eq!(status_of(old, "2026-11").await, 101);
    assert_eq!(status_of(new, "2026-12").await, 401);

    // The new key is added beside the old one, the way a Secret volume updates (rename).
    let staged = directory.path().join("jwks.json.new");
    std::fs::write(&staged, hs_jwks(&[("2026-11", old), ("2026-12", new)])).unwrap();
    std::fs::rename(&staged, &jwks_file).unwrap();
    until(101, || status_of(new, "2026-12")).await;
    assert_eq!(status_of(old, "2026-11").await, 101);

    // A broken update keeps the last good keys.
    std::fs::write(&jwks_file, "{\"keys\": [{\"kty\": \"oct\"").unwrap();
    let metrics = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let _ = status_of(new, "2026-12").await;
            let (_, text) = get(proxy.addr, "/metrics").await;
            if text.contains("ws_proxy_key_reloads_total{result=\"failed\"} 1") {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the failed reload was not counted");
    assert!(
        metrics.contains("ws_proxy_key_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ws_proxy_keys_loaded 2"), "{metrics}");
    assert_eq!(status_of(new, "2026-12").await, 101);

    // The old key is removed: its tokens are refused.
    std::fs::write(&staged, hs_jwks(&[("2026-12", new)])).unwrap();
    std::fs::rename(&staged, &jwks_file).unwrap();
    until(401, || status_of(old, "2026-11")).await;
    assert_eq!(status_of(new, "2026-12").await, 101);

    proxy.stop_with_sigterm().await;
}

/// A JWK Set served over HTTPS on loopback by a test CA, and the proxy's settings for it.
struct JwksEndpoint {
    server: test_support::https_file::HttpsFileServer,
    _directory: tempfile::TempDir,
    ca_file: String,
}

impl JwksEndpoint {
    fn serving(body: &str) -> Self {
        let pki = test_support::TestPki::new("jwks test CA");
        let directory = tempfile::tempdir().unwrap();
        let ca_file = pki.write_ca(directory.path()).to_str().unwrap().to_owned();
        Self {
            server: test_support::https_file::HttpsFileServer::start(&pki, body),
            _directory: directory,
            ca_file,
        }
    }

    fn url(&self) -> String {
        self.server.url("/.well-known/jwks.json")
    }
}

#[tokio::test]
async fn a_jwks_url_is_fetched_again_for_an_unknown_kid_at_most_once_per_interval() {
    let (old, new) = (
        "november-secret-of-the-lab-jwks",
        "december-secret-of-the-lab-jwks",
    );
    let endpoint = JwksEndpoint::serving(&hs_jwks(&[("2026-11", old)]));
    let upstream = KubevirtUpstream::start().await;
    let url = endpoint.url();
    let proxy = ProxyProcess::start_with(
        &upstream,
        &[
            ("WS_PROXY_JWKS_URL", url.as_str()),
            ("WS_PROXY_JWKS_CA_FILE", endpoint.ca_file.as_str()),
            // Only an unknown kid fetches again in this test, and only once.
            ("WS_PROXY_JWKS_REFRESH_INTERVAL", "1h"),
            ("WS_PROXY_JWKS_MIN_REFETCH_INTERVAL", "1h"),
        ],
    );
    assert_eq!(endpoint.server.requests(), 1, "fetched once at start");
    let addr = proxy.addr;
    assert_eq!(console_status(addr, old, "2026-11").await, 101);

    // The backend publishes a new key and signs with it at once: the first token that names
    // it waits for a fetch and opens its console.
    endpoint
        .server
        .set_body(&hs_jwks(&[("2026-11", old), ("2026-12", new)]));
    assert_eq!(console_status(addr, new, "2026-12").await, 101);
    assert_eq!(endpoint.server.requests(), 2);

    // Tokens naming ids nobody has do not make the proxy fetch again within the interval.
    for _ in 0..5 {
        assert_eq!(console_status(addr, new, "2027-01").await, 401);
    }
    assert_eq!(endpoint.server.requests(), 2);
    let metrics = metrics_with(addr, "ws_proxy_keys_loaded 2").await;
    assert!(
        metrics.contains("ws_proxy_key_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        proxy
            .output()
            .iter()
            .any(|line| line.contains("token keys reloaded") && line.contains("2026-11,2026-12")),
        "{:?}",
        proxy.output()
    );

    proxy.stop_with_sigterm().await;
}

#[tokio::test]
async fn a_jwks_url_rotates_on_its_interval_and_a_bad_set_keeps_the_last_good_keys() {
    let (old, new) = (
        "november-secret-of-the-lab-jwks",
        "december-secret-of-the-lab-jwks",
    );
    let endpoint = JwksEndpoint::serving(&hs_jwks(&[("2026-11", old)]));
    let upstream = KubevirtUpstream::start().await;
    let url = endpoint.url();
    let proxy = ProxyProcess::start_with(
        &upstream,
        &[
            ("WS_PROXY_JWKS_URL", url.as_str()),
            ("WS_PROXY_JWKS_CA_FILE", endpoint.ca_file.as_str()),
            ("WS_PROXY_JWKS_REFRESH_INTERVAL", "200ms"),
            ("WS_PROXY_JWKS_MIN_REFETCH_INTERVAL", "1h"),
        ],
    );
    let addr = proxy.addr;
    // An open console survives every rotation below.
    let path = format!("/{}/ubuntu", token_with_kid(old, "2026-11"));
    let (mut open_console, _) = connect(addr, &path, "").await.unwrap();
    assert_eq!(next_data(&mut open_console).await, GREETING);

    // A key without a kid is added: only the interval can bring it (no kid to be unknown).
    endpoint
        .server
        .set_body(&hs_jwks(&[("2026-11", old)]).replace(
            "]}",
            &format!(
                ",{{\"kty\":\"oct\",\"k\":\"{}\"}}]}}",
                base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, new)
            ),
        ));
    until(101, || console_status(addr, new, "")).await;

    // A broken set and a failing server keep the last good keys, and are counted.
    endpoint.server.set_body("{\"keys\": [{\"kty\": \"oct\"");
    metrics_with(addr, "ws_proxy_key_reloads_total{result=\"failed\"}").await;
    endpoint.server.set(503, "unavailable");
    let failures_before = endpoint.server.requests();
    until(1, || async {
        u16::from(endpoint.server.requests() > failures_before + 1)
    })
    .await;
    assert_eq!(console_status(addr, old, "2026-11").await, 101);
    assert_eq!(console_status(addr, new, "").await, 101);
    assert!(
        proxy
            .output()
            .iter()
            .any(|line| line.contains("cannot fetch the JWK Set") && line.contains("503")),
        "{:?}",
        proxy.output()
    );

    // The old key is withdrawn: its tokens are refused; the open console goes on.
    endpoint.server.set_body(&hs_jwks(&[("2026-12", new)]));
    until(401, || console_status(addr, old, "2026-11")).await;
    assert_eq!(console_status(addr, new, "2026-12").await, 101);
    echo_round_trip(&mut open_console, &pattern(1000, 3)).await;
    open_console.close(None).await.unwrap();
    read_to_end(&mut open_console).await;

    proxy.stop_with_sigterm().await;
}

#[test]
fn a_jwks_url_that_cannot_be_fetched_at_start_is_a_configuration_error() {
    let endpoint = JwksEndpoint::serving("not found");
    endpoint.server.set(404, "not found");
    let url = endpoint.url();
    let base = [
        ("LOCAL_DEV_MODE", "1"),
        ("PORT", "0"),
        ("HOST", "127.0.0.1"),
        ("WS_PROXY_JWKS_URL", url.as_str()),
    ];
    // The server's certificate is not from a CA the system trusts.
    let (code, text) = run_with_env(&base, &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("cannot fetch the JWK Set from https://127.0.0.1:"),
        "{text}"
    );
    // With the right CA, the server's answer is the reason.
    let with_ca = [
        base.as_slice(),
        &[("WS_PROXY_JWKS_CA_FILE", endpoint.ca_file.as_str())],
    ]
    .concat();
    let (code, text) = run_with_env(&with_ca, &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("the JWK Set URL answered 404"), "{text}");
    let (code, text) = run_with_env(
        &[
            ("LOCAL_DEV_MODE", "1"),
            ("WS_PROXY_JWKS_URL", "http://127.0.0.1/jwks.json"),
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("must start with https://"), "{text}");
}

#[tokio::test]
async fn the_binary_records_sessions_that_ask_and_filters_observers() {
    let upstream = KubevirtUpstream::start().await;
    let directory = tempfile::tempdir().unwrap();
    let record_dir = directory.path().to_str().unwrap().to_owned();
    let proxy = ProxyProcess::start(
        &upstream,
        &[
            ("WS_PROXY_RECORD_DIR", record_dir.as_str()),
            ("WS_PROXY_RECORD", "token"),
            ("WS_PROXY_RECORD_MIN_FREE_BYTES", "0"),
        ],
    );
    let observer = proxy_auth::ConsoleAccess {
        role: proxy_auth::ConsoleRole::Observer,
        record: true,
    };
    let token = console_token(VM_DESKTOP, Some(observer));
    let mut watcher = RfbClient::open_vm(proxy.addr, &token, VM_DESKTOP).await;
    let (width, height) = watcher.handshake().await;
    watcher.type_and_click("reboot").await;
    assert!(watcher.full_update(width, height).await > 4);
    watcher.close().await;
    let console = upstream.sim.console(VM_DESKTOP).unwrap();
    assert_eq!(console.typed_text(), "");

    let recording = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let closed: Vec<_> = std::fs::read_dir(directory.path())
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| {
                    std::fs::read_to_string(path).is_ok_and(|text| text.ends_with("'EOF'];\n"))
                })
                .collect();
            if let [one] = closed.as_slice() {
                return one.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("no closed recording");
    let name = recording.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.ends_with(&format!("-{NAMESPACE}-{VM_DESKTOP}.js")),
        "{name}"
    );
    assert!(!name.contains(&token));
    let lines = proxy.output().join("\n");
    assert!(lines.contains("recording the session"), "{lines}");
    assert!(lines.contains("observer session"), "{lines}");
    assert!(lines.contains("recording Token sessions into"), "{lines}");
    assert!(!lines.contains(&token));
    proxy.stop_with_sigterm().await;
}
