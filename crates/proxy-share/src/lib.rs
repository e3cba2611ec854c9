//! Shared consoles (`--share-consoles`): every session for one VM on this replica joins one
//! hub, which holds the only upstream connection (KubeVirt serves one VNC stream per VMI) and
//! speaks RFB to each viewer itself ([`proxy_rfb::viewer`]), from one framebuffer
//! ([`proxy_rfb::upstream`]). A late joiner gets the whole screen in its first update; a slow
//! viewer gets merged updates; controllers' input reaches the VM, observers' never does.
//!
//! Sharing costs what a private console does: the viewers there when the hub asked the VM
//! for their settings get the VM's own messages; every further viewer takes the shared stream
//! of its settings, encoded once for all of them outside the hub's lock; a viewer that falls
//! behind gets its own, merged updates (the modes are described in `hub.rs`; the figures in
//! `docs/sharing.md`). With no viewer the hub asks the VM for nothing and lets it go after the
//! linger, whatever the VM sends. [`Hubs::totals`] and [`Hubs::consoles`] count the bytes as
//! they go.
//!
//! To the relay a viewer's side of the hub is just another [`FrameTransport`]
//! ([`HubTransport`]): keepalive, closes, operator closes, counters and drain work as for a
//! direct session. The hub's task owns the upstream; when the last viewer leaves it waits
//! [`ShareConfig::linger`] for another, then closes the upstream normally.
//!
//! The first viewer of a VM dials its upstream; later ones join the hub without a dial:
//!
//! ```
//! use std::sync::Arc;
//!
//! use proxy_core::MemoryTransport;
//! use proxy_share::{Hubs, Participant, ShareConfig};
//! use proxy_upstream::Upstream;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let hubs = Arc::new(Hubs::new(ShareConfig::default()));
//! let (upstream, _vm) = MemoryTransport::pair(16);
//! let dial = async {
//!     Ok::<_, std::io::Error>(Upstream { transport: upstream, subprotocol: None, tls_handshake: None })
//! };
//! let student = Participant { session: "a.1".into(), user_id: "student".into(), controls: true };
//! let vm = ("lab-ns".to_owned(), "ubuntu".to_owned());
//! let joined = hubs.join(vm.clone(), student, dial).await;
//! assert!(joined.is_ok());
//!
//! let teacher = Participant { session: "a.2".into(), user_id: "teacher".into(), controls: false };
//! let no_dial = async { Err::<Upstream<MemoryTransport>, _>(std::io::Error::other("not dialled")) };
//! let watching = hubs.join(vm, teacher, no_dial).await;
//! assert!(watching.is_ok(), "the second viewer joins the hub without a dial");
//! assert_eq!(hubs.participants()[0].1.len(), 2);
//! # }
//! ```
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _};
use proxy_core::{CloseFrame, Frame, FrameTransport, TransportError, close_code, close_reason};
use proxy_rfb::RfbError;
use proxy_rfb::upstream::UpstreamClient;
use proxy_rfb::viewer::ViewerEvent;

mod hub;

use hub::{HubState, Mode, Next, ViewerSlot};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

/// Controller input messages waiting for the upstream before a viewer is cut off (input is
/// human-paced; a flood is a broken or hostile client).
const INPUT_QUEUE: usize = 4096;

/// Settings of shared consoles.
#[derive(Clone, PartialEq, Eq)]
pub struct ShareConfig {
    /// How long a hub keeps its upstream after the last viewer left (default 5 s), so a
    /// reload of the page does not take KubeVirt's VNC slot twice.
    pub linger: Duration,
    /// Most viewers of one VM on a replica (default 10); 429 `too many viewers for this vm`
    /// beyond.
    pub max_viewers: usize,
    /// The VNC password to answer a VM that asks for VNC authentication (KubeVirt's does
    /// not; other VNC servers behind a bridge may). Default: none, such a VM is refused.
    pub upstream_password: Option<Arc<[u8]>>,
    /// The hub's pings to the VM (default 20 s / 20 s, as the relay's upstream keepalive): a
    /// VM whose host vanished ends every viewer with 1011 `upstream keepalive ping timeout`.
    pub upstream_keepalive: Option<proxy_core::Keepalive>,
}

