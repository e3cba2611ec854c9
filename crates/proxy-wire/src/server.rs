//! The server half of the opening handshake: reading the request head, checking it is a
//! WebSocket upgrade, choosing the subprotocol, and the `101 Switching Protocols` answer.
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::handshake::{HeaderList, derive_accept_key, list_elements};

/// Most headers a request may have; browsers send about 15 on a WebSocket upgrade.
pub const MAX_HEADERS: usize = 64;

/// One parsed request head. Header values are kept as bytes; names are lower-cased.
///
/// It has no `Debug`: the target may hold a credential (a console token in the path).
#[derive(Clone)]
pub struct RequestHead {
    /// The method, as sent (`GET` for an upgrade).
    pub method: String,
    /// The request target (path and query) exactly as sent. Holds the token: never log it.
    pub target: String,
    /// The minor HTTP version (`1` for HTTP/1.1).
    pub minor_version: u8,
    headers: HeaderList,
}

impl RequestHead {
    /// The values of every header called `name` (lower case), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers.values(name)
    }

    /// The comma-separated elements of every header called `name` (lower case), trimmed, as
    /// text; values that are not UTF-8 are skipped.
    pub fn list_tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.values(name)
            .filter_map(|value| std::str::from_utf8(value).ok())
            .flat_map(list_elements)
    }

    /// The path part of the target (before any query).
    pub fn path(&self) -> &str {
        let end = self.target.find(['?', '#']).unwrap_or(self.target.len());
        &self.target[..end]
    }

    /// The subprotocols the client offered in `Sec-WebSocket-Protocol`, in order.
    pub fn offered_subprotocols(&self) -> Vec<&str> {
        self.list_tokens("sec-websocket-protocol").collect()
    }
}

/// Why a request head could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// More than `limit` bytes, or more headers than [`MAX_HEADERS`], without the end of the head.
    #[error("the request head is larger than {limit} bytes or has too many headers")]
    TooLarge {
        /// The byte limit in force.
        limit: usize,
    },
    /// Not HTTP/1.x.
    #[error("malformed HTTP request")]
    Malformed(#[source] httparse::Error),
    /// The peer closed first.
    #[error("the connection closed before a full request head arrived")]
    Incomplete,
    /// Reading failed.
    #[error("i/o error while reading the request head")]
    Io(#[source] std::io::Error),
}

/// Reads until a full request head arrived. Returns it with the bytes already read past it
/// (a client may send its first WebSocket frame right behind the upgrade request).
pub async fn read_request_head<S>(
    stream: &mut S,
    max_bytes: usize,
) -> Result<(RequestHead, Vec<u8>), HeadError>
where
    S: AsyncRead + Unpin,
{
    let mut buffer = Vec::with_capacity(max_bytes.min(2048));
    let mut chunk = [0u8; 2048];
    loop {
        let room = max_bytes.saturating_sub(buffer.len()).min(chunk.len());
        if room == 0 {
            return Err(HeadError::TooLarge { limit: max_bytes });
        }
        let read = stream
            .read(&mut chunk[..room])
            .await
            .map_err(HeadError::Io)?;
        if read == 0 {
            return Err(HeadError::Incomplete);
        }
        buffer.extend_from_slice(&chunk[..read]);

        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buffer) {
            Ok(httparse::Status::Complete(head_len)) => {
                let head = RequestHead {
                    method: request.method.unwrap_or_default().to_owned(),
                    target: request.path.unwrap_or_default().to_owned(),
                    minor_version: request.version.unwrap_or_default(),
                    headers: HeaderList::from_parsed(request.headers),
                };
                let rest = buffer.split_off(head_len);
                return Ok((head, rest));
            }
            Ok(httparse::Status::Partial) => continue,
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HeadError::TooLarge { limit: max_bytes });
            }
            Err(error) => return Err(HeadError::Malformed(error)),
        }
    }
}

/// Why a request is not a WebSocket upgrade the proxy accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// Another method than `GET`.
    #[error("method must be GET")]
    NotGet,
    /// HTTP/1.0.
    #[error("HTTP/1.1 required")]
    OldHttpVersion,
    /// No `Upgrade: websocket`.
    #[error("missing Upgrade: websocket")]
    NoUpgradeHeader,
    /// No `Connection: upgrade`.
    #[error("missing Connection: upgrade")]
    NoConnectionUpgrade,
    /// `Sec-WebSocket-Version` is not exactly `13`.
    #[error("Sec-WebSocket-Version must be 13")]
    WrongVersion,
    /// No key, two keys, or one that is not 24 characters long.
    #[error("missing or invalid Sec-WebSocket-Key")]
    BadKey,
}

/// Checks the request is a version-13 WebSocket upgrade and returns its `Sec-WebSocket-Accept`.
pub fn accept_upgrade(head: &RequestHead) -> Result<String, UpgradeError> {
    if head.method != "GET" {
        return Err(UpgradeError::NotGet);
    }
    if head.minor_version < 1 {
        return Err(UpgradeError::OldHttpVersion);
    }
    if !head
        .list_tokens("upgrade")
        .any(|token| token.eq_ignore_ascii_case("websocket"))
    {
        return Err(UpgradeError::NoUpgradeHeader);
    }
    if !head
        .list_tokens("connection")
        .any(|token| token.eq_ignore_ascii_case("upgrade"))
    {
        return Err(UpgradeError::NoConnectionUpgrade);
    }
    if head.list_tokens("sec-websocket-version").ne(["13"]) {
        return Err(UpgradeError::WrongVersion);
    }
    let mut keys = head.values("sec-websocket-key");
    let key = keys.next().map(<[u8]>::trim_ascii).unwrap_or_default();
    // A key is 16 random bytes in base64: 24 characters.
    if key.len() != 24 || keys.next().is_some() {
        return Err(UpgradeError::BadKey);
    }
    Ok(derive_accept_key(key))
}

