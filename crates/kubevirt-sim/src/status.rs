//! Kubernetes `Status` bodies, shaped like the ones kube-apiserver and virt-api write.

use serde_json::{Value, json};

/// The HTTP answer to a refused request: status code and JSON body.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) code: u16,
    pub(crate) body: String,
}

fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Refusal {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let (Some(details), Some(object)) = (details, body.as_object_mut()) {
        object.insert("details".to_owned(), details);
    }
    Refusal {
        code,
        body: body.to_string(),
    }
}

/// kube-apiserver's answer to a missing or invalid bearer token.
pub(crate) fn unauthorized() -> Refusal {
    status(401, "Unauthorized", "Unauthorized", None)
}

/// kube-apiserver's answer when RBAC does not allow `get` on `virtualmachineinstances/vnc`.
pub(crate) fn forbidden(namespace: &str, vmi: &str) -> Refusal {
    let message = format!(
        "virtualmachineinstances.subresources.kubevirt.io \"{vmi}\" is forbidden: User \
         \"system:serviceaccount:kubevirt-sim:ws-proxy\" cannot get resource \
         \"virtualmachineinstances/vnc\" in API group \"subresources.kubevirt.io\" in the \
         namespace \"{namespace}\""
    );
    status(
        403,
        "Forbidden",
        &message,
        Some(
            json!({"name": vmi, "group": "subresources.kubevirt.io", "kind": "virtualmachineinstances"}),
        ),
    )
}

/// kube-apiserver's answer to a path it does not serve.
pub(crate) fn unknown_path() -> Refusal {
    status(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

/// virt-api's answer for a VMI that does not exist (`errors.NewNotFound`).
pub(crate) fn vmi_not_found(vmi: &str) -> Refusal {
    status(
        404,
        "NotFound",
        &format!("virtualmachineinstance.kubevirt.io \"{vmi}\" not found"),
        Some(json!({"name": vmi, "group": "kubevirt.io", "kind": "virtualmachineinstance"})),
    )
}

/// virt-api's answer for a VNC request to a VMI that is not running
/// (`validateVMIForVNC`: `errors.NewBadRequest("VMI is not running")`).
pub(crate) fn vmi_not_running() -> Refusal {
    status(400, "BadRequest", "VMI is not running", None)
}

/// virt-api's answer when it cannot reach the VM's VNC server (an internal error).
pub(crate) fn vnc_unreachable(vmi: &str, cause: &str) -> Refusal {
    let message = format!(
        "Internal error occurred: unable to connect to the VNC server of vmi {vmi}: {cause}"
    );
    status(
        500,
        "InternalError",
        &message,
        Some(json!({"causes": [{"message": cause}]})),
    )
}

/// The simulator's own answer when its session limit is reached.
pub(crate) fn at_capacity(limit: usize) -> Refusal {
    status(
        503,
        "ServiceUnavailable",
        &format!("kubevirt-sim is at its limit of {limit} open sessions"),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_body_matches_kubevirt() {
        let refusal = vmi_not_found("x");
        assert_eq!(refusal.code, 404);
        let body: Value = serde_json::from_str(&refusal.body).unwrap();
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["reason"], "NotFound");
        assert_eq!(body["code"], 404);
        assert_eq!(
            body["message"],
            "virtualmachineinstance.kubevirt.io \"x\" not found"
        );
        assert_eq!(body["details"]["group"], "kubevirt.io");
    }

    #[test]
    fn not_running_is_a_bad_request_like_virt_api() {
        let refusal = vmi_not_running();
        assert_eq!(refusal.code, 400);
        let body: Value = serde_json::from_str(&refusal.body).unwrap();
        assert_eq!(body["message"], "VMI is not running");
        assert_eq!(body["reason"], "BadRequest");
    }
}
