//! The RFB (VNC) protocol as the proxy needs it (RFC 6143, with the extensions noVNC and QEMU
//! use): incremental parsers for both directions that are fed whatever byte chunks the
//! WebSocket messages carry (a message may span chunks; a chunk may hold several), and the
//! observer filter that takes input out of what a watch-only client sends. No networking, no
//! async: the proxy's relay feeds it.
//!
//! - [`ClientParser`] follows the client: its handshake (ProtocolVersion, security choice, VNC
//!   authentication response, ClientInit), then SetPixelFormat, SetEncodings,
//!   FramebufferUpdateRequest, KeyEvent, PointerEvent, ClientCutText (and the extended
//!   clipboard), EnableContinuousUpdates, fences, xvp, SetDesktopSize, gii and QEMU's extended
//!   key events and audio, each with its exact length.
//! - [`ServerParser`] follows the server: its handshake (security types of 3.3, 3.7 and 3.8,
//!   VNC authentication, SecurityResult with its reason, ServerInit), then FramebufferUpdate
//!   with Raw, CopyRect, RRE, Hextile, zlib, Tight (and TightPNG), ZRLE and the
//!   pseudo-encodings (DesktopSize, ExtendedDesktopSize, Cursor, XCursor, LastRect,
//!   DesktopName, QEMU's), SetColourMapEntries, Bell, ServerCutText, EndOfContinuousUpdates,
//!   fences, xvp and QEMU audio.
//! - Both hand every byte on exactly once, labelled with its message ([`ClientPiece`],
//!   [`ServerPiece`]); what one side tells the other (versions, security type, pixel format)
//!   lives in [`Negotiated`]. [`RfbConnection`] holds the pair.
//! - A message the parsers do not know, or one that breaks the protocol, is an [`RfbError`]:
//!   the proxy ends the session with it as the reason instead of guessing where it ends. Only
//!   None and VNC authentication are followed; other security types are refused.
//!
//! ```
//! use proxy_rfb::{ClientChunk, ClientMessage, RfbConnection};
//!
//! let mut connection = RfbConnection::new();
//! connection.server_sent(b"RFB 003.008\n").unwrap();
//! connection.client_sent_as_observer(b"RFB 003.008\n").unwrap();
//! connection.server_sent(&[1, 1]).unwrap(); // one security type: None
//! connection.client_sent_as_observer(&[1]).unwrap(); // the client picks None
//! connection.server_sent(&[0, 0, 0, 0]).unwrap(); // SecurityResult: OK
//! connection.client_sent_as_observer(&[1]).unwrap(); // ClientInit (shared)
//!
//! // An update request passes; the key press (down and up) in the same chunk does not.
//! let chunk = [3, 1, 0, 0, 0, 0, 0, 4, 0, 3, /* key */ 4, 1, 0, 0, 0, 0, 0, 0x61];
//! match connection.client_sent_as_observer(&chunk).unwrap() {
//!     ClientChunk::Filtered { kept, dropped } => {
//!         assert_eq!(kept, &chunk[..10]);
//!         assert_eq!(dropped, [ClientMessage::KeyEvent]);
//!     }
//!     ClientChunk::Unchanged => unreachable!("the key press is input"),
//! }
//! ```

mod client;
pub mod codec;
mod connection;
mod error;
pub mod framebuffer;
mod handshake;
mod read;
mod server;
pub mod upstream;
pub mod viewer;

pub use client::{ClientMessage, ClientParser, ClientPiece};
pub use connection::{ClientChunk, RfbConnection};
pub use error::RfbError;
pub use handshake::{Negotiated, PixelFormat, Version, security};
pub use server::{MAX_DESKTOP_NAME_BYTES, ServerMessage, ServerParser, ServerPiece, encoding};
