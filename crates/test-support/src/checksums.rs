//! Checksummed byte streams for the relay tests: deterministic messages of varying sizes sent
//! while the other direction is received, with an order-sensitive checksum of each side.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// An order-sensitive checksum over a byte stream split into messages of any sizes (the
/// message boundaries do not change it).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checksum {
    /// The running hash.
    pub state: u64,
    /// Bytes seen.
    pub length: u64,
}

impl Checksum {
    /// Adds `data` to the stream.
    pub fn update(&mut self, data: &[u8]) {
        for &byte in data {
            self.state = (self.state ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.length += data.len() as u64;
    }
}

/// Deterministic message payloads: slices of varying length (1 B to 64 KiB) of a shared
/// pseudo-random block, so the sender does not allocate 256 MiB.
pub struct Payloads {
    block: Bytes,
    remaining: usize,
    step: usize,
}

impl Payloads {
    /// Payloads adding up to `total` bytes, the same for the same `seed`.
    pub fn new(seed: u64, total: usize) -> Self {
        let block = crate::noise((1 << 20) + (64 << 10), seed);
        Payloads {
            block: Bytes::from(block),
            remaining: total,
            step: 0,
        }
    }
}

impl Iterator for Payloads {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.remaining == 0 {
            return None;
        }
        self.step += 1;
        let length = (self.step.wrapping_mul(7919) % (64 << 10))
            .max(1)
            .min(self.remaining);
        let offset = self.step.wrapping_mul(104_729) % (1 << 20);
        self.remaining -= length;
        Some(self.block.slice(offset..offset + length))
    }
}

/// Sends `total` bytes as binary messages while receiving `total` bytes; returns the checksums
/// of what was sent and what was received. The socket stays open.
pub async fn exchange<S>(
    socket: &mut WebSocketStream<S>,
    seed: u64,
    total: usize,
) -> (Checksum, Checksum)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = socket.split();
    let send = async {
        let mut sent = Checksum::default();
        for payload in Payloads::new(seed, total) {
            sent.update(&payload);
            sink.feed(Message::Binary(payload)).await.unwrap();
        }
        sink.flush().await.unwrap();
        sent
    };
    let receive = async {
        let mut received = Checksum::default();
        while received.length < total as u64 {
            match stream.next().await.unwrap().unwrap() {
                Message::Binary(payload) => received.update(&payload),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected message {other:?}"),
            }
        }
        received
    };
    tokio::join!(send, receive)
}
