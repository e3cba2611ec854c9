//! Both legs of a session complete the WebSocket closing handshake through the real HTTP front:
//! whichever side closes first gets a close frame back, not a dropped connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// tungstenite's handshake callback must return its large `ErrorResponse` unboxed.
#![allow(clippy::result_large_err)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// Bound on every wait, so a broken handshake fails the test instead of hanging it.
const BOUND: Duration = Duration::from_secs(10);

/// What the client sees after the close frame: `None` is a clean end of the stream; an error
/// (for example a reset) is returned as text.
async fn end_of_stream(client: &mut Client) -> Result<(), String> {
    match timeout(BOUND, client.next())
        .await
        .expect("no end of stream")
    {
        None => Ok(()),
        Some(Ok(message)) => Err(format!("unexpected message after the close: {message:?}")),
        Some(Err(error)) => Err(error.to_string()),
    }
}

/// Closes with 4100 "tab closed", as a browser tab would, and expects that close echoed back.
async fn close_as_a_closed_tab(client: &mut Client) {
    client
        .close(Some(CloseFrame {
            code: CloseCode::from(4100),
            reason: "tab closed".into(),
        }))
        .await
        .unwrap();
    let reply = timeout(BOUND, next_close(client))
        .await
        .expect("no close reply");
    assert_eq!(reply, Some((4100, "tab closed".to_owned())));
}

#[tokio::test]
async fn a_client_that_closes_first_gets_the_close_reply_and_a_clean_end() {
    let upstream = KubevirtUpstream::start().await;
    let proxy = Running::proxy(dev_proxy(&upstream)).await;
    let (mut client, _) = connect(proxy.addr, &format!("/{}/ubuntu", mint(&["ubuntu"])), "")
        .await
        .unwrap();
    assert_eq!(next_data(&mut client).await, GREETING);
    echo_round_trip(&mut client, b"before closing").await;
    close_as_a_closed_tab(&mut client).await;
    assert_eq!(end_of_stream(&mut client).await, Ok(()));
    proxy.stop().await;
    assert_eq!(upstream.closes(), [Some((4100, "tab closed".to_owned()))]);
}

/// Answers the proxy's upgrade with `plain.kubevirt.io`, as KubeVirt does.
fn agree_to_plain(_: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    response.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("plain.kubevirt.io"),
    );
    Ok(response)
}

#[tokio::test]
async fn an_upstream_that_closes_first_gets_the_proxy_close_reply() {
    let upstream = KubevirtUpstream::start().await;
    let proxy = Running::proxy(dev_proxy(&upstream)).await;
    let path = format!("/{}/{VM_CLOSES}", mint(&[VM_CLOSES]));
    let (mut client, _) = connect(proxy.addr, &path, "").await.unwrap();
    assert_eq!(next_data(&mut client).await, GREETING);
    let close = timeout(BOUND, next_close(&mut client))
        .await
        .expect("no close frame");
    assert_eq!(close, Some((4321, "console ended".to_owned())));
    // tungstenite sends our reply while reading on; the proxy then ends the connection.
    assert_eq!(end_of_stream(&mut client).await, Ok(()));
    let upstream_saw = timeout(BOUND, async {
        loop {
            let closes = upstream.closes();
            if !closes.is_empty() {
                return closes;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the upstream got no close reply in time");
    assert_eq!(upstream_saw, [Some((4321, "console ended".to_owned()))]);
    proxy.stop().await;
}

/// An upstream that sends a greeting, reports the close it receives and sends its reply only
/// when released (tungstenite queues the reply and sends it on the next read).
async fn upstream_that_holds_its_close_reply() -> (
    String,
    oneshot::Receiver<(u16, String)>,
    oneshot::Sender<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let (report, reported) = oneshot::channel();
    let (release, released) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut socket = tokio_tungstenite::accept_hdr_async(stream, agree_to_plain)
            .await
            .unwrap();
        socket
            .send(Message::Binary(Bytes::from_static(GREETING)))
            .await
            .unwrap();
        let close = loop {
            match socket.next().await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    break (u16::from(frame.code), frame.reason.to_string());
                }
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        let _ = report.send(close);
        let _ = released.await;
        // Sends the queued reply; the proxy then ends the connection.
        while let Some(Ok(_)) = socket.next().await {}
    });
    (url, reported, release)
}

#[tokio::test]
async fn a_client_that_closes_first_sees_the_end_before_the_upstream_answers() {
    let (url, close_seen, release) = upstream_that_holds_its_close_reply().await;
    // A close timeout far past BOUND: a proxy that waited for the upstream's reply before ending
    // the client's connection would fail this test instead of passing it late.
    let relay = proxy_core::RelayConfig {
        close_timeout: Duration::from_secs(120),
        ..proxy_core::RelayConfig::default()
    };
    let proxy = Running::proxy(dev_proxy_to(url).relay(relay)).await;
    let (mut client, _) = connect(proxy.addr, &format!("/{}/ubuntu", mint(&["ubuntu"])), "")
        .await
        .unwrap();
    assert_eq!(next_data(&mut client).await, GREETING);
    close_as_a_closed_tab(&mut client).await;
    // The proxy is the server of this leg (RFC 6455 7.1.1): the connection ends now, while the
    // upstream still holds its reply.
    assert_eq!(end_of_stream(&mut client).await, Ok(()));
    let upstream_saw = timeout(BOUND, close_seen).await.unwrap().unwrap();
    assert_eq!(upstream_saw, (4100, "tab closed".to_owned()));
    release.send(()).unwrap();
    proxy.stop().await;
}
