//! The [`StateStore`] contract: the embedded store and the Redis store (a real `redis-server`,
//! run by `admin/test.sh`) pass the same suite; Redis leases run out when not renewed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proxy_control::store::{
    Command, FirstUse, LimitScope, MemoryStateStore, Opened, RedisSettings, RedisStateStore,
    Revocation, RevocationTarget, SessionLimits, SessionRecord, StateStore, hash_token_id,
    unix_seconds,
};
use test_support::TestPki;
use test_support::redis_server::{RedisSecurity, RedisServer};

const LEASE: Duration = Duration::from_secs(30);

fn record(id: &str, user: &str, lab_instance: &str, vm: &str) -> SessionRecord {
    SessionRecord {
        lab_instance_id: lab_instance.to_owned(),
        vmi: vm.to_owned(),
        ..SessionRecord::example(id, user)
    }
}

async fn contract(store: Arc<dyn StateStore>) {
    let limits = SessionLimits {
        per_user: Some(2),
        per_lab_instance: Some(3),
        per_vm: Some(1),
    };
    let open = |record: SessionRecord| {
        let store = Arc::clone(&store);
        async move {
            store
                .open_session(&Arc::new(record), &limits, LEASE)
                .await
                .unwrap()
        }
    };
    // In order: each either registers or names the limit it would exceed.
    use LimitScope::{LabInstance, User, Vm};
    let over = Opened::OverLimit;
    for (id, user, lab_instance, vm, expected) in [
        ("a.1", "u1", "lab-1", "vm-1", Opened::Yes),
        ("a.2", "u2", "lab-2", "vm-1", over(Vm)),
        ("a.3", "u1", "lab-1", "vm-2", Opened::Yes),
        ("a.4", "u1", "lab-1", "vm-3", over(User)),
        ("b.1", "u3", "lab-1", "vm-4", Opened::Yes),
        ("b.2", "u4", "lab-1", "vm-5", over(LabInstance)),
    ] {
        assert_eq!(
            open(record(id, user, lab_instance, vm)).await,
            expected,
            "{id}"
        );
    }
    // Without limits everything opens (and counts for the listing).
    let unlimited = SessionLimits::default();
    store
        .open_session(
            &Arc::new(record("b.3", "u1", "lab-1", "vm-1")),
            &unlimited,
            LEASE,
        )
        .await
        .unwrap();
    let mut ids: Vec<String> = store
        .sessions()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["a.1", "a.3", "b.1", "b.3"]);

    // Ending frees its place; renewing carries counters.
    store
        .end_session(&record("b.3", "u1", "lab-1", "vm-1"))
        .await
        .unwrap();
    store
        .end_session(&record("a.3", "u1", "lab-1", "vm-2"))
        .await
        .unwrap();
    assert_eq!(
        open(record("a.5", "u1", "lab-1", "vm-6")).await,
        Opened::Yes
    );
    let mut renewed = record("a.1", "u1", "lab-1", "vm-1");
    renewed.upstream_to_client_bytes = 4096;
    renewed.client_subprotocol = "binary".to_owned();
    store
        .renew_sessions(&[renewed.clone()], LEASE)
        .await
        .unwrap();
    let listed = store.sessions().await.unwrap();
    assert_eq!(listed.iter().find(|r| r.id == "a.1"), Some(&renewed));
    assert_eq!(listed.len(), 3);

    // Single use, by hash; a forgotten use may be made again.
    let expires = SystemTime::now() + Duration::from_secs(60);
    let hash = hash_token_id("jti-1");
    assert_eq!(
        store.first_use(&hash, expires).await.unwrap(),
        FirstUse::Yes
    );
    assert_eq!(
        store.first_use(&hash, expires).await.unwrap(),
        FirstUse::AlreadyUsed
    );
    store.forget_use(&hash).await.unwrap();
    assert_eq!(
        store.first_use(&hash, expires).await.unwrap(),
        FirstUse::Yes
    );

    // Revocations: replaced per target, lifted, and gone once expired.
    let now = unix_seconds(SystemTime::now());
    let revocation = |target, until| Revocation {
        target,
        until,
        reason: "test".to_owned(),
        by: "suite".to_owned(),
        created_at: now,
    };
    for (target, until) in [
        (RevocationTarget::UserId("u1".into()), now + 600),
        (RevocationTarget::UserId("u1".into()), now + 900),
        (RevocationTarget::JtiSha256(hash.clone()), now + 2),
    ] {
        store.revoke(&revocation(target, until)).await.unwrap();
    }
    let mut revocations = store.revocations().await.unwrap();
    revocations.sort_by_key(|r| r.until);
    assert_eq!(revocations.len(), 2);
    assert_eq!(revocations[1].until, now + 900);
    assert!(
        store
            .lift(&RevocationTarget::UserId("u1".into()))
            .await
            .unwrap()
    );
    assert!(
        !store
            .lift(&RevocationTarget::UserId("u1".into()))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(store.revocations().await.unwrap().is_empty());

    // Commands reach every receiver, the publisher's own included.
    let mut commands = store.commands();
    let command = Command::Close {
        session_ids: vec!["b.1".into()],
        reason: "exam over".into(),
        by: "suite".into(),
    };
    // The Redis subscription is made in the background: publish until it is heard.
    let received = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            store.publish(&command).await.unwrap();
            if let Ok(Ok(received)) =
                tokio::time::timeout(Duration::from_millis(200), commands.recv()).await
            {
                return received;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(received, command);
}

#[tokio::test]
async fn the_memory_store_passes_the_contract() {
    contract(Arc::new(MemoryStateStore::default())).await;
}

fn redis_store(redis: &RedisServer, prefix: &str) -> Arc<dyn StateStore> {
    let settings = RedisSettings {
        key_prefix: prefix.to_owned(),
        ..RedisSettings::new(redis.url())
    };
    Arc::new(RedisStateStore::new(&settings).unwrap())
}

#[tokio::test]
#[ignore = "needs redis-server: admin/test.sh installs it and runs these"]
async fn the_redis_store_passes_the_contract() {
    let redis = RedisServer::start();
    contract(redis_store(&redis, "contract:")).await;
}

#[tokio::test]
#[ignore = "needs redis-server: admin/test.sh installs it and runs these"]
async fn redis_leases_run_out_unless_renewed() {
    let redis = RedisServer::start();
    let store = redis_store(&redis, "lease:");
    let limits = SessionLimits {
        per_user: Some(1),
        ..SessionLimits::default()
    };
    let lease = Duration::from_secs(1);
    let kept = record("a.1", "u1", "lab-1", "vm-1");
    let dead = record("b.1", "u2", "lab-1", "vm-2");
    for session in [&kept, &dead] {
        assert_eq!(
            store
                .open_session(&Arc::new(session.clone()), &limits, lease)
                .await
                .unwrap(),
            Opened::Yes
        );
    }
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        store
            .renew_sessions(std::slice::from_ref(&kept), lease)
            .await
            .unwrap();
    }
    // 1.6 s later: the renewed one still counts, the other's lease ran out.
    let listed: Vec<String> = store
        .sessions()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, ["a.1"]);
    assert_eq!(
        store
            .open_session(
                &Arc::new(record("a.2", "u1", "lab-1", "vm-3")),
                &limits,
                lease
            )
            .await
            .unwrap(),
        Opened::OverLimit(LimitScope::User)
    );
    assert_eq!(
        store
            .open_session(
                &Arc::new(record("c.1", "u2", "lab-1", "vm-4")),
                &limits,
                lease
            )
            .await
            .unwrap(),
        Opened::Yes
    );
}

