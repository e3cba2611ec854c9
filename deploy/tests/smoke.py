#!/usr/bin/env python3
"""Runs the ws-proxy image the way the rendered Deployment runs it in a pod, and checks it.

The container gets the Deployment's environment, its Secret volumes (files with the volume's
mode and the pod's fsGroup, as the kubelet writes them), the service-account directory at
/var/run/secrets/kubernetes.io/serviceaccount/ (ca.crt, token, namespace), the
KUBERNETES_SERVICE_HOST/PORT the kubelet sets, and the pod's security context (user, read-only
root filesystem, no capabilities, no privilege escalation). The "API server" is kubevirt-sim
over TLS with its own CA, expecting the mounted token.

Then: /healthz and /readyz answer 200, /metrics parses as Prometheus text, one console session
(token minted by PyJWT in the subprotocol, RFB greeting and handshake) goes through, and SIGTERM
drains (readiness fails, the open console gets 1001 after the drain timeout) and the container
exits 0. Every step is bounded; the container and the simulator are removed at the end.
"""

import argparse
import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import yaml
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
NAMESPACE = "lab-smoke"
VMI = "ubuntu"
SIGNING_KEY = "smoke-test-signing-key-of-the-lab-platform"
DRAIN_TIMEOUT_SECONDS = 4
CONTAINER = "ws-proxy-smoke"


