//! permessage-deflate in `WireTransport` (the browser leg, server role), with hand-made frames on
//! 127.0.0.1: compressed browser messages (whole and fragmented) are inflated, large sent
//! messages go out with RSV1 and inflate back, small and incompressible ones go out as they are,
//! RSV1 where the extension does not allow it is a protocol error, and a message that inflates
//! past the limit is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use proxy_core::{Frame, TransportError};
use proxy_wire::{
    DEFLATE_MIN_MESSAGE_BYTES, FrameHeader, OpCode, PerMessageDeflate, WireLimits, WireRole,
    WireTransport, deflate_message, inflate_message,
};
use test_support::tcp_pair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn accepted() -> Option<PerMessageDeflate> {
    PerMessageDeflate::negotiate(["permessage-deflate; client_max_window_bits"])
}

/// A browser frame (masked) with the given FIN, RSV1 and opcode.
fn browser_frame(is_final: bool, rsv1: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        is_final,
        reserved_bits: [rsv1, false, false],
        opcode,
        mask: Some(MASK),
        payload_len: payload.len() as u64,
    };
    let mut bytes = bytes::BytesMut::new();
    header.write_to(&mut bytes);
    let start = bytes.len();
    bytes.extend_from_slice(payload);
    proxy_core::apply_mask(&mut bytes[start..], MASK);
    bytes.to_vec()
}

/// Our server-role transport with deflate as given, and the raw browser end.
async fn browser_leg(
    deflate: Option<PerMessageDeflate>,
    limits: WireLimits,
) -> (WireTransport<TcpStream>, RawBrowser) {
    let (ours, theirs) = tcp_pair().await;
    let wire = WireTransport::new(ours, WireRole::Server, limits).with_permessage_deflate(deflate);
    let browser = RawBrowser {
        stream: theirs,
        buffer: Vec::new(),
    };
    (wire, browser)
}