#[tokio::test]
#[ignore = "needs redis-server: admin/test.sh installs it and runs these"]
async fn a_redis_outage_is_an_error_and_the_store_recovers() {
    let mut redis = RedisServer::start();
    let store = redis_store(&redis, "outage:");
    let session = record("a.1", "u1", "lab-1", "vm-1");
    store
        .open_session(&Arc::new(session.clone()), &SessionLimits::default(), LEASE)
        .await
        .unwrap();
    redis.stop();
    assert!(store.sessions().await.is_err());
    assert!(
        store
            .first_use("h", SystemTime::now() + LEASE)
            .await
            .is_err()
    );
    redis.restart();
    // The restarted Redis lost everything; the next renewal registers the session again.
    let mut renewed = false;
    for _ in 0..50 {
        if store
            .renew_sessions(std::slice::from_ref(&session), LEASE)
            .await
            .is_ok()
        {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(renewed, "the store did not reconnect");
    assert_eq!(store.sessions().await.unwrap(), [session]);
}

#[tokio::test]
#[ignore = "needs redis-server: admin/test.sh installs it and runs these"]
async fn rediss_with_a_ca_file_and_an_acl_user_with_a_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("redis test CA");
    let (certificate, key) = pki.write_server_pair(dir.path());
    let ca_file = pki.write_ca(dir.path());
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "s3cret-password\n").unwrap();
    let redis = RedisServer::start_secured(&RedisSecurity {
        tls: Some((certificate, key)),
        user: Some(("ws-proxy".to_owned(), "s3cret-password".to_owned())),
    });
    let settings = RedisSettings {
        ca_file: Some(ca_file),
        username: Some("ws-proxy".to_owned()),
        password_file: Some(password_file.clone()),
        key_prefix: "tls:".to_owned(),
        ..RedisSettings::new(redis.url())
    };
    let store: Arc<dyn StateStore> = Arc::new(RedisStateStore::new(&settings).unwrap());
    contract(store).await;

    // Without the CA the server is not trusted; with a wrong password it refuses.
    let untrusted = RedisStateStore::new(&RedisSettings {
        ca_file: None,
        ..settings.clone()
    })
    .unwrap();
    assert!(untrusted.sessions().await.is_err());
    std::fs::write(&password_file, "wrong").unwrap();
    let refused = RedisStateStore::new(&settings).unwrap();
    assert!(refused.sessions().await.is_err());
    // A CA for a plain URL is a mistake, said at start.
    let plain = RedisSettings {
        url: "redis://127.0.0.1:1".to_owned(),
        ..settings
    };
    assert!(RedisStateStore::new(&plain).is_err());
}

