//! Why a request was refused, and how the client is told: an HTTP status before the upgrade, or
//! (in the Python original's style) a 4xxx close code after it.
use proxy_control::store::LimitScope;
use proxy_upstream::FailureClass;

use crate::path::PathError;
use crate::token_source::TokenProblem;

/// How refused console requests are answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectStyle {
    /// [`CloseFrame`](Self::CloseFrame) for a browser (a request with an `Origin` header:
    /// browsers send one on every WebSocket and cannot show a page the HTTP status of a failed
    /// upgrade, so noVNC would only say "code 1006"), [`HttpStatus`](Self::HttpStatus) for every
    /// other client (curl, virtctl-style tools, probes). Token checks and everything else run
    /// the same way; a refused token is never dialled upstream.
    #[default]
    Auto,
    /// Answer with an HTTP status and a one-line `text/plain` reason; no upgrade happens.
    HttpStatus,
    /// The Python original's behaviour: accept the upgrade, then close with a 4xxx code and a
    /// reason a browser can show (`invalid url`, `wrong path prefix`, `invalid token`, …).
    /// Requests that are not WebSocket upgrades, and 503 (draining, at capacity), are still
    /// answered with HTTP statuses.
    CloseFrame,
}

impl RejectStyle {
    /// `auto`, `http` or `close`, as the setting is spelled.
    pub fn label(self) -> &'static str {
        match self {
            RejectStyle::Auto => "auto",
            RejectStyle::HttpStatus => "http",
            RejectStyle::CloseFrame => "close",
        }
    }

    /// The style a request gets: [`Auto`](Self::Auto) resolved by whether it came from a
    /// browser (`has_origin`), the others as they are.
    pub fn for_request(self, has_origin: bool) -> RejectStyle {
        match self {
            RejectStyle::Auto if has_origin => RejectStyle::CloseFrame,
            RejectStyle::Auto => RejectStyle::HttpStatus,
            fixed => fixed,
        }
    }
}

/// Why a console request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// The path is not a console URL (404; close 4404).
    BadPath(PathError),
    /// The request is not a WebSocket upgrade (400; never a close frame).
    NotWebSocket,
    /// The token is invalid or malformed: a bad signature, claims, or not a JWT (401; close
    /// 4401 `invalid token`).
    InvalidToken,
    /// The token has expired (401; close 4401 `token expired`, or `invalid token` in the
    /// Python original's [`RejectStyle::CloseFrame`]; counted as `invalid_token`).
    TokenExpired,
    /// The token could not be taken from the request: in two places, a lone bearer subprotocol,
    /// undecodable (400 or 401; close 4400 / 4401).
    TokenSource(TokenProblem),
    /// A browser from an origin not on the allow-list (403; close 4403 `origin not allowed`).
    OriginNotAllowed,
    /// Single-use tokens: this token already opened a session (401; close 4401).
    TokenAlreadyUsed,
    /// Single-use tokens: the token has no `jti` to remember it by (401; close 4401).
    TokenWithoutId,
    /// Single-use tokens: the memory of used tokens is full (503; never a close frame).
    SingleUseMemoryFull,
    /// The token is valid but does not allow this VM (403; close 4403 `invalid token`).
    VmNotAllowed,
    /// The VM name could not be used upstream (404; close 4404).
    InvalidTarget,
    /// The API server says the VM does not exist (404; close 4404).
    VmNotFound,
    /// The VM exists but is not running (409; close 4409).
    VmNotRunning,
    /// The upstream is unreachable or refused the proxy (502; close 4502).
    BadGateway,
    /// The upstream did not answer in time (504; close 4504).
    UpstreamTimeout,
    /// The proxy is shutting down (503; never a close frame).
    Draining,
    /// The proxy is at its session limit (503; never a close frame).
    AtCapacity,
    /// Strict recording: the session's recording cannot start (503; close 4503 `recording
    /// unavailable`).
    RecordingUnavailable,
    /// The token (its user, lab instance or `jti`) is revoked (401; close 4401 `token revoked`).
    TokenRevoked,
    /// A per-user, per-lab-instance or per-VM session limit is reached (429; close 4429).
    OverLimit(LimitScope),
    /// The state store cannot be asked and the outage policy of a check is closed (503; never
    /// a close frame).
    StoreUnavailable,
    /// Shared consoles: the VM's hub has all the viewers it may have (429; close 4429).
    HubFull,
}

