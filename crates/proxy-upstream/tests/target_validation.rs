//! Property tests: no namespace or VMI name outside DNS-1123 is ever dialled, and valid ones
//! produce exactly the expected path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use proptest::prelude::*;
use proxy_upstream::{ConnectError, Connector, KubeVirtConnectorBuilder, UpstreamTarget};

/// An independent statement of the Kubernetes rules, written differently from the crate's.
fn is_dns1123_label(name: &str) -> bool {
    let chars: Vec<char> = name.chars().collect();
    (1..=63).contains(&chars.len())
        && chars
            .iter()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'))
        && chars.first() != Some(&'-')
        && chars.last() != Some(&'-')
}

fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'))
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Names that are mostly near-misses: the allowed alphabet plus the characters that matter.
fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9.\\-]{0,12}",
        "[a-zA-Z0-9.\\-_/?#%{}: ]{0,12}",
        "[a-z0-9]{1,3}(\\.\\.?[a-z0-9\\-]{1,3}){0,3}",
        any::<String>(),
        "[a-z]{60,70}",
        "[a-z]([a-z0-9\\-.]{250,256})[a-z]",
    ]
}

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9\\-]{0,61}[a-z0-9])?"
}

fn subdomain() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..4).prop_map(|labels| labels.join("."))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The connector points at a port nobody listens on: an attempted dial would end in
    /// `Refused`, so `InvalidName` proves nothing was dialled.
    #[test]
    fn names_outside_dns1123_are_never_dialled(namespace in name_like(), vmi_name in name_like()) {
        let connector = KubeVirtConnectorBuilder::local_dev()
            .remote_url("ws://127.0.0.1:1")
            .build()
            .unwrap();
        let target = UpstreamTarget { namespace: &namespace, vmi_name: &vmi_name };
        let valid = is_dns1123_label(&namespace) && is_dns1123_subdomain(&vmi_name);
        let uri = connector.request_uri(target);
        prop_assert_eq!(uri.is_ok(), valid);
        if !valid {
            let error = runtime().block_on(connector.connect(target)).unwrap_err();
            prop_assert!(matches!(error, ConnectError::InvalidName(_)), "{:?}", error);
        }
    }

    #[test]
    fn valid_names_give_exactly_the_expected_path(
        namespace in label(),
        vmi_name in subdomain().prop_filter("at most 253 bytes", |n| n.len() <= 253),
        preserve in any::<bool>(),
    ) {
        let connector = KubeVirtConnectorBuilder::local_dev()
            .remote_url("ws://[::1]:8001/prefix/")
            .preserve_session(preserve)
            .build()
            .unwrap();
        let uri = connector.request_uri(UpstreamTarget { namespace: &namespace, vmi_name: &vmi_name }).unwrap();
        let query = if preserve { "?preserveSession=true" } else { "" };
        prop_assert_eq!(
            uri,
            format!(
                "ws://[::1]:8001/prefix/apis/subresources.kubevirt.io/v1alpha3/namespaces/{namespace}/virtualmachineinstances/{vmi_name}/vnc{query}"
            )
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// What actually goes on the wire for valid names is that path, byte for byte.
    #[test]
    fn valid_names_are_dialled_with_exactly_that_path(
        namespace in label(),
        vmi_name in subdomain().prop_filter("at most 253 bytes", |n| n.len() <= 253),
    ) {
        let seen = runtime().block_on(async {
            let expected = format!(
                "/apis/subresources.kubevirt.io/v1alpha3/namespaces/{namespace}/virtualmachineinstances/{vmi_name}/vnc"
            );
            let sim = support::start(support::SimConfig::new().vm_in_namespace(
                namespace.as_str(),
                vmi_name.as_str(),
                support::VmBehavior::Echo,
            ))
            .await;
            let connector = KubeVirtConnectorBuilder::local_dev()
                .remote_url(sim.base_url())
                .build()
                .unwrap();
            let target = UpstreamTarget { namespace: &namespace, vmi_name: &vmi_name };
            connector.connect(target).await.unwrap();
            let seen = support::last_request(&sim);
            assert_eq!(seen.path, expected);
            support::path_and_query(&seen)
        });
        prop_assert_eq!(
            seen,
            format!("/apis/subresources.kubevirt.io/v1alpha3/namespaces/{namespace}/virtualmachineinstances/{vmi_name}/vnc")
        );
    }
}
