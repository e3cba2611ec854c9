//! The operators' controls through the real binary with the embedded store: the admin API
//! (auth, listing and filters, closing by id and in bulk, revocations), per-user, per-lab-
//! instance and per-VM limits, and the audit log lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::json;

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// A proxy with the admin API on (its token in a temporary file) and `extra` environment.
struct Operated {
    proxy: ProxyProcess,
    admin: SocketAddr,
    token_file: tempfile::NamedTempFile,
}

impl Operated {
    fn start(upstream: &KubevirtUpstream, extra: &[(&str, &str)]) -> Self {
        let token_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(token_file.path(), format!("{ADMIN_TOKEN}\n")).unwrap();
        let path = token_file.path().to_str().unwrap().to_owned();
        let env = [
            [
                ("WS_PROXY_ADMIN_ADDR", "127.0.0.1:0"),
                ("WS_PROXY_ADMIN_TOKEN_FILE", path.as_str()),
                ("WS_PROXY_REPLICA_NAME", "replica-a"),
                ("WS_PROXY_DRAIN_TIMEOUT", "500ms"),
            ]
            .as_slice(),
            extra,
        ]
        .concat();
        let mut proxy = ProxyProcess::start(upstream, &env);
        let admin = proxy.admin_addr();
        Self {
            proxy,
            admin,
            token_file,
        }
    }

    async fn api(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> ApiAnswer {
        admin_api(self.admin, method, path, ADMIN_TOKEN, body).await
    }

    async fn sessions(&self, query: &str) -> Vec<serde_json::Value> {
        let answer = self
            .api("GET", &format!("/api/v1/sessions{query}"), None)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.raw);
        answer.json["sessions"].as_array().unwrap().clone()
    }
}

async fn open_console(addr: SocketAddr, token: &str, vm: &str) -> Client {
    let (mut client, _) = connect(addr, &format!("/{token}/{vm}"), "binary")
        .await
        .unwrap();
    assert_eq!(next_data(&mut client).await, GREETING);
    client
}

