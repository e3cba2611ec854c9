//! Why a stream is not RFB the proxy can follow.

/// A stream the parser cannot follow: the session should end with this as the close reason
/// (the parser never guesses where a message it does not know ends).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RfbError {
    /// The first 12 bytes are not `RFB xxx.yyy\n`.
    #[error("not an RFB protocol version")]
    BadVersion,
    /// A security type the proxy cannot follow (only None and VNC authentication are).
    #[error("unsupported RFB security type {0}")]
    UnsupportedSecurity(u8),
    /// One side spoke before the other said what it depends on (e.g. the client's version).
    #[error("RFB {0} out of turn")]
    OutOfTurn(&'static str),
    /// A client-to-server message type the proxy does not know.
    #[error("unknown RFB client message type {0}")]
    UnknownClientMessage(u8),
    /// A server-to-client message type the proxy does not know.
    #[error("unknown RFB server message type {0}")]
    UnknownServerMessage(u8),
    /// A QEMU client or server message with an unknown subtype.
    #[error("unknown QEMU RFB message subtype {0}")]
    UnknownQemuMessage(u8),
    /// A rectangle encoding the proxy does not know (so it cannot tell where it ends).
    #[error("unknown RFB rectangle encoding {0}")]
    UnknownEncoding(i32),
    /// A field holds a value the protocol forbids.
    #[error("malformed RFB {0}")]
    Malformed(&'static str),
    /// Something the shared-console framebuffer does not keep (colour maps, huge desktops).
    #[error("unsupported for shared consoles: {0}")]
    Unsupported(&'static str),
    /// The stream went on after the handshake failed.
    #[error("RFB data after a failed handshake")]
    AfterFailure,
}