impl std::fmt::Debug for ShareConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareConfig")
            .field("linger", &self.linger)
            .field("max_viewers", &self.max_viewers)
            .field(
                "upstream_password",
                &self.upstream_password.as_ref().map(|_| "<redacted>"),
            )
            .field("upstream_keepalive", &self.upstream_keepalive)
            .finish()
    }
}

impl Default for ShareConfig {
    fn default() -> Self {
        Self {
            linger: Duration::from_secs(5),
            max_viewers: 10,
            upstream_password: None,
            upstream_keepalive: Some(proxy_core::Keepalive::default()),
        }
    }
}

/// A VM: namespace and name.
pub type HubKey = (String, String);

/// Byte and message counters of every hub of this replica, kept current as they relay (a
/// metrics exporter reads them every second).
#[derive(Debug, Default)]
pub struct HubTotals {
    /// Bytes the VMs sent their hubs.
    pub bytes_from_vms: AtomicU64,
    /// WebSocket messages the VMs sent their hubs.
    pub messages_from_vms: AtomicU64,
    /// Bytes the hubs sent their viewers (RFB, before the viewer's WebSocket framing).
    pub bytes_to_viewers: AtomicU64,
    /// Messages the hubs sent their viewers.
    pub messages_to_viewers: AtomicU64,
}

/// One hub as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SharedConsole {
    /// The VM's namespace.
    pub namespace: String,
    /// The VM.
    pub vmi: String,
    /// Who is watching.
    pub viewers: Vec<SharedViewer>,
    /// Bytes the VM sent the hub.
    pub bytes_from_vm: u64,
    /// Bytes the hub sent its viewers (all of them).
    pub bytes_to_viewers: u64,
}

/// One viewer of a hub.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SharedViewer {
    /// Who.
    #[serde(flatten)]
    pub participant: Participant,
    /// Where its updates come from: `vm` (the VM's own messages, passed through), `shared`
    /// (encoded once for every viewer with its settings) or `own` (its own encoder: catching
    /// up, or an encoding that cannot be shared).
    pub updates: &'static str,
    /// Bytes the hub sent it.
    pub bytes_sent: u64,
}

/// Who is watching one VM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Participant {
    /// The viewer's session id.
    pub session: String,
    /// The token's user id.
    pub user_id: String,
    /// Whether its input reaches the VM.
    pub controls: bool,
}

struct HubShared {
    key: HubKey,
    totals: Arc<HubTotals>,
    /// The subprotocol the upstream agreed to (what a viewer's client is answered with).
    subprotocol: Option<String>,
    state: Mutex<HubState>,
    input: mpsc::Sender<Bytes>,
    /// Wakes the hub's task: the last viewer left (the linger starts), or a viewer's side
    /// queued something for the VM (the format and encodings to ask for, a request).
    wake_task: tokio::sync::Notify,
}

impl HubShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The hubs of this replica.
pub struct Hubs {
    config: ShareConfig,
    totals: Arc<HubTotals>,
    hubs: Mutex<HashMap<HubKey, Arc<HubShared>>>,
    /// One dial at a time per VM, so that two first viewers do not both take the VNC slot.
    dialling: Mutex<HashMap<HubKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// A viewer's side of the hub and the subprotocol the upstream agreed to, or why not.
pub type Joined<E> = Result<(HubTransport, Option<String>), JoinError<E>>;

/// Why a viewer could not join.
#[derive(Debug)]
pub enum JoinError<E> {
    /// The hub has [`ShareConfig::max_viewers`].
    Full,
    /// Opening the upstream failed.
    Dial(E),
}

impl Hubs {
    /// No hubs yet; each VM's opens with its first viewer.
    pub fn new(config: ShareConfig) -> Self {
        Self {
            config,
            totals: Arc::new(HubTotals::default()),
            hubs: Mutex::new(HashMap::new()),
            dialling: Mutex::new(HashMap::new()),
        }
    }

