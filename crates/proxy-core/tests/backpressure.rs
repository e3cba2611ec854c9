//! A slow side slows the other: the relay buffers a bounded number of frames per direction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use proxy_core::{Frame, MemoryTransport, RelayConfig, relay};

#[tokio::test(start_paused = true)]
async fn a_reader_that_stops_stalls_the_writer_after_a_bounded_number_of_frames() {
    const CAPACITY: usize = 4;
    let (mut browser, client) = MemoryTransport::pair(CAPACITY);
    let (upstream, mut console) = MemoryTransport::pair(CAPACITY);
    let config = RelayConfig {
        keepalive: None,
        upstream_keepalive: None,
        ..RelayConfig::default()
    };
    let session =
        tokio::spawn(async move { relay(client, upstream, &config, std::future::pending()).await });

    // The console reads nothing: the browser can only get so far before its sends block.
    let mut accepted = 0usize;
    let frame = Frame::Binary(Bytes::from(vec![7u8; 1024]));
    while tokio::time::timeout(Duration::from_secs(1), browser.send(frame.clone()))
        .await
        .is_ok()
    {
        accepted += 1;
        assert!(
            accepted < 1000,
            "the relay kept accepting frames nobody reads"
        );
    }
    // Each pair holds `CAPACITY` in flight plus `CAPACITY` unflushed at the writer, and the
    // relay holds one frame it has read but not yet handed on.
    let bound = 2 * (2 * CAPACITY) + 1 + 1;
    assert!(
        accepted <= bound,
        "{accepted} frames buffered, bound {bound}"
    );

    // Once the console reads again, everything flows, in order and once.
    let mut received = 0usize;
    while received < accepted {
        assert_eq!(console.next().await.unwrap().unwrap(), frame);
        received += 1;
    }
    // The send that timed out left its frame queued at the browser; it arrives before the close.
    browser.send(Frame::Close(None)).await.unwrap();
    loop {
        match console.next().await.unwrap().unwrap() {
            Frame::Close(None) => break,
            other => {
                assert_eq!(other, frame);
                received += 1;
            }
        }
    }
    console.send(Frame::Close(None)).await.unwrap();
    let outcome = session.await.unwrap();
    assert_eq!(outcome.client_to_upstream.frames, received as u64);
}
