//! `WireTransport` (the relay's own frame codec) against tokio-tungstenite peers and hand-made
//! frames on 127.0.0.1: both roles, every length encoding, fragments, per-hop pings, close
//! parsing, protocol violations, limits, memory released when quiet, and the relay moving data
//! both ways with matching checksums.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use proxy_core::{CloseFrame, EndReason, Frame, RelayConfig, TransportError, relay};
use proxy_wire::{WireLimits, WireRole, WireTransport};
use test_support::checksums::exchange;
use test_support::{pattern, tcp_pair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame as WsFrame, FrameHeader};

/// Our transport in `role` and a tungstenite peer in the opposite role.
async fn wire_and_peer(
    role: WireRole,
    limits: WireLimits,
) -> (WireTransport<TcpStream>, WebSocketStream<TcpStream>) {
    let (ours, theirs) = tcp_pair().await;
    let peer_role = match role {
        WireRole::Client => Role::Server,
        WireRole::Server => Role::Client,
    };
    let peer = WebSocketStream::from_raw_socket(theirs, peer_role, None).await;
    (WireTransport::new(ours, role, limits), peer)
}

/// Payload lengths across the 7-bit, 16-bit and 64-bit length encodings and the copy/segment
/// threshold.
const LENGTHS: [usize; 12] = [
    0, 1, 7, 125, 126, 127, 4095, 4096, 65_535, 65_536, 65_537, 300_000,
];

