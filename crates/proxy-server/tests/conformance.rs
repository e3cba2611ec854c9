//! WebSocket conformance of the browser-facing server and the relay, through the real binary to
//! an echo console, case by case after the Autobahn|Testsuite families: framing and lengths (1),
//! pings and pongs (2), reserved bits (3), opcodes (4), fragmentation (5), UTF-8 (6), close codes
//! and reasons (7), limits (9) and masking. Each case sends raw frames and checks what RFC 6455
//! asks for: the bytes back, or the close code. The upstream leg (the proxy as a client of a
//! misbehaving console) is checked with a raw upstream of the test's own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;
/// The proxy's message limit in these tests (`WS_PROXY_MAX_MESSAGE_BYTES`).
const MAX_MESSAGE: usize = 1 << 20;
const READ_BOUND: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
struct RawFrame {
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: Vec<u8>,
}

impl RawFrame {
    fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            fin: true,
            rsv: 0,
            opcode,
            payload: payload.into(),
        }
    }

    fn fragment(opcode: u8, payload: impl Into<Vec<u8>>, fin: bool) -> Self {
        Self {
            fin,
            ..Self::new(opcode, payload)
        }
    }

    fn with_rsv(self, rsv: u8) -> Self {
        Self { rsv, ..self }
    }

    fn close(code: u16, reason: &[u8]) -> Self {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        Self::new(CLOSE, payload)
    }

    /// The frame's bytes, masked (as a client must) unless `masked` is false.
    fn encode(&self, masked: bool) -> Vec<u8> {
        let mut bytes = vec![(u8::from(self.fin) << 7) | (self.rsv << 4) | self.opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        let length = self.payload.len();
        if length < 126 {
            bytes.push(mask_bit | length as u8);
        } else if length <= 0xffff {
            bytes.push(mask_bit | 126);
            bytes.extend_from_slice(&(length as u16).to_be_bytes());
        } else {
            bytes.push(mask_bit | 127);
            bytes.extend_from_slice(&(length as u64).to_be_bytes());
        }
        if masked {
            let key = [0x37, 0xfa, 0x21, 0x3d];
            bytes.extend_from_slice(&key);
            bytes.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            bytes.extend_from_slice(&self.payload);
        }
        bytes
    }
}

/// A WebSocket peer speaking raw frames over TCP, the client (masking) or the server side.
struct RawPeer {
    stream: TcpStream,
    buffered: Vec<u8>,
    masks: bool,
}

impl RawPeer {
    /// A browser-side client with its upgrade answered 101 by the proxy.
    async fn client(addr: SocketAddr, path: &str) -> Self {
        Self::client_with_headers(addr, path, "").await.0
    }

    /// [`RawPeer::client`] with `extra_headers` (whole `Name: value\r\n` lines) in the request;
    /// returns the 101 answer's head too.
    async fn client_with_headers(
        addr: SocketAddr,
        path: &str,
        extra_headers: &str,
    ) -> (Self, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!(
                    "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                     Sec-WebSocket-Protocol: binary\r\n{extra_headers}\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut peer = Self {
            stream,
            buffered: Vec::new(),
            masks: true,
        };
        let head = peer.read_head().await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        (peer, head)
    }