    fn attach(&self, hub: &Arc<HubShared>, participant: Participant) -> Option<HubTransport> {
        let mut state = hub.lock();
        if state.ended.is_some() {
            return None;
        }
        if state.viewers.len() >= self.config.max_viewers {
            return Some(HubTransport::full());
        }
        let id = state.next_viewer;
        state.next_viewer += 1;
        info!(
            vm = %hub.key.1,
            session = %participant.session,
            controls = participant.controls,
            viewers = state.viewers.len() + 1,
            "viewer joined the shared console"
        );
        state.viewers.insert(
            id,
            ViewerSlot {
                server: None,
                waker: None,
                participant,
                mode: Mode::Solo,
                sent: 0,
                shared_before: false,
            },
        );
        state.joined();
        if state.upstream.has_output() {
            hub.wake_task.notify_one();
        }
        Some(HubTransport::joined(Arc::clone(hub), id))
    }

    /// Joins the hub of `key`, dialling the upstream with `dial` if there is none.
    pub async fn join<T, E, F>(
        self: &Arc<Self>,
        key: HubKey,
        participant: Participant,
        dial: F,
    ) -> Joined<E>
    where
        T: FrameTransport + 'static,
        F: Future<Output = Result<proxy_upstream::Upstream<T>, E>>,
    {
        if let Some(joined) = self.join_existing(&key, &participant) {
            return joined;
        }
        let lock = Arc::clone(
            self.dialling
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key.clone())
                .or_default(),
        );
        let _dialling = lock.lock().await;
        if let Some(joined) = self.join_existing(&key, &participant) {
            return joined;
        }
        let dialled = dial.await;
        // The lock's entry is not needed once this dial is over: later viewers find the hub
        // (or dial afresh); those waiting hold the lock itself.
        self.dialling
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        let upstream = dialled.map_err(JoinError::Dial)?;
        let (input, inputs) = mpsc::channel(INPUT_QUEUE);
        let subprotocol = upstream.subprotocol.clone();
        let hub = Arc::new(HubShared {
            key: key.clone(),
            totals: Arc::clone(&self.totals),
            subprotocol: subprotocol.clone(),
            state: Mutex::new(HubState::new(
                match &self.config.upstream_password {
                    Some(password) => UpstreamClient::with_password(password),
                    None => UpstreamClient::new(),
                },
                key.1.clone(),
            )),
            input,
            wake_task: tokio::sync::Notify::new(),
        });
        let transport = self.attach(&hub, participant).ok_or(JoinError::Full)?;
        self.hubs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone(), Arc::clone(&hub));
        info!(vm = %key.1, namespace = %key.0, "shared console opened: one upstream for every viewer of this vm");
        tokio::spawn(run_hub(
            Arc::clone(self),
            Arc::clone(&hub),
            upstream.transport,
            inputs,
        ));
        Self::joined(transport, subprotocol)
    }

    /// Joins the live hub of `key`, if there is one.
    fn join_existing<E>(&self, key: &HubKey, participant: &Participant) -> Option<Joined<E>> {
        let hub = self.existing(key)?;
        let transport = self.attach(&hub, participant.clone())?;
        Some(Self::joined(transport, hub.subprotocol.clone()))
    }

    fn joined<E>(transport: HubTransport, subprotocol: Option<String>) -> Joined<E> {
        if transport.hub.is_none() {
            return Err(JoinError::Full);
        }
        Ok((transport, subprotocol))
    }

    fn existing(&self, key: &HubKey) -> Option<Arc<HubShared>> {
        let hubs = self.hubs.lock().unwrap_or_else(PoisonError::into_inner);
        hubs.get(key).cloned()
    }

    /// Removes `hub` (its task ended).
    fn remove(&self, hub: &Arc<HubShared>) {
        let mut hubs = self.hubs.lock().unwrap_or_else(PoisonError::into_inner);
        if hubs
            .get(&hub.key)
            .is_some_and(|kept| Arc::ptr_eq(kept, hub))
        {
            hubs.remove(&hub.key);
        }
    }

    /// Counters of every hub of this replica, live.
    pub fn totals(&self) -> &Arc<HubTotals> {
        &self.totals
    }

    /// Every hub with its viewers, where their updates come from and the bytes so far.
    pub fn consoles(&self) -> Vec<SharedConsole> {
        let hubs = self.hubs.lock().unwrap_or_else(PoisonError::into_inner);
        hubs.iter()
            .map(|((namespace, vmi), hub)| {
                let state = hub.lock();
                SharedConsole {
                    namespace: namespace.clone(),
                    vmi: vmi.clone(),
                    viewers: state
                        .viewers
                        .values()
                        .map(|slot| SharedViewer {
                            participant: slot.participant.clone(),
                            updates: match slot.mode {
                                Mode::Passthrough { .. } => "vm",
                                Mode::Stream { .. } => "shared",
                                Mode::Solo => "own",
                            },
                            bytes_sent: slot.sent,
                        })
                        .collect(),
                    bytes_from_vm: state.bytes_from_vm,
                    bytes_to_viewers: state.bytes_to_viewers,
                }
            })
            .collect()
    }

    /// The participants of every hub, by VM.
    pub fn participants(&self) -> Vec<(HubKey, Vec<Participant>)> {
        let hubs = self.hubs.lock().unwrap_or_else(PoisonError::into_inner);
        hubs.iter()
            .map(|(key, hub)| {
                let state = hub.lock();
                (
                    key.clone(),
                    state
                        .viewers
                        .values()
                        .map(|slot| slot.participant.clone())
                        .collect(),
                )
            })
            .collect()
    }
}

