//! Admission: whether a console request becomes a session, as a pipeline of small steps that
//! each pass the request on or refuse it with a typed [`Refused`]. In order:
//!
//! 1. [`check_request`](Inner::check_request): the engine is serving, the browser's origin is
//!    allowed, the path names a console, exactly one token is found, the request is a
//!    WebSocket upgrade;
//! 2. a session slot is free;
//! 3. [`verify_token`](Inner::verify_token): the token is valid and allows the VM;
//! 4. the control plane admits it ([`Control::admit`](proxy_control::Control::admit)):
//!    revocations, single use, limits, with the store-outage policy decided there;
//! 5. [`open_console`](Inner::open_console): an observer's filter and a recording, if any (a
//!    strict deployment that cannot record refuses here, before the dial);
//! 6. [`open_upstream`](Inner::open_upstream): the VM's console is dialled, or its hub joined.
//!
//! Nothing is relayed and the client's upgrade is not answered before all of these passed; a
//! refusal after step 4 drops the control plane's admission, which releases the lease and the
//! single-use mark.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use proxy_auth::{AuthError, ConsoleRole, Grant, TokenVerifier};
use proxy_console::{ConsoleRequest, ConsoleSession};
use proxy_control::{Refusal, SessionLease};
use proxy_upstream::Connector;
use proxy_wire::{RequestHead, accept_upgrade};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::{debug, field};

use super::upstream::{OpenedUpstream, SessionUpstream};
use super::{Inner, Phase};
use crate::path::{PathError, parse_console_target};
use crate::reject::Rejection;
use crate::token_source::{FoundToken, TokenSource, find_token};

/// A console request that passed admission: everything its session needs.
pub(super) struct Admitted<T> {
    pub(super) accept_key: String,
    pub(super) token_expires_at: SystemTime,
    pub(super) token_source: TokenSource,
    /// What the session does inside the console stream (observer filter, recording), if
    /// anything.
    pub(super) console: Option<Arc<ConsoleSession>>,
    pub(super) upstream: SessionUpstream<T>,
    /// The subprotocol the upstream agreed to.
    pub(super) upstream_subprotocol: Option<String>,
    pub(super) dial_started: Instant,
    /// The session in the registry and the store while it lives.
    pub(super) lease: SessionLease,
    /// Holds one of the engine's session slots while the session lives.
    pub(super) session_slot: OwnedSemaphorePermit,
}

/// Why a console request was refused, its accept key when the request was a valid upgrade
/// (the close-frame reject style answers those with an upgrade and a close), and for a refused
/// token the class of the problem (`expired`, `bad_signature`, ...; never the token).
pub(super) struct Refused {
    pub(super) rejection: Rejection,
    pub(super) accept_key: Option<String>,
    pub(super) detail: Option<&'static str>,
}

impl Refused {
    /// Refused with an HTTP status in every reject style.
    pub(super) fn without_upgrade(rejection: Rejection) -> Self {
        Self {
            rejection,
            accept_key: None,
            detail: None,
        }
    }

    /// Refused before the upgrade is checked: with the accept key if the request is one.
    fn before_upgrade_check(
        rejection: Rejection,
        accept_key: &Result<String, proxy_wire::UpgradeError>,
    ) -> Self {
        Self {
            accept_key: accept_key.as_ref().ok().cloned(),
            ..Self::without_upgrade(rejection)
        }
    }

    /// Refused after the checks of a valid upgrade.
    pub(super) fn after_upgrade(rejection: Rejection, accept_key: &str) -> Self {
        Self {
            rejection,
            accept_key: Some(accept_key.to_owned()),
            detail: None,
        }
    }
}

/// A request that names a console, with its token, and is a WebSocket upgrade.
struct ConsoleRequestHead {
    accept_key: String,
    vmi_name: String,
    token: FoundToken,
}

