//! The close-propagation matrix: who ends the session and exactly which close frames each side sees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Faulty, answer_close, assert_ends, close, read_until_close};
use futures_util::{SinkExt, StreamExt};
use proxy_core::{
    EndReason, Frame, MemoryTransport, RelayConfig, RelayOutcome, Side, TransportError, close_code,
    relay,
};

fn config() -> RelayConfig {
    RelayConfig {
        keepalive: None,
        upstream_keepalive: None,
        close_timeout: Duration::from_secs(5),
        ..RelayConfig::default()
    }
}

fn spawn_relay<C, U>(client: C, upstream: U) -> tokio::task::JoinHandle<RelayOutcome>
where
    C: proxy_core::FrameTransport + 'static,
    U: proxy_core::FrameTransport + 'static,
{
    tokio::spawn(async move { relay(client, upstream, &config(), std::future::pending()).await })
}

fn binary(payload: &'static [u8]) -> Frame {
    Frame::Binary(Bytes::from_static(payload))
}

#[tokio::test(start_paused = true)]
async fn client_close_is_forwarded_with_code_and_reason_and_answered() {
    let (mut browser, client) = MemoryTransport::pair(4);
    let (upstream, mut console) = MemoryTransport::pair(4);
    let session = spawn_relay(client, upstream);

    browser.send(binary(b"last words")).await.unwrap();
    browser
        .send(Frame::Close(Some(close(4000, "user left"))))
        .await
        .unwrap();

    let (data, received) = read_until_close(&mut console).await;
    assert_eq!(data, vec![binary(b"last words")]);
    assert_eq!(received, Some(Some(close(4000, "user left"))));
    console
        .send(Frame::Close(Some(close(4000, "user left"))))
        .await
        .unwrap();

    let (_, reply) = read_until_close(&mut browser).await;
    assert_eq!(reply, Some(Some(close(4000, "user left"))));

    let outcome = session.await.unwrap();
    assert!(
        matches!(&outcome.ended_by, EndReason::ClientClosed(Some(c)) if *c == close(4000, "user left"))
    );
    assert_eq!(outcome.ended_by.label(), "client_closed");
    assert_eq!(
        outcome.close_sent_to_upstream,
        Some(close(4000, "user left"))
    );
    assert_eq!(outcome.close_sent_to_client, Some(close(4000, "user left")));
    assert_eq!(outcome.client_to_upstream.frames, 1);
    assert_eq!(outcome.client_to_upstream.bytes, 10);
    assert_ends(&mut browser).await;
    assert_ends(&mut console).await;
}

#[tokio::test(start_paused = true)]
async fn upstream_close_is_forwarded_with_code_and_reason_and_answered() {
    let (mut browser, client) = MemoryTransport::pair(4);
    let (upstream, mut console) = MemoryTransport::pair(4);
    let session = spawn_relay(client, upstream);

    console
        .send(Frame::Close(Some(close(close_code::NORMAL, "vm stopped"))))
        .await
        .unwrap();

    assert_eq!(
        answer_close(&mut browser).await,
        Some(close(close_code::NORMAL, "vm stopped"))
    );
    let (_, reply) = read_until_close(&mut console).await;
    assert_eq!(reply, Some(Some(close(close_code::NORMAL, "vm stopped"))));

    let outcome = session.await.unwrap();
    assert!(
        matches!(&outcome.ended_by, EndReason::UpstreamClosed(Some(c)) if c.reason == "vm stopped")
    );
    assert_eq!(outcome.ended_by.label(), "upstream_closed");
    assert_eq!(
        outcome.close_sent_to_client,
        Some(close(close_code::NORMAL, "vm stopped"))
    );
    assert_eq!(
        outcome.close_sent_to_upstream,
        Some(close(close_code::NORMAL, "vm stopped"))
    );
}

