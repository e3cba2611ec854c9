//! The client half of the opening handshake: the upgrade request and the checks of the answer.
//!
//! It is done here, not by a WebSocket library, so that the bytes read past the `101` answer
//! (the peer's first frames) are handed to [`WireTransport`](crate::WireTransport) instead of
//! staying inside another library's socket.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::handshake::{HeaderList, derive_accept_key, generate_key, list_elements, lists_token};

/// The longest response head accepted.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 16 * 1024;
/// The most bytes of a refusal's body read.
pub const MAX_REFUSAL_BODY_BYTES: usize = 64 * 1024;
/// The most response headers parsed.
const MAX_RESPONSE_HEADERS: usize = 64;

/// What to ask for: the request target and headers of a client's upgrade.
///
/// The WebSocket headers themselves (`Connection`, `Upgrade`, `Sec-WebSocket-Version` and a
/// fresh `Sec-WebSocket-Key`) are added by [`upgrade`].
#[derive(Clone, Copy)]
pub struct UpgradeRequest<'a> {
    /// Path and query of the request target (`/apis/...?preserveSession=true`).
    pub target: &'a str,
    /// The `Host` header: the authority as written in the URL.
    pub host: &'a str,
    /// The `Sec-WebSocket-Protocol` value (a comma-separated list), if any.
    pub subprotocols: Option<&'a str>,
    /// Further headers, name and value (`Authorization`, say); values may be secret and are
    /// never part of an error.
    pub extra_headers: &'a [(&'a str, &'a [u8])],
}

impl std::fmt::Debug for UpgradeRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.extra_headers.iter().map(|(name, _)| *name).collect();
        f.debug_struct("UpgradeRequest")
            .field("target", &self.target)
            .field("host", &self.host)
            .field("subprotocols", &self.subprotocols)
            .field("extra_headers", &names)
            .finish()
    }
}

/// What the server answered to a successful upgrade.
#[derive(Debug)]
pub struct Upgraded {
    /// The subprotocol the server chose, if any.
    pub subprotocol: Option<String>,
    /// Bytes that arrived after the response head: the start of the first frames.
    pub already_read: BytesMut,
}