impl Rejection {
    /// The HTTP status sent before the upgrade.
    pub fn status(self) -> u16 {
        match self {
            Rejection::BadPath(_) | Rejection::InvalidTarget | Rejection::VmNotFound => 404,
            Rejection::NotWebSocket => 400,
            Rejection::InvalidToken | Rejection::TokenExpired => 401,
            Rejection::TokenSource(problem) => problem.status(),
            Rejection::OriginNotAllowed => 403,
            Rejection::TokenAlreadyUsed | Rejection::TokenWithoutId => 401,
            Rejection::SingleUseMemoryFull => 503,
            Rejection::VmNotAllowed => 403,
            Rejection::VmNotRunning => 409,
            Rejection::BadGateway => 502,
            Rejection::UpstreamTimeout => 504,
            Rejection::Draining | Rejection::AtCapacity | Rejection::RecordingUnavailable => 503,
            Rejection::TokenRevoked => 401,
            Rejection::OverLimit(_) => 429,
            Rejection::StoreUnavailable => 503,
            Rejection::HubFull => 429,
        }
    }

    /// The one-line reason sent to the client. Path and token reasons are the Python
    /// original's close reasons.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::BadPath(PathError::WrongPrefix) => "wrong path prefix",
            Rejection::BadPath(_) => "invalid url",
            Rejection::NotWebSocket => "not a websocket upgrade",
            Rejection::InvalidToken | Rejection::VmNotAllowed => "invalid token",
            Rejection::TokenExpired => "token expired",
            Rejection::TokenSource(problem) => problem.reason(),
            Rejection::OriginNotAllowed => "origin not allowed",
            Rejection::TokenAlreadyUsed => "token already used",
            Rejection::TokenWithoutId => "token has no jti",
            Rejection::SingleUseMemoryFull => "too many single-use tokens",
            Rejection::InvalidTarget => "invalid vm name",
            Rejection::VmNotFound => "vm not found",
            Rejection::VmNotRunning => "vm not running",
            Rejection::BadGateway => "upstream unavailable",
            Rejection::UpstreamTimeout => "upstream timeout",
            Rejection::Draining => "shutting down",
            Rejection::AtCapacity => "at capacity",
            Rejection::RecordingUnavailable => "recording unavailable",
            Rejection::TokenRevoked => "token revoked",
            Rejection::OverLimit(LimitScope::User) => "too many sessions for this user",
            Rejection::OverLimit(LimitScope::LabInstance) => {
                "too many sessions for this lab instance"
            }
            Rejection::OverLimit(LimitScope::Vm) => "too many sessions for this vm",
            Rejection::StoreUnavailable => "state store unavailable",
            Rejection::HubFull => "too many viewers for this vm",
        }
    }

    /// The close code used in [`RejectStyle::CloseFrame`]: 4000 + the HTTP status, or `None`
    /// when the rejection is always an HTTP status.
    pub fn close_code(self) -> Option<u16> {
        match self {
            Rejection::NotWebSocket
            | Rejection::Draining
            | Rejection::AtCapacity
            | Rejection::SingleUseMemoryFull
            | Rejection::StoreUnavailable => None,
            other => Some(4000 + other.status()),
        }
    }

    /// A stable label for logs and the `reason` label of the rejection counter.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::BadPath(error) => error.label(),
            Rejection::NotWebSocket => "not_websocket",
            Rejection::InvalidToken | Rejection::TokenExpired => "invalid_token",
            Rejection::TokenSource(problem) => problem.label(),
            Rejection::OriginNotAllowed => "origin_not_allowed",
            Rejection::TokenAlreadyUsed => "token_already_used",
            Rejection::TokenWithoutId => "token_without_jti",
            Rejection::SingleUseMemoryFull => "single_use_memory_full",
            Rejection::VmNotAllowed => "vm_not_allowed",
            Rejection::InvalidTarget => "invalid_target",
            Rejection::VmNotFound => "vm_not_found",
            Rejection::VmNotRunning => "vm_not_running",
            Rejection::BadGateway => "bad_gateway",
            Rejection::UpstreamTimeout => "upstream_timeout",
            Rejection::Draining => "draining",
            Rejection::AtCapacity => "at_capacity",
            Rejection::RecordingUnavailable => "recording_unavailable",
            Rejection::TokenRevoked => "token_revoked",
            Rejection::OverLimit(LimitScope::User) => "over_limit_user",
            Rejection::OverLimit(LimitScope::LabInstance) => "over_limit_lab_instance",
            Rejection::OverLimit(LimitScope::Vm) => "over_limit_vm",
            Rejection::StoreUnavailable => "state_store_unavailable",
            Rejection::HubFull => "hub_full",
        }
    }

    /// The rejection as `style` tells it: the Python original's style (configured as
    /// [`RejectStyle::CloseFrame`]) keeps its reasons, so an expired token is an `invalid token`
    /// there.
    pub fn as_told_in(self, style: RejectStyle) -> Self {
        match (style, self) {
            (RejectStyle::CloseFrame, Rejection::TokenExpired) => Rejection::InvalidToken,
            (_, rejection) => rejection,
        }
    }

    /// The rejection for a failed upstream dial.
    pub fn from_failure(class: FailureClass) -> Self {
        match class {
            FailureClass::InvalidTarget => Rejection::InvalidTarget,
            FailureClass::VmNotFound => Rejection::VmNotFound,
            FailureClass::VmNotRunning => Rejection::VmNotRunning,
            FailureClass::BadGateway => Rejection::BadGateway,
            FailureClass::Timeout => Rejection::UpstreamTimeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_closes_for_browsers_and_answers_others_with_the_status() {
        assert_eq!(RejectStyle::default(), RejectStyle::Auto);
        assert_eq!(RejectStyle::Auto.for_request(true), RejectStyle::CloseFrame);
        assert_eq!(
            RejectStyle::Auto.for_request(false),
            RejectStyle::HttpStatus
        );
        for fixed in [RejectStyle::HttpStatus, RejectStyle::CloseFrame] {
            assert_eq!(fixed.for_request(true), fixed);
            assert_eq!(fixed.for_request(false), fixed);
        }
    }

    #[test]
    fn statuses_follow_the_design_table() {
        let table = [
            (Rejection::BadPath(PathError::InvalidUrl), 404, Some(4404)),
            (Rejection::BadPath(PathError::WrongPrefix), 404, Some(4404)),
            (Rejection::NotWebSocket, 400, None),
            (Rejection::InvalidToken, 401, Some(4401)),
            (Rejection::VmNotAllowed, 403, Some(4403)),
            (
                Rejection::from_failure(FailureClass::VmNotFound),
                404,
                Some(4404),
            ),
            (
                Rejection::from_failure(FailureClass::VmNotRunning),
                409,
                Some(4409),
            ),
            (
                Rejection::from_failure(FailureClass::BadGateway),
                502,
                Some(4502),
            ),
            (
                Rejection::from_failure(FailureClass::Timeout),
                504,
                Some(4504),
            ),
            (
                Rejection::from_failure(FailureClass::InvalidTarget),
                404,
                Some(4404),
            ),
            (Rejection::Draining, 503, None),
            (Rejection::AtCapacity, 503, None),
        ];
        for (rejection, status, close) in table {
            assert_eq!(rejection.status(), status, "{rejection:?}");
            assert_eq!(rejection.close_code(), close, "{rejection:?}");
            assert!(!rejection.reason().contains('\n'));
        }
    }

    #[test]
    fn the_originals_reasons_are_kept() {
        assert_eq!(
            Rejection::BadPath(PathError::InvalidUrl).reason(),
            "invalid url"
        );
        assert_eq!(
            Rejection::BadPath(PathError::WrongPrefix).reason(),
            "wrong path prefix"
        );
        assert_eq!(Rejection::InvalidToken.reason(), "invalid token");
        assert_eq!(
            Rejection::TokenExpired
                .as_told_in(RejectStyle::CloseFrame)
                .reason(),
            "invalid token"
        );
    }

    #[test]
    fn an_expired_token_is_told_apart_from_a_forged_one() {
        for style in [RejectStyle::Auto, RejectStyle::HttpStatus] {
            let told = Rejection::TokenExpired.as_told_in(style);
            assert_eq!(told.reason(), "token expired");
            assert_eq!(told.status(), Rejection::InvalidToken.status());
            assert_eq!(told.close_code(), Rejection::InvalidToken.close_code());
            assert_eq!(told.label(), Rejection::InvalidToken.label());
        }
    }
}
