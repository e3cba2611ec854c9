"""The admin API against its OpenAPI document: schemathesis drives every operation of
docs/admin-api.openapi.json (served by the binary at /api/v1/openapi.json) against the real
ws-proxy binary, with consoles open through kubevirt-sim, and checks every response against
the document (status codes, content types, schemas, auth being enforced).

Started by admin/test.sh; starts and stops its own kubevirt-sim and ws-proxy on loopback.
"""

import argparse
import base64
import os
import socket
import subprocess
import sys
import tempfile
import time

import jwt

SECRET = "contract-secret-0123456789abcdef"
ADMIN_TOKEN = "contract-admin-token-0123456789"
NAMESPACE = "lab-1-9"


def start(command, env, needles, stderr=subprocess.STDOUT):
    """Starts `command` and returns it with the first line containing each of `needles`."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    found, seen = {}, []
    while len(found) < len(needles):
        line = process.stdout.readline()
        if not line:
            process.kill()
            sys.exit(f"{command[0]} did not start:\n" + "".join(seen))
        seen.append(line)
        for needle in needles:
            if needle in line and needle not in found:
                found[needle] = line
    return process, [found[needle] for needle in needles]


def address_in(line, marker):
    rest = line.split(marker, 1)[1].lstrip('=":').strip()
    return rest.split('"')[0].split(" ")[0].split(",")[0]


def open_console(address, user, vm):
    """A WebSocket upgrade by hand, kept open: a live session for the API to list."""
    token = jwt.encode(
        {
            "id": user,
            "exp": int(time.time()) + 600,
            "lab_instance": {
                "lab_id": 1,
                "lab_instance_id": 9,
                "namespace_name": NAMESPACE,
                "allowed_vmi_names": [vm],
            },
        },
        SECRET,
        algorithm="HS256",
    )
    host, port = address.rsplit(":", 1)
    connection = socket.create_connection((host, int(port)), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    connection.sendall(
        (
            f"GET /{token}/{vm} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Protocol: binary\r\n\r\n"
        ).encode()
    )
    answer = connection.recv(4096)
    if not answer.startswith(b"HTTP/1.1 101"):
        sys.exit(f"the console did not open: {answer[:80]!r}")
    return connection


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ws-proxy", required=True)
    parser.add_argument("--kubevirt-sim", required=True)
    parser.add_argument("--schemathesis", required=True)
    parser.add_argument("--max-examples", default="25")
    args = parser.parse_args()

    vms = ["ubuntu", "kali", "manjaro"]
    sim_args = [args.kubevirt_sim]
    for vm in vms:
        sim_args += ["--vm", f"{NAMESPACE}/{vm}=echo"]
    sim, (line,) = start(sim_args, dict(os.environ), ["listening "], subprocess.DEVNULL)
    sim_address = line.split("listening ", 1)[1].split()[0]
    with tempfile.NamedTemporaryFile("w", suffix=".token") as token_file:
        token_file.write(ADMIN_TOKEN + "\n")
        token_file.flush()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "SECRET_KEY": SECRET,
            "LOCAL_DEV_MODE": "yes",
            "WS_REMOTE_URL": f"ws://{sim_address}",
            "HOST": "127.0.0.1",
            "PORT": "0",
            "WS_PROXY_ADMIN_ADDR": "127.0.0.1:0",
            "WS_PROXY_ADMIN_TOKEN_FILE": token_file.name,
            "WS_PROXY_DRAIN_TIMEOUT": "1s",
        }
        proxy, (console_line, admin_line) = start(
            [args.ws_proxy],
            env,
            ["listening for console connections", "listening for health and metrics requests"],
        )
        console_address = address_in(console_line, "address")
        admin_address = address_in(admin_line, "address")
        # Drain the proxy's log so it never blocks on a full pipe.
        log_path = os.path.join(tempfile.gettempdir(), "ws-proxy-contract.log")
        log = open(log_path, "w")
        subprocess.Popen(["cat"], stdin=proxy.stdout, stdout=log)
        consoles = [open_console(console_address, user, vm) for user, vm in zip((5, 6, 7), vms)]
        try:
            started = time.monotonic()
            result = subprocess.run(
                [
                    args.schemathesis,
                    "run",
                    f"http://{admin_address}/api/v1/openapi.json",
                    "--header",
                    f"Authorization: Bearer {ADMIN_TOKEN}",
                    "--checks",
                    "all",
                    "--max-examples",
                    args.max_examples,
                    "--generation-deterministic",
                    "--request-timeout",
                    "10",
                ],
                env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
            )
            print(f"schemathesis took {time.monotonic() - started:.0f} s (proxy log: {log_path})")
        finally:
            for console in consoles:
                console.close()
            proxy.terminate()
            sim.terminate()
            proxy.wait(timeout=20)
            sim.wait(timeout=20)
        sys.exit(result.returncode)


if __name__ == "__main__":
    main()
