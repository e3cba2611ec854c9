//! Tokens out of the URL, through the real front: the Kubernetes bearer subprotocol (stripped,
//! never echoed), `Authorization: Bearer`, a cookie and a query parameter; one token per request;
//! and the Origin allow-list.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use proxy_server::ServerConfig;
use proxy_server::token_source::{BEARER_SUBPROTOCOL_PREFIX, TokenSource, TokenSources};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Opens `path` with extra request headers; returns the socket and the answered subprotocol.
async fn connect_with(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&'static str, String)],
) -> Result<(Client, Option<String>), tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request
            .headers_mut()
            .append(*name, HeaderValue::from_str(value).unwrap());
    }
    let (socket, response) = tokio_tungstenite::connect_async(request).await?;
    let answered = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|value| value.to_str().unwrap().to_owned());
    Ok((socket, answered))
}

/// Settings whose stop does not wait for the sessions a test leaves open.
fn quick_stop() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.drain_timeout = std::time::Duration::from_millis(100);
    config.relay.close_timeout = std::time::Duration::from_millis(100);
    config
}

fn bearer_protocol(token: &str) -> String {
    format!(
        "{BEARER_SUBPROTOCOL_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(token)
    )
}

#[tokio::test]
async fn the_bearer_subprotocol_opens_a_console_and_is_never_echoed() {
    let upstream = KubevirtUpstream::start().await;
    let proxy = Running::proxy(dev_proxy(&upstream).server_config(quick_stop())).await;
    let protocols = format!("binary, {}", bearer_protocol(&mint(&["ubuntu"])));
    let (mut client, answered) = connect_with(
        proxy.addr,
        "/ubuntu",
        &[("sec-websocket-protocol", protocols)],
    )
    .await
    .unwrap();
    assert_eq!(answered.as_deref(), Some("binary"));
    assert_eq!(next_data(&mut client).await, GREETING);
    echo_round_trip(&mut client, b"token out of the url").await;
    // The upstream got the proxy's own subprotocol, not the browser's bearer entry.
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1.as_deref(), Some("plain.kubevirt.io"));
    proxy.stop().await;
}

#[tokio::test]
async fn an_authorization_header_opens_a_console() {
    let upstream = KubevirtUpstream::start().await;
    let proxy = Running::proxy(
        dev_proxy(&upstream)
            .server_config(quick_stop())
            .host_path_prefix("ws_proxy"),
    )
    .await;
    let authorization = format!("Bearer {}", mint(&["ubuntu"]));
    let (mut client, answered) = connect_with(
        proxy.addr,
        "/ws_proxy/ubuntu",
        &[("authorization", authorization)],
    )
    .await
    .unwrap();
    assert_eq!(answered, None);
    assert_eq!(next_data(&mut client).await, GREETING);
    proxy.stop().await;
}

#[tokio::test]
async fn the_subprotocol_rules_and_one_token_per_request() {
    let upstream = KubevirtUpstream::start().await;
    let proxy = Running::proxy(dev_proxy(&upstream).server_config(quick_stop())).await;
    let token = mint(&["ubuntu"]);
    let bearer = bearer_protocol(&token);
    let cases = [
        (
            "/ubuntu".to_owned(),
            format!("Sec-WebSocket-Protocol: {bearer}\r\n"),
            400,
            "a bearer subprotocol needs another subprotocol",
        ),
        (
            "/ubuntu".to_owned(),
            format!(
                "Sec-WebSocket-Protocol: binary, {bearer}, {}\r\n",
                bearer_protocol("other")
            ),
            400,
            "token in more than one place",
        ),
        (
            "/ubuntu".to_owned(),
            format!("Sec-WebSocket-Protocol: binary, {BEARER_SUBPROTOCOL_PREFIX}%%%\r\n"),
            401,
            "invalid token",
        ),
        (
            format!("/{token}/ubuntu"),
            format!("Authorization: Bearer {token}\r\n"),
            400,
            "token in more than one place",
        ),
        // Nothing anywhere: as before, a one-segment path is not a console URL.
        ("/ubuntu".to_owned(), String::new(), 404, "invalid url"),
    ];
    for (path, headers, status, reason) in cases {
        assert_eq!(
            refused(proxy.addr, &path, &headers).await,
            (status, reason.to_owned()),
            "{headers}"
        );
    }
    assert!(upstream.seen().is_empty(), "a refused request was dialled");
    proxy.stop().await;
}

