//! Loopback WebSocket throughput, relayed vs direct, in the same run: a client streams binary
//! messages (1 KiB and 64 KiB) to a sink server over 127.0.0.1, either directly or through
//! `proxy_core::relay` with `proxy_upstream::WsTransport` on both hops (the proxy's data path).
//! Both directions are measured: `upload` (client to server, masked frames, the relay unmasks
//! and re-masks) and `download` (server to client, the VNC framebuffer direction). A third path,
//! `tcp_proxy`, puts a plain byte-copying TCP proxy (`tokio::io::copy_bidirectional_with_sizes`,
//! 128 KiB buffers like tungstenite's) in the same place as the relay: the cost of an extra hop
//! with no WebSocket work at all.
//!
//! Run: `cargo bench -p ws-proxy-benches --bench ws_loopback -- --warm-up-time 1 --measurement-time 3`
//!
//! The relay's tungstenite buffers can be changed for experiments with
//! `WS_BENCH_READ_BUFFER=<bytes>` and `WS_BENCH_WRITE_BUFFER=<bytes>` (defaults: tungstenite's,
//! 128 KiB each); see `docs/performance.md`.
// Bench harness: a failed setup or transfer must abort the run, so `expect` is the right tool.
#![allow(clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::{SinkExt, StreamExt};
use proxy_core::{RelayConfig, relay};
use proxy_upstream::WsTransport;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, accept_async_with_config, client_async_with_config,
};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

const SYNC: &str = "sync";
/// Copy buffer of the `tcp_proxy` baseline, per direction.
const TCP_PROXY_BUFFER: usize = 128 * 1024;
const ACK: &str = "ack";

/// Accepts WebSocket connections. Binary messages are counted and dropped; `sync` is answered
/// with `ack` (so the client knows everything before it arrived); `pull <count> <size>` makes
/// the server send `count` binary messages of `size` bytes, then `ack`.
async fn sink_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            socket.set_nodelay(true).expect("nodelay");
            tokio::spawn(async move {
                let mut socket = accept_async_with_config(socket, None)
                    .await
                    .expect("handshake");
                while let Some(Ok(message)) = socket.next().await {
                    let Message::Text(command) = message else {
                        continue;
                    };
                    let mut words = command.as_str().split(' ');
                    if let (Some("pull"), Some(count), Some(size)) =
                        (words.next(), words.next(), words.next())
                    {
                        let count: u64 = count.parse().expect("count");
                        let payload = Bytes::from(vec![0x5a; size.parse().expect("size")]);
                        for _ in 0..count {
                            socket
                                .feed(Message::Binary(payload.clone()))
                                .await
                                .expect("send");
                        }
                    }
                    socket.send(Message::text(ACK)).await.expect("ack");
                }
            });
        }
    });
    address
}

/// The relay's WebSocket settings: tungstenite's defaults unless overridden by the environment.
fn relay_websocket_config() -> WebSocketConfig {
    let from_env = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|value| value.parse::<usize>().expect("a size in bytes"))
    };
    let mut config = WebSocketConfig::default();
    if let Some(size) = from_env("WS_BENCH_READ_BUFFER") {
        config.read_buffer_size = size;
    }
    if let Some(size) = from_env("WS_BENCH_WRITE_BUFFER") {
        config.write_buffer_size = size;
    }
    config
}

/// A plain TCP proxy in front of `upstream`: bytes copied both ways, no WebSocket parsing.
async fn tcp_proxy(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            client.set_nodelay(true).expect("nodelay");
            tokio::spawn(async move {
                let mut server = TcpStream::connect(upstream).await.expect("dial");
                server.set_nodelay(true).expect("nodelay");
                let _ = tokio::io::copy_bidirectional_with_sizes(
                    &mut client,
                    &mut server,
                    TCP_PROXY_BUFFER,
                    TCP_PROXY_BUFFER,
                )
                .await;
            });
        }
    });
    address
}

/// A relay in front of `upstream`, wired as ws-proxy wires it.
async fn relay_server(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            socket.set_nodelay(true).expect("nodelay");
            tokio::spawn(async move {
                let config = relay_websocket_config();
                let client = accept_async_with_config(socket, Some(config))
                    .await
                    .expect("client handshake");
                let upstream_socket = TcpStream::connect(upstream).await.expect("dial");
                upstream_socket.set_nodelay(true).expect("nodelay");
                let (upstream, _) = client_async_with_config(
                    format!("ws://{upstream}/"),
                    upstream_socket,
                    Some(config),
                )
                .await
                .expect("upstream handshake");
                let config = RelayConfig::default();
                relay(
                    WsTransport::new(client),
                    WsTransport::new(upstream),
                    &config,
                    std::future::pending(),
                )
                .await
            });
        }
    });
    address
}

async fn connect(address: SocketAddr) -> Client {
    let (client, _) =
        tokio_tungstenite::connect_async_with_config(format!("ws://{address}/"), None, true)
            .await
            .expect("connect");
    client
}

async fn await_ack(client: &mut Client) -> u64 {
    let mut received = 0;
    loop {
        match client.next().await.expect("open").expect("no error") {
            Message::Text(text) if text.as_str() == ACK => return received,
            Message::Binary(_) => received += 1,
            _ => {}
        }
    }
}

async fn upload(client: &mut Client, payload: &Bytes, count: u64) -> Duration {
    let started = Instant::now();
    for _ in 0..count {
        client
            .feed(Message::Binary(payload.clone()))
            .await
            .expect("send");
    }
    client.send(Message::text(SYNC)).await.expect("sync");
    await_ack(client).await;
    started.elapsed()
}

async fn download(client: &mut Client, size: usize, count: u64) -> Duration {
    let started = Instant::now();
    client
        .send(Message::text(format!("pull {count} {size}")))
        .await
        .expect("pull");
    let received = await_ack(client).await;
    assert_eq!(received, count);
    started.elapsed()
}

fn loopback(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (direct_address, relayed_address, tcp_proxy_address) = runtime.block_on(async {
        let server = sink_server().await;
        (server, relay_server(server).await, tcp_proxy(server).await)
    });

    for size in [1024usize, 64 * 1024] {
        let mut group = c.benchmark_group(format!("ws_loopback_{}k", size / 1024));
        group.throughput(Throughput::Bytes(size as u64));
        let payload = Bytes::from(vec![0xa5; size]);
        let paths = [
            ("direct", direct_address),
            ("relayed", relayed_address),
            ("tcp_proxy", tcp_proxy_address),
        ];
        for (path, address) in paths {
            let mut client = runtime.block_on(connect(address));
            group.bench_function(BenchmarkId::new("upload", path), |b| {
                b.iter_custom(|count| runtime.block_on(upload(&mut client, &payload, count)));
            });
            group.bench_function(BenchmarkId::new("download", path), |b| {
                b.iter_custom(|count| runtime.block_on(download(&mut client, size, count)));
            });
            runtime.block_on(client.close(None)).ok();
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = loopback
}
criterion_main!(benches);