#[tokio::test(start_paused = true)]
async fn close_without_status_is_passed_on_without_status() {
    let (mut browser, client) = MemoryTransport::pair(4);
    let (upstream, mut console) = MemoryTransport::pair(4);
    let session = spawn_relay(client, upstream);

    browser.send(Frame::Close(None)).await.unwrap();
    assert_eq!(answer_close(&mut console).await, None);
    assert_eq!(read_until_close(&mut browser).await.1, Some(None));

    let outcome = session.await.unwrap();
    assert!(matches!(outcome.ended_by, EndReason::ClientClosed(None)));
    let no_status = close(close_code::NO_STATUS, "");
    assert_eq!(outcome.close_sent_to_upstream, Some(no_status.clone()));
    assert_eq!(outcome.close_sent_to_client, Some(no_status));
}

#[tokio::test(start_paused = true)]
async fn client_protocol_error_closes_upstream_with_1011_and_tells_the_client_1002() {
    let (mut browser, client) = MemoryTransport::pair(4);
    let (client, fault) = Faulty::new(client);
    let (upstream, mut console) = MemoryTransport::pair(4);
    let session = spawn_relay(client, upstream);

    browser.send(binary(b"fine")).await.unwrap();
    assert_eq!(console.next().await.unwrap().unwrap(), binary(b"fine"));
    fault.fail_next_read(TransportError::Protocol("bad opcode".into()));
    browser.send(binary(b"wakes the relay")).await.unwrap();

    assert_eq!(
        answer_close(&mut console).await,
        Some(close(close_code::INTERNAL_ERROR, "client connection error"))
    );
    assert_eq!(
        read_until_close(&mut browser).await.1,
        Some(Some(close(close_code::PROTOCOL_ERROR, "protocol error")))
    );

    let outcome = session.await.unwrap();
    assert!(matches!(
        outcome.ended_by,
        EndReason::Failed {
            side: Side::Client,
            error: TransportError::Protocol(_)
        }
    ));
    assert_eq!(outcome.ended_by.label(), "client_error");
    assert_eq!(
        outcome.close_sent_to_upstream,
        Some(close(close_code::INTERNAL_ERROR, "client connection error"))
    );
    assert_eq!(
        outcome.close_sent_to_client,
        Some(close(close_code::PROTOCOL_ERROR, "protocol error"))
    );
}

