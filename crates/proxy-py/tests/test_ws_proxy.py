"""The ws_proxy wheel: the original's API on the Rust engine, against kubevirt-sim.

Needs KUBEVIRT_SIM_BIN and WS_PROXY_BIN (python/test.sh sets them) and the wheel installed.
"""

import base64
import gc
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

import ws_proxy
from ws_proxy import WebsocketProxy, auth

API_PATH = "/apis/subresources.kubevirt.io/v1alpha3/namespaces/{namespace}/virtualmachineinstances/{vmi_name}/vnc"
NAMESPACE = "lab-1-9"
SECRET = "python-test-secret-of-the-lab-platform"
FIXTURES = Path(__file__).resolve().parents[2] / "proxy-server" / "tests" / "fixtures" / "tokens.json"
GREETING = b"RFB 003.008\n"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port} after {seconds} s")


class Simulator:
    """kubevirt-sim with an RFB console `ubuntu` (and `kali`) in NAMESPACE."""

    def __init__(self, tls=False):
        self.dir = tempfile.TemporaryDirectory(prefix="ws-proxy-py-")
        self.token_file = Path(self.dir.name) / "token"
        self.ca_file = Path(self.dir.name) / "ca.crt"
        self.token_file.write_text(base64.urlsafe_b64encode(os.urandom(24)).decode())
        command = [
            os.environ["KUBEVIRT_SIM_BIN"],
            "--vm",
            f"{NAMESPACE}/ubuntu=rfb",
            "--vm",
            f"{NAMESPACE}/kali=rfb",
        ]
        if tls:
            command += ["--tls-ca-out", str(self.ca_file), "--token-file", str(self.token_file)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        match = re.match(r"listening (\S+):(\d+)", line)
        assert match, f"kubevirt-sim did not start: {line!r}"
        self.port = int(match.group(2))
        self.url = f"{'wss' if tls else 'ws'}://127.0.0.1:{self.port}"

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)
        self.dir.cleanup()


@pytest.fixture
def simulator():
    sim = Simulator()
    yield sim
    sim.stop()


@pytest.fixture
def tls_simulator():
    sim = Simulator(tls=True)
    yield sim
    sim.stop()


def token(vms=("ubuntu",), **options):
    return auth.issue(5, 1, 9, NAMESPACE, list(vms), SECRET, **options)


def greeting_through(port, console_token, vmi="ubuntu", prefix=""):
    """Opens a console through the proxy on `port` and returns the first bytes."""
    with connect(f"ws://127.0.0.1:{port}{prefix}/{console_token}/{vmi}", subprotocols=["binary"],
                 open_timeout=10) as console:
        return console.recv(timeout=10)


def test_the_package_keeps_the_original_import_path():
    from lab_orchestrator_ws_proxy_lib.ws_proxy_lib import WebsocketProxy as Original

    assert Original is WebsocketProxy
    assert ws_proxy.__version__ == "0.1.0"
    assert "run_in_thread" in WebsocketProxy.__dict__


def test_bad_settings_raise_value_error_with_the_reason():
    with pytest.raises(ValueError, match="remote"):
        WebsocketProxy("ftp://example", API_PATH, True, SECRET)
    with pytest.raises(ValueError, match="reject_style"):
        WebsocketProxy("ws://127.0.0.1:1", API_PATH, True, SECRET, reject_style="loud")
    with pytest.raises(ValueError):
        WebsocketProxy("ws://127.0.0.1:1", API_PATH, True, "")
    with pytest.raises(ValueError):
        WebsocketProxy("ws://127.0.0.1:1", "/no/placeholders", True, SECRET)


def test_run_in_thread_serves_a_console_and_stop_thread_drains(simulator):
    proxy = WebsocketProxy(simulator.url, API_PATH, True, SECRET, host_path_prefix="/console")
    host, port = proxy.run_in_thread("127.0.0.1", 0)
    assert (host, port) == proxy.local_address and port > 0
    assert greeting_through(port, token(), prefix="/console") == GREETING
    with pytest.raises(RuntimeError):
        proxy.run_in_thread("127.0.0.1", 0)
    assert "ws_proxy_active_sessions" in proxy.metrics()
    proxy.stop_thread()
    assert proxy.local_address is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    proxy.stop_thread()  # twice is fine