async fn run_hub<T: FrameTransport>(
    hubs: Arc<Hubs>,
    hub: Arc<HubShared>,
    mut upstream: T,
    mut inputs: mpsc::Receiver<Bytes>,
) {
    let linger = hubs.config.linger;
    let keepalive = hubs.config.upstream_keepalive;
    let mut next_ping = keepalive.map(|keepalive| Instant::now() + keepalive.interval);
    let mut pong_due: Option<Instant> = None;
    let ended = loop {
        let output = hub.lock().upstream.take_output();
        if !output.is_empty() && upstream.send(Frame::Binary(output.into())).await.is_err() {
            break CloseFrame::new(close_code::GOING_AWAY, "upstream went away");
        }
        // The linger runs from when the last viewer left, whatever the VM sends meanwhile.
        let idle_since = hub.lock().idle_since;
        let lingering = async {
            match idle_since {
                Some(since) => tokio::time::sleep_until(since + linger).await,
                None => std::future::pending().await,
            }
        };
        let keepalive_timer = async {
            match pong_due.or(next_ping) {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = keepalive_timer => {
                if pong_due.is_some() {
                    warn!(vm = %hub.key.1, "the shared console's upstream did not answer a keepalive ping");
                    break CloseFrame::new(close_code::INTERNAL_ERROR, close_reason::UPSTREAM_KEEPALIVE_TIMEOUT);
                }
                if upstream.send(Frame::Ping(Bytes::from_static(b"ws-proxy hub keepalive"))).await.is_err() {
                    break CloseFrame::new(close_code::GOING_AWAY, "upstream went away");
                }
                next_ping = None;
                pong_due = keepalive.map(|keepalive| Instant::now() + keepalive.timeout);
            }
            frame = upstream.next() => {
                let bytes = match frame {
                    Some(Ok(Frame::Binary(bytes) | Frame::Text(bytes))) => bytes,
                    Some(Ok(Frame::MaskedBinary(masked))) => masked.unmask(),
                    Some(Ok(Frame::Pong(_))) => {
                        if pong_due.take().is_some() {
                            next_ping = keepalive.map(|keepalive| Instant::now() + keepalive.interval);
                        }
                        continue;
                    }
                    Some(Ok(Frame::Ping(_))) => continue,
                    Some(Ok(Frame::Close(close))) => {
                        let _ = upstream.send(Frame::Close(close.clone())).await;
                        break close.unwrap_or_else(|| CloseFrame::new(close_code::NORMAL, ""));
                    }
                    Some(Err(_)) => break CloseFrame::new(close_code::INTERNAL_ERROR, "upstream connection error"),
                    None => break CloseFrame::new(close_code::GOING_AWAY, "upstream went away"),
                };
                hubs.totals.bytes_from_vms.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                hubs.totals.messages_from_vms.fetch_add(1, Ordering::Relaxed);
                let mut state = hub.lock();
                state.bytes_from_vm += bytes.len() as u64;
                match state.upstream.feed(&bytes) {
                    Ok(events) => state.apply(events),
                    Err(error) => {
                        drop(state);
                        warn!(error = %error, vm = %hub.key.1, "the shared console's upstream broke the RFB protocol");
                        break violation(&error);
                    }
                }
            }
            Some(message) = inputs.recv() => {
                if upstream.send(Frame::Binary(message)).await.is_err() {
                    break CloseFrame::new(close_code::GOING_AWAY, "upstream went away");
                }
            }
            () = hub.wake_task.notified() => {}
            () = lingering => {
                if idle_since.is_some() && hub.lock().viewers.is_empty() {
                    let _ = upstream
                        .send(Frame::Close(Some(CloseFrame::new(close_code::NORMAL, "no viewers left"))))
                        .await;
                    break CloseFrame::new(close_code::NORMAL, "no viewers left");
                }
            }
        }
    };
    hubs.remove(&hub);
    let mut state = hub.lock();
    info!(vm = %hub.key.1, code = ended.code, reason = %ended.reason, viewers = state.viewers.len(), "shared console closed");
    state.ended = Some(ended);
    state.wake_all();
}

fn violation(error: &RfbError) -> CloseFrame {
    CloseFrame::new(
        close_code::POLICY_VIOLATION,
        format!("console protocol error: {error}"),
    )
}

/// A viewer's side of a hub, as the relay sees its upstream.
pub struct HubTransport {
    hub: Option<Arc<HubShared>>,
    id: u64,
    closed: bool,
    /// The answer to the relay's keepalive ping (the hub stands in for the upstream).
    pong: Option<Bytes>,
}

impl HubTransport {
    fn joined(hub: Arc<HubShared>, id: u64) -> Self {
        Self {
            hub: Some(hub),
            id,
            closed: false,
            pong: None,
        }
    }

    fn full() -> Self {
        Self {
            hub: None,
            id: 0,
            closed: true,
            pong: None,
        }
    }

    fn leave(&mut self) {
        if let Some(hub) = self.hub.take() {
            let mut state = hub.lock();
            if let Some(slot) = state.left(self.id) {
                info!(vm = %hub.key.1, session = %slot.participant.session, viewers = state.viewers.len(), "viewer left the shared console");
            }
            let empty = state.viewers.is_empty();
            drop(state);
            if empty {
                hub.wake_task.notify_one();
            }
        }
    }
}

impl HubTransport {
    /// Wakes the relay waiting on this viewer's side of the hub.
    fn wake(&self) {
        if let Some(hub) = &self.hub
            && let Some(waker) = hub
                .lock()
                .viewers
                .get_mut(&self.id)
                .and_then(|slot| slot.waker.take())
        {
            waker.wake();
        }
    }
}

impl Drop for HubTransport {
    fn drop(&mut self) {
        self.leave();
    }
}

impl Stream for HubTransport {
    type Item = Result<Frame, TransportError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(payload) = this.pong.take() {
            return Poll::Ready(Some(Ok(Frame::Pong(payload))));
        }
        let Some(hub) = &this.hub else {
            return Poll::Ready(None);
        };
        loop {
            let next = {
                let mut state = hub.lock();
                let next = state.next_for(this.id);
                if let Next::Nothing = next {
                    // Decided under the same lock that registers the waker, so nothing the
                    // hub applies in between goes unnoticed.
                    if let Some(close) = &state.ended {
                        if this.closed {
                            return Poll::Ready(None);
                        }
                        this.closed = true;
                        return Poll::Ready(Some(Ok(Frame::Close(Some(close.clone())))));
                    }
                    let Some(slot) = state.viewers.get_mut(&this.id) else {
                        return Poll::Ready(None);
                    };
                    slot.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                next
            };
            let bytes = match next {
                Next::Bytes(bytes) => Bytes::from(bytes),
                Next::Shared(bytes) => bytes,
                Next::Entry(encoder, entry, unstarted) => {
                    let mut still_unstarted = unstarted;
                    let bytes = hub::encoded(&encoder, &entry, &mut still_unstarted);
                    if still_unstarted != unstarted {
                        hub.lock().started(this.id, still_unstarted);
                    }
                    bytes
                }
                Next::Job(job) => {
                    let (update, encoder) = job.run();
                    hub.lock().finished(this.id, encoder);
                    Bytes::from(update)
                }
                Next::Nothing => continue,
            };
            if bytes.is_empty() {
                continue;
            }
            hub.totals
                .bytes_to_viewers
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            hub.totals
                .messages_to_viewers
                .fetch_add(1, Ordering::Relaxed);
            let mut state = hub.lock();
            state.bytes_to_viewers += bytes.len() as u64;
            if let Some(slot) = state.viewers.get_mut(&this.id) {
                slot.sent += bytes.len() as u64;
            }
            return Poll::Ready(Some(Ok(Frame::Binary(bytes))));
        }
    }
}

impl Sink<Frame> for HubTransport {
    type Error = TransportError;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, frame: Frame) -> Result<(), Self::Error> {
        let this = self.get_mut();
        let bytes = match frame {
            Frame::Binary(bytes) | Frame::Text(bytes) => bytes,
            Frame::MaskedBinary(masked) => masked.unmask(),
            Frame::Ping(payload) => {
                this.pong = Some(payload);
                this.wake();
                return Ok(());
            }
            Frame::Pong(_) => return Ok(()),
            Frame::Close(_) => {
                // The viewer leaves; the relay expects the reply to its close.
                this.leave();
                return Ok(());
            }
        };
        let Some(hub) = &this.hub else {
            return Err(TransportError::AlreadyClosed);
        };
        let mut state = hub.lock();
        let Some(slot) = state.viewers.get_mut(&this.id) else {
            return Err(TransportError::AlreadyClosed);
        };
        let controls = slot.participant.controls;
        let Some(server) = &mut slot.server else {
            return Err(TransportError::Violation(CloseFrame::new(
                close_code::POLICY_VIOLATION,
                "console protocol error: data before the handshake",
            )));
        };
        let events = server
            .feed(&bytes)
            .map_err(|error| TransportError::Violation(violation(&error)))?;
        if let Some(waker) = slot.waker.take() {
            waker.wake();
        }
        state.settings_seen(this.id);
        let for_the_vm = state.upstream.has_output();
        drop(state);
        if for_the_vm {
            hub.wake_task.notify_one();
        }
        for event in events {
            let message = match event {
                ViewerEvent::Input(message) | ViewerEvent::Clipboard(message) if controls => {
                    message
                }
                _ => continue,
            };
            if hub.input.try_send(Bytes::from(message)).is_err() {
                return Err(TransportError::Violation(CloseFrame::new(
                    close_code::POLICY_VIOLATION,
                    "too much input",
                )));
            }
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().leave();
        Poll::Ready(Ok(()))
    }
}
