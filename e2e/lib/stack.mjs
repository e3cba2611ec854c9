// The pieces a browser test runs against, each a real process on 127.0.0.1:
// kubevirt-sim (TLS, bearer token file), ws-proxy in in-cluster shape (CA file and token file,
// not dev mode) and, for the real VNC server, QEMU's built-in VNC server.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';

import { acceptsConnections, freePort, rustBinary, start, waitFor } from './processes.mjs';
import { randomSecret } from './tokens.mjs';

/** Throws a helpful error when a binary the tests need is missing. */
export function requireBinary(file, hint) {
  if (!existsSync(file)) {
    throw new Error(`${file} not found: ${hint}`);
  }
  return file;
}

/** A scratch folder removed by `remove()`. */
export function scratchDir(prefix) {
  const dir = mkdtempSync(path.join(os.tmpdir(), `ws-proxy-e2e-${prefix}-`));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Starts kubevirt-sim with a generated CA (written to `dir`/ca.crt), a service-account token
 * file it checks on every request, and `vms` (`name=behaviour` strings).
 * Resolves to `{ port, caFile, tokenFile, process }`.
 */
export async function startSimulator(name, dir, vms) {
  const binary = requireBinary(
    rustBinary('kubevirt-sim'),
    'build it with `cargo build -p kubevirt-sim --bins` (e2e/run.sh does)',
  );
  const caFile = path.join(dir, 'ca.crt');
  const tokenFile = path.join(dir, 'token');
  writeFileSync(tokenFile, `${randomSecret()}\n`, { mode: 0o600 });
  const args = ['--listen', '127.0.0.1:0', '--tls-ca-out', caFile, '--token-file', tokenFile];
  for (const vm of vms) {
    args.push('--vm', vm);
  }
  const sim = start(name, binary, args, { RUST_LOG: 'info' });
  try {
    const [, port] = await sim.stdoutLine(/^listening 127\.0\.0\.1:(\d+)$/m);
    return { port: Number(port), caFile, tokenFile, process: sim };
  } catch (error) {
    await sim.stop();
    throw error;
  }
}

function httpGetStatus(url) {
  return new Promise((resolve) => {
    const client = url.startsWith('https:') ? https : http;
    // The readiness probe only asks whether the port answers; test certificates are self-signed.
    const request = client.get(url, { rejectUnauthorized: false }, (response) => {
      response.resume();
      resolve(response.statusCode);
    });
    request.once('error', () => resolve(null));
    request.setTimeout(2_000, () => request.destroy());
  });
}

/**
 * Starts the ws-proxy binary as the container runs it in a cluster: configured through the
 * Python image's environment (SECRET_KEY, KUBERNETES_SERVICE_HOST/PORT, HOST, PORT, LOGLEVEL,
 * LOCAL_DEV_MODE=false) with the simulator's CA and token file in place of the service
 * account's. `rejectStyle` is `auto` (the binary's default: close frames for browsers, HTTP
 * statuses for other clients), `http` or `close` (the Python original's close frames). With
 * `tls: { certFile, keyFile }` the console port serves wss:// with those files.
 * Resolves to `{ port, secret, consoleUrl(token, vmi), process }` once /readyz answers 200.
 */
export async function startProxy(
  name,
  simulator,
  { rejectStyle = 'auto', tls, allowedOrigins, extraArgs = [], secret: given } = {},
) {
  const binary = requireBinary(
    rustBinary('ws-proxy'),
    'build it with `cargo build -p proxy-server --bins` (e2e/run.sh does)',
  );
  const secret = given ?? randomSecret();
  const port = await freePort();
  const proxy = start(
    name,
    binary,
    [
      '--ca-file',
      simulator.caFile,
      '--token-file',
      simulator.tokenFile,
      '--reject-style',
      rejectStyle,
      ...(tls ? ['--tls-cert-file', tls.certFile, '--tls-key-file', tls.keyFile] : []),
      ...(allowedOrigins ? ['--allowed-origins', allowedOrigins.join(',')] : []),
      ...extraArgs,
    ],
    {
      SECRET_KEY: secret,
      LOCAL_DEV_MODE: 'false',
      HOST: '127.0.0.1',
      PORT: String(port),
      KUBERNETES_SERVICE_HOST: '127.0.0.1',
      KUBERNETES_SERVICE_PORT: String(simulator.port),
      LOGLEVEL: 'DEBUG',
    },
  );
  try {
    await waitFor(`${name} to be ready on port ${port}`, async () => {
      proxy.assertRunning();
      const scheme = tls ? 'https' : 'http';
      return (await httpGetStatus(`${scheme}://127.0.0.1:${port}/readyz`)) === 200;
    });
  } catch (error) {
    await proxy.stop();
    throw error;
  }
  return {
    port,
    secret,
    adminUrl: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    consoleUrl: (token, vmi) => `${tls ? 'wss' : 'ws'}://127.0.0.1:${port}/${token}/${vmi}`,
    // The console URL without a token: the token travels in the bearer subprotocol.
    vmUrl: (vmi) => `${tls ? 'wss' : 'ws'}://127.0.0.1:${port}/${vmi}`,
    process: proxy,
  };
}

/**
 * Starts QEMU with its built-in VNC server, the one KubeVirt's virt-launcher uses, on a free
 * port of 127.0.0.1. Without `disk` there is no guest: SeaBIOS ends on its "No bootable device"
 * screen; with `disk` (a raw image, e.g. a boot sector) SeaBIOS boots it from the first IDE disk
 * (in snapshot mode: the file is never written). Resolves to `{ port, process }` once the port
 * accepts connections.
 */
export async function startQemuVnc(name, { disk } = {}) {
  const binary = requireBinary(
    '/usr/bin/qemu-system-x86_64',
    'install it with `apt-get install qemu-system-x86` (e2e/run.sh does)',
  );
  const port = await freePort();
  const display = port - 5900;
  const qemu = start(name, binary, [
    '-machine', 'pc',
    '-m', '64',
    '-display', 'none',
    '-vnc', `127.0.0.1:${display}`,
    '-vga', 'std',
    '-nodefaults',
    '-no-reboot',
    ...(disk ? ['-drive', `file=${disk},format=raw,if=ide,snapshot=on`] : []),
  ]);
  try {
    await waitFor(`${name} to listen on port ${port}`, async () => {
      qemu.assertRunning();
      return acceptsConnections(port);
    });
  } catch (error) {
    await qemu.stop();
    throw error;
  }
  return { port, process: qemu };
}

/**
 * Asks the proxy for a console like a browser does (a WebSocket upgrade request) and resolves
 * to the HTTP status and body line it answers with, or to status 101 if it upgrades.
 */
export function upgradeStatus(consoleUrl) {
  const url = new URL(consoleUrl.replace(/^ws:/, 'http:'));
  return new Promise((resolve, reject) => {
    const request = http.get(url, {
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
      },
    });
    request.setTimeout(10_000, () => request.destroy(new Error('no answer to the upgrade')));
    request.once('upgrade', (response, socket) => {
      socket.destroy();
      resolve({ status: response.statusCode, body: '' });
    });
    request.once('response', (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => {
        body += chunk;
      });
      response.once('end', () => resolve({ status: response.statusCode, body: body.trim() }));
    });
    request.once('error', reject);
  });
}

