//! The WebSocket frame codec in both roles over arbitrarily chunked bytes: it never panics,
//! never yields a data message over its limit, yields text only as valid UTF-8, and stops at
//! the first error.
#![no_main]

use futures_util::StreamExt as _;
use libfuzzer_sys::fuzz_target;
use proxy_server::proxy_core::Frame;
use proxy_wire::{WireLimits, WireRole, WireTransport};
use tokio::io::AsyncWriteExt as _;

const LIMIT: usize = 64 * 1024;

fuzz_target!(|input: (bool, Vec<u16>, &[u8])| {
    let (server_role, cuts, bytes) = input;
    let role = if server_role {
        WireRole::Server
    } else {
        WireRole::Client
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (mut peer, ours) = tokio::io::duplex(1 << 20);
        let mut positions: Vec<usize> = cuts
            .iter()
            .map(|cut| usize::from(*cut) % (bytes.len() + 1))
            .collect();
        positions.sort_unstable();
        let mut start = 0;
        for position in positions.into_iter().chain([bytes.len()]) {
            peer.write_all(&bytes[start..position]).await.unwrap();
            start = position;
        }
        drop(peer);
        let mut transport = WireTransport::new(ours, role, WireLimits::max_message(LIMIT));
        while let Some(item) = transport.next().await {
            match item {
                Ok(Frame::Text(text)) => {
                    assert!(std::str::from_utf8(&text).is_ok());
                    assert!(text.len() <= LIMIT);
                }
                Ok(frame) => assert!(frame.payload_len() <= LIMIT),
                Err(_) => break,
            }
        }
    });
});