/// `used_memory` and the number of keys of the Redis at `url`.
async fn redis_usage(url: &str) -> (u64, u64) {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut connection)
        .await
        .unwrap();
    let used = info
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let keys: u64 = redis::cmd("DBSIZE")
        .query_async(&mut connection)
        .await
        .unwrap();
    (used, keys)
}

/// The sizing figures of docs/operations.md: keys and memory per live session in Redis, each
/// session of its own user, lab instance and VM (the worst case: no key is shared), plus a
/// used single-use token id each.
#[tokio::test]
#[ignore = "needs redis-server: admin/test.sh installs it and runs these"]
async fn redis_memory_per_session() {
    const SESSIONS: u64 = 5_000;
    let redis = RedisServer::start();
    let store = redis_store(&redis, "ws-proxy:");
    let (used_before, keys_before) = redis_usage(&redis.url()).await;
    let limits = SessionLimits {
        per_user: Some(3),
        per_lab_instance: Some(50),
        per_vm: Some(2),
    };
    let expires = SystemTime::now() + Duration::from_secs(600);
    for number in 0..SESSIONS {
        let mut session = record(
            &format!("ws-proxy-7d9f8c6b5-x2x4z.1a2b3c.{number}"),
            &format!("user-{number}"),
            &format!("lab-instance-{number}"),
            &format!("vm-{number}"),
        );
        session.peer = "10.244.1.17:53412".to_owned();
        session.client_subprotocol = "binary".to_owned();
        assert_eq!(
            store
                .open_session(&Arc::new(session.clone()), &limits, LEASE)
                .await
                .unwrap(),
            Opened::Yes
        );
        store
            .first_use(&hash_token_id(&format!("jti-{number}")), expires)
            .await
            .unwrap();
    }
    let (used_after, keys_after) = redis_usage(&redis.url()).await;
    let bytes_per_session = (used_after - used_before) / SESSIONS;
    let keys_per_session = (keys_after - keys_before) as f64 / SESSIONS as f64;
    println!(
        "redis sizing: {SESSIONS} sessions, {keys_per_session:.2} keys and {bytes_per_session} bytes per session (single-use token id included)"
    );
    // A generous bound that still catches a layout mistake (a key per counter, a copy per
    // renewal).
    assert!(
        bytes_per_session < 4096,
        "{bytes_per_session} bytes per session"
    );
    assert!(
        keys_per_session <= 5.01,
        "{keys_per_session} keys per session"
    );
}
