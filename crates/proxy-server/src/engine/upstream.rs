//! The last step of admission: the session's upstream, its own connection to the VM's console
//! or (with shared consoles) its viewer side of the VM's hub.
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _};
use proxy_auth::{ConsoleRole, Grant, TokenVerifier};
use proxy_control::SessionRecord;
use proxy_core::{ErrorChain, Frame, FrameTransport, TransportError};
use proxy_share::{HubTransport, JoinError, Participant};
use proxy_upstream::{Connector, Upstream, UpstreamTarget};
use tokio::time::Instant;
use tracing::{info, warn};

use super::Inner;
use crate::reject::Rejection;

/// What a session relays to: its own upstream connection, or its viewer side of a shared
/// console's hub.
pub(super) enum SessionUpstream<T> {
    Direct(T),
    Shared(HubTransport),
}

/// An opened upstream and the subprotocol it agreed to.
pub(super) struct OpenedUpstream<T> {
    pub(super) upstream: SessionUpstream<T>,
    pub(super) subprotocol: Option<String>,
}

impl<V, C> Inner<V, C>
where
    V: TokenVerifier,
    C: Connector,
{
    /// Step 6 of admission: dials the VM's console (or joins its hub, which dials it for the
    /// first viewer), unless the engine starts closing sessions first.
    pub(super) async fn open_upstream(
        &self,
        grant: &Grant,
        record: &SessionRecord,
    ) -> Result<OpenedUpstream<C::Transport>, Rejection> {
        let opened = async {
            match &self.hubs {
                None => self.dial(grant).await.map(|upstream| OpenedUpstream {
                    upstream: SessionUpstream::Direct(upstream.transport),
                    subprotocol: upstream.subprotocol,
                }),
                Some(hubs) => {
                    let participant = Participant {
                        session: record.id.clone(),
                        user_id: record.user_id.clone(),
                        controls: grant.console.role != ConsoleRole::Observer,
                    };
                    let key = (grant.namespace.clone(), grant.vmi_name.clone());
                    match hubs.join(key, participant, self.dial(grant)).await {
                        Ok((hub, subprotocol)) => Ok(OpenedUpstream {
                            upstream: SessionUpstream::Shared(hub),
                            subprotocol,
                        }),
                        Err(JoinError::Dial(rejection)) => Err(rejection),
                        Err(JoinError::Full) => Err(Rejection::HubFull),
                    }
                }
            }
        };
        tokio::select! {
            opened = opened => opened,
            () = self.closing_signal() => Err(Rejection::Draining),
        }
    }

    /// Dials the VM's console, timed in the metrics; a failure becomes the client's refusal.
    async fn dial(&self, grant: &Grant) -> Result<Upstream<C::Transport>, Rejection> {
        let target = UpstreamTarget {
            namespace: &grant.namespace,
            vmi_name: &grant.vmi_name,
        };
        let dial_started = Instant::now();
        let dialled = self.connector.connect(target).await;
        let tls = dialled
            .as_ref()
            .ok()
            .and_then(|upstream| upstream.tls_handshake);
        self.metrics.upstream_dialled(dial_started.elapsed(), tls);
        dialled.map_err(|error| {
            let rejection = Rejection::from_failure(error.class());
            let error = ErrorChain(&error).to_string();
            // Unreachable or slow upstreams are the operator's problem; a VM that is missing
            // or stopped is the user's.
            if matches!(
                rejection,
                Rejection::BadGateway | Rejection::UpstreamTimeout
            ) {
                warn!(%error, reason = rejection.label(), "opening the upstream console failed");
            } else {
                info!(%error, reason = rejection.label(), "opening the upstream console failed");
            }
            rejection
        })
    }
}

impl<T: FrameTransport> Stream for SessionUpstream<T> {
    type Item = Result<Frame, TransportError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            SessionUpstream::Direct(transport) => transport.poll_next_unpin(cx),
            SessionUpstream::Shared(hub) => hub.poll_next_unpin(cx),
        }
    }
}

impl<T: FrameTransport> Sink<Frame> for SessionUpstream<T> {
    type Error = TransportError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            SessionUpstream::Direct(transport) => transport.poll_ready_unpin(cx),
            SessionUpstream::Shared(hub) => hub.poll_ready_unpin(cx),
        }
    }

    fn start_send(self: Pin<&mut Self>, frame: Frame) -> Result<(), Self::Error> {
        match self.get_mut() {
            SessionUpstream::Direct(transport) => transport.start_send_unpin(frame),
            SessionUpstream::Shared(hub) => hub.start_send_unpin(frame),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            SessionUpstream::Direct(transport) => transport.poll_flush_unpin(cx),
            SessionUpstream::Shared(hub) => hub.poll_flush_unpin(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            SessionUpstream::Direct(transport) => transport.poll_close_unpin(cx),
            SessionUpstream::Shared(hub) => hub.poll_close_unpin(cx),
        }
    }
}
