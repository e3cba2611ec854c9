//! The operators' API on the admin listener (`/api/v1/…`): live sessions, closing them,
//! revocations. Off unless an admin token is configured; every request but the OpenAPI
//! document needs `Authorization: Bearer <admin token>`. `admin-api.openapi.json` beside this
//! crate's manifest (linked from `docs/`) is the contract, compiled in and served at
//! `/api/v1/openapi.json`.
use std::time::{Duration, SystemTime};

use percent_encoding::percent_decode_str;
use proxy_wire::RequestHead;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use proxy_control::Control;
use proxy_control::store::{
    Command, Revocation, RevocationTarget, SessionFilter, SessionRecord, hash_token_id,
    unix_seconds,
};
use proxy_keys::AdminToken;
use proxy_share::Hubs;

/// The OpenAPI document of this API.
pub const OPENAPI_DOCUMENT: &str = include_str!("../admin-api.openapi.json");

/// The largest request body accepted (JSON commands are small).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a revocation lasts when the request names no `until`: longer than any console
/// token should live.
const DEFAULT_REVOCATION: Duration = Duration::from_secs(24 * 3600);
/// The longest revocation: a year.
const MAX_REVOCATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The longest operator reason kept (the browser sees at most what fits a close frame).
const MAX_REASON_CHARS: usize = 200;

/// An answer of the API: status, JSON body, and whether it asks for credentials.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiResponse {
    pub(crate) status: u16,
    pub(crate) body: String,
    pub(crate) authenticate: bool,
    /// The methods a 405 names in its `Allow` header.
    pub(crate) allow: Option<&'static str>,
}

impl ApiResponse {
    fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            body: body.to_string(),
            authenticate: false,
            allow: None,
        }
    }

    fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::error(405, "method not allowed")
        }
    }

    fn error(status: u16, message: &str) -> Self {
        Self::json(status, &json!({ "error": message }))
    }
}

/// The request's body: what came after the head plus the rest of `Content-Length`, at most
/// [`MAX_BODY_BYTES`]. Chunked bodies are refused (411): the API's clients send small JSON.
pub(crate) async fn read_body<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    head: &RequestHead,
    mut already_read: Vec<u8>,
) -> Result<Vec<u8>, ApiResponse> {
    use tokio::io::AsyncReadExt as _;
    if head.list_tokens("transfer-encoding").next().is_some() {
        return Err(ApiResponse::error(411, "send the body with Content-Length"));
    }
    let length = match head.values("content-length").next() {
        None => 0,
        Some(value) => std::str::from_utf8(value)
            .ok()
            .and_then(|value| value.trim().parse::<usize>().ok())
            .ok_or_else(|| ApiResponse::error(400, "invalid Content-Length"))?,
    };
    if length > MAX_BODY_BYTES {
        return Err(ApiResponse::error(413, "request body too large"));
    }
    if already_read.len() < length {
        let missing = length - already_read.len();
        let start = already_read.len();
        already_read.resize(length, 0);
        stream
            .read_exact(&mut already_read[start..start + missing])
            .await
            .map_err(|_| ApiResponse::error(400, "the request body ended early"))?;
    }
    already_read.truncate(length);
    Ok(already_read)
}

/// Everything the API works on.
pub(crate) struct AdminApi<'a> {
    pub(crate) token: &'a AdminToken,
    pub(crate) control: &'a Control,
    pub(crate) peer: std::net::SocketAddr,
    /// With shared consoles: this replica's hubs.
    pub(crate) hubs: Option<&'a Hubs>,
}

/// The query parameters of a request target, percent-decoded.
fn query_pairs(target: &str) -> Vec<(String, String)> {
    let Some((_, query)) = target.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| {
                percent_decode_str(&text.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(name), decode(value))
        })
        .collect()
}

fn query_value<'q>(pairs: &'q [(String, String)], name: &str) -> Option<&'q str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn filter_from_query(pairs: &[(String, String)]) -> SessionFilter {
    let get = |name| query_value(pairs, name).map(str::to_owned);
    SessionFilter {
        user_id: get("user_id"),
        lab_instance_id: get("lab_instance_id"),
        namespace: get("namespace"),
        vmi: get("vmi"),
    }
}

