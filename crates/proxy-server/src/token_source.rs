//! Where a console request carries its token: the URL path (the Python original's), the
//! Kubernetes browser subprotocol, `Authorization: Bearer`, a cookie or a query parameter.
//!
//! Exactly one token per request: a token in two enabled sources is refused, so a client can
//! never be unsure which one was checked. The subprotocol source follows kube-apiserver's
//! convention: an entry `base64url.bearer.authorization.k8s.io.<base64url token, no padding>`
//! in `Sec-WebSocket-Protocol`, removed before the subprotocol is chosen and never echoed; the
//! client must offer at least one other subprotocol to be answered with.
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::percent_decode_str;
use proxy_wire::RequestHead;

/// The subprotocol prefix of a bearer token (kube-apiserver's `wsstream` convention).
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

/// One place a token may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenSource {
    /// `/{prefix}/{token}/{vmi}`.
    Path,
    /// A `Sec-WebSocket-Protocol` entry `base64url.bearer.authorization.k8s.io.<token>`.
    Subprotocol,
    /// `Authorization: Bearer <token>`.
    Header,
    /// A cookie ([`TokenSources::cookie_name`]).
    Cookie,
    /// A query parameter ([`TokenSources::query_name`]).
    Query,
}

impl TokenSource {
    /// The name in `--token-sources` and in logs.
    pub fn label(self) -> &'static str {
        match self {
            TokenSource::Path => "path",
            TokenSource::Subprotocol => "subprotocol",
            TokenSource::Header => "header",
            TokenSource::Cookie => "cookie",
            TokenSource::Query => "query",
        }
    }
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A `--token-sources` entry that names no source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown token source {0:?} (path, subprotocol, header, cookie, query)")]
pub struct UnknownTokenSource(pub String);

impl FromStr for TokenSource {
    type Err = UnknownTokenSource;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.trim().to_ascii_lowercase().as_str() {
            "path" => Ok(TokenSource::Path),
            "subprotocol" => Ok(TokenSource::Subprotocol),
            "header" => Ok(TokenSource::Header),
            "cookie" => Ok(TokenSource::Cookie),
            "query" => Ok(TokenSource::Query),
            _ => Err(UnknownTokenSource(name.to_owned())),
        }
    }
}

/// Which sources are enabled, and the names the cookie and query sources look for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSources {
    /// The enabled sources (default: path, subprotocol, header).
    pub enabled: Vec<TokenSource>,
    /// The cookie holding the token (default `ws_proxy_token`).
    pub cookie_name: String,
    /// The query parameter holding the token (default `token`, the websockify convention).
    pub query_name: String,
}

impl Default for TokenSources {
    fn default() -> Self {
        Self {
            enabled: vec![
                TokenSource::Path,
                TokenSource::Subprotocol,
                TokenSource::Header,
            ],
            cookie_name: "ws_proxy_token".to_owned(),
            query_name: "token".to_owned(),
        }
    }
}

/// Why a request's token could not be taken from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenProblem {
    /// Two sources (or two entries of one) hold a token.
    Ambiguous,
    /// The bearer subprotocol is the only one offered: nothing could be answered.
    BearerAlone,
    /// The bearer subprotocol's value is not unpadded base64url of UTF-8 text.
    Undecodable,
}

impl TokenProblem {
    /// The HTTP status of the refusal.
    pub fn status(self) -> u16 {
        match self {
            TokenProblem::Undecodable => 401,
            TokenProblem::Ambiguous | TokenProblem::BearerAlone => 400,
        }
    }

    /// The one-line reason the client is told.
    pub fn reason(self) -> &'static str {
        match self {
            TokenProblem::Ambiguous => "token in more than one place",
            TokenProblem::BearerAlone => "a bearer subprotocol needs another subprotocol",
            TokenProblem::Undecodable => "invalid token",
        }
    }

    /// A stable label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            TokenProblem::Ambiguous => "ambiguous_token",
            TokenProblem::BearerAlone => "bearer_subprotocol_alone",
            TokenProblem::Undecodable => "undecodable_token",
        }
    }
}

impl fmt::Display for TokenProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for TokenProblem {}