#[tokio::test]
async fn the_api_needs_the_admin_token_and_stays_off_the_console_port() {
    let upstream = KubevirtUpstream::start().await;
    let operated = Operated::start(&upstream, &[]);
    let admin = operated.admin;
    for token in ["", "wrong-token-0123456789"] {
        let answer = admin_api(admin, "GET", "/api/v1/sessions", token, None).await;
        assert_eq!(answer.status, 401, "{}", answer.raw);
        assert!(answer.raw.contains("WWW-Authenticate: Bearer"));
        assert_eq!(
            answer.json["error"],
            "a valid admin bearer token is required"
        );
    }
    assert_eq!(
        operated.api("GET", "/api/v1/sessions", None).await.status,
        200
    );
    // The contract is served without credentials; the console port knows no API.
    let document = admin_api(admin, "GET", "/api/v1/openapi.json", "", None).await;
    assert_eq!(document.status, 200);
    assert_eq!(document.json["openapi"], "3.0.3");
    let console_port = admin_api(
        operated.proxy.addr,
        "GET",
        "/api/v1/sessions",
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_ne!(console_port.status, 200);
    assert_eq!(
        operated.api("PUT", "/api/v1/sessions", None).await.status,
        405
    );
    assert_eq!(
        operated.api("GET", "/api/v1/nothing", None).await.status,
        404
    );
    // The token file is re-read when it changes (a rotated Secret); a short token is refused
    // and the last good one stays.
    let rotated = "rotated-admin-token-abcdef0123456789";
    let staged = operated.token_file.path().with_extension("new");
    std::fs::write(&staged, rotated).unwrap();
    std::fs::rename(&staged, operated.token_file.path()).unwrap();
    let mut switched = false;
    for _ in 0..30 {
        if admin_api(admin, "GET", "/api/v1/sessions", rotated, None)
            .await
            .status
            == 200
        {
            switched = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(switched, "the rotated admin token was not picked up");
    assert_eq!(
        operated.api("GET", "/api/v1/sessions", None).await.status,
        401
    );
    std::fs::write(operated.token_file.path(), "short").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        admin_api(admin, "GET", "/api/v1/sessions", rotated, None)
            .await
            .status,
        200
    );
    let refused_lines = operated.proxy.output();
    assert!(
        refused_lines
            .iter()
            .any(|line| line.contains("admin API request without a valid admin token"))
    );
    assert!(!refused_lines.iter().any(|line| line.contains(ADMIN_TOKEN)));
    operated.proxy.stop_with_sigterm().await;
}

#[tokio::test]
async fn the_admin_token_file_needs_the_admin_listener() {
    let upstream = KubevirtUpstream::start().await;
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), ADMIN_TOKEN).unwrap();
    let output = std::process::Command::new(BINARY)
        .env_clear()
        .env("SECRET_KEY", SECRET)
        .env("LOCAL_DEV_MODE", "yes")
        .env("WS_REMOTE_URL", upstream.url())
        .env("WS_PROXY_ADMIN_TOKEN_FILE", token_file.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs WS_PROXY_ADMIN_ADDR"), "{stderr}");
}

#[tokio::test]
async fn sessions_are_listed_with_filters_and_live_counters() {
    let upstream = KubevirtUpstream::start().await;
    let operated = Operated::start(&upstream, &[]);
    let addr = operated.proxy.addr;
    let mut first = open_console(addr, &mint_for(5, 9, &["ubuntu"], None), "ubuntu").await;
    let _second = open_console(addr, &mint_for(6, 10, &["kali"], None), "kali").await;
    echo_round_trip(&mut first, &pattern(1000, 3)).await;

    let all = operated.sessions("").await;
    assert_eq!(all.len(), 2, "{all:?}");
    let by_user = operated.sessions("?user_id=5").await;
    assert_eq!(by_user.len(), 1);
    let session = &by_user[0];
    assert_eq!(session["user_id"], "5");
    assert_eq!(session["lab_instance_id"], "9");
    assert_eq!(session["namespace"], NAMESPACE);
    assert_eq!(session["vmi"], "ubuntu");
    assert_eq!(session["replica"], "replica-a");
    assert_eq!(session["role"], "control");
    assert_eq!(session["client_subprotocol"], "binary");
    assert_eq!(session["client_to_upstream_bytes"], 1000);
    assert!(session["upstream_to_client_bytes"].as_u64().unwrap() >= 1000 + GREETING.len() as u64);
    assert!(session["id"].as_str().unwrap().starts_with("replica-a."));
    assert_eq!(
        operated
            .sessions("?lab_instance_id=10&vmi=kali")
            .await
            .len(),
        1
    );
    assert_eq!(operated.sessions("?namespace=other").await.len(), 0);
    let id = session["id"].as_str().unwrap();
    let one = operated
        .api("GET", &format!("/api/v1/sessions/{id}"), None)
        .await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json["vmi"], "ubuntu");
    operated.proxy.stop_with_sigterm().await;
}

