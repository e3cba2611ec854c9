//! Loopback WebSocket throughput, relayed vs direct, in the same run: a client streams binary
//! messages (1 KiB and 64 KiB) to a sink server over 127.0.0.1, either directly or through
//! `proxy_core::relay`. Both directions are measured: `upload` (client to server, masked
//! frames) and `download` (server to client, the VNC framebuffer direction). Paths:
//!
//! - `direct`: client to server;
//! - `relayed`: through the relay wired as ws-proxy wires a session: `WireTransport` on both
//!   legs, the upstream leg opened by `KubeVirtConnector` (dev mode);
//! - `relayed_tungstenite`: the same relay with `WsTransport` (tokio-tungstenite, default
//!   settings) on both legs, for comparison;
//! - `tcp_proxy`: a plain byte-copying TCP proxy (`tokio::io::copy_bidirectional_with_sizes`,
//!   128 KiB buffers): the cost of an extra hop with no WebSocket work at all.
//!
//! The client and the server share one thread (one current-thread runtime); the relays run on a
//! second thread with their own runtime. On a 2-core machine each side gets a core, as in the
//! load test (`loadgen`), where the proxy is pinned to one core and the load to the other.
//!
//! Run: `cargo bench -p ws-proxy-benches --bench ws_loopback -- --warm-up-time 1 --measurement-time 3`
// Bench harness: a failed setup or transfer must abort the run, so `expect` is the right tool.
#![allow(clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::{SinkExt, StreamExt};
use proxy_core::{RelayConfig, relay};
use proxy_upstream::{Connector, KubeVirtConnector, UpstreamTarget};
use proxy_wire::{WireLimits, WireRole, WireTransport};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, accept_async_with_config, client_async_with_config,
};
use ws_proxy_benches::tungstenite_transport::WsTransport;

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

/// Answers a client's WebSocket upgrade with ws-proxy's own server handshake; returns the bytes
/// read past the request head.
async fn answer_upgrade(socket: &mut TcpStream) -> BytesMut {
    let (head, already_read) = proxy_wire::read_request_head(socket, 16 * 1024)
        .await
        .expect("request head");
    let accept_key = proxy_wire::accept_upgrade(&head).expect("a WebSocket upgrade");
    proxy_wire::write_switching_protocols(socket, &accept_key, None, None)
        .await
        .expect("101");
    already_read[..].into()
}

/// The relay in front of `upstream` as ws-proxy runs a session: `WireTransport` on both legs.
async fn wire_relay(upstream: SocketAddr) -> SocketAddr {
    let connector = std::sync::Arc::new(
        KubeVirtConnector::builder(format!("ws://{upstream}"))
            .subprotocols(Vec::<String>::new())
            .build()
            .expect("connector"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            socket.set_nodelay(true).expect("nodelay");
            let connector = connector.clone();
            tokio::spawn(async move {
                let already_read = answer_upgrade(&mut socket).await;
                let target = UpstreamTarget {
                    namespace: "bench",
                    vmi_name: "sink",
                };
                let upstream = connector.connect(target).await.expect("upstream");
                let client = WireTransport::from_partially_read(
                    socket,
                    WireRole::Server,
                    WireLimits::default(),
                    already_read,
                );
                relay(
                    client,
                    upstream.transport,
                    &RelayConfig::default(),
                    std::future::pending(),
                )
                .await
            });
        }
    });
    address
}

/// The same relay with tokio-tungstenite (default settings) on both legs.
async fn tungstenite_relay(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            socket.set_nodelay(true).expect("nodelay");
            tokio::spawn(async move {
                let client = accept_async_with_config(socket, None)
                    .await
                    .expect("client handshake");
                let upstream_socket = TcpStream::connect(upstream).await.expect("dial");
                upstream_socket.set_nodelay(true).expect("nodelay");
                let (upstream, _) =
                    client_async_with_config(format!("ws://{upstream}/"), upstream_socket, None)
                        .await
                        .expect("upstream handshake");
                relay(
                    WsTransport::new(client),
                    WsTransport::new(upstream),
                    &RelayConfig::default(),
                    std::future::pending(),
                )
                .await
            });
        }
    });
    address
}

/// Starts the relays and the TCP proxy in front of `upstream` on a thread of their own; returns
/// their addresses (wire relay, tungstenite relay, TCP proxy).
fn spawn_relay_thread(upstream: SocketAddr) -> (SocketAddr, SocketAddr, SocketAddr) {
    let (addresses_tx, addresses_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("relay runtime");
            runtime.block_on(async move {
                let addresses = (
                    wire_relay(upstream).await,
                    tungstenite_relay(upstream).await,
                    tcp_proxy(upstream).await,
                );
                addresses_tx.send(addresses).expect("addresses");
                std::future::pending::<()>().await;
            });
        })
        .expect("relay thread");
    addresses_rx.recv().expect("relay addresses")
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let direct_address = runtime.block_on(sink_server());
    let (relayed_address, tungstenite_address, tcp_proxy_address) =
        spawn_relay_thread(direct_address);

    for size in [1024usize, 64 * 1024] {
        let mut group = c.benchmark_group(format!("ws_loopback_{}k", size / 1024));
        group.throughput(Throughput::Bytes(size as u64));
        let payload = Bytes::from(vec![0xa5; size]);
        let paths = [
            ("direct", direct_address),
            ("relayed", relayed_address),
            ("relayed_tungstenite", tungstenite_address),
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
