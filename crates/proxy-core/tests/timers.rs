//! Session timers under tokio's paused clock: idle timeout, lifetime, deadline, keepalive, shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{answer_close, close, read_until_close};
use futures_util::{SinkExt, StreamExt};
use proxy_core::{
    EndReason, Frame, Keepalive, MemoryTransport, RelayConfig, RelayOutcome, close_code, relay,
};
use tokio::time::{Instant, sleep};

fn quiet() -> RelayConfig {
    RelayConfig {
        keepalive: None,
        upstream_keepalive: None,
        ..RelayConfig::default()
    }
}

fn spawn_relay(
    config: RelayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (
    MemoryTransport,
    MemoryTransport,
    tokio::task::JoinHandle<RelayOutcome>,
) {
    let (browser, client) = MemoryTransport::pair(4);
    let (upstream, console) = MemoryTransport::pair(4);
    let session = tokio::spawn(async move { relay(client, upstream, &config, shutdown).await });
    (browser, console, session)
}

fn binary(payload: &'static [u8]) -> Frame {
    Frame::Binary(Bytes::from_static(payload))
}

#[test]
fn default_config_has_keepalive_on_and_other_timers_off() {
    let config = RelayConfig::default();
    assert_eq!(
        config.keepalive,
        Some(Keepalive {
            interval: Duration::from_secs(20),
            timeout: Duration::from_secs(20)
        })
    );
    assert_eq!(config.upstream_keepalive, config.keepalive);
    assert_eq!(config.idle_timeout, None);
    assert_eq!(config.max_lifetime, None);
    assert_eq!(config.deadline, None);
    assert!(config.close_timeout > Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_counts_from_the_last_data_frame() {
    let config = RelayConfig {
        idle_timeout: Some(Duration::from_secs(30)),
        ..quiet()
    };
    let started = Instant::now();
    let (mut browser, mut console, session) = spawn_relay(config, std::future::pending());

    sleep(Duration::from_secs(20)).await;
    browser.send(binary(b"still here")).await.unwrap();
    assert_eq!(
        console.next().await.unwrap().unwrap(),
        binary(b"still here")
    );

    let (to_browser, to_console) =
        tokio::join!(answer_close(&mut browser), answer_close(&mut console));
    let idle_close = Some(close(close_code::GOING_AWAY, "idle timeout"));
    assert_eq!(to_browser, idle_close);
    assert_eq!(to_console, idle_close);
    // The session ended 30 s after the frame at 20 s, not 30 s after the start.
    let ended = started.elapsed();
    assert!(
        ended >= Duration::from_secs(50) && ended < Duration::from_secs(51),
        "{ended:?}"
    );

    let outcome = session.await.unwrap();
    assert!(matches!(outcome.ended_by, EndReason::IdleTimeout));
    assert_eq!(outcome.ended_by.label(), "idle_timeout");
    assert_eq!(outcome.close_sent_to_client, idle_close);
    assert_eq!(outcome.close_sent_to_upstream, idle_close);
}

#[tokio::test(start_paused = true)]
async fn max_lifetime_ends_a_busy_session() {
    let config = RelayConfig {
        max_lifetime: Some(Duration::from_secs(60)),
        idle_timeout: Some(Duration::from_secs(30)),
        ..quiet()
    };
    let started = Instant::now();
    let (mut browser, mut console, session) = spawn_relay(config, std::future::pending());

    // Traffic every 10 s (at 5 s, 15 s, ... 55 s) keeps the idle timer away; the lifetime still
    // ends the session.
    let traffic = async {
        sleep(Duration::from_secs(5)).await;
        loop {
            if browser.send(binary(b"tick")).await.is_err() {
                break;
            }
            sleep(Duration::from_secs(10)).await;
        }
    };
    let closes = async {
        let (data, close) = read_until_close(&mut console).await;
        console
            .send(Frame::Close(close.clone().unwrap()))
            .await
            .unwrap();
        (data.len(), close)
    };
    let (_, (ticks, close_seen)) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(120), traffic),
        closes
    );
    assert_eq!(
        close_seen,
        Some(Some(close(
            close_code::GOING_AWAY,
            "session lifetime exceeded"
        )))
    );
    assert_eq!(ticks, 6);

    let outcome = session.await.unwrap();
    assert!(matches!(outcome.ended_by, EndReason::MaxLifetime));
    assert_eq!(outcome.client_to_upstream.frames, 6);
    assert!(started.elapsed() >= Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn deadline_sends_its_own_close_to_the_client() {
    let token_expiry = CloseFrame4xxx::token_expired();
    let config = RelayConfig {
        deadline: Some((
            Instant::now() + Duration::from_secs(90),
            token_expiry.clone(),
        )),
        ..quiet()
    };
    let started = Instant::now();
    let (mut browser, mut console, session) = spawn_relay(config, std::future::pending());

    let (to_browser, to_console) =
        tokio::join!(answer_close(&mut browser), answer_close(&mut console));
    assert_eq!(to_browser, Some(token_expiry));
    assert_eq!(
        to_console,
        Some(close(close_code::GOING_AWAY, "token expired"))
    );
    assert_eq!(started.elapsed(), Duration::from_secs(90));

    let outcome = session.await.unwrap();
    assert!(matches!(outcome.ended_by, EndReason::Deadline));
    assert_eq!(outcome.ended_by.label(), "deadline");
}

struct CloseFrame4xxx;

impl CloseFrame4xxx {
    fn token_expired() -> proxy_core::CloseFrame {
        close(4001, "token expired")
    }
}

#[tokio::test(start_paused = true)]
async fn keepalive_pings_the_client_and_ends_a_session_without_pongs() {
    let config = RelayConfig {
        keepalive: Some(Keepalive {
            interval: Duration::from_secs(20),
            timeout: Duration::from_secs(20),
        }),
        upstream_keepalive: None,
        ..RelayConfig::default()
    };
    let started = Instant::now();
    let (mut browser, mut console, session) = spawn_relay(config, std::future::pending());

    // Two pings are answered (at 20 s and 40 s); the third (at 60 s) is not.
    for expected_at in [20, 40] {
        match browser.next().await.unwrap().unwrap() {
            Frame::Ping(payload) => {
                assert_eq!(started.elapsed(), Duration::from_secs(expected_at));
                browser.send(Frame::Pong(payload)).await.unwrap();
            }
            other => panic!("expected a ping, got {other:?}"),
        }
    }
    assert!(matches!(
        browser.next().await.unwrap().unwrap(),
        Frame::Ping(_)
    ));
    assert_eq!(started.elapsed(), Duration::from_secs(60));

    let next = browser.next().await.unwrap().unwrap();
    assert_eq!(
        next,
        Frame::Close(Some(close(
            close_code::INTERNAL_ERROR,
            "keepalive ping timeout"
        )))
    );
    assert_eq!(started.elapsed(), Duration::from_secs(80));
    // Neither the pings nor the pongs reached the upstream: only the close did.
    let (data, close_seen) = read_until_close(&mut console).await;
    assert!(data.is_empty());
    assert_eq!(
        close_seen,
        Some(Some(close(
            close_code::GOING_AWAY,
            "keepalive ping timeout"
        )))
    );

    let outcome = session.await.unwrap();
    assert!(matches!(outcome.ended_by, EndReason::KeepaliveTimeout));
    assert_eq!(outcome.ended_by.label(), "keepalive_timeout");
}

#[tokio::test(start_paused = true)]
async fn data_from_the_peer_after_a_ping_answers_it_like_a_pong() {
    let config = RelayConfig {
        keepalive: Some(Keepalive {
            interval: Duration::from_secs(20),
            timeout: Duration::from_secs(20),
        }),
        upstream_keepalive: None,
        ..RelayConfig::default()
    };
    let started = Instant::now();
    let (mut browser, mut console, session) = spawn_relay(config, std::future::pending());

    // The pong is stuck behind the browser's data (as behind a slow link); the data answers.
    assert!(matches!(
        browser.next().await.unwrap().unwrap(),
        Frame::Ping(_)
    ));
    assert_eq!(started.elapsed(), Duration::from_secs(20));
    sleep(Duration::from_secs(15)).await;
    browser
        .send(binary(b"typed while the pong waits"))
        .await
        .unwrap();
    assert_eq!(
        console.next().await.unwrap().unwrap(),
        binary(b"typed while the pong waits")
    );
    // The next ping comes an interval after that answer, not a close at 40 s.
    assert!(matches!(
        browser.next().await.unwrap().unwrap(),
        Frame::Ping(_)
    ));
    assert_eq!(started.elapsed(), Duration::from_secs(55));
    // Silence after that ping still ends the session at its deadline.
    assert_eq!(
        browser.next().await.unwrap().unwrap(),
        Frame::Close(Some(close(
            close_code::INTERNAL_ERROR,
            "keepalive ping timeout"
        )))
    );
    assert_eq!(started.elapsed(), Duration::from_secs(75));
    let outcome = session.await.unwrap();
    assert!(matches!(outcome.ended_by, EndReason::KeepaliveTimeout));
}

#[tokio::test(start_paused = true)]
async fn keepalive_pings_the_upstream_and_ends_a_session_whose_upstream_went_silent() {
    let config = RelayConfig {
        keepalive: None,
        upstream_keepalive: Some(Keepalive {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }),
        ..RelayConfig::default()
    };
    let started = Instant::now();
    let (mut browser, mut console, session) = spawn_relay(config, std::future::pending());

    // The console answers the first ping (at 10 s) and goes silent; the second (at 20 s) is
    // not answered, so 5 s later the browser learns why.
    match console.next().await.unwrap().unwrap() {
        Frame::Ping(payload) => {
            assert_eq!(started.elapsed(), Duration::from_secs(10));
            console.send(Frame::Pong(payload)).await.unwrap();
        }
        other => panic!("expected a ping, got {other:?}"),
    }
    assert!(matches!(
        console.next().await.unwrap().unwrap(),
        Frame::Ping(_)
    ));
    assert_eq!(started.elapsed(), Duration::from_secs(20));
    let to_browser = browser.next().await.unwrap().unwrap();
    assert_eq!(
        to_browser,
        Frame::Close(Some(close(
            close_code::INTERNAL_ERROR,
            "upstream keepalive ping timeout"
        )))
    );
    assert_eq!(started.elapsed(), Duration::from_secs(25));
    browser.send(Frame::Close(None)).await.unwrap();
    // The silent console is told, not waited for.
    assert_eq!(
        console.next().await.unwrap().unwrap(),
        Frame::Close(Some(close(
            close_code::GOING_AWAY,
            "upstream keepalive ping timeout"
        )))
    );
    let outcome = session.await.unwrap();
    assert!(matches!(
        outcome.ended_by,
        EndReason::UpstreamKeepaliveTimeout
    ));
    assert_eq!(outcome.ended_by.label(), "upstream_keepalive_timeout");
    // No ping or pong was relayed to the browser.
    assert_eq!(outcome.upstream_to_client.frames, 0);
}

#[tokio::test(start_paused = true)]
async fn pings_from_either_side_are_not_forwarded() {
    let (mut browser, mut console, session) = spawn_relay(quiet(), std::future::pending());

    browser
        .send(Frame::Ping(Bytes::from_static(b"from client")))
        .await
        .unwrap();
    browser.send(binary(b"data")).await.unwrap();
    console
        .send(Frame::Ping(Bytes::from_static(b"from upstream")))
        .await
        .unwrap();
    console
        .send(Frame::Pong(Bytes::from_static(b"unsolicited")))
        .await
        .unwrap();
    console.send(binary(b"reply")).await.unwrap();

    assert_eq!(console.next().await.unwrap().unwrap(), binary(b"data"));
    assert_eq!(browser.next().await.unwrap().unwrap(), binary(b"reply"));
    browser.send(Frame::Close(None)).await.unwrap();
    assert_eq!(answer_close(&mut console).await, None);
    assert_eq!(session.await.unwrap().client_to_upstream.frames, 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_both_sides_with_going_away() {
    let (mut browser, mut console, session) =
        spawn_relay(RelayConfig::default(), sleep(Duration::from_secs(5)));

    let (to_browser, to_console) =
        tokio::join!(answer_close(&mut browser), answer_close(&mut console));
    assert_eq!(
        to_browser,
        Some(close(close_code::GOING_AWAY, "going away"))
    );
    assert_eq!(
        to_console,
        Some(close(close_code::GOING_AWAY, "going away"))
    );

    let outcome = session.await.unwrap();
    assert!(matches!(outcome.ended_by, EndReason::Shutdown));
    assert_eq!(outcome.ended_by.label(), "shutdown");
    assert_eq!(outcome.duration, Duration::from_secs(5));
}
