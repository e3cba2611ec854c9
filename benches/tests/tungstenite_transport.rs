//! `WsTransport` over real tokio-tungstenite WebSockets on 127.0.0.1: frame mapping, per-hop
//! ping/pong and close echo, and the relay moving 256 MiB each way with matching checksums.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use proxy_core::{CloseFrame, EndReason, Frame, RelayConfig, RelayOutcome, TransportError, relay};
use test_support::checksums::exchange;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as WsCloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, accept_async, client_async};
use ws_proxy_benches::tungstenite_transport::WsTransport;

type ClientSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A client WebSocket connected to a server WebSocket over loopback TCP.
async fn connected_pair() -> (ClientSocket, WebSocketStream<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accept = async {
        let (socket, _) = listener.accept().await.unwrap();
        socket.set_nodelay(true).unwrap();
        accept_async(socket).await.unwrap()
    };
    let connect = async {
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{address}/"))
            .await
            .unwrap();
        socket
    };
    let (server, client) = tokio::join!(accept, connect);
    (client, server)
}

fn ws_close(code: u16, reason: &str) -> Message {
    Message::Close(Some(WsCloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

#[tokio::test]
async fn data_frames_map_both_ways_without_loss() {
    let (mut peer, server) = connected_pair().await;
    let mut transport = WsTransport::new(server);

    peer.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    peer.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        transport.next().await.unwrap().unwrap(),
        Frame::Binary(Bytes::from_static(&[1, 2, 3]))
    );
    assert_eq!(
        transport.next().await.unwrap().unwrap(),
        Frame::Text(Bytes::from_static(b"hello"))
    );

    transport
        .send(Frame::Binary(Bytes::from_static(b"back")))
        .await
        .unwrap();
    transport
        .send(Frame::Text(Bytes::from_static(b"text back")))
        .await
        .unwrap();
    assert_eq!(
        peer.next().await.unwrap().unwrap(),
        Message::binary(&b"back"[..])
    );
    assert_eq!(
        peer.next().await.unwrap().unwrap(),
        Message::text("text back")
    );
}

#[tokio::test]
async fn invalid_utf8_text_is_refused_before_it_reaches_the_wire() {
    let (_peer, server) = connected_pair().await;
    let mut transport = WsTransport::new(server);
    let error = transport
        .send(Frame::Text(Bytes::from_static(&[0xff, 0xfe])))
        .await
        .unwrap_err();
    assert!(matches!(error, TransportError::Protocol(_)), "{error:?}");
}

#[tokio::test]
async fn pings_are_answered_by_the_hop_itself() {
    let (mut peer, server) = connected_pair().await;
    let mut transport = WsTransport::new(server);

    peer.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    peer.send(Message::binary(&b"after the ping"[..]))
        .await
        .unwrap();
    assert_eq!(
        transport.next().await.unwrap().unwrap(),
        Frame::Ping(Bytes::from_static(b"are you there"))
    );
    // Reading on drives the queued pong out; nobody sent it explicitly.
    assert_eq!(
        transport.next().await.unwrap().unwrap(),
        Frame::Binary(Bytes::from_static(b"after the ping"))
    );
    transport.flush().await.unwrap();
    assert_eq!(
        peer.next().await.unwrap().unwrap(),
        Message::Pong(Bytes::from_static(b"are you there"))
    );
}

#[tokio::test]
async fn a_received_close_is_echoed_once_when_the_reply_is_sent() {
    let (mut peer, server) = connected_pair().await;
    let mut transport = WsTransport::new(server);

    peer.send(ws_close(4000, "bye")).await.unwrap();
    assert_eq!(
        transport.next().await.unwrap().unwrap(),
        Frame::Close(Some(CloseFrame::new(4000, "bye")))
    );
    // The relay's reply is the echo tungstenite queued; it goes out once, then the stream ends.
    transport
        .send(Frame::Close(Some(CloseFrame::new(4000, "bye"))))
        .await
        .unwrap();
    assert_eq!(peer.next().await.unwrap().unwrap(), ws_close(4000, "bye"));
    drop(transport);
    assert!(peer.next().await.is_none());
}

#[tokio::test]
async fn a_close_sent_first_is_answered_and_overlong_reasons_are_cut() {
    let (mut peer, server) = connected_pair().await;
    let mut transport = WsTransport::new(server);

    let long_reason = "x".repeat(200);
    transport
        .send(Frame::Close(Some(CloseFrame {
            code: 4001,
            reason: long_reason,
        })))
        .await
        .unwrap();
    match peer.next().await.unwrap().unwrap() {
        Message::Close(Some(close)) => {
            assert_eq!(u16::from(close.code), 4001);
            assert_eq!(close.reason.len(), proxy_core::MAX_CLOSE_REASON_LEN);
        }
        other => panic!("expected a close, got {other:?}"),
    }
    // The peer's automatic reply, flushed, reaches the transport as the close reply.
    peer.flush().await.unwrap();
    assert!(matches!(
        transport.next().await,
        Some(Ok(Frame::Close(Some(_))))
    ));
}

#[tokio::test]
async fn a_peer_that_drops_the_connection_ends_the_stream_as_lost() {
    let (peer, server) = connected_pair().await;
    let mut transport = WsTransport::new(server);
    drop(peer);
    match transport.next().await {
        None | Some(Err(TransportError::ConnectionLost)) => {}
        other => panic!("expected the connection to be lost, got {other:?}"),
    }
}

#[tokio::test]
async fn frames_survive_a_byte_stream_that_moves_a_few_bytes_at_a_time() {
    // A 7-byte in-memory pipe forces partial reads and writes inside every frame.
    let (client_io, server_io) = tokio::io::duplex(7);
    let (client, server) = tokio::join!(
        WebSocketStream::from_raw_socket(
            client_io,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None
        ),
        WebSocketStream::from_raw_socket(
            server_io,
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None
        ),
    );
    let mut client = WsTransport::new(client);
    let mut server = WsTransport::new(server);
    let frames: Vec<Frame> = (0..50u8)
        .map(|i| Frame::Binary(Bytes::from(vec![i; usize::from(i) * 37])))
        .collect();
    let send = async {
        for frame in &frames {
            client.feed(frame.clone()).await.unwrap();
        }
        client.flush().await.unwrap();
    };
    let receive = async {
        let mut received = Vec::new();
        for _ in 0..frames.len() {
            received.push(server.next().await.unwrap().unwrap());
        }
        received
    };
    let ((), received) = tokio::join!(send, receive);
    assert_eq!(received, frames);
}

// === relay over real WebSockets ===

/// A relay listening on loopback that dials `upstream` for its one client, as the server does.
async fn spawn_relay(
    upstream: std::net::SocketAddr,
    config: RelayConfig,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<RelayOutcome>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let session = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        socket.set_nodelay(true).unwrap();
        let client = accept_async(socket).await.unwrap();
        let upstream_socket = TcpStream::connect(upstream).await.unwrap();
        upstream_socket.set_nodelay(true).unwrap();
        let (upstream, _) = client_async(format!("ws://{upstream}/vnc"), upstream_socket)
            .await
            .unwrap();
        relay(
            WsTransport::new(client),
            WsTransport::new(upstream),
            &config,
            std::future::pending(),
        )
        .await
    });
    (address, session)
}