#[tokio::test]
async fn an_operator_closes_one_session_or_many_with_a_reason() {
    let upstream = KubevirtUpstream::start().await;
    let mut operated = Operated::start(&upstream, &[]);
    let addr = operated.proxy.addr;
    let mut student = open_console(addr, &mint_for(5, 9, &["ubuntu"], None), "ubuntu").await;
    let mut other = open_console(addr, &mint_for(6, 9, &["kali"], None), "kali").await;
    let mut third = open_console(addr, &mint_for(7, 11, &["manjaro"], None), "manjaro").await;

    let id = operated.sessions("?user_id=5").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let closed = operated
        .api(
            "DELETE",
            &format!("/api/v1/sessions/{id}?reason=exam%20over&by=alice"),
            None,
        )
        .await;
    assert_eq!(closed.status, 200, "{}", closed.raw);
    assert_eq!(closed.json["closed"], json!([id]));
    assert_eq!(
        next_close(&mut student).await,
        Some((4410, "closed by operator: exam over".to_owned()))
    );
    // The others go on; the VM got a normal close.
    echo_round_trip(&mut other, b"still here").await;
    // Listed until its closing handshake is over; then it is gone.
    read_to_end(&mut student).await;
    for _ in 0..100 {
        if operated.sessions("?user_id=5").await.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        operated.sessions("?user_id=5").await.is_empty(),
        "{}",
        operated.proxy.output().join("\n")
    );
    let missing = operated
        .api("DELETE", &format!("/api/v1/sessions/{id}"), None)
        .await;
    assert_eq!(missing.status, 404);

    // Bulk: everyone in lab instance 9 (only user 6 is left there).
    let refused = operated
        .api("POST", "/api/v1/sessions/close", Some(json!({})))
        .await;
    assert_eq!(
        refused.status, 400,
        "an empty filter without all=true closes nothing"
    );
    let bulk = operated
        .api(
            "POST",
            "/api/v1/sessions/close",
            Some(json!({"filter": {"lab_instance_id": "9"}, "reason": "lab removed", "by": "bob"})),
        )
        .await;
    assert_eq!(bulk.status, 200, "{}", bulk.raw);
    assert_eq!(bulk.json["closed"].as_array().unwrap().len(), 1);
    assert_eq!(
        next_close(&mut other).await,
        Some((4410, "closed by operator: lab removed".to_owned()))
    );
    echo_round_trip(&mut third, b"unaffected").await;
    let audit = operated
        .proxy
        .wait_for_line("session closed by an operator");
    assert!(audit.contains("alice") || audit.contains("bob"), "{audit}");
    operated.proxy.wait_for_line("operator_closed");
    assert!(
        upstream.closes().iter().any(|close| close
            .as_ref()
            .is_some_and(|(code, reason)| *code == 1000 && reason == "closed by operator")),
        "{:?}",
        upstream.closes()
    );
    let metrics = get(operated.admin, "/metrics").await.1;
    assert!(
        metrics.contains("ws_proxy_operator_closed_sessions_total{by=\"close\"} 2"),
        "{metrics}"
    );
    operated.proxy.stop_with_sigterm().await;
}