/// A token and where it came from. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct FoundToken {
    /// The JWT.
    pub token: String,
    /// Its source.
    pub source: TokenSource,
}

impl fmt::Debug for FoundToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FoundToken")
            .field("token", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// The subprotocols the client offered, without bearer entries: what the answer may choose from.
pub fn offered_subprotocols(head: &RequestHead) -> Vec<&str> {
    head.offered_subprotocols()
        .into_iter()
        .filter(|protocol| !protocol.starts_with(BEARER_SUBPROTOCOL_PREFIX))
        .collect()
}

/// The one token of a request, from the enabled `sources` (`None`: no source holds one);
/// `path_token` is what the path held, given only when the path source is enabled (see
/// [`parse_console_target`](crate::parse_console_target)).
pub fn find_token(
    head: &RequestHead,
    path_token: Option<String>,
    sources: &TokenSources,
) -> Result<Option<FoundToken>, TokenProblem> {
    let enabled = |source| sources.enabled.contains(&source);
    let mut found: Vec<FoundToken> = Vec::new();
    let mut add = |source, tokens: Vec<String>| {
        found.extend(tokens.into_iter().map(|token| FoundToken { token, source }));
    };
    add(TokenSource::Path, path_token.into_iter().collect());
    if enabled(TokenSource::Subprotocol) {
        add(
            TokenSource::Subprotocol,
            subprotocol_token(head)?.into_iter().collect(),
        );
    }
    if enabled(TokenSource::Header) {
        add(TokenSource::Header, header_tokens(head));
    }
    if enabled(TokenSource::Cookie) {
        add(
            TokenSource::Cookie,
            cookie_tokens(head, &sources.cookie_name),
        );
    }
    if enabled(TokenSource::Query) {
        add(
            TokenSource::Query,
            query_tokens(&head.target, &sources.query_name),
        );
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(TokenProblem::Ambiguous),
    }
}

/// The token in a `base64url.bearer.authorization.k8s.io.` subprotocol: at most one, offered
/// beside a real protocol, unpadded base64url of UTF-8.
fn subprotocol_token(head: &RequestHead) -> Result<Option<String>, TokenProblem> {
    let offered = head.offered_subprotocols();
    let bearers: Vec<&str> = offered
        .iter()
        .filter_map(|protocol| protocol.strip_prefix(BEARER_SUBPROTOCOL_PREFIX))
        .collect();
    if bearers.len() > 1 {
        return Err(TokenProblem::Ambiguous);
    }
    let Some(encoded) = bearers.first() else {
        return Ok(None);
    };
    if offered.len() < 2 {
        return Err(TokenProblem::BearerAlone);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| TokenProblem::Undecodable)?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| TokenProblem::Undecodable)
}

/// The tokens of `Authorization: Bearer` headers.
fn header_tokens(head: &RequestHead) -> Vec<String> {
    head.values("authorization")
        .filter_map(|value| std::str::from_utf8(value).ok())
        .filter_map(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            let token = token.trim();
            (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
        })
        .collect()
}

/// The values of the cookie `name`, without surrounding quotes.
fn cookie_tokens(head: &RequestHead, name: &str) -> Vec<String> {
    head.values("cookie")
        .filter_map(|value| std::str::from_utf8(value).ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| {
            let (cookie, token) = pair.trim().split_once('=')?;
            (cookie == name && !token.is_empty()).then(|| token.trim_matches('"').to_owned())
        })
        .collect()
}

/// The values of the query parameter `name` in `target`, decoded.
fn query_tokens(target: &str, name: &str) -> Vec<String> {
    let Some((_, query)) = target.split_once('?') else {
        return Vec::new();
    };
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .filter_map(|pair| {
            let (parameter, value) = pair.split_once('=').unwrap_or((pair, ""));
            if decoded(parameter).as_deref() != Some(name) {
                return None;
            }
            decoded(value).filter(|token| !token.is_empty())
        })
        .collect()
}

