#!/usr/bin/env python3
"""Checks rendered ws-proxy manifests for what the Kubernetes schemas cannot see.

kubernetes-validate checks each object against the API schema; this checks that the objects fit
together and keep the deployment's promises: the Deployment's environment is what the binary
reads (its `--help` lists every variable), RBAC is exactly `get` on
`virtualmachineinstances/vnc`, no Secret (no key) is in a manifest, selectors and named ports
resolve, the rollout never drops capacity, the grace period covers the drain, and the pod runs
non-root with a read-only root filesystem and no capabilities.

Usage: check_manifests.py --binary target/release/ws-proxy RENDERED.yaml...
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path

import yaml

EXPECTED_RULES = [
    {
        "apiGroups": ["subresources.kubevirt.io"],
        "resources": ["virtualmachineinstances/vnc"],
        "verbs": ["get"],
    }
]
# Set by the kubelet for every pod, read by the binary in cluster mode.
KUBELET_ENV = {"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"}
DEFAULT_DRAIN_SECONDS = 25
DEFAULT_KEEPALIVE_SECONDS = 20

problems = []


def problem(where, message):
    problems.append(f"{where}: {message}")


def binary_env(binary):
    help_text = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
    names = set(re.findall(r"\[env: ([A-Z0-9_]+)", help_text))
    if "SECRET_KEY" not in names:
        sys.exit(f"cannot read the environment variables from {binary} --help")
    return names


def seconds(text):
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(text).strip())
    if not match:
        return None
    value, unit = int(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def selects(selector, labels):
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def check_file(path, env_names):
    where = path.name
    objects = [document for document in yaml.safe_load_all(path.read_text()) if document]
    by_kind = {}
    for document in objects:
        by_kind.setdefault(document["kind"], []).append(document)

    if "Secret" in by_kind:
        problem(where, "a Secret is in the manifests: the signing key must never be")
    roles = by_kind.get("ClusterRole", []) + by_kind.get("Role", [])
    if len(roles) != 1 or roles[0].get("rules") != EXPECTED_RULES:
        problem(where, f"RBAC must be exactly {EXPECTED_RULES}, got {[r.get('rules') for r in roles]}")

    (deployment,) = by_kind.get("Deployment", [None])
    if deployment is None:
        problem(where, "no Deployment")
        return
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    namespace = deployment["metadata"].get("namespace")
    (container,) = pod["containers"]
    env = {variable["name"]: variable.get("value") for variable in container.get("env", [])}
    container_ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}

    unknown = set(env) - env_names - KUBELET_ENV
    if unknown:
        problem(where, f"the Deployment sets variables the binary does not read: {sorted(unknown)}")
    if "SECRET_KEY" in env:
        problem(where, "SECRET_KEY in a manifest: mount the Secret and set SECRET_KEY_FILE")
    if not selects(spec["selector"]["matchLabels"], pod_labels):
        problem(where, "the Deployment's selector does not select its own pods")
    if spec.get("replicas", 1) < 2:
        problem(where, "fewer than 2 replicas")
    rolling = spec.get("strategy", {}).get("rollingUpdate", {})
    if spec.get("strategy", {}).get("type") != "RollingUpdate" or rolling.get("maxUnavailable") != 0:
        problem(where, "the rollout must be RollingUpdate with maxUnavailable 0")

    for probe_name, path_wanted in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        probe = container.get(probe_name, {}).get("httpGet", {})
        if probe.get("path") != path_wanted:
            problem(where, f"{probe_name} must GET {path_wanted}")
        port = probe.get("port")
        if isinstance(port, str) and port not in container_ports:
            problem(where, f"{probe_name} names port {port!r}, which the container does not declare")
        admin = env.get("WS_PROXY_ADMIN_ADDR")
        served_on = int(admin.rsplit(":", 1)[1]) if admin else int(env.get("PORT", 5001))
        if container_ports.get(port, port) != served_on:
            problem(where, f"{probe_name} probes port {port}, but the health endpoints are on {served_on}")

    drain = seconds(env.get("WS_PROXY_DRAIN_TIMEOUT", DEFAULT_DRAIN_SECONDS))
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if drain is None or grace <= drain + pre_stop:
        problem(where, f"terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop} s + drain {drain} s")

    pod_security = pod.get("securityContext", {})
    security = container.get("securityContext", {})
    if not pod_security.get("runAsNonRoot") or not pod_security.get("runAsUser"):
        problem(where, "the pod must run as a numeric non-root user")
    if pod_security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problem(where, "seccomp must be RuntimeDefault")
    if not security.get("readOnlyRootFilesystem"):
        problem(where, "the root filesystem must be read-only")
    if security.get("allowPrivilegeEscalation") is not False:
        problem(where, "privilege escalation must be off")
    if security.get("capabilities", {}).get("drop") != ["ALL"]:
        problem(where, "all capabilities must be dropped")
    resources = container.get("resources", {})
    if not resources.get("requests", {}).get("cpu") or not resources.get("limits", {}).get("memory"):
        problem(where, "CPU request (for the HPA) and memory limit required")
    if not pod.get("topologySpreadConstraints"):
        problem(where, "no topology spread")
    image = container["image"]
    if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
        problem(where, f"the image {image!r} must carry a version tag")

    secret_volumes = [v for v in pod.get("volumes", []) if "secret" in v]
    for volume in secret_volumes:
        mode = volume["secret"].get("defaultMode", 0o644)
        if mode & 0o044 == 0o040 and not pod_security.get("fsGroup"):
            problem(where, f"volume {volume['name']} is group-readable only, but the pod has no fsGroup")

    (account,) = [a for a in by_kind.get("ServiceAccount", []) if a["metadata"]["name"] == pod.get("serviceAccountName")] or [None]
    if account is None:
        problem(where, f"the ServiceAccount {pod.get('serviceAccountName')!r} is not in the manifests")
    bindings = by_kind.get("ClusterRoleBinding", []) + by_kind.get("RoleBinding", [])
    bound = any(
        subject.get("kind") == "ServiceAccount"
        and subject.get("name") == pod.get("serviceAccountName")
        and subject.get("namespace") == namespace
        and binding["roleRef"]["name"] == roles[0]["metadata"]["name"]
        for binding in bindings
        for subject in binding.get("subjects", [])
        if roles
    )
    if not bound:
        problem(where, "the role is not bound to the Deployment's ServiceAccount in its namespace")

    services = by_kind.get("Service", [])
    for service in services:
        name = service["metadata"]["name"]
        if not selects(service["spec"].get("selector", {}), pod_labels):
            problem(where, f"Service {name} does not select the proxy's pods")
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if isinstance(target, str) and target not in container_ports:
                problem(where, f"Service {name} targets port {target!r}, which the container does not declare")
    for kind in ("PodDisruptionBudget",):
        for item in by_kind.get(kind, []):
            if not selects(item["spec"].get("selector", {}).get("matchLabels", {}), pod_labels):
                problem(where, f"{kind} {item['metadata']['name']} does not select the proxy's pods")
    for policy in by_kind.get("NetworkPolicy", []):
        if not selects(policy["spec"]["podSelector"].get("matchLabels", {}), pod_labels):
            problem(where, "the NetworkPolicy does not select the proxy's pods")
        allowed = {port["port"] for rule in policy["spec"].get("ingress", []) for port in rule.get("ports", [])}
        wanted = {"console"} | ({"admin"} if "admin" in container_ports else set())
        if allowed != wanted:
            problem(where, f"the NetworkPolicy lets in {sorted(allowed)}, expected {sorted(wanted)}")
    for autoscaler in by_kind.get("HorizontalPodAutoscaler", []):
        target = autoscaler["spec"]["scaleTargetRef"]
        if (target["kind"], target["name"]) != ("Deployment", deployment["metadata"]["name"]):
            problem(where, "the HorizontalPodAutoscaler does not scale the Deployment")
        if autoscaler["spec"].get("minReplicas", 1) < 2:
            problem(where, "the HorizontalPodAutoscaler may scale below 2 replicas")
    for monitor in by_kind.get("ServiceMonitor", []):
        selector = monitor["spec"]["selector"]["matchLabels"]
        ports = {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]}
        matched = [
            s for s in services
            if selects(selector, s["metadata"].get("labels", {}))
            and ports <= {p.get("name") for p in s["spec"]["ports"]}
        ]
        if not matched:
            problem(where, "the ServiceMonitor selects no Service with its port")
    for ingress in by_kind.get("Ingress", []):
        timeout = ingress["metadata"].get("annotations", {}).get("nginx.ingress.kubernetes.io/proxy-read-timeout")
        keepalive = seconds(env.get("WS_PROXY_KEEPALIVE_INTERVAL", DEFAULT_KEEPALIVE_SECONDS))
        if timeout is None or int(timeout) <= keepalive:
            problem(where, f"the Ingress read timeout ({timeout}) must be longer than the keepalive ({keepalive} s)")
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service = [s for s in services if s["metadata"]["name"] == backend["name"]]
                if not service:
                    problem(where, f"the Ingress routes to a missing Service {backend['name']}")
                prefix = env.get("HOST_PATH_PREFIX", "")
                if prefix.strip("/") != path["path"].strip("/"):
                    problem(where, f"the Ingress path {path['path']} is not HOST_PATH_PREFIX {prefix!r}")
    print(f"check_manifests: {where}: {len(objects)} objects fit together")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("rendered", nargs="+", type=Path)
    arguments = parser.parse_args()
    env_names = binary_env(arguments.binary)
    for path in arguments.rendered:
        check_file(path, env_names)
    if problems:
        print("\n".join(f"check_manifests: {line}" for line in problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