async fn data_crosses_both_ways(role: WireRole) {
    let (mut wire, mut peer) = wire_and_peer(role, WireLimits::default()).await;
    let messages: Vec<Vec<u8>> = LENGTHS
        .iter()
        .enumerate()
        .map(|(i, &len)| pattern(len, i as u8))
        .collect();

    let peer_side = async {
        for message in &messages {
            peer.feed(Message::binary(message.clone())).await.unwrap();
        }
        peer.feed(Message::text("héllo")).await.unwrap();
        peer.flush().await.unwrap();
        let mut echoed = Vec::new();
        while echoed.len() < messages.len() {
            match peer.next().await.unwrap().unwrap() {
                Message::Binary(data) => echoed.push(data.to_vec()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(peer.next().await.unwrap().unwrap(), Message::text("back"));
        echoed
    };
    let wire_side = async {
        let mut received = Vec::new();
        let mut still_masked = 0;
        for _ in &messages {
            match wire.next().await.unwrap().unwrap() {
                Frame::Binary(data) => {
                    received.push(data.to_vec());
                    wire.feed(Frame::Binary(data)).await.unwrap();
                }
                Frame::MaskedBinary(payload) => {
                    still_masked += 1;
                    received.push(payload.clone().unmask().to_vec());
                    wire.feed(Frame::MaskedBinary(payload)).await.unwrap();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // A browser's large messages are passed on masked; a server's never come masked.
        let large = LENGTHS.iter().filter(|&&len| len >= 4096).count();
        match role {
            WireRole::Server => assert_eq!(still_masked, large),
            WireRole::Client => assert_eq!(still_masked, 0),
        }
        assert_eq!(
            wire.next().await.unwrap().unwrap(),
            Frame::Text(Bytes::from("héllo"))
        );
        wire.feed(Frame::Text(Bytes::from_static(b"back")))
            .await
            .unwrap();
        wire.flush().await.unwrap();
        received
    };
    let (echoed, received) = tokio::join!(peer_side, wire_side);
    assert_eq!(received, messages);
    assert_eq!(echoed, messages);
    assert_eq!(
        wire.buffer_capacity(),
        0,
        "a drained transport holds buffers"
    );
}

#[tokio::test]
async fn data_of_every_length_encoding_crosses_both_ways_as_server() {
    data_crosses_both_ways(WireRole::Server).await;
}

#[tokio::test]
async fn data_of_every_length_encoding_crosses_both_ways_as_client() {
    // tungstenite's server refuses unmasked frames, so this also proves our masking.
    data_crosses_both_ways(WireRole::Client).await;
}

#[tokio::test]
async fn fragments_are_joined_and_pings_between_them_are_answered() {
    let (mut wire, mut peer) = wire_and_peer(WireRole::Server, WireLimits::default()).await;
    let parts = [pattern(10, 1), pattern(70_000, 2), pattern(3, 3)];
    peer.feed(Message::Frame(WsFrame::message(
        parts[0].clone(),
        OpCode::Data(Data::Binary),
        false,
    )))
    .await
    .unwrap();
    peer.feed(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    peer.feed(Message::Frame(WsFrame::message(
        parts[1].clone(),
        OpCode::Data(Data::Continue),
        false,
    )))
    .await
    .unwrap();
    peer.feed(Message::Frame(WsFrame::message(
        parts[2].clone(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    peer.flush().await.unwrap();

    assert_eq!(
        wire.next().await.unwrap().unwrap(),
        Frame::Ping(Bytes::from_static(b"are you there"))
    );
    assert_eq!(
        wire.next().await.unwrap().unwrap(),
        Frame::Binary(parts.concat().into())
    );
    // The pong went out without the relay writing anything.
    assert_eq!(
        peer.next().await.unwrap().unwrap(),
        Message::Pong(Bytes::from_static(b"are you there"))
    );
}

#[tokio::test]
async fn close_frames_carry_code_and_reason_and_end_the_stream() {
    let (mut wire, mut peer) = wire_and_peer(WireRole::Client, WireLimits::default()).await;
    peer.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: 4001u16.into(),
        reason: "lab over".into(),
    }))
    .await
    .unwrap();
    assert_eq!(
        wire.next().await.unwrap().unwrap(),
        Frame::Close(Some(CloseFrame::new(4001, "lab over")))
    );
    assert!(wire.next().await.is_none());
    wire.send(Frame::Close(Some(CloseFrame::new(4001, "lab over"))))
        .await
        .unwrap();
    // tungstenite completes its closing handshake with our reply.
    match peer.next().await {
        Some(Ok(Message::Close(Some(close)))) => {
            assert_eq!(
                (u16::from(close.code), close.reason.as_str()),
                (4001, "lab over")
            );
        }
        other => panic!("expected our close reply, got {other:?}"),
    }
    assert!(matches!(
        wire.send(Frame::Binary(Bytes::from_static(b"late"))).await,
        Err(TransportError::AlreadyClosed)
    ));
}

/// A frame as raw bytes, formatted by tungstenite's header code, masked when `mask` is given.
fn raw_frame(
    first_byte_flags: (bool, bool),
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) -> Vec<u8> {
    let (is_final, rsv1) = first_byte_flags;
    let header = FrameHeader {
        is_final,
        rsv1,
        rsv2: false,
        rsv3: false,
        opcode,
        mask,
    };
    let mut bytes = Vec::new();
    header.format(payload.len() as u64, &mut bytes).unwrap();
    let start = bytes.len();
    bytes.extend_from_slice(payload);
    if let Some(mask) = mask {
        for (i, byte) in bytes[start..].iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
    }
    bytes
}

/// Feeds `bytes` to a fresh transport in `role` and returns what it makes of them.
async fn first_item(
    role: WireRole,
    limits: WireLimits,
    bytes: Vec<u8>,
) -> Option<Result<Frame, TransportError>> {
    let (ours, mut theirs) = tcp_pair().await;
    let mut wire = WireTransport::new(ours, role, limits);
    theirs.write_all(&bytes).await.unwrap();
    // End of stream follows the bytes, so a transport waiting for more would see it.
    drop(theirs);
    wire.next().await
}

const MASK: Option<[u8; 4]> = Some([9, 8, 7, 6]);
const BINARY: OpCode = OpCode::Data(Data::Binary);

#[tokio::test]
async fn protocol_violations_are_refused() {
    let cases: Vec<(&str, WireRole, Vec<u8>)> = vec![
        (
            "unmasked client frame",
            WireRole::Server,
            raw_frame((true, false), BINARY, None, b"x"),
        ),
        (
            "masked server frame",
            WireRole::Client,
            raw_frame((true, false), BINARY, MASK, b"x"),
        ),
        (
            "reserved bit",
            WireRole::Server,
            raw_frame((true, true), BINARY, MASK, b"x"),
        ),
        (
            "continuation without a message",
            WireRole::Server,
            raw_frame((true, false), OpCode::Data(Data::Continue), MASK, b"x"),
        ),
        (
            "close code 1005 on the wire",
            WireRole::Server,
            raw_frame(
                (true, false),
                OpCode::Control(
                    tokio_tungstenite::tungstenite::protocol::frame::coding::Control::Close,
                ),
                MASK,
                &1005u16.to_be_bytes(),
            ),
        ),
        (
            "fragmented ping",
            WireRole::Server,
            raw_frame(
                (false, false),
                OpCode::Control(
                    tokio_tungstenite::tungstenite::protocol::frame::coding::Control::Ping,
                ),
                MASK,
                b"x",
            ),
        ),
        (
            "unknown opcode",
            WireRole::Server,
            vec![0x83, 0x80, 1, 2, 3, 4],
        ),
    ];
    for (name, role, bytes) in cases {
        match first_item(role, WireLimits::default(), bytes).await {
            Some(Err(TransportError::Protocol(_))) => {}
            other => panic!("{name}: expected a protocol error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn invalid_utf8_is_invalid_payload_and_code_points_may_span_fragments() {
    let text = OpCode::Data(Data::Text);
    let continuation = OpCode::Data(Data::Continue);
    let mut split_invalid = raw_frame((false, false), text, MASK, b"ok \xC3");
    split_invalid.extend(raw_frame((true, false), continuation, MASK, &[0x28]));
    let mut close_reason = 1000u16.to_be_bytes().to_vec();
    close_reason.extend_from_slice(&[0xff, 0xfe]);
    let cases = [
        (
            "a single frame",
            raw_frame((true, false), text, MASK, &[0xC3, 0x28]),
        ),
        ("split across fragments", split_invalid),
        (
            "a close reason",
            raw_frame(
                (true, false),
                OpCode::Control(
                    tokio_tungstenite::tungstenite::protocol::frame::coding::Control::Close,
                ),
                MASK,
                &close_reason,
            ),
        ),
    ];
    for (name, bytes) in cases {
        match first_item(WireRole::Server, WireLimits::default(), bytes).await {
            Some(Err(TransportError::InvalidPayload(_))) => {}
            other => panic!("{name}: expected invalid payload, got {other:?}"),
        }
    }
    // "é" (C3 A9) split between two fragments is valid text.
    let mut split_valid = raw_frame((false, false), text, MASK, b"caf\xC3");
    split_valid.extend(raw_frame((true, false), continuation, MASK, &[0xA9]));
    match first_item(WireRole::Server, WireLimits::default(), split_valid).await {
        Some(Ok(Frame::Text(bytes))) => assert_eq!(&bytes[..], "café".as_bytes()),
        other => panic!("expected the text, got {other:?}"),
    }
}

#[tokio::test]
async fn frames_and_messages_over_the_limit_are_refused() {
    let limits = WireLimits::max_message(1000);
    let too_long = raw_frame((true, false), BINARY, MASK, &pattern(1001, 0));
    assert!(matches!(
        first_item(WireRole::Server, limits, too_long).await,
        Some(Err(TransportError::MessageTooLarge {
            size: 1001,
            limit: 1000
        }))
    ));
    let mut fragments = raw_frame((false, false), BINARY, MASK, &pattern(600, 0));
    fragments.extend(raw_frame(
        (true, false),
        OpCode::Data(Data::Continue),
        MASK,
        &pattern(600, 1),
    ));
    assert!(matches!(
        first_item(WireRole::Server, limits, fragments).await,
        Some(Err(TransportError::MessageTooLarge {
            size: 1200,
            limit: 1000
        }))
    ));
    let at_limit = raw_frame((true, false), BINARY, MASK, &pattern(1000, 2));
    assert!(matches!(
        first_item(WireRole::Server, limits, at_limit).await,
        Some(Ok(Frame::Binary(data))) if data.len() == 1000
    ));
}

#[tokio::test]
async fn a_connection_cut_mid_frame_is_lost_not_closed() {
    let mut bytes = raw_frame((true, false), BINARY, MASK, &pattern(5000, 0));
    bytes.truncate(3000);
    assert!(matches!(
        first_item(WireRole::Server, WireLimits::default(), bytes).await,
        Some(Err(TransportError::ConnectionLost))
    ));
}

#[tokio::test]
async fn bytes_read_past_the_handshake_are_parsed_first() {
    let (ours, mut theirs) = tcp_pair().await;
    let first = raw_frame((true, false), BINARY, None, b"RFB 003.008\n");
    let second = raw_frame((true, false), BINARY, None, b"after");
    let mut wire = WireTransport::from_partially_read(
        ours,
        WireRole::Client,
        WireLimits::default(),
        BytesMut::from(&first[..]),
    );
    theirs.write_all(&second).await.unwrap();
    assert_eq!(
        wire.next().await.unwrap().unwrap(),
        Frame::Binary(Bytes::from_static(b"RFB 003.008\n"))
    );
    assert_eq!(
        wire.next().await.unwrap().unwrap(),
        Frame::Binary(Bytes::from_static(b"after"))
    );
    // What we write as a client is masked: the raw bytes show a mask bit and a masked payload.
    wire.send(Frame::Binary(Bytes::from_static(b"key")))
        .await
        .unwrap();
    let mut written = [0u8; 9];
    theirs.read_exact(&mut written).await.unwrap();
    assert_eq!(written[..2], [0x82, 0x83]);
    let mask = &written[2..6];
    let unmasked: Vec<u8> = written[6..].iter().zip(mask).map(|(b, m)| b ^ m).collect();
    assert_eq!(unmasked, b"key");
}

#[tokio::test]
async fn a_large_browser_message_reaches_the_upstream_byte_for_byte() {
    let (browser_leg, mut browser) = tcp_pair().await;
    let (upstream_leg, mut vm) = tcp_pair().await;
    let mut from_browser = WireTransport::new(browser_leg, WireRole::Server, WireLimits::default());
    let mut to_upstream = WireTransport::new(upstream_leg, WireRole::Client, WireLimits::default());
    let sent = raw_frame((true, false), BINARY, MASK, &pattern(70_000, 5));
    browser.write_all(&sent).await.unwrap();

    let frame = from_browser.next().await.unwrap().unwrap();
    assert!(matches!(&frame, Frame::MaskedBinary(payload) if payload.len() == 70_000));
    to_upstream.send(frame).await.unwrap();
    let mut forwarded = vec![0u8; sent.len()];
    vm.read_exact(&mut forwarded).await.unwrap();
    assert_eq!(forwarded, sent, "header, mask and masked payload unchanged");
}

#[tokio::test]
async fn the_relay_moves_data_both_ways_through_wire_transports_intact() {
    const TOTAL: usize = 16 * 1024 * 1024;
    let (client_wire, mut browser) = wire_and_peer(WireRole::Server, WireLimits::default()).await;
    let (upstream_wire, mut vm) = wire_and_peer(WireRole::Client, WireLimits::default()).await;
    let session = tokio::spawn(async move {
        relay(
            client_wire,
            upstream_wire,
            &RelayConfig::default(),
            std::future::pending(),
        )
        .await
    });

    let ((browser_sent, browser_received), (vm_sent, vm_received)) = tokio::join!(
        exchange(&mut browser, 0xbeef, TOTAL),
        exchange(&mut vm, 0xc0ffee, TOTAL)
    );
    assert_eq!(browser_sent.length, TOTAL as u64);
    assert_eq!(vm_sent.length, TOTAL as u64);
    assert_eq!(browser_sent, vm_received, "client to upstream");
    assert_eq!(vm_sent, browser_received, "upstream to client");

    browser
        .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 1000u16.into(),
            reason: "done".into(),
        }))
        .await
        .unwrap();
    // The VM sees the close forwarded; tungstenite answers it, completing both handshakes.
    match vm.next().await.unwrap().unwrap() {
        Message::Close(Some(close)) => assert_eq!(u16::from(close.code), 1000),
        other => panic!("expected the forwarded close, got {other:?}"),
    }
    while let Some(Ok(_)) = vm.next().await {}
    while let Some(Ok(_)) = browser.next().await {}
    let outcome = session.await.unwrap();
    assert!(
        matches!(&outcome.ended_by, EndReason::ClientClosed(Some(close)) if close.code == 1000),
        "{outcome:?}"
    );
    assert_eq!(outcome.client_to_upstream.bytes, TOTAL as u64);
    assert_eq!(outcome.upstream_to_client.bytes, TOTAL as u64);
}

/// One message of a generated exchange: binary or text, of a length that crosses the length
/// encodings and the pass-through threshold.
fn message_strategy() -> impl proptest::strategy::Strategy<Value = Message> {
    use proptest::prelude::*;
    prop_oneof![
        (0usize..70_000, any::<u8>()).prop_map(|(len, seed)| Message::binary(pattern(len, seed))),
        "[a-zé€]{0,200}".prop_map(Message::text),
    ]
}

fn as_frame(message: &Message) -> Frame {
    match message {
        Message::Binary(data) => Frame::Binary(data.clone()),
        Message::Text(text) => Frame::Text(Bytes::copy_from_slice(text.as_bytes())),
        other => panic!("not generated: {other:?}"),
    }
}

fn unmasked(frame: Frame) -> Frame {
    match frame {
        Frame::MaskedBinary(payload) => Frame::Binary(payload.unmask()),
        other => other,
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// Whatever the messages and however the byte stream is cut (a pipe of a few bytes up to
    /// 16 KiB), everything arrives once and in order, both ways and in both roles.
    #[test]
    fn every_message_arrives_once_in_order_through_any_chunking(
        to_wire in proptest::collection::vec(message_strategy(), 0..12),
        from_wire in proptest::collection::vec(message_strategy(), 0..12),
        pipe_capacity in 1usize..16_384,
        server_role in proptest::bool::ANY,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let (ours, theirs) = tokio::io::duplex(pipe_capacity);
            let (role, peer_role) = if server_role {
                (WireRole::Server, Role::Client)
            } else {
                (WireRole::Client, Role::Server)
            };
            let mut wire = WireTransport::new(ours, role, WireLimits::default());
            let mut peer = WebSocketStream::from_raw_socket(theirs, peer_role, None).await;
            let peer_side = async {
                let (mut sink, mut stream) = (&mut peer).split();
                let send = async {
                    for message in &to_wire {
                        sink.feed(message.clone()).await.unwrap();
                    }
                    sink.flush().await.unwrap();
                };
                let receive = async {
                    let mut received = Vec::new();
                    while received.len() < from_wire.len() {
                        received.push(stream.next().await.unwrap().unwrap());
                    }
                    received
                };
                tokio::join!(send, receive).1
            };
            let wire_side = async {
                let (mut sink, mut stream) = (&mut wire).split();
                let send = async {
                    for message in &from_wire {
                        sink.feed(as_frame(message)).await.unwrap();
                    }
                    sink.flush().await.unwrap();
                };
                let receive = async {
                    let mut received = Vec::new();
                    while received.len() < to_wire.len() {
                        received.push(unmasked(stream.next().await.unwrap().unwrap()));
                    }
                    received
                };
                tokio::join!(send, receive).1
            };
            let (peer_received, wire_received) = tokio::join!(peer_side, wire_side);
            assert_eq!(peer_received, from_wire);
            let expected: Vec<Frame> = to_wire.iter().map(as_frame).collect();
            assert_eq!(wire_received, expected);
        });
    }
}