/// A query component, `+` as space and percent-decoded.
fn decoded(component: &str) -> Option<String> {
    percent_decode_str(&component.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

#[cfg(test)]
mod tests {
    use proxy_wire::list_elements;

    use super::*;

    async fn head(extra: &str, target: &str) -> RequestHead {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        let mut reader = raw.as_bytes();
        proxy_wire::read_request_head(&mut reader, 8192)
            .await
            .unwrap()
            .0
    }

    fn bearer(token: &str) -> String {
        format!(
            "{BEARER_SUBPROTOCOL_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(token)
        )
    }

    fn all() -> TokenSources {
        TokenSources {
            enabled: vec![
                TokenSource::Path,
                TokenSource::Subprotocol,
                TokenSource::Header,
                TokenSource::Cookie,
                TokenSource::Query,
            ],
            ..TokenSources::default()
        }
    }

    #[tokio::test]
    async fn each_source_gives_its_token() {
        let sources = all();
        let cases = [
            ("", "/vm", Some("t.p.s"), TokenSource::Path),
            (
                &*format!("Sec-WebSocket-Protocol: binary, {}\r\n", bearer("t.s.s")),
                "/vm",
                None,
                TokenSource::Subprotocol,
            ),
            (
                "Authorization: Bearer t.h.s\r\n",
                "/vm",
                None,
                TokenSource::Header,
            ),
            (
                "Cookie: a=b; ws_proxy_token=t.c.s\r\n",
                "/vm",
                None,
                TokenSource::Cookie,
            ),
            ("", "/vm?x=1&token=t.q.s", None, TokenSource::Query),
        ];
        for (headers, target, path_token, source) in cases {
            let head = head(headers, target).await;
            let found = find_token(&head, path_token.map(str::to_owned), &sources)
                .unwrap()
                .unwrap();
            assert_eq!(found.source, source);
            assert!(found.token.starts_with("t."), "{source}");
            assert!(!format!("{found:?}").contains("t."));
        }
    }

    #[tokio::test]
    async fn the_subprotocol_rules_of_kube_apiserver() {
        let sources = TokenSources::default();
        let alone = head(
            &format!("Sec-WebSocket-Protocol: {}\r\n", bearer("t")),
            "/vm",
        )
        .await;
        assert_eq!(
            find_token(&alone, None, &sources),
            Err(TokenProblem::BearerAlone)
        );
        let two = head(
            &format!(
                "Sec-WebSocket-Protocol: binary, {}, {}\r\n",
                bearer("a"),
                bearer("b")
            ),
            "/vm",
        )
        .await;
        assert_eq!(
            find_token(&two, None, &sources),
            Err(TokenProblem::Ambiguous)
        );
        for bad in ["!!!", "_w"] {
            let undecodable = head(
                &format!("Sec-WebSocket-Protocol: binary, {BEARER_SUBPROTOCOL_PREFIX}{bad}\r\n"),
                "/vm",
            )
            .await;
            assert_eq!(
                find_token(&undecodable, None, &sources),
                Err(TokenProblem::Undecodable),
                "{bad}"
            );
        }
        let offered = head(
            &format!("Sec-WebSocket-Protocol: binary, {}\r\n", bearer("t")),
            "/vm",
        )
        .await;
        assert_eq!(offered_subprotocols(&offered), ["binary"]);
    }

    #[tokio::test]
    async fn one_token_per_request_and_disabled_sources_are_ignored() {
        let sources = TokenSources::default();
        let header = head("Authorization: Bearer t.h.s\r\n", "/t.p.s/vm").await;
        assert_eq!(
            find_token(&header, Some("t.p.s".to_owned()), &sources),
            Err(TokenProblem::Ambiguous)
        );
        // Cookie and query are off by default.
        let off = head("Cookie: ws_proxy_token=t.c.s\r\n", "/vm?token=t.q.s").await;
        assert_eq!(find_token(&off, None, &sources), Ok(None));
    }

    #[test]
    fn source_names_parse() {
        let parsed: Result<Vec<TokenSource>, _> = list_elements("path, Subprotocol,header")
            .map(str::parse)
            .collect();
        assert_eq!(
            parsed.unwrap(),
            [
                TokenSource::Path,
                TokenSource::Subprotocol,
                TokenSource::Header
            ]
        );
        assert_eq!(
            "url".parse::<TokenSource>(),
            Err(UnknownTokenSource("url".to_owned()))
        );
    }
}
