//! A session's life after admission: the upgrade answered, the relay, the end logged; and a
//! refusal told to the client in the style it can read.
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt as _, StreamExt as _};
use proxy_auth::TokenVerifier;
use proxy_console::Inspected;
use proxy_core::{CloseFrame, Frame, RelayConfig, RelayOutcome, StopRequest, relay_controlled};
use proxy_upstream::Connector;
use proxy_wire::{
    PerMessageDeflate, RequestHead, WireLimits, WireRole, WireTransport, write_switching_protocols,
};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout};
use tracing::{debug, info};

use super::admission::{Admitted, Refused};
use super::upstream::SessionUpstream;
use super::{ClientStream, Inner, Phase, millis};
use crate::http::choose_client_subprotocol;
use crate::reject::RejectStyle;
use crate::token_source::offered_subprotocols;

/// How a relaying session learns it must end: an operator's close, a revocation or the drain
/// timeout ([`Control::stop_all`](proxy_control::Control::stop_all)), all through the lease's
/// stop request; `closing` when the engine was already closing sessions as this one started.
struct StopSignal {
    stopped: Option<oneshot::Receiver<StopRequest>>,
    closing: bool,
}

impl Future for StopSignal {
    type Output = StopRequest;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<StopRequest> {
        if self.closing {
            return Poll::Ready(StopRequest::Shutdown);
        }
        let Some(stopped) = self.stopped.as_mut() else {
            return Poll::Pending;
        };
        match Pin::new(stopped).poll(cx) {
            Poll::Ready(Ok(request)) => Poll::Ready(request),
            // The registry let go of the session without a request: nothing will stop it.
            Poll::Ready(Err(_)) => {
                self.stopped = None;
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Close code sent to the client when its token expires during a session
/// ([`ServerConfig::close_on_token_expiry`](crate::ServerConfig::close_on_token_expiry)); 4000 +
/// 401, in the style of the refusal codes.
const TOKEN_EXPIRED_CLOSE_CODE: u16 = 4001;
/// Close reason sent with [`TOKEN_EXPIRED_CLOSE_CODE`].
const TOKEN_EXPIRED_REASON: &str = "token expired";

impl<V, C> Inner<V, C>
where
    V: TokenVerifier,
    C: Connector,
{
    /// Answers the client's upgrade and relays until either side ends.
    pub(super) async fn run_session(
        &self,
        stream: ClientStream,
        head: RequestHead,
        already_read: Vec<u8>,
        admitted: Admitted<C::Transport>,
    ) {
        let Admitted {
            accept_key,
            token_expires_at,
            token_source,
            console,
            upstream,
            upstream_subprotocol,
            dial_started,
            mut lease,
            session_slot,
        } = admitted;
        let offered = offered_subprotocols(&head);
        let subprotocol = choose_client_subprotocol(&offered, upstream_subprotocol.as_deref());
        let answered = self.answer_upgrade(stream, &head, &already_read, &accept_key, subprotocol);
        let Some(client) = Box::pin(answered).await else {
            return;
        };
        lease.set_client_subprotocol(subprotocol.unwrap_or(""));
        self.metrics.session_started();
        info!(
            target: "ws_proxy::audit",
            event = "session_started",
            role = lease.record().role.as_str(),
            client_subprotocol = subprotocol.unwrap_or(""),
            upstream_subprotocol = upstream_subprotocol.as_deref().unwrap_or(""),
            shared = matches!(upstream, SessionUpstream::Shared(_)),
            upstream_connect_ms = millis(dial_started.elapsed()),
            token_source = token_source.label(),
            "session started"
        );
        // The request head is not needed while the session lasts.
        drop(offered);
        drop(head);
        let relay_config = self.session_relay_config(token_expires_at);
        // One small future, not a select over the engine's phase: every idle session holds it.
        let stop = StopSignal {
            stopped: lease.take_stop_request(),
            closing: *self.phase.borrow() == Phase::Closing,
        };
        let live_stats = Arc::clone(lease.live());
        let live = Some(Arc::clone(&live_stats));
        let outcome = match &console {
            None => relay_controlled(client, upstream, &relay_config, stop, live).await,
            Some(console) => {
                // Observed and recorded sessions are few: their relay is boxed rather than
                // sizing every session's task.
                let (from_client, from_upstream) = (Arc::clone(console), Arc::clone(console));
                Box::pin(relay_controlled(
                    Inspected::new(client, move |frame| from_client.inspect_client_frame(frame)),
                    Inspected::new(upstream, move |frame| {
                        from_upstream.inspect_upstream_frame(frame)
                    }),
                    &relay_config,
                    stop,
                    live,
                ))
                .await
            }
        };
        drop(lease);
        drop(session_slot);
        self.metrics.session_ended(&outcome, &live_stats);
        log_session_end(&outcome);
        if let Some(console) = console {
            console.log_end();
        }
    }

    /// Answers the upgrade (with permessage-deflate when offered and enabled); `None` when the
    /// client went away first.
    async fn answer_upgrade(
        &self,
        mut stream: ClientStream,
        head: &RequestHead,
        already_read: &[u8],
        accept_key: &str,
        subprotocol: Option<&str>,
    ) -> Option<WireTransport<ClientStream>> {
        let deflate = if self.config.permessage_deflate {
            PerMessageDeflate::negotiate(head.list_tokens("sec-websocket-extensions"))
        } else {
            None
        };
        let extensions = deflate.map(|accepted| accepted.response_header());
        let answered = timeout(
            self.config.limits.handshake_timeout,
            write_switching_protocols(&mut stream, accept_key, subprotocol, extensions.as_deref()),
        )
        .await;
        if !matches!(answered, Ok(Ok(()))) {
            debug!("the client went away before the upgrade was answered");
            return None;
        }
        if deflate.is_some() {
            self.metrics.deflate_negotiated();
        }
        Some(
            self.client_transport(stream, already_read)
                .with_permessage_deflate(deflate),
        )
    }

    /// The relay settings of one session: the configured ones and, when
    /// [`ServerConfig::close_on_token_expiry`] is on, the token's expiry as the deadline (unless
    /// a configured deadline comes first).
    fn session_relay_config(&self, token_expires_at: SystemTime) -> Cow<'_, RelayConfig> {
        let configured = &self.config.relay;
        if !self.config.close_on_token_expiry {
            return Cow::Borrowed(configured);
        }
        let remaining = token_expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        // An expiry too far ahead for the monotonic clock to represent never comes.
        let Some(expires_at) = Instant::now().checked_add(remaining) else {
            return Cow::Borrowed(configured);
        };
        if configured
            .deadline
            .as_ref()
            .is_some_and(|(deadline, _)| *deadline <= expires_at)
        {
            return Cow::Borrowed(configured);
        }
        let mut config = configured.clone();
        config.deadline = Some((
            expires_at,
            CloseFrame::new(TOKEN_EXPIRED_CLOSE_CODE, TOKEN_EXPIRED_REASON),
        ));
        Cow::Owned(config)
    }

    /// The browser's WebSocket once its upgrade is answered; `already_read` is what arrived
    /// after the request head.
    pub(super) fn client_transport(
        &self,
        stream: ClientStream,
        already_read: &[u8],
    ) -> WireTransport<ClientStream> {
        WireTransport::from_partially_read(
            stream,
            WireRole::Server,
            WireLimits::max_message(self.config.limits.max_message_bytes),
            already_read.into(),
        )
    }

    /// Tells the client why it was refused: an HTTP status, or (in the close-frame style, which
    /// `auto` picks for browsers, when the request is a valid upgrade and the rejection has a
    /// close code) an upgrade and a close.
    pub(super) async fn reject(
        &self,
        mut stream: ClientStream,
        head: &RequestHead,
        already_read: Vec<u8>,
        refused: Refused,
    ) {
        let Refused {
            rejection,
            accept_key,
            detail,
        } = refused;
        let rejection = rejection.as_told_in(self.config.reject_style);
        self.metrics.rejected(rejection.label());
        let style = self
            .config
            .reject_style
            .for_request(head.values("origin").next().is_some());
        info!(
            status = rejection.status(),
            reason = rejection.label(),
            detail = detail.unwrap_or(""),
            style = style.label(),
            "request refused"
        );
        let close_with = match (style, rejection.close_code(), accept_key) {
            (RejectStyle::CloseFrame, Some(code), Some(key)) => Some((code, key)),
            _ => None,
        };
        let Some((code, accept_key)) = close_with else {
            return self
                .respond(&mut stream, rejection.status(), rejection.reason())
                .await;
        };
        let offered = offered_subprotocols(head);
        let subprotocol = choose_client_subprotocol(&offered, None);
        let close = async move {
            write_switching_protocols(&mut stream, &accept_key, subprotocol, None).await?;
            let mut client = self.client_transport(stream, &already_read);
            let frame = CloseFrame::new(code, rejection.reason());
            // The reply to our close ends the stream; anything else the client sent is dropped.
            if client.send(Frame::Close(Some(frame))).await.is_ok() {
                while let Some(Ok(_)) = client.next().await {}
            }
            Ok::<(), std::io::Error>(())
        };
        let bound = self.config.limits.handshake_timeout + self.config.relay.close_timeout;
        if !matches!(timeout(bound, close).await, Ok(Ok(()))) {
            debug!("the close handshake of the refusal did not complete");
        }
    }
}

fn log_session_end(outcome: &RelayOutcome) {
    let close_code = |frame: &Option<CloseFrame>| frame.as_ref().map_or(0, |f| f.code);
    let close_reason = |frame: &Option<CloseFrame>| {
        frame
            .as_ref()
            .map_or_else(String::new, |f| f.reason.clone())
    };
    info!(
        target: "ws_proxy::audit",
        event = "session_ended",
        ended_by = outcome.ended_by.label(),
        client_to_upstream_bytes = outcome.client_to_upstream.bytes,
        client_to_upstream_frames = outcome.client_to_upstream.frames,
        upstream_to_client_bytes = outcome.upstream_to_client.bytes,
        upstream_to_client_frames = outcome.upstream_to_client.frames,
        duration_ms = millis(outcome.duration),
        close_to_client_code = close_code(&outcome.close_sent_to_client),
        close_to_client_reason = %close_reason(&outcome.close_sent_to_client),
        close_to_upstream_code = close_code(&outcome.close_sent_to_upstream),
        close_to_upstream_reason = %close_reason(&outcome.close_sent_to_upstream),
        "session ended"
    );
}
