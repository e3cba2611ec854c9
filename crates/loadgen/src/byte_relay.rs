//! A TCP byte relay on tokio: the floor for any relay process built on the same runtime.
//!
//! It does what a WebSocket proxy cannot avoid and nothing more: one upstream connection per
//! client connection, `TCP_NODELAY` on both, bytes copied both ways with
//! [`tokio::io::copy_bidirectional_with_sizes`] and 256 KiB buffers (the read size `ws-proxy` uses
//! while busy), one current-thread runtime. No framing, no token, no HTTP. Where the proxy falls
//! short of a target and this relay does too, the host's cost of moving bytes through a third
//! process is what stands in the way, not the proxy's work. socat, the other relay column, forks a
//! process per connection and copies through 8 KiB buffers, so it is a floor for latency but a low
//! one for throughput and set-up.
//!
//! The `byte-relay` binary in this crate serves it; `loadgen` spawns that binary pinned like the proxy.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// Size of each direction's copy buffer.
pub const BYTE_RELAY_BUFFER_BYTES: usize = 256 << 10;

/// Accepts connections on `listener` and relays each to `upstream` until the listener fails.
pub async fn serve_byte_relay(listener: TcpListener, upstream: SocketAddr) -> io::Error {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(async move {
                    if let Err(error) = relay_connection(client, upstream).await {
                        tracing::debug!(%error, "byte relay connection ended with an error");
                    }
                });
            }
            Err(error) => return error,
        }
    }
}

/// Relays one client connection to a new connection to `upstream`; returns the bytes moved
/// `(client to upstream, upstream to client)` once both directions have ended.
pub async fn relay_connection(
    mut client: TcpStream,
    upstream: SocketAddr,
) -> io::Result<(u64, u64)> {
    let mut server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut server,
        BYTE_RELAY_BUFFER_BYTES,
        BYTE_RELAY_BUFFER_BYTES,
    )
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every byte with its bitwise complement, then closes after the client does.
    async fn complementing_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buffer = vec![0u8; 64 << 10];
            loop {
                let read = stream.read(&mut buffer).await.unwrap();
                if read == 0 {
                    break;
                }
                for byte in &mut buffer[..read] {
                    *byte = !*byte;
                }
                stream.write_all(&buffer[..read]).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_in_order_and_the_close_reaches_both_ends() {
        let upstream = complementing_server().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_addr = listener.local_addr().unwrap();
        let relay = tokio::spawn(async move {
            let (client, _) = listener.accept().await.unwrap();
            relay_connection(client, upstream).await.unwrap()
        });

        let sent: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let client = TcpStream::connect(relay_addr).await.unwrap();
        let (mut reader, mut writer) = client.into_split();
        let to_send = sent.clone();
        let writing = tokio::spawn(async move {
            writer.write_all(&to_send).await.unwrap();
            writer.shutdown().await.unwrap();
        });
        let mut received = Vec::new();
        reader.read_to_end(&mut received).await.unwrap();
        writing.await.unwrap();

        let expected: Vec<u8> = sent.iter().map(|byte| !byte).collect();
        assert_eq!(received.len(), expected.len());
        assert!(received == expected, "bytes changed or reordered");
        let moved = relay.await.unwrap();
        assert_eq!(moved, (sent.len() as u64, sent.len() as u64));
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_an_error_not_a_hang() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = closed.local_addr().unwrap();
        drop(closed);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(relay_addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let error = relay_connection(accepted, upstream).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    }
}