/// The 256 MiB-each-way loopback run. One test on purpose: it is the slow one in debug builds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_moves_256_mib_each_way_over_real_websockets_with_matching_checksums() {
    const TOTAL: usize = 256 << 20;
    let console_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let console_address = console_listener.local_addr().unwrap();
    let console = tokio::spawn(async move {
        let (socket, _) = console_listener.accept().await.unwrap();
        socket.set_nodelay(true).unwrap();
        let mut socket = accept_async(socket).await.unwrap();
        let checksums = exchange(&mut socket, 0xc0ffee, TOTAL).await;
        // Wait for the forwarded close; tungstenite answers it.
        let close = loop {
            match socket.next().await {
                Some(Ok(Message::Close(close))) => break close,
                Some(Ok(_)) => {}
                other => panic!("expected the forwarded close, got {other:?}"),
            }
        };
        while socket.next().await.is_some() {}
        (checksums, close)
    });

    let (relay_address, session) = spawn_relay(console_address, RelayConfig::default()).await;
    let (mut browser, _) = tokio_tungstenite::connect_async(format!("ws://{relay_address}/"))
        .await
        .unwrap();
    let (browser_sent, browser_received) = exchange(&mut browser, 0xbeef, TOTAL).await;
    browser.send(ws_close(1000, "done")).await.unwrap();
    let reply = loop {
        match browser.next().await {
            Some(Ok(Message::Close(close))) => break close,
            Some(Ok(_)) => {}
            other => panic!("expected the close reply, got {other:?}"),
        }
    };

    let ((console_sent, console_received), console_close) = console.await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), session)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(browser_sent.length, TOTAL as u64);
    assert_eq!(console_received.length, TOTAL as u64);
    assert_eq!(console_received.state, browser_sent.state);
    assert_eq!(browser_received.length, TOTAL as u64);
    assert_eq!(browser_received.state, console_sent.state);
    assert_eq!(
        console_close.map(|c| (u16::from(c.code), c.reason.to_string())),
        Some((1000, "done".to_owned()))
    );
    assert_eq!(
        reply.map(|c| (u16::from(c.code), c.reason.to_string())),
        Some((1000, "done".to_owned()))
    );
    assert!(matches!(&outcome.ended_by, EndReason::ClientClosed(Some(c)) if c.reason == "done"));
    assert_eq!(outcome.client_to_upstream.bytes, TOTAL as u64);
    assert_eq!(outcome.upstream_to_client.bytes, TOTAL as u64);
}

