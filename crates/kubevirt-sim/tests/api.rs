//! The simulated API's HTTP side: TLS, bearer checks, KubeVirt's refusals, subprotocol and
//! request recording.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Dial, dial, refusal, try_dial};
use kubevirt_sim::{AuthorizationOutcome, KubevirtSim, SimConfig, VmBehavior};

const TOKEN: &str = "sa-token-1";

#[tokio::test]
async fn tls_with_the_right_bearer_upgrades_and_selects_plain_subprotocol() {
    let sim = KubevirtSim::start(
        SimConfig::new()
            .tls(true)
            .bearer_token(TOKEN)
            .vm("ubuntu", VmBehavior::Echo),
    )
    .await
    .unwrap();
    assert!(sim.base_url().starts_with("wss://127.0.0.1:"));
    assert!(
        sim.ca_pem()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let (_ws, selected) = try_dial(
        &sim,
        "lab-7",
        "ubuntu",
        Dial {
            token: Some(TOKEN),
            subprotocols: Some("binary.kubevirt.io, plain.kubevirt.io"),
            query: Some("preserveSession=true"),
            ..Dial::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(selected.as_deref(), Some("plain.kubevirt.io"));
    let requests = sim.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        request.path,
        "/apis/subresources.kubevirt.io/v1alpha3/namespaces/lab-7/virtualmachineinstances/ubuntu/vnc"
    );
    assert_eq!(request.query.as_deref(), Some("preserveSession=true"));
    assert!(request.preserve_session);
    assert_eq!(request.namespace.as_deref(), Some("lab-7"));
    assert_eq!(request.vmi.as_deref(), Some("ubuntu"));
    assert_eq!(request.api_version.as_deref(), Some("v1alpha3"));
    assert_eq!(request.authorization, AuthorizationOutcome::Matched);
    assert_eq!(
        request.offered_subprotocols,
        ["binary.kubevirt.io", "plain.kubevirt.io"]
    );
    assert_eq!(request.status, 101);
    assert!(request.tls);
}

#[tokio::test]
async fn missing_or_wrong_bearer_is_unauthorized() {
    let sim = KubevirtSim::start(
        SimConfig::new()
            .tls(true)
            .bearer_token(TOKEN)
            .vm("ubuntu", VmBehavior::Echo),
    )
    .await
    .unwrap();
    let (code, body) = refusal(&sim, "ns", "ubuntu", Dial::default()).await;
    assert_eq!(code, 401);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    let (code, _) = refusal(
        &sim,
        "ns",
        "ubuntu",
        Dial {
            token: Some("sa-token-2"),
            ..Dial::default()
        },
    )
    .await;
    assert_eq!(code, 401);
    let outcomes: Vec<_> = sim.requests().iter().map(|r| r.authorization).collect();
    assert_eq!(
        outcomes,
        [
            AuthorizationOutcome::Missing,
            AuthorizationOutcome::Mismatched
        ]
    );
    assert!(sim.requests().iter().all(|r| r.status == 401));
    let recorded = format!("{:?}", sim.requests());
    assert!(
        !recorded.contains("sa-token-2"),
        "tokens are never recorded"
    );
}

#[tokio::test]
async fn token_file_is_reread_so_rotation_takes_effect() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "first-token\n").unwrap();
    let sim = KubevirtSim::start(
        SimConfig::new()
            .tls(true)
            .bearer_token_file(&token_file)
            .vm("ubuntu", VmBehavior::Echo),
    )
    .await
    .unwrap();
    let with = |token| Dial {
        token: Some(token),
        ..Dial::default()
    };
    try_dial(&sim, "ns", "ubuntu", with("first-token"))
        .await
        .unwrap();
    std::fs::write(&token_file, "second-token").unwrap();
    assert_eq!(
        refusal(&sim, "ns", "ubuntu", with("first-token")).await.0,
        401
    );
    try_dial(&sim, "ns", "ubuntu", with("second-token"))
        .await
        .unwrap();
}

