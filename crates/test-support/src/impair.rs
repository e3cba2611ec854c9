//! An impairment relay for fault-injection tests: a TCP relay between two endpoints that can
//! delay each direction, limit its rate, pause it, and cut every connection with a reset. The
//! kernel here has no `netem` qdisc, so this stands in for it.
use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How each direction is impaired right now.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairment {
    /// Added to every chunk, each way.
    pub delay: Duration,
    /// Bytes per second each way (`None`: unlimited).
    pub rate: Option<u64>,
    /// Nothing moves while paused (data waits, nothing is lost).
    pub paused: bool,
}

/// A running impairment relay; connections to [`addr`](Self::addr) are relayed to the target.
pub struct ImpairedLink {
    /// Where clients connect.
    pub addr: SocketAddr,
    settings: watch::Sender<Impairment>,
    cut: watch::Sender<u64>,
}

impl std::fmt::Debug for ImpairedLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImpairedLink")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ImpairedLink {
    /// Listens on `listen` (port 0 for any) and relays each connection to `target`.
    ///
    /// # Panics
    /// When `listen` cannot be bound.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> Self {
        let listener = TcpListener::bind(listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (settings, _) = watch::channel(Impairment::default());
        let (cut, _) = watch::channel(0u64);
        let (settings_for_loop, cut_for_loop) = (settings.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                tokio::spawn(relay_connection(
                    inbound,
                    outbound,
                    settings_for_loop.subscribe(),
                    cut_for_loop.subscribe(),
                ));
            }
        });
        Self {
            addr,
            settings,
            cut,
        }
    }

    /// Applies `impairment` to every connection, open ones included.
    pub fn set(&self, impairment: Impairment) {
        self.settings.send_replace(impairment);
    }

    /// Resets (RST) every open connection on both ends.
    pub fn reset_all(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }
}

async fn relay_connection(
    inbound: TcpStream,
    outbound: TcpStream,
    settings: watch::Receiver<Impairment>,
    mut cut: watch::Receiver<u64>,
) {
    // Second handles on both sockets: a reset sets zero linger through them, so closing the
    // last handle sends RST; a normal end keeps the default linger and loses nothing.
    let handles = [&inbound, &outbound].map(|stream| stream.as_fd().try_clone_to_owned());
    let (inbound_read, inbound_write) = inbound.into_split();
    let (outbound_read, outbound_write) = outbound.into_split();
    let forward = pump(inbound_read, outbound_write, settings.clone());
    let backward = pump(outbound_read, inbound_write, settings);
    tokio::select! {
        _ = async { tokio::join!(forward, backward) } => {}
        _ = cut.changed() => {
            for handle in handles.iter().flatten() {
                let _ = socket2::SockRef::from(handle).set_linger(Some(Duration::ZERO));
            }
        }
    }
}

/// One direction: reads chunks, holds each for the delay, writes them at the rate, waits while
/// paused. Ends when the source ends (then shuts the sink) or on a reset.
async fn pump(
    mut source: tokio::net::tcp::OwnedReadHalf,
    mut sink: tokio::net::tcp::OwnedWriteHalf,
    mut settings: watch::Receiver<Impairment>,
) {
    let (chunks, mut queued) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let reader = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match source.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if chunks
                        .send((Instant::now(), buffer[..read].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((read_at, chunk)) = queued.recv().await {
            loop {
                let current = *settings.borrow_and_update();
                if current.paused {
                    if settings.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                tokio::time::sleep_until(read_at + current.delay).await;
                break;
            }
            let rate = settings.borrow().rate;
            let started = Instant::now();
            if sink.write_all(&chunk).await.is_err() {
                return;
            }
            if let Some(rate) = rate {
                let budget = Duration::from_secs_f64(chunk.len() as f64 / rate.max(1) as f64);
                tokio::time::sleep_until(started + budget).await;
            }
        }
        let _ = sink.shutdown().await;
    };
    tokio::join!(reader, writer);
}
