//! The per-VM behaviours after the upgrade, the session counter and shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Dial, STEP, dial, next_payload};
use futures_util::{SinkExt, StreamExt};
use kubevirt_sim::{KubevirtSim, SimConfig, VmBehavior};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

#[tokio::test]
async fn bridge_relays_to_and_from_a_tcp_server() {
    let vnc_server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = vnc_server.local_addr().unwrap();
    // A stand-in VNC server: greets first, then answers every byte upper-cased, then closes.
    let server = tokio::spawn(async move {
        let (mut tcp, _) = vnc_server.accept().await.unwrap();
        tcp.write_all(b"RFB 003.008\n").await.unwrap();
        let mut received = [0u8; 5];
        tcp.read_exact(&mut received).await.unwrap();
        tcp.write_all(&received.to_ascii_uppercase()).await.unwrap();
    });
    let sim = KubevirtSim::start(SimConfig::new().vm("real", VmBehavior::TcpBridge(target)))
        .await
        .unwrap();
    let mut ws = dial(&sim, "ns", "real", Dial::default()).await;
    assert_eq!(next_payload(&mut ws).await.unwrap(), "RFB 003.008\n");
    ws.send(Message::Binary(Bytes::from_static(b"he")))
        .await
        .unwrap();
    ws.send(Message::Binary(Bytes::from_static(b"llo")))
        .await
        .unwrap();
    let mut answer = Vec::new();
    while answer.len() < 5 {
        answer.extend_from_slice(&next_payload(&mut ws).await.unwrap());
    }
    assert_eq!(answer, b"HELLO");
    server.await.unwrap();
    // The TCP server closed: the client gets a normal close.
    assert_eq!(next_payload(&mut ws).await, None);
    while let Some(Ok(_)) = ws.next().await {}
    assert!(sim.wait_for_no_open_sessions(STEP).await);
}

#[tokio::test]
async fn bridge_to_a_closed_port_is_an_internal_error() {
    let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = unused.local_addr().unwrap();
    drop(unused);
    let sim = KubevirtSim::start(SimConfig::new().vm("real", VmBehavior::TcpBridge(target)))
        .await
        .unwrap();
    let (code, body) = common::refusal(&sim, "ns", "real", Dial::default()).await;
    assert_eq!(code, 500);
    assert_eq!(body["reason"], "InternalError");
    assert_eq!(sim.open_sessions(), 0);
}

#[tokio::test]
async fn echo_sends_every_message_back() {
    let sim = KubevirtSim::start(SimConfig::new().vm("echo", VmBehavior::Echo))
        .await
        .unwrap();
    let mut ws = dial(&sim, "ns", "echo", Dial::default()).await;
    for payload in [&b"one"[..], &[0u8, 255, 7][..], &vec![42u8; 100_000][..]] {
        ws.send(Message::Binary(Bytes::copy_from_slice(payload)))
            .await
            .unwrap();
        assert_eq!(next_payload(&mut ws).await.unwrap(), payload);
    }
    ws.send(Message::Text("text too".into())).await.unwrap();
    assert_eq!(next_payload(&mut ws).await.unwrap(), "text too");
}

#[tokio::test]
async fn sink_counts_and_source_sends_the_asked_amount() {
    let sim = KubevirtSim::start(SimConfig::new().vm("sink", VmBehavior::Sink).vm(
        "source",
        VmBehavior::Source {
            chunk_bytes: 1000,
            total_bytes: Some(2500),
        },
    ))
    .await
    .unwrap();
    let mut sink = dial(&sim, "ns", "sink", Dial::default()).await;
    for _ in 0..4 {
        sink.send(Message::Binary(Bytes::from(vec![1u8; 256])))
            .await
            .unwrap();
    }
    sink.close(None).await.unwrap();
    while sink.next().await.is_some() {}

    let mut source = dial(&sim, "ns", "source", Dial::default()).await;
    let mut sizes = Vec::new();
    while let Some(payload) = next_payload(&mut source).await {
        sizes.push(payload.len());
    }
    assert_eq!(sizes, [1000, 1000, 500]);
    // Reading on after the server's close frame sends our close reply.
    while let Some(Ok(_)) = source.next().await {}
    assert!(sim.wait_for_no_open_sessions(STEP).await);
    let stats = sim.stats();
    assert_eq!(stats.bytes_from_clients, 1024);
    assert_eq!(stats.bytes_to_clients, 2500);
    assert_eq!(stats.sessions_opened, 2);
}

#[tokio::test]
async fn endless_source_stops_when_the_client_closes() {
    let sim = KubevirtSim::start(SimConfig::new().vm(
        "source",
        VmBehavior::Source {
            chunk_bytes: 4096,
            total_bytes: None,
        },
    ))
    .await
    .unwrap();
    let mut ws = dial(&sim, "ns", "source", Dial::default()).await;
    for _ in 0..10 {
        assert_eq!(next_payload(&mut ws).await.unwrap().len(), 4096);
    }
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    assert!(sim.wait_for_no_open_sessions(STEP).await);
}

#[tokio::test]
async fn open_session_counter_returns_to_zero() {
    let sim = KubevirtSim::start(
        SimConfig::new()
            .vm("ubuntu", VmBehavior::Rfb)
            .vm("echo", VmBehavior::Echo),
    )
    .await
    .unwrap();
    let mut sessions = Vec::new();
    for index in 0..6 {
        let vmi = if index % 2 == 0 { "ubuntu" } else { "echo" };
        sessions.push(dial(&sim, "ns", vmi, Dial::default()).await);
    }
    assert_eq!(sim.open_sessions(), 6);
    // Half leave politely, half just vanish.
    for (index, mut ws) in sessions.into_iter().enumerate() {
        if index < 3 {
            ws.close(None).await.unwrap();
        }
        drop(ws);
    }
    assert!(sim.wait_for_no_open_sessions(STEP).await);
    assert_eq!(sim.open_sessions(), 0);
    assert_eq!(sim.stats().sessions_opened, 6);
}

#[tokio::test]
async fn shutdown_closes_open_sessions_with_going_away() {
    let sim = KubevirtSim::start(SimConfig::new().vm("ubuntu", VmBehavior::Rfb))
        .await
        .unwrap();
    let addr = sim.local_addr();
    let mut ws = dial(&sim, "ns", "ubuntu", Dial::default()).await;
    let shutdown = tokio::spawn(sim.shutdown());
    let close_code = loop {
        match tokio::time::timeout(STEP, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close_code, Some(CloseCode::Away));
    while let Some(Ok(_)) = ws.next().await {}
    tokio::time::timeout(STEP, shutdown).await.unwrap().unwrap();
    // The listener is gone.
    let connect =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await;
    assert!(matches!(connect, Ok(Err(_))));
}