#[tokio::test]
async fn ca_pem_is_written_for_clients_that_read_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let sim = KubevirtSim::start(SimConfig::new().tls(true))
        .await
        .unwrap();
    let path = dir.path().join("ca.crt");
    sim.write_ca_pem(&path).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        sim.ca_pem().unwrap()
    );
    let plain = KubevirtSim::start(SimConfig::new()).await.unwrap();
    assert!(matches!(
        plain.write_ca_pem(&path),
        Err(kubevirt_sim::SimError::NoTls)
    ));
}

#[tokio::test]
async fn unknown_vm_is_not_found_like_kubevirt() {
    let sim = KubevirtSim::start(SimConfig::new().vm("ubuntu", VmBehavior::Echo))
        .await
        .unwrap();
    let (code, body) = refusal(&sim, "ns", "x", Dial::default()).await;
    assert_eq!(code, 404);
    assert_eq!(body["reason"], "NotFound");
    assert_eq!(
        body["message"],
        "virtualmachineinstance.kubevirt.io \"x\" not found"
    );
    assert_eq!(body["details"]["name"], "x");
}

#[tokio::test]
async fn namespaced_vm_is_only_found_in_its_namespace() {
    let sim =
        KubevirtSim::start(SimConfig::new().vm_in_namespace("lab-1", "ubuntu", VmBehavior::Echo))
            .await
            .unwrap();
    dial(&sim, "lab-1", "ubuntu", Dial::default()).await;
    assert_eq!(
        refusal(&sim, "lab-2", "ubuntu", Dial::default()).await.0,
        404
    );
}

#[tokio::test]
async fn stopped_vm_answers_like_virt_api() {
    let sim = KubevirtSim::start(
        SimConfig::new()
            .vm("stopped", VmBehavior::NotRunning)
            .vm("secret", VmBehavior::Forbidden),
    )
    .await
    .unwrap();
    let (code, body) = refusal(&sim, "ns", "stopped", Dial::default()).await;
    assert_eq!(code, 400);
    assert_eq!(body["reason"], "BadRequest");
    assert!(body["message"].as_str().unwrap().contains("not running"));
    let (code, body) = refusal(&sim, "ns", "secret", Dial::default()).await;
    assert_eq!(code, 403);
    assert_eq!(body["reason"], "Forbidden");
    assert_eq!(sim.open_sessions(), 0);
}

#[tokio::test]
async fn v1_path_is_served_and_other_paths_are_not_found() {
    let sim = KubevirtSim::start(SimConfig::new().vm("ubuntu", VmBehavior::Echo))
        .await
        .unwrap();
    let (_ws, selected) = try_dial(
        &sim,
        "ns",
        "ubuntu",
        Dial {
            api_version: Some("v1"),
            ..Dial::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(selected, None, "no subprotocol offered, none selected");
    let (code, body) = refusal(
        &sim,
        "ns",
        "ubuntu",
        Dial {
            raw_path: Some("/apis/subresources.kubevirt.io/v1/namespaces/ns/virtualmachineinstances/ubuntu/console"),
            ..Dial::default()
        },
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(
        body["message"],
        "the server could not find the requested resource"
    );
    let (code, _) = refusal(
        &sim,
        "ns",
        "ubuntu",
        Dial {
            api_version: Some("v2"),
            ..Dial::default()
        },
    )
    .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn session_limit_answers_service_unavailable() {
    let sim = KubevirtSim::start(
        SimConfig::new()
            .max_sessions(1)
            .vm("ubuntu", VmBehavior::Sink),
    )
    .await
    .unwrap();
    let first = dial(&sim, "ns", "ubuntu", Dial::default()).await;
    assert_eq!(refusal(&sim, "ns", "ubuntu", Dial::default()).await.0, 503);
    drop(first);
    assert!(sim.wait_for_no_open_sessions(common::STEP).await);
    dial(&sim, "ns", "ubuntu", Dial::default()).await;
}