/// The subprotocol to answer a client with: the first of `preferred` (in that order, compared
/// without case) that the client offered, in the client's spelling; `None` when it offered none
/// of them. Never a protocol the client did not offer.
pub fn choose_subprotocol<'a>(offered: &[&'a str], preferred: &[&str]) -> Option<&'a str> {
    preferred.iter().find_map(|wanted| {
        offered
            .iter()
            .find(|p| p.eq_ignore_ascii_case(wanted))
            .copied()
    })
}

/// Writes the `101 Switching Protocols` answer, with the chosen subprotocol and the accepted
/// extensions (`Sec-WebSocket-Extensions`, e.g. [`PerMessageDeflate::response_header`](crate::PerMessageDeflate::response_header)), if any.
pub async fn write_switching_protocols<S>(
    stream: &mut S,
    accept_key: &str,
    subprotocol: Option<&str>,
    extensions: Option<&str>,
) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept_key}\r\n"
    );
    if let Some(protocol) = subprotocol {
        head.push_str("Sec-WebSocket-Protocol: ");
        head.push_str(protocol);
        head.push_str("\r\n");
    }
    if let Some(extensions) = extensions {
        head.push_str("Sec-WebSocket-Extensions: ");
        head.push_str(extensions);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(raw: &str) -> Result<(RequestHead, Vec<u8>), HeadError> {
        let mut reader = raw.as_bytes();
        read_request_head(&mut reader, 1024).await
    }

    const UPGRADE: &str = "GET /t/vm?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Protocol: binary , base64\r\n\r\n";

    #[tokio::test]
    async fn an_upgrade_request_parses_and_keeps_the_bytes_behind_it() {
        let raw = format!("{UPGRADE}\u{1}\u{2}");
        let (head, rest) = parse(&raw).await.unwrap();
        assert_eq!(head.path(), "/t/vm");
        assert_eq!(head.target, "/t/vm?x=1");
        assert_eq!(rest, [1, 2]);
        assert_eq!(head.offered_subprotocols(), ["binary", "base64"]);
        // The RFC 6455 section 1.3 example.
        assert_eq!(
            accept_upgrade(&head).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn non_upgrades_are_told_apart() {
        let (head, _) = parse("GET /t/vm HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(accept_upgrade(&head), Err(UpgradeError::NoUpgradeHeader));
        let (head, _) = parse(&UPGRADE.replace("GET", "POST")).await.unwrap();
        assert_eq!(accept_upgrade(&head), Err(UpgradeError::NotGet));
        let (head, _) = parse(&UPGRADE.replace("Version: 13", "Version: 8"))
            .await
            .unwrap();
        assert_eq!(accept_upgrade(&head), Err(UpgradeError::WrongVersion));
        let (head, _) = parse(&UPGRADE.replace("keep-alive, Upgrade", "keep-alive"))
            .await
            .unwrap();
        assert_eq!(
            accept_upgrade(&head),
            Err(UpgradeError::NoConnectionUpgrade)
        );
        let (head, _) = parse(&UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"))
            .await
            .unwrap();
        assert_eq!(accept_upgrade(&head), Err(UpgradeError::BadKey));
    }

    #[tokio::test]
    async fn oversized_truncated_and_garbage_heads_are_errors() {
        let huge = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(2000));
        assert!(matches!(
            parse(&huge).await,
            Err(HeadError::TooLarge { limit: 1024 })
        ));
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHo").await,
            Err(HeadError::Incomplete)
        ));
        assert!(matches!(
            parse("\u{0}\u{1}\r\n\r\n").await,
            Err(HeadError::Malformed(_))
        ));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(70));
        let mut reader = many.as_bytes();
        assert!(matches!(
            read_request_head(&mut reader, 4096).await,
            Err(HeadError::TooLarge { .. })
        ));
    }

    #[test]
    fn the_subprotocol_is_the_first_preferred_one_the_client_offered() {
        let preferred = ["plain.kubevirt.io", "binary"];
        assert_eq!(choose_subprotocol(&[], &preferred), None);
        assert_eq!(choose_subprotocol(&["Binary"], &preferred), Some("Binary"));
        assert_eq!(choose_subprotocol(&["base64"], &preferred), None);
        assert_eq!(
            choose_subprotocol(&["binary", "plain.kubevirt.io"], &preferred),
            Some("plain.kubevirt.io")
        );
        assert_eq!(choose_subprotocol(&["binary"], &[]), None);
    }

    #[tokio::test]
    async fn the_101_answer_names_the_accept_key_and_the_subprotocol() {
        let mut out = Vec::new();
        write_switching_protocols(&mut out, "abc", Some("binary"), None)
            .await
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: abc\r\nSec-WebSocket-Protocol: binary\r\n\r\n"
        );
        let mut out = Vec::new();
        write_switching_protocols(&mut out, "abc", None, Some("permessage-deflate"))
            .await
            .unwrap();
        assert!(String::from_utf8(out).unwrap().ends_with(
            "Sec-WebSocket-Accept: abc\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        ));
    }
}
