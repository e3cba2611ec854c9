//! Both directions of one RFB connection, and what the proxy does with them: follow the
//! stream and, for an observer, take the input out of what the client sends.
use crate::client::{ClientMessage, ClientParser};
use crate::error::RfbError;
use crate::handshake::Negotiated;
use crate::server::ServerParser;

/// What became of a chunk the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientChunk {
    /// Nothing was taken out or held back: forward the chunk as it is.
    Unchanged,
    /// Input was taken out, or bytes of a message whose kind or length is not known yet are held
    /// back until the next chunk: forward `kept` (possibly empty) instead.
    Filtered {
        /// The bytes of the messages that were not input, in order.
        kept: Vec<u8>,
        /// The input messages that ended in this chunk and were dropped.
        dropped: Vec<ClientMessage>,
    },
}

/// One RFB connection as the proxy follows it: both parsers and what they negotiated.
///
/// Each direction is fed in the order its bytes travel; the two may interleave freely (a
/// message of one direction only depends on what the other direction said before the peer
/// could see it, which the proxy forwarded after following it).
#[derive(Debug, Default)]
pub struct RfbConnection {
    client: ClientParser,
    server: ServerParser,
    negotiated: Negotiated,
}

impl RfbConnection {
    /// A connection before its first byte.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the handshake established so far.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// Follows bytes the client sent, unchanged.
    pub fn client_sent(&mut self, bytes: &[u8]) -> Result<(), RfbError> {
        self.client.feed(bytes, &mut self.negotiated, |_| {})
    }

    /// Follows bytes the client sent and takes every input message out (keyboard, pointer,
    /// clipboard, power, screen size, input devices), across chunk boundaries: what an
    /// observer's client may send.
    pub fn client_sent_as_observer(&mut self, bytes: &[u8]) -> Result<ClientChunk, RfbError> {
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        let mut filtered = false;
        self.client.feed(bytes, &mut self.negotiated, |piece| {
            if piece.message.is_input() {
                filtered = true;
                if piece.ends_message {
                    dropped.push(piece.message);
                }
            } else {
                kept.extend_from_slice(piece.bytes);
            }
        })?;
        // Bytes of a message whose length is not known yet are held back until it is, so the
        // chunk is only forwarded as it is when exactly its bytes were kept.
        Ok(if !filtered && kept == bytes {
            ClientChunk::Unchanged
        } else {
            ClientChunk::Filtered { kept, dropped }
        })
    }

    /// Follows bytes the server sent.
    pub fn server_sent(&mut self, bytes: &[u8]) -> Result<(), RfbError> {
        self.server.feed(bytes, &mut self.negotiated, |_| {})
    }
}
