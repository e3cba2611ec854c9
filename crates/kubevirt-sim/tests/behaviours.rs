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

#[tokio::test]
async fn echo_greets_first_and_a_closing_console_closes_with_its_code() {
    let sim = KubevirtSim::start(
        SimConfig::new()
            .greeting(&b"RFB 003.008\n"[..])
            .vm("echo", VmBehavior::Echo)
            .vm("closer", "closes:4321".parse().unwrap()),
    )
    .await
    .unwrap();
    let mut echo = dial(&sim, "ns", "echo", Dial::default()).await;
    assert_eq!(next_payload(&mut echo).await.unwrap(), "RFB 003.008\n");
    echo.send(Message::text("back")).await.unwrap();
    assert_eq!(next_payload(&mut echo).await.unwrap(), "back");
    echo.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::from(4100),
        reason: "tab closed".into(),
    }))
    .await
    .unwrap();
    while let Some(Ok(_)) = echo.next().await {}

    let mut closer = dial(&sim, "ns", "closer", Dial::default()).await;
    assert_eq!(next_payload(&mut closer).await.unwrap(), "RFB 003.008\n");
    let close = loop {
        match closer.next().await.unwrap().unwrap() {
            Message::Close(frame) => break frame.unwrap(),
            _ => continue,
        }
    };
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4321, "console ended")
    );
    while let Some(Ok(_)) = closer.next().await {}
    assert!(sim.wait_for_no_open_sessions(STEP).await);
    // Both close frames the clients sent: the tab's, and the reply to the console's close.
    assert_eq!(
        sim.received_closes(),
        [
            Some((4100, "tab closed".to_owned())),
            Some((4321, "console ended".to_owned()))
        ]
    );
    let stats = sim.stats();
    assert_eq!(stats.connections_accepted, 2);
    tokio::time::timeout(STEP, async {
        while sim.stats().connections_open > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("both TCP connections are closed");
}

#[test]
fn closing_consoles_parse_only_codes_that_may_be_sent() {
    assert_eq!(
        "closes:1000".parse::<VmBehavior>().unwrap(),
        VmBehavior::Closes {
            code: 1000,
            reason: "console ended".to_owned()
        }
    );
    for bad in ["closes:1006", "closes:5000", "closes:x", "closes"] {
        assert!(bad.parse::<VmBehavior>().is_err(), "{bad}");
    }
}

#[tokio::test]
async fn an_authorization_header_without_a_check_is_recorded_and_a_path_prefix_is_served() {
    let sim = KubevirtSim::start(
        SimConfig::new()
            .path_prefix("/k8s/clusters/c-1/")
            .vm("echo", VmBehavior::Echo),
    )
    .await
    .unwrap();
    let prefixed = format!("/k8s/clusters/c-1{}", KubevirtSim::vnc_path("ns", "echo"));
    let options = Dial {
        token: Some("not-expected"),
        raw_path: Some(&prefixed),
        ..Dial::default()
    };
    drop(dial(&sim, "ns", "echo", options).await);
    let (code, _) = common::refusal(&sim, "ns", "echo", Dial::default()).await;
    assert_eq!(code, 404, "outside the prefix");
    let requests = sim.requests();
    assert_eq!(
        requests[0].authorization,
        kubevirt_sim::AuthorizationOutcome::UncheckedHeader
    );
    assert_eq!(requests[0].vmi.as_deref(), Some("echo"));
    assert_eq!(
        requests[1].authorization,
        kubevirt_sim::AuthorizationOutcome::NotChecked
    );
}