/// Why the upgrade did not give a WebSocket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientHandshakeError {
    /// Writing the request or reading the answer failed.
    #[error("i/o error during the WebSocket upgrade")]
    Io(#[source] std::io::Error),
    /// The connection closed before a whole response head arrived.
    #[error("the connection closed before the upgrade was answered")]
    Incomplete,
    /// The response head is not HTTP.
    #[error("malformed HTTP response")]
    Malformed(#[source] httparse::Error),
    /// The response head is longer than [`MAX_RESPONSE_HEAD_BYTES`].
    #[error("the response head is longer than {limit} bytes")]
    HeadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The server answered with another status than `101`.
    #[error("the server answered the upgrade with status {status}")]
    Refused {
        /// The status code.
        status: u16,
        /// The start of the body (at most [`MAX_REFUSAL_BODY_BYTES`], and only what was
        /// announced by `Content-Length` or had already arrived).
        body: BytesMut,
    },
    /// A `101` without `Upgrade: websocket`.
    #[error("the 101 answer lacks Upgrade: websocket")]
    MissingUpgradeHeader,
    /// A `101` without `Connection: upgrade`.
    #[error("the 101 answer lacks Connection: upgrade")]
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Accept` missing or not the one the key asks for.
    #[error("the 101 answer's Sec-WebSocket-Accept does not match the key")]
    AcceptKeyMismatch,
    /// Subprotocols were requested and the server chose none.
    #[error("the server chose no subprotocol, but one was requested")]
    NoSubprotocol,
    /// The server chose a subprotocol though none was requested.
    #[error("the server chose a subprotocol, but none was requested")]
    UnrequestedSubprotocol,
    /// The server chose a subprotocol that was not offered.
    #[error("the server chose a subprotocol that was not offered")]
    InvalidSubprotocol,
}

/// A parsed response head.
struct ResponseHead {
    status: u16,
    headers: HeaderList,
    len: usize,
}

fn serialize_request(request: &UpgradeRequest<'_>, key: &str) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"GET ");
    head.extend_from_slice(request.target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let mut header = |name: &str, value: &[u8]| {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    };
    header("host", request.host.as_bytes());
    header("connection", b"Upgrade");
    header("upgrade", b"websocket");
    header("sec-websocket-version", b"13");
    header("sec-websocket-key", key.as_bytes());
    for (name, value) in request.extra_headers {
        header(name, value);
    }
    if let Some(subprotocols) = request.subprotocols {
        header("sec-websocket-protocol", subprotocols.as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head
}

fn parse_head(buffer: &[u8]) -> Result<Option<ResponseHead>, ClientHandshakeError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    let len = match response.parse(buffer) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(len)) => len,
        Err(error) => return Err(ClientHandshakeError::Malformed(error)),
    };
    let status = response.code.ok_or(ClientHandshakeError::Incomplete)?;
    Ok(Some(ResponseHead {
        status,
        headers: HeaderList::from_parsed(response.headers),
        len,
    }))
}

/// Sends the upgrade `request` on `stream` and reads the answer: `101` with the right accept key
/// and an offered subprotocol becomes [`Upgraded`]; any other status is
/// [`ClientHandshakeError::Refused`] with the start of its body.
pub async fn upgrade<S>(
    stream: &mut S,
    request: &UpgradeRequest<'_>,
) -> Result<Upgraded, ClientHandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let key = generate_key();
    stream
        .write_all(&serialize_request(request, &key))
        .await
        .map_err(ClientHandshakeError::Io)?;
    stream.flush().await.map_err(ClientHandshakeError::Io)?;

    let mut buffer = BytesMut::with_capacity(4096);
    let head = loop {
        if stream
            .read_buf(&mut buffer)
            .await
            .map_err(ClientHandshakeError::Io)?
            == 0
        {
            return Err(ClientHandshakeError::Incomplete);
        }
        if let Some(head) = parse_head(&buffer)? {
            break head;
        }
        if buffer.len() > MAX_RESPONSE_HEAD_BYTES {
            return Err(ClientHandshakeError::HeadTooLarge {
                limit: MAX_RESPONSE_HEAD_BYTES,
            });
        }
    };
    let already_read = buffer.split_off(head.len);

    if head.status != 101 {
        let body = read_refusal_body(stream, &head, already_read).await;
        return Err(ClientHandshakeError::Refused {
            status: head.status,
            body,
        });
    }
    if !lists_token(head.headers.values("upgrade"), "websocket") {
        return Err(ClientHandshakeError::MissingUpgradeHeader);
    }
    if !lists_token(head.headers.values("connection"), "upgrade") {
        return Err(ClientHandshakeError::MissingConnectionUpgrade);
    }
    let expected = derive_accept_key(key.as_bytes());
    if head.headers.values("sec-websocket-accept").next() != Some(expected.as_bytes()) {
        return Err(ClientHandshakeError::AcceptKeyMismatch);
    }
    let subprotocol = match (
        head.headers.values("sec-websocket-protocol").next(),
        request.subprotocols,
    ) {
        (None, Some(_)) => return Err(ClientHandshakeError::NoSubprotocol),
        (None, None) => None,
        (Some(_), None) => return Err(ClientHandshakeError::UnrequestedSubprotocol),
        (Some(chosen), Some(offered)) => match std::str::from_utf8(chosen) {
            Ok(chosen)
                if !chosen.is_empty()
                    && list_elements(offered).any(|p| p.eq_ignore_ascii_case(chosen)) =>
            {
                Some(chosen.to_owned())
            }
            _ => return Err(ClientHandshakeError::InvalidSubprotocol),
        },
    };
    Ok(Upgraded {
        subprotocol,
        already_read,
    })
}

/// The body of a refusal, as far as it is announced and arrives: at most
/// [`MAX_REFUSAL_BODY_BYTES`], and only what is already there when no length is given.
async fn read_refusal_body<S>(stream: &mut S, head: &ResponseHead, mut body: BytesMut) -> BytesMut
where
    S: AsyncRead + Unpin,
{
    let announced = head
        .headers
        .values("content-length")
        .next()
        .and_then(|value| {
            std::str::from_utf8(value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .unwrap_or(0)
        .min(MAX_REFUSAL_BODY_BYTES);
    while body.len() < announced {
        match stream.read_buf(&mut body).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    body.truncate(MAX_REFUSAL_BODY_BYTES);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_written_as_an_http_1_1_head() {
        let request = UpgradeRequest {
            target: "/apis/x/vnc?preserveSession=true",
            host: "api:6443",
            subprotocols: Some("plain.kubevirt.io"),
            extra_headers: &[("authorization", b"Bearer secret")],
        };
        let head = String::from_utf8(serialize_request(&request, "a2V5")).unwrap();
        assert_eq!(
            head,
            "GET /apis/x/vnc?preserveSession=true HTTP/1.1\r\nhost: api:6443\r\n\
             connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n\
             sec-websocket-key: a2V5\r\nauthorization: Bearer secret\r\n\
             sec-websocket-protocol: plain.kubevirt.io\r\n\r\n"
        );
        assert!(!format!("{request:?}").contains("secret"));
    }

    #[test]
    fn partial_and_complete_heads() {
        assert!(parse_head(b"HTTP/1.1 101 Switching").unwrap().is_none());
        let head = parse_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}")
            .unwrap()
            .unwrap();
        assert_eq!(head.status, 404);
        assert_eq!(head.len, 45);
        assert_eq!(
            head.headers.values("content-length").next(),
            Some(&b"2"[..])
        );
        assert!(parse_head(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }
}
