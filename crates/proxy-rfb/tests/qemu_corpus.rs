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
    RECORDING
        .lines()
        .skip(1)
        .filter_map(|line| line.strip_prefix('\'')?.strip_suffix("',"))
        .map(|entry| {
            let prefix = entry.chars().next().unwrap();
            let (_, data) = entry[1..].split_once(prefix).unwrap();
            (prefix == '}', unescape(data))
        })
        .collect()
}

/// Undoes the recorder's escaping (Python's `unicode_escape` plus `\'`).
fn unescape(data: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut chars = data.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            bytes.push(u8::try_from(c).unwrap());
            continue;
        }
        match chars.next().unwrap() {
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                bytes.push(u8::from_str_radix(&hex, 16).unwrap());
            }
            'n' => bytes.push(b'\n'),
            'r' => bytes.push(b'\r'),
            't' => bytes.push(b'\t'),
            other => bytes.push(u8::try_from(other).unwrap()),
        }
    }
    bytes
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