#[tokio::test]
async fn upstream_close_codes_reach_the_client_through_the_relay() {
    let console_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let console_address = console_listener.local_addr().unwrap();
    let console = tokio::spawn(async move {
        let (socket, _) = console_listener.accept().await.unwrap();
        let mut socket = accept_async(socket).await.unwrap();
        socket
            .send(Message::binary(&b"RFB 003.008\n"[..]))
            .await
            .unwrap();
        socket.send(ws_close(4404, "vm is gone")).await.unwrap();
        // The relay's reply (our own close echoed by its tungstenite) completes the handshake.
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(close))) => break close,
                Some(Ok(_)) => {}
                other => panic!("expected the close reply, got {other:?}"),
            }
        }
    });
    let (relay_address, session) = spawn_relay(console_address, RelayConfig::default()).await;
    let (mut browser, _) = tokio_tungstenite::connect_async(format!("ws://{relay_address}/"))
        .await
        .unwrap();

    assert_eq!(
        browser.next().await.unwrap().unwrap(),
        Message::binary(&b"RFB 003.008\n"[..])
    );
    assert_eq!(
        browser.next().await.unwrap().unwrap(),
        ws_close(4404, "vm is gone")
    );
    while browser.next().await.is_some() {}

    let reply = console.await.unwrap().unwrap();
    assert_eq!(
        (u16::from(reply.code), reply.reason.as_str()),
        (4404, "vm is gone")
    );
    let outcome = session.await.unwrap();
    assert!(matches!(&outcome.ended_by, EndReason::UpstreamClosed(Some(c)) if c.code == 4404));
    assert_eq!(
        outcome.close_sent_to_client,
        Some(CloseFrame::new(4404, "vm is gone"))
    );
}

#[tokio::test]
async fn a_client_that_vanishes_is_reported_upstream_with_1001() {
    let console_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let console_address = console_listener.local_addr().unwrap();
    let console = tokio::spawn(async move {
        let (socket, _) = console_listener.accept().await.unwrap();
        let mut socket = accept_async(socket).await.unwrap();
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(close))) => break close,
                Some(Ok(_)) => {}
                other => panic!("expected a close, got {other:?}"),
            }
        }
    });
    let (relay_address, session) = spawn_relay(console_address, RelayConfig::default()).await;
    let (browser, _) = tokio_tungstenite::connect_async(format!("ws://{relay_address}/"))
        .await
        .unwrap();
    // Give the relay its upstream before the client disappears without a close frame.
    let mut browser = browser;
    browser.send(Message::binary(&b"hello"[..])).await.unwrap();
    drop(browser);

    let close = console.await.unwrap().unwrap();
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (1001, "client went away")
    );
    let outcome = session.await.unwrap();
    assert_eq!(outcome.ended_by.label(), "client_vanished");
}