def test_the_in_cluster_shape_uses_the_ca_and_token_files(tls_simulator):
    proxy = WebsocketProxy(
        tls_simulator.url,
        API_PATH,
        False,
        SECRET,
        ca_file=str(tls_simulator.ca_file),
        token_file=str(tls_simulator.token_file),
    )
    _, port = proxy.run_in_thread("127.0.0.1", 0)
    assert greeting_through(port, token()) == GREETING
    proxy.stop_thread()


def test_a_taken_port_raises_os_error(simulator):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proxy = WebsocketProxy(simulator.url, API_PATH, True, SECRET)
        with pytest.raises(OSError, match="cannot listen|address"):
            proxy.run_in_thread("127.0.0.1", taken.getsockname()[1])


def test_a_garbage_collected_proxy_stops_its_thread(simulator):
    proxy = WebsocketProxy(simulator.url, API_PATH, True, SECRET)
    _, port = proxy.run_in_thread("127.0.0.1", 0)
    del proxy
    gc.collect()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_logs_reach_python_logging_without_tokens(simulator, caplog):
    caplog.set_level(logging.DEBUG)
    proxy = WebsocketProxy(simulator.url, API_PATH, True, SECRET)
    _, port = proxy.run_in_thread("127.0.0.1", 0)
    console_token = token()
    greeting_through(port, console_token)
    with pytest.raises(Exception):
        greeting_through(port, token(vms=["kali"]), vmi="ubuntu")
    proxy.stop_thread()
    # The test's own WebSocket client (the `websockets` package) logs its request line, token
    # included, at DEBUG: only the proxy's records are checked.
    proxy_records = [record for record in caplog.records if not record.name.startswith("websockets")]
    names = {record.name for record in proxy_records}
    assert any(name.startswith("proxy_server") for name in names), names
    messages = "\n".join(record.getMessage() for record in proxy_records)
    assert "session started" in messages and "request refused" in messages
    assert console_token not in messages and SECRET not in messages


def test_tokens_from_python_open_consoles_on_the_rust_binary(simulator):
    port = free_port()
    binary = subprocess.Popen(
        [os.environ["WS_PROXY_BIN"]],
        env={
            "SECRET_KEY": SECRET,
            "LOCAL_DEV_MODE": "true",
            "WS_REMOTE_URL": simulator.url,
            "HOST": "127.0.0.1",
            "PORT": str(port),
        },
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        assert greeting_through(port, token(console_role="observer")) == GREETING
    finally:
        binary.send_signal(signal.SIGTERM)
        assert binary.wait(timeout=30) == 0


def test_auth_decides_the_pyjwt_fixtures_as_the_rust_verifier_does():
    fixtures = json.loads(FIXTURES.read_text())
    public_key = (FIXTURES.parent / "rsa.pub.pem").read_text()
    for name, case in fixtures["cases"].items():
        header = json.loads(base64.urlsafe_b64decode(case["token"].split(".")[0] + "=="))
        key = (
            {"secret_key": fixtures["hs256_secret"]}
            if header["alg"] == "HS256"
            else {"public_key_pem": public_key}
        )
        if case["expect"] == "allow":
            grant = auth.verify(case["token"], case["vmi"], **key)
            assert grant.namespace == NAMESPACE, name
        else:
            with pytest.raises(auth.TokenError) as refused:
                auth.verify(case["token"], case["vmi"], **key)
            assert refused.value.label == case["expect"].split(":", 1)[1], name
    assert len(fixtures["cases"]) == 5


def test_issue_and_verify_round_trip_every_claim():
    minted = token(
        vms=["ubuntu", "kali"],
        additional_data={"course": "net-101"},
        token_id="jti-7",
        console_role="observer",
        record=True,
    )
    grant = auth.verify(minted, "kali", SECRET)
    assert (grant.user_id, grant.lab_id, grant.lab_instance_id) == (5, 1, 9)
    assert grant.additional_data == {"course": "net-101"}
    assert (grant.token_id, grant.console_role, grant.record) == ("jti-7", "observer", True)
    assert grant.expires_at > time.time()
    with pytest.raises(auth.TokenError) as refused:
        auth.verify(minted, "manjaro", SECRET)
    assert refused.value.label == "vm_not_allowed"
    with pytest.raises(ValueError, match="namespace"):
        auth.issue(5, 1, 9, "Not_A_Label", ["ubuntu"], SECRET)
    with pytest.raises(ValueError, match="console_role"):
        token(console_role="admin")


RUN_SCRIPT = """
import sys
from ws_proxy import WebsocketProxy
proxy = WebsocketProxy(sys.argv[1], sys.argv[2], True, sys.argv[3], drain_timeout=2)
proxy.run("127.0.0.1", int(sys.argv[4]))
print("run returned", flush=True)
"""


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT])
def test_run_serves_in_the_foreground_until_a_signal(simulator, stop_with):
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-c", RUN_SCRIPT, simulator.url, API_PATH, SECRET, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port)
        assert greeting_through(port, token()) == GREETING
        child.send_signal(stop_with)
        output, _ = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0, output
    assert "run returned" in output


