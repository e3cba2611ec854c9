//! The browser's request head, read in arbitrary chunks: `read_request_head` never panics,
//! never holds more than its limit, and whatever it accepts goes through the upgrade check, the
//! subprotocol choice and the token sources (every source enabled) without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_server::token_source::{TokenSource, TokenSources, find_token};
use proxy_server::{PathPrefix, parse_console_target};
use proxy_wire::{accept_upgrade, choose_subprotocol, read_request_head};

const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut stream = data;
    let Ok((head, rest)) = runtime.block_on(read_request_head(&mut stream, LIMIT)) else {
        return;
    };
    assert!(data.len() - rest.len() <= LIMIT);
    let _ = accept_upgrade(&head);
    let offered: Vec<&str> = head
        .values("sec-websocket-protocol")
        .filter_map(|value| std::str::from_utf8(value).ok())
        .flat_map(proxy_wire::list_elements)
        .collect();
    if let Some(chosen) = choose_subprotocol(&offered, &["binary", "base64"]) {
        assert!(offered.contains(&chosen));
    }
    let sources = TokenSources {
        enabled: vec![
            TokenSource::Path,
            TokenSource::Subprotocol,
            TokenSource::Header,
            TokenSource::Cookie,
            TokenSource::Query,
        ],
        ..TokenSources::default()
    };
    let path_token = parse_console_target(&head.target, &PathPrefix::new("/console"), true)
        .ok()
        .and_then(|target| target.token);
    let _ = find_token(&head, path_token, &sources);
});