fn clip(text: &str) -> String {
    text.chars().take(MAX_REASON_CHARS).collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseRequest {
    #[serde(default)]
    filter: SessionFilter,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    by: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    lab_instance_id: Option<String>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    duration_seconds: Option<u64>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    by: String,
}

impl RevokeRequest {
    fn target(&self) -> Result<RevocationTarget, &'static str> {
        match (&self.user_id, &self.lab_instance_id, &self.jti) {
            (Some(id), None, None) if !id.is_empty() => Ok(RevocationTarget::UserId(id.clone())),
            (None, Some(id), None) if !id.is_empty() => {
                Ok(RevocationTarget::LabInstanceId(id.clone()))
            }
            (None, None, Some(jti)) if !jti.is_empty() => {
                Ok(RevocationTarget::JtiSha256(hash_token_id(jti)))
            }
            _ => Err("give exactly one non-empty user_id, lab_instance_id or jti"),
        }
    }
}

fn target_from_path(kind: &str, value: &str) -> Option<RevocationTarget> {
    match kind {
        "user_id" => Some(RevocationTarget::UserId(value.to_owned())),
        "lab_instance_id" => Some(RevocationTarget::LabInstanceId(value.to_owned())),
        "jti" => Some(RevocationTarget::JtiSha256(hash_token_id(value))),
        _ => None,
    }
}

/// A JSON object body as `T`. Serde would also read a struct from an array; the API takes
/// objects only, nested `filter` included.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiResponse> {
    let invalid =
        |problem: &str| ApiResponse::error(400, &format!("invalid request body: {problem}"));
    let value: Value = serde_json::from_slice(body).map_err(|error| invalid(&error.to_string()))?;
    let objects_only = value.is_object()
        && value.get("filter").is_none_or(|filter| {
            filter
                .as_object()
                .is_some_and(|fields| fields.values().all(Value::is_string))
        });
    if !objects_only {
        return Err(invalid("expected a JSON object (and a filter of strings)"));
    }
    serde_json::from_value(value).map_err(|error| invalid(&error.to_string()))
}

fn who(by: &str) -> String {
    if by.is_empty() {
        "admin-api".to_owned()
    } else {
        clip(by)
    }
}