    async fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffered[..end]).into_owned();
                self.buffered.drain(..end + 4);
                return head;
            }
            self.fill().await.expect("the head ended early");
        }
    }

    async fn fill(&mut self) -> Option<()> {
        let mut chunk = vec![0u8; 65536];
        let read = tokio::time::timeout(READ_BOUND, self.stream.read(&mut chunk))
            .await
            .expect("no answer within the bound")
            .unwrap_or(0);
        if read == 0 {
            return None;
        }
        self.buffered.extend_from_slice(&chunk[..read]);
        Some(())
    }

    async fn send(&mut self, frame: &RawFrame) {
        let _ = self.stream.write_all(&frame.encode(self.masks)).await;
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next frame (unmasking a masked one), or `None` when the connection ended.
    async fn read(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = parse(&self.buffered) {
                self.buffered.drain(..used);
                return Some(frame);
            }
            self.fill().await?;
        }
    }

    /// The next frame that is not a ping (pings are the proxy's keepalive).
    async fn read_data(&mut self) -> Option<RawFrame> {
        loop {
            match self.read().await {
                Some(frame) if frame.opcode == PING => continue,
                other => return other,
            }
        }
    }

    /// The close frame's code (`None`: a close without a code, or no close at all before the
    /// end), skipping other frames; then checks the connection ends.
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            let frame = self.read().await?;
            if frame.opcode == CLOSE {
                let code = (frame.payload.len() >= 2)
                    .then(|| u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                // Answer it (a client must) and expect the end of the stream.
                self.send(&RawFrame::new(
                    CLOSE,
                    frame.payload.get(..2).unwrap_or_default().to_vec(),
                ))
                .await;
                while self.read().await.is_some() {}
                return code;
            }
        }
    }

    /// Reads the whole message echoed back (any fragmentation): its opcode and payload.
    async fn message(&mut self) -> (u8, Vec<u8>) {
        let first = self.read_data().await.expect("no message");
        let (opcode, mut payload, mut fin) = (first.opcode, first.payload, first.fin);
        while !fin {
            let next = self.read_data().await.expect("message cut");
            assert_eq!(next.opcode, CONTINUATION);
            payload.extend(next.payload);
            fin = next.fin;
        }
        (opcode, payload)
    }

    /// Sends a binary message and expects it back: the session still works.
    async fn still_echoes(&mut self) {
        self.send(&RawFrame::new(BINARY, b"still here".to_vec()))
            .await;
        assert_eq!(self.message().await, (BINARY, b"still here".to_vec()));
    }
}

