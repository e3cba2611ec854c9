//! Console paths with and without a prefix and path tokens: parsing never panics, and a VM
//! name only reaches an upstream URL when it is a valid Kubernetes name (the parser decodes
//! percent-escapes, so the check belongs to the upstream side, and it must hold for anything the
//! parser gives).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use proxy_server::proxy_upstream::{KubeVirtConnector, UpstreamTarget};
use proxy_server::{KubeVirtConnectorBuilder, PathPrefix, parse_console_target};

fn connector() -> &'static KubeVirtConnector {
    static CONNECTOR: OnceLock<KubeVirtConnector> = OnceLock::new();
    CONNECTOR.get_or_init(|| KubeVirtConnectorBuilder::local_dev().build().unwrap())
}

fuzz_target!(|input: (&str, bool, bool)| {
    let (target, with_prefix, path_tokens) = input;
    let prefix = if with_prefix {
        PathPrefix::new("/labs/console")
    } else {
        PathPrefix::none()
    };
    let Ok(parsed) = parse_console_target(target, &prefix, path_tokens) else {
        return;
    };
    assert!(path_tokens || parsed.token.is_none());
    let upstream = UpstreamTarget {
        namespace: "lab-1",
        vmi_name: &parsed.vmi_name,
    };
    if let Ok(uri) = connector().request_uri(upstream) {
        assert!(
            proxy_auth::is_dns1123_subdomain(&parsed.vmi_name),
            "{target:?} reached {uri}"
        );
        assert!(
            uri.ends_with(&format!("/virtualmachineinstances/{}/vnc", parsed.vmi_name)),
            "{uri}"
        );
    }
});