#[tokio::test]
async fn revocations_close_live_sessions_and_refuse_new_ones_until_lifted() {
    let upstream = KubevirtUpstream::start().await;
    let operated = Operated::start(&upstream, &[]);
    let addr = operated.proxy.addr;
    let user_token = mint_for(6, 10, &["kali"], None);
    let mut revoked = open_console(addr, &user_token, "kali").await;
    let mut kept = open_console(addr, &mint_for(5, 9, &["ubuntu"], None), "ubuntu").await;

    let answer = operated
        .api(
            "POST",
            "/api/v1/revocations",
            Some(json!({"user_id": "6", "reason": "account compromised", "by": "carol"})),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.raw);
    assert_eq!(answer.json["revocation"]["user_id"], "6");
    assert_eq!(
        next_close(&mut revoked).await,
        Some((4401, "token revoked: account compromised".to_owned()))
    );
    echo_round_trip(&mut kept, b"not revoked").await;
    assert_eq!(
        refused(addr, &format!("/{user_token}/kali"), "").await,
        (401, "token revoked".to_owned())
    );

    // By jti: only that token; the id is kept as a hash.
    let jti_token = mint_for(8, 12, &["manjaro"], Some("token-42"));
    let by_jti = operated
        .api(
            "POST",
            "/api/v1/revocations",
            Some(json!({"jti": "token-42"})),
        )
        .await;
    assert_eq!(by_jti.status, 201);
    assert_eq!(
        by_jti.json["revocation"]["jti_sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    assert!(!by_jti.raw.contains("token-42"));
    assert_eq!(
        refused(addr, &format!("/{jti_token}/manjaro"), "").await,
        (401, "token revoked".to_owned())
    );
    open_console(
        addr,
        &mint_for(8, 12, &["manjaro"], Some("token-43")),
        "manjaro",
    )
    .await;

    let listed = operated.api("GET", "/api/v1/revocations", None).await;
    assert_eq!(listed.json["revocations"].as_array().unwrap().len(), 2);
    let bad = operated
        .api(
            "POST",
            "/api/v1/revocations",
            Some(json!({"user_id": "6", "jti": "x"})),
        )
        .await;
    assert_eq!(bad.status, 400);
    let past = operated
        .api(
            "POST",
            "/api/v1/revocations",
            Some(json!({"user_id": "6", "duration_seconds": 0})),
        )
        .await;
    assert_eq!(past.status, 400);

    let lifted = operated
        .api("DELETE", "/api/v1/revocations/user_id/6", None)
        .await;
    assert_eq!(lifted.status, 200, "{}", lifted.raw);
    open_console(addr, &user_token, "kali").await;
    assert_eq!(
        operated
            .api("DELETE", "/api/v1/revocations/user_id/6", None)
            .await
            .status,
        404
    );
    operated.proxy.stop_with_sigterm().await;
}

#[tokio::test]
async fn limits_per_user_lab_instance_and_vm_answer_429() {
    let upstream = KubevirtUpstream::start().await;
    let operated = Operated::start(
        &upstream,
        &[
            ("WS_PROXY_MAX_SESSIONS_PER_USER", "1"),
            ("WS_PROXY_MAX_SESSIONS_PER_LAB_INSTANCE", "2"),
            ("WS_PROXY_MAX_SESSIONS_PER_VM", "1"),
        ],
    );
    let addr = operated.proxy.addr;
    let mut first = open_console(addr, &mint_for(5, 9, &["ubuntu", "kali"], None), "ubuntu").await;
    assert_eq!(
        refused(
            addr,
            &format!("/{}/kali", mint_for(5, 9, &["kali"], None)),
            ""
        )
        .await,
        (429, "too many sessions for this user".to_owned())
    );
    assert_eq!(
        refused(
            addr,
            &format!("/{}/ubuntu", mint_for(6, 10, &["ubuntu"], None)),
            ""
        )
        .await,
        (429, "too many sessions for this vm".to_owned())
    );
    let _second = open_console(addr, &mint_for(6, 9, &["kali"], None), "kali").await;
    assert_eq!(
        refused(
            addr,
            &format!("/{}/manjaro", mint_for(7, 9, &["manjaro"], None)),
            ""
        )
        .await,
        (429, "too many sessions for this lab instance".to_owned())
    );
    // A browser (Origin) learns it from the close code, as the original's refusals.
    let mut browser =
        connect_as_browser(addr, &format!("/{}/kali", mint_for(5, 9, &["kali"], None)))
            .await
            .unwrap();
    assert_eq!(
        next_close(&mut browser).await,
        Some((4429, "too many sessions for this user".to_owned()))
    );
    // When the first session ends its user may connect again.
    first.close(None).await.unwrap();
    read_to_end(&mut first).await;
    let mut again = None;
    for _ in 0..50 {
        if let Ok((mut client, _)) = connect(
            addr,
            &format!("/{}/ubuntu", mint_for(5, 9, &["ubuntu"], None)),
            "",
        )
        .await
        {
            assert_eq!(next_data(&mut client).await, GREETING);
            again = Some(client);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the user's limit was not released");
    let metrics = get(operated.admin, "/metrics").await.1;
    assert!(
        metrics.contains("ws_proxy_rejections_total{reason=\"over_limit_user\"}"),
        "{metrics}"
    );
    operated.proxy.stop_with_sigterm().await;
}
