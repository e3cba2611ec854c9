//! Several `ws-proxy` replicas on one real Redis (`admin/test.sh` runs these): limits,
//! single-use tokens, revocations and closes cross replicas; a killed replica's leases run out;
//! a Redis outage follows the documented policy and the replicas recover when it returns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use test_support::redis_server::RedisServer;

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
const LEASE: &str = "3s";

struct Replica {
    proxy: ProxyProcess,
    admin: SocketAddr,
}

impl Replica {
    fn start(
        name: &str,
        upstream: &KubevirtUpstream,
        redis: &RedisServer,
        token_file: &tempfile::NamedTempFile,
        extra: &[(&str, &str)],
    ) -> Self {
        let url = redis.url();
        let env = [
            [
                ("WS_PROXY_ADMIN_ADDR", "127.0.0.1:0"),
                (
                    "WS_PROXY_ADMIN_TOKEN_FILE",
                    token_file.path().to_str().unwrap(),
                ),
                ("WS_PROXY_REPLICA_NAME", name),
                ("WS_PROXY_DRAIN_TIMEOUT", "500ms"),
                ("WS_PROXY_STATE_URL", url.as_str()),
                ("WS_PROXY_STATE_LEASE", LEASE),
            ]
            .as_slice(),
            extra,
        ]
        .concat();
        let mut proxy = ProxyProcess::start(upstream, &env);
        let admin = proxy.admin_addr();
        Self { proxy, admin }
    }

    async fn api(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> ApiAnswer {
        admin_api(self.admin, method, path, ADMIN_TOKEN, body).await
    }
}

fn token_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), ADMIN_TOKEN).unwrap();
    file
}

async fn open_console(addr: SocketAddr, token: &str, vm: &str) -> Client {
    let (mut client, _) = connect(addr, &format!("/{token}/{vm}"), "binary")
        .await
        .unwrap();
    assert_eq!(next_data(&mut client).await, GREETING);
    client
}

/// Opens a console, or the HTTP status it was refused with.
async fn try_open(addr: SocketAddr, path: &str) -> Result<Client, u16> {
    match connect(addr, path, "").await {
        Ok((client, _)) => Ok(client),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(error) => panic!("{error}"),
    }
}

