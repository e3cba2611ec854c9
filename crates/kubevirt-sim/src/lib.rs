//! A simulated KubeVirt API serving the VNC subresource, with a built-in VM console.
//!
//! `ws-proxy` dials `{remote}/apis/subresources.kubevirt.io/v1alpha3/namespaces/{ns}/virtualmachineinstances/{vmi}/vnc`
//! on the Kubernetes API server. This crate stands in for that API server (and for KubeVirt's
//! `virt-api` behind it) on `127.0.0.1`, so the demo, the integration and browser tests and the
//! load tools need no cluster:
//!
//! - the VNC subresource path, API versions `v1alpha3` and `v1`, `preserveSession` recorded;
//! - optional TLS with a CA and server certificate generated at start ([`KubevirtSim::ca_pem`],
//!   [`KubevirtSim::write_ca_pem`]);
//! - optional bearer check against a token or a token file re-read per request (rotation);
//!   a missing or wrong token answers 401 with a Kubernetes `Status` body;
//! - the `plain.kubevirt.io` subprotocol selected when offered;
//! - KubeVirt's answers for an unknown VMI (404, `virtualmachineinstance.kubevirt.io "x" not found`)
//!   and a VMI that is not running (400, `VMI is not running`, as `virt-api` answers);
//! - per-VM behaviours ([`VmBehavior`]): a real RFB 3.8 console ([`rfb`]) with a test pattern,
//!   text, typed keys and the pointer; a bridge to a real VNC server's TCP port; echo, sink and
//!   source for tests and load tools;
//! - every request recorded ([`KubevirtSim::requests`]) and open sessions counted
//!   ([`KubevirtSim::open_sessions`], [`KubevirtSim::wait_for_no_open_sessions`]).
//!
//! Everything is bounded: sessions ([`SimConfig::max_sessions`]), handshake time, recorded
//! requests, message sizes and the console's change log.
//!
//! ```no_run
//! use kubevirt_sim::{KubevirtSim, SimConfig, VmBehavior};
//!
//! # async fn demo() -> Result<(), kubevirt_sim::SimError> {
//! let sim = KubevirtSim::start(
//!     SimConfig::new()
//!         .tls(true)
//!         .bearer_token("service-account-token")
//!         .vm("ubuntu", VmBehavior::Rfb)
//!         .vm("stopped", VmBehavior::NotRunning),
//! )
//! .await?;
//! sim.write_ca_pem("/tmp/kubevirt-sim-ca.pem")?;
//! println!(
//!     "dial {}{}",
//!     sim.base_url(),
//!     KubevirtSim::vnc_path("default", "ubuntu")
//! );
//! // ... run the proxy and a client against it ...
//! assert!(sim.wait_for_no_open_sessions(std::time::Duration::from_secs(5)).await);
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod config;
pub mod rfb;
mod server;
mod session;
mod status;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use config::{
    BearerCheck, DEFAULT_SOURCE_CHUNK_BYTES, MAX_SOURCE_CHUNK_BYTES, ParseVmError, SimConfig,
    VmBehavior, VmSpec,
};
pub use server::{AuthorizationOutcome, KubevirtSim, PLAIN_SUBPROTOCOL, RecordedRequest, SimStats};

/// Why the simulator could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// The bound address could not be read back.
    #[error("cannot read the listener's bound address")]
    LocalAddr(#[source] std::io::Error),
    /// The test CA or the server certificate could not be generated.
    #[error("cannot generate the test CA and server certificate")]
    Certificate(#[from] rcgen::Error),
    /// The TLS server configuration was refused.
    #[error("cannot build the TLS server configuration")]
    TlsConfig(#[source] tokio_rustls::rustls::Error),
    /// A CA was asked for, but the simulator serves plain `ws://`.
    #[error("the simulator serves plain ws:// and has no CA certificate")]
    NoTls,
    /// The CA certificate could not be written.
    #[error("cannot write the CA certificate to {path}")]
    WriteCa {
        /// Where it was to be written.
        path: PathBuf,
        /// Why writing failed.
        #[source]
        source: std::io::Error,
    },
}
