//! The API server's refusals, as a real Kubernetes/KubeVirt API server words them, served by
//! wiremock: each must become the right `ConnectError` and `FailureClass`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::StatusCode;
use proxy_upstream::{ConnectError, Connector, FailureClass, KubeVirtConnector, UpstreamTarget};
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const VNC_PATH: &str =
    "/apis/subresources.kubevirt.io/v1alpha3/namespaces/lab-1/virtualmachineinstances/vm-a/vnc";
const LAB_VM: UpstreamTarget<'static> = UpstreamTarget {
    namespace: "lab-1",
    vmi_name: "vm-a",
};

fn status(code: u16, reason: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }))
}

/// Serves `response` for the VNC upgrade and returns the error the connector makes of it.
async fn refusal(response: ResponseTemplate) -> ConnectError {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(VNC_PATH))
        .and(header("upgrade", "websocket"))
        .and(header("sec-websocket-protocol", "plain.kubevirt.io"))
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    let connector = KubeVirtConnector::builder(server.uri()).build().unwrap();
    let error = connector.connect(LAB_VM).await.unwrap_err();
    server.verify().await;
    error
}

#[tokio::test]
async fn unauthorized_blames_the_service_account_token() {
    let error = refusal(status(401, "Unauthorized", "Unauthorized")).await;
    assert!(
        matches!(&error, ConnectError::Unauthorized { body } if body.as_str() == "Unauthorized"),
        "{error:?}"
    );
    assert_eq!(error.class(), FailureClass::BadGateway);
    assert!(
        error.to_string().contains("service-account token"),
        "{error}"
    );
}

#[tokio::test]
async fn forbidden_names_the_missing_rbac_permission() {
    let message = "virtualmachineinstances.subresources.kubevirt.io \"vm-a\" is forbidden: User \
                   \"system:serviceaccount:ws-proxy:ws-proxy\" cannot get resource \
                   \"virtualmachineinstances/vnc\" in API group \"subresources.kubevirt.io\" in the namespace \"lab-1\"";
    let error = refusal(status(403, "Forbidden", message)).await;
    assert!(
        matches!(&error, ConnectError::Forbidden { body } if body.as_str() == message),
        "{error:?}"
    );
    assert_eq!(error.class(), FailureClass::BadGateway);
    let text = error.to_string();
    assert!(
        text.contains("lacks `get` on `virtualmachineinstances/vnc`"),
        "{text}"
    );
    assert!(text.contains("cannot get resource"), "{text}");
}

#[tokio::test]
async fn not_found_is_vm_not_found() {
    let error = refusal(status(
        404,
        "NotFound",
        "virtualmachineinstance.kubevirt.io \"vm-a\" not found",
    ))
    .await;
    assert!(
        matches!(&error, ConnectError::VmNotFound { body } if body.as_str().ends_with("not found")),
        "{error:?}"
    );
    assert_eq!(error.class(), FailureClass::VmNotFound);
}

#[tokio::test]
async fn kubevirt_conflict_not_running_is_vm_not_running() {
    let error = refusal(status(
        409,
        "Conflict",
        "Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io \"vm-a\": VMI is not running",
    ))
    .await;
    match &error {
        ConnectError::VmNotRunning { status, body } => {
            assert_eq!(*status, StatusCode::CONFLICT);
            assert!(body.as_str().ends_with("VMI is not running"), "{body}");
        }
        other => panic!("expected VmNotRunning, got {other:?}"),
    }
    assert_eq!(error.class(), FailureClass::VmNotRunning);
}

#[tokio::test]
async fn older_kubevirt_bad_request_not_running_is_vm_not_running() {
    let error = refusal(status(
        400,
        "BadRequest",
        "Unable to connect to VirtualMachineInstance because phase is Scheduling instead of Running",
    ))
    .await;
    assert!(
        matches!(&error, ConnectError::VmNotRunning { status, .. } if *status == StatusCode::BAD_REQUEST),
        "{error:?}"
    );
    assert_eq!(error.class(), FailureClass::VmNotRunning);
}

#[tokio::test]
async fn server_error_is_a_bad_gateway_with_the_body_excerpt() {
    let error =
        refusal(ResponseTemplate::new(500).set_body_string("etcdserver: request timed out")).await;
    match &error {
        ConnectError::UpstreamStatus { status, body } => {
            assert_eq!(*status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(body.as_str(), "etcdserver: request timed out");
        }
        other => panic!("expected UpstreamStatus, got {other:?}"),
    }
    assert_eq!(error.class(), FailureClass::BadGateway);
    assert_eq!(
        error.to_string(),
        "the API server answered the WebSocket upgrade with 500 Internal Server Error: etcdserver: request timed out"
    );
}

#[tokio::test]
async fn a_plain_200_instead_of_an_upgrade_is_an_upstream_status() {
    let error =
        refusal(ResponseTemplate::new(200).set_body_string("<html>proxy login</html>")).await;
    assert!(
        matches!(&error, ConnectError::UpstreamStatus { status, .. } if *status == StatusCode::OK),
        "{error:?}"
    );
}
