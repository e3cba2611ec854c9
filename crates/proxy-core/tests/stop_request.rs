//! A session ended from outside ([`relay_controlled`]): each side gets the close frame the
//! request names, the outcome carries its label, and the live counters follow the relay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use proxy_core::{
    CloseFrame, EndReason, Frame, LiveStats, MemoryTransport, RelayConfig, StopRequest,
    relay_controlled,
};
use tokio::sync::oneshot;

#[tokio::test]
async fn a_close_request_sends_each_side_its_frame_and_counters_stay_current() {
    let (mut browser, client) = MemoryTransport::pair(8);
    let (upstream, mut console) = MemoryTransport::pair(8);
    let config = RelayConfig {
        keepalive: None,
        upstream_keepalive: None,
        ..RelayConfig::default()
    };
    let live = Arc::new(LiveStats::default());
    let (stop, stopped) = oneshot::channel::<StopRequest>();
    let session = tokio::spawn({
        let live = Arc::clone(&live);
        async move {
            let stop = async move { stopped.await.unwrap_or(StopRequest::Shutdown) };
            relay_controlled(client, upstream, &config, stop, Some(live)).await
        }
    });

    browser
        .send(Frame::Binary(Bytes::from_static(b"key")))
        .await
        .unwrap();
    assert_eq!(
        console.next().await.unwrap().unwrap(),
        Frame::Binary(Bytes::from_static(b"key"))
    );
    console
        .send(Frame::Binary(Bytes::from(vec![1u8; 100])))
        .await
        .unwrap();
    browser.next().await.unwrap().unwrap();
    // The relay has delivered both frames; its next poll publishes them.
    tokio::task::yield_now().await;
    assert_eq!(live.client_to_upstream().bytes, 3);
    assert_eq!(live.upstream_to_client().bytes, 100);
    assert_eq!(live.upstream_to_client().frames, 1);

    stop.send(StopRequest::Close {
        to_client: CloseFrame::new(4410, "closed by operator: exam over"),
        to_upstream: CloseFrame::new(1000, "closed by operator"),
        label: "operator_closed",
    })
    .unwrap();
    assert_eq!(
        browser.next().await.unwrap().unwrap(),
        Frame::Close(Some(CloseFrame::new(4410, "closed by operator: exam over")))
    );
    assert_eq!(
        console.next().await.unwrap().unwrap(),
        Frame::Close(Some(CloseFrame::new(1000, "closed by operator")))
    );
    browser
        .send(Frame::Close(Some(CloseFrame::new(4410, ""))))
        .await
        .unwrap();
    console
        .send(Frame::Close(Some(CloseFrame::new(1000, ""))))
        .await
        .unwrap();
    let outcome = session.await.unwrap();
    assert!(matches!(
        outcome.ended_by,
        EndReason::Requested("operator_closed")
    ));
    assert_eq!(outcome.ended_by.label(), "operator_closed");
    assert_eq!(outcome.client_to_upstream.bytes, 3);
    assert_eq!(
        outcome.close_sent_to_client.map(|close| close.code),
        Some(4410)
    );
}
