//! A real session: noVNC in Chromium against QEMU's VNC server (SeaBIOS screen, a click, typed
//! keys and a resize request), recorded through ws-proxy in the e2e rig with client messages
//! (`e2e/tests/real-vnc.test.mjs` writes it to `e2e/artifacts/real-vnc-recording.js`; this copy
//! is `tests/data/qemu-seabios-session.js`). Both directions parse, in the order they travelled
//! and in arbitrary chunks, and the observer filter keeps everything but the input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use proxy_rfb::{ClientChunk, ClientMessage, RfbConnection};

const RECORDING: &str = include_str!("data/qemu-seabios-session.js");

/// The recorded messages in order: (from the client?, bytes).
fn messages() -> Vec<(bool, Vec<u8>)> {
    test_support::playback::entries(RECORDING)
        .into_iter()
        .map(|entry| (entry.from_client, entry.bytes))
        .collect()
}

#[test]
fn the_real_qemu_session_parses_in_both_directions() {
    let messages = messages();
    assert!(messages.iter().filter(|(client, _)| *client).count() > 10);
    assert!(messages.iter().filter(|(client, _)| !*client).count() > 10);
    let mut connection = RfbConnection::new();
    let mut client_messages = Vec::new();
    for (from_client, bytes) in &messages {
        if *from_client {
            match connection.client_sent_as_observer(bytes).unwrap() {
                ClientChunk::Unchanged => {}
                ClientChunk::Filtered { dropped, .. } => client_messages.extend(dropped),
            }
        } else {
            connection.server_sent(bytes).unwrap();
        }
    }
    let negotiated = connection.negotiated();
    assert_eq!(negotiated.desktop_name.as_deref(), Some("QEMU"));
    assert_eq!(negotiated.framebuffer, Some((720, 400)));
    // The click and the typed keys were input.
    assert!(client_messages.contains(&ClientMessage::PointerEvent));
    assert!(
        client_messages.contains(&ClientMessage::QemuExtendedKeyEvent)
            || client_messages.contains(&ClientMessage::KeyEvent)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn the_real_session_parses_identically_in_any_chunks(seed in any::<u64>()) {
        let messages = messages();
        let whole = follow(&messages, |_| usize::MAX);
        let mut state = seed | 1;
        let chunked = follow(&messages, move |_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 97) as usize + 1
        });
        prop_assert_eq!(whole, chunked);
    }
}

/// Feeds the session with each message cut into pieces of `piece(len)` bytes; returns the
/// bytes the observer filter forwarded.
fn follow(messages: &[(bool, Vec<u8>)], mut piece: impl FnMut(usize) -> usize) -> Vec<u8> {
    let mut connection = RfbConnection::new();
    let mut forwarded = Vec::new();
    for (from_client, bytes) in messages {
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let (now, later) = rest.split_at(piece(rest.len()).min(rest.len()));
            rest = later;
            if *from_client {
                match connection.client_sent_as_observer(now).unwrap() {
                    ClientChunk::Unchanged => forwarded.extend_from_slice(now),
                    ClientChunk::Filtered { kept, .. } => forwarded.extend_from_slice(&kept),
                }
            } else {
                connection.server_sent(now).unwrap();
            }
        }
    }
    forwarded
}