#[tokio::test(start_paused = true)]
async fn invalid_utf8_from_the_client_is_answered_with_1007() {
    let (mut browser, client) = MemoryTransport::pair(4);
    let (client, fault) = Faulty::new(client);
    let (upstream, mut console) = MemoryTransport::pair(4);
    let session = spawn_relay(client, upstream);

    fault.fail_next_read(TransportError::InvalidPayload("not UTF-8".into()));
    browser.send(binary(b"wakes the relay")).await.unwrap();
    assert_eq!(
        answer_close(&mut console).await,
        Some(close(close_code::INTERNAL_ERROR, "client connection error"))
    );
    assert_eq!(
        read_until_close(&mut browser).await.1,
        Some(Some(close(
            close_code::INVALID_PAYLOAD,
            "invalid UTF-8 text"
        )))
    );
    let outcome = session.await.unwrap();
    assert!(matches!(
        outcome.ended_by,
        EndReason::Failed {
            side: Side::Client,
            error: TransportError::InvalidPayload(_)
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn oversized_client_message_is_answered_with_1009() {
    let (mut browser, client) = MemoryTransport::pair(4);
    let (client, fault) = Faulty::new(client);
    let (upstream, mut console) = MemoryTransport::pair(4);
    let session = spawn_relay(client, upstream);

    fault.fail_next_read(TransportError::MessageTooLarge {
        size: 2 << 20,
        limit: 1 << 20,
    });
    browser.send(binary(b"wakes the relay")).await.unwrap();

    assert_eq!(
        answer_close(&mut console).await,
        Some(close(close_code::INTERNAL_ERROR, "client connection error"))
    );
    assert_eq!(
        read_until_close(&mut browser).await.1,
        Some(Some(close(close_code::MESSAGE_TOO_BIG, "message too big")))
    );
    let outcome = session.await.unwrap();
    assert_eq!(outcome.ended_by.label(), "client_error");
}

#[tokio::test(start_paused = true)]
async fn upstream_io_error_closes_client_with_1011_and_sends_nothing_upstream() {
    let (mut browser, client) = MemoryTransport::pair(4);
    let (upstream, mut console) = MemoryTransport::pair(4);
    let (upstream, fault) = Faulty::new(upstream);
    let session = spawn_relay(client, upstream);

    fault.fail_next_read(TransportError::Io(std::io::Error::other("disk on fire")));
    console.send(binary(b"wakes the relay")).await.unwrap();

    assert_eq!(
        answer_close(&mut browser).await,
        Some(close(
            close_code::INTERNAL_ERROR,
            "upstream connection error"
        ))
    );
    let outcome = session.await.unwrap();
    assert!(matches!(
        outcome.ended_by,
        EndReason::Failed {
            side: Side::Upstream,
            error: TransportError::Io(_)
        }
    ));
    assert_eq!(outcome.ended_by.label(), "upstream_error");
    assert_eq!(outcome.close_sent_to_upstream, None);
    // The frame that woke the relay was never read; nothing else reaches the console.
    let (data, close_seen) = read_until_close(&mut console).await;
    assert!(data.is_empty());
    assert_eq!(close_seen, None);
}

#[tokio::test(start_paused = true)]
async fn write_error_towards_upstream_counts_as_an_upstream_error() {
    let (mut browser, client) = MemoryTransport::pair(4);
    let (upstream, _console) = MemoryTransport::pair(4);
    let (upstream, fault) = Faulty::new(upstream);
    let session = spawn_relay(client, upstream);

    fault.fail_next_write(TransportError::Io(std::io::Error::other("write failed")));
    browser.send(binary(b"cannot be delivered")).await.unwrap();

    assert_eq!(
        answer_close(&mut browser).await,
        Some(close(
            close_code::INTERNAL_ERROR,
            "upstream connection error"
        ))
    );
    let outcome = session.await.unwrap();
    assert_eq!(outcome.ended_by.label(), "upstream_error");
    assert_eq!(outcome.client_to_upstream.frames, 0);
}

#[tokio::test(start_paused = true)]
async fn vanished_client_closes_upstream_with_1001() {
    let (browser, client) = MemoryTransport::pair(4);
    let (upstream, mut console) = MemoryTransport::pair(4);
    let session = spawn_relay(client, upstream);

    drop(browser);
    assert_eq!(
        answer_close(&mut console).await,
        Some(close(close_code::GOING_AWAY, "client went away"))
    );
    let outcome = session.await.unwrap();
    assert!(matches!(
        outcome.ended_by,
        EndReason::Vanished(Side::Client)
    ));
    assert_eq!(outcome.ended_by.label(), "client_vanished");
    assert_eq!(outcome.close_sent_to_client, None);
    assert_eq!(
        outcome.close_sent_to_upstream,
        Some(close(close_code::GOING_AWAY, "client went away"))
    );
}

#[tokio::test(start_paused = true)]
async fn vanished_upstream_closes_client_with_1001() {
    let (mut browser, client) = MemoryTransport::pair(4);
    let (upstream, console) = MemoryTransport::pair(4);
    let session = spawn_relay(client, upstream);

    drop(console);
    assert_eq!(
        answer_close(&mut browser).await,
        Some(close(close_code::GOING_AWAY, "upstream went away"))
    );
    let outcome = session.await.unwrap();
    assert!(matches!(
        outcome.ended_by,
        EndReason::Vanished(Side::Upstream)
    ));
    assert_eq!(outcome.ended_by.label(), "upstream_vanished");
    assert_eq!(outcome.close_sent_to_upstream, None);
}

#[tokio::test(start_paused = true)]
async fn connection_lost_error_counts_as_vanished() {
    let (mut browser, client) = MemoryTransport::pair(4);
    let (upstream, mut console) = MemoryTransport::pair(4);
    let (upstream, fault) = Faulty::new(upstream);
    let session = spawn_relay(client, upstream);

    fault.fail_next_read(TransportError::ConnectionLost);
    console.send(binary(b"wakes the relay")).await.unwrap();
    assert_eq!(
        answer_close(&mut browser).await,
        Some(close(close_code::GOING_AWAY, "upstream went away"))
    );
    assert_eq!(session.await.unwrap().ended_by.label(), "upstream_vanished");
}

#[tokio::test(start_paused = true)]
async fn both_closing_at_once_completes_one_handshake_per_side() {
    let (mut browser, client) = MemoryTransport::pair(4);
    let (upstream, mut console) = MemoryTransport::pair(4);
    // Both closes are in flight before the relay runs; the client's is seen first.
    browser
        .send(Frame::Close(Some(close(1000, "client done"))))
        .await
        .unwrap();
    console
        .send(Frame::Close(Some(close(1001, "upstream done"))))
        .await
        .unwrap();
    let outcome = spawn_relay(client, upstream).await.unwrap();

    // The upstream's own close doubles as its reply to the forwarded one.
    assert_eq!(
        read_until_close(&mut console).await,
        (vec![], Some(Some(close(1000, "client done"))))
    );
    assert_eq!(
        read_until_close(&mut browser).await,
        (vec![], Some(Some(close(1000, "client done"))))
    );
    assert_ends(&mut browser).await;
    assert_ends(&mut console).await;
    assert!(
        matches!(&outcome.ended_by, EndReason::ClientClosed(Some(c)) if c.reason == "client done")
    );
    assert_eq!(
        outcome.close_sent_to_upstream,
        Some(close(1000, "client done"))
    );
    assert_eq!(
        outcome.close_sent_to_client,
        Some(close(1000, "client done"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_answers_the_close_is_dropped_after_the_close_timeout() {
    let (mut browser, client) = MemoryTransport::pair(4);
    let (upstream, mut console) = MemoryTransport::pair(4);
    let session = spawn_relay(client, upstream);

    browser
        .send(Frame::Close(Some(close(1000, "bye"))))
        .await
        .unwrap();
    // The console reads the close but never answers.
    assert_eq!(
        read_until_close(&mut console).await.1,
        Some(Some(close(1000, "bye")))
    );

    let outcome = session.await.unwrap();
    assert!(outcome.duration >= Duration::from_secs(5));
    assert_eq!(outcome.ended_by.label(), "client_closed");
    assert_ends(&mut console).await;
}

#[tokio::test(start_paused = true)]
async fn the_client_stream_ends_right_after_its_close_is_answered_not_after_the_upstream_reply() {
    let (mut browser, client) = MemoryTransport::pair(4);
    let (upstream, mut console) = MemoryTransport::pair(4);
    let session = spawn_relay(client, upstream);
    let closed_at = tokio::time::Instant::now();

    browser
        .send(Frame::Close(Some(close(1000, "bye"))))
        .await
        .unwrap();
    let (_, reply) = read_until_close(&mut browser).await;
    assert_eq!(reply, Some(Some(close(1000, "bye"))));
    // The relay is the server of the client leg (RFC 6455 7.1.1): the stream ends at once, while
    // the upstream, which has not answered yet, still has its close timeout.
    assert_ends(&mut browser).await;
    assert_eq!(closed_at.elapsed(), Duration::ZERO);
    assert!(!session.is_finished());

    assert_eq!(
        read_until_close(&mut console).await.1,
        Some(Some(close(1000, "bye")))
    );
    console
        .send(Frame::Close(Some(close(1000, "bye"))))
        .await
        .unwrap();
    let outcome = session.await.unwrap();
    assert_eq!(outcome.ended_by.label(), "client_closed");
    assert_eq!(outcome.close_sent_to_client, Some(close(1000, "bye")));
}

#[tokio::test(start_paused = true)]
async fn data_racing_a_close_from_the_other_side_is_dropped_not_delivered_late() {
    let (mut browser, client) = MemoryTransport::pair(4);
    let (upstream, mut console) = MemoryTransport::pair(4);
    let session = spawn_relay(client, upstream);

    browser
        .send(Frame::Close(Some(close(1000, "bye"))))
        .await
        .unwrap();
    assert_eq!(
        read_until_close(&mut console).await.1,
        Some(Some(close(1000, "bye")))
    );
    console.send(binary(b"too late")).await.unwrap();
    console
        .send(Frame::Close(Some(close(1000, "bye"))))
        .await
        .unwrap();

    let outcome = session.await.unwrap();
    assert_eq!(outcome.upstream_to_client.frames, 0);
    assert_eq!(
        read_until_close(&mut browser).await,
        (vec![], Some(Some(close(1000, "bye"))))
    );
    assert_ends(&mut browser).await;
}