impl<V, C> Inner<V, C>
where
    V: TokenVerifier,
    C: Connector,
{
    /// Decides whether a console request becomes a session (the module's steps, in order).
    pub(super) async fn admit(
        &self,
        session_id: u64,
        session_name: String,
        peer: SocketAddr,
        head: &RequestHead,
    ) -> Result<Admitted<C::Transport>, Refused> {
        let ConsoleRequestHead {
            accept_key,
            vmi_name,
            token,
        } = self.check_request(head)?;
        let session_slot = Arc::clone(&self.session_slots)
            .try_acquire_owned()
            .map_err(|_| Refused::without_upgrade(Rejection::AtCapacity))?;
        let (grant, token_source) = self.verify_token(token, &vmi_name, &accept_key).await?;
        let admission = self
            .control
            .admit(&grant, session_name, &peer.to_string())
            .await
            .map_err(|refusal| refused_by_control(refusal, &accept_key))?;
        record_grant_in_span(&grant);
        let console = self
            .open_console(session_id, &grant)
            .map_err(|rejection| Refused::after_upgrade(rejection, &accept_key))?;
        let dial_started = Instant::now();
        let OpenedUpstream {
            upstream,
            subprotocol,
        } = self
            .open_upstream(&grant, admission.record())
            .await
            .map_err(|rejection| match rejection {
                Rejection::Draining => Refused::without_upgrade(rejection),
                other => Refused::after_upgrade(other, &accept_key),
            })?;
        Ok(Admitted {
            accept_key,
            token_expires_at: grant.expires_at,
            token_source,
            console,
            upstream,
            upstream_subprotocol: subprotocol,
            dial_started,
            lease: admission.commit(),
            session_slot,
        })
    }

    /// Step 1: the engine is serving, the origin is allowed, the path names a console, one
    /// token is found, and the request is a WebSocket upgrade.
    fn check_request(&self, head: &RequestHead) -> Result<ConsoleRequestHead, Refused> {
        if *self.phase.borrow() != Phase::Serving {
            return Err(Refused::without_upgrade(Rejection::Draining));
        }
        let accept_key = accept_upgrade(head);
        if let Some(allowed) = &self.config.allowed_origins
            && let Some(origin) = head.values("origin").next()
            && !std::str::from_utf8(origin).is_ok_and(|origin| allowed.allows(origin))
        {
            return Err(Refused::before_upgrade_check(
                Rejection::OriginNotAllowed,
                &accept_key,
            ));
        }
        let sources = &self.config.token_sources;
        let path_tokens = sources.enabled.contains(&TokenSource::Path);
        let console = parse_console_target(&head.target, &self.config.path_prefix, path_tokens)
            .map_err(|error| {
                Refused::before_upgrade_check(Rejection::BadPath(error), &accept_key)
            })?;
        let token = find_token(head, console.token, sources)
            .map_err(|problem| {
                Refused::before_upgrade_check(Rejection::TokenSource(problem), &accept_key)
            })?
            // `/{prefix}/{x}` with no token anywhere is what it always was: not a console URL.
            .ok_or_else(|| {
                Refused::before_upgrade_check(
                    Rejection::BadPath(PathError::InvalidUrl),
                    &accept_key,
                )
            })?;
        let accept_key = accept_key.map_err(|error| {
            debug!(%error, "not a websocket upgrade");
            Refused::without_upgrade(Rejection::NotWebSocket)
        })?;
        Ok(ConsoleRequestHead {
            accept_key,
            vmi_name: console.vmi_name,
            token,
        })
    }

    /// Step 3: the token is valid and allows the VM (a token signed with a key id the verifier
    /// does not know yet makes it look for new keys once).
    async fn verify_token(
        &self,
        token: FoundToken,
        vmi_name: &str,
        accept_key: &str,
    ) -> Result<(Grant, TokenSource), Refused> {
        let mut verified = self.verifier.verify(&token.token, vmi_name);
        if matches!(verified, Err(AuthError::UnknownKeyId))
            && let Some(refresh) = self.verifier.refresh_for_unknown_key()
            && refresh.await
        {
            verified = self.verifier.verify(&token.token, vmi_name);
        }
        match verified {
            Ok(grant) => Ok((grant, token.source)),
            Err(error) => {
                let rejection = if matches!(error, AuthError::Expired) {
                    Rejection::TokenExpired
                } else if error.is_forbidden() {
                    Rejection::VmNotAllowed
                } else {
                    Rejection::InvalidToken
                };
                Err(Refused {
                    detail: Some(error.label()),
                    ..Refused::after_upgrade(rejection, accept_key)
                })
            }
        }
    }

    /// Step 5: what the session does inside the console stream. A shared console's hub does
    /// its own RFB: roles are the hub's, recordings are not made.
    fn open_console(
        &self,
        session_id: u64,
        grant: &Grant,
    ) -> Result<Option<Arc<ConsoleSession>>, Rejection> {
        if self.hubs.is_some() {
            return Ok(None);
        }
        let request = ConsoleRequest {
            session_id,
            namespace: &grant.namespace,
            vmi_name: &grant.vmi_name,
            observer: grant.console.role == ConsoleRole::Observer,
            record_requested: grant.console.record,
        };
        ConsoleSession::open(
            self.config.recording.as_deref(),
            &request,
            self.metrics.console(),
        )
        .map_err(|_| Rejection::RecordingUnavailable)
    }
}

/// The refusal of step 4, with the status or close code the client gets.
fn refused_by_control(refusal: Refusal, accept_key: &str) -> Refused {
    let rejection = match refusal {
        Refusal::Revoked => Rejection::TokenRevoked,
        Refusal::TokenWithoutId => Rejection::TokenWithoutId,
        Refusal::OverLimit(scope) => Rejection::OverLimit(scope),
        Refusal::AlreadyUsed => Rejection::TokenAlreadyUsed,
        Refusal::SingleUseMemoryFull => Rejection::SingleUseMemoryFull,
        Refusal::StoreUnavailable { .. } => Rejection::StoreUnavailable,
    };
    Refused::after_upgrade(rejection, accept_key)
}

/// The session's span learns whose it is once the token is checked.
fn record_grant_in_span(grant: &Grant) {
    let span = tracing::Span::current();
    span.record("user_id", field::display(&grant.user_id));
    span.record("lab_instance", field::display(&grant.lab_instance_id));
    span.record("namespace", grant.namespace.as_str());
    span.record("vmi", grant.vmi_name.as_str());
}