fn parse(bytes: &[u8]) -> Option<(RawFrame, usize)> {
    if bytes.len() < 2 {
        return None;
    }
    let (fin, rsv, opcode) = (bytes[0] & 0x80 != 0, (bytes[0] >> 4) & 0x7, bytes[0] & 0xf);
    let masked = bytes[1] & 0x80 != 0;
    let (length, mut at) = match bytes[1] & 0x7f {
        126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
        127 if bytes.len() >= 10 => (
            u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        short => (short as usize, 2),
    };
    let key = if masked {
        let key: [u8; 4] = bytes.get(at..at + 4)?.try_into().unwrap();
        at += 4;
        Some(key)
    } else {
        None
    };
    let payload = bytes.get(at..at + length)?;
    let payload = match key {
        Some(key) => payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect(),
        None => payload.to_vec(),
    };
    Some((
        RawFrame {
            fin,
            rsv,
            opcode,
            payload,
        },
        at + length,
    ))
}

struct Rig {
    _upstream: KubevirtUpstream,
    proxy: ProxyProcess,
    path: String,
}

impl Rig {
    async fn start() -> Self {
        let upstream = KubevirtUpstream::start().await;
        let max = MAX_MESSAGE.to_string();
        let proxy = ProxyProcess::start(
            &upstream,
            &[
                ("WS_PROXY_MAX_MESSAGE_BYTES", max.as_str()),
                ("WS_PROXY_CLOSE_TIMEOUT", "1s"),
                ("WS_PROXY_DRAIN_TIMEOUT", "500ms"),
            ],
        );
        let path = format!("/{}/ubuntu", mint(&["ubuntu"]));
        Self {
            _upstream: upstream,
            proxy,
            path,
        }
    }

    /// A console through the proxy, past the console's greeting.
    async fn console(&self) -> RawPeer {
        let mut peer = RawPeer::client(self.proxy.addr, &self.path).await;
        assert_eq!(peer.message().await, (BINARY, GREETING.to_vec()));
        peer
    }

    /// Sends `frames` on a fresh console and returns the close code the proxy answers with.
    async fn closes_with(&self, frames: &[RawFrame]) -> Option<u16> {
        let mut peer = self.console().await;
        for frame in frames {
            peer.send(frame).await;
        }
        peer.close_code().await
    }
}

/// RSV1 in [`RawFrame::rsv`]: the message is deflated (permessage-deflate).
const RSV1: u8 = 0b100;

/// Chromium's offer.
const DEFLATE_OFFER: &str =
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

#[tokio::test]
async fn permessage_deflate_is_negotiated_and_messages_cross_deflated_both_ways() {
    let rig = Rig::start().await;
    let (mut peer, head) =
        RawPeer::client_with_headers(rig.proxy.addr, &rig.path, DEFLATE_OFFER).await;
    assert!(
        head.to_ascii_lowercase().contains(
            "\r\nsec-websocket-extensions: permessage-deflate; client_no_context_takeover"
        ),
        "{head}"
    );
    // The greeting is too short to be worth compressing.
    let greeting = peer.read_data().await.unwrap();
    assert_eq!((greeting.rsv, greeting.payload), (0, GREETING.to_vec()));

    // A screenful deflated by the browser reaches the echo console inflated and comes back
    // deflated by the proxy.
    let update: Vec<u8> = (0..40_000)
        .map(|i| [0u8, 9, 200, 255][(i / 17) % 4])
        .collect();
    let compressed = proxy_wire::deflate_message(&update).unwrap();
    peer.send(&RawFrame::new(BINARY, compressed.to_vec()).with_rsv(RSV1))
        .await;
    let back = peer.read_data().await.unwrap();
    assert_eq!((back.rsv, back.opcode, back.fin), (RSV1, BINARY, true));
    assert!(back.payload.len() < update.len() / 4);
    assert_eq!(
        proxy_wire::inflate_message(&back.payload, None).unwrap(),
        update
    );
    // Uncompressed messages still cross as they are.
    peer.still_echoes().await;

    let (_, metrics) = get(rig.proxy.addr, "/metrics").await;
    assert!(
        metrics.contains("ws_proxy_permessage_deflate_sessions_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_an_offer_or_with_deflate_off_no_extension_is_answered() {
    let rig = Rig::start().await;
    let (mut peer, head) = RawPeer::client_with_headers(rig.proxy.addr, &rig.path, "").await;
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions")
    );
    assert_eq!(peer.message().await, (BINARY, GREETING.to_vec()));
    // A compressed frame without the extension is a protocol error: 1002.
    peer.send(&RawFrame::new(BINARY, b"x".to_vec()).with_rsv(RSV1))
        .await;
    assert_eq!(peer.close_code().await, Some(1002));

    let upstream = KubevirtUpstream::start().await;
    let proxy = ProxyProcess::start(&upstream, &[("WS_PROXY_PERMESSAGE_DEFLATE", "false")]);
    let path = format!("/{}/ubuntu", mint(&["ubuntu"]));
    let (mut peer, head) = RawPeer::client_with_headers(proxy.addr, &path, DEFLATE_OFFER).await;
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{head}"
    );
    assert_eq!(peer.message().await, (BINARY, GREETING.to_vec()));
    let update = vec![7u8; 10_000];
    peer.send(&RawFrame::new(BINARY, update.clone())).await;
    let back = peer.read_data().await.unwrap();
    assert_eq!((back.rsv, back.payload), (0, update));
}

fn text_in_fragments(parts: &[&[u8]]) -> Vec<RawFrame> {
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            RawFrame::fragment(
                if i == 0 { TEXT } else { CONTINUATION },
                part.to_vec(),
                i + 1 == parts.len(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_client_leg_follows_rfc_6455_case_by_case() {
    let rig = Rig::start().await;
    let mut failures = Vec::new();
    let mut check = |case: &str, ok: bool, detail: String| {
        if !ok {
            failures.push(format!("{case}: {detail}"));
        }
    };

    // 1. Framing: every length class, text and binary, echoed intact.
    for length in [0usize, 1, 125, 126, 127, 128, 65535, 65536, 1 << 20] {
        for opcode in [TEXT, BINARY] {
            let mut peer = rig.console().await;
            let payload: Vec<u8> = (0..length).map(|i| b'a' + (i % 26) as u8).collect();
            peer.send(&RawFrame::new(opcode, payload.clone())).await;
            let back = peer.message().await;
            check(
                &format!("1 framing opcode {opcode} length {length}"),
                back == (opcode, payload),
                format!("got opcode {} length {}", back.0, back.1.len()),
            );
        }
    }

    // 2. Pings and pongs: the proxy answers pings itself, with the same payload.
    {
        let mut peer = rig.console().await;
        for payload in [Vec::new(), b"hello".to_vec(), vec![0xfe; 125]] {
            peer.send(&RawFrame::new(PING, payload.clone())).await;
            let pong = peer.read_data().await.unwrap();
            check(
                &format!("2 ping with {} bytes", payload.len()),
                pong.opcode == PONG && pong.payload == payload,
                format!("{pong:?}"),
            );
        }
        // An unsolicited pong is ignored; ten pings get ten pongs.
        peer.send(&RawFrame::new(PONG, b"unsolicited".to_vec()))
            .await;
        for i in 0..10u8 {
            peer.send(&RawFrame::new(PING, vec![i])).await;
        }
        for i in 0..10u8 {
            let pong = peer.read_data().await.unwrap();
            check(
                "2 ten pings",
                pong == RawFrame::new(PONG, vec![i]),
                format!("{pong:?}"),
            );
        }
        peer.still_echoes().await;
    }
    for (case, frames) in [
        (
            "2 ping of 126 bytes",
            vec![RawFrame::new(PING, vec![0; 126])],
        ),
        (
            "2 fragmented ping",
            vec![RawFrame::fragment(PING, b"x".to_vec(), false)],
        ),
        (
            "2 pong of 126 bytes",
            vec![RawFrame::new(PONG, vec![0; 126])],
        ),
    ] {
        let code = rig.closes_with(&frames).await;
        check(case, code == Some(1002), format!("closed with {code:?}"));
    }

    // 3. Reserved bits (no extension was negotiated).
    for rsv in [1u8, 2, 3, 4, 5, 6, 7] {
        for opcode in [TEXT, BINARY, PING] {
            let code = rig
                .closes_with(&[RawFrame::new(opcode, b"x".to_vec()).with_rsv(rsv)])
                .await;
            check(
                &format!("3 rsv {rsv} on opcode {opcode}"),
                code == Some(1002),
                format!("closed with {code:?}"),
            );
        }
    }

    // 4. Reserved opcodes.
    for opcode in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        let code = rig
            .closes_with(&[RawFrame::new(opcode, b"x".to_vec())])
            .await;
        check(
            &format!("4 reserved opcode {opcode:#x}"),
            code == Some(1002),
            format!("closed with {code:?}"),
        );
    }

    // 5. Fragmentation.
    {
        let mut peer = rig.console().await;
        for frame in text_in_fragments(&[b"frag", b"ment", b"ed"]) {
            peer.send(&frame).await;
        }
        let back = peer.message().await;
        check(
            "5 three fragments",
            back == (TEXT, b"fragmented".to_vec()),
            format!("{back:?}"),
        );
        // A ping between fragments is answered and the message stays whole.
        peer.send(&RawFrame::fragment(BINARY, b"one ".to_vec(), false))
            .await;
        peer.send(&RawFrame::new(PING, b"in between".to_vec()))
            .await;
        peer.send(&RawFrame::fragment(CONTINUATION, b"two".to_vec(), true))
            .await;
        let pong = peer.read_data().await.unwrap();
        check(
            "5 ping inside a message",
            pong == RawFrame::new(PONG, b"in between".to_vec()),
            format!("{pong:?}"),
        );
        let back = peer.message().await;
        check(
            "5 message around a ping",
            back == (BINARY, b"one two".to_vec()),
            format!("{back:?}"),
        );
        // Empty fragments.
        for frame in text_in_fragments(&[b"", b"x", b""]) {
            peer.send(&frame).await;
        }
        let back = peer.message().await;
        check(
            "5 empty fragments",
            back == (TEXT, b"x".to_vec()),
            format!("{back:?}"),
        );
    }
    for (case, frames) in [
        (
            "5 continuation without a start",
            vec![RawFrame::fragment(CONTINUATION, b"x".to_vec(), true)],
        ),
        (
            "5 a new message inside a fragmented one",
            vec![
                RawFrame::fragment(TEXT, b"a".to_vec(), false),
                RawFrame::new(TEXT, b"b".to_vec()),
            ],
        ),
        (
            "5 a final continuation after a final frame",
            vec![
                RawFrame::new(TEXT, b"a".to_vec()),
                RawFrame::fragment(CONTINUATION, b"b".to_vec(), true),
            ],
        ),
    ] {
        let code = rig.closes_with(&frames).await;
        check(case, code == Some(1002), format!("closed with {code:?}"));
    }

    // 6. UTF-8: valid text passes, also split inside a code point; invalid text is 1007.
    {
        let mut peer = rig.console().await;
        let valid = "κόσμε ünïcödé 𝄞".as_bytes().to_vec();
        peer.send(&RawFrame::new(TEXT, valid.clone())).await;
        check(
            "6 valid text",
            peer.message().await == (TEXT, valid.clone()),
            String::new(),
        );
        // Split between every byte.
        let parts: Vec<&[u8]> = valid.chunks(1).collect();
        for frame in text_in_fragments(&parts) {
            peer.send(&frame).await;
        }
        check(
            "6 valid text split in every byte",
            peer.message().await == (TEXT, valid),
            String::new(),
        );
    }
    for (case, frames) in [
        (
            "6 invalid byte",
            vec![RawFrame::new(TEXT, b"ab\xffcd".to_vec())],
        ),
        (
            "6 overlong encoding",
            vec![RawFrame::new(TEXT, b"\xc0\xaf".to_vec())],
        ),
        (
            "6 surrogate",
            vec![RawFrame::new(TEXT, b"\xed\xa0\x80".to_vec())],
        ),
        (
            "6 beyond U+10FFFF",
            vec![RawFrame::new(TEXT, b"\xf4\x90\x80\x80".to_vec())],
        ),
        (
            "6 truncated at the end",
            vec![RawFrame::new(TEXT, b"ok\xce".to_vec())],
        ),
        (
            "6 invalid across fragments",
            text_in_fragments(&[b"\xce", b"\xff"]),
        ),
        (
            "6 truncated in the last fragment",
            text_in_fragments(&[b"ok", b"\xf0\x9d"]),
        ),
        (
            "6 invalid in the first of fragments",
            text_in_fragments(&[b"\xff", b"ok"]),
        ),
    ] {
        let code = rig.closes_with(&frames).await;
        check(case, code == Some(1007), format!("closed with {code:?}"));
    }

    // 7. Close: valid codes come back, invalid ones and bad payloads are 1002, a reason that is
    // not UTF-8 is 1007, a close without a code is answered without one. 1012-1014 are in the
    // IANA registry (Autobahn's cases predate that and call them invalid).
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
        4000, 4999,
    ] {
        let answered = rig.closes_with(&[RawFrame::close(code, b"bye")]).await;
        check(
            &format!("7 close {code}"),
            answered == Some(code),
            format!("answered {answered:?}"),
        );
    }
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let answered = rig.closes_with(&[RawFrame::close(code, b"")]).await;
        check(
            &format!("7 invalid close code {code}"),
            answered == Some(1002),
            format!("answered {answered:?}"),
        );
    }
    let one_byte = rig.closes_with(&[RawFrame::new(CLOSE, vec![0x03])]).await;
    check(
        "7 close payload of 1 byte",
        one_byte == Some(1002),
        format!("{one_byte:?}"),
    );
    let bad_reason = rig.closes_with(&[RawFrame::close(1000, b"\xff\xfe")]).await;
    check(
        "7 close reason not UTF-8",
        bad_reason == Some(1007),
        format!("{bad_reason:?}"),
    );
    let long_reason = rig
        .closes_with(&[RawFrame::close(1000, &[b'a'; 124])])
        .await;
    check(
        "7 close payload of 126 bytes",
        long_reason == Some(1002),
        format!("{long_reason:?}"),
    );
    {
        let mut peer = rig.console().await;
        peer.send(&RawFrame::new(CLOSE, Vec::new())).await;
        let answer = peer.read_data().await.unwrap();
        check(
            "7 close without a code",
            answer.opcode == CLOSE && answer.payload.is_empty(),
            format!("{answer:?}"),
        );
        // Data after the close is not relayed.
        peer.send(&RawFrame::new(BINARY, b"after".to_vec())).await;
        let after = peer.read().await;
        check(
            "7 nothing after the close",
            after.is_none(),
            format!("{after:?}"),
        );
    }

    // 9. Limits: a message over the limit, whole or in fragments, is 1009.
    let over = vec![b'x'; MAX_MESSAGE + 1];
    let code = rig
        .closes_with(&[RawFrame::new(BINARY, over.clone())])
        .await;
    check(
        "9 one frame over the limit",
        code == Some(1009),
        format!("{code:?}"),
    );
    let halves = [
        RawFrame::fragment(BINARY, over[..MAX_MESSAGE / 2].to_vec(), false),
        RawFrame::fragment(CONTINUATION, over[MAX_MESSAGE / 2..].to_vec(), true),
    ];
    let code = rig.closes_with(&halves).await;
    check(
        "9 fragments over the limit",
        code == Some(1009),
        format!("{code:?}"),
    );
    {
        let mut peer = rig.console().await;
        let at_limit = vec![b'y'; MAX_MESSAGE];
        peer.send(&RawFrame::new(BINARY, at_limit.clone())).await;
        check(
            "9 a message at the limit",
            peer.message().await == (BINARY, at_limit),
            String::new(),
        );
    }

    // Masking: a client frame without a mask is refused.
    {
        let mut peer = rig.console().await;
        peer.send_bytes(&RawFrame::new(BINARY, b"unmasked".to_vec()).encode(false))
            .await;
        let code = peer.close_code().await;
        check(
            "unmasked client frame",
            code == Some(1002),
            format!("{code:?}"),
        );
    }

    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    rig.proxy.stop_with_sigterm().await;
}

/// What the console received from the proxy until it closed, and how long that took.
type Report = (Vec<RawFrame>, Duration);
/// The next console's script: the bytes it sends, whether it answers a close, where it reports.
type Script = (Vec<u8>, bool, tokio::sync::oneshot::Sender<Report>);

/// A console that misbehaves: it answers the proxy's upgrade, sends `frames` (raw bytes, so
/// they may be masked or broken), and reports the frames the proxy sent it until the proxy
/// closed the connection, and how long that took.
struct MisbehavingUpstream {
    addr: SocketAddr,
    scripts: tokio::sync::mpsc::UnboundedSender<Script>,
}

impl MisbehavingUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (scripts, mut next) = tokio::sync::mpsc::unbounded_channel::<Script>();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let Some((bytes, reply_to_close, report)) = next.recv().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut peer = RawPeer {
                        stream,
                        buffered: Vec::new(),
                        masks: false,
                    };
                    let head = peer.read_head().await;
                    let key = head
                        .lines()
                        .find_map(|line| {
                            let (name, value) = line.split_once(':')?;
                            name.eq_ignore_ascii_case("sec-websocket-key")
                                .then(|| value.trim().to_owned())
                        })
                        .unwrap();
                    let accept = proxy_server::proxy_wire::derive_accept_key(key.as_bytes());
                    peer.send_bytes(
                        format!(
                            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: plain.kubevirt.io\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
                    peer.send_bytes(&bytes).await;
                    let started = tokio::time::Instant::now();
                    let mut received = Vec::new();
                    while let Some(frame) = peer.read().await {
                        let close = frame.opcode == CLOSE;
                        received.push(frame);
                        if close && reply_to_close {
                            peer.send(&RawFrame::new(CLOSE, Vec::new())).await;
                        }
                    }
                    let _ = report.send((received, started.elapsed()));
                });
            }
        });
        Self { addr, scripts }
    }

    /// The next console sends `bytes`, answers (or not) the proxy's close, and reports.
    fn script(
        &self,
        bytes: Vec<u8>,
        reply_to_close: bool,
    ) -> tokio::sync::oneshot::Receiver<Report> {
        let (report, reported) = tokio::sync::oneshot::channel();
        self.scripts.send((bytes, reply_to_close, report)).unwrap();
        reported
    }
}

