//! The HTTP/1.1 responses the proxy sends besides the upgrade (refusals, health, metrics), and
//! which subprotocol a console client is answered with.
use proxy_wire::{choose_subprotocol, subprotocol};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// The subprotocol to answer the client with: the upstream's when the client offered it, else
/// `binary` when offered (noVNC 0.6 to 1.1; the relay carries binary frames either way), else
/// none. Never a protocol the client did not offer; `base64` is never chosen (the proxy does not
/// transcode).
pub(crate) fn choose_client_subprotocol<'a>(
    offered: &[&'a str],
    upstream: Option<&str>,
) -> Option<&'a str> {
    match upstream {
        Some(upstream) => choose_subprotocol(offered, &[upstream, subprotocol::BINARY]),
        None => choose_subprotocol(offered, &[subprotocol::BINARY]),
    }
}

/// The status line text of the statuses the proxy sends.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Writes a complete response with a body and `Connection: close`, then shuts the write side.
pub(crate) async fn write_response<S>(
    stream: &mut S,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    write_response_with_headers(stream, status, content_type, "", body).await
}

/// [`write_response`] with `extra_headers` (complete `Name: value\r\n` lines).
pub(crate) async fn write_response_with_headers<S>(
    stream: &mut S,
    status: u16,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n{extra_headers}\r\n",
        reason_phrase(status),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    stream.shutdown().await
}

/// A plain-text response with a one-line reason.
pub(crate) async fn write_text_response<S>(
    stream: &mut S,
    status: u16,
    reason: &str,
) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let body = format!("{reason}\n");
    write_response(stream, status, "text/plain; charset=utf-8", body.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subprotocol_answers_only_what_the_client_offered() {
        let kubevirt = Some("plain.kubevirt.io");
        assert_eq!(choose_client_subprotocol(&[], kubevirt), None);
        assert_eq!(
            choose_client_subprotocol(&["binary"], kubevirt),
            Some("binary")
        );
        assert_eq!(
            choose_client_subprotocol(&["binary", "base64"], None),
            Some("binary")
        );
        assert_eq!(choose_client_subprotocol(&["base64"], kubevirt), None);
        assert_eq!(
            choose_client_subprotocol(&["binary", "plain.kubevirt.io"], kubevirt),
            Some("plain.kubevirt.io")
        );
    }

    #[tokio::test]
    async fn responses_are_complete_http() {
        let mut out = Vec::new();
        write_text_response(&mut out, 403, "the token does not allow this VM")
            .await
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(text.contains("Content-Length: 33\r\n"));
        assert!(text.ends_with("\r\n\r\nthe token does not allow this VM\n"));
    }
}