impl AdminApi<'_> {
    /// Answers one request whose path starts with `/api/v1/`.
    pub(crate) async fn answer(&self, head: &RequestHead, body: &[u8]) -> ApiResponse {
        let path = head.path();
        let method = head.method.as_str();
        if path == "/api/v1/openapi.json" {
            return match method {
                "GET" => ApiResponse {
                    status: 200,
                    body: OPENAPI_DOCUMENT.to_owned(),
                    authenticate: false,
                    allow: None,
                },
                _ => ApiResponse::method_not_allowed("GET"),
            };
        }
        let presented = head
            .values("authorization")
            .next()
            .and_then(|value| value.strip_prefix(b"Bearer ").map(<[u8]>::trim_ascii));
        if !presented.is_some_and(|token| self.token.allows(token)) {
            info!(target: "ws_proxy::audit", event = "admin_request_refused", peer = %self.peer, %method, path, "admin API request without a valid admin token");
            return ApiResponse {
                authenticate: true,
                ..ApiResponse::error(401, "a valid admin bearer token is required")
            };
        }
        let query = query_pairs(&head.target);
        let decoded = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
        let session_id = path
            .strip_prefix("/api/v1/sessions/")
            .filter(|id| !id.is_empty() && *id != "close" && !id.contains('/'))
            .map(decoded);
        let revocation = path
            .strip_prefix("/api/v1/revocations/")
            .and_then(|rest| rest.split_once('/'))
            .filter(|(_, value)| !value.is_empty() && !value.contains('/'))
            .map(|(kind, value)| (decoded(kind), decoded(value)));
        match (method, path) {
            ("GET", "/api/v1/sessions") => self.list(&filter_from_query(&query)).await,
            (_, "/api/v1/sessions") => ApiResponse::method_not_allowed("GET"),
            ("POST", "/api/v1/sessions/close") => self.close_matching(body).await,
            (_, "/api/v1/sessions/close") => ApiResponse::method_not_allowed("POST"),
            ("GET", "/api/v1/shared-consoles") => self.shared_consoles(),
            (_, "/api/v1/shared-consoles") => ApiResponse::method_not_allowed("GET"),
            ("GET", "/api/v1/revocations") => self.revocations().await,
            ("POST", "/api/v1/revocations") => self.revoke(body).await,
            (_, "/api/v1/revocations") => ApiResponse::method_not_allowed("GET, POST"),
            _ => match (method, session_id, revocation) {
                ("GET", Some(id), _) => self.show(&id).await,
                ("DELETE", Some(id), _) => self.close_one(&id, &query).await,
                (_, Some(_), _) => ApiResponse::method_not_allowed("GET, DELETE"),
                ("DELETE", None, Some((kind, value))) => self.lift(&kind, &value).await,
                (_, None, Some(_)) => ApiResponse::method_not_allowed("DELETE"),
                _ => ApiResponse::error(404, "no such admin API path"),
            },
        }
    }

    /// Every session matching `filter`, cluster-wide when the store is shared; this replica's
    /// alone (and `complete: false`) when the store cannot be read.
    async fn all_sessions(&self, filter: &SessionFilter) -> (Vec<SessionRecord>, bool) {
        self.control.sessions(filter).await
    }

    async fn list(&self, filter: &SessionFilter) -> ApiResponse {
        let (sessions, complete) = self.all_sessions(filter).await;
        ApiResponse::json(
            200,
            &json!({
                "sessions": sessions,
                "complete": complete,
                "replica": self.control.replica(),
                "store": self.control.store_kind(),
            }),
        )
    }

    async fn show(&self, id: &str) -> ApiResponse {
        let (sessions, _) = self.all_sessions(&SessionFilter::default()).await;
        match sessions.into_iter().find(|session| session.id == id) {
            Some(session) => ApiResponse::json(200, &json!(session)),
            None => ApiResponse::error(404, "no such session"),
        }
    }

    async fn close_ids(&self, session_ids: Vec<String>, reason: &str, by: &str) -> ApiResponse {
        let command = Command::Close {
            session_ids: session_ids.clone(),
            reason: clip(reason),
            by: who(by),
        };
        info!(target: "ws_proxy::audit", event = "close_requested", peer = %self.peer, by = %who(by), reason = %clip(reason), sessions = session_ids.len(), "operator asked to close sessions");
        if session_ids.is_empty() {
            return ApiResponse::json(200, &json!({ "closed": session_ids }));
        }
        match self.control.broadcast(command).await {
            Ok(()) => ApiResponse::json(200, &json!({ "closed": session_ids })),
            Err(error) => {
                warn!(error = %proxy_core::ErrorChain(&error), "the close command cannot be sent; this replica's sessions were closed only");
                ApiResponse::error(
                    503,
                    "state store unavailable: only this replica's sessions were closed",
                )
            }
        }
    }

    async fn close_one(&self, id: &str, query: &[(String, String)]) -> ApiResponse {
        let (sessions, _) = self.all_sessions(&SessionFilter::default()).await;
        if !sessions.iter().any(|session| session.id == id) {
            return ApiResponse::error(404, "no such session");
        }
        let reason = query_value(query, "reason").unwrap_or_default();
        let by = query_value(query, "by").unwrap_or_default();
        self.close_ids(vec![id.to_owned()], reason, by).await
    }

    async fn close_matching(&self, body: &[u8]) -> ApiResponse {
        let request: CloseRequest = match parse_body(body) {
            Ok(request) => request,
            Err(response) => return response,
        };
        if request.filter.is_empty() && !request.all {
            return ApiResponse::error(
                400,
                "give a filter, or \"all\": true to close every session",
            );
        }
        let (sessions, _) = self.all_sessions(&request.filter).await;
        let ids = sessions.into_iter().map(|session| session.id).collect();
        self.close_ids(ids, &request.reason, &request.by).await
    }

    fn shared_consoles(&self) -> ApiResponse {
        let mut consoles = self.hubs.map(Hubs::consoles).unwrap_or_default();
        consoles.sort_by(|a, b| (&a.namespace, &a.vmi).cmp(&(&b.namespace, &b.vmi)));
        ApiResponse::json(
            200,
            &json!({
                "enabled": self.hubs.is_some(),
                "replica": self.control.replica(),
                "consoles": consoles,
            }),
        )
    }

    async fn revocations(&self) -> ApiResponse {
        match self.control.revocations().await {
            Ok(revocations) => ApiResponse::json(200, &json!({ "revocations": revocations })),
            Err(_) => ApiResponse::error(503, "state store unavailable"),
        }
    }

    async fn revoke(&self, body: &[u8]) -> ApiResponse {
        let request: RevokeRequest = match parse_body(body) {
            Ok(request) => request,
            Err(response) => return response,
        };
        let target = match request.target() {
            Ok(target) => target,
            Err(problem) => return ApiResponse::error(400, problem),
        };
        let now = SystemTime::now();
        let duration = request
            .duration_seconds
            .map_or(DEFAULT_REVOCATION, Duration::from_secs);
        if duration.is_zero() || duration > MAX_REVOCATION {
            return ApiResponse::error(400, "duration_seconds must be 1 to 31536000 (a year)");
        }
        let until = unix_seconds(now + duration);
        let revocation = Revocation {
            target,
            until,
            reason: clip(&request.reason),
            by: who(&request.by),
            created_at: unix_seconds(now),
        };
        if self.control.revoke(&revocation).await.is_err() {
            return ApiResponse::error(503, "state store unavailable: nothing was revoked");
        }
        info!(target: "ws_proxy::audit", event = "revoked", peer = %self.peer, by = %revocation.by, reason = %revocation.reason, target = ?revocation.target, until = revocation.until, "tokens revoked");
        ApiResponse::json(201, &json!({ "revocation": revocation }))
    }

    async fn lift(&self, kind: &str, value: &str) -> ApiResponse {
        let Some(target) = target_from_path(kind, value) else {
            return ApiResponse::error(
                404,
                "no such revocation kind (user_id, lab_instance_id, jti)",
            );
        };
        match self.control.lift(&target).await {
            Ok(true) => {
                info!(target: "ws_proxy::audit", event = "revocation_lifted", peer = %self.peer, target = ?target, "revocation lifted");
                ApiResponse::json(200, &json!({ "lifted": true }))
            }
            Ok(false) => ApiResponse::error(404, "no such revocation"),
            Err(_) => ApiResponse::error(503, "state store unavailable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        let pairs = query_pairs("/api/v1/sessions?user_id=a%20b&vmi=vm+1&flag");
        assert_eq!(query_value(&pairs, "user_id"), Some("a b"));
        assert_eq!(query_value(&pairs, "vmi"), Some("vm 1"));
        assert_eq!(query_value(&pairs, "flag"), Some(""));
        assert_eq!(query_value(&pairs, "namespace"), None);
    }

    #[test]
    fn a_revocation_names_exactly_one_target_and_hashes_a_jti() {
        let request: RevokeRequest =
            serde_json::from_str(r#"{"jti": "abc"}"#).unwrap_or_else(|_| unreachable!());
        assert_eq!(
            request.target(),
            Ok(RevocationTarget::JtiSha256(hash_token_id("abc")))
        );
        let two: RevokeRequest = serde_json::from_str(r#"{"jti": "abc", "user_id": "7"}"#)
            .unwrap_or_else(|_| unreachable!());
        assert!(two.target().is_err());
        assert!(serde_json::from_str::<RevokeRequest>(r#"{"users": "7"}"#).is_err());
    }

    #[test]
    fn the_openapi_document_is_json() {
        let document: Value = serde_json::from_str(OPENAPI_DOCUMENT).unwrap_or_default();
        assert_eq!(document["openapi"], "3.0.3");
    }
}
