//! Reading session recordings in the websockify/noVNC playback format that `ws-proxy` writes
//! (`var VNC_frame_data = ['{ms{data', '}ms}data', …, 'EOF'];`), for tests that compare a
//! recording with what travelled.

/// One recorded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Whether the client sent it (`}`), else the server (`{`).
    pub from_client: bool,
    /// Milliseconds since the session started.
    pub offset_ms: u64,
    /// The message's bytes.
    pub bytes: Vec<u8>,
}

/// The entries of a recording, in order (the closing `'EOF'` and comments are not entries).
pub fn entries(recording: &str) -> Vec<Entry> {
    recording
        .lines()
        .skip(1)
        .filter_map(|line| line.strip_prefix('\'')?.strip_suffix("',"))
        .map(|entry| {
            let prefix = entry.chars().next().expect("an empty entry");
            let (offset, data) = entry[1..].split_once(prefix).expect("no offset");
            Entry {
                from_client: prefix == '}',
                offset_ms: offset.parse().expect("the offset is not a number"),
                bytes: unescape(data),
            }
        })
        .collect()
}

/// The bytes of all server (or all client) entries, concatenated.
pub fn stream(recording: &str, from_client: bool) -> Vec<u8> {
    entries(recording)
        .into_iter()
        .filter(|entry| entry.from_client == from_client)
        .flat_map(|entry| entry.bytes)
        .collect()
}

/// Undoes the recorder's escaping (Python's `unicode_escape` plus `\'`), as a JavaScript
/// engine reads the string literal.
fn unescape(data: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut chars = data.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            bytes.push(u8::try_from(c).expect("a character outside latin1"));
            continue;
        }
        match chars.next().expect("a trailing backslash") {
            'x' => {
                let hex: String = chars.by_ref().take(2).collect();
                bytes.push(u8::from_str_radix(&hex, 16).expect("a bad \\x escape"));
            }
            'n' => bytes.push(b'\n'),
            'r' => bytes.push(b'\r'),
            't' => bytes.push(b'\t'),
            other => bytes.push(u8::try_from(other).expect("a character outside latin1")),
        }
    }
    bytes
}

/// What a recorded RFB client asked for: its SetPixelFormat's 16 format bytes (if it sent
/// one) and its SetEncodings list, read from its stream (after ProtocolVersion, the security
/// choice and ClientInit of a security-None session).
pub fn rfb_client_settings(client: &[u8]) -> (Option<[u8; 16]>, Vec<i32>) {
    let mut at = 14;
    let mut format = None;
    while at < client.len() {
        match client[at] {
            0 if client.len() >= at + 20 => {
                format = client[at + 4..at + 20].try_into().ok();
                at += 20;
            }
            2 if client.len() >= at + 4 => {
                let count = usize::from(u16::from_be_bytes([client[at + 2], client[at + 3]]));
                let encodings = client[at + 4..(at + 4 + 4 * count).min(client.len())]
                    .chunks_exact(4)
                    .map(|bytes| i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
                    .collect();
                return (format, encodings);
            }
            3 => at += 10,
            _ => break,
        }
    }
    (format, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_decoded_in_order() {
        let recording =
            "var VNC_frame_data = [\n'{0{RFB 003.008\\n',\n'}5}\\x01\\'\\\\',\n'EOF'];\n";
        assert_eq!(
            entries(recording),
            vec![
                Entry {
                    from_client: false,
                    offset_ms: 0,
                    bytes: b"RFB 003.008\n".to_vec()
                },
                Entry {
                    from_client: true,
                    offset_ms: 5,
                    bytes: vec![1, b'\'', b'\\']
                },
            ]
        );
        assert_eq!(stream(recording, true), vec![1, b'\'', b'\\']);
    }
}