/**
 * The proxy's Prometheus metrics from /metrics, as a Map of `name{labels}` to number
 * (e.g. `ws_proxy_active_sessions`, `ws_proxy_rejections_total{reason="invalid_token"}`).
 */
export function proxyMetrics(proxy) {
  return new Promise((resolve, reject) => {
    const url = `${proxy.adminUrl}/metrics`;
    const client = url.startsWith('https:') ? https : http;
    const request = client.get(url, { rejectUnauthorized: false }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => {
        text += chunk;
      });
      response.once('end', () => {
        const metrics = new Map();
        for (const line of text.split('\n')) {
          const sample = line.match(/^([^#\s]\S*)\s+(\S+)/);
          if (sample) {
            metrics.set(sample[1], Number(sample[2]));
          }
        }
        resolve(metrics);
      });
    });
    request.setTimeout(5_000, () => request.destroy(new Error('no answer from /metrics')));
    request.once('error', reject);
  });
}

/**
 * Starts nginx (the Debian package) as a WebSocket-aware load balancer in front of `backends`
 * (ports on 127.0.0.1), choosing the backend by `hash $uri consistent`, as docs/sharing.md
 * suggests for shared consoles. Resolves to `{ port, process }`.
 */
export async function startNginx(name, dir, backends) {
  const binary = requireBinary('/usr/sbin/nginx', 'install it with `apt-get install nginx-light` (e2e/run.sh does)');
  const port = await freePort();
  const prefix = mkdtempSync(path.join(dir, 'nginx-'));
  const config = `
worker_processes 1;
error_log ${prefix}/error.log info;
pid ${prefix}/nginx.pid;
events { worker_connections 256; }
http {
  access_log ${prefix}/access.log;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  upstream ws_proxy {
    hash $uri consistent;
${backends.map((backend) => `    server 127.0.0.1:${backend};`).join('\n')}
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://ws_proxy;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host $host;
      proxy_read_timeout 1h;
    }
  }
}
`;
  writeFileSync(path.join(prefix, 'nginx.conf'), config);
  const nginx = start(name, binary, ['-p', prefix, '-c', path.join(prefix, 'nginx.conf'), '-g', 'daemon off;']);
  try {
    await waitFor(`${name} to listen on port ${port}`, async () => {
      nginx.assertRunning();
      return acceptsConnections(port);
    });
  } catch (error) {
    await nginx.stop();
    throw error;
  }
  return { port, process: nginx, vmUrl: (vmi) => `ws://127.0.0.1:${port}/${vmi}` };
}
