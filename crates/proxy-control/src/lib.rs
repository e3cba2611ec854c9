//! The control plane of ws-proxy: what the replicas share about sessions and what operators do
//! to them. The state store ([`store`]: embedded, or Redis for many replicas behind the default-on
//! `redis` feature) holds the live sessions as leases, the per-user, per-lab-instance and per-VM
//! limits, revocations, the memory of single-use token ids, and the commands (close, revoke) that
//! must reach a session wherever it runs; each replica's [`SessionLease`]s are its live sessions.
//!
//! [`Control`] puts it behind one value. A console request asks it one question,
//! [`Control::admit`], and gets an [`Admission`] or a typed [`Refusal`]; the store-outage policy
//! is decided inside. An admission dropped uncommitted releases its lease and its single-use
//! mark, so a session that never opened costs its holder nothing:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//!
//! use proxy_auth::{ConsoleAccess, Grant};
//! use proxy_control::store::{MemoryStateStore, StorePolicy};
//! use proxy_control::{Control, ControlConfig, Refusal, StoreMetrics};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let control = Control::new(
//!     ControlConfig {
//!         store: Arc::new(MemoryStateStore::default()),
//!         policy: StorePolicy::default(),
//!         replica: "ws-proxy-0".to_owned(),
//!         limits: Default::default(),
//!         single_use_tokens: true,
//!     },
//!     StoreMetrics::default(),
//! );
//! let grant = Grant {
//!     user_id: 7_i64.into(),
//!     lab_id: 1_i64.into(),
//!     lab_instance_id: 3_i64.into(),
//!     namespace: "lab-ns".to_owned(),
//!     vmi_name: "ubuntu".to_owned(),
//!     expires_at: SystemTime::now() + Duration::from_secs(300),
//!     additional_data: None,
//!     token_id: Some("token-1".to_owned()),
//!     console: ConsoleAccess::default(),
//! };
//! // Revocations are read first (a serving replica does this before its first session).
//! control.refresh().await;
//! // The upstream could not be opened: the admission is dropped and the token may try again.
//! let first = control.admit(&grant, control.session_id(1), "10.0.0.9:40000").await;
//! drop(first);
//! # tokio::task::yield_now().await;
//! let lease = control.admit(&grant, control.session_id(2), "10.0.0.9:40001").await.map(|a| a.commit());
//! assert!(lease.is_ok());
//! // Committed: the single-use token has been used.
//! let again = control.admit(&grant, control.session_id(3), "10.0.0.9:40002").await;
//! assert_eq!(again.err(), Some(Refusal::AlreadyUsed));
//! # }
//! ```
mod control;
mod metrics;
mod registry;
pub mod single_use;
pub mod store;

pub use control::{Admission, Control, ControlConfig, Refusal};
pub use metrics::StoreMetrics;
pub use registry::{OPERATOR_CLOSE_CODE, REVOKED_CLOSE_CODE, SessionLease, replica_name};
pub use store::{SessionRecord, StateStore, StorePolicy};