ORIGINAL = "lab_orchestrator_ws_proxy"


def original_app_environment(port, **extra):
    return {
        "PATH": os.environ.get("PATH", ""),
        "SECRET_KEY": SECRET,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOGLEVEL": "INFO",
        **extra,
    }


def run_original_app(env, argv_prefix=()):
    """Starts `python -m lab_orchestrator_ws_proxy` (the original 1.0.0 application)."""
    return subprocess.Popen(
        [*argv_prefix, sys.executable, "-m", ORIGINAL],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


def one_console_then_sigterm(app, port):
    """Opens one console through the running `app`, stops it with SIGTERM, checks it exited 0
    and returns what it logged."""
    try:
        wait_for_port(port)
        assert greeting_through(port, token()) == GREETING
        app.send_signal(signal.SIGTERM)
        _, errors = app.communicate(timeout=40)
    finally:
        app.kill()
    assert app.returncode == 0, errors
    return errors


def test_the_original_application_runs_unchanged_in_dev_mode(simulator):
    port = free_port()
    app = run_original_app(
        original_app_environment(
            port,
            LOCAL_DEV_MODE="True",
            WS_REMOTE_URL=simulator.url,
            KUBERNETES_SERVICE_HOST="127.0.0.1",
            KUBERNETES_SERVICE_PORT=str(simulator.port),
        )
    )
    errors = one_console_then_sigterm(app, port)
    assert "Starting WebsocketProxy" in errors and "Stopped WebsocketProxy" in errors


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts the service-account directory: needs root (CI runs as root)")
def test_the_original_application_runs_unchanged_in_the_cluster_shape(tls_simulator):
    port = free_port()
    account = "/var/run/secrets/kubernetes.io/serviceaccount"
    os.makedirs(account, exist_ok=True)
    files = Path(tls_simulator.dir.name)
    # A private mount namespace: the service-account files appear where the kubelet puts them,
    # for this process tree only.
    script = f"mount --bind {files} {account} && exec \"$@\""
    app = run_original_app(
        original_app_environment(
            port,
            LOCAL_DEV_MODE="False",
            KUBERNETES_SERVICE_HOST="127.0.0.1",
            KUBERNETES_SERVICE_PORT=str(tls_simulator.port),
        ),
        argv_prefix=("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"),
    )
    errors = one_console_then_sigterm(app, port)
    assert "Remote Url: wss://127.0.0.1:" in errors


README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_readme_python_snippet_runs_as_pasted():
    """The README's "From Python" block, extracted by its marker and run in a fresh interpreter:
    it must need nothing the README does not define, and not collide with a proxy on 5001."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    snippet = next(block for block in blocks if block.startswith("# README: from Python"))
    with socket.socket() as occupant:
        # Something already listens on 5001, as after the README's dev-mode recipe.
        occupant.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            occupant.bind(("127.0.0.1", 5001))
            occupant.listen()
        except OSError:
            pass  # 5001 is taken by someone else already: the snippet must cope all the same
        done = subprocess.run(
            [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 0, done.stderr
    match = re.search(r"ws-proxy listening on ws://127\.0\.0\.1:(\d+)/\{token\}/\{vmi\}", done.stdout)
    assert match, done.stdout
    assert match.group(1) != "5001"
