//! The upstream of these tests is [`kubevirt_sim`], the project's one simulated KubeVirt API:
//! plain or TLS (with a [`TestPki`] the test owns), a bearer check, every request recorded.
//! This module holds the lab VM the tests dial and a proof that a WebSocket works both ways.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
pub use kubevirt_sim::{AuthorizationOutcome, KubevirtSim, RecordedRequest, SimConfig, VmBehavior};
use proxy_core::Frame;
use proxy_upstream::UpstreamTarget;
pub use test_support::TestPki;

/// What the simulated VNC console sends first, as RFB servers do.
pub const GREETING: &[u8] = b"RFB 003.008\n";

/// The VM every test dials.
pub const LAB_VM: UpstreamTarget<'static> = UpstreamTarget {
    namespace: "lab-1",
    vmi_name: "vm-a",
};

/// Its VNC subresource path.
pub const DEFAULT_PATH_FOR_LAB_VM: &str =
    "/apis/subresources.kubevirt.io/v1alpha3/namespaces/lab-1/virtualmachineinstances/vm-a/vnc";

/// The simulator serving [`LAB_VM`] as an echo console that greets first.
pub fn lab_vm() -> SimConfig {
    SimConfig::new().greeting(GREETING).vm_in_namespace(
        LAB_VM.namespace,
        LAB_VM.vmi_name,
        VmBehavior::Echo,
    )
}

/// [`lab_vm`] over TLS with `pki`'s server certificate, expecting the bearer token `token`.
pub fn lab_vm_tls(pki: &TestPki, token: &str) -> SimConfig {
    lab_vm()
        .tls_server_config(pki.server_config())
        .bearer_token(token)
}

/// Starts the simulator.
pub async fn start(config: SimConfig) -> KubevirtSim {
    KubevirtSim::start(config).await.unwrap()
}

/// The most recent request the simulator saw.
pub fn last_request(sim: &KubevirtSim) -> RecordedRequest {
    sim.requests().pop().expect("the simulator saw a request")
}

/// Path and query of a recorded request, as they were on the wire.
pub fn path_and_query(request: &RecordedRequest) -> String {
    match &request.query {
        Some(query) => format!("{}?{query}", request.path),
        None => request.path.clone(),
    }
}

/// Reads the greeting, sends `payload` and expects it echoed: proof the WebSocket works both ways.
pub async fn exchange<T>(transport: &mut T, payload: &[u8])
where
    T: proxy_core::FrameTransport,
{
    match transport.next().await {
        Some(Ok(Frame::Binary(data))) => assert_eq!(&data[..], GREETING),
        other => panic!("expected the RFB greeting, got {other:?}"),
    }
    transport
        .send(Frame::Binary(payload.to_vec().into()))
        .await
        .unwrap();
    match transport.next().await {
        Some(Ok(Frame::Binary(data))) => assert_eq!(&data[..], payload),
        other => panic!("expected the echo, got {other:?}"),
    }
}

/// Writes the proxy's service-account token file.
pub fn write_token(dir: &Path, token: &str) -> PathBuf {
    test_support::write_file(dir, "token", token)
}