/// The raw browser end: reads the unmasked frames the proxy sends.
struct RawBrowser {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl RawBrowser {
    /// The next frame: (RSV1, opcode, payload).
    async fn read_frame(&mut self) -> (bool, OpCode, Vec<u8>) {
        loop {
            if let Some((header, header_len)) = FrameHeader::parse(&self.buffer).unwrap() {
                let end = header_len + header.payload_len as usize;
                if self.buffer.len() >= end {
                    assert!(header.mask.is_none() && header.is_final);
                    let payload = self.buffer[header_len..end].to_vec();
                    self.buffer.drain(..end);
                    return (header.reserved_bits[0], header.opcode, payload);
                }
            }
            let mut chunk = [0u8; 64 * 1024];
            let read = self.stream.read(&mut chunk).await.unwrap();
            assert!(read > 0, "the stream ended inside a frame");
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }
}

/// A framebuffer-update-like message: runs of a few colours, as Tight palette rects are.
fn screenful(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| [0u8, 7, seed, 0xff][(i / 13 + i / 97) % 4])
        .collect()
}

#[tokio::test]
async fn compressed_browser_messages_are_inflated_whole_and_fragmented() {
    let (mut wire, mut browser) = browser_leg(accepted(), WireLimits::default()).await;
    let text = "a console key press, deflated ".repeat(20);
    let compressed_text = deflate_message(text.as_bytes()).unwrap();
    let binary = screenful(50_000, 3);
    let compressed_binary = deflate_message(&binary).unwrap();
    let (first, rest) = compressed_binary.split_at(compressed_binary.len() / 3);
    let mut bytes = browser_frame(true, true, OpCode::Text, &compressed_text);
    bytes.extend(browser_frame(false, true, OpCode::Binary, first));
    bytes.extend(browser_frame(true, false, OpCode::Continuation, rest));
    bytes.extend(browser_frame(true, false, OpCode::Binary, b"plain"));
    browser.write_all(&bytes).await.unwrap();

    assert_eq!(
        wire.next().await.unwrap().unwrap(),
        Frame::Text(text.into())
    );
    assert_eq!(
        wire.next().await.unwrap().unwrap(),
        Frame::Binary(binary.into())
    );
    assert_eq!(
        wire.next().await.unwrap().unwrap(),
        Frame::Binary("plain".into())
    );
}

#[tokio::test]
async fn large_messages_go_out_deflated_small_and_incompressible_ones_as_they_are() {
    let (mut wire, mut browser) = browser_leg(accepted(), WireLimits::default()).await;
    assert!(wire.permessage_deflate());
    let update = screenful(8_000, 9);
    let small = vec![0u8; DEFLATE_MIN_MESSAGE_BYTES - 1];
    let noise = test_support::noise(2048, 0x9e37_79b9_7f4a_7c15);
    for message in [&update, &small, &noise] {
        wire.feed(Frame::Binary(message.clone().into()))
            .await
            .unwrap();
    }
    wire.flush().await.unwrap();

    let (rsv1, opcode, payload) = browser.read_frame().await;
    assert!(rsv1 && opcode == OpCode::Binary);
    assert!(payload.len() < update.len() / 2, "{}", payload.len());
    assert_eq!(inflate_message(&payload, None).unwrap(), update);
    for expected in [&small, &noise] {
        let (rsv1, _, payload) = browser.read_frame().await;
        assert!(!rsv1);
        assert_eq!(&payload, expected);
    }
}

#[tokio::test]
async fn without_the_extension_nothing_is_compressed_and_rsv1_is_refused() {
    let (mut wire, mut browser) = browser_leg(None, WireLimits::default()).await;
    let update = screenful(8_000, 1);
    wire.send(Frame::Binary(update.clone().into()))
        .await
        .unwrap();
    let (rsv1, _, payload) = browser.read_frame().await;
    assert!(!rsv1);
    assert_eq!(payload, update);
    let compressed = deflate_message(&update).unwrap();
    browser
        .write_all(&browser_frame(true, true, OpCode::Binary, &compressed))
        .await
        .unwrap();
    assert!(matches!(
        wire.next().await,
        Some(Err(TransportError::Protocol(_)))
    ));
}

#[tokio::test]
async fn rsv1_on_a_continuation_or_a_control_frame_is_a_protocol_error() {
    let cases = [
        {
            let mut bytes = browser_frame(false, false, OpCode::Binary, b"start");
            bytes.extend(browser_frame(true, true, OpCode::Continuation, b"rest"));
            bytes
        },
        browser_frame(true, true, OpCode::Ping, b"p"),
    ];
    for bytes in cases {
        let (mut wire, mut browser) = browser_leg(accepted(), WireLimits::default()).await;
        browser.write_all(&bytes).await.unwrap();
        match wire.next().await {
            Some(Err(TransportError::Protocol(_))) => {}
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_message_that_inflates_past_the_limit_or_does_not_inflate_is_refused() {
    let limits = WireLimits::max_message(64 * 1024);
    let (mut wire, mut browser) = browser_leg(accepted(), limits).await;
    let bomb = deflate_message(&vec![0u8; 1 << 20]).unwrap();
    browser
        .write_all(&browser_frame(true, true, OpCode::Binary, &bomb))
        .await
        .unwrap();
    assert!(matches!(
        wire.next().await,
        Some(Err(TransportError::MessageTooLarge { limit: 65536, .. }))
    ));

    let (mut wire, mut browser) = browser_leg(accepted(), limits).await;
    browser
        .write_all(&browser_frame(true, true, OpCode::Binary, &[0xff; 12]))
        .await
        .unwrap();
    assert!(matches!(
        wire.next().await,
        Some(Err(TransportError::Protocol(_)))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_message_crosses_a_deflating_leg_unchanged(
        messages in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..3000),
                (1usize..20_000, any::<u8>()).prop_map(|(len, seed)| screenful(len, seed)),
            ],
            1..6,
        )
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (mut wire, mut browser) = browser_leg(accepted(), WireLimits::default()).await;
            for message in &messages {
                wire.feed(Frame::Binary(message.clone().into())).await.unwrap();
            }
            wire.flush().await.unwrap();
            for message in &messages {
                let (rsv1, _, payload) = browser.read_frame().await;
                let received = if rsv1 {
                    inflate_message(&payload, None).unwrap().to_vec()
                } else {
                    payload
                };
                prop_assert_eq!(&received, message);
                // Back the other way, compressed as a browser would.
                let frame = match deflate_message(message) {
                    Some(compressed) => browser_frame(true, true, OpCode::Binary, &compressed),
                    None => browser_frame(true, false, OpCode::Binary, message),
                };
                browser.write_all(&frame).await.unwrap();
                let echoed = match wire.next().await.unwrap().unwrap() {
                    Frame::Binary(data) => data.to_vec(),
                    Frame::MaskedBinary(payload) => payload.unmask().to_vec(),
                    other => panic!("unexpected {other:?}"),
                };
                prop_assert_eq!(&echoed, message);
            }
            Ok(())
        })?;
    }
}