def fail(message):
    print(f"smoke: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)
    print(f"smoke: ok: {message}")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def deployment_of(rendered):
    for document in yaml.safe_load_all(Path(rendered).read_text()):
        if document and document.get("kind") == "Deployment":
            return document
    fail(f"no Deployment in {rendered}")


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_until(what, condition, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.2)
    fail(f"{what} within {seconds} s")


def write_secret_file(directory, name, contents, mode, group):
    path = directory / name
    path.write_text(contents)
    os.chown(path, 0, group)
    os.chmod(path, mode)


def start_simulator(simulator, service_account, group):
    token = base64.urlsafe_b64encode(os.urandom(24)).decode()
    write_secret_file(service_account, "token", token, 0o640, group)
    write_secret_file(service_account, "namespace", "ws-proxy", 0o644, group)
    process = subprocess.Popen(
        [
            simulator,
            "--listen",
            "127.0.0.1:0",
            "--tls-ca-out",
            str(service_account / "ca.crt"),
            "--token-file",
            str(service_account / "token"),
            "--vm",
            f"{NAMESPACE}/{VMI}=rfb",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    match = re.match(r"listening (\S+):(\d+)", line)
    if not match:
        process.kill()
        fail(f"kubevirt-sim did not start: {line!r}")
    os.chmod(service_account / "ca.crt", 0o644)
    return process, match.group(2), token


def podman_arguments(deployment, image, ports, secrets_root, service_account, api_port):
    """The `podman run` arguments that give the container what the pod spec gives it."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pod_security = pod.get("securityContext", {})
    security = container.get("securityContext", {})
    group = pod_security.get("fsGroup", 0)
    arguments = [
        "--name",
        CONTAINER,
        "--network",
        "host",
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=4096:4096",
        "--env",
        "KUBERNETES_SERVICE_HOST=127.0.0.1",
        "--env",
        f"KUBERNETES_SERVICE_PORT={api_port}",
        "--volume",
        f"{service_account}:{SERVICE_ACCOUNT_DIR}:ro",
    ]
    if "runAsUser" in pod_security:
        arguments += ["--user", f"{pod_security['runAsUser']}:{pod_security.get('runAsGroup', 0)}"]
    if group:
        arguments += ["--group-add", str(group)]
    if security.get("readOnlyRootFilesystem"):
        # Kubernetes gives a read-only root no writable /tmp either.
        arguments += ["--read-only", "--read-only-tmpfs=false"]
    if security.get("allowPrivilegeEscalation") is False:
        arguments += ["--security-opt", "no-new-privileges"]
    if "ALL" in security.get("capabilities", {}).get("drop", []):
        arguments += ["--cap-drop", "ALL"]
    overrides = {
        "PORT": str(ports["console"]),
        "WS_PROXY_ADMIN_ADDR": f"0.0.0.0:{ports['admin']}",
        # The drain is the rendered one's contract on a shorter clock.
        "WS_PROXY_DRAIN_TIMEOUT": f"{DRAIN_TIMEOUT_SECONDS}s",
    }
    for variable in container.get("env", []):
        if "value" not in variable:
            fail(f"env {variable['name']} is not a plain value; teach the smoke test about it")
        value = overrides.get(variable["name"], variable["value"])
        arguments += ["--env", f"{variable['name']}={value}"]
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        directory = secrets_root / mount["name"]
        directory.mkdir()
        if "secret" in volume:
            os.chmod(directory, 0o755)
            mode = volume["secret"].get("defaultMode", 0o644)
            write_secret_file(directory, "secret-key", SIGNING_KEY, mode, group)
            arguments += ["--volume", f"{directory}:{mount['mountPath']}:ro"]
        elif "persistentVolumeClaim" in volume or "emptyDir" in volume:
            # What the kubelet gives a pod with an fsGroup: the group owns it, setgid, writable.
            os.chown(directory, 0, group)
            os.chmod(directory, 0o2775)
            arguments += ["--volume", f"{directory}:{mount['mountPath']}"]
        else:
            fail(f"volume {mount['name']} is neither a Secret nor a claim; teach the smoke test about it")
    return arguments + [image]


def probe_port(container, probe, ports):
    """The host port for a probe's container port (the container listens on the host network
    on the smoke test's free ports instead of the rendered ones)."""
    env = {variable["name"]: variable.get("value", "") for variable in container.get("env", [])}
    host_port_of = {int(env.get("PORT", "5001")): ports["console"]}
    if "WS_PROXY_ADMIN_ADDR" in env:
        host_port_of[int(env["WS_PROXY_ADMIN_ADDR"].rsplit(":", 1)[1])] = ports["admin"]
    port = probe["httpGet"]["port"]
    if not isinstance(port, int):
        names = {entry["name"]: entry["containerPort"] for entry in container["ports"]}
        port = names[port]
    return host_port_of[port]


def console_token(record):
    claims = {
        "id": 7,
        "lab_instance": {
            "lab_id": 3,
            "lab_instance_id": 11,
            "namespace_name": NAMESPACE,
            "allowed_vmi_names": [VMI],
            "additional_data": None,
        },
        "exp": int(time.time()) + 600,
    }
    if record:
        claims["console"] = {"record": True}
    return jwt.encode(claims, SIGNING_KEY, algorithm="HS256")


def bearer_subprotocol(token):
    encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    return f"base64url.bearer.authorization.k8s.io.{encoded}"


async def refused_origin(url, token):
    """What a browser on another site gets: with an Origin header the refusal comes as a close
    frame (4000 + status, the Python original's way), which pages can read."""
    async with connect(
        url,
        subprotocols=[bearer_subprotocol(token), "binary"],
        origin="https://evil.example.net",
        open_timeout=15,
    ) as console:
        try:
            await asyncio.wait_for(console.recv(), 15)
            return "data"
        except ConnectionClosed as closed:
            return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else None


async def console_then_drain(console_port, prefix, origins, readiness_url, token):
    """Opens a console, checks the RFB handshake, then stops the container under it."""
    url = f"ws://127.0.0.1:{console_port}{prefix}/{VMI}"
    if origins:
        refusal = await refused_origin(url, token)
        check(
            refusal is not None and refusal[0] == 4403 and "origin" in refusal[1],
            f"a page from another origin is refused with 4403 (got {refusal})",
        )
    async with connect(
        url, subprotocols=[bearer_subprotocol(token), "binary"], open_timeout=15
    ) as console:
        check(console.subprotocol == "binary", "the 101 chose `binary` and not the token entry")
        greeting = await asyncio.wait_for(console.recv(), 15)
        check(greeting == b"RFB 003.008\n", "the console sends the RFB greeting")
        await console.send(b"RFB 003.008\n")
        security = await asyncio.wait_for(console.recv(), 15)
        check(len(security) >= 2 and security[0] == len(security) - 1, "RFB security types relayed")
        status, metrics = await asyncio.to_thread(http_get, readiness_url.replace("/readyz", "/metrics"))
        check("ws_proxy_active_sessions 1" in metrics, "the metrics count the open console")

        started = time.monotonic()
        subprocess.run(["podman", "kill", "--signal", "TERM", CONTAINER], check=True, capture_output=True)
        await asyncio.to_thread(
            wait_until,
            "readiness fails after SIGTERM",
            lambda: probe_fails(readiness_url),
            10,
        )
        print("smoke: ok: readiness fails after SIGTERM")
        try:
            await asyncio.wait_for(console.recv(), DRAIN_TIMEOUT_SECONDS + 15)
            fail("the console got data instead of a close")
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            check(code == 1001, f"the open console is closed with 1001 after the drain (got {code})")
        return time.monotonic() - started


def probe_fails(url):
    try:
        status, _ = http_get(url)
        return status != 200
    except OSError:
        return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--rendered", required=True, help="kustomize output with the Deployment")
    parser.add_argument("--simulator", required=True, help="the kubevirt-sim binary")
    arguments = parser.parse_args()

    deployment = deployment_of(arguments.rendered)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    group = pod.get("securityContext", {}).get("fsGroup", 0)
    ports = {"console": free_port(), "admin": free_port()}
    grace = pod["terminationGracePeriodSeconds"]

    with tempfile.TemporaryDirectory(prefix="ws-proxy-smoke-") as scratch:
        scratch = Path(scratch)
        os.chmod(scratch, 0o755)
        service_account = scratch / "serviceaccount"
        service_account.mkdir()
        os.chmod(service_account, 0o755)
        secrets_root = scratch / "secrets"
        secrets_root.mkdir()
        os.chmod(secrets_root, 0o755)
        simulator, api_port, api_token = start_simulator(arguments.simulator, service_account, group)
        subprocess.run(["podman", "rm", "--force", CONTAINER], capture_output=True)
        run = ["podman", "--runtime", "runc", "run", "--detach"] + podman_arguments(
            deployment, arguments.image, ports, secrets_root, service_account, api_port
        )
        env_of = {variable["name"]: variable.get("value", "") for variable in container.get("env", [])}
        records = "WS_PROXY_RECORD_DIR" in env_of
        token = console_token(records)
        try:
            subprocess.run(run, check=True, capture_output=True, text=True)
            readiness = container["readinessProbe"]
            liveness = container["livenessProbe"]
            readiness_url = f"http://127.0.0.1:{probe_port(container, readiness, ports)}{readiness['httpGet']['path']}"
            liveness_url = f"http://127.0.0.1:{probe_port(container, liveness, ports)}{liveness['httpGet']['path']}"
            wait_until("the readiness probe passes", lambda: http_get(readiness_url)[0] == 200)
            check(True, f"readiness probe {readiness['httpGet']['path']} answers 200")
            check(http_get(liveness_url)[0] == 200, f"liveness probe {liveness['httpGet']['path']} answers 200")
            status, metrics = http_get(readiness_url.replace("/readyz", "/metrics"))
            families = {family.name for family in text_string_to_metric_families(metrics)}
            check(status == 200 and "ws_proxy_active_sessions" in families, "/metrics parses as Prometheus text")

            env = {variable["name"]: variable.get("value", "") for variable in container.get("env", [])}
            prefix = "/" + env.get("HOST_PATH_PREFIX", "").strip("/") if env.get("HOST_PATH_PREFIX", "").strip("/") else ""
            took = asyncio.run(
                console_then_drain(
                    ports["console"], prefix, env.get("WS_PROXY_ALLOWED_ORIGINS"), readiness_url, token
                )
            )
            exit_code = subprocess.run(
                ["podman", "wait", CONTAINER], check=True, capture_output=True, text=True, timeout=30
            ).stdout.strip()
            took = max(took, 0.0)
            check(exit_code == "0", f"the container exits 0 after SIGTERM (took {took:.1f} s, drain {DRAIN_TIMEOUT_SECONDS} s)")
            check(took < grace, f"the drain ends inside terminationGracePeriodSeconds ({grace} s)")

            if records:
                mount = next(
                    m for m in container["volumeMounts"] if m["mountPath"] == env_of["WS_PROXY_RECORD_DIR"]
                )
                files = list((secrets_root / mount["name"]).iterdir())
                check(
                    len(files) == 1 and files[0].read_text("latin1").startswith("var VNC_frame_data = [")
                    and files[0].read_text("latin1").endswith("'EOF'];\n"),
                    f"the session was recorded to the volume ({[f.name for f in files]})",
                )
                check(token not in files[0].read_text("latin1") and token not in files[0].name, "no token in the recording")
            logs = subprocess.run(["podman", "logs", CONTAINER], capture_output=True, text=True).stderr
            lines = [line for line in logs.splitlines() if line.strip()]
            check(all(json.loads(line) for line in lines), f"all {len(lines)} log lines are JSON objects")
            check(
                not any(secret in logs for secret in (token, SIGNING_KEY, api_token)),
                "no token, signing key or service-account token in the log",
            )
            check(any("session started" in line for line in lines), "the log has the session")
        except subprocess.CalledProcessError as error:
            fail(f"{' '.join(error.cmd[:4])}... failed: {error.stderr}")
        finally:
            logs = subprocess.run(["podman", "logs", CONTAINER], capture_output=True, text=True)
            Path("target/deploy").mkdir(parents=True, exist_ok=True)
            Path("target/deploy/smoke-container.log").write_text(logs.stdout + logs.stderr)
            subprocess.run(["podman", "rm", "--force", CONTAINER], capture_output=True)
            simulator.terminate()
            simulator.wait(timeout=10)


if __name__ == "__main__":
    main()
