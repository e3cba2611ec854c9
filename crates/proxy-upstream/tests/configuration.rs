//! What `KubeVirtConnectorBuilder::build` accepts and refuses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proxy_upstream::{
    BuildError, CredentialFileError, KubeVirtConnectorBuilder, RemoteUrlError, TemplateError,
    UpstreamTarget,
};
use proxy_wire::WireLimits;

const LAB_VM: UpstreamTarget<'static> = UpstreamTarget {
    namespace: "lab-1",
    vmi_name: "vm-a",
};

#[test]
fn local_dev_defaults_to_kubectl_proxy() {
    let connector = KubeVirtConnectorBuilder::local_dev().build().unwrap();
    assert_eq!(
        connector.request_uri(LAB_VM).unwrap(),
        "ws://localhost:8001/apis/subresources.kubevirt.io/v1alpha3/namespaces/lab-1/virtualmachineinstances/vm-a/vnc"
    );
}

#[test]
fn in_cluster_uses_the_service_address_and_the_pod_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let ca = dir.path().join("ca.crt");
    let pem = rcgen::generate_simple_self_signed(vec!["kubernetes".to_owned()]).unwrap();
    std::fs::write(&ca, pem.cert.pem()).unwrap();

    let connector = KubeVirtConnectorBuilder::in_cluster_at("fd00:10:96::1", "443")
        .unwrap()
        .ca_file(&ca)
        .bearer_token_file(&token)
        .preserve_session(true)
        .build()
        .unwrap();

    assert!(connector.is_tls());
    assert_eq!(
        connector.request_uri(LAB_VM).unwrap(),
        "wss://[fd00:10:96::1]:443/apis/subresources.kubevirt.io/v1alpha3/namespaces/lab-1/virtualmachineinstances/vm-a/vnc?preserveSession=true"
    );
    let debug = format!("{connector:?}");
    assert!(debug.contains("token_file"), "{debug}");
}

#[test]
fn in_cluster_without_the_pod_files_fails_at_build() {
    let error = KubeVirtConnectorBuilder::in_cluster_at("10.96.0.1", "443")
        .unwrap()
        .ca_file("/nonexistent/ca.crt")
        .build()
        .unwrap_err();
    assert!(
        matches!(
            error,
            BuildError::TokenFile(CredentialFileError::Read { .. })
        ),
        "{error:?}"
    );
    assert!(matches!(
        KubeVirtConnectorBuilder::in_cluster_at("10.96.0.1", "https"),
        Err(BuildError::InvalidServicePort)
    ));
}

#[test]
fn refuses_unsafe_or_meaningless_combinations() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();

    let no_ca = KubeVirtConnectorBuilder::new("wss://10.0.0.1:6443").build();
    assert!(matches!(no_ca, Err(BuildError::TlsWithoutCaFile)));

    let token_in_clear = KubeVirtConnectorBuilder::local_dev()
        .bearer_token_file(&token)
        .build();
    assert!(matches!(token_in_clear, Err(BuildError::TokenWithoutTls)));

    let unused_ca = KubeVirtConnectorBuilder::local_dev()
        .ca_file(&token)
        .build();
    assert!(matches!(unused_ca, Err(BuildError::CaFileWithoutTls)));

    let not_pem = KubeVirtConnectorBuilder::new("wss://10.0.0.1:6443")
        .ca_file(&token)
        .build();
    assert!(
        matches!(
            not_pem,
            Err(BuildError::CaFile(
                CredentialFileError::NoCertificates { .. }
            ))
        ),
        "{not_pem:?}"
    );
}

#[test]
fn refuses_bad_urls_templates_and_subprotocols() {
    let scheme = KubeVirtConnectorBuilder::new("tcp://localhost:8001").build();
    assert!(matches!(
        scheme,
        Err(BuildError::RemoteUrl(
            RemoteUrlError::UnsupportedScheme { .. }
        ))
    ));

    let template = KubeVirtConnectorBuilder::local_dev()
        .api_path("/apis/{namespace}/{vm}/vnc")
        .build();
    assert!(matches!(
        template,
        Err(BuildError::ApiPath(
            TemplateError::UnknownPlaceholder { .. }
        ))
    ));

    let subprotocol = KubeVirtConnectorBuilder::local_dev()
        .subprotocols(["plain.kubevirt.io", "bad protocol"])
        .build();
    assert!(matches!(
        subprotocol,
        Err(BuildError::InvalidSubprotocol { index: 1 })
    ));
}

#[test]
fn socket_settings_and_limits_are_accepted() {
    KubeVirtConnectorBuilder::local_dev()
        .limits(WireLimits::max_message(8 << 20))
        .tcp_keepalive(None)
        .tcp_nodelay(true)
        .build()
        .unwrap();
}
