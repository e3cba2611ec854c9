//! What both halves of the opening handshake (RFC 6455 section 4) share: the key and its
//! accept value, and comma-separated header lists.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

/// The GUID RFC 6455 appends to a client's key.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
///
/// ```
/// // The example of RFC 6455 section 1.3.
/// assert_eq!(
///     proxy_wire::derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
///     "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
/// );
/// ```
pub fn derive_accept_key(key: &[u8]) -> String {
    let mut digest = Sha1::new();
    digest.update(key);
    digest.update(WEBSOCKET_GUID);
    STANDARD.encode(digest.finalize())
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64.
pub fn generate_key() -> String {
    STANDARD.encode(rand::random::<[u8; 16]>())
}

/// The headers of a parsed request or response head: names lower-cased, values as sent.
#[derive(Clone, Default)]
pub(crate) struct HeaderList(Vec<(String, Vec<u8>)>);

impl HeaderList {
    /// The headers httparse found.
    pub(crate) fn from_parsed(headers: &[httparse::Header<'_>]) -> Self {
        Self(
            headers
                .iter()
                .map(|header| (header.name.to_ascii_lowercase(), header.value.to_vec()))
                .collect(),
        )
    }

    /// The values of every header called `name` (lower case), in order.
    pub(crate) fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0
            .iter()
            .filter(move |(header, _)| header == name)
            .map(|(_, value)| value.as_slice())
    }
}

/// The trimmed, non-empty elements of a comma-separated header value (RFC 9110 section 5.6.1).
pub fn list_elements(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|element| !element.is_empty())
}

/// Whether any of `values` lists `token`, compared without case.
pub fn lists_token<'a>(values: impl IntoIterator<Item = &'a [u8]>, token: &str) -> bool {
    values.into_iter().any(|value| {
        std::str::from_utf8(value)
            .is_ok_and(|value| list_elements(value).any(|e| e.eq_ignore_ascii_case(token)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_16_bytes_of_base64_and_differ() {
        let (first, second) = (generate_key(), generate_key());
        assert_eq!(STANDARD.decode(&first).unwrap().len(), 16);
        assert_eq!(first.len(), 24);
        assert_ne!(first, second);
    }

    #[test]
    fn list_tokens_are_matched_in_comma_lists_without_case() {
        assert!(lists_token([&b"keep-alive, Upgrade"[..]], "upgrade"));
        assert!(lists_token([&b"a"[..], &b" b ,websocket"[..]], "WebSocket"));
        assert!(!lists_token([&b"keep-alive"[..], &b"\xff"[..]], "upgrade"));
        assert_eq!(list_elements(" a,, b ,").collect::<Vec<_>>(), ["a", "b"]);
    }
}
