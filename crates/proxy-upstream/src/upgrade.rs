//! The client side of the WebSocket upgrade with the API server, done here rather than by
//! tungstenite so that the bytes read past the `101` answer (the VM's first frames) are handed to
//! [`WireTransport`](crate::WireTransport) instead of staying inside a tungstenite socket.
//!
//! tungstenite still builds the request (key and upgrade headers) and derives the accept key;
//! the response head is parsed by httparse.

use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError, SubProtocolError};
use tokio_tungstenite::tungstenite::{self, handshake::derive_accept_key};

use crate::connector::ConnectError;

/// The longest response head accepted from the API server.
const MAX_RESPONSE_HEAD_BYTES: usize = 16 * 1024;
/// The most bytes of a refusal's body read for its excerpt.
const MAX_REFUSAL_BODY_BYTES: usize = 64 * 1024;
/// The most response headers parsed.
const MAX_RESPONSE_HEADERS: usize = 64;

/// What the API server answered to a successful upgrade.
#[derive(Debug)]
pub(crate) struct Upgraded {
    /// The subprotocol the server chose, if any.
    pub subprotocol: Option<String>,
    /// Bytes that arrived after the response head: the start of the first frames.
    pub already_read: BytesMut,
}

fn protocol_error(error: ProtocolError) -> ConnectError {
    ConnectError::Protocol(tungstenite::Error::Protocol(error))
}

fn subprotocol_error(error: SubProtocolError) -> ConnectError {
    protocol_error(ProtocolError::SecWebSocketSubProtocolError(error))
}

fn io_failure(error: std::io::Error) -> ConnectError {
    ConnectError::Protocol(tungstenite::Error::Io(error))
}

fn serialize_request(request: &Request<()>) -> Vec<u8> {
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"GET ");
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// A parsed response head.
struct ResponseHead {
    status: StatusCode,
    headers: HeaderMap,
    len: usize,
}

fn parse_head(buffer: &[u8]) -> Result<Option<ResponseHead>, ConnectError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    let len = match response.parse(buffer) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(len)) => len,
        Err(error) => return Err(protocol_error(ProtocolError::HttparseError(error))),
    };
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(protocol_error(ProtocolError::HandshakeIncomplete))?;
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    for header in response.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes());
        let value = HeaderValue::from_bytes(header.value);
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    Ok(Some(ResponseHead {
        status,
        headers,
        len,
    }))
}

fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// Sends `request` (built by tungstenite, with the key and upgrade headers) on `stream` and
/// reads the answer: `101` with the right accept key becomes [`Upgraded`], any other status a
/// [`ConnectError`] with the body's excerpt.
pub(crate) async fn upgrade<S>(
    stream: &mut S,
    request: &Request<()>,
) -> Result<Upgraded, ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .write_all(&serialize_request(request))
        .await
        .map_err(io_failure)?;
    stream.flush().await.map_err(io_failure)?;

    let mut buffer = BytesMut::with_capacity(4096);
    let head = loop {
        if stream.read_buf(&mut buffer).await.map_err(io_failure)? == 0 {
            return Err(protocol_error(ProtocolError::HandshakeIncomplete));
        }
        if let Some(head) = parse_head(&buffer)? {
            break head;
        }
        if buffer.len() > MAX_RESPONSE_HEAD_BYTES {
            return Err(ConnectError::Protocol(tungstenite::Error::Capacity(
                CapacityError::MessageTooLong {
                    size: buffer.len(),
                    max_size: MAX_RESPONSE_HEAD_BYTES,
                },
            )));
        }
    };
    let already_read = buffer.split_off(head.len);

    if head.status != StatusCode::SWITCHING_PROTOCOLS {
        let body = read_refusal_body(stream, &head.headers, already_read).await;
        return Err(ConnectError::from_status(head.status, &body));
    }
    if !header_has_token(&head.headers, UPGRADE, "websocket") {
        return Err(protocol_error(ProtocolError::MissingUpgradeWebSocketHeader));
    }
    if !header_has_token(&head.headers, CONNECTION, "upgrade") {
        return Err(protocol_error(
            ProtocolError::MissingConnectionUpgradeHeader,
        ));
    }
    let key = request
        .headers()
        .get("sec-websocket-key")
        .ok_or(protocol_error(ProtocolError::MissingSecWebSocketKey))?;
    let accepted = head.headers.get("sec-websocket-accept");
    if accepted.map(HeaderValue::as_bytes) != Some(derive_accept_key(key.as_bytes()).as_bytes()) {
        return Err(protocol_error(ProtocolError::SecWebSocketAcceptKeyMismatch));
    }
    let requested = request.headers().contains_key(SEC_WEBSOCKET_PROTOCOL);
    let subprotocol = match head.headers.get(SEC_WEBSOCKET_PROTOCOL) {
        None if requested => return Err(subprotocol_error(SubProtocolError::NoSubProtocol)),
        None => None,
        Some(_) if !requested => {
            return Err(subprotocol_error(
                SubProtocolError::ServerSentSubProtocolNoneRequested,
            ));
        }
        Some(chosen) => match chosen.to_str() {
            Ok(chosen)
                if !chosen.is_empty()
                    && header_has_token(request.headers(), SEC_WEBSOCKET_PROTOCOL, chosen) =>
            {
                Some(chosen.to_owned())
            }
            _ => return Err(subprotocol_error(SubProtocolError::InvalidSubProtocol)),
        },
    };
    Ok(Upgraded {
        subprotocol,
        already_read,
    })
}

/// The body of a refusal, as far as it is announced and arrives: at most
/// [`MAX_REFUSAL_BODY_BYTES`], and only what is already there when no length is given.
async fn read_refusal_body<S>(stream: &mut S, headers: &HeaderMap, mut body: BytesMut) -> BytesMut
where
    S: AsyncRead + Unpin,
{
    let announced = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.trim().parse::<usize>().ok())
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
    fn connection_tokens_are_matched_in_comma_lists_without_case() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(header_has_token(&headers, CONNECTION, "upgrade"));
        assert!(!header_has_token(&headers, UPGRADE, "websocket"));
    }

    #[test]
    fn a_request_is_written_as_an_http_1_1_head() {
        let request = Request::get("ws://api:6443/apis/x/vnc?preserveSession=true")
            .header("host", "api:6443")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        let head = String::from_utf8(serialize_request(&request)).unwrap();
        assert_eq!(
            head,
            "GET /apis/x/vnc?preserveSession=true HTTP/1.1\r\nhost: api:6443\r\nupgrade: websocket\r\n\r\n"
        );
    }

    #[test]
    fn partial_and_complete_heads() {
        assert!(parse_head(b"HTTP/1.1 101 Switching").unwrap().is_none());
        let head = parse_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}")
            .unwrap()
            .unwrap();
        assert_eq!(head.status, StatusCode::NOT_FOUND);
        assert_eq!(head.len, 45);
        assert!(parse_head(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }
}