/// Retries `attempt` every 100 ms until it returns true, for at most `bound`.
async fn within(bound: Duration, mut attempt: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !attempt().await {
        assert!(started.elapsed() < bound, "not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

#[tokio::test]
#[ignore = "needs redis-server: admin/test.sh installs it and runs these"]
async fn two_replicas_share_limits_single_use_tokens_revocations_and_closes() {
    let redis = RedisServer::start();
    let upstream = KubevirtUpstream::start().await;
    let tokens = token_file();
    let settings = [
        ("WS_PROXY_MAX_SESSIONS_PER_USER", "1"),
        ("WS_PROXY_SINGLE_USE_TOKENS", "true"),
    ];
    let a = Replica::start("replica-a", &upstream, &redis, &tokens, &settings);
    let b = Replica::start("replica-b", &upstream, &redis, &tokens, &settings);

    // A per-user limit of one holds across the replicas.
    let _on_a = open_console(
        a.proxy.addr,
        &mint_for(5, 9, &["ubuntu"], Some("t-1")),
        "ubuntu",
    )
    .await;
    assert_eq!(
        refused(
            b.proxy.addr,
            &format!("/{}/kali", mint_for(5, 9, &["kali"], Some("t-2"))),
            ""
        )
        .await,
        (429, "too many sessions for this user".to_owned())
    );
    // A single-use token used on A is refused on B.
    let once = mint_for(6, 10, &["kali"], Some("t-3"));
    let mut used_on_a = open_console(a.proxy.addr, &once, "kali").await;
    used_on_a.close(None).await.unwrap();
    read_to_end(&mut used_on_a).await;
    within(Duration::from_secs(5), async || {
        refused(b.proxy.addr, &format!("/{once}/kali"), "").await
            == (401, "token already used".to_owned())
    })
    .await;

    // Each replica lists the whole cluster.
    let mut on_b = open_console(
        b.proxy.addr,
        &mint_for(7, 11, &["manjaro"], Some("t-4")),
        "manjaro",
    )
    .await;
    let listed = a.api("GET", "/api/v1/sessions?user_id=7", None).await;
    assert_eq!(listed.json["store"], "redis");
    assert_eq!(listed.json["complete"], true);
    let sessions = listed.json["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{}", listed.raw);
    assert_eq!(sessions[0]["replica"], "replica-b");

    // A revocation sent to A closes B's session within a second.
    let started = Instant::now();
    let revoked = a
        .api(
            "POST",
            "/api/v1/revocations",
            Some(json!({"user_id": "7", "reason": "removed from the lab"})),
        )
        .await;
    assert_eq!(revoked.status, 201, "{}", revoked.raw);
    assert_eq!(
        next_close(&mut on_b).await,
        Some((4401, "token revoked: removed from the lab".to_owned()))
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        refused(
            b.proxy.addr,
            &format!("/{}/manjaro", mint_for(7, 11, &["manjaro"], Some("t-5"))),
            ""
        )
        .await,
        (401, "token revoked".to_owned())
    );

    // A close sent to B reaches A's session.
    let mut on_a = open_console(
        a.proxy.addr,
        &mint_for(8, 12, &["manjaro"], Some("t-6")),
        "manjaro",
    )
    .await;
    let id = a.api("GET", "/api/v1/sessions?user_id=8", None).await.json["sessions"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("replica-a."));
    let closed = b
        .api(
            "DELETE",
            &format!("/api/v1/sessions/{id}?reason=done"),
            None,
        )
        .await;
    assert_eq!(closed.status, 200, "{}", closed.raw);
    assert_eq!(
        next_close(&mut on_a).await,
        Some((4410, "closed by operator: done".to_owned()))
    );
    a.proxy.stop_with_sigterm().await;
    b.proxy.stop_with_sigterm().await;
}

#[tokio::test]
#[ignore = "needs redis-server: admin/test.sh installs it and runs these"]
async fn a_killed_replica_releases_its_sessions_within_the_lease() {
    let redis = RedisServer::start();
    let upstream = KubevirtUpstream::start().await;
    let tokens = token_file();
    let settings = [("WS_PROXY_MAX_SESSIONS_PER_USER", "1")];
    let a = Replica::start("replica-a", &upstream, &redis, &tokens, &settings);
    let mut b = Replica::start("replica-b", &upstream, &redis, &tokens, &settings);
    let _on_b = open_console(b.proxy.addr, &mint_for(5, 9, &["ubuntu"], None), "ubuntu").await;
    let path = format!("/{}/kali", mint_for(5, 9, &["kali"], None));
    assert_eq!(refused(a.proxy.addr, &path, "").await.0, 429);

    b.proxy.child.kill().unwrap();
    b.proxy.child.wait().unwrap();
    let mut admitted = None;
    let released = within(Duration::from_secs(8), async || {
        admitted = try_open(a.proxy.addr, &path).await.ok();
        admitted.is_some()
    })
    .await;
    // The lease is 3 s: renewed every second, so at most 3 s after the kill.
    assert!(
        released <= Duration::from_secs(4),
        "released after {released:?}"
    );
    assert_eq!(next_data(&mut admitted.unwrap()).await, GREETING);
    let listed = a.api("GET", "/api/v1/sessions", None).await;
    assert!(!listed.raw.contains("replica-b"), "{}", listed.raw);
    a.proxy.stop_with_sigterm().await;
}

#[tokio::test]
#[ignore = "needs redis-server: admin/test.sh installs it and runs these"]
async fn a_redis_outage_follows_the_policy_and_the_replicas_recover() {
    let mut redis = RedisServer::start();
    let upstream = KubevirtUpstream::start().await;
    let tokens = token_file();
    let a = Replica::start(
        "replica-a",
        &upstream,
        &redis,
        &tokens,
        &[("WS_PROXY_MAX_SESSIONS_PER_USER", "2")],
    );
    let single_use = Replica::start(
        "replica-s",
        &upstream,
        &redis,
        &tokens,
        &[("WS_PROXY_SINGLE_USE_TOKENS", "true")],
    );
    let mut live = open_console(a.proxy.addr, &mint_for(5, 9, &["ubuntu"], None), "ubuntu").await;

    redis.stop();
    // Limits fail open: a new session gets in while the revocations are fresh.
    let _during = open_console(a.proxy.addr, &mint_for(6, 9, &["kali"], None), "kali").await;
    // Single-use tokens fail closed at once.
    assert_eq!(
        refused(
            single_use.proxy.addr,
            &format!("/{}/kali", mint_for(7, 9, &["kali"], Some("o-1"))),
            ""
        )
        .await,
        (503, "state store unavailable".to_owned())
    );
    // Revocations fail closed once the last copy is older than two leases (6 s); until then
    // new sessions get in.
    let manjaro = format!("/{}/manjaro", mint_for(8, 9, &["manjaro"], None));
    let mut admitted_meanwhile = Vec::new();
    let refused_after = within(Duration::from_secs(12), async || {
        match try_open(a.proxy.addr, &manjaro).await {
            Ok(client) => {
                admitted_meanwhile.push(client);
                false
            }
            Err(status) => status == 503,
        }
    })
    .await;
    assert!(refused_after >= Duration::from_secs(2), "{refused_after:?}");
    assert_eq!(
        refused(a.proxy.addr, &manjaro, "").await,
        (503, "state store unavailable".to_owned())
    );
    drop(admitted_meanwhile);
    // Live sessions are never ended by an outage; the listing says it is partial.
    echo_round_trip(&mut live, b"still relaying").await;
    let partial = a.api("GET", "/api/v1/sessions", None).await;
    assert_eq!(partial.json["complete"], false);
    assert!(
        partial.json["sessions"].as_array().unwrap().len() >= 2,
        "{}",
        partial.raw
    );
    let metrics = get(a.admin, "/metrics").await.1;
    assert!(metrics.contains("ws_proxy_state_store_up 0"), "{metrics}");
    assert!(
        metrics.contains("ws_proxy_state_store_outage_decisions_total{operation=\"revocations\"}")
    );

    // Redis returns (empty): the replicas reconnect, register their live sessions again, and
    // admit new sessions.
    redis.restart();
    within(Duration::from_secs(10), async || {
        connect(
            a.proxy.addr,
            &format!("/{}/manjaro", mint_for(8, 9, &["manjaro"], None)),
            "",
        )
        .await
        .is_ok()
    })
    .await;
    within(Duration::from_secs(5), async || {
        let listed = a.api("GET", "/api/v1/sessions?user_id=5", None).await;
        listed.json["complete"] == true
            && listed.json["sessions"]
                .as_array()
                .is_some_and(|s| s.len() == 1)
    })
    .await;
    echo_round_trip(&mut live, b"after the outage").await;
    let once = mint_for(7, 9, &["kali"], Some("o-2"));
    open_console(single_use.proxy.addr, &once, "kali").await;
    a.proxy.stop_with_sigterm().await;
    single_use.proxy.stop_with_sigterm().await;
}
