//! Property tests: random frame sequences both ways, random bursts, random stalls and slow
//! readers. Every data frame arrives exactly once and in order, and the counters match.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::Chaos;
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use proxy_core::{CloseFrame, EndReason, Frame, MemoryTransport, RelayConfig, Side, relay};

fn data_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..2048)
            .prop_map(|payload| Frame::Binary(Bytes::from(payload))),
        1 => ".{0,64}".prop_map(|text: String| Frame::Text(Bytes::from(text))),
    ]
}

/// How one scripted peer behaves: it writes its frames in bursts of `burst` and pauses its
/// reading every `read_pause` frames, so it is sometimes a fast and sometimes a slow sink.
#[derive(Debug, Clone)]
struct PeerBehaviour {
    frames: Vec<Frame>,
    burst: usize,
    read_pause: usize,
}

fn peer_behaviour() -> impl Strategy<Value = PeerBehaviour> {
    (
        proptest::collection::vec(data_frame(), 0..120),
        1..16usize,
        1..8usize,
    )
        .prop_map(|(frames, burst, read_pause)| PeerBehaviour {
            frames,
            burst,
            read_pause,
        })
}

/// Runs one peer: sends its frames while reading `expected` data frames from the relay. The
/// closing peer then sends `close` and waits for the reply; the other one waits for the
/// forwarded close and answers it. Returns the data received and the close frame seen.
async fn run_peer(
    transport: MemoryTransport,
    behaviour: PeerBehaviour,
    expected: usize,
    closes_first: bool,
    close: CloseFrame,
) -> (Vec<Frame>, Option<CloseFrame>) {
    let (mut sink, mut stream) = transport.split();
    let send = async {
        for burst in behaviour.frames.chunks(behaviour.burst) {
            for frame in burst {
                sink.feed(frame.clone()).await.unwrap();
            }
            sink.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
    };
    let receive = async {
        let mut received = Vec::new();
        while received.len() < expected {
            match stream.next().await {
                Some(Ok(frame)) if frame.is_data() => received.push(frame),
                other => panic!("expected a data frame, got {other:?}"),
            }
            if received.len() % behaviour.read_pause == 0 {
                tokio::task::yield_now().await;
            }
        }
        received
    };
    let ((), mut received) = tokio::join!(send, receive);

    let close_seen = if closes_first {
        sink.send(Frame::Close(Some(close))).await.unwrap();
        match stream.next().await {
            Some(Ok(Frame::Close(reply))) => reply,
            other => panic!("expected the close reply, got {other:?}"),
        }
    } else {
        // Anything the relay sends now must be the forwarded close.
        loop {
            match stream.next().await {
                Some(Ok(Frame::Close(forwarded))) => {
                    sink.send(Frame::Close(forwarded.clone())).await.unwrap();
                    break forwarded;
                }
                Some(Ok(frame)) => received.push(frame),
                other => panic!("expected the forwarded close, got {other:?}"),
            }
        }
    };
    (received, close_seen)
}

fn bytes_of(frames: &[Frame]) -> u64 {
    frames.iter().map(|frame| frame.payload_len() as u64).sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_frame_arrives_once_in_order_and_counters_match(
        browser in peer_behaviour(),
        console in peer_behaviour(),
        client_capacity in 1..6usize,
        upstream_capacity in 1..6usize,
        client_stalls in proptest::collection::vec(proptest::bool::weighted(0.3), 0..16),
        upstream_stalls in proptest::collection::vec(proptest::bool::weighted(0.3), 0..16),
        client_closes in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let close = CloseFrame::new(4000, "property done");
        let (browser_end, client) = MemoryTransport::pair(client_capacity);
        let (upstream, console_end) = MemoryTransport::pair(upstream_capacity);
        let client = Chaos::new(client, client_stalls);
        let upstream = Chaos::new(upstream, upstream_stalls);
        let config = RelayConfig { keepalive: None, upstream_keepalive: None, ..RelayConfig::default() };

        let sent_by_browser = browser.frames.clone();
        let sent_by_console = console.frames.clone();
        let (outcome, (at_browser, browser_close), (at_console, console_close)) =
            runtime.block_on(async {
                let session = tokio::spawn(async move {
                    relay(client, upstream, &config, std::future::pending()).await
                });
                let browser_peer = run_peer(
                    browser_end, browser, sent_by_console.len(), client_closes, close.clone(),
                );
                let console_peer = run_peer(
                    console_end, console, sent_by_browser.len(), !client_closes, close.clone(),
                );
                let (at_browser, at_console) = tokio::join!(browser_peer, console_peer);
                (session.await.unwrap(), at_browser, at_console)
            });

        prop_assert_eq!(&at_console, &sent_by_browser);
        prop_assert_eq!(&at_browser, &sent_by_console);
        prop_assert_eq!(browser_close, Some(close.clone()));
        prop_assert_eq!(console_close, Some(close.clone()));
        prop_assert_eq!(outcome.client_to_upstream.frames, sent_by_browser.len() as u64);
        prop_assert_eq!(outcome.client_to_upstream.bytes, bytes_of(&sent_by_browser));
        prop_assert_eq!(outcome.upstream_to_client.frames, sent_by_console.len() as u64);
        prop_assert_eq!(outcome.upstream_to_client.bytes, bytes_of(&sent_by_console));
        let closer = match &outcome.ended_by {
            EndReason::ClientClosed(Some(c)) if *c == close => Side::Client,
            EndReason::UpstreamClosed(Some(c)) if *c == close => Side::Upstream,
            other => panic!("unexpected end: {other:?}"),
        };
        prop_assert_eq!(closer == Side::Client, client_closes);
        prop_assert_eq!(outcome.close_sent_to_client, Some(close.clone()));
        prop_assert_eq!(outcome.close_sent_to_upstream, Some(close));
    }
}