#[tokio::test]
async fn cookie_and_query_sources_work_when_enabled_and_the_path_can_be_turned_off() {
    let upstream = KubevirtUpstream::start().await;
    let mut config = quick_stop();
    config.token_sources = TokenSources {
        enabled: vec![TokenSource::Cookie, TokenSource::Query],
        cookie_name: "lab_console".to_owned(),
        ..TokenSources::default()
    };
    let proxy = Running::proxy(dev_proxy(&upstream).server_config(config)).await;
    let token = mint(&["ubuntu"]);

    let (mut client, _) = connect_with(
        proxy.addr,
        "/ubuntu",
        &[("cookie", format!("theme=dark; lab_console={token}"))],
    )
    .await
    .unwrap();
    assert_eq!(next_data(&mut client).await, GREETING);
    let (mut client, _) = connect_with(proxy.addr, &format!("/ubuntu?token={token}"), &[])
        .await
        .unwrap();
    assert_eq!(next_data(&mut client).await, GREETING);

    // The path and header sources are off here.
    assert_eq!(
        refused(proxy.addr, &format!("/{token}/ubuntu"), "").await,
        (404, "invalid url".to_owned())
    );
    assert_eq!(
        refused(
            proxy.addr,
            "/ubuntu",
            &format!("Authorization: Bearer {token}\r\n")
        )
        .await,
        (404, "invalid url".to_owned())
    );
    proxy.stop().await;
}

#[tokio::test]
async fn origins_off_the_allow_list_are_refused_before_the_token() {
    let upstream = KubevirtUpstream::start().await;
    let mut config = quick_stop();
    config.allowed_origins = Some(proxy_server::OriginAllowList::new([
        "https://lab.example.com",
        "https://*.labs.example.org",
    ]));
    let proxy = Running::proxy(dev_proxy(&upstream).server_config(config)).await;
    let path = format!("/{}/ubuntu", mint(&["ubuntu"]));

    for origin in ["https://lab.example.com", "https://a.labs.example.org"] {
        let (mut client, _) = connect_with(proxy.addr, &path, &[("origin", origin.to_owned())])
            .await
            .unwrap();
        assert_eq!(next_data(&mut client).await, GREETING, "{origin}");
    }
    // Not a browser: no Origin, allowed.
    let (mut client, _) = connect_with(proxy.addr, &path, &[]).await.unwrap();
    assert_eq!(next_data(&mut client).await, GREETING);

    for origin in [
        "https://evil.example.net",
        "https://labs.example.org",
        "null",
    ] {
        // A browser gets the reason as a close (auto style) ...
        let (mut client, _) = connect_with(proxy.addr, &path, &[("origin", origin.to_owned())])
            .await
            .unwrap();
        assert_eq!(
            next_close(&mut client).await,
            Some((4403, "origin not allowed".to_owned())),
            "{origin}"
        );
        // ... and a bad token is not even looked at: the origin is the reason.
        let (mut client, _) = connect_with(
            proxy.addr,
            "/not.a.token/ubuntu",
            &[("origin", origin.to_owned())],
        )
        .await
        .unwrap();
        assert_eq!(
            next_close(&mut client).await,
            Some((4403, "origin not allowed".to_owned()))
        );
    }
    assert_eq!(
        upstream.seen().len(),
        3,
        "only the allowed sessions were dialled"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn single_use_tokens_open_one_session_and_need_a_jti() {
    use std::time::Duration;

    use proxy_auth::{Expiry, LabInstance, SigningKey};
    use proxy_server::proxy_control::store::{FirstUse, hash_token_id};

    let upstream = KubevirtUpstream::start().await;
    let mut config = quick_stop();
    config.single_use_tokens = true;
    let store = config.state.clone();
    let proxy = Running::proxy(dev_proxy(&upstream).server_config(config)).await;
    let key = SigningKey::hs256(SECRET).unwrap();
    let with_id = |id: &str, vm: &str| {
        let lab = LabInstance::new(1, 9, NAMESPACE, [vm]);
        proxy_auth::issue_with_id(5, lab, Expiry::In(Duration::from_secs(600)), &key, id).unwrap()
    };

    let token = with_id("session-1", "ubuntu");
    let path = format!("/{token}/ubuntu");
    let (mut client, _) = connect(proxy.addr, &path, "").await.unwrap();
    assert_eq!(next_data(&mut client).await, GREETING);
    assert_eq!(
        refused(proxy.addr, &path, "").await,
        (401, "token already used".to_owned())
    );
    assert_eq!(
        refused(proxy.addr, &format!("/{}/ubuntu", mint(&["ubuntu"])), "").await,
        (401, "token has no jti".to_owned())
    );
    // A use that opened no session (the VM is stopped) does not burn the token.
    let stopped = format!("/{}/{VM_STOPPED}", with_id("session-2", VM_STOPPED));
    for _ in 0..2 {
        assert_eq!(
            refused(proxy.addr, &stopped, "").await,
            (409, "vm not running".to_owned())
        );
    }
    // Only the token that opened a session is remembered, by its hash.
    let far = std::time::SystemTime::now() + Duration::from_secs(600);
    assert_eq!(
        store
            .first_use(&hash_token_id("session-1"), far)
            .await
            .unwrap(),
        FirstUse::AlreadyUsed
    );
    assert_eq!(
        store
            .first_use(&hash_token_id("session-2"), far)
            .await
            .unwrap(),
        FirstUse::Yes
    );
    proxy.stop().await;
}
