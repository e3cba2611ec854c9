//! Inside the console stream: observers' input never reaches the VM while their screen updates,
//! and sessions are recorded in noVNC's playback format, bounded, without tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use kubevirt_sim::{KubevirtSim, SimConfig, VmBehavior};
use proxy_auth::{ConsoleAccess, ConsoleRole};
use proxy_server::{RecordSessions, RecordingConfig, ServerConfig};

/// A simulated VM whose console is the built-in RFB server (it shows typed keys).
async fn rfb_upstream() -> KubevirtSim {
    KubevirtSim::start(SimConfig::new().vm_in_namespace(NAMESPACE, "ubuntu", VmBehavior::Rfb))
        .await
        .unwrap()
}

fn token(console: Option<ConsoleAccess>) -> String {
    console_token("ubuntu", console)
}

async fn proxy_to(sim: &KubevirtSim, config: ServerConfig) -> Running {
    Running::proxy(dev_proxy_to(sim.base_url()).server_config(config)).await
}

#[tokio::test]
async fn an_observer_sees_the_screen_but_its_input_never_reaches_the_vm() {
    let sim = rfb_upstream().await;
    let proxy = proxy_to(&sim, ServerConfig::default()).await;
    let observer = token(Some(ConsoleAccess::observer()));

    let mut watcher = RfbClient::open(proxy.addr, &observer).await;
    let (width, height) = watcher.handshake().await;
    watcher.type_and_click("rm -rf").await;
    // The update request after the input passes, so the VM has seen whatever reached it.
    assert!(watcher.full_update(width, height).await > 4);
    let console = sim.console("ubuntu").unwrap();
    assert_eq!(
        console.typed_text(),
        "",
        "an observer's keys reached the VM"
    );
    assert_eq!(console.pointer().2, 0, "an observer's click reached the VM");
    watcher.close().await;

    let metrics = get(proxy.addr, "/metrics").await.1;
    assert!(
        metrics.contains("ws_proxy_observer_sessions_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ws_proxy_observer_input_dropped_total{message=\"key_event\"} 12"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ws_proxy_observer_input_dropped_total{message=\"pointer_event\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ws_proxy_observer_input_dropped_total{message=\"client_cut_text\"} 1"),
        "{metrics}"
    );

    // The same keys from a controlling token do arrive.
    let mut student = RfbClient::open(proxy.addr, &token(None)).await;
    let (width, height) = student.handshake().await;
    student.type_and_click("ls").await;
    student.full_update(width, height).await;
    assert_eq!(console.typed_text(), "ls");
    student.close().await;
    proxy.stop().await;
}

#[tokio::test]
async fn an_observer_that_breaks_the_protocol_is_closed_with_the_reason() {
    let sim = rfb_upstream().await;
    let proxy = proxy_to(&sim, ServerConfig::default()).await;
    let mut watcher = RfbClient::open(proxy.addr, &token(Some(ConsoleAccess::observer()))).await;
    watcher.handshake().await;
    watcher.send(&[7, 0, 0, 0]).await;
    let close = next_close(&mut watcher.socket).await;
    assert_eq!(
        close,
        Some((1008, "unknown RFB client message type 7".to_owned()))
    );
    proxy.stop().await;
}

/// The default front with `recording`.
fn recording(recording: RecordingConfig) -> ServerConfig {
    let mut config = ServerConfig::default();
    config.recording = Some(Arc::new(recording));
    config
}

fn recording_config(directory: &Path) -> RecordingConfig {
    RecordingConfig {
        sessions: RecordSessions::All,
        min_free_bytes: 0,
        ..RecordingConfig::new(directory)
    }
}

/// The recordings in `directory`, once the writers closed them (bounded wait).
async fn recordings(directory: &Path, count: usize) -> Vec<PathBuf> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut files: Vec<PathBuf> = std::fs::read_dir(directory)
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .collect();
            files.sort();
            let closed = files
                .iter()
                .filter(|path| {
                    std::fs::read_to_string(path).is_ok_and(|text| text.contains("'EOF'];"))
                })
                .count();
            if files.len() == count && closed == count {
                return files;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the recordings were not closed in time")
}

/// The bytes of the server (`{`) or client (`}`) entries of a playback file.
fn playback_bytes(text: &str, prefix: char) -> Vec<u8> {
    test_support::playback::stream(text, prefix == '}')
}

#[tokio::test]
async fn a_recording_holds_exactly_what_the_viewer_received_and_no_token() {
    let sim = rfb_upstream().await;
    let directory = tempfile::tempdir().unwrap();
    let config = recording(recording_config(directory.path()));
    let proxy = proxy_to(&sim, config).await;
    let student_token = token(None);
    let mut student = RfbClient::open(proxy.addr, &student_token).await;
    let (width, height) = student.handshake().await;
    student.type_and_click("secret").await;
    student.full_update(width, height).await;
    let received = student.close().await;

    let files = recordings(directory.path(), 1).await;
    let name = files[0].file_name().unwrap().to_str().unwrap();
    assert!(
        name.contains(&format!("-{NAMESPACE}-ubuntu.js")) && name.contains("-session-"),
        "{name}"
    );
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        text.starts_with("var VNC_frame_data = [\n'{"),
        "{}",
        &text[..40]
    );
    assert!(text.ends_with("'EOF'];\n"));
    assert_eq!(playback_bytes(&text, '{'), received);
    assert!(
        playback_bytes(&text, '}').is_empty(),
        "client input recorded"
    );
    assert!(!text.contains(&student_token) && !name.contains(&student_token));
    let metrics = get(proxy.addr, "/metrics").await.1;
    assert!(
        metrics.contains("ws_proxy_recordings_active 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("ws_proxy_recording_written_bytes_total 0\n"),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn recordings_follow_the_token_and_record_client_input_only_when_asked() {
    let sim = rfb_upstream().await;
    let directory = tempfile::tempdir().unwrap();
    let config = recording(RecordingConfig {
        sessions: RecordSessions::Token,
        client_messages: true,
        ..recording_config(directory.path())
    });
    let proxy = proxy_to(&sim, config).await;
    // Not asked for: not recorded.
    let mut plain = RfbClient::open(proxy.addr, &token(None)).await;
    plain.handshake().await;
    plain.close().await;
    // Asked for by an observer's token: recorded, with what the observer sent after the
    // filter (no keys).
    let recorded_observer = ConsoleAccess {
        role: ConsoleRole::Observer,
        record: true,
    };
    let mut watcher = RfbClient::open(proxy.addr, &token(Some(recorded_observer))).await;
    let (width, height) = watcher.handshake().await;
    watcher.type_and_click("x").await;
    watcher.full_update(width, height).await;
    watcher.close().await;
    let files = recordings(directory.path(), 1).await;
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let client = playback_bytes(&text, '}');
    assert!(client.starts_with(b"RFB 003.008\n\x01\x01"), "{client:?}");
    assert!(
        !client.windows(2).any(|window| window == [4, 1]),
        "an observer's key press was recorded as sent"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_recording_over_its_cap_is_closed_incomplete_and_the_session_goes_on() {
    let sim = rfb_upstream().await;
    let directory = tempfile::tempdir().unwrap();
    let config = recording(RecordingConfig {
        max_bytes: 4096,
        ..recording_config(directory.path())
    });
    let proxy = proxy_to(&sim, config).await;
    let mut student = RfbClient::open(proxy.addr, &token(None)).await;
    let (width, height) = student.handshake().await;
    // Far more than 4 KiB of screen, twice: the session is not affected by the cap.
    assert!(student.full_update(width, height).await > 100_000);
    student.full_update(width, height).await;
    student.close().await;
    let files = recordings(directory.path(), 1).await;
    let name = files[0].file_name().unwrap().to_str().unwrap();
    assert!(name.ends_with(".incomplete.js"), "{name}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.len() < 4096 + 64, "{} bytes", text.len());
    assert!(text.ends_with("'EOF'];\n// ws-proxy: recording incomplete: size_cap\n"));
    let metrics = get(proxy.addr, "/metrics").await.1;
    assert!(
        metrics.contains("ws_proxy_recordings_incomplete_total{reason=\"size_cap\"} 1"),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn without_space_a_strict_deployment_refuses_and_a_lenient_one_goes_on_unrecorded() {
    let sim = rfb_upstream().await;
    let directory = tempfile::tempdir().unwrap();
    let no_space = |strict| {
        recording(RecordingConfig {
            min_free_bytes: u64::MAX,
            strict,
            ..recording_config(directory.path())
        })
    };
    let strict = proxy_to(&sim, no_space(true)).await;
    let (status, body) = upgrade_request(strict.addr, &format!("/{}/ubuntu", token(None))).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("recording unavailable"), "{body}");
    strict.stop().await;

    let lenient = proxy_to(&sim, no_space(false)).await;
    let mut student = RfbClient::open(lenient.addr, &token(None)).await;
    student.handshake().await;
    student.close().await;
    assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), 0);
    let metrics = get(lenient.addr, "/metrics").await.1;
    assert!(
        metrics.contains("ws_proxy_recordings_incomplete_total{reason=\"not_started\"} 1"),
        "{metrics}"
    );
    lenient.stop().await;
}

#[tokio::test]
async fn text_messages_of_a_recorded_session_pass_unrecorded() {
    let upstream = KubevirtUpstream::start().await;
    let directory = tempfile::tempdir().unwrap();
    let proxy = Running::proxy(
        dev_proxy(&upstream).server_config(recording(recording_config(directory.path()))),
    )
    .await;
    let (mut client, _) = connect(proxy.addr, &format!("/{}/kali", mint(&["kali"])), "binary")
        .await
        .unwrap();
    assert_eq!(next_data(&mut client).await, GREETING);
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    client.send(Message::Text("count: 5".into())).await.unwrap();
    let echoed = client.next().await.unwrap().unwrap();
    assert_eq!(echoed, Message::Text("count: 5".into()));
    echo_round_trip(&mut client, b"binary bytes").await;
    client.close(None).await.unwrap();
    read_to_end(&mut client).await;
    let files = recordings(directory.path(), 1).await;
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let mut expected = GREETING.to_vec();
    expected.extend_from_slice(b"binary bytes");
    assert_eq!(playback_bytes(&text, '{'), expected);
    proxy.stop().await;
}
