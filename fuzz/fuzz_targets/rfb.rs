//! Both RFB parsers on arbitrary interleaved input: never a panic, and the same input cut
//! into other chunks gives the same forwarded observer bytes, or the same error in the same
//! message (before an error, smaller chunks may have forwarded more of the failing message:
//! the session ends either way).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_rfb::{ClientChunk, RfbConnection};

/// Feeds `messages` (direction, bytes) cut into `piece`-byte chunks; returns what the observer
/// filter forwarded and where an error stopped it.
fn follow(messages: &[(bool, Vec<u8>)], piece: usize) -> (Vec<u8>, Option<(usize, String)>) {
    let mut connection = RfbConnection::new();
    let mut forwarded = Vec::new();
    for (index, (from_client, bytes)) in messages.iter().enumerate() {
        for chunk in bytes.chunks(piece.max(1)) {
            let result = if *from_client {
                connection
                    .client_sent_as_observer(chunk)
                    .map(|outcome| match outcome {
                        ClientChunk::Unchanged => forwarded.extend_from_slice(chunk),
                        ClientChunk::Filtered { kept, .. } => forwarded.extend_from_slice(&kept),
                    })
            } else {
                connection.server_sent(chunk)
            };
            if let Err(error) = result {
                return (forwarded, Some((index, error.to_string())));
            }
        }
    }
    (forwarded, None)
}

fuzz_target!(|input: (u8, Vec<(bool, Vec<u8>)>)| {
    let (piece, mut messages) = input;
    // Start from a valid 3.8 handshake so the fuzzer reaches the message parsers.
    let mut init = vec![
        0, 8, 0, 8, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    messages.splice(
        0..0,
        [
            (false, b"RFB 003.008\n".to_vec()),
            (true, b"RFB 003.008\n".to_vec()),
            (false, vec![1, 1]),
            (true, vec![1]),
            (false, vec![0, 0, 0, 0]),
            (true, vec![1]),
            (false, std::mem::take(&mut init)),
        ],
    );
    let whole = follow(&messages, usize::MAX);
    let chunked = follow(&messages, usize::from(piece % 7) + 1);
    match (&whole.1, &chunked.1) {
        (None, None) => assert_eq!(whole.0, chunked.0),
        (whole_error, chunked_error) => assert_eq!(whole_error, chunked_error),
    }
});