fn close_code_of(frame: &RawFrame) -> Option<u16> {
    (frame.opcode == CLOSE && frame.payload.len() >= 2)
        .then(|| u16::from_be_bytes([frame.payload[0], frame.payload[1]]))
}

#[tokio::test]
async fn the_upstream_leg_refuses_a_misbehaving_console() {
    let upstream = MisbehavingUpstream::start().await;
    let max = MAX_MESSAGE.to_string();
    let url = format!("ws://{}", upstream.addr);
    let mut proxy = ProxyProcess::start_with_url(
        &url,
        &[
            ("SECRET_KEY", SECRET),
            ("WS_PROXY_MAX_MESSAGE_BYTES", max.as_str()),
            ("WS_PROXY_CLOSE_TIMEOUT", "1s"),
            ("WS_PROXY_DRAIN_TIMEOUT", "500ms"),
        ],
    );
    let path = format!("/{}/ubuntu", mint(&["ubuntu"]));
    let mut failures = Vec::new();

    // (what the console sends, what it must get back, what the browser must get)
    let masked_server_frame = {
        let mut bytes = RawFrame::new(BINARY, b"masked".to_vec()).encode(true);
        bytes.truncate(bytes.len());
        bytes
    };
    let cases: Vec<(&str, Vec<u8>, u16, u16)> = vec![
        (
            "masked frame from the console",
            masked_server_frame,
            1002,
            1011,
        ),
        (
            "reserved opcode from the console",
            RawFrame::new(0x3, b"x".to_vec()).encode(false),
            1002,
            1011,
        ),
        (
            "rsv bit from the console",
            RawFrame::new(BINARY, b"x".to_vec())
                .with_rsv(4)
                .encode(false),
            1002,
            1011,
        ),
        (
            "text that is not UTF-8 from the console",
            RawFrame::new(TEXT, b"\xff".to_vec()).encode(false),
            1007,
            1011,
        ),
        (
            "a frame over the limit from the console",
            RawFrame::new(BINARY, vec![0; MAX_MESSAGE + 1]).encode(false),
            1009,
            1011,
        ),
        (
            "a close with 4321 from the console",
            RawFrame::close(4321, b"console ended").encode(false),
            4321,
            4321,
        ),
    ];
    for (case, bytes, to_console, to_browser) in cases {
        let report = upstream.script(bytes, true);
        let mut browser = RawPeer::client(proxy.addr, &path).await;
        let browser_code = browser.close_code().await;
        let (received, _) = tokio::time::timeout(READ_BOUND, report)
            .await
            .unwrap()
            .unwrap();
        let console_code = received.iter().find_map(close_code_of);
        if browser_code != Some(to_browser) || console_code != Some(to_console) {
            failures.push(format!(
                "{case}: browser got {browser_code:?} (want {to_browser}), console got {console_code:?} (want {to_console})"
            ));
        }
    }

    // Fragments from the console reach the browser as the same message.
    {
        let mut bytes = RawFrame::fragment(BINARY, b"RFB ".to_vec(), false).encode(false);
        bytes.extend(RawFrame::new(PING, b"p".to_vec()).encode(false));
        bytes.extend(RawFrame::fragment(CONTINUATION, b"003.008\n".to_vec(), true).encode(false));
        let report = upstream.script(bytes, true);
        let mut browser = RawPeer::client(proxy.addr, &path).await;
        let message = browser.message().await;
        if message != (BINARY, b"RFB 003.008\n".to_vec()) {
            failures.push(format!("fragments from the console: {message:?}"));
        }
        browser.send(&RawFrame::close(1000, b"")).await;
        let _ = browser.close_code().await;
        let (received, _) = report.await.unwrap();
        // The console's ping is answered by the proxy (the upstream leg's own pong).
        if !received
            .iter()
            .any(|frame| frame.opcode == PONG && frame.payload == b"p")
        {
            failures.push(format!("ping from the console not answered: {received:?}"));
        }
    }

    // A console that never answers the close: the browser's close is answered at once and the
    // console's connection is dropped after the close timeout (1 s), not left open.
    {
        let report = upstream.script(Vec::new(), false);
        let mut browser = RawPeer::client(proxy.addr, &path).await;
        browser.send(&RawFrame::close(1000, b"done")).await;
        let answered = tokio::time::timeout(Duration::from_millis(900), browser.read_data()).await;
        match answered {
            Ok(Some(frame)) if close_code_of(&frame) == Some(1000) => {}
            other => failures.push(format!(
                "close not answered to the browser at once: {other:?}"
            )),
        }
        let (received, lasted) = tokio::time::timeout(READ_BOUND, report)
            .await
            .unwrap()
            .unwrap();
        if received.iter().find_map(close_code_of) != Some(1000) {
            failures.push(format!("the close did not reach the console: {received:?}"));
        }
        if lasted > Duration::from_secs(4) {
            failures.push(format!("the silent console was held {lasted:?}"));
        }
    }

    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    proxy.send_sigterm();
    let _ = tokio::task::spawn_blocking(move || proxy.wait()).await;
}
