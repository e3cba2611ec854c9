//! Looking inside a console session: what the proxy does with the RFB stream it relays when a
//! session asks for more than a byte relay. An observer's keyboard, pointer and clipboard input
//! is taken out before it reaches the VM ([`proxy_rfb`] follows the stream), and a session is
//! recorded in noVNC's playback format ([`recording`]), beside the relay and never blocking it.
//!
//! [`ConsoleSession::open`] decides from the deployment's [`RecordingConfig`] and the token's
//! wishes; the relay then passes each side's data frames through [`Inspected`]:
//!
//! ```
//! use proxy_console::{ConsoleMetrics, ConsoleRequest, ConsoleSession};
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
//! let from_vm = |bytes: &[u8]| console.inspect_upstream_frame(Frame::Binary(bytes.to_vec().into()));
//! let from_viewer = |bytes: &[u8]| console.inspect_client_frame(Frame::Binary(bytes.to_vec().into()));
//! // The RFB 3.8 handshake passes both ways: versions, security type None, the inits.
//! from_vm(b"RFB 003.008\n")?;
//! assert!(from_viewer(b"RFB 003.008\n")?.is_some());
//! from_vm(&[1, 1])?;
//! assert!(from_viewer(&[1])?.is_some());
//! from_vm(&[0, 0, 0, 0])?;
//! assert!(from_viewer(&[1])?.is_some());
//! let mut server_init = vec![0, 4, 0, 3]; // 4x3
//! server_init.extend([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
//! server_init.extend([0, 0, 0, 2]);
//! server_init.extend(b"vm");
//! from_vm(&server_init)?;
//! // An observer's key press never reaches the VM; its update request does.
//! assert!(from_viewer(&[4, 1, 0, 0, 0, 0, 0, 0x61])?.is_none());
//! assert!(from_viewer(&[3, 1, 0, 0, 0, 0, 0, 4, 0, 3])?.is_some());
//! assert_eq!(console.dropped_input(), 1);
//! # Ok(())
//! # }
//! ```
mod metrics;
pub mod recording;
mod session;

pub use metrics::ConsoleMetrics;
pub use recording::{RecordSessions, RecordingConfig, RecordingError};
pub use session::{ConsoleError, ConsoleRequest, ConsoleSession, Inspected};
