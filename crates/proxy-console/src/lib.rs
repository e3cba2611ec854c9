//! Looking inside a console session: what the proxy does with the RFB stream it relays when a
//! session asks for more than a byte relay. An observer's keyboard, pointer and clipboard input
//! is taken out before it reaches the VM ([`proxy_rfb`] follows the stream), and a session is
//! recorded in noVNC's playback format ([`recording`]), beside the relay and never blocking it.
//!
//! [`ConsoleSession::open`] decides from the deployment's [`RecordingConfig`] and the token's
//! wishes; the relay then passes each side's data frames through [`Inspected`]:
//!
//! ```
//! use proxy_console::{ConsoleMetrics, ConsoleRequest, ConsoleSession, Inspected};
//! use proxy_core::Frame;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let request = ConsoleRequest {
//!     session_id: 1,
//!     namespace: "lab-ns",
//!     vmi_name: "ubuntu",
//!     observer: true,
//!     record_requested: false,
//! };
//! let console = ConsoleSession::open(None, &request, &ConsoleMetrics::default())?
//!     .expect("an observer's session is inspected");
//! // The RFB 3.8 handshake as the VM starts it, then the observer's answer and a key press.
//! console.inspect_upstream_frame(Frame::Binary("RFB 003.008\n".into()))?;
//! let version = console.inspect_client_frame(Frame::Binary("RFB 003.008\n".into()))?;
//! assert!(version.is_some(), "the handshake passes");
//! # let _ = |transport: Vec<Frame>| Inspected::new(transport, |frame| Ok(Some(frame)));
//! # Ok(())
//! # }
//! ```
mod metrics;
pub mod recording;
mod session;

pub use metrics::ConsoleMetrics;
pub use recording::{RecordSessions, RecordingConfig, RecordingError};
pub use session::{ConsoleError, ConsoleRequest, ConsoleSession, Inspected};
